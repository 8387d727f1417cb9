"""softmax_ce's temperature and logit_softcap: the loss of the mapped logits
z = c tanh(x / c) / T (z = x / T without a softcap; -inf stays -inf), its
gradient carried back through the map (slope sech(x / c)**2 / T, or 1 / T).

Two references, both from the definition, neither from cyce's kernels:

- PyTorch autograd in float64 (skipped where torch is absent):
  F.cross_entropy of the map written with torch ops, backward() for the
  gradient; sample_weight (cyce's own) and z_loss composed from torch's
  per-row losses, the "mean" divided by sum_i s_i w[y_i] over the rows not
  ignored (sum_i s_i for probabilities), as softmax_ce's docstring says.
- reference.softmax_ce of the mapped logits in NumPy float64, its gradient
  times the map's slope (chain rule), which runs everywhere.

Tolerances: conftest.tolerance for float32 and float64 results (README.md's
"Accuracy"), with reference.softmax_ce's term size for the gradient, and
tests/test_half_precision.py's check_half (one ulp, plus 16 float32
epsilons of the term size where the gradient cancels) for half gradients.
Where the map is not exact in the compute dtype (a softcap, or a
temperature that is not a power of two) the kernel rounds each z_j by about
an ulp of |z_j|: p_j = exp(z_j - lse) then moves by about twice that
relative, the loss lse - z_y by twice that absolute.  MAP_ULPS epsilons of
|z|'s row maximum times each row's weight in the result (s_i / D times its
target mass, z_loss's share) are allowed on top, as no computation in that
dtype can avoid them; for float64 they are below the float64 tolerance.
"""

import itertools
import math

import numpy as np
import pytest

import cyce
import reference
from conftest import LEVELS, kernels_of_level, tolerance

MAP_ULPS = 4
REDUCTIONS = ["mean", "sum", "none"]
DTYPES = [np.float32, np.float64]
# (temperature, logit_softcap): every temperature with and without a softcap
MAPS = [(0.5, None), (3.0, None), (1.0, 30.0), (1.0, 1.0), (0.5, 30.0), (3.0, 1.0)]
OPTIONS = ["plain", "weight", "sample_weight", "ignore_index", "ignore_class", "smoothing",
           "z_loss", "soft", "soft_smoothing", "everything", "soft_everything"]
# the options whose gradient is a difference of nearly equal terms
# (test_half_precision.CANCELLING's)
CANCELLING = {"smoothing", "z_loss", "soft", "soft_smoothing", "everything", "soft_everything"}


def name_of(dtype):
    return np.dtype(dtype).name


def map_id(m):
    temperature, softcap = m
    return f"T{temperature:g}-" + ("nocap" if softcap is None else f"cap{softcap:g}")


def as_float64(a):
    """Float arrays (bfloat16 too) as float64, exactly; integers unchanged."""
    a = np.asarray(a)
    return a if a.dtype.kind in "iu" else a.astype(np.float64)


def compute_dtype(dtype):
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


def half_dtype(name):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    return np.dtype(np.float16) if name == "float16" else np.dtype(ml_dtypes.bfloat16)


# ---------------------------------------------------------------- the cases

def make_case(rng, shape, dtype, option):
    """Logits, labels and keyword arguments for one option."""
    n_classes = shape[-1]
    batch = shape[:-1]
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    labels = rng.integers(0, n_classes, size=batch)
    kwargs = {}

    def soft():
        t = rng.random(shape)
        return (t / t.sum(axis=-1, keepdims=True)).astype(dtype if np.dtype(dtype) in (
            np.float32, np.float64) else np.float32)

    if option == "weight":
        kwargs["weight"] = rng.uniform(0.1, 2.0, n_classes)
    elif option == "sample_weight":
        kwargs["sample_weight"] = rng.uniform(0.0, 3.0, batch)
    elif option == "ignore_index":
        labels.reshape(-1)[::3] = -100
    elif option == "ignore_class":
        kwargs["ignore_index"] = 0
    elif option == "smoothing":
        kwargs["label_smoothing"] = 0.2
    elif option == "z_loss":
        kwargs["z_loss"] = 1e-3
    elif option == "soft":
        labels = soft()
    elif option == "soft_smoothing":
        labels = soft()
        kwargs["label_smoothing"] = 0.3
    elif option == "everything":
        kwargs.update(weight=rng.uniform(0.1, 2.0, n_classes), label_smoothing=0.1,
                      sample_weight=rng.uniform(0.5, 2.0, batch), z_loss=1e-4)
        labels.reshape(-1)[::4] = -100
    elif option == "soft_everything":
        labels = soft()
        kwargs.update(weight=rng.uniform(0.1, 2.0, n_classes), label_smoothing=0.3,
                      sample_weight=rng.uniform(0.5, 2.0, batch), z_loss=1e-3)
    return x, labels, kwargs


# ----------------------------------------------------------- the references

def mapped(x, temperature, softcap):
    """z = c tanh(x / c) / T, or x / T; -inf stays -inf (float64)."""
    x = as_float64(x)
    with np.errstate(invalid="ignore", over="ignore"):
        if softcap is None:
            return x / temperature
        return np.where(x == -np.inf, -np.inf, softcap * np.tanh(x / softcap) / temperature)


