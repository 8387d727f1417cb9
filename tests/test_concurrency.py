"""Calls from many Python threads at once: 8 threads call every public
function together (released from a barrier, so the calls overlap: cyce
releases the GIL in its kernels), on inputs of their own and on inputs they
all share read-only, each call also on OpenMP threads of its own; every
result is bitwise the serial one, and no input changes.

(That the GIL really is released, i.e. that two threads run in about half
the time of two serial calls, is a measurement, not a unit test: see
bench/test_gil.py.)
"""

import threading

import numpy as np
import pytest

import cyce

N_THREADS = 8
ROUNDS = 2
SHAPE = (384, 700)   # 269k elements: about a millisecond per call, above the serial threshold


def make_inputs(rng):
    """Inputs for every function, float32 and float64."""
    x = (rng.standard_normal(SHAPE) * 3).astype(np.float32)
    probs = rng.random(SHAPE)
    probs = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
    labels = rng.integers(0, SHAPE[1], SHAPE[0])
    labels[::9] = -100
    soft = rng.random(SHAPE)
    soft = (soft / soft.sum(axis=1, keepdims=True)).astype(np.float32)
    return {
        "x": x, "x64": x.astype(np.float64), "probs": probs, "labels": labels, "soft": soft,
        "targets": rng.random(SHAPE).astype(np.float32), "weight": rng.uniform(0.2, 2.0, SHAPE[1]),
        "row_weight": rng.uniform(0.5, 2.0, (SHAPE[0], 1)),
    }


def calls(inputs):
    """(name, function of num_threads) for every public function and its
    main options; each returns a tuple of arrays and writes only to
    buffers it allocates itself."""
    d = inputs

    def inplace(fn, first, *args, **kwargs):
        def call(n):
            buffer = first.copy()
            return fn(buffer, *args, inplace=True, num_threads=n, **kwargs)
        return call

    def grad_out(fn, first, *args, **kwargs):
        def call(n):
            buffer = np.empty_like(first)
            loss, grad = fn(first, *args, grad_out=buffer, num_threads=n, **kwargs)
            assert grad is buffer
            return loss, grad
        return call

    def softmax_in_place(fn, x):
        def call(n):
            buffer = x.copy()
            return fn(buffer, out=buffer, num_threads=n)
        return call

    return [
        ("logsumexp", lambda n: cyce.logsumexp(d["x"], num_threads=n)),
        ("logsumexp64", lambda n: cyce.logsumexp(d["x64"], num_threads=n)),
        ("log_softmax", lambda n: cyce.log_softmax(d["x"], num_threads=n)),
        ("softmax in place", softmax_in_place(cyce.softmax, d["x"])),
        ("softmax_ce", lambda n: cyce.softmax_ce(d["x"], d["labels"], return_grad=True, num_threads=n)),
        ("softmax_ce options", lambda n: cyce.softmax_ce(
            d["x64"], d["labels"], weight=d["weight"], label_smoothing=0.1, z_loss=1e-3,
            reduction="none", return_grad=True, num_threads=n)),
        ("softmax_ce soft", grad_out(cyce.softmax_ce, d["x"], d["soft"], sample_weight=d["row_weight"][:, 0])),
        ("softmax_ce inplace", inplace(cyce.softmax_ce, d["x"], d["labels"], label_smoothing=0.2)),
        ("sigmoid_bce", lambda n: cyce.sigmoid_bce(d["x"], d["targets"], weight=d["row_weight"],
                                                   pos_weight=d["weight"], return_grad=True, num_threads=n)),
        ("sigmoid_bce inplace", inplace(cyce.sigmoid_bce, d["x"], d["targets"], reduction="batchmean")),
        ("binary_ce", grad_out(cyce.binary_ce, d["probs"], d["targets"], reduction="sum")),
        ("categorical_ce", lambda n: cyce.categorical_ce(d["probs"], d["labels"], weight=d["weight"],
                                                         return_grad=True, num_threads=n)),
        ("categorical_ce soft", inplace(cyce.categorical_ce, d["probs"], d["soft"], reduction="none")),
    ]


