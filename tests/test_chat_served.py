"""Chat through a running `llm serve` has every command it has with the model here (issue 28, item 6).

The server is the real app under uvicorn on 127.0.0.1 (tests/test_serve.py's LiveServer) over the session's
tiny model; the client is `connect(URL)`, the backend `llm chat --endpoint` opens, driven through the REPL
as tests/test_chat.py drives it. Each transcript, the stats line's token counts included, must equal the
one the same keys make with the model here.
"""

from __future__ import annotations

import io
import json
import re
import urllib.error
import urllib.request

import pytest
from rich.console import Console

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from lookinside.core.backends.seam import as_backend  # noqa: E402
from lookinside.core.backends.served import ServedBackend, connect  # noqa: E402
from lookinside.core.errors import BadInput  # noqa: E402
from lookinside.core.model.spec import LoadSpec  # noqa: E402
from lookinside.serve.settings import ServeSettings  # noqa: E402

from .test_chat import ENTER, chat, greedy_chat  # noqa: E402
from .test_serve import LiveServer  # noqa: E402

ASK = "What is the capital of Japan?"
TIMES = re.compile(r"TTFT \d+ ms( · [\d.]+ tok/s)?")  # the only numbers of a stats line that may differ


@pytest.fixture(scope="module")
def server(tiny):
    with LiveServer(tiny, ServeSettings(spec=LoadSpec(model="tiny", device="cpu"), max_tokens=64)) as live:
        yield live


@pytest.fixture
def served(server) -> ServedBackend:
    backend = connect(server.url, "")
    assert isinstance(backend, ServedBackend)
    return backend


def wide() -> Console:
    """Wide enough that no line wraps: a stats line's speed, which may differ, would move where it wraps."""
    return Console(file=io.StringIO(), width=400, highlight=False)


def both(tiny, served, keys: str):
    """The same keys typed into a chat with the model here and into one through the server."""
    return (chat(tiny, keys, greedy_chat(), stats=True, console=wide()),
            chat(served, keys, greedy_chat(), stats=True, console=wide()))


def untimed(out: str) -> str:
    return TIMES.sub("TTFT", out)


def test_a_reply_and_its_stats_line_through_the_server_equal_the_ones_here(tiny, served):
    here, there = both(tiny, served, f"{ASK}{ENTER}")
    assert "Tokyo" in here.out and untimed(there.out) == untimed(here.out)
    stats = here.out.splitlines()[1]
    assert re.search(r"^\d+ prompt \+ \d+ generated tokens", stats) and "context " in stats  # the counts the
    assert there.messages == here.messages  # server's chat lost: shown, and equal, the tokens kept included


def test_steer_through_the_server_gives_the_reply_it_gives_here(tiny, served):
    keys = f"/steer 2 4 Japan | France{ENTER}What is the capital of France?{ENTER}"
    here, there = both(tiny, served, keys)
    assert here.out.splitlines()[0] == "steer 4 x ('Japan' - 'France') at layer 2 on every reply"
    assert untimed(there.out) == untimed(here.out)
    assert "steer on (layer 2, alpha 4)" in here.out.splitlines()[-1]
    assert there.messages[-1]["steer"] == here.messages[-1]["steer"] == "steer 4 x ('Japan' - 'France') at layer 2"
    plain = chat(tiny, f"What is the capital of France?{ENTER}", greedy_chat())
    assert plain.messages[-1]["content"] != here.messages[-1]["content"]  # the steer changed the reply


def test_steer_with_a_negative_layer_is_resolved_by_the_served_model(tiny, served):
    here, there = both(tiny, served, f"/steer -1 2 Japan{ENTER}/steer{ENTER}/steer off{ENTER}")
    assert there.out == here.out and "at layer 4" in here.out.splitlines()[0]


def test_a_bad_steer_is_refused_in_one_line_by_the_server(tiny, served):
    here, there = both(tiny, served, f"/steer 99 2 Japan{ENTER}{ASK}{ENTER}")
    refused = here.out.splitlines()[0]
    assert refused.startswith("--layer must be between 0 and 4") and refused.endswith("not 99")
    assert there.out.splitlines()[0] == "the server refused the request: " + refused  # the same one line
    assert there.repl.chat.steer is None and "Tokyo" in there.out  # the chat goes on, unsteered


def test_tokens_through_the_server_counts_what_it_counts_here(tiny, served):
    here, there = both(tiny, served, f"/tokens{ENTER}{ASK}{ENTER}/tokens{ENTER}")
    assert there.out.splitlines()[-1] == here.out.splitlines()[-1]
    assert "/512 tokens" in here.out.splitlines()[-1] and there.out.splitlines()[0] == here.out.splitlines()[0]


