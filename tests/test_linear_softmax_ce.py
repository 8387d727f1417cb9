"""cyce.linear_softmax_ce: softmax cross entropy of ``hidden @ linear_weight.T
+ linear_bias`` without the (N, V) logits.

The references never call cyce's kernels: the logits are formed in float64
with NumPy and handed to tests/reference.py's float64 softmax_ce, whose
logit gradient G (N, V) gives the three gradients by the chain rule
(G @ W, G.T @ h, G.sum(0)); where torch is installed, float64 autograd of
F.cross_entropy(h @ W.T + b) is a second, independent reference, and the
only one of the temperature and softcap (F.cross_entropy of the mapped
logits).

Tolerances: float64 1e-10 relative.  float32 1e-5 relative on the loss;
its GEMMs round each logit by ~sqrt(H) eps |h||w|, which moves every entry
of G by about that much relative to |G|, so a float32 gradient is compared
within 1e-4 of its *term size* (|G| @ |W|, |G|.T @ |h|, sum |G|: the sums the
gradient entries are made of), not of its own possibly cancelled value.
"""

import math
import tracemalloc

import numpy as np
import pytest

import cyce
import reference

pytest.importorskip("scipy.linalg")  # the GEMMs are SciPy's BLAS (the test extra has it)

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]
# (batch shape, H, V): one row; a prime number of rows and classes; the
# widest small case; (B, T, H) hidden
SHAPES = [((1,), 3, 2), ((37,), 16, 23), ((64,), 32, 97), ((3, 5), 8, 11)]
OPTIONS = ["plain", "bias", "weight", "ignore_index", "ignore_class", "all_ignored",
           "smoothing", "sample_weight", "z_loss", "everything"]

LOSS_RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}
GRAD_RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


def assert_close(actual, expected, rtol, what, scale=0.0):
    """Within rtol relative, with an absolute floor of rtol times the larger
    of the largest |expected| and `scale` (a term size); nan matches nan."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    finite = np.abs(expected[np.isfinite(expected)])
    floor = max(float(finite.max()) if finite.size else 0.0, scale)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * floor,
                               equal_nan=True, err_msg=what)


def make_case(rng, batch, n_hidden, n_classes, dtype, option):
    """(hidden, linear_weight, labels, kwargs) for one option of the contract.
    Logits come out ~ N(0, 4): softmax rows neither uniform nor one-hot."""
    h = rng.standard_normal(batch + (n_hidden,)).astype(dtype)
    w = (rng.standard_normal((n_classes, n_hidden)) * (2 / math.sqrt(n_hidden))).astype(dtype)
    labels = rng.integers(0, n_classes, size=batch)
    flat = labels.reshape(-1)
    kwargs = {}
    if option == "bias":
        kwargs["linear_bias"] = rng.standard_normal(n_classes).astype(dtype)
    elif option == "weight":
        kwargs["weight"] = rng.uniform(0.1, 2.0, n_classes)
    elif option == "ignore_index":
        flat[::3] = -100
    elif option == "ignore_class":
        flat[::4] = 0
        kwargs["ignore_index"] = 0
    elif option == "all_ignored":
        flat[:] = 7
        kwargs["ignore_index"] = 7  # (7 may also be out of [0, V): ignore_index wins)
    elif option == "smoothing":
        kwargs["label_smoothing"] = 0.2
    elif option == "sample_weight":
        kwargs["sample_weight"] = rng.uniform(0.0, 3.0, batch)
    elif option == "z_loss":
        kwargs["z_loss"] = 1e-3
    elif option == "everything":
        kwargs.update(linear_bias=rng.standard_normal(n_classes).astype(dtype),
                      weight=rng.uniform(0.1, 2.0, n_classes), label_smoothing=0.1,
                      sample_weight=rng.uniform(0.5, 2.0, batch), z_loss=1e-4)
        flat[::4] = -100
    return h, w, labels, kwargs


def numpy_reference(h, w, labels, reduction="mean", linear_bias=None, **kwargs):
    """(loss, grads, scales) in float64: grads = (d hidden, d weight, d bias
    or None), scales their term sizes."""
    h64 = np.asarray(h, dtype=np.float64)
    w64 = np.asarray(w, dtype=np.float64)
    rows = h64.reshape(-1, h64.shape[-1])
    logits = rows @ w64.T
    if linear_bias is not None:
        logits = logits + np.asarray(linear_bias, dtype=np.float64)
    sample_weight = kwargs.pop("sample_weight", None)
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight).reshape(-1)
    loss, g = reference.softmax_ce(logits, np.asarray(labels).reshape(-1), reduction=reduction,
                                   sample_weight=sample_weight, **kwargs)
    if reduction == "none":
        loss = loss.reshape(np.shape(labels))
    grad_h = (g @ w64).reshape(h64.shape)
    grad_w = g.T @ rows
    grad_b = g.sum(axis=0) if linear_bias is not None else None
    a = np.abs(g)
    scales = ((a @ np.abs(w64)).max(initial=0.0), (a.T @ np.abs(rows)).max(initial=0.0),
              a.sum(axis=0).max(initial=0.0))
    return loss, (grad_h, grad_w, grad_b), scales


def check_against(result, expected, dtype, reduction, what=""):
    """A LinearSoftmaxCE result against numpy_reference's (loss, grads, scales)."""
    dtype = np.dtype(dtype)
    loss, grads, scales = expected
    assert_close(result.loss, loss, LOSS_RTOL[dtype], f"loss {what}")
    names = ["grad_hidden", "grad_linear_weight", "grad_linear_bias"]
    for name, got, want, scale in zip(names, result[1:], grads, scales):
        if want is None:
            assert got is None, name
            continue
        assert got.dtype == dtype, (name, got.dtype)
        assert_close(got, want, GRAD_RTOL[dtype], f"{name} {what}", scale)


