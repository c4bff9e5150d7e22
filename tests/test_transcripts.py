"""Transcripts as a new user meets them (issue 32): --resume's model, /why after a resume, a steer kept, bad files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from lookinside.cli.app import app

from .test_chat import ENTER, chat, greedy_chat


def why_rows(out: str) -> list[list[str]]:
    """/why's table as rows of cells."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]


def wide() -> Console:
    return Console(file=io.StringIO(), width=160, highlight=False)


# ---- item 1: --resume goes on with the model the conversation was held with


def test_resume_without_model_loads_the_transcripts_model(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LOOKINSIDE_MODEL", raising=False)
    chats = tmp_path / "chats"
    chats.mkdir()
    (chats / "session-20260101-120000-1.json").write_text(json.dumps({
        "version": 2, "model": "tiny", "system": None, "window": 0,
        "messages": [{"role": "user", "content": "What is the capital of Japan?"},
                     {"role": "assistant", "content": "The capital of Japan is Tokyo."}],
        "settings": {"params": {"temperature": 0}, "max_new_tokens": 20}}))
    result = CliRunner().invoke(app, ["chat", "--resume"], input="What is the capital of France?")
    assert result.exit_code == 0, result.output
    assert "Paris" in result.output and "Hugging Face" not in result.output


# ---- item 2: /why after a resume shows what /why showed live, the <|end|> row included


def test_why_after_a_reload_is_the_live_why_at_full_precision(tiny, tmp_path):
    path = tmp_path / "chat.json"
    live = chat(tiny, f"What is the capital of Japan?{ENTER}/why{ENTER}/save {path}{ENTER}", console=wide())
    steps = live.repl.last_steps
    saved = json.loads(path.read_text())
    assert saved["version"] == 2
    tokens = saved["messages"][1]["tokens"]
    assert [t[1] for t in tokens] == [s.prob for s in steps]  # every digit, not rounded to 4 decimals
    assert tokens[-1][0] == "" and tokens[-1][4] == "<|end|>"  # the end token: no text, but a row of /why
    again = chat(tiny, f"/load {path}{ENTER}/why{ENTER}", console=wide())
    assert why_rows(again.out) == why_rows(live.out.split("saved ")[0])
    assert why_rows(again.out)[-1][1] == "<|end|>"


def test_a_small_probability_survives_the_round_trip(tiny, tmp_path):
    from lookinside.core.chat.conversation import Conversation
    from lookinside.core.chat.transcripts import read_transcript, write_transcript

    conversation = Conversation(messages=[{"role": "user", "content": "hi"}])
    conversation.add("assistant", "x", tokens=[["x", 2.0e-05, 7, [[" y", 0.5]], "x"]])
    write_transcript(conversation, tmp_path / "c.json", "tiny")
    loaded, model = read_transcript(tmp_path / "c.json")
    assert loaded.messages[1]["tokens"][0][1] == 2.0e-05 and model == "tiny"


def test_a_version_1_transcript_still_loads_and_explains(tiny, tmp_path):
    old = tmp_path / "old.json"  # as lookinside wrote it before version 2: rounded, no token, no end row
    old.write_text(json.dumps({
        "version": 1, "model": "tiny", "system": None, "window": 0,
        "messages": [{"role": "user", "content": "Japan?"},
                     {"role": "assistant", "content": "Tokyo.", "tokens": [
                         [" Tokyo", 0.9981, 1, [[" Paris", 0.0012], [" Rome", 0.0001]]], [".", 1.0, 1, []]]}],
        "settings": {"params": {"temperature": 0}, "max_new_tokens": 40, "trim": True}}))
    run = chat(tiny, f"/load {old}{ENTER}/why{ENTER}", console=wide())
    rows = why_rows(run.out)
    assert [row[1] for row in rows] == ["␣Tokyo", "."] and rows[0][2] == "0.998" and "␣Paris" in rows[0][4]


# ---- item 3: a steered reply says so, on disk and in every export


def test_a_steered_reply_is_marked_in_the_autosave_and_the_exports(tiny, tmp_path, monkeypatch):
    autosave = tmp_path / "session.json"
    keys = (f"/steer 2 4 Japan | France{ENTER}What is the capital of France?{ENTER}/steer off{ENTER}"
            f"What is the capital of France?{ENTER}/export {tmp_path / 'c.md'}{ENTER}"
            f"/export {tmp_path / 'c.html'}{ENTER}/export {tmp_path / 'c.svg'}{ENTER}")
    from lookinside.ui.repl import ChatRepl

    original = ChatRepl.__init__

    def with_autosave(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.autosave = autosave

    monkeypatch.setattr(ChatRepl, "__init__", with_autosave)
    chat(tiny, keys, conversation=greedy_chat())
    steer = "steer 4 x ('Japan' - 'France') at layer 2"
    replies = [m for m in json.loads(autosave.read_text())["messages"] if m["role"] == "assistant"]
    assert replies[0]["steer"] == steer and "steer" not in replies[1]
    markdown = (tmp_path / "c.md").read_text()
    assert markdown.count("Steered:") == 1 and f"*Steered: {steer}; not the model's plain answer.*" in markdown
    for picture in ("c.html", "c.svg"):
        text = (tmp_path / picture).read_text().replace("&#x27;", "'").replace("&#160;", " ").replace("\xa0", " ")
        assert text.count("steered:") == 1, picture


def test_a_reply_cut_by_a_kill_keeps_its_steer(tmp_path):
    from lookinside.core.chat.conversation import Conversation
    from lookinside.core.chat.journal import Journal, fold

    transcript = tmp_path / "session.json"
    conversation = Conversation(messages=[{"role": "user", "content": "France?"}])
    journal = Journal.open(transcript, 1, False, steer="steer 4 x ('Japan') at layer 2")
    journal.append([" Tokyo", 0.5, 1, [], " Tokyo"])
    journal.close()
    assert fold(transcript, conversation)
    assert conversation.messages[-1]["steer"] == "steer 4 x ('Japan') at layer 2" and conversation.messages[-1]["cut"]


# ---- item 10: the messages name the problem


@pytest.mark.parametrize(("content", "expected"), [
    (None, "is a directory, not a transcript"),
    ("", "is empty: not a transcript"),
    ('{"version": 2, "model": "tiny", "messages": [{"role": "us', "is cut short: its JSON ends at line 1"),
])
def test_a_bad_transcript_is_one_line_naming_the_file(tmp_path, monkeypatch, content, expected):
    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    path = tmp_path / "chats" / "session-20260101-120000-1.json"
    if content is None:
        path.mkdir(parents=True)
    else:
        path.parent.mkdir()
        path.write_text(content)
    for args in (["--resume"], ["--load", str(path)]):
        result = CliRunner().invoke(app, ["chat", *args, "--model", "tiny"])
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert str(path) in result.output and expected in result.output, result.output


def test_resume_with_only_a_journal_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    journal = tmp_path / "chats" / "session-20260101-120000-1.json.part"
    journal.parent.mkdir()
    journal.write_text('{"after": 1, "continues": false}\n')
    result = CliRunner().invoke(app, ["chat", "--resume", "--model", "tiny"])
    assert result.exit_code == 2 and str(journal) in result.output and "transcript" in result.output


def test_too_many_threads_is_our_line_not_libgomps():
    from lookinside.core.errors import BadInput
    from lookinside.core.model.threads import choose_threads

    with pytest.raises(BadInput, match=r"--threads 20000 is more than this machine can run: it has 2 cores, so at most 8"):
        choose_threads(20000, cores=2)
    assert choose_threads(8, cores=2).count == 8


def test_too_many_threads_from_the_command_line(tmp_path):
    result = CliRunner().invoke(app, ["next-token", "hi", "--model", "tiny", "--threads", "20000", "--no-server"])
    assert result.exit_code == 2 and result.output.startswith("error: --threads 20000 is more than this machine")
    assert result.output.count("\n") == 1


def test_a_redirect_loop_is_one_line(tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Loop(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(302)
            self.send_header("Location", self.path)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Loop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        result = CliRunner().invoke(app, ["next-token", "hi", "--endpoint", url])
    finally:
        server.shutdown()
    assert result.exit_code != 0 and "redirects in a loop (302 to" in result.output
    assert result.output.count("\n") == 1, result.output


def test_a_config_of_no_vocabulary_is_our_one_line(tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    import lookinside
    from lookinside.tiny import ASSETS

    model = tmp_path / "m"
    shutil.copytree(ASSETS, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "vocab_size": 0}))
    src = str(Path(lookinside.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src, "HF_HUB_OFFLINE": "1"}
    # a real process: transformers' own logging, as a user meets it (`llm inspect` reads only the config)
    result = subprocess.run([sys.executable, "-m", "lookinside", "inspect", "--model", str(model)], env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode != 0
    assert result.stderr == f"error: {model}/config.json: vocab_size must be a positive whole number, not 0\n"
