"""float16 and bfloat16 (ml_dtypes) inputs against the float64 reference.

The contract: every public function takes float16 and
np.dtype(ml_dtypes.bfloat16) arrays as it takes float32 ones.  Arithmetic is
float32 per element, batch sums float64.  The loss (scalar or "none" array)
and logsumexp are float32; the gradient, softmax and log_softmax have the
input's dtype, rounded to nearest even on store, or are float32 when
grad_out / out is a float32 array.

Every expected value is tests/reference.py (or tests/agreement.py) applied to
the half values converted to float64, never cyce's own float32 path.

Tolerances:

- float32 results (losses, logsumexp, float32 grad_out / out):
  conftest.assert_close at float32, README.md's 1e-5 relative, as float32
  inputs get today.
- half results: one unit in the last place of the storage dtype, the ulp of
  the binade of the float64 reference value (check_half).  A float32
  computation k float32 ulps off the exact value, rounded once to 11 (8)
  significant bits, is within half an ulp plus k * 2**-13 (k * 2**-16) ulp
  of it: one ulp leaves room for that.  The rounding mode itself, which one
  ulp cannot see, is checked by test_stores_round_half_to_even and by
  test_large_inputs' fraction of correctly rounded elements.
- where a half gradient is a difference of nearly equal terms computed in
  float32 (soft targets, label smoothing, z_loss, sigmoid_bce's
  sigmoid(x) - y), the float32 error of those terms survives the
  subtraction whatever the storage dtype: 16 float32 epsilons of the size of
  the terms (reference.softmax_ce's term_size,
  agreement.sigmoid_bce_term_size) are allowed on top.  The label slot of
  hard labels, p_y - 1, is computed without that cancellation and gets no
  allowance.
"""

import re
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import cyce
import reference
from agreement import binary_ce_reference, categorical_ce_reference, sigmoid_bce_term_size
from conftest import LEVELS, assert_close, kernels_of_level

ml_dtypes = pytest.importorskip("ml_dtypes")

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
HALVES = [F16, BF16]
# significant bits (the implicit one included), smallest subnormal, largest finite
FORMATS = {
    F16: (11, 2.0**-24, 65504.0),
    BF16: (8, 2.0**-133, float(ml_dtypes.finfo(BF16).max)),
}
EPS32 = float(np.finfo(np.float32).eps)
REDUCTIONS = ["mean", "sum", "none"]


def name_of(dtype):
    return np.dtype(dtype).name


# ------------------------------------------------------------------ helpers

def f64(a):
    """Float arrays (half ones included) as float64, exactly; integer labels
    unchanged.  reference.py tells soft targets from class indices by
    dtype.kind, which is "V" for bfloat16, so soft targets go in as float64."""
    a = np.asarray(a)
    if a.dtype in (F16, BF16) or a.dtype.kind == "f":
        return a.astype(np.float64)
    return a


def ulp_of(values, dtype):
    """The ulp of the storage dtype in the binade of |v|,
    2**(floor(log2 |v|) - (bits - 1)), never below the smallest subnormal
    (the spacing of the subnormals, and of the lowest normal binade).  Read
    off the float64 exponent field: floor(log2 |v|) + 1023 for normal v, 0
    for zero and float64 subnormals, which all get the smallest subnormal."""
    bits, tiny, _ = FORMATS[np.dtype(dtype)]
    field = np.asarray(values, np.float64).view(np.uint64) >> np.uint64(52)
    field &= np.uint64(0x7FF)
    lowest = 1023 + int(np.log2(tiny)) + (bits - 1)
    field = np.maximum(field, np.uint64(lowest))
    field -= np.uint64(bits - 1)
    field <<= np.uint64(52)
    return field.view(np.float64)


def rounded(values, dtype, ulp=None):
    """float64 values rounded to nearest, ties to even, onto the grid of
    the storage dtype, in float64; beyond the largest finite value plus half
    its ulp, +-inf (that tie goes to the even neighbour, which is inf).
    Written out rather than taken from a cast so that the expected roundings
    do not depend on NumPy's or ml_dtypes' conversions
    (test_rounding_helpers checks it against both).  ulp: ulp_of(values),
    when the caller has it."""
    _, _, largest = FORMATS[np.dtype(dtype)]
    v = np.asarray(values, np.float64)
    ulp = ulp_of(v, dtype) if ulp is None else ulp
    limit = largest + ulp_of(largest, dtype) / 2
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.empty(v.shape)
        np.divide(v, ulp, out=r)
        np.rint(r, out=r)
        r *= ulp
        over = np.abs(v) >= limit
    if over.any():
        r[over] = np.copysign(np.inf, v[over])
    special = ~np.isfinite(v)
    if special.any():
        r[special] = v[special]
    return r


def assert_dtype(result, dtype):
    """The result's dtype is the very dtype object (bfloat16's included)."""
    assert result.dtype is np.dtype(dtype), (result.dtype, dtype)


def check_half(actual, expected, dtype, what="", term_size=0.0):
    """Every element of the half result `actual` within one ulp (ulp_of) of
    the float64 reference, plus 16 float32 epsilons of term_size (a scalar,
    or an array broadcasting to the shape).  Where the reference rounds to a
    non-finite value (NaN, an overflow, -inf from a masked class) the result
    must be that value.  Returns the fraction of finite elements that are the
    reference correctly rounded (rounded), for checks of the rounding mode."""
    assert_dtype(actual, dtype)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    with np.errstate(invalid="ignore"):
        got = actual.astype(np.float64)
    ulp = ulp_of(expected, dtype)
    stored = rounded(expected, dtype, ulp)
    special = ~np.isfinite(stored)
    if special.any():
        np.testing.assert_array_equal(got[special], stored[special],
                                      err_msg=f"{what}: where the rounded reference is not finite")
    allowed = ulp + 16 * EPS32 * np.asarray(term_size, np.float64) if np.any(term_size) else ulp
    with np.errstate(invalid="ignore"):
        error = np.subtract(got, expected)
        np.abs(error, out=error)
        bad = ~(error <= allowed)
    bad &= ~special
    if bad.any():
        first = np.flatnonzero(bad)[:6]
        flat_allowed = np.broadcast_to(allowed, expected.shape).reshape(-1)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} {name_of(dtype)} elements more than one ulp "
            f"(+ 16 float32 eps x {float(np.max(term_size, initial=0.0)):.3g}) off the reference; "
            f"got {got.reshape(-1)[first].tolist()}, expected {expected.reshape(-1)[first].tolist()}, "
            f"allowed {flat_allowed[first].tolist()}")
    finite = special.size - int(np.count_nonzero(special))
    nearest = got == stored
    nearest &= ~special
    return float(np.count_nonzero(nearest) / finite) if finite else 1.0


def loss_checks(loss, expected, batch_shape, reduction, what="loss"):
    """A float32 scalar, or for "none" a float32 array of the batch shape,
    within float32's tolerance of the reference."""
    if reduction == "none":
        assert np.shape(loss) == batch_shape, (what, np.shape(loss))
    else:
        assert isinstance(loss, np.generic), (what, type(loss))
    assert loss.dtype == np.float32, (what, loss.dtype)
    assert_close(loss, expected, np.float32, what)


