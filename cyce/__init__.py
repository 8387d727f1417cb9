"""cyce: fast, exact cross-entropy losses and gradients for NumPy arrays."""

from ._version import __version__
from ._binary import binary_ce, sigmoid_bce
from ._softmax import (SoftmaxStats, categorical_ce, log_softmax, logsumexp, softmax,
                       softmax_ce, softmax_stats)
from ._linear import LinearSoftmaxCE, linear_softmax_ce
from ._info import show_config

__all__ = [
    "__version__", "logsumexp", "log_softmax", "softmax", "softmax_ce",
    "softmax_stats", "SoftmaxStats",
    "sigmoid_bce", "binary_ce", "categorical_ce", "linear_softmax_ce", "LinearSoftmaxCE",
    "show_config",
]
