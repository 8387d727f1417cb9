"""Benchmark of softmax cross-entropy (mean loss + gradient w.r.t. the logits).

Contestants, all on the same synthetic float logits (uniform in [-4, 4)) and
random int64 labels.  At bfloat16 and float16 the logits are the float32 ones
rounded to that dtype (bfloat16 is ml_dtypes'); cyce computes them in float32
and stores the gradient in the input's dtype:

- ``cyce inplace``  cyce.softmax_ce(x, y, inplace=True): the gradient overwrites
                    the logits, which are restored from a saved copy before
                    each call (the restore is not timed);
- ``cyce grad``     cyce.softmax_ce(x, y, return_grad=True): a new gradient array;
- ``cyce loss``     cyce.softmax_ce(x, y): the loss only;
- ``numpy``         a plain NumPy reference in the input dtype (see
                    `numpy_reference`), single-threaded whatever ``threads`` says;
                    not at bfloat16 / float16 (see `SKIPPED_AT_HALF`);
- ``torch``         F.cross_entropy forward + backward, if torch is installed
                    (at bfloat16 / float16: on a torch.bfloat16 / float16 tensor);
- ``jax``           jit(value_and_grad) of optax's integer-label loss, if jax and
                    optax are installed (on the bfloat16 / float16 array as given);
- ``jax loss``      jit of that loss alone (the peer of ``cyce loss``).

``python -m cyce bench --options`` times the options instead (`OPTIONS`):

- ``cyce stats``        cyce.softmax_stats(x, y): lse, logprob, entropy and
                        argmax per row (read-only, like ``cyce loss``);
- ``torch stats``       the same four with torch ops (logsumexp, log_softmax
                        and gather, the entropy from the log-probabilities,
                        argmax), if torch is installed;
- ``cyce smoothing``    cyce.softmax_ce(x, y, label_smoothing=0.1, inplace=True);
- ``cyce soft``         in place against probability targets (each row a
                        random distribution, float32; made before timing);
- ``cyce softcap``      in place with logit_softcap=30 (Gemma 2's);
- ``cyce temperature``  in place at temperature=0.7;
- ``torch softcap``     F.cross_entropy(30 tanh(x / 30)) forward + backward;

beside ``cyce loss`` and ``cyce inplace``, the plain calls they are
compared with (bench/targets.py's option targets).  The losses of these
rows are not cross-checked against cyce inplace's: each computes another one.

The floor: per element, the larger of two limits measured on one thread in
a fresh process for each dtype: the softmax kernels' vectorised exp (of
x - max <= 0) over a cache-resident buffer (one exp, one load, one store per
element), and memory: a NumPy pass over a 256 MiB array, reading it
(``x.max()``) for the loss alone, reading and writing it in place
(``np.multiply(x, 1, out=x)``) for the others.  At bfloat16 / float16 the exp
is float32's (their arithmetic) and the memory pass runs over uint16 (their
storage: NumPy has no native bfloat16 pass).
``x floor`` is a contestant's time over that floor for the shape's elements,
divided among its threads (as if two threads had twice one's bandwidth: a
floor, not a forecast).

Every (shape, dtype, threads, contestant) runs in a fresh process
(``python -m cyce._bench --worker SPEC``) so that memory, thread pools and
caches of one contestant cannot affect another.  The worker warms up once,
times ``repeats`` calls and prints one JSON line; the parent collects these
lines, prints the table and optionally writes them to a JSON file.

When a report times float32 and a half dtype at the same shape and threads,
its footer gives the half dtype's speed-up of ``cyce inplace`` over float32's
(`half_speedups`).

Use it through ``python -m cyce bench`` (see cyce/__main__.py).
"""

import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time

import numpy as np

BASELINE = "cyce inplace"
CONTESTANTS = ("cyce inplace", "cyce grad", "cyce loss", "numpy", "torch", "jax", "jax loss")
# --options: the statistics, options and logit maps, beside the plain calls
OPTIONS = ("cyce inplace", "cyce loss", "cyce stats", "torch stats", "cyce smoothing", "cyce soft",
           "cyce softcap", "cyce temperature", "torch softcap")
