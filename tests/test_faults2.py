"""Fault injection, round two (issue 21): a chat killed mid-reply, two chats at once, a full disk, a closed terminal.

Each case uses the real thing: processes and signals, a small tmpfs that fills up (skipped where
`mount` is not allowed), a real terminal through tmux, a server on 127.0.0.1 that stops mid-reply.
Waits are for a state (a line on the screen, a file on disk), with generous limits, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from lookinside.core.chat.journal import journal_path
from lookinside.core.chat.transcripts import read_transcript
from lookinside.core.paths import new_chat_file

from .fake_openai import FakeServer
from .test_chat import ENTER, chat, scripted
from .test_faults import _type, _wait_for

SRC = Path(__file__).resolve().parents[1] / "src"


def child_env() -> dict[str, str]:
    """A child process's environment, read when it starts: after conftest gave the run its own data directory."""
    return {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "LOOKINSIDE_API_KEY": "", "OPENAI_API_KEY": ""}


needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def wait_until(check, what: str, limit_s: float = 180.0):
    """Poll `check` until it returns something true; a state, not a guess at how long it takes."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} never happened in {limit_s:.0f} s")


@contextmanager
def terminal(command: str):
    """A tmux session running `command`; its name. Killing the session hangs up on the process (SIGHUP)."""
    name = f"llm-f2-{uuid.uuid4().hex[:8]}"
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "200", "-y", "50", command], check=True)
    try:
        yield name
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], check=False, capture_output=True)


def chat_command(data: Path, *args: str, then: str = "") -> str:
    """The chat in a shell; with no `then`, the shell becomes it (`exec`), so PID= is the chat's own."""
    return (f"echo PID=$$; {'' if then else 'exec '}env LOOKINSIDE_DATA_DIR={data} LOOKINSIDE_API_KEY= "
            f"PYTHONPATH={SRC} {sys.executable} -m lookinside chat --no-history {' '.join(args)}{then}")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@contextmanager
def small_tmpfs(path: Path, size: str = "256k"):
    """A tmpfs of `size` at `path` (we fill it to make a full disk); skip where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(disk: Path) -> None:
    """Write until the file system is full."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- names that cannot collide -------------------------------------------------------------------

def test_two_chats_in_the_same_second_get_two_files(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: fmt.replace("%Y%m%d-%H%M%S", "20260101-120000"))
    here = new_chat_file("session")
    code = ("import time; time.strftime = lambda f, *a: f.replace('%Y%m%d-%H%M%S', '20260101-120000'); "
            "from lookinside.core.paths import new_chat_file; print(new_chat_file('session'))")
    other = subprocess.run([sys.executable, "-c", code],
                           env={**child_env(), "LOOKINSIDE_DATA_DIR": str(tmp_path)}, capture_output=True, text=True, check=True)
    assert here.name.startswith("session-20260101-120000") and Path(other.stdout.strip()).name.startswith(
        "session-20260101-120000")
    assert Path(other.stdout.strip()) != here


