"""Checks shared by every public function.

Each check either returns the input in the form the kernels take or raises
TypeError / ValueError / IndexError with a message naming the argument, the
position and the bad value, and what to pass instead.  The wrappers run all
of them before any kernel writes, so a failed call changes nothing.

None of these checks allocates an array the size of the logits: values of
(..., C) arrays are checked with min/max reductions, and positions are only
searched for once a bad value is known to exist.
"""

import math
import operator

import numpy as np

from . import _core

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
FLOAT32 = np.dtype(np.float32)
FLOAT16 = np.dtype(np.float16)
REDUCTIONS = ("mean", "sum", "none")
SUPPORTED = "float32, float64, float16 or bfloat16 (ml_dtypes.bfloat16)"


def _kind_name(a):
    return f"an array of dtype {a.dtype}"


def is_half(dtype):
    """float16, or a bfloat16 NumPy dtype (recognised without ml_dtypes)."""
    if dtype in FLOAT_DTYPES:
        return False  # the common case, without is_bfloat16's call
    return dtype == FLOAT16 or _core.is_bfloat16(dtype)


def compute_dtype(dtype):
    """The dtype a kernel computes in for input of dtype, and so the dtype
    of its losses and logsumexp: float32 for the half types, else dtype."""
    return FLOAT32 if is_half(dtype) else dtype


def output_dtypes(dtype):
    """The dtypes a gradient or softmax of input of dtype may be written
    in: the input's own, or float32 for a half input (master gradients)."""
    return (dtype, FLOAT32) if is_half(dtype) else (dtype,)


def float_array(name, x):
    """x as a float32, float64, float16 or bfloat16 ndarray with at least
    one axis and C >= 1."""
    a = np.asarray(x)
    if a.dtype not in FLOAT_DTYPES and not is_half(a.dtype):
        if a.dtype.kind in "iub":
            hint = f"pass {name}.astype(np.float32) or np.float64"
        elif a.dtype == object and hasattr(x, "__dlpack__"):
            hint = f"NumPy reads this DLPack producer through np.from_dlpack({name}) (no copy)"
        else:
            hint = f"pass {SUPPORTED} values"
        raise TypeError(f"{name} must be {SUPPORTED}, got {_kind_name(a)}: {hint}")
    if a.ndim == 0:
        raise ValueError(f"{name} must have shape (..., C) with the classes on the last axis, got a 0-d array")
    if a.shape[-1] == 0:
        raise ValueError(
            f"{name} has zero classes (shape {a.shape}): the last axis holds the classes and needs C >= 1"
        )
    return a


def position(shape, flat_index):
    """The index tuple of a flat position, as text: '[2, 5]'."""
    if len(shape) == 0:
        return "[()]"
    idx = np.unravel_index(int(flat_index), shape)
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def option_in(name, value, allowed):
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def real_in(name, value, low, high=None):
    """A Python float in [low, high] (high None: no upper bound)."""
    if type(value) is float and low <= value < math.inf and (high is None or value <= high):
        return value  # the common case, without the general checks' cost
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    try:
        v = float(value)
    except OverflowError:  # a Python int beyond float's range
        v = math.inf
    if not math.isfinite(v) or v < low or (high is not None and v > high):
        where = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be a finite number {where}, got {value!r}")
    return v


