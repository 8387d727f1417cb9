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
/* What reads the logits (the maps, the block passes, the sums of a row) is
 * defined for float and double rows alone, named by CYCE_SFN: a half type's
 * tasks convert each row to float in the scratch and run float's (a copy
 * of those loops per half type would take the wheel past 1 MiB); each pair
 * has its own gradient stores. */
#if CYCE_NATIVE
#define CYCE_SFN(name) CYCE_FN(name)
#define CYCE_DEFINE_SUMS 1
#define CYCE_SCRATCH_ROWS 2
#define CYCE_ROW_OF(x, row, n) (x)
#else
#define CYCE_SFN(name) CYCE_REAL_FN(name)
#define CYCE_DEFINE_SUMS 0
#define CYCE_SCRATCH_ROWS 3
#define CYCE_ROW_OF(x, row, n) CYCE_FN(row_as_real)(x, row, n)
#endif

/* t' of class c, and times its class weight (a loop per case of the class
 * weights: a load under a test does not vectorise) */
#define CYCE_SOFT_WEIGHT(c) (keep * (CYCE_REAL)CYCE_TARGET(target, target_f64, c) + uniform)
#define CYCE_SOFT_WEIGHTED(c) (CYCE_SOFT_WEIGHT(c) * (CYCE_REAL)class_weight[c])

#if CYCE_DEFINE_SUMS

/* The constants of a call's map, in the row's arithmetic. */
typedef struct {
    int softcap;                  /* a softcap is applied */
    CYCE_REAL cap, inv_cap;       /* c and 1 / c */
    CYCE_REAL inv_temperature;    /* 1 / T, the scale of z - max */
    double inv_temperature_f64;   /* 1 / T for the row's max, in double */
} CYCE_SFN(cyce_logit_map);

static inline CYCE_SFN(cyce_logit_map) CYCE_SFN(logit_map_of)(const cyce_ce_opts *opts)
{
    CYCE_SFN(cyce_logit_map) map;
    map.softcap = opts->logit_softcap != 0.0;
    map.cap = (CYCE_REAL)opts->logit_softcap;
    map.inv_cap = map.softcap ? (CYCE_REAL)(1.0 / opts->logit_softcap) : 0;
    map.inv_temperature = (CYCE_REAL)(1.0 / opts->temperature);
    map.inv_temperature_f64 = 1.0 / opts->temperature;
    return map;
}

/* z = the softcap of v (v itself where softcap is 0, a constant where this
 * is inlined), its slope sech(v / c)**2 into *slope. */
