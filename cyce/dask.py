"""cyce over dask arrays: the same losses on data larger than memory, or
spread over a cluster (``pip install cyce[dask]``).

Each function takes what its NumPy namesake takes, as ``dask.array`` arrays
(NumPy arrays are wrapped with ``da.from_array``), and builds a lazy graph in
which every chunk goes through the NumPy function once:

- **Chunks.** Rows may be chunked any way.  For the softmax family
  (``softmax_ce``, ``categorical_ce``, ``logsumexp``, ``softmax``,
  ``log_softmax``) the class axis (the last) must be one chunk: a ValueError
  says how to rechunk, since a silent rechunk of the logits could build chunks
  too large for a worker.  ``sigmoid_bce`` and ``binary_ce`` are elementwise
  and take any chunking.  The other inputs (labels, targets, sample weights, a
  broadcast weight) are rechunked to the logits' chunks when theirs differ:
  no chunk larger than the logits' own.
- **Reductions.** ``"mean"`` and ``"sum"`` return a lazy 0-d dask array of the
  input's dtype; ``.compute()`` gives the NumPy scalar the NumPy function
  returns.  A mean is the sum of the chunks' loss sums over the sum of their
  denominators (never a mean of chunk means), both added in float64 in a tree
  of fixed shape (``SPLIT_EVERY`` partial sums per node), so the result has
  the same bits on any scheduler and any number of workers for a given
  chunking.  It agrees with the in-memory call to rounding: a chunk's loss sum
  comes back from the NumPy function in the input's dtype, so a float32 result
  can differ from the in-memory one in its last bits.  ``"none"`` returns a
  lazy array of per-row (or, for the binary losses, per-element) losses,
  chunked like the rows.
- **Gradients.** ``return_grad=True`` returns ``(loss, grad)``: ``grad`` is lazy,
  chunked like the logits, and scaled by the global denominator, which the
  graph computes first from the labels and weights alone.  Compute the two
  together (``dask.compute(loss, grad)``, ``persist``, or ``da.store`` with the
  loss) to read the logits once.  ``inplace=True``, ``grad_out=`` and ``out=``
  are refused: a dask result is a new lazy array (``da.store`` writes it where
  you want).
- **Threads.** Each chunk's call runs ``num_threads`` OpenMP threads, default
  1: the kernels release the GIL, so a worker (or the threaded scheduler) with
  k threads already runs k chunks on k cores, and more would oversubscribe.
- **Errors.** Shapes, dtypes, chunking, every option, and the small NumPy
  arrays (class ``weight``, ``pos_weight``, NumPy labels and sample weights)
  are checked when the graph is built.  The values of chunked arrays (a label
  out of range, a probability outside [0, 1], a non-finite sample weight) are
  found when a chunk is computed; the error is the NumPy function's, raised
  from ``compute()``, with the position translated to the whole array.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph
from dask.layers import ArraySliceDep  # what map_blocks' block_info is made of

from . import _binary
from . import _reduction as reduce
from . import _softmax
from . import _validation as check

__all__ = ["softmax_ce", "categorical_ce", "sigmoid_bce", "binary_ce",
           "logsumexp", "softmax", "log_softmax", "SPLIT_EVERY"]

# Partial sums added per node of the reduction tree: fixed here, not taken
# from dask's configuration, so that the tree, and the bits, never change.
SPLIT_EVERY = 16

# The arguments whose positions an error message gives in chunk coordinates.
_CHUNKED_NAMES = ("logits", "probs", "labels", "targets", "sample_weight", "weight")
_POSITION = re.compile(r"^(\w+)\[(-?\d+(?:, -?\d+)*)\]")

_Array = Any  # a dask array, or anything np.asarray takes


# ---------------------------------------------------------------------------
# Inputs: wrapped, checked against the logits, chunked like them
# ---------------------------------------------------------------------------

def _refuse_buffers(**given):
    for name, value in given.items():
        if value is not None and value is not False:
            raise ValueError(
                f"{name} is not supported over dask arrays: the result is a new lazy dask "
                f"array; write it where you want with da.store(result, target) or "
                f"result.to_zarr(...)")


def _metadata_probe(a):
    """A zero-stride NumPy view with a's shape and dtype: lets cyce's own
    checks read the metadata of a dask array without touching its data."""
    return np.broadcast_to(np.zeros((), dtype=a.dtype), a.shape)


def _logits(name, x, whole_rows=True):
    """x as a dask array of float32/float64, checked by cyce's own rules; with
    whole_rows, its class axis must be one chunk."""
    if not isinstance(x, da.Array):
        x = check.float_array(name, x)
        return da.from_array(x, chunks=("auto",) * (x.ndim - 1) + (-1,))
    check.float_array(name, _metadata_probe(x))
    if whole_rows and len(x.chunks[-1]) > 1:
        raise ValueError(
            f"{name} has its class axis (the last, {x.shape[-1]} classes) in "
            f"{len(x.chunks[-1])} chunks {x.chunks[-1]}; each row must be in one chunk. "
            f"Rechunk it yourself, knowing what a chunk of whole rows costs in memory: "
            f"{name}.rechunk({{{x.ndim - 1}: -1}}), with fewer rows per chunk if needed "
            f"({name}.rechunk({{0: rows, {x.ndim - 1}: -1}}))")
    return x


def _chunked_like(a, chunks):
    """a as a dask array with these chunks: NumPy arrays are wrapped, dask
    arrays rechunked only if they differ (the caller checked the shape)."""
    if not isinstance(a, da.Array):
        return da.from_array(np.asarray(a), chunks=chunks)
    return a.rechunk(chunks)


def _per_row(a, x):
    """A per-row array of shape x.shape[:-1], chunked like x's rows."""
    return _chunked_like(a, x.chunks[:-1])


