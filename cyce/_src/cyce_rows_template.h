/*
 * One contiguous row's hot loops, written once for every storage dtype.
 * cyce_rows.h includes this file once per pair of dtypes, with CYCE_STORE
 * the element type of the input (float, double, or the uint16_t bits of
 * bfloat16 and float16), CYCE_GRAD that of the gradient or softmax written
 * (the input's, or float for a half input's float32 gradient), CYCE_REAL
 * the type computed in (float for the half types), CYCE_LOAD and
 * CYCE_TO_GRAD converting from and to them, CYCE_EXPS_IN_GRAD 1 where
 * CYCE_GRAD is CYCE_REAL, CYCE_NATIVE 1 for float and double, and
 * CYCE_SUFFIX naming the pair.
 *
 * The exps of a row go to `out`, of CYCE_REAL: where CYCE_EXPS_IN_GRAD the
 * gradient itself (scaled in place), otherwise a float row of the caller's,
 * scaled and rounded into the gradient (exps rounded to a half type and
 * scaled afterwards would be rounded twice).
 *
 * Every loop is branch-free so GCC vectorises it; reductions carry
 * `omp simd reduction(...)`, which lets GCC reassociate just that loop (we do
 * not use -ffast-math).  The order of those partial sums is fixed by the
 * vector width of the instruction set, so a result never depends on the
 * thread count.
 * In the avx512 object the exp-and-sum loops are cyce_avx512.h's instead
 * (CYCE_AVX512_SPANS), written with intrinsics.
 *
 * Sums of exp are accumulated in blocks of CYCE_BLOCK elements in the row's
 * dtype, and the block totals in double: the float32 error of a sum then
 * grows with CYCE_BLOCK / vector width, not with the row length (C = 256k).
 */
#define CYCE_CAT_(a, b) a##_##b
#define CYCE_CAT(a, b) CYCE_CAT_(a, b)
#define CYCE_FN(name) CYCE_CAT(name, CYCE_SUFFIX)
/* x[j]'s term of a row's exp sum, e = exp(x[j] - shift), and then its
 * count: into c where x[j] is the row's top (e is exactly 1), else into s */
#define CYCE_EXP_TERM(j)                              \
    CYCE_REAL e = CYCE_EXP(CYCE_LOAD(x[j]) - shift);  \
    int is_top = CYCE_LOAD(x[j]) == top
#define CYCE_COUNT_TERM()     \
    s += is_top ? 0 : e;      \
    c += is_top ? 1 : 0
/* element j of a row's exps, scaled into out: where CYCE_EXPS_IN_GRAD the
 * exps are out's own values (exps == out) */
#if CYCE_EXPS_IN_GRAD
#define CYCE_EXPS_AT(exps, out, j) (out)[j]
#else
#define CYCE_EXPS_AT(exps, out, j) (exps)[j]
#endif

/* The largest element (-inf for an all -inf row).  A NaN may or may not win;
 * callers rely on the NaN reaching the sum of exp instead.  Four quarters of
 * the row are scanned side by side: one running max is a chain of dependent
 * max instructions, four chains keep the vector ports busy
 * (docs/performance.md#row-max).  The max is exact, so the order changes
 * nothing. */
static inline CYCE_REAL CYCE_FN(cyce_row_max)(const CYCE_STORE *x, int64_t n)
{
    int64_t quarter = n / 4;
    const CYCE_STORE *x1 = x + quarter, *x2 = x + 2 * quarter, *x3 = x + 3 * quarter;
    CYCE_REAL m0 = -INFINITY, m1 = -INFINITY, m2 = -INFINITY, m3 = -INFINITY;
#pragma omp simd reduction(max:m0, m1, m2, m3)
    for (int64_t j = 0; j < quarter; j++) {
        m0 = CYCE_LOAD(x[j]) > m0 ? CYCE_LOAD(x[j]) : m0;
        m1 = CYCE_LOAD(x1[j]) > m1 ? CYCE_LOAD(x1[j]) : m1;
        m2 = CYCE_LOAD(x2[j]) > m2 ? CYCE_LOAD(x2[j]) : m2;
        m3 = CYCE_LOAD(x3[j]) > m3 ? CYCE_LOAD(x3[j]) : m3;
    }
    for (int64_t j = 4 * quarter; j < n; j++) {
        m0 = CYCE_LOAD(x[j]) > m0 ? CYCE_LOAD(x[j]) : m0;
    }
    m0 = m1 > m0 ? m1 : m0;
    m2 = m3 > m2 ? m3 : m2;
    return m2 > m0 ? m2 : m0;
}

#if CYCE_NATIVE
/* out[j] = exp(x[j]) for x[j] <= 0 (or NaN), j < n, with the exp the
 * softmax loops use (in the avx512 object, cyce_avx512.h's). */
static inline void CYCE_FN(cyce_exp_nonpos_values)(const CYCE_REAL *x, CYCE_REAL *out, int64_t n)
{
#ifdef CYCE_AVX512_SPANS
    CYCE_FN(cyce_exp_nonpos_avx512)(x, out, n);
#else
#pragma omp simd
    for (int64_t j = 0; j < n; j++) {
        out[j] = CYCE_EXP(x[j]);
    }
#endif
}
#endif

