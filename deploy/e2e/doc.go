// Package e2e runs the real coreapi and authproxy binaries, two of each, against one
// PostgreSQL cluster and one NATS server, with the example notes app behind both proxies, and
// checks the behaviour that only shows up with more than one instance: cross-instance
// invalidation (of built-in and app permissions, and of open WebSockets and event streams, which
// a revoke, logout or tenant suspension through one side closes at the other; of a person who belongs to two
// tenants, whose standing one tenant changes and the other keeps; of a logout, a member's
// removal, a role revoked or a role edited, a password reset or an RFC 7009 revocation through
// one proxy while NATS is down, which that
// proxy enforces at once and the other once NATS is back), OAuth flows that start on one core and
// finish on another, refresh rotation races, app-key rotation under traffic, the separation
// of app and core keys, and recovery from a dead or hung core, a NATS restart, and a stopped
// or frozen database.
//
// The package holds only tests. TestMain builds both binaries from the workspace root (found
// by walking up to go.work) and starts, all on 127.0.0.1:
//
//   - a PostgreSQL cluster of its own (initdb + postgres in a temp dir, on a random port),
//     so that tests can stop, start and freeze it without disturbing other packages; when the
//     suite runs as root, PostgreSQL runs as the "postgres" (or "nobody") user. DATABASE_URL
//     is not used. Missing server binaries fail the suite with what to install;
//   - an in-process NATS server on a fixed free port, so it can be restarted on that port;
//   - a fake OpenID Connect provider (discovery, JWKS, authorize, token with PKCE checks and
//     an RS256 ID token) standing in for the outside party;
//   - coreapi A and B, migrated with `coreapi migrate up`, keys from `coreapi keys generate`,
//     with a 1 s REFRESH_REUSE_GRACE, OIDC redirects to proxy B's callback and an
//     OAUTH_ALLOWED_RETURN_URLS entry for the (imaginary) web app the callback hands its code to;
//   - coreapi A and B load the example notes app's permission catalog
//     (deploy/examples/notes/permissions.yaml);
//   - one example notes app (deploy/examples/notes) with a fresh app key;
//   - authproxy A (in front of core A) and B (in front of core B), with a 3 s
//     UPSTREAM_TIMEOUT and a 2 s PROJECTION_TIMEOUT, each with its own copy of the example's
//     rules.yaml (in a directory of its own) routing /notes to the one notes app, signed with
//     the app's key (UPSTREAM_KEYS).
//
// Every child dies with the test binary (Pdeathsig), is stopped when the suite ends or is
// interrupted, and the temp dir is removed; set E2E_KEEP=1 to keep it (service logs are
// there). On failure the tail of every service log is printed, and a test that fails on a
// reply (expect, expectProblem, or a test's own check with logsOf) prints the lines every
// service logged with that reply's request id, whichever core answered and however long ago.
//
//	go test -count=1 -v ./deploy/e2e
package e2e
