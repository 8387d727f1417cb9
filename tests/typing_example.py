"""cyce's public API as a typed program uses it.

`mypy --strict tests/typing_example.py` must pass (tests/test_packaging.py
runs it, and runs this file too): the package ships py.typed and stubs, so
the types below are what an editor or mypy sees for an installed cyce.
"""

from __future__ import annotations

import io
import sys
from typing import Any

import numpy as np
import numpy.typing as npt

import cyce
from cyce import _core

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type

FloatArray = npt.NDArray[np.floating[Any]]


def train_step(logits: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> float:
    """A mean loss and its gradient, written over the logits (no allocation)."""
    loss, grad = cyce.softmax_ce(logits, labels, label_smoothing=0.1, inplace=True)
    assert_type(grad, FloatArray)
    return float(loss)


def main() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((8, 5), dtype=np.float32)
    labels = rng.integers(0, 5, size=8)

    loss = cyce.softmax_ce(logits, labels)
    assert_type(loss, np.floating[Any])
    per_row = cyce.softmax_ce(logits, labels, reduction="none", weight=[1.0, 2.0, 1.0, 1.0, 0.5])
    assert_type(per_row, FloatArray)
    summed, grad = cyce.softmax_ce(logits, labels, reduction="sum", return_grad=True)
    assert_type(summed, np.floating[Any])
    assert_type(grad, FloatArray)
    buffer = np.empty_like(logits)
    rows, into = cyce.softmax_ce(logits, labels, reduction="none", grad_out=buffer)
    assert_type(rows, FloatArray)
    assert into is buffer
    soft = cyce.softmax(logits)
    assert_type(soft, npt.NDArray[np.float32])
    same = cyce.softmax_ce(logits, soft, z_loss=1e-4, num_threads=1)  # probabilities as targets
    log_probs = cyce.log_softmax(logits, out=np.empty_like(logits))
    assert_type(log_probs, npt.NDArray[np.float32])
    lse = cyce.logsumexp(logits.astype(np.float64))  # shape (8,): Any, as NumPy's reductions

    multi_hot = rng.random((8, 5)) < 0.3
    bce = cyce.sigmoid_bce(logits, multi_hot, pos_weight=np.full(5, 2.0), reduction="batchmean")
    assert_type(bce, np.floating[Any])
    elementwise, bce_grad = cyce.sigmoid_bce(logits, multi_hot, reduction="none", return_grad=True)
    assert_type(elementwise, FloatArray)
    probs_loss = cyce.binary_ce(soft, multi_hot)
    cat_loss, cat_grad = cyce.categorical_ce(soft, labels, eps=1e-7, return_grad=True)
    assert_type(cat_grad, FloatArray)
    step = train_step(logits.copy(), labels)

    hidden = rng.standard_normal((8, 3), dtype=np.float32)
    head = rng.standard_normal((5, 3), dtype=np.float32)
    fused = cyce.linear_softmax_ce(hidden, head, labels, return_grad=True, chunk_rows=4)
    assert_type(fused, cyce.LinearSoftmaxCE)
    assert_type(fused.grad_linear_weight, FloatArray)
    assert fused.grad_linear_bias is None

    report = io.StringIO()
    cyce.show_config(file=report)
    threads: int = _core.default_threads()
    simd: str = _core.build_info()["simd"]
    version: str = cyce.__version__
    print(f"cyce {version} ({simd}, {threads} threads): loss {float(loss):.4f}, "
          f"{per_row.shape} {float(same):.4f} {lse.shape} {step:.4f} {float(bce):.4f} "
          f"{elementwise.shape} {bce_grad.shape} {float(probs_loss):.4f} {float(cat_loss):.4f}",
          "openmp" in report.getvalue())


def levels() -> tuple[list[str], str]:
    """The kernel levels this build has, and the one in use."""
    return _core.built_levels(), _core.current_level()


def rejected_by_the_type_checker(logits: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> None:
    """Calls mypy refuses (never run; --strict's warn_unused_ignores proves each ignore is needed)."""
    cyce.softmax_ce(logits, labels, reduction="avg")  # type: ignore[call-overload]
    cyce.softmax_ce(logits, labels, nonsense=True)  # type: ignore[call-overload]
    cyce.categorical_ce(logits, labels, reduction="batchmean")  # type: ignore[call-overload]
    loss, grad = cyce.softmax_ce(logits, labels)  # type: ignore[misc]
    _core.logsumexp_rows(logits, np.empty(8, np.float64), 1)  # type: ignore[type-var]


if __name__ == "__main__":
    main()
