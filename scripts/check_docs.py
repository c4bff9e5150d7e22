"""Re-run every command shown in README.md and docs/*.md and compare its output with the page.

A checked example is a plain or ```text block whose first line is `$ COMMAND`; the lines up to the next
`$ ` line are what COMMAND printed. `llm` runs as `python -m lookinside` from this checkout, at 80
columns, offline. Text must match line for line (trailing spaces aside); numbers may differ by one
unit in the last digit the page prints (so 2.5e-05 and 2.4e-05 agree, 0.9995 and 0.9990 do not).

A block of figures that another CPU computes differently (bfloat16 rounding, a KL of 1e-06) is
marked on the line just before its fence, and then its numbers may differ by that share and its
bar charts (runs of ▁▂▃▄▅▆▇█) may take another shape; the words must still match:

    <!-- check_docs: measured, numbers within 50% -->

A block that shows a command answered by a running `llm serve` is marked on the line before its
fence; the check then starts a real `llm serve --model tiny` on 127.0.0.1 and a free port (once,
with its own data directory, stopped at the end), runs the block's commands with that data
directory (so they find the server, as a user's do) and with the page's URL in a command replaced
by the server's. The output is compared with the server's URL and pid written as the page writes
them, SERVED_URL and SERVED_PID:

    <!-- check_docs: served -->

Skipped, with the reason printed: timings (`llm bench`, which the pages show from a measured run),
other scripts, and commands that need a GPU or a download.

    python scripts/check_docs.py                    # every page
    python scripts/check_docs.py docs/serve.md      # one page
    python scripts/check_docs.py --tests "337 passed, 1 skipped"   # also README's test count

Exit 1 on any difference, naming the page, the block's line and the first differing line.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*(?:\.\d+)?(?:e[-+]?\d+)?")
MEASURED = re.compile(r"<!--\s*check_docs:\s*measured,\s*numbers within (\d+(?:\.\d+)?)%\s*-->")
BARS = re.compile(r"[ ▁▂▃▄▅▆▇█]*[▁▂▃▄▅▆▇█][ ▁▂▃▄▅▆▇█]*")
SKIP = {
    "llm bench": "timings: the page shows a measured run",
    "LOOKINSIDE_ENDPOINT=$(scripts/vllm.sh url)": "needs a running server (scripts/vllm.sh start)",
    "scripts/": "another script, with its own numbers",
    "cat ": "a file written by an earlier step",
    "--device-map": "needs a GPU",
    ".gguf": "needs a GGUF file made by llama.cpp's converter (docs/models.md says how)",
    "ollama:": "needs a model in Ollama's store (docs/models.md lays one out)",
}
SERVED = "LOOKINSIDE_ENDPOINT=$(scripts/vllm.sh url)"  # checked for real while scripts/vllm.sh has one running
SERVED_MARK = re.compile(r"<!--\s*check_docs:\s*served\s*-->")
SERVED_URL = "http://127.0.0.1:8765"  # how the pages write the URL of the `llm serve` a served block runs against
SERVED_PID = "19149"  # and its pid
SERVE_START_S = 180  # a cold start imports torch and loads tiny; on a loaded 2-core machine it has taken a minute


@dataclass(frozen=True)
class Example:
    """One command on a page and the output the page shows for it."""

    page: Path
    line: int  # 1-based line of the `$ ` command
    command: str
    shown: list[str]
    tolerance: float | None = None  # a measured block's share by which numbers may differ (see the docstring)
    served: bool = False  # runs against the `llm serve` this check starts (see the docstring)


def examples(page: Path) -> list[Example]:
    """Every `$ command` with its shown output, from the ```text blocks of `page`."""
    found: list[Example] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    fenced = checked = False
    current: Example | None = None
    tolerance: float | None = None
    served = False
    for number, line in enumerate(lines, start=1):
        if line.startswith("```"):
            if current:
                found.append(current)
            current = None
            fenced = not fenced
            checked = fenced and line.strip() in ("```", "```text", "```console")
            before = lines[number - 2] if fenced and number >= 2 else ""
            marker = MEASURED.search(before)
            tolerance = float(marker.group(1)) / 100 if marker else None
            served = bool(SERVED_MARK.search(before))
            continue
        if checked and line.startswith("$ "):
            if current:
                found.append(current)
            current = Example(page, number, line[2:].strip(), [], tolerance, served)
        elif checked and current:
            current.shown.append(line)
    return found


def skip_reason(example: Example) -> str | None:
    """Why an example is not re-run, or None (a served example runs while a vLLM from scripts/vllm.sh is up)."""
    if SERVED in example.command and "llm bench" not in example.command and server_running():
        return None
    return next((why for marker, why in SKIP.items() if marker in example.command), None)