def _shape_of(name, a, shape, what):
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(a.shape)}, expected {tuple(shape)} ({what})")


def _dtype_probe(a):
    """A one-element NumPy array of a's dtype (to check the dtype the way
    the NumPy function does), or None."""
    if a is None:
        return None
    return np.ones(1, dtype=a.dtype if isinstance(a, da.Array) else np.asarray(a).dtype)


def _labels(labels, x, ignore_index):
    """(is_soft, labels as a dask array chunked like x's rows, or like x for
    probabilities).  NumPy integer labels are checked here in full."""
    y = labels if isinstance(labels, da.Array) else np.asarray(labels)
    batch_shape = x.shape[:-1]
    if y.dtype.kind == "f":
        _shape_of("labels", y, x.shape, "probabilities, the logits' shape")
        return True, _chunked_like(y, x.chunks)
    if y.dtype.kind not in "iu":
        raise TypeError(
            f"labels must be integer class indices of shape {batch_shape} or float "
            f"probabilities of shape {x.shape}, got an array of dtype {y.dtype}")
    _shape_of("labels", y, batch_shape, "integer class indices, the logits' shape without the last axis")
    if isinstance(y, np.ndarray):
        check.class_labels(y, batch_shape, x.shape[-1], ignore_index)
    return False, _per_row(y, x)


def _sample_weight(sample_weight, x):
    if sample_weight is None:
        return None
    if not isinstance(sample_weight, da.Array):
        sample_weight = check.weights("sample_weight", sample_weight, x.shape[:-1], "one weight per sample")
    _shape_of("sample_weight", sample_weight, x.shape[:-1], "one weight per sample")
    return _per_row(sample_weight, x)