/* exp(x[j] - shift) for start <= j < stop, stored in out unless out is
 * NULL; the terms equal to `top` (exactly 1) are counted into *count, the
 * others summed into *sum (both in the row's dtype, carried on from the
 * values passed in).  The loop of cyce_row_exp_sum_m1 and of the blocks'
 * stretches without a next block to read. */
static inline __attribute__((always_inline)) void CYCE_FN(cyce_span_exp_sum_count)(
    const CYCE_STORE *x, CYCE_REAL *out, int64_t start, int64_t stop, CYCE_REAL shift,
    CYCE_REAL top, CYCE_REAL *sum, CYCE_REAL *count)
{
#ifdef CYCE_AVX512_SPANS
    CYCE_FN(cyce_span_avx512)(x, out, start, stop, shift, top, sum, count);
#else
    CYCE_REAL s = *sum, c = *count;
    if (out == NULL) {
#pragma omp simd reduction(+:s, c)
        for (int64_t j = start; j < stop; j++) {
            CYCE_EXP_TERM(j);
            CYCE_COUNT_TERM();
        }
    } else {
#pragma omp simd reduction(+:s, c)
        for (int64_t j = start; j < stop; j++) {
            CYCE_EXP_TERM(j);
            out[j] = e;
            CYCE_COUNT_TERM();
        }
    }
    *sum = s;
    *count = c;
#endif
}

/* One block's exps, exp(x[j] - shift) for j < len (stored in out unless out
 * is NULL), summed the way cyce_row_exp_sum_m1 sums them: terms equal to
 * `top` (exactly 1) counted into *count, the others summed, a CYCE_BLOCK
 * at a time.  Meanwhile *next_max = max(next[0:next_len]) (0 for a row's
 * last block, unless the next row's first block is read too; past len, after
 * the exps, for a next row's first block longer than this last one), `ahead`
 * (unless NULL: n_ahead elements, spread over the block) is prefetched, and
 * prev[0:len] (unless NULL: the previous row's block of exps, in cache) is
 * scaled by prev_scale into prev_out (prev itself where CYCE_EXPS_IN_GRAD),
 * a CYCE_BLOCK at a time ahead of the exps: its loads,
 * stores and one multiply per vector run beside the exps' arithmetic, where
 * a pass of its own would leave the vector units idle.  In the avx512
 * object alone (elsewhere they must be 0 and NULL: CYCE_ONE_PASS_SMOOTHING),
 * label smoothing's prev_b is subtracted from those products, and shifted,
 * unless NULL, gets sum_j (x[j] - shift), a CYCE_BLOCK at a time in the
 * row's dtype, from inside the exps' loop. */
