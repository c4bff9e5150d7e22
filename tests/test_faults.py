"""Fault injection with the real thing: broken model directories, odd bytes, closed and full channels, signals.

Every case asserts the exit code, the one-line message, and that no "Traceback" appears
anywhere; the chat cases also that the conversation survives on disk, whole.
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
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lookinside.cli.app import app
from lookinside.core.model.loading import CARRIED_CONFIGS
from lookinside.core.model.spec import DEFAULT_MODEL
from lookinside.tiny import ASSETS

SRC = Path(__file__).resolve().parents[1] / "src"


def child_env() -> dict[str, str]:
    """A child process's environment, read when it starts: after conftest gave the run its own data directory."""
    return {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}


runner = CliRunner()


def llm(*args: str):
    """The command in this process; a traceback would surface as `result.exception`."""
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def child(*args: str | bytes, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, **kwargs) -> subprocess.CompletedProcess:
    """`python -m lookinside ARGS` in a real process."""
    out = subprocess.run([sys.executable, "-m", "lookinside", *args], stdin=stdin, stdout=stdout,
                         stderr=subprocess.PIPE, env=child_env(), timeout=600, **kwargs)
    assert b"Traceback" not in out.stderr and b"Exception ignored" not in out.stderr, out.stderr.decode()
    return out


def broken_copy(tmp_path: Path, name: str) -> Path:
    """A copy of the tiny model to break."""
    path = tmp_path / name
    shutil.copytree(ASSETS, path)
    return path


def rewrite_weights(path: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(path / "model.safetensors")
    change(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


# ---- broken models ----------------------------------------------------------------------------

def test_missing_tensors_are_refused_never_run_on_random_values(tmp_path):
    path = broken_copy(tmp_path, "missing")

    def drop(tensors):
        del tensors["lm_head.weight"], tensors["model.layers.1.mlp.down_proj.weight"]

    rewrite_weights(path, drop)
    result = llm("next-token", "The capital of France is", "--model", str(path))
    assert result.exit_code != 0
    assert "lacks 2 of the model's tensors (lm_head.weight, model.layers.1.mlp.down_proj.weight)" in result.output
    assert "Paris" not in result.output


def test_a_weight_of_the_wrong_shape_is_named(tmp_path):
    import torch

    path = broken_copy(tmp_path, "shape")
    rewrite_weights(path, lambda t: t.update({"model.layers.0.mlp.down_proj.weight": torch.zeros(128, 7)}))
    result = llm("next-token", "hi", "--model", str(path))
    assert result.exit_code != 0
    assert "model.layers.0.mlp.down_proj.weight (128x7 in the file, 128x384 in the model)" in result.output


def test_a_null_config_field_names_config_json_and_the_field(tmp_path):
    path = broken_copy(tmp_path, "nullcfg")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "hidden_size": None}))
    result = llm("next-token", "hi", "--model", str(path))
    assert result.exit_code != 0
    assert "config.json" in result.output and "'hidden_size'" in result.output


def test_a_tokenizer_larger_than_the_embedding_is_refused(tmp_path):
    path = broken_copy(tmp_path, "vocab")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(CARRIED_CONFIGS[DEFAULT_MODEL] / name, path / name)  # Phi-3's 32,011 tokens, tiny's 1,024 rows
    result = llm("next-token", "hi", "--model", str(path))
    assert result.exit_code != 0
    assert "32,011 tokens but the model's embedding only 1,024 rows" in result.output


def test_a_chat_template_that_raises_is_one_line(tmp_path):
    path = broken_copy(tmp_path, "template")
    (path / "chat_template.jinja").write_text("{{ raise_exception('this template is broken') }}")
    result = llm("next-token", "hi", "--chat", "--model", str(path))
    assert result.exit_code != 0
    assert "chat template failed to render" in result.output and "this template is broken" in result.output
    assert llm("next-token", "hi", "--model", str(path)).exit_code == 0  # without --chat the template is not needed


