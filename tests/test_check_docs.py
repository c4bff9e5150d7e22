"""scripts/check_docs.py: how it reads pages and compares printed numbers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_docs", ROOT / "scripts" / "check_docs.py")
check_docs = importlib.util.module_from_spec(spec)
sys.modules["check_docs"] = check_docs  # dataclasses look their module up there
spec.loader.exec_module(check_docs)


def test_numbers_may_differ_by_one_unit_of_the_last_printed_digit():
    assert check_docs.same_line("│  7 │ ␣Tehran   │ 714 │ 2.5e-05 │", "│  7 │ ␣Tehran   │ 714 │ 2.4e-05 │")
    assert check_docs.same_line("prob 0.9995", "prob 0.9994")
    assert not check_docs.same_line("prob 0.9995", "prob 0.9990")
    assert not check_docs.same_line("│ 1 │ ␣Paris │", "│ 1 │ ␣Rome │")
    assert not check_docs.same_line("3,821,079,552 parameters", "3,821,079,553 parameters total")


def test_examples_are_dollar_lines_in_text_blocks(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n```bash\n$ not this\n```\n\n```text\n$ llm a\nout 1\n$ llm b\nout 2\nout 3\n```\n")
    found = check_docs.examples(page)
    assert [(e.line, e.command, e.shown) for e in found] == [(8, "llm a", ["out 1"]), (10, "llm b", ["out 2", "out 3"])]


def test_the_test_count_is_read_from_the_suites_closing_line(monkeypatch, tmp_path):
    (tmp_path / "README.md").write_text("The suite: 12 tests.\n")
    monkeypatch.setattr(check_docs, "ROOT", tmp_path)
    assert check_docs.check_test_count("10 passed, 2 skipped in 3.1s") is None
    assert "says 12 tests; the suite ran 11" in check_docs.check_test_count("10 passed, 1 skipped in 3.1s")


def test_a_measured_block_tolerates_what_another_cpu_computes_and_nothing_else(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- check_docs: measured, numbers within 50% -->\n```text\n$ llm diff x\n│ KL median │ 6.10e-06 │\n"
                    "```\n\n```text\n$ llm other\nKL 6.10e-06\n```\n")
    measured, plain = check_docs.examples(page)
    assert measured.tolerance == 0.5 and plain.tolerance is None
    assert check_docs.same_line("│ KL median │ 6.10e-06 │", "│ KL median │ 5.87e-06 │", measured.tolerance)
    assert not check_docs.same_line("│ KL median │ 6.10e-06 │", "│ KL median │ 5.87e-06 │", plain.tolerance)
    assert not check_docs.same_line("│ KL median │ 6.10e-06 │", "│ KL median │ 1.50e-05 │", measured.tolerance)
    assert not check_docs.same_line("│ KL median │ 6.10e-06 │", "│ KL mean │ 6.10e-06 │", measured.tolerance)
    assert check_docs.same_line("         ┤▃▃ ▅▁ ▁▁▃▁▃▃█▁ ▁▁███▂", "         ┤▃▂ ▅▂ ▁▁▃▁▃▃█▁ ▂▁██▇▂", 0.5)
    assert not check_docs.same_line("         ┤▃▃ ▅▁ ▁▁▃▁▃▃█▁ ▁▁███▂", "         ┤▃▂ ▅▂ ▁▁▃▁▃▃█▁ ▂▁██▇▂")


def test_a_served_block_is_marked_and_the_server_pages_are_covered(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- check_docs: served -->\n```text\n$ llm lens x --endpoint http://127.0.0.1:8765/v1\nout\n```\n"
                    "```text\n$ llm lens y\nout\n```\n")
    assert [e.served for e in check_docs.examples(page)] == [True, False]
    # docs/serve.md and docs/remote.md each have a block checked against a real server, none skipped
    for name in ("serve.md", "remote.md"):
        found = check_docs.examples(ROOT / "docs" / name)
        assert any(e.served and check_docs.skip_reason(e) is None for e in found), name


def test_a_served_block_runs_against_a_real_llm_serve_it_starts_and_stops(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- check_docs: served -->\n```text\n"
                    '$ llm next-token "The capital of France is" --model tiny -k 1 2>&1 | head -1\n'
                    "using the server at http://127.0.0.1:8765/v1 (llm serve, pid 19149); --no-server to run here\n"
                    '$ llm tokens "Paris" --endpoint http://127.0.0.1:8765/v1 --json | python3 -c '
                    '"import json, sys; print(json.load(sys.stdin)[\\"model\\"])"\n'
                    "tiny\n```\n")
    server = check_docs.Server.start(tmp_path)
    try:
        problems = [check_docs.check(e, tmp_path, server) for e in check_docs.examples(page)]
    finally:
        server.stop()
    assert problems == [None, None]
    assert server.process.returncode is not None and not list((tmp_path / "servers").glob("*.json"))
