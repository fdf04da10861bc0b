-- The outbox's notification carries the rows it announces: a JSON array of
-- {id, subject, payload, created_at}, one element per row the statement
-- inserted, or '' when they do not fit in a notification (PostgreSQL's
-- limit is 8000 bytes). A relay that heard a commit but could not drain it
-- before the database became unreachable publishes the rows from what it
-- heard, so a failover neither holds a revocation back until the database
-- is back nor silences the relays' heartbeat. The relays' drains still
-- publish every row (again, with the same Nats-Msg-Id) and mark it.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    announced text;
BEGIN
    SELECT json_agg(json_build_object('id', id, 'subject', subject, 'payload', payload, 'created_at', created_at) ORDER BY id)::text
    INTO announced FROM inserted;
    IF announced IS NULL OR octet_length(announced) > 7900 THEN
        announced := '';
    END IF;
    PERFORM pg_notify('outbox', announced);
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
DROP TRIGGER outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- +goose Down
DROP TRIGGER outbox_notify ON outbox;
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