def positive_real(name, value):
    """A finite Python float > 0 (a temperature, a softcap)."""
    v = real_in(name, value, 0.0)
    if v == 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def logit_map(temperature, logit_softcap, dtype=None):
    """The kernels' (temperature, softcap): 1.0 and 0.0 when not given.  For
    logits of dtype, 1/T, c and 1/c must be finite in the dtype the kernels
    compute in (float32 for float32 and the half types), which holds them."""
    temperature = positive_real("temperature", temperature)
    softcap = 0.0 if logit_softcap is None else positive_real("logit_softcap", logit_softcap)
    if dtype is not None:
        real = compute_dtype(dtype)
        largest = float(np.finfo(real).max)
        if 1.0 / temperature > largest:
            raise ValueError(f"temperature={temperature!r} is too small for {np.dtype(dtype)} "
                             f"logits: 1 / temperature overflows {np.dtype(real)}")
        if softcap and not 1.0 / largest <= softcap <= largest:
            raise ValueError(f"logit_softcap={softcap!r} is out of range for {np.dtype(dtype)} "
                             f"logits: it and 1 / logit_softcap must be finite in {np.dtype(real)}")
    return temperature, softcap


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def integer(name, value):
    """A Python int within int64 (the kernels' index type)."""
    if type(value) is int and INT64_MIN <= value <= INT64_MAX:
        return value
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got the bool {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None
    if not INT64_MIN <= v <= INT64_MAX:
        raise ValueError(f"{name} must fit in int64 ([-2**63, 2**63 - 1]), got {v}")
    return v


def flag(name, value):
    if value is True or value is False:
        return value
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def num_threads(value):
    if value is None:
        return None
    n = integer("num_threads", value)
    if n < 1:
        raise ValueError(f"num_threads must be None (OpenMP's default) or an integer >= 1, got {n}")
    return n


def class_labels(labels, batch_shape, n_classes, ignore_index, name="labels"):
    """Integer labels of shape batch_shape as a flat int64 array, every value
    in [0, n_classes) or equal to ignore_index (None: none ignored): the
    caller's own array when it is C-contiguous int64 (labels are only read),
    else a converted copy (one value per row)."""
    if labels.shape != batch_shape:
        raise ValueError(
            f"{name} has shape {labels.shape}, but an input of shape {batch_shape + (n_classes,)} "
            f"need integer labels of shape {batch_shape} or probabilities of shape "
            f"{batch_shape + (n_classes,)}"
        )
    flat = labels.reshape(-1)
    if flat.dtype.kind == "u" and flat.dtype.itemsize == 8 and flat.size and flat.max() > 2**63 - 1:
        first = int(np.argmax(flat > 2**63 - 1))  # uint64 that would wrap to negative int64
    else:
        as_int64 = np.ascontiguousarray(flat, dtype=np.int64)  # no copy if it already is
        # class 0 stands for "none ignored": it is in range anyway
        first = _core.first_bad_label(as_int64, n_classes, 0 if ignore_index is None else ignore_index)
    if first >= 0:
        allowed = "" if ignore_index is None else f" or equal ignore_index ({ignore_index})"
        raise IndexError(
            f"{name}{position(batch_shape, first)} = {flat[first].item()} is out of range: class "
            f"indices must be in [0, {n_classes}){allowed}"
        )
    return as_int64


def probabilities(name, t, shape):
    """Float probabilities of the given shape, each in [0, 1], no NaN.
    float32 and float64 are not copied (they may be as large as the
    logits); float16 and bfloat16 ones are converted to float32 once (the
    kernels read probabilities in float32 or float64)."""
    if is_half(t.dtype):
        t = t.astype(FLOAT32)
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be {SUPPORTED} probabilities, got {_kind_name(t)}")
    if t.shape != shape:
        raise ValueError(f"{name} has shape {t.shape}, expected {shape}")
    if t.size == 0:
        return t
    if t.flags.c_contiguous:
        first = _core.first_bad_probability(t.reshape(-1))
    elif t.min() >= 0 and t.max() <= 1:  # NaN fails both
        first = -1  # strided or broadcast targets, checked without a copy of their full size
    else:
        first = int(np.argmax(~((t >= 0) & (t <= 1)).reshape(-1)))
    if first >= 0:
        raise ValueError(
            f"{name}{position(shape, first)} = {t.flat[first].item()!r} is not a probability: "
            f"values must be in [0, 1]"
        )
    return t


def weights(name, w, shape, what, finite=True):
    """A float64 C-contiguous copy of the weights of the given shape, each
    finite unless finite is False."""
    a = np.asarray(w)
    if a.dtype.kind not in "iuf" and not is_half(a.dtype):
        raise TypeError(f"{name} must hold real numbers ({what}), got {_kind_name(a)}")
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape} ({what}), got shape {a.shape}")
    a = np.array(a, dtype=np.float64, order="C", copy=True)
    if not finite:
        return a
    is_finite = np.isfinite(a)
    if not is_finite.all():
        first = int(np.argmin(is_finite.reshape(-1)))
        raise ValueError(f"{name}{position(shape, first)} = {a.reshape(-1)[first].item()!r} is not finite")
    return a


