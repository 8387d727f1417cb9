/*
 * The row kernels of one storage dtype, and their tasks: cyce_kernels.c and
 * cyce_kernels_half.c include this file once per pair of dtypes (input,
 * gradient), with the macros of cyce_rows_template.h, whose loops these
 * call, and CYCE_SUFFIX.
 *
 * A row's exps go to `exps`: the gradient itself where CYCE_EXPS_IN_GRAD,
 * otherwise (a half type's gradient) the float row `scratch` of the calling
 * thread (a task takes it only where the table's exps_itemsize is not 0),
 * from which the scaling pass rounds them into the gradient.
 *
 * A task is what one thread does between two of the module's prange steps:
 * a range of rows, whose results go to per-row (or per-task) slots, so the
 * bits never depend on the thread count or the schedule.  The state carried
 * from row to row (the next row's first block max, a gradient whose scaling
 * waits for the next row's exps) lives in the task function alone.
 */
#define CYCE_CAT_(a, b) a##_##b
#define CYCE_CAT(a, b) CYCE_CAT_(a, b)
#define CYCE_FN(name) CYCE_CAT(name, CYCE_SUFFIX)

/* sum(exp(x - m)) - 1 for m = max(x), storing exp(x - m) in out unless out
 * is NULL (out may be x).  The next row (x + n) is prefetched meanwhile when
 * rows are long, but not too long for two to fit in L2, and so are the next
 * row's targets (unless next_targets is NULL; target_size bytes each). */
static inline double CYCE_FN(row_exp_sum_m1)(const CYCE_STORE *x, CYCE_REAL *out, int64_t n,
                                             CYCE_REAL m, const void *next_targets,
                                             int64_t target_size)
{
    const CYCE_STORE *ahead = NULL;
    if (CYCE_PREFETCH_MIN_CLASSES <= n
            && n * (int64_t)sizeof(CYCE_STORE) <= CYCE_PREFETCH_MAX_BYTES) {
        ahead = x + n;
    }
    return CYCE_FN(cyce_row_exp_sum_m1)(x, out, n, m, ahead,
                                        ahead == NULL ? NULL : (const char *)next_targets,
                                        target_size);
}

/* sum(exp(x - max)) - 1, and max(x) into *m, in one pass over a row on its
 * own (no chaining, no deferred scaling): out, unless NULL, gets
 * exp(x - block max), and factor each block's rescaling to the row max.
 * One copy for logsumexp and softmax (GCC otherwise inlined the loops into
 * each, or not, as the sizes of unrelated code moved). */
static __attribute__((noinline, noclone)) double CYCE_FN(row_blocked_exp_sum_m1)(
    const CYCE_STORE *x, CYCE_REAL *out, int64_t n, CYCE_REAL *m, double *factor)
{
    CYCE_REAL carried_max = 0;
    return CYCE_FN(cyce_row_blocked_exp_sum_m1)(x, out, n, &carried_max, 0, 0, m, factor,
                                                NULL, NULL, NULL, 0.0, 0, NULL);
}

/* log(sum(exp(x))), the max subtracted first.  An infinite max is returned
 * as it is (+inf for a row holding +inf, -inf for an all -inf row, as in
 * PyTorch); a NaN anywhere gives NaN (the max may skip it). */
static inline double CYCE_FN(row_logsumexp)(const CYCE_STORE *x, int64_t n)
{
    double factor[CYCE_ONLINE_MAX_BLOCKS];
    CYCE_REAL m;
    double total_m1 = CYCE_FN(row_blocked_exp_sum_m1)(x, NULL, n, &m, factor);
    if (!isfinite(m)) {
        for (int64_t j = 0; j < n; j++) {
            if (CYCE_LOAD(x[j]) != CYCE_LOAD(x[j])) {
                return CYCE_LOAD(x[j]);
            }
        }
        return m;
    }
    return (double)m + log1p(total_m1);
}