def test_continue_through_the_server_finishes_a_cut_reply_as_here(tiny, served):
    keys = f"/set max_new_tokens 3{ENTER}{ASK}{ENTER}/set max_new_tokens 40{ENTER}/continue{ENTER}/continue{ENTER}"
    here, there = both(tiny, served, keys)
    assert here.messages[-1]["content"] == "The capital of Japan is Tokyo."
    assert untimed(there.out) == untimed(here.out) and there.messages == here.messages
    assert len(there.repl.last_steps) == len(here.repl.last_steps) == 3 + 5 + 1  # /why covers the whole reply


def test_why_and_show_through_the_server_equal_the_ones_here(tiny, served):
    here, there = both(tiny, served, f"{ASK}{ENTER}/why{ENTER}")
    assert untimed(there.out) == untimed(here.out)
    facts_here, facts_there = here.repl.chat.backend.facts(), served.facts()
    assert facts_there.end_tokens == facts_here.end_tokens and facts_there.chat_template == facts_here.chat_template


def test_a_sampled_reply_with_a_seed_is_the_same_through_the_server(tiny, served):
    keys = f"/set temperature 0.9{ENTER}/set seed 11{ENTER}{ASK}{ENTER}"
    here, there = both(tiny, served, keys)
    assert "seed 11" in here.out and untimed(there.out) == untimed(here.out)


def test_trimming_through_the_server_drops_the_turns_it_drops_here(tiny, served):
    from lookinside.core.chat.conversation import Conversation
    from lookinside.core.chat.defaults import ChatSettings
    from lookinside.core.sampling_params import SamplingParams

    def long_chat() -> Conversation:
        return Conversation(settings=ChatSettings(params=SamplingParams(temperature=0), max_new_tokens=60))

    keys = "".join(f"{'word ' * 90}{n}{ENTER}" for n in range(4))
    here, there = chat(tiny, keys, long_chat(), console=wide()), chat(served, keys, long_chat(), console=wide())
    assert "dropped" in here.out and untimed(there.out) == untimed(here.out)
    assert there.repl.conversation.window == here.repl.conversation.window > 0


# ---- the routes hold the server's limits, and refuse in one line