@pytest.mark.slow
def test_two_one_shot_chats_at_once_keep_both_questions(tmp_path):
    env = {**child_env(), "LOOKINSIDE_DATA_DIR": str(tmp_path)}
    questions = ["What is the capital of Japan?", "What is the capital of France?"]
    processes = [subprocess.Popen([sys.executable, "-m", "lookinside", "chat", q, "--model", "tiny", "-t", "0"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for q in questions]
    for process in processes:
        process.communicate(timeout=600)
        assert process.returncode == 0
    kept = sorted(json.loads(p.read_text())["messages"][0]["content"] for p in (tmp_path / "chats").glob("asked-*"))
    assert kept == sorted(questions)


# ---- the question on disk before the reply, the reply as it streams --------------------------------

def test_the_question_is_on_disk_before_the_first_token_and_the_reply_as_it_streams(tiny, tmp_path):
    autosave = tmp_path / "session.json"
    seen = []

    def watching(lm, ids, params, config):
        seen.append(read_transcript(autosave)[0].messages)  # at the start: the question, and nothing yet
        for i, step in enumerate(scripted("The capital of Japan is Tokyo.")(lm, ids, params, config)):
            if i == 4:  # four tokens in: the journal holds them, folded in by any reader
                seen.append(read_transcript(autosave)[0].messages)
            yield step

    conversation_run = _chat_with_autosave(tiny, autosave, f"What is the capital of Japan?{ENTER}", watching)
    assert seen[0] == [{"role": "user", "content": "What is the capital of Japan?"}]
    assert [m["role"] for m in seen[1]] == ["user", "assistant"]
    assert seen[1][1]["content"] == "The capital of Japan" and seen[1][1]["cut"] is True
    final = json.loads(autosave.read_text())["messages"]
    assert final[1]["content"] == "The capital of Japan is Tokyo." and "cut" not in final[1]
    assert not journal_path(autosave).exists()  # made whole: the journal is gone
    assert conversation_run.code == 0


def _chat_with_autosave(lm, autosave: Path, keys: str, generate_fn):
    import io

    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput
    from rich.console import Console

    from lookinside.ui.repl import ChatRepl, make_session

    from .test_chat import Run, greedy_chat

    console = Console(file=io.StringIO(), width=100, highlight=False)
    with create_pipe_input() as pipe:
        pipe.send_text(keys)
        pipe.close()
        repl = ChatRepl(lm, greedy_chat(), console, make_session(keep_history=False, input=pipe, output=DummyOutput()),
                        "plain", generate_fn)
        repl.autosave, repl.show_stats = autosave, False
        code = repl.run()
    return Run(console.file.getvalue(), repl, code)


def test_a_journal_from_another_state_of_the_transcript_is_ignored(tmp_path):
    from lookinside.core.chat.conversation import Conversation
    from lookinside.core.chat.transcripts import write_transcript

    conversation = Conversation()
    conversation.add("user", "Hi")
    conversation.add("assistant", "Hello.")
    path = write_transcript(conversation, tmp_path / "t.json", "tiny")
    journal_path(path).write_text('{"after": 1, "continues": false}\n["Stale", 0.5]\n')
    assert [m["content"] for m in read_transcript(path)[0].messages] == ["Hi", "Hello."]
    journal_path(path).write_text('{"after": 2, "continues": true}\n[" Again", 0.5]\n[" and ag')  # a line cut by the kill
    messages = read_transcript(path)[0].messages
    assert messages[-1]["content"] == "Hello. Again" and messages[-1]["cut"] is True


# ---- a full disk: said at once, said again when leaving, with the way out ---------------------------

def test_a_full_disk_mid_chat_is_said_again_at_exit_with_the_way_out(tiny, tmp_path):
    with small_tmpfs(tmp_path / "disk") as disk:
        answers = scripted("Tokyo.", "Paris.")

        def fills_the_disk_on_the_second(lm, ids, params, config):
            if answers.prompts:
                fill(disk)
            yield from answers(lm, ids, params, config)

        answers.prompts = []
        keys = (f"Japan?{ENTER}France?{ENTER}/exit{ENTER}/save {tmp_path / 'kept.json'}{ENTER}/exit{ENTER}")
        run = _chat_with_autosave(tiny, disk / "session.json", keys, fills_the_disk_on_the_second)
    assert run.code == 0
    lines = run.out.splitlines()
    assert any("autosave is off" in line and "No space left on device" in line and "/save PATH" in line
               for line in lines), run.out
    warning = [line for line in lines if "this conversation is in no file" in line]
    assert len(warning) == 1 and "/save PATH keeps it" in warning[0], run.out
    kept = json.loads((tmp_path / "kept.json").read_text())["messages"]
    assert [m["content"] for m in kept] == ["Japan?", "Tokyo.", "France?", "Paris."], run.out


def test_leaving_twice_leaves_without_it(tiny, tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    run = _chat_with_autosave(tiny, afile / "session.json", f"Japan?{ENTER}/exit{ENTER}/exit{ENTER}/help{ENTER}",
                              scripted("Tokyo."))
    assert run.code == 0 and "this conversation is in no file" in run.out
    assert "/help" not in run.out and "this list" not in run.out  # the second /exit left


# ---- kill -9, SIGHUP: a real process in a real terminal ---------------------------------------------

@needs_tmux
@pytest.mark.slow
def test_kill_9_mid_reply_then_resume_shows_the_question_and_the_partial_reply(tmp_path):
    data = tmp_path / "data"
    with FakeServer("drip") as url:
        with terminal(chat_command(data, "--endpoint", url)) as first:
            pid = int(re.search(r"PID=(\d+)", _wait_for(first, r"(?m)^>>>")).group(1))
            _type(first, "Remember the question.")
            _wait_for(first, r"Hello there")
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: gone(pid), "the chat's death")
        (autosave,) = (data / "chats").glob("session-*.json")
        assert journal_path(autosave).exists()
        resume = chat_command(data, "--resume", "--endpoint", url, then="; echo EXITED=$?; sleep 60")
        with terminal(resume) as again:  # the same server: it answers the next question the same way
            _wait_for(again, r"(?s)going on from .*\(2 messages\)")  # the path may wrap anywhere
            _wait_for(again, r"user: Remember the question\.")
            _wait_for(again, r"assistant \(cut\): Hello there")
            _type(again, "/why")
            _wait_for(again, r"Hello\s+│\s+0\.905")  # exp(-0.1), from the saved probabilities
            _type(again, "/exit")
            pane = _wait_for(again, r"EXITED=\d+")
            assert "EXITED=0" in pane and "Traceback" not in pane
    messages = json.loads(autosave.read_text())["messages"]
    assert messages == [{"role": "user", "content": "Remember the question."},
                        {**messages[1], "role": "assistant", "content": "Hello there", "cut": True}]
    assert not journal_path(autosave).exists()


@needs_tmux
@pytest.mark.slow
def test_closing_the_terminal_mid_reply_saves_the_question_and_the_partial_reply(tmp_path):
    data = tmp_path / "data"
    with FakeServer("drip") as url, terminal(chat_command(data, "--endpoint", url)) as session:
        pid = int(re.search(r"PID=(\d+)", _wait_for(session, r"(?m)^>>>")).group(1))
        _type(session, "Do not lose me.")
        _wait_for(session, r"Hello there")
        subprocess.run(["tmux", "kill-session", "-t", session], check=True)  # the terminal goes: SIGHUP
        wait_until(lambda: gone(pid), "the chat's exit after SIGHUP")
    (rescued,) = wait_until(lambda: list((data / "chats").glob("rescued-*.json")), "the rescued file")
    (autosave,) = (data / "chats").glob("session-*.json")
    for path in (rescued, autosave):
        messages = json.loads(path.read_text())["messages"]
        assert [(m["role"], m["content"], m.get("cut")) for m in messages] == [
            ("user", "Do not lose me.", None), ("assistant", "Hello there", True)]
    assert not journal_path(autosave).exists()


@pytest.mark.slow
def test_sighup_at_the_prompt_exits_129_and_saves(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    data = tmp_path / "data"
    with terminal(chat_command(data, "--model", "tiny", "-t", "0")) as session:
        pid = int(re.search(r"PID=(\d+)", _wait_for(session, r"(?m)^>>>")).group(1))
        _type(session, "What is the capital of Japan?")
        _wait_for(session, r"Tokyo(?s:.*)>>>")
        os.kill(pid, signal.SIGHUP)
        pane = _wait_for(session, r"terminated \(SIGHUP\); the conversation is saved in")
        assert "Traceback" not in pane
    (rescued,) = (data / "chats").glob("rescued-*.json")
    assert json.loads(rescued.read_text())["messages"][0]["content"] == "What is the capital of Japan?"


# ---- writes: through links, never over a device or a FIFO, `-` is standard output ---------------------

def keep_cli(*args: str):
    from typer.testing import CliRunner

    from lookinside.cli.app import app

    result = CliRunner().invoke(app, ["next-token", "The capital of France is", "--model", "tiny", *args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def test_a_symlink_is_written_through_to_its_target_and_stays_a_link(tmp_path):
    target, link, chain = tmp_path / "real.svg", tmp_path / "link.svg", tmp_path / "chain.svg"
    target.write_text("old")
    target.chmod(0o640)
    link.symlink_to(target)
    chain.symlink_to(link)
    assert keep_cli("--svg", str(chain)).exit_code == 0
    assert chain.is_symlink() and link.is_symlink() and "<svg" in target.read_text()
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)  # the replaced file keeps its mode
    dangling = tmp_path / "dangling.html"
    dangling.symlink_to(tmp_path / "made-by-the-write.html")
    assert keep_cli("--html", str(dangling)).exit_code == 0
    assert dangling.is_symlink() and "<html" in (tmp_path / "made-by-the-write.html").read_text().lower()


def test_save_through_a_symlink_keeps_the_link(tiny, tmp_path):
    target, link = tmp_path / "chats" / "real.json", tmp_path / "link.json"
    target.parent.mkdir()
    link.symlink_to(target)
    run = chat(tiny, f"Japan?{ENTER}/save {link}{ENTER}", generate_fn=scripted("Tokyo."))
    assert f"saved 2 messages and the settings to {link}" in run.out
    assert link.is_symlink() and json.loads(target.read_text())["messages"][1]["content"] == "Tokyo."


def _device(tmp_path: Path, name: str, minor: int) -> Path:
    """A character device node like /dev/null (minor 3) or /dev/full (minor 7), in a private directory."""
    node = tmp_path / name
    try:
        os.mknod(node, 0o666 | __import__("stat").S_IFCHR, os.makedev(1, minor))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a device node here: {exc}")
    return node


def test_a_full_device_is_written_in_place_and_its_error_said(tmp_path):
    import stat

    full = _device(tmp_path, "full", 7)
    result = keep_cli("--html", str(full))
    assert result.exit_code != 0 and f"cannot write {full}: No space left on device" in result.output
    assert stat.S_ISCHR(full.stat().st_mode)  # still the device, not a file put in its place


def test_a_null_device_takes_the_write_and_stays_a_device(tmp_path):
    import stat

    null = _device(tmp_path, "null", 3)
    assert keep_cli("--svg", str(null)).exit_code == 0
    assert stat.S_ISCHR(null.stat().st_mode)


def test_a_fifo_nobody_reads_is_refused_at_once_and_one_with_a_reader_gets_the_page(tmp_path):
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    started = time.monotonic()
    result = keep_cli("--html", str(fifo))
    assert result.exit_code != 0 and "it is a FIFO and nothing reads it" in result.output
    assert time.monotonic() - started < 60
    reader_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader is there before the write starts
    chunks: list[bytes] = []

    def read_all() -> None:
        end = time.monotonic() + 300
        while time.monotonic() < end:
            try:
                chunk = os.read(reader_fd, 65536)
            except BlockingIOError:
                chunk = None
            if chunk:
                chunks.append(chunk)
            elif chunk == b"" and chunks:
                return  # the writer closed it
            else:
                time.sleep(0.02)

    reader = threading.Thread(target=read_all)
    reader.start()
    try:
        assert keep_cli("--html", str(fifo)).exit_code == 0
        reader.join(300)
    finally:
        os.close(reader_fd)
    assert b"<html" in b"".join(chunks).lower()


def test_a_socket_is_refused(tmp_path):
    import socket

    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        result = keep_cli("--svg", str(path))
    assert result.exit_code != 0 and "it is a socket, not a file" in result.output


@pytest.mark.parametrize("name", ["-", "/dev/stdout"])
def test_dash_and_dev_stdout_are_standard_output(name):
    result = keep_cli("--html", name)
    assert result.exit_code == 0 and "<html" in result.stdout.lower() and "Paris" in result.stdout
    assert not Path("-").exists()  # not a file called "-" in the working directory


@pytest.mark.slow
def test_dev_stdout_in_a_real_process_is_the_pipe(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lookinside", "next-token", "hi", "--model", "tiny", "--svg",
                          "/dev/stdout"], env=child_env(), capture_output=True, timeout=600, cwd=tmp_path, check=False)
    assert out.returncode == 0 and b"<svg" in out.stdout and b"Traceback" not in out.stderr
    assert not (tmp_path / "-").exists()


# ---- numbers that are not numbers -------------------------------------------------------------------

def test_print_json_is_strict_and_says_why_a_number_is_null(capsys):
    from lookinside.ui.console import print_json

    print_json({"prob": float("nan"), "rows": [{"logprob": float("-inf")}, {"logprob": -1.5}], "top": float("inf")})
    text = capsys.readouterr().out
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert data["prob"] is None and data["rows"][0]["logprob"] is None and data["rows"][1]["logprob"] == -1.5
    assert data["nulls"] == {"prob": "NaN", "rows[0].logprob": "-Infinity", "top": "Infinity"}


def test_a_transcript_with_a_nan_probability_is_strict_json(tmp_path):
    from lookinside.core.chat.conversation import Conversation
    from lookinside.core.chat.transcripts import write_transcript

    conversation = Conversation()
    conversation.add("user", "Hi")
    conversation.add("assistant", "Hello", tokens=[["Hello", float("nan")]])
    path = write_transcript(conversation, tmp_path / "t.json", "tiny")
    data = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert data["messages"][1]["tokens"] == [["Hello", None]]
    assert data["nulls"] == {"messages[1].tokens[0][1]": "NaN"}
    assert read_transcript(path)[0].messages[1]["content"] == "Hello"


def _broken_tiny(tmp_path: Path, name: str) -> Path:
    from lookinside.tiny import ASSETS

    path = tmp_path / name
    shutil.copytree(ASSETS, path)
    return path


def _invoke(*args: str):
    from typer.testing import CliRunner

    from lookinside.cli.app import app

    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


@pytest.mark.parametrize("command", ["next-token", "lens", "forward", "attention"])
def test_nan_weights_are_refused_naming_the_weights(tmp_path, command):
    from safetensors.torch import load_file, save_file

    path = _broken_tiny(tmp_path, "nan")
    tensors = load_file(path / "model.safetensors")
    tensors["model.layers.0.mlp.down_proj.weight"][0, 0] = float("nan")
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    result = _invoke(command, "The capital of France is", "--model", str(path))
    assert result.exit_code != 0 and "nan" not in result.stdout.lower()
    assert "the model's output holds NaN" in result.output and "model.layers.0.mlp.down_proj.weight" in result.output


def test_a_zero_rms_norm_eps_is_named(tmp_path):
    path = _broken_tiny(tmp_path, "eps")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 0}))
    result = _invoke("next-token", "The capital of France is", "--model", str(path))
    assert result.exit_code != 0 and "rms_norm_eps" in result.output and "config.json" in result.output


