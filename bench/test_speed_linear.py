"""A language-model head's loss, fused or not: the mean cross entropy of
``hidden @ linear_weight.T`` forward + backward, float32 (bench/linear_probe.py's
contestants, whose docstring says what each one runs):

- cyce                     cyce.linear_softmax_ce(h, W, y, return_grad=True), NumPy arrays;
- cyce_torch               cyce.torch.linear_cross_entropy, forward + torch.autograd.grad;
- torch_eager              F.cross_entropy(h @ W.T, y), forward + torch.autograd.grad;
- torch_linear_ce          F.linear_cross_entropy (torch >= 2.13), its reference path;
- torch_linear_ce_chunked  the same with LinearCrossEntropyOptions(chunking_method="auto");
- gemm_floor               the three GEMMs alone, chunked as cyce chunks them.

All but cyce's two are marked ``peer`` (the floor too: ``-m "not peer"`` runs
cyce alone); the torch ones are skipped without torch, F.linear_cross_entropy's
without torch 2.13.  Shapes (N x H x V): 1024x256x8192 (``quick``) at 1 and 2
threads, and the issue's 4096x1024x32000 (``large``, seconds per call) at 2;
``--cyce-shapes=smoke`` runs the small shape alone, its H and V kept and N
divided by common.SMOKE_ROW_DIVISOR, so that CI runs every contestant in a few
seconds.  The suite has its own case
parameter (`linear_case`: the other suites' `case` has no H).
`python -m bench.linear_report` measures the same contestants' peak memory and
prints their ratios; test_linear_peak_memory checks cyce's extra memory against
its contract (the gradients and one chunk of logits), each call in a fresh process.
"""

import contextlib
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import numpy as np
import pytest

from . import common, linear_probe
from .common import assert_value, cached_inputs, time_calls
from .inputs import reference_softmax_ce, row_blocks

FAMILY = "linear_cross_entropy"
CONTESTANTS = linear_probe.CONTESTANTS
PEERS = ("torch_eager", "torch_linear_ce", "torch_linear_ce_chunked", "gemm_floor")
# ((N, H, V), thread counts)
SHAPES = (((1024, 256, 8192), (1, 2)), ((4096, 1024, 32000), (2,)))
QUICK_SHAPES, LARGE_SHAPES = (SHAPES[0][0],), (SHAPES[1][0],)
# the shapes a smoke run keeps, with N cut: not the large one, whose weight and
# its gradient alone (125 MiB each) take seconds to make and to write
SMOKE_SHAPES = QUICK_SHAPES
REFERENCE_MAX_LOGITS = 2**25  # above this many logits, no float64 reference (a finite loss is checked)
REPOSITORY = Path(__file__).resolve().parents[1]
MEMORY_SHAPES = {"full": (4096, 1024, 32000), "smoke": (512, 256, 8192)}  # logits 500 / 16 MiB


@dataclass(frozen=True)
class LinearCase(common.Case):
    """One benchmark: a contestant at one (N, H, V) and thread count;
    `full_shape` is the shape it stands for (the same but in a smoke run)."""

    n_features: int = 0
    peers: ClassVar[tuple] = PEERS

    @property
    def shape_name(self):
        return f"{self.n_rows}x{self.n_features}x{self.n_classes}"

    @property
    def rounds(self):
        """Timed rounds: many for the milliseconds of a smoke shape, few for
        the seconds of the large one (its three GEMMs: 0.8 TFLOP)."""
        flops = 6 * self.n_rows * self.n_features * self.n_classes
        if flops <= 2**31:
            return 20
        if flops <= 2**35:
            return 5
        return 3


