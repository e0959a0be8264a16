#!/usr/bin/env bash
# The local services of synrank, started in the background and stopped again (`make up` / `make down`):
#
#   prefect       Prefect server on 127.0.0.1:$PREFECT_PORT (default 4200), its database and settings
#                 in $SYNRANK_PREFECT_HOME (default <repo>/.prefect, so ~/.prefect is never touched)
#   worker-<pool> one process worker per work pool in $SYNRANK_POOLS (default "cpu gpu")
#   mlflow        MLflow server on 127.0.0.1:$MLFLOW_PORT (default 5000), runs in <repo>/mlflow/mlflow.db,
#                 artifacts in <repo>/mlflow/artifacts
#
# `up` also creates the work pools that are missing and (re)deploys prefect.yaml with params.yaml as the
# default parameters (python -m synrank.deploy $SYNRANK_DEPLOY_ARGS). Each process runs in its own session
# (setsid), so its whole process group can be stopped; pid files and logs live in $SYNRANK_RUN_DIR (<repo>/run).
#
# Ports: `up` records the ports in use in $SYNRANK_RUN_DIR/ports.env (PREFECT_PORT, MLFLOW_PORT and S3_PORT,
# the SeaweedFS port that `make up` passes in), which the Makefile reads, so that every later `make` target
# talks to the servers `make up` started, on whatever ports it chose; `down` removes the file. A service
# that is still running keeps its recorded port; one that is not takes $PREFECT_PORT / $MLFLOW_PORT /
# $S3_PORT, else the recorded port, else the default (4200, 5000, 8333).
#
# usage: scripts/services.sh up [prefect|mlflow]   start what is not running yet (both by default), redeploy
#        scripts/services.sh down                  stop everything that has a pid file
#        scripts/services.sh status                what is running
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SYNRANK_VENV:-$ROOT/.venv}"
RUN_DIR="$(realpath -m "${SYNRANK_RUN_DIR:-$ROOT/run}")"
PORTS_FILE="$RUN_DIR/ports.env"
HOST=127.0.0.1
MLFLOW_DIR="$(realpath -m "${SYNRANK_MLFLOW_DIR:-$ROOT/mlflow}")"
POOLS="${SYNRANK_POOLS:-cpu gpu}"
UP_TIMEOUT="${SYNRANK_UP_TIMEOUT:-180}"      # seconds a server or worker may take to answer
STOP_TIMEOUT="${SYNRANK_STOP_TIMEOUT:-20}"   # seconds between SIGTERM and SIGKILL
read -r -a DEPLOY_ARGS <<< "${SYNRANK_DEPLOY_ARGS:-}"

log() { printf '%s\n' "$*"; }
die() { printf 'services: %s\n' "$*" >&2; exit 1; }

pidfile() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }
logfile() { printf '%s/%s.log' "$RUN_DIR" "$1"; }

# The pid in $1's pid file if that process group still exists and is one this script started, else "".
running_pid() {
    local f pid cmd
    f="$(pidfile "$1")"
    [[ -f "$f" ]] || return 0
    pid="$(tr -dc 0-9 < "$f")"
    [[ -n "$pid" ]] || return 0
    kill -0 -- "-$pid" 2>/dev/null || return 0
    # A live leader must still be our command (a recycled pid is someone else's: leave it alone).
    if [[ -r "/proc/$pid/cmdline" ]]; then
        cmd="$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null || true)"
        [[ "$cmd" == *"$VENV/bin/"* ]] || return 0
    fi
    printf '%s' "$pid"
}

# start NAME CMD...: run CMD in a new session, in the repo root, output to run/NAME.log.
start() {
    local name="$1" log pid
    shift
    log="$(logfile "$name")"
    [[ -f "$log" ]] && mv -f "$log" "$log.1"
    # Not an interactive shell, so the background child is no group leader and setsid execs in place:
    # $! is then the session, group and process id at once.
    (cd "$ROOT" && exec setsid "$@" > "$log" 2>&1 < /dev/null) &
    pid=$!
    printf '%s\n' "$pid" > "$(pidfile "$name")"
    log "started $name (pid $pid, log $log)"
}

tail_log() { sed 's/^/    /' < <(tail -n 20 "$(logfile "$1")" 2>/dev/null || true) >&2; }

