"""Benchmark `llm serve` (a measurement, not a test): results and method in docs/serve.md.

1. A warm `llm next-token "The capital of France is" --model tiny`: through a running server against
   the in-process command (--no-server), alternated in the same run, wall time of the whole process.
2. The server's per-request overhead: the same one-token request with logprobs and echo, as an HTTP
   round trip against the core called directly in this process (serve.openai_api.completion_job).
3. Many clients: total tokens/s, time to first token and inter-token latency (p50, p99) of streamed
   completions (32 tokens, sampled, each client its own seed) with 1, 4, 16 and 32 clients at once.
   `--servers llm,transformers,vllm` measures each server in turn on the same model and prompts,
   `--rounds` times (in one order, then the other), each started before its measurement and stopped
   after it (an idle server still takes a share of the cores): `llm serve --model tiny`; `transformers
   serve` with continuous batching (its Python from --transformers-python: it needs fastapi); vLLM's
   CPU build (scripts/vllm.sh). Each client count streams at least `--total` tokens (fewer clients
   make more requests each). With --url it measures a server already running instead, with --model as the
   request's model and --no-eos-field for a server without vLLM's ignore_eos (the length is then
   asked through transformers' generation_config).

    python scripts/bench_serve.py [--runs 7] [--requests 8] [--total 2048] [--tokens 32] [--clients 1,4,16,32]
    python scripts/bench_serve.py --only-clients [--servers llm,transformers,vllm] [--rounds 2]
    python scripts/bench_serve.py --only-clients --url URL [--model NAME --no-eos-field]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx

PROMPT = "The capital of France is"
# The streamed completions' prompt: one after which the tiny model writes text. After "The capital of France is"
# it writes " Paris." and then end tokens (75-90% of 32 sampled tokens, 8 seeds), and transformers serve sends no
# chunk for a special token where llm serve (as vLLM) sends one with empty text: 5 chunks a reply against 34, so
# the two servers' HTTP sides and the client did different work. After this prompt 0-6 of 32 are special.
STREAM_PROMPT = "Once upon a time"
ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "src" / "lookinside" / "tiny" / "assets"  # the tiny model's directory, as the other servers load it
# transformers serve's default paged cache took 14 GB on this 2-core machine and was killed by the OOM killer:
# a bounded one (128 blocks of 32 tokens: 32 sequences of 128) is plenty for 32 clients of 6 + 32 tokens.
TRANSFORMERS_FLAGS = ["--continuous-batching", "--cb-num-blocks", "128", "--cb-block-size", "32",
                      "--cb-max-batch-tokens", "512", "--device", "cpu", "--dtype", "float32"]


def start_server(data: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "LOOKINSIDE_DATA_DIR": str(data)}
    process = subprocess.Popen([sys.executable, "-m", "lookinside", "serve", "--model", "tiny", "--port", "0"],
                               env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        records = list((data / "servers").glob("*.json"))
        if records:
            url = json.loads(records[0].read_text())["url"]
            try:
                if httpx.get(url.removesuffix("/v1") + "/health", timeout=2).status_code == 200:
                    return process, url
            except httpx.HTTPError:
                pass
        if process.poll() is not None:
            sys.exit(f"llm serve exited: {process.stderr.read()}")
        time.sleep(0.1)
    sys.exit("llm serve did not start within 300 s")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, a minute to exit, then SIGKILL: the next server must not find this one on the cores."""
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until(url: str, process: subprocess.Popen | None, seconds: float, what: str) -> None:
    """Until GET `url` answers 200; exit with `what`'s log line if the process dies or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process is not None and process.poll() is not None:
            sys.exit(f"{what} exited before it answered")
        time.sleep(0.2)
    sys.exit(f"{what} did not answer within {seconds:.0f} s")


@contextmanager
def running(server: str, transformers_python: str) -> Iterator[tuple[str, str | None, bool]]:
    """Start `server` (llm, transformers, vllm) on 127.0.0.1; yield (its /v1 URL, the model to ask for, whether
    it takes ignore_eos); stop it after."""
    if server == "llm":
        with tempfile.TemporaryDirectory() as tmp:
            process, url = start_server(Path(tmp))
            try:
                yield url, None, True
            finally:
                stop(process)
    elif server == "transformers":
        port = free_port()
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen([transformers_python, "-m", "transformers.cli.transformers", "serve",
                                        str(TINY), *TRANSFORMERS_FLAGS, "--host", "127.0.0.1", "--port", str(port)],
                                       stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_until(f"http://127.0.0.1:{port}/health", process, 300, "transformers serve")
                yield f"http://127.0.0.1:{port}/v1", str(TINY), False
            finally:
                stop(process)
    elif server == "vllm":
        with tempfile.TemporaryDirectory() as run:
            env = {**os.environ, "LOOKINSIDE_VLLM_RUN": run}
            script = str(ROOT / "scripts" / "vllm.sh")
            started = subprocess.run([script, "start"], env=env, capture_output=True, text=True, check=False)
            if started.returncode != 0:
                sys.exit(f"vLLM did not start: {started.stderr.strip().splitlines()[-1:]}")
            try:
                yield started.stdout.strip().splitlines()[-1], "tiny", True
            finally:
                subprocess.run([script, "stop"], env=env, capture_output=True, check=False)
    else:
        sys.exit(f"unknown server {server!r}: llm, transformers or vllm")


def wall(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "lookinside", *args], env=env, capture_output=True, text=True,
                         check=False)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"llm {' '.join(args)} failed: {out.stderr}")
    return seconds


def command_wall_times(data: Path, url: str, runs: int) -> None:
    env = {**os.environ, "LOOKINSIDE_DATA_DIR": str(data), "COLUMNS": "80", "NO_COLOR": "1"}
    args = ["next-token", PROMPT, "--model", "tiny"]
    wall(args, env), wall([*args, "--no-server"], env)  # warm the page cache for both
    served, local = [], []
    for _ in range(runs):  # alternated, so a change in the machine's load hits both alike
        served.append(wall(args, env))
        local.append(wall([*args, "--no-server"], env))
    floor = [_floor(url, env) for _ in range(runs)]
    ms, ml, mf = statistics.median(served), statistics.median(local), statistics.median(floor)
    print(f"llm next-token, whole process, median of {runs} (alternated):")
    print(f"  in-process (--no-server): {ml:.2f} s   [{', '.join(f'{s:.2f}' for s in local)}]")
    print(f"  through llm serve:        {ms:.2f} s   [{', '.join(f'{s:.2f}' for s in served)}]")
    print(f"  ratio: {ms / ml:.3f}x (goal <= 0.15x)")
    print(f"  floor, no openai client:  {mf:.2f} s   (python + the CLI's imports + one stdlib HTTP request: "
          f"{mf / ml:.3f}x)")


def _floor(url: str, env: dict[str, str]) -> float:
    """What a client without the openai package could reach: the CLI's imports and one urllib request."""
    code = ("import json, urllib.request, lookinside.cli.app; "
            f"r = urllib.request.Request({url + '/completions'!r}, method='POST', headers={{'content-type': "
            "'application/json'}, data=json.dumps({'prompt': 'The capital of France is', 'max_tokens': 1, "
            "'logprobs': 10, 'echo': True, 'temperature': 0}).encode()); urllib.request.urlopen(r).read()")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.perf_counter() - start