static void CYCE_FN(logsumexp_task)(const cyce_rows *rows, void *out, int64_t first,
                                    int64_t stop)
{
    const int64_t n = rows->n_classes;
    const CYCE_STORE *x = (const CYCE_STORE *)rows->x;
    /* in CYCE_REAL: a half type's logsumexp is float (it would keep three digits) */
    for (int64_t i = first; i < stop; i++) {
        ((CYCE_REAL *)out)[i] = (CYCE_REAL)CYCE_FN(row_logsumexp)(x + i * n, n);
    }
}

/* softmax or log_softmax of rows into rows->grad (which may be x).  A row
 * holding NaN or +inf, or only -inf, is NaN throughout: its sum is NaN. */
static void CYCE_FN(softmax_task)(const cyce_rows *rows, int log_space, void *scratch,
                                  int64_t first, int64_t stop)
{
    const int64_t n = rows->n_classes;
    double factor[CYCE_ONLINE_MAX_BLOCKS];
    for (int64_t i = first; i < stop; i++) {
        const CYCE_STORE *x = (const CYCE_STORE *)rows->x + i * n;
        CYCE_GRAD *out = (CYCE_GRAD *)rows->grad + i * n;
        CYCE_REAL *exps = CYCE_EXPS_IN_GRAD ? (CYCE_REAL *)out : (CYCE_REAL *)scratch;
        CYCE_REAL m;
        if (log_space) {
            double total_m1 = CYCE_FN(row_blocked_exp_sum_m1)(x, NULL, n, &m, factor);
            CYCE_FN(cyce_row_sub2)(x, out, n, m, (CYCE_REAL)log1p(total_m1));
        } else {
            double total_m1 = CYCE_FN(row_blocked_exp_sum_m1)(x, exps, n, &m, factor);
            CYCE_FN(cyce_row_blocked_scale_sub)(exps, out, NULL, n, factor,
                                                1.0 / (1.0 + total_m1), 0);
        }
    }
}

/* ---- softmax cross entropy against integer labels ---- */

/* The waiting row's scaling (grad is pending->grad), in a pass of its own:
 * for a task's last row, or before a row that takes no exps. */
static inline void CYCE_FN(finish_deferred)(CYCE_GRAD *grad, cyce_deferred *pending, int64_t n)
{
    if (grad == NULL) {
        return;
    }
    CYCE_FN(cyce_row_blocked_scale_sub)((const CYCE_REAL *)pending->exps, grad, NULL, n,
                                        pending->factor, pending->exp_scale,
                                        (CYCE_REAL)pending->weight_scale);
    grad[pending->label] = CYCE_TO_GRAD((CYCE_REAL)pending->label_grad);
    pending->grad = NULL;
}

/* One row with label smoothing where it does not go block by block
 * (CYCE_ONE_PASS_SMOOTHING): the max first (the smoothing sum
 * sum_c w_c (x_c - max) needs it), then the exps and sum, then the scaling. */
static inline double CYCE_FN(row_softmax_ce_hard_smoothed)(
    const CYCE_STORE *x, CYCE_GRAD *grad, CYCE_REAL *exps, int64_t n, int64_t label,
    double row_weight, cyce_ce_opts opts)
{
    CYCE_REAL m = CYCE_FN(cyce_row_max)(x, n);
    double smooth_shifted = CYCE_FN(cyce_row_sum_shifted)(x, opts.class_weight, n, m);
    double label_shifted = (double)CYCE_LOAD(x[label]) - (double)m;
    double total_m1 = CYCE_FN(row_exp_sum_m1)(x, exps, n, m, NULL, 0);
    cyce_hard_row row = {m, total_m1, label_shifted,
                         grad == NULL ? 0.0 : cyce_label_exp_m1(label_shifted, exps[label]),
                         opts.class_weight == NULL ? 1.0 : opts.class_weight[label],
                         smooth_shifted, row_weight};
    cyce_hard_terms terms = cyce_softmax_ce_hard_terms(n, row, opts);
    if (grad != NULL) {
        CYCE_FN(cyce_row_scale_sub)(exps, grad, opts.class_weight, n, (CYCE_REAL)terms.exp_scale,
                                    (CYCE_REAL)terms.weight_scale);
        grad[label] = CYCE_TO_GRAD((CYCE_REAL)terms.label_grad);
    }
    return terms.loss;
}