def case_params(size):
    """pytest params for every shape x threads x contestant, in that nesting
    (consecutive cases share their inputs)."""
    params = []
    for (n, h, v), thread_counts in SHAPES:
        if size == "smoke" and (n, h, v) not in SMOKE_SHAPES:
            continue
        rows = max(n // common.SMOKE_ROW_DIVISOR, 1) if size == "smoke" else n
        for threads in thread_counts:
            for contestant in CONTESTANTS:
                case = LinearCase(FAMILY, rows, v, "float32", threads, contestant, (n, h, v),
                                  n_features=h)
                marks = []
                if case.full_shape in QUICK_SHAPES:
                    marks.append(pytest.mark.quick)
                if case.full_shape in LARGE_SHAPES:
                    marks.append(pytest.mark.large)
                if case.is_peer:
                    marks.append(pytest.mark.peer)
                reason = linear_probe.missing_requirement(contestant)
                if reason:
                    marks.append(pytest.mark.skip(reason=reason))
                params.append(pytest.param(case, id=case.id, marks=marks))
    return params


def pytest_generate_tests(metafunc):
    if "linear_case" in metafunc.fixturenames:
        metafunc.parametrize("linear_case", case_params(metafunc.config.getoption("cyce_shapes")))


def reference_loss(h, w, labels):
    """The mean cross entropy of h @ w.T in float64, a block of rows at a time."""
    w64 = w.astype(np.float64)
    total, start = 0.0, 0
    for block in row_blocks(h, max_elements=max(2**22 // w.shape[0], 1) * h.shape[1]):
        stop = start + block.shape[0]
        total += reference_softmax_ce(block.astype(np.float64) @ w64.T, labels[start:stop]) * block.shape[0]
        start = stop
    return total / h.shape[0]


def make_inputs(n_rows, n_features, n_classes):
    """linear_probe's hidden, weight and labels, and the reference loss."""
    h, w, labels = linear_probe.make_inputs(n_rows, n_features, n_classes)
    expected = reference_loss(h, w, labels) if n_rows * n_classes <= REFERENCE_MAX_LOGITS else None
    return (h, w, labels), expected


@contextlib.contextmanager
def contestant_threads(case):
    """Hold a contestant to case.threads: torch's pool for the torch ones
    (cyce.torch takes torch's count), the BLAS's for the floor's GEMMs; cyce
    gets num_threads in its call."""
    if case.contestant in linear_probe.TORCH_CONTESTANTS:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(case.threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)
    elif case.contestant == "gemm_floor":
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=case.threads, user_api="blas"):
            yield
    else:
        yield


def test_linear_cross_entropy(benchmark, linear_case):
    case = linear_case
    (h, w, labels), expected = cached_inputs(make_inputs, case.n_rows, case.n_features, case.n_classes)
    with contestant_threads(case):
        loss, grad_h, grad_w = time_calls(benchmark, case, CONTESTANTS[case.contestant], h, w, labels)
    assert grad_h.shape == h.shape and grad_w.shape == w.shape
    if case.contestant != "gemm_floor":  # the floor computes no loss
        assert_value(loss, expected, case)


def run_probe(contestant, n_rows, n_features, n_classes, threads=2, rounds=0):
    """bench/linear_probe.py's measurements of one contestant in a fresh process."""
    command = [sys.executable, "-m", "bench.linear_probe", contestant, str(n_rows), str(n_features),
               str(n_classes), str(threads), str(rounds)]
    proc = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, f"{contestant} probe failed:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.memory
@pytest.mark.skipif(linear_probe.missing_requirement("cyce") is not None,
                    reason=str(linear_probe.missing_requirement("cyce")))
def test_linear_peak_memory(request):
    """cyce.linear_softmax_ce(return_grad=True) adds its two gradients and
    one chunk of logits (its docstring's contract), give or take 1% of the
    logits and 4 MiB (pages, the labels' checks).  Two calls in a fresh
    process: the first call's growth of the peak RSS (the report's "peak
    MiB") also holds what stays for the next calls, the BLAS's buffers and the
    allocator's arenas (40 MiB at 4096x1024x32000), and the second's can
    reuse memory the first freed (at the smoke shape it grows by nothing), so
    the smaller of the two is checked; the first must hold the weight's
    gradient, or the measurement is not meaningful."""
    n_rows, n_features, n_classes = MEMORY_SHAPES[request.config.getoption("cyce_shapes")]
    probe = run_probe("cyce", n_rows, n_features, n_classes, rounds=1)
    first, second = probe["peak_growth"], probe["round_growths"][0]
    itemsize = 4
    weight_gradient = n_classes * n_features * itemsize
    expected = weight_gradient + n_rows * n_features * itemsize + probe["chunk_rows"] * n_classes * itemsize
    slack = 0.01 * probe["logits_bytes"] + 4 * 2**20
    mib = 2**20
    assert first >= 0.99 * weight_gradient, (
        f"the first call grew the peak RSS by {first / mib:.1f} MiB, less than the weight's gradient "
        f"({weight_gradient / mib:.1f} MiB): the measurement is not meaningful")
    assert min(first, second) <= expected + slack, (
        f"cyce at {n_rows}x{n_features}x{n_classes}: fwd + bwd grew the peak RSS by {first / mib:.1f} MiB "
        f"(first call) and {second / mib:.1f} MiB (second), expected at most {expected / mib:.1f} MiB "
        f"+ {slack / mib:.1f} (the gradients and a chunk of {probe['chunk_rows']} rows of logits; "
        f"all the logits: {probe['logits_bytes'] / mib:.1f} MiB)")
