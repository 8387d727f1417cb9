"""logsumexp over the last axis into a new (N,) array: cyce against
torch.logsumexp, jax.scipy.special.logsumexp (jit) and NumPy."""

import numpy as np

from cyce import _bench

from .common import assert_value, cached_inputs, time_calls
from .inputs import reference_logsumexp, wants_reference

FAMILY = "logsumexp"


def setup_cyce(x, threads):
    import cyce

    def run():
        return cyce.logsumexp(x, num_threads=threads)

    return None, run


def numpy_logsumexp(x):
    """log(sum(exp(x - max))) + max over the last axis, in x's dtype."""
    m = x.max(axis=1, keepdims=True)
    return np.log(np.exp(x - m).sum(axis=1)) + m[:, 0]


def setup_numpy(x, threads):
    """The NumPy reference; single-threaded whatever `threads` is."""

    def run():
        return numpy_logsumexp(x)

    return None, run


def setup_torch(x, threads):
    """torch.logsumexp on a tensor sharing x's memory (no autograd)."""
    import torch

    tensor = torch.from_numpy(x)

    def run():
        return torch.logsumexp(tensor, dim=1)

    return None, run


def setup_jax(x, threads):
    """jit of jax.scipy.special.logsumexp; x is put on the device once."""
    import jax
    from jax.scipy.special import logsumexp

    step = jax.jit(lambda logits: logsumexp(logits, axis=1))
    x_dev = jax.device_put(x)

    def run():
        return step(x_dev).block_until_ready()

    return None, run


CONTESTANTS = {
    "cyce": setup_cyce,
    "numpy": setup_numpy,
    "torch": setup_torch,
    "jax": setup_jax,
}


def make_inputs(n_rows, n_classes, dtype):
    """_bench's logits and the mean of their float64 row logsumexps,
    against which each contestant's mean is checked."""
    x, _ = _bench.make_inputs(n_rows, n_classes, dtype)
    expected = float(reference_logsumexp(x).mean()) if wants_reference(x) else None
    return (x,), expected


def test_logsumexp(benchmark, case):
    (x,), expected = cached_inputs(make_inputs, case.n_rows, case.n_classes, case.dtype)
    result = time_calls(benchmark, case, CONTESTANTS[case.contestant], x)
    assert_value(np.mean(np.asarray(result, dtype=np.float64)), expected, case, "mean logsumexp")
