# cyce's compiled kernels.  This file is included by _kernels_baseline.pyx and
# _kernels_avx2.pyx, which setup.py compiles with different flags (baseline
# x86-64, and -mavx2 -mfma); cyce/_dispatch.py imports the one the CPU runs.
#
# Layers (see STYLE.md): the Python wrappers in cyce/_softmax.py validate
# every input and allocate every output; the `def` shims below take typed
# memoryviews, release the GIL and run one prange over rows; the row kernels
# are `noexcept nogil` functions over one contiguous row; the innermost loops
# are the vectorised C primitives of cyce_rows.h.
#
# Determinism: each row is computed by one thread into its own slot
# (`row_loss[i]`, the row of the output); nothing is summed across rows
# inside the prange.  The batch sum happens after it, serially, in row order
# (fixed_order_sum), so it is the same for any thread count.
# Index arithmetic is 64-bit (int64_t row offsets).  Compiler directives
# (boundscheck=False, ...) are set once, in setup.py.

cimport cython
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport fabs, isfinite, log1p
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

cdef extern from "cyce_rows.h" nogil:
    float cyce_row_max_f32(const float *x, int64_t n)
    double cyce_row_max_f64(const double *x, int64_t n)
    double cyce_row_exp_sum_m1_f32(const float *x, float *out, int64_t n, float max,
                                   const float *ahead)
    double cyce_row_exp_sum_m1_f64(const double *x, double *out, int64_t n, double max,
                                   const double *ahead)
    double cyce_row_blocked_exp_sum_m1_f32(const float *x, float *out, int64_t n,
                                           float *carried_max, int carried, int fuse_next,
                                           float *row_max, double *factor, float *prev,
                                           const double *prev_factor, double prev_a)
    double cyce_row_blocked_exp_sum_m1_f64(const double *x, double *out, int64_t n,
                                           double *carried_max, int carried, int fuse_next,
                                           double *row_max, double *factor, double *prev,
                                           const double *prev_factor, double prev_a)
    void cyce_row_blocked_scale_sub_f32(float *out, const double *w, int64_t n,
                                        const double *factor, double a, float b)
    void cyce_row_blocked_scale_sub_f64(double *out, const double *w, int64_t n,
                                        const double *factor, double a, double b)
    void cyce_span_exp_sum_count_f32(const float *x, float *out, int64_t start, int64_t stop,
                                     float shift, float top, float *sum, float *count)
    void cyce_span_exp_sum_count_f64(const double *x, double *out, int64_t start, int64_t stop,
                                     double shift, double top, double *sum, double *count)
    void cyce_exp_nonpos_values_f32(const float *x, float *out, int64_t n)
    void cyce_exp_nonpos_values_f64(const double *x, double *out, int64_t n)
    int64_t cyce_online_block_f32(int64_t n)
    int64_t cyce_online_block_f64(int64_t n)
    double cyce_row_sum_shifted_f32(const float *x, const double *w, int64_t n, float shift)
    double cyce_row_sum_shifted_f64(const double *x, const double *w, int64_t n, double shift)
    void cyce_row_scale_sub_f32(float *out, const double *w, int64_t n, float a, float b)
    void cyce_row_scale_sub_f64(double *out, const double *w, int64_t n, double a, double b)
    void cyce_row_sub2_f32(const float *x, float *out, int64_t n, float shift, float log_sum)
    void cyce_row_sub2_f64(const double *x, double *out, int64_t n, double shift, double log_sum)
    float cyce_expf(float x)
    double cyce_exp(double x)
    ctypedef struct cyce_hard_terms:
        double loss
        double exp_scale
        double weight_scale
        double label_grad
    cyce_hard_terms cyce_softmax_ce_hard_terms(
        int64_t n, double max, double total_m1, double label_shifted, double label_exp_m1,
        double label_weight, double weight_total, double smooth_shifted, double row_weight,
        double smoothing, double z_loss, double grad_scale)
    double cyce_label_exp_m1(double label_shifted, double label_exp)
    double cyce_log1p_nonneg(double s)
    void cyce_tile_softmax_ce_hard_general_f32(
        const float *x, float *grad, int64_t n_rows, int64_t n, const int64_t *labels,
        int64_t ignore_index, const double *class_weight, double weight_total,
        const double *row_weight, double smoothing, double z_loss, double grad_scale,
        double *row_loss)
    void cyce_tile_softmax_ce_hard_general_f64(
        const double *x, double *grad, int64_t n_rows, int64_t n, const int64_t *labels,
        int64_t ignore_index, const double *class_weight, double weight_total,
        const double *row_weight, double smoothing, double z_loss, double grad_scale,
        double *row_loss)
    void cyce_tile_softmax_ce_hard_plain_f32(
        const float *x, float *grad, int64_t n_rows, int64_t n, const int64_t *labels,
        int64_t ignore_index, double grad_scale, double *row_loss)
    void cyce_tile_softmax_ce_hard_plain_f64(
        const double *x, double *grad, int64_t n_rows, int64_t n, const int64_t *labels,
        int64_t ignore_index, double grad_scale, double *row_loss)
    enum:
        CYCE_PREFETCH_MIN_CLASSES
        CYCE_PREFETCH_MAX_BYTES
        CYCE_TILE
        CYCE_SHORT_MAX
        CYCE_ONLINE_MAX_BLOCKS
        CYCE_DEFER_MAX_BYTES
        CYCE_ONLINE_BLOCK_BYTES
    int cyce_openmp_version()
    int cyce_default_threads()
    int cyce_cpu_has_avx2_fma()
    int cyce_cpu_has_avx512()
    const char *CYCE_SIMD_LEVEL
    const char *CYCE_CFLAGS
    const char *CYCE_COMPILER


