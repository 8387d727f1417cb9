"""Properties that hold for any finite input, checked with Hypothesis.

For every public function, over float32 and float64, both kernel builds, and
logits anywhere in [-1e30, 1e30] (Hypothesis favours the edges: +-1e30, 0,
-0, subnormals, the smallest normal):

- the losses are >= 0 and finite (``"mean"`` with nothing to average is NaN,
  as documented), and agree with the float64 reference (tests/reference.py)
  within README.md's "Accuracy" tolerances: float32 1e-5, float64 1e-12 relative, with
  conftest.assert_close's absolute floor (tests/agreement.py says where the
  reference itself is rounded to the result's dtype or made more accurate);
- the gradient rows of the unweighted, unsmoothed softmax CE sum to 0;
- shifting every row of the logits by a constant changes nothing beyond
  rounding (the inputs are chosen so that x + c is exact);
- sigmoid_bce(x, y) == sigmoid_bce(-x, 1 - y) and
  binary_ce(p, y) == binary_ce(1 - p, 1 - y) up to rounding.

Each tolerance is stated where it is used, with the reason for its size.
CYCE_PROPERTY_EXAMPLES (default 300) sets the examples per test, e.g. 5000
for a long hunt; the default keeps the file well under a minute.  The
examples are derandomized (the same ones on every run, as the fuzzer's fixed
seed), so that a landing never depends on a draw; CYCE_PROPERTY_RANDOM=1
draws new ones for a hunt.
"""

import math
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cyce
import reference
from agreement import binary_ce_reference, categorical_ce_reference, close, sigmoid_bce_term_size
from conftest import LEVELS, kernels_of_level

