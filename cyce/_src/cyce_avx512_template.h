/*
 * The AVX-512 exp-and-sum span of cyce_avx512.h, written once for float
 * and double: cyce_avx512.h includes it twice, with CYCE_REAL, CYCE_LANES,
 * CYCE_MASK, CYCE_V, CYCE_VOP (the intrinsic of an operation), CYCE_VCMP_MASK
 * and CYCE_VEXP, which it undefines at its end.
 */
#define CYCE_CAT_(a, b) a##_##b
#define CYCE_CAT(a, b) CYCE_CAT_(a, b)
#define CYCE_FN(name) CYCE_CAT(name, CYCE_SUFFIX)

/* cyce_span_exp_sum_count (cyce_rows_template.h) for the vectors of
 * x[start:stop]: exp(x[j] - shift) into out[j] unless out is NULL; the terms
 * not equal to `top` summed onto *sum, those equal counted onto *count; and
 * unless next is NULL, *next_max = max(*next_max, next[start:stop]), NaN
 * skipped as in the C loop; unless prev is NULL, prev[start:stop] *=
 * prev_scale (the previous row's deferred scaling, cyce_block_exp_sum).
 * The last partial vector goes through masks.
 * The lanes are reduced at the end in a fixed order: the result depends on
 * start and stop only. */
static inline __attribute__((always_inline)) void CYCE_FN(cyce_span_avx512)(
    const CYCE_REAL *x, CYCE_REAL *out, int64_t start, int64_t stop, CYCE_REAL shift,
    CYCE_REAL top, const CYCE_REAL *next, CYCE_REAL *sum, CYCE_REAL *count,
    CYCE_REAL *next_max, CYCE_REAL *prev, CYCE_REAL prev_scale)
{
    const CYCE_V vshift = CYCE_VOP(set1)(shift), vtop = CYCE_VOP(set1)(top);
    const CYCE_V vscale = CYCE_VOP(set1)(prev_scale);
    const CYCE_V one = CYCE_VOP(set1)(1);
    CYCE_V rest = CYCE_VOP(setzero)(), others = CYCE_VOP(setzero)();
    CYCE_V vmax = CYCE_VOP(set1)(next == NULL ? 0 : *next_max);
    int64_t j = start;
    /* one vector: the exps, the sum of those not at the top and their count
     * (the top's are stop - start minus it), the next block's max */
#define CYCE_SPAN_VECTOR(lanes, xv, STORE)                                          \
    do {                                                                            \
        CYCE_V e = CYCE_VEXP(CYCE_VOP(sub)(xv, vshift));                            \
        CYCE_MASK other = CYCE_VCMP_MASK(lanes, xv, vtop, _CMP_NEQ_UQ);               \
        rest = CYCE_VOP(mask_add)(rest, other, rest, e);                            \
        others = CYCE_VOP(mask_add)(others, other, others, one);                    \
        if (next != NULL) {                                                         \
            vmax = CYCE_VOP(mask_max)(vmax, lanes, CYCE_VOP(maskz_loadu)(lanes, next + j), vmax); \
        }                                                                           \
        if (prev != NULL) {                                                         \
            CYCE_VOP(mask_storeu)(prev + j, lanes, CYCE_VOP(mul)(                   \
                CYCE_VOP(maskz_loadu)(lanes, prev + j), vscale));                   \
        }                                                                           \
        STORE;                                                                      \
    } while (0)
    const CYCE_MASK all = (CYCE_MASK)~(CYCE_MASK)0;
    if (out == NULL) {
        for (; j + CYCE_LANES <= stop; j += CYCE_LANES) {
            CYCE_V xv = CYCE_VOP(loadu)(x + j);
            CYCE_SPAN_VECTOR(all, xv, (void)0);
        }
    } else {
        for (; j + CYCE_LANES <= stop; j += CYCE_LANES) {
            CYCE_V xv = CYCE_VOP(loadu)(x + j);
            CYCE_SPAN_VECTOR(all, xv, CYCE_VOP(storeu)(out + j, e));
        }
    }
    if (j < stop) {
        CYCE_MASK tail = (CYCE_MASK)((1u << (stop - j)) - 1u);
        CYCE_V xv = CYCE_VOP(maskz_loadu)(tail, x + j);
        CYCE_SPAN_VECTOR(tail, xv, if (out != NULL) CYCE_VOP(mask_storeu)(out + j, tail, e));
    }
#undef CYCE_SPAN_VECTOR
    *sum += CYCE_VOP(reduce_add)(rest);
    *count += (CYCE_REAL)(stop - start) - CYCE_VOP(reduce_add)(others);
    if (next != NULL) {
        *next_max = CYCE_VOP(reduce_max)(vmax);
    }
}

/* out[j] = exp(x[j]) for x[j] <= 0 (or NaN), j < n: the exp above alone
 * (for its tests and the benchmark's exp floor). */
static inline void CYCE_FN(cyce_exp_nonpos_avx512)(const CYCE_REAL *x, CYCE_REAL *out, int64_t n)
{
    int64_t j = 0;
    for (; j + CYCE_LANES <= n; j += CYCE_LANES) {
        CYCE_VOP(storeu)(out + j, CYCE_VEXP(CYCE_VOP(loadu)(x + j)));
    }
    if (j < n) {
        CYCE_MASK tail = (CYCE_MASK)((1u << (n - j)) - 1u);
        CYCE_VOP(mask_storeu)(out + j, tail, CYCE_VEXP(CYCE_VOP(maskz_loadu)(tail, x + j)));
    }
}

#undef CYCE_REAL
#undef CYCE_SUFFIX
#undef CYCE_LANES
#undef CYCE_MASK
#undef CYCE_V
#undef CYCE_VOP
#undef CYCE_VCMP_MASK
#undef CYCE_VEXP
