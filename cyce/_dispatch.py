"""Pick the kernel build for this CPU and decide how many threads a call uses.

Two builds of the same kernels exist (see setup.py): `_kernels_avx2`, used
where the CPU has AVX2 and FMA, and `_kernels_baseline` everywhere else.
`CYCE_SIMD=baseline` in the environment forces the baseline build (the tests
use it to check both).  Results are bitwise reproducible for any thread count
within one build; the two builds may differ in the last bits.
"""

import os

from . import _kernels_baseline

try:
    from . import _kernels_avx2
except ImportError:  # not an x86-64 build, or the compiler had no AVX2
    _kernels_avx2 = None


def _select():
    forced = os.environ.get("CYCE_SIMD", "").strip().lower()
    if forced not in ("", "baseline", "avx2"):
        raise ImportError(
            f"CYCE_SIMD={forced!r} is not a kernel build: use 'baseline' or 'avx2', or unset it"
        )
    if forced == "baseline" or _kernels_avx2 is None:
        return _kernels_baseline
    if not _kernels_baseline.cpu_has_avx2_fma():
        if forced == "avx2":
            raise ImportError("CYCE_SIMD=avx2 but this CPU lacks AVX2/FMA")
        return _kernels_baseline
    return _kernels_avx2


kernels = _select()

# Below this many elements (rows x classes) a call with num_threads=None runs
# on one thread: waking a second OpenMP thread (a few microseconds) costs more
# than it saves on so little work.  A provisional figure (about 30 us of
# single-thread work); the measured crossover is the Speed issue's to set.
SERIAL_BELOW = 1 << 15

# A bound on the threads one call starts, whatever num_threads asks for.
MAX_THREADS = 256


def threads_for(num_threads, n_rows, n_elements):
    """Threads for one call: num_threads (validated) or OpenMP's default,
    never more than there are rows, and one for small inputs."""
    if num_threads is None:
        if n_elements < SERIAL_BELOW:
            return 1
        num_threads = kernels.default_threads()
    return max(1, min(num_threads, n_rows, MAX_THREADS))