@pytest.mark.parametrize("temperature", ["1e-300", "1e-45", "4e-39", "1e300"])
def test_the_sampler_is_safe_at_any_temperature_the_flag_accepts(temperature):
    result = _invoke("generate", "The capital of France is", "--model", "tiny", "-t", temperature, "-n", "3",
                     "--seed", "1")
    assert result.exit_code == 0
    if float(temperature) < 1:
        assert result.stdout.startswith(" Paris")  # as good as greedy


def test_a_repetition_penalty_near_zero_does_not_break_sampling():
    result = _invoke("generate", "The capital of France is", "--model", "tiny", "-t", "0.7",
                     "--repetition-penalty", "1e-300", "-n", "4", "--seed", "1")
    assert result.exit_code == 0 and result.stdout.strip()


# ---- broken models: each error names the file and the field -------------------------------------------

def _with_config(tmp_path: Path, change) -> Path:
    path = _broken_tiny(tmp_path, "model")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(change(config)))
    return path


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: {**c, "vocab_size": 0}, "vocab_size must be a positive whole number, not 0"),
    (lambda c: {**c, "vocab_size": -5}, "vocab_size must be a positive whole number, not -5"),
    (lambda c: {**c, "num_hidden_layers": 0}, "num_hidden_layers must be a positive whole number, not 0"),
    (lambda c: {**c, "max_position_embeddings": 0}, "max_position_embeddings must be a positive whole number, not 0"),
    (lambda c: {**c, "num_attention_heads": 3}, "hidden_size 128 is not divisible by num_attention_heads 3"),
    (lambda c: {**c, "num_key_value_heads": 3}, "num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
    (lambda c: {**c, "rope_parameters": {**c["rope_parameters"], "rope_type": "sideways"}}, "rope type 'sideways'"),
    (lambda c: {**c, "pad_token_id": 5000}, "pad_token_id 5000 is outside the vocabulary of 1024 tokens"),
    (lambda c: {**c, "pad_token_id": -1}, "pad_token_id -1 is outside the vocabulary"),
    (lambda c: {**c, "rms_norm_eps": -1e-5}, "rms_norm_eps must be a small positive number"),
    (lambda c: [c], "holds a JSON list, not an object of settings"),
    (lambda c: {k: v for k, v in c.items() if k != "model_type"}, "has no \"model_type\""),
])
@pytest.mark.parametrize("command", ["next-token", "inspect"])
def test_a_broken_config_is_one_line_naming_the_file_and_the_field(tmp_path, change, message, command):
    path = _with_config(tmp_path, change)
    result = _invoke(command, *(["hi"] if command != "inspect" else []), "--model", str(path))
    assert result.exit_code != 0 and message in result.output, result.output
    assert str(path / "config.json") in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_a_config_that_is_not_json_names_the_line(tmp_path):
    path = _broken_tiny(tmp_path, "model")
    (path / "config.json").write_text('{"model_type": "phi3",\n  "vocab_size": }')
    result = _invoke("next-token", "hi", "--model", str(path))
    assert result.exit_code != 0 and f"{path / 'config.json'} is not valid JSON" in result.output
    assert "line 2" in result.output


