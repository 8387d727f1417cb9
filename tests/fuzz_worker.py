"""Bad-input fuzzing of one public function, run in a subprocess by
tests/test_fuzz.py so that a crash (segfault, abort) fails that test instead
of ending the whole test run:

    python tests/fuzz_worker.py FUNCTION SEED EXAMPLES

Hypothesis draws each call in two steps.  First a valid call: shapes (zero-
size batch axes included), dtypes, layouts (C, Fortran, strided, negative
strides, read-only, nested lists), every option, and where the result goes
(returned, in place, grad_out=, out=).  Then zero to three mutations from
MUTATIONS: wrong dtypes (int16 and other integers, complex, object, bool, str,
datetime), wrong ndim and shapes, zero classes, NaN/inf where only finite
values or probabilities are allowed, out-of-range labels of every integer
dtype, bad num_threads, unknown reductions, inplace=True on read-only,
strided or copied inputs, grad_out/out of the wrong dtype, shape or layout,
read-only, or overlapping an input.  Each mutation makes the call invalid
and names the arguments an error message must mention.

Every call must then
  - if mutated: raise TypeError, ValueError or IndexError (the mutation's
    own class when there is one mutation) whose message names one of the
    mutated arguments and is none of the generic messages of Cython or
    NumPy (GENERIC);
  - if not: return a result of the documented type, shape and dtype, in the
    caller's buffer when one was given, equal to the float64 reference
    (tests/reference.py) within conftest.tolerance (README.md's "Accuracy");
and, either way, leave every array the caller passed bit-for-bit as it was,
except, on success, the buffer the result was asked to go to.

Before each call the worker prints a one-line description of it to stdout,
so the last line before a crash is the call that crashed.  Exit status 0
means every example passed.  It also draws the inputs of the bugs it found
(fixed; test_fuzz.py keeps each as a regression test).
"""

import faulthandler
import os
import re
import sys

import numpy as np
from hypothesis import HealthCheck, given, note, seed, settings
from hypothesis import strategies as st

import cyce
import reference
from agreement import binary_ce_reference, categorical_ce_reference, close, sigmoid_bce_term_size

FUNCTIONS = ("logsumexp", "log_softmax", "softmax", "softmax_ce", "sigmoid_bce", "binary_ce",
             "categorical_ce")
SOFTMAX_FUNCTIONS = ("logsumexp", "log_softmax", "softmax")
LOSSES = ("softmax_ce", "sigmoid_bce", "binary_ce", "categorical_ce")
CLASS_LOSSES = ("softmax_ce", "categorical_ce")       # integer labels or probabilities, (..., C)
ELEMENT_LOSSES = ("sigmoid_bce", "binary_ce")         # targets of the input's shape
FIRST = {"logsumexp": "x", "log_softmax": "x", "softmax": "x", "softmax_ce": "logits",
         "sigmoid_bce": "logits", "binary_ce": "probs", "categorical_ce": "probs"}
SECOND = {"softmax_ce": "labels", "categorical_ce": "labels", "sigmoid_bce": "targets",
          "binary_ce": "targets"}
ON_PROBABILITIES = ("binary_ce", "categorical_ce")   # the first argument must be in [0, 1]

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
INT_DTYPES = tuple(np.dtype(t) for t in ("int8", "int16", "int32", "int64",
                                         "uint8", "uint16", "uint32", "uint64"))
WEIGHT_DTYPES = tuple(np.dtype(t) for t in ("float16", "float32", "float64", "int8", "int64",
                                            "uint8", "uint32"))
BAD_DTYPES = ("int16", "int8", "int32", "int64", "uint8", "uint64", "complex64", "complex128",
              "bool", "object", "str", "datetime64[s]")
BATCH_SHAPES = ((), (1,), (2,), (5,), (7,), (3, 2), (2, 1, 3), (0,), (3, 0), (0, 2))
LAYOUTS = ("c", "c", "c", "fortran", "strided", "reversed", "readonly", "list")
NUM_THREADS = (None, None, 1, 2, 3, 7, 300, 2**31, np.int32(2), np.int64(4))

# Messages that name no argument: Cython's buffer checks and conversions,
# NumPy's own errors.  A cyce error must say what to fix instead.
GENERIC = re.compile(
    r"Buffer dtype mismatch|Buffer has wrong number of dimensions|ndarray is not C-contiguous"
    r"|too large to convert|cannot convert|could not convert|invalid literal"
    r"|setting an array element|object of type .* has no len|unsupported operand"
    r"|argument of type|an integer is required|must be real number, not"
)


# ------------------------------------------------------------------ the call

class Call:
    """One call of one public function, and what it must do."""

    def __init__(self, fn):
        self.fn = fn
        self.first = None          # the first argument, as passed
        self.second = None         # the second (losses), as passed
        self.kwargs = {}
        self.destination = None    # "inplace", "grad_out", "out", or None: where the result goes
        self.blamed = set()        # empty: a valid call
        self.mutations = []
        self.error_types = set()   # the exception classes the mutations allow
        self.values = None         # the drawn float values of the first argument

    @property
    def args(self):
        return (self.first,) if self.fn in SOFTMAX_FUNCTIONS else (self.first, self.second)

    def mutate(self, name, blamed, error_types):
        self.mutations.append(name)
        self.blamed.update(blamed)
        self.error_types.update(error_types)

    def describe(self):
        parts = [describe(a) for a in self.args]
        parts += [f"{key}={describe(value)}" for key, value in self.kwargs.items()]
        status = f"mutations={self.mutations}" if self.mutations else "valid"
        return f"{self.fn}({', '.join(parts)})  [{status}]"


