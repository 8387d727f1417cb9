"""softmax_ce: cyce's three ways to call it against PyTorch, JAX and NumPy.

- cyce_loss     the mean loss only;
- cyce_inplace  loss + gradient written over the logits (restored before each round);
- cyce_grad     loss + gradient in a new array (return_grad=True);
- numpy         cyce._bench.numpy_reference, single-threaded;
- torch         F.cross_entropy forward + backward;
- jax           jit(value_and_grad) of optax's mean integer-label cross entropy;
- jax_loss      jit of that loss alone (the peer of cyce_loss).

The contestants are the ones of `python -m cyce bench` (cyce/_bench.py).
At bfloat16 and float16 (_bench's float32 logits rounded; the `half` marker)
cyce runs in place and with a new gradient, and torch at bfloat16 (on a
torch.bfloat16 tensor over the same memory): torch's float16 loss is a float16
sum, inf or nan at 16384x1000 and 65536x10 (see _bench.LOSS_RTOL).
"""

from cyce import _bench

from .common import assert_value, cached_inputs, time_calls
from .inputs import reference_softmax_ce, wants_reference

FAMILY = "softmax_ce"


def setup_cyce_inplace(x, labels, threads):
    """cyce in place, on a private copy of the shared logits: _bench's setup
    restores that copy from a saved one before each round."""
    return _bench.setup_cyce_inplace(x.copy(), labels, threads)


CONTESTANTS = {
    "cyce_loss": _bench.setup_cyce_loss,
    "cyce_inplace": setup_cyce_inplace,
    "cyce_grad": _bench.setup_cyce_grad,
    "numpy": _bench.setup_numpy,
    "torch": _bench.setup_torch,
    "jax": _bench.setup_jax,
    "jax_loss": _bench.setup_jax_loss,
}
HALF_CONTESTANTS = {
    "bfloat16": ("cyce_inplace", "cyce_grad", "torch"),
    "float16": ("cyce_inplace", "cyce_grad"),
}


def make_inputs(n_rows, n_classes, dtype):
    """_bench's logits and int64 labels, and the reference loss."""
    x, labels = _bench.make_inputs(n_rows, n_classes, dtype)
    expected = reference_softmax_ce(x, labels) if wants_reference(x) else None
    return (x, labels), expected


def test_softmax_ce(benchmark, case):
    (x, labels), expected = cached_inputs(make_inputs, case.n_rows, case.n_classes, case.dtype)
    result = time_calls(benchmark, case, CONTESTANTS[case.contestant], x, labels)
    assert_value(result[0], expected, case)
