# Tollgate: edge auth sidecar (authproxy) + core API (coreapi).
# The two set-up commands are `make run` and `make test`; see README.md.

GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
TESTFLAGS   ?=
BIN         := bin
# Where `make run` keeps the PostgreSQL cluster it starts when it finds no server.
PG_PERSIST_DIR ?= $(CURDIR)/.data/postgres

.PHONY: all help build test bench bench-scale lint fmt run reset pin-images clean

all: build

## help: this list of targets (each `## target:` comment of this Makefile)
help:
	@awk '/^## [a-z-]+:/ { sub(/^## /, ""); n = index($$0, ":"); printf "  %-12s%s\n", substr($$0, 1, n - 1), substr($$0, n + 1); next } \
	     /^## / { sub(/^## /, ""); printf "  %-12s %s\n", "", $$0 }' $(firstword $(MAKEFILE_LIST))

# --version and the build_info gauges (docs/operations.md, "Versions and images").
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X github.com/tollgate-auth/tollgate/shared/buildinfo.version=$(VERSION) -X github.com/tollgate-auth/tollgate/shared/buildinfo.revision=$(REVISION)

## build: coreapi, authproxy and their tools into bin/
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./coreapi/cmd/... ./authproxy/cmd/...

## test: every test of every module, against a real PostgreSQL (see scripts/with-postgres.sh);
## each package gets 30 minutes, room to spare on a machine busy with other builds (coreapi's slowest
## packages, auth and lifecycle, took 12 there before their databases were copied from a template; some 2 since)
test:
	scripts/with-postgres.sh $(GO) test -count=1 -timeout 30m $(TESTFLAGS) work

## bench: Go micro-benchmarks of the hot paths (BenchmarkHandlerNoIO in authproxy/internal/app
## is the warm path's gate: the whole auth handler, upstream canned), then the load harness (one proxy, one
## coreapi; for fleets of proxies, NATS fan-out and cold-start storms see bench-scale)
bench:
	@mkdir -p $(BIN)
	$(GO) test -run '^$$' -bench . -benchmem ./shared/... ./authproxy/... | tee $(BIN)/gobench.txt
	scripts/with-postgres.sh $(GO) test -run '^$$' -bench 'ProtectedRoute|IdentityMiddleware' -benchmem ./coreapi/internal/httpapi/ | tee -a $(BIN)/gobench.txt
	scripts/with-postgres.sh $(GO) run ./deploy/loadtest -gobench $(BIN)/gobench.txt $(BENCHFLAGS)

## bench-scale: invalidation fan-out from a real nats-server (one node, then a 3-node cluster)
## to 10/100/1,000 simulated proxies at 10/100/1,000 events/s, and 1,000 proxies restarting at
## once against a real coreapi (docs/scaling.md). Needs Debian's nats-server
## (apt-get install -y nats-server). SCALEFLAGS=-subscribers=10,100 for a short run.
bench-scale:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./coreapi/cmd/coreapi ./authproxy/cmd/authproxy ./authproxy/cmd/scalesim
	scripts/with-postgres.sh $(BIN)/scalesim -coreapi $(BIN)/coreapi -authproxy $(BIN)/authproxy -out $(BIN)/scale.md $(SCALEFLAGS)

## lint: go vet, staticcheck, gofmt, and no compiled binary tracked by git
lint:
	$(GO) vet work
	$(GO) run $(STATICCHECK) ./shared/... ./migrations/... ./coreapi/... ./authproxy/... ./deploy/...
	@test -z "$$(gofmt -l shared migrations coreapi authproxy deploy)" || { gofmt -l shared migrations coreapi authproxy deploy; echo 'gofmt needed'; exit 1; }
	@bins=$$(git ls-files -z | LC_ALL=C xargs -0 -r grep -l -a -m1 -P '^\x7fELF' 2>/dev/null); \
	test -z "$$bins" || { echo "compiled binaries tracked by git (build output belongs in bin/):"; echo "$$bins"; exit 1; }

## fmt: gofmt every module in place
fmt:
	gofmt -w shared migrations coreapi authproxy deploy

## run: the whole stack locally (PostgreSQL, embedded NATS, Mailpit unless SMTP_URL is set, coreapi,
## the example notes app, authproxy), every port on 127.0.0.1, in a database `tollgate` of its own (created if missing);
## TRACES=1 also receives both services' OpenTelemetry spans and prints each trace as a tree;
## RUNFLAGS adds the stack's flags, e.g. RUNFLAGS='-proxy-addr 127.0.0.1:18080' (docs/operations.md);
## RULES_FILE, PERMISSIONS_FILE and UPSTREAM_KEYS_FILE put a service of yours behind the proxy (README.md)
run:
	$(GO) build -o $(BIN)/stack ./deploy/cmd/stack
	PG_PERSIST_DIR="$(PG_PERSIST_DIR)" scripts/with-postgres.sh $(BIN)/stack $(if $(TRACES),-traces) $(RUNFLAGS)

## reset: start from scratch: drop the database `make run` recorded in .data/database (on the
## server it used, the local cluster it started included, and only if it created it), then remove
## .data/ (keys, binaries, and the local PostgreSQL cluster when `make run` had to start one)
reset:
	$(GO) build -o $(BIN)/stack ./deploy/cmd/stack
	cluster=$$(sed -n 's/^local=//p' "$(CURDIR)/.data/database" 2>/dev/null); \
	if [ -n "$$cluster" ]; then PG_LOCAL=1 PG_PERSIST_DIR="$$cluster" scripts/with-postgres.sh $(BIN)/stack -reset; \
	else PG_PERSIST_DIR="$(PG_PERSIST_DIR)" scripts/with-postgres.sh $(BIN)/stack -reset; fi
	rm -rf "$(CURDIR)/.data"

## pin-images: pin (or update the pins of) the Dockerfiles' base images by digest; needs
## registry access through crane or docker buildx (docs/operations.md, "Versions and images")
pin-images:
	scripts/pin-images.sh

## clean: remove bin/ (make reset removes .data/)
clean:
	rm -rf $(BIN)