EXAMPLES = int(os.environ.get("CYCE_PROPERTY_EXAMPLES", "300"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    derandomize=os.environ.get("CYCE_PROPERTY_RANDOM", "0") != "1",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DTYPES = (np.float32, np.float64)
EPS64 = float(np.finfo(np.float64).eps)
BINARY_REDUCTIONS = ("mean", "sum", "none", "batchmean")


def eps(dtype):
    return float(np.finfo(dtype).eps)


# Hypothesis draws the kernel level like any other input
kernel_build = kernels_of_level


# ------------------------------------------------------------- strategies

def finite(dtype, bound=1e30):
    """Finite values of dtype in [-bound, bound], with the edges spelled out
    so that every example has a good chance of holding some."""
    info = np.finfo(dtype)
    top = float(dtype(bound))
    edges = [0.0, -0.0, 1.0, -1.0, top, -top, float(info.tiny), -float(info.tiny),
             float(info.smallest_subnormal), -float(info.smallest_subnormal)]
    width = 32 if dtype == np.float32 else 64
    return st.one_of(
        st.floats(-top, top, width=width, allow_nan=False, allow_infinity=False),
        st.sampled_from(edges),
    )


def unit_interval(dtype):
    """Values in [0, 1], the endpoints and subnormals included."""
    info = np.finfo(dtype)
    width = 32 if dtype == np.float32 else 64
    return st.one_of(
        st.floats(0.0, 1.0, width=width),
        st.sampled_from([0.0, 1.0, float(info.smallest_subnormal), float(info.tiny),
                         float(info.eps), 1.0 - float(info.epsneg)]),
    )


SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=7)


def draw_common(data):
    """(build, dtype, shape) of one example."""
    build = data.draw(st.sampled_from(LEVELS), label="build")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    shape = data.draw(SHAPES, label="shape")
    return build, dtype, shape


def draw_logits(data, dtype, shape, bound=1e30):
    return data.draw(hnp.arrays(dtype, shape, elements=finite(dtype, bound)), label="logits")


def draw_labels(data, shape, ignore=True):
    """Integer class indices for logits of this shape, some rows -100."""
    classes = st.integers(0, shape[-1] - 1)
    if ignore:
        classes = st.one_of(classes, st.just(-100))
    return data.draw(hnp.arrays(np.int64, shape[:-1], elements=classes), label="labels")


def draw_probabilities(data, shape):
    dtype = data.draw(st.sampled_from(DTYPES), label="target dtype")
    return data.draw(hnp.arrays(dtype, shape, elements=unit_interval(dtype)), label="targets")


def weights(data, shape, label, zero=False):
    """Weights in [0.25, 4] (and exact zeros if `zero`): a range that float32
    holds too (the binary family uses its weights in the input's dtype)."""
    elements = st.floats(0.25, 4.0)
    if zero:
        elements = st.one_of(elements, st.just(0.0))
    return data.draw(hnp.arrays(np.float64, shape, elements=elements), label=label)


def mean_denominator(labels, kwargs, soft):
    """D of the "mean" reduction (0: nothing to average, the mean is NaN)."""
    if soft:
        s = kwargs.get("sample_weight")
        return float(np.prod(labels.shape[:-1])) if s is None else float(np.sum(s))
    kept = labels != -100
    w = kwargs.get("weight")
    per_row = np.ones(labels.shape) if w is None else np.where(kept, w[np.where(kept, labels, 0)], 0.0)
    s = kwargs.get("sample_weight")
    if s is not None:
        per_row = per_row * s
    return float(np.sum(np.where(kept, per_row, 0.0)))


def assert_nonnegative_finite(loss, what):
    loss = np.asarray(loss)
    assert np.all(np.isfinite(loss)), f"{what}: non-finite loss {loss}"
    assert np.all(loss >= 0), f"{what}: negative loss {loss}"


# ----------------------------------------------------------- softmax family

@PROPERTY
@given(st.data())
def test_softmax_functions_for_any_finite_logits(data):
    """logsumexp, log_softmax, softmax: finite, in range, and the reference's
    values.  softmax rows sum to 1 within 4 C ulp of the dtype (the sum taken
    in float64): each of the C probabilities carries an exp of at most 2 ulp,
    a division and a rounding to the dtype."""
    build, dtype, shape = draw_common(data)
    x = draw_logits(data, dtype, shape)
    with kernel_build(build):
        lse = cyce.logsumexp(x)
        log_p = cyce.log_softmax(x)
        p = cyce.softmax(x)
    assert np.all(np.isfinite(lse)) and np.all(np.isfinite(log_p)) and np.all(np.isfinite(p))
    assert np.all(log_p <= 0) and np.all((p >= 0) & (p <= 1))
    row_sums = p.astype(np.float64).sum(axis=-1)
    np.testing.assert_allclose(row_sums, 1.0, rtol=0, atol=4 * shape[-1] * eps(dtype))
    close(lse, reference.logsumexp(x), dtype, "logsumexp")
    close(log_p, reference.log_softmax(x), dtype, "log_softmax")
    close(p, reference.softmax(x), dtype, "softmax")


@PROPERTY
@given(st.data())
def test_softmax_ce_for_any_finite_logits(data):
    """softmax_ce with every option drawn: loss >= 0 and finite (NaN for a
    "mean" with nothing to average), the gradient finite, both the
    reference's.  Weights are drawn from [0.25, 4] so that a mean's
    denominator is 0 only when every row is ignored; z_loss (z lse^2, which
    legitimately overflows float32 once |lse| > 1.8e19) only where it fits."""
    build, dtype, shape = draw_common(data)
    x = draw_logits(data, dtype, shape)
    soft = data.draw(st.booleans(), label="soft")
    labels = draw_probabilities(data, shape) if soft else draw_labels(data, shape)
    kwargs = {}
    if data.draw(st.booleans(), label="weight"):
        kwargs["weight"] = weights(data, shape[-1:], "weight")
    if data.draw(st.booleans(), label="sample_weight"):
        kwargs["sample_weight"] = weights(data, shape[:-1], "sample_weight")
    if data.draw(st.booleans(), label="smoothing"):
        kwargs["label_smoothing"] = data.draw(st.floats(0.0, 1.0), label="label_smoothing")
    if (dtype == np.float64 or np.max(np.abs(x)) < 1e15) and data.draw(st.booleans(), label="z"):
        kwargs["z_loss"] = data.draw(st.floats(0.0, 1.0), label="z_loss")
    reduction = data.draw(st.sampled_from(("mean", "sum", "none")), label="reduction")

    with kernel_build(build):
        loss, grad = cyce.softmax_ce(x, labels, reduction=reduction, return_grad=True, **kwargs)
        row_losses = cyce.softmax_ce(x, labels, reduction="none", **kwargs)
    assert_nonnegative_finite(row_losses, "per-row losses")
    if reduction == "mean" and mean_denominator(labels, kwargs, soft) == 0:
        assert np.isnan(loss)
    else:
        assert_nonnegative_finite(loss, reduction)
        assert np.all(np.isfinite(grad))
    expected_loss, expected_grad, term_size = reference.softmax_ce(
        x, labels, reduction=reduction, term_size=True, **kwargs)
    close(loss, expected_loss, dtype, "loss")
    close(row_losses, reference.softmax_ce(x, labels, reduction="none", **kwargs)[0], dtype,
          "per-row losses")
    close(grad, expected_grad, dtype, "grad", term_size)


@PROPERTY
@given(st.data())
def test_softmax_ce_gradient_rows_sum_to_zero(data):
    """Unweighted, unsmoothed, integer labels: each gradient row is
    scale * (softmax(x_i) - onehot(y_i)), whose exact sum is 0.

    Tolerance: each entry carries a few ulp of relative rounding (the exp,
    the division by the row's sum, the final rounding to the dtype), so the
    row's sum, taken exactly (math.fsum of the float64 values), may be off by
    8 ulp of the dtype times the sum of the entries' magnitudes."""
    build, dtype, shape = draw_common(data)
    x = draw_logits(data, dtype, shape)
    labels = draw_labels(data, shape)
    reduction = data.draw(st.sampled_from(("mean", "sum", "none")), label="reduction")
    with kernel_build(build):
        _, grad = cyce.softmax_ce(x, labels, reduction=reduction, return_grad=True)
    rows = grad.reshape(-1, shape[-1]).astype(np.float64)
    for i, row in enumerate(rows):
        magnitude = math.fsum(np.abs(row))
        total = math.fsum(row)
        assert abs(total) <= 8 * eps(dtype) * magnitude, (i, total, magnitude, row)
    ignored = (labels == -100).reshape(-1)
    assert not rows[ignored].any()


def shifted_pair(data, dtype, shape):
    """(x, x + c) with c constant along each row, both exact: x on a 2**-8
    grid with |x| <= 4096 and integer |c| <= 4096, so |x + c| <= 8192 needs
    21 significant bits, which float32 has.  Then x - max(x) is exact too, and
    the kernels see bit-for-bit the same shifted row for x and for x + c."""
    steps = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(-(2**20), 2**20)), label="x*256")
    shift = data.draw(hnp.arrays(np.int64, shape[:-1] + (1,), elements=st.integers(-4096, 4096)),
                      label="c")
    x = steps / 256.0
    return x.astype(dtype), (x + shift).astype(dtype), shift[..., 0].astype(np.float64)


