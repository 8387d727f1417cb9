/*
 * The kernels of mapped logits for one pair of dtypes (input, gradient):
 * cyce_stats.c includes this file once per pair, with the macros of
 * cyce_rows_template.h, CYCE_TANH_SECH2 (cyce_exp.h's, for CYCE_REAL) and
 * CYCE_REAL_SUFFIX, the suffix of cyce_rows.h's float or double row loops,
 * which run here over rows already mapped into CYCE_REAL.
 *
 * The map: z = c tanh(x / c) / T with a softcap c, else z = x / T; a -inf
 * logit stays -inf (a masked class stays masked).  Its slope is
 * sech(x / c)**2 / T, or 1 / T.
 */
#define CYCE_CAT_(a, b) a##_##b
#define CYCE_CAT(a, b) CYCE_CAT_(a, b)
#define CYCE_FN(name) CYCE_CAT(name, CYCE_SUFFIX)
#define CYCE_REAL_FN(name) CYCE_CAT(name, CYCE_REAL_SUFFIX)

/* One logit mapped, its slope into *slope.  softcap is a constant where
 * this is inlined, so each loop below keeps only its own arithmetic. */
static inline __attribute__((always_inline)) CYCE_REAL CYCE_FN(mapped_logit)(
    CYCE_REAL v, int softcap, CYCE_REAL inv_cap, CYCE_REAL scale, CYCE_REAL inv_temperature,
    CYCE_REAL *slope)
{
    if (!softcap) {
        *slope = inv_temperature;
        return v * scale;
    }
    CYCE_REAL sech2;
    CYCE_REAL t = CYCE_TANH_SECH2(v * inv_cap, &sech2);
    *slope = sech2 * inv_temperature;
    return v == -INFINITY ? v : scale * t;
}

/* z[j] = the map of x[j] for j < n, and where slope is not NULL the map's
 * slope there; returns max(z) (-inf for an all -inf row; a NaN may or may
 * not win, and reaches the sum of exp instead). */
static inline CYCE_REAL CYCE_FN(map_row)(const CYCE_STORE *x, CYCE_REAL *z, CYCE_REAL *slope,
                                         int64_t n, const cyce_ce_opts *opts)
{
    const CYCE_REAL inv_temperature = (CYCE_REAL)(1.0 / opts->temperature);
    CYCE_REAL m = -INFINITY, s;
    if (opts->logit_softcap == 0.0) {
#pragma omp simd reduction(max:m)
        for (int64_t j = 0; j < n; j++) {
            CYCE_REAL v = CYCE_FN(mapped_logit)(CYCE_LOAD(x[j]), 0, 0, inv_temperature,
                                                inv_temperature, &s);
            z[j] = v;
            m = v > m ? v : m;
        }
        return m;
    }
    const CYCE_REAL inv_cap = (CYCE_REAL)(1.0 / opts->logit_softcap);
    const CYCE_REAL scale = (CYCE_REAL)(opts->logit_softcap / opts->temperature);
    if (slope == NULL) {
#pragma omp simd reduction(max:m)
        for (int64_t j = 0; j < n; j++) {
            CYCE_REAL v = CYCE_FN(mapped_logit)(CYCE_LOAD(x[j]), 1, inv_cap, scale,
                                                inv_temperature, &s);
            z[j] = v;
            m = v > m ? v : m;
        }
    } else {
#pragma omp simd reduction(max:m)
        for (int64_t j = 0; j < n; j++) {
            CYCE_REAL v = CYCE_FN(mapped_logit)(CYCE_LOAD(x[j]), 1, inv_cap, scale,
                                                inv_temperature, &slope[j]);
            z[j] = v;
            m = v > m ? v : m;
        }
    }
    return m;
}

/* grad[j] = (e[j] * a - b * w[j]) * slope[j], the gradient of z carried
 * back through the map (w NULL: all ones; slope NULL: all
 * inv_temperature), rounded once into grad's dtype. */