# ---- flags whose range depends on the model, or on nothing ----------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (("next-token", "hi", "-t", "inf"), "--temperature must be >= 0 and finite"),
    (("next-token", "hi", "-t", "nan"), "--temperature must be >= 0 and finite"),
    (("lens", "hi", "--top-k", "2000"), "--top-k 2000 is more than this model's vocabulary of 1,024 tokens"),
    (("next-token", "hi", "--top-k", "5000"), "--top-k 5000 is more than this model's vocabulary of 1,024 tokens"),
    (("next-token", "hi", "--attn", "flash_attention_2"), "pip install flash-attn"),
    (("next-token", "hi", "--threads", "0"), "--threads must be a whole number >= 1"),
])
def test_bad_flags_are_one_line(args, message):
    result = llm(*args, "--model", "tiny")
    assert result.exit_code != 0 and message in result.output


# ---- bytes -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_invalid_utf8_in_an_argument_is_replaced_with_a_warning():
    out = child(b"next-token", b"The capital of \xff\xfe France is", b"--model", b"tiny", b"--json")
    assert out.returncode == 0
    assert b"warning: the argument is not valid UTF-8" in out.stderr
    assert "\ufffd" in json.loads(out.stdout)["prompt"]


@pytest.mark.slow
def test_invalid_utf8_on_chats_stdin_is_replaced_with_a_warning():
    out = child("chat", "--model", "tiny", "--temperature", "0", stdin=None, input=b"What is the capital of Japan?\xff")
    assert out.returncode == 0 and b"Tokyo" in out.stdout
    assert b"warning: standard input is not valid UTF-8" in out.stderr


@pytest.mark.slow
def test_a_binary_prompt_on_stdin_is_refused(tmp_path):
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x00\x01\x02 not text")
    with binary.open("rb") as stdin:
        out = child("tokens", "-", "--model", "tiny", stdin=stdin)
    assert out.returncode == 2 and b"looks binary" in out.stderr


@pytest.mark.slow
def test_an_empty_stdin_prompt_is_the_empty_prompt_error():
    out = child("next-token", "-", "--model", "tiny")
    assert out.returncode != 0 and b"the prompt is empty" in out.stderr


# ---- channels --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_closed_stdout_is_one_line_and_an_error_exit():
    out = child("next-token", "hi", "--model", "tiny", stdout=subprocess.DEVNULL, pass_fds=(),
                preexec_fn=lambda: os.close(1))
    assert out.returncode == 74 and b"standard output is closed" in out.stderr


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_an_error_exit():
    with open("/dev/full", "wb") as full:
        out = child("next-token", "hi", "--model", "tiny", stdout=full)
    assert out.returncode == 74 and b"cannot write the output: the disk is full" in out.stderr


@pytest.mark.slow
def test_a_closed_stdin_in_chat_is_one_line():
    out = child("chat", "--model", "tiny", stdin=None, preexec_fn=lambda: os.close(0))
    assert out.returncode != 0 and b"standard input is closed" in out.stderr


