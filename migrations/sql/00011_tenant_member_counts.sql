-- The member list's total (GET /users?include_total=true) is the number of
-- the tenant's memberships. Counted with a window over the whole tenant,
-- every page scans every member (7 times the cost of the page itself at
-- 1,000 members); tenant_member_counts keeps the number instead, so the
-- total is one primary-key read in the page's query. Triggers update it in
-- the transaction of every membership insert and delete, whoever makes it,
-- so a snapshot that sees a membership also sees it counted.
--
-- The triggers are per statement over transition tables: a bulk insert
-- updates each tenant's counter once. Inserts and deletes in one tenant
-- wait on its counter row until they commit; memberships change at the
-- pace of admins, not of reads. Memberships never move between tenants
-- (tenant_id is part of the key and no statement updates it).

-- +goose Up
CREATE TABLE tenant_member_counts (
    tenant_id uuid PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    members   bigint NOT NULL CHECK (members >= 0)
);

-- +goose StatementBegin
CREATE FUNCTION memberships_count() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        -- In key order, so that two bulk inserts lock counters alike.
        INSERT INTO tenant_member_counts AS c (tenant_id, members)
        SELECT tenant_id, count(*) FROM new_rows GROUP BY tenant_id ORDER BY tenant_id
        ON CONFLICT (tenant_id) DO UPDATE SET members = c.members + EXCLUDED.members;
    ELSIF TG_OP = 'DELETE' THEN
        -- Counters locked in key order first, as the insert does, so that
        -- two deletes spanning tenants (a user's, cascading to each of
        -- their memberships) cannot deadlock. A tenant being deleted may
        -- have lost its counter already (the same cascade): then there is
        -- nothing to update.
        PERFORM 1 FROM tenant_member_counts c
        WHERE c.tenant_id IN (SELECT tenant_id FROM old_rows)
        ORDER BY c.tenant_id
        FOR NO KEY UPDATE;
        UPDATE tenant_member_counts c SET members = c.members - d.n
        FROM (SELECT tenant_id, count(*) AS n FROM old_rows GROUP BY tenant_id) d
        WHERE c.tenant_id = d.tenant_id;
    ELSE -- TRUNCATE
        DELETE FROM tenant_member_counts;
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER memberships_insert_count
    AFTER INSERT ON memberships REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION memberships_count();
CREATE TRIGGER memberships_delete_count
    AFTER DELETE ON memberships REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION memberships_count();
CREATE TRIGGER memberships_truncate_count
    AFTER TRUNCATE ON memberships
    FOR EACH STATEMENT EXECUTE FUNCTION memberships_count();

INSERT INTO tenant_member_counts (tenant_id, members)
SELECT tenant_id, count(*) FROM memberships GROUP BY tenant_id;

-- +goose Down
DROP TRIGGER memberships_truncate_count ON memberships;
DROP TRIGGER memberships_delete_count ON memberships;
DROP TRIGGER memberships_insert_count ON memberships;
DROP FUNCTION memberships_count();
DROP TABLE tenant_member_counts;