static inline __attribute__((always_inline)) double CYCE_FN(cyce_block_exp_sum)(
    const CYCE_STORE *x, CYCE_REAL *out, int64_t len, CYCE_REAL shift, CYCE_REAL top,
    const CYCE_STORE *next, int64_t next_len, CYCE_REAL *next_max, double *count,
    const CYCE_STORE *ahead, int64_t n_ahead, CYCE_REAL *prev, CYCE_GRAD *prev_out,
    CYCE_REAL prev_scale, CYCE_REAL prev_b, double *shifted)
{
#if CYCE_EXPS_IN_GRAD
    prev_out = prev;   /* the exps are the gradient: scaled in place */
#endif
#ifdef CYCE_AVX512_SPANS
    CYCE_REAL m;
    /* one copy of the loop per case, out, prev and smoothing known in each:
     * tested inside the loop, with the constants spilled around the tests,
     * the loop read memory slower (docs/performance.md#unswitched-block-loop) */
    double rest;
#define CYCE_BLOCK_CASES(smooth)                                                                \
    if (prev != NULL) {                                                                         \
        rest = CYCE_FN(cyce_block_exp_sum_avx512)(x, out, len, shift, top, next, next_len,      \
                                                  &m, count, ahead, prev, prev_out, prev_scale, \
                                                  prev_b, smooth, shifted);                     \
    } else if (out != NULL) {                                                                   \
        rest = CYCE_FN(cyce_block_exp_sum_avx512)(x, out, len, shift, top, next, next_len,      \
                                                  &m, count, ahead, NULL, NULL, 0, 0, smooth,   \
                                                  shifted);                                     \
    } else {                                                                                    \
        rest = CYCE_FN(cyce_block_exp_sum_avx512)(x, NULL, len, shift, top, next, next_len,     \
                                                  &m, count, ahead, NULL, NULL, 0, 0, smooth,   \
                                                  shifted);                                     \
    }
    if (shifted != NULL) {
        CYCE_BLOCK_CASES(1)
    } else {
        CYCE_BLOCK_CASES(0)
    }
#undef CYCE_BLOCK_CASES
    (void)n_ahead;   /* ahead + j is prefetched with each vector j < len */
#else
    /* 0 and NULL here: no smoothing in these blocks (CYCE_ONE_PASS_SMOOTHING) */
    (void)prev_b;
    (void)shifted;
    double rest = 0.0, counted = 0.0;
    CYCE_REAL m = -INFINITY;
    /* the share of `ahead` to prefetch per CYCE_BLOCK, whole cache lines */
    const int64_t line = CYCE_LINE / (int64_t)sizeof(CYCE_STORE);
    int64_t ahead_step = ahead == NULL ? 0
        : (n_ahead * CYCE_BLOCK / len + line - 1) / line * line;
    int64_t prefetched = 0;
    for (int64_t start = 0; start < len; start += CYCE_BLOCK) {
        int64_t stop = start + CYCE_BLOCK < len ? start + CYCE_BLOCK : len;
        int64_t fused = next_len < start ? start : (next_len < stop ? next_len : stop);
        if (ahead != NULL) {
            int64_t until = prefetched + ahead_step < n_ahead ? prefetched + ahead_step : n_ahead;
            for (; prefetched < until; prefetched += line) {
                __builtin_prefetch(ahead + prefetched, 0, CYCE_PREFETCH_LOCALITY);
            }
        }
        CYCE_REAL s = 0, c = 0;   /* c: at most CYCE_BLOCK, exact in either dtype */
        if (prev != NULL) {
#pragma omp simd
            for (int64_t j = start; j < stop; j++) {
                prev_out[j] = CYCE_TO_GRAD(CYCE_EXPS_AT(prev, prev_out, j) * prev_scale);
            }
        }
        if (out == NULL) {
#pragma omp simd reduction(+:s, c) reduction(max:m)
            for (int64_t j = start; j < fused; j++) {
                CYCE_EXP_TERM(j);
                CYCE_COUNT_TERM();
                m = CYCE_LOAD(next[j]) > m ? CYCE_LOAD(next[j]) : m;
            }
        } else {
#pragma omp simd reduction(+:s, c) reduction(max:m)
            for (int64_t j = start; j < fused; j++) {
                CYCE_EXP_TERM(j);
                out[j] = e;
                CYCE_COUNT_TERM();
                m = CYCE_LOAD(next[j]) > m ? CYCE_LOAD(next[j]) : m;
            }
        }
        CYCE_FN(cyce_span_exp_sum_count)(x, out, fused, stop, shift, top, &s, &c);
        rest += (double)s;
        counted += (double)c;
    }
    *count = counted;
#endif
    if (next_len > len) {
        /* the next row's first block, longer than this row's last one:
         * the part the exps did not read */
        CYCE_REAL m_rest = CYCE_FN(cyce_row_max)(next + len, next_len - len);
        m = m_rest > m ? m_rest : m;
    }
    *next_max = m;
    return rest;
}

/* sum_j exp(x[j] - max) - 1 for max = max(x), storing exp(x[j] - max) in
 * out unless out is NULL.  out may be x (in place: each element is read
 * before it is written, at the same index).
 *
 * Why minus one: the max's own term is exactly 1 and dominates the sum when
 * the row is confidently classified.  Then the loss is log1p(tiny), and adding
 * tiny to 1 in the row's dtype would lose most of it (float32 keeps 7 digits
 * of the sum, not of the tiny part).  So the terms of elements equal to the
 * max (each exactly 1) are counted, not summed, the others are summed on
 * their own, and the result is rest + (count - 1): for a confident row the
 * tiny rest itself.  Counting in the same pass costs a compare and a select
 * per vector, where finding the max's index first was a pass of its own.
 * With an infinite max nothing is set apart, so its inf - inf makes the row
 * NaN (as in PyTorch); a NaN anywhere makes the result NaN.
 *
 * The sums run in blocks of CYCE_BLOCK elements in the row's dtype, the
 * block totals in double.  ahead, unless NULL, is the next row: it is
 * prefetched into cache block by block, and so is ahead_targets (unless
 * NULL: the next row's targets, of target_bytes each).  This pass is
 * compute-bound on a row already in L2, so the memory system is otherwise
 * idle here, while the next row's first passes would wait on DRAM. */
static inline double CYCE_FN(cyce_row_exp_sum_m1)(const CYCE_STORE *x, CYCE_REAL *out, int64_t n,
                                                  CYCE_REAL max, const CYCE_STORE *ahead,
                                                  const char *ahead_targets, int64_t target_bytes)
{
    /* what "equal to the max" compares against: NaN, equal to nothing, when
     * the max is infinite */
    CYCE_REAL top = isfinite(max) ? max : (CYCE_REAL)NAN;
    double rest = 0.0, count = 0.0;
    /* the max is known here (smoothing needs it first), so this is not
     * cyce_block_exp_sum with nothing to fuse, which measured slower
     * (docs/performance.md#next-row-prefetch) */
    for (int64_t block = 0; block < n; block += CYCE_BLOCK) {
        int64_t end = block + CYCE_BLOCK < n ? block + CYCE_BLOCK : n;
        if (ahead != NULL) {
            for (int64_t j = block; j < end; j += CYCE_LINE / (int64_t)sizeof(CYCE_STORE)) {
                __builtin_prefetch(ahead + j, 0, 2);
            }
        }
        if (ahead_targets != NULL) {
            for (int64_t at = block * target_bytes; at < end * target_bytes; at += CYCE_LINE) {
                __builtin_prefetch(ahead_targets + at, 0, 2);
            }
        }
        CYCE_REAL s = 0, c = 0;   /* c: at most CYCE_BLOCK, exact in either dtype */
        CYCE_FN(cyce_span_exp_sum_count)(x, out, block, end, max, top, &s, &c);
        rest += (double)s;
        count += (double)c;
    }
    return rest + (count - 1.0);
}