def slope(x, temperature, softcap):
    """dz/dx: sech(x / c)**2 / T (0 at +-inf), or 1 / T."""
    x = as_float64(x)
    if softcap is None:
        return np.full(x.shape, 1.0 / temperature)
    with np.errstate(over="ignore"):
        return 1.0 / np.cosh(x / softcap) ** 2 / temperature


def map_is_exact(temperature, softcap):
    return softcap is None and math.frexp(temperature)[0] == 0.5


def numpy_reference(x, labels, temperature, softcap, reduction, **kwargs):
    """(loss, grad, term): reference.softmax_ce of the mapped logits, its
    gradient times the map's slope, and its term size times the largest
    slope (1 / T)."""
    z = mapped(x, temperature, softcap)
    kw = {k: as_float64(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    with np.errstate(invalid="ignore"):
        loss, grad_z, term = reference.softmax_ce(z, as_float64(labels), reduction=reduction,
                                                  term_size=True, **kw)
        grad = np.where(grad_z == 0, 0.0, grad_z * slope(x, temperature, softcap))
    return loss, grad, term / temperature


def torch_reference(torch, x, labels, temperature, softcap, reduction, weight=None,
                    sample_weight=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0):
    """(loss, grad) by PyTorch autograd in float64: F.cross_entropy of the
    map, with torch's own reduction where cyce's options are torch's, else
    composed from its per-row losses."""
    F = torch.nn.functional
    x = as_float64(x)
    shape, n_classes = x.shape, x.shape[-1]
    xt = torch.tensor(x.reshape(-1, n_classes), requires_grad=True)
    if softcap is None:
        z = xt / temperature
    else:
        z = torch.where(xt == -math.inf, -math.inf, softcap * torch.tanh(xt / softcap)) / temperature
    labels = np.asarray(labels)
    soft = labels.dtype.kind not in "iu"
    if soft:
        target = torch.tensor(as_float64(labels).reshape(-1, n_classes))
        kept = torch.ones(target.shape[0], dtype=torch.bool)
    else:
        target = torch.tensor(labels.reshape(-1).astype(np.int64))
        kept = target != ignore_index
    w = None if weight is None else torch.tensor(as_float64(weight))
    kw = dict(weight=w, label_smoothing=label_smoothing)
    if not soft:
        kw["ignore_index"] = ignore_index
    if sample_weight is None and z_loss == 0:
        loss = F.cross_entropy(z, target, reduction=reduction, **kw)
    else:
        row = F.cross_entropy(z, target, reduction="none", **kw)
        if z_loss:
            lse = torch.logsumexp(z, dim=-1)
            row = row + torch.where(kept, z_loss * lse**2, torch.zeros_like(lse))
        s = (torch.ones(row.shape[0], dtype=torch.float64) if sample_weight is None
             else torch.tensor(as_float64(sample_weight).reshape(-1)))
        row = s * row
        if reduction == "mean":
            if soft:
                denominator = s.sum()
            else:
                wy = torch.ones_like(s) if w is None else w[torch.where(kept, target, 0)]
                denominator = (s * wy)[kept].sum()
            loss = row.sum() / denominator
        elif reduction == "sum":
            loss = row.sum()
        else:
            loss = row
    (loss.sum() if reduction == "none" else loss).backward()
    value = loss.detach().numpy()
    if reduction == "none":
        value = value.reshape(shape[:-1])
    return value, xt.grad.numpy().reshape(shape)


def map_terms(x, labels, temperature, softcap, reduction, weight=None, sample_weight=None,
              ignore_index=-100, label_smoothing=0.0, z_loss=0.0):
    """(loss_term, grad_term): what rounding z costs the loss (a scalar, or
    per row for "none") and the gradient (per row, broadcasting over the
    classes), in units of the compute dtype's epsilon / MAP_ULPS; zeros
    where the map is exact."""
    x64 = as_float64(x)
    shape, n_classes = x64.shape, x64.shape[-1]
    batch = shape[:-1]
    if map_is_exact(temperature, softcap):
        return (np.zeros(batch) if reduction == "none" else 0.0), np.zeros(batch + (1,))
    z = mapped(x64, temperature, softcap).reshape(-1, n_classes)
    zmax = np.where(np.isfinite(z), np.abs(z), 0.0).max(axis=1)
    t, kept = reference.target_distribution(as_float64(labels), n_classes, label_smoothing,
                                            ignore_index)
    w = np.ones(n_classes) if weight is None else as_float64(weight)
    s = np.ones(len(z)) if sample_weight is None else as_float64(sample_weight).reshape(-1)
    mass = (w * t).sum(axis=1)
    with np.errstate(invalid="ignore"):
        lse = np.abs(reference.logsumexp(z))
    if np.asarray(labels).dtype.kind in "iu":
        flat = np.asarray(labels).reshape(-1)
        denominator = np.sum(s[kept] * w[flat[kept]])
    else:
        denominator = s.sum()
    scale = 1.0 / denominator if reduction == "mean" else 1.0
    weight_of_row = np.where(kept, np.abs(s * scale) * (mass + 2 * z_loss * (1 + 2 * lse)), 0.0)
    row_term = 2 * weight_of_row * zmax
    loss_term = row_term.reshape(batch) if reduction == "none" else float(row_term.sum())
    return loss_term, (row_term / temperature).reshape(batch + (1,))


def assert_mapped(actual, expected, dtype, what, term=0.0, map_term=0.0):
    """conftest.assert_close at the compute dtype (the absolute floor tied
    to the largest |reference| or to term, the size of the terms a
    gradient is a difference of) plus MAP_ULPS epsilons of map_term (an
    array broadcasting to the shape, or a scalar); NaN where the reference
    is NaN and equal infinities."""
    cd = compute_dtype(dtype)
    rtol, atol_factor = tolerance(cd)
    eps = float(np.finfo(cd).eps)
    expected = np.asarray(expected, np.float64)
    actual = np.asarray(actual).astype(np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=f"{what}: NaN")
    inf = np.isinf(expected)
    np.testing.assert_array_equal(actual[inf], expected[inf], err_msg=f"{what}: infinities")
    finite = np.isfinite(expected)
    scale = max(float(np.max(np.abs(expected[finite]), initial=0.0)), float(np.max(term)))
    atol = atol_factor * scale + MAP_ULPS * eps * np.broadcast_to(map_term, expected.shape)
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(actual - expected) <= atol + rtol * np.abs(expected)) & finite
    if bad.any():
        where = np.flatnonzero(bad)[:6]
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} values off the reference: at flat indices "
            f"{where.tolist()} got {actual.reshape(-1)[where].tolist()}, expected "
            f"{expected.reshape(-1)[where].tolist()}, allowed "
            f"{(atol + rtol * np.abs(expected)).reshape(-1)[where].tolist()}")