/* One row (the formulas: cyce_softmax_ce_hard_terms).  Returns its loss
 * times its sample weight; writes its gradient times grad_scale into grad
 * unless NULL (grad may be x: every read of x comes before or in the pass
 * that writes over it).
 *
 * The row goes block by block in one pass over memory (with label
 * smoothing where CYCE_ONE_PASS_SMOOTHING, its sum taken on the way), its
 * last block taking the max of the next row's first block when fuse_next
 * (*carried says whether *carried_max holds this row's first block max on
 * entry, the next row's on return).  The gradient's scaling pass (a
 * multiply per vector) leaves the vector units idle, so the row waiting in
 * *pending is scaled during this row's exps, and with defer this row's
 * scaling waits in turn (factor must then outlive the call, and not be
 * pending's). */
static inline double CYCE_FN(row_softmax_ce_hard)(
    const CYCE_STORE *x, CYCE_GRAD *grad, CYCE_REAL *exps, int64_t n, int64_t label,
    double row_weight, cyce_ce_opts opts, CYCE_REAL *carried_max, int *carried, int fuse_next,
    double *factor, cyce_deferred *pending, int defer)
{
    const int smoothing = opts.label_smoothing != 0.0;
    if (smoothing && (!CYCE_ONE_PASS_SMOOTHING || opts.class_weight != NULL)) {
        *carried = 0;
        return CYCE_FN(row_softmax_ce_hard_smoothed)(x, grad, exps, n, label, row_weight, opts);
    }
    CYCE_REAL m;
    double label_x = CYCE_LOAD(x[label]), smooth_shifted = 0.0;
    CYCE_REAL *prev = pending->grad == NULL ? NULL : (CYCE_REAL *)pending->exps;
    double total_m1 = CYCE_FN(cyce_row_blocked_exp_sum_m1)(
        x, exps, n, carried_max, *carried, fuse_next, &m, factor, prev,
        (CYCE_GRAD *)pending->grad, pending->factor, pending->exp_scale,
        (CYCE_REAL)pending->weight_scale,
        CYCE_ONE_PASS_SMOOTHING && smoothing ? &smooth_shifted : NULL);
    int64_t block = CYCE_FN(cyce_online_block)(n);
    if (prev != NULL) {
        ((CYCE_GRAD *)pending->grad)[pending->label] = CYCE_TO_GRAD((CYCE_REAL)pending->label_grad);
        pending->grad = NULL;
    }
    *carried = fuse_next;
    double label_shifted = label_x - (double)m;
    cyce_hard_row row = {m, total_m1, label_shifted,
                         grad == NULL ? 0.0 : cyce_label_exp_m1(
                             label_shifted, (double)exps[label] * factor[label / block]),
                         opts.class_weight == NULL ? 1.0 : opts.class_weight[label],
                         smooth_shifted, row_weight};
    cyce_hard_terms terms = cyce_softmax_ce_hard_terms(n, row, opts);
    if (grad != NULL) {
        pending->grad = grad;
        pending->exps = exps;
        pending->factor = factor;
        pending->exp_scale = terms.exp_scale;
        pending->weight_scale = terms.weight_scale;
        pending->label = label;
        pending->label_grad = terms.label_grad;
        if (!defer) {
            CYCE_FN(finish_deferred)(grad, pending, n);
        }
    }
    return terms.loss;
}

/* Rows first..stop (at most CYCE_TILE): a tile of short rows, or longer
 * rows chained.  Returns the sum of their losses in row order (a plain
 * float64 sum of at most CYCE_TILE terms; the compensated sum is across
 * tasks) and writes each row's loss to rows->row_loss unless NULL. */