/* sum_j w[j] * (x[j] - shift), w == NULL meaning all ones.  With shift the row
 * max every term has one sign, so the sum has no cancellation (label
 * smoothing needs it next to W * log(sum exp)). */
static inline double CYCE_FN(cyce_row_sum_shifted)(const CYCE_STORE *x, const double *w,
                                                  int64_t n, CYCE_REAL shift)
{
    double total = 0.0;
    if (w == NULL) {
        for (int64_t start = 0; start < n; start += CYCE_BLOCK) {
            int64_t stop = start + CYCE_BLOCK < n ? start + CYCE_BLOCK : n;
            CYCE_REAL s = 0;
#pragma omp simd reduction(+:s)
            for (int64_t j = start; j < stop; j++) {
                s += CYCE_LOAD(x[j]) - shift;
            }
            total += (double)s;
        }
    } else {
#pragma omp simd reduction(+:total)
        for (int64_t j = 0; j < n; j++) {
            total += w[j] * (double)(CYCE_LOAD(x[j]) - shift);
        }
    }
    return total;
}

/* out[j] = exps[j] * a - b * w[j] for start <= j < stop (w == NULL: all
 * ones), rounded to out's dtype. */
static inline __attribute__((always_inline)) void CYCE_FN(cyce_span_scale_sub)(
    const CYCE_REAL *exps, CYCE_GRAD *out, const double *w, int64_t start, int64_t stop,
    CYCE_REAL a, CYCE_REAL b)
{
    (void)exps;
#if defined(CYCE_AVX512_SPANS) && !CYCE_EXPS_IN_GRAD
    if (sizeof(CYCE_GRAD) == 2 && w == NULL) {
        CYCE_FN(cyce_span_scale_sub_avx512)(exps, out, start, stop, a, b);
        return;
    }
#endif
    if (w == NULL) {
#pragma omp simd
        for (int64_t j = start; j < stop; j++) {
            out[j] = CYCE_TO_GRAD(CYCE_EXPS_AT(exps, out, j) * a - b);
        }
    } else {
#pragma omp simd
        for (int64_t j = start; j < stop; j++) {
            out[j] = CYCE_TO_GRAD(CYCE_EXPS_AT(exps, out, j) * a - (CYCE_REAL)(b * w[j]));
        }
    }
}

/* cyce_row_scale_sub, whose row is long (`far`): then, a CYCE_BLOCK at a
 * time, the lines CYCE_PREFETCH_AHEAD_BYTES ahead are prefetched into L2 for
 * writing.  A row longer than CYCE_DEFER_MAX_BYTES is no longer all in L2
 * when its scaling pass comes, and the hardware prefetcher alone left the
 * pass waiting on memory; shorter rows are in L2 and go without
 * (docs/performance.md#scaling-pass-prefetch). */
static inline void CYCE_FN(cyce_lines_scale_sub)(const CYCE_REAL *exps, CYCE_GRAD *out,
                                                const double *w, int64_t n, CYCE_REAL a,
                                                CYCE_REAL b, int far)
{
    const int64_t ahead = CYCE_PREFETCH_AHEAD_BYTES / (int64_t)sizeof(CYCE_GRAD);
    const int64_t line = CYCE_LINE / (int64_t)sizeof(CYCE_GRAD);
    int64_t head = cyce_line_head(out, sizeof(CYCE_GRAD));
    head = head < n ? head : n;
    CYCE_FN(cyce_span_scale_sub)(exps, out, w, 0, head, a, b);
    if (!far) {
        CYCE_FN(cyce_span_scale_sub)(exps, out, w, head, n, a, b);
        return;
    }
    for (int64_t start = head; start < n; start += CYCE_BLOCK) {
        int64_t stop = start + CYCE_BLOCK < n ? start + CYCE_BLOCK : n;
        for (int64_t j = start; j < stop; j += line) {
            __builtin_prefetch(out + j + ahead, 1, 2);
#if !CYCE_EXPS_IN_GRAD
            /* the exps of a half gradient's line: float, two lines of their own */
            __builtin_prefetch(exps + j + ahead, 0, 2);
            __builtin_prefetch(exps + j + ahead + CYCE_LINE / (int64_t)sizeof(CYCE_REAL), 0, 2);
#endif
        }
        CYCE_FN(cyce_span_scale_sub)(exps, out, w, start, stop, a, b);
    }
}