@pytest.mark.slow
def test_a_pipe_closed_early_exits_quietly():
    process = subprocess.Popen([sys.executable, "-m", "lookinside", "tokens", "word " * 2000, "--model", "tiny"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    process.stdout.read(10)  # like `| head -c 10`
    process.stdout.close()
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0 and b"Traceback" not in err and b"Exception ignored" not in err


# ---- signals ---------------------------------------------------------------------------------------

def _reached(pid: int, stage: str, limit_s: float = 600) -> None:
    """Wait until the process is in `stage`, read from what it has mapped (Linux), not guessed from the clock:
    "load" once torch's library is in (the model is being loaded), "run" once the weights are (it generates)."""
    needle = {"load": "libtorch", "run": "model.safetensors"}[stage]
    maps = Path(f"/proc/{pid}/maps")
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        try:
            if needle in maps.read_text():
                return
        except FileNotFoundError:
            return  # not Linux, or it has exited: the exit code says the rest
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the process never reached {stage!r} in {limit_s:.0f} s")


@pytest.mark.parametrize("stage", ["load", "run"])
@pytest.mark.slow
def test_two_quick_ctrl_cs_exit_130_quietly(stage):
    process = subprocess.Popen([sys.executable, "-m", "lookinside", "bench", "--model", "tiny", "-n", "300"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    _reached(process.pid, stage)  # during the load, then during generation, however slow the machine
    process.send_signal(signal.SIGINT)
    time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=600)  # a hang, not a slow box
    assert process.returncode == 130
    assert err.decode().strip().splitlines()[-1] == "error: interrupted"
    assert "Traceback" not in err.decode() and "Exception ignored" not in err.decode()


# ---- the chat in a real terminal -------------------------------------------------------------------

def _pane(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-J", "-S", "-", "-t", session], check=False,
                          capture_output=True, text=True).stdout


def _wait_for(session: str, pattern: str, deadline_s: float = 300) -> str:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if re.search(pattern, pane := _pane(session)):
            return pane
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} never appeared:\n{_pane(session)}")


def _type(session: str, text: str) -> None:
    subprocess.run(["tmux", "send-keys", "-t", session, "-l", text], check=True)
    subprocess.run(["tmux", "send-keys", "-t", session, "Enter"], check=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.slow
def test_chat_survives_unwritable_saves_and_sigterm_saves_the_conversation(tmp_path):
    data, readonly, afile = tmp_path / "data", tmp_path / "readonly", tmp_path / "a-file"
    readonly.mkdir()
    readonly.chmod(0o555)
    afile.write_text("x")
    session = f"llm-faults-{uuid.uuid4().hex[:8]}"
    command = (f"LOOKINSIDE_DATA_DIR={data} PYTHONPATH={SRC} {sys.executable} -m lookinside chat --model tiny"
               f" --temperature 0 --no-history; echo EXITED=$?; sleep 30")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "50", command], check=True)
    try:
        _wait_for(session, r"(?m)^>>>")
        _type(session, "/tokens")  # an empty conversation
        _wait_for(session, r"0/512 tokens \(0%\)")
        _type(session, "What is the capital of Japan?")
        _wait_for(session, r"generated tokens")
        cases = {
            "/save /proc/nope/chat.json": r"cannot write /proc/nope/chat.json",
            "/save /proc/chat.json": r"cannot write /proc/chat.json: .*nothing was written",
            f"/save {readonly}/chat.json": r"cannot write .*readonly/chat.json: Permission denied"
            if os.geteuid() != 0 else r"(cannot write|saved 2 messages).*readonly/chat.json",
            f"/save {tmp_path}": r"it is a directory",
            f"/save {afile}/chat.json": r"a-file is a file, not a directory",
            f"/save {tmp_path}/missing/chat.json": r"there is no directory .*missing",
            f"/export {tmp_path}/missing/chat.md": r"there is no directory .*missing",
            "/set max_new_tokens 100000": r"max_new_tokens must be below the context of 512",
        }
        for line, pattern in cases.items():
            _type(session, line)
            _wait_for(session, pattern)
        assert not (tmp_path / "missing").exists()
        _type(session, f"/save -p {tmp_path}/made/chat.json")
        _wait_for(session, r"saved 2 messages.*made/chat.json")
        assert json.loads((tmp_path / "made" / "chat.json").read_text())["messages"][0]["content"] == (
            "What is the capital of Japan?")
        _type(session, "Remember this line, please.")
        _wait_for(session, r"(?s)Remember this line.*generated tokens.*>>>")
        # This terminal's chat, the child of its shell (a machine-wide pgrep would find other runs' chats too).
        shell = subprocess.run(["tmux", "display-message", "-p", "-t", session, "#{pane_pid}"],
                               capture_output=True, text=True, check=True).stdout.strip()
        pids = subprocess.run(["pgrep", "-P", shell, "-f", "lookinside chat"], capture_output=True, text=True,
                              check=False).stdout.split()
        assert len(pids) == 1, pids
        os.kill(int(pids[0]), signal.SIGTERM)
        pane = _wait_for(session, r"EXITED=\d+")
        assert "EXITED=143" in pane and "Traceback" not in pane
        (rescued,) = (data / "chats").glob("rescued-*.json")
        saved = json.loads(rescued.read_text())
        assert [m["content"] for m in saved["messages"] if m["role"] == "user"] == [
            "What is the capital of Japan?", "Remember this line, please."]
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)
        readonly.chmod(0o755)
