"""Batched decoding (core/decoding/batch.py): each sequence gets what it gets alone, and the server batches.

The batch's sequences join and leave between steps with prompts of different lengths (so rows are
left-padded differently at every step); each one's tokens must equal `collect`'s alone, greedy and
seeded, and its log-probabilities to 1e-5. Then compare's one prefill, and `llm serve` with many
clients at once: each gets its own tokens, the batch really holds several, and a client that
leaves frees its place.
"""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lookinside.core.decoding.batch import Batch, Batcher, Work, capacity, decode_together
from lookinside.core.decoding.generate import collect
from lookinside.core.decoding.prompting import encode_prompt
from lookinside.core.request import CompareRequest, GenerationSettings
from lookinside.core.sampling_params import SamplingParams

PROMPTS = ["The capital of France is", "Once upon a time", "The capital of Japan is a city called", "Hello",
           "2 + 2 ="]
PARAMS = [SamplingParams(temperature=0), SamplingParams(temperature=0.8, seed=3),
          SamplingParams(temperature=1.0, seed=5, top_k=20), SamplingParams(temperature=0, repetition_penalty=1.3),
          SamplingParams(temperature=1.2, seed=11, top_p=0.9, min_p=0.02)]
LENGTHS = [20, 7, 24, 13, 16]
JOIN_AT = [0, 2, 5, 5, 9]  # the step before which each sequence joins


TOLERANCE = 1e-5  # log-probabilities (the bound); on the CPU rows are bit for bit equal (rows.py)


def same_run(alone, steps):
    """Token ids, texts, ranks and ends equal; log-probabilities of each token and the alternatives to TOLERANCE."""
    assert [s.token_id for s in steps] == alone.token_ids
    for a, b in zip(alone.steps, steps):
        assert (a.text, a.rank, a.finish) == (b.text, b.rank, b.finish)
        assert abs(math.log(a.prob) - math.log(b.prob)) < TOLERANCE
        assert [i for i, _ in a.top] == [i for i, _ in b.top]
        assert all(abs(math.log(p) - math.log(q)) < TOLERANCE for (_, p), (_, q) in zip(a.top, b.top))


def test_sequences_that_join_and_leave_get_what_they_get_alone(tiny):
    ids = [encode_prompt(tiny.tokenizer, p) for p in PROMPTS]
    settings = [GenerationSettings(max_new_tokens=n, ignore_eos=True) for n in LENGTHS]
    alone = [collect(tiny, i, p, s) for i, p, s in zip(ids, PARAMS, settings)]
    batch, got, widths = Batch(tiny), {}, []
    for step in range(60):
        for k, at in enumerate(JOIN_AT):
            if at == step:
                got[k] = (batch.join(ids[k], [PARAMS[k]], settings[k])[0], [])
        if not len(batch) and step > max(JOIN_AT):
            break
        for member, record in batch.step():
            next(v for v in got.values() if v[0] is member)[1].append(record)
        widths.append(len(batch))
    assert max(widths) >= 3  # they really shared steps
    for k, run in enumerate(alone):
        same_run(run, got[k][1])


def test_prompts_of_different_lengths_prefilled_together_get_what_they_get_alone(tiny):
    from lookinside.core.decoding.batch import Prompt

    ids = [encode_prompt(tiny.tokenizer, p) for p in PROMPTS]
    settings = [GenerationSettings(max_new_tokens=n, ignore_eos=True) for n in LENGTHS]
    alone = [collect(tiny, i, p, s) for i, p, s in zip(ids, PARAMS, settings)]
    batch = Batch(tiny)
    members = batch.join_many([Prompt(i, [p], s) for i, p, s in zip(ids, PARAMS, settings)])  # one forward pass
    got = {id(m): [] for m in members}
    while len(batch):
        for member, record in batch.step():
            got[id(member)].append(record)
    for run, member in zip(alone, members):
        same_run(run, got[id(member)])


def test_stops_and_end_tokens_end_a_sequence_as_alone(tiny):
    ids = encode_prompt(tiny.tokenizer, "The capital of France is")
    cases = [GenerationSettings(max_new_tokens=12), GenerationSettings(max_new_tokens=12, stop_strings=(".",)),
             GenerationSettings(max_new_tokens=12, stop_strings=(".",), include_stop_string=True),
             GenerationSettings(max_new_tokens=12, min_new_tokens=5, ignore_eos=False)]
    for settings in cases:
        alone = collect(tiny, ids, SamplingParams(temperature=0), settings)
        together = decode_together(tiny, ids, [SamplingParams(temperature=0)] * 3, settings)
        for run in together:
            same_run(alone, run.steps)
    assert collect(tiny, ids, SamplingParams(temperature=0), cases[0]).text == " Paris."
    assert collect(tiny, ids, SamplingParams(temperature=0), cases[1]).text == " Paris"
    assert collect(tiny, ids, SamplingParams(temperature=0), cases[2]).text == " Paris."
    assert len(collect(tiny, ids, SamplingParams(temperature=0), cases[3]).steps) >= 5  # no end token before 5


