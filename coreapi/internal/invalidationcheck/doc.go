// Package invalidationcheck holds the guard of coreapi's promise to the
// proxies: every write that changes what a proxy caches (a user's
// projection in a tenant, what an API key resolves to) announces it
// through the outbox with an invalidation subject that covers it. Its test
// runs every documented operation that writes (the GET ones that do, such
// as the OAuth callback, are named there) against a seeded world and
// compares the projections and key lookups before and after with the
// outbox rows the operation wrote.
package invalidationcheck