def _broadcast_chunked(name, w, x):
    """A weight that broadcasts to x's shape, as a dask array of x's shape
    and chunks (each chunk a broadcast view, never a copy)."""
    if w is None:
        return None
    w = w if isinstance(w, da.Array) else np.asarray(w)
    if w.ndim > x.ndim or any(s not in (1, n) for s, n in zip(w.shape[::-1], x.shape[::-1])):
        raise ValueError(f"{name} of shape {tuple(w.shape)} does not broadcast to {x.shape}")
    w = w.reshape((1,) * (x.ndim - w.ndim) + tuple(w.shape))
    own_chunks = tuple(c if s == n else (1,) for s, n, c in zip(w.shape, x.shape, x.chunks))
    return da.broadcast_to(_chunked_like(w, own_chunks), x.shape, chunks=x.chunks)


# ---------------------------------------------------------------------------
# What runs on the workers: one NumPy call per chunk
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def _positions_in_whole_array(location):
    """Re-raise a chunk's IndexError/ValueError with the position it names
    (``labels[3]``) moved from the chunk to the whole array (``labels[1003]``);
    location is the chunk's slices of the logits."""
    try:
        yield
    except (IndexError, ValueError) as err:
        message = str(err)
        found = _POSITION.match(message)
        if found and found.group(1) in _CHUNKED_NAMES:
            local = [int(i) for i in found.group(2).split(", ")]
            whole = ", ".join(str(span.start + i) for span, i in zip(location, local))
            message = f"{found.group(1)}[{whole}]{message[found.end():]}"
        else:
            message += f" (in the chunk at {list(location)})"
        raise type(err)(message) from None


def _chunk_locations(chunks):
    """A blockwise argument that hands each chunk's task its own slices of
    the whole array (one slice per axis)."""
    return ArraySliceDep(chunks)


def _partial(numerator, denominator, ndim):
    """A chunk's float64 (loss sum, denominator) as a block of the partial-sums
    array: shape (1, ..., 1, 2)."""
    return np.array([float(numerator), float(denominator)]).reshape((1,) * ndim + (2,))


def _scale_gradient(grad, denominator, kept):
    """grad (of the summed loss) times 1/denominator, in place.  When the
    denominator is 0 the in-memory call gives nan on the rows that count and
    leaves ignored rows at 0; kept (None: every row) says which those are."""
    scale = reduce.gradient_scale("mean", float(denominator))
    if math.isfinite(scale) or kept is None:
        grad *= scale
    else:
        grad[kept] *= scale


def _chunk_denominator(labels, sample_weight, batch_shape, n_classes, ignore_index, class_weight):
    """A chunk's part of the mean's denominator, from labels and weights alone
    (labels None: probability targets, where it is the rows' count), with
    the same checks as the NumPy function."""
    y = None if labels is None else check.class_labels(labels, batch_shape, n_classes, ignore_index)
    row_weight = None
    if sample_weight is not None:
        row_weight = check.weights("sample_weight", sample_weight, batch_shape,
                                   "one weight per sample").reshape(-1)
    return reduce.class_mean_denominator(labels is None, y, ignore_index, math.prod(batch_shape),
                                         class_weight, row_weight)


def _rows_block(logits, y, row_weight, location, denominator, *, function, soft, reduction,
                options):
    """One chunk of the softmax family: (its float64 (loss sum, denominator),
    or its per-row losses for "none"; its gradient or None)."""
    with _positions_in_whole_array(location):
        chunk_denominator = 0.0
        if reduction == "mean":
            chunk_denominator = _chunk_denominator(None if soft else y, row_weight, logits.shape[:-1],
                                                   logits.shape[-1], options["ignore_index"], options["weight"])
        result = function(logits, y, reduction="none" if reduction == "none" else "sum",
                          **options, **({} if row_weight is None else {"sample_weight": row_weight}))
    loss, grad = result if options["return_grad"] else (result, None)
    if reduction != "none":
        loss = _partial(loss, chunk_denominator, logits.ndim - 1)
    if grad is not None and reduction == "mean":
        _scale_gradient(grad, denominator, None if soft else y != options["ignore_index"])
    return loss, grad