def copies(*arrays):
    return [None if a is None else np.array(a, copy=True) for a in arrays]


def assert_unchanged(arrays, before):
    for a, b in zip(arrays, before):
        if a is not None:
            assert np.asarray(a).tobytes() == b.tobytes()


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("batch, n_hidden, n_classes", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", OPTIONS)
def test_matches_reference(rng, batch, n_hidden, n_classes, dtype, reduction, option):
    """Loss and the three gradients against the float64 NumPy reference, the
    result's types and shapes, the loss alone, and every input untouched."""
    h, w, labels, kwargs = make_case(rng, batch, n_hidden, n_classes, dtype, option)
    inputs = [h, w, labels] + list(kwargs.values())
    before = copies(*[a if isinstance(a, np.ndarray) else None for a in inputs])
    expected = numpy_reference(h, w, labels, reduction=reduction, **kwargs)

    result = cyce.linear_softmax_ce(h, w, labels, reduction=reduction, return_grad=True, **kwargs)
    assert type(result).__name__ == "LinearSoftmaxCE"
    assert result._fields == ("loss", "grad_hidden", "grad_linear_weight", "grad_linear_bias")
    if reduction == "none":
        assert isinstance(result.loss, np.ndarray)
        assert result.loss.shape == batch and result.loss.dtype == dtype
    else:
        assert isinstance(result.loss, np.generic) and result.loss.dtype == dtype
    assert result.grad_hidden.shape == h.shape
    assert result.grad_linear_weight.shape == w.shape
    if "linear_bias" in kwargs:
        assert result.grad_linear_bias.shape == (n_classes,)
    check_against(result, expected, dtype, reduction)
    if option == "all_ignored":
        assert not np.any(result.grad_hidden) and not np.any(result.grad_linear_weight)
        if reduction == "mean":
            assert np.isnan(result.loss)

    loss_only = cyce.linear_softmax_ce(h, w, labels, reduction=reduction, **kwargs)
    assert type(loss_only) is type(result.loss)
    assert_close(loss_only, expected[0], LOSS_RTOL[np.dtype(dtype)], "loss without gradients")
    assert_unchanged([a if isinstance(a, np.ndarray) else None for a in inputs], before)


def test_ignored_rows_get_zero_hidden_gradient(rng):
    """grad_hidden is exactly 0 on rows whose label is ignore_index."""
    h, w, labels, kwargs = make_case(rng, (30,), 8, 13, np.float32, "everything")
    result = cyce.linear_softmax_ce(h, w, labels, return_grad=True, **kwargs)
    ignored = labels == -100
    assert ignored.any()
    assert np.all(result.grad_hidden[ignored] == 0)
    assert np.all(np.any(result.grad_hidden[~ignored] != 0, axis=1))


def test_equals_softmax_ce_of_the_logits(rng):
    """The spec's identity, with cyce.softmax_ce on explicitly formed logits
    (float64, where the GEMM rounding is below the tolerance), also with
    softmax_ce's temperature and logit_softcap."""
    h, w, labels, kwargs = make_case(rng, (3, 7), 12, 19, np.float64, "everything")
    bias = kwargs.pop("linear_bias")
    logits = h @ w.T + bias
    for reduction in REDUCTIONS:
        for temperature, softcap in [(1.0, None)] + LOGIT_MAPS:
            options = dict(kwargs, reduction=reduction, temperature=temperature,
                           logit_softcap=softcap)
            expected = cyce.softmax_ce(logits, labels, **options)
            got = cyce.linear_softmax_ce(h, w, labels, linear_bias=bias, **options)
            assert_close(got, expected, 1e-12, f"{reduction} T={temperature} c={softcap}")


def torch_autograd_reference(h, w, labels, reduction, kwargs, temperature=1.0, logit_softcap=None):
    """(loss, grads, scales) by float64 PyTorch autograd of F.cross_entropy of
    the logits h @ W.T + b, mapped to c tanh(x / c) / T when asked; z_loss
    and sample_weight combined with torch's per-row losses by softmax_ce's
    rules (without them torch's own reduction is used, which also checks the
    manual rule).  scales are the gradients' term sizes, from the gradient G
    with respect to the unmapped logits."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    n_classes = w.shape[0]
    ht = torch.tensor(h, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    bias = kwargs.get("linear_bias")
    bt = None if bias is None else torch.tensor(bias, dtype=torch.float64, requires_grad=True)
    yt = torch.tensor(labels.reshape(-1))
    cw = kwargs.get("weight")
    cwt = None if cw is None else torch.tensor(cw, dtype=torch.float64)
    ignore_index = kwargs.get("ignore_index", -100)
    smoothing = kwargs.get("label_smoothing", 0.0)
    z = kwargs.get("z_loss", 0.0)
    s = kwargs.get("sample_weight")

    rows = ht.reshape(-1, ht.shape[-1])
    raw = rows @ wt.T
    if bt is not None:
        raw = raw + bt
    raw.retain_grad()
    logits = raw
    if logit_softcap is not None:
        logits = logit_softcap * torch.tanh(logits / logit_softcap)
    logits = logits / temperature
    if z == 0.0 and s is None:
        loss = F.cross_entropy(logits, yt, weight=cwt, ignore_index=ignore_index,
                               reduction=reduction, label_smoothing=smoothing)
    else:
        row = F.cross_entropy(logits, yt, weight=cwt, ignore_index=ignore_index,
                              reduction="none", label_smoothing=smoothing)
        kept = yt != ignore_index
        row = row + torch.where(kept, z * torch.logsumexp(logits, 1) ** 2, 0.0)
        st = torch.ones(len(yt), dtype=torch.float64) if s is None else torch.tensor(s.reshape(-1))
        row = st * row
        class_w = torch.ones(n_classes, dtype=torch.float64) if cwt is None else cwt
        denom = (st[kept] * class_w[yt[kept]]).sum()
        loss = {"mean": row.sum() / denom, "sum": row.sum(), "none": row}[reduction]
    if reduction == "none":
        loss = loss.reshape(labels.shape)
    leaves = [ht, wt] + ([bt] if bt is not None else [])
    loss.sum().backward()
    grads = [t.grad.numpy() for t in leaves] + ([None] if bt is None else [])
    a = raw.grad.abs().numpy()
    scales = ((a @ np.abs(w.astype(np.float64))).max(initial=0.0),
              (a.T @ np.abs(rows.detach().numpy())).max(initial=0.0),
              a.sum(axis=0).max(initial=0.0))
    return loss.detach().numpy(), grads, scales


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", ["plain", "bias", "weight", "ignore_index", "smoothing",
                                    "sample_weight", "z_loss", "everything"])
def test_matches_torch_autograd(dtype, reduction, option):
    """Loss and gradients against float64 PyTorch autograd of
    F.cross_entropy(h @ W.T + b)."""
    rng = np.random.default_rng(sum(map(ord, option + reduction)))
    h, w, labels, kwargs = make_case(rng, (4, 9), 16, 23, dtype, option)
    expected = torch_autograd_reference(h, w, labels, reduction, kwargs)
    result = cyce.linear_softmax_ce(h, w, labels, reduction=reduction, return_grad=True, **kwargs)
    check_against(result, expected, dtype, reduction)


# the logit map: temperatures either side of 1, without and with a softcap
# (5 caps the N(0, 4) logits' tails: tanh's slope there is well below 1)
LOGIT_MAPS = [(0.5, None), (0.5, 5.0), (2.0, None), (2.0, 5.0)]


@pytest.mark.parametrize("temperature, logit_softcap", LOGIT_MAPS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", ["bias", "everything"])
def test_logit_map_matches_torch_autograd(temperature, logit_softcap, dtype, reduction, option):
    """temperature and logit_softcap: the loss and the three gradients are
    float64 autograd's of F.cross_entropy(map(h @ W.T + b)), with every
    option of the loss ("everything": class weights, smoothing,
    ignore_index, sample_weight, z_loss)."""
    rng = np.random.default_rng(sum(map(ord, option + reduction)) + int(4 * temperature))
    h, w, labels, kwargs = make_case(rng, (4, 9), 16, 23, dtype, option)
    expected = torch_autograd_reference(h, w, labels, reduction, kwargs, temperature, logit_softcap)
    result = cyce.linear_softmax_ce(h, w, labels, reduction=reduction, return_grad=True,
                                    temperature=temperature, logit_softcap=logit_softcap, **kwargs)
    check_against(result, expected, dtype, reduction)
    loss_only = cyce.linear_softmax_ce(h, w, labels, reduction=reduction, temperature=temperature,
                                       logit_softcap=logit_softcap, **kwargs)
    assert_close(loss_only, expected[0], LOSS_RTOL[np.dtype(dtype)], "loss alone")


@pytest.mark.parametrize("temperature, logit_softcap", [(0.5, 5.0), (2.0, None)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_logit_map_any_chunk_rows(rng, temperature, logit_softcap, dtype, reduction):
    """With the map, chunk_rows 1, 7 and all the rows agree within rounding
    (the GEMMs sum in another order), with ignored rows among them."""
    h, w, labels, kwargs = make_case(rng, (37,), 16, 23, dtype, "everything")
    _, _, scales = torch_autograd_reference(h, w, labels, reduction, kwargs, temperature,
                                            logit_softcap)
    results = [cyce.linear_softmax_ce(h, w, labels, reduction=reduction, return_grad=True,
                                      chunk_rows=chunk, temperature=temperature,
                                      logit_softcap=logit_softcap, **kwargs)
               for chunk in (37, 1, 7)]
    dtype = np.dtype(dtype)
    for chunk, result in zip((1, 7), results[1:]):
        assert_close(result.loss, results[0].loss, LOSS_RTOL[dtype], f"loss chunk_rows={chunk}")
        for got, want, scale in zip(result[1:], results[0][1:], scales):
            assert_close(got, want, GRAD_RTOL[dtype], f"gradient chunk_rows={chunk}", scale)


def test_reference_gradients_are_the_derivatives_of_its_loss(rng):
    """Guards numpy_reference: central differences of its loss in every
    entry of hidden, linear_weight and linear_bias."""
    h, w, labels, kwargs = make_case(rng, (5,), 3, 4, np.float64, "everything")
    bias = kwargs.pop("linear_bias")
    _, grads, _ = numpy_reference(h, w, labels, linear_bias=bias, **kwargs)
    args = [h, w, bias]
    step = 1e-6
    for which, grad in enumerate(grads):
        numeric = np.empty_like(args[which])
        for idx in np.ndindex(numeric.shape):
            up = [a.copy() for a in args]
            down = [a.copy() for a in args]
            up[which][idx] += step
            down[which][idx] -= step
            loss_up = numpy_reference(up[0], up[1], labels, linear_bias=up[2], **kwargs)[0]
            loss_down = numpy_reference(down[0], down[1], labels, linear_bias=down[2], **kwargs)[0]
            numeric[idx] = (loss_up - loss_down) / (2 * step)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------- chunks, threads, layouts

@pytest.mark.parametrize("batch", [(37,), (3, 5)], ids=str)
@pytest.mark.parametrize("chunk_rows", [1, 7, "all", "more", None], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", ["bias", "everything"])
def test_any_chunk_rows(rng, batch, chunk_rows, dtype, reduction, option):
    """Every chunking (one row at a time, 7 rows, all rows, more than all,
    the default) gives the reference's loss and gradients, with every row
    taking part ("bias") and with ignored rows ("everything")."""
    h, w, labels, kwargs = make_case(rng, batch, 16, 23, dtype, option)
    n_rows = math.prod(batch)
    chunk = {"all": n_rows, "more": n_rows + 5}.get(chunk_rows, chunk_rows)
    expected = numpy_reference(h, w, labels, reduction=reduction, **kwargs)
    result = cyce.linear_softmax_ce(h, w, labels, reduction=reduction, return_grad=True,
                                    chunk_rows=chunk, **kwargs)
    check_against(result, expected, dtype, reduction, f"chunk_rows={chunk}")
    loss_only = cyce.linear_softmax_ce(h, w, labels, reduction=reduction, chunk_rows=chunk, **kwargs)
    assert_close(loss_only, expected[0], LOSS_RTOL[np.dtype(dtype)], "loss alone")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_thread_counts_agree(rng, dtype):
    """num_threads=1 and 2 each match the reference (and so each other)."""
    h, w, labels, kwargs = make_case(rng, (300,), 32, 97, dtype, "everything")
    expected = numpy_reference(h, w, labels, **kwargs)
    for threads in (1, 2):
        for chunk in (None, 64):
            result = cyce.linear_softmax_ce(h, w, labels, return_grad=True, num_threads=threads,
                                            chunk_rows=chunk, **kwargs)
            check_against(result, expected, dtype, "mean", f"num_threads={threads} chunk_rows={chunk}")


def strided_layouts(rng, dtype):
    """(name, hidden, linear_weight, labels) views that are not C-contiguous."""
    n, hdim, v = 21, 12, 17
    big_h = rng.standard_normal((n, 2 * hdim)).astype(dtype)
    big_w = (rng.standard_normal((2 * v, hdim)) / 2).astype(dtype)
    big_y = rng.integers(0, v, size=2 * n)
    w = np.ascontiguousarray(big_w[:v])
    h = np.ascontiguousarray(big_h[:, :hdim])
    y = np.ascontiguousarray(big_y[:n])
    return [
        ("hidden column slice", big_h[:, ::2], w, y),
        ("hidden transposed", np.ascontiguousarray(h.T).T, w, y),
        ("hidden negative stride", h[::-1], w, y),
        ("weight row slice", h, big_w[::2], y),
        ("weight Fortran order", h, np.asfortranarray(w), y),
        ("weight transposed view", h, np.ascontiguousarray(w.T).T, y),
        ("labels strided", h, w, big_y[::2]),
        ("everything strided", big_h[:, 1::2], big_w[1::2], big_y[1::2]),
    ]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", range(8))
def test_non_contiguous_inputs(rng, dtype, case):
    """Strided, transposed and Fortran-ordered views give the results of
    their contiguous copies (the reference sees those), views untouched."""
    name, h, w, y = strided_layouts(rng, dtype)[case]
    bias = rng.standard_normal(w.shape[0] * 2).astype(dtype)[::2]  # a strided bias too
    before = copies(h, w, y, bias)
    expected = numpy_reference(np.ascontiguousarray(h), np.ascontiguousarray(w), np.ascontiguousarray(y),
                               linear_bias=np.ascontiguousarray(bias), reduction="sum")
    result = cyce.linear_softmax_ce(h, w, y, linear_bias=bias, reduction="sum", return_grad=True,
                                    chunk_rows=5)
    assert result.grad_hidden.shape == h.shape
    check_against(result, expected, dtype, "sum", name)
    assert_unchanged([h, w, y, bias], before)


@pytest.mark.parametrize("label_dtype", [np.int8, np.int32, np.uint8, np.uint64])
def test_integer_label_dtypes(rng, label_dtype):
    """Any signed or unsigned integer labels, as in softmax_ce."""
    h, w, labels, kwargs = make_case(rng, (20,), 8, 11, np.float64, "bias")
    expected = cyce.linear_softmax_ce(h, w, labels, return_grad=True, **kwargs)
    got = cyce.linear_softmax_ce(h, w, labels.astype(label_dtype), return_grad=True, **kwargs)
    for a, b in zip(got, expected):
        assert_close(a, b, 1e-12, str(label_dtype))


# ---------------------------------------------------------------- empty batches

@pytest.mark.parametrize("batch", [(0,), (2, 0)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("with_bias", [False, True])
def test_no_rows(batch, dtype, with_bias):
    """N = 0: mean nan, sum 0, "none" an empty array of the batch shape;
    zero gradients of the inputs' shapes and dtype."""
    n_hidden, n_classes = 6, 5
    h = np.zeros(batch + (n_hidden,), dtype)
    w = np.ones((n_classes, n_hidden), dtype)
    bias = np.ones(n_classes, dtype) if with_bias else None
    labels = np.zeros(batch, np.int64)
    for reduction in REDUCTIONS:
        result = cyce.linear_softmax_ce(h, w, labels, linear_bias=bias, reduction=reduction,
                                        return_grad=True)
        if reduction == "mean":
            assert np.isnan(result.loss) and result.loss.dtype == dtype
        elif reduction == "sum":
            assert result.loss == 0 and result.loss.dtype == dtype
        else:
            assert result.loss.shape == batch and result.loss.dtype == dtype
        assert result.grad_hidden.shape == h.shape and result.grad_hidden.dtype == dtype
        assert result.grad_linear_weight.shape == w.shape and result.grad_linear_weight.dtype == dtype
        assert not np.any(result.grad_linear_weight)
        if with_bias:
            assert result.grad_linear_bias.shape == (n_classes,)
            assert result.grad_linear_bias.dtype == dtype
            assert not np.any(result.grad_linear_bias)
        else:
            assert result.grad_linear_bias is None


# ---------------------------------------------------------------- memory

N_MEM, H_MEM, V_MEM = 2048, 16, 4096
LOGITS_BYTES = N_MEM * V_MEM * 4


def memory_case():
    rng = np.random.default_rng(3)
    h = rng.standard_normal((N_MEM, H_MEM), dtype=np.float32)
    w = (rng.standard_normal((V_MEM, H_MEM), dtype=np.float32) * 0.5).astype(np.float32)
    b = rng.standard_normal(V_MEM, dtype=np.float32)
    y = rng.integers(0, V_MEM, N_MEM)
    return h, w, b, y


def traced_peak(fn):
    """The tracemalloc peak (bytes) of fn() above what was allocated before."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - start, result


def test_plain_softmax_ce_of_the_logits_exceeds_the_bound():
    """The control: tracemalloc sees the (N, V) logits of the naive way."""
    h, w, b, y = memory_case()
    peak, _ = traced_peak(lambda: cyce.softmax_ce(h @ w.T + b, y, return_grad=True))
    assert peak > LOGITS_BYTES


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("return_grad", [False, True])
def test_memory_stays_below_the_logits(reduction, return_grad):
    """N=2048, V=4096 float32 with chunk_rows=256: the peak stays below 40%
    of one (N, V) float32 array (BLAS's own buffers are not traced)."""
    h, w, b, y = memory_case()
    peak, result = traced_peak(lambda: cyce.linear_softmax_ce(
        h, w, y, linear_bias=b, reduction=reduction, return_grad=return_grad, chunk_rows=256))
    assert peak < 0.4 * LOGITS_BYTES, f"peak {peak / 2**20:.1f} MiB"
    loss = result.loss if return_grad else result
    assert np.all(np.isfinite(loss))


def test_default_chunking_bounds_memory_for_a_large_batch():
    """With chunk_rows left at its default, a batch whose (N, V) float32
    logits are large (N=8192, V=4096: 128 MiB) is chunked: the peak stays
    below one such array."""
    rng = np.random.default_rng(4)
    n_rows, n_hidden = 8192, 8
    h = rng.standard_normal((n_rows, n_hidden), dtype=np.float32)
    w = rng.standard_normal((V_MEM, n_hidden), dtype=np.float32)
    y = rng.integers(0, V_MEM, n_rows)
    peak, _ = traced_peak(lambda: cyce.linear_softmax_ce(h, w, y, return_grad=True))
    assert peak < 0.9 * n_rows * V_MEM * 4, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("n_rows", [2, 300, 2048])
def test_default_chunking_never_takes_all_the_rows(n_rows):
    """However small the batch, the default chunk is at most half of it:
    no (N, V) logits are held at any size."""
    rng = np.random.default_rng(5)
    h = rng.standard_normal((n_rows, 8), dtype=np.float32)
    w = rng.standard_normal((V_MEM, 8), dtype=np.float32)
    y = rng.integers(0, V_MEM, n_rows)
    peak, _ = traced_peak(lambda: cyce.linear_softmax_ce(h, w, y, return_grad=True))
    logits_bytes = n_rows * V_MEM * 4
    gradients_bytes = (n_rows + V_MEM) * 8 * 4
    assert peak < 0.6 * logits_bytes + gradients_bytes + (1 << 20), f"peak {peak / 2**20:.1f} MiB"


def test_bad_label_is_found_before_any_gemm():
    """A bad label in the last row raises before the first chunk's logits
    (256 x 4096 float32, 4 MiB) are allocated: everything is checked first."""
    h, w, b, y = memory_case()
    y = y.copy()
    y[-1] = V_MEM
    tracemalloc.start()
    try:
        with pytest.raises(IndexError):
            cyce.linear_softmax_ce(h, w, y, linear_bias=b, return_grad=True, chunk_rows=256)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * V_MEM * 4 / 4, f"peak {peak / 2**20:.1f} MiB"


# ---------------------------------------------------------------- bad input

@pytest.fixture
def args():
    """A valid float32 call: hidden (6, 4), linear_weight (5, 4), labels (6,)."""
    rng = np.random.default_rng(0)
    return (rng.standard_normal((6, 4)).astype(np.float32),
            rng.standard_normal((5, 4)).astype(np.float32),
            np.array([0, 1, 2, 3, 4, 0]))


BAD_CASES = {
    # name: (replacements {position or keyword: value}, error, message pattern)
    "H mismatch": ({1: np.ones((5, 3), np.float32)}, ValueError, r"4.*3|3.*4"),
    "1-D linear_weight": ({1: np.ones(4, np.float32)}, ValueError, r"linear_weight"),
    "3-D linear_weight": ({1: np.ones((5, 4, 1), np.float32)}, ValueError, r"linear_weight"),
    "0-d hidden": ({0: np.float32(1.0)}, ValueError, r"hidden"),
    "label too big": ({2: np.array([0, 1, 2, 3, 5, 0])}, IndexError, r"labels\[4\]"),
    "negative label": ({2: np.array([0, 1, -1, 3, 4, 0])}, IndexError, r"labels\[2\]"),
    "label of the default ignore_index with another": (
        {2: np.array([0, -100, 1, 2, 3, 4]), "ignore_index": 3}, IndexError, r"labels\[1\]"),
    "labels wrong shape": ({2: np.array([0, 1, 2])}, ValueError, r"labels"),
    "labels 2-D": ({2: np.zeros((6, 1), np.int64)}, ValueError, r"labels"),
    "probability labels": ({2: np.full((6, 5), 0.2, np.float32)}, TypeError, r"labels"),
    "float labels per row": ({2: np.zeros(6, np.float32)}, TypeError, r"labels"),
    "bool labels": ({2: np.zeros(6, bool)}, TypeError, r"labels"),
    "int hidden": ({0: np.ones((6, 4), np.int64)}, TypeError, r"hidden"),
    "int linear_weight": ({1: np.ones((5, 4), np.int32)}, TypeError, r"linear_weight"),
    "float64 weight with float32 hidden": ({1: np.ones((5, 4))}, TypeError, r"dtype|float"),
    "float64 hidden with float32 weight": ({0: np.ones((6, 4))}, TypeError, r"dtype|float"),
    "float64 bias": ({"linear_bias": np.ones(5)}, TypeError, r"linear_bias|dtype"),
    "bias wrong length": ({"linear_bias": np.ones(4, np.float32)}, ValueError, r"linear_bias"),
    "bias 2-D": ({"linear_bias": np.ones((1, 5), np.float32)}, ValueError, r"linear_bias"),
    "weight wrong length": ({"weight": np.ones(3)}, ValueError, r"weight"),
    "sample_weight wrong shape": ({"sample_weight": np.ones(5)}, ValueError, r"sample_weight"),
    "unknown reduction": ({"reduction": "avg"}, ValueError, r"reduction"),
    "smoothing above 1": ({"label_smoothing": 1.5}, ValueError, r"label_smoothing"),
    "smoothing negative": ({"label_smoothing": -0.1}, ValueError, r"label_smoothing"),
    "z_loss negative": ({"z_loss": -1.0}, ValueError, r"z_loss"),
    "chunk_rows zero": ({"chunk_rows": 0}, ValueError, r"chunk_rows"),
    "chunk_rows negative": ({"chunk_rows": -3}, ValueError, r"chunk_rows"),
    "chunk_rows float": ({"chunk_rows": 2.5}, TypeError, r"chunk_rows"),
    "chunk_rows text": ({"chunk_rows": "7"}, TypeError, r"chunk_rows"),
    "num_threads zero": ({"num_threads": 0}, ValueError, r"num_threads"),
    "temperature zero": ({"temperature": 0.0}, ValueError, r"temperature"),
    "temperature negative": ({"temperature": -1.0}, ValueError, r"temperature"),
    "temperature nan": ({"temperature": float("nan")}, ValueError, r"temperature"),
    "temperature inf": ({"temperature": float("inf")}, ValueError, r"temperature"),
    "temperature text": ({"temperature": "2"}, TypeError, r"temperature"),
    "softcap zero": ({"logit_softcap": 0.0}, ValueError, r"logit_softcap"),
    "softcap negative": ({"logit_softcap": -5.0}, ValueError, r"logit_softcap"),
    "softcap nan": ({"logit_softcap": float("nan")}, ValueError, r"logit_softcap"),
    "softcap inf": ({"logit_softcap": float("inf")}, ValueError, r"logit_softcap"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_rejects(args, case):
    """Each mistake raises its error type with a message naming it, and
    every array passed is bit for bit what it was."""
    replacements, error, pattern = BAD_CASES[case]
    positional = list(args)
    kwargs = {"return_grad": True}
    for key, value in replacements.items():
        if isinstance(key, int):
            positional[key] = value
        else:
            kwargs[key] = value
    arrays = [a for a in positional + list(kwargs.values()) if isinstance(a, np.ndarray)]
    before = copies(*arrays)
    with pytest.raises(error, match=pattern):
        cyce.linear_softmax_ce(*positional, **kwargs)
    assert_unchanged(arrays, before)


@pytest.mark.parametrize("temperature, logit_softcap", [(0.0, None), (1.0, -1.0),
                                                        (float("nan"), 5.0), (2.0, float("inf"))],
                         ids=str)
def test_bad_logit_map_is_found_before_any_gemm(args, monkeypatch, temperature, logit_softcap):
    """A bad temperature or softcap raises ValueError before the first GEMM."""
    import cyce._linear

    def no_gemm(*gemm_args, **gemm_kwargs):
        raise AssertionError("a GEMM ran before the arguments were checked")

    monkeypatch.setattr(cyce._linear, "_gemm", no_gemm)
    with pytest.raises(ValueError, match="temperature|logit_softcap"):
        cyce.linear_softmax_ce(*args, return_grad=True, temperature=temperature,
                               logit_softcap=logit_softcap)


def test_label_position_in_a_batch_of_sequences():
    """For (B, T, H) hidden the IndexError names the (b, t) position and value."""
    h = np.ones((2, 3, 4), np.float64)
    w = np.ones((5, 4), np.float64)
    labels = np.array([[0, 1, 2], [3, 9, 4]])
    with pytest.raises(IndexError, match=r"labels\[1, 1\].*9"):
        cyce.linear_softmax_ce(h, w, labels)


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_half_precision_is_a_type_error(dtype_name):
    """float16 / bfloat16 are not computed (yet): a TypeError that points at
    float32 and at cyce.torch.linear_cross_entropy."""
    if dtype_name == "bfloat16":
        dtype = np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    else:
        dtype = np.dtype(np.float16)
    h = np.ones((6, 4), np.float32).astype(dtype)
    w = np.ones((5, 4), np.float32).astype(dtype)
    labels = np.zeros(6, np.int64)
    with pytest.raises(TypeError) as info:
        cyce.linear_softmax_ce(h, w, labels)
    message = str(info.value)
    assert "float32" in message and "cyce.torch.linear_cross_entropy" in message, message


def test_exported():
    assert "linear_softmax_ce" in cyce.__all__
    assert callable(cyce.linear_softmax_ce)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_no_features_gives_the_bias_logits(rng, dtype):
    """H = 0: every logit is the bias (as torch's F.linear gives), and the
    gradients of hidden and linear_weight are empty."""
    bias = rng.standard_normal(5).astype(dtype)
    labels = np.array([0, 3, 4, 3])
    result = cyce.linear_softmax_ce(np.zeros((4, 0), dtype), np.zeros((5, 0), dtype), labels,
                                    linear_bias=bias, return_grad=True)
    expected_loss, expected_grad = reference.softmax_ce(
        np.tile(bias.astype(np.float64), (4, 1)), labels)
    assert_close(result.loss, expected_loss, LOSS_RTOL[np.dtype(dtype)], "loss")
    assert_close(result.grad_linear_bias, expected_grad.sum(0), GRAD_RTOL[np.dtype(dtype)], "bias")
    assert result.grad_hidden.shape == (4, 0) and result.grad_linear_weight.shape == (5, 0)
