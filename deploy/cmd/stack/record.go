package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// recordFile, under the data directory, names the database `make run`
// used, so that `make reset` drops that one: reset finds a server by the
// same rules as run (scripts/with-postgres.sh), and after `PG_LOCAL=1
// make run` (or a run that started a cluster because 5432 was down) a
// plain reset reached 127.0.0.1:5432 and dropped a `tollgate` the stack
// never used, maybe the user's own. Lines of key=value; the Makefile's
// reset reads `local` to start the same cluster.
const recordFile = "database"

// usedDB is what recordFile holds.
type usedDB struct {
	Database string
	Server   string // host:port, for messages
	ServerID string // the server's system identifier: the same cluster, whatever its port
	Local    string // the cluster directory scripts/with-postgres.sh kept (PG_LOCAL_CLUSTER); empty for another server
	Created  bool   // the stack created the database (reset drops no other)
}

// serverID is the system identifier of the server of serverURL: initdb
// draws it, so two clusters never share one, and a cluster keeps it
// whatever port it listens on.
func serverID(ctx context.Context, serverURL string, wait time.Duration) (string, error) {
	var id string
	err := withServer(ctx, serverURL, wait, 10*time.Second, func(cctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(cctx, `SELECT system_identifier::text FROM pg_control_system()`).Scan(&id)
	})
	return id, err
}

// serverHost is serverURL's host:port, for messages.
func serverHost(serverURL string) string {
	u, err := url.Parse(serverURL)
	if err != nil {
		return "?"
	}
	return u.Host
}

// noteDatabase records in dataDir that the stack uses database name on
// the server of serverURL (created: this run created it). A run again on
// the same server and database keeps an earlier run's created. forgotten
// is the record it replaced when that named a database the stack created
// on another server, or under another name (Created false otherwise):
// make reset, which drops only the recorded one, will not drop that one,
// so the caller says so.
func noteDatabase(ctx context.Context, dataDir, serverURL, name string, created bool, local string, wait time.Duration) (rec, forgotten usedDB, err error) {
	id, err := serverID(ctx, serverURL, wait)
	if err != nil {
		return usedDB{}, usedDB{}, err
	}
	rec = usedDB{Database: name, Server: serverHost(serverURL), ServerID: id, Local: local, Created: created}
	if old, err := readUsedDB(dataDir); err == nil {
		if old.ServerID == id && old.Database == name {
			rec.Created = rec.Created || old.Created
		} else if old.Created {
			forgotten = old
		}
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return usedDB{}, usedDB{}, err
	}
	body := fmt.Sprintf("# Written by make run (deploy/cmd/stack): the database it uses. make reset drops this\n"+
		"# database only, on the server of this system identifier, and only if make run created it.\n"+
		"database=%s\nserver=%s\nsystem_identifier=%s\nlocal=%s\ncreated=%t\n", rec.Database, rec.Server, rec.ServerID, rec.Local, rec.Created)
	tmp := filepath.Join(dataDir, recordFile+".tmp")
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		return usedDB{}, usedDB{}, err
	}
	return rec, forgotten, os.Rename(tmp, filepath.Join(dataDir, recordFile))
}

// readUsedDB reads dataDir's record (fs.ErrNotExist when there is none).
func readUsedDB(dataDir string) (usedDB, error) {
	path := filepath.Join(dataDir, recordFile)
	f, err := os.Open(path)
	if err != nil {
		return usedDB{}, err
	}
	defer f.Close()
	var rec usedDB
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "database":
			rec.Database = v
		case "server":
			rec.Server = v
		case "system_identifier":
			rec.ServerID = v
		case "local":
			rec.Local = v
		case "created":
			rec.Created = v == "true"
		}
	}
	if err := sc.Err(); err != nil {
		return usedDB{}, err
	}
	if rec.Database == "" || rec.ServerID == "" {
		return usedDB{}, fmt.Errorf("%s names no database or server: remove it and drop the database yourself if make run made one", path)
	}
	return rec, nil
}

// reset drops the database `make run` recorded, if the server of
// serverURL is the one it was on, the stack created it, and nothing is
// connected to it. With no record it drops nothing and says so; make then
// removes .data/ all the same. A record of another server stops it (make
// keeps .data/, the record with it).
func reset(ctx context.Context, logger *slog.Logger, o options, serverURL string) error {
	rec, err := readUsedDB(o.dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		logger.Warn("no record of the database make run used: nothing dropped; if make run created one before it kept the record, drop it yourself",
			"record", filepath.Join(o.dataDir, recordFile), "server", serverHost(serverURL))
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := databaseURL(serverURL, rec.Database); err != nil {
		return err
	}
	id, err := serverID(ctx, serverURL, o.readyWait)
	if err != nil {
		return err
	}
	if id != rec.ServerID {
		where := "set DATABASE_URL to that server"
		if rec.Local != "" {
			where = "make reset starts that cluster by itself when the record is in .data/ (or run PG_LOCAL=1 PG_PERSIST_DIR=" + rec.Local + " bin/stack -reset under scripts/with-postgres.sh)"
		}
		return fmt.Errorf("make run used database %s on another server (%s, system identifier %s, cluster %q) than this one (%s, system identifier %s): nothing dropped; %s",
			rec.Database, rec.Server, rec.ServerID, rec.Local, serverHost(serverURL), id, where)
	}
	if !rec.Created {
		logger.Warn("database not dropped: it existed before make run first used it; drop it yourself if it is the stack's",
			"database", rec.Database, "server", serverHost(serverURL))
		return nil
	}
	// A stack still running (make run in another terminal) would lose its
	// database from under it, and .data/ after it.
	n, err := databaseSessions(ctx, serverURL, rec.Database, o.readyWait)
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("database %s has %d open connection(s), most likely a stack still running (make run in another terminal): stop it first (Ctrl-C), then reset", rec.Database, n)
	}
	if err := dropDatabase(ctx, serverURL, rec.Database, o.readyWait); err != nil {
		return err
	}
	logger.Info("database dropped", "database", rec.Database, "server", serverHost(serverURL))
	return os.Remove(filepath.Join(o.dataDir, recordFile))
}