def _denominator_block(labels, sample_weight, location, *, n_classes, ignore_index, class_weight):
    """One chunk's part of the mean's denominator, as a (1, ..., 1) block."""
    batch_shape = (labels if labels is not None else sample_weight).shape
    with _positions_in_whole_array(location):
        value = _chunk_denominator(labels, sample_weight, batch_shape, n_classes, ignore_index,
                                   class_weight)
    return np.full((1,) * len(batch_shape), value)


def _elements_block(values, targets, weight, location, *, function, reduction, scale, pos_weight,
                    options):
    """One chunk of sigmoid_bce / binary_ce, as _rows_block (the denominator
    is the elements' or rows' count, known when building)."""
    if pos_weight is not None:  # this chunk's classes
        options = dict(options, pos_weight=pos_weight[location[-1]])
    with _positions_in_whole_array(location):
        result = function(values, targets, weight=weight,
                          reduction="none" if reduction == "none" else "sum", **options)
    loss, grad = result if options["return_grad"] else (result, None)
    if reduction != "none":
        loss = _partial(loss, 0.0, values.ndim)
    if grad is not None and scale != 1.0:
        grad *= scale
    return loss, grad


def _loss_value(sums, *, reduction, loss_dtype, denominator):
    """The loss from the float64 (loss sum, denominator) of the whole array,
    with the NumPy function's rules (0/0 is nan, a float32 loss beyond its
    range is inf); denominator, when not None, replaces the summed one."""
    loss_sum, summed_denominator = sums
    if denominator is None:
        denominator = summed_denominator
    return reduce.total(float(loss_sum), reduction, float(denominator), loss_dtype)


# ---------------------------------------------------------------------------
# Graph assembly
# ---------------------------------------------------------------------------

def _threads(num_threads):
    n = check.num_threads(num_threads)
    return 1 if n is None else n


def _pick(blocks, *, item, depth):
    """Item `item` of a chunk's (loss, grad) tuple; blockwise hands the chunk
    inside `depth` nested lists, one per axis the loss drops (each of those
    axes is one chunk)."""
    for _ in range(depth):
        (blocks,) = blocks
    return blocks[item]


def _split(pairs, x, reduction, loss_dims, return_grad, denominator=None):
    """(the loss, grad or None) from an array whose chunks are (loss, grad)
    tuples: each chunk is computed once for both.  For "none" the loss is
    the per-row (per-element) array, else _total_loss of the chunks."""
    loss_dtype = check.compute_dtype(x.dtype)   # float32 for float16 and bfloat16
    if reduction == "none":
        loss = da.blockwise(_pick, tuple(range(loss_dims)), pairs, tuple(range(x.ndim)), item=0,
                            depth=x.ndim - loss_dims, concatenate=False, dtype=loss_dtype,
                            meta=np.empty((0,) * loss_dims, dtype=loss_dtype))
    else:
        loss = _total_loss(pairs, reduction, loss_dtype, denominator)
    grad = None
    if return_grad:
        grad = pairs.map_blocks(_pick, item=1, depth=0, dtype=x.dtype,
                                meta=np.empty((0,) * x.ndim, dtype=x.dtype))
    return loss, grad


def _add_partials(parts, from_chunks):
    """A node of the reduction tree: its children's float64 (loss sum,
    denominator) added in their order (from_chunks: the children are the
    chunks' (loss, grad) tuples)."""
    total = np.zeros(2)
    for part in parts:
        total += part[0].reshape(2) if from_chunks else part
    return total


