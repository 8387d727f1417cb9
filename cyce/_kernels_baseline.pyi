# Type stub for cyce's compiled kernels, built from cyce/_kernels.pxi.
#
# The same source is compiled twice, as _kernels_baseline (any x86-64) and
# _kernels_avx2 (AVX2+FMA); cyce._dispatch imports the one the CPU runs, and
# _kernels_avx2.pyi re-exports this stub.  These shims are internal: they do no
# validation (cyce/_softmax.py's wrappers do it all) and write their results
# into the arrays passed.  Array arguments are typed memoryviews, so they must
# be C-contiguous; the floating arrays of one call share one dtype, float32 or
# float64 (Cython's fused `floating`), written here as the TypeVar _Float.
# tests/test_packaging.py checks these signatures against the compiled modules
# and against the `def` lines of cyce/_kernels.pxi.

from typing import TypedDict, TypeVar

import numpy as np
import numpy.typing as npt

_Float = TypeVar("_Float", np.float32, np.float64)
_Targets = npt.NDArray[np.float32] | npt.NDArray[np.float64]

class _BuildInfo(TypedDict):
    simd: str  # "baseline" or "avx2"
    cflags: str  # the flags setup.py compiled the kernels with
    compiler: str  # the C compiler's __VERSION__
    openmp: int  # the _OPENMP date (e.g. 201511 for OpenMP 4.5), 0 without OpenMP

def first_bad_label(labels: npt.NDArray[np.int64], n_classes: int, ignore_index: int) -> int:
    """The index of the first label outside [0, n_classes) that is not
    ignore_index, or -1."""

def label_weight_sum(
    labels: npt.NDArray[np.int64],
    ignore_index: int,
    class_weight: npt.NDArray[np.float64] | None,
    sample_weight: npt.NDArray[np.float64] | None,
) -> float:
    """PyTorch's mean denominator: the sum over rows not ignored of
    class_weight[label] * sample_weight[row] (1 where not given), in row order."""

def logsumexp_rows(x: npt.NDArray[_Float], out: npt.NDArray[_Float], n_threads: int) -> None:
    """out[i] = logsumexp(x[i, :]) for an (N, C) x and an (N,) out."""

def softmax_rows(
    x: npt.NDArray[_Float], out: npt.NDArray[_Float], log_space: bool, n_threads: int
) -> None:
    """out[i, :] = (log_)softmax(x[i, :]); out may be x."""

def hard_rows_per_task(n_classes: int, n_rows: int, itemsize: int) -> int:
    """Rows per task of softmax_ce_hard_rows (a tile of short rows, or up to
    a tile of longer rows); a function of the shape alone."""

def softmax_ce_hard_rows(
    logits: npt.NDArray[_Float],
    grad: npt.NDArray[_Float] | None,
    labels: npt.NDArray[np.int64],
    class_weight: npt.NDArray[np.float64] | None,
    sample_weight: npt.NDArray[np.float64] | None,
    row_loss: npt.NDArray[np.float64] | None,
    task_loss: npt.NDArray[np.float64],
    ignore_index: int,
    weight_total: float,
    smoothing: float,
    z_loss: float,
    grad_scale: float,
    n_threads: int,
) -> float:
    """task_loss[t] = sum of the softmax CE of task t's rows (hard_rows_per_task
    rows each) against integer labels (0 where ignored); row_loss[i] (unless
    None) = row i's; grad (None: loss only; may be logits) = the gradient x
    grad_scale.  Returns sum(task_loss) in task order (the same for any n_threads)."""

def softmax_ce_soft_rows(
    logits: npt.NDArray[_Float],
    grad: npt.NDArray[_Float] | None,
    targets: _Targets,
    class_weight: npt.NDArray[np.float64] | None,
    sample_weight: npt.NDArray[np.float64] | None,
    row_loss: npt.NDArray[np.float64],
    smoothing: float,
    z_loss: float,
    grad_scale: float,
    n_threads: int,
) -> float:
    """As softmax_ce_hard_rows, against (N, C) probabilities."""

def binary_blocks(
    kind: int,
    values: npt.NDArray[_Float],
    targets: _Targets,
    weight: npt.NDArray[_Float] | None,
    pos_weight: npt.NDArray[_Float] | None,
    n_classes: int,
    grad: npt.NDArray[_Float] | None,
    loss_out: npt.NDArray[_Float] | None,
    block_loss: npt.NDArray[np.float64],
    grad_scale: float,
    n_threads: int,
) -> float:
    """sigmoid_bce (kind 0) or binary_ce (kind 1) over the flattened input:
    block_loss[b] = loss sum of block b, loss_out = elementwise losses, grad =
    gradient x grad_scale.  weight is a (rows, n_classes) broadcast view.
    Returns sum(block_loss), summed in block order."""

def categorical_ce_label_rows(
    probs: npt.NDArray[_Float],
    grad: npt.NDArray[_Float] | None,
    labels: npt.NDArray[np.int64],
    class_weight: npt.NDArray[np.float64] | None,
    row_loss: npt.NDArray[np.float64],
    ignore_index: int,
    eps: float,
    grad_scale: float,
    n_threads: int,
) -> float:
    """row_loss[i] = -w[y] log(max(probs[i, y], eps)) (0 where ignored); grad
    (None: loss only; may be probs) = its gradient x grad_scale.  Returns
    sum(row_loss) in row order."""

def categorical_ce_soft_rows(
    probs: npt.NDArray[_Float],
    grad: npt.NDArray[_Float] | None,
    targets: _Targets,
    class_weight: npt.NDArray[np.float64] | None,
    row_loss: npt.NDArray[np.float64],
    eps: float,
    grad_scale: float,
    n_threads: int,
) -> float:
    """As categorical_ce_label_rows, against (N, C) targets."""

def exp_values(x: npt.NDArray[_Float], out: npt.NDArray[_Float]) -> None:
    """out = cyce's vectorised exp(x), elementwise over 1-D arrays."""

def exp_nonpos_values(x: npt.NDArray[_Float], out: npt.NDArray[_Float]) -> None:
    """out = cyce's exp(x) for x <= 0 (or NaN), the softmax kernels' variant."""

def span_exp_sum_count(
    x: npt.NDArray[_Float], out: npt.NDArray[_Float] | None, shift: float, top: float
) -> tuple[float, float]:
    """out = exp(x - shift) through the softmax rows' exp-and-sum loop; returns
    (the sum of the terms where x != top, how many x == top)."""

def log1p_values(s: npt.NDArray[np.float64], out: npt.NDArray[np.float64]) -> None:
    """out = cyce's vectorisable log1p(s) for s >= 0, elementwise over 1-D arrays."""

def build_info() -> _BuildInfo:
    """What this kernel module was compiled with."""

def default_threads() -> int:
    """OpenMP's default team size for the calling thread (OMP_NUM_THREADS,
    threadpoolctl and omp_set_num_threads act on it); 1 without OpenMP."""

def cpu_has_avx2_fma() -> bool:
    """Whether this CPU runs the avx2 build."""

def cpu_has_avx512() -> bool:
    """Whether this CPU (and its OS) runs the avx512 build."""