OPTION_SOFTCAP, OPTION_TEMPERATURE, OPTION_SMOOTHING = 30.0, 0.7, 0.1
# contestants that only read the logits
LOSS_ONLY = ("cyce loss", "jax loss", "cyce stats", "torch stats")
PEERS = ("numpy", "torch", "jax")      # loss + gradient, like cyce inplace / grad
HALF_DTYPES = ("bfloat16", "float16")  # stored in 2 bytes, computed in float32
DTYPES = ("float32", "bfloat16", "float16", "float64")  # the report's order: the halves next to float32
# NumPy has no bfloat16 arithmetic (ml_dtypes' ufuncs round every step to
# bfloat16, element by element), and a float16 reference in the input dtype
# would round every step too; one in float32 would time conversions, not a
# peer.  So the reference does not run at the half dtypes.
SKIPPED_AT_HALF = {"numpy": "NumPy has no bfloat16 arithmetic; float16 is left out alike"}

# the option contestants' defaults: the issue's shape, one thread
OPTIONS_QUICK = {"shapes": [(2048, 32000)], "dtypes": ["float32"], "threads": [1], "repeats": 3,
                 "contestants": OPTIONS}
OPTIONS_FULL = {"shapes": [(4096, 32000)], "dtypes": ["float32"], "threads": [1], "repeats": 7,
                "contestants": OPTIONS}

QUICK = {
    "shapes": [(65536, 10), (16384, 1000), (2048, 32000)],
    "dtypes": ["float32", "bfloat16"],
    "threads": [1, 2],
    "repeats": 3,
}
FULL = {
    "shapes": [(65536, 10), (16384, 1000), (4096, 32000), (512, 256000)],
    "dtypes": list(DTYPES),
    "threads": [1, 2],
    "repeats": 5,
}

SEED = 0
WORKER_TIMEOUT_S = 900
# Relative tolerance for "all contestants computed the same loss".  The peers
# return the loss in the input's dtype, rounded (a loss near 10: by up to 3e-3
# of itself in bfloat16, 4e-4 in float16) after their own half-precision sums:
# torch 2.13's bfloat16 loss is 0.9% low at 64x1000 and 16384x1000, and its
# float16 loss is inf or nan once the rows' losses sum past 65504 (a float16 sum).
LOSS_RTOL = {"float32": 1e-4, "float64": 1e-8, "bfloat16": 2e-2, "float16": 2e-3}
# float32 logits drawn at a time for a half dtype: 64 KiB, under 1% of the
# smallest logits whose peak memory is checked (bench/test_memory.py).
HALF_CHUNK_ELEMENTS = 1 << 14


# ---------------------------------------------------------------------------
# Worker side: runs inside the fresh process, one contestant at one setting.
# ---------------------------------------------------------------------------

def numpy_dtype(name):
    """The NumPy dtype called `name`.  bfloat16 is ml_dtypes', imported here so
    that only a run asking for bfloat16 needs ml_dtypes."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def dtype_unavailable(name):
    """Why logits of dtype `name` cannot be made here (a module not installed), or None."""
    if name == "bfloat16" and importlib.util.find_spec("ml_dtypes") is None:
        return "ml_dtypes not installed (pip install 'cyce[bench]')"
    return None


def make_inputs(n_rows, n_classes, dtype, seed=SEED):
    """Logits of shape (n_rows, n_classes) in ``dtype``, uniform in [-4, 4),
    and random int64 labels.  The logits are drawn directly in ``dtype`` and
    scaled in place, so no temporary inflates the process's peak memory
    (uniform rather than normal: twice as fast to draw, which keeps --quick
    short).  NumPy draws float32 and float64 only: a half dtype gets the
    float32 logits rounded (`half_logits`), and the same labels."""
    rng = np.random.default_rng(seed)
    if dtype in HALF_DTYPES:
        logits = half_logits(rng, (n_rows, n_classes), numpy_dtype(dtype))
    else:
        logits = rng.random((n_rows, n_classes), dtype=np.dtype(dtype))
        logits *= 8
        logits -= 4
    labels = rng.integers(0, n_classes, size=n_rows, dtype=np.int64)
    return logits, labels


def half_logits(rng, shape, dtype):
    """make_inputs' float32 logits rounded to the half `dtype`, drawn and cast
    HALF_CHUNK_ELEMENTS at a time so that no float32 array of the logits' size
    raises the peak memory.  The chunks consume the generator's stream as one
    draw would: the values are the float32 inputs' own, rounded."""
    logits = np.empty(shape, dtype=dtype)
    flat = logits.reshape(-1)  # a view: the new array is contiguous
    chunk = np.empty(min(HALF_CHUNK_ELEMENTS, flat.size), dtype=np.float32)
    for start in range(0, flat.size, chunk.size):
        part = chunk[:flat.size - start]
        rng.random(out=part, dtype=np.float32)
        part *= 8
        part -= 4
        flat[start:start + part.size] = part
    return logits


