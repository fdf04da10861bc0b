// Package nodeverifier holds verify.js, a dependency-free Node.js verifier
// of Tollgate's identity headers v2 written from docs/identity-headers.md
// alone, and the test that runs it against the Go implementation's test
// vectors (shared/identity/testdata/v2_vectors.json), against requests
// signed by the Go signer, and against the Go verifier (its replay filter
// included) on odd header values and on a request sent again, and, behind
// Node's own http server, on the bytes of signed requests as they go on the
// wire, beside the Go middleware. It shows that a team without Go can
// verify the headers.
package nodeverifier
