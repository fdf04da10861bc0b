package config

import (
	"io"
	"log/slog"
)

func logTo(w io.Writer, c Config) {
	slog.New(slog.NewJSONHandler(w, nil)).Info("config", "config", c)
}