ctypedef fused target_t:
    float
    double


# ---------------------------------------------------------------------------
# dtype-generic names for the C primitives (the branch is resolved at compile
# time for each specialisation)

cdef inline floating row_max(const floating *x, int64_t n) noexcept nogil:
    if floating is float:
        return cyce_row_max_f32(x, n)
    else:
        return cyce_row_max_f64(x, n)


cdef inline double row_exp_sum_m1(const floating *x, floating *out, int64_t n,
                                  floating m) noexcept nogil:
    """sum(exp(x - m)) - 1 for m = max(x), storing exp(x - m) in out unless out
    is NULL (out may be x).  Precise when the max's own 1 dominates the sum
    (see cyce_rows_template.h).  An infinite max is not set apart, so its
    inf - inf makes the row NaN, as in PyTorch.  The next row (x + n) is
    prefetched meanwhile when rows are long but not too long for two to fit
    in L2 (cyce_rows.h); for the last row that reads nothing of consequence
    (prefetches never fault)."""
    cdef const floating *ahead = NULL
    if CYCE_PREFETCH_MIN_CLASSES <= n and n * <int64_t>sizeof(floating) <= CYCE_PREFETCH_MAX_BYTES:
        ahead = x + n
    if floating is float:
        return cyce_row_exp_sum_m1_f32(x, out, n, m, ahead)
    else:
        return cyce_row_exp_sum_m1_f64(x, out, n, m, ahead)


cdef inline double row_blocked_exp_sum_m1(const floating *x, floating *out, int64_t n,
                                          floating *m, double *factor) noexcept nogil:
    """sum(exp(x - max)) - 1, and max(x) into m, in one pass over a row on
    its own, block by block (cyce_row_blocked_exp_sum_m1, without the
    chaining of rows or a deferred scaling): out, unless NULL (it may be x),
    gets exp(x - block max), and factor (CYCE_ONLINE_MAX_BLOCKS long) each
    block's rescaling to the row max, for row_blocked_scale.  An infinite
    max makes the sum NaN."""
    cdef floating carried_max = 0
    if floating is float:
        return cyce_row_blocked_exp_sum_m1_f32(x, out, n, &carried_max, 0, 0, m, factor,
                                               NULL, NULL, 0.0)
    else:
        return cyce_row_blocked_exp_sum_m1_f64(x, out, n, &carried_max, 0, 0, m, factor,
                                               NULL, NULL, 0.0)


