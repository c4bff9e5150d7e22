#!/usr/bin/env bash
# A real `llm serve --model tiny` on 127.0.0.1, for the remote tests (.ci/run) and for trying it by hand.
#
#   scripts/serve.sh start [PORT]   serve the built-in tiny model (float32), print the base URL once /health answers
#   scripts/serve.sh stop           SIGTERM the server started by `start`, and wait for it to exit
#   scripts/serve.sh url            the base URL of the running server
#
# LOOKINSIDE_SERVE_KEY=KEY makes the server refuse requests without that key (it reads the variable
# itself, so the key stays out of the command line and `ps`). Its pid, URL and log live in
# ${LOOKINSIDE_SERVE_RUN:-$XDG_CACHE_HOME/lookinside/serve-run}; the server records itself in
# $LOOKINSIDE_DATA_DIR as every `llm serve` does (.ci/run points that at the run directory, so the
# commands the docs check runs afterwards do not find it).
set -euo pipefail

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/lookinside"
RUN="${LOOKINSIDE_SERVE_RUN:-$CACHE/serve-run}"
PYTHON="${PYTHON:-python3}"

log() { echo "serve.sh: $*" >&2; }

. "$(dirname "${BASH_SOURCE[0]}")/server_lib.sh"  # free_port, already_running, wait_ready, stop

start() {
    mkdir -p "$RUN"
    already_running && return
    local port="${1:-$(free_port)}"
    local url="http://127.0.0.1:$port/v1"
    log "starting llm serve on $url (log: $RUN/server.log)"
    setsid "$PYTHON" -m lookinside serve --model tiny --dtype float32 --host 127.0.0.1 --port "$port" \
        >"$RUN/server.log" 2>&1 &
    echo $! >"$RUN/pid"
    echo "$url" >"$RUN/url"
    wait_ready 120 curl -fsS "${url%/v1}/health"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) stop ;;
    url)
        if alive; then cat "$RUN/url"
        else log "no server running (scripts/serve.sh start)"; exit 1; fi ;;
    *) echo "usage: $0 start [PORT]|stop|url" >&2; exit 2 ;;
esac