static inline __attribute__((always_inline)) CYCE_REAL CYCE_SFN(softcapped)(
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
static inline __attribute__((always_inline)) void CYCE_SFN(prefetch_ahead)(const CYCE_STORE *x,
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
static inline int64_t CYCE_SFN(mapped_block)(int64_t n)
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

/* The previous row's block whose gradient waits for this block's pass (as
 * the plain rows' deferred scaling, docs/performance.md#deferred-scaling):
 * grad[j] = (grad[j] * a - b) * slope[j] over the block (slope NULL: no
 * softcap), grad holding its exps. */
typedef struct {
    CYCE_REAL *grad;
    const CYCE_REAL *slope;
    CYCE_REAL a, b;
} CYCE_SFN(cyce_waiting_block);

/* What a block pass returns: the next block's max (of z) and raw max, and
 * this block's sums in double: rest and count (as cyce_row_exp_sum_m1's),
 * s1 = sum e d for the entropy (d = (z - bm) / T <= 0; a masked class adds
 * 0, not 0 * -inf), u = sum d for label smoothing. */
typedef struct {
    CYCE_REAL next_max, next_raw;
    double rest, count, s1, u;
} CYCE_SFN(cyce_block_sums);

/* The block's exps into exps and its sums, and the next block's map and
 * max: cur_x (without a softcap) or cur_z (with one) holds the block's len
 * logits, x_next the next block's next_len <= len, mapped into nxt and its
 * slopes into next_slope (with a softcap).  The sums run CYCE_BLOCK terms at
 * a time in CYCE_REAL, then in double.  softcap is a constant where this is
 * inlined: into block_pass_capped and block_pass_plain alone, which
 * softmax_stats and the cross entropy share (one copy of the loops each). */
static inline __attribute__((always_inline)) CYCE_SFN(cyce_block_sums) CYCE_SFN(block_pass)(
    const CYCE_STORE *cur_x, const CYCE_REAL *cur_z, CYCE_REAL *exps, int64_t len,
    CYCE_REAL bm, const CYCE_STORE *x_next, CYCE_REAL *nxt, CYCE_REAL *next_slope,
    int64_t next_len, const CYCE_SFN(cyce_logit_map) *map, int softcap)
{
    const CYCE_REAL shift = bm == -INFINITY ? 0 : bm;
    const CYCE_REAL top = isfinite(bm) ? bm : (CYCE_REAL)NAN;
    const CYCE_REAL lowest = sizeof(CYCE_REAL) == 4 ? -FLT_MAX : -DBL_MAX;
    const CYCE_REAL inv_t = map->inv_temperature, cap = map->cap, inv_cap = map->inv_cap;
    CYCE_REAL m = -INFINITY, xm = -INFINITY, sl;
    CYCE_SFN(cyce_block_sums) sums = {0, 0, 0.0, 0.0, 0.0, 0.0};
    for (int64_t start = 0; start < len; start += CYCE_BLOCK) {
        int64_t stop = start + CYCE_BLOCK < len ? start + CYCE_BLOCK : len;
        int64_t fused = next_len < start ? start : (next_len < stop ? next_len : stop);
        CYCE_REAL s = 0, c = 0, t = 0, u = 0;
        CYCE_SFN(prefetch_ahead)(x_next, start, stop);
#define CYCE_BLOCK_TERM(j)                                                         \
        CYCE_REAL zj = softcap ? cur_z[j] : CYCE_LOAD(cur_x[j]);                   \
        CYCE_REAL d = (zj - shift) * inv_t;                                        \
        CYCE_REAL e = CYCE_EXP(d);                                                 \
        int is_top = zj == top;                                                    \
        exps[j] = e;                                                               \
        s += is_top ? 0 : e;                                                       \
        c += is_top ? 1 : 0;                                                       \
        t += e * (d > lowest ? d : lowest);                                        \
        u += d
#pragma omp simd reduction(+:s, c, t, u) reduction(max:m, xm)
        for (int64_t j = start; j < fused; j++) {
            CYCE_BLOCK_TERM(j);
            CYCE_REAL v = CYCE_LOAD(x_next[j]);
            CYCE_REAL zn = CYCE_SFN(softcapped)(v, softcap, cap, inv_cap, &sl);
            if (softcap) {
                nxt[j] = zn;
                next_slope[j] = sl;
            }
            m = zn > m ? zn : m;
            xm = v > xm ? v : xm;
        }
#pragma omp simd reduction(+:s, c, t, u)
        for (int64_t j = fused; j < stop; j++) {
            CYCE_BLOCK_TERM(j);
        }
#undef CYCE_BLOCK_TERM
        sums.rest += (double)s;
        sums.count += (double)c;
        sums.s1 += (double)t;
        sums.u += (double)u;
    }
    sums.next_max = m;
    sums.next_raw = softcap ? xm : m;
    return sums;
}

#ifdef CYCE_STATS_VSOFTCAP
/* The z of x[j:j + lanes] into z_out and their slopes into slope_out, the
 * maxima of z onto vm and, with raw, of x onto vxm (NaN skipped: the max's
 * second operand is the running one). */
#define CYCE_CAPPED_MAP(lanes, x, z_out, slope_out, raw)                        \
    do {                                                                        \
        CYCE_SV v = CYCE_SVOP(maskz_loadu)(lanes, x + j), sl;                   \
        CYCE_SV z = CYCE_STATS_VSOFTCAP(v, cap, inv_cap, &sl);                  \
        CYCE_SVOP(mask_storeu)(z_out + j, lanes, z);                            \
        CYCE_SVOP(mask_storeu)(slope_out + j, lanes, sl);                       \
        vm = CYCE_SVOP(mask_max)(vm, lanes, z, vm);                             \
        if (raw) {                                                              \
            vxm = CYCE_SVOP(mask_max)(vxm, lanes, v, vxm);                      \
        }                                                                       \
    } while (0)

/* block_pass for float rows in AVX-512 intrinsics, cur_z the block's z
 * (x itself without a softcap): with a softcap, the vector softcap, whose
 * one-sided lanes skip the other side (GCC's loop computed both sides and a
 * division for every element: docs/performance.md#mapped-logits).  The
 * lanes are reduced each CYCE_BLOCK, as there.  The entropy's sum s1 and the
 * raw max (next_raw) are softmax_stats' alone: without stats (a constant,
 * as softcap) they are left out, 0 and next_max. */
static inline __attribute__((always_inline)) CYCE_SFN(cyce_block_sums) CYCE_SFN(
    block_pass_mapped_avx512)(const CYCE_REAL *cur_z, CYCE_REAL *exps, int64_t len,
                           CYCE_REAL bm, const CYCE_STORE *x_next, CYCE_REAL *nxt,
                           CYCE_REAL *next_slope, int64_t next_len,
                           const CYCE_SFN(cyce_logit_map) *map, int softcap, int stats,
                           const CYCE_SFN(cyce_waiting_block) *wait)
{
    CYCE_REAL *wait_grad = wait == NULL ? NULL : wait->grad;
    const CYCE_REAL *wait_slope = wait == NULL ? NULL : wait->slope;
    const CYCE_SV wait_a = CYCE_SVOP(set1)(wait == NULL ? 0 : wait->a);
    const CYCE_SV wait_b = CYCE_SVOP(set1)(wait == NULL ? 0 : wait->b);
    const CYCE_SV vshift = CYCE_SVOP(set1)(bm == -INFINITY ? 0 : bm);
    const CYCE_SV vtop = CYCE_SVOP(set1)(isfinite(bm) ? bm : (CYCE_REAL)NAN);
    const CYCE_SV lowest = CYCE_SVOP(set1)(-FLT_MAX), one = CYCE_SVOP(set1)(1);
    const CYCE_SV inv_t = CYCE_SVOP(set1)(map->inv_temperature);
    const CYCE_SV cap = CYCE_SVOP(set1)(map->cap), inv_cap = CYCE_SVOP(set1)(map->inv_cap);
    const CYCE_SMASK all = (CYCE_SMASK)~(CYCE_SMASK)0;
    CYCE_SV vm = CYCE_SVOP(set1)(-INFINITY), vxm = vm;
    CYCE_SFN(cyce_block_sums) sums = {0, 0, 0.0, 0.0, 0.0, 0.0};
    /* this block's exps at j, and block_pass's four sums; the waiting
     * block's gradient at j (the separate pass's contracted (e a - b) s) */
#define CYCE_MAPPED_TERM(lanes)                                                 \
    do {                                                                        \
        if (wait_grad != NULL) {                                                \
            CYCE_SV g = CYCE_SVOP(fmsub)(CYCE_SVOP(maskz_loadu)(lanes, wait_grad + j), \
                                         wait_a, wait_b);                       \
            if (softcap) {                                                      \
                g = CYCE_SVOP(mul)(g, CYCE_SVOP(maskz_loadu)(lanes, wait_slope + j)); \
            }                                                                   \
            CYCE_SVOP(mask_storeu)(wait_grad + j, lanes, g);                    \
        }                                                                       \
        CYCE_SV cv = CYCE_SVOP(maskz_loadu)(lanes, cur_z + j);                  \
        CYCE_SV d = CYCE_SVOP(mul)(CYCE_SVOP(sub)(cv, vshift), inv_t);          \
        CYCE_SV e = CYCE_STATS_VEXP(d);                                         \
        CYCE_SMASK other = CYCE_SVCMP(lanes, cv, vtop, _CMP_NEQ_UQ);            \
        CYCE_SVOP(mask_storeu)(exps + j, lanes, e);                             \
        vr = CYCE_SVOP(mask_add)(vr, other, vr, e);                             \
        vo = CYCE_SVOP(mask_add)(vo, other, vo, one);                           \
        if (stats) {                                                            \
            vt = CYCE_SVOP(mask3_fmadd)(e, CYCE_SVOP(max)(d, lowest), vt, lanes); \
        }                                                                       \
        vu = CYCE_SVOP(mask_add)(vu, lanes, vu, d);                             \
    } while (0)
    for (int64_t start = 0; start < len; start += CYCE_BLOCK) {
        int64_t stop = start + CYCE_BLOCK < len ? start + CYCE_BLOCK : len;
        int64_t fused = next_len < start ? start : (next_len < stop ? next_len : stop);
        CYCE_SV vr = CYCE_SVOP(setzero)(), vo = vr, vt = vr, vu = vr;
        CYCE_SFN(prefetch_ahead)(x_next, start, stop);
        int64_t j = start;
        for (; j + CYCE_SLANES <= fused; j += CYCE_SLANES) {
            if (softcap) {
                CYCE_CAPPED_MAP(all, x_next, nxt, next_slope, stats);
            } else {
                vm = CYCE_SVOP(max)(CYCE_SVOP(loadu)(x_next + j), vm);
            }
            CYCE_MAPPED_TERM(all);
        }
        if (j < fused) {
            CYCE_SMASK part = (CYCE_SMASK)((1u << (fused - j)) - 1u);
            if (softcap) {
                CYCE_CAPPED_MAP(part, x_next, nxt, next_slope, stats);
            } else {
                vm = CYCE_SVOP(mask_max)(vm, part, CYCE_SVOP(maskz_loadu)(part, x_next + j), vm);
            }
        }
        for (; j + CYCE_SLANES <= stop; j += CYCE_SLANES) {
            CYCE_MAPPED_TERM(all);
        }
        if (j < stop) {
            CYCE_MAPPED_TERM((CYCE_SMASK)((1u << (stop - j)) - 1u));
        }
        sums.rest += (double)CYCE_SVOP(reduce_add)(vr);
        sums.count += (double)(stop - start) - (double)CYCE_SVOP(reduce_add)(vo);
        if (stats) {
            sums.s1 += (double)CYCE_SVOP(reduce_add)(vt);
        }
        sums.u += (double)CYCE_SVOP(reduce_add)(vu);
    }
#undef CYCE_MAPPED_TERM
    sums.next_max = CYCE_SVOP(reduce_max)(vm);
    sums.next_raw = softcap && stats ? CYCE_SVOP(reduce_max)(vxm) : sums.next_max;
    return sums;
}
#endif

static __attribute__((noinline, noclone)) CYCE_SFN(cyce_block_sums) CYCE_SFN(block_pass_capped)(
    const CYCE_REAL *cur_z, CYCE_REAL *exps, int64_t len, CYCE_REAL bm,
    const CYCE_STORE *x_next, CYCE_REAL *nxt, CYCE_REAL *next_slope, int64_t next_len,
    const CYCE_SFN(cyce_logit_map) *map)
{
#ifdef CYCE_STATS_VSOFTCAP
    return CYCE_SFN(block_pass_mapped_avx512)(cur_z, exps, len, bm, x_next, nxt, next_slope,
                                           next_len, map, 1, 1, NULL);
#else
    return CYCE_SFN(block_pass)(NULL, cur_z, exps, len, bm, x_next, nxt, next_slope, next_len,
                                map, 1);
#endif
}

/* block_pass_capped for the cross entropy, which reads neither s1 nor the
 * raw max: in intrinsics, their 3 of the loop's vector instructions left
 * out, and the waiting block scaled (elsewhere the one loop serves both, and
 * nothing waits: wait is NULL). */
static __attribute__((noinline, noclone)) CYCE_SFN(cyce_block_sums) CYCE_SFN(block_pass_capped_ce)(
    const CYCE_REAL *cur_z, CYCE_REAL *exps, int64_t len, CYCE_REAL bm,
    const CYCE_STORE *x_next, CYCE_REAL *nxt, CYCE_REAL *next_slope, int64_t next_len,
    const CYCE_SFN(cyce_logit_map) *map, const CYCE_SFN(cyce_waiting_block) *wait)
{
#ifdef CYCE_STATS_VSOFTCAP
    return CYCE_SFN(block_pass_mapped_avx512)(cur_z, exps, len, bm, x_next, nxt, next_slope,
                                           next_len, map, 1, 0, wait);
#else
    (void)wait;
    return CYCE_SFN(block_pass_capped)(cur_z, exps, len, bm, x_next, nxt, next_slope, next_len,
                                       map);
#endif
}

static __attribute__((noinline, noclone)) CYCE_SFN(cyce_block_sums) CYCE_SFN(block_pass_plain)(
    const CYCE_STORE *cur_x, CYCE_REAL *exps, int64_t len, CYCE_REAL bm,
    const CYCE_STORE *x_next, int64_t next_len, const CYCE_SFN(cyce_logit_map) *map,
    const CYCE_SFN(cyce_waiting_block) *wait)
{
#ifdef CYCE_STATS_VSOFTCAP
    /* (softmax_stats without a softcap takes block_pass_avx512 here) */
    return CYCE_SFN(block_pass_mapped_avx512)(cur_x, exps, len, bm, x_next, NULL, NULL, next_len,
                                           map, 0, 0, wait);
#else
    (void)wait;
    return CYCE_SFN(block_pass)(cur_x, NULL, exps, len, bm, x_next, NULL, NULL, next_len, map, 0);
#endif
}

/* One block pass, block k of a row at start: through the softcap's buffers
 * (bufs, two blocks of `block`) or over x itself; for softmax_stats (stats)
 * or the cross entropy, which may have a block waiting (else NULL). */
static inline CYCE_SFN(cyce_block_sums) CYCE_SFN(block_pass_at)(
    const CYCE_STORE *x, CYCE_REAL *bufs, CYCE_REAL *slope, CYCE_REAL *exps, int64_t k,
    int64_t start, int64_t len, int64_t block, int64_t next_len, CYCE_REAL bm,
    const CYCE_SFN(cyce_logit_map) *map, int stats, const CYCE_SFN(cyce_waiting_block) *wait)
{
    const int64_t next = start + len;
    if (map->softcap && stats) {
        return CYCE_SFN(block_pass_capped)(bufs + (k % 2) * block, exps + start, len, bm,
                                           x + next, bufs + ((k + 1) % 2) * block, slope + next,
                                           next_len, map);
    }
    if (map->softcap) {
        return CYCE_SFN(block_pass_capped_ce)(bufs + (k % 2) * block, exps + start, len, bm,
                                              x + next, bufs + ((k + 1) % 2) * block,
                                              slope + next, next_len, map, wait);
    }
    return CYCE_SFN(block_pass_plain)(x + start, exps + start, len, bm, x + next, next_len, map,
                                      wait);
}

#ifdef CYCE_STATS_VEXP
/* block_pass for float or double rows without a softcap or stored exps,
 * with the entropy's sum (softmax_stats), in AVX-512 intrinsics:
 * cyce_avx512.h's exp (vscalef) and its compare-and-masked-add count, where
 * GCC's version of the loop spent about 1.5 times the vector instructions
 * (docs/performance.md#softmax-stats).  The lanes are reduced in a fixed
 * order each CYCE_BLOCK: the sums depend on the row alone. */
static inline __attribute__((always_inline)) void CYCE_SFN(block_pass_avx512)(
    const CYCE_REAL *cur, int64_t len, CYCE_REAL bm, const CYCE_REAL *x_next, int64_t next_len,
    CYCE_REAL inv_t, CYCE_REAL *next_max, double *rest, double *count, double *s1)
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
        d = CYCE_SVOP(mul)(d, vscale);   /* exactly d where T = 1 */           \
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
        CYCE_SFN(prefetch_ahead)(x_next, start, stop);
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
 * and its slopes into slope (with a softcap: the loop of the softcap is
 * compiled once, with the map of the others). */
static CYCE_REAL CYCE_SFN(first_block)(const CYCE_STORE *x, CYCE_REAL *buf, CYCE_REAL *slope,
                                       int64_t len, const CYCE_SFN(cyce_logit_map) *map,
                                       CYCE_REAL *raw_max)
{
    CYCE_REAL m = -INFINITY;
    if (!map->softcap) {
#pragma omp simd reduction(max:m)
        for (int64_t j = 0; j < len; j++) {
            m = CYCE_LOAD(x[j]) > m ? CYCE_LOAD(x[j]) : m;
        }
        *raw_max = m;
        return m;
    }
#ifdef CYCE_STATS_VSOFTCAP
    const CYCE_SV cap = CYCE_SVOP(set1)(map->cap), inv_cap = CYCE_SVOP(set1)(map->inv_cap);
    CYCE_SV vm = CYCE_SVOP(set1)(-INFINITY), vxm = vm;
    for (int64_t j = 0; j < len; j += CYCE_SLANES) {
        CYCE_SMASK lanes = len - j >= CYCE_SLANES ? (CYCE_SMASK)~(CYCE_SMASK)0
                                                  : (CYCE_SMASK)((1u << (len - j)) - 1u);
        CYCE_CAPPED_MAP(lanes, x, buf, slope, 1);
    }
    *raw_max = CYCE_SVOP(reduce_max)(vxm);
    return CYCE_SVOP(reduce_max)(vm);
#else
    const CYCE_REAL cap = map->cap, inv_cap = map->inv_cap;
    CYCE_REAL xm = -INFINITY, sl;
#pragma omp simd reduction(max:m, xm)
    for (int64_t j = 0; j < len; j++) {
        CYCE_REAL v = CYCE_LOAD(x[j]);
        CYCE_REAL zj = CYCE_SFN(softcapped)(v, 1, cap, inv_cap, &sl);
        buf[j] = zj;
        slope[j] = sl;
        m = zj > m ? zj : m;
        xm = v > xm ? v : xm;
    }
    *raw_max = xm;
    return m;
#endif
}
#ifdef CYCE_STATS_VSOFTCAP
#undef CYCE_CAPPED_MAP
#endif

/* ---- softmax cross entropy of mapped logits against labels ----
 *
 * Block by block (block_pass), each block's exps against its own max, stored
 * in exps (the gradient itself where it holds them unrounded, else the
 * scratch), rescaled to the row's max by factor[k] = exp((block max - max) /
 * T) in the sums and in the gradient's pass, as cyce_row_blocked_exp_sum_m1
 * does; the smoothing sum likewise: sum_c (z_c - max) / T = sum_k [u_k + len_k
 * (bm_k - max) / T], every term <= 0.  The loss alone runs the same loop (its
 * exps to the scratch), so it has the same bits as with a gradient.
 * scratch: the slopes (n), exps where the gradient cannot hold them (n), two
 * blocks. */

/* What a row's gradient pass needs from its sums. */
typedef struct {
    cyce_hard_terms terms;
    int64_t block;
    int64_t n_blocks;
} CYCE_SFN(cyce_mapped_row);

/* A row whose gradient waits for the next row's block passes: its exps in
 * grad (NULL: none waits), its slopes (NULL: no softcap), its blocks'
 * factors and the scales of cyce_waiting_block, and its label's gradient,
 * written once every block is scaled. */
typedef struct {
    CYCE_REAL *grad;
    const CYCE_REAL *slope;
    const double *factor;
    double exp_scale, inv_t;   /* block k's a: exp_scale * factor[k] * inv_t */
    CYCE_REAL b;
    int64_t label;
    CYCE_REAL label_grad;
} CYCE_SFN(cyce_waiting_row);

/* The sums of one row and its exps (into exps), its slopes into slope, bufs
 * the softcap's two blocks; the blocks of waiting (unless NULL) scaled on
 * the way. */
static CYCE_SFN(cyce_mapped_row) CYCE_SFN(ce_mapped_row_sums)(
    const CYCE_STORE *x, CYCE_REAL *exps, CYCE_REAL *slope, CYCE_REAL *bufs, int64_t n,
    int64_t label, double row_weight, const cyce_ce_opts *opts, CYCE_SFN(cyce_logit_map) map,
    double *factor, const CYCE_SFN(cyce_waiting_row) *waiting)
{
    const int softcap = map.softcap;
    const int64_t block = CYCE_SFN(mapped_block)(n), n_blocks = (n + block - 1) / block;
    const int smoothing = opts->label_smoothing != 0.0;
    double block_max[CYCE_ONLINE_MAX_BLOCKS], rest[CYCE_ONLINE_MAX_BLOCKS];
    double count[CYCE_ONLINE_MAX_BLOCKS], shifted[CYCE_ONLINE_MAX_BLOCKS];
    CYCE_REAL raw, z_label = softcap ? 0 : CYCE_LOAD(x[label]);
    int64_t len = n < block ? n : block;
    CYCE_REAL bm = CYCE_SFN(first_block)(x, bufs, slope, len, &map, &raw);
    CYCE_REAL max = -INFINITY;
    for (int64_t k = 0, start = 0; k < n_blocks; k++, start += block) {
        len = n - start < block ? n - start : block;
        int64_t next = start + len;
        int64_t next_len = n - next < block ? n - next : block;
        if (softcap && label >= start && label < next) {
            z_label = bufs[(k % 2) * block + label - start];
        }
        CYCE_SFN(cyce_waiting_block) wait_k, *wait = NULL;
        if (waiting != NULL) {
            wait_k.grad = waiting->grad + start;
            wait_k.slope = waiting->slope == NULL ? NULL : waiting->slope + start;
            wait_k.a = (CYCE_REAL)(waiting->exp_scale * waiting->factor[k] * waiting->inv_t);
            wait_k.b = waiting->b;
            wait = &wait_k;
        }
        CYCE_SFN(cyce_block_sums) sums = CYCE_SFN(block_pass_at)(
            x, bufs, slope, exps, k, start, len, block, next_len, bm, &map, 0, wait);
        rest[k] = sums.rest;
        count[k] = sums.count;
        shifted[k] = sums.u;
        block_max[k] = bm;
        max = bm > max ? bm : max;
        bm = sums.next_max;
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
            double len_k = (double)(n - start < block ? n - start : block);
            smooth_shifted += cyce_smoothing_share(shifted[k], len_k, block_max[k], (double)max,
                                                   inv_t);
        }
    }
    total_m1 = max == -INFINITY ? (double)NAN : total_m1 + (count_at_max - 1.0);
    double label_shifted = ((double)z_label - (double)max) * inv_t;
    double label_exp = (double)exps[label] * factor[label / block];
    cyce_hard_row row = {(double)max * inv_t, total_m1, label_shifted,
                         cyce_label_exp_m1(label_shifted, label_exp),
                         opts->class_weight == NULL ? 1.0 : opts->class_weight[label],
                         smooth_shifted, row_weight};
    CYCE_SFN(cyce_mapped_row) result = {cyce_softmax_ce_hard_terms(n, row, *opts), block,
                                        n_blocks};
    return result;
}

/* ---- rows mapped whole: class-weighted smoothing, probability targets ----
 * The row's z goes to the scratch, then d = (z - max) / T over it, and the
 * row loops of the unmapped kernels run over d (in cache) against a max of
 * 0, the exps written over d. */

/* d = (z - max(z)) / T into d[0:n], z the softcap of x (x without one), and
 * its slopes into slope unless NULL; returns max(z) (-inf for an all -inf
 * row, whose d is NaN: the row's loss is). */
static CYCE_REAL CYCE_SFN(map_row)(const CYCE_STORE *x, CYCE_REAL *d, CYCE_REAL *slope,
                                   int64_t n, CYCE_SFN(cyce_logit_map) map)
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
        CYCE_REAL zj = CYCE_SFN(softcapped)(CYCE_LOAD(x[j]), 1, map.cap, map.inv_cap, &sl);
        d[j] = zj;
        slope[j] = sl;
        m = zj > m ? zj : m;
    }
