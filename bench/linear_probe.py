"""A language-model head's loss, fused or not: the mean cross entropy of
``hidden @ linear_weight.T`` against class labels, forward + backward (the
gradients of hidden and of linear_weight), timed and measured in a fresh
process.

    python -m bench.linear_probe CONTESTANT N_ROWS N_FEATURES N_CLASSES THREADS ROUNDS [CHUNK_ROWS]

prints one JSON line: the inputs' size in bytes, the peak resident set size
the first call at the shape added (VmHWM, reset through /proc/self/clear_refs
once the inputs exist: the extra memory above the inputs, gradients
included), the median and minimum seconds of ROUNDS further calls and the
peak each of them added (round_growths: without what the first call left
resident for the next ones, the BLAS's buffers and the allocator's arenas),
the loss and the gradients' norms (to tell that the contestants computed the
same thing).  A small call of the same contestant runs first, so that the
libraries' one-time set-up (imports, thread pools, the BLAS's buffers) is not
the measured call's memory; the measured call is the warm-up of the timed
ones.  float32 throughout; THREADS bounds torch (set_num_threads), the BLAS
and OpenMP pools (threadpoolctl) and cyce (num_threads).
Contestants (CONTESTANTS):

- torch_eager          F.cross_entropy(h @ W.T, y), the gradients by torch.autograd.grad;
- torch_linear_ce      F.linear_cross_entropy(h, W, y) (torch >= 2.13; options=None: the
                       reference path, the logits held);
- torch_linear_ce_chunked   the same with options=LinearCrossEntropyOptions(chunking_method="auto")
                       (chunks of the batch, gradients computed in the forward);
- cyce                 cyce.linear_softmax_ce(h, W, y, return_grad=True) on the NumPy arrays;
- cyce_torch           cyce.torch.linear_cross_entropy(h, W, y), forward + autograd.grad;
- gemm_floor           the three GEMMs alone, chunked as cyce chunks them (CHUNK_ROWS, by
                       default cyce's): each chunk's logits = h @ W.T into one reused buffer
                       (np.matmul(out=)), grad_h = logits @ W (np.matmul(out=)), and
                       grad_W += logits.T @ h accumulated by scipy.linalg.blas.sgemm (beta=1 after
                       the first chunk), with no cross-entropy kernel between them.

CHUNK_ROWS (cyce and gemm_floor) is linear_softmax_ce's chunk_rows; absent or
0, cyce's default.
"""

import gc
import json
import math
import statistics
import sys
import time

import numpy as np

from cyce import _bench

from .memory_probe import peak_rss_bytes

DTYPE = np.float32
SEED = _bench.SEED
LOGIT_STD = 2.0  # the logits' standard deviation (uniform h and W, scaled)
# the warm-up call's shape: enough rows (the GEMMs' K, in the weight's gradient) to
# touch all of the BLAS's packing buffers, which stay for the next calls
WARM_UP_ROWS, WARM_UP_CLASSES = 1024, 16384


def make_inputs(n_rows, n_features, n_classes, seed=SEED):
    """hidden (n_rows, n_features) uniform in [-1, 1), linear_weight
    (n_classes, n_features) uniform and scaled so that the logits have a
    standard deviation of about LOGIT_STD, and int64 labels; each drawn in
    float32 and scaled in place (no temporary of its size)."""
    rng = np.random.default_rng(seed)
    hidden = rng.random((n_rows, n_features), dtype=DTYPE)
    hidden *= 2
    hidden -= 1
    # var(logit) = H * var(h) * var(w) = H * (1/3) * (a^2 / 3) for w uniform in [-a, a)
    a = 3.0 * LOGIT_STD / math.sqrt(n_features)
    weight = rng.random((n_classes, n_features), dtype=DTYPE)
    weight *= 2 * a
    weight -= a
    labels = rng.integers(0, n_classes, size=n_rows, dtype=np.int64)
    return hidden, weight, labels


def cyce_chunk_rows(n_rows, n_classes, itemsize=4):
    """The rows per chunk linear_softmax_ce picks when chunk_rows is None and
    no row is ignored (cyce._linear._default_chunk_rows)."""
    from cyce import _linear

    return max(1, min(_linear._default_chunk_rows(n_rows, n_classes, itemsize), n_rows))


