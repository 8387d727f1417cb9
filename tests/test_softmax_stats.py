"""softmax_stats against float64 NumPy references (and mpmath at the extremes).

The reference below is written from softmax_stats' definition (its
docstring), not from its kernel: the mapped logits z = c tanh(x / c) / T
(z = x / T without a softcap, -inf kept), then reference.logsumexp(z),
reference.log_softmax(z) at the label, the entropy as -sum p log p (a sum
of terms >= 0 that keeps a confident row's digits; the kernel computes
log(S) - sum(e (z - max)) / S instead), and np.argmax of the raw logits.
Inputs are converted to float64 exactly first (half ones too), so a float32
or half call is compared with the exact result for its rounded inputs.

Tolerances are conftest.tolerance's (README.md's "Accuracy") for the dtype
the results are in: float64 for float64 logits, float32 otherwise.  Where
the map is not exact in that dtype (a softcap, or a temperature that is not
a power of two) the kernel rounds z itself, each z_j by about an ulp of
|z_j|, and no implementation in that dtype can do better: lse moves by up
to that much of max |z|, logprob by twice, the entropy by that much times
sum_j p_j |z_j - E z| (its derivative is -p_j (z_j - E z)).  MAP_ULPS
machine epsilons of those sizes, row by row, are allowed on top.
"""

import math

import numpy as np
import pytest

import cyce
import reference
from conftest import LEVELS, kernels_of_level, tolerance

BLOCK = 2048          # softmax_stats' docstring: a row goes 2048 classes at a time
MAP_ULPS = 4          # machine epsilons per unit of |z| the map's rounding may cost
TEMPERATURES = [1.0, 0.5, 3.0]
SOFTCAPS = [None, 1.0, 30.0]
DTYPES = [np.float32, np.float64]


def name_of(dtype):
    return np.dtype(dtype).name


def cap_id(c):
    return "nocap" if c is None else f"cap{c:g}"


def as_float64(x):
    """Any float array (bfloat16 too) as float64, exactly."""
    return np.asarray(x).astype(np.float64)


def compute_dtype(dtype):
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


# ------------------------------------------------------------- the reference

def mapped(x, temperature=1.0, softcap=None):
    """z = c tanh(x / c) / T, or x / T; a -inf logit stays -inf, in float64."""
    x = as_float64(x)
    with np.errstate(invalid="ignore", over="ignore"):
        if softcap is None:
            return x / temperature
        return np.where(x == -np.inf, -np.inf, softcap * np.tanh(x / softcap) / temperature)


def map_is_exact(temperature, softcap):
    """z = x / T is exact (barring overflow) for a power of two T."""
    return softcap is None and math.frexp(temperature)[0] == 0.5


class Expected:
    """The float64 statistics of the mapped rows, and the sizes the map's
    rounding may cost each of them (zero where the map is exact)."""

    def __init__(self, x, labels=None, temperature=1.0, softcap=None):
        x64 = as_float64(x)
        z = mapped(x64, temperature, softcap)
        self.lse = reference.logsumexp(z)
        logp = reference.log_softmax(z)
        with np.errstate(invalid="ignore", over="ignore"):
            p = np.exp(logp)
            plogp = np.where(p > 0, p * logp, 0.0)   # a masked class adds 0
            entropy = -plogp.sum(axis=-1)
            mean_z = np.where(p > 0, p * z, 0.0).sum(axis=-1, keepdims=True)
            spread = np.where(p > 0, p * np.abs(z - mean_z), 0.0).sum(axis=-1)
        defined = np.isfinite(self.lse)       # NaN, +inf and all -inf rows: no distribution
        self.entropy = np.where(defined, entropy, np.nan)
        self.logprob = None
        if labels is not None:
            y = np.asarray(labels, dtype=np.int64)
            self.logprob = np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]
        self.argmax = np.argmax(x64, axis=-1)  # the first max, or the first NaN
        if map_is_exact(temperature, softcap):
            self.zmax = np.zeros(self.lse.shape)
        else:
            finite = np.where(np.isfinite(z), np.abs(z), 0.0)
            self.zmax = finite.max(axis=-1)
        self.spread = np.where(defined, spread, 0.0)