def check_result(loss, grad, x, reduction):
    """The loss is a scalar of the compute dtype (an array of the batch
    shape for "none"), the gradient an array of the logits' shape and dtype."""
    real = compute_dtype(x.dtype)
    if reduction == "none":
        assert np.shape(loss) == x.shape[:-1]
    else:
        assert isinstance(loss, np.generic)
    assert loss.dtype == real
    assert grad.shape == x.shape and grad.dtype == x.dtype


@pytest.fixture(scope="module")
def torch():
    """torch, on one thread while this module runs: its intra-op threads and
    cyce's OpenMP ones spin against each other on a small machine, making
    each small torch op ten times slower."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


# ----------------------------------------------------------------- the tests

def test_reference_gradient_is_the_derivative_of_its_loss(rng):
    """Guards the NumPy reference's chain rule: central differences of its
    loss, for every map, with every option at once."""
    for (temperature, softcap), option in itertools.product(MAPS, ["everything", "soft_everything"]):
        x, labels, kwargs = make_case(rng, (4, 6), np.float64, option)
        _, grad, _ = numpy_reference(x, labels, temperature, softcap, "mean", **kwargs)
        h = 1e-6
        numeric = np.empty_like(x)
        for idx in np.ndindex(x.shape):
            up, down = x.copy(), x.copy()
            up[idx] += h
            down[idx] -= h
            loss_up = numpy_reference(up, labels, temperature, softcap, "mean", **kwargs)[0]
            loss_down = numpy_reference(down, labels, temperature, softcap, "mean", **kwargs)[0]
            numeric[idx] = (loss_up - loss_down) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_reference_agrees_with_torch(rng, torch):
    """The two references agree (so that either can be trusted where the
    other is not used)."""
    for (temperature, softcap), option, reduction in itertools.product(
            MAPS, ["plain", "everything", "soft_everything"], REDUCTIONS):
        x, labels, kwargs = make_case(rng, (20, 9), np.float64, option)
        loss, grad, _ = numpy_reference(x, labels, temperature, softcap, reduction, **kwargs)
        t_loss, t_grad = torch_reference(torch, x, labels, temperature, softcap, reduction, **kwargs)
        np.testing.assert_allclose(loss, t_loss, rtol=1e-12)
        np.testing.assert_allclose(grad, t_grad, rtol=1e-11, atol=1e-15)


TORCH_SHAPES = [(37, 11), (2, 3, 2100)]


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("logit_map", MAPS, ids=map_id)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_torch_float64(rng, torch, option, logit_map, reduction):
    """float64 logits, every option and reduction, short rows and 3-D
    logits of rows longer than a block: loss and gradient (return_grad)
    against PyTorch autograd at every kernel level, and the loss alone the
    same bits as with the gradient."""
    temperature, softcap = logit_map
    for shape in TORCH_SHAPES:
        x, labels, kwargs = make_case(rng, shape, np.float64, option)
        exp_loss, exp_grad = torch_reference(torch, x, labels, temperature, softcap, reduction,
                                             **kwargs)
        _, _, term = numpy_reference(x, labels, temperature, softcap, reduction, **kwargs)
        loss_term, grad_term = map_terms(x, labels, temperature, softcap, reduction, **kwargs)
        call = dict(reduction=reduction, temperature=temperature, logit_softcap=softcap, **kwargs)
        for level in LEVELS:
            with kernels_of_level(level):
                loss, grad = cyce.softmax_ce(x, labels, return_grad=True, **call)
                check_result(loss, grad, x, reduction)
                assert_mapped(loss, exp_loss, np.float64, f"{level} {shape} loss", 0.0, loss_term)
                assert_mapped(grad, exp_grad, np.float64, f"{level} {shape} grad", term, grad_term)
                alone = cyce.softmax_ce(x, labels, **call)
                assert np.asarray(alone).tobytes() == np.asarray(loss).tobytes(), level


NUMPY_SHAPES = [(130, 32), (33, 1000), (3, 5000)]


@pytest.mark.parametrize("dtype", DTYPES, ids=name_of)
@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("logit_map", MAPS, ids=map_id)
def test_matches_numpy_reference(rng, dtype, option, logit_map):
    """float32 and float64, every option, every reduction, the short-row
    tiles, 1000 classes and rows of several blocks, at every kernel level:
    loss and gradient against the NumPy reference; the loss alone the same
    bits as with the gradient; ignored rows exactly 0."""
    temperature, softcap = logit_map
    for shape in NUMPY_SHAPES:
        x, labels, kwargs = make_case(rng, shape, dtype, option)
        call = dict(temperature=temperature, logit_softcap=softcap, **kwargs)
        for reduction in REDUCTIONS:
            exp_loss, exp_grad, term = numpy_reference(x, labels, temperature, softcap, reduction,
                                                       **kwargs)
            loss_term, grad_term = map_terms(x, labels, temperature, softcap, reduction, **kwargs)
            for level in LEVELS:
                with kernels_of_level(level):
                    loss, grad = cyce.softmax_ce(x, labels, reduction=reduction, return_grad=True,
                                                 **call)
                    what = f"{level} {shape} {reduction}"
                    check_result(loss, grad, x, reduction)
                    assert_mapped(loss, exp_loss, dtype, f"{what} loss", 0.0, loss_term)
                    assert_mapped(grad, exp_grad, dtype, f"{what} grad", term, grad_term)
                    alone = cyce.softmax_ce(x, labels, reduction=reduction, **call)
                    assert np.asarray(alone).tobytes() == np.asarray(loss).tobytes(), what
                    if labels.dtype.kind in "iu":
                        ignored = labels == kwargs.get("ignore_index", -100)
                        assert not grad[ignored].any(), f"{what}: an ignored row's gradient"
                        if reduction == "none":
                            assert not loss[ignored].any(), f"{what}: an ignored row's loss"


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("option", ["plain", "weight", "ignore_index", "smoothing", "soft",
                                    "sample_weight", "z_loss", "everything", "soft_everything"])
@pytest.mark.parametrize("logit_map", [(0.5, None), (3.0, 1.0), (1.0, 30.0)], ids=map_id)
def test_half_precision(rng, half, option, logit_map):
    """float16 and bfloat16 logits (float32 soft targets): a float32 loss
    within float32's tolerance, a gradient of the logits' dtype within
    test_half_precision.check_half's one ulp (plus its allowance where the
    gradient cancels, plus the map's rounding), a float32 grad_out within
    float32's tolerance, the loss alone the same bits, at every level."""
    dtype = half_dtype(half)
    from test_half_precision import check_half
    temperature, softcap = logit_map
    for shape in [(130, 32), (33, 1000)]:
        x, labels, kwargs = make_case(rng, shape, dtype, option)
        call = dict(temperature=temperature, logit_softcap=softcap, **kwargs)
        for reduction in REDUCTIONS:
            exp_loss, exp_grad, term = numpy_reference(x, labels, temperature, softcap, reduction,
                                                       **kwargs)
            loss_term, grad_term = map_terms(x, labels, temperature, softcap, reduction, **kwargs)
            allowance = (term if option in CANCELLING else 0.0) + grad_term * MAP_ULPS / 16
            for level in LEVELS:
                with kernels_of_level(level):
                    what = f"{level} {shape} {reduction}"
                    loss, grad = cyce.softmax_ce(x, labels, reduction=reduction, return_grad=True,
                                                 **call)
                    check_result(loss, grad, x, reduction)
                    assert_mapped(loss, exp_loss, np.float32, f"{what} loss", 0.0, loss_term)
                    check_half(grad, exp_grad, dtype, f"{what} grad", allowance)
                    alone = cyce.softmax_ce(x, labels, reduction=reduction, **call)
                    assert np.asarray(alone).tobytes() == np.asarray(loss).tobytes(), what
                    master = np.full(shape, np.nan, np.float32)
                    loss32, got = cyce.softmax_ce(x, labels, reduction=reduction, grad_out=master,
                                                  **call)
                    assert got is master
                    assert_mapped(loss32, exp_loss, np.float32, f"{what} loss", 0.0, loss_term)
                    assert_mapped(master, exp_grad, np.float32, f"{what} float32 grad_out", term,
                                  grad_term)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("option", ["plain", "everything", "soft_everything"])
