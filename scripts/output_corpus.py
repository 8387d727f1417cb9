"""Save every public function's outputs over a fixed corpus, or compare them
byte for byte with a saved set: a kernel refactoring must keep the bits.

    python scripts/output_corpus.py save DIR      # DIR/<level>.npz per SIMD build
    python scripts/output_corpus.py compare DIR   # exit 1 if any output differs

Each SIMD build this CPU runs (baseline, avx2, avx512) is exercised in a
process of its own with CYCE_SIMD set.  To check a change, save with the
commit before it installed, then compare with the commit after it (the
corpus is generated from fixed seeds, so both sides see the same inputs).
The corpus covers every function, reduction and option, integer and
probability targets, in place, grad_out and new arrays, the row lengths of
every kernel path (tile rows, one block, rows deferring their scaling, rows
of many blocks), edge values (-inf masks, NaN, +-inf, 1e30) and arrays that
do not start on a cache line.

Bytes are compared with each NaN read as NaN, whatever its sign and payload:
IEEE 754 leaves open which NaN an operation on two NaNs returns (x86 returns
its first operand, an order the compiler picks), so a NaN row may come out
as -nan after an unrelated change of code generation.  Every other bit,
and where the NaNs are, must be the same.
"""

import os
import subprocess
import sys

import numpy as np

LEVELS = ("baseline", "avx2", "avx512")
# (rows, classes): tile rows, a short and a one-block row, a row whose
# scaling waits for the next row's exps, and rows of many blocks
SHAPES = [(130, 7), (67, 32), (40, 33), (24, 1000), (9, 32000), (5, 70001)]
DTYPES = ("float32", "float64")


def logits_for(rng, shape, dtype, edges):
    x = rng.uniform(-6, 6, size=shape).astype(dtype)
    if edges and shape[0] >= 6:
        x[0, ::3] = -np.inf                     # masked classes
        x[1, -1] = np.nan                       # a NaN row
        x[2, 0] = np.inf                        # a +inf row
        x[3] = -np.inf                          # an all -inf row
        x[4, 1] = 1e30 if dtype == "float64" else 3e38
        x[5, :] = x[5, :] * 50                  # a confident row
    return x