/* out[j] = exps[j] * a - b * w[j]  (w == NULL: all ones).  Turns the stored
 * exp(x - max) into the gradient: a = scale * total target weight / sum exp,
 * b = scale * smoothing / C.
 *
 * The elements before out's first cache line go first (cyce_line_head), so
 * that the vectors of the rest do not split over two lines; each element is
 * computed on its own, so the bits are the same. */
static inline void CYCE_FN(cyce_row_scale_sub)(const CYCE_REAL *exps, CYCE_GRAD *out,
                                              const double *w, int64_t n, CYCE_REAL a, CYCE_REAL b)
{
    CYCE_FN(cyce_lines_scale_sub)(exps, out, w, n, a, b,
                                  n * (int64_t)sizeof(CYCE_REAL) > CYCE_DEFER_MAX_BYTES);
}

/* Long rows, block by block, in one pass over memory.
 *
 * The passes of cyce_row_max and cyce_row_exp_sum_m1 take turns: the max
 * pass waits on memory while the vector units idle, the exp pass keeps them
 * busy while memory idles.  So a long row is cut into blocks of `block`
 * elements, each block's exps are taken against the block's own max, and the
 * next block's max is taken inside this block's exp loop: its reads from
 * memory overlap this block's exps.  Each block's terms are rescaled to the
 * row max afterwards, by factor[k] = exp(block max - row max), in the sums
 * here and in the gradient's scaling pass (cyce_row_blocked_scale_sub). */

/* The block length of a row of n elements: CYCE_ONLINE_BLOCK_BYTES, or
 * longer (whole CYCE_BLOCKs) where the row would have more than
 * CYCE_ONLINE_MAX_BLOCKS of them. */
static inline int64_t CYCE_FN(cyce_online_block)(int64_t n)
{
    int64_t block = CYCE_ONLINE_BLOCK_BYTES / (int64_t)sizeof(CYCE_REAL);
    if (n > block * CYCE_ONLINE_MAX_BLOCKS) {
        int64_t per_block = (n + CYCE_ONLINE_MAX_BLOCKS - 1) / CYCE_ONLINE_MAX_BLOCKS;
        block = (per_block + CYCE_BLOCK - 1) / CYCE_BLOCK * CYCE_BLOCK;
    }
    return block;
}

/* sum_j exp(x[j] - max) - 1 for max = max(x) (written to *row_max), as
 * cyce_row_exp_sum_m1 computes it, block by block: out (unless NULL; may be
 * x) gets exp(x[j] - block max), and factor[k] = exp(block max - max) for the
 * k-th block of cyce_online_block(n) elements (at most CYCE_ONLINE_MAX_BLOCKS
 * of them).
 *
 * Rows chain the same way, row to row: with fuse_next, the next row's first
 * block (at x + n, the same length as this row's first) has its max taken
 * during this row's last block's exps, into *carried_max, and the next call
 * gets it back with carried set instead of reading that block first (a pass
 * with no exps to hide it: docs/performance.md#row-chaining).
 * Each block prefetches the stretch CYCE_PREFETCH_AHEAD_BYTES past its own
 * start (into the next row for the last blocks: rows are contiguous, and
 * prefetches past the array's end do not fault); a row of one block, the row
 * after the next.
 *
 * prev, unless NULL, is the previous row's exps (n elements, the same
 * blocks), still exp(x - block max): they are scaled by (CYCE_REAL)(prev_a *
 * prev_factor[k]), less prev_b, block by block during this row's exps into
 * its gradient prev_out, which is what
 * cyce_row_blocked_scale_sub(prev, prev_out, NULL, n, prev_factor, prev_a, prev_b) does
 * in a pass of its own (the same arithmetic, so the same bits).
 *
 * smooth_shifted, unless NULL, gets label smoothing's sum_j (x[j] - max),
 * each block's share u_k taken with its exps against its own max, then
 * sum_k [u_k + len_k (block max - max)]: every term <= 0, no cancellation.
 *
 * The sum: blocks whose max is the row's add their rest and count as in
 * cyce_row_exp_sum_m1 (so a confident row keeps its tiny sum exactly), the
 * others add factor * (rest + count).  A block of -inf only is shifted by 0,
 * its exps exactly 0.  An infinite row max makes the row NaN, as in
 * cyce_row_exp_sum_m1 (for -inf, explicitly: no block computes inf - inf). */