@pytest.mark.parametrize("kind", ["directory", "fifo", "missing"])
def test_a_config_json_that_is_not_a_file_is_named(tmp_path, kind):
    path = _broken_tiny(tmp_path, "model")
    (path / "config.json").unlink()
    if kind == "directory":
        (path / "config.json").mkdir()
    elif kind == "fifo":
        os.mkfifo(path / "config.json")
    started = time.monotonic()
    result = _invoke("next-token", "hi", "--model", str(path))
    expected = {"directory": "is a directory, not a file", "fifo": "is a FIFO, not a file", "missing": "is missing"}
    assert result.exit_code != 0 and f"{path / 'config.json'} {expected[kind]}" in result.output
    assert time.monotonic() - started < 60  # a FIFO is not opened: nothing waits for a writer


def test_an_unreadable_model_directory_is_named(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads every directory: permissions cannot be tested as root")
    path = _broken_tiny(tmp_path, "model")
    path.chmod(0o000)
    try:
        result = _invoke("next-token", "hi", "--model", str(path))
    finally:
        path.chmod(0o755)
    assert result.exit_code != 0 and f"cannot read the model directory {path}: permission denied" in result.output


def test_an_unreadable_config_is_named(tmp_path):
    path = _broken_tiny(tmp_path, "model")
    (path / "config.json").unlink()
    (path / "config.json").symlink_to(path / "config.json")  # a link to itself: unreadable for root too
    result = _invoke("next-token", "hi", "--model", str(path))
    assert result.exit_code != 0 and f"cannot read {path / 'config.json'}" in result.output


@pytest.mark.parametrize("command", ["next-token", "tokens"])
def test_a_corrupt_tokenizer_names_tokenizer_json(tmp_path, command):
    path = _broken_tiny(tmp_path, "model")
    text = (path / "tokenizer.json").read_text()
    (path / "tokenizer.json").write_text(text[: len(text) // 2])  # a download cut half-way
    result = _invoke(command, "hi", "--model", str(path))
    assert result.exit_code != 0 and f"{path / 'tokenizer.json'} is not valid JSON" in result.output


def test_a_tokenizer_of_the_wrong_structure_names_the_tokenizer_files(tmp_path):
    path = _broken_tiny(tmp_path, "model")
    (path / "tokenizer.json").write_text('{"model": {"type": "Nonsense"}}')
    result = _invoke("tokens", "hi", "--model", str(path))
    assert result.exit_code != 0 and f"the tokenizer in {path}" in result.output and "tokenizer.json" in result.output


def test_a_bad_generation_config_value_is_said_as_the_files(tmp_path):
    path = _broken_tiny(tmp_path, "model")
    (path / "generation_config.json").write_text(json.dumps({"do_sample": True, "temperature": 0.7, "top_p": 7.0}))
    result = _invoke("generate", "The capital of France is", "--model", str(path), "-n", "3")
    assert result.exit_code != 0 and "the model's generation_config.json has a bad value: top_p" in result.output
    assert _invoke("generate", "The capital of France is", "--model", str(path), "-n", "3", "--top-p", "0.9",
                   "-t", "0").exit_code == 0  # the user's own value goes over it


@pytest.mark.parametrize("garbage", [b"", b"\x00" * 64, b"<html>404 Not Found</html>" * 10, b"\xff" * 8 + b"{}"])
def test_a_garbage_weights_file_names_the_file(tmp_path, garbage):
    path = _broken_tiny(tmp_path, "model")
    (path / "model.safetensors").write_bytes(garbage)
    result = _invoke("next-token", "hi", "--model", str(path))
    assert result.exit_code != 0 and f"{path / 'model.safetensors'} is not a safetensors weights file" in result.output


# ---- transcripts: checked field by field; the REPL goes on ----------------------------------------------

GOOD = {"version": 1, "model": "tiny", "system": None, "window": 0,
        "messages": [{"role": "user", "content": "Japan?"},
                     {"role": "assistant", "content": "Tokyo.", "tokens": [["Tokyo", 0.9, 1, [["Paris", 0.05]]],
                                                                          [".", 0.99]]}],
        "settings": {"params": {"temperature": 0.7}, "max_new_tokens": 40, "trim": True}}


def _spoiled(change) -> dict:
    data = json.loads(json.dumps(GOOD))
    change(data)
    return data


BAD_TRANSCRIPTS = [
    (lambda d: d.update(system=5), "system must be text or null"),
    (lambda d: d.update(model=["tiny"]), "model must be a model's name"),
    (lambda d: d.update(window="2"), "window must be a whole number >= 0"),
    (lambda d: d.update(window=-1), "window must be a whole number >= 0"),
    (lambda d: d.update(settings=[1]), "settings must be an object"),
    (lambda d: d["settings"].update(params="hot"), "settings.params must be an object"),
    (lambda d: d["settings"]["params"].update(temperature="hot"), "settings.params.temperature is wrong"),
    (lambda d: d["settings"]["params"].update(top_k=2.5), "settings.params.top_k is wrong"),
    (lambda d: d["settings"].update(max_new_tokens="many"), "settings.max_new_tokens must be a whole number"),
    (lambda d: d["settings"].update(trim="yes"), "settings.trim must be true or false"),
    (lambda d: d["messages"].append("hello"), "messages[2] must be an object"),
    (lambda d: d["messages"][0].update(content=None), "messages[0].content must be text"),
    (lambda d: d["messages"][1].update(cut="no"), "messages[1].cut must be true or false"),
    (lambda d: d["messages"][1].update(tokens="Tokyo"), "messages[1].tokens must be a list"),
    (lambda d: d["messages"][1]["tokens"].append([5, 0.5]), "messages[1].tokens[2] must be [text, probability]"),
    (lambda d: d["messages"][1]["tokens"][0].__setitem__(1, 7), "messages[1].tokens[0][1] must be a probability"),
    (lambda d: d["messages"][1]["tokens"][0].__setitem__(2, "first"), "messages[1].tokens[0][2] must be a rank"),
    (lambda d: d["messages"][1]["tokens"][0].__setitem__(3, [["Paris"]]), "messages[1].tokens[0][3] must be a list"),
]


@pytest.mark.parametrize(("change", "message"), BAD_TRANSCRIPTS)
def test_a_transcript_with_a_wrong_field_is_one_line_naming_the_file_and_the_field(tmp_path, change, message):
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(_spoiled(change)))
    result = _invoke("chat", "--load", str(path), "--model", "tiny", "-t", "0", "And France?")
    assert result.exit_code == 2 and f"{path}: {message}" in result.output, result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_bad_transcripts_on_load_leave_the_repl_going_and_export_working(tiny, tmp_path):
    keys = f"Japan?{ENTER}"
    for i, (change, _) in enumerate(BAD_TRANSCRIPTS):
        path = tmp_path / f"bad{i}.json"
        path.write_text(json.dumps(_spoiled(change)))
        keys += f"/load {path}{ENTER}"
    good = tmp_path / "good.json"
    good.write_text(json.dumps(GOOD))
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    keys += f"/load {fifo}{ENTER}/load {good}{ENTER}/why{ENTER}/export {tmp_path / 'out.html'}{ENTER}"
    run = chat(tiny, keys, generate_fn=scripted("Tokyo."))
    assert run.code == 0
    for _, message in BAD_TRANSCRIPTS:
        assert message in run.out, message
    assert f"{fifo} is not a file" in run.out
    assert "loaded 2 messages" in run.out and "Paris" in run.out  # /why from the saved runners-up
    assert "Tokyo" in (tmp_path / "out.html").read_text()


# ---- a new user's first run -------------------------------------------------------------------------------

def test_a_result_in_jupyter_is_drawn_once(tiny, monkeypatch):
    import IPython.display
    import rich.console

    import lookinside as li

    shown = []
    monkeypatch.setattr(rich.console, "_is_jupyter", lambda: True)  # as inside a kernel
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: shown.append(a))
    html = li.next_token(tiny, "The capital of France is")._repr_html_()
    assert "Paris" in html and shown == []  # the execute_result only, no display_data beside it


# ---- the Python API: only the package's own errors, one line each ----------------------------------------

@pytest.mark.parametrize("prompt", [123, None, b"The capital of France is", ["The"], 4.5])
@pytest.mark.parametrize("fn", ["next_token", "compare", "generate", "forward", "attention", "lens", "tokens"])
def test_the_api_refuses_a_prompt_of_the_wrong_type_with_its_own_error(tiny, fn, prompt):
    import lookinside as li
    from lookinside.core.errors import LookinsideError

    with pytest.raises(LookinsideError) as caught:
        getattr(li, fn)(tiny, prompt)
    message = str(caught.value)
    assert "\n" not in message and f"{fn}() takes the " in message and "(str)" in message
    if isinstance(prompt, bytes):
        assert "decode" in message


@pytest.mark.parametrize("fn", ["next_token", "compare", "generate", "forward", "attention", "lens", "tokens"])
def test_the_api_refuses_a_string_where_the_model_goes(fn):
    import lookinside as li
    from lookinside.core.errors import LookinsideError

    with pytest.raises(LookinsideError, match=r"takes a model from li.load\(\), li.wrap\(\) or li.connect\(\), not the string 'tiny'"):
        getattr(li, fn)("tiny", "The capital of France is")
    with pytest.raises(LookinsideError, match="takes a model from li.load"):
        getattr(li, fn)(None, "The capital of France is")


@pytest.mark.parametrize("model", [None, 5, b"tiny", "", "   "])
def test_load_refuses_what_is_not_a_model_name(model):
    import lookinside as li
    from lookinside.core.errors import LookinsideError

    with pytest.raises(LookinsideError, match="load\\(\\) takes a model name"):
        li.load(model)


def test_load_takes_a_path_object():
    import lookinside as li
    from lookinside.tiny import ASSETS

    assert li.load(ASSETS, device="cpu").name == str(ASSETS)


def test_a_model_on_the_meta_device_is_refused_in_one_line_and_inspect_still_works():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import lookinside as li
    from lookinside.core.errors import LookinsideError
    from lookinside.tiny import ASSETS

    model = AutoModelForCausalLM.from_pretrained(ASSETS)
    lm = li.wrap(model.to("meta"), AutoTokenizer.from_pretrained(ASSETS))
    for fn in ("next_token", "forward", "lens", "generate", "compare", "attention"):
        with pytest.raises(LookinsideError, match="are on the meta device"):
            getattr(li, fn)(lm, "The capital of France is")
    assert li.inspect(lm).to_dict()  # the architecture needs no values
    assert li.tokens(lm, "hi").to_dict()["tokens"]
    del torch


def test_compare_refuses_an_unknown_sampling_keyword(tiny):
    import lookinside as li
    from lookinside.core.errors import LookinsideError

    with pytest.raises(LookinsideError, match="unknown keyword 'temprature'"):
        li.compare(tiny, "The capital of France is", temprature=0.5)


def test_a_prompt_from_stdin_loses_echos_newline_and_only_that(tmp_path):
    from lookinside.cli.inputs import drop_final_newline

    assert drop_final_newline("The capital of Italy is\n") == "The capital of Italy is"
    assert drop_final_newline("two\n\n") == "two\n" and drop_final_newline("dos\r\n") == "dos"
    assert drop_final_newline("none") == "none"


@pytest.mark.slow
def test_echo_into_generate_answers_as_the_argument_does():
    piped = subprocess.run([sys.executable, "-m", "lookinside", "generate", "-", "--model", "tiny", "-t", "0", "-n", "4"],
                           input=b"The capital of Italy is\n", capture_output=True, env=child_env(), timeout=600, check=False)
    argued = subprocess.run([sys.executable, "-m", "lookinside", "generate", "The capital of Italy is", "--model",
                             "tiny", "-t", "0", "-n", "4"], capture_output=True, env=child_env(), timeout=600, check=False)
    assert piped.returncode == 0 and piped.stdout == argued.stdout and piped.stdout.startswith(b" Rome")


def _started(process: subprocess.Popen, words: int, limit_s: float = 600) -> bytes:
    """Read the process's stdout until `words` words are out (the state we wait for), with a generous limit."""
    import selectors

    seen = b""
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    end = time.monotonic() + limit_s
    while len(seen.split()) < words:
        if time.monotonic() > end or process.poll() is not None:
            raise AssertionError(f"{words} words never came: {seen[-300:]!r}")
        if selector.select(timeout=1):
            seen += os.read(process.stdout.fileno(), 4096)
    return seen


@pytest.mark.slow
def test_ctrl_c_during_generate_keeps_the_text_and_exits_130_with_a_note():
    process = subprocess.Popen([sys.executable, "-m", "lookinside", "generate", "Once upon a time", "--model", "tiny",
                                "-n", "490", "--ignore-eos", "-t", "1", "--seed", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    seen = _started(process, 2)  # the first words are out: generation is under way
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 130
    assert (seen + out).strip() and "error: interrupted after" in err.decode()
    assert "Traceback" not in err.decode()


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.3, 0.6, 1.0, 1.5])
def test_ctrl_c_in_the_first_second_prints_no_traceback(delay):
    process = subprocess.Popen([sys.executable, "-m", "lookinside", "next-token", "hi", "--model", "tiny"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    time.sleep(delay)  # the point is the moment: somewhere in the imports
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=600)
    assert process.returncode in (130, 0), err.decode()  # 0: it had already answered
    assert "Traceback" not in err.decode() and "KeyboardInterrupt" not in err.decode()
