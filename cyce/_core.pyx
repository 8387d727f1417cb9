# cyce's one compiled module: the prange over each kernel's tasks, and the
# few loops that do not depend on the instruction set.
#
# The kernels are C (cyce/_src/cyce_kernels.c), compiled once per
# instruction set into tables of function pointers; this module is compiled
# once, for the baseline, and calls the table chosen at import (use_level,
# from cyce._dispatch).  The Python wrappers validate every input and
# allocate every output; the shims below check only what keeps memory safe
# (dtype, contiguity), fill the kernels' structs, release the GIL and run
# one prange.
#
# Determinism: a task writes its rows' results, and its loss sum, to slots
# of its own; the tasks' layout depends on the shape alone, and the batch sum
# runs after the prange in task order.  So the bits are the same for any
# thread count and any schedule, and a dynamic schedule lets a thread that
# was preempted (a busy machine) leave its share to the others
# (docs/performance.md#threads).

cimport numpy as cnp
from cython.parallel cimport prange, threadid
from libc.math cimport fabs, isfinite
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport free, malloc

cnp.import_array()

cdef extern from "cyce_kernels.h" nogil:
    ctypedef struct cyce_ce_opts:
        const double *class_weight
        double weight_total
        const double *sample_weight
        double label_smoothing
        double z_loss
        double grad_scale
        int64_t ignore_index
        double temperature
        double logit_softcap
    ctypedef struct cyce_rows:
        const void *x
        void *grad
        const int64_t *labels
        const void *targets
        int targets_f64
        double *row_loss
        int64_t n_rows
        int64_t n_classes
    ctypedef struct cyce_elements:
        const void *values
        const void *targets
        int targets_f64
        const char *weight
        int64_t weight_strides[2]
        const char *pos_weight
        int64_t pos_weight_stride
        void *grad
        void *loss_out
        int64_t n_elements
        int64_t n_classes
        double grad_scale
    ctypedef struct cyce_dtype_kernels:
        size_t exps_itemsize
        void (*logsumexp)(const cyce_rows *rows, void *out, int64_t first, int64_t stop) noexcept nogil
        void (*softmax)(const cyce_rows *rows, int log_space, void *scratch, int64_t first,
                        int64_t stop) noexcept nogil
        double (*softmax_ce_hard)(const cyce_rows *rows, const cyce_ce_opts *opts, void *scratch,
                                  int64_t first, int64_t stop) noexcept nogil
        void (*softmax_ce_soft)(const cyce_rows *rows, const cyce_ce_opts *opts, void *scratch,
                                int64_t first, int64_t stop) noexcept nogil
        double (*binary)(const cyce_elements *elements, int kind, int64_t start,
                         int64_t stop) noexcept nogil
        void (*categorical_ce)(const cyce_rows *rows, const cyce_ce_opts *opts,
                               double eps, int64_t first, int64_t stop) noexcept nogil
        void (*exp_values)(const void *x, void *out, int64_t n) noexcept nogil
        void (*exp_nonpos_values)(const void *x, void *out, int64_t n) noexcept nogil
        void (*span_exp_sum_count)(const void *x, void *out, int64_t n, double shift,
                                   double top, double *sum, double *count) noexcept nogil
        int64_t (*first_bad_probability)(const void *t, int64_t n) noexcept nogil
    ctypedef struct cyce_stats_out:
        void *lse
        void *logprob
        void *entropy
        int64_t *argmax
    ctypedef struct cyce_mapped_kernels:
        size_t (*scratch_bytes)(int64_t n_classes) noexcept nogil
        void (*softmax_stats)(const cyce_rows *rows, const cyce_ce_opts *opts,
                              const cyce_stats_out *out, void *scratch, int64_t first,
                              int64_t stop) noexcept nogil
        double (*softmax_ce_hard)(const cyce_rows *rows, const cyce_ce_opts *opts, void *scratch,
                                  int64_t first, int64_t stop) noexcept nogil
        void (*softmax_ce_soft)(const cyce_rows *rows, const cyce_ce_opts *opts, void *scratch,
                                int64_t first, int64_t stop) noexcept nogil
    ctypedef struct cyce_mapped_table:
        const cyce_mapped_kernels *f32
        const cyce_mapped_kernels *f64
        const cyce_mapped_kernels *bf16
        const cyce_mapped_kernels *bf16_f32
        const cyce_mapped_kernels *f16
        const cyce_mapped_kernels *f16_f32
    ctypedef struct cyce_kernel_table:
        const char *level
        const char *cflags
        const cyce_dtype_kernels *f32
        const cyce_dtype_kernels *f64
        const cyce_dtype_kernels *bf16
        const cyce_dtype_kernels *bf16_f32
        const cyce_dtype_kernels *f16
        const cyce_dtype_kernels *f16_f32
        const cyce_dtype_kernels *f32_stream
        const cyce_mapped_table *mapped
        void (*log1p_values)(const double *s, double *out, int64_t n) noexcept nogil
    enum:
        CYCE_BINARY_BLOCK
    int64_t cyce_rows_per_task(int64_t n_rows, int64_t n_classes)
    const cyce_kernel_table *cyce_kernels_for_level(int level)
    int cyce_level_built(int level)
    int cyce_openmp_version()
    int cyce_default_threads()
    int cyce_cpu_has_avx2_fma()
    int cyce_cpu_has_avx512()
    const char *CYCE_COMPILER


