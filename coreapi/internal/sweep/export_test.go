package sweep

import (
	"context"
	"log/slog"
	"time"
)

// EveryStartingWithin is Every with its first round within start.
func EveryStartingWithin(ctx context.Context, every, start time.Duration, log *slog.Logger, level slog.Level, tasks ...Task) error {
	return everyStartingWithin(ctx, every, start, log, level, tasks...)
}
