"""Pick the kernel build for this CPU and decide how many threads a call uses.

Builds of the same kernels exist (see setup.py): `_kernels_avx512`, used
where the CPU has AVX-512 (F, DQ, BW, VL), `_kernels_avx2` where it has AVX2
and FMA, and `_kernels_baseline` everywhere else.  `CYCE_SIMD=baseline`,
`avx2` or `avx512` in the environment forces one (the tests check each).
Results are bitwise reproducible for any thread count within one build;
the builds may differ from each other in the last bits.
"""

import importlib
import os

from . import _kernels_baseline

LEVELS = ("baseline", "avx2", "avx512")


def _runnable():
    """The builds present that this CPU can run, narrowest first.  A wide
    build is imported only once the CPU is known to run it: its module code
    (not only the kernels) is compiled for that instruction set, so even
    importing it elsewhere could die of SIGILL."""
    builds = {"baseline": _kernels_baseline}
    supported = {"avx2": _kernels_baseline.cpu_has_avx2_fma(), "avx512": _kernels_baseline.cpu_has_avx512()}
    for level in LEVELS[1:]:
        if supported[level]:
            try:
                builds[level] = importlib.import_module(f"cyce._kernels_{level}")
            except ModuleNotFoundError:  # not an x86-64 build, or the compiler lacked the flags
                pass
            # any other ImportError (a build present that does not load, say an
            # undefined symbol) propagates: silently running the narrower build
            # would hide a broken install behind slower results
    return builds


def _select():
    forced = os.environ.get("CYCE_SIMD", "").strip().lower()
    if forced not in ("",) + LEVELS:
        raise ImportError(
            f"CYCE_SIMD={forced!r} is not a kernel build: use 'baseline', 'avx2' or 'avx512', or unset it"
        )
    builds = _runnable()
    if forced:
        if forced not in builds:
            raise ImportError(f"CYCE_SIMD={forced} but this CPU or this build lacks {forced.upper()}")
        return builds[forced]
    return builds[LEVELS[max(LEVELS.index(level) for level in builds)]]


kernels = _select()

# Below this many elements (rows x classes) a call runs on one thread,
# whatever num_threads asks for (num_threads is a most, not a must).
# Measured on the development machine (2 vCPUs; README, Performance): called
# back to back, two threads beat one from about 8000 elements (1.1x at 8000,
# 1.4x at 10240, 1.6x at 32000); but a worker thread that has gone to sleep
# (calls 20 ms apart) takes 4-7 ms to wake on that VM, which no input this
# small repays.  So the threshold sits where the back-to-back gain is clear
# and the work is still under ~60 us.
SERIAL_BELOW = 1 << 15

# A bound on the threads one call starts, whatever num_threads asks for.
MAX_THREADS = 256


def threads_for(num_threads, n_rows, n_elements):
    """Threads for one call: num_threads (validated) or OpenMP's default,
    never more than there are rows, and one for small inputs."""
    if n_elements < SERIAL_BELOW:
        return 1
    if num_threads is None:
        num_threads = kernels.default_threads()
    return max(1, min(num_threads, n_rows, MAX_THREADS))