#pragma omp simd
    for (int64_t j = 0; j < n; j++) {
        d[j] = (d[j] - m) * map.inv_temperature;
    }
    return m;
}

/* The sums of one row against its label, mapped whole (for class-weighted
 * smoothing: cyce_softmax_ce_hard_terms' formulas in d), its exps over d. */
static cyce_hard_terms CYCE_SFN(ce_whole_row_sums)(
    const CYCE_STORE *x, CYCE_REAL *d, CYCE_REAL *slope, int64_t n, int64_t label,
    double row_weight, const cyce_ce_opts *opts, CYCE_SFN(cyce_logit_map) map)
{
    CYCE_REAL m = CYCE_SFN(map_row)(x, d, slope, n, map);
    double smooth_shifted = CYCE_REAL_FN(cyce_row_sum_shifted)(d, opts->class_weight, n, 0);
    double label_shifted = (double)d[label];
    double total_m1 = CYCE_REAL_FN(cyce_row_exp_sum_m1)(d, d, n, 0, NULL, NULL, 0);
    cyce_hard_row row = {(double)m * map.inv_temperature_f64, total_m1, label_shifted,
                         cyce_label_exp_m1(label_shifted, d[label]),
                         opts->class_weight[label], smooth_shifted, row_weight};
    return cyce_softmax_ce_hard_terms(n, row, *opts);
}