@pytest.mark.parametrize("logit_map", [(3.0, 30.0), (0.5, None)], ids=map_id)
def test_inplace_and_grad_out(kernel_build, rng, dtype, option, logit_map):
    """inplace=True overwrites the logits with the gradient and returns
    them; grad_out= a buffer, and grad_out=the logits, receive it: the same
    bits as return_grad=True, for every reduction."""
    dtype = np.dtype(dtype) if dtype in ("float32", "float64") else half_dtype(dtype)
    temperature, softcap = logit_map
    x, labels, kwargs = make_case(rng, (40, 2100), dtype, option)
    call = dict(temperature=temperature, logit_softcap=softcap, **kwargs)
    for reduction in REDUCTIONS:
        expected_loss, expected_grad = cyce.softmax_ce(x, labels, reduction=reduction,
                                                       return_grad=True, **call)
        exp_loss, exp_grad, term = numpy_reference(x, labels, temperature, softcap, reduction,
                                                   **kwargs)
        if dtype in (np.float32, np.float64):
            loss_term, grad_term = map_terms(x, labels, temperature, softcap, reduction, **kwargs)
            assert_mapped(expected_grad, exp_grad, dtype, "grad", term, grad_term)
        buffer = x.copy()
        loss, grad = cyce.softmax_ce(buffer, labels, reduction=reduction, inplace=True, **call)
        assert grad is buffer
        assert np.asarray(loss).tobytes() == np.asarray(expected_loss).tobytes()
        assert grad.tobytes() == expected_grad.tobytes()
        out = np.full_like(x, np.nan)
        loss, grad = cyce.softmax_ce(x, labels, reduction=reduction, grad_out=out, **call)
        assert grad is out and out.tobytes() == expected_grad.tobytes()
        assert np.asarray(loss).tobytes() == np.asarray(expected_loss).tobytes()
        buffer = x.copy()
        loss, grad = cyce.softmax_ce(buffer, labels, reduction=reduction, grad_out=buffer, **call)
        assert grad is buffer and buffer.tobytes() == expected_grad.tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("logit_map", [(1.0, 5.0), (0.5, 30.0), (0.7, None)], ids=map_id)