def describe(value):
    if isinstance(value, np.ndarray):
        layout = "C" if value.flags.c_contiguous else "F" if value.flags.f_contiguous else "strided"
        flags = "" if value.flags.writeable else " read-only"
        return f"ndarray{value.shape}:{value.dtype}:{layout}{flags}"
    if isinstance(value, list):
        return f"list(len {len(value)})"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------- array generation

def with_layout(a, layout):
    """The values of a in the given memory layout (a new object each time)."""
    if a.ndim == 0 or a.size == 0:
        layout = layout if layout in ("c", "readonly") else "c"
    if layout == "c":
        return np.array(a, order="C", copy=True)
    if layout == "fortran":
        return np.asfortranarray(a.copy())
    if layout == "strided":
        base = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        view = base[..., ::2]
        view[...] = a
        return view
    if layout == "reversed":
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    if layout == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    return a.tolist()


def non_contiguous(a):
    """A strided view holding a's values, or None where every view of this
    shape is C-contiguous (a single element, an empty array)."""
    base = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    view = base[..., ::2]
    view[...] = a
    return None if view.flags.c_contiguous else view


def bad_dtype(values, name):
    """values (floats) as an array of a dtype cyce refuses for them."""
    v = np.asarray(np.nan_to_num(np.asarray(values, np.float64), nan=0.0, posinf=1.0, neginf=-1.0))
    if name == "object":
        return np.array(v.tolist(), dtype=object)   # (also 0-d: an array, not a Python float)
    if name == "str":
        return np.asarray(v.astype(str))
    if name == "bool":
        return np.asarray(v > 0)
    if name.startswith("datetime"):
        return np.asarray(v.astype(np.int64).astype(name))
    if name[0] in "iu":
        return np.asarray(np.clip(v, 0 if name[0] == "u" else -100, 100).astype(name))
    return np.asarray(v.astype(name))


def draw_values(data, rng, shape, dtype, probabilities, fn):
    """Logits (std 3, sometimes with NaN and +-inf) or probabilities in
    [0, 1] (sometimes exactly 0 or 1)."""
    specials = [np.nan, np.inf, -np.inf]
    if probabilities:
        a = rng.random(shape)
        if a.size and data.draw(st.booleans(), label="exact 0/1"):
            a.reshape(-1)[rng.integers(0, a.size, 2)] = rng.integers(0, 2, 2)
    else:
        a = rng.standard_normal(shape) * 3
        if a.size and data.draw(st.integers(0, 3), label="non-finite logits") == 0:
            a.reshape(-1)[rng.integers(0, a.size, 2)] = rng.choice(specials, 2)
    return a.astype(dtype)


def draw_ignore_index(data, n_classes):
    """None (the default -100) or a valid ignore_index of any sign or size."""
    return data.draw(st.sampled_from([None, None, None, -1, 0, n_classes - 1, n_classes, 255,
                                      2**40, -(2**40), np.int16(-7)]), label="ignore_index")


def draw_class_labels(data, rng, batch, n_classes, ignore_index):
    dtype = data.draw(st.sampled_from(INT_DTYPES), label="label dtype")
    labels = rng.integers(0, n_classes, batch)
    ignore = -100 if ignore_index is None else int(ignore_index)
    info = np.iinfo(dtype)
    if labels.size and info.min <= ignore <= info.max and data.draw(st.booleans(), label="ignored rows"):
        labels.reshape(-1)[:: 1 + int(rng.integers(0, 3))] = ignore
    return labels.astype(dtype)


