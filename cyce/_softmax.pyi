# Type stub for cyce._softmax: the public logsumexp, log_softmax, softmax,
# softmax_ce, softmax_stats and categorical_ce (their docstrings, in cyce/_softmax.py, give
# the formulas; so does docs/api.md).  tests/test_packaging.py checks that every signature here
# matches the runtime function's parameters and defaults, and runs
# `mypy --strict` on tests/typing_example.py, which uses them.
#
# Inputs are anything np.asarray takes (npt.ArrayLike: NumPy arrays,
# np.memmap, CPU torch tensors, objects with __array__); float32 and float64
# are the dtypes accepted at run time.  Results have the input's dtype.

from typing import Any, Literal, NamedTuple, TypeVar, overload

import numpy as np
import numpy.typing as npt

_Float = TypeVar("_Float", np.float32, np.float64)
_Out = TypeVar("_Out", bound=npt.NDArray[np.floating[Any]])
_Loss = np.floating[Any]
_FloatArray = npt.NDArray[np.floating[Any]]
_MeanOrSum = Literal["mean", "sum"]
_Reduction = Literal["mean", "sum", "none"]

# logsumexp: an array of shape x.shape[:-1], or a NumPy scalar for 1-D x (so
# Any, as NumPy's own reductions over an axis); out, when given, is returned.
@overload
def logsumexp(x: npt.ArrayLike, *, out: None = None, num_threads: int | None = None) -> Any: ...
@overload
def logsumexp(x: npt.ArrayLike, *, out: _Out, num_threads: int | None = None) -> _Out: ...

# log_softmax and softmax: an array of x's shape and dtype, or out (out=x: in place).
@overload
def log_softmax(
    x: npt.NDArray[_Float], *, out: None = None, num_threads: int | None = None
) -> npt.NDArray[_Float]: ...
@overload
def log_softmax(x: npt.ArrayLike, *, out: None = None, num_threads: int | None = None) -> _FloatArray: ...
@overload
def log_softmax(x: npt.ArrayLike, *, out: _Out, num_threads: int | None = None) -> _Out: ...
@overload
def softmax(
    x: npt.NDArray[_Float], *, out: None = None, num_threads: int | None = None
) -> npt.NDArray[_Float]: ...
@overload
def softmax(x: npt.ArrayLike, *, out: None = None, num_threads: int | None = None) -> _FloatArray: ...
@overload
def softmax(x: npt.ArrayLike, *, out: _Out, num_threads: int | None = None) -> _Out: ...