static inline double CYCE_FN(cyce_row_blocked_exp_sum_m1)(
    const CYCE_STORE *x, CYCE_REAL *out, int64_t n, CYCE_REAL *carried_max, int carried,
    int fuse_next, CYCE_REAL *row_max, double *factor, CYCE_REAL *prev, CYCE_GRAD *prev_out,
    const double *prev_factor, double prev_a, CYCE_REAL prev_b, double *smooth_shifted)
{
#if CYCE_EXPS_IN_GRAD
    prev_out = prev;
#endif
    int64_t block = CYCE_FN(cyce_online_block)(n);
    /* a row of one block prefetches the row after the next one (the next one
     * it reads for its max; docs/performance.md#prefetch-distance) */
    const int64_t ahead = n < block ? 2 * n
        : CYCE_PREFETCH_AHEAD_BYTES / (int64_t)sizeof(CYCE_STORE);
    int64_t n_blocks = (n + block - 1) / block;
    CYCE_REAL block_max[CYCE_ONLINE_MAX_BLOCKS];
    double rest[CYCE_ONLINE_MAX_BLOCKS], count[CYCE_ONLINE_MAX_BLOCKS];
    double shifted[CYCE_ONLINE_MAX_BLOCKS];
    CYCE_REAL next_max = carried ? *carried_max : CYCE_FN(cyce_row_max)(x, n < block ? n : block);
    CYCE_REAL max = -INFINITY;
    for (int64_t k = 0; k < n_blocks; k++) {
        int64_t start = k * block;
        int64_t len = n - start < block ? n - start : block;
        int64_t next_len = n - start - len < block ? n - start - len : block;
        int last = next_len == 0;
        if (last && fuse_next) {
            next_len = n < block ? n : block;   /* the next row's first block */
        }
        CYCE_REAL m = next_max;
        CYCE_REAL shift = m == -INFINITY ? 0 : m;
        block_max[k] = m;
        max = m > max ? m : max;
        rest[k] = CYCE_FN(cyce_block_exp_sum)(
            x + start, out == NULL ? NULL : out + start, len, shift,
            isfinite(m) ? m : (CYCE_REAL)NAN, x + start + len, next_len, &next_max, &count[k],
            x + start + ahead, len, prev == NULL ? NULL : prev + start,
            prev == NULL ? NULL : prev_out + start,
            prev == NULL ? 0 : (CYCE_REAL)(prev_a * prev_factor[k]), prev_b,
            smooth_shifted == NULL ? NULL : &shifted[k]);
    }
    if (fuse_next) {
        *carried_max = next_max;
    }
    *row_max = max;
    double total_m1 = 0.0, count_at_max = 0.0;
    for (int64_t k = 0; k < n_blocks; k++) {
        factor[k] = cyce_exp_nonpos((double)block_max[k] - (double)max);
        if (block_max[k] == max) {
            total_m1 += rest[k];
            count_at_max += count[k];
        } else {
            total_m1 += factor[k] * (rest[k] + count[k]);
        }
    }
    if (smooth_shifted != NULL) {
        double sum = 0.0;
        for (int64_t k = 0, start = 0; k < n_blocks; k++, start += block) {
            double len = (double)(n - start < block ? n - start : block);
            sum += cyce_smoothing_share(shifted[k], len, (double)block_max[k], (double)max, 1.0);
        }
        *smooth_shifted = sum;
    }
    return max == -INFINITY ? (double)NAN : total_m1 + (count_at_max - 1.0);
}

/* out[j] = exps[j] * (a * factor[k]) - b * w[j] over the blocks of
 * cyce_row_blocked_exp_sum_m1: cyce_row_scale_sub, with each block's exps
 * rescaled to the row max on the way. */
static inline void CYCE_FN(cyce_row_blocked_scale_sub)(const CYCE_REAL *exps, CYCE_GRAD *out,
                                                      const double *w, int64_t n,
                                                      const double *factor, double a, CYCE_REAL b)
{
    int64_t block = CYCE_FN(cyce_online_block)(n);
    int far = n * (int64_t)sizeof(CYCE_REAL) > CYCE_DEFER_MAX_BYTES;
    for (int64_t start = 0, k = 0; start < n; start += block, k++) {
        int64_t len = n - start < block ? n - start : block;
        CYCE_FN(cyce_lines_scale_sub)(exps + start, out + start, w == NULL ? NULL : w + start,
                                      len, (CYCE_REAL)(a * factor[k]), b, far);
    }
}

/* out[j] = (x[j] - shift) - log_sum: log_softmax.  out may be x. */
static inline void CYCE_FN(cyce_row_sub2)(const CYCE_STORE *x, CYCE_GRAD *out, int64_t n,
                                         CYCE_REAL shift, CYCE_REAL log_sum)
{
#pragma omp simd
    for (int64_t j = 0; j < n; j++) {
        out[j] = CYCE_TO_GRAD((CYCE_LOAD(x[j]) - shift) - log_sum);
    }
}

/* Short rows, a tile at a time.  For rows of a few classes the loops above
 * run one or two vector iterations per row, and their set-up, epilogues and
 * block sums cost more than the exp itself.  So rows
 * of at most CYCE_SHORT_MAX classes are taken CYCE_TILE at a time, transposed
 * into a column-major scratch tile, and every step runs across the tile's
 * rows: one lane per row, all loops branch-free with a fixed trip count.
 *
 * For rows r < n_rows (row r at x + r*n, n <= CYCE_SHORT_MAX; lanes past
 * n_rows hold zeros and are ignored):
 *   max[r]    = max_c x[r][c]
 *   sum_m1[r] = sum_c exp(x[r][c] - max[r]) - 1, the max's own terms
 *               counted, not summed, as cyce_row_exp_sum_m1 does (and not
 *               when max[r] is infinite: its inf - inf makes the row NaN)
 *   cols[c * CYCE_TILE + r] = exp(x[r][c] - max[r])
 * Each lane computes its row alone, so a row's results do not depend on
 * which tile (or thread) it falls in. */