def writable_output(name, out, shape, *dtypes):
    """A caller's output buffer: an ndarray of this exact shape and one of
    these dtypes, C-contiguous and writable (cyce never writes through a
    copy)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(out).__name__}")
    if isinstance(out, np.matrix):
        raise TypeError(f"{name} must be an ndarray, not np.matrix (which stays 2-D when "
                        f"flattened): pass np.asarray({name})")
    if out.dtype not in dtypes:
        names = " or ".join(str(d) for d in dtypes)
        raise TypeError(f"{name} must have dtype {names}, got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous: pass np.empty({shape}, dtype={name}.dtype)")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return out


def same_memory(a, b):
    """a and b are the same elements in the same layout (an in-place call)."""
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.shape == b.shape
        and a.strides == b.strides
        and a.dtype == b.dtype
    )


def no_overlap(name, out, others):
    """out must not share memory with any input it is not meant to replace."""
    for other_name, other in others:
        if other is not None and isinstance(other, np.ndarray) and np.shares_memory(out, other):
            raise ValueError(f"{name} overlaps {other_name}: pass a separate buffer")


def inplace_target(name, x):
    """The array an in-place call writes over: a writable C-contiguous float
    array whose memory the caller holds: an ndarray, or NumPy's zero-copy
    view of an array-like (a CPU torch.Tensor, an __array__ returning a view);
    not a list or any other input that np.asarray copied."""
    if not isinstance(x, np.ndarray):
        view = np.asarray(x)
        if view.flags.owndata:  # a new array: a gradient written there would be lost
            raise TypeError(
                f"inplace=True needs {name} to be a NumPy array, got {type(x).__name__}, which "
                f"np.asarray copies (CPU tensors and other arrays it views without a copy work too)"
            )
        x = view
    if not x.flags.c_contiguous:
        raise ValueError(
            f"inplace=True needs {name} to be C-contiguous (it is a strided or Fortran-ordered "
            f"view); pass np.ascontiguousarray({name}) or use inplace=False"
        )
    if not x.flags.writeable:
        raise ValueError(f"inplace=True needs {name} to be writable, and it is read-only")
    return x


def gradient_destination(name, x, original, inplace, grad_out, return_grad, aliases):
    """Where a call writes its gradient, checked before anything is written.

    Returns (grad, want_grad): grad is x itself (in place: inplace=True or
    grad_out=x), the caller's grad_out, or None (the wrapper allocates it once
    every check has passed).  `original` is what the caller passed as x;
    `aliases` are (name, array) inputs the gradient must not overwrite.
    """
    if inplace:
        inplace_target(name, original)
        if grad_out is not None and not same_memory(grad_out, x):
            raise ValueError("pass either inplace=True or grad_out, not both")
        for other_name, other in aliases:
            if isinstance(other, np.ndarray) and np.shares_memory(other, x):
                raise ValueError(
                    f"inplace=True would overwrite {other_name}, which shares memory with {name}"
                )
        return x, True
    if grad_out is not None:
        writable_output("grad_out", grad_out, x.shape, *output_dtypes(x.dtype))
        if isinstance(original, np.ndarray) and same_memory(grad_out, x):
            return gradient_destination(name, x, original, True, None, True, aliases)
        no_overlap("grad_out", grad_out, [(name, x)] + list(aliases))
        return grad_out, True
    return None, return_grad


DEFAULT_IGNORE_INDEX = -100


def labels_or_probabilities(name, labels, x, ignore_index):
    """Class indices of shape x.shape[:-1] (returned as flat int64, see class_labels) or
    probabilities of x's shape (returned as they are): (is_soft, labels).
    An ignore_index other than the default is an error with probabilities:
    it names a class index, and no probability row can match it (PyTorch
    raises too)."""
    y = np.asarray(labels)
    if y.dtype.kind == "f" or is_half(y.dtype):
        if ignore_index != DEFAULT_IGNORE_INDEX:
            raise ValueError(
                f"ignore_index={ignore_index} applies to integer class indices, but {name} holds "
                f"probabilities (a float array of shape {y.shape}): leave ignore_index at its "
                f"default ({DEFAULT_IGNORE_INDEX}), or pass class indices; to leave rows of "
                f"probability targets out of the loss, drop them from the batch (softmax_ce: "
                f"or give them sample_weight 0)")
        return True, probabilities(name, y, x.shape)
    if y.dtype.kind in "iu":
        return False, class_labels(y, x.shape[:-1], x.shape[-1], ignore_index)
    raise TypeError(
        f"{name} must be integer class indices of shape {x.shape[:-1]} or float "
        f"probabilities of shape {x.shape}, got an array of dtype {y.dtype}"
    )