def test_a_sequence_that_leaves_is_in_no_later_forward_pass(tiny):
    ids = encode_prompt(tiny.tokenizer, "Once upon a time")
    batch = Batch(tiny)
    first, second = batch.join(ids, [SamplingParams(temperature=0)] * 2, GenerationSettings(max_new_tokens=30,
                                                                                           ignore_eos=True))
    batch.step()
    batch.step()
    batch.leave(first)
    rows = []
    for _ in range(3):
        rows.append([m for m, _ in batch.step()])
    assert all(r == [second] for r in rows)
    assert batch._cache is not None and batch._cache.layers[0].keys.shape[0] == 1  # its row is gone from the cache


def test_compare_prefills_once_and_prints_what_it_printed(tiny):
    from lookinside.core.decoding.compare import compare

    request = CompareRequest("The capital of France is", SamplingParams(temperature=1.0, seed=3), samples=8,
                             settings=GenerationSettings(max_new_tokens=32))
    lengths = []
    handle = tiny.model.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        result = compare(tiny, request)
    finally:
        handle.remove()
    prompt = len(encode_prompt(tiny.tokenizer, request.prompt))
    assert lengths.count(prompt) == 1 and set(lengths) == {prompt, 1}  # one prefill, then one token per row per step
    ids = encode_prompt(tiny.tokenizer, request.prompt)
    greedy = collect(tiny, ids, request.params.updated(temperature=0.0, seed=None), request.settings)
    same_run(greedy, result.greedy.steps)
    for params, run in zip(request.seeded().sample_params(), result.samples):
        same_run(collect(tiny, ids, params, request.settings), run.steps)


def test_compare_with_8_samples_costs_at_most_twice_one_sample(tiny):
    """The issue's goal: 8 samples of 32 tokens in at most 2x the time of one (best of 3, the machine is shared)."""
    from lookinside.core.decoding.compare import compare

    def timed(samples):
        request = CompareRequest("Once upon a time", SamplingParams(temperature=1.0, seed=1), samples=samples,
                                 settings=GenerationSettings(max_new_tokens=32, ignore_eos=True))
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            compare(tiny, request)
            best = min(best, time.perf_counter() - start)
        return best

    one, eight = timed(1), timed(8)
    assert eight <= 2.5 * one, (one, eight)  # 2x measured quiet (docs/serve.md); 2.5x leaves room for a loaded machine


def test_a_batched_draw_is_what_torch_multinomial_draws_from_each_generator():
    import torch

    from lookinside.core.decoding.batch import draw

    shapes = [torch.randn(6, 1024, generator=torch.Generator().manual_seed(1)) * scale for scale in (0.5, 3, 30)]
    for logits in shapes:
        probs = torch.softmax(logits, dim=-1)  # (6, 1024): flat, peaked and nearly one-hot rows
        for seed in range(40):
            alone = [torch.Generator().manual_seed(seed * 7 + r) for r in range(6)]
            together = [torch.Generator().manual_seed(seed * 7 + r) for r in range(6)]
            want = [int(torch.multinomial(probs[r : r + 1], 1, generator=g)) for r, g in enumerate(alone)]
            assert draw(probs, together).tolist() == want
            assert [torch.rand(1, generator=g).item() for g in alone] == [torch.rand(1, generator=g).item()
                                                                         for g in together]  # left in one state


def test_on_the_cpu_a_row_is_bit_for_bit_its_run_alone_and_no_trace_is_left(tiny):
    import torch

    from lookinside.core.decoding import rows
    from lookinside.core.decoding.batch import Prompt

    assert rows.applies(tiny)
    ids = [encode_prompt(tiny.tokenizer, p) for p in PROMPTS]
    ids += [ids[0][:-1] + [ids[1][-1]], ids[2][:-1] + [ids[3][-1]]]  # two more of lengths already there: one prefill each
    params = [*PARAMS, PARAMS[1].updated(seed=8), PARAMS[0]]
    settings = GenerationSettings(max_new_tokens=12, ignore_eos=True)
    alone = [collect(tiny, i, p, settings) for i, p in zip(ids, params)]
    batch = Batch(tiny)
    members = batch.join_many([Prompt(i, [p], settings) for i, p in zip(ids, params)])
    got = {id(m): [] for m in members}
    while len(batch):
        for member, record in batch.step():
            got[id(member)].append(record)
    for run, member in zip(alone, members):
        assert [(s.token_id, s.prob, s.top) for s in run.steps] == [(s.token_id, s.prob, s.top) for s in got[id(member)]]
    linears = [m for m in tiny.model.modules() if type(m) is torch.nn.Linear]
    assert linears and not any("forward" in m.__dict__ for m in linears)
    assert tiny.model.config._attn_implementation == "sdpa"


def test_the_tiny_model_batches(tiny):
    assert capacity(tiny, 32) == 32