def assert_stat(actual, expected, dtype, what, map_error=0.0):
    """NaN exactly where the reference is NaN, infinities equal, finite
    values within conftest.tolerance of the compute dtype (the absolute
    floor tied to the largest |reference|, as conftest.assert_close) plus
    MAP_ULPS epsilons of map_error (an array of the shape, or a scalar)."""
    cd = compute_dtype(dtype)
    rtol, atol_factor = tolerance(cd)
    eps = float(np.finfo(cd).eps)
    expected = np.asarray(expected, np.float64)
    actual = np.asarray(actual).astype(np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(actual), nan, err_msg=f"{what}: where NaN")
    inf = np.isinf(expected)
    np.testing.assert_array_equal(actual[inf], expected[inf], err_msg=f"{what}: infinities")
    finite = ~(nan | inf)
    scale = float(np.max(np.abs(expected[finite]), initial=0.0))
    atol = atol_factor * scale + MAP_ULPS * eps * np.broadcast_to(map_error, expected.shape)
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(actual - expected) <= atol + rtol * np.abs(expected)) & finite
    if bad.any():
        where = np.flatnonzero(bad)[:6]
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} values off the reference: at flat indices "
            f"{where.tolist()} got {actual.reshape(-1)[where].tolist()}, expected "
            f"{expected.reshape(-1)[where].tolist()}, allowed "
            f"{(atol + rtol * np.abs(expected)).reshape(-1)[where].tolist()}")


def check_stats(got, exp, dtype, what=""):
    """Every statistic of got (a SoftmaxStats) against exp (an Expected)."""
    assert isinstance(got, cyce.SoftmaxStats)
    assert_stat(got.lse, exp.lse, dtype, f"{what} lse", exp.zmax)
    assert_stat(got.entropy, exp.entropy, dtype, f"{what} entropy", exp.zmax * exp.spread)
    if exp.logprob is None:
        assert got.logprob is None
    else:
        assert_stat(got.logprob, exp.logprob, dtype, f"{what} logprob", 2 * exp.zmax)
    np.testing.assert_array_equal(got.argmax, exp.argmax, err_msg=f"{what} argmax")
    finite_entropy = np.asarray(got.entropy)[np.isfinite(exp.entropy)]
    assert (finite_entropy >= 0).all(), f"{what}: a negative entropy"


def check_types(got, x, with_labels):
    """Shapes logits.shape[:-1] (NumPy scalars for 1-D logits), float64 for
    float64 logits and float32 otherwise, int64 argmax."""
    shape = np.shape(x)[:-1]
    real = np.float64 if np.asarray(x).dtype == np.float64 else np.float32
    fields = [got.lse, got.entropy] + ([got.logprob] if with_labels else [])
    for value in fields:
        assert value.dtype == real, (value.dtype, real)
        assert np.shape(value) == shape
        if not shape:
            assert isinstance(value, np.generic) and not isinstance(value, np.ndarray)
    assert got.argmax.dtype == np.int64 and np.shape(got.argmax) == shape
    if not shape:
        assert isinstance(got.argmax, np.generic)
    if not with_labels:
        assert got.logprob is None