/* The sums of one row against probabilities t smoothed to t' = (1-e) t +
 * e/C (row_softmax_ce_soft's formulas, in d), its exps over d. */
typedef struct {
    double mass;          /* sum_c w_c t'_c */
    double total_m1;
    double loss;          /* times the row's weight */
    double lse;
} CYCE_SFN(cyce_soft_row);

static inline __attribute__((always_inline)) CYCE_SFN(cyce_soft_row) CYCE_SFN(soft_sums)(
    const CYCE_STORE *x, CYCE_REAL *d, CYCE_REAL *slope, int64_t n, const void *target,
    int target_f64, double row_weight, const cyce_ce_opts *opts, CYCE_SFN(cyce_logit_map) map)
{
    CYCE_REAL m = CYCE_SFN(map_row)(x, d, slope, n, map);
    const double *class_weight = opts->class_weight;
    const CYCE_REAL uniform = (CYCE_REAL)(opts->label_smoothing / n);
    const CYCE_REAL keep = (CYCE_REAL)(1.0 - opts->label_smoothing);
    /* the mass, and its sum times d <= 0 (a class of no mass adds 0, also
     * where d = -inf), a CYCE_BLOCK at a time */
    double mass = 0.0, mass_shifted = 0.0;
#define CYCE_SOFT_MASS_LOOP(WEIGHT)                                             \
    for (int64_t start = 0; start < n; start += CYCE_BLOCK) {                   \
        int64_t stop = start + CYCE_BLOCK < n ? start + CYCE_BLOCK : n;          \
        CYCE_REAL block_mass = 0, block_shifted = 0;                            \
        _Pragma("omp simd reduction(+:block_mass, block_shifted)")              \
        for (int64_t c = start; c < stop; c++) {                                \
            CYCE_REAL wt = WEIGHT(c);                                           \
            CYCE_REAL term = wt * d[c];   /* selected, not loaded under the test */ \
            block_mass += wt;                                                   \
            block_shifted += wt != 0 ? term : 0;                                \
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
    double total_m1 = CYCE_REAL_FN(cyce_row_exp_sum_m1)(d, d, n, 0, NULL, NULL, 0);
    double log_total = cyce_log1p_nonneg(total_m1);
    double lse = (double)m * map.inv_temperature_f64 + log_total;
    double loss = mass * log_total - mass_shifted;
    CYCE_SFN(cyce_soft_row) result = {
        mass, total_m1, row_weight * (opts->z_loss != 0.0 ? loss + opts->z_loss * lse * lse : loss),
        lse};
    return result;
}

static CYCE_SFN(cyce_soft_row) CYCE_SFN(soft_row_sums)(
    const CYCE_STORE *x, CYCE_REAL *d, CYCE_REAL *slope, int64_t n, const void *target,
    int target_f64, double row_weight, const cyce_ce_opts *opts, CYCE_SFN(cyce_logit_map) map)
{
    return target_f64
        ? CYCE_SFN(soft_sums)(x, d, slope, n, target, 1, row_weight, opts, map)
        : CYCE_SFN(soft_sums)(x, d, slope, n, target, 0, row_weight, opts, map);
}

#endif   /* CYCE_DEFINE_SUMS */

/* ---- each pair's gradient stores, and its tasks ---- */

#if !CYCE_NATIVE
/* A half type's row as float, into row (after the float kernels' scratch). */
static inline const CYCE_REAL *CYCE_FN(row_as_real)(const CYCE_STORE *x, CYCE_REAL *row,
                                                    int64_t n)
{
#pragma omp simd
    for (int64_t j = 0; j < n; j++) {
        row[j] = CYCE_LOAD(x[j]);
    }
    return row;
}
#endif

/* Where a half type's row goes as float: past the float kernels' scratch. */
static inline CYCE_REAL *CYCE_FN(real_row)(CYCE_REAL *scratch, int64_t n)
{
    return scratch + 2 * n + 2 * CYCE_SFN(mapped_block)(n);
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

/* A row's gradient pass: grad[j] = (exps[j] * a_k - b) * slope[j] over
 * its blocks (slope NULL: no softcap), a_k = exp_scale * factor[k] * inv_t,
 * rounded once into grad's dtype. */
static __attribute__((noinline)) void CYCE_FN(scale_mapped_row)(
    const CYCE_REAL *exps, const CYCE_REAL *slope, CYCE_GRAD *grad, const double *factor,
    double exp_scale, double inv_t, CYCE_REAL b, int64_t n, int64_t block, int64_t n_blocks)
{
    for (int64_t k = 0, start = 0; k < n_blocks; k++, start += block) {
        int64_t end = start + block < n ? start + block : n;
        const CYCE_REAL a = (CYCE_REAL)(exp_scale * factor[k] * inv_t);
        if (slope == NULL) {
#pragma omp simd
            for (int64_t j = start; j < end; j++) {
                grad[j] = CYCE_TO_GRAD(exps[j] * a - b);
            }
        } else {
#pragma omp simd
            for (int64_t j = start; j < end; j++) {
                grad[j] = CYCE_TO_GRAD((exps[j] * a - b) * slope[j]);
            }
        }
    }
}

/* Rows first..stop against labels: returns the sum of their losses in row
 * order, and writes each one's to rows->row_loss unless NULL.  The gradient
 * is that of w = z / T, times dw/dz = 1 / T, times dz/dx (the slope).  Where
 * the gradient holds a float row's exps (and the block passes are the
 * intrinsics, CYCE_MAPPED_DEFERS), a row's gradient pass waits for the next
 * row's block passes, which run it beside their exps, and the rows' slopes
 * take turns in the scratch's two rows; the task's last row is scaled in a
 * pass of its own.  The same products either way, so the same bits. */
static double CYCE_FN(softmax_ce_hard_mapped_task)(const cyce_rows *rows,
                                                   const cyce_ce_opts *options, void *scratch,
                                                   int64_t first, int64_t stop)
{
    const cyce_ce_opts opts = *options;
    const CYCE_SFN(cyce_logit_map) map = CYCE_SFN(logit_map_of)(&opts);
    const double inv_t = map.inv_temperature_f64;
    const int64_t n = rows->n_classes;
    CYCE_REAL *slope = (CYCE_REAL *)scratch, *row_real = CYCE_FN(real_row)(slope, n);
    CYCE_REAL *bufs = slope + 2 * n;
    const int whole_rows = opts.label_smoothing != 0.0 && opts.class_weight != NULL;
    const int defer = CYCE_MAPPED_DEFERS && sizeof(CYCE_REAL) == 4 && CYCE_EXPS_IN_GRAD
        && rows->grad != NULL && !whole_rows;
    double factors[2][CYCE_ONLINE_MAX_BLOCKS];
    CYCE_SFN(cyce_waiting_row) waiting = {NULL, NULL, NULL, 0.0, inv_t, 0, 0, 0};
    int64_t turn = 0;   /* rows computed: ignored rows take no turn */
    double total = 0.0;
    (void)row_real;
    for (int64_t i = first; i < stop; i++) {
        const CYCE_STORE *x_row = (const CYCE_STORE *)rows->x + i * n;
        CYCE_GRAD *grad = rows->grad == NULL ? NULL : (CYCE_GRAD *)rows->grad + i * n;
        int64_t label = rows->labels[i];
        double row_weight = opts.sample_weight == NULL ? 1.0 : opts.sample_weight[i];
        double loss = 0.0;
        /* this row's slopes: the scratch's two rows in turn where rows wait */
        CYCE_REAL *row_slope = defer ? slope + (turn % 2) * n : slope;
        CYCE_REAL *slopes = map.softcap ? row_slope : NULL;
        double *factor = factors[turn % 2];
        /* exps in the gradient where it holds them unrounded, else in the scratch */
        CYCE_REAL *exps = CYCE_EXPS_IN_GRAD && grad != NULL ? (CYCE_REAL *)grad : slope + n;
        if (label == opts.ignore_index) {
            if (grad != NULL) {
                memset(grad, 0, (size_t)n * sizeof(CYCE_GRAD));
            }
            if (rows->row_loss != NULL) {
                rows->row_loss[i] = 0.0;
            }
            continue;
        }
        turn++;
        /* (read before any store: grad may be the row itself) */
        const CYCE_REAL *x = CYCE_ROW_OF(x_row, row_real, n);
        if (whole_rows) {
            cyce_hard_terms terms = CYCE_SFN(ce_whole_row_sums)(x, slope + n, slope, n, label,
                                                                 row_weight, &opts, map);
            loss = terms.loss;
            if (grad != NULL) {
                CYCE_FN(chain_store)(slope + n, slopes, grad, opts.class_weight, n,
                                     (CYCE_REAL)(terms.exp_scale * inv_t),
                                     terms.weight_scale * inv_t);
                double label_slope = slopes == NULL ? 1.0 : (double)slope[label];
                grad[label] = CYCE_TO_GRAD((CYCE_REAL)(terms.label_grad * inv_t * label_slope));
            }
        } else {
            CYCE_SFN(cyce_mapped_row) row = CYCE_SFN(ce_mapped_row_sums)(
                x, exps, row_slope, bufs, n, label, row_weight, &opts, map, factor,
                waiting.grad == NULL ? NULL : &waiting);
            loss = row.terms.loss;
            if (waiting.grad != NULL) {
                waiting.grad[waiting.label] = waiting.label_grad;
                waiting.grad = NULL;
            }
            if (grad != NULL) {
                const CYCE_REAL b = (CYCE_REAL)(row.terms.weight_scale * inv_t);
                double label_slope = slopes == NULL ? 1.0 : (double)row_slope[label];
                CYCE_REAL label_grad = (CYCE_REAL)(row.terms.label_grad * inv_t * label_slope);
                if (defer) {
                    CYCE_SFN(cyce_waiting_row) next = {(CYCE_REAL *)grad, slopes, factor,
                                                       row.terms.exp_scale, inv_t, b, label,
                                                       label_grad};
                    waiting = next;
                } else {
                    CYCE_FN(scale_mapped_row)(exps, slopes, grad, factor, row.terms.exp_scale,
                                              inv_t, b, n, row.block, row.n_blocks);
                    grad[label] = CYCE_TO_GRAD(label_grad);
                }
            }
        }
        if (rows->row_loss != NULL) {
            rows->row_loss[i] = loss;
        }
        total += loss;
    }
    if (waiting.grad != NULL) {
        const int64_t block = CYCE_SFN(mapped_block)(n);
        CYCE_FN(scale_mapped_row)(waiting.grad, waiting.slope, (CYCE_GRAD *)waiting.grad,
                                  waiting.factor, waiting.exp_scale, inv_t, waiting.b, n, block,
                                  (n + block - 1) / block);
        waiting.grad[waiting.label] = waiting.label_grad;
    }
    return total;
}

/* Rows first..stop against probabilities: each row's loss to rows->row_loss;
 * the gradient (sum_c w_c t'_c + 2 z lse) p - w t', carried back likewise. */
static void CYCE_FN(softmax_ce_soft_mapped_task)(const cyce_rows *rows,
                                                 const cyce_ce_opts *options, void *scratch,
                                                 int64_t first, int64_t stop)
{
    const cyce_ce_opts opts = *options;
    const CYCE_SFN(cyce_logit_map) map = CYCE_SFN(logit_map_of)(&opts);
    const double inv_t = map.inv_temperature_f64;
    const int64_t n = rows->n_classes;
    const double *class_weight = opts.class_weight;
    const CYCE_REAL uniform = (CYCE_REAL)(opts.label_smoothing / n);
    const CYCE_REAL keep = (CYCE_REAL)(1.0 - opts.label_smoothing);
    CYCE_REAL *slope = (CYCE_REAL *)scratch, *d = slope + n, *row_real = CYCE_FN(real_row)(slope, n);
    CYCE_REAL *slopes = map.softcap ? slope : NULL;
    (void)row_real;
    for (int64_t i = first; i < stop; i++) {
        const CYCE_REAL *x = CYCE_ROW_OF((const CYCE_STORE *)rows->x + i * n, row_real, n);
        CYCE_GRAD *grad = rows->grad == NULL ? NULL : (CYCE_GRAD *)rows->grad + i * n;
        double row_weight = opts.sample_weight == NULL ? 1.0 : opts.sample_weight[i];
        const void *target = rows->targets_f64 ? (const void *)((const double *)rows->targets + i * n)
                                               : (const void *)((const float *)rows->targets + i * n);
        CYCE_SFN(cyce_soft_row) row = CYCE_SFN(soft_row_sums)(x, d, slope, n, target,
                                                              rows->targets_f64, row_weight,
                                                              &opts, map);
        rows->row_loss[i] = row.loss;
        if (grad == NULL) {
            continue;
        }
        double coef = row_weight * opts.grad_scale;
        const CYCE_REAL exp_scale = (CYCE_REAL)(coef * (row.mass + 2.0 * opts.z_loss * row.lse)
                                                / (1.0 + row.total_m1) * inv_t);
        const CYCE_REAL coef_t = (CYCE_REAL)(coef * inv_t);
        /* a loop per targets' dtype and case of the class weights */
#define CYCE_SOFT_GRAD_LOOP(WEIGHT, f64)                                        \
        do {                                                                    \
            const int target_f64 = f64;                                         \
            _Pragma("omp simd")                                                 \
            for (int64_t c = 0; c < n; c++) {                                   \
                CYCE_REAL g = d[c] * exp_scale - coef_t * WEIGHT(c);            \
                grad[c] = CYCE_TO_GRAD(slopes == NULL ? g : g * slope[c]);      \
            }                                                                   \
        } while (0)
        if (rows->targets_f64 && class_weight == NULL) {
            CYCE_SOFT_GRAD_LOOP(CYCE_SOFT_WEIGHT, 1);
        } else if (rows->targets_f64) {
            CYCE_SOFT_GRAD_LOOP(CYCE_SOFT_WEIGHTED, 1);
        } else if (class_weight == NULL) {
            CYCE_SOFT_GRAD_LOOP(CYCE_SOFT_WEIGHT, 0);
        } else {
            CYCE_SOFT_GRAD_LOOP(CYCE_SOFT_WEIGHTED, 0);
        }
#undef CYCE_SOFT_GRAD_LOOP
    }
}

#if CYCE_DEFINE_SUMS

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
} CYCE_SFN(cyce_stats_sums);

/* A block's sums (rest and count against its max bm, and s1; bm / T)
 * merged into the row's. */
static inline void CYCE_SFN(stats_merge)(CYCE_SFN(cyce_stats_sums) *sums, double bm, double rest,
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
static inline int64_t CYCE_SFN(first_equal)(const CYCE_STORE *x, int64_t n, CYCE_REAL value)
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
static void CYCE_SFN(row_softmax_stats)(
    const CYCE_STORE *x, CYCE_REAL *scratch, int64_t n, int64_t label,
    const CYCE_SFN(cyce_logit_map) *map_of, CYCE_REAL *lse, CYCE_REAL *logprob,
    CYCE_REAL *entropy, int64_t *argmax)
{
    const CYCE_SFN(cyce_logit_map) map = *map_of;
    const int softcap = map.softcap;
    const int64_t block = CYCE_SFN(mapped_block)(n);
    CYCE_REAL *slope = scratch, *exps = scratch + n, *bufs = scratch + 2 * n;
    const double inv_t = map.inv_temperature_f64;
    CYCE_SFN(cyce_stats_sums) sums = {-INFINITY, -1.0, 0.0};
    CYCE_REAL raw, z_label = softcap || label < 0 ? 0 : CYCE_LOAD(x[label]);
    CYCE_REAL max = -INFINITY;   /* of z, whose / T is sums.max */
    int64_t len = n < block ? n : block;
    CYCE_REAL bm = CYCE_SFN(first_block)(x, bufs, slope, len, &map, &raw);
    /* the first index of the raw max: the softcap may tie what it saturates */
    CYCE_REAL best = raw;
    int64_t best_at = raw > -INFINITY ? CYCE_SFN(first_equal)(x, len, raw) : 0;
    for (int64_t k = 0, start = 0; start < n; k++, start += len) {
        len = n - start < block ? n - start : block;
        int64_t next = start + len;
        int64_t next_len = n - next < block ? n - next : block;
        if (softcap && label >= start && label < next) {
            z_label = bufs[(k % 2) * block + label - start];
        }
        CYCE_REAL next_max, next_raw;
        double rest, count, s1;
#ifdef CYCE_STATS_VEXP
        if (!softcap) {
            CYCE_SFN(block_pass_avx512)(x + start, len, bm, x + next, next_len,
                                        map.inv_temperature, &next_max, &rest, &count, &s1);
            next_raw = next_max;
        } else
#endif
        {
            CYCE_SFN(cyce_block_sums) block_sums = CYCE_SFN(block_pass_at)(
                x, bufs, slope, exps, k, start, len, block, next_len, bm, &map, 1, NULL);
            next_max = block_sums.next_max;
            next_raw = block_sums.next_raw;
            rest = block_sums.rest;
            count = block_sums.count;
            s1 = block_sums.s1;
        }
        if (bm != -INFINITY) {
            CYCE_SFN(stats_merge)(&sums, (double)bm * inv_t, rest, count, s1);
        }
        max = bm > max ? bm : max;
        if (next_len > 0) {
            if (next_raw > best) {
                best = next_raw;
                best_at = next + CYCE_SFN(first_equal)(x + next, next_len, next_raw);
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

#endif   /* CYCE_DEFINE_SUMS */

static void CYCE_FN(softmax_stats_task)(const cyce_rows *rows, const cyce_ce_opts *opts,
                                        const cyce_stats_out *out, void *scratch,
                                        int64_t first, int64_t stop)
{
    const int64_t n = rows->n_classes;
    const CYCE_SFN(cyce_logit_map) map = CYCE_SFN(logit_map_of)(opts);
    CYCE_REAL *lse = (CYCE_REAL *)out->lse, *logprob = (CYCE_REAL *)out->logprob;
    CYCE_REAL *entropy = (CYCE_REAL *)out->entropy;
    CYCE_REAL *row_real = CYCE_FN(real_row)((CYCE_REAL *)scratch, n);
    (void)row_real;
    for (int64_t i = first; i < stop; i++) {
        const CYCE_REAL *x = CYCE_ROW_OF((const CYCE_STORE *)rows->x + i * n, row_real, n);
        int64_t label = rows->labels == NULL ? -1 : rows->labels[i];
        CYCE_REAL *row_logprob = logprob == NULL ? NULL : logprob + i;
        CYCE_SFN(row_softmax_stats)(x, (CYCE_REAL *)scratch, n, label, &map, lse + i,
                                    row_logprob, entropy + i, out->argmax + i);
    }
}

/* the scratch of a thread: two rows (the slopes and exps the gradient
 * cannot hold, or a row mapped whole and its slopes), two blocks, and a half
 * type's row as float */
static size_t CYCE_FN(mapped_scratch_bytes)(int64_t n)
{
    return (size_t)(CYCE_SCRATCH_ROWS * n + 2 * CYCE_SFN(mapped_block)(n)) * sizeof(CYCE_REAL);
}

const cyce_mapped_kernels CYCE_TABLE_NAME(CYCE_SUFFIX) = {
    CYCE_FN(mapped_scratch_bytes),
    CYCE_FN(softmax_stats_task),
    CYCE_FN(softmax_ce_hard_mapped_task),
    CYCE_FN(softmax_ce_soft_mapped_task),
};

#undef CYCE_SOFT_WEIGHT
#undef CYCE_SOFT_WEIGHTED
#undef CYCE_SFN
#undef CYCE_DEFINE_SUMS
#undef CYCE_SCRATCH_ROWS
#undef CYCE_ROW_OF
#undef CYCE_FN
#undef CYCE_REAL_FN
#undef CYCE_CAT
#undef CYCE_CAT_
