"""The CPU thread default: one thread per idle core, measured at load; --threads overrides it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lookinside.core.errors import BadInput
from lookinside.core.model.loading import load
from lookinside.core.model.spec import LoadSpec
from lookinside.core.model.threads import ThreadChoice, choose_threads, idle_cores

PROC_STAT = Path("/proc/stat")  # what psutil reads on Linux


@pytest.mark.parametrize(("idle", "expected"), [(2.0, 2), (1.9, 2), (1.1, 1), (0.2, 1), (0.0, 1), (7.5, 2)])
def test_one_thread_per_idle_core_and_never_none(idle, expected):
    choice = choose_threads(None, cores=2, idle=idle)
    assert choice.count == expected
    assert choice.reason.startswith(f"auto: {expected} of 2 cores idle")


def test_the_reason_says_when_other_cores_are_busy():
    assert choose_threads(None, cores=4, idle=1.0).describe() == "1 thread (auto: 1 of 4 cores idle, the others busy)"
    assert choose_threads(None, cores=4, idle=4.0).describe() == "4 threads (auto: 4 of 4 cores idle)"


def test_a_given_count_wins_and_bad_counts_are_refused():
    assert choose_threads(3, cores=2, idle=0.0) == ThreadChoice(3, "--threads")
    for bad in (0, -1, True, 1.5):
        with pytest.raises(BadInput, match="--threads"):
            choose_threads(bad)
    with pytest.raises(BadInput, match="--threads must be a whole number >= 1"):
        LoadSpec(model="tiny", threads=0)


@pytest.mark.skipif(not PROC_STAT.exists() or (os.cpu_count() or 1) < 2, reason="needs Linux /proc/stat and 2 cores")
def test_a_busy_process_takes_a_core_away_from_the_default():
    loop = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 20\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.5)  # let the loop get going
        cores = os.cpu_count() or 1
        idle = idle_cores(cores, seconds=0.5)
        assert idle is not None and idle < cores - 0.5
        assert choose_threads(None, cores=cores, idle=idle).count < cores
    finally:
        loop.kill()
        loop.wait()


def test_load_applies_the_choice_and_keeps_it_on_the_lm():
    before = torch.get_num_threads()
    try:
        lm = load(LoadSpec(model="tiny", device="cpu", threads=1))
        assert torch.get_num_threads() == 1
        assert lm.threads == ThreadChoice(1, "--threads")
    finally:
        torch.set_num_threads(before)


def test_the_default_load_records_why(tiny):
    assert tiny.threads is not None and tiny.threads.reason.startswith("auto")
