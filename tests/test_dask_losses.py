"""cyce.dask against the in-memory NumPy functions, on a real cluster.

A dask.distributed LocalCluster of two worker processes on loopback (one
thread each) is started once for this module.  Each case chunks its inputs
unevenly, computes on the cluster, and compares with the in-memory cyce call
(float64: within 1e-13; which is independent of dask); the same graph
computed on one worker, two workers, the threaded and the synchronous
schedulers gives the same bits.  Bad input raises the NumPy function's error,
with positions in the whole array.
"""

import subprocess
import sys

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("dask.distributed")

import cyce  # noqa: E402
import cyce.dask as cd  # noqa: E402

N, C = 1000, 37
ROW_CHUNKS = (100, 250, 1, 300, 349)   # uneven, one chunk of a single row
RTOL = {np.float64: 1e-13, np.float32: 1e-5}


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(20)
    x = rng.standard_normal((N, C)) * 3
    labels = rng.integers(0, C, N)
    labels[::7] = -100
    return dict(
        x=x, labels=labels, soft=cyce.softmax(rng.standard_normal((N, C))),
        sample_weight=rng.random(N), weight=rng.random(C) + 0.5,
        targets=rng.random((N, C)), probs=rng.uniform(0.01, 0.99, (N, C)),
    )


def chunked(a, chunks=ROW_CHUNKS):
    """a as a dask array with these row chunks (and whole trailing axes)."""
    return da.from_array(a, chunks=(chunks,) + a.shape[1:])


def close(actual, expected, dtype=np.float64):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               rtol=RTOL[dtype], atol=RTOL[dtype] * 1e-3, equal_nan=True)


def compare(client, dask_result, numpy_result, dtype=np.float64):
    """Compute on the cluster; the loss (and grad) match the in-memory call."""
    computed = client.compute(dask_result, sync=True)
    if isinstance(numpy_result, tuple):
        assert len(computed) == 2
        close(computed[0], numpy_result[0], dtype)
        close(computed[1], numpy_result[1], dtype)
        return computed
    close(computed, numpy_result, dtype)
    return computed


# ---------------------------------------------------------------- softmax_ce

SOFTMAX_CE_OPTIONS = {
    "plain": {},
    "weight": {"weight": "weight"},
    "sample_weight": {"sample_weight": "sample_weight", "label_smoothing": 0.2},
    "everything": {"weight": "weight", "sample_weight": "sample_weight",
                   "label_smoothing": 0.1, "z_loss": 1e-3, "ignore_index": 3},
}


def resolve(options, data, as_dask):
    """Option names -> arrays (sample_weight chunked differently from the logits
    when as_dask, to exercise the rechunk)."""
    resolved = {}
    for key, value in options.items():
        if isinstance(value, str):
            value = data[value]
            if as_dask and key == "sample_weight":
                value = chunked(value, (500, 500))
        resolved[key] = value
    return resolved


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", SOFTMAX_CE_OPTIONS, ids=str)
@pytest.mark.parametrize("return_grad", [False, True], ids=["loss", "grad"])
def test_softmax_ce_integer_labels(client, data, reduction, options, return_grad):
    opts = SOFTMAX_CE_OPTIONS[options]
    labels = np.where(data["labels"] == -100, opts.get("ignore_index", -100), data["labels"])
    expected = cyce.softmax_ce(data["x"], labels, reduction=reduction,
                               return_grad=return_grad, **resolve(opts, data, False))
    result = cd.softmax_ce(chunked(data["x"]), chunked(labels, (400, 600)),
                           reduction=reduction, return_grad=return_grad, **resolve(opts, data, True))
    loss = result[0] if return_grad else result
    assert isinstance(loss, da.Array)
    if reduction == "none":
        assert loss.chunks == (ROW_CHUNKS,)
    else:
        assert loss.shape == () and loss.dtype == np.float64
    if return_grad:
        assert result[1].chunks == chunked(data["x"]).chunks
    compare(client, result, expected)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_softmax_ce_probabilities(client, data, reduction, weighted):
    kwargs = dict(label_smoothing=0.1)
    if weighted:
        kwargs.update(sample_weight=data["sample_weight"], weight=data["weight"])
    expected = cyce.softmax_ce(data["x"], data["soft"], reduction=reduction, return_grad=True, **kwargs)
    result = cd.softmax_ce(chunked(data["x"]), chunked(data["soft"]), reduction=reduction,
                           return_grad=True, **kwargs)
    compare(client, result, expected)