static double CYCE_FN(softmax_ce_hard_task)(const cyce_rows *rows, const cyce_ce_opts *options,
                                            void *scratch, int64_t first, int64_t stop)
{
    /* a copy no store through grad can alias: its values stay loop-invariant */
    const cyce_ce_opts opts = *options;
    const int64_t n = rows->n_classes, n_rows = stop - first;
    const CYCE_STORE *x = (const CYCE_STORE *)rows->x + first * n;
    CYCE_GRAD *grad = rows->grad == NULL ? NULL : (CYCE_GRAD *)rows->grad + first * n;
    const int64_t *labels = rows->labels + first;
    const double *row_weight = opts.sample_weight == NULL ? NULL : opts.sample_weight + first;
    double tile_loss[CYCE_TILE];
    if (n > CYCE_SHORT_MAX) {
        CYCE_REAL carried_max = 0;
        int carried = 0;
        /* the block factors of a row and of the one whose scaling waits for it */
        double factors[2][CYCE_ONLINE_MAX_BLOCKS];
        cyce_deferred pending = {NULL, NULL, NULL, 0.0, 0.0, 0, 0.0};
        /* deferring measured faster for rows computed in float only
         * (docs/performance.md#deferred-scaling) */
        int defer = sizeof(CYCE_REAL) == 4
            && n * (int64_t)sizeof(CYCE_REAL) <= CYCE_DEFER_MAX_BYTES;
        for (int64_t r = 0; r < n_rows; r++) {
            if (labels[r] == opts.ignore_index) {
                tile_loss[r] = 0.0;
                carried = 0;
                if (grad != NULL) {
                    CYCE_FN(finish_deferred)((CYCE_GRAD *)pending.grad, &pending, n);
                    memset(grad + r * n, 0, (size_t)n * sizeof(CYCE_GRAD));
                }
            } else {
                CYCE_GRAD *row_grad = grad == NULL ? NULL : grad + r * n;
                /* scratch rows take turns: the waiting row's and this one's */
                CYCE_REAL *exps = CYCE_EXPS_IN_GRAD ? (CYCE_REAL *)row_grad
                    : (grad == NULL ? NULL : (CYCE_REAL *)scratch + (r % 2) * n);
                tile_loss[r] = CYCE_FN(row_softmax_ce_hard)(
                    x + r * n, row_grad, exps, n, labels[r],
                    row_weight == NULL ? 1.0 : row_weight[r], opts, &carried_max, &carried,
                    r + 1 < n_rows, factors[r % 2], &pending, defer && r + 1 < n_rows);
            }
        }
    } else if (opts.class_weight == NULL && row_weight == NULL
               && opts.label_smoothing == 0.0 && opts.z_loss == 0.0) {
        CYCE_FN(cyce_tile_softmax_ce_hard_plain)(x, grad, n_rows, n, labels, opts.ignore_index,
                                                 opts.grad_scale, tile_loss);
    } else {
        CYCE_FN(cyce_tile_softmax_ce_hard_general)(x, grad, n_rows, n, labels, row_weight,
                                                   &opts, tile_loss);
    }
    double total = 0.0;
    for (int64_t r = 0; r < n_rows; r++) {
        total += tile_loss[r];
    }
    if (rows->row_loss != NULL) {
        memcpy(rows->row_loss + first, tile_loss, (size_t)n_rows * sizeof(double));
    }
#ifdef CYCE_TASK_FENCE
    CYCE_TASK_FENCE();
#endif
    return total;
}

/* ---- softmax cross entropy against probabilities ---- */

/* wt (x_c - m) where wt != 0, else 0.  For float and double rows the
 * product is taken for every class and then selected: with x_c loaded under
 * the test GCC kept the loop's sums in memory, a store and a reload per
 * vector.  A half type's row keeps the load under the test: vectorised, its
 * conversions took some 30 KB of code per level. */