LEVELS = ("baseline", "avx2", "avx512")
SIGMOID_BCE = 0
PROBABILITY_BCE = 1

cdef const cyce_kernel_table *table = cyce_kernels_for_level(0)


def runnable_levels():
    """The instruction-set levels this build has and this CPU runs, narrowest first."""
    return [level for i, level in enumerate(LEVELS) if cyce_kernels_for_level(i) != NULL]


def built_levels():
    """The instruction-set levels this build has kernels for."""
    return [level for i, level in enumerate(LEVELS) if cyce_level_built(i)]


def use_level(str level):
    """Run every later call on the kernels of `level` (cyce._dispatch calls
    it once at import; the tests call it to cover each level)."""
    global table
    cdef const cyce_kernel_table *chosen = cyce_kernels_for_level(LEVELS.index(level))
    if chosen == NULL:
        raise ValueError(f"this build or this CPU has no {level} kernels")
    table = chosen


def current_level():
    return table.level.decode()


# ---------------------------------------------------------------------------
# what the shims check: only what keeps memory safe

def is_bfloat16(dtype):
    """Whether dtype is a bfloat16 NumPy dtype (ml_dtypes.bfloat16, the
    one JAX uses): recognised by name and size, so that cyce never imports
    ml_dtypes."""
    return dtype.kind == "V" and dtype.itemsize == 2 and dtype.name == "bfloat16"


cdef bint is_half(cnp.ndarray x):
    cdef int typenum = cnp.PyArray_TYPE(x)
    if typenum == cnp.NPY_FLOAT32 or typenum == cnp.NPY_FLOAT64:
        return False  # the common case, without is_bfloat16's attribute lookups
    return typenum == cnp.NPY_FLOAT16 or is_bfloat16(x.dtype)


cdef bint float32_output(cnp.ndarray x, object out):
    """Whether out (a gradient or softmax, or None) is a float32 array for
    a half x: the kernels then write float32 (master gradients)."""
    return (out is not None and cnp.PyArray_TYPE(<cnp.ndarray?>out) == cnp.NPY_FLOAT32
            and is_half(x))


cdef int dtype_pair(cnp.ndarray x, object out) except -1:
    """The index of x's pair of dtypes (input, output) in both kernel tables'
    order: float32, float64, bfloat16, bfloat16 -> float32, float16, float16
    -> float32 (a half x writing out as float32, or as itself)."""
    cdef int typenum = cnp.PyArray_TYPE(x)
    if typenum == cnp.NPY_FLOAT32:
        return 0
    if typenum == cnp.NPY_FLOAT64:
        return 1
    if typenum == cnp.NPY_FLOAT16:
        return 5 if float32_output(x, out) else 4
    if is_bfloat16(x.dtype):
        return 3 if float32_output(x, out) else 2
    raise TypeError(f"no kernel for dtype {x.dtype}")


cdef const cyce_dtype_kernels *kernels_of(cnp.ndarray x, object out=None) except NULL:
    """The kernels of x's dtype, writing out's (x's own, or float32 for a
    half x)."""
    cdef const cyce_dtype_kernels *by_pair[6]
    by_pair[:] = [table.f32, table.f64, table.bf16, table.bf16_f32, table.f16, table.f16_f32]
    return by_pair[dtype_pair(x, out)]


