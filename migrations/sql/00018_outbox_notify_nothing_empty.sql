-- A statement that inserts no outbox row sends no notification. The
-- trigger is a statement trigger, which fires for an INSERT that inserted
-- nothing too: every relay's heartbeat look that finds no row due is one
-- (all but about one look an interval, fleet-wide). Its empty
-- notification woke every relay for nothing, and read as rows the relays
-- could not know (a payload too long is empty too): one heard after a
-- relay's last drain began kept that relay from publishing the heartbeat
-- straight to NATS through a database outage in which nothing had been
-- committed.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    announced text;
BEGIN
    SELECT json_agg(json_build_object('id', id, 'subject', subject, 'payload', payload, 'created_at', created_at) ORDER BY id)::text
    INTO announced FROM inserted;
    IF announced IS NULL THEN
        RETURN NULL;
    END IF;
    IF octet_length(announced) > 7900 THEN
        announced := '';
    END IF;
    PERFORM pg_notify('outbox', announced);
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

-- +goose Down
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