def offset_copy(a, byte_offset):
    """a copied into a buffer starting byte_offset past a 64-byte line."""
    raw = np.empty(a.nbytes + 128, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64 + byte_offset
    view = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    view[...] = a
    return view


def cases():
    """(name, thunk) pairs; each thunk returns a tuple of arrays/scalars."""
    import cyce

    rng = np.random.default_rng(20261201)
    for n_rows, n_classes in SHAPES:
        for dtype in DTYPES:
            for edges in (False, True):
                x = logits_for(rng, (n_rows, n_classes), dtype, edges)
                y = rng.integers(0, n_classes, size=n_rows)
                y[::5] = -100
                y_valid = rng.integers(0, n_classes, size=n_rows)
                t = rng.dirichlet(np.ones(n_classes), size=n_rows).astype(dtype)
                w = rng.uniform(0.2, 2.0, size=n_classes)
                s = rng.uniform(0.0, 3.0, size=n_rows)
                tag = f"{n_rows}x{n_classes}-{dtype}-{'edges' if edges else 'plain'}"
                yield from softmax_ce_cases(cyce, tag, x, y, t, w, s)
                yield f"{tag}-logsumexp", lambda x=x: (cyce.logsumexp(x),)
                yield f"{tag}-softmax", lambda x=x: (cyce.softmax(x),)
                yield f"{tag}-log_softmax", lambda x=x: (cyce.log_softmax(x),)
                yield f"{tag}-softmax-inplace", lambda x=x: inplace(cyce.softmax, x)
                yield f"{tag}-log_softmax-inplace", lambda x=x: inplace(cyce.log_softmax, x)
                if not edges:
                    yield from binary_cases(cyce, tag, x, y_valid, t, w, rng)
    # placement: rows starting off a cache line
    for byte_offset in (0, 16, 40):
        for dtype in DTYPES:
            x = logits_for(rng, (9, 32000), dtype, False)
            y = rng.integers(0, 32000, size=9)
            tag = f"offset{byte_offset}-{dtype}"
            yield (f"{tag}-inplace",
                   lambda x=x, y=y, o=byte_offset: ce_inplace(cyce, offset_copy(x, o), y))
            yield (f"{tag}-softmax",
                   lambda x=x, o=byte_offset: inplace(cyce.softmax, offset_copy(x, o)))


def inplace(fn, x):
    x = x.copy() if x.base is None else x
    fn(x, out=x)
    return (x,)


def ce_inplace(cyce, x, y, **options):
    loss, grad = cyce.softmax_ce(x, y, inplace=True, **options)
    return (loss, grad)


def softmax_ce_cases(cyce, tag, x, y, t, w, s):
    option_sets = {
        "plain": {},
        "weight": {"weight": w},
        "sample": {"sample_weight": s},
        "smooth": {"label_smoothing": 0.1},
        "zloss": {"z_loss": 1e-3},
        "all": {"weight": w, "sample_weight": s, "label_smoothing": 0.2, "z_loss": 1e-4},
    }
    for name, options in option_sets.items():
        for reduction in ("mean", "sum", "none"):
            yield (f"{tag}-ce-{name}-{reduction}",
                   lambda o=options, r=reduction: cyce.softmax_ce(x, y, reduction=r, **o))
            yield (f"{tag}-ce-{name}-{reduction}-grad",
                   lambda o=options, r=reduction: cyce.softmax_ce(
                       x, y, reduction=r, return_grad=True, **o))
        yield (f"{tag}-ce-{name}-inplace",
               lambda o=options: ce_inplace(cyce, x.copy(), y, **o))
        grad_out = np.empty_like(x)
        yield (f"{tag}-ce-{name}-grad_out",
               lambda o=options, g=grad_out: cyce.softmax_ce(x, y, grad_out=g, **o))
        soft_options = {k: v for k, v in options.items()}
        yield (f"{tag}-ce-soft-{name}",
               lambda o=soft_options: cyce.softmax_ce(x, t, return_grad=True, **o))
        yield (f"{tag}-ce-soft-{name}-none",
               lambda o=soft_options: cyce.softmax_ce(x, t, reduction="none", **o))
        yield (f"{tag}-ce-soft-f64targets-{name}",
               lambda o=soft_options: cyce.softmax_ce(
                   x, t.astype(np.float64), return_grad=True, **o))


def binary_cases(cyce, tag, x, y, t, w, rng):
    probs = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    probs = probs.astype(x.dtype)
    targets = (rng.uniform(size=x.shape) < 0.3).astype(x.dtype)
    pos_weight = rng.uniform(0.5, 2.0, size=x.shape[-1]).astype(x.dtype)
    element_weight = rng.uniform(0.5, 2.0, size=x.shape).astype(x.dtype)
    for reduction in ("mean", "sum", "none", "batchmean"):
        yield (f"{tag}-sigmoid_bce-{reduction}",
               lambda r=reduction: cyce.sigmoid_bce(x, targets, reduction=r, return_grad=True))
        yield (f"{tag}-sigmoid_bce-weights-{reduction}",
               lambda r=reduction: cyce.sigmoid_bce(
                   x, targets, weight=element_weight, pos_weight=pos_weight, reduction=r,
                   return_grad=True))
        yield (f"{tag}-binary_ce-{reduction}",
               lambda r=reduction: cyce.binary_ce(
                   probs, targets, weight=element_weight, reduction=r, return_grad=True))
    yield (f"{tag}-sigmoid_bce-inplace",
           lambda: cyce.sigmoid_bce(x.copy(), targets, inplace=True))
    yield (f"{tag}-sigmoid_bce-f64targets",
           lambda: cyce.sigmoid_bce(x, targets.astype(np.float64), return_grad=True))
    renormalised = (probs / probs.sum(axis=-1, keepdims=True)).astype(x.dtype)
    for reduction in ("mean", "sum", "none"):
        yield (f"{tag}-categorical_ce-labels-{reduction}",
               lambda r=reduction: cyce.categorical_ce(
                   renormalised, y, weight=w, reduction=r, return_grad=True))
        yield (f"{tag}-categorical_ce-soft-{reduction}",
               lambda r=reduction: cyce.categorical_ce(
                   renormalised, t, weight=w, reduction=r, return_grad=True))


def collect():
    """{case name / output index: array} of every case's outputs."""
    outputs = {}
    for name, thunk in cases():
        result = thunk()
        if not isinstance(result, tuple):
            result = (result,)
        for i, value in enumerate(result):
            outputs[f"{name}/{i}"] = np.array(value)
    return outputs


def canonical_bytes(a):
    """a's bytes, every NaN written as the same quiet NaN."""
    if a.dtype.kind in "fc":
        a = np.where(np.isnan(a), np.array(np.nan, dtype=a.dtype), a)
    return a.tobytes()


def worker(mode, path):
    outputs = collect()
    if mode == "save":
        np.savez_compressed(path, **outputs)
        print(f"{os.environ['CYCE_SIMD']}: saved {len(outputs)} outputs to {path}")
        return 0
    saved = np.load(path)
    missing = sorted(set(saved.files) - set(outputs))
    differ = [key for key in saved.files if key in outputs and (
        saved[key].dtype != outputs[key].dtype or saved[key].shape != outputs[key].shape
        or canonical_bytes(saved[key]) != canonical_bytes(outputs[key]))]
    for key in (missing + differ)[:20]:
        print(f"  {'missing' if key in missing else 'differs'}: {key}")
    level = os.environ["CYCE_SIMD"]
    print(f"{level}: {len(saved.files) - len(missing) - len(differ)} of {len(saved.files)} "
          f"outputs identical, {len(differ)} differ, {len(missing)} missing")
    return 1 if missing or differ else 0


def runnable_levels():
    """The SIMD builds this CPU runs (commits before the one-module kernel
    core had one module per build, listed by _dispatch._runnable)."""
    import cyce._dispatch as dispatch

    if hasattr(dispatch, "runnable_levels"):
        return dispatch.runnable_levels()
    return list(dispatch._runnable())


def main(argv):
    if len(argv) == 4 and argv[1] == "--worker":
        return worker(argv[2], argv[3])
    if len(argv) != 3 or argv[1] not in ("save", "compare"):
        print(__doc__)
        return 2
    mode, directory = argv[1], argv[2]
    os.makedirs(directory, exist_ok=True)
    status = 0
    runnable = runnable_levels()
    for level in LEVELS:
        path = os.path.join(directory, f"{level}.npz")
        if level not in runnable:
            print(f"{level}: not run by this CPU, skipped")
            continue
        if mode == "compare" and not os.path.exists(path):
            print(f"{level}: no saved outputs at {path}")
            status = 1
            continue
        env = dict(os.environ, CYCE_SIMD=level)
        status |= subprocess.run([sys.executable, __file__, "--worker", mode, path],
                                 env=env, check=False).returncode
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
