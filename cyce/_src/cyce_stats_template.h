/*
 * The kernels of mapped logits for one pair of dtypes (input, gradient):
 * cyce_stats.c includes this file once per pair, with the macros of
 * cyce_rows_template.h, CYCE_TANH_SECH2 (cyce_exp.h's, for CYCE_REAL) and
 * CYCE_REAL_SUFFIX, the suffix of cyce_rows.h's float or double row loops,
 * which the row-at-a-time kernels run over rows mapped into CYCE_REAL.
 *
 * The map: w = c tanh(x / c) / T with a softcap c, else w = x / T; a -inf
 * logit stays -inf (a masked class stays masked).  The softcap is applied
 * first, z = c tanh(x / c) (z = x without one), and the temperature only
 * after the max is subtracted: exps of (z - max(z)) / T, lse = max(z) / T +
 * log(sum), so that x / T, which overflows for large logits at a low
 * temperature, is never formed.  dw/dx = sech(x / c)**2 / T, or 1 / T.
 */
#define CYCE_CAT_(a, b) a##_##b
#define CYCE_CAT(a, b) CYCE_CAT_(a, b)
#define CYCE_FN(name) CYCE_CAT(name, CYCE_SUFFIX)
#define CYCE_REAL_FN(name) CYCE_CAT(name, CYCE_REAL_SUFFIX)

/* The constants of a call's map, in the row's arithmetic. */
typedef struct {
    int softcap;                  /* a softcap is applied */
    int scaled;                   /* a temperature other than 1 */
    CYCE_REAL cap, inv_cap;       /* c and 1 / c */
    CYCE_REAL inv_temperature;    /* 1 / T, the scale of z - max */
    double inv_temperature_f64;   /* 1 / T for the row's max, in double */
} CYCE_FN(cyce_logit_map);

static inline CYCE_FN(cyce_logit_map) CYCE_FN(logit_map_of)(const cyce_ce_opts *opts)
{
    CYCE_FN(cyce_logit_map) map;
    map.softcap = opts->logit_softcap != 0.0;
    map.scaled = opts->temperature != 1.0;
    map.cap = (CYCE_REAL)opts->logit_softcap;
    map.inv_cap = map.softcap ? (CYCE_REAL)(1.0 / opts->logit_softcap) : 0;
    map.inv_temperature = (CYCE_REAL)(1.0 / opts->temperature);
    map.inv_temperature_f64 = 1.0 / opts->temperature;
    return map;
}

/* z = the softcap of v (v itself where softcap is 0, a constant where this
 * is inlined), its slope sech(v / c)**2 into *slope. */
static inline __attribute__((always_inline)) CYCE_REAL CYCE_FN(softcapped)(
    CYCE_REAL v, int softcap, CYCE_REAL cap, CYCE_REAL inv_cap, CYCE_REAL *slope)
{
    if (!softcap) {
        *slope = 1;
        return v;
    }
    CYCE_REAL t = CYCE_TANH_SECH2(v * inv_cap, slope);
    return v == -INFINITY ? v : cap * t;
}

/* The lines of x[start:stop] CYCE_PREFETCH_AHEAD_BYTES ahead into L1 (L2
 * for double), and CYCE_PREFETCH_FAR_BYTES past those into L2: the next
 * block's reads from memory, whose misses the hardware prefetcher alone did
 * not keep in flight (as in the kernels of cyce_rows.h,
 * docs/performance.md#prefetch-distance).  Past the array's end they do not
 * fault. */
static inline __attribute__((always_inline)) void CYCE_FN(prefetch_ahead)(const CYCE_STORE *x,
                                                                         int64_t start,
                                                                         int64_t stop)
{
    const int64_t line = CYCE_LINE / (int64_t)sizeof(CYCE_STORE);
    const int64_t ahead = CYCE_PREFETCH_AHEAD_BYTES / (int64_t)sizeof(CYCE_STORE);
    const int64_t far = CYCE_PREFETCH_FAR_BYTES / (int64_t)sizeof(CYCE_STORE);
    for (int64_t j = start; j < stop; j += line) {
        __builtin_prefetch(x + j + ahead, 0, CYCE_PREFETCH_LOCALITY);
        __builtin_prefetch(x + j + ahead + far, 0, 2);
    }
}

/* The block length of a row of n classes: CYCE_STATS_BLOCK, or longer
 * (whole CYCE_BLOCKs) where the row would have more than
 * CYCE_ONLINE_MAX_BLOCKS of them. */
