"""sigmoid_bce, binary_ce and categorical_ce against the float64 reference,
PyTorch (BCEWithLogitsLoss, BCELoss) and scikit-learn's log_loss where
installed, mpmath at the extremes."""

import tracemalloc

import numpy as np
import pytest

import cyce
import reference
from conftest import assert_close

DTYPES = [np.float32, np.float64]
SHAPES = [(7,), (1, 1), (16, 5), (3, 4, 6), (64, 1000), (5, 9001)]
REDUCTIONS = ["mean", "sum", "none", "batchmean"]
WEIGHTS = ["none", "per_class", "per_row", "full", "pos_weight", "both"]


def binary_case(rng, shape, dtype, weights, soft=True):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    y = rng.random(shape) if soft else (rng.random(shape) > 0.5)
    y = y.astype(dtype)
    kwargs = {}
    if weights in ("per_class", "both"):
        kwargs["weight"] = rng.uniform(0.1, 2.0, shape[-1])
    elif weights == "per_row" and len(shape) > 1:
        kwargs["weight"] = rng.uniform(0.1, 2.0, shape[:-1] + (1,))
    elif weights == "full":
        kwargs["weight"] = rng.uniform(0.1, 2.0, shape).astype(dtype)
    if weights in ("pos_weight", "both"):
        kwargs["pos_weight"] = rng.uniform(0.5, 3.0, shape[-1])
    return x, y, kwargs


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weights", WEIGHTS)
def test_sigmoid_bce_matches_reference(kernel_build, rng, shape, dtype, reduction, weights):
    x, y, kwargs = binary_case(rng, shape, dtype, weights)
    expected_loss, expected_grad = reference.sigmoid_bce(x, y, reduction=reduction, **kwargs)
    loss, grad = cyce.sigmoid_bce(x, y, reduction=reduction, return_grad=True, **kwargs)
    assert grad.shape == x.shape and grad.dtype == x.dtype and np.asarray(loss).dtype == x.dtype
    assert_close(loss, expected_loss, dtype, "loss")
    assert_close(grad, expected_grad, dtype, "grad")
    np.testing.assert_array_equal(cyce.sigmoid_bce(x, y, reduction=reduction, **kwargs), loss)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_ce_matches_reference(rng, shape, dtype, reduction, weighted):
    x, y, kwargs = binary_case(rng, shape, dtype, "full" if weighted else "none")
    probs = rng.random(shape).astype(dtype)
    expected_loss, expected_grad = reference.binary_ce(probs, y, reduction=reduction, **kwargs)
    loss, grad = cyce.binary_ce(probs, y, reduction=reduction, return_grad=True, **kwargs)
    assert_close(loss, expected_loss, dtype, "loss")
    assert_close(grad, expected_grad, dtype, "grad")


def categorical_case(rng, shape, dtype, kind):
    probs = rng.random(shape)
    probs = (probs / probs.sum(axis=-1, keepdims=True)).astype(dtype)
    n_classes = shape[-1]
    if kind == "onehot":
        labels = np.eye(n_classes, dtype=dtype)[rng.integers(0, n_classes, shape[:-1])]
    elif kind == "soft":
        t = rng.random(shape)
        labels = (t / t.sum(axis=-1, keepdims=True)).astype(dtype)
    else:
        labels = rng.integers(0, n_classes, shape[:-1])
        if kind == "ignore" and labels.ndim:
            labels.reshape(-1)[::3] = -100
    return probs, labels


