# The part every server script shares (serve.sh, vllm.sh, llamacpp_server.sh source it): a free port, a server
# already running, waiting for one it started to answer, and stopping it. The sourcing script sets RUN (the
# directory with the server's pid, url and server.log), PYTHON, and defines log().

alive() { [ -f "$RUN/pid" ] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null; }

# already_running: print the running server's URL and succeed, or fail when none runs
already_running() {
    alive || return 1
    log "already running: $(cat "$RUN/url")"
    cat "$RUN/url"
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_ready SECONDS CHECK...: run CHECK (a command, e.g. curl of /health) every 0.2 s until it succeeds (then
# print the URL), the server exits (the end of its log, exit 1) or SECONDS pass (stop it, exit 1)
wait_ready() {
    local seconds="$1"
    shift
    for _ in $(seq 1 $((seconds * 5))); do
        if "$@" >/dev/null 2>&1; then
            log "ready"
            cat "$RUN/url"
            return
        fi
        if ! alive; then
            log "the server exited; the end of its log:"
            tail -n 30 "$RUN/server.log" >&2
            rm -f "$RUN/pid"
            exit 1
        fi
        sleep 0.2
    done
    log "not ready after $seconds s; stopping it"
    stop
    exit 1
}

# stop: SIGTERM to the server's process group (it was started with setsid), up to 30 s to exit, then SIGKILL
stop() {
    if [ -f "$RUN/pid" ]; then
        local pid
        pid="$(cat "$RUN/pid")"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        rm -f "$RUN/pid"
        log "stopped"
    fi
}