def numpy_reference(x, labels):
    """Mean softmax cross entropy and its gradient, in plain NumPy, in x's dtype."""
    rows = np.arange(x.shape[0])
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    loss = np.mean(np.log(s[:, 0]) + m[:, 0] - x[rows, labels])
    grad = e / s
    grad[rows, labels] -= 1
    grad /= x.shape[0]
    return loss, grad


def current_rss_bytes():
    """The resident set size now, from /proc/self/statm (Linux)."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes():
    """The highest resident set size this process has had (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load_library(contestant, threads, dtype):
    """Import what the contestant needs and set its thread count, before the
    inputs exist (so that the libraries' own memory is not counted as growth)."""
    if contestant.startswith("torch"):
        import torch

        torch.set_num_threads(threads)
    elif contestant in ("jax", "jax loss"):
        # XLA has no exact thread-count setting: restrict the process to
        # `threads` CPUs before jax starts its thread pool (sized from them).
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cpus[:threads])
        import jax
        import optax  # noqa: F401  (fail here, not mid-timing, if it is missing)

        if dtype == "float64":
            jax.config.update("jax_enable_x64", True)  # otherwise jax silently uses float32


def setup_cyce_inplace(x, labels, threads):
    """cyce writing the gradient over the logits; restore them before each call."""
    import cyce

    saved = x.copy()

    def prepare():
        np.copyto(x, saved)

    def run():
        return cyce.softmax_ce(x, labels, inplace=True, num_threads=threads)

    return prepare, run


def setup_cyce_grad(x, labels, threads):
    """cyce returning the gradient in a new array."""
    import cyce

    def run():
        return cyce.softmax_ce(x, labels, return_grad=True, num_threads=threads)

    return None, run


def setup_cyce_loss(x, labels, threads):
    """cyce computing the loss only."""
    import cyce

    def run():
        return cyce.softmax_ce(x, labels, num_threads=threads), None

    return None, run


def setup_numpy(x, labels, threads):
    """The NumPy reference; NumPy's ufuncs use one thread whatever `threads` is."""

    def run():
        return numpy_reference(x, labels)

    return None, run


def torch_tensor(x):
    """A torch tensor sharing x's memory.  torch.from_numpy does not know
    ml_dtypes' bfloat16: its bits go over as int16, viewed as torch.bfloat16."""
    import torch

    if x.dtype.name == "bfloat16":
        return torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(x)


def setup_torch(x, labels, threads, logit_map=None):
    """F.cross_entropy forward + backward on a leaf tensor sharing x's memory
    (in x's dtype, bfloat16 and float16 included), of logit_map(leaf) where
    given.  A new leaf (with no .grad yet) is made before each call, not
    timed; the call hands the leaf back so that its gradient is freed with
    the result."""
    import torch
    import torch.nn.functional as F

    target = torch.from_numpy(labels)
    state = {}

    def prepare():
        state["leaf"] = torch_tensor(x).requires_grad_()

    def run():
        leaf = state.pop("leaf")
        loss = F.cross_entropy(leaf if logit_map is None else logit_map(leaf), target)
        loss.backward()
        return loss.item(), leaf.grad

    return prepare, run


def jax_step(x, labels, with_grad):
    """optax's mean integer-label cross entropy under jax.jit (wrapped in
    value_and_grad if with_grad), and the inputs put on the (CPU) device
    once, before timing."""
    import jax
    import optax

    def mean_loss(logits, y):
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    step = jax.jit(jax.value_and_grad(mean_loss) if with_grad else mean_loss)
    return step, jax.device_put(x), jax.device_put(labels)


def setup_jax(x, labels, threads):
    """jit(value_and_grad) of optax's mean integer-label cross entropy."""
    step, x_dev, labels_dev = jax_step(x, labels, with_grad=True)

    def run():
        loss, grad = step(x_dev, labels_dev)
        grad.block_until_ready()
        return float(loss), grad

    return None, run


def setup_jax_loss(x, labels, threads):
    """jit of optax's mean integer-label cross entropy, the loss alone."""
    step, x_dev, labels_dev = jax_step(x, labels, with_grad=False)

    def run():
        loss = step(x_dev, labels_dev)
        loss.block_until_ready()
        return float(loss), None

    return None, run


