"""softmax_ce against the NumPy float64 reference (tests/reference.py).

Tolerances are README.md's "Accuracy" promise: float32 within 1e-5 relative,
float64 1e-12 (conftest.tolerance).
"""

import itertools
import threading
import tracemalloc

import numpy as np
import pytest

import cyce
import reference
from conftest import assert_close

# Rows of up to 32 classes are computed 64 at a time (the short-row tiles of
# cyce_rows_template.h): (130, 32) is two full tiles and a partial one at the
# widest short row, (70, 33) the narrowest long row.
SHAPES = [(1, 2), (7, 3), (64, 10), (3, 5, 17), (130, 32), (70, 33), (33, 1000), (4, 300000)]
DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


def make_case(rng, shape, dtype, option):
    """Logits, labels and keyword arguments for one option of the contract."""
    n_classes = shape[-1]
    batch = shape[:-1]
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    labels = rng.integers(0, n_classes, size=batch)
    kwargs = {}
    if option == "weight":
        kwargs["weight"] = rng.uniform(0.1, 2.0, n_classes)
    elif option == "ignore_index":
        labels.reshape(-1)[::3] = -100
    elif option == "ignore_class":
        kwargs["ignore_index"] = 0
    elif option == "smoothing":
        kwargs["label_smoothing"] = 0.2
    elif option == "soft":
        t = rng.random(shape)
        labels = (t / t.sum(axis=-1, keepdims=True)).astype(dtype)
    elif option == "sample_weight":
        kwargs["sample_weight"] = rng.uniform(0.0, 3.0, batch)
    elif option == "z_loss":
        kwargs["z_loss"] = 1e-3
    elif option == "everything":
        kwargs.update(weight=rng.uniform(0.1, 2.0, n_classes), label_smoothing=0.1,
                      sample_weight=rng.uniform(0.5, 2.0, batch), z_loss=1e-4)
        labels.reshape(-1)[::4] = -100
    elif option == "soft_everything":
        t = rng.random(shape)
        labels = (t / t.sum(axis=-1, keepdims=True)).astype(dtype)
        kwargs.update(weight=rng.uniform(0.1, 2.0, n_classes), label_smoothing=0.3,
                      sample_weight=rng.uniform(0.5, 2.0, batch), z_loss=1e-3)
    return x, labels, kwargs


OPTIONS = ["plain", "weight", "ignore_index", "ignore_class", "smoothing", "soft",
           "sample_weight", "z_loss", "everything", "soft_everything"]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", OPTIONS)
def test_matches_reference(kernel_build, rng, shape, dtype, reduction, option):
    if shape[-1] >= 300000 and option not in ("plain", "everything", "soft"):
        pytest.skip("the widest shape runs the three broadest options only")
    x, labels, kwargs = make_case(rng, shape, dtype, option)
    expected_loss, expected_grad, term_size = reference.softmax_ce(
        x, labels, reduction=reduction, term_size=True, **kwargs)
    loss, grad = cyce.softmax_ce(x, labels, reduction=reduction, return_grad=True, **kwargs)
    assert grad.dtype == x.dtype and grad.shape == x.shape
    if reduction == "none":
        assert loss.shape == shape[:-1] and loss.dtype == x.dtype
    else:
        assert isinstance(loss, np.generic) and loss.dtype == x.dtype
    assert_close(loss, expected_loss, dtype, "loss")
    assert_close(grad, expected_grad, dtype, "grad", term_size)
    # The loss alone (a different kernel path: no stores) agrees bit for bit.
    loss_only = cyce.softmax_ce(x, labels, reduction=reduction, **kwargs)
    np.testing.assert_array_equal(loss_only, loss)


def test_reference_gradient_is_the_derivative_of_its_loss(rng):
    """Guards the reference itself: central differences of its loss."""
    x, labels, kwargs = make_case(rng, (4, 6), np.float64, "everything")
    _, grad = reference.softmax_ce(x, labels, **kwargs)
    h = 1e-6
    numeric = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (reference.softmax_ce(up, labels, **kwargs)[0]
                        - reference.softmax_ce(down, labels, **kwargs)[0]) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("label_dtype", [np.int8, np.int16, np.int32, np.int64,
                                         np.uint8, np.uint16, np.uint32, np.uint64])
