"""The same bits every time: every public function, with its main options,
gives bitwise the same loss and gradient for 1, 2, 3, 4 and 7 threads and
across repeated calls, on both kernel builds.

The shapes divide evenly by none of those thread counts: 1009 rows of 37
classes (the rows split unevenly between threads), 3001 rows of 29 (short
rows: 47 tiles of 64 rows, the last one partial), 5 rows of 20011 classes
(long rows: the prefetching path, fewer rows than most thread counts ask
for), a 3-D batch, and for the binary family 41369 elements, which is 11
blocks of the kernel's 4096-element partial sums with a short last one.
Every shape but the 3-D one is above the size under which a call runs on
one thread whatever it asks (cyce._dispatch.SERIAL_BELOW).
"""

import numpy as np
import pytest

import cyce
from conftest import LEVELS, kernels_of_level

THREADS = (1, 2, 3, 4, 7)
# after a first call on one thread: every other count, then 1 and 7 again
SEQUENCE = THREADS[1:] + (1, 7)
DTYPES = (np.float32, np.float64)
ROW_SHAPES = ((1009, 37), (3001, 29), (5, 20011), (7, 11, 53))
BINARY_SHAPES = ((1009, 41), (41369,))


@pytest.fixture(params=LEVELS)
def build(request):
    """Every call runs on this kernel level (baseline, avx2 or avx512)."""
    with kernels_of_level(request.param):
        yield request.param


def results(value):
    """A call's result as a tuple of arrays (loss, and gradient if any)."""
    return tuple(np.asarray(v) for v in value) if isinstance(value, tuple) else (np.asarray(value),)


def assert_same_bits(call):
    """call(num_threads) gives the same bits for every thread count, and
    again on a repeated call."""
    first = results(call(1))
    for threads in SEQUENCE:
        again = results(call(threads))
        for a, b in zip(first, again):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert a.tobytes() == b.tobytes(), f"{threads} threads differ from 1"


def softmax_ce_case(rng, shape, dtype, option):
    n_classes, batch = shape[-1], shape[:-1]
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    labels = rng.integers(0, n_classes, batch)
    kwargs = {}
    if option == "weighted":
        labels.reshape(-1)[::5] = -100
        kwargs = dict(weight=rng.uniform(0.1, 2, n_classes), label_smoothing=0.1)
    elif option == "soft":
        t = rng.random(shape)
        labels = (t / t.sum(axis=-1, keepdims=True)).astype(dtype)
        kwargs = dict(sample_weight=rng.uniform(0.5, 2, batch), z_loss=1e-3, label_smoothing=0.05)
    return x, labels, kwargs


@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["logsumexp", "log_softmax", "softmax"])
def test_softmax_functions(build, rng, shape, dtype, name):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    x.reshape(-1)[::97] = -np.inf  # masked entries on the way
    fn = getattr(cyce, name)
    assert_same_bits(lambda threads: fn(x, num_threads=threads))
    out = np.empty(x.shape[:-1] if name == "logsumexp" else x.shape, dtype)
    assert_same_bits(lambda threads: fn(x, out=out, num_threads=threads).copy())
    if name != "logsumexp":
        def in_place(threads):
            buffer = x.copy()
            return fn(buffer, out=buffer, num_threads=threads)
        assert_same_bits(in_place)


@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("option", ["plain", "weighted", "soft"])
@pytest.mark.parametrize("reduction", ["mean", "none"])   # ("sum": the mean's kernel call, unscaled)
def test_softmax_ce(build, rng, shape, dtype, option, reduction):
    x, labels, kwargs = softmax_ce_case(rng, shape, dtype, option)
    kwargs["reduction"] = reduction
    assert_same_bits(lambda threads: cyce.softmax_ce(x, labels, num_threads=threads, **kwargs))
    assert_same_bits(lambda threads: cyce.softmax_ce(x, labels, return_grad=True, num_threads=threads,
                                                     **kwargs))
    if reduction != "mean":
        return  # the destinations below run the same kernel as return_grad

    def in_place(threads):
        buffer = x.copy()
        return cyce.softmax_ce(buffer, labels, inplace=True, num_threads=threads, **kwargs)
    assert_same_bits(in_place)
    grad_out = np.empty_like(x)
    assert_same_bits(lambda threads: (cyce.softmax_ce(x, labels, grad_out=grad_out, num_threads=threads,
                                                      **kwargs)[0], grad_out.copy()))