def server_running() -> bool:
    """True when `scripts/vllm.sh url` names a server (.ci/run starts one before this check)."""
    out = subprocess.run(["bash", str(ROOT / "scripts" / "vllm.sh"), "url"], capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.startswith("http")


def environment(data_dir: Path, served: bool = False) -> dict[str, str]:
    """The commands' environment: 80 columns, offline, no colour, and `data_dir` for what they keep (never the user's
    own); `served`: the served check's data directory, whose `llm serve` they find, else no server is looked for (a
    `llm serve` left running would answer, and say so)."""
    env = {**os.environ, "COLUMNS": "80", "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "TERM": "dumb",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # LOOKINSIDE_API_KEY stays: README's remote example runs against CI's vLLM, which wants it (a server without a
    # key, like the served blocks' own, takes a request that carries one)
    for name in ("LOOKINSIDE_MODEL", "LOOKINSIDE_ENDPOINT", "LOOKINSIDE_NO_SERVER"):
        env.pop(name, None)
    env["LOOKINSIDE_DATA_DIR"] = str(data_dir)
    if not served:
        env["LOOKINSIDE_NO_SERVER"] = "1"
    return env


def run(command: str, scratch: Path, server: Server | None = None) -> list[str]:
    """The command's output (stdout and stderr, as a terminal user sees them) at 80 columns; with `server`, run
    against it, its URL and pid written as the pages write them."""
    command = re.sub(r"\s+#.*$", "", command)  # a trailing comment
    if server is not None:
        command = command.replace(SERVED_URL, server.url)
    script = f'llm() {{ "{sys.executable}" -m lookinside "$@"; }}\n{command}\n'
    env = environment(server.data_dir, served=True) if server else environment(scratch / "data")
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    text = out.stdout
    if server is not None:
        text = text.replace(server.url, SERVED_URL).replace(f"pid {server.pid}", f"pid {SERVED_PID}")
    return text.splitlines()


@dataclass
class Server:
    """A real `llm serve --model tiny` on 127.0.0.1 for the served blocks, with a data directory of its own."""

    process: subprocess.Popen[bytes]
    url: str
    data_dir: Path

    @property
    def pid(self) -> int:
        """The server's process id, as its record and the commands name it."""
        return self.process.pid

    @classmethod
    def start(cls, data_dir: Path) -> Server:
        """Start the server and wait until /health answers (RuntimeError, with its output, if it does not)."""
        with socket.socket() as probe:  # a free port; the server binds it a moment later
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        log = data_dir / "serve.log"
        command = [sys.executable, "-m", "lookinside", "serve", "--model", "tiny", "--host", "127.0.0.1", "--port",
                   str(port)]
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=ROOT, env=environment(data_dir, served=True), stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        server = cls(process, f"http://127.0.0.1:{port}", data_dir)
        deadline = time.monotonic() + SERVE_START_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{server.url}/health", timeout=2) as answer:  # noqa: S310 - loopback
                    if answer.status == 200:
                        return server
            except OSError:
                time.sleep(0.5)
        server.stop()
        raise RuntimeError(f"llm serve --model tiny did not come up: {log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        """SIGTERM (it removes its record), then SIGKILL if it is still there after 15 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def same_line(shown: str, got: str, tolerance: float | None = None) -> bool:
    """Equal text, and numbers within one unit of the last digit the page prints (or `tolerance`, in a measured
    block, where bar charts may also take another shape)."""
    shown, got = shown.rstrip(), got.rstrip()
    if tolerance is not None:
        shown, got = BARS.sub("▇", shown).rstrip(), BARS.sub("▇", got).rstrip()
    if NUMBER.sub("#", shown) != NUMBER.sub("#", got):
        return False
    return all(_close(a, b, tolerance) for a, b in zip(NUMBER.findall(shown), NUMBER.findall(got)))


def _close(shown: str, got: str, tolerance: float | None = None) -> bool:
    if shown == got:
        return True
    try:
        a, b = float(shown.replace(",", "")), float(got.replace(",", ""))
    except ValueError:
        return False
    mantissa, _, exponent = shown.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    unit = 10.0 ** (-decimals + (int(exponent) if exponent else 0))
    return abs(a - b) <= max(unit * 1.0001, (tolerance or 0.0) * abs(a))


def check(example: Example, scratch: Path, server: Server | None = None) -> str | None:
    """None when the command still prints what the page shows; else where they part."""
    got = run(example.command, scratch, server if example.served else None)
    shown = [line for line in example.shown if line.strip() != "..."]
    if "..." in (line.strip() for line in example.shown):  # the page elides: compare the lines it shows, in order
        got = [line for line in got if any(same_line(s, line, example.tolerance) for s in shown)] or got
    for i, (a, b) in enumerate(zip(shown, got)):
        if not same_line(a, b, example.tolerance):
            return f"line {example.line + 1 + i}: page shows {a.rstrip()!r}, the command printed {b.rstrip()!r}"
    if len(shown) != len(got):
        return f"the page shows {len(shown)} lines, the command printed {len(got)}: " + (
            f"first extra {got[len(shown)]!r}" if len(got) > len(shown) else f"missing {shown[len(got)]!r}")
    return None


def check_test_count(summary: str) -> str | None:
    """README's test count against the suite's closing line, e.g. '337 passed, 1 skipped'."""
    total = sum(int(n) for n in re.findall(r"(\d+) (?:passed|skipped|failed)", summary))
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"(\d+) tests", text)
    if not match:
        return "README.md does not say how many tests there are ('N tests')"
    return None if int(match.group(1)) == total else f"README.md says {match.group(1)} tests; the suite ran {total}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", help="the suite's closing line, to check README's test count against")
    parser.add_argument("pages", nargs="*", type=Path, default=PAGES)
    args = parser.parse_args()
    failures = 0
    server: Server | None = None
    with tempfile.TemporaryDirectory(prefix="check-docs-") as scratch:
        try:
            for page in args.pages:
                for example in examples(page.resolve()):
                    where = f"{page.resolve().relative_to(ROOT)}:{example.line}"
                    reason = skip_reason(example)
                    if reason:
                        print(f"skip  {where}  {example.command}  ({reason})")
                        continue
                    if example.served and server is None:
                        server = Server.start(Path(scratch))
                        print(f"      (llm serve --model tiny at {server.url}, pid {server.pid}, for the served blocks)")
                    problem = check(example, Path(scratch), server)
                    print(f"{'ok   ' if problem is None else 'DIFF '} {where}  {example.command}")
                    if problem:
                        print(f"      {problem}")
                        failures += 1
        finally:
            if server is not None:
                server.stop()
    if args.tests:
        problem = check_test_count(args.tests)
        print("ok    README.md test count" if problem is None else f"DIFF  {problem}")
        failures += problem is not None
    print(f"{failures} differences")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