def draw_base(data, fn):
    """A valid call of fn: draws shapes, values, layouts, options and the
    result's destination."""
    call = Call(fn)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="values seed"))
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    batch = data.draw(st.sampled_from(BATCH_SHAPES), label="batch shape")
    n_classes = data.draw(st.integers(1, 9), label="C")
    shape = batch + (n_classes,)
    first = draw_values(data, rng, shape, dtype, fn in ON_PROBABILITIES, fn)
    call.shape, call.dtype, call.values = shape, np.dtype(dtype), first

    if data.draw(st.booleans(), label="num_threads given"):
        call.kwargs["num_threads"] = data.draw(st.sampled_from(NUM_THREADS), label="num_threads")

    if fn in SOFTMAX_FUNCTIONS:
        out = data.draw(st.sampled_from(["none", "none", "new"] + (["x"] if fn != "logsumexp" else [])),
                        label="out")
        layout = "c" if out == "x" else data.draw(st.sampled_from(LAYOUTS), label="x layout")
        call.first = with_layout(first, layout)
        if out == "new":  # (a list of floats is float64, whatever dtype was drawn)
            call.kwargs["out"] = np.full(shape[:-1] if fn == "logsumexp" else shape, 7,
                                         np.asarray(call.first).dtype)
            call.destination = "out"
        elif out == "x":
            call.kwargs["out"] = call.first
            call.destination = "out"
        return call

    # ---- the second argument and the options of the losses
    if fn in CLASS_LOSSES:
        soft = data.draw(st.booleans(), label="soft labels")
        # (an ignore_index with probabilities is bad input: bad_option's cases)
        ignore_index = None if soft else draw_ignore_index(data, n_classes)
        if ignore_index is not None:
            call.kwargs["ignore_index"] = ignore_index
        if soft:
            t = rng.random(shape)
            if data.draw(st.booleans(), label="normalised"):
                t /= t.sum(axis=-1, keepdims=True)
            second = t.astype(data.draw(st.sampled_from(FLOATS), label="label dtype"))
        else:
            second = draw_class_labels(data, rng, batch, n_classes, ignore_index)
        if data.draw(st.booleans(), label="weight given"):
            w = rng.uniform(0.25, 3.0, n_classes) * 4   # >= 1: integer dtypes keep it non-zero
            call.kwargs["weight"] = with_layout(
                w.astype(data.draw(st.sampled_from(WEIGHT_DTYPES), label="weight dtype")),
                data.draw(st.sampled_from(LAYOUTS), label="weight layout"))
        reductions = ("mean", "sum", "none")
    else:
        kind = data.draw(st.sampled_from(["float32", "float64", "bool", "int"]), label="target kind")
        y = rng.random(shape)
        if kind in ("bool", "int"):
            y = y > 0.5
            if kind == "int":
                y = y.astype(data.draw(st.sampled_from(INT_DTYPES), label="target dtype"))
        second = y.astype(kind) if kind.startswith("float") else y
        if data.draw(st.booleans(), label="weight given"):
            w_shape = data.draw(st.sampled_from([shape, shape[-1:], batch + (1,), (), (1,) * len(shape)]),
                                label="weight shape")
            w = rng.uniform(0.0, 3.0, w_shape) * 4
            call.kwargs["weight"] = with_layout(
                np.asarray(w.astype(data.draw(st.sampled_from(WEIGHT_DTYPES), label="weight dtype"))),
                data.draw(st.sampled_from(LAYOUTS), label="weight layout"))
        if fn == "sigmoid_bce" and data.draw(st.booleans(), label="pos_weight given"):
            pw_shape = data.draw(st.sampled_from([shape[-1:], (), (1,)]), label="pos_weight shape")
            call.kwargs["pos_weight"] = rng.uniform(0.0, 3.0, pw_shape) * 2
        reductions = ("mean", "sum", "none", "batchmean")
    call.second = with_layout(second, data.draw(st.sampled_from(LAYOUTS), label="second layout"))

    if data.draw(st.booleans(), label="reduction given"):
        call.kwargs["reduction"] = data.draw(st.sampled_from(reductions), label="reduction")
    if fn == "softmax_ce":
        if data.draw(st.booleans(), label="sample_weight given"):
            call.kwargs["sample_weight"] = with_layout(
                rng.uniform(0.0, 3.0, batch), data.draw(st.sampled_from(LAYOUTS), label="sw layout"))
        if data.draw(st.booleans(), label="smoothing given"):
            call.kwargs["label_smoothing"] = data.draw(st.sampled_from([0.0, 0.1, 1.0, 0, 1, np.float32(0.5)]),
                                                       label="label_smoothing")
        if data.draw(st.booleans(), label="z_loss given"):
            call.kwargs["z_loss"] = data.draw(st.sampled_from([0.0, 1e-4, 0.5, 2]), label="z_loss")
    if fn == "categorical_ce" and data.draw(st.booleans(), label="eps given"):
        call.kwargs["eps"] = data.draw(st.sampled_from([None, 1e-12, 1e-7, 0.5, 1.0, 0]), label="eps")

    # ---- where the gradient goes
    destination = data.draw(st.sampled_from(["none", "return_grad", "inplace", "grad_out", "grad_out=first"]),
                            label="destination")
    if destination in ("inplace", "grad_out=first"):
        call.first = with_layout(first, "c")
    else:
        call.first = with_layout(first, data.draw(st.sampled_from(LAYOUTS), label="first layout"))
    if destination == "return_grad":
        call.kwargs["return_grad"] = data.draw(st.sampled_from([True, np.True_]), label="return_grad")
    elif destination == "inplace":
        call.kwargs["inplace"] = True
        call.destination = "inplace"
    elif destination in ("grad_out", "grad_out=first"):
        call.kwargs["grad_out"] = (np.full(shape, 7, np.asarray(call.first).dtype)
                                   if destination == "grad_out" else call.first)
        call.destination = "grad_out"
    if call.destination and data.draw(st.booleans(), label="return_grad too"):
        call.kwargs["return_grad"] = data.draw(st.booleans(), label="return_grad value")
    return call


# --------------------------------------------------------------- mutations
#
# Each mutation is a function (data, rng, call) -> bool: it changes the call
# so that it is invalid and records what it blamed, or returns False when it
# does not apply to this call (it then changes nothing).

MUTATIONS = {}


def mutation(*functions):
    def register(f):
        MUTATIONS[f.__name__] = (functions or FUNCTIONS, f)
        return f
    return register


def first_values(call):
    """The drawn float values of the first argument, whatever mutations
    have put in its place since."""
    return call.values


def as_float_array(call):
    """The first argument as an ndarray of the drawn dtype, if it is a list
    (a list of floats is float64 whatever dtype was drawn)."""
    if isinstance(call.first, list):
        call.first = np.array(call.values, order="C", copy=True)