def binary_case(rng, shape, dtype, function, option):
    if function == "sigmoid_bce":
        x = (rng.standard_normal(shape) * 4).astype(dtype)
    else:
        x = rng.random(shape).astype(dtype)
    targets = rng.random(shape).astype(dtype)
    kwargs = {}
    if option == "weighted":
        kwargs["weight"] = rng.uniform(0.1, 2, shape[:-1] + (1,) if len(shape) > 1 else shape)
        if function == "sigmoid_bce":
            kwargs["pos_weight"] = rng.uniform(0.5, 3, shape[-1])
    return x, targets, kwargs


@pytest.mark.parametrize("shape", BINARY_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("function", ["sigmoid_bce", "binary_ce"])
@pytest.mark.parametrize("option", ["plain", "weighted"])
@pytest.mark.parametrize("reduction", ["mean", "none", "batchmean"])
def test_binary(build, rng, shape, dtype, function, option, reduction):
    x, targets, kwargs = binary_case(rng, shape, dtype, function, option)
    fn = getattr(cyce, function)
    kwargs["reduction"] = reduction
    assert_same_bits(lambda threads: fn(x, targets, num_threads=threads, **kwargs))
    assert_same_bits(lambda threads: fn(x, targets, return_grad=True, num_threads=threads, **kwargs))
    if reduction != "mean":
        return

    def in_place(threads):
        buffer = x.copy()
        return fn(buffer, targets, inplace=True, num_threads=threads, **kwargs)
    assert_same_bits(in_place)


@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", ["index", "soft"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_categorical_ce(build, rng, shape, dtype, kind, reduction):
    probs = rng.random(shape)
    probs = (probs / probs.sum(axis=-1, keepdims=True)).astype(dtype)
    probs.reshape(-1)[::13] = 0.0  # clipped at eps
    if kind == "index":
        labels = rng.integers(0, shape[-1], shape[:-1])
        labels.reshape(-1)[::7] = -100
        kwargs = dict(weight=rng.uniform(0.2, 2, shape[-1]))
    else:
        t = rng.random(shape)
        labels = (t / t.sum(axis=-1, keepdims=True)).astype(dtype)
        kwargs = dict(eps=1e-6)
    kwargs["reduction"] = reduction
    assert_same_bits(lambda threads: cyce.categorical_ce(probs, labels, return_grad=True,
                                                         num_threads=threads, **kwargs))
    if reduction != "mean":
        return

    def in_place(threads):
        buffer = probs.copy()
        return cyce.categorical_ce(buffer, labels, inplace=True, num_threads=threads, **kwargs)
    assert_same_bits(in_place)


def placed(x, offset):
    """A copy of x starting `offset` bytes past a 64-byte cache line."""
    buffer = np.empty(x.nbytes + 128, np.uint8)
    start = (-buffer.ctypes.data) % 64 + offset
    copy = buffer[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    copy[...] = x
    return copy


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n_classes", [300, 5000, 20011, 70001])
@pytest.mark.parametrize("option", ["plain", "smoothing", "weights_smoothing"])
def test_the_bits_do_not_depend_on_where_the_array_sits(build, rng, dtype, n_classes, option):
    """The vector loops start on the cache lines of the array they write, so
    the lanes hold other elements for every placement of the array: the
    same logits at each element offset within a cache line give the same
    bits (the loss alone, into a new gradient, into a gradient placed
    differently, in place).  Rows of one block, of two blocks (5000 classes)
    and of several with a short last one (20011; 70001, past the length
    whose scaling prefetches), with ties at the max, a confident row, a NaN
    row and an ignored row; with class weights and smoothing, the scaling
    subtracts a term per element too; smoothing alone takes its sum inside
    the exps' loop (avx512), whose lanes move with the placement."""
    x = (rng.standard_normal((9, n_classes)) * 4).astype(dtype)
    labels = rng.integers(0, n_classes, 9)
    x[1, ::7] = x[1].max()                  # ties at the max
    x[2, labels[2]] = 90.0                  # confident: a tiny sum
    x[3, n_classes // 2] = np.nan
    labels[4] = -100
    kwargs = {}
    if option == "weights_smoothing":
        kwargs = {"weight": rng.uniform(0.5, 2.0, n_classes), "label_smoothing": 0.1}
    elif option == "smoothing":
        kwargs = {"label_smoothing": 0.1}
    itemsize = np.dtype(dtype).itemsize
    first = None
    for offset in range(0, 64, itemsize):
        loss_alone = cyce.softmax_ce(placed(x, offset), labels, reduction="none", **kwargs)
        loss, grad = cyce.softmax_ce(placed(x, offset), labels, reduction="none",
                                     return_grad=True, **kwargs)
        into = placed(np.zeros_like(x), (offset + 2 * itemsize) % 64)
        cyce.softmax_ce(placed(x, offset), labels, reduction="none", grad_out=into, **kwargs)
        logits = placed(x, offset)
        cyce.softmax_ce(logits, labels, reduction="none", inplace=True, **kwargs)
        got = [loss_alone.tobytes(), loss.tobytes(), grad.tobytes()]
        assert into.tobytes() == grad.tobytes(), f"offset {offset}: grad_out"
        assert logits.tobytes() == grad.tobytes(), f"offset {offset}: in place"
        if first is None:
            first = got
            assert np.isnan(loss[3]) and loss[4] == 0 and np.isfinite(np.delete(loss, 3)).all()
        assert got == first, f"offset {offset} differs from offset 0"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n_classes", [300, 5000, 20011, 70001])
def test_softmax_and_logsumexp_bits_do_not_depend_on_where_the_array_sits(
        build, rng, dtype, n_classes):
    """logsumexp, softmax and log_softmax run the same block loop (max and
    exps in one pass): the same logits at each element offset within a cache
    line give the same bits, into new outputs, into outputs placed
    differently, and in place.  With ties at the max, a confident row, a NaN
    row, a +inf row and an all -inf row."""
    x = (rng.standard_normal((7, n_classes)) * 4).astype(dtype)
    x[1, ::7] = x[1].max()                  # ties at the max
    x[2, n_classes // 3] = 90.0             # confident: a tiny sum
    x[3, n_classes // 2] = np.nan
    x[4, n_classes - 1] = np.inf
    x[5] = -np.inf
    itemsize = np.dtype(dtype).itemsize
    first = None
    for offset in range(0, 64, itemsize):
        got = []
        lse_into = placed(np.zeros(7, dtype), (offset + itemsize) % 64)
        cyce.logsumexp(placed(x, offset), out=lse_into)
        got.append(lse_into.tobytes())
        for fn in (cyce.softmax, cyce.log_softmax):
            new = fn(placed(x, offset))
            into = placed(np.zeros_like(x), (offset + 2 * itemsize) % 64)
            fn(placed(x, offset), out=into)
            logits = placed(x, offset)
            fn(logits, out=logits)
            assert into.tobytes() == new.tobytes(), f"offset {offset}: {fn.__name__} out"
            assert logits.tobytes() == new.tobytes(), f"offset {offset}: {fn.__name__} in place"
            got.append(new.tobytes())
        if first is None:
            first = got
            lse = np.frombuffer(got[0], dtype)
            assert np.isnan(lse[3]) and lse[4] == np.inf and lse[5] == -np.inf
            assert np.isfinite(np.delete(lse, [3, 4, 5])).all()
        assert got == first, f"offset {offset} differs from offset 0"


def test_default_thread_count_gives_the_same_bits(rng):
    """num_threads=None (OpenMP's default, 2 on the CI machine) is one more
    thread count: the same bits as one thread, above the serial threshold."""
    x = (rng.standard_normal((3001, 97)) * 4).astype(np.float32)  # 291k elements: threaded
    labels = rng.integers(0, 97, 3001)
    one = cyce.softmax_ce(x, labels, return_grad=True, num_threads=1)
    default = cyce.softmax_ce(x, labels, return_grad=True)
    assert one[0].tobytes() == default[0].tobytes()
    assert one[1].tobytes() == default[1].tobytes()
    y = rng.random(x.shape).astype(np.float32)
    one = cyce.sigmoid_bce(x, y, return_grad=True, num_threads=1)
    default = cyce.sigmoid_bce(x, y, return_grad=True)
    assert one[0].tobytes() == default[0].tobytes()
    assert one[1].tobytes() == default[1].tobytes()


def test_shapes_are_threaded():
    from cyce._dispatch import SERIAL_BELOW

    for shape in ROW_SHAPES[:-1] + BINARY_SHAPES:
        assert np.prod(shape) >= SERIAL_BELOW, shape