def test_every_integer_label_dtype(rng, dtype, label_dtype):
    x = rng.standard_normal((50, 9)).astype(dtype)
    labels = rng.integers(0, 9, 50).astype(label_dtype)
    expected = cyce.softmax_ce(x, labels.astype(np.int64), return_grad=True)
    got = cyce.softmax_ce(x, labels, return_grad=True)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_unsigned_labels_with_ignore_index_in_range(rng):
    x = rng.standard_normal((6, 4))
    labels = np.array([0, 255, 3, 255, 1, 2], dtype=np.uint8)
    loss, grad = cyce.softmax_ce(x, labels, ignore_index=255, return_grad=True)
    exp_loss, exp_grad = reference.softmax_ce(x, labels.astype(np.int64), ignore_index=255)
    assert_close(loss, exp_loss, np.float64)
    assert_close(grad, exp_grad, np.float64)
    assert not grad[1].any() and not grad[3].any()


def test_one_dimensional_logits_are_one_sample(rng):
    x = rng.standard_normal(11)
    loss, grad = cyce.softmax_ce(x, 4, return_grad=True)
    exp_loss, exp_grad = reference.softmax_ce(x[None], np.array([4]))
    assert_close(loss, exp_loss, np.float64)
    assert_close(grad, exp_grad[0], np.float64)
    assert grad.shape == (11,)
    none = cyce.softmax_ce(x, np.int64(4), reduction="none")
    assert none.shape == ()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_batch(reduction):
    x = np.zeros((0, 5), dtype=np.float32)
    loss, grad = cyce.softmax_ce(x, np.zeros(0, dtype=np.int64), reduction=reduction,
                                 return_grad=True)
    assert grad.shape == (0, 5)
    if reduction == "mean":
        assert np.isnan(loss)  # 0 / 0, as in PyTorch
    elif reduction == "sum":
        assert loss == 0
    else:
        assert loss.shape == (0,)


def test_all_ignored_mean_is_nan_and_gradient_zero():
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    loss, grad = cyce.softmax_ce(x, [-100, -100, -100], return_grad=True)
    assert np.isnan(loss)
    assert not grad.any()
    assert cyce.softmax_ce(x, [-100, -100, -100], reduction="sum") == 0