def target_dtype_of(kind, dtype):
    return {"own": dtype, "float32": np.float32, "float64": np.float64}[kind]


# ------------------------------------------------------------- softmax_ce

OPTIONS = ["plain", "weight", "weight_float16", "ignore_index", "ignore_class", "smoothing",
           "soft", "soft_float32", "soft_float64", "sample_weight", "z_loss", "everything",
           "soft_everything"]
# the options whose gradient is a difference of nearly equal float32 terms
CANCELLING = {"smoothing", "soft", "soft_float32", "soft_float64", "z_loss", "everything",
              "soft_everything"}


def softmax_case(rng, shape, dtype, option):
    """Half logits, labels and keyword arguments for one option; soft targets
    in the logits' dtype ("soft"), float32 or float64."""
    n_classes = shape[-1]
    batch = shape[:-1]
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    labels = rng.integers(0, n_classes, size=batch)
    kwargs = {}

    def soft(target_dtype):
        t = rng.random(shape)
        return (t / t.sum(axis=-1, keepdims=True)).astype(target_dtype)

    if option == "weight":
        kwargs["weight"] = rng.uniform(0.1, 2.0, n_classes)
    elif option == "weight_float16":
        kwargs["weight"] = rng.uniform(0.1, 2.0, n_classes).astype(np.float16)
    elif option == "ignore_index":
        labels.reshape(-1)[::3] = -100
    elif option == "ignore_class":
        kwargs["ignore_index"] = 0
    elif option == "smoothing":
        kwargs["label_smoothing"] = 0.2
    elif option == "soft":
        labels = soft(dtype)
    elif option == "soft_float32":
        labels = soft(np.float32)
    elif option == "soft_float64":
        labels = soft(np.float64)
    elif option == "sample_weight":
        kwargs["sample_weight"] = rng.uniform(0.0, 3.0, batch).astype(np.float32)
    elif option == "z_loss":
        kwargs["z_loss"] = 1e-3
    elif option == "everything":
        kwargs.update(weight=rng.uniform(0.1, 2.0, n_classes), label_smoothing=0.1,
                      sample_weight=rng.uniform(0.5, 2.0, batch), z_loss=1e-4)
        labels.reshape(-1)[::4] = -100
    elif option == "soft_everything":
        labels = soft(dtype)
        kwargs.update(weight=rng.uniform(0.1, 2.0, n_classes), label_smoothing=0.3,
                      sample_weight=rng.uniform(0.5, 2.0, batch), z_loss=1e-3)
    return x, labels, kwargs