# ---------------------------------------------------------------------------
# Contestants: setup(hidden, weight, labels, threads, chunk_rows) -> (prepare, run);
# run() -> (loss, grad_hidden, grad_weight), prepare() (may be None) before each run
# ---------------------------------------------------------------------------

def setup_torch_eager(h, w, labels, threads, chunk_rows=None):
    """F.cross_entropy of h @ W.T: the (N, V) logits held, as a model writes it."""
    import torch.nn.functional as F

    return setup_torch_loss(lambda hh, ww, y: F.cross_entropy(hh @ ww.T, y), h, w, labels)


def setup_torch_linear_ce(h, w, labels, threads, chunk_rows=None):
    """F.linear_cross_entropy, its reference path (options=None)."""
    import torch.nn.functional as F

    return setup_torch_loss(F.linear_cross_entropy, h, w, labels)


def setup_torch_linear_ce_chunked(h, w, labels, threads, chunk_rows=None):
    """F.linear_cross_entropy's chunked path (chunking_method="auto")."""
    import torch
    import torch.nn.functional as F

    options = torch.nn.LinearCrossEntropyOptions(chunking_method="auto")

    def loss(hh, ww, y):
        return F.linear_cross_entropy(hh, ww, y, options=options)

    return setup_torch_loss(loss, h, w, labels)


def setup_cyce_torch(h, w, labels, threads, chunk_rows=None):
    """cyce.torch.linear_cross_entropy (torch's thread count is its own)."""
    import cyce.torch as ct

    return setup_torch_loss(ct.linear_cross_entropy, h, w, labels)


def setup_torch_loss(loss_function, h, w, labels):
    """(prepare, run): run is loss_function(hidden, weight, target)'s forward
    and the gradients of both leaves, on new leaves sharing h's and w's
    memory, made by prepare (with no .grad yet)."""
    import torch

    target = torch.from_numpy(labels)
    state = {}

    def prepare():
        state["leaves"] = (torch.from_numpy(h).requires_grad_(), torch.from_numpy(w).requires_grad_())

    def run():
        hidden, weight = state.pop("leaves")
        loss = loss_function(hidden, weight, target)
        grad_hidden, grad_weight = torch.autograd.grad(loss, (hidden, weight))
        return loss.item(), grad_hidden, grad_weight

    return prepare, run


def setup_cyce(h, w, labels, threads, chunk_rows=None):
    """cyce.linear_softmax_ce(return_grad=True) on the NumPy arrays."""
    import cyce

    def run():
        result = cyce.linear_softmax_ce(h, w, labels, return_grad=True, chunk_rows=chunk_rows,
                                        num_threads=threads)
        return float(result.loss), result.grad_hidden, result.grad_linear_weight

    return None, run


def setup_gemm_floor(h, w, labels, threads, chunk_rows=None):
    """The three GEMMs of cyce's chunk loop, nothing else (see the module's
    docstring).  The outputs are made in the call, as cyce makes them:
    grad_h empty, grad_W zeros, one chunk of logits."""
    from scipy.linalg.blas import sgemm

    n_rows, n_features = h.shape
    rows = chunk_rows or cyce_chunk_rows(n_rows, w.shape[0], h.dtype.itemsize)

    def run():
        logits = np.empty((rows, w.shape[0]), dtype=h.dtype)
        grad_h = np.empty_like(h)
        grad_w = np.zeros_like(w)
        for start in range(0, n_rows, rows):
            stop = min(start + rows, n_rows)
            chunk, buffer = h[start:stop], logits[:stop - start]
            np.matmul(chunk, w.T, out=buffer)
            np.matmul(buffer, w, out=grad_h[start:stop])
            # grad_W (V, H) C-ordered is grad_W.T (H, V) Fortran-ordered:
            # grad_W.T (+)= chunk.T @ buffer, no copy of any operand
            sgemm(1.0, chunk.T, buffer.T, beta=0.0 if start == 0 else 1.0, c=grad_w.T,
                  trans_b=1, overwrite_c=1)
        return float("nan"), grad_h, grad_w

    return None, run