#if CYCE_NATIVE
static inline __attribute__((always_inline)) CYCE_REAL CYCE_FN(selected_term)(CYCE_REAL wt,
                                                                           CYCE_REAL xc,
                                                                           CYCE_REAL m)
{
    CYCE_REAL term = wt * (xc - m);
    return wt != 0 ? term : 0;
}
#define CYCE_MASS_TERM(wt, xc, m) CYCE_FN(selected_term)(wt, CYCE_LOAD(xc), m)
#else
#define CYCE_MASS_TERM(wt, xc, m) ((wt) != 0 ? (wt) * (CYCE_LOAD(xc) - (m)) : 0)
#endif

/* One row against t smoothed to t' = (1-e) t + e/C:
 * loss = sum_c w_c t'_c (lse - x_c) + z lse^2, grad = (sum_c w_c t'_c +
 * 2 z lse) p - w t'.  A class with t'_c = 0 adds 0 even where x_c = -inf
 * (0 log 0 = 0).  grad may be x (all reads of x come first).  Unless last
 * (the task's last row), the next row's targets follow this row's. */
static inline __attribute__((always_inline)) double CYCE_FN(row_softmax_ce_soft)(
    const CYCE_STORE *x, CYCE_GRAD *grad, CYCE_REAL *exps, int64_t n, const void *target,
    int target_f64, double row_weight, cyce_ce_opts opts, int last)
{
    CYCE_REAL m = CYCE_FN(cyce_row_max)(x, n);
    const double *class_weight = opts.class_weight;
    /* t' and its terms in the row's arithmetic (float for float32 rows:
     * GCC's double vectors took twice the instructions), summed a
     * CYCE_BLOCK at a time, the block sums in double */
    const CYCE_REAL uniform = (CYCE_REAL)(opts.label_smoothing / n);
    const CYCE_REAL keep = (CYCE_REAL)(1.0 - opts.label_smoothing);
    double mass = 0.0;          /* sum_c w_c t'_c */
    double mass_shifted = 0.0;  /* sum_c w_c t'_c (x_c - max), each term <= 0 */
    for (int64_t start = 0; start < n; start += CYCE_BLOCK) {
        int64_t stop = start + CYCE_BLOCK < n ? start + CYCE_BLOCK : n;
        CYCE_REAL block_mass = 0, block_shifted = 0;
        if (class_weight == NULL) {
#pragma omp simd reduction(+:block_mass, block_shifted)
            for (int64_t c = start; c < stop; c++) {
                CYCE_REAL wt = keep * (CYCE_REAL)CYCE_TARGET(target, target_f64, c) + uniform;
                /* a class of no mass adds 0, also where x_c = -inf */
                block_mass += wt;
                block_shifted += CYCE_MASS_TERM(wt, x[c], m);
            }
        } else {
#pragma omp simd reduction(+:block_mass, block_shifted)
            for (int64_t c = start; c < stop; c++) {
                CYCE_REAL wt = (keep * (CYCE_REAL)CYCE_TARGET(target, target_f64, c) + uniform)
                    * (CYCE_REAL)class_weight[c];
                block_mass += wt;
                block_shifted += CYCE_MASS_TERM(wt, x[c], m);
            }
        }
        mass += (double)block_mass;
        mass_shifted += (double)block_shifted;
    }
    /* the next row's targets too: this row's loop over them waited on DRAM */
    const int64_t target_size = target_f64 ? 8 : 4;
    double total_m1 = CYCE_FN(row_exp_sum_m1)(x, exps, n, m,
                                              last ? NULL : (const char *)target + n * target_size,
                                              target_size);
    double total = 1.0 + total_m1;
    double log_total = log1p(total_m1);
    double lse = (double)m + log_total;
    if (grad != NULL) {
        double coef = row_weight * opts.grad_scale;
        CYCE_REAL exp_scale = (CYCE_REAL)(coef * (mass + 2.0 * opts.z_loss * lse) / total);
        CYCE_REAL coef_real = (CYCE_REAL)coef;
        /* one pass, a half type's gradient rounded once from both terms */
        if (class_weight == NULL) {
#pragma omp simd
            for (int64_t c = 0; c < n; c++) {
                CYCE_REAL wt = keep * (CYCE_REAL)CYCE_TARGET(target, target_f64, c) + uniform;
                grad[c] = CYCE_TO_GRAD(exps[c] * exp_scale - coef_real * wt);
            }
        } else {
#pragma omp simd
            for (int64_t c = 0; c < n; c++) {
                CYCE_REAL wt = (keep * (CYCE_REAL)CYCE_TARGET(target, target_f64, c) + uniform)
                    * (CYCE_REAL)class_weight[c];
                grad[c] = CYCE_TO_GRAD(exps[c] * exp_scale - coef_real * wt);
            }
        }
    }
    return row_weight * (mass * log_total - mass_shifted + opts.z_loss * lse * lse);
}