def overhead(url: str, runs: int) -> None:
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec
    from lookinside.serve import openai_api as oa
    from lookinside.serve.settings import ServeSettings
    from lookinside.serve.worker import Cancel

    settings = ServeSettings(spec=LoadSpec(model="tiny"))
    lm = load(settings.spec)
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 1, "logprobs": 5, "echo": True, "temperature": 0}
    request = oa.parse_completion(body, settings)

    def direct() -> None:
        oa.run_here(lm, oa.completion_job(lm, request, settings, lambda item: None, Cancel(threading.Event())))

    def timed(fn, n: int) -> list[float]:
        fn()
        out = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
        return out

    with httpx.Client(timeout=60) as http:
        over_http = timed(lambda: http.post(url + "/completions", json=body).raise_for_status(), runs)
    core = timed(direct, runs)
    mh, mc = statistics.median(over_http), statistics.median(core)
    print(f"one next-token request (max_tokens 1, logprobs 5, echo), median of {runs}:")
    print(f"  the core, called here:   {mc * 1000:.2f} ms")
    print(f"  HTTP round trip:         {mh * 1000:.2f} ms")
    print(f"  the server's overhead:   {(mh - mc) * 1000:.2f} ms per request")


def stream_one(http: httpx.Client, url: str, tokens: int, seed: int, model: str | None,
               eos_field: bool) -> tuple[float, int, float, float | None, int]:
    """(time to the first token, tokens made, total seconds, mean gap between tokens, chunks) of one streamed
    completion.

    The tokens are the usage's count (stream_options.include_usage): a server that sends no chunk for a
    special token (transformers serve) still counts it; the gap is (last chunk - first chunk) / (tokens - 1).
    The chunks (those with a choice) show what the HTTP side and the client did for those tokens.
    """
    body: dict = {"prompt": STREAM_PROMPT, "max_tokens": tokens, "temperature": 0.8, "seed": seed, "stream": True,
                  "stream_options": {"include_usage": True}}
    if model:
        body["model"] = model
    if eos_field:
        body["ignore_eos"] = True
    else:  # transformers serve: no end token through its generation_config field, so every reply is `tokens` long
        body["generation_config"] = json.dumps({"eos_token_id": -1})
    start = time.perf_counter()
    first, last, made, chunks = None, 0.0, 0, 0
    with http.stream("POST", url + "/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line.removeprefix("data: "))
            if event.get("usage"):
                made = event["usage"]["completion_tokens"]
            if event.get("choices"):
                chunks += 1
                last = time.perf_counter() - start
                first = last if first is None else first
    gap = (last - first) / (made - 1) if first is not None and made > 1 else None
    return first or 0.0, made, time.perf_counter() - start, gap, chunks


def percentile(values: list[float], q: float) -> float:
    """The q-th quantile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def throughput(url: str, clients: int, requests: int, tokens: int, model: str | None = None,
               eos_field: bool = True) -> float:
    """Run `clients` clients at once, each streaming `requests` completions; print and return tokens/s."""
    def client(number: int) -> list[tuple[float, int, float, float | None, int]]:
        with httpx.Client(timeout=600) as http:
            return [stream_one(http, url, tokens, 1000 * number + i, model, eos_field) for i in range(requests)]

    load = os.getloadavg()[0]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    seconds = time.perf_counter() - start
    ttft = [r[0] for r in results]
    gaps = [r[3] for r in results if r[3] is not None]
    made = sum(r[1] for r in results)
    print(f"  {clients:>2} clients x {requests} x {tokens} tokens: {made / seconds:6.0f} tok/s, "
          f"TTFT p50 {statistics.median(ttft) * 1000:7.1f} ms p99 {percentile(ttft, 0.99) * 1000:7.1f} ms, "
          f"ITL p50 {statistics.median(gaps) * 1000:6.1f} ms p99 {percentile(gaps, 0.99) * 1000:6.1f} ms "
          f"(load {load:.1f}; {made} tokens in {sum(r[4] for r in results)} chunks)")
    return made / seconds


def per_client(requests: int, total: int, clients: int, tokens: int) -> int:
    """Requests per client: `requests`, or more where `clients` of them would stream fewer than `total` tokens in all
    (one client's 8 x 32 tokens last about a second, and a second of this shared VM swings between two speeds)."""
    return max(requests, -(-total // (clients * tokens)))


def many_clients(url: str, counts: list[int], requests: int, tokens: int, model: str | None,
                 eos_field: bool, total: int = 0) -> dict[int, float]:
    throughput(url, 4, 1, tokens, model, eos_field)  # warm-up: not counted
    print("streamed completions, clients at once:")
    rates = {n: throughput(url, n, per_client(requests, total, n, tokens), tokens, model, eos_field) for n in counts}
    if 1 in rates and 16 in rates:
        print(f"  16 clients / 1 client: {rates[16] / rates[1]:.1f}x the tokens/s (goal >= 4x)")
    return rates


def rounds(servers: list[str], times: int, counts: list[int], requests: int, tokens: int,
           transformers_python: str, total: int = 0) -> None:
    """Each server in turn, `times` rounds: started, measured at every client count, stopped. The servers take
    turns in one order, then in the other, so that neither always runs first on a machine whose speed drifts."""
    table: dict[str, list[dict[int, float]]] = {s: [] for s in servers}
    for number in range(1, times + 1):
        for server in servers if number % 2 else servers[::-1]:
            with running(server, transformers_python) as (url, model, eos_field):
                print(f"== {server}, round {number} ({url}; load average {os.getloadavg()[0]:.1f})")
                table[server].append(many_clients(url, counts, requests, tokens, model, eos_field, total))
    print("tokens/s per round (" + ", ".join(f"{n} clients" for n in counts) + "):")
    for server, measured in table.items():
        print(f"  {server:>12}: " + "   ".join(" / ".join(f"{r[n]:.0f}" for n in counts) for r in measured))
    if "llm" in table:  # the goal: ahead of each other server at every client count, in every round
        for server in (s for s in servers if s != "llm"):
            ratios = [" / ".join(f"{ours[n] / theirs[n]:.2f}" for n in counts)
                      for ours, theirs in zip(table["llm"], table[server])]
            print(f"  llm / {server}: " + "   ".join(ratios))
            for n in counts:
                each = [ours[n] / theirs[n] for ours, theirs in zip(table["llm"], table[server])]
                print(f"  {n:>2} clients: llm / {server} median {statistics.median(each):.2f} "
                      f"(min {min(each):.2f}, max {max(each):.2f}); ahead in {sum(r > 1 for r in each)} of {len(each)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--requests", type=int, default=8, help="requests per client (at least)")
    parser.add_argument("--total", type=int, default=2048,
                        help="with fewer clients, more requests each, so that every count streams this many tokens")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--clients", default="1,4,16,32", help="client counts, comma-separated")
    parser.add_argument("--only-clients", action="store_true", help="measure many clients only (part 3)")
    parser.add_argument("--url", help="measure this running server (its /v1 URL) instead of starting llm serve")
    parser.add_argument("--model", help="the request's model field (for --url)")
    parser.add_argument("--no-eos-field", action="store_true", help="the server has no ignore_eos (for --url)")
    parser.add_argument("--servers", default="llm", help="with --only-clients: llm, transformers, vllm, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="with --servers: measure each server this many times")
    parser.add_argument("--transformers-python", default=sys.executable,
                        help="the Python that runs transformers serve (it needs fastapi)")
    args = parser.parse_args()
    counts = [int(n) for n in args.clients.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    if args.url:
        many_clients(args.url.rstrip("/"), counts, args.requests, args.tokens, args.model, not args.no_eos_field,
                     args.total)
    elif args.only_clients:
        rounds(args.servers.split(","), args.rounds, counts, args.requests, args.tokens, args.transformers_python,
               args.total)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            process, url = start_server(Path(tmp))
            try:
                command_wall_times(Path(tmp), url, args.runs)
                overhead(url, args.runs * 8)
                many_clients(url, counts, args.requests, args.tokens, None, True, args.total)
            finally:
                stop(process)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
