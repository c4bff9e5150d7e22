"""The batch decoding in a process of its own (serve/decoder.py): where it applies, that a job runs while it waits,
and that a server whose decoding process dies goes on, each client told in one line.

What a client gets from it (each of 16 concurrent clients its own tokens, a client that leaves freeing its
place, a view between two steps) is checked by tests/test_batch.py's server tests, which run on both decoders.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import threading
import time
from dataclasses import replace

import pytest
import torch

from lookinside.core.errors import BadInput
from lookinside.core.model.quantize import Quantized
from lookinside.core.model.spec import LoadSpec
from lookinside.serve import decoder
from lookinside.serve.settings import ServeSettings

httpx = pytest.importorskip("httpx2")
SPEC = LoadSpec(model="tiny", device="cpu")


def test_a_cpu_model_decodes_beside_and_the_others_say_why_not(tiny, monkeypatch):
    assert decoder.why_not(tiny) is None
    assert "on cuda" in decoder.why_not(replace(tiny, device=torch.device("cuda")))
    quantized = Quantized("int8", converted=3, linear=4, bytes_before=4 << 20, bytes_after=1 << 20)
    assert "--quantize int8 layers" in decoder.why_not(replace(tiny, quantized=quantized))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1 << 20, 1 << 20, 1024))
    unshared = replace(tiny, model=copy.deepcopy(tiny.model))  # the session's model is shared by an earlier server
    assert "/dev/shm has 0 MiB free" in decoder.why_not(unshared)


def test_the_decoder_setting_is_checked_and_process_refused_where_it_cannot_be(tiny):
    from lookinside.serve.app import create_app

    with pytest.raises(BadInput, match="--decoder must be one of auto, process, thread"):
        ServeSettings(decoder="gpu")
    quantized = replace(tiny, quantized=Quantized("int8", 3, 4, 4 << 20, 1 << 20))
    with pytest.raises(BadInput, match="^--decoder process: its --quantize int8 layers"):
        create_app(quantized, ServeSettings(spec=SPEC, decoder="process"))
    app = create_app(quantized, ServeSettings(spec=SPEC, decoder="auto"))  # auto: the thread, and why
    try:
        assert app.state.lookinside.worker.decoder is None
        assert app.state.lookinside.info["decoder"].startswith("thread (its --quantize int8")
    finally:
        app.state.lookinside.worker.close()


@pytest.fixture
def beside(tiny):
    from tests.test_serve import LiveServer

    with LiveServer(tiny, ServeSettings(spec=SPEC, decoder="process")) as server:
        yield server


def cpu_ticks(pid: int) -> int:
    """The process's user and system CPU time so far, in clock ticks."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def stream_until(server, events: int, tokens: int = 400, n: int = 1):
    """A streamed completion of `n` samples, open after its first `events` chunks: (response, lines, chunks seen).

    16 samples of 400 tokens take seconds to decode, so the generation is still running when a test's next
    request comes (the server does not wait for the client to read)."""
    body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": tokens, "ignore_eos": True, "stream": True,
            "n": n, "temperature": 1.0, "seed": 0}
    context = httpx.stream("POST", server.url + "/completions", json=body, timeout=120)
    response = context.__enter__()
    lines = response.iter_lines()
    seen = []
    for line in lines:
        if line.startswith("data: "):
            seen.append(line)
            if len(seen) == events:
                break
    return context, lines, seen


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads the child's CPU time from /proc")
def test_a_job_runs_while_the_decoding_process_waits(beside):
    worker = beside.state.worker
    pid = worker.decoder.pid
    context, lines, _ = stream_until(beside, 3, n=16)
    try:
        assert worker.decoding == 16

        def job() -> tuple[int, int]:
            before = cpu_ticks(pid)
            time.sleep(0.5)  # fifty clock ticks: a process that decoded meanwhile would show them
            return before, cpu_ticks(pid)

        before, after = worker.submit(job).result(timeout=120)
        assert after == before  # paused between two steps for the whole job
        assert worker.decoding == 16  # with its sequences still to decode
        more = (line for line in lines if line.startswith("data: "))
        assert len([line for line, _ in zip(more, range(5))]) == 5  # and decoding again after it
    finally:
        context.__exit__(None, None, None)


def test_only_what_runs_the_model_pauses_the_decoding_process(beside):
    decoder = beside.state.worker.decoder
    root = beside.url.removesuffix("/v1")

    def complete(**fields) -> None:
        body = {"model": "tiny", "prompt": "The capital of France is", "max_tokens": 2, "temperature": 0, **fields}
        assert httpx.post(beside.url + "/completions", json=body, timeout=120).status_code == 200

    complete()
    deadline = time.monotonic() + 120
    while decoder._idle_at != decoder._sent and time.monotonic() < deadline:  # the child says it has nothing to do
        time.sleep(0.01)
    before = decoder.pauses
    view = httpx.post(root + "/lookinside/v1/views/next-token", json={"prompt": "Hello", "top_k": 1}, timeout=120)
    assert view.status_code == 200 and decoder.pauses == before  # nothing decoding: nothing to pause
    context, lines, _ = stream_until(beside, 3, n=16)  # (lines kept: a dropped iterator closes the stream)
    try:
        complete()  # set up only: its prompt encoded and checked
        assert decoder.pauses == before
        complete(echo=True, logprobs=1)  # its prompt scored: a forward pass
        assert decoder.pauses == before + 1
        view = httpx.post(root + "/lookinside/v1/views/next-token", json={"prompt": "Hello", "top_k": 1}, timeout=120)
        assert view.status_code == 200 and decoder.pauses == before + 2
        assert beside.state.worker.decoding == 16  # the generation ran throughout
    finally:
        context.__exit__(None, None, None)


def test_a_decoding_process_that_dies_ends_its_streams_in_one_line_and_the_server_goes_on(beside):
    worker = beside.state.worker
    process = worker.decoder.process
    context, lines, _ = stream_until(beside, 3)
    try:
        process.kill()
        rest = [line for line in lines if line.startswith("data: ")]
    finally:
        context.__exit__(None, None, None)
    assert rest[-1] == "data: [DONE]"
    error = json.loads(rest[-2].removeprefix("data: "))["error"]
    assert error["message"].startswith("the decoding process ended") and error["type"] == "server_error"
    def ask() -> httpx.Response:
        body = {"prompt": "The capital of France is", "max_tokens": 1, "temperature": 0}
        return httpx.post(beside.url + "/completions", json=body, timeout=120)

    deadline = time.monotonic() + 120
    while worker.decoder is not None and time.monotonic() < deadline:  # the model's thread takes over
        if ask().status_code == 200:
            break
    answer = ask()
    assert answer.status_code == 200 and answer.json()["choices"][0]["text"] == " Paris"
    assert worker.decoder is None


def test_closing_the_server_cuts_the_streams_and_stops_the_process(tiny):
    from tests.test_serve import LiveServer

    server = LiveServer(tiny, ServeSettings(spec=SPEC, decoder="process")).__enter__()
    process = server.state.worker.decoder.process
    context, lines, _ = stream_until(server, 3)
    ended = []
    reader = threading.Thread(target=lambda: ended.extend(line for line in lines if line.startswith("data: ")))
    reader.start()
    try:
        server.state.worker.close()
        reader.join(120)
    finally:
        context.__exit__(None, None, None)
        server.__exit__(None, None, None)
    assert ended[-1] == "data: [DONE]" and "server_shutting_down" in ended[-2], ended[-2:]
    assert not process.is_alive()
