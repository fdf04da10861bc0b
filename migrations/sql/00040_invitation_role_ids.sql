-- An invitation hands out the roles its inviter chose, not whatever role
-- bears their names when it is accepted. invitations.roles held names
-- only: a role deleted after the invitation was sent and another created
-- under its name (with other permissions) was granted at accept, and a
-- role renamed meanwhile was silently not granted.
--
-- invitation_roles now holds the roles themselves. Renaming a role, or
-- changing its permissions, keeps it the invitation's (the accept checks
-- again that the inviter may hand it out); deleting it removes it from
-- the invitation (ON DELETE CASCADE), and an invitation with fewer roles
-- than it was sent with cannot be accepted or resent (409 conflict): it
-- is withdrawn and sent again. invitations.roles stays: the names the
-- roles had when the invitation was sent, shown for invitations no
-- longer pending and used to tell that a role was deleted.
--
-- Pending invitations are converted by looking their names up in their
-- tenant, as the accept did. One naming a role that no longer exists is
-- reported (NOTICE invitation_roles: ...) and can no longer be accepted:
-- until now the invitee would have joined without that role.

-- +goose Up
ALTER TABLE invitations ADD CONSTRAINT invitations_tenant_id_id_key UNIQUE (tenant_id, id);

CREATE TABLE invitation_roles (
    tenant_id      uuid NOT NULL,
    invitation_id  uuid NOT NULL,
    role_id        uuid NOT NULL,
    PRIMARY KEY (tenant_id, invitation_id, role_id),
    FOREIGN KEY (tenant_id, invitation_id) REFERENCES invitations (tenant_id, id) ON DELETE CASCADE,
    -- Within the invitation's own tenant; a deleted role leaves the
    -- invitation, which then cannot be accepted.
    FOREIGN KEY (tenant_id, role_id) REFERENCES roles (tenant_id, id) ON DELETE CASCADE
);
-- The role deletion's cascade.
CREATE INDEX invitation_roles_role_idx ON invitation_roles (tenant_id, role_id);

-- An invitation inserted with names only (by the previous release, still
-- serving during a rolling upgrade) gets the roles its names are at that
-- moment in its tenant, as coreapi resolves them when it creates one.
-- +goose StatementBegin
CREATE FUNCTION invitation_roles_from_names() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM invitation_roles WHERE tenant_id = NEW.tenant_id AND invitation_id = NEW.id) THEN
        INSERT INTO invitation_roles (tenant_id, invitation_id, role_id)
        SELECT NEW.tenant_id, NEW.id, r.id FROM roles r
        WHERE r.tenant_id = NEW.tenant_id AND r.name = ANY (NEW.roles);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER invitations_roles_from_names AFTER INSERT ON invitations
    FOR EACH ROW EXECUTE FUNCTION invitation_roles_from_names();

INSERT INTO invitation_roles (tenant_id, invitation_id, role_id)
SELECT i.tenant_id, i.id, r.id
FROM invitations i JOIN roles r ON r.tenant_id = i.tenant_id AND r.name = ANY (i.roles)
WHERE i.status = 'pending';

-- +goose StatementBegin
DO $$
DECLARE
    inv record;
BEGIN
    FOR inv IN
        SELECT i.id, ARRAY(SELECT n FROM unnest(i.roles) n
                           WHERE NOT EXISTS (SELECT 1 FROM roles r WHERE r.tenant_id = i.tenant_id AND r.name = n)
                           ORDER BY n) AS missing
        FROM invitations i
        WHERE i.status = 'pending'
    LOOP
        IF cardinality(inv.missing) > 0 THEN
            RAISE NOTICE 'invitation_roles: pending invitation % names roles that no longer exist (%): it cannot be accepted; withdraw it and invite again',
                inv.id, array_to_string(inv.missing, ', ');
        END IF;
    END LOOP;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- A pending invitation keeps, by name, the roles it holds now (renamed
-- ones under their new names, deleted ones not at all), as the previous
-- release reads names: a deleted role's name, which another role may
-- bear now, must not be left for it to grant.
UPDATE invitations i SET roles = ARRAY(
    SELECT r.name FROM invitation_roles ir JOIN roles r ON r.tenant_id = ir.tenant_id AND r.id = ir.role_id
    WHERE ir.tenant_id = i.tenant_id AND ir.invitation_id = i.id ORDER BY r.name)
WHERE i.status = 'pending';
DROP TRIGGER invitations_roles_from_names ON invitations;
DROP FUNCTION invitation_roles_from_names();
DROP TABLE invitation_roles;
ALTER TABLE invitations DROP CONSTRAINT invitations_tenant_id_id_key;
