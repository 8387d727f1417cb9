"""logsumexp, log_softmax and softmax against the float64 reference."""

import numpy as np
import pytest

import cyce
import reference
from conftest import assert_close

SHAPES = [(1, 1), (2,), (5, 3), (4, 6, 9), (17, 1000), (3, 100000)]
DTYPES = [np.float32, np.float64]


def logits(rng, shape, dtype):
    return (rng.standard_normal(shape) * 5).astype(dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_logsumexp(kernel_build, rng, shape, dtype):
    x = logits(rng, shape, dtype)
    got = cyce.logsumexp(x)
    assert np.shape(got) == shape[:-1] and got.dtype == x.dtype
    assert_close(got, reference.logsumexp(x), dtype)
    out = np.empty(shape[:-1], dtype=dtype)
    assert cyce.logsumexp(x, out=out) is out
    np.testing.assert_array_equal(out, got)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
def test_softmax_and_log_softmax(kernel_build, rng, shape, dtype, name):
    x = logits(rng, shape, dtype)
    fn = getattr(cyce, name)
    expected = getattr(reference, name)(x)
    got = fn(x)
    assert got.shape == shape and got.dtype == x.dtype
    assert_close(got, expected, dtype)
    out = np.empty_like(x)
    assert fn(x, out=out) is out
    np.testing.assert_array_equal(out, got)
    inplace = x.copy()
    assert fn(inplace, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, got)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_edges(kernel_build, dtype):
    big = np.finfo(dtype).max / 2
    x = np.array([
        [big, -big, 0.0],
        [-np.inf, 1.0, 2.0],
        [-np.inf, -np.inf, -np.inf],
        [np.inf, 0.0, 1.0],
        [np.nan, 0.0, 1.0],
        [1e-30, 0.0, -1e-30],
    ], dtype=dtype)
    lse = cyce.logsumexp(x)
    np.testing.assert_array_equal(np.isnan(lse), [False, False, False, False, True, False])
    assert lse[0] == dtype(big)
    assert lse[2] == -np.inf and lse[3] == np.inf  # PyTorch's convention
    assert_close(lse[[0, 1, 5]], reference.logsumexp(x[[0, 1, 5]]), dtype)
    p = cyce.softmax(x)
    np.testing.assert_array_equal(p[0], [1, 0, 0])
    assert p[1, 0] == 0
    assert np.isnan(p[2:5]).all()  # no distribution: NaN, as in PyTorch
    assert_close(p[[1, 5]], reference.softmax(x[[1, 5]]), dtype)
    logp = cyce.log_softmax(x)
    assert logp[1, 0] == -np.inf and logp[0, 1] == dtype(-2 * big) if np.isfinite(dtype(-2 * big)) else True
    assert np.isnan(logp[2:5]).all()
    assert_close(logp[[1, 5]], reference.log_softmax(x[[1, 5]]), dtype)


def test_confident_rows_keep_all_digits():
    """log_softmax of the winning class is -log1p(tiny), not log(1 + tiny)."""
    x = np.array([[0.0, -20.0, -25.0]], dtype=np.float32)
    expected = -np.log1p(np.exp(-20.0) + np.exp(-25.0))
    np.testing.assert_allclose(cyce.log_softmax(x)[0, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(cyce.logsumexp(x)[0], -expected, rtol=1e-6)


def test_strided_and_fortran(rng):
    base = rng.standard_normal((6, 40))
    for x in (base[:, ::3], np.asfortranarray(base), base[::2, ::-1]):
        for name in ("logsumexp", "log_softmax", "softmax"):
            got = getattr(cyce, name)(x)
            np.testing.assert_array_equal(got, getattr(cyce, name)(np.ascontiguousarray(x)))


def test_empty_and_one_dimensional(rng):
    assert cyce.logsumexp(np.zeros((0, 3))).shape == (0,)
    assert cyce.softmax(np.zeros((0, 3))).shape == (0, 3)
    v = rng.standard_normal(7)
    assert np.ndim(cyce.logsumexp(v)) == 0
    assert_close(cyce.logsumexp(v), reference.logsumexp(v), np.float64)
    assert_close(cyce.softmax(v), reference.softmax(v), np.float64)


def test_same_bits_for_any_thread_count(rng):
    x = rng.standard_normal((999, 129)).astype(np.float32)
    for name in ("logsumexp", "log_softmax", "softmax"):
        fn = getattr(cyce, name)
        first = fn(x, num_threads=1)
        for threads in (2, 3):
            np.testing.assert_array_equal(fn(x, num_threads=threads), first)


def test_bad_out_changes_nothing(rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    before = x.copy()
    with pytest.raises(TypeError, match="out must have dtype float32"):
        cyce.softmax(x, out=np.empty((4, 5)))
    with pytest.raises(ValueError, match=r"out must have shape \(4, 5\)"):
        cyce.softmax(x, out=np.empty((5, 4), dtype=np.float32))
    shared = np.zeros(25, dtype=np.float32)
    shared[:20] = x.reshape(-1)
    with pytest.raises(ValueError, match="overlaps x"):
        cyce.softmax(shared[:20].reshape(4, 5), out=shared[5:].reshape(4, 5))
    np.testing.assert_array_equal(shared[:20], x.reshape(-1))
    with pytest.raises(ValueError, match="C-contiguous"):
        cyce.log_softmax(x, out=np.empty((4, 10), dtype=np.float32)[:, ::2])
    ro = x.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        cyce.softmax(ro, out=ro)
    with pytest.raises(ValueError, match=r"out must have shape \(4,\)"):
        cyce.logsumexp(x, out=np.empty(5, dtype=np.float32))
    np.testing.assert_array_equal(x, before)