def effective_dtype(call):
    """The float dtype cyce will see for the first argument."""
    dtype = np.asarray(call.first).dtype
    return dtype if dtype in FLOATS else call.dtype


def ignore_index_of(call):
    value = call.kwargs.get("ignore_index", -100)
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) else -100


@mutation()
def first_bad_dtype(data, rng, call):
    name = data.draw(st.sampled_from(BAD_DTYPES), label="bad dtype")
    call.first = bad_dtype(first_values(call), name)
    call.mutate(f"{FIRST[call.fn]} dtype {name}", {FIRST[call.fn]}, {TypeError})
    return True


@mutation()
def first_zero_dimensional(data, rng, call):
    call.first = data.draw(st.sampled_from([np.float32(0.5), np.array(0.25), 0.5]), label="0-d")
    call.mutate(f"{FIRST[call.fn]} 0-d", {FIRST[call.fn]}, {ValueError})
    return True


@mutation()
def zero_classes(data, rng, call):
    call.first = np.zeros(call.shape[:-1] + (0,), call.dtype)
    call.mutate("zero classes", {FIRST[call.fn]}, {ValueError})
    return True


@mutation(*ON_PROBABILITIES)
def probability_out_of_range(data, rng, call):
    a = np.array(first_values(call), copy=True)
    if a.size == 0:
        return False
    a.reshape(-1)[int(rng.integers(0, a.size))] = data.draw(
        st.sampled_from([np.nan, np.inf, -np.inf, -0.5, 1.5, -1e-30]), label="bad probability")
    call.first = a
    call.mutate("probability out of [0, 1]", {FIRST[call.fn]}, {ValueError})
    return True


def make_inplace(call):
    call.kwargs["inplace"] = True
    call.kwargs.pop("grad_out", None)
    call.destination = "inplace"


@mutation(*LOSSES)
def inplace_read_only(data, rng, call):
    make_inplace(call)
    call.first = with_layout(first_values(call), "readonly")
    call.mutate("inplace on read-only", {FIRST[call.fn], "inplace"}, {ValueError})
    return True


@mutation(*LOSSES)
def inplace_strided(data, rng, call):
    view = non_contiguous(first_values(call))
    if view is None:
        return False
    if data.draw(st.booleans(), label="fortran instead") and first_values(call).ndim > 1:
        fortran = np.asfortranarray(first_values(call))
        view = view if fortran.flags.c_contiguous else fortran
    make_inplace(call)
    call.first = view
    call.mutate("inplace on non-contiguous", {FIRST[call.fn], "inplace"}, {ValueError})
    return True


@mutation(*LOSSES)
def inplace_copied_input(data, rng, call):
    values = first_values(call)
    if values.size == 0:
        return False
    make_inplace(call)
    call.first = values.tolist()
    call.mutate("inplace on a list", {FIRST[call.fn], "inplace"}, {TypeError})
    return True


@mutation(*LOSSES)
def inplace_and_grad_out(data, rng, call):
    make_inplace(call)
    call.first = with_layout(first_values(call), "c")
    call.kwargs["grad_out"] = np.empty(call.shape, call.dtype)
    call.mutate("inplace and grad_out", {"inplace", "grad_out"}, {ValueError})
    return True


@mutation(*LOSSES)
def inplace_over_another_input(data, rng, call):
    """The gradient would overwrite the targets (or a weight) that alias it."""
    values = np.array(first_values(call), order="C", copy=True)
    if values.size == 0:  # empty arrays share no memory: nothing to overwrite
        return False
    if call.fn in ELEMENT_LOSSES or call.fn == "categorical_ce":
        values = np.clip(np.nan_to_num(values, nan=0.5), 0, 1)   # valid as targets
    make_inplace(call)
    call.first = values
    victim = data.draw(st.sampled_from(["second", "weight"] if call.fn in ELEMENT_LOSSES else ["second"]),
                       label="aliased input")
    if victim == "second":
        call.second = values
        call.mutate("inplace over the second argument", {FIRST[call.fn], SECOND[call.fn], "inplace"},
                    {ValueError})
    else:
        call.kwargs["weight"] = values
        call.mutate("inplace over weight", {FIRST[call.fn], "weight", "inplace"}, {ValueError})
    return True


def output_name(call):
    return "out" if call.fn in SOFTMAX_FUNCTIONS else "grad_out"


def output_shape(call):
    return call.shape[:-1] if call.fn == "logsumexp" else call.shape


def set_output(call, buffer):
    name = output_name(call)
    call.kwargs.pop("inplace", None)
    call.kwargs[name] = buffer
    call.destination = "out" if name == "out" else "grad_out"
    return name


@mutation()
def output_bad_dtype(data, rng, call):
    as_float_array(call)
    other = np.float64 if effective_dtype(call) == np.float32 else np.float32
    dtype = data.draw(st.sampled_from([other, np.float16, np.int32, np.complex64]), label="output dtype")
    name = set_output(call, np.zeros(output_shape(call), dtype))
    call.mutate(f"{name} dtype", {name}, {TypeError})
    return True