def as_arrays(result):
    return tuple(np.asarray(r) for r in result) if isinstance(result, tuple) else (np.asarray(result),)


def assert_same(a, b, what):
    for u, v in zip(as_arrays(a), as_arrays(b)):
        assert u.dtype == v.dtype and u.shape == v.shape, what
        assert u.tobytes() == v.tobytes(), what


def run_together(work):
    """Run work(i) on N_THREADS threads released at once; re-raise the first
    failure."""
    barrier = threading.Barrier(N_THREADS)
    errors = []

    def target(i):
        try:
            barrier.wait()
            work(i)
        except BaseException as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("num_threads", [None, 1, 2])
def test_shared_read_only_inputs(rng, num_threads):
    """All threads read the same read-only arrays; each writes its own
    buffers.  The calls of one round start in a different order per thread,
    so that different functions overlap."""
    inputs = make_inputs(rng)
    for a in inputs.values():
        a.flags.writeable = False
    before = {k: a.tobytes() for k, a in inputs.items()}
    table = calls(inputs)
    serial = {name: call(num_threads) for name, call in table}
    mismatches = []

    def work(i):
        for _ in range(ROUNDS):
            for name, call in table[i % len(table):] + table[:i % len(table)]:
                try:
                    assert_same(call(num_threads), serial[name], name)
                except AssertionError as error:
                    mismatches.append((i, name, error))

    run_together(work)
    assert not mismatches, mismatches[:3]
    assert {k: a.tobytes() for k, a in inputs.items()} == before


@pytest.mark.parametrize("num_threads", [None, 2])
def test_different_inputs(num_threads):
    """Each thread has inputs of its own (its own seed), and the expected
    results computed serially beforehand."""
    per_thread = [make_inputs(np.random.default_rng(seed)) for seed in range(N_THREADS)]
    tables = [calls(inputs) for inputs in per_thread]
    serial = [{name: call(num_threads) for name, call in table} for table in tables]
    copies = [{k: a.copy() for k, a in inputs.items()} for inputs in per_thread]
    mismatches = []

    def work(i):
        for _ in range(ROUNDS):
            for name, call in tables[i]:
                try:
                    assert_same(call(num_threads), serial[i][name], name)
                except AssertionError as error:
                    mismatches.append((i, name, error))

    run_together(work)
    assert not mismatches, mismatches[:3]
    for inputs, saved in zip(per_thread, copies):
        for k in inputs:
            assert inputs[k].tobytes() == saved[k].tobytes(), k


def test_failing_and_succeeding_calls_at_once(rng):
    """Half the threads make calls that fail validation while the others
    compute: the failures are the same errors as serially, the results the
    same bits, and the failing calls write nothing."""
    inputs = make_inputs(rng)
    bad_labels = inputs["labels"].copy()
    bad_labels[-1] = SHAPE[1]
    table = calls(inputs)
    serial = {name: call(None) for name, call in table}
    victim = inputs["x"].copy()
    mismatches = []

    def work(i):
        for _ in range(ROUNDS * 4):
            if i % 2:
                with pytest.raises(IndexError, match=rf"labels\[{SHAPE[0] - 1}\] = {SHAPE[1]}"):
                    cyce.softmax_ce(victim, bad_labels, inplace=True)
                with pytest.raises(ValueError, match=r"targets\[0, 0\] = nan"):
                    bad_targets = inputs["targets"].copy()
                    bad_targets[0, 0] = np.nan
                    cyce.sigmoid_bce(victim, bad_targets, inplace=True)
            else:
                name, call = table[(i + _) % len(table)]
                try:
                    assert_same(call(None), serial[name], name)
                except AssertionError as error:
                    mismatches.append((i, name, error))

    run_together(work)
    assert not mismatches, mismatches[:3]
    assert victim.tobytes() == inputs["x"].tobytes()
