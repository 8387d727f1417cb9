"""Bad input, fuzzed: every public function under random combinations of bad
(and good) arguments, each batch in its own Python process
(tests/fuzz_worker.py, which says what it draws and what it checks), so that
a segfault or an abort fails one test with the call that crashed, instead of
ending the test run.

CYCE_FUZZ_EXAMPLES sets the examples per function (default 400, two to
four seconds each) and CYCE_FUZZ_SEED the seed (default: a fixed one, so that CI
is reproducible); e.g. CYCE_FUZZ_EXAMPLES=20000 CYCE_FUZZ_SEED=$RANDOM for a
long hunt.

Also here: the float16 story, and the bugs the fuzzer found, each a strict
xfail with its minimal reproducer (remove the mark when it is fixed).
"""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import cyce
import reference

WORKER = Path(__file__).with_name("fuzz_worker.py")
FUNCTIONS = ("logsumexp", "log_softmax", "softmax", "softmax_ce", "sigmoid_bce", "binary_ce",
             "categorical_ce")
EXAMPLES = int(os.environ.get("CYCE_FUZZ_EXAMPLES", "400"))
SEED = int(os.environ.get("CYCE_FUZZ_SEED", "20261123"))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_fuzz(function):
    """Each call returns the reference's result or raises a specific
    TypeError / ValueError / IndexError, and changes no array it was not
    asked to write; the worker exits 0 only if every example passed."""
    run = subprocess.run([sys.executable, str(WORKER), function, str(SEED), str(EXAMPLES)],
                         capture_output=True, text=True, timeout=900)
    if run.returncode == 0:
        return
    calls = [line for line in run.stdout.splitlines() if line.startswith(function + "(")]
    last_call = calls[-1] if calls else "(none)"
    if run.returncode < 0:
        pytest.fail(f"the fuzz worker died with signal {-run.returncode} during\n  {last_call}\n"
                    f"{run.stderr[-4000:]}")
    pytest.fail(f"fuzz_worker.py {function} {SEED} {EXAMPLES} failed (exit {run.returncode}); "
                f"last call:\n  {last_call}\n{run.stderr[-6000:]}")


# ------------------------------------------------------------------ float16

def float16_calls(function):
    """(args, kwargs) of a call of `function` whose first argument is float16."""
    probs = np.full((3, 4), 0.25, np.float16)
    if function in ("logsumexp", "log_softmax", "softmax"):
        return (np.linspace(-2, 2, 12).astype(np.float16).reshape(3, 4),), {}
    if function == "softmax_ce":
        return (np.linspace(-2, 2, 12).astype(np.float16).reshape(3, 4), np.array([0, 3, 1])), {}
    if function == "sigmoid_bce":
        return (np.linspace(-2, 2, 12).astype(np.float16).reshape(3, 4), np.full((3, 4), 0.5)), {}
    if function == "binary_ce":
        return (probs, np.full((3, 4), 0.5)), {}
    return (probs, np.array([0, 3, 1])), {}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_float16_computes_what_float32_computes_on_the_same_values(function):
    """A float16 call is the float32 call on the same (widened) values: the
    same float32 arithmetic, so the float32 loss (or logsumexp) agrees to
    float32 rounding, and a float16 gradient or softmax is the float32 one
    rounded once (within one float16 ulp: both are rounded from float32
    values of the same arithmetic)."""
    args, kwargs = float16_calls(function)
    fn = getattr(cyce, function)
    widened = (args[0].astype(np.float32),) + args[1:]
    if function in ("logsumexp", "log_softmax", "softmax"):
        half, single = fn(*args, **kwargs), fn(*widened, **kwargs)
        expected_dtype = np.float32 if function == "logsumexp" else np.float16
        assert half.dtype == expected_dtype
        np.testing.assert_allclose(half.astype(np.float64), single, rtol=2**-10, atol=2**-24)
        return
    (loss, grad), (loss32, grad32) = (fn(*args, return_grad=True, **kwargs),
                                      fn(*widened, return_grad=True, **kwargs))
    assert np.asarray(loss).dtype == np.float32 and grad.dtype == np.float16
    np.testing.assert_allclose(loss, loss32, rtol=1e-6)
    np.testing.assert_allclose(grad.astype(np.float64), grad32, rtol=2**-10, atol=2**-24)


