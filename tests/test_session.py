"""The chat as a core object: ChatSession drives the tiny model with no terminal, as a notebook or script would."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lookinside.core.backends.seam import LocalBackend
from lookinside.core.chat.conversation import Conversation
from lookinside.core.chat.defaults import ChatSettings
from lookinside.core.chat.session import ChatSession
from lookinside.core.errors import BadInput
from lookinside.core.sampling_params import SamplingParams


@pytest.fixture
def session(tiny):
    settings = ChatSettings(params=SamplingParams(temperature=0), max_new_tokens=24)
    return ChatSession(LocalBackend(tiny), Conversation(settings=settings))


def test_a_turn_is_fit_generate_stats_keep(session):
    reply = session.send("What is the capital of Japan?")
    steps = list(reply)
    stats = session.finish(reply)
    assert "Tokyo" in session.conversation.last_reply["content"] and session.last_steps == steps
    assert stats.generated_tokens == len(steps) and stats.prompt_tokens == len(reply.fitted.ids)
    assert stats.seed is None and reply.seed is None  # greedy: no seed in effect


def test_a_sampled_reply_reports_its_streams_seed(session):
    session.set("temperature", "0.8")
    reply = session.send("What is the capital of Japan?")
    list(reply)
    stats = session.finish(reply)
    assert reply.seed is not None and stats.seed == reply.seed == reply.stream.seed


def test_a_stopped_reply_is_kept_marked_as_cut_and_retry_undo_go_back(session):
    reply = session.send("What is the capital of Japan?")
    next(iter(reply))
    reply.cut = True
    session.finish(reply)
    assert session.conversation.last_reply["cut"] is True
    again = session.retry()
    list(again)
    session.finish(again)
    assert "cut" not in session.conversation.last_reply and len(session.conversation.messages) == 2
    assert session.undo() == 2 and session.conversation.messages == [] and session.last_steps == []


def test_refusals_come_before_any_token(session):
    with pytest.raises(BadInput, match="nothing to retry"):
        session.retry()
    with pytest.raises(BadInput, match="below the context of 512"):
        session.set("max_new_tokens", "512")


def test_transcripts_round_trip(session, tmp_path):
    reply = session.send("What is the capital of Japan?")
    list(reply)
    session.finish(reply)
    path = session.save(tmp_path / "chat.json")
    messages = list(session.conversation.messages)
    assert session.load(path) == "tiny" and session.conversation.messages == messages


def test_the_session_imports_no_ui_library():
    code = ("import sys; import lookinside.core.chat.session, lookinside.core.backends.seam; "
            "print(any(m.split('.')[0] in ('rich', 'prompt_toolkit', 'typer') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)  # a hang, not a slow box
    assert out.stdout.strip() == "False"