def test_rows_whose_gradient_waits(kernel_build, rng, dtype, logit_map):
    """A row's gradient pass may wait for the next row's block passes (float
    rows at the AVX-512 level): rows of three blocks, six rows a task,
    ignored rows alone and two in a row, at a task's start, in its middle
    and at its end, and the label in every block.  Each row's gradient
    against the float64 reference, in place and into a new array with the
    same bits, and every row alone (a task of one row, which never waits)
    with the same bits as within the batch."""
    dtype = np.dtype(dtype) if dtype in ("float32", "float64") else half_dtype(dtype)
    temperature, softcap = logit_map
    rows, n = 48, 5000
    x = (rng.standard_normal((rows, n)) * 6).astype(dtype)
    labels = rng.integers(0, n, rows)
    labels[:12] = [10, 2100, 4999, 4096, 4095, 2047, 2048, 0, 4500, 1, 3000, 4998]
    labels[[1, 2, 7, 11, 12, 30, 47]] = -100
    call = dict(temperature=temperature, logit_softcap=softcap, reduction="sum")
    loss, grad = cyce.softmax_ce(x, labels, return_grad=True, **call)
    exp_loss, exp_grad, term = numpy_reference(x, labels, temperature, softcap, "sum")
    if dtype in (np.float32, np.float64):
        loss_term, grad_term = map_terms(x, labels, temperature, softcap, "sum")
        assert_mapped(grad, exp_grad, dtype, "grad", term, grad_term)
        assert_mapped(loss, exp_loss, dtype, "loss", 0.0, loss_term)
    assert not grad[labels == -100].any()
    buffer = x.copy()
    cyce.softmax_ce(buffer, labels, inplace=True, **call)
    assert buffer.tobytes() == grad.tobytes()
    for i in (0, 3, 5, 6, 13, 46):
        alone = cyce.softmax_ce(x[i:i + 1], labels[i:i + 1], return_grad=True, **call)[1]
        assert alone.tobytes() == grad[i:i + 1].tobytes(), i
    if dtype not in (np.float32, np.float64):
        # a half input's float32 gradient waits as float32's does
        master = np.empty(x.shape, np.float32)
        cyce.softmax_ce(x, labels, grad_out=master, **call)
        assert_mapped(master, exp_grad, np.float32, "float32 grad_out", term,
                      map_terms(x, labels, temperature, softcap, "sum")[1])
        for i in (0, 5, 13):
            alone = np.empty((1, n), np.float32)
            cyce.softmax_ce(x[i:i + 1], labels[i:i + 1], grad_out=alone, **call)
            assert alone.tobytes() == master[i:i + 1].tobytes(), i


