#!/usr/bin/env bash
# Runs a command with DATABASE_URL pointing at a reachable PostgreSQL:
#   1. $DATABASE_URL when set;
#   2. else 127.0.0.1:5432 when it lets user postgres in without a password
#      (WITH_POSTGRES_PORT names another port), asked with psql, else with
#      `go run ./deploy/cmd/pgprobe`; a port that neither can ask is not used;
#   3. else a throwaway cluster (initdb + pg_ctl) on a random free port, as a
#      non-root user (run as root: postgres or nobody, through runuser, setpriv
#      or sudo), in a temp dir removed on exit. With PG_PERSIST_DIR set,
#      the cluster lives there instead and is kept (used by `make run`).
#      Its superuser postgres has a random password (DATABASE_URL holds it),
#      required on every connection.
#      PG_LOCAL=1 skips steps 1 and 2 and always uses a local cluster.
#      The PostgreSQL programs come from the PATH, else from the usual
#      places of the packages, or WITH_POSTGRES_BIN_DIRS (DIR:DIR...).
#      A kept cluster's directory is passed on in PG_LOCAL_CLUSTER (empty
#      otherwise), which `make run` records for `make reset`.
# Usage: scripts/with-postgres.sh COMMAND [ARGS...]
set -euo pipefail

log() { printf 'with-postgres: %s\n' "$*" >&2; }

export PG_LOCAL_CLUSTER= # set below when the command runs on a kept cluster of ours

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

if [[ -n "${DATABASE_URL:-}" && "${PG_LOCAL:-}" != 1 ]]; then
	log "using DATABASE_URL from the environment"
	exec "$@"
fi

# newest_first prints its arguments one per line, newest version first
# (sort -V where sort has it).
newest_first() {
	printf '%s\n' "$@" | sort -rV 2>/dev/null || printf '%s\n' "$@" | sort -r
}

# find_bin NAME: the path of a PostgreSQL program, from the PATH, else from
# the usual places of the packages (or from WITH_POSTGRES_BIN_DIRS, a
# colon-separated list, instead of those places when it is set).
find_bin() {
	local name=$1 dir
	if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
	if [[ -n ${WITH_POSTGRES_BIN_DIRS+set} ]]; then
		local IFS=:
		for dir in $WITH_POSTGRES_BIN_DIRS; do
			[[ -n $dir && -x "$dir/$name" ]] && { echo "$dir/$name"; return; }
		done
		return 1
	fi
	# Homebrew's postgresql@N is keg-only: its bin is not linked into the prefix.
	# Of several installed versions, the newest (as the end-to-end suite).
	for dir in $(newest_first /usr/lib/postgresql/*/bin) /usr/local/pgsql/bin /opt/homebrew/bin \
		$(newest_first /opt/homebrew/opt/postgresql*/bin /usr/local/opt/postgresql*/bin); do
		[[ -x "$dir/$name" ]] && { echo "$dir/$name"; return; }
	done
	return 1
}

# The repository's root: the Go probe below runs from there.
ROOT=$(cd "$(dirname "$0")/.." && pwd)

# probe URL prints "ok" when the server lets URL in without asking for a
# password, "refused REASON" (the first line of the server's, or the
# client's, reason) when it does not, and fails when nothing here can tell.
# psql answers when it is installed; else the Go probe of the repository
# (deploy/cmd/pgprobe, through `go run`, as `make run` builds with go),
# for PostgreSQL in Docker on a host without client tools.
probe() {
	local psql out
	local nl=$'\n' # in a variable: not every bash expands $'...' inside a quoted ${...}
	if psql=$(find_bin psql); then
		if out=$(PGCONNECT_TIMEOUT=5 "$psql" -X -w -At -d "$1" -c 'select 1' 2>&1 </dev/null); then
			echo ok
		else
			printf 'refused %s\n' "${out%%"$nl"*}"
		fi
		return 0
	fi
	command -v "${GO:-go}" >/dev/null 2>&1 || return 1
	out=$(cd "$ROOT" && "${GO:-go}" run ./deploy/cmd/pgprobe "$1" 2>/dev/null </dev/null) || return 1
	case $out in
	ok | "refused "*) printf '%s\n' "$out" ;;
	*) return 1 ;;
	esac
}

