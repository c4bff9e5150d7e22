"""`llm chat`: the REPL driven through prompt_toolkit's pipe input, the stream printer, piped mode, tmux."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from prompt_toolkit.document import Document
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console
from rich.text import Text
from typer.testing import CliRunner

from lookinside.cli.app import app
from lookinside.core.chat.conversation import Conversation
from lookinside.core.chat.defaults import ChatSettings
from lookinside.core.sampling_params import SamplingParams
from lookinside.ui.repl import CUT_NOTE, LEAVE_HINT, ChatRepl, SlashCompleter, make_session
from lookinside.ui.stream import StreamPrinter, Tail, split_finished

SRC = Path(__file__).resolve().parents[1] / "src"
ENTER, ESC_ENTER, CTRL_C, CTRL_D, UP = "\r", "\x1b\r", "\x03", "\x04", "\x1b[A"
STATS = re.compile(r"\d+ prompt \+ \d+ generated tokens · TTFT \d+ ms( · [\d.]+ tok/s)? · context \d+/512( · \d CPU threads?)?")


@dataclass
class Run:
    out: str
    repl: ChatRepl
    code: int

    @property
    def messages(self) -> list[dict]:
        return self.repl.conversation.messages


def greedy_chat(system: str | None = None, max_new_tokens: int = 40, **settings) -> Conversation:
    return Conversation(system=system, settings=ChatSettings(params=SamplingParams(temperature=0),
                                                             max_new_tokens=max_new_tokens, **settings))


def chat(lm, keys: str, conversation: Conversation | None = None, generate_fn=None, mode="plain", stats=False,
         console: Console | None = None, keep_history: bool = False) -> Run:
    """Type `keys` into a REPL on `lm`; what it printed (no prompt echo: the output is a DummyOutput)."""
    console = console or Console(file=io.StringIO(), width=100, highlight=False)
    with create_pipe_input() as pipe:
        pipe.send_text(keys)
        pipe.close()  # the pipe runs dry after the keys: EOF, as Ctrl-D gives
        session = make_session(keep_history=keep_history, input=pipe, output=DummyOutput())
        repl = ChatRepl(lm, conversation or greedy_chat(), console, session, mode, generate_fn)
        repl.show_stats = stats
        code = repl.run()
    return Run(console.file.getvalue(), repl, code)


def scripted(*replies: str):
    """A stand-in for `generate` that answers with these texts in turn, as real tokens of the tiny tokenizer."""
    from lookinside.core.decoding.detokenize import IncrementalDecoder
    from lookinside.core.decoding.generate import Step

    queue = list(replies)

    def fake(lm, ids, params, config):
        fake.prompts.append(lm.tokenizer.decode(ids))
        token_ids = lm.tokenizer(queue.pop(0), add_special_tokens=False).input_ids
        decoder = IncrementalDecoder(lm.tokenizer)
        for i, token in enumerate(token_ids):
            yield Step(index=i, token_id=token, text=decoder.push(token), prob=0.9, rank=1, top=((token, 0.9),),
                       seconds=0.01, finish="eos" if i == len(token_ids) - 1 else None)

    fake.prompts = []
    return fake


def interrupted_after(n: int):
    """The real `generate`, but the first reply raises KeyboardInterrupt after `n` steps (as Ctrl-C does)."""
    from lookinside.core.decoding.generate import generate

    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        for i, step in enumerate(generate(*args, **kwargs)):
            if len(calls) == 1 and i == n:
                raise KeyboardInterrupt
            yield step

    return wrapped


# ---- several turns, whole transcripts


def test_turns_and_system_prompt_whole_transcript(tiny):
    fake = scripted("Hello there.", "I am fine.")
    run = chat(tiny, f"Hi{ENTER}/system Be brief.{ENTER}And you?{ENTER}/exit{ENTER}", generate_fn=fake)
    assert run.out == "Hello there.\nsystem prompt set; it applies from the next reply\nI am fine.\n"
    assert run.code == 0
    texts = [{k: v for k, v in m.items() if k != "tokens"} for m in run.messages]
    assert texts == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."},
                     {"role": "user", "content": "And you?"}, {"role": "assistant", "content": "I am fine."}]
    # kept for /export and for /why after a reload: text, probability, rank, runners-up, the token itself
    assert run.messages[1]["tokens"] == [["Hello", 0.9, 1, [], " Hello"], [" the", 0.9, 1, [], " the"],
                                         ["re", 0.9, 1, [], "re"], [".", 0.9, 1, [], "."]]
    assert "<|system|>" not in fake.prompts[0]
    assert fake.prompts[1].startswith("<|system|> Be brief.<|end|><|user|> Hi<|end|><|assistant|> Hello there.")


def test_the_tiny_model_answers_over_several_turns(tiny):
    run = chat(tiny, f"What is the capital of Japan?{ENTER}What is the capital of France?{ENTER}", stats=True)
    replies = [m["content"] for m in run.messages if m["role"] == "assistant"]
    assert "Tokyo" in replies[0] and "Paris" in replies[1]
    lines = run.out.splitlines()
    assert lines[0] == replies[0] and STATS.fullmatch(lines[1]) and lines[2] == replies[1] and STATS.fullmatch(lines[3])
    assert run.code == 0  # the pipe ran dry: EOF, like Ctrl-D


def test_the_reply_is_rendered_as_markdown_when_not_plain(tiny):
    fake = scripted("Here is **bold** and a list:\n\n- one\n- two")
    run = chat(tiny, f"Show me{ENTER}", generate_fn=fake, mode="markdown")
    assert run.out == "Here is bold and a list:\n\n • one\n • two\n"
    assert run.messages[-1]["content"] == "Here is **bold** and a list:\n\n- one\n- two"


# ---- keys


def test_ctrl_c_at_an_empty_prompt_says_how_to_leave_and_ctrl_d_leaves(tiny):
    run = chat(tiny, f"{CTRL_C}half a line{CTRL_C}{CTRL_D}")
    assert run.out == f"{LEAVE_HINT}\n"  # the second Ctrl-C only cleared the typed text
    assert run.code == 0 and run.messages == []


def test_multiline_input_esc_enter_paste_and_triple_quotes(tiny):
    fake = scripted("one", "two", "three", "four")
    keys = (f"first line{ESC_ENTER}second line{ENTER}"
            f"\x1b[200~pasted one\npasted two\x1b[201~{ENTER}"
            f'"""{ENTER}quoted one{ENTER}quoted two{ENTER}"""{ENTER}'
            f'"""inline"""{ENTER}')
    run = chat(tiny, keys, generate_fn=fake)
    users = [m["content"] for m in run.messages if m["role"] == "user"]
    assert users == ["first line\nsecond line", "pasted one\npasted two", "quoted one\nquoted two", "inline"]
    history = run.repl.session.history.get_strings()
    assert history[2] == '"""\nquoted one\nquoted two\n"""'  # a block is one history entry


def test_history_is_kept_across_sessions_and_up_recalls_it(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    chat(tiny, f"What is the capital of Japan?{ENTER}", generate_fn=scripted("Tokyo."), keep_history=True)
    assert "What is the capital of Japan?" in (tmp_path / "chat_history").read_text()
    session = make_session(keep_history=True, input=None, output=DummyOutput())
    assert list(session.history.load_history_strings()) == ["What is the capital of Japan?"]
    run = chat(tiny, f"{UP}{ENTER}", generate_fn=scripted("Tokyo again."), keep_history=True)
    assert run.messages[0]["content"] == "What is the capital of Japan?"


def test_no_history_writes_nothing(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    assert isinstance(make_session(keep_history=False, output=DummyOutput()).history, InMemoryHistory)
    chat(tiny, f"secret{ENTER}", generate_fn=scripted("ok"), keep_history=False)
    assert not (tmp_path / "chat_history").exists()


def test_slash_commands_complete_at_the_start_of_the_input():
    def names(text):
        return [c.text for c in SlashCompleter().get_completions(Document(text), None)]

    assert names("/s") == ["/system", "/set", "/show", "/save", "/stats", "/steer"]
    assert names("/ex") == ["/export", "/exit"]
    assert names("hello /s") == [] and names("/set t") == []


# ---- Ctrl-C during a reply


def test_an_interrupt_mid_reply_keeps_the_partial_reply_and_the_session(tiny):
    run = chat(tiny, f"What is the capital of Japan?{ENTER}What is the capital of France?{ENTER}/exit{ENTER}",
               generate_fn=interrupted_after(3))
    cut = {k: v for k, v in run.messages[1].items() if k != "tokens"}
    assert cut == {"role": "assistant", "content": "The capital of", "cut": True}
    assert "".join(text for text, *_ in run.messages[1]["tokens"]).strip() == "The capital of"
    assert run.out.startswith(f"The capital of\n{CUT_NOTE}\n")
    assert "Paris" in run.messages[3]["content"] and run.code == 0
    assert run.repl.session.history.get_strings() == ["What is the capital of Japan?",
                                                      "What is the capital of France?", "/exit"]


def test_continue_finishes_a_cut_reply(tiny):
    run = chat(tiny, f"/set max_new_tokens 3{ENTER}What is the capital of Japan?{ENTER}"
                     f"/set max_new_tokens 40{ENTER}/continue{ENTER}/continue{ENTER}")
    assert run.messages[-1]["content"] == "The capital of Japan is Tokyo."
    assert run.out.splitlines()[-1] == "the reply had already ended: the model's next token is its end token"
    assert len(run.repl.last_steps) == 3 + 5 + 1  # /why covers the whole reply


# ---- each slash command


def test_help_lists_every_command(tiny):
    from lookinside.ui.repl import COMMANDS

    run = chat(tiny, f"/help{ENTER}")
    for usage, _ in COMMANDS.values():
        assert usage in run.out
    assert "Esc Enter / Alt-Enter" in run.out and "Ctrl-R" in run.out


def test_clear_undo_retry(tiny):
    fake = scripted("A one.", "B two.", "C three.", "D four.")
    run = chat(tiny, f"one{ENTER}two{ENTER}/undo{ENTER}/retry{ENTER}/clear{ENTER}/undo{ENTER}/retry{ENTER}",
               conversation=greedy_chat(system="S"), generate_fn=fake)
    assert run.out == ("A one.\nB two.\ntook back 2 messages\nC three.\ncleared 2 messages; the system prompt stays\n"
                       "nothing to undo\nnothing to retry: /retry answers the last message again once it has a reply\n")
    assert run.messages == [] and run.repl.conversation.system == "S"
    assert fake.prompts[2] == fake.prompts[0]  # /retry asked the same question again


def test_retry_with_a_fixed_seed_says_so(tiny):
    conversation = Conversation(settings=ChatSettings(params=SamplingParams(temperature=0.7, seed=11)))
    run = chat(tiny, f"hi{ENTER}/retry{ENTER}", conversation=conversation, generate_fn=scripted("a", "b"), stats=True)
    assert "the seed is fixed at 11: /set seed none for a new answer" in run.out
    assert run.out.count("· seed 11\n") == 2  # both replies used it, and the stats line says so


def test_system_shows_sets_and_removes(tiny):
    run = chat(tiny, f"/system{ENTER}/system You are a pirate.{ENTER}/system{ENTER}/system none{ENTER}/system{ENTER}")
    assert run.out == ("no system prompt\nsystem prompt set; it applies from the next reply\n"
                       "system prompt: You are a pirate.\nsystem prompt removed\nno system prompt\n")


USAGE = ("usage: /set NAME VALUE, NAME one of temperature, top_k, top_p, min_p, seed, repetition_penalty, "
         "max_new_tokens  (now: temperature=0.5, top_k=40, seed=3, max_new_tokens=40)")


def test_set_changes_settings_and_refuses_bad_values_in_one_line(tiny):
    run = chat(tiny, f"/set temperature 0.5{ENTER}/set top_k 40{ENTER}/set seed 3{ENTER}/set temperature hot{ENTER}"
                     f"/set top_p 2{ENTER}/set{ENTER}/set colour blue{ENTER}/set min_p{ENTER}")
    assert run.out.splitlines() == [
        "temperature set: temperature=0.5, max_new_tokens=40",
        "top_k set: temperature=0.5, top_k=40, max_new_tokens=40",
        "seed set: temperature=0.5, top_k=40, seed=3, max_new_tokens=40",
        "temperature takes a number, not 'hot'",
        "top_p must be in (0, 1] (1 turns it off), not 2",
        USAGE,
        "unknown setting 'colour': one of temperature, top_k, top_p, min_p, seed, repetition_penalty, max_new_tokens",
        USAGE,
    ]
    assert run.repl.conversation.settings.params == SamplingParams(temperature=0.5, top_k=40, seed=3)


def test_unknown_and_malformed_commands_get_one_line(tiny):
    run = chat(tiny, f"/bogus{ENTER}/hlep{ENTER}/load{ENTER}/export{ENTER}/export notes.txt{ENTER}"
                     f"/continue{ENTER}/why{ENTER}/load /nonexistent/x.json{ENTER}")
    assert run.out.splitlines() == [
        "unknown command /bogus; /help lists the commands",
        "unknown command /hlep; did you mean /help?",
        "usage: /load PATH (a transcript written by /save)",
        "usage: /export [-p] PATH.md|PATH.html|PATH.svg",
        "export to a markdown file: notes.txt should end in .md (or .html or .svg for a picture with each token "
        "coloured)",
        "nothing to continue: /continue goes on from the last reply",
        "no reply to explain yet: /why looks at the last reply",
        "no transcript at /nonexistent/x.json",
    ]


def test_show_names_the_model_and_its_settings(tiny):
    run = chat(tiny, f"/show{ENTER}", conversation=greedy_chat(system="Be brief."))
    for fact in ("model", "tiny", "parameters", "dtype           float32", "device          cpu",
                 "context length  512 tokens", "<|end|>", "<|endoftext|>", "sampling        greedy",
                 "max_new_tokens  40", "system prompt   Be brief.", "chat template", "add_generation_prompt"):
        assert fact in run.out, fact


def test_tokens_meter_counts_the_templated_conversation(tiny):
    from lookinside.core.chat.conversation import count_tokens

    run = chat(tiny, f"What is the capital of Japan?{ENTER}/tokens{ENTER}")
    used = count_tokens(tiny.tokenizer, run.repl.conversation)
    assert f" {used}/512 tokens ({used / 512:.0%}); the next reply may add up to 40" in run.out.splitlines()[-1]


def test_stats_are_on_by_default_and_toggle(tiny):
    run = chat(tiny, f"What is the capital of Japan?{ENTER}/stats{ENTER}What is the capital of Japan?{ENTER}"
                     f"/stats{ENTER}", stats=True)
    lines = run.out.splitlines()
    assert "Tokyo" in lines[0] and STATS.fullmatch(lines[1])
    assert lines[2] == "per-reply stats off" and "Tokyo" in lines[3] and lines[4] == "per-reply stats on"
    assert not any(STATS.fullmatch(line) for line in lines[2:])


def test_probs_colours_each_token_by_its_probability(tiny):
    console = Console(file=io.StringIO(), width=100, force_terminal=True, color_system="standard")
    fake = scripted("Tokyo.")
    run = chat(tiny, f"/probs{ENTER}hi{ENTER}", generate_fn=fake, mode="markdown", console=console)
    assert "token probability colours on" in run.out
    assert "\x1b[32mTokyo" in run.out  # prob 0.9: green


def test_why_lists_each_position_with_alternatives(tiny):
    console = Console(file=io.StringIO(), width=140, highlight=False)  # wide enough for one line a row
    run = chat(tiny, f"What is the capital of Japan?{ENTER}/why{ENTER}", console=console)
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in run.out.splitlines() if line.startswith("│")]
    assert len(rows) == len(run.repl.last_steps)
    tokyo = next(row for row in rows if row[1] == "␣Tokyo")
    assert float(tokyo[2]) > 0.9 and tokyo[3] == "1"
    assert "Tokyo" not in tokyo[4] and len(tokyo[4].split("  ")) == 4  # four other candidates, not the chosen one
    assert rows[-1][1] == "<|end|>"


def test_probabilities_stay_readable_when_tiny():
    from lookinside.ui.chat_views import probability

    assert [probability(p) for p in (0.9974, 0.042, 0.001, 3.14e-5)] == ["0.997", "0.042", "0.001", "3.1e-05"]


def test_save_load_round_trip_through_the_repl(tiny, tmp_path):
    path = tmp_path / "chat.json"
    fake = scripted("Tokyo.", "Paris.")
    run = chat(tiny, f"Japan?{ENTER}/set temperature 0.3{ENTER}/save {path}{ENTER}/clear{ENTER}"
                     f"/load {path}{ENTER}France?{ENTER}", generate_fn=fake)
    assert run.out.splitlines()[2:] == [
        f"saved 2 messages and the settings to {path}",
        "cleared 2 messages",
        f"loaded 2 messages and the settings from {path}",
        "user: Japan?",
        "assistant: Tokyo.",
        "Paris.",
    ]
    assert [m["content"] for m in run.messages] == ["Japan?", "Tokyo.", "France?", "Paris."]
    assert run.repl.conversation.settings.params.temperature == 0.3
    assert "<|user|> Japan?<|end|><|assistant|> Tokyo.<|end|><|user|> France?" in fake.prompts[1]


def test_save_without_a_path_goes_to_the_data_directory(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    run = chat(tiny, f"hi{ENTER}/save{ENTER}", generate_fn=scripted("hello"))
    saved = list((tmp_path / "chats").glob("chat-*.json"))
    assert len(saved) == 1 and f"to {saved[0]}" in run.out


def test_export_writes_markdown(tiny, tmp_path):
    run = chat(tiny, f"Japan?{ENTER}/export {tmp_path / 'chat.md'}{ENTER}", generate_fn=scripted("Tokyo."))
    assert run.out.splitlines()[-1] == f"exported 2 messages to {tmp_path / 'chat.md'}"
    assert "## User\n\nJapan?\n\n## Assistant\n\nTokyo.\n" in (tmp_path / "chat.md").read_text()


def test_edit_sends_what_the_editor_wrote(tiny, tmp_path, monkeypatch):
    editor = tmp_path / "editor.py"
    editor.write_text("import sys\nopen(sys.argv[1], 'a').write('What is the capital of Japan?')\n")
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    run = chat(tiny, f"/edit{ENTER}")
    assert run.out.splitlines()[0] == ">>> What is the capital of Japan?"
    assert "Tokyo" in run.messages[-1]["content"]
    monkeypatch.setenv("EDITOR", "/no/such/editor")
    run = chat(tiny, f"/edit{ENTER}")
    assert run.out.startswith("could not start the editor '/no/such/editor'")


# ---- context


def test_trimming_is_announced(tiny):
    conversation = greedy_chat(system="Answer briefly.", max_new_tokens=40)
    for i in range(20):
        conversation.add("user", f"Question {i}: tell me about the capital of France and its long history.")
        conversation.add("assistant", f"Answer {i}: the capital of France is Paris, a very old city on the Seine.")
    run = chat(tiny, f"What is the capital of Japan?{ENTER}/tokens{ENTER}", conversation=conversation)
    notice, reply, meter = run.out.splitlines()
    assert re.fullmatch(r"context: dropped the oldest \d+ messages \(\d+ tokens\) to fit 512; "
                        r"the system prompt is kept \(they stay in /save\)", notice)
    assert reply and re.search(r" (\d+)/512 tokens .*; (\d+) older messages no longer sent \(dropped to fit\)$", meter)
    assert run.repl.conversation.as_messages()[0] == {"role": "system", "content": "Answer briefly."}
    assert len(run.messages) == 42


def test_no_trim_refuses_and_keeps_the_conversation(tiny):
    conversation = greedy_chat(max_new_tokens=40, trim=False)
    for i in range(20):
        conversation.add("user", f"Question {i}: tell me about the capital of France and its long history.")
        conversation.add("assistant", f"Answer {i}: the capital of France is Paris, a very old city on the Seine.")
    run = chat(tiny, f"What is the capital of Japan?{ENTER}", conversation=conversation)
    assert re.fullmatch(r"the conversation is \d+ tokens \+ 40 new, more than the context of 512; "
                        r"trimming is off \(--no-trim\): try /undo, /clear or /set max_new_tokens\n", run.out)
    assert len(run.messages) == 40  # the refused message was not kept


# ---- the stream printer


def test_split_finished_never_cuts_inside_a_code_fence():
    assert split_finished("a\n\nb") == ("a\n\n", "b")
    assert split_finished("a\n\n```\nx\n\ny") == ("a\n\n", "```\nx\n\ny")
    assert split_finished("```\nx\n\ny\n```\n\nz") == ("```\nx\n\ny\n```\n\n", "z")
    assert split_finished("no break yet") == ("", "no break yet")


def test_markdown_stream_prints_each_line_once():
    console = Console(file=io.StringIO(), width=60)
    printer = StreamPrinter(console)
    reply = " First paragraph here.\n\nSecond one, longer.\n\n```python\nx = 1\n\ny = 2\n```\n\nLast words"
    for piece in re.findall(r"\s*\S+|\s+", reply):
        printer.push(piece)
    assert printer.close() == reply.lstrip()
    lines = [line for line in console.file.getvalue().splitlines() if line.strip()]
    assert [line.strip() for line in lines] == ["First paragraph here.", "Second one, longer.", "x = 1", "y = 2",
                                                "Last words"]


def test_the_live_tail_shows_the_bottom_of_a_long_block():
    console = Console(file=io.StringIO(), width=40)
    console.print(Tail(Text("\n".join(f"line {i}" for i in range(50))), height=4))
    assert console.file.getvalue() == "line 46\nline 47\nline 48\nline 49\n"


def test_plain_stream_writes_raw_text_without_the_leading_space():
    console = Console(file=io.StringIO(), width=60)
    printer = StreamPrinter(console, "plain")
    for piece in (" The", " **capital**", ""):
        printer.push(piece)
    printer.close(CUT_NOTE)
    assert console.file.getvalue() == f"The **capital**\n{CUT_NOTE}\n"


# ---- piped stdin (no terminal)


def test_piped_stdin_is_one_message_and_the_reply_is_plain(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["chat", "--model", "tiny"], input="What is the capital of Japan?\n")
    assert result.exit_code == 0, result.stderr
    assert "Tokyo" in result.stdout and result.stdout.endswith("\n") and "\x1b" not in result.stdout
    assert len(result.stdout.splitlines()) == 1 and result.stderr == ""
    assert not (tmp_path / "chat_history").exists()


def test_empty_stdin_exits_quietly():
    result = CliRunner().invoke(app, ["chat", "--model", "tiny"], input="  \n")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


def test_bad_sampling_flags_are_one_line_errors():
    result = CliRunner().invoke(app, ["chat", "--model", "tiny", "--top-p", "0"], input="hi\n")
    assert result.exit_code == 2 and result.stderr.strip() == "error: top_p must be in (0, 1] (1 turns it off), not 0"


def test_no_trim_refuses_a_piped_message_that_does_not_fit():
    result = CliRunner().invoke(app, ["chat", "--model", "tiny", "--no-trim"], input="Paris " * 400)
    assert result.exit_code == 2 and "+ 256 new, more than the context of 512" in " ".join(result.stderr.split())


# ---- a real terminal


def _pane(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], check=False, capture_output=True,
                          text=True).stdout


def _wait_for(session: str, pattern: str, deadline_s: float = 300) -> str:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        pane = _pane(session)
        if re.search(pattern, pane):
            return pane
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} never appeared:\n{_pane(session)}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.slow
def test_end_to_end_in_a_real_terminal(tmp_path):
    session = f"llm-chat-{uuid.uuid4().hex[:8]}"
    command = (f"LOOKINSIDE_DATA_DIR={tmp_path} PYTHONPATH={SRC} {sys.executable} -m lookinside chat --model tiny"
               f" --temperature 0; echo EXITED=$?; sleep 30")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "110", "-y", "45", command], check=True)
    try:
        _wait_for(session, r"(?m)^>>>")
        subprocess.run(["tmux", "send-keys", "-t", session, "What is the capital of Japan?", "Enter"], check=True)
        pane = _wait_for(session, r"generated tokens")
        assert pane.count("Tokyo") == 1  # streamed live, printed once: no stale copy in the scrollback
        subprocess.run(["tmux", "send-keys", "-t", session, "/why", "Enter"], check=True)
        pane = _wait_for(session, r"other candidates")
        assert "␣Tokyo" in pane
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True)
        _wait_for(session, re.escape(LEAVE_HINT))
        subprocess.run(["tmux", "send-keys", "-t", session, "/exit", "Enter"], check=True)
        _wait_for(session, r"EXITED=0")
        assert "What is the capital of Japan?" in (tmp_path / "chat_history").read_text()
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)


STREAM_SCRIPT = """
from lookinside.ui.console import stdout_console
from lookinside.ui.stream import StreamPrinter
printer = StreamPrinter(stdout_console())
text = " Intro.\\n\\n" + "\\n".join(f"- item {i:02d} of a long list" for i in range(60)) + "\\n\\nDone."
for i in range(0, len(text), 7):
    printer.push(text[i : i + 7])