@pytest.mark.parametrize("dtype", DTYPES, ids=name_of)
@pytest.mark.parametrize("logit_map", [(1.0, 30.0), (3.0, 1.0), (0.5, 30.0), (3.0, None)], ids=map_id)
def test_masked_logits(kernel_build, rng, dtype, logit_map):
    """-inf logits (with a softcap: tanh(-inf / c) = -1, but the class
    stays masked) have probability 0 and get a gradient of exactly 0, not
    NaN, for class indices (weights, ignored rows, sample weights) and for
    probabilities that give them no mass; whole blocks masked; a label on
    a masked class costs +inf.  All against the reference."""
    temperature, softcap = logit_map
    n = 5000
    x = (rng.standard_normal((12, n)) * 4).astype(dtype)
    mask = rng.random(x.shape) < 0.25
    mask[3, :2048] = True
    mask[4, 2048:4096] = True
    mask[5, :] = True
    mask[5, 4999] = False                     # one class left
    x[mask] = -np.inf
    labels = np.array([np.flatnonzero(~row)[k % int((~row).sum())] for k, row in enumerate(mask)])
    labels[[1, 7]] = -100
    weight = rng.uniform(0.2, 2.0, n)
    sample_weight = rng.uniform(0.5, 2.0, 12)
    t = np.where(mask, 0.0, rng.random(x.shape))
    t = (t / t.sum(axis=1, keepdims=True)).astype(dtype)
    call = dict(temperature=temperature, logit_softcap=softcap)
    for target, kwargs in [(labels, {}), (labels, dict(weight=weight, sample_weight=sample_weight)),
                           (t, {}), (t, dict(weight=weight, z_loss=1e-3))]:
        for reduction in REDUCTIONS:
            loss, grad = cyce.softmax_ce(x, target, reduction=reduction, return_grad=True,
                                         **call, **kwargs)
            assert np.isfinite(loss).all() and np.isfinite(grad).all()
            assert not grad[mask].any()
            exp_loss, exp_grad, term = numpy_reference(x, target, temperature, softcap, reduction,
                                                       **kwargs)
            loss_term, grad_term = map_terms(x, target, temperature, softcap, reduction, **kwargs)
            assert_mapped(loss, exp_loss, dtype, f"{reduction} loss", 0.0, loss_term)
            assert_mapped(grad, exp_grad, dtype, f"{reduction} grad", term, grad_term)
    inplace = x.copy()
    cyce.softmax_ce(inplace, labels, inplace=True, **call)
    assert not inplace[mask].any() and np.isfinite(inplace).all()
    on_mask = labels.copy()
    on_mask[0] = np.flatnonzero(mask[0])[0]
    losses = cyce.softmax_ce(x, on_mask, reduction="none", **call)
    assert losses[0] == np.inf and np.isfinite(losses[2:]).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=name_of)
def test_softcap_of_each_logit(kernel_build, dtype):
    """The softcap and its slope element by element, on both sides of the
    switch between the polynomial and the exp (|x / c| = 0.625), in vectors
    that hold one side, the other or both: a row of one class has lse = z
    (softmax_stats), and with z_loss = 1/2 and the sum its gradient is z
    times the slope.  Within 8 ulp of float64 tanh (the slope: times its
    condition number)."""
    cap = 30.0
    rng = np.random.default_rng(7)
    near = cap * 0.625 * (1 + np.array([-3e-7, -1e-7, 0.0, 1e-7, 3e-7]))
    x = np.concatenate([
        rng.uniform(-0.6, 0.6, 64) * cap,             # the polynomial alone
        rng.uniform(0.7, 12.0, 64) * cap,             # the exp alone
        rng.uniform(-3.0, 3.0, 67) * cap,             # mixed, and a partial vector
        near, -near, [0.0, -0.0, 1e-30, -1e-38, 1e-3, 9.0 * cap, -40.0 * cap, 1e30, np.inf],
    ]).astype(dtype)
    y = x.astype(np.float64) / cap
    z64 = cap * np.tanh(y)
    e = np.exp(-2 * np.abs(y))
    slope64 = 4 * e / (1 + e) ** 2
    ulp = 8 * np.finfo(dtype).eps
    stats = cyce.softmax_stats(x[:, None], logit_softcap=cap)
    np.testing.assert_allclose(stats.lse, z64, rtol=ulp, atol=ulp * 1e-30)
    _, grad = cyce.softmax_ce(x[:, None], np.zeros(x.size, np.int64), reduction="sum",
                              z_loss=0.5, return_grad=True, logit_softcap=cap)
    # the slope's condition number is 2 |y|: x / c rounded once moves it so
    error = np.abs(grad[:, 0] - z64 * slope64)
    bound = 2 * ulp * (1 + 2 * np.minimum(np.abs(y), 1e6)) * np.abs(z64 * slope64) + cap * ulp * 1e-30
    assert (error <= bound).all(), (x[error > bound], grad[error > bound, 0])