shared_port=${WITH_POSTGRES_PORT:-5432}
if [[ "${PG_LOCAL:-}" != 1 ]] && tcp_open 127.0.0.1 "$shared_port"; then
	url="postgres://postgres@127.0.0.1:$shared_port/postgres?sslmode=disable"
	# A packaged server (Debian's, Homebrew's, one in Docker) listens here
	# but asks for a password or has no role postgres, or something else
	# listens: start a cluster of our own instead. So too when neither psql
	# nor go is here to tell: an open port is no proof of a server that
	# lets us in, and a cluster of our own is.
	if ! verdict=$(probe "$url"); then
		log "127.0.0.1:$shared_port is open, but this script cannot tell whether it lets user postgres in without a password (no psql, and go run ./deploy/cmd/pgprobe did not run)"
		log "starting a local cluster instead (set DATABASE_URL to use that server)"
	elif [[ $verdict != ok ]]; then
		log "127.0.0.1:$shared_port does not let user postgres in without a password: ${verdict#refused }"
		log "starting a local cluster instead (set DATABASE_URL to use that server)"
	else
		export DATABASE_URL=$url
		log "using PostgreSQL at 127.0.0.1:$shared_port"
		exec "$@"
	fi
fi

# pg_ctl of initdb's installation: two versions' programs do not mix.
INITDB=$(find_bin initdb) && { PG_CTL=$(dirname "$INITDB")/pg_ctl; [[ -x $PG_CTL ]] || PG_CTL=$(find_bin pg_ctl); } || {
	cat >&2 <<'MSG'
with-postgres: no PostgreSQL this script can use is reachable, and none can be started here.
  Either set DATABASE_URL=postgres://USER@HOST:PORT/DB?sslmode=disable,
  or install the server binaries (initdb, pg_ctl), for example:
    Debian/Ubuntu:  sudo apt-get install postgresql
    Fedora:         sudo dnf install postgresql-server
    macOS:          brew install postgresql@16
MSG
	exit 1
}

# Empty unless root. Expanded as ${RUN_AS[@]+"${RUN_AS[@]}"}: bash before 4.4
# (macOS's /bin/bash is 3.2) calls "${RUN_AS[@]}" of an empty array an
# unbound variable under set -u.
RUN_AS=()
PG_USER=
if [[ $(id -u) -eq 0 ]]; then
	# initdb refuses to run as root; use an unprivileged account.
	for u in postgres nobody; do
		if id "$u" >/dev/null 2>&1; then PG_USER=$u; break; fi
	done
	[[ -n $PG_USER ]] || { log "running as root and no 'postgres' or 'nobody' user exists"; exit 1; }
	# util-linux's runuser, else its setpriv (a distribution may ship one
	# without the other), else sudo. Without any, as_pg would fail on
	# "command not found" and the script would blame the directory.
	if command -v runuser >/dev/null 2>&1; then
		RUN_AS=(runuser -u "$PG_USER" --)
	elif command -v setpriv >/dev/null 2>&1; then
		RUN_AS=(setpriv "--reuid=$(id -u "$PG_USER")" "--regid=$(id -g "$PG_USER")" --clear-groups --)
	elif command -v sudo >/dev/null 2>&1; then
		RUN_AS=(sudo -n -u "$PG_USER" --)
	else
		cat >&2 <<MSG
with-postgres: running as root, PostgreSQL must run as user $PG_USER (initdb refuses root), and
  none of runuser, setpriv or sudo is installed to switch to it. Either run as a regular user,
  set DATABASE_URL=postgres://USER@HOST:PORT/DB?sslmode=disable, or install one of them
  (runuser and setpriv come with util-linux).
MSG
		exit 1
	fi
fi

