"""Inputs users have in hand: anything np.asarray views without a copy.

np.memmap, objects with __array__, arrays from np.from_dlpack, CPU torch
tensors (and JAX arrays where jax is installed) give the same bits as the
plain ndarray, cost no copy of the logits (measured with tracemalloc, which
sees NumPy's allocations), and take the gradient in place where their memory
is writable.  An input np.asarray has to copy is refused for inplace=True:
the gradient would land in the copy and be lost.
"""

import tracemalloc

import numpy as np
import pytest

import cyce

SHAPE = (512, 2000)  # 4 MB of float32: a copy would show in tracemalloc


class ArrayView:
    """An array-like whose __array__ hands NumPy a view of its memory."""

    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        if copy or (dtype is not None and np.dtype(dtype) != self._a.dtype):
            return np.array(self._a, dtype=dtype, copy=True)
        return self._a.view()


class ArrayCopy:
    """An array-like whose __array__ returns a new array each time."""

    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        return np.array(self._a, dtype=dtype, copy=True)


class DLPackOnly:
    """An array exposed only through the DLPack protocol (no __array__, no
    buffer protocol), as some array libraries' arrays are."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def memmap_of(base, tmp_path, mode="r+"):
    path = tmp_path / "logits.f32"
    base.tofile(path)
    return np.memmap(path, dtype=base.dtype, mode=mode, shape=base.shape), path


def as_kind(kind, base, tmp_path):
    """(object to pass, an ndarray over the same memory) for one input kind."""
    if kind == "ndarray":
        return base, base
    if kind == "memmap":
        mm, _ = memmap_of(base, tmp_path)
        return mm, mm
    if kind == "__array__ view":
        return ArrayView(base), base
    if kind == "np.from_dlpack":
        return np.from_dlpack(DLPackOnly(base)), base
    torch = pytest.importorskip("torch")
    tensor = torch.from_numpy(base)
    if kind == "torch":
        return tensor, base
    if kind == "np.from_dlpack(torch)":
        return np.from_dlpack(tensor), base
    raise AssertionError(kind)


KINDS = ["ndarray", "memmap", "__array__ view", "np.from_dlpack", "torch", "np.from_dlpack(torch)"]


@pytest.fixture
def case(rng):
    logits = rng.standard_normal(SHAPE, dtype=np.float32) * 4
    labels = rng.integers(0, SHAPE[1], SHAPE[0])
    return logits, labels


def peak_bytes(call):
    """Bytes NumPy (and Python) allocate at the peak of call()."""
    call()  # warm up imports and caches
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        call()
        return tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_same_bits_as_the_ndarray(kind, case, tmp_path):
    logits, labels = case
    obj, _ = as_kind(kind, logits.copy(), tmp_path)
    expected_loss, expected_grad = cyce.softmax_ce(logits, labels, label_smoothing=0.1, return_grad=True)
    loss, grad = cyce.softmax_ce(obj, labels, label_smoothing=0.1, return_grad=True)
    assert loss == expected_loss and loss.dtype == np.float32
    np.testing.assert_array_equal(grad, expected_grad)
    np.testing.assert_array_equal(cyce.logsumexp(obj), cyce.logsumexp(logits))
    np.testing.assert_array_equal(cyce.log_softmax(obj), cyce.log_softmax(logits))


@pytest.mark.parametrize("kind", KINDS)
def test_no_copy_of_the_logits(kind, case, tmp_path):
    logits, labels = case
    obj, _ = as_kind(kind, logits, tmp_path)
    peak = peak_bytes(lambda: cyce.softmax_ce(obj, labels, weight=np.ones(SHAPE[1])))
    # what is allowed: per-row losses and label/weight copies, ~ N + C words
    assert peak < logits.nbytes / 20, f"{kind}: {peak} bytes allocated for {logits.nbytes} bytes of logits"


def test_the_copy_measure_sees_a_copy(case):
    """The control for the test above: a Fortran-ordered input is copied once."""
    logits, labels = case
    fortran = np.asfortranarray(logits)
    assert peak_bytes(lambda: cyce.softmax_ce(fortran, labels)) >= logits.nbytes


@pytest.mark.parametrize("kind", KINDS)
def test_inplace_writes_the_gradient_into_the_callers_memory(kind, case, tmp_path):
    logits, labels = case
    _, expected_grad = cyce.softmax_ce(logits, labels, return_grad=True)
    obj, memory = as_kind(kind, logits.copy(), tmp_path)
    loss, grad = cyce.softmax_ce(obj, labels, inplace=True)
    assert loss == cyce.softmax_ce(logits, labels)
    np.testing.assert_array_equal(memory, expected_grad)
    assert np.shares_memory(grad, memory)


def test_inplace_into_a_memmap_reaches_the_file(case, tmp_path):
    logits, labels = case
    _, expected_grad = cyce.softmax_ce(logits, labels, return_grad=True)
    mm, path = memmap_of(logits, tmp_path)
    cyce.softmax_ce(mm, labels, inplace=True)
    mm.flush()
    del mm
    np.testing.assert_array_equal(np.fromfile(path, dtype=np.float32).reshape(SHAPE), expected_grad)


def test_inplace_refuses_a_read_only_memmap(case, tmp_path):
    logits, labels = case
    mm, path = memmap_of(logits, tmp_path, mode="r")
    with pytest.raises(ValueError, match="inplace=True needs logits to be writable"):
        cyce.softmax_ce(mm, labels, inplace=True)
    np.testing.assert_array_equal(np.fromfile(path, dtype=np.float32).reshape(SHAPE), logits)


@pytest.mark.parametrize("make", [ArrayCopy, lambda a: a.tolist()], ids=["__array__ copy", "list"])
def test_inplace_refuses_inputs_that_np_asarray_copies(make, case):
    logits, labels = case
    small = logits[:4, :6].copy()
    refused = r"inplace=True needs logits to be a NumPy array, got \w+, which np.asarray copies"
    with pytest.raises(TypeError, match=refused):
        cyce.softmax_ce(make(small), labels[:4] % 6, inplace=True)
    np.testing.assert_array_equal(logits[:4, :6], small)
    # without inplace, the same input is fine (one copy, then the usual call)
    copied = np.asarray(make(small))
    assert cyce.softmax_ce(make(small), labels[:4] % 6) == cyce.softmax_ce(copied, labels[:4] % 6)


def test_a_dlpack_only_object_gets_a_hint():
    with pytest.raises(TypeError, match=r"np\.from_dlpack\(logits\)"):
        cyce.softmax_ce(DLPackOnly(np.zeros((2, 3), np.float32)), np.array([0, 1]))


# ---- PyTorch tensors ----

def test_torch_tensors_for_logits_and_labels(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    logits = torch.randn(64, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for label_dtype in (torch.int64, torch.int32, torch.uint8):
        labels = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(1)).to(label_dtype)
        leaf = logits.clone().requires_grad_()
        expected = F.cross_entropy(leaf, labels.long(), label_smoothing=0.2)
        expected.backward()
        loss, grad = cyce.softmax_ce(logits, labels, label_smoothing=0.2, return_grad=True)
        np.testing.assert_allclose(loss, expected.item(), rtol=1e-12)
        np.testing.assert_allclose(grad, leaf.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_torch_inplace_overwrites_the_tensor(rng):
    torch = pytest.importorskip("torch")
    logits = torch.randn(32, 7)
    labels = torch.randint(0, 7, (32,))
    _, expected_grad = cyce.softmax_ce(logits.numpy().copy(), labels, return_grad=True)
    _, grad = cyce.softmax_ce(logits, labels, inplace=True)
    np.testing.assert_array_equal(logits.numpy(), expected_grad)
    assert grad.ctypes.data == logits.data_ptr()


def test_torch_strided_and_autograd_tensors(rng):
    torch = pytest.importorskip("torch")
    logits = torch.randn(7, 32)
    labels = torch.randint(0, 7, (32,))
    transposed = logits.T  # a strided view: fine at the cost of one copy ...
    assert cyce.softmax_ce(transposed, labels) == cyce.softmax_ce(logits.numpy().T.copy(), labels)
    before = logits.clone()
    with pytest.raises(ValueError, match="C-contiguous"):  # ... but not in place
        cyce.softmax_ce(transposed, labels, inplace=True)
    assert torch.equal(logits, before)
    with pytest.raises(RuntimeError, match="detach"):  # torch's own advice
        cyce.softmax_ce(logits.T.requires_grad_(), labels)


# ---- JAX arrays (immutable: read through __array__ or DLPack, never written) ----

def test_jax_arrays(case):
    jnp = pytest.importorskip("jax.numpy")
    logits, labels = case
    expected = cyce.softmax_ce(logits, labels)
    x = jnp.asarray(logits)
    assert cyce.softmax_ce(x, jnp.asarray(labels)) == expected
    assert cyce.softmax_ce(np.from_dlpack(x), labels) == expected
    for view in (x, np.from_dlpack(x)):  # NumPy views a CPU jax.Array read-only, without a copy
        assert peak_bytes(lambda: cyce.softmax_ce(view, labels)) < logits.nbytes / 20  # noqa: B023
        with pytest.raises(ValueError, match="inplace=True needs logits to be writable"):
            cyce.softmax_ce(view, labels, inplace=True)
    np.testing.assert_array_equal(np.asarray(x), logits)
