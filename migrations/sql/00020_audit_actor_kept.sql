-- An audit event keeps its actor's id when the actor's user row is deleted.
-- The actor was a foreign key set to NULL on delete, so deleting a service
-- account (DELETE /service-accounts/{id}, the answer to a leaked secret)
-- erased it from every event it had caused: the keys it minted and revoked,
-- the members and roles it changed, the sessions it ended could no longer
-- be told from the operator's own actions. coreapi deletes no other user
-- row (people leave tenants, their accounts stay); a row deleted by hand
-- now leaves its id in the events too.

-- +goose Up
ALTER TABLE audit_events DROP CONSTRAINT audit_events_actor_user_id_fkey;

-- +goose Down
UPDATE audit_events a SET actor_user_id = NULL
WHERE actor_user_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = a.actor_user_id);
ALTER TABLE audit_events ADD CONSTRAINT audit_events_actor_user_id_fkey
    FOREIGN KEY (actor_user_id) REFERENCES users (id) ON DELETE SET NULL;