# as_pg COMMAND...: runs a PostgreSQL program as the cluster's user, from /
# when that is another user: the current directory (a checkout under /root,
# say) may be closed to it, and pg_ctl then printed "could not change
# directory to ...: Permission denied" on every start and stop.
as_pg() {
	if [[ ${#RUN_AS[@]} -gt 0 ]]; then
		(cd / && ${RUN_AS[@]+"${RUN_AS[@]}"} "$@")
	else
		"$@"
	fi
}

if [[ -n "${PG_PERSIST_DIR:-}" ]]; then
	mkdir -p "$PG_PERSIST_DIR"
	BASE=$(cd "$PG_PERSIST_DIR" && pwd)
	KEEP=1
else
	BASE=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-pg.XXXXXX")
	BASE=$(cd "$BASE" && pwd) # absolute: as_pg runs from /
	KEEP=0
fi
PGDATA="$BASE/data"
chmod 755 "$BASE"
if [[ ${#RUN_AS[@]} -gt 0 ]]; then
	chown "$PG_USER" "$BASE"
	# The unprivileged user needs a way in: every directory above must be
	# searchable by others, which /root (0700) is not.
	if ! as_pg test -w "$BASE" -a -x "$BASE"; then
		if [[ $KEEP -eq 1 ]]; then
			where="PG_PERSIST_DIR to a directory it can reach (make run PG_PERSIST_DIR=/var/tmp/tollgate-pg)"
		else
			rmdir "$BASE"
			where="TMPDIR to a directory it can reach"
		fi
		cat >&2 <<MSG
with-postgres: running as root, PostgreSQL runs as user $PG_USER, which cannot reach $BASE
  (a directory above it is closed to other users, as /root is). Either run as a regular user,
  set DATABASE_URL=postgres://USER@HOST:PORT/DB?sslmode=disable, or set $where.
MSG
		exit 1
	fi
fi

# A kept cluster that is already running belongs either to a run still going
# (make run in another terminal: leave it alone, stopping it would pull the
# database from under that stack) or to a run that was killed before it could
# stop it (kill -9, a crash): then every later start failed with "another
# server might be running" until it was stopped by hand. The running script
# records its pid in $BASE/owner.
owner_file="$BASE/owner"
pg_running() { as_pg "$PG_CTL" -D "$PGDATA" status >/dev/null 2>&1; }
# owner_alive PID: PID is a running with-postgres.sh (any live process
# where there is no ps to tell).
owner_alive() {
	kill -0 "$1" 2>/dev/null || return 1
	command -v ps >/dev/null 2>&1 || return 0
	ps -p "$1" -o command= 2>/dev/null | grep -q with-postgres
}
if [[ $KEEP -eq 1 ]] && pg_running; then
	owner=$(cat "$owner_file" 2>/dev/null || true)
	if [[ "$owner" =~ ^[0-9]+$ ]] && [[ "$owner" != "$$" ]] && owner_alive "$owner"; then
		# A reset (the stack's -reset) must wait for the run: another
		# cluster would not hold the database it is to drop.
		if [[ " $* " == *" -reset "* ]]; then
			cat >&2 <<MSG
with-postgres: the PostgreSQL cluster in $PGDATA is in use by another run (pid $owner),
  most likely \`make run\` in another terminal: stop that one first (Ctrl-C), then reset again.
MSG
		else
			cat >&2 <<MSG
with-postgres: the PostgreSQL cluster in $PGDATA is in use by another run (pid $owner),
  most likely \`make run\` in another terminal: stop that one first (Ctrl-C), or give this one
  a cluster of its own with PG_PERSIST_DIR=DIR (or DATABASE_URL).
MSG
		fi
		exit 1
	fi
	log "stopping the cluster in $PGDATA that an earlier run left running"
	as_pg "$PG_CTL" -D "$PGDATA" -m fast -w stop >/dev/null || {
		log "could not stop it; stop it with: pg_ctl -D $PGDATA stop"
		exit 1
	}
fi

# The port is kept with a kept cluster. When another program has taken it
# since (and it is not this cluster, left running), the cluster moves to a
# free one: its port is nothing but a start option.
port_file="$BASE/port"
PORT=
[[ -f "$port_file" ]] && PORT=$(cat "$port_file")
if [[ -n "$PORT" ]] && tcp_open 127.0.0.1 "$PORT" &&
	! as_pg "$PG_CTL" -D "$PGDATA" status >/dev/null 2>&1; then
	log "port $PORT is taken by another program; choosing another"
	PORT=
fi
if [[ -z "$PORT" ]]; then
	# 20000-32767: below the ports the kernel hands out to outgoing
	# connections (Linux 32768-60999, macOS 49152-65535), which a listening
	# check does not see but which make the server's bind fail.
	for _ in $(seq 1 50); do
		PORT=$(( (RANDOM % 12768) + 20000 ))
		tcp_open 127.0.0.1 "$PORT" || break
	done
	echo "$PORT" >"$port_file"
fi

cleanup() {
	as_pg "$PG_CTL" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
	rm -f "$owner_file"
	[[ $KEEP -eq 1 ]] || rm -rf "$BASE"
}
# On a signal, stop here: the EXIT trap cleans up once; going on would run
# the next step against a removed directory.
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# A closed terminal: the command (make run) stops its services in order
# first, then the cluster stops.
trap 'exit 129' HUP
echo $$ >"$owner_file"

# A throwaway cluster outlived a run killed before its EXIT trap (kill -9,
# the OOM killer): a postmaster and its directory left behind for good. A
# watchdog, in a session of its own where setsid exists (a signal to this
# run's process group does not reach it), waits for this shell to end and
# then stops and removes what is left; after a clean exit that is nothing.
if [[ $KEEP -eq 0 ]]; then
	watchdog() {
		trap '' INT TERM HUP
		while kill -0 "$1" 2>/dev/null; do sleep 1; done
		[[ -d "$PGDATA" ]] || exit 0
		as_pg "$PG_CTL" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1
		rm -rf "$BASE"
	}
	if command -v setsid >/dev/null 2>&1; then
		setsid bash -c "$(declare -f watchdog as_pg); $(declare -p RUN_AS PG_CTL PGDATA BASE); watchdog $$" </dev/null >/dev/null 2>&1 &
	else
		(watchdog $$) </dev/null >/dev/null 2>&1 &
	fi
fi

# The cluster's superuser has a password, and every connection must give it
# (scram-sha-256), from 127.0.0.1 too: with trust authentication any local
# user could connect as the superuser and, through COPY ... TO PROGRAM, run
# commands as the cluster's OS user (whoever runs this script, or postgres
# when root does, which owns the system's own clusters). The password is
# random, kept in $BASE/password (mode 0600, for whoever runs this script)
# and passed on in DATABASE_URL.
pw_file="$BASE/password"
new_password() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }
save_password() { (umask 077 && printf '%s\n' "$1" >"$pw_file"); }
POSTGRES=$(dirname "$INITDB")/postgres
if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
	log "initialising a local cluster in $PGDATA"
	PW=$(new_password)
	save_password "$PW"
	# initdb reads it from a file of the cluster's user, removed at once.
	pw_init="$BASE/initdb.pw"
	(umask 077 && printf '%s\n' "$PW" >"$pw_init")
	[[ ${#RUN_AS[@]} -eq 0 ]] || chown "$PG_USER" "$pw_init"
	as_pg "$INITDB" -D "$PGDATA" -U postgres --auth=scram-sha-256 --pwfile="$pw_init" \
		-E UTF8 --no-sync >"$BASE/initdb.log" 2>&1 ||
		{ rm -f "$pw_init"; tail -n 30 "$BASE/initdb.log" >&2; exit 1; }
	rm -f "$pw_init"
else
	PW=$(cat "$pw_file" 2>/dev/null || true)
	if ! [[ $PW =~ ^[0-9a-f]{32}$ ]]; then
		# A kept cluster from before passwords (trust authentication): give
		# its superuser one in single-user mode, with no connection open.
		log "setting a password on the superuser of the cluster in $PGDATA (kept in $pw_file)"
		PW=$(new_password)
		printf "ALTER ROLE postgres PASSWORD '%s';\n" "$PW" |
			as_pg "$POSTGRES" --single -D "$PGDATA" -c password_encryption=scram-sha-256 postgres >"$BASE/single.log" 2>&1 ||
			{ tail -n 30 "$BASE/single.log" >&2; exit 1; }
		save_password "$PW"
	fi
fi
# Written at every start, so that no cluster of ours admits anyone without it.
printf '%s\n' "# Written by scripts/with-postgres.sh at every start: the superuser's password on every connection." \
	"local all all scram-sha-256" \
	"host all all 127.0.0.1/32 scram-sha-256" \
	"host all all ::1/128 scram-sha-256" |
	as_pg sh -c 'cat >"$1"' sh "$PGDATA/pg_hba.conf" ||
	{ log "could not write $PGDATA/pg_hba.conf"; exit 1; }
log "starting PostgreSQL on 127.0.0.1:$PORT"
# TCP only: no Unix socket, whose path (the cluster's directory, wherever
# the checkout is) may be too long for one (107 bytes) or hold a space,
# which pg_ctl's -o string would split.
as_pg "$PG_CTL" -D "$PGDATA" -w -l "$BASE/postgres.log" \
	-o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories='' -c fsync=off -c max_connections=300" start >/dev/null ||
	{ tail -n 30 "$BASE/postgres.log" >&2; exit 1; }

# A kept cluster (make run) outlived a run killed before its EXIT trap:
# its postmaster held the port and memory until the next run or reset. A
# watchdog as above stops it (kept, not removed) once this shell is gone.
# It signals this run's postmaster only, and only while postmaster.pid still
# names it: a clean exit has stopped it already, and a later run may have
# started the cluster again since. SIGINT is PostgreSQL's fast shutdown.
if [[ $KEEP -eq 1 ]]; then
	PM=$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null || true)
	if [[ $PM =~ ^[0-9]+$ ]]; then
		keeper() {
			trap '' INT TERM HUP
			while kill -0 "$1" 2>/dev/null; do sleep 1; done
			[[ $(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null) == "$2" ]] || exit 0
			kill -INT "$2" 2>/dev/null
		}
		if command -v setsid >/dev/null 2>&1; then
			setsid bash -c "$(declare -f keeper); $(declare -p PGDATA); keeper $$ $PM" </dev/null >/dev/null 2>&1 &
		else
			(keeper $$ "$PM") </dev/null >/dev/null 2>&1 &
		fi
	fi
fi

export DATABASE_URL="postgres://postgres:$PW@127.0.0.1:$PORT/postgres?sslmode=disable"
[[ $KEEP -eq 0 ]] || PG_LOCAL_CLUSTER=$BASE
set +e
# The command runs in the background and this shell waits for it, so that a
# SIGTERM or SIGHUP sent to this script alone (kill PID, a supervisor or an
# IDE stopping what it started) is passed on: the command stops its services,
# then the EXIT trap stops the cluster. Waiting on a command in the
# foreground, bash ran its traps only once the command ended by itself,
# which `make run` never does. Ctrl-C signals the whole group: the command
# gets SIGINT itself (restored here: bash ignores it in a background
# command), and this shell waits for it to stop before stopping the
# cluster. Its own standard input is kept (not /dev/null).
child=
forward() {
	if [[ -n $child ]]; then kill -s "$1" "$child" 2>/dev/null; else exit "$2"; fi
}
trap 'forward TERM 143' TERM
trap 'forward HUP 129' HUP
trap '[[ -n $child ]] || exit 130' INT
(
	trap - INT QUIT
	exec "$@"
) <&0 &
child=$!
while :; do
	wait "$child"
	rc=$?
	# wait returns early when a trap ran; the command may still be stopping.
	kill -0 "$child" 2>/dev/null || break
done
exit $rc