static inline void CYCE_FN(chain_store)(const CYCE_REAL *e, const CYCE_REAL *slope,
                                        CYCE_GRAD *grad, const double *w, int64_t n,
                                        CYCE_REAL a, double b, CYCE_REAL inv_temperature)
{
    const CYCE_REAL b_real = (CYCE_REAL)b;
    if (w == NULL && slope == NULL) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            grad[j] = CYCE_TO_GRAD((e[j] * a - b_real) * inv_temperature);
        }
    } else if (w == NULL) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            grad[j] = CYCE_TO_GRAD((e[j] * a - b_real) * slope[j]);
        }
    } else {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            CYCE_REAL g = e[j] * a - (CYCE_REAL)(b * w[j]);
            grad[j] = CYCE_TO_GRAD(g * (slope == NULL ? inv_temperature : slope[j]));
        }
    }
}

/* ---- softmax cross entropy of mapped logits ----
 * A row is mapped into the thread's scratch (z, and its slope where a
 * gradient is written), then the row loops of the unmapped kernels run over
 * z (in cache), the exps written over z, and the gradient of z is carried
 * back through the slope into grad (which may be x: x is read only by the
 * map). */

/* One row against its label: returns its loss times its sample weight
 * (cyce_softmax_ce_hard_terms' formulas, in z). */
static inline double CYCE_FN(row_softmax_ce_hard_mapped)(
    const CYCE_STORE *x, CYCE_GRAD *grad, CYCE_REAL *z, CYCE_REAL *slope, int64_t n,
    int64_t label, double row_weight, const cyce_ce_opts *opts)
{
    int softcap = opts->logit_softcap != 0.0;
    CYCE_REAL m = CYCE_FN(map_row)(x, z, grad != NULL && softcap ? slope : NULL, n, opts);
    double smooth_shifted = opts->label_smoothing == 0.0 ? 0.0
        : CYCE_REAL_FN(cyce_row_sum_shifted)(z, opts->class_weight, n, m);
    double label_shifted = (double)z[label] - (double)m;
    double total_m1 = CYCE_REAL_FN(cyce_row_exp_sum_m1)(z, grad == NULL ? NULL : z, n, m, NULL);
    cyce_hard_row row = {m, total_m1, label_shifted,
                         grad == NULL ? 0.0 : cyce_label_exp_m1(label_shifted, z[label]),
                         opts->class_weight == NULL ? 1.0 : opts->class_weight[label],
                         smooth_shifted, row_weight};
    cyce_hard_terms terms = cyce_softmax_ce_hard_terms(n, row, *opts);
    if (grad != NULL) {
        CYCE_REAL inv_temperature = (CYCE_REAL)(1.0 / opts->temperature);
        CYCE_REAL label_slope = softcap ? slope[label] : inv_temperature;
        CYCE_FN(chain_store)(z, softcap ? slope : NULL, grad, opts->class_weight, n,
                             (CYCE_REAL)terms.exp_scale, terms.weight_scale, inv_temperature);
        grad[label] = CYCE_TO_GRAD((CYCE_REAL)(terms.label_grad * (double)label_slope));
    }
    return terms.loss;
}

/* One row against probabilities t smoothed to t' = (1-e) t + e/C
 * (row_softmax_ce_soft's formulas, in z). */
static inline __attribute__((always_inline)) double CYCE_FN(row_softmax_ce_soft_mapped)(
    const CYCE_STORE *x, CYCE_GRAD *grad, CYCE_REAL *z, CYCE_REAL *slope, int64_t n,
    const void *target, int target_f64, double row_weight, const cyce_ce_opts *opts)
{
    int softcap = opts->logit_softcap != 0.0;
    CYCE_REAL m = CYCE_FN(map_row)(x, z, grad != NULL && softcap ? slope : NULL, n, opts);
    const double *class_weight = opts->class_weight;
    double uniform = opts->label_smoothing / n, keep = 1.0 - opts->label_smoothing;
    double mass = 0.0, mass_shifted = 0.0;   /* sum_c w_c t'_c, and times (z_c - max) <= 0 */
    for (int64_t c = 0; c < n; c++) {
        double wt = keep * CYCE_TARGET(target, target_f64, c) + uniform;
        wt = class_weight == NULL ? wt : wt * class_weight[c];
        if (wt != 0.0) {
            mass = mass + wt;
            mass_shifted = mass_shifted + wt * ((double)z[c] - (double)m);
        }
    }
    double total_m1 = CYCE_REAL_FN(cyce_row_exp_sum_m1)(z, grad == NULL ? NULL : z, n, m, NULL);
    double log_total = cyce_log1p_nonneg(total_m1);
    double lse = (double)m + log_total;
    if (grad != NULL) {
        CYCE_REAL inv_temperature = (CYCE_REAL)(1.0 / opts->temperature);
        double coef = row_weight * opts->grad_scale;
        CYCE_REAL exp_scale = (CYCE_REAL)(coef * (mass + 2.0 * opts->z_loss * lse)
                                          / (1.0 + total_m1));
        for (int64_t c = 0; c < n; c++) {
            double wt = keep * CYCE_TARGET(target, target_f64, c) + uniform;
            wt = class_weight == NULL ? wt : wt * class_weight[c];
            CYCE_REAL g = z[c] * exp_scale - (CYCE_REAL)(coef * wt);
            grad[c] = CYCE_TO_GRAD(g * (softcap ? slope[c] : inv_temperature));
        }
    }
    double loss = mass * log_total - mass_shifted;
    return row_weight * (opts->z_loss != 0.0 ? loss + opts->z_loss * lse * lse : loss);
}

