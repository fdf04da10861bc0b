-- Keyset pagination of a tenant's roles (GET /api/v1/roles): ORDER BY
-- created_at, id, an order no rename moves a role in (it was by name, so
-- a role renamed while a client paged was listed twice or never). Without
-- it PostgreSQL read every role of the tenant and sorted them for each
-- page: 12.7 ms a page against 0.2 ms with it, for a tenant with the most
-- roles it may have (1,003) whose rows lie on as many pages.
--
-- Not a transaction (NO TRANSACTION, as 00047): the index is built
-- CONCURRENTLY, so that roles are written meanwhile; it is dropped first,
-- so that the next attempt builds again an INVALID one a failed attempt
-- (lock_timeout) left. Pods of the previous release page by name, served
-- by roles_tenant_name_key as before.

-- +goose NO TRANSACTION
-- +goose Up
DROP INDEX CONCURRENTLY IF EXISTS roles_tenant_created_idx;
CREATE INDEX CONCURRENTLY roles_tenant_created_idx ON roles (tenant_id, created_at, id);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS roles_tenant_created_idx;