# wait_for NAME CHECK...: until CHECK succeeds; fails with the log's tail if NAME dies or time runs out.
wait_for() {
    local name="$1" deadline=$((SECONDS + UP_TIMEOUT))
    shift
    until "$@"; do
        if [[ -z "$(running_pid "$name")" ]]; then
            tail_log "$name"
            stop "$name"
            die "$name exited while starting; see $(logfile "$name")"
        fi
        if ((SECONDS >= deadline)); then
            tail_log "$name"
            stop "$name"
            die "$name did not become ready within ${UP_TIMEOUT}s; see $(logfile "$name")"
        fi
        sleep 0.5
    done
}

# The port recorded for VAR in ports.env (digits only), or "".
recorded_port() {
    [[ -f "$PORTS_FILE" ]] || return 0
    sed -n "s/^$1=\([0-9][0-9]*\)\$/\1/p" "$PORTS_FILE" | tail -n 1
}

# port_for NAME VAR DEFAULT: the recorded port while NAME runs (a running server does not move), else
# $VAR from the environment, else the recorded one, else DEFAULT.
port_for() {
    local recorded
    recorded="$(recorded_port "$2")"
    if [[ -n "$recorded" && -n "$(running_pid "$1")" ]]; then
        printf '%s' "$recorded"
    else
        printf '%s' "${!2:-${recorded:-$3}}"
    fi
}

# Written whole, then renamed: a make reading it never sees half a file.
record_ports() {
    printf 'PREFECT_PORT=%s\nMLFLOW_PORT=%s\nS3_PORT=%s\n' "$PREFECT_PORT" "$MLFLOW_PORT" "$S3_PORT" \
        > "$PORTS_FILE.tmp"
    mv -f "$PORTS_FILE.tmp" "$PORTS_FILE"
}

answers() { curl -fsS --max-time 2 -o /dev/null "$1" 2>/dev/null; }
worker_ready() { grep -q "started!" "$(logfile "$1")" 2>/dev/null; }

# stop NAME...: SIGTERM to each process group, SIGKILL to what is left after $STOP_TIMEOUT; pid files go.
stop() {
    local name pid deadline
    local -a pids=()
    for name in "$@"; do
        pid="$(running_pid "$name")"
        if [[ -n "$pid" ]]; then
            kill -TERM -- "-$pid" 2>/dev/null || true
            pids+=("$pid")
            log "stopping $name (pid $pid)"
        fi
    done
    deadline=$((SECONDS + STOP_TIMEOUT))
    for pid in "${pids[@]}"; do
        while kill -0 -- "-$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        if kill -0 -- "-$pid" 2>/dev/null; then
            kill -KILL -- "-$pid" 2>/dev/null || true
            log "killed process group $pid (still there after ${STOP_TIMEOUT}s)"
        fi
    done
    for name in "$@"; do rm -f "$(pidfile "$name")"; done
}

# True (and says so) when the named service's pid file points at a live process.
already_running() {
    local pid
    pid="$(running_pid "$1")"
    [[ -n "$pid" ]] || return 1
    log "$1 already running (pid $pid)"
}

start_prefect_server() {
    already_running prefect && return
    answers "$PREFECT_URL/api/health" && die "something else answers on $PREFECT_URL; stop it or set PREFECT_PORT"
    mkdir -p "$PREFECT_HOME"
    start prefect "$VENV/bin/prefect" server start --host "$HOST" --port "$PREFECT_PORT" --analytics-off
}

start_mlflow_server() {
    already_running mlflow && return
    answers "$MLFLOW_URL/health" && die "something else answers on $MLFLOW_URL; stop it or set MLFLOW_PORT"
    mkdir -p "$MLFLOW_DIR/artifacts"
    # New experiments keep their artifacts as plain files under mlflow/artifacts, like the ones the
    # sqlite client creates (file://.../mlflow/artifacts): every run works with or without the server.
    # Proxied uploads (mlflow-artifacts:/ URIs) land in the same folder.
    start mlflow "$VENV/bin/mlflow" server --host "$HOST" --port "$MLFLOW_PORT" --workers 1 \
        --backend-store-uri "sqlite:///$MLFLOW_DIR/mlflow.db" \
        --default-artifact-root "file://$MLFLOW_DIR/artifacts" \
        --serve-artifacts --artifacts-destination "file://$MLFLOW_DIR/artifacts"
}

