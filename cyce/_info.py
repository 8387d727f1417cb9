"""What this installation of cyce is: build flags, OpenMP, SIMD level, threads."""

import sys

import numpy as np

from ._dispatch import SERIAL_BELOW, kernels
from ._version import __version__


def config():
    info = kernels.build_info()
    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "compiler": info["compiler"],
        "cflags": info["cflags"],
        "openmp": info["openmp"] > 0,
        "openmp_version": info["openmp"],
        "simd": info["simd"],
        "default_threads": kernels.default_threads(),
        "serial_below_elements": SERIAL_BELOW,
    }


def show_config(file=None):
    """Print version, compiler and flags, OpenMP, the SIMD build in use and
    the default thread count."""
    for key, value in config().items():
        print(f"{key:>22}: {value}", file=file or sys.stdout)