# softmax_ce: the loss, or (loss, grad) when a gradient is asked for
# (return_grad=True, inplace=True or grad_out=...).  The loss is a NumPy
# scalar for reduction "mean"/"sum" and an array of shape logits.shape[:-1]
# for "none"; grad has the logits' shape and dtype.
# the loss alone: a NumPy scalar for mean/sum
@overload
def softmax_ce(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _MeanOrSum = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    temperature: float = 1.0,
    logit_softcap: float | None = None,
    return_grad: Literal[False] = False,
    inplace: Literal[False] = False,
    grad_out: None = None,
    num_threads: int | None = None,
) -> _Loss: ...
# ... and one loss per row for "none"
@overload
def softmax_ce(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["none"],
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    temperature: float = 1.0,
    logit_softcap: float | None = None,
    return_grad: Literal[False] = False,
    inplace: Literal[False] = False,
    grad_out: None = None,
    num_threads: int | None = None,
) -> _FloatArray: ...
# (loss, grad) when return_grad=True ...
@overload
def softmax_ce(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _MeanOrSum = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    temperature: float = 1.0,
    logit_softcap: float | None = None,
    return_grad: Literal[True],
    inplace: bool = False,
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[_Loss, _FloatArray]: ...
# ... or inplace=True (grad is logits' memory) ...
@overload
def softmax_ce(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _MeanOrSum = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    temperature: float = 1.0,
    logit_softcap: float | None = None,
    return_grad: bool = False,
    inplace: Literal[True],
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[_Loss, _FloatArray]: ...
# ... or a grad_out buffer
@overload
def softmax_ce(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _MeanOrSum = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    temperature: float = 1.0,
    logit_softcap: float | None = None,
    return_grad: bool = False,
    inplace: bool = False,
    grad_out: _FloatArray,
    num_threads: int | None = None,
) -> tuple[_Loss, _FloatArray]: ...
# the same three for reduction="none"
@overload
def softmax_ce(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["none"],
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    temperature: float = 1.0,
    logit_softcap: float | None = None,
    return_grad: Literal[True],
    inplace: bool = False,
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[_FloatArray, _FloatArray]: ...
@overload
def softmax_ce(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["none"],
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    temperature: float = 1.0,
    logit_softcap: float | None = None,
    return_grad: bool = False,
    inplace: Literal[True],
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[_FloatArray, _FloatArray]: ...
@overload
def softmax_ce(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["none"],
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    temperature: float = 1.0,
    logit_softcap: float | None = None,
    return_grad: bool = False,
    inplace: bool = False,
    grad_out: _FloatArray,
    num_threads: int | None = None,
) -> tuple[_FloatArray, _FloatArray]: ...
# options only known at run time
@overload
def softmax_ce(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    temperature: float = 1.0,
    logit_softcap: float | None = None,
    return_grad: bool = False,
    inplace: bool = False,
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> _Loss | _FloatArray | tuple[_Loss | _FloatArray, _FloatArray]: ...

# categorical_ce: cross entropy on probabilities, per row
# the loss alone: a NumPy scalar ...
@overload
def categorical_ce(
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    eps: float | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _MeanOrSum = "mean",
    return_grad: Literal[False] = False,
    inplace: Literal[False] = False,
    grad_out: None = None,
    num_threads: int | None = None,
) -> _Loss: ...
# ... or an array for reduction="none"
@overload
def categorical_ce(
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    eps: float | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["none"],
    return_grad: Literal[False] = False,
    inplace: Literal[False] = False,
    grad_out: None = None,
    num_threads: int | None = None,
) -> _FloatArray: ...
# (loss, grad): return_grad=True, inplace=True or grad_out=...
@overload
def categorical_ce(
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    eps: float | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _MeanOrSum = "mean",
    return_grad: Literal[True],
    inplace: bool = False,
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[_Loss, _FloatArray]: ...
@overload
def categorical_ce(
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    eps: float | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _MeanOrSum = "mean",
    return_grad: bool = False,
    inplace: Literal[True],
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[_Loss, _FloatArray]: ...
@overload
def categorical_ce(
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    eps: float | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _MeanOrSum = "mean",
    return_grad: bool = False,
    inplace: bool = False,
    grad_out: _FloatArray,
    num_threads: int | None = None,
) -> tuple[_Loss, _FloatArray]: ...
# the same for reduction="none"
@overload
def categorical_ce(
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    eps: float | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["none"],
    return_grad: Literal[True],
    inplace: bool = False,
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[_FloatArray, _FloatArray]: ...
@overload
def categorical_ce(
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    eps: float | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["none"],
    return_grad: bool = False,
    inplace: Literal[True],
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[_FloatArray, _FloatArray]: ...
@overload
def categorical_ce(
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    eps: float | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["none"],
    return_grad: bool = False,
    inplace: bool = False,
    grad_out: _FloatArray,
    num_threads: int | None = None,
) -> tuple[_FloatArray, _FloatArray]: ...
# options only known at run time
@overload
def categorical_ce(
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    eps: float | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: _Reduction = "mean",
    return_grad: bool = False,
    inplace: bool = False,
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> _Loss | _FloatArray | tuple[_Loss | _FloatArray, _FloatArray]: ...

# softmax_stats: per-row arrays of shape logits.shape[:-1] (NumPy scalars for
# 1-D logits, so Any); logprob is None without labels.
class SoftmaxStats(NamedTuple):
    lse: Any
    logprob: Any | None
    entropy: Any
    argmax: Any

def softmax_stats(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike | None = None,
    *,
    temperature: float = 1.0,
    logit_softcap: float | None = None,
    num_threads: int | None = None,
) -> SoftmaxStats: ...