static inline int64_t CYCE_FN(mapped_block)(int64_t n)
{
    int64_t block = CYCE_STATS_BLOCK;
    if (n > block * CYCE_ONLINE_MAX_BLOCKS) {
        int64_t per_block = (n + CYCE_ONLINE_MAX_BLOCKS - 1) / CYCE_ONLINE_MAX_BLOCKS;
        block = (per_block + CYCE_BLOCK - 1) / CYCE_BLOCK * CYCE_BLOCK;
    }
    return block;
}

/* ---- one block of a row, in one pass over memory ----
 *
 * A row goes a block at a time.  While a block's exps are taken against
 * the block's max bm (exp((z - bm) / T): rest, with the terms equal to bm
 * counted apart as in cyce_row_exp_sum_m1, and the sum the caller asks
 * for), the next block is read from memory, its max taken on the way, so
 * that those reads overlap these exps.  Without a softcap a block's z is x
 * itself, read again from cache; with one, z goes to one of two buffers of
 * a block each (in L1), and its slopes to a row of the caller's. */

/* The block's exps (into exps unless NULL) and sums, and the next block's
 * map and max: cur_x (without a softcap) or cur_z (with one) holds the
 * block's len logits, x_next the next block's next_len <= len, mapped into
 * nxt and next_slope (with a softcap and with_slope) and its raw max into
 * *next_raw.  The sums run CYCE_BLOCK terms at a time in CYCE_REAL, then in
 * double.  softcap, scaled, with_slope and what are constants where this is
 * inlined. */
static inline __attribute__((always_inline)) void CYCE_FN(block_pass)(
    const CYCE_STORE *cur_x, const CYCE_REAL *cur_z, CYCE_REAL *exps, int64_t len,
    CYCE_REAL bm, const CYCE_STORE *x_next, CYCE_REAL *nxt, CYCE_REAL *next_slope,
    int64_t next_len, CYCE_FN(cyce_logit_map) map, int softcap, int scaled, int with_slope,
    int what, CYCE_REAL *next_max, CYCE_REAL *next_raw, double *rest, double *count,
    double *sum)
{
    const CYCE_REAL shift = bm == -INFINITY ? 0 : bm;
    const CYCE_REAL top = isfinite(bm) ? bm : (CYCE_REAL)NAN;
    const CYCE_REAL lowest = sizeof(CYCE_REAL) == 4 ? -FLT_MAX : -DBL_MAX;
    const CYCE_REAL inv_t = map.inv_temperature;
    CYCE_REAL m = -INFINITY, xm = -INFINITY, sl;
    double r = 0.0, n_top = 0.0, total = 0.0;
    for (int64_t start = 0; start < len; start += CYCE_BLOCK) {
        int64_t stop = start + CYCE_BLOCK < len ? start + CYCE_BLOCK : len;
        int64_t fused = next_len < start ? start : (next_len < stop ? next_len : stop);
        CYCE_REAL s = 0, c = 0, t = 0;
        CYCE_FN(prefetch_ahead)(x_next, start, stop);
#define CYCE_BLOCK_TERM(j)                                                         \
        CYCE_REAL zj = softcap ? cur_z[j] : CYCE_LOAD(cur_x[j]);                   \
        CYCE_REAL d = scaled ? (zj - shift) * inv_t : zj - shift;                  \
        CYCE_REAL e = CYCE_EXP(d);                                                 \
        int is_top = zj == top;                                                    \
        if (exps != NULL) {                                                        \
            exps[j] = e;                                                           \
        }                                                                          \
        s += is_top ? 0 : e;                                                       \
        c += is_top ? 1 : 0;                                                       \
        t += what == CYCE_SUM_ENTROPY ? e * (d > lowest ? d : lowest)              \
            : (what == CYCE_SUM_SHIFTED ? d : 0)
#pragma omp simd reduction(+:s, c, t) reduction(max:m, xm)
        for (int64_t j = start; j < fused; j++) {
            CYCE_BLOCK_TERM(j);
            CYCE_REAL v = CYCE_LOAD(x_next[j]);
            CYCE_REAL zn = CYCE_FN(softcapped)(v, softcap, map.cap, map.inv_cap, &sl);
            if (softcap) {
                nxt[j] = zn;
            }
            if (softcap && with_slope) {
                next_slope[j] = sl;
            }
            m = zn > m ? zn : m;
            xm = v > xm ? v : xm;
        }
#pragma omp simd reduction(+:s, c, t)
        for (int64_t j = fused; j < stop; j++) {
            CYCE_BLOCK_TERM(j);
        }
#undef CYCE_BLOCK_TERM
        r += (double)s;
        n_top += (double)c;
        total += (double)t;
    }
    *next_max = m;
    *next_raw = softcap ? xm : m;
    *rest = r;
    *count = n_top;
    *sum = total;
}