def _total_loss(pairs, reduction, dtype, denominator):
    """A 0-d dask array of dtype: the loss from the chunks' (loss sum,
    denominator), added in a tree of SPLIT_EVERY children per node over the
    chunks in C order (denominator, when given, is known when building).
    The tree is written out rather than built with da.sum, whose first step
    dask fuses into the chunks' tasks, adding an alias task per chunk that
    the distributed scheduler runs like any other."""
    token = tokenize(pairs.name, reduction, denominator)
    name, node = f"cyce-loss-{token}", f"cyce-partial-sums-{token}"
    children, graph, level = list(flatten(pairs.__dask_keys__())), {}, 0
    while level == 0 or len(children) > 1:
        groups = [children[i:i + SPLIT_EVERY] for i in range(0, len(children), SPLIT_EVERY)]
        children = [(node, level, i) for i in range(len(groups))]
        graph.update((key, (_add_partials, group, level == 0)) for key, group in zip(children, groups))
        level += 1
    loss_value = functools.partial(_loss_value, reduction=reduction, loss_dtype=np.dtype(dtype),
                                   denominator=denominator)
    graph[(name,)] = (loss_value, children[0])
    layers = HighLevelGraph.from_collections(name, graph, dependencies=[pairs])
    return da.Array(layers, name, chunks=(), dtype=dtype, meta=np.empty((), dtype=dtype))


def _argument(a, index):
    """blockwise's (argument, index) pair: a dask array's index, or None for
    a value handed to every chunk as it is."""
    return (a, index) if isinstance(a, da.Array) else (a, None)


def _result(loss, grad, return_grad):
    return (loss, grad) if return_grad else loss


def _pairs_meta(x):
    return np.empty((0,) * x.ndim, dtype=x.dtype)


def _softmax_family(function, name, logits, labels, *, weight, sample_weight, ignore_index,
                    reduction, return_grad, num_threads, extra):
    """softmax_ce and categorical_ce over dask arrays (see the module's docstring)."""
    x = _logits(name, logits)
    one_sample = x.ndim == 1
    if one_sample:  # a (C,) sample is a batch of one row, and its results are unwrapped
        x = x[None]
        labels = labels[None] if isinstance(labels, da.Array) else np.asarray(labels)[None]
    ignore_index = check.integer("ignore_index", ignore_index)
    return_grad = check.flag("return_grad", return_grad)
    threads = _threads(num_threads)
    n_classes = x.shape[-1]
    soft, y = _labels(labels, x, ignore_index)
    sw = _sample_weight(sample_weight, x)
    # Every option and the class weights are checked by the NumPy function
    # itself, on one row of zeros: the same rules and messages.
    probe = dict(extra, weight=weight, ignore_index=ignore_index, return_grad=return_grad)
    if sample_weight is not None:
        probe["sample_weight"] = _dtype_probe(sample_weight)
    function(np.zeros((1, n_classes), x.dtype), np.zeros((1, n_classes) if soft else 1, y.dtype),
             reduction=reduction, **probe)
    class_weight = None if weight is None else check.weights("weight", weight, (n_classes,), "one weight per class")
    options = dict(extra, weight=class_weight, ignore_index=ignore_index, return_grad=return_grad,
                   num_threads=threads)

    # The gradient's scale needs the whole denominator before any chunk's
    # gradient: a first pass over the labels and weights alone.
    index, batch_index = tuple(range(x.ndim)), tuple(range(x.ndim - 1))
    denominator = None
    if return_grad and reduction == "mean" and soft and sw is None:
        denominator = float(math.prod(x.shape[:-1]))
    elif return_grad and reduction == "mean":
        partials = da.blockwise(
            _denominator_block, batch_index, *_argument(None if soft else y, batch_index),
            *_argument(sw, batch_index), _chunk_locations(x.chunks[:-1]), batch_index,
            n_classes=n_classes, ignore_index=ignore_index, class_weight=class_weight,
            adjust_chunks=dict.fromkeys(batch_index, 1), dtype=np.float64, align_arrays=False,
            meta=np.empty((0,) * (x.ndim - 1)))
        denominator = da.sum(partials, split_every=SPLIT_EVERY, dtype=np.float64)
    pairs = da.blockwise(_rows_block, index, x, index, y, index if soft else batch_index,
                         *_argument(sw, batch_index), _chunk_locations(x.chunks), index,
                         *_argument(denominator, ()), function=function, soft=soft,
                         reduction=reduction, options=options, dtype=x.dtype, meta=_pairs_meta(x),
                         align_arrays=False)
    loss, grad = _split(pairs, x, reduction, x.ndim - 1, return_grad)
    if one_sample:
        loss = loss if reduction != "none" else loss[0]
        grad = None if grad is None else grad[0]
    return _result(loss, grad, return_grad)


