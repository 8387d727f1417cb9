"""sigmoid_bce, multi-label (N, C) with 0/1 targets: the mean loss and its
gradient, cyce in place against PyTorch, JAX and NumPy.

- cyce_inplace  sigmoid_bce(x, targets, inplace=True): the gradient over the
                logits, which are restored before each round;
- numpy         `numpy_sigmoid_bce`, single-threaded;
- torch         F.binary_cross_entropy_with_logits forward + backward;
- jax           jit(value_and_grad) of optax.sigmoid_binary_cross_entropy(...).mean().
"""

import numpy as np

from cyce import _bench

from .common import assert_value, cached_inputs, time_calls
from .inputs import binary_targets, reference_sigmoid_bce, wants_reference

FAMILY = "sigmoid_bce"


def setup_cyce_inplace(x, targets, threads):
    """cyce writing the gradient over a private copy of the logits, which
    gets the shared logits back before each round."""
    import cyce

    work = x.copy()

    def prepare():
        np.copyto(work, x)

    def run():
        return cyce.sigmoid_bce(work, targets, inplace=True, num_threads=threads)

    return prepare, run


def numpy_sigmoid_bce(x, targets):
    """Mean binary cross entropy with logits and its gradient in plain NumPy,
    in x's dtype: l = softplus(x) - x y with softplus(x) = logaddexp(0, x),
    and d l / d x = sigmoid(x) - y, sigmoid(x) = exp(x - softplus(x))."""
    softplus = np.logaddexp(0, x)
    loss = np.mean(softplus - x * targets)
    grad = np.exp(x - softplus)
    grad -= targets
    grad /= x.size
    return loss, grad


def setup_numpy(x, targets, threads):
    """The NumPy reference; NumPy's ufuncs use one thread whatever `threads` is."""

    def run():
        return numpy_sigmoid_bce(x, targets)

    return None, run


def setup_torch(x, targets, threads):
    """BCEWithLogits (mean) forward + backward on a new leaf sharing x's
    memory, made before each round outside the timing."""
    import torch
    import torch.nn.functional as F

    target = torch.from_numpy(targets)
    state = {}

    def prepare():
        state["leaf"] = torch.from_numpy(x).requires_grad_()

    def run():
        leaf = state.pop("leaf")
        loss = F.binary_cross_entropy_with_logits(leaf, target)
        loss.backward()
        return loss.item(), leaf.grad

    return prepare, run


def setup_jax(x, targets, threads):
    """jit(value_and_grad) of optax's sigmoid BCE, mean over all elements;
    the inputs are put on the (CPU) device once, before timing."""
    import jax
    import optax

    def mean_loss(logits, labels):
        return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

    step = jax.jit(jax.value_and_grad(mean_loss))
    x_dev = jax.device_put(x)
    targets_dev = jax.device_put(targets)

    def run():
        loss, grad = step(x_dev, targets_dev)
        grad.block_until_ready()
        return float(loss), grad

    return None, run


CONTESTANTS = {
    "cyce_inplace": setup_cyce_inplace,
    "numpy": setup_numpy,
    "torch": setup_torch,
    "jax": setup_jax,
}


def make_inputs(n_rows, n_classes, dtype):
    """_bench's logits, 0/1 targets in the logits' dtype (bench.inputs.binary_targets),
    and the reference loss."""
    x, _ = _bench.make_inputs(n_rows, n_classes, dtype)
    targets = binary_targets(x.shape, dtype)
    expected = reference_sigmoid_bce(x, targets) if wants_reference(x) else None
    return (x, targets), expected


def test_sigmoid_bce(benchmark, case):
    (x, targets), expected = cached_inputs(make_inputs, case.n_rows, case.n_classes, case.dtype)
    result = time_calls(benchmark, case, CONTESTANTS[case.contestant], x, targets)
    assert_value(result[0], expected, case)