#ifdef CYCE_STATS_VEXP
/* block_pass for float or double rows without a softcap or stored exps,
 * with the entropy's sum (softmax_stats), in AVX-512 intrinsics:
 * cyce_avx512.h's exp (vscalef) and its compare-and-masked-add count, where
 * GCC's version of the loop spent about 1.5 times the vector instructions
 * (docs/performance.md#softmax-stats).  The lanes are reduced in a fixed
 * order each CYCE_BLOCK: the sums depend on the row alone. */
static inline __attribute__((always_inline)) void CYCE_FN(block_pass_avx512)(
    const CYCE_REAL *cur, int64_t len, CYCE_REAL bm, const CYCE_REAL *x_next, int64_t next_len,
    int scaled, CYCE_REAL inv_t, CYCE_REAL *next_max, double *rest, double *count, double *s1)
{
    const CYCE_SV vshift = CYCE_SVOP(set1)(bm == -INFINITY ? 0 : bm);
    const CYCE_SV vtop = CYCE_SVOP(set1)(isfinite(bm) ? bm : (CYCE_REAL)NAN);
    const CYCE_SV lowest = CYCE_SVOP(set1)(sizeof(CYCE_REAL) == 4 ? -FLT_MAX : -DBL_MAX);
    const CYCE_SV one = CYCE_SVOP(set1)(1), vscale = CYCE_SVOP(set1)(inv_t);
    const CYCE_SMASK all = (CYCE_SMASK)~(CYCE_SMASK)0;
    CYCE_SV vm = CYCE_SVOP(set1)(-INFINITY);
    double r = 0.0, others = 0.0, t_sum = 0.0;
#define CYCE_BLOCK_VTERM(lanes, cv)                                            \
    do {                                                                       \
        CYCE_SV d = CYCE_SVOP(sub)(cv, vshift);                                \
        d = scaled ? CYCE_SVOP(mul)(d, vscale) : d;                            \
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
        CYCE_FN(prefetch_ahead)(x_next, start, stop);
        int64_t j = start;
        for (; j + CYCE_SLANES <= fused; j += CYCE_SLANES) {
            CYCE_SV cv = CYCE_SVOP(loadu)(cur + j);
            CYCE_BLOCK_VTERM(all, cv);
            vm = CYCE_SVOP(max)(vm, CYCE_SVOP(loadu)(x_next + j));
        }
        if (j < fused) {
            CYCE_SMASK part = (CYCE_SMASK)((1u << (fused - j)) - 1u);
            vm = CYCE_SVOP(mask_max)(vm, part, vm, CYCE_SVOP(maskz_loadu)(part, x_next + j));
        }
        for (; j + CYCE_SLANES <= stop; j += CYCE_SLANES) {
            CYCE_SV cv = CYCE_SVOP(loadu)(cur + j);
            CYCE_BLOCK_VTERM(all, cv);
        }
        if (j < stop) {
            CYCE_SMASK tail = (CYCE_SMASK)((1u << (stop - j)) - 1u);
            CYCE_SV cv = CYCE_SVOP(maskz_loadu)(tail, cur + j);
            CYCE_BLOCK_VTERM(tail, cv);
        }
        r += (double)CYCE_SVOP(reduce_add)(vr);
        others += (double)CYCE_SVOP(reduce_add)(vo);
        t_sum += (double)CYCE_SVOP(reduce_add)(vt);
    }
#undef CYCE_BLOCK_VTERM
    *next_max = CYCE_SVOP(reduce_max)(vm);
    *rest = r;
    *count = (double)len - others;
    *s1 = t_sum;
}
#endif

/* A row's first block, alone (each later one is mapped during its
 * predecessor's exps): its max, the raw max into *raw_max, its z into buf
 * and its slopes into slope (with a softcap and with_slope). */
static inline __attribute__((always_inline)) CYCE_REAL CYCE_FN(first_block)(
    const CYCE_STORE *x, CYCE_REAL *buf, CYCE_REAL *slope, int64_t len,
    CYCE_FN(cyce_logit_map) map, int softcap, int with_slope, CYCE_REAL *raw_max)
{
    CYCE_REAL m = -INFINITY, xm = -INFINITY, sl;
#pragma omp simd reduction(max:m, xm)
    for (int64_t j = 0; j < len; j++) {
        CYCE_REAL v = CYCE_LOAD(x[j]);
        CYCE_REAL zj = CYCE_FN(softcapped)(v, softcap, map.cap, map.inv_cap, &sl);
        if (softcap) {
            buf[j] = zj;
        }
        if (softcap && with_slope) {
            slope[j] = sl;
        }
        m = zj > m ? zj : m;
        xm = v > xm ? v : xm;
    }
    *raw_max = softcap ? xm : m;
    return m;
}

