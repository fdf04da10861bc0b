package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
)

const lifecycleSweepEvery = 10 * time.Minute

// wireLifecycle adds the account lifecycle (verification, reset,
// invitations, their pages) and the mail sender.
func wireLifecycle(cfg config.Config, log *slog.Logger, pool *pgxpool.Pool, reg prometheus.Registerer,
	opts *httpapi.Options, svc *auth.Service, hasher *password.Hasher) ([]worker, error) {
	var transport mail.Transport
	if cfg.SMTPURL == "" {
		// Load refuses an unset SMTP_URL unless MAIL_TO_LOG=true.
		log.Warn("SMTP_URL is unset and MAIL_TO_LOG=true: mails are written to the log, one-time links included, not sent (development only)")
		transport = mail.Log{Logger: log}
	} else {
		t, err := mail.ParseSMTPURL(cfg.SMTPURL)
		if err != nil {
			return nil, fmt.Errorf("SMTP_URL: %w", err)
		}
		transport = t
	}
	lc, err := lifecycle.New(lifecycle.Options{Logger: log, Pool: pool, Auth: svc, Passwords: hasher, Catalog: cfg.Catalog,
		Limits: lifecycle.Limits{Invitations: invitationLimits(cfg)}})
	if err != nil {
		return nil, err
	}
	sender, err := mail.NewSender(mail.SenderOptions{Pool: pool, Transport: transport, Links: cfg.Links(),
		From: cfg.MailFrom, Logger: log, Registerer: reg, LinkCheck: lc.MailLinkRefusal})
	if err != nil {
		return nil, err
	}
	opts.Register = append(opts.Register, lc.Register)
	opts.ErrorMappers = append(opts.ErrorMappers, lifecycle.MapError)
	return []worker{sender.Run, func(ctx context.Context) error { return lc.RunSweeper(ctx, lifecycleSweepEvery) }}, nil
}
