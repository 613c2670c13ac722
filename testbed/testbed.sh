#!/usr/bin/env bash
# testbed.sh — two real, federating Synapse homeservers on PostgreSQL, on loopback.
#
#   testbed.sh install   build (or reuse) the cached Debian sid chroot with matrix-synapse
#   testbed.sh up        start PostgreSQL, (re)create hs1/hs2 from scratch, start both, add users
#   testbed.sh down      stop both homeservers
#   testbed.sh start N   start homeserver N (1 or 2) again with its existing data
#   testbed.sh stop N    stop homeserver N (SIGTERM, waits)
#   testbed.sh restart N stop, then start homeserver N (medic's restart_command in tests)
#   testbed.sh recreatedb N  drop and create hsN's empty database (Synapse must be stopped)
#   testbed.sh fresh N   (re)create hsN (3..11) from scratch, start it and add its users: hs3 is
#                        Synapse on SQLite (hs3.test:8483, client 8028) for the tests that need
#                        it (they run this and `stop 3` after); hs4..hs9 (PostgreSQL) are spare
#   testbed.sh env       print the facts tests need, as shell variables
#
# Synapse is not packaged for Debian 12, so it runs from a Debian sid chroot that shares the
# host's network (see ../shared/docs/testbed.md). The chroot is cached in $MEDIC_TESTBED_CACHE
# and only rebuilt when missing; the homeservers' data lives inside it under /srv and is
# recreated by every `up`.
set -euo pipefail