def setup_cyce_inplace_with(**options):
    """setup_cyce_inplace, with softmax_ce's keyword options."""
    def setup(x, labels, threads):
        import cyce

        saved = x.copy()

        def prepare():
            np.copyto(x, saved)

        def run():
            return cyce.softmax_ce(x, labels, inplace=True, num_threads=threads, **options)

        return prepare, run

    return setup


def setup_cyce_soft(x, labels, threads):
    """cyce in place against probability targets: each row a random
    distribution (float32, normalised), made once before timing."""
    rng = np.random.default_rng(SEED + 1)
    targets = rng.random(x.shape, dtype=np.float32)
    targets /= targets.sum(axis=1, keepdims=True)
    return setup_cyce_inplace_with()(x, targets, threads)


def setup_cyce_stats(x, labels, threads):
    """cyce.softmax_stats with labels: the four per-row statistics."""
    import cyce

    def run():
        stats = cyce.softmax_stats(x, labels, num_threads=threads)
        return float(np.mean(stats.logprob)), stats

    return None, run


def setup_torch_stats(x, labels, threads):
    """The four statistics with torch ops, as a torch user computes them."""
    import torch

    logits, target = torch_tensor(x), torch.from_numpy(labels)[:, None]

    def run():
        with torch.no_grad():
            lse = torch.logsumexp(logits, dim=-1)
            logp = torch.log_softmax(logits, dim=-1)
            logprob = logp.gather(-1, target)[:, 0]
            entropy = -(logp.exp() * logp).sum(dim=-1)
            argmax = logits.argmax(dim=-1)
        return float(logprob.double().mean()), (lse, entropy, argmax)

    return None, run


def setup_torch_softcap(x, labels, threads):
    """setup_torch of the softcapped logits OPTION_SOFTCAP tanh(x / OPTION_SOFTCAP)."""
    import torch

    return setup_torch(x, labels, threads,
                       lambda leaf: OPTION_SOFTCAP * torch.tanh(leaf / OPTION_SOFTCAP))


SETUPS = {
    "cyce stats": setup_cyce_stats,
    "torch stats": setup_torch_stats,
    "cyce smoothing": setup_cyce_inplace_with(label_smoothing=OPTION_SMOOTHING),
    "cyce soft": setup_cyce_soft,
    "cyce softcap": setup_cyce_inplace_with(logit_softcap=OPTION_SOFTCAP),
    "cyce temperature": setup_cyce_inplace_with(temperature=OPTION_TEMPERATURE),
    "torch softcap": setup_torch_softcap,
    "cyce inplace": setup_cyce_inplace,
    "cyce grad": setup_cyce_grad,
    "cyce loss": setup_cyce_loss,
    "numpy": setup_numpy,
    "torch": setup_torch,
    "jax": setup_jax,
    "jax loss": setup_jax_loss,
}


FLOOR_ELEMENTS = 1 << 15   # 128 KiB of float32: the buffer stays in L2


def measure_exp_floor(dtype, repeats=200):
    """Nanoseconds per element of the softmax kernels' exp (for x <= 0) on one
    thread, over a cache-resident buffer: the least a softmax (one exp per
    element) can cost.
    The best of `repeats` passes, so that a busy machine disturbs it least."""
    from cyce import _core as kernels

    x = np.linspace(-20.0, 0.0, FLOOR_ELEMENTS, dtype=np.dtype(dtype))
    out = np.empty_like(x)
    kernels.exp_values(x, out, nonpositive=True)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        kernels.exp_values(x, out, nonpositive=True)
        best = min(best, time.perf_counter() - start)
    return best * 1e9 / FLOOR_ELEMENTS


MEMORY_FLOOR_BYTES = 256 << 20   # far beyond the caches