/* Rows first..stop against labels: returns the sum of their losses in row
 * order, and writes each one's to rows->row_loss unless NULL. */
static double CYCE_FN(softmax_ce_hard_mapped_task)(const cyce_rows *rows,
                                                   const cyce_ce_opts *options, void *scratch,
                                                   int64_t first, int64_t stop)
{
    const cyce_ce_opts opts = *options;
    const int64_t n = rows->n_classes;
    CYCE_REAL *z = (CYCE_REAL *)scratch, *slope = z + n;
    double total = 0.0;
    for (int64_t i = first; i < stop; i++) {
        const CYCE_STORE *x = (const CYCE_STORE *)rows->x + i * n;
        CYCE_GRAD *grad = rows->grad == NULL ? NULL : (CYCE_GRAD *)rows->grad + i * n;
        double loss = 0.0;
        if (rows->labels[i] == opts.ignore_index) {
            if (grad != NULL) {
                memset(grad, 0, (size_t)n * sizeof(CYCE_GRAD));
            }
        } else {
            loss = CYCE_FN(row_softmax_ce_hard_mapped)(
                x, grad, z, slope, n, rows->labels[i],
                opts.sample_weight == NULL ? 1.0 : opts.sample_weight[i], &opts);
        }
        if (rows->row_loss != NULL) {
            rows->row_loss[i] = loss;
        }
        total += loss;
    }
    return total;
}

/* Rows first..stop against probabilities: each row's loss to rows->row_loss. */
static void CYCE_FN(softmax_ce_soft_mapped_task)(const cyce_rows *rows,
                                                 const cyce_ce_opts *options, void *scratch,
                                                 int64_t first, int64_t stop)
{
    const cyce_ce_opts opts = *options;
    const int64_t n = rows->n_classes;
    CYCE_REAL *z = (CYCE_REAL *)scratch, *slope = z + n;
    for (int64_t i = first; i < stop; i++) {
        const CYCE_STORE *x = (const CYCE_STORE *)rows->x + i * n;
        CYCE_GRAD *grad = rows->grad == NULL ? NULL : (CYCE_GRAD *)rows->grad + i * n;
        double row_weight = opts.sample_weight == NULL ? 1.0 : opts.sample_weight[i];
        rows->row_loss[i] = rows->targets_f64
            ? CYCE_FN(row_softmax_ce_soft_mapped)(x, grad, z, slope, n,
                                                  (const double *)rows->targets + i * n, 1,
                                                  row_weight, &opts)
            : CYCE_FN(row_softmax_ce_soft_mapped)(x, grad, z, slope, n,
                                                  (const float *)rows->targets + i * n, 0,
                                                  row_weight, &opts);
    }
}

/* ---- softmax_stats: a row's statistics in one pass over memory ----
 *
 * A row goes CYCE_STATS_BLOCK elements at a time: the block is read from
 * memory once, mapped into a buffer in L1 (its max, the raw logits' max and
 * its NaNs on the way), then its exps taken against the block's max, with
 * rest (the exps, the terms equal to the max counted apart, as in
 * cyce_row_exp_sum_m1) and s1 = sum e (z - block max) <= 0.  The blocks
 * merge into the row's sums against the running max, rescaled by
 * exp(old max - new max) when it grows.  Then
 *   lse = max + log(total),  entropy = log(total) - s1 / total,
 * both terms of the entropy >= 0 (no cancellation, also for a confident
 * row), and logprob = (z_label - max) - log(total). */