cdef inline void row_blocked_scale(floating *out, int64_t n, const double *factor,
                                   double a) noexcept nogil:
    """out[j] *= a times its block's factor: row_blocked_exp_sum_m1's exps
    to exp(x - max) * a."""
    if floating is float:
        cyce_row_blocked_scale_sub_f32(out, NULL, n, factor, a, 0)
    else:
        cyce_row_blocked_scale_sub_f64(out, NULL, n, factor, a, 0)


cdef inline double row_sum_shifted(const floating *x, const double *w, int64_t n,
                                   floating shift) noexcept nogil:
    if floating is float:
        return cyce_row_sum_shifted_f32(x, w, n, shift)
    else:
        return cyce_row_sum_shifted_f64(x, w, n, shift)


cdef inline void row_scale_sub(floating *out, const double *w, int64_t n,
                               floating a, floating b) noexcept nogil:
    if floating is float:
        cyce_row_scale_sub_f32(out, w, n, a, b)
    else:
        cyce_row_scale_sub_f64(out, w, n, a, b)


cdef inline void row_sub2(const floating *x, floating *out, int64_t n,
                          floating shift, floating log_sum) noexcept nogil:
    if floating is float:
        cyce_row_sub2_f32(x, out, n, shift, log_sum)
    else:
        cyce_row_sub2_f64(x, out, n, shift, log_sum)


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


cdef double fixed_order_sum(const double[::1] values) noexcept nogil:
    """sum(values) in index order with Neumaier's compensation: the same bits
    for any thread count (it runs after the prange), and accurate to a few ulp
    of the exact sum however many rows there are."""
    cdef CompensatedSum acc = CompensatedSum(0.0, 0.0)
    cdef Py_ssize_t i
    for i in range(values.shape[0]):
        compensated_add(&acc, values[i])
    return compensated_result(acc)


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
        # a count of the rows not ignored: exact, and a vectorised loop
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
# row kernels

cdef inline double row_logsumexp(const floating *x, int64_t n) noexcept nogil:
    """log(sum(exp(x))) with the max subtracted first so nothing overflows,
    in one pass over the row (the max of each block is taken during the
    previous block's exps: row_blocked_exp_sum_m1).

    An infinite max is returned as it is (subtracting it would give
    inf - inf = NaN): a row holding +inf gives +inf and an all -inf row -inf,
    as in PyTorch; but a NaN anywhere gives NaN (the max skips NaN, so such
    rows are searched for one).
    """
    cdef double factor[CYCE_ONLINE_MAX_BLOCKS]
    cdef floating m
    cdef double total_m1 = row_blocked_exp_sum_m1(x, <floating *>NULL, n, &m, factor)
    cdef int64_t j
    if not isfinite(m):
        for j in range(n):
            if x[j] != x[j]:
                return x[j]
        return m
    return <double>m + log1p(total_m1)


cdef inline void row_softmax(const floating *x, floating *out, int64_t n,
                             bint log_space) noexcept nogil:
    """softmax or log_softmax of one row; out may be x.  The max and the sum
    of exps come from one pass over the row (row_blocked_exp_sum_m1), which
    for softmax also stores the exps in out; a second pass writes the
    result.  A row holding NaN or +inf, or only -inf, gives NaN throughout
    (as PyTorch does): its sum is NaN."""
    cdef double factor[CYCE_ONLINE_MAX_BLOCKS]
    cdef floating m
    cdef double total_m1
    if log_space:
        total_m1 = row_blocked_exp_sum_m1(x, <floating *>NULL, n, &m, factor)
        row_sub2(x, out, n, m, <floating>log1p(total_m1))
    else:
        total_m1 = row_blocked_exp_sum_m1(x, out, n, &m, factor)
        row_blocked_scale(out, n, factor, 1.0 / (1.0 + total_m1))


