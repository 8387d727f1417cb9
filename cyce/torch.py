"""cyce.torch: drop-ins for torch.nn.functional's cross-entropy losses on the CPU.

``cross_entropy``, ``binary_cross_entropy_with_logits`` and
``binary_cross_entropy`` take the arguments of their torch.nn.functional
namesakes and return the same values and input gradients; ``CrossEntropyLoss``,
``BCEWithLogitsLoss`` and ``BCELoss`` are subclasses of torch's modules (same
constructor arguments, buffers and state_dict keys) whose forward calls them.
Importing this module needs torch; ``import cyce`` alone never imports it.

How a call runs: CPU tensors of float32, float64, float16 and bfloat16 go
through the ``torch.ops.cyce.*`` custom ops,
whose forward computes the loss and, when the input requires grad, its
gradient with cyce's kernel, and saves that gradient; their backward only
scales it by ``grad_output``.  Any other input (another device, an integer or
complex dtype) goes to torch's own function unchanged.

Half precision: float16 and bfloat16 tensors are read where they are by
cyce's half-precision kernels (float32 arithmetic, the gradient in the
input's dtype); bfloat16 through ml_dtypes' NumPy dtype, so without
ml_dtypes installed a bfloat16 input is computed on a float32 copy.

Layout: the classes are on dim 1 (``(N, C)``, ``(N, C, d1, ...)``) or dim 0 for
an unbatched ``(C,)`` input.  ``(N, C)`` C-contiguous input and K-dim input
stored channels-last (``input.movedim(1, -1)`` contiguous) are read without a
copy; any other layout is copied once into that order.

Errors: the checks torch makes (shapes, dtypes, options, class-index range,
values in [0, 1] for the probability losses) raise the exception type torch
raises for the same mistake (RuntimeError, ValueError or IndexError) before
anything is written; probability targets of ``cross_entropy`` outside [0, 1],
which torch accepts, raise ValueError.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import _reduction as _torch_reduction

from . import _binary, _linear, _softmax
from . import _validation as check

__all__ = [
    "cross_entropy", "binary_cross_entropy_with_logits", "binary_cross_entropy",
    "linear_cross_entropy", "CrossEntropyLoss", "BCEWithLogitsLoss", "BCELoss", "empty_cache",
]

KERNEL_DTYPES = (torch.float32, torch.float64, torch.float16)
# bfloat16: cyce's kernels read it through ml_dtypes' NumPy dtype, or, without
# ml_dtypes, a float32 copy (the loss and gradient returned in bfloat16)
UPCAST_DTYPES = (torch.bfloat16,)
REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------------
# Tensors to and from the NumPy kernels
# ---------------------------------------------------------------------------

def _numpy_bfloat16() -> Optional[np.dtype]:
    """ml_dtypes' bfloat16 NumPy dtype, or None without ml_dtypes."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


_BFLOAT16 = _numpy_bfloat16()


def _upcast(t: Tensor) -> bool:
    """Whether t is computed on a float32 copy (bfloat16 without ml_dtypes)."""
    return t.dtype == torch.bfloat16 and _BFLOAT16 is None


