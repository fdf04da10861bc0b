// Package sweep runs coreapi's periodic deletes of expired rows (sessions,
// sign-in attempts and challenges, OAuth states, lifecycle tokens) on one
// timer loop, each delete in batches of its own transaction (InBatches).
package sweep

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/sqldb"
	"github.com/tollgate-auth/tollgate/shared/logging"
)

// Task is one periodic delete.
type Task struct {
	// Name is what the log calls the rows ("oauth states").
	Name string
	// Run deletes what expired and returns how many rows it removed.
	Run func(context.Context) (int64, error)
}

// startWithin bounds the random delay before the first round: a process
// that restarts more often than its interval (a crash loop, frequent
// rollouts) still sweeps, and replicas started together do not all
// sweep at the same moment.
const startWithin = time.Minute

// Every runs the tasks, in order, a random moment within the first minute
// (or within every, if shorter) and then every interval until ctx ends
// (then it returns nil). A failure is logged at warn (unless ctx ended)
// and the loop goes on; a task that panics is logged at error with its
// stack, and the loop goes on too: a sweep is housekeeping, and its bug
// must not take the API down with it. Rows removed are logged at level.
func Every(ctx context.Context, every time.Duration, log *slog.Logger, level slog.Level, tasks ...Task) error {
	return everyStartingWithin(ctx, every, startWithin, log, level, tasks...)
}

// everyStartingWithin is Every with the first round within start.
func everyStartingWithin(ctx context.Context, every, start time.Duration, log *slog.Logger, level slog.Level, tasks ...Task) error {
	t := time.NewTimer(rand.N(min(every, start)) + 1)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for _, task := range tasks {
			run(ctx, log, level, task)
		}
		t.Reset(every)
	}
}

// run runs one task and logs what came of it.
func run(ctx context.Context, log *slog.Logger, level slog.Level, task Task) {
	defer func() {
		// Logged whatever ctx says: a panic is a bug, not a shutdown.
		if p := recover(); p != nil {
			log.Error("sweep "+task.Name+" panicked", "panic", logging.Redact(fmt.Sprint(p)), "stack", logging.ClipStack(debug.Stack()))
		}
	}()
	if n, err := task.Run(ctx); err != nil && ctx.Err() == nil {
		log.Warn("sweep "+task.Name, "err", err)
	} else if n > 0 {
		log.Log(ctx, level, "swept "+task.Name, "rows", n)
	}
}

// Batch is how many rows one statement of a sweep deletes at most. A
// sweep over more (a tenant that signs in all day, a sweep that was off
// for a week) runs several statements, each its own short transaction:
// none holds the locks of, or writes the WAL of, every expired row at
// once, and each commits (its rows gone, its locks released) before the
// next starts.
const Batch = 1000

// InBatches deletes with q until a statement deletes fewer than Batch rows
// (or ctx ends: it runs no statement after that), and returns how many
// rows it deleted in all. q is a DELETE of at most Batch rows, which it
// takes as its last parameter, after args (`DELETE ... WHERE id IN (SELECT
// id ... LIMIT $n FOR UPDATE SKIP LOCKED)`); db is a pool, so that each
// statement commits by itself (in a transaction, they would all hold
// their locks until it ends). A batch cut short by rows another
// transaction holds (SKIP LOCKED) ends the sweep too: those rows, and any
// behind them, are taken the next time.
func InBatches(ctx context.Context, db sqldb.DB, q string, args ...any) (int64, error) {
	return InBatchesOf(ctx, db, Batch, math.MaxInt, q, args...)
}

// InBatchesOf is InBatches with statements of size rows at most, and no
// more than most of them: a sweep over more rows leaves the rest to the
// next one, so that a first sweep over a table that grew for years spreads
// over several.
func InBatchesOf(ctx context.Context, db sqldb.DB, size, most int, q string, args ...any) (int64, error) {
	args = append(args[:len(args):len(args)], size)
	var total int64
	for range most {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		tag, err := db.Exec(ctx, q, args...)
		if err != nil {
			return total, err
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(size) {
			break
		}
	}
	return total, nil
}