cdef struct deferred_scale:
    # A row's gradient whose scaling pass waits for the next row's exps
    # (row_softmax_ce_hard): still exp(x - block max), to be multiplied by
    # exp_scale * factor[k] block by block, then its label slot set.
    void *grad            # NULL: no row waiting
    const double *factor
    double exp_scale
    int64_t label
    double label_grad


cdef inline void finish_deferred(floating *grad, deferred_scale *pending,
                                 int64_t n) noexcept nogil:
    """The waiting row's scaling (grad is pending.grad), in a pass of its
    own: for a task's last row, or before a row that takes no exps."""
    if grad == NULL:
        return
    row_blocked_scale(grad, n, pending.factor, pending.exp_scale)
    grad[pending.label] = <floating>pending.label_grad
    pending.grad = NULL


cdef inline double row_softmax_ce_hard(
    const floating *x, floating *grad, int64_t n, int64_t label,
    const double *class_weight, double weight_total, double row_weight,
    double smoothing, double z_loss, double grad_scale,
    floating *carried_max, bint *carried, bint fuse_next,
    double *factor, deferred_scale *pending, bint defer,
) noexcept nogil:
    """Softmax cross entropy of one row against an integer label (the
    formulas: cyce_softmax_ce_hard_terms in cyce_rows.h).

    Returns the row's loss (times its sample weight); writes its gradient,
    times grad_scale, into grad unless grad is NULL.  grad may be x: every
    read of x (x[label], the max, the smoothing sum) happens before or in the
    pass that writes exp(x - max) over it.

    Without smoothing the row goes block by block, the next block's max taken
    during this block's exps (cyce_row_blocked_exp_sum_m1): one pass over
    memory.  The last block takes the max of the next row's first block as
    well (fuse_next): *carried says, on entry, whether *carried_max holds the
    max of this row's first block, and on return whether it holds the next
    row's.  Smoothing needs the row max before the exps (its sum of
    x_c - max), so it takes the max in a pass of its own first, and carries
    nothing.

    The gradient's scaling pass reads the row again, from cache, with a
    multiply per vector: alone it leaves the vector units idle.  So a row
    waiting in *pending (the previous one, same length) is scaled during
    this row's exps, and with defer this row's scaling waits in turn
    (factor, CYCE_ONLINE_MAX_BLOCKS long, must then outlive the call, and
    not be pending's).  Without smoothing the scale is a multiply only: the
    weight term, smoothing / C, is 0.
    """
    if smoothing != 0.0:
        carried[0] = False
        return row_softmax_ce_hard_smoothed(x, grad, n, label, class_weight, weight_total,
                                            row_weight, smoothing, z_loss, grad_scale)
    cdef floating m
    cdef double label_x = x[label]
    cdef int64_t block
    cdef double total_m1
    cdef floating *prev = <floating *>pending.grad
    if floating is float:
        total_m1 = cyce_row_blocked_exp_sum_m1_f32(x, grad, n, carried_max, carried[0],
                                                   fuse_next, &m, factor, prev,
                                                   pending.factor, pending.exp_scale)
        block = cyce_online_block_f32(n)
    else:
        total_m1 = cyce_row_blocked_exp_sum_m1_f64(x, grad, n, carried_max, carried[0],
                                                   fuse_next, &m, factor, prev,
                                                   pending.factor, pending.exp_scale)
        block = cyce_online_block_f64(n)
    if prev != NULL:
        prev[pending.label] = <floating>pending.label_grad
        pending.grad = NULL
    carried[0] = fuse_next
    cdef double label_shifted = label_x - <double>m
    cdef cyce_hard_terms terms = cyce_softmax_ce_hard_terms(
        n, m, total_m1, label_shifted,
        0.0 if grad == NULL else cyce_label_exp_m1(
            label_shifted, <double>grad[label] * factor[label // block]),
        1.0 if class_weight == NULL else class_weight[label],
        weight_total, 0.0, row_weight, 0.0, z_loss, grad_scale)
    if grad != NULL:
        pending.grad = grad
        pending.factor = factor
        pending.exp_scale = terms.exp_scale
        pending.label = label
        pending.label_grad = terms.label_grad
        if not defer:
            finish_deferred(grad, pending, n)
    return terms.loss


cdef inline double row_softmax_ce_hard_smoothed(
    const floating *x, floating *grad, int64_t n, int64_t label,
    const double *class_weight, double weight_total, double row_weight,
    double smoothing, double z_loss, double grad_scale,
) noexcept nogil:
    """row_softmax_ce_hard with label smoothing: the max, the smoothing sum
    sum_c w_c (x_c - max), then the exps and sum, then the scaling pass."""
    cdef floating m = row_max(x, n)
    cdef double smooth_shifted = row_sum_shifted(x, class_weight, n, m)
    cdef double label_shifted = <double>x[label] - <double>m
    cdef double total_m1 = row_exp_sum_m1(x, grad, n, m)
    cdef cyce_hard_terms terms = cyce_softmax_ce_hard_terms(
        n, m, total_m1, label_shifted,
        0.0 if grad == NULL else cyce_label_exp_m1(label_shifted, grad[label]),
        1.0 if class_weight == NULL else class_weight[label],
        weight_total, smooth_shifted, row_weight, smoothing, z_loss, grad_scale)
    if grad != NULL:
        row_scale_sub(grad, class_weight, n, <floating>terms.exp_scale,
                      <floating>terms.weight_scale)
        grad[label] = <floating>terms.label_grad
    return terms.loss


cdef inline void tile_softmax_ce_hard(
    const floating *x, floating *grad, int64_t n_rows, int64_t n, const int64_t *labels,
    int64_t ignore_index, const double *class_weight, double weight_total,
    const double *row_weight, double smoothing, double z_loss, double grad_scale,
    double *row_loss,
) noexcept nogil:
    """row_softmax_ce_hard for n_rows <= CYCE_TILE short rows at once,
    vectorised across the rows (cyce_tile_softmax_ce_hard in
    cyce_rows_template.h), through its copy without options when none is
    asked for (the same arithmetic, with the zeros folded in)."""
    cdef bint plain = (class_weight == NULL and row_weight == NULL and smoothing == 0.0
                       and z_loss == 0.0)
    if floating is float:
        if plain:
            cyce_tile_softmax_ce_hard_plain_f32(x, grad, n_rows, n, labels, ignore_index,
                                                grad_scale, row_loss)
        else:
            cyce_tile_softmax_ce_hard_general_f32(x, grad, n_rows, n, labels, ignore_index,
                                                  class_weight, weight_total, row_weight,
                                                  smoothing, z_loss, grad_scale, row_loss)
    else:
        if plain:
            cyce_tile_softmax_ce_hard_plain_f64(x, grad, n_rows, n, labels, ignore_index,
                                                grad_scale, row_loss)
        else:
            cyce_tile_softmax_ce_hard_general_f64(x, grad, n_rows, n, labels, ignore_index,
                                                  class_weight, weight_total, row_weight,
                                                  smoothing, z_loss, grad_scale, row_loss)


cdef inline double row_softmax_ce_soft(
    const floating *x, floating *grad, int64_t n, const target_t *target,
    const double *class_weight, double row_weight,
    double smoothing, double z_loss, double grad_scale,
) noexcept nogil:
    """Softmax cross entropy of one row against probabilities t, smoothed to
    t' = (1-e) t + e/C:  loss = sum_c w_c t'_c (lse - x_c) + z lse^2,
    grad = (sum_c w_c t'_c + 2 z lse) p - w t'.  A class with t'_c = 0
    contributes 0 even where x_c = -inf (0 log 0 = 0), so -inf masks a class
    exactly.  grad may be x (all reads of x come first)."""
    cdef floating m = row_max(x, n)
    cdef double uniform = smoothing / n
    cdef double keep = 1.0 - smoothing
    cdef double mass = 0.0          # sum_c w_c t'_c
    cdef double mass_shifted = 0.0  # sum_c w_c t'_c (x_c - max), each term <= 0
    cdef double wt, total, total_m1, log_total, lse, coef
    cdef int64_t c
    for c in range(n):
        wt = keep * target[c] + uniform
        if class_weight != NULL:
            wt = wt * class_weight[c]
        if wt != 0.0:
            mass = mass + wt
            mass_shifted = mass_shifted + wt * (<double>x[c] - <double>m)
    total_m1 = row_exp_sum_m1(x, grad, n, m)
    total = 1.0 + total_m1
    log_total = log1p(total_m1)
    lse = <double>m + log_total
    if grad != NULL:
        coef = row_weight * grad_scale
        row_scale_sub(grad, NULL, n, <floating>(coef * (mass + 2.0 * z_loss * lse) / total), 0)
        for c in range(n):
            wt = keep * target[c] + uniform
            if class_weight != NULL:
                wt = wt * class_weight[c]
            grad[c] -= <floating>(coef * wt)
    return row_weight * (mass * log_total - mass_shifted + z_loss * lse * lse)


# ---------------------------------------------------------------------------
# def shims: typed views in, one prange over rows, GIL released

def logsumexp_rows(const floating[:, ::1] x, floating[::1] out, int n_threads):
    cdef Py_ssize_t i
    cdef Py_ssize_t n_rows = x.shape[0]
    cdef int64_t n = x.shape[1]
    if n_rows == 0:
        return
    cdef const floating *base = &x[0, 0]
    with nogil:
        for i in prange(n_rows, schedule="static", num_threads=n_threads,
                           use_threads_if=n_threads > 1):
            out[i] = <floating>row_logsumexp(base + <int64_t>i * n, n)


def softmax_rows(const floating[:, ::1] x, floating[:, ::1] out, bint log_space, int n_threads):
    cdef Py_ssize_t i
    cdef Py_ssize_t n_rows = x.shape[0]
    cdef int64_t n = x.shape[1]
    if n_rows == 0:
        return
    cdef const floating *base = &x[0, 0]
    cdef floating *out_base = &out[0, 0]
    with nogil:
        for i in prange(n_rows, schedule="static", num_threads=n_threads,
                           use_threads_if=n_threads > 1):
            row_softmax(base + <int64_t>i * n, out_base + <int64_t>i * n, n, log_space)


cdef inline int64_t rows_per_task(int64_t n_classes, int64_t n_rows,
                                  int64_t itemsize) noexcept nogil:
    if n_classes <= CYCE_SHORT_MAX:
        return CYCE_TILE
    # longer rows chain within a task: a row takes the max of the next row's
    # first block, and a short enough row's scaling runs during the next
    # row's exps; at least 8 tasks where there are 8 rows, so that threads
    # share the work
    return max(1, min(<int64_t>CYCE_TILE, n_rows // 8))


def hard_rows_per_task(int64_t n_classes, int64_t n_rows, int64_t itemsize):
    """Rows per task of softmax_ce_hard_rows: a tile of short rows, or up
    to a tile of longer rows, an eighth of the rows at most.  It depends on
    the shape alone, so the tasks' sums are the same for any thread count."""
    return rows_per_task(n_classes, n_rows, itemsize)


cdef double task_softmax_ce_hard(
    const floating *x, floating *grad, int64_t n_rows, int64_t n, const int64_t *labels,
    int64_t ignore_index, const double *class_weight, double weight_total,
    const double *row_weight, double smoothing, double z_loss, double grad_scale,
    double *row_loss,
) noexcept nogil:
    """One task of softmax_ce_hard_rows: n_rows consecutive rows (a tile of
    short rows, or up to a tile of longer rows, chained: see
    row_softmax_ce_hard).  Returns the sum of their losses in row order (a
    plain float64 sum: at most CYCE_TILE terms, so within 64 ulp; the
    compensated sum is the one across tasks); writes each row's loss to
    row_loss unless it is NULL, and the gradient to grad unless it is NULL."""
    cdef double tile_loss[CYCE_TILE]
    cdef double total = 0.0
    cdef int64_t r
    cdef floating carried_max = 0
    cdef bint carried = False
    # the block factors of a row and of the one whose scaling waits for it
    cdef double factors[2][CYCE_ONLINE_MAX_BLOCKS]
    cdef deferred_scale pending
    pending.grad = NULL
    # float rows up to CYCE_DEFER_MAX_BYTES defer their scaling to the next
    # row's exps (see row_softmax_ce_hard); measured on float64, every shape
    # was slower with it (cyce_rows.h)
    cdef bint defer = floating is float and n * <int64_t>sizeof(floating) <= CYCE_DEFER_MAX_BYTES
    if n > CYCE_SHORT_MAX:
        for r in range(n_rows):
            if labels[r] == ignore_index:
                tile_loss[r] = 0.0
                carried = False
                if grad != NULL:
                    finish_deferred(<floating *>pending.grad, &pending, n)
                    memset(grad + r * n, 0, <size_t>n * sizeof(floating))
            else:
                tile_loss[r] = row_softmax_ce_hard(
                    x + r * n, NULL if grad == NULL else grad + r * n, n, labels[r],
                    class_weight, weight_total, 1.0 if row_weight == NULL else row_weight[r],
                    smoothing, z_loss, grad_scale, &carried_max, &carried,
                    r + 1 < n_rows, factors[r % 2], &pending,
                    defer and r + 1 < n_rows)
    else:
        tile_softmax_ce_hard(x, grad, n_rows, n, labels, ignore_index, class_weight,
                             weight_total, row_weight, smoothing, z_loss, grad_scale,
                             tile_loss)
    for r in range(n_rows):
        total += tile_loss[r]
    if row_loss != NULL:
        memcpy(row_loss, tile_loss, <size_t>n_rows * sizeof(double))
    return total


def softmax_ce_hard_rows(
    const floating[:, ::1] logits, floating[:, ::1] grad, const int64_t[::1] labels,
    const double[::1] class_weight, const double[::1] sample_weight,
    double[::1] row_loss, double[::1] task_loss, int64_t ignore_index, double weight_total,
    double smoothing, double z_loss, double grad_scale, int n_threads,
):
    """Softmax cross entropy against integer labels, task by task
    (hard_rows_per_task rows each: CYCE_TILE short rows through the tile
    kernel, or up to CYCE_TILE longer rows, chained).
    task_loss[t] = the sum of task t's row losses (0 for an ignored row), in
    row order; row_loss[i] (unless None) = row i's loss; grad (may be logits,
    or None for the loss alone) = the gradient times grad_scale.  Returns
    the fixed-order sum of task_loss: the tasks' layout depends on the shape
    only, so the result is the same bits for any thread count."""
    cdef Py_ssize_t t
    cdef Py_ssize_t n_rows = logits.shape[0]
    cdef int64_t n = logits.shape[1]
    if n_rows == 0:
        return 0.0
    cdef int64_t task_rows = rows_per_task(n, n_rows, sizeof(floating))
    cdef Py_ssize_t n_tasks = (n_rows + task_rows - 1) // task_rows
    assert task_loss.shape[0] == n_tasks
    cdef const floating *base = &logits[0, 0]
    cdef floating *grad_base = NULL
    cdef const double *cw = NULL
    cdef const double *sw = NULL
    cdef double *row_loss_base = NULL
    if grad is not None:
        grad_base = &grad[0, 0]
    if class_weight is not None:
        cw = &class_weight[0]
    if sample_weight is not None:
        sw = &sample_weight[0]
    if row_loss is not None:
        row_loss_base = &row_loss[0]
    cdef int64_t first
    with nogil:
        for t in prange(n_tasks, schedule="static", num_threads=n_threads,
                        use_threads_if=n_threads > 1):
            first = <int64_t>t * task_rows
            task_loss[t] = task_softmax_ce_hard(
                base + first * n, NULL if grad_base == NULL else grad_base + first * n,
                min(task_rows, n_rows - first), n, &labels[first], ignore_index,
                cw, weight_total, NULL if sw == NULL else sw + first,
                smoothing, z_loss, grad_scale,
                NULL if row_loss_base == NULL else row_loss_base + first)
    return fixed_order_sum(task_loss)


def softmax_ce_soft_rows(
    const floating[:, ::1] logits, floating[:, ::1] grad, const target_t[:, ::1] targets,
    const double[::1] class_weight, const double[::1] sample_weight,
    double[::1] row_loss, double smoothing, double z_loss, double grad_scale, int n_threads,
):
    cdef Py_ssize_t i
    cdef Py_ssize_t n_rows = logits.shape[0]
    cdef int64_t n = logits.shape[1]
    if n_rows == 0:
        return 0.0
    cdef const floating *base = &logits[0, 0]
    cdef const target_t *target_base = &targets[0, 0]
    cdef floating *grad_base = NULL
    cdef const double *cw = NULL
    cdef const double *sw = NULL
    if grad is not None:
        grad_base = &grad[0, 0]
    if class_weight is not None:
        cw = &class_weight[0]
    if sample_weight is not None:
        sw = &sample_weight[0]
    with nogil:
        for i in prange(n_rows, schedule="static", num_threads=n_threads,
                           use_threads_if=n_threads > 1):
            row_loss[i] = row_softmax_ce_soft(
                base + <int64_t>i * n,
                NULL if grad_base == NULL else grad_base + <int64_t>i * n,
                n, target_base + <int64_t>i * n, cw,
                1.0 if sw == NULL else sw[i], smoothing, z_loss, grad_scale)
    return fixed_order_sum(row_loss)


def exp_values(const floating[::1] x, floating[::1] out):
    """cyce's vectorised exp, elementwise (exposed for its accuracy tests)."""
    cdef Py_ssize_t j
    with nogil:
        for j in range(x.shape[0]):
            if floating is float:
                out[j] = cyce_expf(x[j])
            else:
                out[j] = cyce_exp(x[j])


def exp_nonpos_values(const floating[::1] x, floating[::1] out):
    """cyce's exp for x <= 0, the softmax kernels' (for its accuracy tests and
    the benchmark's exp floor): cyce_exp_nonpos_values, by hand in the
    AVX-512 build."""
    assert out.shape[0] == x.shape[0]
    if x.shape[0] == 0:
        return
    with nogil:
        if floating is float:
            cyce_exp_nonpos_values_f32(&x[0], &out[0], x.shape[0])
        else:
            cyce_exp_nonpos_values_f64(&x[0], &out[0], x.shape[0])


def span_exp_sum_count(const floating[::1] x, floating[::1] out, floating shift,
                       floating top):
    """The softmax rows' exp-and-sum loop (cyce_span_exp_sum_count; in the
    AVX-512 build, by hand in cyce_avx512.h) over x: out (unless None) =
    exp(x - shift), and returns (the sum of the terms where x != top, in the
    dtype, and how many x == top), for its tests."""
    cdef floating total = 0, count = 0
    cdef floating *out_ptr = NULL
    if out is not None:
        assert out.shape[0] == x.shape[0]
        out_ptr = &out[0] if out.shape[0] else NULL
    cdef const floating *x_ptr = &x[0] if x.shape[0] else NULL
    with nogil:
        if floating is float:
            cyce_span_exp_sum_count_f32(x_ptr, out_ptr, 0, x.shape[0], shift, top, &total, &count)
        else:
            cyce_span_exp_sum_count_f64(x_ptr, out_ptr, 0, x.shape[0], shift, top, &total, &count)
    return total, count


def log1p_values(const double[::1] s, double[::1] out):
    """cyce's vectorisable log1p for s >= 0, elementwise (for its accuracy tests)."""
    cdef Py_ssize_t j
    with nogil:
        for j in range(s.shape[0]):
            out[j] = cyce_log1p_nonneg(s[j])


def build_info():
    """What this kernel module was compiled with."""
    return {
        "simd": CYCE_SIMD_LEVEL.decode(),
        "cflags": CYCE_CFLAGS.decode(),
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
    """AVX-512 F, DQ, BW and VL, enabled by the OS (what _kernels_avx512 needs)."""
    return bool(cyce_cpu_has_avx512())