cdef const cyce_mapped_kernels *mapped_kernels_of(cnp.ndarray x, object out=None) except NULL:
    """kernels_of's counterpart among the kernels of mapped logits."""
    cdef const cyce_mapped_table *m = table.mapped
    cdef const cyce_mapped_kernels *by_pair[6]
    by_pair[:] = [m.f32, m.f64, m.bf16, m.bf16_f32, m.f16, m.f16_f32]
    return by_pair[dtype_pair(x, out)]


cdef int compute_typenum(cnp.ndarray x) except -1:
    """The dtype the kernels of x's dtype compute in, and so of their
    losses, weights and logsumexp: float32 for bfloat16 and float16."""
    return cnp.NPY_FLOAT32 if is_half(x) else cnp.PyArray_TYPE(x)


cdef int out_typenum(cnp.ndarray x, object out) except -1:
    return cnp.NPY_FLOAT32 if float32_output(x, out) else cnp.PyArray_TYPE(x)


cdef void *data_of(object a, int typenum) except? NULL:
    """The data of a C-contiguous array of typenum (NULL for None)."""
    if a is None:
        return NULL
    cdef cnp.ndarray array = <cnp.ndarray?>a
    if cnp.PyArray_TYPE(array) != typenum or not cnp.PyArray_IS_C_CONTIGUOUS(array):
        raise TypeError(f"a kernel needs a C-contiguous {cnp.PyArray_DescrFromType(typenum)} array,"
                        f" got {a.dtype} with strides {a.strides}")
    return cnp.PyArray_DATA(array)


cdef cyce_rows rows_of(cnp.ndarray x, object grad, object row_loss) except *:
    """The arrays of a call over the rows of x, an (N, C) array."""
    cdef cyce_rows rows
    rows.x = data_of(x, cnp.PyArray_TYPE(x))
    rows.grad = data_of(grad, out_typenum(x, grad))
    rows.labels = NULL
    rows.targets = NULL
    rows.targets_f64 = 0
    rows.row_loss = <double *>data_of(row_loss, cnp.NPY_FLOAT64)
    rows.n_rows = x.shape[0]
    rows.n_classes = x.shape[1]
    return rows


cdef void set_targets(cyce_rows *rows, object targets) except *:
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray?>targets)
    rows.targets_f64 = typenum == cnp.NPY_FLOAT64
    rows.targets = data_of(targets, cnp.NPY_FLOAT64 if rows.targets_f64 else cnp.NPY_FLOAT32)


cdef cyce_ce_opts opts_of(int64_t n_classes, object class_weight, object sample_weight,
                          int64_t ignore_index, double label_smoothing, double z_loss,
                          double grad_scale, double temperature=1.0,
                          double logit_softcap=0.0) except *:
    cdef cyce_ce_opts opts
    opts.class_weight = <const double *>data_of(class_weight, cnp.NPY_FLOAT64)
    opts.weight_total = n_classes if class_weight is None else float(class_weight.sum())
    opts.sample_weight = <const double *>data_of(sample_weight, cnp.NPY_FLOAT64)
    opts.label_smoothing = label_smoothing
    opts.z_loss = z_loss
    opts.grad_scale = grad_scale
    opts.ignore_index = ignore_index
    opts.temperature = temperature
    opts.logit_softcap = logit_softcap
    return opts


# ---------------------------------------------------------------------------
# the batch sum, after the prange

ctypedef struct CompensatedSum:
    double total
    double compensation


cdef inline void compensated_add(CompensatedSum *acc, double value) noexcept nogil:
    """Neumaier's step: acc.total += value, keeping the rounding error apart."""
    cdef double t = acc.total + value
    if fabs(acc.total) >= fabs(value):
        acc.compensation += (acc.total - t) + value
    else:
        acc.compensation += (value - t) + acc.total
    acc.total = t


cdef inline double compensated_result(CompensatedSum acc) noexcept nogil:
    # an infinite total makes the compensation inf - inf = NaN: it has no error to add
    return acc.total + acc.compensation if isfinite(acc.total) else acc.total


cdef double fixed_order_sum(const double *values, Py_ssize_t n) noexcept nogil:
    """sum(values) in index order with Neumaier's compensation: accurate to a
    few ulp of the exact sum however many terms there are."""
    cdef CompensatedSum acc = CompensatedSum(0.0, 0.0)
    cdef Py_ssize_t i
    for i in range(n):
        compensated_add(&acc, values[i])
    return compensated_result(acc)