/* The running sums of a row: total - 1 and s1, against max. */
typedef struct {
    double max;
    double total_m1;
    double s1;
} CYCE_FN(cyce_stats_sums);

/* One block's pass from memory: buf[j] = the map of x[j]; returns the max
 * of buf, and the raw max and the count of NaNs.  mapped and softcap are
 * constants where this is inlined. */
static inline __attribute__((always_inline)) CYCE_REAL CYCE_FN(stats_map_block)(
    const CYCE_STORE *x, CYCE_REAL *buf, int64_t len, int mapped, int softcap,
    CYCE_REAL inv_cap, CYCE_REAL scale, CYCE_REAL *raw_max, CYCE_REAL *nans)
{
    CYCE_REAL m = -INFINITY, xm = -INFINITY, bad = 0, s;
#pragma omp simd reduction(max:m, xm) reduction(+:bad)
    for (int64_t j = 0; j < len; j++) {
        CYCE_REAL v = CYCE_LOAD(x[j]);
        CYCE_REAL zj = mapped ? CYCE_FN(mapped_logit)(v, softcap, inv_cap, scale, 0, &s) : v;
        buf[j] = zj;
        m = zj > m ? zj : m;
        xm = v > xm ? v : xm;
        bad += v != v ? 1 : 0;
    }
    *raw_max = xm;
    *nans = bad;
    return m;
}

/* The block's exps against its max bm (finite, or +inf), merged into sums. */
static inline void CYCE_FN(stats_merge_block)(const CYCE_REAL *buf, int64_t len, CYCE_REAL bm,
                                              CYCE_FN(cyce_stats_sums) *sums)
{
    const CYCE_REAL top = isfinite(bm) ? bm : (CYCE_REAL)NAN;
    double rest = 0.0, count = 0.0, s1 = 0.0;
    for (int64_t start = 0; start < len; start += CYCE_BLOCK) {
        int64_t stop = start + CYCE_BLOCK < len ? start + CYCE_BLOCK : len;
        CYCE_REAL s = 0, c = 0, t = 0;
#pragma omp simd reduction(+:s, c, t)
        for (int64_t j = start; j < stop; j++) {
            CYCE_REAL d = buf[j] - bm;
            CYCE_REAL e = CYCE_EXP(d);
            int is_top = buf[j] == top;
            s += is_top ? 0 : e;
            c += is_top ? 1 : 0;
            t += e > 0 ? e * d : 0;   /* a masked class adds 0, not 0 * -inf */
        }
        rest += (double)s;
        count += (double)c;
        s1 += (double)t;
    }
    double total = rest + count;
    if (bm > sums->max) {
        double shift = sums->max - (double)bm;   /* < 0, or -inf for the first block */
        double f = cyce_exp_nonpos(shift);
        sums->s1 = f == 0.0 ? s1 : f * (sums->s1 + shift * (sums->total_m1 + 1.0)) + s1;
        sums->total_m1 = f * (sums->total_m1 + 1.0) + rest + (count - 1.0);
        sums->max = bm;
    } else if (bm == sums->max) {
        sums->total_m1 += total;
        sums->s1 += s1;
    } else {
        double shift = (double)bm - sums->max;
        double f = cyce_exp_nonpos(shift);
        sums->total_m1 += f * total;
        sums->s1 += f == 0.0 ? 0.0 : f * (s1 + shift * total);
    }
}