def _kernel_array(t: Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor (bfloat16 through an int16 view, which
    torch's numpy() allows), or a float32 copy of a bfloat16 one without
    ml_dtypes (in an array from NumPy's allocator, see _new_array)."""
    t = t.detach()
    if _upcast(t):
        copy = _new_array(t.shape, np.float32)
        torch.from_numpy(copy).copy_(t)
        return copy
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_BFLOAT16)
    return t.numpy()


def _tensor_of(a: np.ndarray) -> Tensor:
    """A tensor over a NumPy array's memory (bfloat16 through int16)."""
    if a.dtype == _BFLOAT16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _optional_array(t: Optional[Tensor]) -> Optional[np.ndarray]:
    return None if t is None else _kernel_array(t)


def _new_array(shape, dtype) -> np.ndarray:
    """A new array for a gradient.  From NumPy's allocator, which gives large
    allocations huge pages on Linux (first-touch faults on small pages cost
    more than the kernel itself at these sizes), and, from SPARE_MIN_BYTES
    up, the spare buffer of an earlier call when nothing uses it any more
    (see empty_cache): a training loop then touches no new memory per step."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes < SPARE_MIN_BYTES:
        return _softmax._new_gradient(tuple(shape), dtype)
    with _spare_lock:
        spare = _spare.pop() if _spare else None
        # the list's reference gone, the spare is free when only `spare` and
        # getrefcount's argument refer to it (a tensor or view of it holds one more)
        # the spare owns its memory, so every view of it counts in its refcount
        if spare is None or spare.nbytes != nbytes + LINE or sys.getrefcount(spare) > 2:
            spare = np.empty(nbytes + LINE, dtype=np.uint8)
        _spare.append(spare)
    # on a cache line, as _softmax._new_gradient's
    start = -spare.ctypes.data % LINE
    return spare[start:start + nbytes].view(dtype).reshape(tuple(shape))


SPARE_MIN_BYTES = 1 << 26
LINE = 64
_spare: list = []  # at most one buffer: the last large gradient's memory
_spare_lock = threading.Lock()


def empty_cache() -> None:
    """Let go of the spare gradient buffer that cyce.torch keeps for the next
    call of the same size (like torch.cuda.empty_cache for the CUDA caching
    allocator); its memory returns to the system once no tensor uses it."""
    with _spare_lock:
        _spare.clear()


def _loss_tensor(loss, dtype: torch.dtype) -> Tensor:
    """cyce's loss (a NumPy scalar or array) as a tensor of the input's dtype."""
    return torch.from_numpy(np.asarray(loss)).to(dtype)


def _gradient_call(kernel, x: Tensor, want_grad: bool, **kwargs):
    """Run cyce's kernel on x (a CPU tensor): (loss, gradient tensor).  The
    gradient goes into a new array (grad_out) of x's dtype, or over the
    float32 copy of an upcast input; with want_grad False the loss alone is
    computed and the gradient is an empty tensor (the op's schema needs a
    tensor)."""
    array = _kernel_array(x)
    kwargs["num_threads"] = torch.get_num_threads()
    if not want_grad:
        return _loss_tensor(kernel(array, **kwargs), x.dtype), x.new_empty(0)
    if _upcast(x):
        loss, grad = kernel(array, inplace=True, **kwargs)
        return _loss_tensor(loss, x.dtype), torch.from_numpy(grad).to(x.dtype)
    grad = _new_array(array.shape, array.dtype)
    loss, _ = kernel(array, grad_out=grad, **kwargs)
    return _loss_tensor(loss, x.dtype), _tensor_of(grad)


def _inplace_call(kernel, x: Tensor, **kwargs) -> Tensor:
    """Run cyce's kernel writing the gradient over x's own storage: the loss."""
    kwargs["num_threads"] = torch.get_num_threads()
    array = _kernel_array(x)
    loss, _ = kernel(array, inplace=True, **kwargs)
    if _upcast(x):
        x.detach().copy_(torch.from_numpy(array))
    return _loss_tensor(loss, x.dtype)


# ---------------------------------------------------------------------------
# The custom ops.  Each functional op returns (loss, grad): grad is
# d(loss)/d(input) for "mean"/"sum", the gradient of the summed losses for
# "none", and an empty tensor when want_grad is False.  The in-place ops
# (names ending in "_") write that gradient over their input instead and
# return the loss; cyce::loss_with_grad then gives autograd the gradient.
# ---------------------------------------------------------------------------

@torch.library.custom_op("cyce::softmax_ce", mutates_args=())
def _softmax_ce_op(
    logits: Tensor, target: Tensor, weight: Optional[Tensor], sample_weight: Optional[Tensor],
    ignore_index: int, label_smoothing: float, z_loss: float, temperature: float,
    logit_softcap: float, reduction: str, want_grad: bool,
) -> tuple[Tensor, Tensor]:
    """Softmax cross entropy of (R, C) logits against (R,) int64 class indices
    or (R, C) probabilities (cyce.softmax_ce); logit_softcap 0.0 means none."""
    return _gradient_call(_softmax_kernel, logits, want_grad, **_softmax_kwargs(
        target, weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss,
        temperature, logit_softcap))


@torch.library.custom_op("cyce::softmax_ce_", mutates_args=("logits",))
def _softmax_ce_inplace_op(
    logits: Tensor, target: Tensor, weight: Optional[Tensor], sample_weight: Optional[Tensor],
    ignore_index: int, label_smoothing: float, z_loss: float, temperature: float,
    logit_softcap: float, reduction: str,
) -> Tensor:
    return _inplace_call(_softmax_kernel, logits, **_softmax_kwargs(
        target, weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss,
        temperature, logit_softcap))


def _softmax_kernel(array, *, labels, **kwargs):
    return _softmax.softmax_ce(array, labels, **kwargs)


def _softmax_kwargs(target, weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss,
                    temperature, logit_softcap):
    return dict(
        labels=_kernel_array(target) if target.is_floating_point() else target.numpy(),
        weight=_optional_array(weight), sample_weight=_optional_array(sample_weight),
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
        z_loss=z_loss, temperature=temperature, logit_softcap=_softcap_arg(logit_softcap),
    )


def _softcap_arg(logit_softcap: float) -> Optional[float]:
    """The ops' softcap (a float in their schema, 0.0 for none, as the
    kernels take it) as cyce's functions take it."""
    return None if logit_softcap == 0.0 else logit_softcap


@torch.library.custom_op("cyce::sigmoid_bce", mutates_args=())
def _sigmoid_bce_op(
    logits: Tensor, target: Tensor, weight: Optional[Tensor], pos_weight: Optional[Tensor],
    reduction: str, want_grad: bool,
) -> tuple[Tensor, Tensor]:
    """Binary cross entropy with logits of (R, K) logits, targets of that
    shape, weight broadcast to it, pos_weight (K,) (cyce.sigmoid_bce)."""
    return _gradient_call(_sigmoid_bce_kernel, logits, want_grad,
                          **_binary_kwargs(target, weight, pos_weight, reduction))


@torch.library.custom_op("cyce::sigmoid_bce_", mutates_args=("logits",))
def _sigmoid_bce_inplace_op(
    logits: Tensor, target: Tensor, weight: Optional[Tensor], pos_weight: Optional[Tensor],
    reduction: str,
) -> Tensor:
    return _inplace_call(_sigmoid_bce_kernel, logits,
                         **_binary_kwargs(target, weight, pos_weight, reduction))


@torch.library.custom_op("cyce::binary_ce", mutates_args=())
def _binary_ce_op(
    probs: Tensor, target: Tensor, weight: Optional[Tensor], reduction: str, want_grad: bool,
) -> tuple[Tensor, Tensor]:
    """Binary cross entropy of probabilities (cyce.binary_ce), logs clamped at -100."""
    try:
        return _gradient_call(_binary_ce_kernel, probs, want_grad,
                              **_binary_kwargs(target, weight, None, reduction))
    except ValueError as error:
        if "is not a probability" in str(error):  # torch raises RuntimeError for these
            raise RuntimeError(f"all elements of input and target should be between 0 and 1: "
                               f"{error}") from None
        raise


def _sigmoid_bce_kernel(array, *, targets, **kwargs):
    return _binary.sigmoid_bce(array, targets, **kwargs)


def _binary_ce_kernel(array, *, targets, pos_weight, **kwargs):
    return _binary.binary_ce(array, targets, **kwargs)


def _binary_kwargs(target, weight, pos_weight, reduction):
    return dict(targets=_kernel_array(target), weight=_optional_array(weight),
                pos_weight=_optional_array(pos_weight), reduction=reduction)


@torch.library.custom_op("cyce::loss_with_grad", mutates_args=())
def _loss_with_grad_op(input: Tensor, loss: Tensor, grad: Tensor, class_dim: int) -> Tensor:
    """The loss of an in-place op, joined to the autograd graph of `input`:
    its backward returns `grad` (the gradient the in-place op wrote over
    input's storage, in input's shape) scaled by grad_output; for per-sample
    losses grad_output lacks grad's dim class_dim."""
    return loss.clone()


@_softmax_ce_op.register_fake
def _(logits, target, weight, sample_weight, ignore_index, label_smoothing, z_loss, temperature,
      logit_softcap, reduction, want_grad):
    loss_shape = logits.shape[:1] if reduction == "none" else ()
    return logits.new_empty(loss_shape), _fake_grad(logits, want_grad)


@_softmax_ce_inplace_op.register_fake
def _(logits, target, weight, sample_weight, ignore_index, label_smoothing, z_loss, temperature,
      logit_softcap, reduction):
    return logits.new_empty(logits.shape[:1] if reduction == "none" else ())


@_sigmoid_bce_op.register_fake
def _(logits, target, weight, pos_weight, reduction, want_grad):
    return logits.new_empty(logits.shape if reduction == "none" else ()), _fake_grad(logits, want_grad)


@_sigmoid_bce_inplace_op.register_fake
def _(logits, target, weight, pos_weight, reduction):
    return logits.new_empty(logits.shape if reduction == "none" else ())


@_binary_ce_op.register_fake
def _(probs, target, weight, reduction, want_grad):
    return probs.new_empty(probs.shape if reduction == "none" else ()), _fake_grad(probs, want_grad)


@_loss_with_grad_op.register_fake
def _(input, loss, grad, class_dim):
    return torch.empty_like(loss)


def _fake_grad(x, want_grad):
    return torch.empty_like(x, memory_format=torch.contiguous_format) if want_grad else x.new_empty(0)


# ---- autograd: save the forward's gradient, scale it in the backward ----

def _save_gradient(ctx, inputs, output):
    loss, grad = output
    ctx.class_dim = 1  # (R, C) gradients with (R,) losses, or losses of the gradient's shape
    ctx.mark_non_differentiable(grad)
    # an unused gradient of `grad` would otherwise be materialised as zeros of the input's size
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(grad)
    ctx.n_inputs = len(inputs)


def _save_given_gradient(ctx, inputs, output):
    ctx.save_for_backward(inputs[2])
    ctx.class_dim = inputs[3]
    ctx.n_inputs = len(inputs)


DOUBLE_BACKWARD = ("cyce.torch: the gradient of a cyce loss is not differentiable again (no double "
                   "backward); use torch.nn.functional's loss where second derivatives are needed")


def _scaled_gradient(ctx, grad_loss, *unused):
    """d(out)/d(input) = saved gradient x grad_output (per row or element for
    "none").  Not differentiable again: the saved gradient is a value, not a
    function of the input, so under create_graph the result carries a node
    that raises DOUBLE_BACKWARD if it is differentiated."""
    (grad,) = ctx.saved_tensors
    if grad_loss is None:
        return (None,) * ctx.n_inputs
    if grad.numel() == 0 and grad_loss.numel() != 0:
        raise RuntimeError("cyce: this loss was computed without its gradient (want_grad=False)")
    create_graph = torch.is_grad_enabled()
    with torch.no_grad():
        result = _scale(grad, grad_loss, ctx.class_dim)
    if create_graph and not _is_traced(grad_loss):
        # (as once_differentiable does; its input must require grad for it to have a node)
        result = torch._C._functions.DelayedError(DOUBLE_BACKWARD, 1)(result.detach().requires_grad_())
    return (result,) + (None,) * (ctx.n_inputs - 1)


def _scale(grad: Tensor, grad_loss: Tensor, class_dim: int) -> Tensor:
    """grad * grad_loss, where grad_loss is a scalar, has grad's shape, or
    grad's shape without dim class_dim (per-sample losses).  In eager mode a grad_loss of ones (loss.backward()) returns the
    saved gradient itself, no new tensor of the input's size, unless the
    graph is kept (retain_graph): autograd may then accumulate a later
    backward into what it received, which must not be the saved gradient."""
    if _is_exactly_one(grad_loss) and not _graph_is_kept():
        return grad
    if grad_loss.ndim != 0 and grad_loss.ndim != grad.ndim:
        grad_loss = grad_loss.unsqueeze(class_dim)
    return grad * grad_loss


def _graph_is_kept() -> bool:
    keep_graph = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if keep_graph is None else keep_graph()


def _is_traced(t: Tensor) -> bool:
    """t is a value being traced (torch.compile, fake tensors, functorch), not data."""
    return (torch.compiler.is_compiling() or torch._subclasses.fake_tensor.is_fake(t)
            or torch._C._functorch.is_functorch_wrapped_tensor(t))


def _is_exactly_one(t: Tensor) -> bool:
    """All ones, known without tracing (and False where t requires grad)."""
    if t.requires_grad or _is_traced(t):
        return False
    return t.device.type == "cpu" and bool((t == 1).all())


for _op in (_softmax_ce_op, _sigmoid_bce_op, _binary_ce_op):
    _op.register_autograd(_scaled_gradient, setup_context=_save_gradient)
_loss_with_grad_op.register_autograd(_scaled_gradient, setup_context=_save_given_gradient)


# ---------------------------------------------------------------------------
# Argument handling shared by the functions
# ---------------------------------------------------------------------------

def _reduction(size_average, reduce, reduction: str) -> str:
    """torch's rule: the deprecated size_average/reduce, when either is
    given, override reduction."""
    if size_average is not None or reduce is not None:
        reduction = _torch_reduction.legacy_get_string(size_average, reduce)
    if reduction not in REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    return reduction


def _runs_on_cyce(x: Tensor) -> bool:
    return x.device.type == "cpu" and (x.dtype in KERNEL_DTYPES or x.dtype in UPCAST_DTYPES) \
        and x.layout == torch.strided


def _wants_grad(x: Tensor) -> bool:
    return x.requires_grad and torch.is_grad_enabled()


def _channels_last_rows(x: Tensor) -> Tensor:
    """(N, C, d1, ...) -> the (N * d1 * ..., C) rows, a view when x is stored
    channels-last (or is (N, C) C-contiguous), else one copy."""
    if x.ndim > 2:
        x = x.movedim(1, -1)
    return x.reshape(-1, x.shape[-1]).contiguous()


def _check_floating_like(name: str, t: Tensor, x: Tensor):
    if not t.is_floating_point():
        raise RuntimeError(f"expected {name} to be a floating point tensor, got {t.dtype}")


def _run(op, inplace_op, x: Tensor, inplace_backward: bool, args: tuple, input: Tensor,
         in_input_layout, loss_shape: tuple, class_dim: int) -> Tensor:
    """The loss of op(x, *args) (x: the rows made from `input`), differentiable
    with respect to x, shaped loss_shape for reduction "none".

    In place (inplace_backward, where input requires grad) the gradient is
    written over x; when x is input's own memory, autograd is given it as the
    gradient of `input` (in_input_layout(rows) -> input's shape and strides),
    not of the view x: after the write, x's gradient would go through a
    replay of the view that allocates a zero tensor of the input's size."""
    none = args[-1] == "none"  # (args end with the reduction)
    if not inplace_backward or not _wants_grad(x) or torch.compiler.is_compiling():
        # (under torch.compile the compiler owns the buffers: the functional op)
        loss, _ = op(x, *args, _wants_grad(x))
        return loss.reshape(loss_shape) if none else loss
    with torch.no_grad():
        loss = inplace_op(x.detach(), *args)  # bumps x's (and input's) version counter
    if none:
        loss = loss.reshape(loss_shape)
    if x.data_ptr() == input.data_ptr() and x.numel() == input.numel():
        x, grad = input, in_input_layout(x.detach())
    else:
        grad = x.detach()
        class_dim = 1
        loss = loss.reshape(-1) if none and grad.ndim == 2 else loss
    result = torch.ops.cyce.loss_with_grad(x, loss, grad, class_dim)
    return result.reshape(loss_shape) if none else result


# ---------------------------------------------------------------------------
# The drop-ins
# ---------------------------------------------------------------------------

def cross_entropy(
    input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
    size_average: Optional[bool] = None, ignore_index: int = -100,
    reduce: Optional[bool] = None, reduction: str = "mean", label_smoothing: float = 0.0,
    *, z_loss: float = 0.0, temperature: float = 1.0, logit_softcap: Optional[float] = None,
    sample_weight: Optional[Tensor] = None, inplace_backward: bool = False,
) -> Tensor:
    """torch.nn.functional.cross_entropy, computed by cyce on the CPU.

    ``input`` is ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)`` logits; ``target``
    class indices (int64 or uint8) of the input's shape without dim 1, or
    probabilities of the input's shape.  For each sample i with
    ``lse_i = logsumexp_c(x_ic)``, class weights ``w``, smoothing ``e``:

    - index y:  ``l_i = (1-e) w[y] (lse_i - x_iy) + (e/C) sum_c w[c] (lse_i - x_ic)``,
      0 where ``y == ignore_index``; ``"mean"`` divides by ``sum_i w[y_i]``
      over the samples not ignored;
    - probabilities t:  ``l_i = sum_c w[c] t'_ic (lse_i - x_ic)``, ``t' = (1-e) t + e/C``;
      ``"mean"`` divides by the number of samples (N * d1 * ...).

    cyce's extras, keyword-only: ``z_loss=z`` adds ``z * lse_i**2`` to each
    ``l_i``; ``logit_softcap=c`` and ``temperature=T`` map the logits first,
    softcap first: ``x -> c tanh(x / c) / T`` (``x / T`` without a softcap;
    a ``-inf`` logit stays ``-inf``), the gradient carried back through the
    map (each must be finite and > 0, else ValueError; for inputs torch
    computes, the map is torch ops before F.cross_entropy);
    ``sample_weight`` (the target's batch shape) multiplies ``l_i`` and, for
    index targets, the mean's denominator terms; ``inplace_backward=True``
    writes the gradient over ``input``'s storage (nothing allocated;
    ``input`` holds the gradient afterwards and its version counter is
    bumped, so autograd refuses any later use of the old values; ignored
    under torch.compile).

    The gradient with respect to the input is computed in the forward (when
    the input requires grad) and saved; a probability target gets none.
    Double backward raises.  bfloat16 / float16 input is computed in float32
    by cyce's half-precision kernels, the gradient in the input's dtype.
    """
    reduction = _reduction(size_average, reduce, reduction)
    temperature, softcap = check.logit_map(temperature, logit_softcap)
    if not (isinstance(input, Tensor) and isinstance(target, Tensor) and _runs_on_cyce(input)):
        return _torch_cross_entropy(input, target, weight, ignore_index, reduction,
                                    label_smoothing, z_loss, sample_weight, temperature, softcap)
    if input.ndim == 0:
        raise RuntimeError("cross_entropy: input must have at least one dimension (the classes)")
    n_classes = input.shape[0] if input.ndim == 1 else input.shape[1]
    soft = target.is_floating_point()
    batch_shape = _check_cross_entropy_target(input, target, soft)
    _check_class_weight(weight, n_classes, input)
    if soft and ignore_index != -100:
        raise RuntimeError("ignore_index is not supported for floating point target")
    if not 0.0 <= label_smoothing <= 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    if sample_weight is not None and tuple(sample_weight.shape) != batch_shape:
        raise ValueError(f"sample_weight must have the target's batch shape {batch_shape}, "
                         f"got {tuple(sample_weight.shape)}")

    x = input.unsqueeze(0) if input.ndim == 1 else input
    rows = _channels_last_rows(x)
    if soft:
        labels = _channels_last_rows(target.detach().unsqueeze(0) if input.ndim == 1 else target.detach())
    else:
        labels = target.reshape(-1).to(torch.int64).contiguous()
    row_weight = None if sample_weight is None else sample_weight.detach().reshape(-1).contiguous()

    def in_input_layout(grad_rows):
        if input.ndim > 2:  # the rows are input.movedim(1, -1)'s
            return grad_rows.reshape(input.movedim(1, -1).shape).movedim(-1, 1)
        return grad_rows.reshape(input.shape)

    return _run(torch.ops.cyce.softmax_ce, torch.ops.cyce.softmax_ce_, rows, inplace_backward,
                (labels, weight, row_weight, int(ignore_index), float(label_smoothing),
                 float(z_loss), temperature, softcap, reduction),
                input, in_input_layout, batch_shape, 0 if input.ndim == 1 else 1)


def _check_class_weight(weight: Optional[Tensor], n_classes: int, input: Tensor):
    if weight is not None and (weight.ndim != 1 or weight.shape[0] != n_classes):
        raise RuntimeError(
            f"weight tensor should be defined either for all {n_classes} classes or no classes "
            f"but got weight tensor of shape: {list(weight.shape)}")
    if weight is not None and weight.dtype != input.dtype:
        raise RuntimeError(f"expected scalar type {input.dtype} but found {weight.dtype} (weight)")


def _check_cross_entropy_target(input: Tensor, target: Tensor, soft: bool) -> tuple:
    """The batch shape (the input's shape without the class dim), after
    torch's checks of the target's shape and dtype."""
    batch_shape = () if input.ndim == 1 else (input.shape[0],) + tuple(input.shape[2:])
    if soft:
        if target.shape != input.shape:
            raise RuntimeError(f"cross_entropy: probability targets must have the input's shape "
                               f"{list(input.shape)}, got {list(target.shape)}")
        return batch_shape
    if target.dtype not in (torch.int64, torch.uint8):
        raise RuntimeError(f"expected target dtype to be Long or Byte, but got {target.dtype}")
    if input.ndim >= 2 and target.ndim >= 1 and target.shape[0] != input.shape[0]:
        raise ValueError(f"Expected input batch_size ({input.shape[0]}) to match target "
                         f"batch_size ({target.shape[0]}).")
    if tuple(target.shape) != batch_shape:
        raise RuntimeError(f"Expected target size {list(batch_shape)}, got {list(target.shape)}")
    return batch_shape


def _torch_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing,
                         z_loss, sample_weight, temperature, softcap):
    """Inputs cyce does not compute (another device or dtype): torch's own
    function, after the logit map in torch ops (z_loss and sample_weight
    have no torch counterpart: NotImplementedError)."""
    if z_loss == 0.0 and sample_weight is None:
        if isinstance(input, Tensor) and input.is_floating_point():  # (others: torch's error)
            input = _mapped_logits(input, temperature, softcap)
        return F.cross_entropy(input, target, weight, ignore_index=ignore_index,
                               reduction=reduction, label_smoothing=label_smoothing)
    raise NotImplementedError(
        f"cyce.torch: z_loss and sample_weight need a CPU float tensor, got {input.dtype} on "
        f"{input.device}")