@PROPERTY
@given(st.data())
def test_shift_invariance(data):
    """Adding a constant c to every logit of a row leaves softmax,
    log_softmax and softmax_ce (loss and gradient) unchanged, and adds c to
    logsumexp.

    Tolerances.  softmax, log_softmax and the gradient depend on x only
    through x - max(x), which is exactly the same for x and x + c here: 1 ulp
    of the dtype, relative (in practice they agree to the bit; 1 ulp leaves
    the kernels free to, say, fuse differently).  Quantities built from x itself
    round at the magnitude of x: logsumexp(x + c) = max + log(sum) rounds once
    at |max(x + c)|, and each loss term lse - x_c (with smoothing, one per
    class) carries a rounding of lse and of x_c, so a row's loss may move by
    2 ulp of max |x| and |x + c| times the row's total weight."""
    build, dtype, shape = draw_common(data)
    x, xc, c = shifted_pair(data, dtype, shape)
    labels = draw_labels(data, shape)
    kwargs = {}
    if data.draw(st.booleans(), label="weight"):
        kwargs["weight"] = weights(data, shape[-1:], "weight")
    if data.draw(st.booleans(), label="smoothing"):
        kwargs["label_smoothing"] = data.draw(st.floats(0.0, 1.0), label="label_smoothing")
    e = eps(dtype)
    with kernel_build(build):
        for name in ("softmax", "log_softmax"):
            a, b = getattr(cyce, name)(x), getattr(cyce, name)(xc)
            np.testing.assert_allclose(b, a, rtol=e, atol=0, err_msg=name)
        lse, lse_c = cyce.logsumexp(x), cyce.logsumexp(xc)
        loss, grad = cyce.softmax_ce(x, labels, reduction="none", return_grad=True, **kwargs)
        loss_c, grad_c = cyce.softmax_ce(xc, labels, reduction="none", return_grad=True, **kwargs)
    magnitude = np.maximum(np.max(np.abs(x), axis=-1), np.max(np.abs(xc), axis=-1)).astype(np.float64)
    lse_error = np.abs(np.asarray(lse_c, np.float64) - (np.asarray(lse, np.float64) + c))
    assert np.all(lse_error <= 2 * e * (magnitude + np.abs(c) + 1)), ("logsumexp", lse_error)
    w = np.ones(shape[-1]) if "weight" not in kwargs else kwargs["weight"]
    row_weight = w.sum()
    loss_error = np.abs(loss_c.astype(np.float64) - loss.astype(np.float64))
    allowed = e * np.abs(loss) + 2 * e * (magnitude + 1) * row_weight
    assert np.all(loss_error <= allowed), ("loss", loss_error, allowed)
    np.testing.assert_allclose(grad_c, grad, rtol=e, atol=0, err_msg="gradient")