/* The statistics of one row (label < 0: no logprob). */
static inline __attribute__((always_inline)) void CYCE_FN(row_softmax_stats)(
    const CYCE_STORE *x, int64_t n, int64_t label, int mapped, int softcap, CYCE_REAL inv_cap,
    CYCE_REAL scale, CYCE_REAL *lse, CYCE_REAL *logprob, CYCE_REAL *entropy, int64_t *argmax)
{
    CYCE_REAL buf[CYCE_STATS_BLOCK];
    CYCE_FN(cyce_stats_sums) sums = {-INFINITY, -1.0, 0.0};
    CYCE_REAL best = -INFINITY, nans = 0, z_label = 0;
    int64_t best_at = 0;
    for (int64_t start = 0; start < n; start += CYCE_STATS_BLOCK) {
        int64_t len = n - start < CYCE_STATS_BLOCK ? n - start : CYCE_STATS_BLOCK;
        CYCE_REAL raw_max, block_nans;
        CYCE_REAL bm = CYCE_FN(stats_map_block)(x + start, buf, len, mapped, softcap, inv_cap,
                                                scale, &raw_max, &block_nans);
        nans += block_nans;
        if (raw_max > best) {
            /* the first index of the raw max: the map may tie what it saturates */
            int64_t j = 0;
            while (CYCE_LOAD(x[start + j]) != raw_max) {
                j++;
            }
            best = raw_max;
            best_at = start + j;
        }
        if (label >= start && label < start + len) {
            z_label = buf[label - start];
        }
        if (bm != -INFINITY) {
            CYCE_FN(stats_merge_block)(buf, len, bm, &sums);
        }
    }
    *argmax = best_at;
    if (nans != 0) {
        /* NaN throughout, and the first NaN's index for the argmax (NumPy's) */
        int64_t j = 0;
        while (CYCE_LOAD(x[j]) == CYCE_LOAD(x[j])) {
            j++;
        }
        *argmax = j;
        *lse = *entropy = (CYCE_REAL)NAN;
        if (logprob != NULL) {
            *logprob = (CYCE_REAL)NAN;
        }
        return;
    }
    if (!isfinite(sums.max)) {
        /* +inf somewhere, or every class masked: lse is that infinity (as in
         * logsumexp), the distribution undefined */
        *lse = (CYCE_REAL)sums.max;
        *entropy = (CYCE_REAL)NAN;
        if (logprob != NULL) {
            *logprob = (CYCE_REAL)NAN;
        }
        return;
    }
    double log_total = cyce_log1p_nonneg(sums.total_m1);
    *lse = (CYCE_REAL)(sums.max + log_total);
    *entropy = (CYCE_REAL)(log_total - sums.s1 / (1.0 + sums.total_m1));
    if (logprob != NULL) {
        *logprob = (CYCE_REAL)(((double)z_label - sums.max) - log_total);
    }
}

static void CYCE_FN(softmax_stats_task)(const cyce_rows *rows, const cyce_ce_opts *opts,
                                        const cyce_stats_out *out, int64_t first, int64_t stop)
{
    const int64_t n = rows->n_classes;
    const int softcap = opts->logit_softcap != 0.0;
    const int mapped = softcap || opts->temperature != 1.0;
    const CYCE_REAL inv_cap = softcap ? (CYCE_REAL)(1.0 / opts->logit_softcap) : 0;
    const CYCE_REAL scale = (CYCE_REAL)((softcap ? opts->logit_softcap : 1.0) / opts->temperature);
    CYCE_REAL *lse = (CYCE_REAL *)out->lse, *logprob = (CYCE_REAL *)out->logprob;
    CYCE_REAL *entropy = (CYCE_REAL *)out->entropy;
    for (int64_t i = first; i < stop; i++) {
        const CYCE_STORE *x = (const CYCE_STORE *)rows->x + i * n;
        int64_t label = rows->labels == NULL ? -1 : rows->labels[i];
        CYCE_REAL *row_logprob = logprob == NULL ? NULL : logprob + i;
        /* one copy of the row loop per map, its constants folded */
        if (!mapped) {
            CYCE_FN(row_softmax_stats)(x, n, label, 0, 0, 0, 1, lse + i, row_logprob,
                                       entropy + i, out->argmax + i);
        } else if (!softcap) {
            CYCE_FN(row_softmax_stats)(x, n, label, 1, 0, 0, scale, lse + i, row_logprob,
                                       entropy + i, out->argmax + i);
        } else {
            CYCE_FN(row_softmax_stats)(x, n, label, 1, 1, inv_cap, scale, lse + i, row_logprob,
                                       entropy + i, out->argmax + i);
        }
    }
}

const cyce_mapped_kernels CYCE_TABLE_NAME(CYCE_SUFFIX) = {
    sizeof(CYCE_REAL),
    CYCE_FN(softmax_stats_task),
    CYCE_FN(softmax_ce_hard_mapped_task),
    CYCE_FN(softmax_ce_soft_mapped_task),
};

#undef CYCE_FN
#undef CYCE_REAL_FN
#undef CYCE_CAT
#undef CYCE_CAT_