@mutation()
def output_bad_shape(data, rng, call):
    shape = output_shape(call)
    wrong = data.draw(st.sampled_from([shape + (1,), shape[:-1] + (shape[-1] + 1,) if shape else (2,),
                                       (int(np.prod(shape)) + 1,)]), label="output shape")
    name = set_output(call, np.zeros(wrong, effective_dtype(call)))
    call.mutate(f"{name} shape {wrong}", {name}, {ValueError, TypeError})
    return True


@mutation()
def output_not_contiguous(data, rng, call):
    shape = output_shape(call)
    if not shape:
        return False
    view = non_contiguous(np.zeros(shape, effective_dtype(call)))
    if view is None:
        return False
    name = set_output(call, view)
    call.mutate(f"{name} strided", {name}, {ValueError})
    return True


@mutation()
def output_read_only(data, rng, call):
    buffer = np.zeros(output_shape(call), effective_dtype(call))
    buffer.flags.writeable = False
    name = set_output(call, buffer)
    call.mutate(f"{name} read-only", {name}, {ValueError})
    return True


@mutation()
def output_not_an_array(data, rng, call):
    buffer = np.zeros(output_shape(call), effective_dtype(call))
    kind = data.draw(st.sampled_from(["list", "memoryview", "tuple"]), label="output type")
    value = buffer.tolist() if kind == "list" else memoryview(buffer) if kind == "memoryview" else (0.0,)
    name = set_output(call, value)
    call.mutate(f"{name} {kind}", {name}, {TypeError})
    return True


@mutation()
def output_overlaps_first(data, rng, call):
    """out / grad_out shares memory with the input without being it."""
    values = first_values(call)
    shape = output_shape(call)
    size, out_size = values.size, int(np.prod(shape))
    if size < 2 or out_size == 0:
        return False
    buffer = np.zeros(size + out_size + 1, values.dtype)
    offset = int(rng.integers(1, size))
    first = buffer[:size].reshape(values.shape)
    first[...] = values
    call.first = first
    name = set_output(call, buffer[offset:offset + out_size].reshape(shape))
    call.mutate(f"{name} overlaps {FIRST[call.fn]}", {name, FIRST[call.fn]}, {ValueError})
    return True


@mutation(*LOSSES)
def grad_out_overlaps_another_input(data, rng, call):
    """grad_out is the (float) targets or the weight."""
    if int(np.prod(call.shape)) == 0:  # empty arrays share no memory
        return False
    dtype = call.dtype
    victim = data.draw(st.sampled_from(["second", "weight"] if call.fn in ELEMENT_LOSSES else ["second"]),
                       label="aliased input")
    values = rng.random(call.shape).astype(dtype)
    if victim == "second":
        call.second = values
        blamed = {"grad_out", SECOND[call.fn]}
    else:
        call.kwargs["weight"] = values
        blamed = {"grad_out", "weight"}
    if not isinstance(call.first, np.ndarray) or call.first.dtype != dtype:
        call.first = np.array(call.values, order="C", copy=True)
    set_output(call, values)
    call.mutate(f"grad_out is {victim}", blamed, {ValueError})
    return True


@mutation(*CLASS_LOSSES)
def label_out_of_range(data, rng, call):
    batch = call.shape[:-1]
    n_classes = call.shape[-1]
    if int(np.prod(batch)) == 0:
        return False
    dtype = data.draw(st.sampled_from(INT_DTYPES), label="label dtype")
    info = np.iinfo(dtype)
    ignore = ignore_index_of(call)
    candidates = [v for v in (n_classes, n_classes + 1, info.max, -1, info.min, -100, 2**40)
                  if info.min <= v <= info.max and not 0 <= v < n_classes and v != ignore]
    if not candidates:
        return False
    labels = rng.integers(0, n_classes, batch).astype(dtype)
    labels.reshape(-1)[int(rng.integers(0, labels.size))] = data.draw(st.sampled_from(candidates), label="bad label")
    call.second = labels
    call.mutate(f"label out of range ({dtype})", {"labels"}, {IndexError})
    return True


@mutation(*LOSSES)
def second_bad_shape(data, rng, call):
    batch, n_classes = call.shape[:-1], call.shape[-1]
    if call.fn in CLASS_LOSSES and data.draw(st.booleans(), label="integer labels"):
        wrong = data.draw(st.sampled_from([batch + (1,), batch + (2,), (int(np.prod(batch)) + 1,)]),
                          label="label shape")
        value = np.zeros(wrong, np.int64)
    else:
        wrong = data.draw(st.sampled_from([batch + (n_classes + 1,), call.shape + (1,), (n_classes + 2,)]),
                          label="target shape")
        value = np.full(wrong, 0.5, data.draw(st.sampled_from(FLOATS + (np.dtype(bool),)), label="dtype"))
    if value.shape == call.shape or value.shape == batch:
        return False
    call.second = value
    # (bool labels for a class loss are a TypeError: neither indices nor probabilities)
    call.mutate(f"{SECOND[call.fn]} shape {wrong}", {SECOND[call.fn]}, {ValueError, TypeError})
    return True


@mutation(*LOSSES)
def second_bad_dtype(data, rng, call):
    names = ("complex64", "object", "str", "datetime64[s]")
    if call.fn in CLASS_LOSSES:
        names += ("bool",)
    name = data.draw(st.sampled_from(names), label="bad dtype")
    shape = call.shape if call.fn in ELEMENT_LOSSES else call.shape[:-1]
    call.second = bad_dtype(rng.random(shape), name)
    call.mutate(f"{SECOND[call.fn]} dtype {name}", {SECOND[call.fn]}, {TypeError})
    return True


