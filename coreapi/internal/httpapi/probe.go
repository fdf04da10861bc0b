package httpapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DBProbe answers readiness questions on a database connection of its
// own, opened with the pool's settings and kept between probes. Through
// the pool, a probe would queue behind the requests for a connection: at
// a load peak that fills the pool for longer than the kubelet's probe
// timeout (1 s by default), every replica would report itself unready at
// once and the Service would lose all of them, turning a slowdown into an
// outage. On its own connection a probe still fails when the database
// does not answer, and only then.
type DBProbe struct {
	cfg  *pgx.ConnConfig
	sem  chan struct{} // one probe at a time owns conn
	conn *pgx.Conn
}

// NewDBProbe returns a probe of pool's database. It connects on first use.
func NewDBProbe(pool *pgxpool.Pool) *DBProbe {
	cfg := pool.Config().ConnConfig.Copy()
	cfg.Tracer = nil // probes are not requests: no spans, no round-trip counts
	return &DBProbe{cfg: cfg, sem: make(chan struct{}, 1)}
}

// Do runs f on the probe's connection, connecting first if there is
// none. A kept connection found broken (the server restarted since the
// last probe) is replaced and f tried once more, so a database that is
// back is reported at once.
func (p *DBProbe) Do(ctx context.Context, f func(ctx context.Context, c *pgx.Conn) error) error {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("database probe: %w", ctx.Err())
	}
	defer func() { <-p.sem }()
	kept := p.conn != nil
	broken, err := p.try(ctx, f)
	if err != nil && broken && kept && ctx.Err() == nil {
		_, err = p.try(ctx, f)
	}
	return err
}

// try runs f once; broken reports that the connection failed (and is
// gone), not only f.
func (p *DBProbe) try(ctx context.Context, f func(ctx context.Context, c *pgx.Conn) error) (broken bool, err error) {
	if p.conn == nil {
		c, err := pgx.ConnectConfig(ctx, p.cfg)
		if err != nil {
			return true, fmt.Errorf("database probe: connect: %w", err)
		}
		p.conn = c
	}
	if err := f(ctx, p.conn); err != nil {
		if p.conn.IsClosed() {
			p.closeConn()
			return true, err
		}
		return false, err
	}
	return false, nil
}

// ErrReadOnly is Ping's answer when the database answers but its
// transactions are read-only: a hot standby (a primary demoted by a
// failover, or a replica the database address reaches before DNS moved
// on) or default_transaction_read_only set on the server or database.
// Every write would be answered 503, so the pod is not ready.
var ErrReadOnly = errors.New("database is read-only")

// Ping implements Pinger: the database answers and takes writes. A
// connection found read-only is closed (and one new connection tried at
// once), so that a later probe connects again and finds the server the
// address reaches then, as the pool's new connections do.
func (p *DBProbe) Ping(ctx context.Context) error {
	return p.Do(ctx, func(ctx context.Context, c *pgx.Conn) error {
		const q = `SELECT current_setting('transaction_read_only')`
		var readOnly string
		if err := c.QueryRow(ctx, q).Scan(&readOnly); err != nil {
			return err
		}
		if readOnly != "off" {
			_ = c.Close(ctx)
			return ErrReadOnly
		}
		return nil
	})
}

// Close closes the probe's connection, if any.
func (p *DBProbe) Close() {
	p.sem <- struct{}{}
	defer func() { <-p.sem }()
	p.closeConn()
}

func (p *DBProbe) closeConn() {
	if p.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = p.conn.Close(ctx)
	p.conn = nil
}