#undef CYCE_MASS_TERM

static void CYCE_FN(softmax_ce_soft_task)(const cyce_rows *rows, const cyce_ce_opts *options,
                                          void *scratch, int64_t first, int64_t stop)
{
    const cyce_ce_opts opts = *options;
    const int64_t n = rows->n_classes;
    for (int64_t i = first; i < stop; i++) {
        const CYCE_STORE *x = (const CYCE_STORE *)rows->x + i * n;
        CYCE_GRAD *grad = rows->grad == NULL ? NULL : (CYCE_GRAD *)rows->grad + i * n;
        CYCE_REAL *exps = CYCE_EXPS_IN_GRAD || grad == NULL ? (CYCE_REAL *)grad
                                                            : (CYCE_REAL *)scratch;
        double row_weight = opts.sample_weight == NULL ? 1.0 : opts.sample_weight[i];
        int last = i + 1 == stop;
        rows->row_loss[i] = rows->targets_f64
            ? CYCE_FN(row_softmax_ce_soft)(x, grad, exps, n, (const double *)rows->targets + i * n,
                                           1, row_weight, opts, last)
            : CYCE_FN(row_softmax_ce_soft)(x, grad, exps, n, (const float *)rows->targets + i * n,
                                           0, row_weight, opts, last);
    }
}

/* ---- the binary family, element by element ---- */

/* Elements start..stop of the flattened array: returns the sum of their
 * (weighted) losses; writes each one's loss to loss_out and its gradient
 * times grad_scale to grad, unless NULL. */
static inline __attribute__((always_inline)) double CYCE_FN(binary_span)(
    const cyce_elements *el, int kind, int target_f64, int64_t start, int64_t stop)
{
    const CYCE_STORE *values = (const CYCE_STORE *)el->values;
    CYCE_GRAD *grad = (CYCE_GRAD *)el->grad;
    /* the losses and weights of a half type are float */
    CYCE_REAL *loss_out = (CYCE_REAL *)el->loss_out;
    int64_t row = start / el->n_classes;
    int64_t col = start - row * el->n_classes;
    double total = 0.0;
    for (int64_t i = start; i < stop; i++) {
        double w = el->weight == NULL ? 1.0 : *(const CYCE_REAL *)(
            el->weight + row * el->weight_strides[0] + col * el->weight_strides[1]);
        cyce_loss_grad element;
        if (kind == CYCE_SIGMOID_BCE) {
            double pw = el->pos_weight == NULL ? 1.0
                : *(const CYCE_REAL *)(el->pos_weight + col * el->pos_weight_stride);
            element = cyce_elem_sigmoid_bce(CYCE_LOAD(values[i]),
                                            CYCE_TARGET(el->targets, target_f64, i), pw);
        } else {
            element = cyce_elem_probability_bce(CYCE_LOAD(values[i]),
                                                CYCE_TARGET(el->targets, target_f64, i));
        }
        total = total + w * element.loss;
        if (loss_out != NULL) {
            loss_out[i] = (CYCE_REAL)(w * element.loss);
        }
        if (grad != NULL) {
            grad[i] = CYCE_TO_GRAD((CYCE_REAL)(w * element.grad * el->grad_scale));
        }
        col = col + 1;
        if (col == el->n_classes) {
            col = 0;
            row = row + 1;
        }
    }
    return total;
}

