"""Peak memory of the big calls, each measured in a fresh process
(python -m bench.memory_probe), where the process's peak RSS is that of
the call alone.

The contract: the in-place paths, the loss alone and logsumexp grow the
peak resident set size by under 1% of the logits' size (no N x C
temporary); return_grad without inplace grows it by the gradient alone,
one logits' size, give or take that 1%.  At bfloat16 and float16 (softmax_ce's
calls) the same holds of the half-precision logits: in place allocates
nothing of their size (no float32 copy), a new gradient is the gradient alone,
in the logits' dtype; a call that writes a half gradient also holds the
kernels' scratch, two float rows per thread (their exps, rounded once into
the gradient), which grows with the classes, not with the rows.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cyce._bench import HALF_DTYPES, dtype_unavailable

REPOSITORY = Path(__file__).resolve().parents[1]
TOLERANCE = 0.01  # of the logits' size
SHAPES = {"full": (4096, 32000), "smoke": (1024, 16384)}  # 500 MiB / 64 MiB of float32
# (call, expected growth in logits' sizes)
CALLS = [
    ("softmax_ce_inplace", 0),
    ("softmax_ce_loss", 0),
    ("softmax_ce_return_grad", 1),
    ("sigmoid_bce_inplace", 0),
    ("logsumexp", 0),
]
HALF_CALLS = ("softmax_ce_inplace", "softmax_ce_loss", "softmax_ce_return_grad")
HALF_GRADIENT_CALLS = ("softmax_ce_inplace", "softmax_ce_return_grad")


def scratch_bytes(call, dtype, n_classes):
    """The half kernels' scratch: two float rows for each of at most
    os.cpu_count() threads (the probe's default), when a gradient is written."""
    if dtype in HALF_DTYPES and call in HALF_GRADIENT_CALLS:
        return 2 * 4 * n_classes * (os.cpu_count() or 1)
    return 0


def memory_params():
    """(call, logits_sizes, dtype) for every call at float32 and float64, and
    softmax_ce's at the half dtypes (skipped where they cannot be made)."""
    params = []
    for call, logits_sizes in CALLS:
        for dtype in ("float32", "float64") + HALF_DTYPES:
            if dtype in HALF_DTYPES and call not in HALF_CALLS:
                continue
            reason = dtype_unavailable(dtype)
            marks = [pytest.mark.half] if dtype in HALF_DTYPES else []
            marks += [pytest.mark.skip(reason=reason)] if reason else []
            params.append(pytest.param(call, logits_sizes, dtype, id=f"{call}-{dtype}", marks=marks))
    return params


def run_probe(call, n_rows, n_classes, dtype):
    """The probe's measurements of one call in a fresh process."""
    command = [sys.executable, "-m", "bench.memory_probe", call, str(n_rows), str(n_classes), dtype]
    proc = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{call} probe failed:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.memory
@pytest.mark.parametrize("call, logits_sizes, dtype", memory_params())
def test_peak_memory(call, logits_sizes, dtype, request):
    n_rows, n_classes = SHAPES[request.config.getoption("cyce_shapes")]
    probe = run_probe(call, n_rows, n_classes, dtype)
    nbytes = probe["nbytes"]
    mib = 2**20

    # the peak only shows the call's growth if the peak before it was the
    # resident size then (the probe makes its inputs without temporaries)
    slack = probe["peak_before"] - probe["rss_before"]
    assert slack < TOLERANCE * nbytes, (
        f"peak RSS before the call exceeds RSS by {slack / mib:.1f} MiB: the measurement is not meaningful"
    )
    growth = probe["peak_after"] - probe["rss_before"]
    expected = logits_sizes * nbytes + scratch_bytes(call, dtype, n_classes)
    assert abs(growth - expected) < TOLERANCE * nbytes, (
        f"{call} at {n_rows}x{n_classes} {dtype}: peak RSS grew by {growth / mib:.1f} MiB, "
        f"expected {expected / mib:.1f} MiB +- {TOLERANCE * nbytes / mib:.1f} MiB "
        f"(logits {nbytes / mib:.1f} MiB)"
    )