up_prefect() {
    wait_for prefect answers "$PREFECT_URL/api/health"
    log "prefect server ready at $PREFECT_URL"
    # Creates the missing work pools, then registers every deployment (defaults from params.yaml).
    (cd "$ROOT" && "$VENV/bin/python" -m synrank.deploy "${DEPLOY_ARGS[@]}") \
        || die "deploying failed (python -m synrank.deploy ${DEPLOY_ARGS[*]})"
    local pool w
    for pool in $POOLS; do
        w="worker-$pool"
        already_running "$w" \
            || start "$w" "$VENV/bin/prefect" worker start --pool "$pool" --type process --name "synrank-$pool"
    done
    for pool in $POOLS; do
        wait_for "worker-$pool" worker_ready "worker-$pool"
    done
    log "workers ready for pools: $POOLS"
}

up_mlflow() {
    wait_for mlflow answers "$MLFLOW_URL/health"
    log "mlflow server ready at $MLFLOW_URL"
}

cmd_up() {
    local what="${1:-all}"
    [[ -x "$VENV/bin/prefect" && -x "$VENV/bin/mlflow" ]] || die "no virtualenv at $VENV (run: make env)"
    command -v setsid > /dev/null || die "setsid not found (util-linux)"
    command -v curl > /dev/null || die "curl not found"
    mkdir -p "$RUN_DIR"
    case "$what" in
        all)
            # Both servers take a while to import; start them together, then wait for each.
            start_prefect_server
            start_mlflow_server
            up_prefect
            up_mlflow
            ;;
        prefect) start_prefect_server; up_prefect ;;
        mlflow) start_mlflow_server; up_mlflow ;;
        *) die "unknown service '$what' (prefect or mlflow)" ;;
    esac
    record_ports
    log "up: Prefect UI $PREFECT_URL, MLflow UI $MLFLOW_URL (ports in $PORTS_FILE; stop with: make down)"
}

cmd_down() {
    [[ -d "$RUN_DIR" ]] || { log "nothing running"; return; }
    local w=() f name
    # Workers first (they deregister from the server), then the servers; also any stray pid file.
    for f in "$RUN_DIR"/worker-*.pid; do [[ -e "$f" ]] && w+=("$(basename "$f" .pid)"); done
    stop "${w[@]}"
    stop prefect mlflow
    for f in "$RUN_DIR"/*.pid; do
        [[ -e "$f" ]] || continue
        name="$(basename "$f" .pid)"
        stop "$name"
    done
    rm -f "$PORTS_FILE"
    log "down"
}

cmd_status() {
    local f name pid any=0
    for f in "$RUN_DIR"/*.pid; do
        [[ -e "$f" ]] || continue
        name="$(basename "$f" .pid)"
        pid="$(running_pid "$name")"
        any=1
        if [[ -n "$pid" ]]; then log "$name: running (pid $pid)"; else log "$name: not running (stale pid file)"; fi
    done
    ((any)) || log "nothing running"
}

PREFECT_PORT="$(port_for prefect PREFECT_PORT 4200)"
MLFLOW_PORT="$(port_for mlflow MLFLOW_PORT 5000)"
S3_PORT="$(port_for s3 S3_PORT 8333)"
PREFECT_URL="http://$HOST:$PREFECT_PORT"
MLFLOW_URL="http://$HOST:$MLFLOW_PORT"

# What every process started here sees: its own Prefect home and server, no telemetry.
export PREFECT_HOME="$(realpath -m "${SYNRANK_PREFECT_HOME:-$ROOT/.prefect}")"
export PREFECT_API_URL="$PREFECT_URL/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DO_NOT_TRACK=1
export SYNRANK_ROOT="$ROOT"
export MLFLOW_TRACKING_URI="$MLFLOW_URL"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false  # the server's GenAI job runner: 7 idle processes here
unset SYNRANK_PARENT_RUN_ID

case "${1:-}" in
    up) cmd_up "${2:-all}" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) die "usage: $0 up [prefect|mlflow] | down | status" ;;
esac