# ------------------------------------------------------------ binary family

@PROPERTY
@given(st.data())
def test_sigmoid_bce_for_any_finite_logits(data):
    """sigmoid_bce: loss >= 0 and finite for any finite logits, soft targets
    in [0, 1] and non-negative weights, and the reference's loss and gradient."""
    build, dtype, shape = draw_common(data)
    x = draw_logits(data, dtype, shape)
    y = draw_probabilities(data, shape)
    kwargs = {}
    if data.draw(st.booleans(), label="weight"):
        weight_shape = data.draw(st.sampled_from([shape, shape[-1:], shape[:-1] + (1,)]), label="w shape")
        kwargs["weight"] = weights(data, weight_shape, "weight", zero=True)
    if data.draw(st.booleans(), label="pos_weight"):
        kwargs["pos_weight"] = weights(data, shape[-1:], "pos_weight", zero=True)
    reduction = data.draw(st.sampled_from(BINARY_REDUCTIONS), label="reduction")
    with kernel_build(build):
        loss, grad = cyce.sigmoid_bce(x, y, reduction=reduction, return_grad=True, **kwargs)
    assert_nonnegative_finite(loss, reduction)
    assert np.all(np.isfinite(grad))
    expected_loss, expected_grad = reference.sigmoid_bce(x, y, reduction=reduction, **kwargs)
    close(loss, expected_loss, dtype, "loss")
    # a difference of two terms: compared with an absolute floor tied to their size
    term_size = sigmoid_bce_term_size(y, shape, reduction, kwargs.get("weight"), kwargs.get("pos_weight"))
    close(grad, expected_grad, dtype, "grad", term_size)


def grid_values(data, shape, label):
    """Values j / 2**20 in [0, 1]: 1 - v is exact in float32 and float64."""
    steps = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(0, 2**20)), label=label)
    return steps / 2.0**20


@PROPERTY
@given(st.data())
def test_sigmoid_bce_mirror_symmetry(data):
    """sigmoid_bce(x, y) == sigmoid_bce(-x, 1 - y), and the gradients are
    opposite, with y on a grid where 1 - y is exact.

    Tolerances: for float32 the kernel computes in float64 and rounds once,
    so the losses agree within 2 ulp (relative).  float64 has no wider type:
    the two sides' elements agree within 2 ulp (the vector builds contract
    x * y into an FMA on one side only), and a sum of n positive terms in
    float64 adds up to (n - 1) ulp.  The gradient
    sigmoid(x) - y cancels: in float64 the two sides may differ by a few
    float64 ulp of the terms (sigmoid <= 1, y <= 1) before rounding, i.e.
    4 * eps64 absolute, times the weight and the reduction's scale."""
    build, dtype, shape = draw_common(data)
    x = draw_logits(data, dtype, shape)
    y = grid_values(data, shape, "y*2**20").astype(dtype)
    kwargs = {}
    if data.draw(st.booleans(), label="weight"):
        kwargs["weight"] = weights(data, shape, "weight", zero=True)
    reduction = data.draw(st.sampled_from(BINARY_REDUCTIONS), label="reduction")
    with kernel_build(build):
        loss, grad = cyce.sigmoid_bce(x, y, reduction=reduction, return_grad=True, **kwargs)
        mirror, mirror_grad = cyce.sigmoid_bce(-x, 1 - y, reduction=reduction, return_grad=True, **kwargs)
    e = eps(dtype)
    tiny = float(np.finfo(dtype).smallest_subnormal)
    terms = 1 if dtype == np.float32 or reduction == "none" else x.size
    np.testing.assert_allclose(mirror, loss, rtol=(1 + terms) * e, atol=tiny, err_msg="loss")
    scale = {"mean": 1 / x.size, "batchmean": 1 / shape[0]}.get(reduction, 1.0)
    w = kwargs.get("weight", 1.0)
    allowed = 2 * e * np.abs(grad.astype(np.float64)) + 4 * EPS64 * scale * np.asarray(w) + tiny
    assert np.all(np.abs(mirror_grad.astype(np.float64) + grad) <= allowed), "gradient"


