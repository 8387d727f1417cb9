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

/* The sums of exp(x - max) are returned minus one: sum_j exp(x[j] - shift) - 1.
 * With shift the row max, the max's own term is exactly 1 and dominates the
 * sum when the row is confidently classified; then the loss is
 * log(1 + tiny), and adding tiny to 1 in the row's dtype would lose most of
 * it (float32 keeps 7 digits of the sum, not of the tiny part).  So the terms
 * equal to 1 are counted apart and only the others are summed:
 * result = (ones - 1) + rest keeps full relative precision, and callers take
 * log1p(result).  A NaN anywhere makes the result NaN. */

/* sum_j exp(x[j] - shift) - 1, nothing stored (the loss-only path). */
static inline double CYCE_FN(cyce_row_sum_exp_m1)(const CYCE_REAL *x, int64_t n, CYCE_REAL shift)
{
    double rest = 0.0, ones = 0.0;
    for (int64_t start = 0; start < n; start += CYCE_BLOCK) {
        int64_t stop = start + CYCE_BLOCK < n ? start + CYCE_BLOCK : n;
        CYCE_REAL s = 0, k = 0;
#pragma omp simd reduction(+:s, k)
        for (int64_t j = start; j < stop; j++) {
            CYCE_REAL e = CYCE_EXP(x[j] - shift);
            s += e == (CYCE_REAL)1 ? (CYCE_REAL)0 : e;
            k += e == (CYCE_REAL)1 ? (CYCE_REAL)1 : (CYCE_REAL)0;
        }
        rest += (double)s;
        ones += (double)k;
    }
    return (ones - 1.0) + rest;
}

/* out[j] = exp(x[j] - shift), returning sum_j out[j] - 1.  out may be x (in
 * place): each element is read before it is written, at the same index. */
static inline double CYCE_FN(cyce_row_exp_store_sum_m1)(const CYCE_REAL *x, CYCE_REAL *out,
                                                       int64_t n, CYCE_REAL shift)
{
    double rest = 0.0, ones = 0.0;
    for (int64_t start = 0; start < n; start += CYCE_BLOCK) {
        int64_t stop = start + CYCE_BLOCK < n ? start + CYCE_BLOCK : n;
        CYCE_REAL s = 0, k = 0;
#pragma omp simd reduction(+:s, k)
        for (int64_t j = start; j < stop; j++) {
            CYCE_REAL e = CYCE_EXP(x[j] - shift);
            out[j] = e;
            s += e == (CYCE_REAL)1 ? (CYCE_REAL)0 : e;
            k += e == (CYCE_REAL)1 ? (CYCE_REAL)1 : (CYCE_REAL)0;
        }
        rest += (double)s;
        ones += (double)k;
    }
    return (ones - 1.0) + rest;
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
