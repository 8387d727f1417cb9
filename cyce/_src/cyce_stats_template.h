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
 * A row goes CYCE_STATS_BLOCK elements at a time, mapped into one of two
 * buffers that stay in L1: while a block's exps are taken (against the
 * block's max: rest, the exps with the terms equal to the max counted
 * apart as in cyce_row_exp_sum_m1, and s1 = sum e (z - block max) <= 0),
 * the next block is read from memory and mapped into the other buffer,
 * its max taken on the way, so that the reads overlap the exps.  The
 * blocks merge into the row's sums against the running max, rescaled by
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

/* A block's sums (rest and count against its max bm, and s1) merged into
 * the row's. */
static inline void CYCE_FN(stats_merge)(CYCE_FN(cyce_stats_sums) *sums, double bm, double rest,
                                        double count, double s1)
{
    double total = rest + count;
    if (bm > sums->max) {
        double shift = sums->max - bm;   /* < 0, or -inf for the first block */
        double f = cyce_exp_nonpos(shift);
        sums->s1 = f == 0.0 ? s1 : f * (sums->s1 + shift * (sums->total_m1 + 1.0)) + s1;
        sums->total_m1 = f * (sums->total_m1 + 1.0) + rest + (count - 1.0);
        sums->max = bm;
    } else if (bm == sums->max) {
        sums->total_m1 += total;
        sums->s1 += s1;
    } else {
        double shift = bm - sums->max;
        double f = cyce_exp_nonpos(shift);
        sums->total_m1 += f * total;
        sums->s1 += f == 0.0 ? 0.0 : f * (s1 + shift * total);
    }
}

/* The block's terms of j: its exp against shift, counted apart where it is
 * the top, and its share of s1 (a masked class adds 0, not 0 * -inf) */
#define CYCE_STATS_TERM(j)                                \
    CYCE_REAL d = cur[j] - shift;                         \
    CYCE_REAL e = CYCE_EXP(d);                            \
    int is_top = cur[j] == top;                           \
    s += is_top ? 0 : e;                                  \
    c += is_top ? 1 : 0;                                  \
    t += e * (d > lowest ? d : lowest)
/* x[j] mapped into out[j], its max into m and the raw max into xm */
#define CYCE_STATS_MAP(x, out, j)                                                      \
    CYCE_REAL v = CYCE_LOAD(x[j]);                                                     \
    CYCE_REAL zj = mapped ? CYCE_FN(mapped_logit)(v, softcap, inv_cap, scale, 0, &sl) : v; \
    out[j] = zj;                                                                       \
    m = zj > m ? zj : m;                                                               \
    xm = v > xm ? v : xm

/* Maps x[0:len] into out: returns its max, and the raw max into *raw_max.
 * mapped and softcap are constants where this is inlined. */
static inline __attribute__((always_inline)) CYCE_REAL CYCE_FN(stats_map)(
    const CYCE_STORE *x, CYCE_REAL *out, int64_t len, int mapped, int softcap,
    CYCE_REAL inv_cap, CYCE_REAL scale, CYCE_REAL *raw_max)
{
    CYCE_REAL m = -INFINITY, xm = -INFINITY, sl;
#pragma omp simd reduction(max:m, xm)
    for (int64_t j = 0; j < len; j++) {
        CYCE_STATS_MAP(x, out, j);
    }
    *raw_max = xm;
    return m;
}

/* The exps of cur[0:len] against bm (-inf: a masked block, whose sums are
 * 0), into *rest, *count, *s1, and meanwhile x_next[0:next_len] (next_len
 * <= len) mapped into nxt, its max into *next_max and its raw max into
 * *next_raw.  The sums run CYCE_BLOCK terms at a time in CYCE_REAL, then
 * in double. */
static inline __attribute__((always_inline)) void CYCE_FN(stats_block)(
    const CYCE_REAL *cur, int64_t len, CYCE_REAL bm, const CYCE_STORE *x_next, CYCE_REAL *nxt,
    int64_t next_len, int mapped, int softcap, CYCE_REAL inv_cap, CYCE_REAL scale,
    CYCE_REAL *next_max, CYCE_REAL *next_raw, double *rest, double *count, double *s1)
{
    const CYCE_REAL shift = bm == -INFINITY ? 0 : bm;
    const CYCE_REAL top = isfinite(bm) ? bm : (CYCE_REAL)NAN;
    const CYCE_REAL lowest = sizeof(CYCE_REAL) == 4 ? -FLT_MAX : -DBL_MAX;
    CYCE_REAL m = -INFINITY, xm = -INFINITY, sl;
    double r = 0.0, n_top = 0.0, t_sum = 0.0;
    for (int64_t start = 0; start < len; start += CYCE_BLOCK) {
        int64_t stop = start + CYCE_BLOCK < len ? start + CYCE_BLOCK : len;
        int64_t fused = next_len < start ? start : (next_len < stop ? next_len : stop);
        CYCE_REAL s = 0, c = 0, t = 0;
#pragma omp simd reduction(+:s, c, t) reduction(max:m, xm)
        for (int64_t j = start; j < fused; j++) {
            CYCE_STATS_TERM(j);
            CYCE_STATS_MAP(x_next, nxt, j);
        }
#pragma omp simd reduction(+:s, c, t)
        for (int64_t j = fused; j < stop; j++) {
            CYCE_STATS_TERM(j);
        }
        r += (double)s;
        n_top += (double)c;
        t_sum += (double)t;
    }
    *next_max = m;
    *next_raw = xm;
    *rest = r;
    *count = n_top;
    *s1 = t_sum;
}