@pytest.mark.parametrize("function", ["softmax_ce", "sigmoid_bce", "binary_ce", "categorical_ce"])
def test_float16_targets_and_weights_are_used_and_a_float16_buffer_for_float32_refused(function):
    """float16 probabilities / targets are converted once and used, as are
    float16 weights; a float16 grad_out for float32 input is a third dtype,
    refused (TypeError naming the dtypes) with nothing written."""
    args, _ = float16_calls(function)
    x = args[0].astype(np.float32)
    fn = getattr(cyce, function)
    targets = np.full(x.shape, 0.25)
    np.testing.assert_array_equal(fn(x, targets.astype(np.float16)), fn(x, targets))
    buffer = np.full(x.shape, 7, np.float16)
    with pytest.raises(TypeError, match=r"grad_out must have dtype float32, got float16"):
        fn(x, args[1], grad_out=buffer)
    assert np.all(buffer == 7)
    weight = np.array([0.5, 1.0, 2.0, 1.5])
    np.testing.assert_array_equal(fn(x, args[1], weight=weight.astype(np.float16)),
                                  fn(x, args[1], weight=weight))


# ------------------------------------------- bugs the fuzzer found (fixed)
#
# Each was a minimal reproducer of a bug the fuzzer found; they stay as
# regression tests, and fuzz_worker.py draws these inputs too.

@pytest.mark.parametrize("row", [[np.nan], [np.nan, np.nan], [np.nan, -np.inf], [-np.inf, np.nan],
                                 [np.nan, np.inf], [np.inf, 1.0, np.nan]], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_found_logsumexp_of_a_nan_row_is_nan(row, dtype):
    x = np.array(row, dtype)
    assert np.isnan(reference.logsumexp(x))
    assert np.isnan(cyce.logsumexp(x)), cyce.logsumexp(x)   # today: -inf, or inf with +inf


def test_found_z_loss_inf_is_refused():
    x = np.array([[1.0, 2.0]], np.float32)
    with pytest.raises(ValueError, match=r"z_loss must be a finite number >= 0.0, got np.float64\(inf\)"):
        cyce.softmax_ce(x, [0], z_loss=np.float64(np.inf))       # refused, as documented
    with pytest.raises(ValueError, match=r"z_loss must be a finite number"):
        cyce.softmax_ce(x, [0], z_loss=float("inf"))             # today: returns inf


def correct_or_specific(call, name, expected):
    """call() returns `expected` or raises TypeError/ValueError/IndexError
    whose message names `name`."""
    try:
        result = call()
    except (TypeError, ValueError, IndexError) as error:
        assert name in str(error), error
    else:
        np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("function", ["softmax_ce", "categorical_ce"])
def test_found_ignore_index_beyond_int64(function):
    fn = getattr(cyce, function)
    x = np.full((2, 3), 1 / 3, np.float32)
    labels = np.array([0, 2], np.uint64)
    for ignore_index in (2**63, 2**70, -(2**63) - 1, np.uint64(2**64 - 1)):
        # no label equals it: nothing ignored (or a clear error about ignore_index)
        correct_or_specific(lambda: fn(x, labels, ignore_index=ignore_index), "ignore_index", fn(x, labels))
    # a uint64 label that is ignore_index: that row ignored
    labels[1] = 2**64 - 1
    correct_or_specific(lambda: fn(x, labels, ignore_index=2**64 - 1), "ignore_index",
                        fn(x, np.array([0, -100])))


@pytest.mark.parametrize("option", ["label_smoothing", "z_loss", "eps"])
def test_found_huge_integer_options(option):
    x = np.full((2, 3), 1 / 3, np.float32)
    fn = cyce.categorical_ce if option == "eps" else cyce.softmax_ce
    with pytest.raises(ValueError, match=option):
        fn(x, [0, 1], **{option: 10**400})


@pytest.mark.parametrize("option", ["weight", "pos_weight"])
def test_found_binary_weights_beyond_float32(option):
    x = np.zeros((2, 3), np.float32)
    t = np.zeros((2, 3), np.float32)   # pos_weight multiplies y = 0: the exact loss is finite
    big = np.full(3, 1e39)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # today: "overflow encountered in cast" from the wrapper
        try:
            loss = cyce.sigmoid_bce(x, t, reduction="none", **{option: big})
        except ValueError as error:
            assert "1e+39" in str(error), error   # today: "weight[0] = inf is not finite"
            return
    expected, _ = reference.sigmoid_bce(x, t, reduction="none", **{option: big})
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(loss, expected.astype(np.float32))


@pytest.mark.parametrize("function", ["sigmoid_bce", "binary_ce"])
def test_found_grad_out_matrix(function):
    x = np.full((2, 3), 0.25, np.float32)
    t = np.full((2, 3), 0.5, np.float32)
    fn = getattr(cyce, function)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)   # np.matrix's own
        buffer = np.asmatrix(np.zeros((2, 3), np.float32))
    try:
        loss, grad = fn(x, t, grad_out=buffer)
    except (TypeError, ValueError) as error:
        assert "grad_out" in str(error), error   # today: Cython's buffer message
        return
    assert grad is buffer
    np.testing.assert_array_equal(np.asarray(grad), fn(x, t, return_grad=True)[1])