# ---------------------------------------------------------------- the edges

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_huge_logits_against_mpmath(kernel_build, dtype):
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 60
    big = 3e38 if dtype == np.float32 else 1e300
    rows = np.array([
        [1e30, -1e30, 0.0, 5.0],
        [-1e30, -1e30, -1e30 + 1e24, -1e30],
        [big, 0.0, -big, 1.0],
        [big, big, -big, big],
        [1e-30, -1e-38, 3e-39, 0.0],
    ], dtype=dtype)
    for label in range(4):
        labels = np.full(rows.shape[0], label)
        losses, grad = cyce.softmax_ce(rows, labels, reduction="none", return_grad=True)
        for i, row in enumerate(rows):
            values = [mpmath.mpf(float(v)) for v in row]
            top = max(values)
            log_sum = mpmath.log(mpmath.fsum(mpmath.exp(v - top) for v in values))
            expected = log_sum + (top - values[label])  # exact at 60 digits: no 1e300 + small
            p = [mpmath.exp((v - top) - log_sum) for v in values]
            expected_grad = [float(pc) - (1.0 if c == label else 0.0) for c, pc in enumerate(p)]
            with np.errstate(over="ignore"):
                expected_loss = dtype(float(expected))  # may overflow to inf, correctly
            rtol = 1e-6 if dtype == np.float32 else 1e-13
            if np.isinf(expected_loss):
                assert losses[i] == expected_loss
            else:
                np.testing.assert_allclose(losses[i], expected_loss, rtol=rtol, atol=1e-30)
            np.testing.assert_allclose(grad[i], expected_grad, rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_minus_inf_masks_classes_exactly(kernel_build, dtype):
    x = np.array([[0.5, -np.inf, 2.0, -np.inf], [1.0, 2.0, 3.0, 4.0]], dtype=dtype)
    masked = np.array([[0.5, 2.0], [1.0, 2.0]], dtype=dtype)
    loss, grad = cyce.softmax_ce(x, [2, 1], reduction="none", return_grad=True)
    loss_ref = cyce.softmax_ce(x[:, [0, 2]][:1], [1], reduction="none")
    assert loss[0] == loss_ref[0]
    assert grad[0, 1] == 0 and grad[0, 3] == 0
    exp_loss, exp_grad = reference.softmax_ce(x, np.array([2, 1]), reduction="none")
    assert_close(loss, exp_loss, dtype)
    assert_close(grad, exp_grad, dtype)
    # soft targets that give a masked class no mass: 0 * log 0 = 0
    t = np.array([[0.25, 0.0, 0.75, 0.0]], dtype=dtype)
    soft_loss = cyce.softmax_ce(x[:1], t, reduction="none")
    assert np.isfinite(soft_loss).all()
    assert_close(soft_loss, reference.softmax_ce(x[:1], t, reduction="none")[0], dtype)
    # a label on a masked class costs +inf
    assert cyce.softmax_ce(x[:1], [1]) == np.inf
    del masked


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_nan_stays_in_its_row(kernel_build, dtype):
    x = np.random.default_rng(3).standard_normal((4, 6)).astype(dtype)
    x[1, 4] = np.nan
    x[3, :] = -np.inf  # an all -inf row has no distribution: NaN, as in PyTorch
    loss, grad = cyce.softmax_ce(x, [0, 1, 2, 3], reduction="none", return_grad=True)
    assert np.isnan(loss[1]) and np.isnan(loss[3])
    assert np.isnan(grad[1]).all() and np.isnan(grad[3]).all()
    assert np.isfinite(loss[[0, 2]]).all() and np.isfinite(grad[[0, 2]]).all()
    assert np.isnan(cyce.softmax_ce(x, [0, 1, 2, 3]))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_strided_fortran_and_leading_dims(rng, dtype):
    base = rng.standard_normal((8, 5, 22)).astype(dtype)
    labels = rng.integers(0, 11, (8, 5))
    strided = base[:, :, ::2]
    fortran = np.asfortranarray(strided)
    contiguous = np.ascontiguousarray(strided)
    expected = cyce.softmax_ce(contiguous, labels, return_grad=True)
    for x in (strided, fortran):
        got = cyce.softmax_ce(x, labels, return_grad=True)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    exp_loss, exp_grad = reference.softmax_ce(contiguous, labels)
    assert_close(expected[0], exp_loss, dtype)
    assert_close(expected[1], exp_grad, dtype)
    soft = rng.random(strided.shape)[..., ::-1]  # strided, negative steps
    assert_close(cyce.softmax_ce(strided, soft.astype(dtype)),
                 reference.softmax_ce(contiguous, soft.astype(dtype))[0], dtype)


def test_soft_targets_of_the_other_dtype(rng):
    x = rng.standard_normal((20, 7)).astype(np.float32)
    t = rng.random((20, 7))
    t /= t.sum(axis=1, keepdims=True)
    got32 = cyce.softmax_ce(x, t.astype(np.float32), return_grad=True)
    got64 = cyce.softmax_ce(x, t, return_grad=True)
    exp_loss, exp_grad = reference.softmax_ce(x, t)
    for loss, grad in (got32, got64):
        assert_close(loss, exp_loss, np.float32)
        assert_close(grad, exp_grad, np.float32)


# ------------------------------------------------------ in place, grad_out

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("option", ["plain", "everything", "soft_everything"])
def test_inplace_returns_logits_as_gradient(rng, dtype, option):
    x, labels, kwargs = make_case(rng, (40, 300), dtype, option)
    expected = cyce.softmax_ce(x, labels, return_grad=True, **kwargs)
    buffer = x.copy()
    loss, grad = cyce.softmax_ce(buffer, labels, inplace=True, **kwargs)
    assert grad is buffer
    np.testing.assert_array_equal(loss, expected[0])
    np.testing.assert_array_equal(grad, expected[1])
    out = np.empty_like(x)
    loss2, grad2 = cyce.softmax_ce(x, labels, grad_out=out, **kwargs)
    assert grad2 is out
    np.testing.assert_array_equal(grad2, expected[1])
    buffer = x.copy()
    loss3, grad3 = cyce.softmax_ce(buffer, labels, grad_out=buffer, **kwargs)
    assert grad3 is buffer
    np.testing.assert_array_equal(grad3, expected[1])


def test_inplace_allocates_nothing_of_the_logits_size(rng):
    x = rng.standard_normal((512, 2000)).astype(np.float32)
    labels = rng.integers(0, 2000, 512)
    weight = rng.random(2000)
    cyce.softmax_ce(x.copy(), labels, inplace=True)  # warm up imports and caches
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        cyce.softmax_ce(x, labels, weight=weight, label_smoothing=0.1, inplace=True)
        peak_inplace = tracemalloc.get_traced_memory()[1] - start
        x2 = rng.standard_normal((512, 2000)).astype(np.float32)
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        _, grad = cyce.softmax_ce(x2, labels, return_grad=True)
        peak_grad = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert peak_inplace < x.nbytes / 50, peak_inplace
    assert grad.nbytes <= peak_grad < grad.nbytes + x.nbytes / 50, peak_grad


def test_failed_inplace_call_leaves_logits_untouched(rng):
    x = rng.standard_normal((30, 8)).astype(np.float32)
    before = x.copy()
    labels = rng.integers(0, 8, 30)
    labels[29] = 8  # the very last row is bad: found before anything is written
    with pytest.raises(IndexError, match=r"labels\[29\] = 8"):
        cyce.softmax_ce(x, labels, inplace=True)
    bad_weight = np.ones(8)
    bad_weight[5] = np.nan
    with pytest.raises(ValueError, match=r"weight\[5\]"):
        cyce.softmax_ce(x, labels % 8, weight=bad_weight, inplace=True)
    t = np.full((30, 8), 1 / 8, dtype=np.float32)
    t[17, 3] = 1.5
    with pytest.raises(ValueError, match=r"labels\[17, 3\] = 1.5"):
        cyce.softmax_ce(x, t, inplace=True)
    np.testing.assert_array_equal(x.view(np.uint32), before.view(np.uint32))


# ---------------------------------------------------------- determinism

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("option", ["plain", "everything", "soft_everything"])
def test_same_bits_for_any_thread_count(kernel_build, rng, dtype, option):
    x, labels, kwargs = make_case(rng, (1001, 37), dtype, option)
    results = []
    for threads in (1, 2, 3):
        for reduction in REDUCTIONS:
            results.append((threads, reduction, cyce.softmax_ce(
                x, labels, reduction=reduction, return_grad=True, num_threads=threads, **kwargs)))
    for (t1, r1, (l1, g1)), (t2, r2, (l2, g2)) in itertools.combinations(results, 2):
        if r1 == r2:
            assert np.array_equal(l1, l2, equal_nan=True), (t1, t2, r1)
            assert np.array_equal(g1.view(np.uint8), g2.view(np.uint8)), (t1, t2, r1)


def test_concurrent_calls_match_serial(rng):
    cases = [make_case(rng, (300, 500), np.float32, opt) for opt in OPTIONS]
    serial = [cyce.softmax_ce(x, y, return_grad=True, **kw) for x, y, kw in cases]
    results = [None] * (len(cases) * 3)

    def work(slot):
        x, y, kw = cases[slot % len(cases)]
        results[slot] = cyce.softmax_ce(x, y, return_grad=True, num_threads=2, **kw)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for slot, (loss, grad) in enumerate(results):
        exp_loss, exp_grad = serial[slot % len(cases)]
        np.testing.assert_array_equal(loss, exp_loss)
        np.testing.assert_array_equal(grad, exp_grad)


@pytest.mark.parametrize("n_rows", [1, 63, 64, 65, 200])
@pytest.mark.parametrize("n_classes", [1, 2, 5, 31, 32, 33])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_short_rows_across_tile_boundaries(kernel_build, rng, n_rows, n_classes, dtype):
    """Short rows go through the tile kernel, 64 rows at a time: every row
    of a partial tile, and the rows around the edges of a tile, agree with
    the reference, with ignored rows and the edges of the contract (a NaN
    row, -inf masks, +-1e30) among them, which must not leak into the
    rows that share their tile."""
    x = (rng.standard_normal((n_rows, n_classes)) * 4).astype(dtype)
    labels = rng.integers(0, n_classes, n_rows)
    labels[::5] = -100
    special = {}
    if n_rows > 3:
        x[1] = np.nan
        special[1] = "nan"
        if n_classes > 1:
            x[2, 0] = -np.inf
            labels[2] = n_classes - 1
        x[3, -1] = 1e30 if n_classes > 1 else 0.0
        x[3, 0] = -1e30 if n_classes > 1 else 0.0
    loss, grad = cyce.softmax_ce(x, labels, reduction="none", return_grad=True)
    exp_loss, exp_grad = reference.softmax_ce(x, labels, reduction="none")
    ok = np.array([i not in special for i in range(n_rows)])
    assert_close(loss[ok], exp_loss[ok], dtype, "loss")
    assert_close(grad[ok], exp_grad[ok], dtype, "grad", 1.0)
    if 1 in special:
        assert np.isnan(loss[1]) == (labels[1] != -100)
    ignored = labels == -100
    assert np.all(loss[ignored] == 0) and not grad[ignored].any()
    # the loss alone, and the gradient in place, are the same path's numbers
    np.testing.assert_array_equal(cyce.softmax_ce(x, labels, reduction="none"), loss)
    inplace = x.copy()
    cyce.softmax_ce(inplace, labels, reduction="none", inplace=True)
    np.testing.assert_array_equal(inplace, grad)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_short_and_long_rows_agree(rng, dtype):
    """The same rows through the tile kernel (C = 32) and through the long-row
    kernel (the same logits padded with a -inf class, C = 33) give the same
    loss and gradient to rounding."""
    x = (rng.standard_normal((150, 32)) * 3).astype(dtype)
    labels = rng.integers(0, 32, 150)
    kwargs = dict(weight=rng.uniform(0.5, 2, 32), label_smoothing=0.0, z_loss=1e-3,
                  sample_weight=rng.uniform(0.5, 2, 150))
    loss, grad = cyce.softmax_ce(x, labels, reduction="none", return_grad=True, **kwargs)
    padded = np.concatenate([x, np.full((150, 1), -np.inf, dtype)], axis=1)
    kwargs["weight"] = np.append(kwargs["weight"], 1.0)
    loss33, grad33 = cyce.softmax_ce(padded, labels, reduction="none", return_grad=True, **kwargs)
    assert_close(loss, loss33, dtype, "loss")
    assert_close(grad, grad33[:, :32], dtype, "grad", 1.0)
    assert not grad33[:, 32].any()


# Long rows go by blocks of 16 KiB + 64 bytes, each against its own max
# (cyce_rows.h): 70000 classes are 18 blocks in float32 (4112 classes each,
# the last one short), 35 in float64.
LONG = 70000


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("option", ["plain", "weight", "ignore_index", "sample_weight", "z_loss"])
def test_long_rows(kernel_build, rng, dtype, option):
    """Rows of 70000 classes, whose max sits at the start, the middle or the
    end, with a block of -inf, with the max tied far apart and a confident
    row (the loss and label slot keep their digits): all match the
    reference, in place and into a new array alike."""
    x, labels, kwargs = make_case(rng, (6, LONG), dtype, option)
    x[0, 5] = 40                      # max at the start
    x[1, 3 * 2048 + 7] = 40           # ... the middle
    x[2, -1] = 40                     # ... the end
    x[3, 4000:8300] = -np.inf         # a whole block of -inf (two in float64)
    x[4, [100, 50000]] = 30           # a tie far apart
    x[5] = -5
    x[5, 69999] = 30                  # confident: the loss is 70000 * e**-35 ~ 4e-11
    if option != "ignore_index":
        labels[5] = 69999
    loss, grad = cyce.softmax_ce(x, labels, reduction="none", return_grad=True, **kwargs)
    exp_loss, exp_grad = reference.softmax_ce(x, labels, reduction="none", **kwargs)
    assert_close(loss, exp_loss, dtype, "loss")
    assert_close(grad, exp_grad, dtype, "grad", 1.0)
    if labels[5] == 69999 and "z_loss" not in kwargs:
        # relative, not only against the largest loss: log1p keeps the tiny
        # loss's digits, and the label's slot -rest / (1 + rest) keeps its own
        # (the float64 reference's p - 1 does not: mpmath gives the truth)
        mpmath = pytest.importorskip("mpmath")
        mpmath.mp.dps = 40
        rest = 69999 * mpmath.exp(-35)
        scale = kwargs.get("sample_weight", np.ones(6))[5] * (kwargs["weight"][69999] if "weight" in kwargs else 1)
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(loss[5], scale * float(mpmath.log1p(rest)), rtol=rtol)
        np.testing.assert_allclose(grad[5, 69999], -scale * float(rest / (1 + rest)), rtol=rtol)
    inplace = x.copy()
    cyce.softmax_ce(inplace, labels, reduction="none", inplace=True, **kwargs)
    np.testing.assert_array_equal(inplace, grad)
    np.testing.assert_array_equal(cyce.softmax_ce(x, labels, reduction="none", **kwargs), loss)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("option", ["plain", "weight", "z_loss"])
def test_blocks_of_very_different_maxima(kernel_build, rng, dtype, option):
    """Each block of a long row is shifted by its own max and rescaled to the
    row's afterwards.  Blocks whose maxima are 1e3 apart (all but the top one
    rescaled to nothing, or to subnormals), the row max in the short last
    block, the label in a block far below it, tied maxima in two blocks, a
    block that is the only finite one: the loss and gradient match the
    reference, and a confident row keeps its digits (mpmath)."""
    n = 5 * 4096 + 300          # float32: 6 blocks, the last one short; float64: 11
    x, _, kwargs = make_case(rng, (5, n), dtype, option)
    blocks = np.arange(n) // 2048
    x[0] += (-1000.0 * (blocks[::-1] % 7)).astype(dtype)   # maxima 1000 apart, the top one last
    x[1] = -80.0 + x[1] / 40                               # exps near the subnormal range
    x[1, -5] = 0.0
    x[2, [10, n - 10]] = 25.0                               # a tie in the first and last blocks
    x[3, :] = -np.inf
    x[3, 9000:9100] = x[3 + 1, 9000:9100]                   # one finite stretch, mid-row
    x[4] = -30.0
    x[4, 3] = 10.0                                          # confident, the max in block 0
    labels = np.array([5, n - 5, 2048 * 3, 9050, 3])
    loss, grad = cyce.softmax_ce(x, labels, reduction="none", return_grad=True, **kwargs)
    exp_loss, exp_grad = reference.softmax_ce(x, labels, reduction="none", **kwargs)
    assert_close(loss, exp_loss, dtype, "loss")
    assert_close(grad, exp_grad, dtype, "grad", 1.0)
    assert not grad[3, :9000].any() and not grad[3, 9100:].any()
    if option == "plain":
        mpmath = pytest.importorskip("mpmath")
        mpmath.mp.dps = 40
        rest = (n - 1) * mpmath.exp(-40)
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(loss[4], float(mpmath.log1p(rest)), rtol=rtol)
        np.testing.assert_allclose(grad[4, 3], -float(rest / (1 + rest)), rtol=rtol)
    inplace = x.copy()
    cyce.softmax_ce(inplace, labels, reduction="none", inplace=True, **kwargs)
    np.testing.assert_array_equal(inplace, grad)
    np.testing.assert_array_equal(cyce.softmax_ce(x, labels, reduction="none", **kwargs), loss)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("option", ["plain", "ignore_index", "smoothing", "everything"])
@pytest.mark.parametrize("n_classes", [500, 5000])
def test_rows_pass_their_maxima_on(kernel_build, rng, dtype, option, n_classes):
    """Rows go up to 64 per task, each row taking the max of the next one's
    first block during its last block's exps: rows of one block (500
    classes), and rows of several blocks (5000 classes) whose last block
    (888 classes) is shorter than the next row's first, so that the rest of
    that first block is read after the exps.  Rows that break the chain
    (ignored, NaN, +inf, all -inf, a confident row, smoothing that takes its
    own max) sit at every position of a task, the first and last included,
    with their NaN, inf or max in the part read after the exps too: every row
    matches the reference, and the loss alone and in place agree."""
    # where the NaN, the +inf and the confident max go: within the first
    # block, for 5000 classes past the 888 read during the exps
    nan_at, inf_at, top_at = (7, 499, 250) if n_classes == 500 else (1500, 2000, 1000)
    x, labels, kwargs = make_case(rng, (300, n_classes), dtype, option)
    x[[0, 37, 63, 64, 150]] = -np.inf       # all -inf: NaN rows
    x[[1, 65, 299], nan_at] = np.nan
    x[[2, 127, 128], inf_at] = np.inf
    x[[3, 200, 255], top_at] = 800.0          # confident rows (exp(800) overflows)
    loss, grad = cyce.softmax_ce(x, labels, reduction="none", return_grad=True, **kwargs)
    with np.errstate(invalid="ignore"):
        exp_loss, exp_grad = reference.softmax_ce(x, labels, reduction="none", **kwargs)
    ignored = labels == kwargs.get("ignore_index", -100)
    broken = np.zeros(300, bool)
    broken[[0, 37, 63, 64, 150, 1, 65, 299, 2, 127, 128]] = True
    broken &= ~ignored
    assert np.isnan(loss[broken]).all() and np.isnan(grad[broken]).all()
    assert_close(loss[~broken], exp_loss[~broken], dtype, "loss")
    assert_close(grad[~broken], exp_grad[~broken], dtype, "grad", 1.0)
    inplace = x.copy()
    cyce.softmax_ce(inplace, labels, reduction="none", inplace=True, **kwargs)
    np.testing.assert_array_equal(inplace, grad)
    np.testing.assert_array_equal(cyce.softmax_ce(x, labels, reduction="none", **kwargs), loss)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("option", ["plain", "weights_z_loss", "smoothing"])
def test_rows_of_several_blocks_scale_during_the_next_row(kernel_build, rng, dtype, option):
    """Rows of several blocks (5000 classes: 2 blocks in float32, 3 in
    float64) go 5 per task here, each float row's gradient scaled during the
    next row's exps, its label slot set after.  Ignored rows (which scale the
    waiting row on their own), a NaN row and a confident row sit at the
    first, middle and last positions of tasks, labels in every block: every
    row matches the reference, in place and into a new array alike, and the
    bits do not depend on the thread count."""
    n_rows, n = 40, 5000
    x = (rng.standard_normal((n_rows, n)) * 4).astype(dtype)
    labels = rng.integers(0, n, n_rows)
    labels[[1, 6, 11]] = [0, n - 1, 4200]
    labels[[0, 4, 5, 12, 13, 39]] = -100       # ignored
    x[7, 4444] = np.nan
    x[8, labels[8]] = 80.0                    # confident: tiny loss
    kwargs = {}
    if option == "weights_z_loss":
        kwargs.update(weight=rng.uniform(0.1, 2.0, n),
                      sample_weight=rng.uniform(0.5, 2.0, n_rows), z_loss=1e-3)
    elif option == "smoothing":
        kwargs["label_smoothing"] = 0.1
    loss, grad = cyce.softmax_ce(x, labels, reduction="none", return_grad=True, **kwargs)
    with np.errstate(invalid="ignore"):
        exp_loss, exp_grad = reference.softmax_ce(x, labels, reduction="none", **kwargs)
    assert np.isnan(loss[7]) and np.isnan(grad[7]).all()
    rows = np.delete(np.arange(n_rows), 7)
    assert_close(loss[rows], exp_loss[rows], dtype, "loss")
    assert_close(grad[rows], exp_grad[rows], dtype, "grad", 1.0)
    assert not grad[[0, 4, 5, 12, 13, 39]].any()
    if option == "plain":
        assert 0 < loss[8] < 1e-25
    inplace = x.copy()
    cyce.softmax_ce(inplace, labels, reduction="none", inplace=True, **kwargs)
    np.testing.assert_array_equal(inplace, grad)
    np.testing.assert_array_equal(cyce.softmax_ce(x, labels, reduction="none", **kwargs), loss)
    for threads in (2, 3):
        np.testing.assert_array_equal(
            cyce.softmax_ce(x, labels, reduction="none", return_grad=True,
                            num_threads=threads, **kwargs)[1], grad)
        np.testing.assert_array_equal(
            cyce.softmax_ce(x, labels, reduction="none", num_threads=threads, **kwargs), loss)


def smoothing_rows(rng, shape, dtype):
    """Long rows for label smoothing's one-pass sum, taken block by block
    (blocks of 4112 float32 or 2056 float64 classes), of five kinds in turn
    (row r is of kind r % 5): plain; with -inf masks scattered over its
    blocks; with whole blocks of -inf (its first and its last too); around
    1e4 (where a sum of x - max taken as sum(x) - n max would cancel); with an
    offset of its own per block, so that each block's max differs from the
    row's."""
    n_rows, n = shape
    x = rng.standard_normal(shape) * 3
    kind = np.arange(n_rows) % 5
    for r in np.flatnonzero(kind == 1):
        x[r, rng.integers(0, n, n // 50)] = -np.inf
    masked = np.zeros(n, bool)
    masked[:4112] = masked[n - 700:] = masked[n // 2:n // 2 + 9000] = True
    x[np.ix_(kind == 2, masked)] = -np.inf
    x[kind == 3] += 1e4
    x[kind == 4] += np.repeat(rng.uniform(-60, 60, n // 1000 + 1), 1000)[:n]
    labels = rng.integers(0, n, n_rows)
    labels[kind == 2] = 4200                # a class no block of -inf holds
    rows = np.arange(n_rows)
    x[rows, labels] = np.maximum(x[rows, labels], 0.0)
    return x.astype(dtype), labels


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(5, 70001), (8, 5000), (6, 32000)], ids=str)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_smoothing_of_long_rows_in_one_pass(kernel_build, rng, dtype, shape, weighted):
    """Label smoothing's sum_c w_c (x_c - max) is taken block by block with
    the exps, each block against its own max, and combined at the row's end:
    masked classes (scattered, whole blocks, a row's first and last block),
    logits around 1e4 and blocks of different maxima all match the float64
    reference (a row with a masked class costs +inf, as its smoothed target
    there is not 0; its gradient is finite)."""
    x, labels = smoothing_rows(rng, shape, dtype)
    kwargs = {"label_smoothing": 0.1}
    if weighted:
        kwargs["weight"] = rng.uniform(0.1, 2.0, shape[1])
    loss, grad = cyce.softmax_ce(x, labels, reduction="none", return_grad=True, **kwargs)
    exp_loss, exp_grad = reference.softmax_ce(x, labels, reduction="none", **kwargs)
    masked = np.isinf(x).any(axis=1)
    assert masked.any() and (loss[masked] == np.inf).all()
    assert_close(loss, exp_loss, dtype, "loss")
    assert_close(grad, exp_grad, dtype, "grad", 1.0)
    assert (grad[np.isinf(x)] < 0).all()     # -e w_c / C: the smoothing term alone


@pytest.mark.parametrize("dtype", DTYPES + ["bfloat16", "float16"],
                         ids=lambda d: np.dtype(d).name if d in DTYPES else d)
@pytest.mark.parametrize("shape", [(24, 70001), (40, 5000), (24, 32000)], ids=str)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_smoothed_rows_have_the_same_bits_however_run(kernel_build, rng, dtype, shape,
                                                      weighted):
    """A smoothed long row chains to the next and (rows computed in float, of
    at most 144 KiB, without class weights) has its scaling done during the
    next row's exps, 3 or 5 rows to a task here: its bits are those of the
    row run alone, with 1 or 2 threads, in place or into a new gradient (a
    half type's into a float32 one too), and its loss alone is that of the
    call with a gradient."""
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    x, labels = smoothing_rows(rng, shape, dtype)
    labels[[1, 17]] = -100                    # ignored rows break the chain
    kwargs = {"label_smoothing": 0.1}
    if weighted:
        kwargs["weight"] = rng.uniform(0.1, 2.0, shape[1])
    loss, grad = cyce.softmax_ce(x, labels, reduction="none", return_grad=True, **kwargs)
    for threads in (1, 2):
        other_loss, other_grad = cyce.softmax_ce(x, labels, reduction="none", return_grad=True,
                                                 num_threads=threads, **kwargs)
        np.testing.assert_array_equal(other_grad, grad)
        np.testing.assert_array_equal(other_loss, loss)
        np.testing.assert_array_equal(
            cyce.softmax_ce(x, labels, reduction="none", num_threads=threads, **kwargs), loss)
    inplace = x.copy()
    cyce.softmax_ce(inplace, labels, reduction="none", inplace=True, **kwargs)
    np.testing.assert_array_equal(inplace, grad)
    master_dtype = np.float64 if dtype == np.float64 else np.float32
    master = np.empty(shape, master_dtype)
    cyce.softmax_ce(x, labels, reduction="none", grad_out=master, **kwargs)
    for i in range(shape[0]):
        alone_loss, alone_grad = cyce.softmax_ce(x[i:i + 1], labels[i:i + 1], reduction="none",
                                                 return_grad=True, **kwargs)
        np.testing.assert_array_equal(alone_grad, grad[i:i + 1])
        np.testing.assert_array_equal(alone_loss, loss[i:i + 1])
        alone_master = np.empty((1, shape[1]), master_dtype)
        cyce.softmax_ce(x[i:i + 1], labels[i:i + 1], reduction="none", grad_out=alone_master,
                        **kwargs)
        np.testing.assert_array_equal(alone_master, master[i:i + 1])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_rows_of_more_than_the_block_limit(kernel_build, rng, dtype):
    """A row of more than 256 blocks (1.1M classes; 1.05M fit in float32)
    is cut into 256 longer blocks: the same results as the reference."""
    n = 1_100_000
    x = (rng.standard_normal((2, n)) * 3).astype(dtype)
    x[1, 700_001] = 30.0
    labels = np.array([123_456, 1_099_999])
    loss, grad = cyce.softmax_ce(x, labels, reduction="none", return_grad=True)
    exp_loss, exp_grad = reference.softmax_ce(x, labels, reduction="none")
    assert_close(loss, exp_loss, dtype, "loss")
    assert_close(grad, exp_grad, dtype, "grad", 1.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_long_rows_nan_and_infinite(kernel_build, dtype):
    """Long rows keep the contract's edges: a NaN deep in a row makes that
    row NaN (loss and gradient) and no other; +inf makes the row NaN as in
    PyTorch; an all -inf row is NaN; -inf everywhere but three classes
    masks those classes exactly."""
    x = np.zeros((5, LONG), dtype)
    x[0, 40000] = np.nan
    x[1, 3] = np.inf
    x[2] = -np.inf
    x[3] = -np.inf
    x[3, 60000:60003] = [1.0, 2.0, 3.0]
    labels = np.array([0, 0, 0, 60002, 7])
    loss, grad = cyce.softmax_ce(x, labels, reduction="none", return_grad=True)
    assert np.isnan(loss[:3]).all() and np.isnan(grad[:3]).all()
    p = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    np.testing.assert_allclose(loss[3], -np.log(p[2]), rtol=1e-6)
    np.testing.assert_allclose(grad[3, 60000:60003], p - [0, 0, 1], rtol=1e-6, atol=1e-7)
    assert not np.delete(grad[3], [60000, 60001, 60002]).any()
    np.testing.assert_allclose(loss[4], np.log(LONG), rtol=1e-6)


@pytest.mark.parametrize("function", ["softmax_ce", "categorical_ce"])
def test_labels_in_any_layout(rng, function):
    """int64 labels are read where they are when C-contiguous; strided ones
    (a 1-D slice with a step, whose reshape(-1) is still strided), byte-swapped
    and other dtypes are converted, with the same result."""
    x = rng.random((40, 7))
    if function == "categorical_ce":
        x /= x.sum(axis=1, keepdims=True)
    call = getattr(cyce, function)
    wide = rng.integers(0, 7, 80)
    expected = call(x, np.ascontiguousarray(wide[::2]), return_grad=True)
    for labels in (wide[::2], wide[::2].astype(">i8"), wide[::2].astype(np.int32)):
        got = call(x, labels, return_grad=True)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
