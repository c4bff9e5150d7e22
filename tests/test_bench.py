"""`llm bench`: the measurements' arithmetic, the tiny model's runs, the JSON, faked CUDA, bad input.

No test asserts a speed: timings on a shared CPU are noise. They assert structure and
consistency (exactly N tokens, decode rate x decode time = N - 1, same ids both ways).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from lookinside.cli.app import app
from lookinside.core.bench import run as bench
from lookinside.core.bench.report import Bandwidth, ModeResult, SweepLine, loglog_slope, noise_reasons, percentile
from lookinside.core.bench.run import kv_cache_bytes, resolve_bandwidth, run_bench
from lookinside.core.errors import BadInput
from lookinside.core.model.hardware import known_gpu
from lookinside.core.model.loading import load
from lookinside.core.model.spec import LoadSpec
from lookinside.core.request import BenchSettings, parse_sweep
from lookinside.core.wire import to_wire
from lookinside.ui.bench import bench_view, latency_chart, size, span

from .conftest import small_config

runner = CliRunner()
N = 6


def run_cli(*args: str):
    threads = () if "--threads" in args else ("--threads", "1")  # 2 threads on a busy 2-core box crawl
    return runner.invoke(app, ["bench", "--model", "tiny", "--device", "cpu", *threads, *args])


@pytest.fixture(scope="module")
def report(tiny):
    """Both modes and the reference on the tiny model: 6 tokens, 1 warm-up, 2 repeats, one thread."""
    return run_bench(tiny, BenchSettings(new_tokens=N, warmup=1, repeat=2, threads=1))


# --- pure arithmetic -------------------------------------------------------------------------

def test_percentile_interpolates_between_order_statistics():
    assert percentile([4.0, 1.0, 3.0, 2.0, 5.0], 50) == 3.0
    assert percentile([1.0, 2.0], 90) == pytest.approx(1.9)
    assert percentile([], 50) is None


def test_loglog_slope_recovers_the_exponent():
    lengths = [32, 128, 512]
    assert loglog_slope(lengths, [0.01 * n for n in lengths]) == pytest.approx(1.0)
    assert loglog_slope(lengths, [1e-5 * n * n for n in lengths]) == pytest.approx(2.0)


def test_kv_cache_bytes_follows_the_config():
    config = small_config("phi3-gqa")  # 2 layers, 2 KV heads, head dim 64 / 4 = 16
    assert kv_cache_bytes(config, element_bytes=2, tokens=10) == 2 * 2 * 2 * 16 * 2 * 10
    mha = small_config("phi3-mha")  # 4 KV heads: twice the cache of the GQA config
    assert kv_cache_bytes(mha, 2, 10) == 2 * kv_cache_bytes(config, 2, 10)


def test_known_gpus_and_unknown_ones():
    assert known_gpu("Tesla T4").bandwidth_gbs == 320
    assert known_gpu("NVIDIA A10G").bandwidth_gbs == 600
    assert known_gpu("NVIDIA A100-SXM4-40GB").bandwidth_gbs == 1555
    assert known_gpu("NVIDIA A100-SXM4-80GB").bandwidth_gbs == 2039
    assert known_gpu("NVIDIA A100 80GB PCIe").bandwidth_gbs == 1935
    assert known_gpu("NVIDIA H100 80GB HBM3").label == "H100 SXM"
    assert known_gpu("NVIDIA H100 PCIe").bandwidth_gbs == 2000
    assert known_gpu("NVIDIA H200").bandwidth_gbs == 4800
    assert known_gpu("NVIDIA L4").bandwidth_gbs == 300
    assert known_gpu("NVIDIA L40S") is None  # not an L4
    assert known_gpu("NVIDIA GeForce RTX 4090") is None


def test_parse_sweep():
    assert parse_sweep("128, 32,512,32") == (32, 128, 512)
    assert parse_sweep(None) == ()
    for bad in ("32,x", "64"):
        with pytest.raises(BadInput):
            parse_sweep(bad)


@pytest.mark.parametrize("changes", [
    {"new_tokens": 0}, {"new_tokens": -5}, {"repeat": 0}, {"warmup": -1}, {"prompt_tokens": 0},
    {"prompt": "x", "prompt_tokens": 5}, {"prompt": "   "}, {"modes": ()}, {"sweep": (0, 8)},
    {"bandwidth_gbs": 0.0}, {"threads": 0},
])
def test_bad_settings_are_refused(changes):
    with pytest.raises(BadInput):
        BenchSettings(**changes)


def test_sizes_are_binary():
    assert [size(100), size(114688), size(3 * 2**20)] == ["100 B", "112.0 KiB", "3.0 MiB"]


def test_span_shares_the_unit():
    assert span(0.0855, 0.0941) == "85.5–94.1 ms"
    assert span(0.5, 2.0) == "500.0 ms – 2.00 s"


def test_timed_runs_take_turns_after_the_warmups():
    order: list[str] = []

    def runner(key: str):
        def run():
            order.append(key)
            return (0.1,), (1, 2), 0
        return run

    timed = bench.alternate({"cache": runner("cache"), "none": runner("none")}, warmup=1, repeat=2)
    assert order == ["cache", "none"] * 3  # one warm-up round, then two timed rounds
    assert {key: len(runs) for key, runs in timed.items()} == {"cache": 2, "none": 2}


# --- faked CUDA: the speed-of-light line and its fallbacks -----------------------------------

def fake_gpu(monkeypatch, name: str, memory_gib: int = 80) -> torch.device:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: SimpleNamespace(total_memory=memory_gib * 1024**3))
    return torch.device("cuda")


def test_known_gpu_gives_its_bandwidth(monkeypatch):
    bandwidth = resolve_bandwidth(fake_gpu(monkeypatch, "NVIDIA H200"), None)
    assert bandwidth.gbs == 4800 and "H200" in bandwidth.source and bandwidth.note is None


def test_unknown_gpu_falls_back_with_a_note(monkeypatch):
    bandwidth = resolve_bandwidth(fake_gpu(monkeypatch, "NVIDIA Mystery 9000"), None)
    assert bandwidth.gbs is None
    assert "NVIDIA Mystery 9000" in bandwidth.note and "--bandwidth" in bandwidth.note


def test_given_bandwidth_wins_over_the_table(monkeypatch):
    assert resolve_bandwidth(fake_gpu(monkeypatch, "NVIDIA H200"), 1000.0).gbs == 1000.0
    assert resolve_bandwidth(torch.device("cpu"), 12.5).gbs == 12.5  # the CPU's measured number gives way too


def test_unknown_gpu_note_reaches_the_json_and_the_view(tiny, monkeypatch):
    real = bench.resolve_bandwidth
    monkeypatch.setattr(bench, "resolve_bandwidth",
                        lambda device, given: real(fake_gpu(monkeypatch, "NVIDIA Mystery 9000"), given))
    report = run_bench(tiny, BenchSettings(new_tokens=3, warmup=0, repeat=1, threads=1, modes=("dynamic",), reference=False))
    assert any("Mystery 9000" in note for note in to_wire(report)["notes"])
    light = to_wire(report)["runs"][0]["speed_of_light"]
    assert light["share"] is None and light["achieved_gbs"] > 0
    assert "Mystery 9000" in render(bench_view(report))


def test_faster_than_the_bandwidth_is_flagged(tiny):
    report = run_bench(tiny, BenchSettings(new_tokens=4, warmup=0, repeat=1, threads=1, modes=("dynamic",), reference=False,
                                           bandwidth_gbs=1e-6))  # 1 kB/s: any real run beats it
    light = report.runs[0].speed_of_light
    assert light.share > 1 and light.warning
    assert report.warnings and "impossible" in report.warnings[0]
    assert "warning:" in render(bench_view(report))


def test_beating_the_cpus_measured_bandwidth_is_put_down_to_its_caches(tiny):
    """A CPU with a large last-level cache (300 MiB here) serves part of a step's weights from it: the share goes
    past the triad's figure without a wrong clock (the CPU's is synchronous)."""
    report = run_bench(tiny, BenchSettings(new_tokens=4, warmup=0, repeat=1, threads=1, modes=("dynamic",),
                                           reference=False, bandwidth_gbs=1e-6))
    light = replace(report.runs[0].speed_of_light, bandwidth=Bandwidth(1e-6, "measured: triad, 1 thread (cached)"))
    assert light.share > 1 and "came from the CPU's caches" in light.warning and "impossible" not in light.warning


# --- the tiny model, both modes --------------------------------------------------------------

def test_threads_are_restored_after_the_bench(report):
    assert report.header.threads == 1
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        from lookinside.core.bench.run import _threads

        with _threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_every_run_generates_exactly_n_tokens(report):
    for run in report.runs:
        assert len(run.token_ids) == N
        assert [len(row) for row in run.step_seconds] == [N, N]  # two repeats, warm-up not kept
        assert all(s > 0 for row in run.step_seconds for s in row)


def test_cached_and_uncached_ids_are_equal(report):
    on, off = report.run("dynamic"), report.run("none")
    assert on.token_ids == off.token_ids and report.same_tokens is True
    assert on.deterministic and off.deterministic
    assert report.reference is not None and report.reference.same_tokens  # model.generate agrees too


def test_measured_cache_matches_the_config(report, tiny):
    on = report.run("dynamic")
    held = on.prompt_tokens + N - 1
    assert on.kv_cache_bytes == kv_cache_bytes(tiny.config, 4, held) > 0
    assert on.kv_cache_measured_bytes == on.kv_cache_bytes
    assert report.run("none").kv_cache_bytes == 0 and report.run("none").kv_cache_measured_bytes is None


def test_json_fields_present_and_consistent(report):
    data = json.loads(json.dumps(to_wire(report)))
    assert {"runs", "speedup", "same_tokens", "header", "reference"} <= data.keys()
    assert [r["cached"] for r in data["runs"]] == [True, False] and data["runs"][1]["cache"] == "none"
    for run in data["runs"]:
        assert run["new_tokens"] == N and run["prompt_tokens"] > 0
        total = run["total_s"]
        assert total["min"] <= total["median"] <= total["max"]
        assert 0 < run["ttft_s"] < total["max"]
        # decode rate is over the N - 1 tokens after the first (the first one's time is TTFT)
        assert run["decode_tokens"] == N - 1
        assert run["decode_tok_s"] * run["decode_s"] == pytest.approx(N - 1)
        totals = sorted(sum(row) for row in run["step_seconds"])
        assert total["min"] == pytest.approx(totals[0]) and total["max"] == pytest.approx(totals[-1])
        assert run["itl_p50_s"] <= run["itl_p90_s"]
        assert run["peak_memory_bytes"] > 0
    on, off = data["runs"]
    assert data["speedup"] == pytest.approx(off["total_s"]["median"] / on["total_s"]["median"])
    assert data["same_tokens"] is True
    assert data["header"]["model"] == "tiny" and data["header"]["parameters"] > 0


def test_prompt_tokens_gives_exactly_that_many(tiny):
    ids = bench.bench_prompt_ids(tiny.tokenizer, BenchSettings(prompt_tokens=50))
    assert len(ids) == 50 and ids[0] == tiny.tokenizer.bos_token_id and ids.count(ids[0]) == 1


def test_too_long_for_the_context_is_refused_before_timing(tiny):
    with pytest.raises(BadInput, match="context"):
        run_bench(tiny, BenchSettings(new_tokens=600, warmup=0, repeat=1, threads=1))


def test_sweep_reports_one_line_per_mode(tiny):
    report = run_bench(tiny, BenchSettings(sweep=(2, 4), warmup=0, repeat=1, threads=1, reference=False))
    assert [line.cache for line in report.sweep] == ["dynamic", "none"]
    assert all(line.lengths == (2, 4) and len(line.medians) == 2 for line in report.sweep)
    assert [r.new_tokens for r in report.runs] == [4, 4] and len(report.all_runs) == 4
    assert math.isfinite(report.sweep[0].slope)
    assert "log-log slope" in render(bench_view(report))


def test_chart_is_flat_with_the_cache_and_climbs_without():
    def mode(cache: str, steps: list[float]) -> ModeResult:
        return ModeResult(cache, len(steps), 10, (tuple(steps),), tuple(range(len(steps))), True, 0, None, 1)

    flat = mode("dynamic", [0.05] + [0.001] * 20)
    growing = mode("none", [0.05] + [0.001 * (i + 1) for i in range(20)])
    lines = latency_chart((flat, growing), width=40, height=10).plain.splitlines()[1:11]
    rows_of = {mark: [y for y, line in enumerate(lines) if mark in line] for mark in "•×"}
    assert len(rows_of["•"]) == 1  # the cached line is one flat row
    cross_first = next(y for y, line in enumerate(lines) if line.split("┤")[1][:1] in "×◆")
    cross_last = next(y for y, line in enumerate(lines) if line.split("┤")[1].rstrip()[-1:] in "×◆")
    assert cross_last < cross_first  # later positions sit higher: slower without the cache


def render(renderable) -> str:
    from io import StringIO

    from rich.console import Console

    console = Console(file=StringIO(), width=100, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


# --- random weights: --layers and the stand-in tokenizer -------------------------------------

def test_layers_shrink_a_random_model_and_a_config_alone_gets_a_standin_tokenizer(tmp_path):
    path = tmp_path / "m"
    small_config("phi3-gqa").save_pretrained(path)  # a config alone, like the carried Phi-3-mini one
    lm = load(LoadSpec(model=str(path), device="cpu", random_weights=True, layers=1))
    notes = lm.notes
    assert lm.config.num_hidden_layers == 1 and len(lm.model.model.layers) == 1
    assert any("--layers 1" in n for n in notes) and any("tokenizer" in n for n in notes)
    report = run_bench(lm, BenchSettings(new_tokens=3, warmup=0, repeat=1, threads=1, reference=False), notes,
                       random_weights=True)
    assert report.header.random_weights and report.header.layers == 1
    assert report.same_tokens is True


@pytest.mark.parametrize(("layers", "random_weights", "message"), [
    (0, True, "at least 1"), (2, False, "--random-weights"), (99, True, "only 2 layers"),
])
def test_bad_layers_are_refused(tmp_path, layers, random_weights, message):
    path = tmp_path / "m"
    path.mkdir()
    small_config("phi3-gqa").save_pretrained(path)
    with pytest.raises(BadInput, match=message):
        load(LoadSpec(model=str(path), device="cpu", random_weights=random_weights, layers=layers))


# --- the CLI ---------------------------------------------------------------------------------

def test_cli_json_both_modes():
    result = run_cli("--new-tokens", "4", "--warmup", "1", "--repeat", "1", "--json", "--no-reference")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["cache"] for r in data["runs"]] == ["dynamic", "none"]
    assert all(r["new_tokens"] == 4 and len(r["token_ids"]) == 4 for r in data["runs"])
    assert data["same_tokens"] is True and data["speedup"] > 0 and data["reference"] is None


def test_cli_no_cache_runs_one_mode():
    result = run_cli("--no-cache", "-n", "3", "--warmup", "0", "--repeat", "1", "--json", "--threads", "1")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["cached"] for r in data["runs"]] == [False]
    assert data["speedup"] is None and data["same_tokens"] is None
    assert data["reference"]["cache"] == "none" and data["header"]["threads"] == 1


def test_cli_view_shows_table_chart_and_verdict():
    result = run_cli("-n", "5", "--warmup", "0", "--repeat", "1", "--prompt-tokens", "12")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "\x1b[" not in out  # plain text in a pipe
    for text in ("tiny", "with cache", "no cache", "generate()", "TTFT", "speedup:",
                 "cached vs uncached yes", "per-token latency by position", "prompt 12 tokens"):
        assert text in out


@pytest.mark.parametrize("args", [
    ("--new-tokens", "0"), ("--new-tokens", "-3"), ("--repeat", "0"), ("--warmup", "-1"),
    ("--prompt-tokens", "0"), ("--sweep", "32,abc"), ("--bandwidth", "-1"), ("--layers", "2"),
    ("--prompt", "hi", "--prompt-tokens", "4"),
])
def test_cli_bad_values_fail_in_one_line_before_loading(monkeypatch, args):
    import lookinside.core.model.loading as loading

    def no_loading(*_, **__):
        raise AssertionError("loaded a model for a bad option")

    monkeypatch.setattr(loading, "load", no_loading)
    result = run_cli(*args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_help_lists_the_options():
    result = runner.invoke(app, ["bench", "--help"])
    assert result.exit_code == 0
    for option in ("--no-cache", "--new-tokens", "--prompt-tokens", "--warmup", "--repeat", "--sweep",
                   "--bandwidth", "--random-weights", "--layers", "--json", "--model", "--dtype"):
        assert option in result.stdout


# --- noise ------------------------------------------------------------------------------------

def _timed(cache: str, totals: list[float], n: int = 4) -> ModeResult:
    rows = tuple((t / n,) * n for t in totals)
    return ModeResult(cache=cache, new_tokens=n, prompt_tokens=3, step_seconds=rows, token_ids=(1,) * n,
                      deterministic=True, kv_cache_bytes=0, kv_cache_measured_bytes=None, peak_memory_bytes=0)


def test_steady_runs_are_not_noisy():
    assert noise_reasons([_timed("dynamic", [1.0, 1.1, 1.05]), _timed("none", [2.0, 2.1, 2.2])], []) == ()


def test_spread_out_repeats_are_noisy():
    (reason,) = noise_reasons([_timed("dynamic", [1.0, 2.0, 1.1])], [])
    assert "cached runs of 4 tokens differ by 2.0x" in reason


def test_a_cache_slower_than_no_cache_is_noisy():
    (reason,) = noise_reasons([_timed("dynamic", [3.0, 3.1]), _timed("none", [2.0, 2.1])], [])
    assert reason == "at 4 tokens the cached runs were slower than the uncached ones"


def test_a_sweep_that_gets_faster_with_length_is_noisy():
    (reason,) = noise_reasons([], [SweepLine("dynamic", (32, 128, 448), (1.0, 0.8, 0.5))])
    assert "sweep gets faster with length" in reason


def test_a_noisy_report_warns_in_the_view_and_the_json(report):
    from dataclasses import replace

    noisy = replace(report, noise=("the cached runs of 6 tokens differ by 2.0x",))
    text = render(bench_view(noisy))
    assert "machine looks busy" in text and "--repeat 7" in text
    assert to_wire(noisy)["noisy"] is True and to_wire(noisy)["noise"] == list(noisy.noise)
    assert to_wire(replace(report, noise=()))["noisy"] is False