def _mapped_logits(x: Tensor, temperature: float, softcap: float) -> Tensor:
    """cyce's logit map in torch ops (differentiable), for the calls torch
    computes: ``c tanh(x / c) / T``, a -inf logit kept (softcap 0.0: none)."""
    if softcap != 0.0:
        x = torch.where(x == -math.inf, x, softcap * torch.tanh(x / softcap))
    return x if temperature == 1.0 else x / temperature


def binary_cross_entropy_with_logits(
    input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
    size_average: Optional[bool] = None, reduce: Optional[bool] = None,
    reduction: str = "mean", pos_weight: Optional[Tensor] = None,
    *, inplace_backward: bool = False,
) -> Tensor:
    """torch.nn.functional.binary_cross_entropy_with_logits, computed by cyce
    on the CPU.

    Elementwise, with ``s`` the sigmoid, ``p = pos_weight`` and ``w = weight``
    broadcast to the input: ``l = -w (p y log s(x) + (1 - y) log(1 - s(x)))``,
    computed without overflow for any logit; ``"mean"`` averages over all
    elements.  Targets must be in [0, 1] (ValueError otherwise; torch accepts
    any value).  ``inplace_backward=True`` as in ``cross_entropy``.
    """
    reduction = _reduction(size_average, reduce, reduction)
    if not (isinstance(input, Tensor) and isinstance(target, Tensor) and _runs_on_cyce(input)):
        return F.binary_cross_entropy_with_logits(input, target, weight, reduction=reduction,
                                                  pos_weight=pos_weight)
    if target.shape != input.shape:
        raise ValueError(f"Target size ({target.shape}) must be the same as input size ({input.shape})")
    _check_broadcast("weight", weight, input)
    _check_broadcast("pos_weight", pos_weight, input)
    x, pos_weight = _pos_weight_rows(_at_least_1d(input.contiguous()), pos_weight)
    t = target.detach().reshape(x.shape)
    w = None if weight is None else weight.detach()
    if w is not None and x.shape != input.shape:
        w = w.expand(input.shape).reshape(x.shape)  # a view unless the broadcast forbids it
    return _run(torch.ops.cyce.sigmoid_bce, torch.ops.cyce.sigmoid_bce_, x, inplace_backward,
                (t, w, pos_weight, reduction), input, lambda grad: grad.reshape(input.shape),
                tuple(input.shape), 0)


