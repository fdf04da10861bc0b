// Package sweep runs coreapi's periodic deletes of expired rows (sessions,
// sign-in attempts and challenges, OAuth states, lifecycle tokens) on one
// ticker loop.
package sweep

import (
	"context"
	"log/slog"
	"time"
)

// Task is one periodic delete.
type Task struct {
	// Name is what the log calls the rows ("oauth states").
	Name string
	// Run deletes what expired and returns how many rows it removed.
	Run func(context.Context) (int64, error)
}

// Every runs the tasks, in order, every interval until ctx ends (then it
// returns nil). A failure is logged at warn (unless ctx ended) and the
// loop goes on; rows removed are logged at level.
func Every(ctx context.Context, every time.Duration, log *slog.Logger, level slog.Level, tasks ...Task) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for _, task := range tasks {
			if n, err := task.Run(ctx); err != nil && ctx.Err() == nil {
				log.Warn("sweep "+task.Name, "err", err)
			} else if n > 0 {
				log.Log(ctx, level, "swept "+task.Name, "rows", n)
			}
		}
	}
}
