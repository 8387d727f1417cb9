"""Pick the kernels for this CPU and decide how many threads a call uses.

cyce._core holds one table of kernels per instruction set this build has
(see setup.py): avx512 where the CPU has AVX-512 (F, DQ, BW, VL), avx2
where it has AVX2 and FMA, baseline everywhere else.  The widest the CPU
runs is chosen once, here; `CYCE_SIMD=baseline`, `avx2` or `avx512` in the
environment forces one.  Results are bitwise reproducible for any thread
count at one level; the levels may differ from each other in the last bits.
"""

import os

from . import _core

LEVELS = _core.LEVELS


def runnable_levels():
    """The levels this build has and this CPU runs, narrowest first."""
    return _core.runnable_levels()


def _select():
    forced = os.environ.get("CYCE_SIMD", "").strip().lower()
    if forced not in ("",) + LEVELS:
        raise ImportError(
            f"CYCE_SIMD={forced!r} is not a kernel build: use 'baseline', 'avx2' or 'avx512', or unset it"
        )
    runnable = runnable_levels()
    if forced and forced not in runnable:
        raise ImportError(f"CYCE_SIMD={forced} but this CPU or this build lacks {forced.upper()}")
    _core.use_level(forced or runnable[-1])


_select()

# Below this many elements (rows x classes) a call runs on one thread,
# whatever num_threads asks for (num_threads is a most, not a must): a
# worker that slept between calls takes milliseconds to wake on small VMs,
# which no smaller input repays (docs/performance.md#threads).
SERIAL_BELOW = 1 << 15

# A bound on the threads one call starts, whatever num_threads asks for.
MAX_THREADS = 256

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
# CYCE_LOAD_AWARE=0 keeps OpenMP's default thread count on a busy machine too
LOAD_AWARE = os.environ.get("CYCE_LOAD_AWARE", "1").strip() != "0"


def busy_cap():
    """None, or on a busy machine (a 1-minute load average more than half a
    core above the cores) the threads a default-thread call takes: as many
    fewer than the cores as the load exceeds them by, rounded, at least one.
    A call's threads wait for each other at its end, so one that lost its
    core to another process makes the whole call wait for it.  The average
    follows a change of load in about a minute (docs/performance.md#threads)."""
    if not LOAD_AWARE:
        return None
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    excess = load - CORES
    return None if excess <= 0.5 else max(1, CORES - int(excess + 0.5))


def threads_for(num_threads, n_rows, n_elements):
    """Threads for one call: num_threads (validated), or OpenMP's default
    (on a busy machine at most busy_cap()); never more
    than there are rows (the kernels start no more than they have tasks), and
    one for small inputs."""
    if n_elements < SERIAL_BELOW:
        return 1
    if num_threads is None:
        num_threads = _core.default_threads()
        cap = busy_cap()
        if cap is not None:
            num_threads = min(num_threads, cap)
    return max(1, min(num_threads, n_rows, MAX_THREADS))