@mutation(*LOSSES)
def second_not_a_probability(data, rng, call):
    if int(np.prod(call.shape)) == 0:
        return False
    where = int(rng.integers(0, int(np.prod(call.shape))))
    if call.fn in ELEMENT_LOSSES and data.draw(st.booleans(), label="integer targets"):
        t = (rng.random(call.shape) > 0.5).astype(np.int16)
        t.reshape(-1)[where] = data.draw(st.sampled_from([2, -1]), label="bad target")
    else:
        t = rng.random(call.shape).astype(data.draw(st.sampled_from(FLOATS), label="dtype"))
        t.reshape(-1)[where] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf, -0.25, 1.5]),
                                         label="bad value")
    call.second = t
    call.mutate(f"{SECOND[call.fn]} not in [0, 1]", {SECOND[call.fn]}, {ValueError})
    return True


def bad_weight_values(data, rng, shape):
    w = rng.uniform(0.5, 2.0, shape)
    if w.size == 0:
        return None
    w.reshape(-1)[int(rng.integers(0, w.size))] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]),
                                                            label="bad weight")
    return w


@mutation(*LOSSES)
def weight_bad(data, rng, call):
    n_classes = call.shape[-1]
    good_shape = (n_classes,) if call.fn in CLASS_LOSSES else call.shape
    how = data.draw(st.sampled_from(["shape", "value", "dtype"]), label="what is wrong")
    if how == "shape":
        wrong = (n_classes + 1,) if call.fn in ELEMENT_LOSSES else data.draw(
            st.sampled_from([(n_classes + 1,), (n_classes, 1), (1, n_classes)]), label="weight shape")
        call.kwargs["weight"] = np.ones(wrong)
        error = {ValueError}
    elif how == "value":
        w = bad_weight_values(data, rng, good_shape)
        if w is None:
            return False
        call.kwargs["weight"] = w
        error = {ValueError}
    else:
        name = data.draw(st.sampled_from(["complex128", "object", "bool", "str"]), label="weight dtype")
        call.kwargs["weight"] = bad_dtype(np.ones(good_shape), name)
        error = {TypeError}
    call.mutate(f"weight bad {how}", {"weight"}, error)
    return True


@mutation("softmax_ce")
def sample_weight_bad(data, rng, call):
    batch = call.shape[:-1]
    how = data.draw(st.sampled_from(["shape", "value", "dtype"]), label="what is wrong")
    if how == "shape":
        call.kwargs["sample_weight"] = np.ones(batch + (1,))
        error = {ValueError}
    elif how == "value":
        w = bad_weight_values(data, rng, batch)
        if w is None:
            return False
        call.kwargs["sample_weight"] = w
        error = {ValueError}
    else:
        call.kwargs["sample_weight"] = bad_dtype(np.ones(batch), data.draw(
            st.sampled_from(["complex128", "object", "bool"]), label="dtype"))
        error = {TypeError}
    call.mutate(f"sample_weight bad {how}", {"sample_weight"}, error)
    return True


@mutation("sigmoid_bce")
def pos_weight_bad(data, rng, call):
    n_classes = call.shape[-1]
    how = data.draw(st.sampled_from(["shape", "value", "dtype"]), label="what is wrong")
    if how == "shape":
        call.kwargs["pos_weight"] = np.ones(data.draw(st.sampled_from([(n_classes + 1,), (2, n_classes)]),
                                                      label="pos_weight shape"))
        error = {ValueError}
    elif how == "value":
        call.kwargs["pos_weight"] = bad_weight_values(data, rng, (n_classes,))
        error = {ValueError}
    else:
        call.kwargs["pos_weight"] = bad_dtype(np.ones(n_classes), data.draw(
            st.sampled_from(["complex128", "object", "bool"]), label="dtype"))
        error = {TypeError}
    call.mutate(f"pos_weight bad {how}", {"pos_weight"}, error)
    return True


def option_error(name, value):
    """The exception class a bad value of an option raises: TypeError for a
    value of the wrong kind, ValueError for one of the right kind out of range."""
    if name == "reduction":
        return ValueError
    if name in ("return_grad", "inplace") or isinstance(value, (bool, np.bool_)):
        return TypeError
    if name in ("num_threads", "ignore_index"):
        return ValueError if isinstance(value, (int, np.integer)) else TypeError
    return ValueError if isinstance(value, (int, float, np.integer, np.floating)) else TypeError


def bad_option(name, values, functions=FUNCTIONS, key=None):
    def mutate(data, rng, call):
        value = data.draw(st.sampled_from(values), label=name)
        call.kwargs[name] = value
        call.mutate(f"{name}={value!r}", {name}, {option_error(name, value)})
        return True
    MUTATIONS[key or f"bad_{name}"] = (functions, mutate)


bad_option("num_threads", [0, -1, -(2**63), np.int64(-5), 2.0, "2", True, 1.5, np.float64(2)])
bad_option("reduction", ["avg", "MEAN", "", None, 0, b"mean"], LOSSES)
bad_option("reduction", ["batchmean"], CLASS_LOSSES, key="bad_reduction_batchmean")
bad_option("label_smoothing", [-0.1, 1.5, np.nan, np.inf, "0.1", True, None, 1 + 0j, -1, 2],
           ("softmax_ce",))
