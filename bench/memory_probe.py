"""Peak memory of one cyce call, measured in a fresh process.

    python -m bench.memory_probe CALL N_ROWS N_CLASSES DTYPE   (from the repository's root)

prints one JSON line: the logits' size in bytes, the resident set size just
before the call, and the process's peak resident set size before and after
it.  A small call of the same kind runs first, and the inputs are made
without temporaries, so that the peak before the call is the resident size
before it and the peak after it shows what the call added.  Used by bench/test_memory.py.
"""

import json
import sys

import cyce
from cyce import _bench

from .inputs import binary_targets


def peak_rss_bytes():
    """This process's peak resident set size: VmHWM of /proc/self/status.
    Not ru_maxrss: Linux carries that over an exec from the parent (with
    vfork, the parent's own peak), so under a big pytest process it would
    start at the parent's size."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def make_call(name, n_rows, n_classes, dtype):
    """The logits and a function making the call `name` on them (its other
    inputs made now, outside the measurement)."""
    x, labels = _bench.make_inputs(n_rows, n_classes, dtype)
    if name == "softmax_ce_inplace":
        return x, lambda: cyce.softmax_ce(x, labels, inplace=True)
    if name == "softmax_ce_return_grad":
        return x, lambda: cyce.softmax_ce(x, labels, return_grad=True)
    if name == "softmax_ce_loss":
        return x, lambda: cyce.softmax_ce(x, labels)
    if name == "sigmoid_bce_inplace":
        targets = binary_targets(x.shape, dtype)
        return x, lambda: cyce.sigmoid_bce(x, targets, inplace=True)
    if name == "logsumexp":
        return x, lambda: cyce.logsumexp(x)
    raise SystemExit(f"unknown call {name!r}")


def main(name, n_rows, n_classes, dtype):
    # a small call of the same kind first: what the measured call adds is then
    # its data, not its kernels' code pages or the OpenMP threads' start
    make_call(name, 8, int(n_classes), dtype)[1]()
    x, call = make_call(name, int(n_rows), int(n_classes), dtype)
    rss_before = _bench.current_rss_bytes()
    peak_before = peak_rss_bytes()
    result = call()
    peak_after = peak_rss_bytes()
    del result
    print(json.dumps({
        "nbytes": x.nbytes,
        "rss_before": rss_before,
        "peak_before": peak_before,
        "peak_after": peak_after,
    }))


if __name__ == "__main__":
    main(*sys.argv[1:])