#ifdef CYCE_STATS_VEXP
/* stats_block for unmapped float or double rows, in AVX-512 intrinsics:
 * the exps of the row's own block cur (just read: in cache), no buffer, and
 * the next block's max; cyce_avx512.h's exp (vscalef) and its
 * compare-and-masked-add count, where GCC's version of the loop spent about
 * 1.5 times the vector instructions (docs/performance.md#softmax-stats).
 * The lanes are reduced in a fixed order each CYCE_BLOCK: the sums depend on
 * the row alone. */
static inline __attribute__((always_inline)) void CYCE_FN(stats_block_avx512)(
    const CYCE_REAL *cur, int64_t len, CYCE_REAL bm, const CYCE_REAL *x_next, int64_t next_len,
    CYCE_REAL *next_max, double *rest, double *count, double *s1)
{
    const CYCE_SV vshift = CYCE_SVOP(set1)(bm == -INFINITY ? 0 : bm);
    const CYCE_SV vtop = CYCE_SVOP(set1)(isfinite(bm) ? bm : (CYCE_REAL)NAN);
    const CYCE_SV lowest = CYCE_SVOP(set1)(sizeof(CYCE_REAL) == 4 ? -FLT_MAX : -DBL_MAX);
    const CYCE_SV one = CYCE_SVOP(set1)(1);
    const CYCE_SMASK all = (CYCE_SMASK)~(CYCE_SMASK)0;
    CYCE_SV vm = CYCE_SVOP(set1)(-INFINITY);
    double r = 0.0, others = 0.0, t_sum = 0.0;
#define CYCE_STATS_VTERM(lanes, cv)                                            \
    do {                                                                       \
        CYCE_SV d = CYCE_SVOP(sub)(cv, vshift);                                \
        CYCE_SV e = CYCE_STATS_VEXP(d);                                        \
        CYCE_SMASK other = CYCE_SVCMP(lanes, cv, vtop, _CMP_NEQ_UQ);           \
        vr = CYCE_SVOP(mask_add)(vr, other, vr, e);                            \
        vo = CYCE_SVOP(mask_add)(vo, other, vo, one);                          \
        vt = CYCE_SVOP(mask3_fmadd)(e, CYCE_SVOP(max)(d, lowest), vt, lanes);  \
    } while (0)
    for (int64_t start = 0; start < len; start += CYCE_BLOCK) {
        int64_t stop = start + CYCE_BLOCK < len ? start + CYCE_BLOCK : len;
        int64_t fused = next_len < start ? start : (next_len < stop ? next_len : stop);
        CYCE_SV vr = CYCE_SVOP(setzero)(), vo = CYCE_SVOP(setzero)(), vt = CYCE_SVOP(setzero)();
        int64_t j = start;
        for (; j + CYCE_SLANES <= fused; j += CYCE_SLANES) {
            CYCE_SV cv = CYCE_SVOP(loadu)(cur + j);
            CYCE_STATS_VTERM(all, cv);
            vm = CYCE_SVOP(max)(vm, CYCE_SVOP(loadu)(x_next + j));
        }
        if (j < fused) {
            CYCE_SMASK part = (CYCE_SMASK)((1u << (fused - j)) - 1u);
            vm = CYCE_SVOP(mask_max)(vm, part, vm, CYCE_SVOP(maskz_loadu)(part, x_next + j));
        }
        for (; j + CYCE_SLANES <= stop; j += CYCE_SLANES) {
            CYCE_SV cv = CYCE_SVOP(loadu)(cur + j);
            CYCE_STATS_VTERM(all, cv);
        }
        if (j < stop) {
            CYCE_SMASK tail = (CYCE_SMASK)((1u << (stop - j)) - 1u);
            CYCE_SV cv = CYCE_SVOP(maskz_loadu)(tail, cur + j);
            CYCE_STATS_VTERM(tail, cv);
        }
        r += (double)CYCE_SVOP(reduce_add)(vr);
        others += (double)CYCE_SVOP(reduce_add)(vo);
        t_sum += (double)CYCE_SVOP(reduce_add)(vt);
    }
#undef CYCE_STATS_VTERM
    *next_max = CYCE_SVOP(reduce_max)(vm);
    *rest = r;
    *count = (double)len - others;
    *s1 = t_sum;
}
#endif