bad_option("z_loss", [-1.0, np.nan, -np.inf, np.float64(np.inf), "1", True, None, -(10**5)], ("softmax_ce",))
bad_option("eps", [-0.1, 1.5, np.nan, -np.inf, "x", True, 2], ("categorical_ce",))
bad_option("ignore_index", [1.5, "x", True, np.float64(3.0), np.bool_(False)], CLASS_LOSSES)
bad_option("return_grad", ["yes", 1, 0, np.int64(1), 1.0], LOSSES)
bad_option("inplace", ["yes", 1, np.int64(0), 0.0], LOSSES)



@mutation(*CLASS_LOSSES)
def ignore_index_with_probabilities(data, rng, call):
    """An ignore_index other than -100 names a class index: with probability
    targets it is an error (PyTorch raises too)."""
    if np.asarray(call.second).dtype.kind != "f":
        return False
    value = data.draw(st.sampled_from([0, 1, -1, -101, 2**40]), label="ignore_index")
    call.kwargs["ignore_index"] = value
    call.mutate(f"ignore_index={value!r} with probabilities", {"ignore_index"}, {ValueError})
    return True

# Inputs of bugs the fuzzer found (now fixed; see test_fuzz.py).
bad_option("z_loss", [float("inf")], ("softmax_ce",), key="found_z_loss_inf")
bad_option("ignore_index", [2**63, -(2**63) - 1, 2**70, np.uint64(2**64 - 1)], CLASS_LOSSES,
           key="found_ignore_index_beyond_int64")
bad_option("label_smoothing", [10**400], ("softmax_ce",), key="found_huge_int_smoothing")
bad_option("z_loss", [10**400], ("softmax_ce",), key="found_huge_int_z_loss")
bad_option("eps", [10**400], ("categorical_ce",), key="found_huge_int_eps")

@mutation(*ELEMENT_LOSSES)
def found_grad_out_matrix(data, rng, call):
    if len(call.shape) != 2:
        return False
    call.first = np.array(call.values, order="C", copy=True)
    set_output(call, np.asmatrix(np.zeros(call.shape, call.dtype)))
    call.mutate("grad_out np.matrix", {"grad_out"}, {TypeError, ValueError})
    return True

def draw_call(data, fn):
    call = draw_base(data, fn)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="mutation seed"))
    names = sorted(name for name, (functions, _) in MUTATIONS.items() if fn in functions)
    for _ in range(data.draw(st.sampled_from([0, 0, 1, 1, 1, 2, 3]), label="mutations")):
        name = data.draw(st.sampled_from(names), label="mutation")
        MUTATIONS[name][1](data, rng, call)
    return call


# ------------------------------------------------------------------- checks

def arrays_passed(call):
    """Every ndarray the caller passed, and the arrays they are views of."""
    found = []
    for value in list(call.args) + list(call.kwargs.values()):
        while isinstance(value, np.ndarray):
            if not any(value is seen for seen in found):
                found.append(value)
            value = value.base
    return found


def snapshot(arrays):
    return [(a, a.tobytes() if a.dtype != object else list(a.reshape(-1))) for a in arrays]


def assert_unchanged(before, except_memory_of=None):
    for array, content in before:
        if except_memory_of is not None and np.shares_memory(array, except_memory_of):
            continue
        now = array.tobytes() if array.dtype != object else list(array.reshape(-1))
        assert now == content, f"an array the caller passed changed: {describe(array)}"


def destination_of(call):
    if call.destination == "inplace":
        return call.first
    if call.destination == "grad_out":
        return call.kwargs["grad_out"]
    if call.destination == "out":
        return call.kwargs["out"]
    return None


def check_error(call, error):
    message = str(error)
    assert not GENERIC.search(message), f"a generic message: {type(error).__name__}: {message}"
    named = [name for name in call.blamed if re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message)]
    assert named, (f"{type(error).__name__}: {message!r} names none of {sorted(call.blamed)} "
                   f"(mutations: {call.mutations})")
    if len(call.mutations) == 1:
        assert type(error) in call.error_types, (
            f"{type(error).__name__} for {call.mutations[0]} (expected {call.error_types}): {message}")


def wants_gradient(call):
    kwargs = call.kwargs
    return (kwargs.get("return_grad") is True or kwargs.get("return_grad") is np.True_
            or call.destination is not None)


def zero_times_inf_rows(loss, x, labels, ignore_index, reduction):
    """label_smoothing=1 and an integer label on a -inf logit: the exact
    loss is inf (the smoothing puts e/C on that class), which the reference
    returns; cyce, like PyTorch, evaluates the label's term (1 - e) w (lse -
    x_y) as 0 * inf = NaN.  Both are defensible; the NaN is expected here."""
    x = x.reshape(-1, x.shape[-1])
    flat = labels.reshape(-1).astype(np.int64)
    kept = flat != ignore_index
    rows = np.flatnonzero(kept)
    hit = np.zeros(flat.shape, bool)
    hit[rows] = np.isneginf(x[rows, flat[rows]])
    if not hit.any():
        return loss
    if reduction != "none":
        return np.nan
    loss = np.array(loss, dtype=np.float64)
    loss.reshape(-1)[hit] = np.nan
    return loss