def _elementwise(function, name, values, targets, *, weight, pos_weight, reduction,
                 return_grad, num_threads):
    """sigmoid_bce and binary_ce over dask arrays (see the module's docstring)."""
    x = _logits(name, values, whole_rows=False)
    return_grad = check.flag("return_grad", return_grad)
    threads = _threads(num_threads)
    n_classes = x.shape[-1]
    t = targets if isinstance(targets, da.Array) else np.asarray(targets)
    _shape_of("targets", t, x.shape, f"the shape of {name}")
    probe = dict(weight=_dtype_probe(weight), return_grad=return_grad)
    if pos_weight is not None:
        probe["pos_weight"] = pos_weight
    function(np.zeros((1, n_classes), x.dtype), np.zeros((1, n_classes), t.dtype),
             reduction=reduction, **probe)
    t = _chunked_like(t, x.chunks)
    w = _broadcast_chunked("weight", weight, x)
    pw = None if pos_weight is None else np.broadcast_to(np.asarray(pos_weight), (n_classes,))

    denominator = {"mean": x.size, "batchmean": x.shape[0]}.get(reduction, 1)
    scale = reduce.gradient_scale(reduction, float(denominator))
    index = tuple(range(x.ndim))
    pairs = da.blockwise(_elements_block, index, x, index, t, index, *_argument(w, index),
                         _chunk_locations(x.chunks), index, function=function, reduction=reduction,
                         scale=scale, pos_weight=pw,
                         options=dict(return_grad=return_grad, num_threads=threads),
                         dtype=x.dtype, meta=_pairs_meta(x), align_arrays=False)
    loss, grad = _split(pairs, x, reduction, x.ndim, return_grad, float(denominator))
    return _result(loss, grad, return_grad)


# ---------------------------------------------------------------------------
# The public functions
# ---------------------------------------------------------------------------

def softmax_ce(logits: _Array, labels: _Array, *, weight: _Array | None = None,
               sample_weight: _Array | None = None, ignore_index: int = -100,
               reduction: str = "mean", label_smoothing: float = 0.0, z_loss: float = 0.0,
               return_grad: bool = False, inplace: bool = False, grad_out: None = None,
               num_threads: int | None = None) -> Any:
    """``cyce.softmax_ce`` over dask arrays: the same formula and options.

    ``logits`` (..., C) with the class axis in one chunk; ``labels`` integer
    class indices (...) or probabilities (..., C); ``sample_weight`` (...), a
    dask or NumPy array; ``weight`` (C,) a NumPy array.  Returns a lazy 0-d
    array of the logits' dtype for ``"mean"`` / ``"sum"`` (the mean: the sum of
    the chunks' loss sums over the sum of their denominators ``s_i w[y_i]``),
    a lazy (...) array for ``"none"``; with ``return_grad=True``,
    ``(loss, grad)``, grad lazy and chunked like the logits.  ``inplace`` and
    ``grad_out`` are refused; ``num_threads`` per chunk defaults to 1.
    """
    _refuse_buffers(inplace=inplace, grad_out=grad_out)
    return _softmax_family(_softmax.softmax_ce, "logits", logits, labels, weight=weight,
                           sample_weight=sample_weight, ignore_index=ignore_index,
                           reduction=reduction, return_grad=return_grad, num_threads=num_threads,
                           extra=dict(label_smoothing=label_smoothing, z_loss=z_loss))


