// Command pgprobe tells scripts/with-postgres.sh, on a host without psql
// (PostgreSQL in Docker, no client tools), whether a server lets a URL in:
//
//	go run ./deploy/cmd/pgprobe postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
//
// It connects, as psql -w would (PGPASSWORD and the password file are read
// as libpq reads them; no password is asked for), runs SELECT 1, and
// prints one line: "ok" when it could, "refused REASON" when the server
// (or whatever listens there) would not let it in, with the first line of
// the reason. Either way it exits 0: any other outcome (a build that
// failed, a usage error) means the script could not tell.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// timeout bounds the whole probe, as PGCONNECT_TIMEOUT=5 bounds psql's.
const timeout = 5 * time.Second

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: pgprobe URL")
		os.Exit(2)
	}
	fmt.Println(verdict(probe(os.Args[1])))
}

// probe connects to url and runs SELECT 1.
func probe(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var one int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
}

// verdict is the line printed for probe's outcome.
func verdict(err error) string {
	if err == nil {
		return "ok"
	}
	reason, _, _ := strings.Cut(err.Error(), "\n")
	return "refused " + reason
}