def expected_result(call, values):
    """(loss or result, grad or None, term_size) from the reference, for the
    pristine values of the call."""
    fn, kwargs = call.fn, call.kwargs
    x = values["first"]
    if fn in SOFTMAX_FUNCTIONS:
        return getattr(reference, fn)(x), None, 0.0
    y = values["second"]
    reduction = kwargs.get("reduction", "mean")
    ignore_index = int(kwargs.get("ignore_index", -100))
    weight = values.get("weight")
    if fn == "softmax_ce":
        smoothing = float(kwargs.get("label_smoothing", 0.0))
        loss, grad, term_size = reference.softmax_ce(
            x, y, weight=weight, sample_weight=values.get("sample_weight"), ignore_index=ignore_index,
            reduction=reduction, label_smoothing=smoothing, z_loss=float(kwargs.get("z_loss", 0.0)),
            term_size=True)
        if smoothing == 1.0 and y.dtype.kind in "iu":
            loss = zero_times_inf_rows(loss, x, y, ignore_index, reduction)
        return loss, grad, term_size
    if fn == "categorical_ce":
        eps = kwargs.get("eps")
        eps = np.finfo(x.dtype).eps if eps is None else float(eps)
        loss, grad = categorical_ce_reference(x, y, eps, weight=weight, ignore_index=ignore_index,
                                              reduction=reduction)
        return loss, grad, 0.0
    if fn == "binary_ce":
        loss, grad = binary_ce_reference(x, y, reduction, weight)
        return loss, grad, 0.0
    pos_weight = values.get("pos_weight")
    loss, grad = reference.sigmoid_bce(x, y, weight=weight, pos_weight=pos_weight, reduction=reduction)
    return loss, grad, sigmoid_bce_term_size(y, x.shape, reduction, weight, pos_weight)


def check_result(call, result, values):
    fn, kwargs = call.fn, call.kwargs
    x = values["first"]
    dtype = x.dtype
    expected, expected_grad, term_size = expected_result(call, values)
    if fn in SOFTMAX_FUNCTIONS:
        if "out" in kwargs:
            assert result is kwargs["out"], "the result is not the caller's out"
        shape = x.shape[:-1] if fn == "logsumexp" else x.shape
        assert np.shape(result) == shape and result.dtype == dtype, (np.shape(result), result.dtype)
        if fn == "logsumexp" and x.ndim == 1 and "out" not in kwargs:
            assert isinstance(result, np.generic), type(result)
        close(result, expected, dtype, fn)
        return
    if wants_gradient(call):
        assert isinstance(result, tuple) and len(result) == 2, type(result)
        loss, grad = result
        destination = destination_of(call)
        if destination is not None:
            assert grad is destination, "the gradient is not in the caller's buffer"
        assert grad.shape == x.shape and grad.dtype == dtype, (grad.shape, grad.dtype)
    else:
        loss, grad = result, None
    reduction = kwargs.get("reduction", "mean")
    if reduction == "none":
        per = x.shape if fn in ELEMENT_LOSSES else x.shape[:-1]
        assert isinstance(loss, np.ndarray) and loss.shape == per and loss.dtype == dtype, (
            type(loss), np.shape(loss), loss.dtype)
    else:
        assert isinstance(loss, np.generic) and loss.dtype == dtype, (type(loss), loss.dtype)
    close(loss, expected, dtype, "loss")
    if grad is not None:
        close(grad, expected_grad, dtype, "grad", term_size)


def pristine_values(call):
    """Copies of the values as NumPy reads them, for the reference (taken
    before the call: an in-place call overwrites the first argument)."""
    values = {"first": np.array(call.first, copy=True)}
    if call.fn not in SOFTMAX_FUNCTIONS:
        values["second"] = np.array(call.second, copy=True)
    for key in ("weight", "sample_weight", "pos_weight"):
        if call.kwargs.get(key) is not None:
            values[key] = np.array(call.kwargs[key], copy=True)
    return values


def run_one(call):
    line = call.describe()
    print(line, flush=True)
    note(line)
    before = snapshot(arrays_passed(call))
    valid = not call.blamed
    values = pristine_values(call) if valid else None
    try:
        result = getattr(cyce, call.fn)(*call.args, **call.kwargs)
    except (TypeError, ValueError, IndexError) as error:
        assert not valid, f"a valid call raised {type(error).__name__}: {error}"
        check_error(call, error)
        assert_unchanged(before)
        return
    assert valid, f"an invalid call returned (mutations: {call.mutations})"
    assert_unchanged(before, except_memory_of=destination_of(call))
    check_result(call, result, values)


def main(argv):
    if len(argv) != 4 or argv[1] not in FUNCTIONS:
        sys.exit(f"usage: python {argv[0]} {{{','.join(FUNCTIONS)}}} SEED EXAMPLES")
    fn, seed_value, examples = argv[1], int(argv[2]), int(argv[3])
    faulthandler.enable()

    @seed(seed_value)
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(st.data())
    def fuzz(data):
        with np.errstate(all="ignore"):
            run_one(draw_call(data, fn))

    fuzz()
    print(f"fuzz_worker: {fn}: {examples} examples passed (seed {seed_value})", flush=True)


if __name__ == "__main__":
    main(sys.argv)