/* ---- softmax cross entropy of mapped logits against labels ----
 *
 * Block by block (block_pass), each block's exps against its own max,
 * stored in the gradient (or, for a half type's, in the scratch), rescaled
 * to the row's max by factor[k] = exp((block max - max) / T) in the sums and
 * in the gradient's pass, as cyce_row_blocked_exp_sum_m1 does; the smoothing
 * sum likewise: sum_c (z_c - max) / T = sum_k [u_k + len_k (bm_k - max) / T],
 * every term <= 0.  The gradient is carried back through the map's slope.
 * scratch: the slopes (n), the exps where grad cannot hold them (a half
 * type's, or the loss alone: the same loop either way, so the loss has the
 * same bits with and without a gradient), two blocks. */
static inline __attribute__((always_inline)) double CYCE_FN(row_softmax_ce_hard_mapped)(
    const CYCE_STORE *x, CYCE_GRAD *grad, CYCE_REAL *scratch, int64_t n, int64_t label,
    double row_weight, const cyce_ce_opts *opts, CYCE_FN(cyce_logit_map) map, int softcap,
    int scaled)
{
    const int64_t block = CYCE_FN(mapped_block)(n), n_blocks = (n + block - 1) / block;
    const int smoothing = opts->label_smoothing != 0.0, with_grad = grad != NULL;
    CYCE_REAL *slope = scratch, *bufs = scratch + 2 * n;
    CYCE_REAL *exps = CYCE_EXPS_IN_GRAD && with_grad ? (CYCE_REAL *)grad : scratch + n;
    double block_max[CYCE_ONLINE_MAX_BLOCKS], rest[CYCE_ONLINE_MAX_BLOCKS];
    double count[CYCE_ONLINE_MAX_BLOCKS], shifted[CYCE_ONLINE_MAX_BLOCKS];
    double factor[CYCE_ONLINE_MAX_BLOCKS];
    CYCE_REAL raw, z_label = softcap ? 0 : CYCE_LOAD(x[label]);
    int64_t len = n < block ? n : block;
    CYCE_REAL bm = CYCE_FN(first_block)(x, bufs, slope, len, map, softcap, 1, &raw);
    CYCE_REAL max = -INFINITY;
    for (int64_t k = 0, start = 0; k < n_blocks; k++, start += block) {
        len = n - start < block ? n - start : block;
        int64_t next = start + len;
        int64_t next_len = n - next < block ? n - next : block;
        CYCE_REAL *cur = bufs + (k % 2) * block, *nxt = bufs + ((k + 1) % 2) * block;
        if (softcap && label >= start && label < next) {
            z_label = cur[label - start];
        }
        CYCE_REAL next_max;
        CYCE_FN(block_pass)(x + start, cur, exps + start, len, bm, x + next, nxt, slope + next,
                            next_len, map, softcap, scaled, 1, CYCE_SUM_SHIFTED, &next_max, &raw,
                            &rest[k], &count[k], &shifted[k]);
        block_max[k] = bm;
        max = bm > max ? bm : max;
        bm = next_max;
    }
    const double inv_t = map.inv_temperature_f64;
    double total_m1 = 0.0, count_at_max = 0.0, smooth_shifted = 0.0;
    for (int64_t k = 0, start = 0; k < n_blocks; k++, start += block) {
        double gap = (block_max[k] - (double)max) * inv_t;   /* <= 0 */
        factor[k] = cyce_exp_nonpos(gap);
        if (block_max[k] == max) {
            total_m1 += rest[k];
            count_at_max += count[k];
        } else {
            total_m1 += factor[k] * (rest[k] + count[k]);
        }
        if (smoothing) {
            /* a masked block's u is against 0, not its max */
            double len_k = (double)(n - start < block ? n - start : block);
            smooth_shifted += block_max[k] == -INFINITY ? shifted[k] - len_k * (double)max * inv_t
                                                         : shifted[k] + len_k * gap;
        }
    }
    total_m1 = max == -INFINITY ? (double)NAN : total_m1 + (count_at_max - 1.0);
    double label_shifted = ((double)z_label - (double)max) * inv_t;
    double label_exp = (double)exps[label] * factor[label / block];
    cyce_hard_row row = {(double)max * inv_t, total_m1, label_shifted,
                         cyce_label_exp_m1(label_shifted, label_exp),
                         opts->class_weight == NULL ? 1.0 : opts->class_weight[label],
                         smooth_shifted, row_weight};
    cyce_hard_terms terms = cyce_softmax_ce_hard_terms(n, row, *opts);
    if (with_grad) {
        /* the gradient of w = z / T, times dw/dz = 1 / T, times dz/dx */
        const CYCE_REAL b = (CYCE_REAL)(terms.weight_scale * inv_t);
        for (int64_t k = 0, start = 0; k < n_blocks; k++, start += block) {
            int64_t stop = start + block < n ? start + block : n;
            const CYCE_REAL a = (CYCE_REAL)(terms.exp_scale * factor[k] * inv_t);
#pragma omp simd
            for (int64_t j = start; j < stop; j++) {
                CYCE_REAL g = exps[j] * a - b;
                grad[j] = CYCE_TO_GRAD(softcap ? g * slope[j] : g);
            }
        }
        double label_slope = softcap ? (double)slope[label] : 1.0;
        grad[label] = CYCE_TO_GRAD((CYCE_REAL)(terms.label_grad * inv_t * label_slope));
    }
    return terms.loss;
}

