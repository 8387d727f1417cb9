"""cyce's vectorised exp and log1p (cyce_exp.h), in every build, against float64/mpmath."""

import numpy as np
import pytest

from cyce import _core


def ulp_error(got, x, dtype):
    """|got - exp(x)| in units of the last place of the exact result."""
    exact = np.exp(x.astype(np.float64))  # float64 exp: ~0.5 ulp of float64
    rounded = exact.astype(dtype)
    tiny = np.finfo(dtype).smallest_subnormal
    spacing = np.maximum(np.spacing(np.abs(rounded)), tiny)
    return np.abs(got.astype(np.float64) - exact) / spacing


def test_float32_within_two_ulp(kernel_build):
    x = np.linspace(-104.0, 88.7, 4_000_001, dtype=np.float32)
    out = np.empty_like(x)
    _core.exp_values(x, out)
    finite = np.isfinite(np.exp(x.astype(np.float64)).astype(np.float32))
    assert ulp_error(out[finite], x[finite], np.float32).max() <= 2.0


def test_float64_within_two_ulp(kernel_build):
    x = np.linspace(-745.0, 709.7, 2_000_001)
    out = np.empty_like(x)
    _core.exp_values(x, out)
    # float64's own exp is the reference here; check it against mpmath on a sample
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    sample = x[::20011]
    exact = np.array([float(mpmath.exp(mpmath.mpf(float(v)))) for v in sample])
    np.testing.assert_allclose(np.exp(sample), exact, rtol=3e-16)
    err = np.abs(out - np.exp(x)) / np.maximum(np.spacing(np.exp(x)), 5e-324)
    assert err.max() <= 2.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(kernel_build, dtype):
    x = np.array([-np.inf, np.inf, np.nan, 0.0, -0.0, -1e30, 1e30, 1000.0, -1000.0], dtype=dtype)
    out = np.empty_like(x)
    _core.exp_values(x, out)
    with np.errstate(over="ignore"):
        expected = np.exp(x)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonpositive_exp_matches_the_general_one(kernel_build, dtype):
    """The softmax kernels' exp for x <= 0 applies 2**n in one multiply
    instead of two (cyce_exp.h); it must give exactly the general exp's
    results, subnormal ones included, and so stay within its 2 ulp."""
    lowest = -104.0 if dtype == np.float32 else -746.0
    rng = np.random.default_rng(11)
    x = np.concatenate([
        np.linspace(lowest - 1, 0.0, 3_000_001),
        -(10.0 ** rng.uniform(-45, 2.9, 1_000_000)),
        np.array([0.0, -0.0, -np.inf, np.nan, -1e30, lowest, -87.33654, -708.3964]),
    ]).astype(dtype)
    general, nonpos = np.empty_like(x), np.empty_like(x)
    _core.exp_values(x, general)
    _core.exp_values(x, nonpos, nonpositive=True)
    np.testing.assert_array_equal(nonpos, general)
    finite = np.isfinite(x)
    assert ulp_error(nonpos[finite], x[finite], dtype).max() <= 2.0
    assert (nonpos[np.isneginf(x)] == 0).all() and np.isnan(nonpos[np.isnan(x)]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_rows_exp_loop_is_the_nonpositive_exp(kernel_build, dtype):
    """The loop the softmax rows take their exps and sums in (by hand with
    vscalef in the AVX-512 build) gives exactly the non-positive exp's
    values, for every length of a last partial vector; the sum of the terms
    where x != top matches a float64 sum, and the count of x == top is
    exact, with or without storing the exps."""
    rng = np.random.default_rng(12)
    lowest = -104.0 if dtype == np.float32 else -746.0
    shift = dtype(3.5)
    for n in [*range(0, 40), 1000, 4097]:
        x = (rng.uniform(lowest - 3, 0.0, n) + shift).astype(dtype)
        x[rng.random(n) < 0.2] = shift                    # ties at the top
        x[rng.random(n) < 0.05] = -np.inf
        out = np.full(n, 7.0, dtype)
        total, count = _core.span_exp_sum_count(x, out, shift, shift)
        expected = np.empty_like(x)
        _core.exp_values((x - shift).astype(dtype), expected, nonpositive=True)
        np.testing.assert_array_equal(out, expected)
        top = x == shift
        assert count == top.sum()
        exact = expected[~top].astype(np.float64).sum()
        np.testing.assert_allclose(total, exact, rtol=1e-5 if dtype == np.float32 else 1e-13,
                                   atol=1e-300)
        assert _core.span_exp_sum_count(x, None, shift, shift) == (total, count)
    x = np.array([1.0, np.nan, 2.0], dtype)              # NaN reaches the sum
    out = np.empty_like(x)
    total, count = _core.span_exp_sum_count(x, out, dtype(2.0), dtype(2.0))
    assert np.isnan(total) and count == 1 and np.isnan(out[1])


def test_log1p_within_four_ulp(kernel_build):
    """The losses' log1p(sum - 1), for sums from 1 + 1e-300 to far beyond any
    class count, against mpmath on a sample and libm's log1p (itself checked
    against mpmath) everywhere; 0 gives 0, inf inf, NaN NaN."""
    rng = np.random.default_rng(7)
    s = np.concatenate([
        10.0 ** rng.uniform(-300, 300, 400_000),
        rng.uniform(0, 4, 400_000),
        np.geomspace(1e-20, 1e6, 100_000),
    ])
    out = np.empty_like(s)
    _core.log1p_values(s, out)
    exact = np.log1p(s)
    err = np.abs(out - exact) / np.spacing(exact)
    assert err.max() <= 4.0, s[np.argmax(err)]
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    sample = s[::997]
    precise = np.array([float(mpmath.log1p(mpmath.mpf(float(v)))) for v in sample])
    np.testing.assert_allclose(exact[::997], precise, rtol=3e-16)
    special = np.array([0.0, np.inf, np.nan, 5e-324])
    _core.log1p_values(special, out[:4])
    np.testing.assert_array_equal(out[:4], [0.0, np.inf, np.nan, 5e-324])