def test_softmax_ce_float32_and_3d(client, data):
    """(..., C) logits chunked along two batch axes; float32 within 1e-5."""
    x = data["x"].astype(np.float32).reshape(10, 100, C)
    labels = data["labels"].reshape(10, 100)
    expected = cyce.softmax_ce(x, labels, return_grad=True)
    dx = da.from_array(x, chunks=((3, 7), (40, 60), C))
    result = cd.softmax_ce(dx, labels, return_grad=True)
    assert result[0].dtype == np.float32 and result[1].chunks == dx.chunks
    compare(client, result, expected, np.float32)


def test_one_sample(client, data):
    """(C,) logits are one sample, as in NumPy: a 0-d loss, a (C,) gradient."""
    expected = cyce.softmax_ce(data["x"][0], 5, return_grad=True)
    loss, grad = client.compute(cd.softmax_ce(data["x"][0], 5, return_grad=True), sync=True)
    close(loss, expected[0])
    close(grad, expected[1])
    assert grad.shape == (C,)


def test_every_row_ignored(client, data):
    """The mean of no rows is nan; ignored rows keep a zero gradient."""
    labels = np.full(N, -100)
    loss, grad = client.compute(cd.softmax_ce(chunked(data["x"]), labels, return_grad=True), sync=True)
    assert np.isnan(loss) and not grad.any()


def test_numpy_inputs_are_wrapped(client, data):
    result = cd.softmax_ce(data["x"], data["labels"], sample_weight=data["sample_weight"])
    assert isinstance(result, da.Array)
    compare(client, result, cyce.softmax_ce(data["x"], data["labels"], sample_weight=data["sample_weight"]))


# ---------------------------------------------------------------- the other losses

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("target", ["labels", "soft"])
def test_categorical_ce(client, data, reduction, target):
    expected = cyce.categorical_ce(data["probs"], data[target], weight=data["weight"],
                                   reduction=reduction, return_grad=True)
    result = cd.categorical_ce(chunked(data["probs"]), chunked(data[target]), weight=data["weight"],
                               reduction=reduction, return_grad=True)
    compare(client, result, expected)


# elementwise: chunked along both axes, unevenly
BINARY_CHUNKS = ((300, 700), (10, 27))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "batchmean"])
def test_sigmoid_bce(client, data, reduction):
    kwargs = dict(weight=data["sample_weight"][:, None], pos_weight=data["weight"])
    expected = cyce.sigmoid_bce(data["x"], data["targets"], reduction=reduction, return_grad=True, **kwargs)
    x = da.from_array(data["x"], chunks=BINARY_CHUNKS)
    result = cd.sigmoid_bce(x, chunked(data["targets"]), reduction=reduction, return_grad=True, **kwargs)
    assert result[1].chunks == x.chunks
    compare(client, result, expected)


@pytest.mark.parametrize("reduction", ["mean", "none", "batchmean"])
def test_binary_ce(client, data, reduction):
    weight = da.from_array(data["sample_weight"][:, None], chunks=(250, 1))
    expected = cyce.binary_ce(data["probs"], data["targets"] > 0.5, weight=data["sample_weight"][:, None],
                              reduction=reduction, return_grad=True)
    result = cd.binary_ce(da.from_array(data["probs"], chunks=BINARY_CHUNKS), data["targets"] > 0.5,
                          weight=weight, reduction=reduction, return_grad=True)
    compare(client, result, expected)


@pytest.mark.parametrize("function", ["logsumexp", "softmax", "log_softmax"])
def test_softmax_functions(client, data, function):
    x = chunked(data["x"])
    result = getattr(cd, function)(x)
    assert result.chunks == (x.chunks if function != "logsumexp" else x.chunks[:1])
    compare(client, result, getattr(cyce, function)(data["x"]))


# ---------------------------------------------------------------- the same bits everywhere

def test_same_bits_on_every_scheduler(client, data):
    """One worker, two workers, threads, synchronous: the same bytes."""
    x = chunked(data["x"].astype(np.float32), (64,) * 15 + (40,))
    loss, grad = cd.softmax_ce(x, data["labels"], sample_weight=data["sample_weight"],
                               weight=data["weight"], return_grad=True)
    one_worker = sorted(client.scheduler_info()["workers"])[:1]
    results = {
        "two workers": client.compute([loss, grad], sync=True),
        "one worker": client.compute([loss, grad], workers=one_worker, sync=True),
        "threads": dask.compute(loss, grad, scheduler="threads"),
        "sync": dask.compute(loss, grad, scheduler="sync"),
    }
    reference_loss, reference_grad = results.pop("two workers")
    for name, (other_loss, other_grad) in results.items():
        assert np.asarray(other_loss).tobytes() == np.asarray(reference_loss).tobytes(), name
        assert other_grad.tobytes() == reference_grad.tobytes(), name


