"""No leaks: 20 000 calls of every public function, successful and failing
(each check of the validation module raising in turn), grow the process's
resident memory by less than 1 MiB and leave the reference count of every
input as it was.

RSS is read from /proc/self/statm after a warm-up round of the same calls
(NumPy's and Python's allocators keep what they once grew: only growth that
continues is a leak).  The bound catches a leak of 53 bytes per call or
more: a small array left behind by every call would show as 20 000 x ~250
bytes = 5 MB, a leaked reference to an input as a count that changed.
"""

import gc
import os
import sys

import numpy as np
import pytest

import cyce

CALLS = 20_000
MiB = 1 << 20
STATM = "/proc/self/statm"

pytestmark = pytest.mark.skipif(not os.path.exists(STATM), reason="needs Linux's /proc/self/statm")


def under_address_sanitizer():
    """`make asan` preloads libasan, whose allocator keeps freed memory in a
    quarantine (256 MB): resident memory grows then, leak or not."""
    with open("/proc/self/maps") as f:
        return "libasan" in f.read()


def resident_bytes():
    with open(STATM) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def workload(rng):
    """(cases, refill).  Each case is (function, args, kwargs, expected
    exception or None): every function, every destination, and failures
    raised at each stage of the checks (the first argument, the options, the
    labels, the weights, the destination).  refill lists (array, values) to
    restore before each call: an in-place call leaves a gradient where the
    next one needs probabilities."""
    x = rng.standard_normal((16, 9)).astype(np.float32)
    x64 = x.astype(np.float64)
    probs = rng.random((16, 9)).astype(np.float32)
    labels = rng.integers(0, 9, 16)
    bad_labels = labels.copy()
    bad_labels[-1] = 9
    soft = np.full((16, 9), 1 / 9, np.float32)
    bad_soft = soft.copy()
    bad_soft[3, 3] = np.nan
    targets = rng.random((16, 9)).astype(np.float32)
    weight = rng.uniform(0.5, 2, 9)
    nan_weight = weight.copy()
    nan_weight[2] = np.nan
    grad = np.empty_like(x)
    out = np.empty_like(x)
    lse_out = np.empty(16, np.float32)
    read_only = x.copy()
    read_only.flags.writeable = False
    scratch = x.copy()
    scratch_probs = probs.copy()
    ok = None
    refill = [(scratch_probs, probs)]
    return [
        (cyce.logsumexp, (x,), {}, ok),
        (cyce.logsumexp, (x64,), {"out": lse_out.astype(np.float64)}, ok),
        (cyce.log_softmax, (x,), {"out": out}, ok),
        (cyce.softmax, (scratch,), {"out": scratch}, ok),
        (cyce.softmax_ce, (x, labels), {}, ok),
        (cyce.softmax_ce, (x64, labels), {"weight": weight, "label_smoothing": 0.1, "return_grad": True,
                                          "reduction": "none"}, ok),
        (cyce.softmax_ce, (x, soft), {"grad_out": grad, "sample_weight": weight[:1].repeat(16)}, ok),
        (cyce.softmax_ce, (scratch, labels), {"inplace": True, "z_loss": 1e-4}, ok),
        (cyce.sigmoid_bce, (x, targets), {"weight": weight, "pos_weight": weight, "return_grad": True}, ok),
        (cyce.sigmoid_bce, (scratch, targets), {"inplace": True, "reduction": "batchmean"}, ok),
        (cyce.binary_ce, (probs, targets), {"grad_out": grad}, ok),
        (cyce.categorical_ce, (probs, labels), {"weight": weight, "return_grad": True}, ok),
        (cyce.categorical_ce, (scratch_probs, soft), {"inplace": True}, ok),
        # failures, one per stage of the checks
        (cyce.softmax_ce, (x.astype(np.int16), labels), {}, TypeError),
        (cyce.logsumexp, (np.zeros((3, 0)),), {}, ValueError),
        (cyce.softmax, (x,), {"out": lse_out}, ValueError),
        (cyce.softmax_ce, (x, labels), {"reduction": "avg"}, ValueError),
        (cyce.softmax_ce, (x, labels), {"num_threads": 0}, ValueError),
        (cyce.softmax_ce, (x, bad_labels), {"inplace": True}, IndexError),
        (cyce.softmax_ce, (x, bad_soft), {"return_grad": True}, ValueError),
        (cyce.softmax_ce, (x, labels), {"weight": nan_weight}, ValueError),
        (cyce.softmax_ce, (read_only, labels), {"inplace": True}, ValueError),
        (cyce.softmax_ce, (x, labels), {"grad_out": x[:, ::-1]}, ValueError),
        (cyce.softmax_ce, (x, soft), {"grad_out": soft}, ValueError),
        (cyce.sigmoid_bce, (x, bad_soft), {}, ValueError),
        (cyce.sigmoid_bce, (x, targets), {"pos_weight": np.ones(4)}, ValueError),
        (cyce.binary_ce, (targets * 3, targets), {}, ValueError),
        (cyce.categorical_ce, (probs, labels), {"eps": 2.0}, ValueError),
        (cyce.categorical_ce, (probs, bad_labels), {"grad_out": grad}, IndexError),
    ], refill


def run(cases, refill, n_calls):
    for i in range(n_calls):
        fn, args, kwargs, error = cases[i % len(cases)]
        for target, source in refill:
            np.copyto(target, source)
        try:
            fn(*args, **kwargs)
        except Exception as raised:  # noqa: BLE001  (checked below)
            if error is None or type(raised) is not error:
                raise
        else:
            assert error is None, f"{fn.__name__} did not raise {error.__name__}"


def test_many_calls_leak_nothing(rng):
    cases, refill = workload(rng)
    inputs = [a for _, args, kwargs, _ in cases for a in list(args) + list(kwargs.values())
              if isinstance(a, np.ndarray)]
    run(cases, refill, 3 * len(cases))  # every path, with its imports and caches
    run(cases, refill, 2000)            # warm-up: the allocators reach their steady state
    gc.collect()
    counts = [sys.getrefcount(a) for a in inputs]
    rss = resident_bytes()
    run(cases, refill, CALLS)
    gc.collect()
    growth = resident_bytes() - rss
    assert [sys.getrefcount(a) for a in inputs] == counts
    if under_address_sanitizer():
        return  # (ASan checks the memory itself, and would report a leak of the kernels' own)
    assert growth < MiB, f"{CALLS} calls grew the resident memory by {growth / MiB:.2f} MiB"
