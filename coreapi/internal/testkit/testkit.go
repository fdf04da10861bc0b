// Package testkit holds coreapi's test helpers that are not about the
// database or the API: waiting for something asynchronous (a relay, a
// watcher, a background loop) and collecting a log written concurrently.
package testkit

import "github.com/tollgate-auth/tollgate/shared/logbuffer"

// LogBuffer is an io.Writer safe for concurrent use, for a logger whose
// output a test reads (or prints when it fails): the one of every module.
type LogBuffer = logbuffer.Buffer