def categorical_ce(probs: _Array, labels: _Array, *, eps: float | None = None,
                   weight: _Array | None = None, ignore_index: int = -100,
                   reduction: str = "mean", return_grad: bool = False, inplace: bool = False,
                   grad_out: None = None, num_threads: int | None = None) -> Any:
    """``cyce.categorical_ce`` over dask arrays (probabilities (..., C), the
    class axis in one chunk); results as in ``softmax_ce``."""
    _refuse_buffers(inplace=inplace, grad_out=grad_out)
    return _softmax_family(_softmax.categorical_ce, "probs", probs, labels, weight=weight,
                           sample_weight=None, ignore_index=ignore_index, reduction=reduction,
                           return_grad=return_grad, num_threads=num_threads, extra=dict(eps=eps))


def sigmoid_bce(logits: _Array, targets: _Array, *, weight: _Array | None = None,
                pos_weight: _Array | None = None, reduction: str = "mean",
                return_grad: bool = False, inplace: bool = False, grad_out: None = None,
                num_threads: int | None = None) -> Any:
    """``cyce.sigmoid_bce`` over dask arrays, chunked any way (elementwise).

    ``targets`` has the logits' shape; ``weight`` broadcasts to it (a NumPy or
    dask array); ``pos_weight`` is a NumPy array broadcast over the last axis.
    ``"mean"`` divides by ``logits.size``, ``"batchmean"`` by
    ``logits.shape[0]``; ``"none"`` is lazy and chunked like the logits.
    """
    _refuse_buffers(inplace=inplace, grad_out=grad_out)
    return _elementwise(_binary.sigmoid_bce, "logits", logits, targets, weight=weight,
                        pos_weight=pos_weight, reduction=reduction, return_grad=return_grad,
                        num_threads=num_threads)


def binary_ce(probs: _Array, targets: _Array, *, weight: _Array | None = None,
              reduction: str = "mean", return_grad: bool = False, inplace: bool = False,
              grad_out: None = None, num_threads: int | None = None) -> Any:
    """``cyce.binary_ce`` over dask arrays; as ``sigmoid_bce``."""
    _refuse_buffers(inplace=inplace, grad_out=grad_out)
    return _elementwise(_binary.binary_ce, "probs", probs, targets, weight=weight, pos_weight=None,
                        reduction=reduction, return_grad=return_grad, num_threads=num_threads)


def _rowwise(function, x, drop_last, num_threads):
    a = _logits("x", x)
    ndim = a.ndim - 1 if drop_last else a.ndim
    # logsumexp of a half type is float32
    dtype = check.compute_dtype(a.dtype) if drop_last else a.dtype
    return a.map_blocks(function, drop_axis=[a.ndim - 1] if drop_last else [], dtype=dtype,
                        num_threads=_threads(num_threads), meta=np.empty((0,) * ndim, dtype=dtype))


def logsumexp(x: _Array, *, out: None = None, num_threads: int | None = None) -> Any:
    """``cyce.logsumexp`` over a dask array (the class axis in one chunk):
    a lazy array of shape ``x.shape[:-1]``, chunked like the rows."""
    _refuse_buffers(out=out)
    return _rowwise(_softmax.logsumexp, x, True, num_threads)


def log_softmax(x: _Array, *, out: None = None, num_threads: int | None = None) -> Any:
    """``cyce.log_softmax`` over a dask array: lazy, chunked like x."""
    _refuse_buffers(out=out)
    return _rowwise(_softmax.log_softmax, x, False, num_threads)


def softmax(x: _Array, *, out: None = None, num_threads: int | None = None) -> Any:
    """``cyce.softmax`` over a dask array: lazy, chunked like x."""
    _refuse_buffers(out=out)
    return _rowwise(_softmax.softmax, x, False, num_threads)