def logits(rng, shape, dtype, scale=4.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def labels_for(rng, shape):
    return rng.integers(0, shape[-1], size=shape[:-1])


def test_reference_entropy_is_the_definition(rng):
    """Guards the reference: its entropy is lse - sum(softmax(z) z) and its
    logprob z[label] - lse on ordinary rows (both formulas lose nothing
    there, but for the naive entropy's cancellation: an absolute error of a
    few ulps of |z|), for every map."""
    x = logits(rng, (50, 13), np.float64)
    y = labels_for(rng, x.shape)
    for temperature in TEMPERATURES:
        for softcap in SOFTCAPS:
            exp = Expected(x, y, temperature, softcap)
            z = mapped(x, temperature, softcap)
            lse = np.log(np.exp(z).sum(axis=-1))
            p = np.exp(z - lse[:, None])
            np.testing.assert_allclose(exp.lse, lse, rtol=1e-14)
            np.testing.assert_allclose(exp.entropy, lse - (p * z).sum(axis=-1), rtol=1e-12,
                                       atol=1e-14 * np.abs(z).max())
            np.testing.assert_allclose(exp.logprob, z[np.arange(50), y] - lse, rtol=1e-13,
                                       atol=1e-14 * np.abs(z).max())


# ---------------------------------------------------------- the big shapes

# each shape once per dtype, each with its own (temperature, softcap), the
# six pairs covering every temperature and every softcap
BIG = {
    np.float32: [((65536, 10), 1.0, None), ((4096, 1000), 0.5, 30.0), ((64, 70001), 3.0, 1.0)],
    np.float64: [((65536, 10), 3.0, 30.0), ((4096, 1000), 1.0, 1.0), ((64, 70001), 0.5, None)],
}


@pytest.mark.parametrize("dtype", DTYPES, ids=name_of)
@pytest.mark.parametrize("case", [0, 1, 2], ids=["65536x10", "4096x1000", "64x70001"])
def test_big_shapes_match_reference(rng, dtype, case):
    """Every statistic, with and without labels, at every kernel level; a
    few rows carry -inf masks and tied maxima; without labels lse, entropy
    and argmax are the same bits as with them."""
    shape, temperature, softcap = BIG[dtype][case]
    x = logits(rng, shape, dtype)
    y = labels_for(rng, shape)
    n, c = shape
    x[::97, : c // 3] = -np.inf                     # masked classes, labels among them
    x[5::101, [0, c - 1]] = 40.0                    # a tie, first and last class
    if c > 2 * BLOCK:
        x[7, [BLOCK + 3, 5 * BLOCK - 1]] = 40.0     # a tie across blocks
    exp = Expected(x, y, temperature, softcap)
    kwargs = dict(temperature=temperature, logit_softcap=softcap)
    for level in LEVELS:
        with kernels_of_level(level):
            got = cyce.softmax_stats(x, y, **kwargs)
            check_types(got, x, True)
            check_stats(got, exp, dtype, f"{level} {shape}")
            alone = cyce.softmax_stats(x, **kwargs)
            check_types(alone, x, False)
            for field in ("lse", "entropy", "argmax"):
                assert getattr(alone, field).tobytes() == getattr(got, field).tobytes(), (level, field)
    assert np.isneginf(got.logprob[::97][y[::97] < c // 3]).all()


# ---------------------------------------------------- small and odd shapes

SMALL_SHAPES = [(9, 1), (6, 2), (5, BLOCK - 1), (4, BLOCK), (4, BLOCK + 1), (3, 2 * BLOCK + 1),
                (2, 3, 17), (13,), (130, 32)]


@pytest.mark.parametrize("shape", SMALL_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=name_of)
@pytest.mark.parametrize("temperature", TEMPERATURES, ids=lambda t: f"T{t:g}")
@pytest.mark.parametrize("softcap", SOFTCAPS, ids=cap_id)
def test_small_shapes_match_reference(kernel_build, rng, shape, dtype, temperature, softcap):
    """1 class (lse = z, logprob 0, entropy 0), rows on either side of a
    block of 2048 and two blocks plus one, 3-D and 1-D logits (scalars out),
    short rows: every statistic matches, with labels and without."""
    x = logits(rng, shape, dtype)
    y = labels_for(rng, shape)
    kwargs = dict(temperature=temperature, logit_softcap=softcap)
    exp = Expected(x, y, temperature, softcap)
    got = cyce.softmax_stats(x, y, **kwargs)
    check_types(got, x, True)
    check_stats(got, exp, dtype, str(shape))
    alone = cyce.softmax_stats(x, **kwargs)
    check_types(alone, x, False)
    check_stats(alone, Expected(x, None, temperature, softcap), dtype, f"{shape} no labels")
    if shape[-1] == 1:
        assert (np.asarray(got.entropy) == 0).all() and (np.asarray(got.logprob) == 0).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=name_of)
def test_non_contiguous_logits(rng, dtype):
    """Strided, Fortran-ordered, reversed and transposed views give the bits
    of their contiguous copies, which match the reference; labels of any
    integer dtype, strided, and as a list, give the int64 labels' bits."""
    base = logits(rng, (6, 5, 2 * BLOCK + 200), dtype)
    views = [base[:, :, ::2], np.asfortranarray(base[:, :, ::2]), base[::-1, :, ::-3],
             base[:, 1, :].T[:70].T, base.transpose(1, 0, 2)]
    for temperature, softcap in [(1.0, None), (3.0, 30.0)]:
        kwargs = dict(temperature=temperature, logit_softcap=softcap)
        for view in views:
            assert not view.flags.c_contiguous
            y = labels_for(rng, view.shape)
            got = cyce.softmax_stats(view, y, **kwargs)
            same = cyce.softmax_stats(np.ascontiguousarray(view), y, **kwargs)
            for a, b in zip(got, same):
                assert a.tobytes() == b.tobytes()
            check_stats(got, Expected(view, y, temperature, softcap), dtype, str(view.shape))
    x = logits(rng, (40, 9), dtype)
    y = labels_for(rng, x.shape)
    expected = cyce.softmax_stats(x, y)
    strided_labels = np.repeat(y, 2)[::2]
    for labels in [y.astype(np.uint8), y.astype(np.int8), y.astype(np.int32), y.astype(np.uint64),
                   strided_labels, y.tolist()]:
        got = cyce.softmax_stats(x, labels)
        np.testing.assert_array_equal(got.logprob, expected.logprob)


# ---------------------------------------------------------- half precision

@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("shape", [(7, 3), (64, 1000), (3, BLOCK + 300)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("temperature, softcap", [(1.0, None), (0.5, 30.0), (3.0, 1.0), (3.0, None)])
def test_half_precision_inputs(kernel_build, rng, half, shape, temperature, softcap):
    """float16 and bfloat16 logits (with -inf masks and a masked label) give
    float32 statistics within float32's tolerance of the float64 reference
    of the same half values."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dtype = np.dtype(np.float16) if half == "float16" else np.dtype(ml_dtypes.bfloat16)
    x = logits(rng, shape, dtype)
    y = labels_for(rng, shape)
    x[1, : shape[-1] // 2] = -np.inf
    y[1] = 0
    kwargs = dict(temperature=temperature, logit_softcap=softcap)
    exp = Expected(x, y, temperature, softcap)
    got = cyce.softmax_stats(x, y, **kwargs)
    check_types(got, x, True)
    for value in (got.lse, got.logprob, got.entropy):
        assert value.dtype == np.float32
    check_stats(got, exp, dtype, half)
    assert got.logprob[1] == -np.inf


# ------------------------------------------------------ masks, ties, specials

@pytest.mark.parametrize("dtype", DTYPES, ids=name_of)
@pytest.mark.parametrize("temperature, softcap", [(1.0, None), (0.5, None), (3.0, 1.0), (1.0, 30.0)])
def test_minus_inf_masks(kernel_build, rng, dtype, temperature, softcap):
    """Masked (-inf) classes have probability 0 and add 0 to the entropy: a
    row's statistics are those of the row without them (a label on a masked
    class has logprob -inf); whole blocks masked, the first one included, and
    a row with one class left (entropy 0, logprob 0)."""
    n = 3 * BLOCK + 100
    x = logits(rng, (8, n), dtype)
    y = labels_for(rng, x.shape)
    mask = rng.random(x.shape) < 0.3
    x[mask] = -np.inf
    x[1, :BLOCK] = -np.inf                    # the first block, all masked
    x[2, BLOCK:3 * BLOCK] = -np.inf           # two middle blocks
    x[3, :] = -np.inf
    x[3, 2 * BLOCK + 5] = 1.5                 # one class left ...
    y[3] = 2 * BLOCK + 5                      # ... and it is the label
    x[4, -1] = -np.inf
    y[4] = n - 1                              # a masked label, the last class
    y[5] = np.flatnonzero(mask[5])[0]         # a masked label, in the first block
    kwargs = dict(temperature=temperature, logit_softcap=softcap)
    exp = Expected(x, y, temperature, softcap)
    got = cyce.softmax_stats(x, y, **kwargs)
    check_stats(got, exp, dtype)
    assert got.logprob[4] == -np.inf and got.logprob[5] == -np.inf
    assert got.entropy[3] == 0 and got.logprob[3] == 0
    np.testing.assert_array_equal(got.argmax[3], 2 * BLOCK + 5)
    # row 0 without its masked classes: the same statistics to rounding
    keep = ~mask[0]
    label = int(keep[: y[0]].sum()) if keep[y[0]] else 0
    compact = cyce.softmax_stats(x[0, keep], label, **kwargs)
    assert_stat(got.lse[0], compact.lse, dtype, "lse of the row without its mask", exp.zmax[0])
    assert_stat(got.entropy[0], compact.entropy, dtype, "entropy without the mask",
                exp.zmax[0] * exp.spread[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=name_of)
@pytest.mark.parametrize("softcap", [None, 1.0, 30.0], ids=cap_id)
def test_argmax_ties_go_to_the_first_index(kernel_build, rng, dtype, softcap):
    """Tied maxima within a block, at the two sides of a block boundary,
    blocks apart (the later one in the short last block), the whole row
    equal; and maxima the softcap saturates to the same z (1e30 and 2e30,
    x and the next float after it): argmax is the first index of the largest
    RAW logit (np.argmax)."""
    n = 3 * BLOCK + 17
    x = logits(rng, (10, n), dtype)
    x[0, [3, 9]] = 50.0
    x[1, [BLOCK - 1, BLOCK]] = 50.0
    x[2, [BLOCK + 1, 3 * BLOCK + 4]] = 50.0
    x[3, [2, BLOCK + 2, 2 * BLOCK + 2, n - 1]] = 50.0
    x[4, :] = 0.25
    x[5, 100] = 1e30
    x[5, 2 * BLOCK + 9] = 2e30                 # the softcap maps both to c
    x[6, 7] = 1e30
    x[6, 3 * BLOCK + 1] = 1e30                 # a tie after the map and before
    big = dtype(60.0)
    x[7, 11] = big
    x[7, BLOCK + 11] = np.nextafter(big, dtype(np.inf))   # the larger raw logit, tanh rounds both alike
    x[8, :] = -np.inf
    x[8, [BLOCK + 8, 2 * BLOCK]] = -3.0        # a tie among the only finite classes
    x[9, :] = -np.inf                          # all masked: argmax 0
    got = cyce.softmax_stats(x, logit_softcap=softcap)
    expected = np.argmax(x.astype(np.float64), axis=-1)
    np.testing.assert_array_equal(got.argmax, expected)
    np.testing.assert_array_equal(got.argmax[:10],
                                  [3, BLOCK - 1, BLOCK + 1, 2, 0, 2 * BLOCK + 9, 7, BLOCK + 11,
                                   BLOCK + 8, 0])
    with np.errstate(over="ignore"):
        check_stats(cyce.softmax_stats(x, logit_softcap=softcap),
                    Expected(x, None, 1.0, softcap), dtype, "ties")


@pytest.mark.parametrize("dtype", DTYPES, ids=name_of)
@pytest.mark.parametrize("softcap", [None, 30.0], ids=cap_id)
def test_nan_rows(kernel_build, rng, dtype, softcap):
    """A NaN anywhere in a row makes its lse, logprob and entropy NaN, and
    its argmax the index of its first NaN (np.argmax), also when a larger
    logit or a +inf comes first or the NaN is blocks in; the other rows keep
    their values."""
    n = 2 * BLOCK + 50
    x = logits(rng, (8, n), dtype)
    y = labels_for(rng, x.shape)
    x[0, 0] = np.nan
    x[1, 5] = 1e4
    x[1, [BLOCK + 7, BLOCK + 9]] = np.nan      # the max comes first
    x[2, 3] = np.inf
    x[2, 2 * BLOCK + 1] = np.nan               # +inf comes first
    x[3, :] = -np.inf
    x[3, n - 1] = np.nan                       # NaN among -inf, the last class
    x[4, :] = np.nan
    x[6, 17] = -np.nan                         # a negative NaN is a NaN
    got = cyce.softmax_stats(x, y, logit_softcap=softcap)
    rows = [0, 1, 2, 3, 4, 6]
    for field in ("lse", "logprob", "entropy"):
        assert np.isnan(getattr(got, field)[rows]).all(), field
    np.testing.assert_array_equal(got.argmax[rows], [0, BLOCK + 7, 2 * BLOCK + 1, n - 1, 0, 17])
    with np.errstate(invalid="ignore"):
        check_stats(got, Expected(x, y, 1.0, softcap), dtype, "nan rows")
    clean = cyce.softmax_stats(x[[5, 7]], y[[5, 7]], logit_softcap=softcap)
    for a, b in zip(clean, got):
        assert a.tobytes() == b[[5, 7]].tobytes()


@pytest.mark.parametrize("dtype", DTYPES, ids=name_of)
@pytest.mark.parametrize("temperature", [1.0, 3.0], ids=lambda t: f"T{t:g}")
def test_infinite_rows(kernel_build, rng, dtype, temperature):
    """Without a softcap a row holding +inf has lse = +inf and NaN entropy
    and logprob (its label on the +inf or not), argmax the first +inf; an
    all -inf row has lse = -inf, NaN entropy and logprob, argmax 0.  With a
    softcap +inf maps to c / T: every statistic finite, as the reference;
    an all -inf row stays -inf."""
    n = BLOCK + 40
    x = logits(rng, (6, n), dtype)
    x[0, 3] = np.inf
    x[1, [BLOCK + 1, BLOCK + 5]] = np.inf      # in the second block, twice
    x[2, :] = -np.inf
    x[3, :] = -np.inf
    x[3, 0] = np.inf                           # +inf among -inf
    x[4, :2] = np.inf                          # the label on +inf
    y = labels_for(rng, x.shape)
    y[4] = 1
    got = cyce.softmax_stats(x, y, temperature=temperature)
    np.testing.assert_array_equal(got.lse[:5], [np.inf, np.inf, -np.inf, np.inf, np.inf])
    assert np.isnan(got.entropy[:5]).all() and np.isnan(got.logprob[:5]).all()
    np.testing.assert_array_equal(got.argmax[:5], [3, BLOCK + 1, 0, 0, 0])
    check_stats(got, Expected(x, y, temperature, None), dtype, "no softcap")
    for softcap in (1.0, 30.0):
        capped = cyce.softmax_stats(x, y, temperature=temperature, logit_softcap=softcap)
        exp = Expected(x, y, temperature, softcap)
        check_stats(capped, exp, dtype, f"softcap {softcap}")
        keep = [0, 1, 3, 4, 5]
        assert np.isfinite(capped.lse[keep]).all() and np.isfinite(capped.entropy[keep]).all()
        assert capped.lse[2] == -np.inf and np.isnan(capped.entropy[2]) and np.isnan(capped.logprob[2])
        np.testing.assert_array_equal(capped.argmax, got.argmax)


def mp_stats(values, label, temperature, softcap, mpmath):
    """(lse, logprob, entropy) of one row at mpmath's precision, the map
    included; -inf classes dropped, equal logits taken once with their
    count.  log(total) is log1p of the terms other than the top one's
    exp(0) = 1: 1 + e**-1400 is 1 at any precision mpmath is set to."""
    row = as_float64(values)
    distinct, counts = np.unique(row[row != -np.inf], return_counts=True)
    x = [mpmath.mpf(float(v)) for v in distinct]
    if softcap is None:
        z = [v / temperature for v in x]
    else:
        z = [softcap * mpmath.tanh(v / softcap) / temperature for v in x]
    at = max(range(len(z)), key=lambda j: z[j])
    top = z[at]
    e = [mpmath.exp(v - top) for v in z]
    rest = mpmath.fsum([int(n) * ej for j, (n, ej) in enumerate(zip(counts, e)) if j != at]
                       + [int(counts[at]) - 1])
    log_total = mpmath.log1p(rest)
    lse = top + log_total
    s1 = mpmath.fsum(int(n) * ej * (zj - top) for n, ej, zj in zip(counts, e, z))
    entropy = log_total - s1 / (1 + rest)
    z_label = z[int(np.searchsorted(distinct, row[label]))]
    logprob = (z_label - top) - log_total
    return float(lse), float(logprob), float(entropy)


# (row builder, label) for the confident rows: the top logit far above the rest
def confident_rows(dtype):
    rows = []
    for c, top, rest in [(10, 30.0, 0.0), (4, 80.0, 0.0), (1000, 40.0, -2.0),
                         (3 * BLOCK + 9, 45.0, 1.0), (2, 700.0, 0.0), (7, 25.0, -np.inf)]:
        row = np.full(c, rest, dtype)
        at = c // 2 if c > 2 * BLOCK else 1
        row[at] = top
        if rest == -np.inf:
            row[[0, 3]] = 0.0
        rows.append((row, at))
    return rows


@pytest.mark.parametrize("dtype", DTYPES, ids=name_of)
@pytest.mark.parametrize("temperature, softcap", [(1.0, None), (0.5, None), (3.0, None), (1.0, 100.0)])
def test_confident_rows_against_mpmath(kernel_build, dtype, temperature, softcap):
    """A top logit 25 to 700 above the rest (in a long row, blocks in):
    the entropy, ~C e**-D D down to 0, is positive (or 0 where it underflows)
    and correct to the dtype's relative tolerance against mpmath, as is
    logprob at the top (-log1p(rest)) and at another class; lse to rtol."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 60
    cd = compute_dtype(dtype)
    rtol = tolerance(cd)[0]
    eps = float(np.finfo(cd).eps)
    for row, top in confident_rows(dtype):
        z_top = float(mapped(row[top], temperature, softcap))
        # relative: a rounded z moves the entropy by about eps |z| of itself
        allowed = rtol + (0 if map_is_exact(temperature, softcap) else MAP_ULPS * eps * abs(z_top))
        other = 0
        for label in (top, other):
            lse, logprob, entropy = mp_stats(row, label, temperature, softcap, mpmath)
            got = cyce.softmax_stats(row, np.int64(label), temperature=temperature,
                                     logit_softcap=softcap)
            what = (row.size, float(row[top]), label)
            with np.errstate(under="ignore"):
                stored = cd(entropy)
            # a subnormal entropy has fewer digits, and so do the subnormal
            # exps it is the sum of: C (|z| + 1) of their spacing allowed
            floor = row.size * (abs(z_top) + 1) * float(np.finfo(cd).smallest_subnormal)
            if stored == 0:
                assert 0 <= got.entropy <= floor, what
            else:
                assert got.entropy > 0, what
                np.testing.assert_allclose(got.entropy, entropy, rtol=allowed, atol=floor,
                                           err_msg=str(what))
            np.testing.assert_allclose(got.logprob, logprob, rtol=allowed, atol=floor,
                                       err_msg=str(what))
            np.testing.assert_allclose(got.lse, lse, rtol=allowed, err_msg=str(what))
            assert got.argmax == top


@pytest.mark.parametrize("dtype", DTYPES, ids=name_of)
def test_large_magnitudes(kernel_build, dtype):
    """1e30 (and float64's 1e300, float32's 3e38) logits: with a softcap
    every statistic is finite and matches mpmath; without one lse is the
    huge value and entropy and logprob are still exact (mpmath)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 60
    big = 3e38 if dtype == np.float32 else 1e300
    rows = np.array([
        [1e30, -1e30, 0.0, 5.0],
        [1e30, 1e30, -1e30, 1e30],
        [big, 0.0, -big, 1.0],
        [-big, -1e30, -big, -big],
        [1e30, 2e30, 3e30, -1e30],
        [1e-30, -1e-38, 3e-39, 0.0],
    ], dtype=dtype)
    labels = np.array([2, 1, 0, 1, 3, 2])
    cd = compute_dtype(dtype)
    rtol, atol_factor = tolerance(cd)
    for softcap in (None, 1.0, 30.0):
        got = cyce.softmax_stats(rows, labels, logit_softcap=softcap)
        if softcap is not None:
            for field in ("lse", "logprob", "entropy"):
                assert np.isfinite(getattr(got, field)).all(), (softcap, field)
        for i, row in enumerate(rows):
            lse, logprob, entropy = mp_stats(row, labels[i], 1.0, softcap, mpmath)
            what = f"softcap {softcap} row {i}"
            np.testing.assert_allclose(got.lse[i], lse, rtol=rtol, err_msg=what)
            np.testing.assert_allclose(got.logprob[i], logprob, rtol=rtol, err_msg=what)
            np.testing.assert_allclose(got.entropy[i], entropy, rtol=rtol, atol=atol_factor,
                                       err_msg=what)
        np.testing.assert_array_equal(got.argmax, np.argmax(rows, axis=-1))


# ------------------------------------------------------------ determinism

@pytest.mark.parametrize("dtype", DTYPES, ids=name_of)
@pytest.mark.parametrize("temperature, softcap", [(1.0, None), (3.0, 30.0)])
def test_same_bits_for_any_thread_count(kernel_build, rng, dtype, temperature, softcap):
    """1, 2 and 3 threads (the inputs are large enough to be split) give the
    same bits, specials and all."""
    for shape in [(1001, 37), (9, 2 * BLOCK + 900)]:
        x = logits(rng, shape, dtype)
        y = labels_for(rng, shape)
        x[3, 2] = np.nan
        x[4, :] = -np.inf
        x[5, 1] = np.inf
        x[6, [0, -1]] = 90.0
        results = [cyce.softmax_stats(x, y, temperature=temperature, logit_softcap=softcap,
                                      num_threads=threads) for threads in (1, 2, 3)]
        for other in results[1:]:
            for a, b in zip(results[0], other):
                assert a.tobytes() == b.tobytes(), shape
        check_stats(results[0], Expected(x, y, temperature, softcap), dtype, str(shape))


def test_result_is_a_named_tuple(rng):
    x = logits(rng, (4, 5), np.float64)
    got = cyce.softmax_stats(x, [0, 1, 2, 3])
    lse, logprob, entropy, argmax = got
    assert got._fields == ("lse", "logprob", "entropy", "argmax")
    assert got.lse is lse and got.logprob is logprob and got.entropy is entropy and got.argmax is argmax
    assert cyce.softmax_stats(np.zeros((0, 5), np.float32)).lse.shape == (0,)
    empty = cyce.softmax_stats(np.zeros((0, 3, 5)), np.zeros((0, 3), np.int64))
    assert empty.logprob.shape == (0, 3) and empty.argmax.shape == (0, 3)


def test_temperature_one_and_no_softcap_are_the_plain_statistics(rng):
    """temperature=1 (an int, a float, a NumPy float) and logit_softcap=None
    give the same bits as the defaults, and that lse agrees with
    cyce.logsumexp of the same logits to tolerance."""
    for dtype in DTYPES:
        x = logits(rng, (300, 2 * BLOCK + 5), dtype)
        y = labels_for(rng, x.shape)
        plain = cyce.softmax_stats(x, y)
        for kwargs in (dict(temperature=1), dict(temperature=1.0, logit_softcap=None),
                       dict(temperature=np.float32(1.0))):
            for a, b in zip(cyce.softmax_stats(x, y, **kwargs), plain):
                assert a.tobytes() == b.tobytes(), kwargs
        assert_stat(plain.lse, cyce.logsumexp(x), dtype, "against cyce.logsumexp")


# ------------------------------------------------------------- bad inputs

def assert_rejected(args, kwargs, error, pattern):
    """softmax_stats(*args, **kwargs) raises error matching pattern, and
    every array passed is bit for bit what it was."""
    arrays = [a for a in list(args) + list(kwargs.values()) if isinstance(a, np.ndarray)]
    before = [a.copy() for a in arrays]
    with pytest.raises(error, match=pattern):
        cyce.softmax_stats(*args, **kwargs)
    for a, b in zip(arrays, before):
        assert a.tobytes() == b.tobytes()


X = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
Y = np.array([0, 1, 2, 3, 0, 1])

BAD = {
    "temperature 0": ({"temperature": 0.0}, ValueError, r"temperature must be a finite number > 0.*0\.0"),
    "temperature int 0": ({"temperature": 0}, ValueError, r"temperature"),
    "temperature -1": ({"temperature": -1.0}, ValueError, r"temperature.*-1\.0"),
    "temperature nan": ({"temperature": float("nan")}, ValueError, r"temperature.*nan"),
    "temperature inf": ({"temperature": float("inf")}, ValueError, r"temperature.*inf"),
    "temperature -inf": ({"temperature": -math.inf}, ValueError, r"temperature"),
    "temperature text": ({"temperature": "1"}, TypeError, r"temperature must be a real number.*'1'"),
    "temperature None": ({"temperature": None}, TypeError, r"temperature must be a real number"),
    "temperature bool": ({"temperature": True}, TypeError, r"temperature"),
    "temperature array": ({"temperature": np.ones(2)}, TypeError, r"temperature"),
    "softcap 0": ({"logit_softcap": 0.0}, ValueError, r"logit_softcap must be a finite number > 0"),
    "softcap -2": ({"logit_softcap": -2.0}, ValueError, r"logit_softcap.*-2"),
    "softcap nan": ({"logit_softcap": float("nan")}, ValueError, r"logit_softcap.*nan"),
    "softcap inf": ({"logit_softcap": float("inf")}, ValueError, r"logit_softcap.*inf"),
    "softcap text": ({"logit_softcap": "30"}, TypeError, r"logit_softcap must be a real number"),
    "label -100": ({"labels": np.array([0, -100, 2, 3, 0, 1])}, IndexError,
                   r"labels\[1\] = -100 is out of range.*\[0, 4\)"),
    "label -1": ({"labels": np.array([0, 1, 2, 3, 0, -1])}, IndexError, r"labels\[5\] = -1"),
    "label C": ({"labels": np.array([0, 1, 2, 4, 0, 1])}, IndexError, r"labels\[3\] = 4"),
    "uint64 huge label": ({"labels": np.array([0, 2**64 - 1, 0, 0, 0, 0], np.uint64)}, IndexError,
                          r"labels\[1\] = 18446744073709551615"),
    "float labels": ({"labels": np.zeros(6)}, TypeError, r"labels must be integer class indices.*float64"),
    "float32 labels": ({"labels": np.zeros(6, np.float32)}, TypeError, r"labels.*float32"),
    "probabilities": ({"labels": np.full((6, 4), 0.25)}, TypeError, r"labels must be integer class indices"),
    "bool labels": ({"labels": np.zeros(6, bool)}, TypeError, r"labels must be integer"),
    "labels wrong shape": ({"labels": np.array([0, 1, 2])}, ValueError, r"labels has shape \(3,\)"),
    "int logits": ({"logits": np.arange(24).reshape(6, 4)}, TypeError, r"logits must be float32"),
    "0-d logits": ({"logits": np.float32(1.0)}, ValueError, r"logits must have shape"),
    "zero classes": ({"logits": np.ones((6, 0), np.float32)}, ValueError, r"logits has zero classes"),
    "num_threads 0": ({"num_threads": 0}, ValueError, r"num_threads"),
    "num_threads text": ({"num_threads": "2"}, TypeError, r"num_threads must be an integer"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_rejected(case):
    kwargs, error, pattern = BAD[case]
    kwargs = dict(kwargs)
    args = (kwargs.pop("logits", X.copy()), kwargs.pop("labels", Y.copy()))
    if args[0].ndim == 0 and "labels" not in BAD[case][0]:
        args = (args[0], None)
    assert_rejected(args, kwargs, error, pattern)


# ------------------------------------------- maps beyond float32's range

# The map's constants 1/T, c and 1/c must be finite in float32 for float32
# (and half) logits: outside, a ValueError names the argument.  Logits
# whose x / T alone would overflow float32 are fine: the temperature divides
# x - max, never x itself.
CONSTANTS_OUT_OF_RANGE = [(1e-39, None, "temperature"), (1.0, 1e40, "logit_softcap"),
                          (1.0, 1e-39, "logit_softcap")]


@pytest.mark.parametrize("temperature, softcap, name", CONSTANTS_OUT_OF_RANGE)
def test_map_constants_beyond_float32_are_rejected(temperature, softcap, name):
    x = np.array([[0.0, 1.0, -2.0, 3.0]], np.float32)
    with pytest.raises(ValueError, match=name):
        cyce.softmax_stats(x, [3], temperature=temperature, logit_softcap=softcap)
    # float64 logits hold them
    cyce.softmax_stats(x.astype(np.float64), [3], temperature=temperature, logit_softcap=softcap)


@pytest.mark.parametrize("row", [[3e38, 0.0, 3e38, -1.0], [-3e38, 3e38, 1.0, 2.0]])
def test_logits_whose_quotient_overflows_float32(row):
    x = np.array([row], np.float32)
    y = np.array([int(np.argmax(row))])
    exp = Expected(x, y, 0.5, None)
    got = cyce.softmax_stats(x, y, temperature=0.5)
    assert_stat(got.entropy, exp.entropy, np.float32, "entropy")
    assert_stat(got.logprob, exp.logprob, np.float32, "logprob")
    with np.errstate(over="ignore"):
        assert_stat(got.lse, exp.lse.astype(np.float32), np.float32, "lse")