static inline __attribute__((always_inline)) void CYCE_FN(cyce_tile_exp_sum_m1)(
    const CYCE_STORE *x, int64_t n_rows, int64_t n, CYCE_REAL *cols, CYCE_REAL *max,
    CYCE_REAL *sum_m1)
{
    for (int64_t r = 0; r < CYCE_TILE; r++) {
        for (int64_t c = 0; c < n; c++) {
            cols[c * CYCE_TILE + r] = r < n_rows ? CYCE_LOAD(x[r * n + c]) : 0;
        }
    }
    CYCE_REAL top[CYCE_TILE], count[CYCE_TILE];
#pragma omp simd
    for (int64_t r = 0; r < CYCE_TILE; r++) {
        max[r] = -INFINITY;
        sum_m1[r] = 0;
        count[r] = 0;
    }
    for (int64_t c = 0; c < n; c++) {
        const CYCE_REAL *col = cols + c * CYCE_TILE;
#pragma omp simd
        for (int64_t r = 0; r < CYCE_TILE; r++) {
            max[r] = col[r] > max[r] ? col[r] : max[r];
        }
    }
#pragma omp simd
    for (int64_t r = 0; r < CYCE_TILE; r++) {
        /* NaN, equal to nothing, where the max is infinite */
        top[r] = max[r] - max[r] == 0 ? max[r] : (CYCE_REAL)NAN;
    }
    for (int64_t c = 0; c < n; c++) {
        CYCE_REAL *col = cols + c * CYCE_TILE;
#pragma omp simd
        for (int64_t r = 0; r < CYCE_TILE; r++) {
            CYCE_REAL e = CYCE_EXP(col[r] - max[r]);
            int is_top = col[r] == top[r];
            sum_m1[r] += is_top ? 0 : e;
            count[r] += is_top ? 1 : 0;
            col[r] = e;
        }
    }
#pragma omp simd
    for (int64_t r = 0; r < CYCE_TILE; r++) {
        sum_m1[r] += count[r] - 1;   /* exact: the count is a small integer */
    }
}

/* The gradient of a tile from its exps (cols, as cyce_tile_exp_sum_m1 left
 * them): out[r][c] = cols[c][r] * exp_scale[r] - (REAL)(weight_scale[r] * w[c])
 * for rows r < n_rows, w == NULL meaning all ones: cyce_row_scale_sub's
 * arithmetic, scaled across the tile's rows and then transposed back. */
static inline void CYCE_FN(cyce_tile_scale_sub_store)(CYCE_REAL *cols, int64_t n_rows, int64_t n,
                                                      const CYCE_REAL *exp_scale,
                                                      const double *weight_scale,
                                                      const double *w, CYCE_GRAD *out)
{
    for (int64_t c = 0; c < n; c++) {
        CYCE_REAL *col = cols + c * CYCE_TILE;
        double wc = w == NULL ? 1.0 : w[c];
#pragma omp simd
        for (int64_t r = 0; r < CYCE_TILE; r++) {
            col[r] = col[r] * exp_scale[r] - (CYCE_REAL)(weight_scale[r] * wc);
        }
    }
    for (int64_t r = 0; r < n_rows; r++) {
        for (int64_t c = 0; c < n; c++) {
            out[r * n + c] = CYCE_TO_GRAD(cols[c * CYCE_TILE + r]);
        }
    }
}

/* Softmax cross entropy of n_rows <= CYCE_TILE short rows (n <=
 * CYCE_SHORT_MAX) against integer labels, a tile at a time: the exps and sums
 * across the rows (cyce_tile_exp_sum_m1), each row's inputs gathered, the
 * terms of every row at once (cyce_softmax_ce_hard_terms, the long rows'
 * formulas, vectorised across the tile), and the gradient scaled across the
 * rows and transposed back (cyce_tile_scale_sub_store).  Row r reads x + r*n,
 * labels[r] and row_weight[r] (NULL: all ones), writes row_loss[r] (0 where
 * labels[r] == ignore_index) and, unless grad is NULL, grad + r*n, which may
 * be x + r*n: every read of x happens before the first write. */
