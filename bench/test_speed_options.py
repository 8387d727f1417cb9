"""softmax_stats and softmax_ce's options against the plain calls (the
contestants of `python -m cyce bench --options`, cyce/_bench.py):

- cyce_loss, cyce_inplace  the plain calls the others are compared with;
- cyce_stats               cyce.softmax_stats(x, y): lse, logprob, entropy, argmax;
- torch_stats              the same four with torch ops;
- cyce_smoothing           in place, label_smoothing=0.1;
- cyce_soft                in place against probability targets;
- cyce_softcap             in place, logit_softcap=30;
- cyce_temperature         in place, temperature=0.7;
- torch_softcap            F.cross_entropy(30 tanh(x / 30)) forward + backward.

The project's targets for them (bench/targets.py's OPTION_LIMITS) are
checked on the report, where each contestant runs in a fresh process.
"""

from cyce import _bench

from .common import assert_value, cached_inputs, time_calls
from .inputs import reference_softmax_ce, wants_reference

FAMILY = "softmax_options"


def in_place(setup):
    """An in-place setup on a private copy of the shared logits."""
    def private(x, labels, threads):
        return setup(x.copy(), labels, threads)

    return private


CONTESTANTS = {
    "cyce_loss": _bench.setup_cyce_loss,
    "cyce_inplace": in_place(_bench.setup_cyce_inplace),
    "cyce_stats": _bench.setup_cyce_stats,
    "torch_stats": _bench.setup_torch_stats,
    "cyce_smoothing": in_place(_bench.SETUPS["cyce smoothing"]),
    "cyce_soft": in_place(_bench.setup_cyce_soft),
    "cyce_softcap": in_place(_bench.SETUPS["cyce softcap"]),
    "cyce_temperature": in_place(_bench.SETUPS["cyce temperature"]),
    "torch_softcap": _bench.setup_torch_softcap,
}
# the value each returns first, against the plain loss's float64 reference:
# the stats' mean logprob is minus the loss; the options' losses are others
SIGN = {"cyce_loss": 1, "cyce_inplace": 1, "cyce_stats": -1, "torch_stats": -1}


def make_inputs(n_rows, n_classes, dtype):
    """_bench's logits and int64 labels, and the reference loss."""
    x, labels = _bench.make_inputs(n_rows, n_classes, dtype)
    expected = reference_softmax_ce(x, labels) if wants_reference(x) else None
    return (x, labels), expected


def test_softmax_options(benchmark, case):
    (x, labels), expected = cached_inputs(make_inputs, case.n_rows, case.n_classes, case.dtype)
    result = time_calls(benchmark, case, CONTESTANTS[case.contestant], x, labels)
    sign = SIGN.get(case.contestant)
    assert_value(result[0], None if sign is None or expected is None else sign * expected, case)