printer.close()
print("END")
"""


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.slow
def test_a_reply_taller_than_the_terminal_lands_in_the_scrollback_once(tmp_path):
    script = tmp_path / "stream.py"
    script.write_text(STREAM_SCRIPT)
    session = f"llm-stream-{uuid.uuid4().hex[:8]}"
    command = f"PYTHONPATH={SRC} {sys.executable} {script}; sleep 30"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "20", command], check=True)
    try:
        _wait_for(session, r"(?m)^END")
        scrollback = subprocess.run(["tmux", "capture-pane", "-p", "-S", "-", "-t", session],
                                    check=False, capture_output=True, text=True).stdout
        for i in range(60):
            assert scrollback.count(f"item {i:02d} of a long list") == 1, i
        assert scrollback.count("Intro.") == 1 and scrollback.count("Done.") == 1
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.slow
def test_redirected_stdout_gets_plain_replies_and_the_prompt_stays_on_the_terminal(tmp_path):
    session = f"llm-redirect-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out.txt"
    command = (f"LOOKINSIDE_DATA_DIR={tmp_path} PYTHONPATH={SRC} {sys.executable} -m lookinside chat --model tiny"
               f" --temperature 0 > {out}; echo EXITED=$?; sleep 30")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", command], check=True)
    try:
        _wait_for(session, r"(?m)^>>>")
        subprocess.run(["tmux", "send-keys", "-t", session, "What is the capital of Japan?", "Enter"], check=True)
        _wait_for(session, r"(?m)^>>> What is the capital of Japan\?\n>>>")
        subprocess.run(["tmux", "send-keys", "-t", session, "/exit", "Enter"], check=True)
        _wait_for(session, r"EXITED=0")
        text = out.read_text()
        assert "Tokyo" in text and STATS.search(text) and "\x1b" not in text and ">>>" not in text
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)


def test_a_failed_reply_does_not_leave_an_unanswered_message(tiny):
    class OutOfMemoryError(RuntimeError):
        pass

    def broken(*args, **kwargs):
        raise OutOfMemoryError("CUDA out of memory")
        yield

    run = chat(tiny, f"hi{ENTER}", generate_fn=broken)
    assert run.out == ("out of memory: try /set max_new_tokens lower, /clear, or a smaller --dtype; "
                       "the session goes on\n")
    assert run.messages == [] and run.code == 0


def test_tokens_on_an_empty_conversation_is_zero_not_an_error(tiny):
    run = chat(tiny, f"/tokens{ENTER}/system none{ENTER}/tokens{ENTER}")
    lines = [line.strip() for line in run.out.splitlines()]
    assert lines[0].startswith("0/512 tokens (0%)") and lines[2].startswith("0/512 tokens (0%)")
    assert run.code == 0


def test_an_unexpected_error_saves_the_conversation_first(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    answers = scripted("Tokyo.")

    def breaks_on_the_second(lm, ids, params, config):
        if answers.prompts:
            raise RuntimeError("a bug in the middle of a reply")
        yield from answers(lm, ids, params, config)

    answers.prompts = []
    run = chat(tiny, f"What is the capital of Japan?{ENTER}And of France?{ENTER}", generate_fn=breaks_on_the_second)
    assert run.code == 1
    (saved,) = (tmp_path / "chats").glob("rescued-*.json")
    assert "unexpected error: RuntimeError: a bug in the middle of a reply" in run.out and str(saved) in run.out
    messages = json.loads(saved.read_text())["messages"]
    assert [m["content"] for m in messages] == ["What is the capital of Japan?", "Tokyo.", "And of France?"]


def test_chat_from_the_command_line_autosaves_and_resumes(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from lookinside.cli.app import app

    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    first = runner.invoke(app, ["chat", "What is the capital of Japan?", "--model", "tiny", "-t", "0"])
    assert first.exit_code == 0 and first.output.strip() == "The capital of Japan is Tokyo."
    (saved,) = (tmp_path / "chats").glob("asked-*.json")  # a one-shot question is kept, apart from conversations
    assert not list((tmp_path / "chats").glob("session-*.json"))
    resumed = runner.invoke(app, ["chat", "--resume", "--model", "tiny", "-t", "0"], input="And of France?")
    assert resumed.exit_code != 0 and "no conversation to resume" in resumed.output  # --resume is a person's chat
    second = runner.invoke(app, ["chat", "--load", str(saved), "--model", "tiny", "-t", "0"],
                           input="What is the capital of France?")
    assert second.exit_code == 0 and "Paris" in second.output
    assert len(json.loads(saved.read_text())["messages"]) == 2  # --load leaves the file it read as it was
    (newest,) = set((tmp_path / "chats").glob("asked-*.json")) - {saved}  # a new file, whatever the clock
    assert len(json.loads(newest.read_text())["messages"]) == 4


def test_a_system_prompt_with_piped_input(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from lookinside.cli.app import app

    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["chat", "-s", "Answer briefly.", "--model", "tiny", "-t", "0"],
                                input="What is the capital of Japan?")
    assert result.exit_code == 0 and "Tokyo" in result.output
    (saved,) = (tmp_path / "chats").glob("asked-*.json")
    data = json.loads(saved.read_text())
    assert data["system"] == "Answer briefly." and data["messages"][0]["content"] == "What is the capital of Japan?"


@pytest.mark.parametrize(("args", "message"), [
    (["--resume"], "no conversation to resume"),
    (["--load", "/nonexistent/chat.json"], "no transcript at /nonexistent/chat.json"),
    (["--load", "x.json", "--resume"], "choose one"),
])
def test_resuming_what_is_not_there_is_one_line(tmp_path, monkeypatch, args, message):
    from typer.testing import CliRunner

    from lookinside.cli.app import app

    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["chat", *args, "--model", "tiny"])
    assert result.exit_code != 0 and message in result.output


def test_export_writes_html_and_svg_with_each_token_coloured(tiny, tmp_path):
    run = chat(tiny, f"Japan?{ENTER}/export {tmp_path / 'chat.html'}{ENTER}/export {tmp_path / 'chat.svg'}{ENTER}",
               generate_fn=scripted("Tokyo."))
    assert f"exported 2 messages to {tmp_path / 'chat.html'}" in run.out
    html = (tmp_path / "chat.html").read_text()
    assert "Chat with " in html and "tiny" in html and "Japan?" in html and "Tokyo" in html
    assert "color: #008000" in html  # the scripted tokens' probability 0.9 is drawn green, as /probs shows it
    assert "<svg" in (tmp_path / "chat.svg").read_text()
