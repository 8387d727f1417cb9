"""Every bad input (docs/api.md, "Errors") raises a clear error and changes nothing."""

import numpy as np
import pytest

import cyce


def arrays_in(args, kwargs):
    return [a for a in list(args) + list(kwargs.values()) if isinstance(a, np.ndarray)]


def assert_rejected(fn, args, kwargs, error, pattern):
    """fn(*args, **kwargs) raises error matching pattern, and every array
    passed is bit-for-bit what it was."""
    arrays = arrays_in(args, kwargs)
    before = [a.copy() for a in arrays]
    with pytest.raises(error, match=pattern):
        fn(*args, **kwargs)
    for a, b in zip(arrays, before):
        assert a.tobytes() == b.tobytes()


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)


@pytest.fixture
def y():
    return np.array([0, 1, 2, 3, 0, 1])


SOFTMAX_CE_CASES = {
    # name: (kwargs or replacement args, error, message pattern)
    "int logits": ("logits", np.arange(24).reshape(6, 4), TypeError,
                   r"logits must be float32, float64, float16 or bfloat16.*int64"),
    "int16 logits": ("logits", np.ones((6, 4), np.int16), TypeError, r"float16 or bfloat16.*int16"),
    "complex logits": ("logits", np.ones((6, 4), np.complex64), TypeError,
                       r"logits must be float32, float64, float16 or bfloat16"),
    "object logits": ("logits", np.array([[object()] * 4] * 6), TypeError, r"logits must be float32"),
    "bool logits": ("logits", np.ones((6, 4), bool), TypeError, r"logits must be float32"),
    "0-d logits": ("logits", np.float32(1.0), ValueError, r"logits must have shape \(\.\.\., C\).*0-d"),
    "zero classes": ("logits", np.ones((6, 0), np.float32), ValueError, r"zero classes"),
    "label too big": ("labels", np.array([0, 1, 2, 3, 4, 1]), IndexError, r"labels\[4\] = 4 is out of range.*\[0, 4\)"),
    "negative label": ("labels", np.array([0, 1, -1, 3, 0, 1]), IndexError, r"labels\[2\] = -1"),
    "uint64 huge label": ("labels", np.array([0, 2**64 - 1, 0, 0, 0, 0], np.uint64), IndexError,
                          r"labels\[1\] = 18446744073709551615"),
    "labels wrong shape": ("labels", np.array([0, 1, 2]), ValueError, r"labels has shape \(3,\).*\(6,\)"),
    "float labels per row": ("labels", np.zeros(6), ValueError, r"labels has shape \(6,\)"),
    "bool labels": ("labels", np.zeros(6, bool), TypeError, r"labels must be integer class indices"),
    "soft wrong shape": ("labels", np.full((6, 5), 0.2, np.float32), ValueError, r"labels has shape \(6, 5\)"),
    "weight wrong length": ({"weight": np.ones(3)}, ValueError, r"weight must have shape \(4,\).*got shape \(3,\)"),
    "weight nan": ({"weight": np.array([1.0, np.nan, 1.0, 1.0])}, ValueError, r"weight\[1\] = nan is not finite"),
    "weight strings": ({"weight": np.array(["a"] * 4)}, TypeError, r"weight must hold real numbers"),
    "sample_weight wrong shape": ({"sample_weight": np.ones(5)}, ValueError, r"sample_weight must have shape \(6,\)"),
    "sample_weight inf": ({"sample_weight": np.array([1, 1, 1, np.inf, 1, 1])}, ValueError, r"sample_weight\[3\] = inf"),
    "unknown reduction": ({"reduction": "avg"}, ValueError, r"reduction must be one of 'mean', 'sum', 'none', got 'avg'"),
    "smoothing above 1": ({"label_smoothing": 1.5}, ValueError, r"label_smoothing must be a finite number \[0.0, 1.0\], got 1.5"),
    "smoothing negative": ({"label_smoothing": -0.1}, ValueError, r"label_smoothing"),
    "smoothing nan": ({"label_smoothing": float("nan")}, ValueError, r"label_smoothing"),
    "z_loss negative": ({"z_loss": -1.0}, ValueError, r"z_loss must be a finite number >= 0.0"),
    "ignore_index float": ({"ignore_index": 1.5}, TypeError, r"ignore_index must be an integer"),
    "num_threads zero": ({"num_threads": 0}, ValueError, r"num_threads must be None .* >= 1, got 0"),
    "num_threads negative": ({"num_threads": -3}, ValueError, r"num_threads"),
    "num_threads text": ({"num_threads": "2"}, TypeError, r"num_threads must be an integer"),
    "return_grad text": ({"return_grad": "yes"}, TypeError, r"return_grad must be True or False"),
    "grad_out wrong dtype": ({"grad_out": np.empty((6, 4))}, TypeError, r"grad_out must have dtype float32"),
    "grad_out wrong shape": ({"grad_out": np.empty((4, 6), np.float32)}, ValueError, r"grad_out must have shape \(6, 4\)"),
    "grad_out list": ({"grad_out": [[0.0] * 4] * 6}, TypeError, r"grad_out must be a NumPy array"),
}


@pytest.mark.parametrize("case", sorted(SOFTMAX_CE_CASES))
def test_softmax_ce_rejects(case, x, y):
    spec = SOFTMAX_CE_CASES[case]
    if isinstance(spec[0], dict):
        kwargs, error, pattern = spec
        args = (x, y)
    else:
        which, value, error, pattern = spec
        args = (value, y) if which == "logits" else (x, value)
        kwargs = {}
    assert_rejected(cyce.softmax_ce, args, kwargs, error, pattern)
    # the same error from an in-place call, which must not have written anything
    if args[0] is x:
        assert_rejected(cyce.softmax_ce, args, dict(kwargs, inplace=True) if "grad_out" not in kwargs
                        else kwargs, error, pattern)


