#!/usr/bin/env bash
# llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) serving the built-in tiny model, and the
# remote suite against it. Not part of CI: llama-cpp-python compiles llama.cpp when it installs (about 35 minutes here).
#
#   scripts/llamacpp_server.sh          start it, run `pytest -m remote tests/test_remote.py` against it, stop it
#   scripts/llamacpp_server.sh start    serve tiny on 127.0.0.1 (a free port), print the base URL once it answers
#   scripts/llamacpp_server.sh stop     SIGTERM the server started by `start`, and wait for it to exit
#   scripts/llamacpp_server.sh url      the base URL of the running server
#
# LLAMACPP_PYTHON names a Python that has `llama_cpp.server` (its extras: fastapi, sse-starlette, starlette-context,
# pydantic-settings, uvicorn), else this Python is tried; where neither has it, the script says so in one line and
# exits 0. Keep it in an environment of its own: its extras may pin another starlette than `llm serve` wants.
# The model is written by scripts/tiny_for_llamacpp.py --gguf with this Python (float32, named so that llama.cpp
# strips after the chat markers as tokenizer.json does), served as "tiny" with a 512-token context, as vLLM serves
# it in CI, on one thread. LOOKINSIDE_LLAMACPP_API_KEY=KEY makes it refuse requests without that key (given to it
# as API_KEY in its environment, so `ps` does not show it). Pid, URL, model and log: ${LOOKINSIDE_LLAMACPP_RUN:-
# $XDG_CACHE_HOME/lookinside/llamacpp-run}.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/lookinside"
RUN="${LOOKINSIDE_LLAMACPP_RUN:-$CACHE/llamacpp-run}"
PYTHON="${PYTHON:-python3}"
SERVER_PYTHON="${LLAMACPP_PYTHON:-$PYTHON}"

log() { echo "llamacpp_server.sh: $*" >&2; }

has_server() { "$SERVER_PYTHON" -c "import llama_cpp.server.app" >/dev/null 2>&1; }

. "$(dirname "${BASH_SOURCE[0]}")/server_lib.sh"  # free_port, already_running, wait_ready, stop

start() {
    mkdir -p "$RUN"
    already_running && return
    # written afresh each time (a few seconds), so it is never a stale copy of an older model or script
    "$PYTHON" "$ROOT/scripts/tiny_for_llamacpp.py" --gguf "$RUN/tiny.gguf.part" >/dev/null
    mv "$RUN/tiny.gguf.part" "$RUN/tiny.gguf"
    local port
    port="$(free_port)"
    local url="http://127.0.0.1:$port/v1"
    log "starting llama-cpp-python's server on $url (log: $RUN/server.log)"
    (
        unset API_KEY  # it reads its settings from the environment too: an empty key would be a key
        if [ -n "${LOOKINSIDE_LLAMACPP_API_KEY:-}" ]; then export API_KEY="$LOOKINSIDE_LLAMACPP_API_KEY"; fi
        exec setsid "$SERVER_PYTHON" -m llama_cpp.server --model "$RUN/tiny.gguf" --model_alias tiny \
            --host 127.0.0.1 --port "$port" --n_ctx 512 --type_k 0 --type_v 0 --n_threads 1 --n_threads_batch 1 \
            >"$RUN/server.log" 2>&1
    ) &
    echo $! >"$RUN/pid"
    echo "$url" >"$RUN/url"
    wait_ready 120 curl -fsS ${LOOKINSIDE_LLAMACPP_API_KEY:+-H "Authorization: Bearer $LOOKINSIDE_LLAMACPP_API_KEY"} \
        "$url/models"
}

suite() {
    start >/dev/null
    trap stop EXIT
    cd "$ROOT"
    LOOKINSIDE_API_KEY="${LOOKINSIDE_LLAMACPP_API_KEY:-}" LOOKINSIDE_TEST_ENDPOINT="$(cat "$RUN/url")" \
        "$PYTHON" -m pytest -q -m remote tests/test_remote.py
}

case "${1:-}" in
    "" | start)
        if ! has_server; then  # stop and url need no llama_cpp: a server started with LLAMACPP_PYTHON stops without it
            log "skipped: $SERVER_PYTHON has no llama_cpp.server (pip install 'llama-cpp-python[server]', or set LLAMACPP_PYTHON)"
            exit 0
        fi
        if [ -z "${1:-}" ]; then suite; else start; fi ;;
    stop) stop ;;
    url)
        if alive; then cat "$RUN/url"
        else log "no server running (scripts/llamacpp_server.sh start)"; exit 1; fi ;;
    *) echo "usage: $0 [start|stop|url]" >&2; exit 2 ;;
esac
