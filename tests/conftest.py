import numpy as np
import pytest

import cyce._dispatch
import cyce._softmax

# every kernel build present that this CPU can run (baseline, avx2, avx512)
BUILDS = cyce._dispatch._runnable()


@pytest.fixture(params=sorted(BUILDS))
def kernel_build(request, monkeypatch):
    """Run a test once with every kernel build this CPU can execute."""
    monkeypatch.setattr(cyce._softmax, "kernels", BUILDS[request.param])
    return request.param


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