def _pos_weight_rows(x: Tensor, pos_weight: Optional[Tensor]):
    """x as (rows, K) and pos_weight as (K,), where K spans the trailing dims
    over which pos_weight varies (cyce's kernel takes it along its last axis);
    x unchanged without pos_weight."""
    if pos_weight is None:
        return x, None
    shape = (1,) * (x.ndim - pos_weight.ndim) + tuple(pos_weight.shape)
    varying = [d for d, n in enumerate(shape) if n != 1]
    first = varying[0] if varying else x.ndim - 1
    span = tuple(x.shape[first:])
    rows_pos_weight = pos_weight.detach().reshape(shape[first:]).expand(span).reshape(-1)
    return x.reshape(-1, math.prod(span)), rows_pos_weight


def _check_broadcast(name: str, t: Optional[Tensor], x: Tensor):
    """t broadcasts to x's shape (the loss keeps x's shape)."""
    if t is None:
        return
    try:
        shape = torch.broadcast_shapes(t.shape, x.shape)
    except RuntimeError as error:
        raise RuntimeError(f"{name} of shape {list(t.shape)} does not broadcast to the input's "
                           f"shape {list(x.shape)}: {error}") from None
    if shape != x.shape:
        raise RuntimeError(f"{name} of shape {list(t.shape)} would broadcast the input "
                           f"{list(x.shape)} to {list(shape)}")