@PROPERTY
@given(st.data())
def test_binary_ce_for_any_probabilities_and_mirror(data):
    """binary_ce: loss >= 0 and finite (each log is clamped at -100), the
    reference's values, and binary_ce(p, y) == binary_ce(1 - p, 1 - y) for p
    and y on a grid where 1 - v is exact.  The mirror's gradient is exactly
    opposite ((1-p) - (1-y) = y - p exactly, p (1-p) the same product); its
    loss swaps log(p) for log1p(-(1-p)): 2 ulp of the dtype."""
    build, dtype, shape = draw_common(data)
    p = data.draw(hnp.arrays(dtype, shape, elements=unit_interval(dtype)), label="probs")
    y = draw_probabilities(data, shape)
    kwargs = {}
    if data.draw(st.booleans(), label="weight"):
        kwargs["weight"] = weights(data, shape, "weight", zero=True)
    reduction = data.draw(st.sampled_from(BINARY_REDUCTIONS), label="reduction")
    with kernel_build(build):
        loss, grad = cyce.binary_ce(p, y, reduction=reduction, return_grad=True, **kwargs)
    assert_nonnegative_finite(loss, reduction)
    assert np.all(np.isfinite(grad))
    expected_loss, expected_grad = binary_ce_reference(p, y, reduction, kwargs.get("weight"))
    close(loss, expected_loss, dtype, "loss")
    close(grad, expected_grad, dtype, "grad")

    pg = grid_values(data, shape, "p*2**20").astype(dtype)
    yg = grid_values(data, shape, "y*2**20").astype(dtype)
    with kernel_build(build):
        a, ga = cyce.binary_ce(pg, yg, reduction="none", return_grad=True)
        b, gb = cyce.binary_ce(1 - pg, 1 - yg, reduction="none", return_grad=True)
    np.testing.assert_allclose(b, a, rtol=2 * eps(dtype), atol=0, err_msg="mirror loss")
    np.testing.assert_array_equal(gb, -ga, err_msg="mirror gradient")


@PROPERTY
@given(st.data())
def test_categorical_ce_for_any_probabilities(data):
    """categorical_ce: loss >= 0 and finite (probabilities clipped at eps > 0),
    the gradient finite, both the reference's; probabilities anywhere in
    [0, 1], rows not normalised, subnormals and exact 0 and 1 included."""
    build, dtype, shape = draw_common(data)
    p = data.draw(hnp.arrays(dtype, shape, elements=unit_interval(dtype)), label="probs")
    soft = data.draw(st.booleans(), label="soft")
    labels = draw_probabilities(data, shape) if soft else draw_labels(data, shape)
    kwargs = {}
    if data.draw(st.booleans(), label="weight"):
        kwargs["weight"] = weights(data, shape[-1:], "weight")
    eps_value = data.draw(st.one_of(st.none(), st.floats(1e-30, 1.0)), label="eps")
    reduction = data.draw(st.sampled_from(("mean", "sum", "none")), label="reduction")
    with kernel_build(build):
        loss, grad = cyce.categorical_ce(p, labels, eps=eps_value, reduction=reduction,
                                         return_grad=True, **kwargs)
    if reduction == "mean" and not soft and np.all(labels == -100):
        assert np.isnan(loss)
    else:
        assert_nonnegative_finite(loss, reduction)
    assert np.all(np.isfinite(grad))
    used_eps = np.finfo(dtype).eps if eps_value is None else eps_value
    expected_loss, expected_grad = categorical_ce_reference(p, labels, used_eps, reduction=reduction,
                                                            **kwargs)
    close(loss, expected_loss, dtype, "loss")
    close(grad, expected_grad, dtype, "grad")