CACHE=${MEDIC_TESTBED_CACHE:-/var/cache/medic-testbed}
ROOT=$CACHE/chroot
MIRROR=${MEDIC_TESTBED_MIRROR:-http://deb.debian.org/debian}
PGPASS=synapse
PW_ADMIN=admin-pass
PW_MEDIC=medic-pass
PW_USER=user-pass
SHARED_SECRET=medic-testbed-shared-secret

# The servers this script starts outlive it: close every descriptor we inherited (beyond
# stdio and bash's own 255), so they never keep a caller's testbed lock (see testbed/lock.go)
# or pipe open.
for fd in /proc/$$/fd/*; do
  fd=${fd##*/}
  if [ "$fd" -gt 2 ] && [ "$fd" -lt 255 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
done

fed_port() { echo $((8480 + $1)); }   # hs1.test:8481, hs2.test:8482 (TLS federation)
# Synapse's Prometheus metrics: http://127.0.0.1:$((9400 + N))/_synapse/metrics (hs1 9401).
cli_port() { echo $((8000 + $1 * 10 - 2)); } # hs1 8008, hs2 8018 (plain HTTP client/admin)
srv() { echo "/srv/hs$1"; }

log() { echo "testbed: $*" >&2; }

need_root() { [ "$(id -u)" = 0 ] || { log "must run as root (chroot, apt)"; exit 1; }; }

ensure_hosts() {
  local f
  for f in /etc/hosts "$ROOT/etc/hosts"; do
    [ -f "$f" ] || continue
    grep -q 'hs1.test' "$f" || echo '127.0.0.1 hs1.test hs2.test hs3.test hs4.test hs5.test' >>"$f"
    grep -q 'hs5.test' "$f" || echo '127.0.0.1 hs4.test hs5.test' >>"$f"
    grep -q 'hs7.test' "$f" || echo '127.0.0.1 hs6.test hs7.test' >>"$f"
    grep -q 'hs9.test' "$f" || echo '127.0.0.1 hs8.test hs9.test' >>"$f"
    grep -q 'hs11.test' "$f" || echo '127.0.0.1 hs10.test hs11.test' >>"$f"
  done
}

install() {
  need_root
  if [ -x "$ROOT/usr/bin/python3" ] && chroot "$ROOT" python3 -c 'import synapse, psycopg2' 2>/dev/null; then
    ensure_hosts; return 0
  fi
  command -v debootstrap >/dev/null || { apt-get update -qq; apt-get install -y -qq debootstrap >/dev/null; }
  command -v pg_ctlcluster >/dev/null || { apt-get update -qq; apt-get install -y -qq postgresql >/dev/null; }
  command -v openssl >/dev/null || { apt-get update -qq; apt-get install -y -qq openssl >/dev/null; }
  log "building Synapse chroot in $ROOT (once; ~1-2 min)"
  rm -rf "$ROOT.tmp"; mkdir -p "$CACHE"
  debootstrap --variant=minbase sid "$ROOT.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  cp /etc/resolv.conf "$ROOT.tmp/etc/resolv.conf" 2>/dev/null || true
  chroot "$ROOT.tmp" apt-get -o Acquire::Check-Valid-Until=false update -qq >>"$CACHE/debootstrap.log" 2>&1
  DEBIAN_FRONTEND=noninteractive chroot "$ROOT.tmp" apt-get install -y -qq --no-install-recommends \
    matrix-synapse python3-psycopg2 >>"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  chroot "$ROOT.tmp" apt-get clean
  mv "$ROOT.tmp" "$ROOT"
  ensure_hosts
  log "chroot ready: $(chroot "$ROOT" python3 -c 'import synapse; print(synapse.__version__)')"
}

pg_start() {
  local ver
  ver=$(ls /etc/postgresql | sort -n | tail -1)
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null || true
  for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 && break; sleep 0.2; done
  su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='synapse'\"" | grep -q 1 \
    || su postgres -c "psql -qc \"CREATE ROLE synapse LOGIN SUPERUSER PASSWORD '$PGPASS'\""
}

createdb_hs() {
  local n=$1
  su postgres -c "dropdb --if-exists -f hs$n" >/dev/null
  su postgres -c "createdb -E UTF8 --lc-collate=C --lc-ctype=C -T template0 -O synapse hs$n"
}

pidfile() { echo "$ROOT$(srv "$1")/homeserver.pid"; }

running() { local p; p=$(cat "$(pidfile "$1")" 2>/dev/null) && kill -0 "$p" 2>/dev/null; }

configure() {
  local n=$1 d; d=$(srv "$n")
  local name="hs$n.test:$(fed_port "$n")"
  rm -rf "$ROOT$d"; mkdir -p "$ROOT$d"
  chroot "$ROOT" python3 -m synapse.app.homeserver --server-name "$name" \
    --config-path "$d/homeserver.yaml" --data-directory "$d" --generate-config --report-stats=no >/dev/null
  # The generated log config writes to /homeserver.log; give each server its own log.
  sed -i "s#filename: .*homeserver.log#filename: $d/homeserver.log#" "$ROOT$d/hs$n.test:$(fed_port "$n").log.config"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=hs$n.test" \
    -addext "subjectAltName=DNS:hs$n.test" \
    -keyout "$ROOT$d/tls.key" -out "$ROOT$d/tls.crt" 2>/dev/null
  # Keep only the generated keys/paths we want; replace listeners, database and limits.
  python3 - "$ROOT$d/homeserver.yaml" "$n" "$name" "$d" <<'PY'
import sys, re
path, n, name, d = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
src = open(path).read()
keep = []
for line in src.splitlines():
    if re.match(r'^(server_name|pid_file|log_config|media_store_path|registration_shared_secret|macaroon_secret_key|form_secret|signing_key_path|report_stats):', line):
        keep.append(line)
n = int(n)
fed = 8480 + n
cli = 8000 + n * 10 - 2
keep = [l for l in keep if not l.startswith('registration_shared_secret')]
# hs3 runs on SQLite: a real Synapse SQLite database for !import's SQLite source.
if n == 3:
    database = f"""database:
  name: sqlite3
  args:
    database: {d}/homeserver.db"""
else:
    database = f"""database:
  name: psycopg2
  args:
    user: synapse
    password: synapse
    dbname: hs{n}
    host: 127.0.0.1
    cp_min: 1
    cp_max: 5"""
keep.append(f"""registration_shared_secret: "medic-testbed-shared-secret"
public_baseurl: http://127.0.0.1:{cli}/
listeners:
  - port: {cli}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources: [{{names: [client], compress: false}}]
  - port: {fed}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: true
    resources: [{{names: [federation], compress: false}}]
  - port: {9400 + n}
    bind_addresses: ['127.0.0.1']
    type: metrics
enable_metrics: true
# The one per-destination metric (synapse_federation_last_sent_pdu_time) is kept for these.
federation_metrics_domains: [{", ".join(f"'hs{i}.test:{8480 + i}'" for i in range(1, 12))}]
tls_certificate_path: {d}/tls.crt
tls_private_key_path: {d}/tls.key
{database}
trusted_key_servers: []
suppress_key_server_warning: true
federation_verify_certificates: false
ip_range_whitelist: ['127.0.0.0/8']
federation_ip_range_blacklist: []
enable_registration: false
presence:
  enabled: false
url_preview_enabled: false
rc_message: {{per_second: 1000, burst_count: 1000}}
rc_login:
  address: {{per_second: 1000, burst_count: 1000}}
  account: {{per_second: 1000, burst_count: 1000}}
  failed_attempts: {{per_second: 1000, burst_count: 1000}}
rc_registration: {{per_second: 1000, burst_count: 1000}}
rc_joins:
  local: {{per_second: 1000, burst_count: 1000}}
  remote: {{per_second: 1000, burst_count: 1000}}
rc_invites:
  per_room: {{per_second: 1000, burst_count: 1000}}
  per_user: {{per_second: 1000, burst_count: 1000}}
  per_issuer: {{per_second: 1000, burst_count: 1000}}
rc_federation: {{window_size: 1000, sleep_limit: 1000, sleep_delay: 10, reject_limit: 1000, concurrent: 100}}
rc_key_requests: {{per_second: 1000, burst_count: 1000}}
rc_3pid_validation: {{per_second: 1000, burst_count: 1000}}
rc_admin_redaction: {{per_second: 1000, burst_count: 1000}}
rc_delayed_event_mgmt: {{per_second: 1000, burst_count: 1000}}
rc_room_creation: {{per_second: 1000, burst_count: 1000}}
rc_reports: {{per_second: 1000, burst_count: 1000}}
rc_presence:
  per_user: {{per_second: 1000, burst_count: 1000}}
""")
open(path, 'w').write("\n".join(keep) + "\n")
PY
}

start() {
  local n=$1 d; d=$(srv "$n")
  running "$n" && return 0
  ensure_hosts
  local port; port=$(cli_port "$n")
  if curl -fsS "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null 2>&1; then
    log "port $port already answers but not from a homeserver this script started; stop it first"
    return 1
  fi
  # Synapse writes pid_file only when daemonizing, so record the pid ourselves; chroot and
  # bash exec into python, so $! is Synapse's pid.
  chroot "$ROOT" bash -c "cd $d && exec python3 -m synapse.app.homeserver -c $d/homeserver.yaml" \
    >>"$ROOT$d/stdout.log" 2>&1 &
  local pid=$!
  echo $pid >"$(pidfile "$n")"
  for i in $(seq 300); do
    if curl -fsS "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null 2>&1; then
      log "hs$n up after $((i / 5)) s"; return 0
    fi
    # Synapse that refuses to start (e.g. IncorrectDatabaseSetup) exits: no need to wait on.
    kill -0 "$pid" 2>/dev/null || { rm -f "$(pidfile "$n")"; break; }
    sleep 0.2
  done
  log "hs$n did not start; last lines:"; tail -30 "$ROOT$d/stdout.log" "$ROOT$d/homeserver.log" >&2 || true
  return 1
}

stop() {
  local n=$1 p
  p=$(cat "$(pidfile "$n")" 2>/dev/null) || return 0
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || { rm -f "$(pidfile "$n")"; return 0; }; sleep 0.2; done
  kill -KILL "$p" 2>/dev/null || true
  rm -f "$(pidfile "$n")"
}

register() {
  local n=$1 user=$2 pw=$3 admin=$4
  chroot "$ROOT" synapse_register_new_matrix_user -c "$(srv "$n")/homeserver.yaml" \
    -u "$user" -p "$pw" "$admin" "http://127.0.0.1:$(cli_port "$n")" >/dev/null
}

up() {
  need_root
  # Servers that answer are reused: recreating hs1/hs2 under another user's running tests
  # would pull their databases away (CI starts from nothing, so it always gets fresh ones).
  if [ -z "${MEDIC_TESTBED_RECREATE:-}" ] && answers 1 && answers 2; then
    log "hs1 and hs2 already answer; reusing them (MEDIC_TESTBED_RECREATE=1 recreates)"
    env_out
    return
  fi
  install
  pg_start
  local n
  for n in 1 2; do stop "$n"; createdb_hs "$n"; configure "$n"; done
  start 1 & local a=$!
  start 2 & local b=$!
  wait $a; wait $b
  for n in 1 2; do
    register "$n" admin "$PW_ADMIN" -a
    register "$n" alice "$PW_USER" --no-admin
    register "$n" bob "$PW_USER" --no-admin
  done
  register 1 medic "$PW_MEDIC" -a
  env_out
}

answers() { curl -fsS "http://127.0.0.1:$(cli_port "$1")/_matrix/client/versions" >/dev/null 2>&1; }

down() { stop 1 || true; stop 2 || true; stop 3 || true; }

# fresh N: an extra homeserver created from scratch: hs3 runs on SQLite (for the tests that
# need a SQLite Synapse database); hs4/hs5, hs6/hs7, hs8/hs9 and hs10/hs11 on PostgreSQL (databases hs4..hs11) make
# private pairs for development runs that must not touch the shared hs1/hs2.
fresh() {
  local n=$1
  need_root
  [ "$n" -ge 3 ] && [ "$n" -le 11 ] || { log "fresh is for hs3..hs11 (hs1/hs2 are recreated by up)"; exit 2; }
  install
  stop "$n"
  if [ "$n" != 3 ]; then pg_start; createdb_hs "$n"; fi
  configure "$n"
  start "$n"
  register "$n" admin "$PW_ADMIN" -a
  register "$n" alice "$PW_USER" --no-admin
  register "$n" bob "$PW_USER" --no-admin
  register "$n" medic "$PW_MEDIC" -a
}

env_out() {
  local n
  echo "MEDIC_TESTBED_ROOT=$ROOT"
  echo "MEDIC_TESTBED_SHARED_SECRET=$SHARED_SECRET"
  echo "MEDIC_TESTBED_PASSWORD_ADMIN=$PW_ADMIN"
  echo "MEDIC_TESTBED_PASSWORD_MEDIC=$PW_MEDIC"
  echo "MEDIC_TESTBED_PASSWORD_USER=$PW_USER"
  for n in 1 2 3; do
    echo "MEDIC_TESTBED_HS${n}_N=$n"
    echo "MEDIC_TESTBED_HS${n}_NAME=hs$n.test:$(fed_port "$n")"
    echo "MEDIC_TESTBED_HS${n}_URL=http://127.0.0.1:$(cli_port "$n")"
    if [ "$n" = 3 ]; then
      echo "MEDIC_TESTBED_HS${n}_SQLITE=$ROOT$(srv "$n")/homeserver.db"
    else
      echo "MEDIC_TESTBED_HS${n}_DSN=postgres://synapse:$PGPASS@127.0.0.1:5432/hs$n?sslmode=disable"
    fi
    echo "MEDIC_TESTBED_HS${n}_DIR=$ROOT$(srv "$n")"
  done
}

cmd=${1:-}; shift || true
case "$cmd" in
  install) install ;;
  up)
    # One user of the testbed at a time (testbed/lock.go); -o: the servers started here must
    # not inherit the lock.
    if [ -z "${MEDIC_TESTBED_LOCK_HELD:-}" ]; then
      exec flock -o /tmp/medic-testbed.lock env MEDIC_TESTBED_LOCK_HELD=1 "$0" up
    fi
    up ;;
  down) down ;;
  start) start "$1" ;;
  stop) stop "$1" ;;
  restart) stop "$1"; start "$1" ;;
  recreatedb) pg_start; createdb_hs "$1" ;;
  fresh) fresh "$1" ;;
  env) env_out ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