def binary_cross_entropy(
    input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
    size_average: Optional[bool] = None, reduce: Optional[bool] = None,
    reduction: str = "mean",
) -> Tensor:
    """torch.nn.functional.binary_cross_entropy (on probabilities), computed
    by cyce on the CPU: ``l = -w (y log p + (1 - y) log(1 - p))`` with each log
    clamped at -100, as torch does.  ``input`` and ``target`` must be in [0, 1]
    (RuntimeError otherwise, as torch)."""
    reduction = _reduction(size_average, reduce, reduction)
    if not (isinstance(input, Tensor) and isinstance(target, Tensor) and _runs_on_cyce(input)):
        return F.binary_cross_entropy(input, target, weight, reduction=reduction)
    if target.shape != input.shape:
        raise ValueError(
            f"Using a target size ({target.shape}) that is different to the input size "
            f"({input.shape}) is deprecated. Please ensure they have the same size.")
    if target.dtype != input.dtype:
        raise RuntimeError(f"Found dtype {target.dtype} but expected {input.dtype}")
    _check_broadcast("weight", weight, input)
    x = _at_least_1d(input.contiguous())
    w = None if weight is None else weight.detach()
    loss, _ = torch.ops.cyce.binary_ce(x, target.detach().reshape(x.shape), w, reduction,
                                       _wants_grad(input))
    return loss.reshape(input.shape) if reduction == "none" else loss