static inline __attribute__((always_inline)) void CYCE_FN(cyce_tile_softmax_ce_hard)(
    const CYCE_STORE *x, CYCE_GRAD *grad, int64_t n_rows, int64_t n, const int64_t *labels,
    const double *row_weight, cyce_ce_opts opts, double *row_loss)
{
    const int64_t ignore_index = opts.ignore_index;
    const double *class_weight = opts.class_weight;
    const double smoothing = opts.label_smoothing;
    CYCE_REAL cols[CYCE_TILE * CYCE_SHORT_MAX];
    CYCE_REAL max[CYCE_TILE], sum_m1[CYCE_TILE], exp_scale[CYCE_TILE];
    double label_shifted[CYCE_TILE], label_exp_m1[CYCE_TILE], label_weight[CYCE_TILE];
    double weight[CYCE_TILE], smooth_shifted[CYCE_TILE];
    double loss[CYCE_TILE], weight_scale[CYCE_TILE], label_grad[CYCE_TILE];
    CYCE_FN(cyce_tile_exp_sum_m1)(x, n_rows, n, cols, max, sum_m1);
    /* each row's own inputs; an ignored row (or a lane past n_rows) gets
     * weight 0 and neutral values, and its results are overwritten below */
    for (int64_t r = 0; r < CYCE_TILE; r++) {
        int live = r < n_rows && labels[r] != ignore_index;
        int64_t label = live ? labels[r] : 0;
        label_shifted[r] = live ? (double)CYCE_LOAD(x[r * n + label]) - (double)max[r] : 0.0;
        label_exp_m1[r] = cyce_label_exp_m1(label_shifted[r], cols[label * CYCE_TILE + r]);
        label_weight[r] = class_weight == NULL ? 1.0 : class_weight[label];
        weight[r] = !live ? 0.0 : (row_weight == NULL ? 1.0 : row_weight[r]);
        smooth_shifted[r] = live && smoothing != 0.0
            ? CYCE_FN(cyce_row_sum_shifted)(x + r * n, class_weight, n, max[r]) : 0.0;
    }
#pragma omp simd
    for (int64_t r = 0; r < CYCE_TILE; r++) {
        cyce_hard_row row = {(double)max[r], (double)sum_m1[r], label_shifted[r],
                             label_exp_m1[r], label_weight[r], smooth_shifted[r], weight[r]};
        cyce_hard_terms terms = cyce_softmax_ce_hard_terms(n, row, opts);
        loss[r] = terms.loss;
        exp_scale[r] = (CYCE_REAL)terms.exp_scale;
        weight_scale[r] = terms.weight_scale;
        label_grad[r] = terms.label_grad;
    }
    for (int64_t r = 0; r < n_rows; r++) {
        row_loss[r] = labels[r] == ignore_index ? 0.0 : loss[r];
    }
    if (grad == NULL) {
        return;
    }
    CYCE_FN(cyce_tile_scale_sub_store)(cols, n_rows, n, exp_scale, weight_scale, class_weight, grad);
    for (int64_t r = 0; r < n_rows; r++) {
        if (labels[r] == ignore_index) {
            for (int64_t c = 0; c < n; c++) {
                grad[r * n + c] = CYCE_TO_GRAD(0);   /* even where the row holds NaN */
            }
        } else {
            grad[r * n + labels[r]] = CYCE_TO_GRAD((CYCE_REAL)label_grad[r]);
        }
    }
}

/* cyce_tile_softmax_ce_hard without class or sample weights, smoothing or
 * z-loss (the common call), compiled apart so that those zeros are constants
 * and their arithmetic folds away (docs/performance.md#short-rows). */
static void CYCE_FN(cyce_tile_softmax_ce_hard_plain)(
    const CYCE_STORE *x, CYCE_GRAD *grad, int64_t n_rows, int64_t n, const int64_t *labels,
    int64_t ignore_index, double grad_scale, double *row_loss)
{
    const cyce_ce_opts plain = {NULL, (double)n, NULL, 0.0, 0.0, grad_scale, ignore_index,
                                1.0, 0.0};
    /* full tiles (all but the last) and the loss alone get copies of their
     * own, with n_rows and grad constant, the tile's exp pass inlined into
     * each (docs/performance.md#short-rows) */
    if (n_rows == CYCE_TILE && grad == NULL) {
        CYCE_FN(cyce_tile_softmax_ce_hard)(x, NULL, CYCE_TILE, n, labels, NULL, plain, row_loss);
    } else if (n_rows == CYCE_TILE) {
        CYCE_FN(cyce_tile_softmax_ce_hard)(x, grad, CYCE_TILE, n, labels, NULL, plain, row_loss);
    } else {
        CYCE_FN(cyce_tile_softmax_ce_hard)(x, grad, n_rows, n, labels, NULL, plain, row_loss);
    }
}

/* the general case, a function of its own (the plain one inlines its body) */
static void CYCE_FN(cyce_tile_softmax_ce_hard_general)(
    const CYCE_STORE *x, CYCE_GRAD *grad, int64_t n_rows, int64_t n, const int64_t *labels,
    const double *row_weight, const cyce_ce_opts *opts, double *row_loss)
{
    CYCE_FN(cyce_tile_softmax_ce_hard)(x, grad, n_rows, n, labels, row_weight, *opts, row_loss);
}

#undef CYCE_EXPS_AT
#undef CYCE_EXP_TERM
#undef CYCE_COUNT_TERM
#undef CYCE_FN
#undef CYCE_CAT
#undef CYCE_CAT_