/* ---- rows mapped whole: class-weighted smoothing, probability targets ----
 * The row's z goes to the scratch, then d = (z - max) / T over it, and the
 * row loops of the unmapped kernels run over d (in cache) against a max of
 * 0, the exps written over d. */

/* d = (z - max(z)) / T into d[0:n], z the softcap of x (x without one), and
 * its slopes into slope unless NULL; returns max(z) (-inf for an all -inf
 * row, whose d is NaN: the row's loss is). */
static inline CYCE_REAL CYCE_FN(map_row)(const CYCE_STORE *x, CYCE_REAL *d, CYCE_REAL *slope,
                                         int64_t n, CYCE_FN(cyce_logit_map) map)
{
    CYCE_REAL m = -INFINITY, sl;
    if (!map.softcap) {
#pragma omp simd reduction(max:m)
        for (int64_t j = 0; j < n; j++) {
            m = CYCE_LOAD(x[j]) > m ? CYCE_LOAD(x[j]) : m;
        }
#pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            d[j] = (CYCE_LOAD(x[j]) - m) * map.inv_temperature;
        }
        return m;
    }
#pragma omp simd reduction(max:m)
    for (int64_t j = 0; j < n; j++) {
        CYCE_REAL zj = CYCE_FN(softcapped)(CYCE_LOAD(x[j]), 1, map.cap, map.inv_cap, &sl);
        d[j] = zj;
        if (slope != NULL) {
            slope[j] = sl;
        }
        m = zj > m ? zj : m;
    }
#pragma omp simd
    for (int64_t j = 0; j < n; j++) {
        d[j] = (d[j] - m) * map.inv_temperature;
    }
    return m;
}

/* grad[j] = (e[j] * a - b * w[j]) * slope[j] (w NULL: all ones; slope
 * NULL: all ones), rounded once into grad's dtype. */
static inline void CYCE_FN(chain_store)(const CYCE_REAL *e, const CYCE_REAL *slope,
                                        CYCE_GRAD *grad, const double *w, int64_t n,
                                        CYCE_REAL a, double b)
{
    const CYCE_REAL b_real = (CYCE_REAL)b;
    if (w == NULL && slope == NULL) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            grad[j] = CYCE_TO_GRAD(e[j] * a - b_real);
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
            grad[j] = CYCE_TO_GRAD(slope == NULL ? g : g * slope[j]);
        }
    }
}

/* One row against its label, mapped whole (for class-weighted smoothing):
 * cyce_softmax_ce_hard_terms' formulas in d. */
static inline double CYCE_FN(row_softmax_ce_hard_mapped_whole)(
    const CYCE_STORE *x, CYCE_GRAD *grad, CYCE_REAL *d, CYCE_REAL *slope, int64_t n,
    int64_t label, double row_weight, const cyce_ce_opts *opts, CYCE_FN(cyce_logit_map) map)
{
    CYCE_REAL *slopes = grad != NULL && map.softcap ? slope : NULL;
    CYCE_REAL m = CYCE_FN(map_row)(x, d, slopes, n, map);
    double smooth_shifted = CYCE_REAL_FN(cyce_row_sum_shifted)(d, opts->class_weight, n, 0);
    double label_shifted = (double)d[label];
    double total_m1 = CYCE_REAL_FN(cyce_row_exp_sum_m1)(d, grad == NULL ? NULL : d, n, 0, NULL);
    cyce_hard_row row = {(double)m * map.inv_temperature_f64, total_m1, label_shifted,
                         grad == NULL ? 0.0 : cyce_label_exp_m1(label_shifted, d[label]),
                         opts->class_weight[label], smooth_shifted, row_weight};
    cyce_hard_terms terms = cyce_softmax_ce_hard_terms(n, row, *opts);
    if (grad != NULL) {
        const double inv_t = map.inv_temperature_f64;
        CYCE_FN(chain_store)(d, slopes, grad, opts->class_weight, n,
                             (CYCE_REAL)(terms.exp_scale * inv_t), terms.weight_scale * inv_t);
        double label_slope = slopes == NULL ? 1.0 : (double)slope[label];
        grad[label] = CYCE_TO_GRAD((CYCE_REAL)(terms.label_grad * inv_t * label_slope));
    }
    return terms.loss;
}

