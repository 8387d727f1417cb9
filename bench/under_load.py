"""softmax_ce on a busy machine: the median and 90th percentile of a call
with a CPU-bound process on every core, on one thread and on the default
thread count.

    python -m bench.under_load [--calls 300]

A call's threads wait for each other at its end, so one that lost its core
to another process makes the whole call wait.  A default-thread call on a
machine whose 1-minute load average exceeds its cores takes fewer threads
(cyce._dispatch.busy_cap); default-thread calls run under the competitors
until the load average shows them (up to LOAD_WAIT_S) before the timed
calls.  The goal: a default-thread call degrades no worse than a one-thread
call.  bench/test_under_load.py
runs the same measurement under pytest-benchmark.
"""

import argparse
import contextlib
import os
import subprocess
import sys
import time

import numpy as np

SHAPE = (65536, 10)
BUSY_LOOP = "while True: pass"
LOAD_WAIT_S = 120


@contextlib.contextmanager
def competing_processes(count):
    """`count` CPU-bound processes for the duration."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(count)]
    try:
        time.sleep(0.2)  # let them reach their cores
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def inputs(shape=SHAPE, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.uniform(-4, 4, size=shape).astype(dtype)
    labels = rng.integers(0, shape[1], size=shape[0])
    return logits, labels


def call_times_ms(num_threads, calls, shape=SHAPE):
    """Times of `calls` in-place calls, the logits restored between them."""
    import cyce

    logits, labels = inputs(shape)
    saved = logits.copy()
    times = np.empty(calls)
    for i in range(calls):
        np.copyto(logits, saved)
        start = time.perf_counter()
        cyce.softmax_ce(logits, labels, inplace=True, num_threads=num_threads)
        times[i] = time.perf_counter() - start
    return times * 1e3


def warm_up_under_load(cores):
    """Default-thread calls until the 1-minute load average shows the
    competitors and this process (over cores + 0.5), up to LOAD_WAIT_S: a
    sustained load, as in a busy pipeline."""
    deadline = time.monotonic() + LOAD_WAIT_S
    while os.getloadavg()[0] <= cores + 0.5 and time.monotonic() < deadline:
        call_times_ms(None, 200)


def percentiles(times_ms):
    p50, p90 = np.percentile(times_ms, [50, 90])
    return float(p50), float(p90)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    import cyce

    cores = len(os.sched_getaffinity(0))
    info = cyce._info.config()
    print(f"softmax_ce {SHAPE[0]} x {SHAPE[1]} float32 in place, {args.calls} calls, "
          f"{cores} cores, cyce {cyce.__version__} ({info['simd']}), "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print(f"{'competing processes':>20} {'threads':>8} {'p50 ms':>8} {'p90 ms':>8}")
    results = {}
    for busy in (0, cores):
        with competing_processes(busy):
            if busy:
                warm_up_under_load(cores)
            print(f"  load average {os.getloadavg()[0]:.2f}", flush=True)
            for threads in (1, None):
                p50, p90 = percentiles(call_times_ms(threads, args.calls))
                results[(busy, threads)] = (p50, p90)
                label = "1" if threads == 1 else f"default ({info['default_threads']})"
                print(f"{busy:>20} {label:>8} {p50:>8.3f} {p90:>8.3f}", flush=True)
    one, default = results[(cores, 1)], results[(cores, None)]
    print(f"under load, default / one thread: p50 {default[0] / one[0]:.2f}, p90 {default[1] / one[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
