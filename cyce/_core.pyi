# Type stub for cyce._core, the compiled module (cyce/_core.pyx).
#
# These shims are internal: they check only what keeps memory safe (dtypes,
# C-contiguity), leave every other check to the wrappers in cyce/_softmax.py
# and cyce/_binary.py, and write their results into the arrays passed.  The
# floating arrays of one call share one dtype, float32 or float64, written
# here as the TypeVar _Float (float16 and bfloat16 inputs, with float32
# losses and weights, go through the same shims).  tests/test_packaging.py checks these
# signatures against the compiled module and the `def` lines of _core.pyx.

from typing import Any, Final, TypedDict, TypeVar

import numpy as np
import numpy.typing as npt

_Float = TypeVar("_Float", np.float32, np.float64)
_Targets = npt.NDArray[np.float32] | npt.NDArray[np.float64]

LEVELS: Final[tuple[str, str, str]]
SIGMOID_BCE: Final[int]
PROBABILITY_BCE: Final[int]

class _BuildInfo(TypedDict):
    simd: str  # the level in use: "baseline", "avx2" or "avx512"
    cflags: str  # the flags setup.py compiled that level's kernels with
    compiler: str  # the C compiler's __VERSION__
    openmp: int  # the _OPENMP date (e.g. 201511 for OpenMP 4.5), 0 without OpenMP

def runnable_levels() -> list[str]:
    """The levels this build has and this CPU runs, narrowest first."""

def built_levels() -> list[str]:
    """The levels this build has kernels for."""

def use_level(level: str) -> None:
    """Run every later call on the kernels of `level`."""

def current_level() -> str: ...
def is_bfloat16(dtype: np.dtype[Any]) -> bool:
    """Whether dtype is a bfloat16 NumPy dtype (ml_dtypes.bfloat16)."""
def logsumexp_rows(x: npt.NDArray[_Float], out: npt.NDArray[_Float], n_threads: int) -> None:
    """out[i] = logsumexp(x[i, :]) for an (N, C) x and an (N,) out."""

def softmax_rows(
    x: npt.NDArray[_Float], out: npt.NDArray[_Float], log_space: bool, n_threads: int
) -> None:
    """out[i, :] = (log_)softmax(x[i, :]); out may be x."""

def softmax_ce_hard_rows(
    x: npt.NDArray[_Float],
    grad: npt.NDArray[_Float] | None,
    labels: npt.NDArray[np.int64],
    row_loss: npt.NDArray[np.float64] | None,
    *,
    class_weight: npt.NDArray[np.float64] | None,
    sample_weight: npt.NDArray[np.float64] | None,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    grad_scale: float,
    n_threads: int,
    temperature: float = 1.0,
    logit_softcap: float = 0.0,
) -> float:
    """Softmax cross entropy against int64 labels (of the logits mapped by
    c tanh(x / c) / T where temperature or logit_softcap say so); returns the
    loss sum."""

def softmax_ce_soft_rows(
    x: npt.NDArray[_Float],
    grad: npt.NDArray[_Float] | None,
    targets: _Targets,
    row_loss: npt.NDArray[np.float64],
    *,
    class_weight: npt.NDArray[np.float64] | None,
    sample_weight: npt.NDArray[np.float64] | None,
    label_smoothing: float,
    z_loss: float,
    grad_scale: float,
    n_threads: int,
    temperature: float = 1.0,
    logit_softcap: float = 0.0,
) -> float:
    """Softmax cross entropy against probabilities; returns the loss sum."""

def softmax_stats_rows(
    x: npt.NDArray[_Float],
    labels: npt.NDArray[np.int64] | None,
    lse: npt.NDArray[_Float],
    logprob: npt.NDArray[_Float] | None,
    entropy: npt.NDArray[_Float],
    argmax: npt.NDArray[np.int64],
    *,
    temperature: float,
    logit_softcap: float,
    n_threads: int,
) -> None:
    """Per row: lse, logprob (unless None), entropy and argmax of the mapped logits."""

def binary_elements(
    kind: int,
    values: npt.NDArray[_Float],
    targets: _Targets,
    weight: npt.NDArray[_Float] | None,
    pos_weight: npt.NDArray[_Float] | None,
    grad: npt.NDArray[_Float] | None,
    loss_out: npt.NDArray[_Float] | None,
    *,
    n_classes: int,
    grad_scale: float,
    n_threads: int,
) -> float:
    """sigmoid_bce (SIGMOID_BCE) or binary_ce (PROBABILITY_BCE) element by
    element; returns the loss sum."""

def categorical_ce_rows(
    probs: npt.NDArray[_Float],
    grad: npt.NDArray[_Float] | None,
    labels: npt.NDArray[np.int64] | _Targets,
    row_loss: npt.NDArray[np.float64],
    *,
    class_weight: npt.NDArray[np.float64] | None,
    ignore_index: int,
    eps: float,
    grad_scale: float,
    n_threads: int,
) -> float:
    """Categorical cross entropy on probabilities; returns the loss sum."""

def first_bad_probability(t: npt.NDArray[np.float32] | npt.NDArray[np.float64]) -> int:
    """The index of the first value outside [0, 1] (NaN included), or -1."""

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

def exp_values(
    x: npt.NDArray[_Float], out: npt.NDArray[_Float], *, nonpositive: bool = False
) -> None:
    """cyce's vectorised exp, elementwise; with nonpositive, the softmax
    kernels' exp for x <= 0."""

def span_exp_sum_count(
    x: npt.NDArray[_Float], out: npt.NDArray[_Float] | None, shift: float, top: float
) -> tuple[float, float]:
    """The exp-and-sum loop: out = exp(x - shift); (sum where x != top, count where x == top)."""

def log1p_values(s: npt.NDArray[np.float64], out: npt.NDArray[np.float64]) -> None:
    """cyce's vectorisable log1p for s >= 0, elementwise."""

def build_info() -> _BuildInfo:
    """The kernels in use and what they were compiled with."""

def default_threads() -> int:
    """OpenMP's default team size for this thread; 1 without OpenMP."""

def cpu_has_avx2_fma() -> bool: ...
def cpu_has_avx512() -> bool:
    """AVX-512 F, DQ, BW and VL, enabled by the OS."""