@pytest.mark.parametrize("shape", [(6,), (16, 5), (3, 4, 6), (64, 1000)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kind", ["index", "ignore", "onehot", "soft"])
@pytest.mark.parametrize("weighted", [False, True])
def test_categorical_ce_matches_reference(rng, shape, dtype, reduction, kind, weighted):
    probs, labels = categorical_case(rng, shape, dtype, kind)
    probs.reshape(-1)[::7] = 0.0  # clipped at eps: loss -log(eps), gradient 0
    weight = rng.uniform(0.2, 2.0, shape[-1]) if weighted else None
    eps = np.finfo(dtype).eps
    expected_loss, expected_grad = reference.categorical_ce(probs, labels, eps, weight=weight,
                                                            reduction=reduction)
    loss, grad = cyce.categorical_ce(probs, labels, weight=weight, reduction=reduction,
                                     return_grad=True)
    assert_close(loss, expected_loss, dtype, "loss")
    assert_close(grad, expected_grad, dtype, "grad")


# ------------------------------------------------------------ PyTorch, sklearn

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("shape", [(11,), (8, 5), (2, 3, 4)], ids=str)
def test_sigmoid_bce_matches_pytorch(rng, dtype, reduction, weights, shape):
    torch = pytest.importorskip("torch")
    x, y, kwargs = binary_case(rng, shape, dtype, weights)
    xt = torch.tensor(x, requires_grad=True)
    tkw = {k: torch.tensor(np.asarray(v, dtype=dtype)) for k, v in kwargs.items()}
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        xt, torch.tensor(y), reduction=reduction, **tkw)
    expected.sum().backward()
    loss, grad = cyce.sigmoid_bce(x, y, reduction=reduction, return_grad=True, **kwargs)
    rtol = 2e-5 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(loss, expected.detach().numpy(), rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=rtol, atol=1e-7)
    if reduction == "sum" and len(shape) > 1:
        batchmean = cyce.sigmoid_bce(x, y, reduction="batchmean", **kwargs)
        np.testing.assert_allclose(batchmean, expected.item() / shape[0], rtol=rtol)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_ce_matches_pytorch(rng, dtype, reduction, weighted):
    torch = pytest.importorskip("torch")
    probs = rng.random((9, 4)).astype(dtype)
    probs[0, :] = [0.0, 1.0, 0.0, 1.0]  # the clamped logs
    y = rng.random((9, 4)).astype(dtype)
    y[0, :] = [0.0, 1.0, 1.0, 0.0]
    weight = rng.uniform(0.2, 2.0, (9, 4)).astype(dtype) if weighted else None
    pt = torch.tensor(probs, requires_grad=True)
    expected = torch.nn.functional.binary_cross_entropy(
        pt, torch.tensor(y), weight=None if weight is None else torch.tensor(weight), reduction=reduction)
    expected.sum().backward()
    loss, grad = cyce.binary_ce(probs, y, weight=weight, reduction=reduction, return_grad=True)
    # float64: PyTorch's gradient at the 1e-12 clamp (|g| ~ 3e10) is 4e-9 off the
    # formula's value; elsewhere the two agree to 1e-15.
    rtol = 2e-5 if dtype == np.float32 else 1e-8
    np.testing.assert_allclose(loss, expected.detach().numpy(), rtol=rtol, atol=1e-6)
    np.testing.assert_allclose(grad, pt.grad.numpy(), rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_categorical_ce_matches_sklearn_log_loss(rng, dtype):
    metrics = pytest.importorskip("sklearn.metrics")
    probs, labels = categorical_case(rng, (50, 6), dtype, "index")
    probs[3] = np.eye(6, dtype=dtype)[(labels[3] + 1) % 6]  # a confident mistake: clipped
    expected = metrics.log_loss(labels, probs, labels=np.arange(6))
    np.testing.assert_allclose(cyce.categorical_ce(probs, labels), expected,
                               rtol=2e-6 if dtype == np.float32 else 1e-12)
    onehot = np.eye(6, dtype=dtype)[labels]
    np.testing.assert_allclose(cyce.categorical_ce(probs, onehot), expected,
                               rtol=2e-6 if dtype == np.float32 else 1e-12)


# --------------------------------------------------------------------- edges

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_sigmoid_bce_extremes_against_mpmath(kernel_build, dtype):
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    big = 3e38 if dtype == np.float32 else 1e300
    xs = np.array([-big, -1e4, -50.0, -20.5, -1e-10, 0.0, 1e-10, 20.5, 50.0, 1e4, big], dtype=dtype)
    for y, pos_weight in ((0.0, 1.0), (0.3, 1.0), (1.0, 1.0), (0.3, 2.0), (1.0, 2.0)):
        ys = np.full_like(xs, y)
        loss, grad = cyce.sigmoid_bce(xs, ys, pos_weight=pos_weight, reduction="none",
                                      return_grad=True)
        assert np.isfinite(grad).all()
        if pos_weight == 1.0:  # (with 2, the exact loss at -3e38 is 6e38: inf in float32)
            assert np.isfinite(loss).all()
        for i, x in enumerate(xs):
            xm = mpmath.mpf(float(x))
            log_sig = -mpmath.log1p(mpmath.exp(-xm)) if xm > -1e5 else xm
            log_not_sig = -mpmath.log1p(mpmath.exp(xm)) if xm < 1e5 else -xm
            exact = -(pos_weight * y * log_sig + (1 - y) * log_not_sig)
            with np.errstate(over="ignore"):
                expected = dtype(float(exact))
            np.testing.assert_allclose(loss[i], expected, rtol=1e-6 if dtype == np.float32 else 1e-14,
                                       atol=0, err_msg=f"x={x}, y={y}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_sigmoid_bce_nan_and_infinite_logits(dtype):
    x = np.array([np.nan, 1.0, np.inf, -np.inf, np.inf, -np.inf], dtype=dtype)
    y = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 1.0], dtype=dtype)
    loss, grad = cyce.sigmoid_bce(x, y, reduction="none", return_grad=True)
    assert np.isnan(loss[0]) and np.isnan(grad[0])
    assert np.isfinite(loss[1])
    np.testing.assert_array_equal(loss[2:4], [0.0, 0.0])   # right and certain: no loss
    np.testing.assert_array_equal(loss[4:], [np.inf, np.inf])
    np.testing.assert_array_equal(grad[2:], [0.0, 0.0, 1.0, -1.0])


def test_sigmoid_bce_symmetry(rng):
    x = rng.standard_normal(1000) * 30
    y = rng.integers(0, 9, 1000) / 8  # 1 - y is exact
    # equal up to rounding: with FMA the two products of a sum are rounded
    # differently depending on which comes first
    np.testing.assert_allclose(cyce.sigmoid_bce(x, y, reduction="none"),
                               cyce.sigmoid_bce(-x, 1 - y, reduction="none"), rtol=5e-16, atol=0)


def test_probabilities_exactly_zero_and_one():
    probs = np.array([0.0, 1.0, 0.0, 1.0])
    y = np.array([0.0, 1.0, 1.0, 0.0])
    loss, grad = cyce.binary_ce(probs, y, reduction="none", return_grad=True)
    np.testing.assert_array_equal(loss, [0.0, 0.0, 100.0, 100.0])
    np.testing.assert_array_equal(grad, [0.0, 0.0, -1e12, 1e12])
    p = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
    loss, grad = cyce.categorical_ce(p, [0, 2], reduction="none", return_grad=True)
    assert loss[0] == 0.0 and loss[1] == np.float32(-np.log(np.finfo(np.float32).eps))
    np.testing.assert_array_equal(grad, [[-1.0, 0, 0], [0, 0, 0]])


@pytest.mark.parametrize("fn", ["sigmoid_bce", "binary_ce"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "batchmean", "none"])
def test_empty_input(fn, reduction):
    empty = np.zeros((0, 3), np.float32)
    loss, grad = getattr(cyce, fn)(empty, empty, reduction=reduction, return_grad=True)
    assert grad.shape == (0, 3)
    if reduction in ("mean", "batchmean"):
        assert np.isnan(loss)
    elif reduction == "sum":
        assert loss == 0
    else:
        assert loss.shape == (0, 3)


# ------------------------------------------------- in place, determinism

@pytest.mark.parametrize("fn", ["sigmoid_bce", "binary_ce", "categorical_ce"])
def test_inplace_and_grad_out(rng, fn):
    shape = (300, 77)
    x = rng.random(shape).astype(np.float32)
    if fn == "categorical_ce":
        targets = rng.integers(0, 77, 300)
    else:
        targets = rng.random(shape).astype(np.float32)
    f = getattr(cyce, fn)
    expected = f(x, targets, return_grad=True)
    buffer = x.copy()
    loss, grad = f(buffer, targets, inplace=True)
    assert grad is buffer
    np.testing.assert_array_equal(loss, expected[0])
    np.testing.assert_array_equal(grad, expected[1])
    out = np.empty_like(x)
    assert f(x, targets, grad_out=out)[1] is out
    np.testing.assert_array_equal(out, expected[1])


def test_sigmoid_bce_inplace_allocates_nothing_of_the_input_size(rng):
    x = rng.standard_normal((1000, 500)).astype(np.float32)
    y = (rng.random((1000, 500)) > 0.5).astype(np.float32)
    pos_weight = rng.random(500)
    cyce.sigmoid_bce(x.copy(), y, inplace=True)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        cyce.sigmoid_bce(x, y, pos_weight=pos_weight, weight=pos_weight, inplace=True,
                         reduction="batchmean")
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert peak < x.nbytes / 50, peak


@pytest.mark.parametrize("fn", ["sigmoid_bce", "binary_ce", "categorical_ce"])
def test_same_bits_for_any_thread_count(rng, fn):
    shape = (1003, 41)  # 41123 elements: not a multiple of the block or of any thread count
    x = rng.random(shape)
    targets = rng.integers(0, 41, 1003) if fn == "categorical_ce" else rng.random(shape)
    f = getattr(cyce, fn)
    first = f(x, targets, return_grad=True, num_threads=1)
    for threads in (2, 3, 4):
        loss, grad = f(x, targets, return_grad=True, num_threads=threads)
        assert loss.tobytes() == first[0].tobytes()
        assert grad.tobytes() == first[1].tobytes()


# ------------------------------------------------------------- bad input

def unchanged_after_error(fn, args, kwargs, error, pattern):
    arrays = [a for a in list(args) + list(kwargs.values()) if isinstance(a, np.ndarray)]
    before = [a.copy() for a in arrays]
    with pytest.raises(error, match=pattern):
        fn(*args, **kwargs)
    for a, b in zip(arrays, before):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("inplace", [False, True])
def test_bad_input(inplace):
    x = np.zeros((4, 3), np.float32)
    y = np.full((4, 3), 0.5, np.float32)
    kw = {"inplace": inplace}
    bad_y = y.copy()
    bad_y[2, 1] = 1.5
    unchanged_after_error(cyce.sigmoid_bce, (x, bad_y), kw, ValueError,
                          r"targets\[2, 1\] = 1.5 is not a probability")
    bad_p = np.full((4, 3), 0.5, np.float32)
    bad_p[3, 0] = -0.25
    unchanged_after_error(cyce.binary_ce, (bad_p, y), kw, ValueError, r"probs\[3, 0\] = -0.25")
    bad_p[3, 0] = np.nan
    unchanged_after_error(cyce.binary_ce, (bad_p, y), kw, ValueError, r"probs\[3, 0\] = nan")
    unchanged_after_error(cyce.sigmoid_bce, (x, y), dict(kw, pos_weight=np.ones(4)), ValueError,
                          r"pos_weight of shape \(4,\) does not broadcast to \(3,\)")
    unchanged_after_error(cyce.sigmoid_bce, (x, y), dict(kw, weight=np.ones(4)), ValueError,
                          r"weight of shape \(4,\) does not broadcast to \(4, 3\)")
    unchanged_after_error(cyce.sigmoid_bce, (x, y), dict(kw, weight=np.array([1, np.inf, 1])),
                          ValueError, r"weight\[1\] = inf is not finite")
    unchanged_after_error(cyce.sigmoid_bce, (x, y), dict(kw, reduction="avg"), ValueError,
                          r"reduction must be one of 'mean', 'sum', 'none', 'batchmean'")
    unchanged_after_error(cyce.sigmoid_bce, (x, y[:2]), kw, ValueError, r"targets has shape \(2, 3\)")
    unchanged_after_error(cyce.sigmoid_bce, (x.astype(np.int32), y), {}, TypeError, r"logits must be float32")
    unchanged_after_error(cyce.sigmoid_bce, (x, y.astype(np.complex64)), kw, TypeError, r"targets must be")
    unchanged_after_error(cyce.sigmoid_bce, (x, np.full((4, 3), 2)), kw, ValueError, r"targets\[0, 0\] = 2.0")
    unchanged_after_error(cyce.sigmoid_bce, (x, x), {"inplace": True}, ValueError, r"overwrite targets")
    p = np.full((4, 3), 1 / 3, np.float32)
    unchanged_after_error(cyce.categorical_ce, (p, [0, 1, 3, 0]), kw, IndexError, r"labels\[2\] = 3")
    unchanged_after_error(cyce.categorical_ce, (p, [0, 1, 2, 0]), dict(kw, eps=2.0), ValueError, r"eps")
    unchanged_after_error(cyce.categorical_ce, (p, y * 3), kw, ValueError, r"labels\[0, 0\] = 1.5")
