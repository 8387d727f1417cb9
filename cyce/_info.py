"""What this installation of cyce is: build flags, OpenMP, SIMD level, threads."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any, TextIO

import numpy as np

from . import _core
from ._dispatch import SERIAL_BELOW
from ._version import __version__

# The _OPENMP macro is the date of the specification the compiler implements.
OPENMP_SPECS = {
    200505: "2.5", 200805: "3.0", 201107: "3.1", 201307: "4.0",
    201511: "4.5", 201811: "5.0", 202011: "5.1", 202111: "5.2", 202411: "6.0",
}


def openmp_spec(date: int) -> str:
    """'4.5' for 201511; 'off' for 0 (a serial build)."""
    if date <= 0:
        return "off"
    known = [d for d in OPENMP_SPECS if d <= date]
    return OPENMP_SPECS[max(known)] if known else f"before 2.5 ({date})"


def compiler_name(version: str) -> str:
    """The compiler's __VERSION__, named: GCC's is a bare version ('12.2.0'),
    clang's and others' start with their name."""
    return f"GCC {version}" if version[:1].isdigit() else version


def config() -> dict[str, Any]:
    """The facts show_config() prints, as a dict (values as computed now:
    default_threads follows OMP_NUM_THREADS and threadpoolctl limits)."""
    info = _core.build_info()
    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "compiler": compiler_name(info["compiler"]),
        "cflags": info["cflags"],
        "openmp": info["openmp"] > 0,
        "openmp_version": info["openmp"],
        "simd": info["simd"],
        "simd_builds": _core.built_levels(),
        "cpu_has_avx2_fma": _core.cpu_has_avx2_fma(),
        "cpu_has_avx512": _core.cpu_has_avx512(),
        "simd_forced": os.environ.get("CYCE_SIMD", "").strip() or None,
        "default_threads": _core.default_threads(),
        "serial_below_elements": SERIAL_BELOW,
    }


def show_config(file: TextIO | None = None) -> None:
    """Print version, compiler and flags, OpenMP, the SIMD build chosen at
    import for this CPU and the default thread count (OpenMP's, which
    OMP_NUM_THREADS and threadpoolctl set)."""
    out = file or sys.stdout
    for key, value in config().items():
        if key == "openmp_version":
            value = f"{value} (OpenMP {openmp_spec(value)})" if value else "0 (serial build)"
        elif key == "simd_builds":
            value = ", ".join(value)
        elif key == "simd_forced":
            value = f"CYCE_SIMD={value}" if value else "no"
        print(f"{key:>22}: {value}", file=out)
