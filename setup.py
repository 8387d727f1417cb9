"""Build cyce's one extension module, cyce._core.

Only the kernels (cyce/_src/cyce_kernels.c, and cyce_kernels_half.c for
bfloat16 and float16) are compiled per instruction set, once per level into
objects of their own that export one table of function pointers:
  baseline  for any CPU of the target architecture,
  avx2      with -mavx2 -mfma -mf16c, on x86-64 when the compiler has them,
  avx512    with AVX-512 (F, DQ, BW, VL) and 512-bit vectors, likewise.
The Cython module is compiled once, for the baseline, links the three
objects and picks a table at import from the CPU's features (cyce/_dispatch.py).

OpenMP is used when the compiler accepts -fopenmp (probed below).  Without it
the build is serial, with the same results, and a warning; set
CYCE_REQUIRE_OPENMP=1 to make a missing OpenMP an error (CI does).

No -ffast-math: it would let the compiler drop the inf/NaN handling cyce
promises.  -fno-math-errno and -fno-trapping-math are enough for GCC to
vectorise the loops.  No debug information (-g0): it was most of the size
of the modules.
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
from setuptools.command.build_ext import build_ext

# -fwrapv: CPython's own CFLAGS carry it and the kernels were tuned with it
# (docs/performance.md#compiler-flags), so it is not left to the
# interpreter's build.  An undeclared function (a misspelt intrinsic) must
# fail the build, not leave an undefined symbol for import time.
BASE_FLAGS = ["-O3", "-g0", "-fno-math-errno", "-fno-trapping-math", "-fwrapv",
              "-Werror=implicit-function-declaration"]
# Loops start on 32-byte boundaries, so that where a hot loop lands does not
# move with unrelated code (docs/performance.md#code-placement).
LOOP_ALIGN_FLAGS = ["-falign-loops=32"]
# F16C: float16 conversions in registers (every AVX2 CPU has it)
AVX2_FLAGS = ["-mavx2", "-mfma", "-mf16c"]
# 512-bit vectors: GCC otherwise keeps 256-bit ones even where AVX-512 exists
AVX512_FLAGS = AVX2_FLAGS + ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl",
                             "-mprefer-vector-width=512"]
# (compile flags, link flags) that give OpenMP: GCC's and clang's -fopenmp,
# then Apple clang's, with LLVM's libomp found through CPPFLAGS / LDFLAGS
# (the macOS wheels: pyproject.toml's [tool.cibuildwheel.macos])
OPENMP_CANDIDATES = [(["-fopenmp"], ["-fopenmp"]), (["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
# no debug sections in the module (GNU ld, and Apple's ld)
STRIP_CANDIDATES = [["-Wl,--strip-debug"], ["-Wl,-S"]]

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
        env_flags = [flag for name in ("CPPFLAGS", "CFLAGS") + (("LDFLAGS",) if link else ())
                     for flag in os.environ.get(name, "").split()]
        cmd = compiler_command() + env_flags + flags + [src, "-o", os.path.join(tmp, "probe")]
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
    """(compile flags, link flags) for OpenMP, or ([], []) for a serial build."""
    for compile_flags, link_flags in OPENMP_CANDIDATES:
        if compiler_accepts(compile_flags + link_flags, OPENMP_PROBE):
            return compile_flags, link_flags
    message = (
        "cyce: the C compiler does not accept -fopenmp; building the kernels "
        "serial (same results, one thread)."
    )
    if os.environ.get("CYCE_REQUIRE_OPENMP", "") not in ("", "0"):
        sys.exit(message + " CYCE_REQUIRE_OPENMP is set, so this is an error.")
    print("WARNING: " + message, file=sys.stderr)
    return [], []


def want_simd(flags):
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return compiler_accepts(flags + ["-c"], link=False)


# (source, flags of its own).  The scratch kernels (bfloat16, float16, the
# streamed float32 gradient) at -O2: -O3's loop versioning and peeling of
# their conversions made them 1.1 MB of the module, past the wheel's 1 MiB
# (docs/performance.md#half-precision).  The kernels of mapped logits at -O2
# without vectorised epilogues, for the same budget (docs/performance.md#mapped-logits).
KERNEL_SOURCES = [("cyce/_src/cyce_kernels.c", []), ("cyce/_src/cyce_kernels_half.c", ["-O2"]),
                  ("cyce/_src/cyce_stats.c", ["-O2", "--param", "vect-epilogues-nomask=0"])]
HEADERS = sorted(os.path.join("cyce/_src", name) for name in os.listdir("cyce/_src")
                 if name.endswith(".h"))


def c_string(text):
    return '"{}"'.format(text.replace('"', ""))


class BuildKernels(build_ext):
    """build_ext that first compiles the kernel source once per level, with
    that level's flags, and links the objects into the module."""

    def build_extension(self, ext):
        objects = []
        for level, flags in ext.kernel_levels:
            for source, source_flags in KERNEL_SOURCES:
                objects += self.compiler.compile(
                    [source],
                    output_dir=os.path.join(self.build_temp, "kernels_" + level),
                    macros=[("CYCE_ISA", level), ("CYCE_SIMD_LEVEL", c_string(level)),
                            ("CYCE_CFLAGS", c_string(" ".join(flags)))],
                    include_dirs=["cyce/_src"],
                    extra_postargs=flags + source_flags,
                    depends=HEADERS,
                )
        ext.extra_objects = objects
        super().build_extension(ext)


def extensions():
    openmp_compile, openmp_link = want_openmp()
    base = BASE_FLAGS + openmp_compile
    if compiler_accepts(LOOP_ALIGN_FLAGS + ["-c"], link=False):
        base = base + LOOP_ALIGN_FLAGS
    levels = [("baseline", base)]
    if want_simd(AVX2_FLAGS):
        levels.append(("avx2", base + AVX2_FLAGS))
    if want_simd(AVX512_FLAGS):
        levels.append(("avx512", base + AVX512_FLAGS))
    core = Extension(
        "cyce._core",
        sources=["cyce/_core.pyx"],
        include_dirs=["cyce/_src", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")]
        + [("CYCE_HAVE_" + level.upper(), "1") for level, _ in levels[1:]],
        extra_compile_args=base,
        extra_link_args=openmp_link + next(
            (flags for flags in STRIP_CANDIDATES if compiler_accepts(flags)), []),
        depends=[source for source, _ in KERNEL_SOURCES] + HEADERS,
    )
    (core,) = cythonize([core], compiler_directives=DIRECTIVES)
    core.kernel_levels = levels
    return [core]


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildKernels})
