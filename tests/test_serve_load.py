"""Load on a real `llm serve --model tiny`: 16 clients x 10 requests at once, a quarter of them
cancelled mid-stream and a tenth malformed. Every valid request must be answered in full, every
malformed one refused with a 400, the server must answer afterwards, and its memory growth is
reported (RSS from /proc before and after)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx2")

from tests.test_serve import PROMPT, start_server, stop_server

CLIENTS, REQUESTS = 16, 10
MESSAGES = [{"role": "user", "content": "What is the capital of Japan?"}]


def rss_mib(pid: int) -> float:
    """The process's resident memory, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def kind_of(n: int) -> str:
    """Which request number n is: a tenth malformed, a quarter cancelled, the rest valid (streamed or not)."""
    if n % 10 == 0:
        return "malformed"
    if n % 4 == 1:
        return "cancelled"
    return "stream" if n % 2 else "whole"


def one_request(http: httpx.Client, url: str, n: int) -> tuple[str, bool, float]:
    """Send request n; (its kind, whether it was answered as it should be, seconds)."""
    kind, start = kind_of(n), time.perf_counter()
    chat = n % 3 == 0
    path = url + ("/chat/completions" if chat else "/completions")
    body = {"messages": MESSAGES} if chat else {"prompt": PROMPT}
    body |= {"max_tokens": 16, "temperature": 0.8, "seed": n, "logprobs": True if chat else 2}
    if kind == "malformed":
        bad = http.post(path, content=b'{"prompt": ', headers={"content-type": "application/json"})
        return kind, bad.status_code == 400 and "error" in bad.json(), time.perf_counter() - start
    if kind == "whole":
        response = http.post(path, json=body)
        ok = response.status_code == 200 and response.json()["choices"][0]["finish_reason"] in ("stop", "length")
        return kind, ok, time.perf_counter() - start
    if kind == "cancelled":
        body |= {"max_tokens": 300, "ignore_eos": True}
    with http.stream("POST", path, json=body | {"stream": True}) as response:
        if response.status_code != 200:
            return kind, False, time.perf_counter() - start
        events = 0
        for line in response.iter_lines():
            if line == "data: [DONE]":
                return kind, kind == "stream", time.perf_counter() - start
            if line.startswith("data: "):
                assert "error" not in json.loads(line[6:]), line
                events += 1
                if kind == "cancelled" and events == 3:
                    return kind, True, time.perf_counter() - start  # leave mid-stream: the connection closes
    return kind, False, time.perf_counter() - start


def client_run(url: str, client: int) -> list[tuple[str, bool, float]]:
    with httpx.Client(timeout=180) as http:
        return [one_request(http, url, client * REQUESTS + j) for j in range(REQUESTS)]


@pytest.mark.slow
def test_16_clients_x_10_requests_with_cancels_and_malformed_ones(tmp_path, record_property):
    process, url = start_server(tmp_path)
    try:
        httpx.post(url + "/completions", json={"prompt": PROMPT, "max_tokens": 16}, timeout=180)  # warm
        before = rss_mib(process.pid)
        start = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [r for rs in pool.map(lambda c: client_run(url, c), range(CLIENTS)) for r in rs]
        seconds = time.perf_counter() - start
        after = rss_mib(process.pid)
        counts = {k: sum(1 for kind, _, _ in results if kind == k) for k in ("malformed", "cancelled", "stream", "whole")}
        failed = [(kind, s) for kind, ok, s in results if not ok]
        assert len(results) == CLIENTS * REQUESTS and not failed, failed
        assert counts["malformed"] == 16 and counts["cancelled"] == 40
        # alive and answering afterwards, and nothing left running or waiting
        info = httpx.get(url.removesuffix("/v1") + "/lookinside/v1/info", timeout=60).json()
        assert info["queue"] == {"waiting": 0, "busy": False}
        answer = httpx.post(url + "/completions", json={"prompt": PROMPT, "max_tokens": 1, "temperature": 0},
                            timeout=60).json()
        assert answer["choices"][0]["text"] == " Paris"
        # the cancelled ones asked for 300 tokens each; had they run on, over 12,000 tokens would have been made
        assert info["tokens_generated"] < 40 * 300, info["tokens_generated"]
        report = (f"{len(results)} requests in {seconds:.1f} s ({counts}); tokens generated "
                  f"{info['tokens_generated']}; RSS {before:.0f} -> {after:.0f} MiB ({after - before:+.0f} MiB)")
        print(report)
        record_property("load", report)
        assert after - before < 512, report  # a leak of the model's size per request would show far above this
    finally:
        code, err = stop_server(process)
    assert code == 0, err