static double CYCE_FN(binary_task)(const cyce_elements *el, int kind, int64_t start, int64_t stop)
{
    if (kind == CYCE_SIGMOID_BCE) {
        return el->targets_f64 ? CYCE_FN(binary_span)(el, CYCE_SIGMOID_BCE, 1, start, stop)
                               : CYCE_FN(binary_span)(el, CYCE_SIGMOID_BCE, 0, start, stop);
    }
    return el->targets_f64 ? CYCE_FN(binary_span)(el, CYCE_PROBABILITY_BCE, 1, start, stop)
                           : CYCE_FN(binary_span)(el, CYCE_PROBABILITY_BCE, 0, start, stop);
}

/* ---- categorical cross entropy on probabilities ---- */

/* -w log(max(p_y, eps)) for a row against class index y; gradient -w / p_y
 * at the label where p_y >= eps (0 where clipped: the clip's derivative),
 * 0 elsewhere. */
static inline double CYCE_FN(row_categorical_ce_label)(const CYCE_STORE *probs, CYCE_GRAD *grad,
                                                       int64_t n, int64_t label, double weight,
                                                       double eps, double grad_scale)
{
    double p = CYCE_LOAD(probs[label]);
    if (grad != NULL) {
        memset(grad, 0, (size_t)n * sizeof(CYCE_GRAD));
        grad[label] = CYCE_TO_GRAD((CYCE_REAL)(p >= eps ? -weight / p * grad_scale : 0.0));
    }
    return -weight * log(fmax(p, eps));
}

/* -sum_c w_c y_c log(max(p_c, eps)) for a row against targets y; a class
 * with y_c = 0 adds 0 (also where p_c = 0).  Gradient -w_c y_c / p_c where
 * p_c >= eps, else 0. */
static inline __attribute__((always_inline)) double CYCE_FN(row_categorical_ce_soft)(
    const CYCE_STORE *probs, CYCE_GRAD *grad, int64_t n, const void *target, int target_f64,
    const double *class_weight, double eps, double grad_scale)
{
    double loss = 0.0;
    for (int64_t c = 0; c < n; c++) {
        double p = CYCE_LOAD(probs[c]);
        double wy = class_weight == NULL ? CYCE_TARGET(target, target_f64, c)
                                         : class_weight[c] * CYCE_TARGET(target, target_f64, c);
        if (wy != 0.0) {
            loss = loss - wy * log(fmax(p, eps));
        }
        if (grad != NULL) {
            grad[c] = CYCE_TO_GRAD((CYCE_REAL)((wy != 0.0 && p >= eps) ? -wy / p * grad_scale : 0.0));
        }
    }
    return loss;
}

/* Categorical cross entropy of rows first..stop against class indices
 * (rows->labels) or probabilities (rows->targets); an ignored row costs 0
 * and gets a zero gradient. */
static void CYCE_FN(categorical_ce_task)(const cyce_rows *rows, const cyce_ce_opts *opts,
                                         double eps, int64_t first, int64_t stop)
{
    const int64_t n = rows->n_classes;
    const double *class_weight = opts->class_weight;
    for (int64_t i = first; i < stop; i++) {
        const CYCE_STORE *probs = (const CYCE_STORE *)rows->x + i * n;
        CYCE_GRAD *grad = rows->grad == NULL ? NULL : (CYCE_GRAD *)rows->grad + i * n;
        double loss;
        if (rows->labels == NULL) {
            loss = rows->targets_f64
                ? CYCE_FN(row_categorical_ce_soft)(probs, grad, n, (const double *)rows->targets + i * n,
                                                   1, class_weight, eps, opts->grad_scale)
                : CYCE_FN(row_categorical_ce_soft)(probs, grad, n, (const float *)rows->targets + i * n,
                                                   0, class_weight, eps, opts->grad_scale);
        } else if (rows->labels[i] == opts->ignore_index) {
            loss = 0.0;
            if (grad != NULL) {
                memset(grad, 0, (size_t)n * sizeof(CYCE_GRAD));
            }
        } else {
            int64_t label = rows->labels[i];
            loss = CYCE_FN(row_categorical_ce_label)(
                probs, grad, n, label, class_weight == NULL ? 1.0 : class_weight[label], eps,
                opts->grad_scale);
        }
        rows->row_loss[i] = loss;
    }
}