def post(server, route: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(server.url.removesuffix("/v1") + "/lookinside/v1/chat/" + route,
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read().splitlines()[0])
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize(("route", "body", "words"), [
    ("reply", {"ids": [1, 2], "params": {}, "max_new_tokens": 65}, "--max-tokens"),
    ("reply", {"ids": [], "params": {}, "max_new_tokens": 4}, "ids must be"),
    ("reply", {"ids": [10**6], "params": {}, "max_new_tokens": 4}, "1000000"),
    ("reply", {"ids": [1], "params": {"temperature": -1}, "max_new_tokens": 4}, "temperature"),
    ("fit", {"messages": [{"role": "robot", "content": "hi"}], "settings": {}}, "messages[0]"),
    ("fit", {"messages": [], "settings": {"max_new_tokens": 500}}, "--max-tokens"),
    ("count", {"messages": [], "window": 3, "settings": {}}, "window"),
    ("steer", {"add": "Japan", "layer": 2, "alpha": "big"}, "alpha"),
    ("steer", [1, 2], "JSON object"),
])
def test_each_chat_route_refuses_a_bad_request_in_one_line(server, route, body, words):
    status, answer = post(server, route, body)
    message = answer["error"]["message"]
    assert status == 400 and words in message and "\n" not in message


def test_the_chat_routes_need_the_key_when_the_server_has_one(tiny):
    settings = ServeSettings(spec=LoadSpec(model="tiny", device="cpu"), api_key="s3cret")
    with LiveServer(tiny, settings) as live:
        status, answer = post(live, "count", {"messages": [], "settings": {}})
        assert status == 401
        backend = connect(live.url, "s3cret")
        assert chat(backend, f"/tokens{ENTER}", greedy_chat()).out.strip().endswith("the next reply may add up to 40")


def test_a_steered_replys_steer_never_reaches_a_completion_made_between_its_steps(tiny, served):
    from lookinside.core.chat.session import ChatSession
    from lookinside.core.request import GenerationSettings
    from lookinside.core.sampling_params import SamplingParams

    def steered_reply(backend):
        session = ChatSession(backend, greedy_chat())
        session.set_steer("Japan", "France", 2, 4.0)
        return session.send("What is the capital of France?")

    def completion(backend) -> str:
        stream = backend.generate("The capital of France is", SamplingParams(temperature=0),
                                  GenerationSettings(max_new_tokens=3))
        return "".join(step.text for step in stream)

    reply = steered_reply(served)
    first = next(iter(reply))  # the reply is mid-way: its next step is not asked for yet
    alone = completion(served)  # answered now, by the batch, with no steer on the model
    assert alone == completion(as_backend(tiny)) == " Paris."
    here = [step.token_id for step in steered_reply(as_backend(tiny))]
    assert [first.token_id, *(step.token_id for step in reply)] == here  # the steer came back for its own steps


DRIVE = """
from lookinside.core.chat.conversation import Conversation
from lookinside.core.chat.defaults import ChatSettings
from lookinside.core.chat.session import ChatSession
from lookinside.core.sampling_params import SamplingParams

session = ChatSession(backend, Conversation(settings=ChatSettings(SamplingParams(temperature=0), max_new_tokens=3)))
session.set_steer("Japan", "France", 2, 4.0)
reply = session.send("What is the capital of Japan?")
list(reply)
first = session.finish(reply)
reply = session.begin(continuation=True)
list(reply)
then = session.finish(reply)
seen = [first.prompt_tokens, first.context_used, session.count_tokens(), then.prompt_tokens, then.context_used,
        session.conversation.messages[-1]["content"]]
"""


def test_a_chat_through_the_server_imports_no_torch_or_transformers(server, tiny):
    import os
    import subprocess
    import sys

    code = f"from lookinside.core.backends.served import connect\nbackend = connect({server.url!r}, '')\n{DRIVE}print(seen)"
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=300,
                         check=False, env={**os.environ, "LOOKINSIDE_API_KEY": "", "OPENAI_API_KEY": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    here: dict = {"backend": as_backend(tiny)}
    exec(DRIVE, here)  # the same steered chat, /continue and /tokens with the model here
    assert out.stdout.strip() == str(here["seen"])
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "transformers"}, imported & {"torch", "transformers"}


CHAT_BODIES = {
    "fit": {"messages": [{"role": "user", "content": "hi"}], "window": 0, "continuation": None, "system": None,
            "settings": {"params": {"temperature": 0}, "max_new_tokens": 4, "trim": True}},
    "count": {"messages": [{"role": "user", "content": "hi"}], "window": 0, "system": "be brief",
              "settings": {"params": {}, "max_new_tokens": 4}},
    "steer": {"add": "Japan", "subtract": "France", "layer": 2, "alpha": 4.0},
    "reply": {"ids": [1, 2, 3], "params": {"temperature": 0}, "max_new_tokens": 2,
              "steer": {"add": "Japan", "subtract": None, "depth": 2, "alpha": 4.0}},
}


def test_extreme_values_in_every_field_of_every_chat_route_are_never_a_500(server):
    extremes = [2**63 - 1, -(2**63), 1e308, -1e308, 5e-324, -1, 0, "", [], {}, None, True, [None], {"a": 1}]
    statuses: dict[int, int] = {}
    for route, body in CHAT_BODIES.items():
        status, _ = post(server, route, body)
        assert status == 200, route  # the body as a client sends it is answered
        paths = [(k,) for k in body] + [(k, inner) for k, v in body.items() if isinstance(v, dict) for inner in v]
        for path in paths:
            for value in extremes:
                changed = json.loads(json.dumps(body))
                (changed if len(path) == 1 else changed[path[0]])[path[-1]] = value
                status, answer = post(server, route, changed)
                statuses[status] = statuses.get(status, 0) + 1
                assert status < 500, (route, path, value, answer)
                if status >= 400:
                    assert "\n" not in answer["error"]["message"]
    assert statuses.get(400, 0) > 50  # most are refused, each in one line


def test_a_reply_the_server_stops_sending_keeps_what_came_as_cut(server, served):
    from lookinside.core.backends.http import lines
    from lookinside.core.errors import StreamBroken

    body = {"ids": [1, 2, 3], "params": {"temperature": 0}, "max_new_tokens": 6}
    answers = list(lines(served.root, "/lookinside/v1/chat/reply", None, body, 60))
    assert answers[0] == {"start": True} and answers[-1]["step"]["finish"] is not None and len(answers) > 3
    kept = []
    with pytest.raises(StreamBroken, match="stopped sending before the reply ended"):
        kept.extend(served._steps(iter(answers[1:-1])))  # the connection ends one step early
    assert len(kept) == len(answers) - 2
    with pytest.raises(StreamBroken, match="stopped the reply: the server is shutting down"):
        list(served._steps(iter([answers[1], {"error": {"message": "the server is shutting down"}}])))


def test_the_peak_memory_a_cuda_server_sends_with_the_last_step_reaches_the_stats(server, served):
    from lookinside.core.backends.http import lines

    body = {"ids": [1, 2, 3], "params": {"temperature": 0}, "max_new_tokens": 4}
    answers = list(lines(served.root, "/lookinside/v1/chat/reply", None, body, 60))
    assert "peak_memory_bytes" not in answers[-1]  # a CPU server sends none, as a chat here shows none on the CPU
    answers[-1]["peak_memory_bytes"] = 3 * 2**30  # what serve/chat.py adds on CUDA (no GPU here to make it)
    served.start_reply()
    list(served._steps(iter(answers[1:])))
    assert served.resources().peak_memory_bytes == 3 * 2**30
    served.start_reply()
    assert served.resources().peak_memory_bytes is None