def softmax_reference(x, labels, reduction, kwargs, option):
    """(loss, grad, allowance): reference.softmax_ce of the same half values
    in float64, and the term size the gradient may be off by 16 float32
    epsilons of (0 without cancellation)."""
    with np.errstate(invalid="ignore"):
        loss, grad, term_size = reference.softmax_ce(
            f64(x), f64(labels), reduction=reduction, term_size=True,
            **{k: f64(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()})
    return loss, grad, (term_size if option in CANCELLING else 0.0)


SHAPES = [(7, 3), (3, 5, 17), (130, 32), (70, 33), (33, 1000)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", OPTIONS)
def test_softmax_ce_matches_reference(kernel_build, rng, shape, dtype, reduction, option):
    """Every option and target dtype, short rows (the tiles of 64 rows, a
    partial one included), the narrowest long row and 1000 classes: a
    float32 loss, a gradient of the logits' dtype within one ulp, and the
    loss alone (no stores) the same bits."""
    x, labels, kwargs = softmax_case(rng, shape, dtype, option)
    exp_loss, exp_grad, term = softmax_reference(x, labels, reduction, kwargs, option)
    loss, grad = cyce.softmax_ce(x, labels, reduction=reduction, return_grad=True, **kwargs)
    loss_checks(loss, exp_loss, shape[:-1], reduction)
    check_half(grad, exp_grad, dtype, "grad", term)
    np.testing.assert_array_equal(cyce.softmax_ce(x, labels, reduction=reduction, **kwargs), loss)
    if "ignore_index" in kwargs or option in ("ignore_index", "everything"):
        ignored = np.asarray(labels) == kwargs.get("ignore_index", -100)
        assert not grad[ignored].astype(np.float64).any()


@pytest.mark.parametrize("shape", [(130, 32), (33, 1000)], ids=str)
@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
@pytest.mark.parametrize("option", ["plain", "weight", "smoothing", "soft", "soft_float32",
                                    "everything", "soft_everything"])
def test_softmax_ce_float32_grad_out_is_a_master_gradient(kernel_build, rng, shape, dtype, option):
    """Half logits with a float32 grad_out: the gradient is stored in float32
    and is as accurate as float32 logits' gradients are (assert_close at
    float32, with the reference's term size as test_softmax_ce.py uses)."""
    x, labels, kwargs = softmax_case(rng, shape, dtype, option)
    for reduction in REDUCTIONS:
        exp_loss, exp_grad, term = reference.softmax_ce(
            f64(x), f64(labels), reduction=reduction, term_size=True,
            **{k: f64(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()})
        master = np.full(shape, np.nan, np.float32)
        loss, grad = cyce.softmax_ce(x, labels, reduction=reduction, grad_out=master, **kwargs)
        assert grad is master
        loss_checks(loss, exp_loss, shape[:-1], reduction)
        assert_close(master, exp_grad, np.float32, f"{reduction} grad", term)


@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
@pytest.mark.parametrize("option", ["plain", "everything", "soft_everything"])
def test_softmax_ce_in_place_and_into_grad_out(rng, dtype, option):
    """inplace=True writes the gradient over the logits, grad_out= of the
    logits' dtype into that array, grad_out=logits over the logits: each is
    the returned array, of the logits' dtype, within one ulp of the
    reference, and the three are the same bits as a new array."""
    x, labels, kwargs = softmax_case(rng, (40, 300), dtype, option)
    exp_loss, exp_grad, term = softmax_reference(x, labels, "mean", kwargs, option)
    expected = cyce.softmax_ce(x, labels, return_grad=True, **kwargs)
    buffer = x.copy()
    loss, grad = cyce.softmax_ce(buffer, labels, inplace=True, **kwargs)
    assert grad is buffer
    loss_checks(loss, exp_loss, (40,), "mean")
    check_half(grad, exp_grad, dtype, "inplace grad", term)
    out = np.empty_like(x)
    assert cyce.softmax_ce(x, labels, grad_out=out, **kwargs)[1] is out
    check_half(out, exp_grad, dtype, "grad_out", term)
    aliased = x.copy()
    assert cyce.softmax_ce(aliased, labels, grad_out=aliased, **kwargs)[1] is aliased
    for result in (buffer, out, aliased):
        assert result.tobytes() == expected[1].tobytes()


BIG_SHAPES = [(65536, 10), (4096, 1000), (64, 70001)]


@pytest.mark.parametrize("shape", BIG_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
def test_large_inputs(shape, dtype):
    """Short rows (65536 x 10), 1000 classes and long rows of several blocks
    (64 x 70001).  At every kernel level: softmax_ce's loss and gradient
    ("sum"), softmax, log_softmax and logsumexp; at the default level also
    "mean" (whose reference is the sum's divided by the power-of-two batch,
    exactly) and the float32 master gradient.  Every half element is within
    one ulp, and at least 99% of them are the reference rounded to nearest:
    a float32 value k float32 ulps off the exact one rounds differently only
    when the exact value lies within k float32 ulps of a midpoint, for a few
    ulps well under 1% of the elements (2k * 2**-13 of float16 ones at
    most, 2k * 2**-16 of bfloat16 ones); a store that truncates misses about
    half of them."""
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    labels = rng.integers(0, shape[1], shape[0])
    x64 = f64(x)
    loss_sum, grad_sum = reference.softmax_ce(x64, labels, reduction="sum")
    exp_logp = reference.log_softmax(x64)
    exp_p = np.exp(exp_logp)
    exp_lse = reference.logsumexp(x64)
    n = shape[0]
    for level in LEVELS:
        with kernels_of_level(level):
            loss, grad = cyce.softmax_ce(x, labels, reduction="sum", return_grad=True)
            loss_checks(loss, loss_sum, (n,), "sum", f"{level} loss")
            nearest = check_half(grad, grad_sum, dtype, f"{level} grad")
            assert nearest >= 0.99, (level, nearest)
            del grad
            for name, expected in (("softmax", exp_p), ("log_softmax", exp_logp)):
                nearest = check_half(getattr(cyce, name)(x), expected, dtype, f"{level} {name}")
                assert nearest >= 0.99, (level, name, nearest)
            lse = cyce.logsumexp(x)
            assert lse.dtype == np.float32 and lse.shape == (n,)
            assert_close(lse, exp_lse, np.float32, f"{level} logsumexp")
    loss, grad = cyce.softmax_ce(x, labels, return_grad=True)
    loss_checks(loss, loss_sum / n, (n,), "mean")
    grad_sum /= n
    nearest = check_half(grad, grad_sum, dtype, "mean grad")
    assert nearest >= 0.99, nearest
    master = np.empty(shape, np.float32)
    assert cyce.softmax_ce(x, labels, grad_out=master)[1] is master
    assert_close(master, grad_sum, np.float32, "float32 grad_out", 1.0 / n)


# -------------------------------------------------- softmax, log_softmax, logsumexp

FUNCTION_SHAPES = [(1, 1), (2,), (5, 3), (4, 6, 9), (130, 32), (17, 1000), (3, 70001)]


@pytest.mark.parametrize("shape", FUNCTION_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
def test_softmax_functions_match_reference(kernel_build, rng, shape, dtype):
    """logsumexp is float32 (into a new array or a float32 out); softmax and
    log_softmax have the input's dtype within one ulp, into a new array, an
    out of the input's dtype, or in place (out=x), the same bits each time;
    into a float32 out they are float32 results (assert_close at float32)."""
    x = (rng.standard_normal(shape) * 5).astype(dtype)
    x64 = f64(x)
    lse = cyce.logsumexp(x)
    assert np.shape(lse) == shape[:-1] and lse.dtype == np.float32
    assert_close(lse, reference.logsumexp(x64), np.float32, "logsumexp")
    lse_out = np.empty(shape[:-1], np.float32)
    assert cyce.logsumexp(x, out=lse_out) is lse_out
    np.testing.assert_array_equal(lse_out, lse)
    for name in ("softmax", "log_softmax"):
        fn = getattr(cyce, name)
        expected = getattr(reference, name)(x64)
        got = fn(x)
        check_half(got, expected, dtype, name)
        out = np.empty_like(x)
        assert fn(x, out=out) is out
        assert out.tobytes() == got.tobytes()
        inplace = x.copy()
        assert fn(inplace, out=inplace) is inplace
        assert inplace.tobytes() == got.tobytes()
        master = np.full(shape, np.nan, np.float32)
        assert fn(x, out=master) is master
        assert_close(master, expected, np.float32, f"{name} float32 out")


# ------------------------------------------------------------- binary family

BINARY_SHAPES = [(7,), (3, 4, 6), (64, 1000)]
BINARY_REDUCTIONS = ["mean", "sum", "none", "batchmean"]
# (weights, targets' dtype): each weighting once, with targets of the
# logits' dtype, float32 or float64
SIGMOID_CASES = [("none", "own"), ("per_class", "own"), ("per_row", "float32"), ("full", "own"),
                 ("pos_weight", "float64"), ("both", "own"), ("both", "float32")]


def binary_case(rng, shape, dtype, weights, targets):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    y = rng.random(shape).astype(target_dtype_of(targets, dtype))
    kwargs = {}
    if weights in ("per_class", "both"):
        kwargs["weight"] = rng.uniform(0.1, 2.0, shape[-1])
    elif weights == "per_row" and len(shape) > 1:
        kwargs["weight"] = rng.uniform(0.1, 2.0, shape[:-1] + (1,))
    elif weights == "full":
        kwargs["weight"] = rng.uniform(0.1, 2.0, shape).astype(np.float32)
    if weights in ("pos_weight", "both"):
        kwargs["pos_weight"] = rng.uniform(0.5, 3.0, shape[-1]).astype(np.float16)
    return x, y, kwargs


def sigmoid_expected(x, y, reduction, kwargs):
    kw = {k: f64(v) for k, v in kwargs.items()}
    loss, grad = reference.sigmoid_bce(f64(x), f64(y), reduction=reduction, **kw)
    term = sigmoid_bce_term_size(f64(y), x.shape, reduction, kw.get("weight"), kw.get("pos_weight"))
    return loss, grad, term


@pytest.mark.parametrize("shape", BINARY_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
@pytest.mark.parametrize("reduction", BINARY_REDUCTIONS)
@pytest.mark.parametrize("weights, targets", SIGMOID_CASES)
def test_sigmoid_bce_matches_reference(kernel_build, rng, shape, dtype, reduction, weights, targets):
    """A float32 loss; a gradient of the logits' dtype within one ulp plus the
    allowance for sigmoid(x) - y, a difference of float32 terms."""
    x, y, kwargs = binary_case(rng, shape, dtype, weights, targets)
    exp_loss, exp_grad, term = sigmoid_expected(x, y, reduction, kwargs)
    loss, grad = cyce.sigmoid_bce(x, y, reduction=reduction, return_grad=True, **kwargs)
    loss_checks(loss, exp_loss, shape, reduction)
    check_half(grad, exp_grad, dtype, "grad", term)
    np.testing.assert_array_equal(cyce.sigmoid_bce(x, y, reduction=reduction, **kwargs), loss)


@pytest.mark.parametrize("shape", BINARY_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
@pytest.mark.parametrize("reduction", BINARY_REDUCTIONS)
@pytest.mark.parametrize("weighted, targets", [(False, "own"), (True, "own"), (True, "float32")])
def test_binary_ce_matches_reference(kernel_build, rng, shape, dtype, reduction, weighted, targets):
    """Half probabilities, targets of their dtype or float32 (both exact in
    float32, so p - y is one correctly rounded subtraction and the gradient
    w (p - y) / max(p (1 - p), 1e-12) needs no allowance): a float32 loss, a
    gradient within one ulp.  Every eleventh probability is 0, and some
    round to 1 in the half dtype: their gradients, near -+1e12 y or
    1e12 (1 - y) (the clamp), are beyond float16's range, where the
    reference rounded to float16 is -+inf and so must the result be."""
    x, y, kwargs = binary_case(rng, shape, dtype, "full" if weighted else "none", targets)
    probs = rng.random(shape).astype(dtype)
    probs.reshape(-1)[::11] = 0.0
    exp_loss, exp_grad = binary_ce_reference(f64(probs), f64(y), reduction, kwargs.get("weight"))
    loss, grad = cyce.binary_ce(probs, y, reduction=reduction, return_grad=True, **kwargs)
    loss_checks(loss, exp_loss, shape, reduction)
    check_half(grad, exp_grad, dtype, "grad")


def categorical_case(rng, shape, dtype, kind):
    probs = rng.random(shape)
    probs = (probs / probs.sum(axis=-1, keepdims=True)).astype(dtype)
    probs.reshape(-1)[::7] = 0.0
    n_classes = shape[-1]
    if kind == "onehot":
        labels = np.eye(n_classes, dtype=np.float32)[rng.integers(0, n_classes, shape[:-1])].astype(dtype)
    elif kind == "soft":
        t = rng.random(shape)
        labels = (t / t.sum(axis=-1, keepdims=True)).astype(np.float32)
    else:
        labels = rng.integers(0, n_classes, shape[:-1])
        if kind == "ignore" and labels.ndim:
            labels.reshape(-1)[::3] = -100
    return probs, labels


# a power of two: the same number in every dtype, so q >= eps is decided
# the same way by the reference and by any conversion of eps
EPS = 2.0**-20


@pytest.mark.parametrize("shape", [(6,), (16, 5), (64, 1000)], ids=str)
@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind, weighted", [("index", False), ("index", True), ("ignore", True),
                                            ("onehot", False), ("soft", True)])
def test_categorical_ce_matches_reference(kernel_build, rng, shape, dtype, reduction, kind, weighted):
    """Half probabilities (every seventh 0: clipped at eps, gradient 0),
    class indices, one-hot targets of the probabilities' dtype and float32
    soft targets: a float32 loss, a gradient -w y / p within one ulp (a
    quotient, no cancellation); -w y / p beyond 65504 is inf in float16."""
    probs, labels = categorical_case(rng, shape, dtype, kind)
    weight = rng.uniform(0.2, 2.0, shape[-1]) if weighted else None
    exp_loss, exp_grad = categorical_ce_reference(f64(probs), f64(labels), EPS, weight=weight,
                                                  reduction=reduction)
    loss, grad = cyce.categorical_ce(probs, labels, eps=EPS, weight=weight, reduction=reduction,
                                     return_grad=True)
    loss_checks(loss, exp_loss, shape[:-1], reduction)
    check_half(grad, exp_grad, dtype, "grad")
    assert not grad.astype(np.float64).reshape(-1)[::7].any()


def binary_call(fn, rng, dtype, shape=(300, 77)):
    """(inputs, targets, kwargs, expected loss, expected grad, term size)."""
    if fn == "sigmoid_bce":
        x, y, kwargs = binary_case(rng, shape, dtype, "both", "own")
        return (x, y, kwargs) + sigmoid_expected(x, y, "mean", kwargs)
    if fn == "binary_ce":
        probs = rng.random(shape).astype(dtype)
        y = rng.random(shape).astype(dtype)
        return (probs, y, {}) + binary_ce_reference(f64(probs), f64(y), "mean") + (0.0,)
    probs, labels = categorical_case(rng, shape, dtype, "index")
    kwargs = {"eps": EPS}
    return (probs, labels, kwargs) + categorical_ce_reference(f64(probs), labels, EPS) + (0.0,)


@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
@pytest.mark.parametrize("fn", ["sigmoid_bce", "binary_ce", "categorical_ce"])
def test_binary_family_in_place_and_grad_out(rng, dtype, fn):
    """In place and into a grad_out of the input's dtype: the returned array,
    within one ulp, the same bits as a new array; into a float32 grad_out, a
    float32 gradient as accurate as float32 inputs' (assert_close)."""
    x, targets, kwargs, exp_loss, exp_grad, term = binary_call(fn, rng, dtype)
    call = getattr(cyce, fn)
    new = call(x, targets, return_grad=True, **kwargs)[1]
    check_half(new, exp_grad, dtype, "new", term)
    buffer = x.copy()
    loss, grad = call(buffer, targets, inplace=True, **kwargs)
    assert grad is buffer
    assert loss.dtype == np.float32
    assert_close(loss, exp_loss, np.float32, "loss")
    out = np.empty_like(x)
    assert call(x, targets, grad_out=out, **kwargs)[1] is out
    assert buffer.tobytes() == new.tobytes() and out.tobytes() == new.tobytes()
    master = np.full(x.shape, np.nan, np.float32)
    assert call(x, targets, grad_out=master, **kwargs)[1] is master
    assert_close(master, exp_grad, np.float32, "float32 grad_out", term)


# --------------------------------------------------------------- rounding

def test_rounding_helpers():
    """Guards rounded() and ulp_of() themselves: on float32 values (one
    rounding away from either half format, so the casts are correctly
    rounded too) they agree with NumPy's float32 -> float16 and ml_dtypes'
    float32 -> bfloat16 casts, subnormals, overflows and ties included."""
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2**32, 200000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    values = values[np.isfinite(values)]
    ties = np.array([1 + 2.0**-11, 1 + 3 * 2.0**-11, 1 + 2.0**-8, 1 + 3 * 2.0**-8, 65520.0, 65519.0,
                     2.0**-25, 3 * 2.0**-25, 2.0**-134, 3 * 2.0**-134, 3.3961e38], np.float32)
    values = np.concatenate([values, ties, -ties, values / 2**100, values * 2.0**-120])
    with np.errstate(over="ignore"):
        for dtype in HALVES:
            cast = values.astype(dtype).astype(np.float64)
            np.testing.assert_array_equal(rounded(values.astype(np.float64), dtype), cast,
                                          err_msg=name_of(dtype))
    assert rounded(1 + 2.0**-11, F16) == 1.0 and rounded(1 + 3 * 2.0**-11, F16) == 1 + 2.0**-9
    assert rounded(65520.0, F16) == np.inf and rounded(65519.99, F16) == 65504.0
    assert ulp_of(1.0, BF16) == 2.0**-7 and ulp_of(0.0, BF16) == 2.0**-133
    assert ulp_of(1e-30, F16) == 2.0**-24 and ulp_of(-3.0, F16) == 2.0**-9


@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
def test_stores_round_half_to_even(kernel_build, dtype):
    """Gradients whose exact value is a midpoint between two neighbours of
    the storage dtype, and computed exactly in float32 (every operand and
    every intermediate below is a float32 number): the stored value is the
    even neighbour, and a value a float32 hair either side of a midpoint
    goes to the nearer one.  With l the low end of a binade, u its ulp and
    h = 2**-21 l, the four gradients g and what they store:
    l + u/2 -> l, l + 3u/2 -> l + 2u, l + u/2 + h -> l + u,
    l + 3u/2 - h -> l + u.  Truncation gets the second and third wrong,
    rounding half away from zero the first.

    - softmax_ce, rows of two equal logits (p = 1/2 exactly), soft float32
      targets (1/2 - g, 1/2 + g), l = 1/4: gradient (g, -g);
    - softmax_ce, the same rows, class indices, sample weights 2 g, l = 1:
      gradient (-g, g) or (g, -g) (p_y - 1 = -1/2);
    - sigmoid_bce, l = 1/4, at x = -inf (sigmoid 0): gradient -y, y = g;
      at x = +inf (sigmoid 1): gradient 1 - y, y = 1 - g.

    softmax and log_softmax outputs are never exact midpoints of
    float32-computable values: they are checked by test_large_inputs'
    fraction rounded to nearest instead."""
    bits = FORMATS[dtype][0]

    def ties(low):
        """Midpoints in the binade [low, 2 low) and what they round to."""
        u = low * 2.0 ** (1 - bits)
        h = low * 2.0**-21
        exact = np.array([low + u / 2, low + 3 * u / 2, low + u / 2 + h, low + 3 * u / 2 - h])
        stored = np.array([low, low + 2 * u, low + u, low + u])
        assert np.array_equal(rounded(exact, dtype), stored)
        assert np.array_equal(exact.astype(np.float32), exact)
        return exact, stored

    g, r = ties(0.25)
    zeros = np.zeros((4, 2), dtype)
    targets = np.stack([0.5 - g, 0.5 + g], axis=1).astype(np.float32)
    grad = cyce.softmax_ce(zeros, targets, reduction="sum", return_grad=True)[1]
    np.testing.assert_array_equal(grad.astype(np.float64), np.stack([r, -r], axis=1))

    g1, r1 = ties(1.0)
    labels = np.array([0, 1, 0, 1])
    sign = np.where(labels == 0, -1.0, 1.0)
    grad = cyce.softmax_ce(zeros, labels, sample_weight=2 * g1, reduction="sum", return_grad=True)[1]
    np.testing.assert_array_equal(grad.astype(np.float64), np.stack([sign * r1, -sign * r1], axis=1))

    x = np.array([-np.inf] * 4 + [np.inf] * 4, dtype)
    y = np.concatenate([g, 1 - g]).astype(np.float32)
    grad = cyce.sigmoid_bce(x, y, reduction="sum", return_grad=True)[1]
    np.testing.assert_array_equal(grad.astype(np.float64), np.concatenate([-r, r]))


# ------------------------------------------------------------------ edges

@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
def test_every_half_value_converts_exactly(kernel_build, dtype):
    """All 65536 bit patterns, one per row of one class: logsumexp of a
    single value is that value (float32 holds every float16 and bfloat16
    value exactly, subnormals and infinities included; NaN stays NaN), and
    softmax of it is 1 (NaN for the non-finite ones).  The positive
    subnormals as probabilities: binary_ce and categorical_ce (eps = 0)
    losses -log p, which a flush to zero would turn into 100 and inf."""
    bits, tiny, _ = FORMATS[dtype]
    every = np.arange(2**16, dtype=np.uint16).view(dtype)
    column = every[:, None]
    with np.errstate(invalid="ignore"):
        exact = every.astype(np.float64)
    lse = cyce.logsumexp(column)
    assert lse.dtype == np.float32
    np.testing.assert_array_equal(lse.astype(np.float64), exact)
    with np.errstate(invalid="ignore"):
        check_half(cyce.softmax(column), reference.softmax(f64(column)), dtype, "softmax")
    subnormals = (np.arange(1, 2 ** (bits - 1)) * tiny).astype(dtype)
    assert np.array_equal(subnormals.astype(np.float64), np.arange(1, 2 ** (bits - 1)) * tiny)
    ones = np.ones(subnormals.shape, np.float32)
    loss = cyce.binary_ce(subnormals, ones, reduction="none")
    assert_close(loss, -np.log(f64(subnormals)), np.float32, "binary_ce")
    loss = cyce.categorical_ce(subnormals[:, None], np.zeros(subnormals.size, np.int64), eps=0.0,
                               reduction="none")
    assert_close(loss, -np.log(f64(subnormals)), np.float32, "categorical_ce")


@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
def test_overflow_on_store(kernel_build, dtype):
    """Values beyond the storage dtype's range round to inf on store, as the
    reference rounded to that dtype does, while float32 results keep them:
    log_softmax of (max, -max) is (0, -2 max), -inf in either half dtype;
    softmax_ce's loss for the label on -max is 2 max, a finite float32 for
    float16 (131008) and inf for bfloat16 (6.8e38 > float32's max);
    gradients of sample weight 1e5 on four equal logits are -75000 (-inf in
    float16) and 25000 (a float16 midpoint, stored as the even 24992)."""
    _, _, largest = FORMATS[dtype]
    x = np.array([[largest, -largest]], dtype)
    x64 = f64(x)
    logp = cyce.log_softmax(x)
    check_half(logp, reference.log_softmax(x64), dtype, "log_softmax")
    assert logp.astype(np.float64).tolist() == [[0.0, -np.inf]]
    np.testing.assert_array_equal(cyce.softmax(x).astype(np.float64), [[1.0, 0.0]])
    assert_close(cyce.logsumexp(x), reference.logsumexp(x64), np.float32, "logsumexp")
    loss, grad = cyce.softmax_ce(x, [1], reduction="none", return_grad=True)
    with np.errstate(over="ignore"):
        expected_loss = np.float32(2 * largest)
    assert loss.dtype == np.float32 and loss[0] == expected_loss
    check_half(grad, reference.softmax_ce(x64, np.array([1]), reduction="none")[1], dtype, "grad")

    four = np.zeros((1, 4), dtype)
    loss, grad = cyce.softmax_ce(four, [0], sample_weight=[1e5], reduction="sum", return_grad=True)
    _, exp_grad = reference.softmax_ce(f64(four), np.array([0]), sample_weight=np.array([1e5]),
                                       reduction="sum")
    np.testing.assert_array_equal(grad.astype(np.float64), rounded(exp_grad, dtype))
    if dtype == F16:
        assert grad.astype(np.float64).tolist() == [[-np.inf, 24992.0, 24992.0, 24992.0]]
    assert_close(loss, 1e5 * np.log(4.0), np.float32, "loss")


@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
def test_subnormal_results_are_not_flushed(kernel_build, dtype):
    """Probabilities in the storage dtype's subnormal range are stored
    rounded, not flushed to zero (AVX512_BF16's vcvtneps2bf16, used where
    the CPU has it, flushes them), in vectors holding subnormals alone and
    in vectors mixing them with normal values: softmax_ce's gradient in
    place, new and deferred from row to row (8 rows), and softmax.  Each row:
    a 0 at class 0; 95 logits drawn from an interval around the subnormal
    range's log (some round to 0, some are normal); 64 at -3; 96 alternating
    between the two."""
    bits, tiny, _ = FORMATS[dtype]
    normal_min = tiny * 2.0 ** (bits - 1)
    rng = np.random.default_rng(17)
    rows, n = 32, 256

    def subnormal_range(size):
        return rng.uniform(np.log(tiny) - 1.0, np.log(normal_min) + 1.0, size)

    x64 = np.full((rows, n), -3.0)
    x64[:, 0] = 0.0
    x64[:, 1:96] = subnormal_range((rows, 95))
    x64[:, 160::2] = subnormal_range((rows, 48))
    x = x64.astype(dtype)
    labels = rng.integers(0, n, rows)
    _, expected = reference.softmax_ce(f64(x), labels, reduction="sum")
    stored = rounded(expected, dtype)
    assert (stored[:, 1:96] == 0).any() and (np.abs(stored[:, 1:96]) < normal_min).mean() > 0.5

    grad = cyce.softmax_ce(x, labels, reduction="sum", return_grad=True)[1]
    check_half(grad, expected, dtype, "new gradient")
    in_place = x.copy()
    cyce.softmax_ce(in_place, labels, reduction="sum", inplace=True)
    check_half(in_place, expected, dtype, "in place")
    check_half(cyce.softmax(x), reference.softmax(f64(x)), dtype, "softmax")


@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
@pytest.mark.parametrize("n_classes", [1000, 40000])
def test_confident_rows_keep_the_loss_relative(kernel_build, dtype, n_classes):
    """Rows whose label outscores the others by 6 to 24: losses from about
    1 down to 1e-6, each within 1e-5 relative of float64 (no absolute floor:
    a float32 loss of 1e-6 is as exact as one of 1).  The half exps are a
    shorter polynomial than float32's; what keeps a small loss relative is
    that each exp is relatively exact and the sum of the others is taken
    apart from the label's term."""
    rng = np.random.default_rng(23)
    rows = 16
    x = rng.standard_normal((rows, n_classes)).astype(dtype)
    labels = rng.integers(0, n_classes, rows)
    x[np.arange(rows), labels] = np.tile([6.0, 12.0, 18.0, 24.0], rows // 4)
    expected, grad_expected = reference.softmax_ce(f64(x), labels, reduction="none")
    assert expected.min() < 1e-5 and expected.max() > 0.1
    loss, grad = cyce.softmax_ce(x, labels, reduction="none", return_grad=True)
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss.astype(np.float64), expected, rtol=1e-5, atol=0)
    check_half(grad, grad_expected, dtype, "gradient")


LONG = 70001


@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
@pytest.mark.parametrize("n_classes", [4, LONG])
def test_minus_inf_masks_classes_exactly(kernel_build, dtype, n_classes):
    """-inf logits take no part: their gradient and softmax are exactly 0,
    their log_softmax -inf, hard or soft targets (with no mass there) give
    finite losses matching the reference, and a label on a masked class
    costs +inf.  In short rows and in long rows with a masked stretch."""
    rng = np.random.default_rng(17)
    x = (rng.standard_normal((3, n_classes)) * 3).astype(dtype)
    masked = np.zeros(x.shape, bool)
    masked[0, [1, 3]] = True
    if n_classes == LONG:
        masked[1, 5000:40000] = True
        masked[2, :-2] = True
    x[masked] = -np.inf
    labels = np.array([2, 4 if n_classes == LONG else 0, n_classes - 1])
    loss, grad = cyce.softmax_ce(x, labels, reduction="none", return_grad=True)
    exp_loss, exp_grad = reference.softmax_ce(f64(x), labels, reduction="none")
    loss_checks(loss, exp_loss, (3,), "none")
    check_half(grad, exp_grad, dtype, "grad")
    assert not grad.astype(np.float64)[masked].any()
    t = np.where(masked, 0.0, rng.random(x.shape))
    t = (t / t.sum(axis=1, keepdims=True)).astype(dtype)
    soft_loss, soft_grad = cyce.softmax_ce(x, t, reduction="none", return_grad=True)
    assert np.isfinite(soft_loss).all()
    exp_loss, exp_grad, term = reference.softmax_ce(f64(x), f64(t), reduction="none", term_size=True)
    assert_close(soft_loss, exp_loss, np.float32, "soft loss")
    check_half(soft_grad, exp_grad, dtype, "soft grad", term)
    assert not soft_grad.astype(np.float64)[masked].any()
    assert cyce.softmax_ce(x[:1], [1]) == np.inf
    p = cyce.softmax(x)
    check_half(p, reference.softmax(f64(x)), dtype, "softmax")
    assert not p.astype(np.float64)[masked].any()
    logp = cyce.log_softmax(x).astype(np.float64)
    assert (logp[masked] == -np.inf).all() and np.isfinite(logp[~masked]).all()


@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
@pytest.mark.parametrize("n_classes", [6, LONG])
def test_nan_and_infinite_rows(kernel_build, dtype, n_classes):
    """As for float32: a NaN makes its row's loss and gradient NaN and no
    other row's; a +inf row is NaN (PyTorch's convention), its logsumexp
    +inf; an all -inf row has no distribution (NaN loss, softmax and
    log_softmax), its logsumexp -inf; the mean over such rows is NaN."""
    x = (np.random.default_rng(3).standard_normal((4, n_classes)) * 3).astype(dtype)
    x[1, n_classes // 2] = np.nan
    x[2, 1] = np.inf
    x[3, :] = -np.inf
    labels = np.array([0, 1, 2, 3])
    loss, grad = cyce.softmax_ce(x, labels, reduction="none", return_grad=True)
    assert loss.dtype == np.float32
    assert np.isnan(loss[1:]).all() and np.isnan(grad[1:].astype(np.float64)).all()
    exp_loss, exp_grad = reference.softmax_ce(f64(x[:1]), labels[:1], reduction="none")
    assert_close(loss[:1], exp_loss, np.float32, "loss")
    check_half(grad[:1], exp_grad, dtype, "grad")
    assert np.isnan(cyce.softmax_ce(x, labels))
    lse = cyce.logsumexp(x)
    assert np.isnan(lse[1]) and lse[2] == np.inf and lse[3] == -np.inf
    assert_close(lse[:1], reference.logsumexp(f64(x[:1])), np.float32, "logsumexp")
    for name in ("softmax", "log_softmax"):
        got = getattr(cyce, name)(x)
        assert np.isnan(got[1:].astype(np.float64)).all(), name
        check_half(got[:1], getattr(reference, name)(f64(x[:1])), dtype, name)


@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
def test_sigmoid_bce_nan_and_infinite_logits(kernel_build, dtype):
    x = np.array([np.nan, 1.0, np.inf, -np.inf, np.inf, -np.inf], dtype=dtype)
    y = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 1.0], dtype=dtype)
    loss, grad = cyce.sigmoid_bce(x, y, reduction="none", return_grad=True)
    assert loss.dtype == np.float32
    assert_dtype(grad, dtype)
    grad = grad.astype(np.float64)
    assert np.isnan(loss[0]) and np.isnan(grad[0])
    assert_close(loss[1:2], reference.sigmoid_bce(f64(x[1:2]), f64(y[1:2]), reduction="none")[0],
                 np.float32)
    np.testing.assert_array_equal(loss[2:4], [0.0, 0.0])
    np.testing.assert_array_equal(loss[4:], [np.inf, np.inf])
    np.testing.assert_array_equal(grad[2:], [0.0, 0.0, 1.0, -1.0])


@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
def test_strided_inputs(rng, dtype):
    """Strided, Fortran-ordered and negatively strided half logits (and
    strided soft targets): the same bits as their contiguous copies, which
    are within one ulp of the reference."""
    base = (rng.standard_normal((8, 5, 22)) * 4).astype(dtype)
    labels = rng.integers(0, 11, (8, 5))
    strided = base[:, :, ::2]
    for x in (strided, np.asfortranarray(strided), base[:, :, ::-2]):
        contiguous = np.ascontiguousarray(x)
        loss, grad = cyce.softmax_ce(contiguous, labels, return_grad=True)
        exp_loss, exp_grad = reference.softmax_ce(f64(contiguous), labels)
        assert_close(loss, exp_loss, np.float32, "loss")
        check_half(grad, exp_grad, dtype, "grad")
        got_loss, got_grad = cyce.softmax_ce(x, labels, return_grad=True)
        assert got_loss.tobytes() == loss.tobytes()
        assert_dtype(got_grad, dtype)
        assert np.ascontiguousarray(got_grad).tobytes() == grad.tobytes()
        for name in ("softmax", "log_softmax", "logsumexp"):
            fn = getattr(cyce, name)
            assert np.ascontiguousarray(fn(x)).tobytes() == fn(contiguous).tobytes(), name
    contiguous = np.ascontiguousarray(strided)
    soft = rng.random(strided.shape).astype(dtype)[..., ::-1]
    exp_loss, _ = reference.softmax_ce(f64(contiguous), f64(soft))
    assert_close(cyce.softmax_ce(strided, soft), exp_loss, np.float32, "soft loss")
    y = rng.random(strided.shape).astype(dtype)
    exp_loss, exp_grad, term = sigmoid_expected(contiguous, y, "mean", {})
    loss, grad = cyce.sigmoid_bce(strided, y, return_grad=True)
    assert_close(loss, exp_loss, np.float32, "sigmoid_bce loss")
    check_half(grad, exp_grad, dtype, "sigmoid_bce grad", term)


# ------------------------------------------------------------- bad input

BAD_DTYPES = [np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(ml_dtypes.float8_e5m2),
              np.dtype(np.int16), np.dtype(np.uint16), np.dtype(np.int8)]
FUNCTIONS = ["softmax_ce", "sigmoid_bce", "binary_ce", "categorical_ce", "logsumexp", "softmax",
             "log_softmax"]


def call_with(fn, x, **kwargs):
    """fn on x (4, 3) with valid other arguments."""
    if fn in ("softmax_ce", "categorical_ce"):
        return getattr(cyce, fn)(x, np.array([0, 1, 2, 0]), **kwargs)
    if fn in ("sigmoid_bce", "binary_ce"):
        return getattr(cyce, fn)(x, np.full((4, 3), 0.5, np.float32), **kwargs)
    return getattr(cyce, fn)(x, **kwargs)


def assert_refused(fn, x, error, **kwargs):
    """The call raises `error` and leaves x and any output array as they
    were, byte for byte.  Returns the message."""
    arrays = [x] + [v for v in kwargs.values() if isinstance(v, np.ndarray)]
    before = [a.tobytes() for a in arrays]
    with pytest.raises(error) as raised:
        call_with(fn, x, **kwargs)
    assert [a.tobytes() for a in arrays] == before
    return str(raised.value)


@pytest.mark.parametrize("fn", FUNCTIONS)
@pytest.mark.parametrize("bad", BAD_DTYPES, ids=name_of)
@pytest.mark.parametrize("in_place", [False, True])
def test_other_small_dtypes_are_refused(fn, bad, in_place):
    """float8 and 8- or 16-bit integer inputs raise TypeError naming the
    supported dtypes (float16, bfloat16, float32, float64), in place or not,
    and write nothing."""
    x = np.ones((4, 3), np.float32).astype(bad)
    kwargs = {}
    if in_place:
        kwargs = {"out": x} if fn in ("softmax", "log_softmax") else {"inplace": True}
        if fn == "logsumexp":
            kwargs = {"out": np.zeros(4, np.float32)}
    message = assert_refused(fn, x, TypeError, **kwargs)
    assert re.search(r"(?<!b)float16", message), message
    for supported in ("bfloat16", "float32", "float64"):
        assert supported in message, message


THIRD_DTYPES = [(BF16, np.float64), (BF16, F16), (F16, np.float64), (F16, BF16),
                (np.float32, BF16), (np.float32, F16)]


@pytest.mark.parametrize("fn", ["softmax_ce", "sigmoid_bce", "binary_ce", "categorical_ce",
                                "softmax", "log_softmax"])
@pytest.mark.parametrize("dtypes", THIRD_DTYPES, ids=lambda d: f"{name_of(d[0])}-into-{name_of(d[1])}")
def test_outputs_of_a_third_dtype_are_refused(fn, dtypes):
    """A grad_out (out for softmax, log_softmax) that is neither the input's
    dtype nor float32 for half inputs, nor float32's own dtype for float32
    inputs, raises TypeError or ValueError and writes nothing; the same call
    into an output of the input's dtype succeeds, so the refusal is the
    output's."""
    dtype, out_dtype = dtypes
    x = np.full((4, 3), 0.25, np.float32).astype(dtype)
    key = "out" if fn in ("softmax", "log_softmax") else "grad_out"
    good = np.empty_like(x)
    call_with(fn, x, **{key: good})
    out = np.full((4, 3), 7.0, np.float32).astype(out_dtype)
    assert_refused(fn, x, (TypeError, ValueError), **{key: out})


# ----------------------------------------------------------------- memory

def traced_peak(call):
    """Peak bytes that NumPy and Python allocate during call() above what
    was allocated before it."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        result = call()
        return tracemalloc.get_traced_memory()[1] - start, result
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
def test_in_place_allocates_nothing_of_the_input_size(rng, dtype):
    """As test_softmax_ce.py's float32 check: in place (softmax_ce with
    weights and smoothing, sigmoid_bce with float32 targets, softmax into
    x), the loss alone and logsumexp allocate under 2% of the logits' size,
    so no float32 copy or gradient; return_grad allocates the half gradient
    and no more."""
    x = (rng.standard_normal((1024, 2000)) * 3).astype(dtype)
    labels = rng.integers(0, 2000, 1024)
    weight = rng.random(2000)
    y = (rng.random(x.shape) > 0.5).astype(np.float32)
    calls = {
        "softmax_ce inplace": lambda b: cyce.softmax_ce(b, labels, weight=weight, label_smoothing=0.1,
                                                        inplace=True),
        "softmax_ce loss": lambda b: cyce.softmax_ce(b, labels, weight=weight),
        "sigmoid_bce inplace": lambda b: cyce.sigmoid_bce(b, y, pos_weight=weight, inplace=True),
        "softmax in place": lambda b: cyce.softmax(b, out=b),
        "logsumexp": lambda b: cyce.logsumexp(b),
    }
    for what, call in calls.items():
        call(x.copy())  # imports and caches
        buffer = x.copy()
        peak, _ = traced_peak(lambda: call(buffer))
        assert peak < x.nbytes / 50, (what, peak)
    cyce.softmax_ce(x, labels, return_grad=True)
    peak, (_, grad) = traced_peak(lambda: cyce.softmax_ce(x, labels, return_grad=True))
    assert_dtype(grad, dtype)
    assert grad.nbytes <= peak < grad.nbytes + x.nbytes / 50, peak


@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
def test_in_place_with_half_targets_allocates_one_float32_copy_of_the_targets(rng, dtype):
    """Probability targets of a half dtype are converted to float32 once (the
    kernels read float32 or float64 targets; README, "bfloat16 and float16"):
    sigmoid_bce and softmax_ce (soft targets) in place allocate that copy of
    the targets and under 2% of the logits' size besides, nothing of the
    logits themselves; float32 targets are read where they are."""
    x = (rng.standard_normal((1024, 2000)) * 3).astype(dtype)
    targets_copy = x.size * 4
    for y, allowed in ((rng.random(x.shape).astype(dtype), targets_copy),
                       (rng.random(x.shape).astype(np.float32), 0)):
        calls = {
            "sigmoid_bce inplace": lambda b: cyce.sigmoid_bce(b, y, inplace=True),
            "softmax_ce inplace, soft targets": lambda b: cyce.softmax_ce(b, y, inplace=True),
        }
        peaks = {}
        for what, call in calls.items():
            call(x.copy())
            buffer = x.copy()
            peaks[what] = traced_peak(lambda: call(buffer))[0]
        assert all(peak < allowed + x.nbytes / 50 for peak in peaks.values()), (y.dtype, peaks)


@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
def test_strided_input_is_copied_once_in_its_dtype(rng, dtype):
    """A strided input costs one contiguous copy of the input's dtype (2 bytes
    an element), not a float32 one: under its size plus 2% for the loss
    alone, and the half gradient besides for return_grad."""
    base = (rng.standard_normal((1024, 4000)) * 3).astype(dtype)
    x = base[:, ::2]
    labels = rng.integers(0, 2000, 1024)
    copy_size = x.size * dtype.itemsize
    cyce.softmax_ce(x, labels)
    peak, _ = traced_peak(lambda: cyce.softmax_ce(x, labels))
    assert peak < copy_size + copy_size / 50, peak
    peak, (_, grad) = traced_peak(lambda: cyce.softmax_ce(x, labels, return_grad=True))
    assert peak < grad.nbytes + copy_size + copy_size / 50, peak


# ------------------------------------------------------------ determinism

@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
@pytest.mark.parametrize("option", ["plain", "everything", "soft_everything"])
@pytest.mark.parametrize("shape", [(1001, 37), (20, 9000)], ids=str)
def test_same_bits_for_any_thread_count(kernel_build, rng, dtype, option, shape):
    """Loss and half gradient have the same bits for 1, 2 and 3 threads, in
    every reduction, for short and long rows."""
    x, labels, kwargs = softmax_case(rng, shape, dtype, option)
    for reduction in REDUCTIONS:
        first = cyce.softmax_ce(x, labels, reduction=reduction, return_grad=True, num_threads=1, **kwargs)
        for threads in (2, 3):
            loss, grad = cyce.softmax_ce(x, labels, reduction=reduction, return_grad=True,
                                         num_threads=threads, **kwargs)
            assert loss.tobytes() == first[0].tobytes(), (reduction, threads)
            assert grad.tobytes() == first[1].tobytes(), (reduction, threads)


@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
@pytest.mark.parametrize("fn", ["sigmoid_bce", "binary_ce", "categorical_ce", "logsumexp", "softmax",
                                "log_softmax"])
def test_same_bits_for_any_thread_count_elsewhere(rng, dtype, fn):
    shape = (1003, 41)  # not a multiple of a block or of any thread count
    if fn in ("sigmoid_bce", "binary_ce"):
        x = rng.random(shape).astype(dtype)
        args = (x, rng.random(shape).astype(dtype))
    elif fn == "categorical_ce":
        args = (rng.random(shape).astype(dtype), rng.integers(0, 41, 1003))
    else:
        args = ((rng.standard_normal(shape) * 4).astype(dtype),)
    call = getattr(cyce, fn)
    extra = {"return_grad": True} if len(args) == 2 else {}
    first = call(*args, num_threads=1, **extra)
    for threads in (2, 3):
        again = call(*args, num_threads=threads, **extra)
        if extra:
            assert again[0].tobytes() == first[0].tobytes() and again[1].tobytes() == first[1].tobytes()
        else:
            assert again.tobytes() == first.tobytes()


# ------------------------------------------------------- the environment

def test_import_does_not_import_ml_dtypes():
    """bfloat16 is recognised without importing ml_dtypes: `import cyce`
    leaves it unimported for those who never use it."""
    code = "import cyce, sys; assert 'ml_dtypes' not in sys.modules, 'ml_dtypes imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("dtype", HALVES, ids=name_of)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_pytorch_half_tensors_in_place(dtype, smoothing):
    """A torch bfloat16 tensor seen as a NumPy bfloat16 array without a copy
    (torch has no bfloat16 NumPy dtype: through an int16 view), or a float16
    tensor through .numpy(): softmax_ce(inplace=True) writes the gradient
    into the tensor's memory, within one ulp (plus smoothing's allowance) of
    torch's own F.cross_entropy gradient computed in float64 from the same
    values, with the loss within float32's tolerance of torch's."""
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    torch_dtype = torch.bfloat16 if dtype == BF16 else torch.float16
    t = torch.randn(256, 1000, generator=generator, dtype=torch.float32).mul_(3).to(torch_dtype)
    labels = torch.randint(0, 1000, (256,), generator=generator)
    x64 = t.double().requires_grad_()
    expected = torch.nn.functional.cross_entropy(x64, labels, label_smoothing=smoothing)
    expected.backward()
    expected_grad = x64.grad.numpy()
    _, reference_grad, term = reference.softmax_ce(t.double().numpy(), labels.numpy(),
                                                   label_smoothing=smoothing, term_size=True)
    assert_close(reference_grad, expected_grad, np.float64, "reference against torch")
    if dtype == BF16:
        a = t.view(torch.int16).numpy().view(BF16)
    else:
        a = t.numpy()
    assert a.ctypes.data == t.data_ptr()
    loss, grad = cyce.softmax_ce(a, labels.numpy(), label_smoothing=smoothing, inplace=True)
    assert grad is a
    assert_close(loss, expected.item(), np.float32, "loss")
    written = t.float().numpy()
    assert np.array_equal(written, grad.astype(np.float32))
    check_half(grad, expected_grad, dtype, "gradient in the tensor", term if smoothing else 0.0)
