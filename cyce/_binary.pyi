# Type stub for cyce._binary: the public sigmoid_bce and binary_ce (their
# docstrings, in cyce/_binary.py, give the formulas; so does docs/api.md).  tests/test_packaging.py checks that every signature here
# matches the runtime function's parameters and defaults.
#
# Inputs are anything np.asarray takes (npt.ArrayLike); float32 and float64 are
# the dtypes accepted at run time, and results have the input's dtype.  The
# loss is a NumPy scalar, or an array for reduction="none"; asking for the
# gradient (return_grad=True, inplace=True or grad_out=...) returns (loss, grad).

from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

_Loss = np.floating[Any]
_FloatArray = npt.NDArray[np.floating[Any]]
_BinaryScalar = Literal["mean", "sum", "batchmean"]
_BinaryReduction = Literal["mean", "sum", "none", "batchmean"]
_MeanOrSum = Literal["mean", "sum"]
_Reduction = Literal["mean", "sum", "none"]

# sigmoid_bce: BCE with logits, elementwise
# the loss alone: a NumPy scalar ...
@overload
def sigmoid_bce(
    logits: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    pos_weight: npt.ArrayLike | None = None,
    reduction: _BinaryScalar = "mean",
    return_grad: Literal[False] = False,
    inplace: Literal[False] = False,
    grad_out: None = None,
    num_threads: int | None = None,
) -> _Loss: ...
# ... or an array for reduction="none"
@overload
def sigmoid_bce(
    logits: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    pos_weight: npt.ArrayLike | None = None,
    reduction: Literal["none"],
    return_grad: Literal[False] = False,
    inplace: Literal[False] = False,
    grad_out: None = None,
    num_threads: int | None = None,
) -> _FloatArray: ...
# (loss, grad): return_grad=True, inplace=True or grad_out=...
@overload
def sigmoid_bce(
    logits: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    pos_weight: npt.ArrayLike | None = None,
    reduction: _BinaryScalar = "mean",
    return_grad: Literal[True],
    inplace: bool = False,
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[_Loss, _FloatArray]: ...
@overload
def sigmoid_bce(
    logits: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    pos_weight: npt.ArrayLike | None = None,
    reduction: _BinaryScalar = "mean",
    return_grad: bool = False,
    inplace: Literal[True],
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[_Loss, _FloatArray]: ...
@overload
def sigmoid_bce(
    logits: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    pos_weight: npt.ArrayLike | None = None,
    reduction: _BinaryScalar = "mean",
    return_grad: bool = False,
    inplace: bool = False,
    grad_out: _FloatArray,
    num_threads: int | None = None,
) -> tuple[_Loss, _FloatArray]: ...
# the same for reduction="none"
@overload
def sigmoid_bce(
    logits: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    pos_weight: npt.ArrayLike | None = None,
    reduction: Literal["none"],
    return_grad: Literal[True],
    inplace: bool = False,
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[_FloatArray, _FloatArray]: ...
@overload
def sigmoid_bce(
    logits: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    pos_weight: npt.ArrayLike | None = None,
    reduction: Literal["none"],
    return_grad: bool = False,
    inplace: Literal[True],
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[_FloatArray, _FloatArray]: ...
@overload
def sigmoid_bce(
    logits: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    pos_weight: npt.ArrayLike | None = None,
    reduction: Literal["none"],
    return_grad: bool = False,
    inplace: bool = False,
    grad_out: _FloatArray,
    num_threads: int | None = None,
) -> tuple[_FloatArray, _FloatArray]: ...
# options only known at run time
@overload
def sigmoid_bce(
    logits: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    pos_weight: npt.ArrayLike | None = None,
    reduction: _BinaryReduction = "mean",
    return_grad: bool = False,
    inplace: bool = False,
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> _Loss | _FloatArray | tuple[_Loss | _FloatArray, _FloatArray]: ...

# binary_ce: BCE on probabilities, elementwise
# the loss alone: a NumPy scalar ...
@overload
def binary_ce(
    probs: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    reduction: _BinaryScalar = "mean",
    return_grad: Literal[False] = False,
    inplace: Literal[False] = False,
    grad_out: None = None,
    num_threads: int | None = None,
) -> _Loss: ...
# ... or an array for reduction="none"
@overload
def binary_ce(
    probs: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    reduction: Literal["none"],
    return_grad: Literal[False] = False,
    inplace: Literal[False] = False,
    grad_out: None = None,
    num_threads: int | None = None,
) -> _FloatArray: ...
# (loss, grad): return_grad=True, inplace=True or grad_out=...
@overload
def binary_ce(
    probs: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    reduction: _BinaryScalar = "mean",
    return_grad: Literal[True],
    inplace: bool = False,
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[_Loss, _FloatArray]: ...
@overload
def binary_ce(
    probs: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    reduction: _BinaryScalar = "mean",
    return_grad: bool = False,
    inplace: Literal[True],
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[_Loss, _FloatArray]: ...
@overload
def binary_ce(
    probs: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    reduction: _BinaryScalar = "mean",
    return_grad: bool = False,
    inplace: bool = False,
    grad_out: _FloatArray,
    num_threads: int | None = None,
) -> tuple[_Loss, _FloatArray]: ...
# the same for reduction="none"
@overload
def binary_ce(
    probs: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    reduction: Literal["none"],
    return_grad: Literal[True],
    inplace: bool = False,
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[_FloatArray, _FloatArray]: ...
@overload
def binary_ce(
    probs: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    reduction: Literal["none"],
    return_grad: bool = False,
    inplace: Literal[True],
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[_FloatArray, _FloatArray]: ...
@overload
def binary_ce(
    probs: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    reduction: Literal["none"],
    return_grad: bool = False,
    inplace: bool = False,
    grad_out: _FloatArray,
    num_threads: int | None = None,
) -> tuple[_FloatArray, _FloatArray]: ...
# options only known at run time
@overload
def binary_ce(
    probs: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    reduction: _BinaryReduction = "mean",
    return_grad: bool = False,
    inplace: bool = False,
    grad_out: _FloatArray | None = None,
    num_threads: int | None = None,
) -> _Loss | _FloatArray | tuple[_Loss | _FloatArray, _FloatArray]: ...
