"""cyce.torch against torch.nn.functional.cross_entropy: forward + backward
of the mean loss, the gradient with respect to the logits taken with
torch.autograd.grad (what a model's head passes on to its backward), timed
and measured in a fresh process.

    python -m bench.torch_probe CONTESTANT N_ROWS N_CLASSES DTYPE THREADS ROUNDS

prints one JSON line: the logits' size in bytes, the peak resident set size
the first call added (VmHWM, reset through /proc/self/clear_refs once the
inputs exist), and the median and minimum seconds of ROUNDS further calls.
Contestants (CONTESTANTS): torch, cyce_torch, cyce_torch_inplace.
"""

import functools
import json
import statistics
import sys
import time

import numpy as np

from cyce import _bench

from .memory_probe import peak_rss_bytes


def setup_torch(x, labels, threads):
    """torch.nn.functional.cross_entropy."""
    import torch.nn.functional as F

    return setup_loss(F.cross_entropy, x, labels)


def setup_cyce_torch(x, labels, threads):
    """cyce.torch.cross_entropy, its gradient in a new tensor."""
    import cyce.torch as ct

    return setup_loss(ct.cross_entropy, x, labels)


def setup_cyce_torch_inplace(x, labels, threads):
    """cyce.torch.cross_entropy(inplace_backward=True): the gradient over the logits."""
    import cyce.torch as ct

    return setup_loss(functools.partial(ct.cross_entropy, inplace_backward=True), x, labels,
                      inplace=True)


def setup_loss(loss_function, x, labels, inplace=False):
    """(prepare, run): run is loss_function's forward and the gradient of the
    logits, on a new leaf sharing x's memory, or for an in-place contestant a
    private copy of x restored by prepare."""
    import torch

    target = torch.from_numpy(labels)
    logits = x.copy() if inplace else x
    state = {}

    def prepare():
        if inplace:
            np.copyto(logits, x)
        state["leaf"] = torch.from_numpy(logits).requires_grad_()

    def run():
        leaf = state.pop("leaf")
        loss = loss_function(leaf, target)
        (grad,) = torch.autograd.grad(loss, leaf)
        return loss.item(), grad

    return prepare, run


CONTESTANTS = {
    "torch": setup_torch,
    "cyce_torch": setup_cyce_torch,
    "cyce_torch_inplace": setup_cyce_torch_inplace,
}


def reset_peak_rss():
    """Make VmHWM start again from the current resident size (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main(contestant, n_rows, n_classes, dtype, threads, rounds):
    import torch

    torch.set_num_threads(int(threads))
    # a small call first: the libraries' one-time set-up (the custom ops'
    # first dispatch imports much of torch) is not the call's memory
    warm_up = CONTESTANTS[contestant](*_bench.make_inputs(8, 16, dtype), int(threads))
    warm_up[0]()
    warm_up[1]()
    x, labels = _bench.make_inputs(int(n_rows), int(n_classes), dtype)
    prepare, run = CONTESTANTS[contestant](x, labels, int(threads))
    prepare()
    rss_before = _bench.current_rss_bytes()
    reset_peak_rss()
    result = run()
    growth = peak_rss_bytes() - rss_before
    del result
    times = []
    for _ in range(int(rounds)):
        prepare()
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
        del result
    print(json.dumps({
        "nbytes": x.nbytes,
        "peak_growth": growth,
        "median_s": statistics.median(times) if times else None,
        "min_s": min(times) if times else None,
    }))


if __name__ == "__main__":
    main(*sys.argv[1:])
