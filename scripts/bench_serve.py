"""Benchmark `llm serve` (a measurement, not a test): results and method in docs/serve.md.

1. A warm `llm next-token "The capital of France is" --model tiny`: through a running server against
   the in-process command (--no-server), alternated in the same run, wall time of the whole process.
2. The server's per-request overhead: the same one-token request with logprobs and echo, as an HTTP
   round trip against the core called directly in this process (serve.openai_api.completion_job).
3. Throughput and time to first token (p50, p99) of streamed completions with 1, 4 and 16 clients.

    python scripts/bench_serve.py [--runs 7] [--requests 8] [--tokens 32]
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx

PROMPT = "The capital of France is"


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


def stream_one(http: httpx.Client, url: str, tokens: int) -> tuple[float, int, float]:
    """(time to the first token, tokens received, total seconds) of one streamed completion."""
    body = {"prompt": PROMPT, "max_tokens": tokens, "ignore_eos": True, "temperature": 0.8, "seed": 1, "stream": True}
    start = time.perf_counter()
    first, count = None, 0
    with http.stream("POST", url + "/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                count += 1
                first = first if first is not None else time.perf_counter() - start
    return first or 0.0, count, time.perf_counter() - start


def throughput(url: str, clients: int, requests: int, tokens: int) -> None:
    def client(_: int) -> list[tuple[float, int, float]]:
        with httpx.Client(timeout=300) as http:
            return [stream_one(http, url, tokens) for _ in range(requests)]

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    seconds = time.perf_counter() - start
    ttft = sorted(r[0] for r in results)
    made = sum(r[1] for r in results)
    p99 = ttft[min(len(ttft) - 1, round(0.99 * (len(ttft) - 1)))]
    print(f"  {clients:>2} clients x {requests} requests x {tokens} tokens: {made / seconds:7.0f} tok/s, "
          f"{len(results) / seconds:5.1f} req/s, TTFT p50 {statistics.median(ttft) * 1000:7.1f} ms, "
          f"p99 {p99 * 1000:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_server(Path(tmp))
        try:
            command_wall_times(Path(tmp), url, args.runs)
            overhead(url, args.runs * 8)
            print("streamed completions (one model, requests queue):")
            for clients in (1, 4, 16):
                throughput(url, clients, args.requests, args.tokens)
        finally:
            process.terminate()
            process.wait(60)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
