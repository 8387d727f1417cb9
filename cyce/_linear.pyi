# Type stub for cyce._linear: linear_softmax_ce (its docstring, in
# cyce/_linear.py, gives the definition; so does docs/api.md).
# tests/test_packaging.py checks that the signature matches the runtime
# function, and runs `mypy --strict` on tests/typing_example.py, which uses it.

from typing import Any, Literal, NamedTuple, overload

import numpy as np
import numpy.typing as npt

_FloatArray = npt.NDArray[np.floating[Any]]

class LinearSoftmaxCE(NamedTuple):
    loss: Any  # a NumPy scalar for "mean" and "sum", an array for "none"
    grad_hidden: _FloatArray
    grad_linear_weight: _FloatArray
    grad_linear_bias: _FloatArray | None

# the loss alone: a NumPy scalar for "mean"/"sum", an array for "none"
@overload
def linear_softmax_ce(
    hidden: npt.ArrayLike,
    linear_weight: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    linear_bias: npt.ArrayLike | None = None,
    weight: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["mean", "sum", "none"] = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    temperature: float = 1.0,
    logit_softcap: float | None = None,
    return_grad: Literal[False] = False,
    chunk_rows: int | None = None,
    num_threads: int | None = None,
) -> Any: ...
# the loss and the three gradients
@overload
def linear_softmax_ce(
    hidden: npt.ArrayLike,
    linear_weight: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    linear_bias: npt.ArrayLike | None = None,
    weight: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["mean", "sum", "none"] = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    temperature: float = 1.0,
    logit_softcap: float | None = None,
    return_grad: Literal[True],
    chunk_rows: int | None = None,
    num_threads: int | None = None,
) -> LinearSoftmaxCE: ...
