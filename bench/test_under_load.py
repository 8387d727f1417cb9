"""softmax_ce with a CPU-bound process on every core (bench/under_load.py):
one thread against the default thread count, 65536 x 10 float32 in place.
extra_info holds the 90th percentile beside pytest-benchmark's statistics."""

import os

import numpy as np
import pytest

from .under_load import SHAPE, competing_processes, inputs, warm_up_under_load


@pytest.fixture(scope="module")
def busy_machine(request):
    """A competing process per core, running until the load average shows
    them, unless timing is disabled (the smoke run)."""
    if request.config.getoption("benchmark_disable"):
        yield 0
        return
    cores = len(os.sched_getaffinity(0))
    with competing_processes(cores):
        warm_up_under_load(cores)
        yield cores


@pytest.mark.parametrize("threads", [1, None], ids=["1t", "default"])
def test_softmax_ce_under_load(benchmark, busy_machine, threads):
    import cyce

    logits, labels = inputs(SHAPE)
    saved = logits.copy()

    def setup():
        np.copyto(logits, saved)
        return (logits, labels), {"inplace": True, "num_threads": threads}

    loss, grad = benchmark.pedantic(cyce.softmax_ce, setup=setup, rounds=200, iterations=1)
    assert grad is logits and np.isfinite(loss)
    benchmark.extra_info["competing_processes"] = busy_machine
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["p90_s"] = float(np.percentile(stats.stats.data, 90))
