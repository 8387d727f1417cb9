import numpy as np
import pytest

import contextlib

import cyce._core
import cyce._dispatch

# every kernel level this build has and this CPU runs (baseline, avx2, avx512)
LEVELS = cyce._dispatch.runnable_levels()


@contextlib.contextmanager
def kernels_of_level(level):
    """Every call runs on the kernels of `level` for the duration."""
    previous = cyce._core.current_level()
    cyce._core.use_level(level)
    try:
        yield
    finally:
        cyce._core.use_level(previous)


@pytest.fixture(params=LEVELS)
def kernel_build(request):
    """Run a test once with every kernel level this CPU can execute."""
    with kernels_of_level(request.param):
        yield request.param


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


def tolerance(dtype):
    """(rtol, atol factor) of DESIGN.md: float32 1e-5, float64 1e-12."""
    return (1e-5, 1e-6) if np.dtype(dtype) == np.float32 else (1e-12, 1e-13)


def assert_close(actual, expected, dtype, what="", term_size=0.0):
    """Relative tolerance of the dtype, with an absolute floor tied to the
    largest reference value (for entries like p ~ 1e-30 next to 1) or to
    term_size, the size of the terms a gradient is a difference of."""
    rtol, atol_factor = tolerance(dtype)
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    finite = expected[np.isfinite(expected)]
    scale = max(np.max(np.abs(finite)) if finite.size else 0.0, term_size)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol_factor * scale,
                               equal_nan=True, err_msg=what)
