"""softmax_ce, logsumexp, log_softmax, softmax against PyTorch (skipped
where torch is not installed).  PyTorch puts classes on axis 1; cyce on the
last axis, so (N, d, C) here is (N, C, d) there."""

import itertools

import numpy as np
import pytest

import cyce
from conftest import tolerance

torch = pytest.importorskip("torch")
F = torch.nn.functional

CASES = [case for case in itertools.product(
    [np.float32, np.float64],
    ["mean", "sum", "none"],
    [0.0, 0.15],
    [False, True],       # class weights
    [None, -100, 1],     # ignore_index (None: no row ignored)
    ["hard", "soft"],
    [(9, 7), (3, 4, 6), (6,)],
) if not (case[5] == "soft" and case[4] is not None)]  # ignore_index is for class indices


def torch_ce(x, labels, weight, reduction, smoothing, ignore_index):
    xt = torch.tensor(x, requires_grad=True)
    xc = xt.movedim(-1, 1) if xt.ndim > 2 else xt
    tt = torch.tensor(labels)
    if tt.is_floating_point() and tt.ndim > 2:
        tt = tt.movedim(-1, 1)
    kwargs = dict(reduction=reduction, label_smoothing=smoothing,
                  weight=None if weight is None else torch.tensor(weight))
    if ignore_index is not None:
        kwargs["ignore_index"] = ignore_index
    loss = F.cross_entropy(xc, tt, **kwargs)
    loss.sum().backward()
    return loss.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("dtype,reduction,smoothing,weighted,ignore_index,kind,shape", CASES)
def test_cross_entropy_matches_pytorch(dtype, reduction, smoothing, weighted, ignore_index, kind, shape):
    rng = np.random.default_rng(abs(hash((reduction, smoothing, weighted, ignore_index, kind, shape))) % 2**32)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    n_classes = shape[-1]
    if kind == "soft":
        t = rng.random(shape)
        labels = (t / t.sum(-1, keepdims=True)).astype(dtype)
    else:
        labels = rng.integers(0, n_classes, shape[:-1])
        if ignore_index is not None and labels.ndim:
            labels.reshape(-1)[::3] = ignore_index
    weight = rng.uniform(0.2, 2.0, n_classes).astype(dtype) if weighted else None
    expected_loss, expected_grad = torch_ce(x, labels, weight, reduction, smoothing, ignore_index)
    kwargs = {} if ignore_index is None else {"ignore_index": ignore_index}
    loss, grad = cyce.softmax_ce(x, labels, weight=weight, reduction=reduction,
                                 label_smoothing=smoothing, return_grad=True, **kwargs)
    rtol = 2e-5 if dtype == np.float32 else 1e-11  # PyTorch accumulates float32 in float32
    np.testing.assert_allclose(loss, expected_loss, rtol=rtol, atol=rtol * 1e-2, equal_nan=True)
    np.testing.assert_allclose(grad, expected_grad, rtol=rtol, atol=rtol * 1e-2 * max(1, np.abs(expected_grad).max()))


def test_all_ignored_and_empty_like_pytorch():
    x = np.ones((3, 4), np.float32)
    labels = np.full(3, -100)
    assert np.isnan(cyce.softmax_ce(x, labels)) and torch.isnan(F.cross_entropy(torch.tensor(x), torch.tensor(labels)))
    empty = np.zeros((0, 4), np.float32)
    expected = F.cross_entropy(torch.tensor(empty), torch.zeros(0, dtype=torch.long)).item()
    assert np.isnan(expected) and np.isnan(cyce.softmax_ce(empty, np.zeros(0, np.int64)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_functions_match_pytorch(dtype):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((5, 3, 50)) * 4).astype(dtype)
    x[0, 0, :3] = -np.inf
    xt = torch.tensor(x)
    rtol = tolerance(dtype)[0] * 2
    np.testing.assert_allclose(cyce.logsumexp(x), torch.logsumexp(xt, -1).numpy(), rtol=rtol)
    np.testing.assert_allclose(cyce.log_softmax(x), F.log_softmax(xt, -1).numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(cyce.softmax(x), F.softmax(xt, -1).numpy(), rtol=rtol, atol=rtol * 1e-3)
    special = np.array([[np.inf, 0.0], [-np.inf, -np.inf], [np.nan, 1.0]], dtype=dtype)
    np.testing.assert_array_equal(cyce.logsumexp(special), torch.logsumexp(torch.tensor(special), -1).numpy())