/* One row against probabilities t smoothed to t' = (1-e) t + e/C
 * (row_softmax_ce_soft's formulas, in d). */
static inline __attribute__((always_inline)) double CYCE_FN(row_softmax_ce_soft_mapped)(
    const CYCE_STORE *x, CYCE_GRAD *grad, CYCE_REAL *d, CYCE_REAL *slope, int64_t n,
    const void *target, int target_f64, double row_weight, const cyce_ce_opts *opts,
    CYCE_FN(cyce_logit_map) map)
{
    CYCE_REAL *slopes = grad != NULL && map.softcap ? slope : NULL;
    CYCE_REAL m = CYCE_FN(map_row)(x, d, slopes, n, map);
    const double *class_weight = opts->class_weight;
    const CYCE_REAL uniform = (CYCE_REAL)(opts->label_smoothing / n);
    const CYCE_REAL keep = (CYCE_REAL)(1.0 - opts->label_smoothing);
    /* sum_c w_c t'_c, and times d_c <= 0 (a class of no mass adds 0, also
     * where d_c = -inf), a CYCE_BLOCK at a time */
    double mass = 0.0, mass_shifted = 0.0;
    /* (a loop per case of the class weights: a load under a test does not vectorise) */
#define CYCE_SOFT_WEIGHT(c) (keep * (CYCE_REAL)CYCE_TARGET(target, target_f64, c) + uniform)
#define CYCE_SOFT_WEIGHTED(c) (CYCE_SOFT_WEIGHT(c) * (CYCE_REAL)class_weight[c])
#define CYCE_SOFT_MASS_LOOP(WEIGHT)                                             \
    for (int64_t start = 0; start < n; start += CYCE_BLOCK) {                   \
        int64_t stop = start + CYCE_BLOCK < n ? start + CYCE_BLOCK : n;          \
        CYCE_REAL block_mass = 0, block_shifted = 0;                            \
        _Pragma("omp simd reduction(+:block_mass, block_shifted)")              \
        for (int64_t c = start; c < stop; c++) {                                \
            CYCE_REAL wt = WEIGHT(c);                                           \
            block_mass += wt;                                                   \
            block_shifted += wt != 0 ? wt * d[c] : 0;                           \
        }                                                                       \
        mass += (double)block_mass;                                             \
        mass_shifted += (double)block_shifted;                                  \
    }
    if (class_weight == NULL) {
        CYCE_SOFT_MASS_LOOP(CYCE_SOFT_WEIGHT)
    } else {
        CYCE_SOFT_MASS_LOOP(CYCE_SOFT_WEIGHTED)
    }
#undef CYCE_SOFT_MASS_LOOP
    double total_m1 = CYCE_REAL_FN(cyce_row_exp_sum_m1)(d, grad == NULL ? NULL : d, n, 0, NULL);
    double log_total = cyce_log1p_nonneg(total_m1);
    double lse = (double)m * map.inv_temperature_f64 + log_total;
    if (grad != NULL) {
        const double inv_t = map.inv_temperature_f64;
        double coef = row_weight * opts->grad_scale;
        CYCE_REAL exp_scale = (CYCE_REAL)(coef * (mass + 2.0 * opts->z_loss * lse)
                                          / (1.0 + total_m1) * inv_t);
        CYCE_REAL coef_t = (CYCE_REAL)(coef * inv_t);
#define CYCE_SOFT_GRAD_LOOP(WEIGHT)                                             \
        _Pragma("omp simd")                                                     \
        for (int64_t c = 0; c < n; c++) {                                       \
            CYCE_REAL g = d[c] * exp_scale - coef_t * WEIGHT(c);                \
            grad[c] = CYCE_TO_GRAD(slopes == NULL ? g : g * slope[c]);          \
        }
        if (class_weight == NULL) {
            CYCE_SOFT_GRAD_LOOP(CYCE_SOFT_WEIGHT)
        } else {
            CYCE_SOFT_GRAD_LOOP(CYCE_SOFT_WEIGHTED)
        }
#undef CYCE_SOFT_GRAD_LOOP
    }
#undef CYCE_SOFT_WEIGHT
#undef CYCE_SOFT_WEIGHTED
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
    const CYCE_FN(cyce_logit_map) map = CYCE_FN(logit_map_of)(&opts);
    const int64_t n = rows->n_classes;
    CYCE_REAL *z = (CYCE_REAL *)scratch;
    double total = 0.0;
    for (int64_t i = first; i < stop; i++) {
        const CYCE_STORE *x = (const CYCE_STORE *)rows->x + i * n;
        CYCE_GRAD *grad = rows->grad == NULL ? NULL : (CYCE_GRAD *)rows->grad + i * n;
        int64_t label = rows->labels[i];
        double row_weight = opts.sample_weight == NULL ? 1.0 : opts.sample_weight[i];
        double loss = 0.0;
        if (label == opts.ignore_index) {
            if (grad != NULL) {
                memset(grad, 0, (size_t)n * sizeof(CYCE_GRAD));
            }
        } else if (opts.label_smoothing != 0.0 && opts.class_weight != NULL) {
            loss = CYCE_FN(row_softmax_ce_hard_mapped_whole)(x, grad, z, z + n, n, label,
                                                             row_weight, &opts, map);
        } else if (map.softcap) {
            /* one copy of the one-pass row per map, its tests folded */
            loss = CYCE_FN(row_softmax_ce_hard_mapped)(x, grad, z, n, label, row_weight, &opts,
                                                       map, 1, 1);
        } else {
            loss = CYCE_FN(row_softmax_ce_hard_mapped)(x, grad, z, n, label, row_weight, &opts,
                                                       map, 0, 1);
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
    const CYCE_FN(cyce_logit_map) map = CYCE_FN(logit_map_of)(&opts);
    const int64_t n = rows->n_classes;
    CYCE_REAL *d = (CYCE_REAL *)scratch, *slope = d + n;
    for (int64_t i = first; i < stop; i++) {
        const CYCE_STORE *x = (const CYCE_STORE *)rows->x + i * n;
        CYCE_GRAD *grad = rows->grad == NULL ? NULL : (CYCE_GRAD *)rows->grad + i * n;
        double row_weight = opts.sample_weight == NULL ? 1.0 : opts.sample_weight[i];
        rows->row_loss[i] = rows->targets_f64
            ? CYCE_FN(row_softmax_ce_soft_mapped)(x, grad, d, slope, n,
                                                  (const double *)rows->targets + i * n, 1,
                                                  row_weight, &opts, map)
            : CYCE_FN(row_softmax_ce_soft_mapped)(x, grad, d, slope, n,
                                                  (const float *)rows->targets + i * n, 0,
                                                  row_weight, &opts, map);
    }
}

/* ---- softmax_stats: a row's statistics in one pass over memory ----
 *
 * The block passes of the cross entropy, with s1 = sum e d (d = (z - bm) /
 * T <= 0) beside each block's rest; the blocks merge into the row's sums
 * against the running max, rescaled by exp((old max - new max) / T) when it
 * grows.  Then
 *   lse = max / T + log(total),  entropy = log(total) - s1 / total,
 * both terms of the entropy >= 0 (no cancellation, also for a confident
 * row), and logprob = (z_label - max) / T - log(total). */

/* The running sums of a row: total - 1 and s1, against max (/ T, double). */
typedef struct {
    double max;
    double total_m1;
    double s1;
} CYCE_FN(cyce_stats_sums);

/* A block's sums (rest and count against its max bm, and s1; bm / T)
 * merged into the row's. */
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

/* The statistics of one row (label < 0: no logprob); scratch: two blocks. */
static inline __attribute__((always_inline)) void CYCE_FN(row_softmax_stats)(
    const CYCE_STORE *x, CYCE_REAL *bufs, int64_t n, int64_t label, CYCE_FN(cyce_logit_map) map,
    int softcap, int scaled, CYCE_REAL *lse, CYCE_REAL *logprob, CYCE_REAL *entropy,
    int64_t *argmax)
{
    const int64_t block = CYCE_FN(mapped_block)(n);
    const double inv_t = map.inv_temperature_f64;
    CYCE_FN(cyce_stats_sums) sums = {-INFINITY, -1.0, 0.0};
    CYCE_REAL raw, z_label = softcap || label < 0 ? 0 : CYCE_LOAD(x[label]);
    CYCE_REAL max = -INFINITY;   /* of z, whose / T is sums.max */
    int64_t len = n < block ? n : block;
    CYCE_REAL bm = CYCE_FN(first_block)(x, bufs, NULL, len, map, softcap, 0, &raw);
    /* the first index of the raw max: the softcap may tie what it saturates */
    CYCE_REAL best = raw;
    int64_t best_at = raw > -INFINITY ? CYCE_FN(first_equal)(x, len, raw) : 0;
    for (int64_t k = 0, start = 0; start < n; k++, start += len) {
        len = n - start < block ? n - start : block;
        int64_t next = start + len;
        int64_t next_len = n - next < block ? n - next : block;
        CYCE_REAL *cur = bufs + (k % 2) * block, *nxt = bufs + ((k + 1) % 2) * block;
        if (softcap && label >= start && label < next) {
            z_label = cur[label - start];
        }
        CYCE_REAL next_max, next_raw;
        double rest, count, s1;
#ifdef CYCE_STATS_VEXP
        if (!softcap) {
            CYCE_FN(block_pass_avx512)(x + start, len, bm, x + next, next_len, scaled,
                                       map.inv_temperature, &next_max, &rest, &count, &s1);
            next_raw = next_max;
        } else
#endif
        CYCE_FN(block_pass)(x + start, cur, NULL, len, bm, x + next, nxt, NULL, next_len, map,
                            softcap, scaled, 0, CYCE_SUM_ENTROPY, &next_max, &next_raw, &rest,
                            &count, &s1);
        if (bm != -INFINITY) {
            CYCE_FN(stats_merge)(&sums, (double)bm * inv_t, rest, count, s1);
        }
        max = bm > max ? bm : max;
        if (next_len > 0) {
            if (next_raw > best) {
                best = next_raw;
                best_at = next + CYCE_FN(first_equal)(x + next, next_len, next_raw);
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
    *lse = (CYCE_REAL)((double)max * inv_t + log_total);
    *entropy = (CYCE_REAL)(log_total - sums.s1 / (1.0 + sums.total_m1));
    if (logprob != NULL) {
        *logprob = (CYCE_REAL)(((double)z_label - (double)max) * inv_t - log_total);
    }
}

static void CYCE_FN(softmax_stats_task)(const cyce_rows *rows, const cyce_ce_opts *opts,
                                        const cyce_stats_out *out, void *scratch,
                                        int64_t first, int64_t stop)
{
    const int64_t n = rows->n_classes;
    const CYCE_FN(cyce_logit_map) map = CYCE_FN(logit_map_of)(opts);
    CYCE_REAL *lse = (CYCE_REAL *)out->lse, *logprob = (CYCE_REAL *)out->logprob;
    CYCE_REAL *entropy = (CYCE_REAL *)out->entropy;
    for (int64_t i = first; i < stop; i++) {
        const CYCE_STORE *x = (const CYCE_STORE *)rows->x + i * n;
        int64_t label = rows->labels == NULL ? -1 : rows->labels[i];
        CYCE_REAL *row_logprob = logprob == NULL ? NULL : logprob + i;
        /* one copy of the row loop per map, its constants folded */
        if (map.softcap) {
            CYCE_FN(row_softmax_stats)(x, (CYCE_REAL *)scratch, n, label, map, 1, map.scaled,
                                       lse + i, row_logprob, entropy + i, out->argmax + i);
        } else if (map.scaled) {
            CYCE_FN(row_softmax_stats)(x, (CYCE_REAL *)scratch, n, label, map, 0, 1, lse + i,
                                       row_logprob, entropy + i, out->argmax + i);
        } else {
            CYCE_FN(row_softmax_stats)(x, (CYCE_REAL *)scratch, n, label, map, 0, 0, lse + i,
                                       row_logprob, entropy + i, out->argmax + i);
        }
    }
}

/* the scratch of a thread: two rows (the slopes and a half type's exps, or
 * a row mapped whole and its slopes) and two blocks */
static size_t CYCE_FN(mapped_scratch_bytes)(int64_t n)
{
    return (size_t)(2 * n + 2 * CYCE_FN(mapped_block)(n)) * sizeof(CYCE_REAL);
}

const cyce_mapped_kernels CYCE_TABLE_NAME(CYCE_SUFFIX) = {
    CYCE_FN(mapped_scratch_bytes),
    CYCE_FN(softmax_stats_task),
    CYCE_FN(softmax_ce_hard_mapped_task),
    CYCE_FN(softmax_ce_soft_mapped_task),
};

#undef CYCE_FN
#undef CYCE_REAL_FN
#undef CYCE_CAT
#undef CYCE_CAT_