def test_a_batcher_reports_every_sequence_and_ends_each_work(tiny):
    ids = encode_prompt(tiny.tokenizer, "Hello")
    seen, done = [], []
    settings = GenerationSettings(max_new_tokens=4, ignore_eos=True)
    work = Work([(ids, [SamplingParams(temperature=0)] * 3, settings, 1)],
                lambda number, step: seen.append((number, step.index)) or True, on_done=done.append, lm=tiny)
    Batcher(tiny, 8).run(work)
    assert sorted(seen) == [(n, i) for n in range(3) for i in range(4)] and done == [None]


def test_the_model_thread_decodes_with_one_core_fewer_and_runs_jobs_with_all(tiny):
    """A batch streams while it decodes: its steps take `ThreadChoice.streaming()`, a job (a view) the load's count."""
    from dataclasses import replace

    import torch

    from lookinside.core.model.loading import use_threads
    from lookinside.core.model.threads import ThreadChoice
    from lookinside.serve.worker import ModelWorker

    lm = replace(tiny, threads=ThreadChoice(2, "auto: 2 of 2 cores idle", auto=True))
    worker = ModelWorker(4, lambda streaming: use_threads(lm, streaming))
    try:
        ids = encode_prompt(tiny.tokenizer, "Hello")
        during_steps, finished = [], threading.Event()
        work = Work([(ids, [SamplingParams(temperature=0)], GenerationSettings(max_new_tokens=3, ignore_eos=True), 1)],
                    lambda number, step: during_steps.append(torch.get_num_threads()) or True,
                    on_done=lambda error: finished.set(), lm=lm)
        assert worker.submit(lambda: work).result(timeout=120) is work
        assert finished.wait(120)
        in_a_job = worker.submit(torch.get_num_threads).result(timeout=120)
    finally:
        worker.close()
    assert during_steps == [1, 1, 1] and in_a_job == 2
    assert ThreadChoice(2, "--threads").streaming() == 2  # a count the user gave is kept while streaming too
    assert ThreadChoice(1, "auto: 1 of 2 cores idle", auto=True).streaming() == 1


# ---- the server


httpx = pytest.importorskip("httpx2")


@pytest.fixture(scope="module", params=["thread", "process"])
def live(tiny, request):
    """A live server whose batch decodes on the model's thread, then one whose batch decodes in its own process."""
    from lookinside.core.model.spec import LoadSpec
    from lookinside.serve.settings import ServeSettings
    from tests.test_serve import LiveServer

    with LiveServer(tiny, ServeSettings(spec=LoadSpec(model="tiny", device="cpu"), decoder=request.param)) as server:
        assert (server.state.worker.decoder is not None) == (request.param == "process")
        yield server


def test_sixteen_concurrent_greedy_clients_each_get_their_own_tokens(live, tiny):
    prompts = [f"{p} {i}" for i, p in enumerate(PROMPTS * 4)][:16]
    alone = [collect(tiny, encode_prompt(tiny.tokenizer, p), SamplingParams(temperature=0),
                     GenerationSettings(max_new_tokens=24, ignore_eos=True)) for p in prompts]
    widths = []

    def ask(prompt):
        body = {"model": "tiny", "prompt": prompt, "max_tokens": 24, "temperature": 0, "ignore_eos": True,
                "logprobs": 1, "return_tokens_as_token_ids": True}
        return httpx.post(live.url + "/completions", json=body, timeout=120).json()["choices"][0]

    worker = live.state.worker
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            widths.append(worker.decoding)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with ThreadPoolExecutor(16) as pool:
            choices = list(pool.map(ask, prompts))
    finally:
        stop.set()
        watcher.join()
    assert max(widths) > 1  # the completions shared steps
    for run, choice in zip(alone, choices):
        assert choice["logprobs"]["tokens"] == [f"token_id:{i}" for i in run.token_ids]
        for step, logprob in zip(run.steps, choice["logprobs"]["token_logprobs"]):
            assert abs(step.logprob - logprob) < TOLERANCE


def test_a_client_that_leaves_frees_its_place_at_the_next_step(live):
    worker, state = live.state.worker, live.state
    body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", live.url + "/completions", json=body, timeout=60) as response:
        events = 0
        for line in response.iter_lines():
            events += line.startswith("data: ")
            if events == 3:
                break
        assert worker.decoding == 1
    deadline = time.monotonic() + 60
    while worker.decoding and time.monotonic() < deadline:
        time.sleep(0.01)
    made = state.tokens_generated
    time.sleep(0.2)
    assert worker.decoding == 0 and state.tokens_generated == made  # left the batch, and no token since
    assert made < 400


def test_a_view_runs_between_two_steps_of_a_long_generation(live, tiny):
    body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 300, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", live.url + "/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        view = httpx.post(live.url.removesuffix("/v1") + "/lookinside/v1/views/next-token",
                          json={"prompt": "The capital of France is", "top_k": 1}, timeout=60)
        assert view.status_code == 200, view.text
        assert live.state.worker.decoding == 1  # the generation was still going when the view answered
        text = json.dumps(view.json())
        assert "Paris" in text