/* ---- the exps, for their tests, and the targets' check (float and double only) ---- */
#if CYCE_NATIVE

static void CYCE_FN(exp_values)(const void *x, void *out, int64_t n)
{
    for (int64_t j = 0; j < n; j++) {
        ((CYCE_REAL *)out)[j] = CYCE_EXP_ANY(((const CYCE_REAL *)x)[j]);
    }
}

static void CYCE_FN(exp_nonpos_values)(const void *x, void *out, int64_t n)
{
    CYCE_FN(cyce_exp_nonpos_values)((const CYCE_REAL *)x, (CYCE_REAL *)out, n);
}

static void CYCE_FN(span_exp_sum_count)(const void *x, void *out, int64_t n, double shift,
                                        double top, double *sum, double *count)
{
    CYCE_REAL s = 0, c = 0;
    CYCE_FN(cyce_span_exp_sum_count)((const CYCE_REAL *)x, (CYCE_REAL *)out, 0, n,
                                     (CYCE_REAL)shift, (CYCE_REAL)top, &s, &c);
    *sum = s;
    *count = c;
}

/* The first of t[0:n] outside [0, 1] (NaN included), or -1: the targets'
 * check before a call writes anything, one pass at memory speed.  Each chunk
 * is tested without a branch (the level's vectors: the module's own code is
 * compiled for any x86-64), and only a chunk found bad is searched again. */
static int64_t CYCE_FN(first_bad_probability)(const void *values, int64_t n)
{
    const CYCE_STORE *t = (const CYCE_STORE *)values;
    const int64_t chunk = 16384;
    for (int64_t start = 0; start < n; start += chunk) {
        int64_t stop = start + chunk < n ? start + chunk : n;
        int bad = 0;
#pragma omp simd reduction(|:bad)
        for (int64_t i = start; i < stop; i++) {
            bad |= !(t[i] >= 0) | !(t[i] <= 1);
        }
        if (bad) {
            for (int64_t i = start; i < stop; i++) {
                if (!(t[i] >= 0 && t[i] <= 1)) {
                    return i;
                }
            }
        }
    }
    return -1;
}
#endif

/* static, unless the includer exports it under a name of its own */
#ifdef CYCE_TABLE_NAME
const cyce_dtype_kernels CYCE_TABLE_NAME(CYCE_SUFFIX) = {
#else
static const cyce_dtype_kernels CYCE_FN(cyce_kernels) = {
#endif
    CYCE_EXPS_IN_GRAD ? 0 : sizeof(CYCE_REAL),
    CYCE_FN(logsumexp_task),
    CYCE_FN(softmax_task),
    CYCE_FN(softmax_ce_hard_task),
    CYCE_FN(softmax_ce_soft_task),
    CYCE_FN(binary_task),
    CYCE_FN(categorical_ce_task),
#if CYCE_NATIVE
    CYCE_FN(exp_values),
    CYCE_FN(exp_nonpos_values),
    CYCE_FN(span_exp_sum_count),
    CYCE_FN(first_bad_probability),
#else
    NULL,
    NULL,
    NULL,
    NULL,
#endif
};

#undef CYCE_FN
#undef CYCE_CAT
#undef CYCE_CAT_