CONTESTANTS = {
    "torch_eager": setup_torch_eager,
    "torch_linear_ce": setup_torch_linear_ce,
    "torch_linear_ce_chunked": setup_torch_linear_ce_chunked,
    "cyce": setup_cyce,
    "cyce_torch": setup_cyce_torch,
    "gemm_floor": setup_gemm_floor,
}
TORCH_CONTESTANTS = ("torch_eager", "torch_linear_ce", "torch_linear_ce_chunked", "cyce_torch")


def missing_requirement(contestant):
    """Why a contestant cannot run here (a module or function missing), or None."""
    import importlib.util

    if contestant in TORCH_CONTESTANTS:
        if importlib.util.find_spec("torch") is None:
            return "torch not installed"
        if contestant.startswith("torch_linear_ce"):
            import torch
            import torch.nn.functional as F

            if not hasattr(F, "linear_cross_entropy"):
                return f"torch {torch.__version__} has no F.linear_cross_entropy (torch >= 2.13)"
    if importlib.util.find_spec("scipy") is None:
        return "scipy not installed (pip install 'cyce[linear]')"
    return None


def reset_peak_rss():
    """Make VmHWM start again from the current resident size (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def norm_of(grad):
    """The Euclidean norm of a gradient (a NumPy array or a tensor), in float64
    block by block: no float64 copy of a large gradient."""
    a = grad.detach().numpy() if hasattr(grad, "detach") else grad
    flat = a.reshape(-1)
    step = 1 << 22
    total = 0.0
    for start in range(0, flat.size, step):
        block = flat[start:start + step].astype(np.float64)
        total += float(np.dot(block, block))
    return math.sqrt(total)


def main(contestant, n_rows, n_features, n_classes, threads, rounds, chunk_rows="0"):
    from threadpoolctl import threadpool_limits

    n_rows, n_features, n_classes = int(n_rows), int(n_features), int(n_classes)
    threads, rounds, chunk_rows = int(threads), int(rounds), int(chunk_rows) or None
    setup = CONTESTANTS[contestant]
    threadpool_limits(limits=threads)  # the BLAS and OpenMP pools, for the whole process
    if contestant in TORCH_CONTESTANTS:
        import torch

        torch.set_num_threads(threads)
    warm_up = setup(*make_inputs(min(n_rows, WARM_UP_ROWS), n_features,
                                 min(n_classes, WARM_UP_CLASSES)), threads, None)
    if warm_up[0]:
        warm_up[0]()
    warm_up[1]()
    del warm_up
    gc.collect()

    h, w, labels = make_inputs(n_rows, n_features, n_classes)
    prepare, run = setup(h, w, labels, threads, chunk_rows)
    if prepare:
        prepare()
    rss_before = _bench.current_rss_bytes()
    reset_peak_rss()
    start = time.perf_counter()
    loss, grad_h, grad_w = run()
    first_s = time.perf_counter() - start
    growth = peak_rss_bytes() - rss_before
    norms = (norm_of(grad_h), norm_of(grad_w))
    del grad_h, grad_w
    times, growths = [], []
    for _ in range(rounds):
        if prepare:
            prepare()
        rss_before = _bench.current_rss_bytes()
        reset_peak_rss()
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
        growths.append(peak_rss_bytes() - rss_before)
        del result
    used_rows = None
    if contestant in ("cyce", "gemm_floor"):
        used_rows = chunk_rows or cyce_chunk_rows(n_rows, n_classes, h.dtype.itemsize)
    print(json.dumps({
        "inputs_bytes": h.nbytes + w.nbytes + labels.nbytes,
        "logits_bytes": n_rows * n_classes * h.dtype.itemsize,
        "peak_growth": growth,
        "round_growths": growths,
        "first_s": first_s,
        "times_s": times,
        "median_s": statistics.median(times) if times else None,
        "min_s": min(times) if times else None,
        "loss": None if math.isnan(loss) else loss,
        "grad_hidden_norm": norms[0],
        "grad_weight_norm": norms[1],
        "chunk_rows": used_rows,
    }))


if __name__ == "__main__":
    main(*sys.argv[1:])
