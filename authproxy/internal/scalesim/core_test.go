package scalesim

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
)

// TestProjectionFetchesServed: the simulator's fetches, made for no client
// request, reach a real coreapi and are served. From 2c9e401 (coreapi
// refuses a signed request without a request id) until the proxy's
// fetcher gave such a fetch an id of its own, every one was a 401, and
// `make bench-scale`'s storm and CPU rows measured refusals; that target is
// not part of `make test`, so nothing failed. This runs the CPU row's
// fetch loop briefly against a real coreapi and PostgreSQL.
func TestProjectionFetchesServed(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "coreapi")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/tollgate-auth/tollgate/coreapi/cmd/coreapi").CombinedOutput(); err != nil {
		t.Fatalf("build coreapi: %v\n%s", err, out)
	}
	admin := os.Getenv("DATABASE_URL") // set by `make test` (scripts/with-postgres.sh)
	if admin == "" {
		admin = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	nats := testenv.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	core, err := StartCore(ctx, CoreConfig{Bin: bin, AdminURL: admin, Dir: dir, NATSURL: nats.URL(), Users: 20})
	if err != nil {
		t.Fatal(err)
	}
	defer core.Stop()
	r, err := MeasureProjections(ctx, core, 2, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests == 0 || r.Errors != 0 {
		t.Fatalf("projection fetches: %d served, %d failed; want every one served", r.Requests, r.Errors)
	}
}