@pytest.mark.parametrize("dtype", DTYPES, ids=name_of)
def test_special_logits(kernel_build, dtype, torch):
    """NaN stays in its row (NaN loss and gradient, as torch.tanh(nan));
    +inf with a softcap is the finite c / T with slope 0 there; without
    one, a +inf row is NaN; 1e30 logits with a softcap give a finite loss
    and gradient: all as PyTorch autograd."""
    x = np.array([[0.5, np.nan, 2.0, -1.0],
                  [np.inf, 1.0, 2.0, 0.0],
                  [1e30, -1e30, 0.0, 2e30],
                  [-1e30, -1e30, 1e-3, -1e30],
                  [3.0, -np.inf, np.inf, 1.0],
                  [1.0, 2.0, 3.0, 4.0]], dtype=dtype)
    labels = np.array([0, 1, 3, 2, 0, 1])
    for temperature, softcap in [(1.0, 30.0), (3.0, 1.0), (0.5, 30.0)]:
        call = dict(temperature=temperature, logit_softcap=softcap)
        loss, grad = cyce.softmax_ce(x, labels, reduction="none", return_grad=True, **call)
        assert np.isnan(loss[0]) and np.isnan(grad[0]).all()
        assert np.isfinite(loss[1:]).all() and np.isfinite(grad[1:]).all()
        assert grad[1, 0] == 0 and grad[4, 2] == 0 and grad[4, 1] == 0
        exp_loss, exp_grad = torch_reference(torch, x, labels, temperature, softcap, "none")
        _, _, term = numpy_reference(x[1:], labels[1:], temperature, softcap, "none")
        loss_term, grad_term = map_terms(x[1:], labels[1:], temperature, softcap, "none")
        assert_mapped(loss[1:], exp_loss[1:], dtype, f"{call} loss", 0.0, loss_term)
        assert_mapped(grad[1:], exp_grad[1:], dtype, f"{call} grad", term, grad_term)
        assert np.isnan(cyce.softmax_ce(x, labels, **call))
        mean = cyce.softmax_ce(x[1:], labels[1:], **call)
        assert_mapped(mean, torch_reference(torch, x[1:], labels[1:], temperature, softcap, "mean")[0],
                      dtype, "mean", 0.0, map_terms(x[1:], labels[1:], temperature, softcap, "mean")[0])
    loss, grad = cyce.softmax_ce(x, labels, reduction="none", return_grad=True, temperature=3.0)
    assert np.isnan(loss[[0, 1, 4]]).all() and np.isnan(grad[[0, 1, 4]]).all()
    assert np.isfinite(loss[[2, 3, 5]]).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=name_of)
def test_one_dimensional_logits(rng, dtype):
    x = (rng.standard_normal(11) * 4).astype(dtype)
    for temperature, softcap in MAPS:
        call = dict(temperature=temperature, logit_softcap=softcap)
        loss, grad = cyce.softmax_ce(x, 4, return_grad=True, **call)
        assert isinstance(loss, np.generic) and grad.shape == (11,)
        exp_loss, exp_grad, term = numpy_reference(x[None], np.array([4]), temperature, softcap, "mean")
        loss_term, grad_term = map_terms(x[None], np.array([4]), temperature, softcap, "mean")
        assert_mapped(loss, exp_loss, dtype, "loss", 0.0, loss_term)
        assert_mapped(grad, exp_grad[0], dtype, "grad", term, grad_term[0])
        assert cyce.softmax_ce(x, np.int64(4), reduction="none", **call).shape == ()


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("option", ["plain", "everything", "soft_everything"])
def test_identity_map_is_the_plain_loss(kernel_build, rng, dtype, option):
    """temperature=1 (float, int or NumPy float) with logit_softcap=None is
    the call without them, bit for bit, loss and gradient, short rows and
    long."""
    dtype = np.dtype(dtype) if dtype in ("float32", "float64") else half_dtype(dtype)
    for shape in [(130, 32), (7, 5000)]:
        x, labels, kwargs = make_case(rng, shape, dtype, option)
        for reduction in REDUCTIONS:
            plain = cyce.softmax_ce(x, labels, reduction=reduction, return_grad=True, **kwargs)
            for identity in (dict(temperature=1.0, logit_softcap=None), dict(temperature=1),
                             dict(temperature=np.float64(1.0)), dict(logit_softcap=None)):
                loss, grad = cyce.softmax_ce(x, labels, reduction=reduction, return_grad=True,
                                             **identity, **kwargs)
                assert np.asarray(loss).tobytes() == np.asarray(plain[0]).tobytes(), identity
                assert grad.tobytes() == plain[1].tobytes(), identity


@pytest.mark.parametrize("dtype", DTYPES, ids=name_of)
@pytest.mark.parametrize("option", ["plain", "everything", "soft_everything"])
@pytest.mark.parametrize("logit_map", [(3.0, 30.0), (0.5, None)], ids=map_id)
def test_same_bits_for_any_thread_count(kernel_build, rng, dtype, option, logit_map):
    """1, 2 and 3 threads give the same bits, loss (every reduction) and
    gradient, for inputs large enough to be split."""
    temperature, softcap = logit_map
    for shape in [(1001, 37), (9, 5000)]:
        x, labels, kwargs = make_case(rng, shape, dtype, option)
        for reduction in REDUCTIONS:
            results = [cyce.softmax_ce(x, labels, reduction=reduction, return_grad=True,
                                       temperature=temperature, logit_softcap=softcap,
                                       num_threads=threads, **kwargs) for threads in (1, 2, 3)]
            for loss, grad in results[1:]:
                assert np.asarray(loss).tobytes() == np.asarray(results[0][0]).tobytes()
                assert grad.tobytes() == results[0][1].tobytes()


