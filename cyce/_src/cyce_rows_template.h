/*
 * One contiguous row's hot loops, written once for both float dtypes.
 * cyce_rows.h includes this file twice, with CYCE_REAL = float / double.
 *
 * Every loop is branch-free so GCC vectorises it; reductions carry
 * `omp simd reduction(...)`, which lets GCC reassociate just that loop (we do
 * not use -ffast-math).  The order of those partial sums is fixed by the
 * vector width of the build, so a result never depends on the thread count.
 *
 * Sums of exp are accumulated in blocks of CYCE_BLOCK elements in the row's
 * dtype, and the block totals in double: the float32 error of a sum then
 * grows with CYCE_BLOCK / vector width, not with the row length (C = 256k).
 */
#define CYCE_CAT_(a, b) a##_##b
#define CYCE_CAT(a, b) CYCE_CAT_(a, b)
#define CYCE_FN(name) CYCE_CAT(name, CYCE_SUFFIX)

/* The largest element (-inf for an all -inf row).  A NaN may or may not win;
 * callers rely on the NaN reaching the sum of exp instead. */
static inline CYCE_REAL CYCE_FN(cyce_row_max)(const CYCE_REAL *x, int64_t n)
{
    CYCE_REAL m = -INFINITY;
#pragma omp simd reduction(max:m)
    for (int64_t j = 0; j < n; j++) {
        m = x[j] > m ? x[j] : m;
    }
    return m;
}

/* The index of the first element equal to m, or -1 if none is (m is NaN).
 * Blocks are tested with a vectorised any(), so only one block is scanned
 * element by element. */
static inline int64_t CYCE_FN(cyce_row_find)(const CYCE_REAL *x, int64_t n, CYCE_REAL m)
{
    for (int64_t start = 0; start < n; start += 64) {
        int64_t stop = start + 64 < n ? start + 64 : n;
        int found = 0;
#pragma omp simd reduction(|:found)
        for (int64_t j = start; j < stop; j++) {
            found |= x[j] == m;
        }
        if (found) {
            for (int64_t j = start; j < stop; j++) {
                if (x[j] == m) {
                    return j;
                }
            }
        }
    }
    return -1;
}

/* sum_{start <= j < stop} exp(x[j] - shift), storing each term in out[j]
 * unless out is NULL.  out may be x (in place: each element is read before
 * it is written, at the same index).  shift >= max(x), so every argument is
 * <= 0 (or NaN).
 *
 * ahead, unless NULL, is where the next row's same elements are: they are
 * prefetched into cache block by block.  This pass is compute-bound on a row
 * already in L2, so the memory system is otherwise idle here, while the next
 * row's first pass (its max) would wait on DRAM. */
static inline double CYCE_FN(cyce_span_exp_sum)(const CYCE_REAL *x, CYCE_REAL *out,
                                                int64_t start, int64_t stop, CYCE_REAL shift,
                                                const CYCE_REAL *ahead)
{
    double total = 0.0;
    for (int64_t block = start; block < stop; block += CYCE_BLOCK) {
        int64_t end = block + CYCE_BLOCK < stop ? block + CYCE_BLOCK : stop;
        if (ahead != NULL) {
            for (int64_t j = block; j < end; j += CYCE_LINE / (int64_t)sizeof(CYCE_REAL)) {
                __builtin_prefetch(ahead + j, 0, 2);
            }
        }
        CYCE_REAL s = 0;
        if (out == NULL) {
#pragma omp simd reduction(+:s)
            for (int64_t j = block; j < end; j++) {
                s += CYCE_EXP(x[j] - shift);
            }
        } else {
#pragma omp simd reduction(+:s)
            for (int64_t j = block; j < end; j++) {
                CYCE_REAL e = CYCE_EXP(x[j] - shift);
                out[j] = e;
                s += e;
            }
        }
        total += (double)s;
    }
    return total;
}

/* sum_j exp(x[j] - max) - 1, storing exp(x[j] - max) in out unless out is
 * NULL; top is the index of an element equal to max (cyce_row_find), or -1;
 * ahead as in cyce_span_exp_sum (the next row, or NULL).
 *
 * Why minus one: the max's own term is exactly 1 and dominates the sum when
 * the row is confidently classified.  Then the loss is log1p(tiny), and adding
 * tiny to 1 in the row's dtype would lose most of it (float32 keeps 7 digits
 * of the sum, not of the tiny part).  So the term at top is stored but not
 * summed, the others are summed on their own, and callers take log1p of the
 * result.  A NaN anywhere makes the result NaN. */
static inline double CYCE_FN(cyce_row_exp_sum_m1)(const CYCE_REAL *x, CYCE_REAL *out, int64_t n,
                                                  CYCE_REAL max, int64_t top,
                                                  const CYCE_REAL *ahead)
{
    if (top < 0) {
        return CYCE_FN(cyce_span_exp_sum)(x, out, 0, n, max, ahead) - 1.0;
    }
    double rest = CYCE_FN(cyce_span_exp_sum)(x, out, 0, top, max, ahead)
                + CYCE_FN(cyce_span_exp_sum)(x, out, top + 1, n, max, ahead);
    if (out != NULL) {
        out[top] = 1;
    }
    return rest;
}

/* sum_j w[j] * (x[j] - shift), w == NULL meaning all ones.  With shift the row
 * max every term has one sign, so the sum has no cancellation (label
 * smoothing needs it next to W * log(sum exp)). */
static inline double CYCE_FN(cyce_row_sum_shifted)(const CYCE_REAL *x, const double *w,
                                                  int64_t n, CYCE_REAL shift)
{
    double total = 0.0;
    if (w == NULL) {
        for (int64_t start = 0; start < n; start += CYCE_BLOCK) {
            int64_t stop = start + CYCE_BLOCK < n ? start + CYCE_BLOCK : n;
            CYCE_REAL s = 0;
#pragma omp simd reduction(+:s)
            for (int64_t j = start; j < stop; j++) {
                s += x[j] - shift;
            }
            total += (double)s;
        }
    } else {
#pragma omp simd reduction(+:total)
        for (int64_t j = 0; j < n; j++) {
            total += w[j] * (double)(x[j] - shift);
        }
    }
    return total;
}

/* out[j] = out[j] * a - b * w[j]  (w == NULL: all ones).  Turns the stored
 * exp(x - max) into the gradient: a = scale * total target weight / sum exp,
 * b = scale * smoothing / C. */
static inline void CYCE_FN(cyce_row_scale_sub)(CYCE_REAL *out, const double *w, int64_t n,
                                              CYCE_REAL a, CYCE_REAL b)
{
    if (w == NULL) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            out[j] = out[j] * a - b;
        }
    } else {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            out[j] = out[j] * a - (CYCE_REAL)(b * w[j]);
        }
    }
}

/* out[j] = (x[j] - shift) - log_sum: log_softmax.  out may be x. */
static inline void CYCE_FN(cyce_row_sub2)(const CYCE_REAL *x, CYCE_REAL *out, int64_t n,
                                         CYCE_REAL shift, CYCE_REAL log_sum)
{
#pragma omp simd
    for (int64_t j = 0; j < n; j++) {
        out[j] = (x[j] - shift) - log_sum;
    }
}

#undef CYCE_FN
#undef CYCE_CAT
#undef CYCE_CAT_