def measure_memory_floor(dtype, repeats=3):
    """Nanoseconds per element on one thread of a pass over a large array:
    reading it (max) and reading + writing it in place (multiply by 1)."""
    x = np.ones(MEMORY_FLOOR_BYTES // np.dtype(dtype).itemsize, dtype=np.dtype(dtype))
    read = read_write = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        x.max()
        read = min(read, time.perf_counter() - start)
        start = time.perf_counter()
        np.multiply(x, 1, out=x)
        read_write = min(read_write, time.perf_counter() - start)
    return read * 1e9 / x.size, read_write * 1e9 / x.size


def floor_dtypes(dtype):
    """The dtypes the floors of `dtype` are measured in: its arithmetic's (the
    exp) and its storage's (the memory pass).  The half dtypes compute in
    float32 and move 2-byte elements; NumPy's pass over them would be
    ml_dtypes' element-by-element ufuncs, not memory, so it runs over uint16."""
    if dtype in HALF_DTYPES:
        return "float32", "uint16"
    return dtype, dtype


def time_contestant(spec):
    """Warm up once, then time spec["repeats"] calls.  Returns a dict with the
    times in ms, the memory figures and the loss of the warm-up call."""
    contestant, threads, dtype = spec["contestant"], spec["threads"], spec["dtype"]
    load_library(contestant, threads, dtype)
    x, labels = make_inputs(spec["n"], spec["c"], dtype)
    prepare, run = SETUPS[contestant](x, labels, threads)
    rss_inputs = current_rss_bytes()

    if prepare:
        prepare()
    loss = float(run()[0])  # warm-up; also the value the parent cross-checks

    rss_before = current_rss_bytes()
    times = []
    for _ in range(spec["repeats"]):
        if prepare:
            prepare()
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
        result = None  # free the outputs outside the timed region
    peak = peak_rss_bytes()

    return {
        "times_ms": [t * 1e3 for t in times],
        "loss": loss,
        "rss_inputs_mib": rss_inputs / 2**20,
        "rss_before_timing_mib": rss_before / 2**20,
        "peak_rss_mib": peak / 2**20,
        "mem_growth_mib": max(0, peak - rss_before) / 2**20,
    }


def worker_main(spec_json):
    """Entry point of a worker process: print one JSON line with the result
    (or with an "error" key if the contestant raised)."""
    spec = json.loads(spec_json)
    try:
        if spec["contestant"] == "exp floor":
            arithmetic, storage = floor_dtypes(spec["dtype"])
            read, read_write = measure_memory_floor(storage)
            result = {"exp": measure_exp_floor(arithmetic), "read": read, "read_write": read_write}
        elif spec["contestant"] == "overhead":
            result = {"us_per_call": measure_overhead_us()}
        else:
            result = time_contestant(spec)
    except Exception as exc:  # report it; the parent prints "failed: ..."
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------------------
# Parent side: runs the workers and prints the table.
# ---------------------------------------------------------------------------

def missing_requirement(contestant):
    """Why a contestant cannot run here (a module not installed), or None."""
    needs = {"torch": ["torch"], "torch stats": ["torch"], "torch softcap": ["torch"],
             "jax": ["jax", "optax"], "jax loss": ["jax", "optax"]}.get(contestant, [])
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed"
    return None


def skipped_at_dtype(contestant, dtype):
    """Why a contestant does not run at `dtype` (see SKIPPED_AT_HALF), or None."""
    if dtype in HALF_DTYPES:
        return SKIPPED_AT_HALF.get(contestant)
    return None


def package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def worker_env(contestant, threads):
    """The worker's environment: OMP_NUM_THREADS for every contestant, and
    JAX on the CPU with Eigen's multi-threading off when one thread is asked."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    if contestant in ("jax", "jax loss"):
        env["JAX_PLATFORMS"] = "cpu"
        if threads == 1:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    return env


def describe_failure(proc):
    """A one-line reason for a worker that exited without a result."""
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else "no output"
    return f"exit code {proc.returncode}: {last}"


def run_worker(spec):
    """Run one contestant in a fresh process; returns its result dict, with
    an "error" key if it failed in any way."""
    command = [sys.executable, "-m", "cyce._bench", "--worker", json.dumps(spec)]
    env = worker_env(spec["contestant"], spec.get("threads", 1))
    try:
        proc = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {WORKER_TIMEOUT_S} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": describe_failure(proc)}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"unreadable worker output: {lines[-1][:80]}"}


def make_row(spec, result, baseline_median_ms, floors=None):
    """One table row: the spec, the result and the derived figures (floors:
    the dtype's per-element floors on one thread, if measured)."""
    n, c = spec["n"], spec["c"]
    row = {
        "shape": f"{n}x{c}",
        "n": n,
        "c": c,
        "dtype": spec["dtype"],
        "threads": spec["threads"],
        "contestant": spec["contestant"],
        "repeats": spec["repeats"],
    }
    if "error" in result:
        row["error"] = result["error"]
        return row
    median_ms = statistics.median(result["times_ms"])
    logits_bytes = n * c * numpy_dtype(spec["dtype"]).itemsize
    moved = logits_bytes if spec["contestant"] in LOSS_ONLY else 2 * logits_bytes
    row.update(
        median_ms=median_ms,
        min_ms=min(result["times_ms"]),
        ratio=median_ms / baseline_median_ms if baseline_median_ms else None,
        gb_per_s=moved / (median_ms * 1e-3) / 1e9,
        ns_per_element=median_ms * 1e6 / (n * c),
        **result,
    )
    if floors:
        memory = floors["read"] if spec["contestant"] in LOSS_ONLY else floors["read_write"]
        floor_ms = max(floors["exp"], memory) * n * c / spec["threads"] / 1e6
        row["floor_ms"] = floor_ms
        row["x_floor"] = median_ms / floor_ms
    return row


COLUMNS = (
    ("shape", 13), ("dtype", 8), ("thr", 3), ("contestant", 16), ("median ms", 10),
    ("min ms", 10), ("ratio", 6), ("GB/s", 6), ("ns/elem", 7), ("x floor", 7), ("mem MiB", 8),
)


def format_row(row):
    """The row as a line of the table; a failed contestant shows its reason."""
    left = [row["shape"], row["dtype"], str(row["threads"]), row["contestant"]]
    if "error" in row:
        cells = left
        tail = "  failed: " + row["error"][:100]
    else:
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.2f}"
        cells = left + [
            f"{row['median_ms']:.2f}",
            f"{row['min_ms']:.2f}",
            ratio,
            f"{row['gb_per_s']:.2f}",
            f"{row['ns_per_element']:.3f}",
            f"{row['x_floor']:.2f}" if "x_floor" in row else "—",
            f"{row['mem_growth_mib']:.2f}",
        ]
        tail = ""
    parts = []
    for (title, width), cell in zip(COLUMNS, cells):
        parts.append(cell.ljust(width) if title in ("shape", "dtype", "contestant") else cell.rjust(width))
    return "  ".join(parts) + tail


def format_header_line():
    parts = []
    for title, width in COLUMNS:
        parts.append(title.ljust(width) if title in ("shape", "dtype", "contestant") else title.rjust(width))
    return "  ".join(parts)


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average():
    """The 1, 5 and 15 minute load averages as text."""
    return ", ".join(f"{load:.2f}" for load in os.getloadavg())


def print_header(settings, skipped):
    from ._info import config

    info = config()
    print("cyce benchmark: softmax cross-entropy, mean loss + gradient w.r.t. the logits")
    print(
        f"cyce {info['version']}: simd={info['simd']}, openmp={info['openmp']} "
        f"(version {info['openmp_version']}), default_threads={info['default_threads']}, "
        f"cflags: {info['cflags']}"
    )
    print(
        f"machine: {cpu_model()}, os.cpu_count()={os.cpu_count()}, "
        f"platform.processor()={platform.processor()!r}, {platform.machine()}, {platform.system()}"
    )
    print(f"load average at the start: {load_average()}")
    versions = [f"python {info['python']}", f"numpy {info['numpy']}"]
    for name in ("torch", "jax", "optax", "ml_dtypes"):
        version = package_version(name)
        if version:
            versions.append(f"{name} {version}")
    print("versions: " + ", ".join(versions))
    for contestant, reason in skipped.items():
        print(f"skipped: {contestant} ({reason})")
    print(
        f"each contestant in a fresh process: 1 warm-up call, then {settings['repeats']} timed calls"
    )
    print()


def print_footer(rows):
    print()
    print("ratio    = median / median of 'cyce inplace' at the same shape, dtype and threads (>1: slower than cyce)")
    print("GB/s     = (logits read + gradient written = 2 * x.nbytes) / median; 'cyce loss' counts 1 * x.nbytes")
    print("ns/elem  = median / (rows * classes)")
    print("x floor  = median / (floor per element * rows * classes / threads); the floor per element is")
    print("           the larger of one thread's exp and memory figures in the header (memory: read only")
    print("           for the loss alone, read + write otherwise)")
    print("mem MiB  = ru_maxrss after the timed calls - RSS (/proc/self/statm) just before the first timed call,")
    print("           clipped at 0.  ru_maxrss is the process's lifetime peak, so the warm-up call's peak counts")
    print("           too; memory the allocator kept from the warm-up and reused is not counted as growth.")
    print("threads  = cyce num_threads, torch.set_num_threads, jax: CPU affinity (+ no Eigen threads at 1);")
    print("           OMP_NUM_THREADS is set in every worker.  The numpy reference is single-threaded.")
    print("'cyce inplace' restores the logits from a saved copy before each call, outside the timing.")
    if any(row["dtype"] in HALF_DTYPES for row in rows):
        print("bfloat16 / float16: the float32 logits rounded; the floors' exp is float32's, their memory pass")
        print("           moves 2-byte elements (uint16).  numpy does not run at these dtypes: NumPy has no")
        print("           bfloat16 arithmetic (ml_dtypes' ufuncs round every step), and float16 is left out alike.")
    print(f"load average at the end: {load_average()} (other work on the machine skews the times)")
    speedups = half_speedups(rows)
    if speedups:
        print()
        print("half precision against float32, cyce in place at the same shape and threads (float32 median / half median):")
        for shape, dtype, threads, speedup in speedups:
            print(f"  {shape:13}  {threads}T  {format_speedup(dtype, speedup)}")
    ratios = option_ratios(rows)
    if ratios:
        print()
        print("the options against the plain calls at the same shape, dtype and threads (median / median):")
        for shape, dtype, threads, contestant, plain, ratio in ratios:
            print(f"  {shape:13}  {dtype:8}  {threads}T  {contestant} / {plain}: {ratio:.2f}")
    for line in loss_disagreements(rows):
        print("WARNING: " + line)


# what each option contestant is compared with: the plain call doing the same passes
OPTION_BASES = {"cyce stats": "cyce loss", "torch stats": "cyce loss", "cyce smoothing": BASELINE,
                "cyce soft": BASELINE, "cyce softcap": BASELINE, "cyce temperature": BASELINE,
                "torch softcap": BASELINE}


def option_ratios(rows):
    """(shape, dtype, threads, contestant, plain contestant, median / plain
    median) of each option row whose plain call ran beside it."""
    medians = {(row["shape"], row["dtype"], row["threads"], row["contestant"]): row["median_ms"]
               for row in rows if "error" not in row}
    ratios = []
    for (shape, dtype, threads, contestant), median in medians.items():
        plain = OPTION_BASES.get(contestant)
        plain_ms = medians.get((shape, dtype, threads, plain))
        if plain_ms:
            ratios.append((shape, dtype, threads, contestant, plain, median / plain_ms))
    return ratios


def half_speedups(rows):
    """(shape, half dtype, threads, float32 median / half median) of 'cyce
    inplace', wherever the rows time both dtypes at that shape and threads."""
    medians = {
        (row["shape"], row["dtype"], row["threads"]): row["median_ms"]
        for row in rows if row["contestant"] == BASELINE and "error" not in row
    }
    speedups = []
    for (shape, dtype, threads), half_ms in medians.items():
        float32_ms = medians.get((shape, "float32", threads))
        if dtype in HALF_DTYPES and float32_ms:
            speedups.append((shape, dtype, threads, float32_ms / half_ms))
    return speedups


def format_speedup(dtype, speedup):
    """'bfloat16 in place / float32 in place: 1.72x faster' (or 'slower')."""
    if speedup >= 1:
        return f"{dtype} in place / float32 in place: {speedup:.2f}x faster"
    return f"{dtype} in place / float32 in place: {1 / speedup:.2f}x slower"


def loss_disagreements(rows):
    """Lines naming contestants whose loss differs from cyce inplace's."""
    baseline = {}
    for row in rows:
        if row["contestant"] == BASELINE and "loss" in row:
            baseline[(row["shape"], row["dtype"], row["threads"])] = row["loss"]
    problems = []
    for row in rows:
        reference = baseline.get((row["shape"], row["dtype"], row["threads"]))
        if reference is None or "loss" not in row or row["contestant"] not in CONTESTANTS:
            continue
        if not np.isclose(row["loss"], reference, rtol=LOSS_RTOL[row["dtype"]], atol=0.0):
            problems.append(
                f"{row['contestant']} at {row['shape']} {row['dtype']} {row['threads']} threads: "
                f"loss {row['loss']!r} vs cyce {reference!r}"
            )
    return problems


def measure_overhead_us(calls=20000):
    """Microseconds per call of cyce.softmax_ce(x, y, inplace=True) on an 8 x 4
    float32 input (the logits restored between calls are not timed apart: the
    restore is one small copy); the best of 5 batches."""
    import cyce

    x, labels = make_inputs(8, 4, "float32")
    saved = x.copy()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls // 5):
            np.copyto(x, saved)
            cyce.softmax_ce(x, labels, inplace=True, num_threads=1)
        best = min(best, (time.perf_counter() - start) / (calls // 5))
    return best * 1e6


def run_benchmark(settings, json_path=None, plot_path=None):
    """Run every contestant at every shape, dtype and thread count in
    `settings` (keys shapes, dtypes, threads, repeats), print the table as
    rows complete, write the rows to
    `json_path` and a bar chart to `plot_path` if given.  Returns the rows."""
    skipped = {}
    contestants = []
    for contestant in settings.get("contestants", CONTESTANTS):
        reason = missing_requirement(contestant)
        if reason:
            skipped[contestant] = reason
        else:
            contestants.append(contestant)
    dtypes = []
    for dtype in settings["dtypes"]:
        reason = dtype_unavailable(dtype)
        if reason:
            skipped[f"every {dtype} row"] = reason
        else:
            dtypes.append(dtype)
    halves = [dtype for dtype in dtypes if dtype in HALF_DTYPES]
    for contestant, reason in SKIPPED_AT_HALF.items():
        if halves and contestant in contestants:
            skipped[f"{contestant} at {', '.join(halves)}"] = reason

    print_header(settings, skipped)
    floors = {}
    for dtype in dtypes:
        result = run_worker({"contestant": "exp floor", "dtype": dtype})
        if "error" in result:
            print(f"floors, {dtype}: failed: {result['error']}")
            continue
        floors[dtype] = result
        print(f"floors, {dtype}, ns per element on one thread: exp {result['exp']:.3f}, "
              f"memory read {result['read']:.3f}, read + write {result['read_write']:.3f}")
    overhead = run_worker({"contestant": "overhead"}).get("us_per_call")
    if overhead is not None:
        print(f"per-call overhead, 8x4 float32 in place: {overhead:.2f} us")
    print()
    print(format_header_line())
    rows = []
    for n, c in settings["shapes"]:
        for dtype in dtypes:
            for threads in settings["threads"]:
                baseline_median_ms = None
                for contestant in contestants:
                    if skipped_at_dtype(contestant, dtype):
                        continue
                    spec = {
                        "contestant": contestant, "n": n, "c": c, "dtype": dtype,
                        "threads": threads, "repeats": settings["repeats"],
                    }
                    row = make_row(spec, run_worker(spec), baseline_median_ms, floors.get(dtype))
                    if contestant == BASELINE and "error" not in row:
                        baseline_median_ms = row["median_ms"]
                        row["ratio"] = 1.0
                    rows.append(row)
                    print(format_row(row), flush=True)
                print()
    print_footer(rows)

    if json_path:
        with open(json_path, "w") as f:
            speedups = [dict(zip(("shape", "dtype", "threads", "speedup"), s)) for s in half_speedups(rows)]
            json.dump({"floors_ns": floors, "overhead_us": overhead, "rows": rows,
                       "half_speedups": speedups}, f, indent=1)
        print(f"wrote {len(rows)} rows to {json_path}")
    if plot_path:
        print(draw_plot(rows, plot_path))
    return rows


def draw_plot(rows, path):
    """A bar chart of the medians (log scale), one group of bars per shape,
    dtype and thread count; returns a line saying what it did."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"no plot: matplotlib is not installed (pip install 'cyce[bench]'), {path} not written"
    done = [row for row in rows if "error" not in row]
    groups = sorted({(r["shape"], r["dtype"], r["threads"]) for r in done},
                    key=lambda g: (int(g[0].split("x")[1]), DTYPES.index(g[1]), g[2]))
    names = [c for c in CONTESTANTS if any(r["contestant"] == c for r in done)]
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(groups)), 5))
    for k, name in enumerate(names):
        heights = []
        for group in groups:
            match = [r for r in done if (r["shape"], r["dtype"], r["threads"]) == group and r["contestant"] == name]
            heights.append(match[0]["median_ms"] if match else 0)
        ax.bar([g + k * width for g in range(len(groups))], heights, width, label=name)
    ax.set_yscale("log")
    ax.set_ylabel("median ms per call (log scale)")
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{s}\n{d} {t}T" for s, d, t in groups], fontsize=8)
    ax.set_title("softmax cross-entropy, loss + gradient (cyce loss / jax loss: the loss alone)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote the plot to {path}"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2])
    else:
        sys.exit("usage: python -m cyce._bench --worker SPEC_JSON  (use `python -m cyce bench`)")