cdef inline Py_ssize_t n_tasks_of(int64_t n, int64_t per_task) noexcept nogil:
    return <Py_ssize_t>((n + per_task - 1) // per_task)


cdef inline Py_ssize_t chunk_of(Py_ssize_t n_tasks, int n_threads) noexcept nogil:
    """Tasks a thread takes at a time: 8 turns per thread.  Fewer, longer
    runs of tasks than one at a time keep each thread's writes in pages of its
    own (a new gradient's first touch: two threads faulting in the same huge
    page serialise, docs/performance.md#threads), and still leave a preempted
    thread at most an eighth of its share."""
    return max(1, n_tasks // (8 * max(n_threads, 1)))


ctypedef struct Schedule:
    int64_t n            # rows (or elements) in all
    int64_t per_task     # rows (or elements) per task: from the shape alone
    Py_ssize_t n_tasks
    Py_ssize_t chunk     # tasks a thread takes at a time
    int threads          # never more than there are tasks


cdef inline Schedule schedule_of(int64_t n, int64_t per_task, int n_threads) noexcept nogil:
    cdef Schedule s
    s.n = n
    s.per_task = per_task
    s.n_tasks = n_tasks_of(n, per_task)
    s.chunk = chunk_of(s.n_tasks, n_threads)
    s.threads = <int>min(<Py_ssize_t>n_threads, s.n_tasks) if s.n_tasks > 0 else 1
    return s


ctypedef struct Scratch:
    void *block         # to free() after the prange (NULL: none)
    char *first         # thread 0's row, on a cache line
    Py_ssize_t stride   # bytes from one thread's row to the next


cdef Scratch new_scratch(size_t nbytes, int n_threads) except *:
    """nbytes of scratch per thread, each thread's on cache lines of its own
    (none for 0): the two rows of exps of the kernels whose output cannot hold
    them (a half-precision one, cyce_dtype_kernels), or what the kernels of
    mapped logits ask for (cyce_mapped_kernels)."""
    cdef Scratch sc = Scratch(NULL, NULL, 0)
    if nbytes == 0:
        return sc
    sc.stride = (<Py_ssize_t>nbytes + 63) // 64 * 64
    sc.block = malloc(sc.stride * max(n_threads, 1) + 64)
    if sc.block == NULL:
        raise MemoryError()
    sc.first = <char *>sc.block + (64 - <uintptr_t>sc.block % 64) % 64
    return sc


cdef inline void *scratch_row(Scratch sc, int thread) noexcept nogil:
    return NULL if sc.first == NULL else <void *>(sc.first + thread * sc.stride)


# ---------------------------------------------------------------------------
# the one prange: every shim below fills a Call and runs its tasks here

cdef enum Kernel:
    LOGSUMEXP
    SOFTMAX
    CE_HARD
    CE_SOFT
    CATEGORICAL_CE
    BINARY
    STATS
    CE_HARD_MAPPED
    CE_SOFT_MAPPED


ctypedef struct Call:
    Kernel kernel
    const cyce_dtype_kernels *k
    const cyce_mapped_kernels *mk  # the kernels of mapped logits (STATS, *_MAPPED)
    const cyce_rows *rows          # the row kernels'
    const cyce_elements *elements  # BINARY's
    const cyce_ce_opts *opts
    void *out                      # LOGSUMEXP's results
    const cyce_stats_out *stats    # STATS' results
    int flag                       # SOFTMAX: log space; BINARY: the kind
    double eps                     # CATEGORICAL_CE's clip


cdef void run_tasks(const Call *c, Schedule s, Scratch sc, double *task_sums) noexcept nogil:
    """Task t runs c's kernel over rows (elements) [t * s.per_task, ...) of s.n
    and, for the kernels that return one, writes its loss sum to task_sums[t]."""
    cdef Py_ssize_t t
    cdef int64_t first, stop
    cdef void *scratch
    for t in prange(s.n_tasks, schedule="dynamic", chunksize=s.chunk, num_threads=s.threads,
                    use_threads_if=s.threads > 1):
        first = <int64_t>t * s.per_task
        stop = min(first + s.per_task, s.n)
        scratch = scratch_row(sc, threadid())
        if c.kernel == CE_HARD:
            task_sums[t] = c.k.softmax_ce_hard(c.rows, c.opts, scratch, first, stop)
        elif c.kernel == BINARY:
            task_sums[t] = c.k.binary(c.elements, c.flag, first, stop)
        elif c.kernel == CE_SOFT:
            c.k.softmax_ce_soft(c.rows, c.opts, scratch, first, stop)
        elif c.kernel == SOFTMAX:
            c.k.softmax(c.rows, c.flag, scratch, first, stop)
        elif c.kernel == LOGSUMEXP:
            c.k.logsumexp(c.rows, c.out, first, stop)
        elif c.kernel == CATEGORICAL_CE:
            c.k.categorical_ce(c.rows, c.opts, c.eps, first, stop)
        elif c.kernel == STATS:
            c.mk.softmax_stats(c.rows, c.opts, c.stats, scratch, first, stop)
        elif c.kernel == CE_HARD_MAPPED:
            task_sums[t] = c.mk.softmax_ce_hard(c.rows, c.opts, scratch, first, stop)
        else:
            c.mk.softmax_ce_soft(c.rows, c.opts, scratch, first, stop)


cdef double run(Call *c, Schedule s, bint scratch_wanted, bint summed) except? -1.0:
    """Runs c's tasks without the GIL, with the scratch rows the kernel
    needs; returns the tasks' loss sums added in task order (after the
    prange: the same bits for any thread count) when summed, else 0."""
    cdef double *task_sums = NULL
    cdef double total = 0.0
    cdef size_t nbytes = 0
    if c.mk != NULL:
        nbytes = c.mk.scratch_bytes(c.rows.n_classes)   # whether or not a gradient is wanted
    elif scratch_wanted:
        nbytes = 2 * c.rows.n_classes * c.k.exps_itemsize
    cdef Scratch sc = new_scratch(nbytes, s.threads)
    if summed:
        task_sums = <double *>malloc(max(s.n_tasks, 1) * sizeof(double))
        if task_sums == NULL:
            free(sc.block)
            raise MemoryError()
    with nogil:
        run_tasks(c, s, sc, task_sums)
        if summed:
            total = fixed_order_sum(task_sums, s.n_tasks)
        free(task_sums)
        free(sc.block)
    return total


cdef Call call_of(Kernel kernel, const cyce_dtype_kernels *k, const cyce_rows *rows,
                  const cyce_ce_opts *opts) noexcept:
    cdef Call c
    c.kernel, c.k, c.mk, c.rows, c.elements, c.opts = kernel, k, NULL, rows, NULL, opts
    c.out, c.stats, c.flag, c.eps = NULL, NULL, 0, 0.0
    return c


cdef inline Schedule row_schedule(const cyce_rows *rows, int n_threads) noexcept nogil:
    return schedule_of(rows.n_rows, cyce_rows_per_task(rows.n_rows, rows.n_classes), n_threads)


# ---------------------------------------------------------------------------
# the softmax family

def logsumexp_rows(cnp.ndarray x, cnp.ndarray out, int n_threads):
    """out[i] = logsumexp(x[i]) over the rows of x, an (N, C) array."""
    cdef cyce_rows rows = rows_of(x, None, None)
    cdef Call c = call_of(LOGSUMEXP, kernels_of(x), &rows, NULL)
    c.out = data_of(out, compute_typenum(x))
    run(&c, row_schedule(&rows, n_threads), False, False)


def softmax_rows(cnp.ndarray x, cnp.ndarray out, bint log_space, int n_threads):
    """out = softmax(x) or log_softmax(x) row by row; out may be x."""
    cdef cyce_rows rows = rows_of(x, out, None)
    cdef Call c = call_of(SOFTMAX, kernels_of(x, out), &rows, NULL)
    c.flag = log_space
    run(&c, row_schedule(&rows, n_threads), not log_space, False)


# A new float32 gradient is streamed (table.f32_stream) only where that
# measured faster: rows this long, in a gradient this large; in a gradient
# the caches hold, streamed stores are slower (docs/performance.md#streamed-gradient).
cdef int64_t STREAM_MIN_CLASSES = 1000
cdef int64_t STREAM_MIN_BYTES = 32 << 20


def softmax_ce_hard_rows(cnp.ndarray x, object grad, object labels, object row_loss, *,
                         object class_weight, object sample_weight, int64_t ignore_index,
                         double label_smoothing, double z_loss, double grad_scale,
                         int n_threads, double temperature=1.0, double logit_softcap=0.0):
    """Softmax cross entropy of the rows of x against int64 labels.  Writes
    the gradient times grad_scale to grad (unless None; may be x) and each
    row's loss to row_loss (unless None); returns the loss sum.  With a
    temperature other than 1 or a logit_softcap (not 0), of the mapped
    logits c tanh(x / c) / T (cyce_stats.c's kernels)."""
    cdef const cyce_dtype_kernels *k = kernels_of(x, grad)
    cdef cyce_rows rows = rows_of(x, grad, row_loss)
    cdef bint mapped = temperature != 1.0 or logit_softcap != 0.0
    if (not mapped and k == table.f32 and table.f32_stream != NULL and rows.grad != NULL
            and rows.grad != rows.x and rows.n_classes >= STREAM_MIN_CLASSES
            and rows.n_rows * rows.n_classes * 4 >= STREAM_MIN_BYTES):
        k = table.f32_stream   # a gradient of its own: written without reading its lines
    rows.labels = <const int64_t *>data_of(labels, cnp.NPY_INT64)
    cdef cyce_ce_opts opts = opts_of(rows.n_classes, class_weight, sample_weight, ignore_index,
                                     label_smoothing, z_loss, grad_scale, temperature,
                                     logit_softcap)
    cdef Call c = call_of(CE_HARD_MAPPED if mapped else CE_HARD, k, &rows, &opts)
    if mapped:
        c.mk = mapped_kernels_of(x, grad)
    return run(&c, row_schedule(&rows, n_threads), grad is not None, True)


def softmax_ce_soft_rows(cnp.ndarray x, object grad, object targets, object row_loss, *,
                         object class_weight, object sample_weight, double label_smoothing,
                         double z_loss, double grad_scale, int n_threads,
                         double temperature=1.0, double logit_softcap=0.0):
    """softmax_ce_hard_rows against probabilities (float32 or float64, of
    x's shape); row_loss is required."""
    cdef cyce_rows rows = rows_of(x, grad, row_loss)
    set_targets(&rows, targets)
    cdef cyce_ce_opts opts = opts_of(rows.n_classes, class_weight, sample_weight, 0,
                                     label_smoothing, z_loss, grad_scale, temperature,
                                     logit_softcap)
    cdef bint mapped = temperature != 1.0 or logit_softcap != 0.0
    cdef Call c = call_of(CE_SOFT_MAPPED if mapped else CE_SOFT, kernels_of(x, grad), &rows, &opts)
    if mapped:
        c.mk = mapped_kernels_of(x, grad)
    run(&c, row_schedule(&rows, n_threads), grad is not None, False)
    return fixed_order_sum(rows.row_loss, rows.n_rows)


def softmax_stats_rows(cnp.ndarray x, object labels, cnp.ndarray lse, object logprob,
                       cnp.ndarray entropy, cnp.ndarray argmax, *, double temperature,
                       double logit_softcap, int n_threads):
    """Per row of x: lse, logprob (unless None; of int64 labels, which are
    then required), entropy (of x's compute dtype) and argmax (int64) of the
    logits mapped by c tanh(x / c) / T (logit_softcap 0: none)."""
    cdef cyce_rows rows = rows_of(x, None, None)
    if logprob is not None:
        rows.labels = <const int64_t *>data_of(labels, cnp.NPY_INT64)
    cdef int typenum = compute_typenum(x)
    cdef cyce_stats_out out
    out.lse = data_of(lse, typenum)
    out.logprob = data_of(logprob, typenum)
    out.entropy = data_of(entropy, typenum)
    out.argmax = <int64_t *>data_of(argmax, cnp.NPY_INT64)
    cdef cyce_ce_opts opts = opts_of(rows.n_classes, None, None, 0, 0.0, 0.0, 0.0, temperature,
                                     logit_softcap)
    cdef Call c = call_of(STATS, NULL, &rows, &opts)
    c.mk, c.stats = mapped_kernels_of(x), &out
    run(&c, row_schedule(&rows, n_threads), False, False)


# ---------------------------------------------------------------------------
# the binary family and categorical_ce

def binary_elements(int kind, cnp.ndarray values, object targets, object weight,
                    object pos_weight, object grad, object loss_out, *, int64_t n_classes,
                    double grad_scale, int n_threads):
    """sigmoid_bce (kind 0) or binary_ce (kind 1) over the flattened
    (rows, n_classes) values: the gradient times grad_scale to grad and each
    element's loss to loss_out, unless None (grad may be values); weight is a
    (rows, n_classes) view and pos_weight an (n_classes,) view, by strides,
    of the dtype computed in (values' own, float32 for the half types), as
    loss_out is, or None.  Returns the loss sum."""
    cdef int typenum = cnp.PyArray_TYPE(values)
    cdef int real_typenum = compute_typenum(values)
    cdef cyce_elements elements
    cdef cnp.ndarray view
    elements.values = data_of(values, typenum)
    elements.targets_f64 = cnp.PyArray_TYPE(<cnp.ndarray?>targets) == cnp.NPY_FLOAT64
    elements.targets = data_of(targets, cnp.NPY_FLOAT64 if elements.targets_f64 else cnp.NPY_FLOAT32)
    elements.weight = NULL
    elements.pos_weight = NULL
    if weight is not None:
        view = <cnp.ndarray?>weight
        if cnp.PyArray_TYPE(view) != real_typenum or view.ndim != 2:
            raise TypeError("weight must be a 2-D view of the values' compute dtype")
        elements.weight = <const char *>cnp.PyArray_DATA(view)
        elements.weight_strides[0] = view.strides[0]
        elements.weight_strides[1] = view.strides[1]
    if pos_weight is not None:
        view = <cnp.ndarray?>pos_weight
        if cnp.PyArray_TYPE(view) != real_typenum or view.ndim != 1:
            raise TypeError("pos_weight must be a 1-D view of the values' compute dtype")
        elements.pos_weight = <const char *>cnp.PyArray_DATA(view)
        elements.pos_weight_stride = view.strides[0]
    elements.grad = data_of(grad, out_typenum(values, grad))
    elements.loss_out = data_of(loss_out, real_typenum)
    elements.n_elements = values.size
    elements.n_classes = n_classes
    elements.grad_scale = grad_scale
    cdef Call c = call_of(BINARY, kernels_of(values, grad), NULL, NULL)
    c.elements, c.flag = &elements, kind
    return run(&c, schedule_of(elements.n_elements, CYCE_BINARY_BLOCK, n_threads), False, True)


def categorical_ce_rows(cnp.ndarray probs, object grad, object labels, object row_loss, *,
                        object class_weight, int64_t ignore_index, double eps,
                        double grad_scale, int n_threads):
    """Categorical cross entropy of the rows of probs against int64 class
    indices or float targets of probs' shape (labels' dtype says which)."""
    cdef cyce_rows rows = rows_of(probs, grad, row_loss)
    if cnp.PyArray_TYPE(<cnp.ndarray?>labels) != cnp.NPY_INT64:
        set_targets(&rows, labels)
    else:
        rows.labels = <const int64_t *>data_of(labels, cnp.NPY_INT64)
    cdef cyce_ce_opts opts = opts_of(rows.n_classes, class_weight, None, ignore_index, 0.0,
                                     0.0, grad_scale)
    cdef Call c = call_of(CATEGORICAL_CE, kernels_of(probs, grad), &rows, &opts)
    c.eps = eps
    run(&c, row_schedule(&rows, n_threads), False, False)
    return fixed_order_sum(rows.row_loss, rows.n_rows)


# ---------------------------------------------------------------------------
# label checks and the mean's denominator (no kernel of any width needed)

def first_bad_label(const int64_t[::1] labels, int64_t n_classes, int64_t ignore_index):
    """The index of the first label outside [0, n_classes) that is not
    ignore_index, or -1 (the validation module raises the error)."""
    cdef Py_ssize_t i
    cdef Py_ssize_t first = -1
    cdef int64_t label
    with nogil:
        for i in range(labels.shape[0]):
            label = labels[i]
            if (label < 0 or label >= n_classes) and label != ignore_index:
                first = i
                break
    return first


def first_bad_probability(cnp.ndarray t):
    """The index of the first value of the 1-D C-contiguous float32 or
    float64 array t outside [0, 1] (NaN included), or -1: one pass at memory
    speed (the level's kernel), where NumPy's min and max take two."""
    if (t is None or t.ndim != 1 or not cnp.PyArray_IS_C_CONTIGUOUS(t)
            or cnp.PyArray_TYPE(t) not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64)):
        raise TypeError("first_bad_probability takes a 1-D C-contiguous float32 or float64 array")
    cdef const cyce_dtype_kernels *k = kernels_of(t)
    cdef const void *values = cnp.PyArray_DATA(t)
    cdef int64_t n = t.shape[0], first
    with nogil:
        first = k.first_bad_probability(values, n)
    return first


def label_weight_sum(const int64_t[::1] labels, int64_t ignore_index,
                     const double[::1] class_weight, const double[::1] sample_weight):
    """PyTorch's mean denominator: sum over rows not ignored of
    class_weight[label] * sample_weight[row] (1 where not given), in row order."""
    cdef Py_ssize_t i
    cdef CompensatedSum acc = CompensatedSum(0.0, 0.0)
    cdef double value
    cdef bint has_class_weight = class_weight is not None
    cdef bint has_sample_weight = sample_weight is not None
    cdef int64_t kept = 0
    if not has_class_weight and not has_sample_weight:
        # a count of the rows not ignored: exact
        with nogil:
            for i in range(labels.shape[0]):
                kept += labels[i] != ignore_index
        return <double>kept
    with nogil:
        for i in range(labels.shape[0]):
            if labels[i] == ignore_index:
                continue
            value = class_weight[labels[i]] if has_class_weight else 1.0
            if has_sample_weight:
                value = value * sample_weight[i]
            compensated_add(&acc, value)
    return compensated_result(acc)


# ---------------------------------------------------------------------------
# the kernels' exps and sums, exposed for their accuracy tests (float32 and
# float64: the half types compute with float32's)

cdef const cyce_dtype_kernels *exp_kernels_of(cnp.ndarray x) except NULL:
    cdef const cyce_dtype_kernels *k = kernels_of(x)
    if k.exp_values == NULL:
        raise TypeError(f"the exp kernels are float32 and float64 only, got {x.dtype}")
    return k

def exp_values(cnp.ndarray x, cnp.ndarray out, *, bint nonpositive=False):
    """cyce's vectorised exp, elementwise, over a 1-D array; with
    nonpositive, the softmax kernels' exp for x <= 0."""
    cdef const cyce_dtype_kernels *k = exp_kernels_of(x)
    cdef const void *src = data_of(x, cnp.PyArray_TYPE(x))
    cdef void *dst = data_of(out, cnp.PyArray_TYPE(x))
    with nogil:
        if nonpositive:
            k.exp_nonpos_values(src, dst, x.shape[0])
        else:
            k.exp_values(src, dst, x.shape[0])


def span_exp_sum_count(cnp.ndarray x, object out, double shift, double top):
    """The softmax rows' exp-and-sum loop over x: out (unless None) =
    exp(x - shift); returns (the sum in x's dtype of the terms where
    x != top, how many x == top)."""
    cdef const cyce_dtype_kernels *k = exp_kernels_of(x)
    cdef const void *src = data_of(x, cnp.PyArray_TYPE(x))
    cdef void *dst = data_of(out, cnp.PyArray_TYPE(x))
    cdef double total = 0, count = 0
    with nogil:
        k.span_exp_sum_count(src, dst, x.shape[0], shift, top, &total, &count)
    return total, count


def log1p_values(cnp.ndarray s, cnp.ndarray out):
    """cyce's vectorisable log1p for s >= 0, elementwise (float64)."""
    cdef const double *src = <const double *>data_of(s, cnp.NPY_FLOAT64)
    cdef double *dst = <double *>data_of(out, cnp.NPY_FLOAT64)
    with nogil:
        table.log1p_values(src, dst, s.shape[0])


# ---------------------------------------------------------------------------
# what the build and the machine are

def build_info():
    """The kernels in use and what they were compiled with."""
    return {
        "simd": table.level.decode(),
        "cflags": table.cflags.decode(),
        "compiler": CYCE_COMPILER.decode(),
        "openmp": cyce_openmp_version(),
    }


def default_threads():
    """OpenMP's default team size for this thread (OMP_NUM_THREADS,
    threadpoolctl and omp_set_num_threads all act on it); 1 without OpenMP."""
    return cyce_default_threads()


def cpu_has_avx2_fma():
    return bool(cyce_cpu_has_avx2_fma())


def cpu_has_avx512():
    """AVX-512 F, DQ, BW and VL, enabled by the OS (what the avx512 kernels need)."""
    return bool(cyce_cpu_has_avx512())
