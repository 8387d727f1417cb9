"""What the benchmark suites share: the shapes, the cases and their markers,
the cache of inputs (made once per shape and dtype), thread control of the
peers, the timed call and the check of its result."""

import contextlib
import functools
import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from cyce._bench import HALF_DTYPES, LOSS_RTOL, dtype_unavailable, missing_requirement

SHAPES = ((65536, 10), (16384, 1000), (4096, 32000), (512, 256000))
QUICK_SHAPES = SHAPES[:2]   # with float32: the `quick` marker
LARGE_SHAPES = SHAPES[2:]   # 131 M elements, 0.5 / 1 GiB of logits: the `large` marker
DTYPES = ("float32", "float64")   # every contestant; HALF_DTYPES: the suite's half_contestants
THREADS = (1, 2)
PEERS = ("numpy", "torch", "jax", "jax_loss", "torch_stats", "torch_softcap")
# --cyce-shapes=smoke keeps each shape's class count and divides its rows by
# this, so that CI runs every code path in milliseconds.
SMOKE_ROW_DIVISOR = 256

MARKERS = (
    "quick: float32 at the two small shapes (like `python -m cyce bench --quick`)",
    "large: the 4096x32000 and 512x256000 shapes (seconds per case)",
    "peer: a comparison contestant (numpy, torch, jax), not cyce",
    "memory: peak-RSS checks in a subprocess (bench/test_memory.py)",
    "half: bfloat16 / float16 logits (the contestants a suite names in HALF_CONTESTANTS)",
)


@dataclass(frozen=True)
class Case:
    """One benchmark: a function family at one shape, dtype and thread
    count, run by one contestant.  `full_shape` is the shape it stands for
    (the same as (n_rows, n_classes) except in a smoke run)."""

    family: str
    n_rows: int
    n_classes: int
    dtype: str
    threads: int
    contestant: str
    full_shape: tuple

    @property
    def shape_name(self):
        return f"{self.n_rows}x{self.n_classes}"

    @property
    def id(self):
        return f"{self.shape_name}-{self.dtype}-{self.threads}t-{self.contestant}"

    @property
    def group(self):
        return f"{self.family} {self.shape_name} {self.dtype} {self.threads}t"

    peers: ClassVar[tuple] = PEERS  # the contestants that are not cyce

    @property
    def is_peer(self):
        return self.contestant in self.peers

    @property
    def rounds(self):
        """Timed rounds: many for the millisecond shapes, where the minimum
        needs them to be stable on a shared machine, few for the large ones."""
        elements = self.n_rows * self.n_classes
        if elements <= 2**20:
            return 50
        if elements <= 2**25:
            return 15
        return 3 if self.is_peer else 5


def shapes(size):
    """(shape, full shape) pairs for --cyce-shapes=full or smoke."""
    if size == "smoke":
        return [((max(n // SMOKE_ROW_DIVISOR, 1), c), (n, c)) for n, c in SHAPES]
    return [((n, c), (n, c)) for n, c in SHAPES]


def case_marks(case):
    """The markers of a case, and a skip when its library is not installed."""
    marks = []
    if case.full_shape in QUICK_SHAPES and case.dtype == "float32":
        marks.append(pytest.mark.quick)
    if case.full_shape in LARGE_SHAPES:
        marks.append(pytest.mark.large)
    if case.is_peer:
        marks.append(pytest.mark.peer)
    if case.dtype in HALF_DTYPES:
        marks.append(pytest.mark.half)
    reason = missing_requirement(case.contestant.replace("_", " ")) or dtype_unavailable(case.dtype)
    if reason:
        marks.append(pytest.mark.skip(reason=reason))
    return marks


def case_params(family, contestants, size, half_contestants=None):
    """pytest params for every shape x dtype x threads x contestant, in that
    nesting, so that consecutive cases share their inputs.  half_contestants
    maps each half dtype to the contestants that run at it (none if absent)."""
    half_contestants = half_contestants or {}
    params = []
    for shape, full_shape in shapes(size):
        for dtype in DTYPES + HALF_DTYPES:
            for threads in THREADS:
                for contestant in contestants:
                    if dtype in HALF_DTYPES and contestant not in half_contestants.get(dtype, ()):
                        continue
                    case = Case(family, *shape, dtype, threads, contestant, full_shape)
                    params.append(pytest.param(case, id=case.id, marks=case_marks(case)))
    return params


@functools.lru_cache(maxsize=1)
def cached_inputs(make_inputs, n_rows, n_classes, dtype):
    """make_inputs(n_rows, n_classes, dtype), kept for the following cases
    of the same shape and dtype; only one set is alive at a time (a large
    float64 set is several GiB).  Contestants must not write into them."""
    return make_inputs(n_rows, n_classes, dtype)


# ---------------------------------------------------------------------------
# Threads of the peers, and the timed call
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def cpus_limited_to(n_cpus):
    """Pin every thread of this process to its first n_cpus allowed CPUs
    for the block.  XLA sizes its thread pool once per process, so this is
    how JAX is held to one core in a process that also runs it on two."""
    allowed = os.sched_getaffinity(0)
    wanted = set(sorted(allowed)[:n_cpus])
    if wanted == allowed:
        yield
        return
    _set_process_affinity(wanted)
    try:
        yield
    finally:
        _set_process_affinity(allowed)


def _set_process_affinity(cpus):
    """sched_setaffinity for each thread (Linux affinity is per thread)."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (ProcessLookupError, PermissionError):
            pass  # the thread ended meanwhile


@contextlib.contextmanager
def peer_threads(case):
    """Hold a peer to case.threads.  cyce gets num_threads in its call and
    NumPy's ufuncs are single-threaded; torch has set_num_threads; JAX is
    pinned to that many CPUs and runs in float64 when asked (jax_enable_x64,
    otherwise it would silently compute float64 inputs in float32)."""
    if case.contestant == "torch":
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(case.threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)
    elif case.contestant in ("jax", "jax_loss"):
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        import jax

        jax.config.update("jax_enable_x64", True)
        with cpus_limited_to(case.threads):
            yield
    else:
        yield


def time_calls(benchmark, case, setup_contestant, *inputs):
    """Build the contestant's (prepare, run) pair from the inputs and time
    `run` with pedantic: one warm-up round (JAX compiles in it), then
    case.rounds rounds, each preceded by `prepare` (untimed).  Returns
    the last round's result."""
    benchmark.group = case.group
    benchmark.extra_info.update(contestant=case.contestant, shape=case.shape_name,
                                dtype=case.dtype, threads=case.threads)
    with peer_threads(case):
        prepare, run = setup_contestant(*inputs, case.threads)
        return benchmark.pedantic(run, setup=prepare, rounds=case.rounds,
                                  iterations=1, warmup_rounds=1)


def assert_value(actual, expected, case, what="loss"):
    """The contestant's value agrees with the float64 reference to the
    tolerance of `python -m cyce bench` (float32 1e-4, float64 1e-8);
    only finite where there is no reference (expected None: a large case)."""
    if expected is None:
        assert np.isfinite(float(actual)), f"{case.contestant}: {what} {float(actual)!r}"
        return
    rtol = LOSS_RTOL[case.dtype]
    assert np.isclose(float(actual), expected, rtol=rtol, atol=0.0), (
        f"{case.contestant}: {what} {float(actual)!r}, float64 reference {expected!r} (rtol {rtol})"
    )
