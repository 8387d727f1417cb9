"""cyce.torch.cross_entropy against torch.nn.functional.cross_entropy:
forward + backward of the mean loss, the gradient of the logits taken with
torch.autograd.grad (bench/torch_probe.py's contestants):

- cyce_torch          the gradient in a new tensor (the default);
- cyce_torch_inplace  inplace_backward=True: the gradient over the logits
                      (a private copy, restored before each round);
- torch               F.cross_entropy.

Each contestant runs at torch.set_num_threads(case.threads) (cyce.torch
takes torch's thread count).  test_torch_peak_memory measures the peak
resident set size a call adds, each contestant in a fresh process.
"""

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from . import torch_probe  # noqa: E402
from .common import assert_value, cached_inputs, time_calls  # noqa: E402
from .test_speed_softmax_ce import make_inputs  # noqa: E402

FAMILY = "torch_cross_entropy"
CONTESTANTS = torch_probe.CONTESTANTS
REPOSITORY = Path(__file__).resolve().parents[1]
MEMORY_SHAPES = {"full": (4096, 32000), "smoke": (1024, 16384)}  # 500 / 64 MiB of float32
# peak growth in logits' sizes: (lowest, highest) accepted
MEMORY_BOUNDS = {"cyce_torch": (0.9, 1.1), "cyce_torch_inplace": (0.0, 0.01), "torch": (0.0, None)}


@contextlib.contextmanager
def torch_threads(n):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def test_torch_cross_entropy(benchmark, case):
    (x, labels), expected = cached_inputs(make_inputs, case.n_rows, case.n_classes, case.dtype)
    with torch_threads(case.threads):
        result = time_calls(benchmark, case, CONTESTANTS[case.contestant], x, labels)
    assert_value(result[0], expected, case)


def run_probe(contestant, n_rows, n_classes, dtype, threads=1, rounds=0):
    """bench/torch_probe.py's measurements of one contestant in a fresh process."""
    command = [sys.executable, "-m", "bench.torch_probe", contestant, str(n_rows), str(n_classes),
               dtype, str(threads), str(rounds)]
    proc = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, f"{contestant} probe failed:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.memory
@pytest.mark.parametrize("contestant", sorted(MEMORY_BOUNDS))
def test_torch_peak_memory(contestant, request):
    n_rows, n_classes = MEMORY_SHAPES[request.config.getoption("cyce_shapes")]
    probe = run_probe(contestant, n_rows, n_classes, "float32")
    growth = probe["peak_growth"] / probe["nbytes"]
    low, high = MEMORY_BOUNDS[contestant]
    assert growth >= low and (high is None or growth <= high), (
        f"{contestant} at {n_rows}x{n_classes} float32: fwd + bwd grew the peak RSS by "
        f"{growth:.3f}x the logits, expected [{low}, {high}]")