def test_unequal_chunks_are_not_averaged(client):
    """The issue's peer bug: a mean of chunk means is biased when chunks differ
    in size; here one chunk of 1 row holds a loss far from the others'."""
    x = np.zeros((11, 4))
    x[0] = [50.0, 0, 0, 0]
    labels = np.array([1] + [0] * 10)
    loss = client.compute(cd.softmax_ce(chunked(x, (1, 10)), labels), sync=True)
    close(loss, cyce.softmax_ce(x, labels))


# ---------------------------------------------------------------- errors

def test_label_out_of_range_names_the_global_row(client, data):
    labels = data["labels"].copy()
    labels[777] = C
    loss = cd.softmax_ce(chunked(data["x"]), chunked(labels))
    with pytest.raises(IndexError, match=rf"labels\[777\] = {C} is out of range"):
        client.compute(loss, sync=True)


def test_probability_out_of_range_names_the_global_position(client, data):
    probs = data["probs"].copy()
    probs[612, 5] = 1.5
    loss = cd.binary_ce(da.from_array(probs, chunks=BINARY_CHUNKS), data["targets"])
    with pytest.raises(ValueError, match=r"probs\[612, 5\] = 1.5 is not a probability"):
        client.compute(loss, sync=True)


def test_bad_sample_weight_found_in_a_chunk(client, data):
    weights = data["sample_weight"].copy()
    weights[401] = np.nan
    loss = cd.softmax_ce(chunked(data["x"]), data["labels"], sample_weight=chunked(weights))
    with pytest.raises(ValueError, match=r"sample_weight\[401\] = nan is not finite"):
        client.compute(loss, sync=True)


@pytest.mark.parametrize("call, error, message", [
    (lambda x, y: cd.softmax_ce(x.rechunk((100, 10)), y), ValueError, r"class axis .* in 4 chunks.*rechunk"),
    (lambda x, y: cd.softmax_ce(x, y, inplace=True), ValueError, "inplace is not supported over dask"),
    (lambda x, y: cd.softmax_ce(x, y, grad_out=np.empty((N, C))), ValueError, "grad_out is not supported"),
    (lambda x, y: cd.logsumexp(x, out=np.empty(N)), ValueError, "out is not supported"),
    (lambda x, y: cd.softmax_ce(x, y, reduction="avg"), ValueError, "reduction must be one of"),
    (lambda x, y: cd.softmax_ce(x, y, label_smoothing=2.0), ValueError, "label_smoothing"),
    (lambda x, y: cd.softmax_ce(x, y[:-1]), ValueError, r"labels has shape \(999,\), expected \(1000,\)"),
    (lambda x, y: cd.softmax_ce(x, y, weight=np.ones(3)), ValueError, "weight must have shape"),
    (lambda x, y: cd.softmax_ce(x, y, weight=np.full(C, np.inf)), ValueError, r"weight\[0\] = inf"),
    (lambda x, y: cd.softmax_ce(x, y, sample_weight=np.ones(7)), ValueError, "sample_weight must have shape"),
    (lambda x, y: cd.softmax_ce(x.astype(np.int16), y), TypeError, r"float16 or bfloat16 \(ml_dtypes.bfloat16\), got an array of dtype int16"),
    (lambda x, y: cd.softmax_ce(x, y.astype(str)), TypeError, "labels must be integer class indices"),
    (lambda x, y: cd.softmax_ce(x, y, num_threads=0), ValueError, "num_threads"),
    (lambda x, y: cd.sigmoid_bce(x, x, pos_weight=np.ones(2)), ValueError, "pos_weight"),
    (lambda x, y: cd.sigmoid_bce(x, x, weight=np.ones((2, 1))), ValueError, "does not broadcast"),
])
def test_bad_input_found_when_building(data, call, error, message):
    """Shapes, dtypes, chunking and options fail at once, before any compute."""
    labels = data["labels"].copy()
    labels[5] = C  # values of chunked arrays are only read at compute time...
    with pytest.raises(error, match=message):
        call(chunked(data["x"]), chunked(labels))


def test_numpy_labels_checked_when_building(data):
    labels = data["labels"].copy()
    labels[5] = C  # ... but NumPy labels are checked in full at once
    with pytest.raises(IndexError, match=r"labels\[5\] = 37"):
        cd.softmax_ce(chunked(data["x"]), labels)


def test_import_cyce_does_not_import_dask():
    code = "import sys, cyce; assert not any(m.split('.')[0] in ('dask', 'distributed') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