def _at_least_1d(x: Tensor) -> Tensor:
    return x.reshape(1) if x.ndim == 0 else x


# ---------------------------------------------------------------------------
# Fused linear + cross entropy
# ---------------------------------------------------------------------------

@torch.library.custom_op("cyce::linear_cross_entropy", mutates_args=())
def _linear_ce_op(
    input: Tensor, linear_weight: Tensor, target: Tensor, linear_bias: Optional[Tensor],
    weight: Optional[Tensor], sample_weight: Optional[Tensor], ignore_index: int,
    label_smoothing: float, z_loss: float, temperature: float, logit_softcap: float,
    reduction: str, want_grad: bool, want_input_grad: bool, want_weight_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """cyce.linear_softmax_ce of (R, H) input, (V, H) weight and (R,) int64
    class indices: (loss, grad_input, grad_weight, grad_bias), the gradients
    empty tensors when want_grad is False (grad_bias also without a bias,
    grad_input or grad_weight where want_input_grad or want_weight_grad is
    False: their GEMM is skipped); logit_softcap 0.0 means none.
    float16 and bfloat16 are computed on float32 copies of input, weight and
    bias (the GEMMs are SciPy's BLAS, which has no half types)."""
    half = input.dtype in (torch.float16, torch.bfloat16)

    def array(t):
        if t is None:
            return None
        t = t.detach()
        return (t.float() if half else t).contiguous().numpy()

    result = _linear._linear_softmax_ce(
        array(input), array(linear_weight), target.detach().numpy(),
        linear_bias=array(linear_bias), weight=_optional_array(weight),
        sample_weight=_optional_array(sample_weight), ignore_index=ignore_index,
        reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss,
        temperature=temperature, logit_softcap=_softcap_arg(logit_softcap),
        return_grad=want_grad, chunk_rows=None, num_threads=_blas_threads(),
        finite_sample_weight=False,  # (only the backward of "none" passes sample_weight)
        hidden_grad=want_input_grad, weight_grad=want_weight_grad)
    if not want_grad:
        empty = input.new_empty(0)
        return _loss_tensor(result, input.dtype), empty, empty.clone(), empty.clone()
    loss, grad_input, grad_weight, grad_bias = result

    def tensor(a):
        return input.new_empty(0) if a is None else torch.from_numpy(a).to(input.dtype)

    return (_loss_tensor(loss, input.dtype), tensor(grad_input), tensor(grad_weight),
            tensor(grad_bias))


@_linear_ce_op.register_fake
def _(input, linear_weight, target, linear_bias, weight, sample_weight, ignore_index,
      label_smoothing, z_loss, temperature, logit_softcap, reduction, want_grad, want_input_grad,
      want_weight_grad):
    loss = input.new_empty(input.shape[:1] if reduction == "none" else ())

    def grad_like(t, wanted):
        if not (want_grad and wanted and t is not None):
            return input.new_empty(0)
        return torch.empty_like(t, memory_format=torch.contiguous_format)

    return (loss, grad_like(input, want_input_grad), grad_like(linear_weight, want_weight_grad),
            grad_like(linear_bias, True))


def _blas_threads() -> Optional[int]:
    """torch's thread count for cyce and the BLAS, where threadpoolctl can
    bound the BLAS (else both keep their defaults)."""
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return None
    return torch.get_num_threads()


def _save_linear_inputs(ctx, inputs, output):
    """Saves, for "mean" and "sum", the forward's gradients (the backward
    scales them); for "none", the inputs, for a backward that recomputes the
    gradients with grad_output as the rows' weights (a per-row grad_output
    cannot scale a weight gradient summed over rows)."""
    (x, w, target, bias, weight, sample_weight, ignore_index, smoothing, z_loss, temperature,
     softcap, reduction, want_grad, _, _) = inputs
    ctx.reduction, ctx.want_grad = reduction, want_grad
    ctx.options = (ignore_index, smoothing, z_loss, temperature, softcap)
    ctx.has_bias = bias is not None
    ctx.set_materialize_grads(False)
    if reduction == "none":
        ctx.save_for_backward(x, w, target, bias, weight, sample_weight)
    else:
        _, grad_x, grad_w, grad_b = output
        ctx.save_for_backward(grad_x, grad_w, grad_b)
    ctx.mark_non_differentiable(*output[1:])


def _linear_gradient(ctx, grad_loss, *unused):
    nones = (None,) * 11  # (the op's inputs after linear_bias)
    needs = ctx.needs_input_grad
    wanted = (needs[0], needs[1], ctx.has_bias and needs[3])
    if grad_loss is None:
        return (None,) * 4 + nones
    if ctx.reduction == "none":
        x, w, target, bias, weight, sample_weight = ctx.saved_tensors
        rows_weight = grad_loss.detach().reshape(-1)
        if sample_weight is not None:
            rows_weight = rows_weight * sample_weight
        _, *grads = torch.ops.cyce.linear_cross_entropy(
            x.detach(), w.detach(), target, None if bias is None else bias.detach(), weight,
            rows_weight.to(torch.float64), *ctx.options, "sum", True, wanted[0], wanted[1])
    else:
        if not ctx.want_grad:
            raise RuntimeError("cyce: this loss was computed without its gradient (want_grad=False)")
        with torch.no_grad():
            grads = [_scale(g, grad_loss, 0) if want else None
                     for g, want in zip(ctx.saved_tensors, wanted)]
    grads = [g if want else None for g, want in zip(grads, wanted)]
    if torch.is_grad_enabled() and not _is_traced(grad_loss):
        grads = [None if g is None else
                 torch._C._functions.DelayedError(DOUBLE_BACKWARD, 1)(g.detach().requires_grad_())
                 for g in grads]
    grad_x, grad_w, grad_b = grads
    return (grad_x, grad_w, None, grad_b) + nones


_linear_ce_op.register_autograd(_linear_gradient, setup_context=_save_linear_inputs)


def linear_cross_entropy(
    input: Tensor, linear_weight: Tensor, target: Tensor, *,
    linear_bias: Optional[Tensor] = None, weight: Optional[Tensor] = None,
    reduction: str = "mean", ignore_index: Optional[int] = None, label_smoothing: float = 0.0,
    options=None, z_loss: float = 0.0, temperature: float = 1.0,
    logit_softcap: Optional[float] = None,
) -> Tensor:
    """torch.nn.functional.linear_cross_entropy, computed by cyce on the CPU:
    ``cross_entropy(input @ linear_weight.T + linear_bias, target, ...)``
    without the (N, V) logits, by cyce.linear_softmax_ce (rows in chunks
    through GEMM and cyce's in-place softmax-CE kernel).

    ``input`` is ``(N, H)`` or unbatched ``(H,)``, ``linear_weight`` ``(V, H)``,
    ``linear_bias`` ``(V,)``, ``target`` int64 class indices ``(N,)`` (or
    ``()``).  Differentiable with respect to input, linear_weight and
    linear_bias; for "mean" and "sum" the gradients are computed in the
    forward and scaled in the backward, for "none" the backward recomputes
    them weighted by grad_output (one more logits GEMM).  ``options``
    (torch's chunking options) is accepted and ignored: cyce always chunks.
    cyce's extras, keyword-only: ``z_loss``, and ``temperature`` and
    ``logit_softcap``, which map the logits as in ``cross_entropy``.  float16
    and bfloat16 are computed on float32 copies of input, weight and bias
    (results in the input's dtype).  Other inputs (another device,
    probability targets, more than two dims) go to torch's function (z_loss
    then raises NotImplementedError; with a temperature or softcap, torch's
    unchunked path, ``F.cross_entropy(map(F.linear(...)))``).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    temperature, softcap = check.logit_map(temperature, logit_softcap)
    tensors = (input, linear_weight, target)
    if not (all(isinstance(t, Tensor) for t in tensors) and _runs_on_cyce(input)
            and input.ndim in (1, 2) and not target.is_floating_point()):
        return _torch_linear_cross_entropy(input, linear_weight, target, linear_bias, weight,
                                           reduction, ignore_index, label_smoothing, options,
                                           z_loss, temperature, softcap)
    ignore_index = -100 if ignore_index is None else ignore_index
    if linear_weight.ndim != 2 or linear_weight.shape[1] != input.shape[-1]:
        raise RuntimeError(f"linear_cross_entropy: input of shape {list(input.shape)} and "
                           f"linear_weight of shape {list(linear_weight.shape)} cannot be "
                           f"multiplied (linear_weight must be (V, {input.shape[-1]}))")
    for name, t in (("linear_weight", linear_weight), ("linear_bias", linear_bias)):
        if t is not None and t.dtype != input.dtype:
            raise RuntimeError(f"expected {name} to have the input's dtype {input.dtype}, got "
                               f"{t.dtype}")
    n_classes = linear_weight.shape[0]
    if linear_bias is not None and tuple(linear_bias.shape) != (n_classes,):
        raise RuntimeError(f"linear_bias must have shape [{n_classes}], got "
                           f"{list(linear_bias.shape)}")
    _check_class_weight(weight, n_classes, input)
    if not 0.0 <= label_smoothing <= 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    logits_shape = (n_classes,) if input.ndim == 1 else (input.shape[0], n_classes)
    batch_shape = _check_cross_entropy_target(input.new_empty(()).expand(logits_shape), target,
                                              False)
    x = input.reshape(-1, input.shape[-1])
    want_grad = any(_wants_grad(t) for t in (input, linear_weight, linear_bias) if t is not None)
    loss, *_ = torch.ops.cyce.linear_cross_entropy(
        x, linear_weight, target.reshape(-1).to(torch.int64), linear_bias, weight, None,
        int(ignore_index), float(label_smoothing), float(z_loss), temperature, softcap, reduction,
        want_grad and reduction != "none", _wants_grad(input), _wants_grad(linear_weight))
    return loss.reshape(batch_shape) if reduction == "none" else loss


def _torch_linear_cross_entropy(input, linear_weight, target, linear_bias, weight, reduction,
                                ignore_index, label_smoothing, options, z_loss, temperature,
                                softcap):
    """Inputs cyce does not compute: F.linear_cross_entropy, given the
    caller's ignore_index (its None is not -100 for probability targets).
    With the logit map, torch's unchunked path with the map between F.linear
    and F.cross_entropy (the chunked one has no place for it)."""
    if z_loss != 0.0:
        raise NotImplementedError("cyce.torch.linear_cross_entropy: z_loss needs CPU float "
                                  "input of one or two dims and class-index targets")
    plain = temperature == 1.0 and softcap == 0.0
    if plain or not all(isinstance(t, Tensor) for t in (input, linear_weight, target)) \
            or input.ndim not in (1, 2) or linear_weight.ndim < 2:
        # (without the map, or shapes torch refuses: its own result or error)
        return F.linear_cross_entropy(input, linear_weight, target, linear_bias=linear_bias,
                                      weight=weight, reduction=reduction,
                                      ignore_index=ignore_index, label_smoothing=label_smoothing,
                                      options=options)
    # (V, d1, ..., H) weights give (N, V, d1, ...) logits, as in torch's reference path
    n_classes, *out_features = linear_weight.shape[:-1]
    logits = F.linear(input, linear_weight.reshape(-1, linear_weight.shape[-1]),
                      None if linear_bias is None else linear_bias.reshape(-1))
    logits = logits.reshape(*input.shape[:-1], n_classes, *out_features)
    if ignore_index is not None and target.shape == logits.shape:
        raise RuntimeError("ignore_index cannot be specified when target contains probabilities")
    return F.cross_entropy(_mapped_logits(logits, temperature, softcap), target, weight=weight,
                           reduction=reduction,
                           ignore_index=-100 if ignore_index is None else ignore_index,
                           label_smoothing=label_smoothing)


# ---------------------------------------------------------------------------
# Modules: torch's own, with forward computed by cyce
# ---------------------------------------------------------------------------

class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """torch.nn.CrossEntropyLoss computed by cyce.torch.cross_entropy (same
    constructor arguments and `weight` buffer; the extras keyword-only)."""

    def __init__(self, weight: Optional[Tensor] = None, size_average=None, ignore_index: int = -100,
                 reduce=None, reduction: str = "mean", label_smoothing: float = 0.0, *,
                 z_loss: float = 0.0, temperature: float = 1.0,
                 logit_softcap: Optional[float] = None, inplace_backward: bool = False) -> None:
        super().__init__(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
        self.z_loss = z_loss
        self.temperature = temperature
        self.logit_softcap = logit_softcap
        self.inplace_backward = inplace_backward

    def forward(self, input: Tensor, target: Tensor, *, sample_weight: Optional[Tensor] = None) -> Tensor:
        return cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, label_smoothing=self.label_smoothing,
                             z_loss=self.z_loss, temperature=self.temperature,
                             logit_softcap=self.logit_softcap, sample_weight=sample_weight,
                             inplace_backward=self.inplace_backward)


class BCEWithLogitsLoss(torch.nn.BCEWithLogitsLoss):
    """torch.nn.BCEWithLogitsLoss computed by cyce.torch.binary_cross_entropy_with_logits
    (same constructor arguments, `weight` and `pos_weight` buffers)."""

    def __init__(self, weight: Optional[Tensor] = None, size_average=None, reduce=None,
                 reduction: str = "mean", pos_weight: Optional[Tensor] = None, *,
                 inplace_backward: bool = False) -> None:
        super().__init__(weight, size_average, reduce, reduction, pos_weight)
        self.inplace_backward = inplace_backward

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy_with_logits(
            input, target, self.weight, reduction=self.reduction, pos_weight=self.pos_weight,
            inplace_backward=self.inplace_backward)


class BCELoss(torch.nn.BCELoss):
    """torch.nn.BCELoss computed by cyce.torch.binary_cross_entropy (same
    constructor arguments and `weight` buffer)."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)
