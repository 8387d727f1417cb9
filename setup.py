"""Build cyce's Cython kernels.

Builds of one kernel source (cyce/_kernels.pxi) are compiled:
  cyce._kernels_baseline  for any CPU of the target architecture,
  cyce._kernels_avx2      with -mavx2 -mfma, on x86-64 when the compiler has them,
  cyce._kernels_avx512    with AVX-512 (F, DQ, BW, VL) and 512-bit vectors, likewise;
cyce/_dispatch.py imports the widest one the CPU (and its OS) supports.

OpenMP is used when the compiler accepts -fopenmp (probed below).  Without it
the build is serial, with the same results, and a warning; set
CYCE_REQUIRE_OPENMP=1 to make a missing OpenMP an error (CI does).

No -ffast-math: it would let the compiler drop the inf/NaN handling cyce
promises.  -fno-math-errno and -fno-trapping-math are enough for GCC to
vectorise the loops (see ../shared/PERF-NOTES.md).
"""

import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

# -fwrapv: CPython's own CFLAGS carry it, and the kernels were measured
# with it: without it GCC laid out the blocked exp loops so that the loss
# alone of 4096 x 32000 float32 took 84 ms instead of 61 (AVX2, a scratch
# harness), so it is not left to the interpreter's build.  An undeclared
# function (a misspelt intrinsic) must fail the build, not leave an
# undefined symbol for import time.
BASE_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fwrapv",
              "-Werror=implicit-function-declaration"]
# Loops start on 32-byte boundaries, so that where a hot loop lands does not
# move with unrelated code: with GCC's default, an edit elsewhere in the
# module moved the short-row tile kernel's function by a few bytes (its
# instructions unchanged), and 65536 x 10 in place, 1 thread, AVX-512, took
# 15% longer in float32 (1.03 -> 1.18 ms), or in another build 12% longer in
# float64 (1.32 -> 1.48).  With it both are back (1.05 and 1.33), the long
# rows within 1%.  (-falign-functions=64 fixed float64 and slowed float32.)
LOOP_ALIGN_FLAGS = ["-falign-loops=32"]
AVX2_FLAGS = ["-mavx2", "-mfma"]
# 512-bit vectors: GCC otherwise keeps 256-bit ones even where AVX-512 exists
AVX512_FLAGS = AVX2_FLAGS + ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl",
                             "-mprefer-vector-width=512"]
OPENMP_FLAG = "-fopenmp"

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "freethreading_compatible": True,
}


def compiler_command():
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return cc.split()


def compiler_accepts(flags, source="int main(void) { return 0; }\n", link=True):
    """Whether the C compiler builds (and links) a small program with flags."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(source)
        cmd = compiler_command() + flags + [src, "-o", os.path.join(tmp, "probe")]
        if not link:
            cmd.insert(-2, "-c")
        try:
            result = subprocess.run(cmd, capture_output=True, cwd=tmp)
        except OSError:
            return False
        return result.returncode == 0


OPENMP_PROBE = """
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""


def want_openmp():
    if compiler_accepts([OPENMP_FLAG], OPENMP_PROBE):
        return True
    message = (
        "cyce: the C compiler does not accept -fopenmp; building the kernels "
        "serial (same results, one thread)."
    )
    if os.environ.get("CYCE_REQUIRE_OPENMP", "") not in ("", "0"):
        sys.exit(message + " CYCE_REQUIRE_OPENMP is set, so this is an error.")
    print("WARNING: " + message, file=sys.stderr)
    return False


def want_simd(flags):
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return compiler_accepts(flags + ["-c"], link=False)


def kernel_extension(level, flags, openmp):
    c_string = '"{}"'.format(" ".join(flags).replace('"', ""))
    return Extension(
        "cyce._kernels_" + level,
        sources=["cyce/_kernels_{}.pyx".format(level)],
        include_dirs=["cyce/_src", numpy.get_include()],
        define_macros=[
            ("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION"),
            ("CYCE_SIMD_LEVEL", '"{}"'.format(level)),
            ("CYCE_CFLAGS", c_string),
        ],
        extra_compile_args=flags,
        extra_link_args=[OPENMP_FLAG] if openmp else [],
        depends=[
            "cyce/_kernels.pxi",
            "cyce/_binary.pxi",
            "cyce/_src/cyce_avx512.h",
            "cyce/_src/cyce_avx512_template.h",
            "cyce/_src/cyce_exp.h",
            "cyce/_src/cyce_rows.h",
            "cyce/_src/cyce_rows_template.h",
        ],
    )


def extensions():
    openmp = want_openmp()
    base = BASE_FLAGS + ([OPENMP_FLAG] if openmp else [])
    if compiler_accepts(LOOP_ALIGN_FLAGS + ["-c"], link=False):
        base = base + LOOP_ALIGN_FLAGS
    exts = [kernel_extension("baseline", base, openmp)]
    if want_simd(AVX2_FLAGS):
        exts.append(kernel_extension("avx2", base + AVX2_FLAGS, openmp))
    if want_simd(AVX512_FLAGS):
        exts.append(kernel_extension("avx512", base + AVX512_FLAGS, openmp))
    return cythonize(exts, compiler_directives=DIRECTIVES)


setup(ext_modules=extensions())