# ------------------------------------------------------------- bad inputs

BAD_MAPS = {
    "temperature 0": (dict(temperature=0.0), ValueError, r"temperature must be a finite number > 0"),
    "temperature int 0": (dict(temperature=0), ValueError, r"temperature.*0"),
    "temperature -1": (dict(temperature=-1.0), ValueError, r"temperature.*-1"),
    "temperature nan": (dict(temperature=float("nan")), ValueError, r"temperature.*nan"),
    "temperature inf": (dict(temperature=float("inf")), ValueError, r"temperature.*inf"),
    "temperature '1'": (dict(temperature="1"), TypeError, r"temperature must be a real number"),
    "temperature None": (dict(temperature=None), TypeError, r"temperature must be a real number"),
    "softcap 0": (dict(logit_softcap=0.0), ValueError, r"logit_softcap must be a finite number > 0"),
    "softcap -2": (dict(logit_softcap=-2.0), ValueError, r"logit_softcap.*-2"),
    "softcap nan": (dict(logit_softcap=float("nan")), ValueError, r"logit_softcap.*nan"),
    "softcap inf": (dict(logit_softcap=float("inf")), ValueError, r"logit_softcap.*inf"),
    "softcap '30'": (dict(logit_softcap="30"), TypeError, r"logit_softcap must be a real number"),
    "both bad": (dict(temperature=-1.0, logit_softcap=0.0), ValueError, r"temperature"),
}


@pytest.mark.parametrize("case", sorted(BAD_MAPS))
@pytest.mark.parametrize("how", ["inplace", "grad_out", "return_grad"])
@pytest.mark.parametrize("target", ["labels", "probabilities"])
def test_bad_map_changes_nothing(case, how, target):
    """A bad temperature or softcap raises, naming the argument, before
    anything is written: in-place logits, a grad_out buffer, the labels
    and the weights are bit for bit what they were."""
    rng = np.random.default_rng(1)
    kwargs, error, pattern = BAD_MAPS[case]
    x = rng.standard_normal((6, 40)).astype(np.float32)
    labels = rng.integers(0, 40, 6)
    if target == "probabilities":
        labels = rng.random((6, 40)).astype(np.float32)
        labels /= labels.sum(axis=1, keepdims=True)
    weight = rng.uniform(0.5, 2.0, 40)
    call = dict(weight=weight, **kwargs)
    grad_out = np.full_like(x, 7.0)
    if how == "inplace":
        call["inplace"] = True
    elif how == "grad_out":
        call["grad_out"] = grad_out
    else:
        call["return_grad"] = True
    arrays = [x, labels, weight, grad_out]
    before = [a.copy() for a in arrays]
    with pytest.raises(error, match=pattern):
        cyce.softmax_ce(x, labels, **call)
    for a, b in zip(arrays, before):
        assert a.tobytes() == b.tobytes()


# ------------------------------------------- maps beyond float32's range

# The map's constants out of float32's range are a ValueError for float32
# logits (float64 logits hold them); logits whose x / T alone would overflow
# float32 are computed (the temperature divides x - max).
CONSTANTS_OUT_OF_RANGE = [(1e-39, None, "temperature"), (1.0, 1e40, "logit_softcap"),
                          (1.0, 1e-39, "logit_softcap")]


@pytest.mark.parametrize("temperature, softcap, name", CONSTANTS_OUT_OF_RANGE)
def test_map_constants_beyond_float32_are_rejected(temperature, softcap, name):
    x = np.array([[0.0, 1.0, -2.0, 3.0]], np.float32)
    saved = x.copy()
    with pytest.raises(ValueError, match=name):
        cyce.softmax_ce(x, [3], temperature=temperature, logit_softcap=softcap, inplace=True)
    np.testing.assert_array_equal(x, saved)
    loss, grad = cyce.softmax_ce(x.astype(np.float64), [3], reduction="none", return_grad=True,
                                 temperature=temperature, logit_softcap=softcap)
    exp_loss, exp_grad, term = numpy_reference(x.astype(np.float64), np.array([3]), temperature,
                                               softcap, "none")
    assert_mapped(loss, exp_loss, np.float64, "loss")
    assert_mapped(grad, exp_grad, np.float64, "grad", term)


@pytest.mark.parametrize("row", [[3e38, 0.0, 3e38, -1.0], [-3e38, 3e38, 1.0, 2.0]])
def test_logits_whose_quotient_overflows_float32(row):
    x = np.array([row], np.float32)
    labels = np.array([int(np.argmax(row))])
    exp_loss, exp_grad, term = numpy_reference(x, labels, 0.5, None, "none")
    loss, grad = cyce.softmax_ce(x, labels, reduction="none", return_grad=True, temperature=0.5)
    assert_mapped(loss, exp_loss, np.float32, "loss")
    assert_mapped(grad, exp_grad, np.float32, "grad", term)
