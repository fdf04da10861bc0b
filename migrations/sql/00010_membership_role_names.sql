-- Each membership carries the sorted names of its roles (role_names), so
-- the member list reads them with the row instead of running a roles
-- subquery per member. membership_roles and roles stay the source of
-- truth: triggers keep role_names equal to them in the transaction of
-- every change, whoever makes it (grant, revoke, a member added with its
-- roles, a role renamed or deleted, a membership removed, a bulk seed).
--
-- The triggers are per statement over transition tables, so a bulk insert
-- of membership_roles rows recomputes each touched membership once. Each
-- first locks the memberships it recomputes (FOR NO KEY UPDATE, in key
-- order), then recomputes in a new statement: under READ COMMITTED that
-- statement's snapshot includes every change committed by a concurrent
-- transaction that held the lock, so two concurrent grants to one member
-- both end up in role_names (without the lock, the second would recompute
-- from a snapshot taken before the first committed and drop its role).

-- +goose Up
ALTER TABLE memberships ADD COLUMN role_names text[] NOT NULL DEFAULT '{}';

-- +goose StatementBegin
CREATE FUNCTION memberships_recompute_role_names(tenant_ids uuid[], user_ids uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM memberships m
    WHERE (m.tenant_id, m.user_id) IN (SELECT * FROM unnest(tenant_ids, user_ids))
    ORDER BY m.tenant_id, m.user_id
    FOR NO KEY UPDATE OF m;
    UPDATE memberships m
    SET role_names = ARRAY(
        SELECT r.name FROM membership_roles mr
        JOIN roles r ON r.tenant_id = mr.tenant_id AND r.id = mr.role_id
        WHERE mr.tenant_id = m.tenant_id AND mr.user_id = m.user_id
        ORDER BY r.name)
    WHERE (m.tenant_id, m.user_id) IN (SELECT * FROM unnest(tenant_ids, user_ids));
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION membership_roles_sync_role_names() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t uuid[];
    u uuid[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(tenant_id), array_agg(user_id) INTO t, u
        FROM (SELECT DISTINCT tenant_id, user_id FROM new_rows) c;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(tenant_id), array_agg(user_id) INTO t, u
        FROM (SELECT DISTINCT tenant_id, user_id FROM old_rows) c;
    ELSE
        SELECT array_agg(tenant_id), array_agg(user_id) INTO t, u
        FROM (SELECT tenant_id, user_id FROM old_rows UNION SELECT tenant_id, user_id FROM new_rows) c;
    END IF;
    IF t IS NOT NULL THEN
        PERFORM memberships_recompute_role_names(t, u);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER membership_roles_insert_role_names
    AFTER INSERT ON membership_roles REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION membership_roles_sync_role_names();
CREATE TRIGGER membership_roles_delete_role_names
    AFTER DELETE ON membership_roles REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION membership_roles_sync_role_names();
CREATE TRIGGER membership_roles_update_role_names
    AFTER UPDATE ON membership_roles REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION membership_roles_sync_role_names();

-- A renamed role changes the role_names of every holder.
-- +goose StatementBegin
CREATE FUNCTION roles_sync_role_names() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t uuid[];
    u uuid[];
BEGIN
    SELECT array_agg(tenant_id), array_agg(user_id) INTO t, u
    FROM (SELECT DISTINCT mr.tenant_id, mr.user_id
          FROM new_rows n
          JOIN old_rows o ON o.id = n.id
          JOIN membership_roles mr ON mr.tenant_id = n.tenant_id AND mr.role_id = n.id
          WHERE o.name <> n.name) c;
    IF t IS NOT NULL THEN
        PERFORM memberships_recompute_role_names(t, u);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER roles_rename_role_names
    AFTER UPDATE ON roles REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION roles_sync_role_names();

UPDATE memberships m
SET role_names = ARRAY(
    SELECT r.name FROM membership_roles mr
    JOIN roles r ON r.tenant_id = mr.tenant_id AND r.id = mr.role_id
    WHERE mr.tenant_id = m.tenant_id AND mr.user_id = m.user_id
    ORDER BY r.name);

-- +goose Down
DROP TRIGGER roles_rename_role_names ON roles;
DROP FUNCTION roles_sync_role_names();
DROP TRIGGER membership_roles_update_role_names ON membership_roles;
DROP TRIGGER membership_roles_delete_role_names ON membership_roles;
DROP TRIGGER membership_roles_insert_role_names ON membership_roles;
DROP FUNCTION membership_roles_sync_role_names();
DROP FUNCTION memberships_recompute_role_names(uuid[], uuid[]);
ALTER TABLE memberships DROP COLUMN role_names;