/* The first index j < n of x with x[j] == value (which x holds): a
 * vectorised test of 64 at a time first, since this runs each time a block
 * raises the row's max. */
static inline int64_t CYCE_FN(first_equal)(const CYCE_STORE *x, int64_t n, CYCE_REAL value)
{
    int64_t j = 0;
    for (; j + 64 <= n; j += 64) {
        int hit = 0;
#pragma omp simd reduction(|:hit)
        for (int64_t i = 0; i < 64; i++) {
            hit |= CYCE_LOAD(x[j + i]) == value;
        }
        if (hit) {
            break;
        }
    }
    while (CYCE_LOAD(x[j]) != value) {
        j++;
    }
    return j;
}

/* The statistics of one row (label < 0: no logprob). */
static inline __attribute__((always_inline)) void CYCE_FN(row_softmax_stats)(
    const CYCE_STORE *x, int64_t n, int64_t label, int mapped, int softcap, CYCE_REAL inv_cap,
    CYCE_REAL scale, CYCE_REAL *lse, CYCE_REAL *logprob, CYCE_REAL *entropy, int64_t *argmax)
{
    CYCE_REAL bufs[2][CYCE_STATS_BLOCK];
    CYCE_FN(cyce_stats_sums) sums = {-INFINITY, -1.0, 0.0};
    CYCE_REAL raw, z_label = 0;
    int64_t len = n < CYCE_STATS_BLOCK ? n : CYCE_STATS_BLOCK;
    CYCE_REAL bm = CYCE_FN(stats_map)(x, bufs[0], len, mapped, softcap, inv_cap, scale, &raw);
    /* the first index of the raw max: the map may tie what it saturates */
    CYCE_REAL best = raw;
    int64_t best_at = raw > -INFINITY ? CYCE_FN(first_equal)(x, len, raw) : 0;
    if (label >= 0 && (!mapped || label < len)) {
        z_label = mapped ? bufs[0][label] : CYCE_LOAD(x[label]);
    }
    for (int64_t k = 0, start = 0; start < n; k++, start += len) {
        len = n - start < CYCE_STATS_BLOCK ? n - start : CYCE_STATS_BLOCK;
        int64_t next = start + len;
        int64_t next_len = n - next < CYCE_STATS_BLOCK ? n - next : CYCE_STATS_BLOCK;
        CYCE_REAL *nxt = bufs[(k + 1) % 2];
        CYCE_REAL next_max, next_raw;
        double rest, count, s1;
#ifdef CYCE_STATS_VEXP
        if (!mapped) {
            CYCE_FN(stats_block_avx512)(x + start, len, bm, x + next, next_len,
                                        &next_max, &rest, &count, &s1);
            next_raw = next_max;
        } else
#endif
        CYCE_FN(stats_block)(bufs[k % 2], len, bm, x + next, nxt, next_len, mapped, softcap,
                             inv_cap, scale, &next_max, &next_raw, &rest, &count, &s1);
        if (bm != -INFINITY) {
            CYCE_FN(stats_merge)(&sums, (double)bm, rest, count, s1);
        }
        if (next_len > 0) {
            if (next_raw > best) {
                best = next_raw;
                best_at = next + CYCE_FN(first_equal)(x + next, next_len, next_raw);
            }
            if (mapped && label >= next && label < next + next_len) {
                z_label = nxt[label - next];
            }
            bm = next_max;
        }
    }
    *argmax = best_at;
    if (!isfinite(sums.max) || sums.total_m1 != sums.total_m1) {
        int64_t j = 0;
        while (j < n && CYCE_LOAD(x[j]) == CYCE_LOAD(x[j])) {
            j++;
        }
        /* a NaN: NaN throughout, and its index for the argmax (NumPy's);
         * else +inf somewhere, or every class masked: lse is that infinity
         * (as in logsumexp), the distribution undefined */
        if (j < n) {
            *argmax = j;
        }
        *lse = j < n ? (CYCE_REAL)NAN : (CYCE_REAL)sums.max;
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

#undef CYCE_STATS_TERM
#undef CYCE_STATS_MAP
#undef CYCE_FN
#undef CYCE_REAL_FN
#undef CYCE_CAT
#undef CYCE_CAT_