def test_probabilities_outside_zero_one(x):
    t = np.full((6, 4), 0.25, np.float32)
    t[3, 2] = 1.25
    assert_rejected(cyce.softmax_ce, (x, t), {}, ValueError,
                    r"labels\[3, 2\] = 1.25 is not a probability: values must be in \[0, 1\]")
    t[3, 2] = np.nan
    assert_rejected(cyce.softmax_ce, (x, t), {"inplace": True}, ValueError, r"labels\[3, 2\] = nan")
    t[3, 2] = -0.5
    assert_rejected(cyce.softmax_ce, (x, t.astype(np.float64)), {}, ValueError, r"= -0.5")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where", [0, 16383, 16384, 40001, -1])
@pytest.mark.parametrize("value", [np.nan, -np.inf, np.inf, -1e-30, 1.0000002])
def test_first_bad_probability_anywhere(kernel_build, dtype, where, value):
    """The one-pass check's chunks (a kernel of each level): the first bad
    value is found on either side of a chunk's edge and at the end, and 0,
    -0.0 and 1 pass."""
    x = np.zeros((40002, 2), np.float32)
    t = np.full((40002, 2), 0.5, dtype)
    t[7, 0], t[8, 0], t[9, 0] = 0.0, -0.0, 1.0
    assert np.isfinite(cyce.softmax_ce(x, t))
    t.reshape(-1)[where] = value
    t.reshape(-1)[-1] = 2.0 if where != -1 else value  # a later bad value is not the one named
    row, col = divmod(where % t.size, 2)
    assert_rejected(cyce.softmax_ce, (x, t), {"inplace": True}, ValueError, rf"labels\[{row}, {col}\] = ")


@pytest.mark.parametrize("ignore_index", [1, 0, -1])
def test_ignore_index_with_probabilities(x, ignore_index):
    """PyTorch: "ignore_index is not supported for floating point target"."""
    t = np.full((6, 4), 0.25, np.float32)
    pattern = rf"ignore_index={ignore_index} applies to integer class indices.*leave ignore_index at its default"
    for kwargs in ({}, {"inplace": True}, {"return_grad": True}):
        assert_rejected(cyce.softmax_ce, (x, t), dict(kwargs, ignore_index=ignore_index), ValueError, pattern)
    probs = np.full((6, 4), 0.25, np.float32)
    assert_rejected(cyce.categorical_ce, (probs, t), {"ignore_index": ignore_index, "inplace": True},
                    ValueError, pattern)
    # the default, spelt out, is accepted
    assert np.isfinite(cyce.softmax_ce(x, t, ignore_index=-100))


def test_inplace_needs_a_writable_contiguous_array(x, y):
    read_only = x.copy()
    read_only.flags.writeable = False
    assert_rejected(cyce.softmax_ce, (read_only, y), {"inplace": True}, ValueError,
                    r"inplace=True needs logits to be writable")
    wide = np.zeros((6, 8), np.float32)
    assert_rejected(cyce.softmax_ce, (wide[:, ::2], y), {"inplace": True}, ValueError,
                    r"inplace=True needs logits to be C-contiguous")
    assert_rejected(cyce.softmax_ce, (np.asfortranarray(x), y), {"inplace": True}, ValueError,
                    r"C-contiguous")
    assert_rejected(cyce.softmax_ce, (x.tolist(), y), {"inplace": True}, TypeError,
                    r"inplace=True needs logits to be a NumPy array, got list")
    assert_rejected(cyce.softmax_ce, (x, y), {"inplace": True, "grad_out": np.empty_like(x)},
                    ValueError, r"either inplace=True or grad_out")


def test_outputs_that_overlap_inputs(x, y):
    t = np.full((6, 4), 0.25, np.float32)
    assert_rejected(cyce.softmax_ce, (x, t), {"grad_out": t}, ValueError, r"grad_out overlaps labels")
    big = np.zeros((2, 6, 4), np.float32)
    big[0] = x
    assert_rejected(cyce.softmax_ce, (big[0], y), {"grad_out": big.reshape(12, 4)[3:9]}, ValueError,
                    r"grad_out overlaps logits")
    assert_rejected(cyce.softmax_ce, (x, x), {"inplace": True}, ValueError, r"labels")


def test_positions_in_leading_dimensions():
    x = np.zeros((2, 3, 5), np.float32)
    labels = np.zeros((2, 3), np.int16)
    labels[1, 2] = 9
    assert_rejected(cyce.softmax_ce, (x, labels), {}, IndexError, r"labels\[1, 2\] = 9")


@pytest.mark.parametrize("name", ["logsumexp", "log_softmax", "softmax"])
def test_softmax_functions_reject(name):
    fn = getattr(cyce, name)
    assert_rejected(fn, (np.arange(6).reshape(2, 3),), {}, TypeError, r"x must be float32, float64, float16 or bfloat16")
    assert_rejected(fn, (np.ones((2, 0)),), {}, ValueError, r"zero classes")
    assert_rejected(fn, (np.float64(3.0),), {}, ValueError, r"0-d")
    assert_rejected(fn, (np.ones((2, 3)),), {"num_threads": 0}, ValueError, r"num_threads")


def test_float_lists_and_scalars_are_accepted():
    loss = cyce.softmax_ce([[1.0, 2.0, 3.0]], [2])
    assert loss.dtype == np.float64
    assert cyce.softmax_ce([1.0, 2.0], 1) > 0
