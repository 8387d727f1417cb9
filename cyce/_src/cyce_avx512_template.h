/*
 * The AVX-512 exp-and-sum span of cyce_avx512.h, written once for every
 * pair of dtypes: cyce_avx512.h includes it once per pair, with
 *   the vector width's macros: CYCE_REAL, CYCE_LANES, CYCE_MASK, CYCE_V,
 *   CYCE_VOP (the intrinsic of an operation), CYCE_VCMP_MASK and
 *   CYCE_VCONST (the exp's constants in cyce_exp.h), which stay defined for
 *   the next pair of that width;
 *   the pair's: CYCE_STORE, CYCE_GRAD, CYCE_EXPS_IN_GRAD, CYCE_NATIVE (as
 *   for cyce_rows_template.h), CYCE_SUFFIX, CYCE_VPOLY (the exp's
 *   polynomial), CYCE_VLOAD and CYCE_VLOAD_MASKZ
 *   (a load of CYCE_LANES stored elements, widened to CYCE_REAL, and its
 *   masked form) and CYCE_VSTORE_GRAD (a masked store into CYCE_GRAD,
 *   rounded to it), which it undefines at its end.
 */
#define CYCE_CAT_(a, b) a##_##b
#define CYCE_CAT(a, b) CYCE_CAT_(a, b)
#define CYCE_FN(name) CYCE_CAT(name, CYCE_SUFFIX)

/* exp(d) for d <= 0 or NaN, one vector: for the pairs of float32 or
 * float64 outputs cyce_exp.h's cyce_expf_nonpos / cyce_exp_nonpos bit for
 * bit (the same clamp, reduction and polynomial; p * 2**n rounded once by
 * vscalef, where the C exp's multiplies round the same value once too,
 * subnormal results included); the pairs of half outputs take a shorter
 * polynomial (cyce_v16_expf_poly_half). */
static inline __attribute__((always_inline)) CYCE_V CYCE_FN(cyce_vexp_nonpos)(CYCE_V d)
{
    /* max(lower, d) returns d where d is NaN (vmaxps returns its second
     * operand when either is NaN), as the C clamp does */
    CYCE_V dc = CYCE_VOP(max)(CYCE_VOP(set1)(CYCE_VCONST(LOWER)), d);
    CYCE_V k = CYCE_VOP(fmadd)(dc, CYCE_VOP(set1)(CYCE_VCONST(LOG2E)),
                               CYCE_VOP(set1)(CYCE_VCONST(ROUND)));
    CYCE_V n = CYCE_VOP(sub)(k, CYCE_VOP(set1)(CYCE_VCONST(ROUND)));
    CYCE_V r = CYCE_VOP(fnmadd)(n, CYCE_VOP(set1)(CYCE_VCONST(LN2_HI)), dc);
    r = CYCE_VOP(fnmadd)(n, CYCE_VOP(set1)(CYCE_VCONST(LN2_LO)), r);
    return CYCE_VOP(scalef)(CYCE_VPOLY(r), n);
}
#define CYCE_VEXP CYCE_FN(cyce_vexp_nonpos)

/* cyce_span_exp_sum_count (cyce_rows_template.h) for the vectors of
 * x[start:stop]: exp(x[j] - shift) into out[j] unless out is NULL; the terms
 * not equal to `top` summed onto *sum, those equal counted onto *count.
 * The last partial vector goes through masks.  The lanes are reduced at the
 * end in a fixed order: the result depends on start and stop only. */
static inline __attribute__((always_inline)) void CYCE_FN(cyce_span_avx512)(
    const CYCE_STORE *x, CYCE_REAL *out, int64_t start, int64_t stop, CYCE_REAL shift,
    CYCE_REAL top, CYCE_REAL *sum, CYCE_REAL *count)
{
    const CYCE_V vshift = CYCE_VOP(set1)(shift), vtop = CYCE_VOP(set1)(top);
    const CYCE_V one = CYCE_VOP(set1)(1);
    CYCE_V rest = CYCE_VOP(setzero)(), others = CYCE_VOP(setzero)();
    int64_t j = start;
    /* one vector: the exps, the sum of those not at the top and their count
     * (the top's are stop - start minus it) */
#define CYCE_SPAN_VECTOR(lanes, xv, STORE)                                          \
    do {                                                                            \
        CYCE_V e = CYCE_VEXP(CYCE_VOP(sub)(xv, vshift));                            \
        CYCE_MASK other = CYCE_VCMP_MASK(lanes, xv, vtop, _CMP_NEQ_UQ);             \
        rest = CYCE_VOP(mask_add)(rest, other, rest, e);                            \
        others = CYCE_VOP(mask_add)(others, other, others, one);                    \
        STORE;                                                                      \
    } while (0)
    const CYCE_MASK all = (CYCE_MASK)~(CYCE_MASK)0;
    if (out == NULL) {
        for (; j + CYCE_LANES <= stop; j += CYCE_LANES) {
            CYCE_V xv = CYCE_VLOAD(x + j);
            CYCE_SPAN_VECTOR(all, xv, (void)0);
        }
    } else {
        for (; j + CYCE_LANES <= stop; j += CYCE_LANES) {
            CYCE_V xv = CYCE_VLOAD(x + j);
            CYCE_SPAN_VECTOR(all, xv, CYCE_VOP(storeu)(out + j, e));
        }
    }
    if (j < stop) {
        CYCE_MASK tail = (CYCE_MASK)((1u << (stop - j)) - 1u);
        CYCE_V xv = CYCE_VLOAD_MASKZ(tail, x + j);
        CYCE_SPAN_VECTOR(tail, xv, if (out != NULL) CYCE_VOP(mask_storeu)(out + j, tail, e));
    }
#undef CYCE_SPAN_VECTOR
    *sum += CYCE_VOP(reduce_add)(rest);
    *count += (CYCE_REAL)(stop - start) - CYCE_VOP(reduce_add)(others);
}

/* The first n lanes (n < CYCE_LANES) */
#define CYCE_FIRST_LANES(n) ((CYCE_MASK)((1u << (n)) - 1u))

/* cyce_block_exp_sum (cyce_rows_template.h) in one loop of vectors over the
 * block: exp(x[j] - shift) for j < len into out (unless NULL); the terms not
 * equal to `top` summed a CYCE_BLOCK at a time in the row's dtype (returned:
 * the total of those sums, in double), the others counted into *count;
 * *next_max = max(next[0:min(next_len, len)]), NaN skipped, -inf for none;
 * ahead + j prefetched for each vector (unless ahead is NULL); prev_out[0:len]
 * = prev[0:len] * prev_scale - prev_b (unless prev is NULL: the previous row's
 * deferred scaling; prev_out is prev itself where the exps are the gradient);
 * with smooth (a constant), *shifted = sum_j (x[j] - shift), summed as the
 * exps are, for label smoothing: one add per vector on the x - shift the exp
 * takes anyway.  prev_b is taken with smooth only (the rows of a call share
 * their options), so that the loop without it stays a multiply.
 *
 * The vectors of float rows start on the cache lines of the stream written
 * (out, else x; cyce_line_head): NumPy's large arrays start 16 bytes past a
 * line, and a vector split over two lines pays for both.  The elements
 * before the first line go first, in a masked vector whose sum is moved up
 * to the lanes those elements hold on lines; the rest go on whole lines,
 * and a CYCE_BLOCK ends inside a vector, its lanes past the end starting
 * the next sum.  Each sum then holds in lane (a + misalign) mod the lanes
 * what a block on a line holds in lane a: a rotation, which GCC's
 * reduce_add (the upper half added to the lower, down to one lane) adds up
 * in the same pairs, so the bits are those of a block on a line, wherever
 * the arrays sit (tested at every offset).  The max and the count are exact
 * anyway.  One loop over the block also reduces the max and the count once
 * per block rather than per CYCE_BLOCK.  Not for double rows, whose loops
 * wait on memory rather than on the splits
 * (docs/performance.md#cache-line-alignment). */
static inline __attribute__((always_inline)) double CYCE_FN(cyce_block_exp_sum_avx512)(
    const CYCE_STORE *x, CYCE_REAL *out, int64_t len, CYCE_REAL shift, CYCE_REAL top,
    const CYCE_STORE *next, int64_t next_len, CYCE_REAL *next_max, double *count,
    const CYCE_STORE *ahead, CYCE_REAL *prev, CYCE_GRAD *prev_out, CYCE_REAL prev_scale,
    CYCE_REAL prev_b, int smooth, double *shifted)
{
#if CYCE_EXPS_IN_GRAD
    prev_out = prev;   /* the exps are the gradient: scaled in place */
#endif
    const CYCE_V vshift = CYCE_VOP(set1)(shift), vtop = CYCE_VOP(set1)(top);
    const CYCE_V vscale = CYCE_VOP(set1)(prev_scale), vb = CYCE_VOP(set1)(prev_b);
    const CYCE_V one = CYCE_VOP(set1)(1);
    const CYCE_MASK all = (CYCE_MASK)~(CYCE_MASK)0;
    CYCE_V rest = CYCE_VOP(setzero)(), others = CYCE_VOP(setzero)(), u = CYCE_VOP(setzero)();
    CYCE_V vmax = CYCE_VOP(set1)(-INFINITY);
    const int64_t fused = next_len < len ? next_len : len;
    const int64_t far = CYCE_PREFETCH_FAR_BYTES / (int64_t)sizeof(CYCE_STORE);
    /* a vector of float is a cache line: the lanes before the first line
     * (of the exps written, else of a float input) */
    const int64_t line_head = sizeof(CYCE_REAL) != 4 ? 0
        : out != NULL ? cyce_line_head(out, sizeof(CYCE_REAL))
        : sizeof(CYCE_STORE) == 4 ? cyce_line_head(x, sizeof(CYCE_REAL)) : 0;
    const int64_t head = line_head < len ? line_head : 0;
    double total = 0.0, u_total = 0.0;
    int64_t j = 0;
    /* One vector at j, `lanes` of it in the block: the exps, the next
     * block's max, the previous row's scaling, the count; SUM adds the exps
     * not at the top (lanes `other`) to the sums, and with smooth the
     * d = x - shift of its lanes to u's. */
#define CYCE_BLOCK_VECTOR(lanes, NEXT, SUM)                                         \
    do {                                                                            \
        CYCE_V xv = CYCE_VLOAD_MASKZ(lanes, x + j);                                 \
        CYCE_V d = CYCE_VOP(sub)(xv, vshift);                                       \
        CYCE_V e = CYCE_VEXP(d);                                                    \
        CYCE_MASK other = CYCE_VCMP_MASK(lanes, xv, vtop, _CMP_NEQ_UQ);             \
        NEXT;                                                                       \
        if (prev != NULL && smooth) {                                               \
            /* one rounding, as the scaling pass's contracted e * a - b */          \
            CYCE_VSTORE_GRAD(prev_out + j, lanes, CYCE_VOP(fmsub)(                  \
                CYCE_VOP(maskz_loadu)(lanes, prev + j), vscale, vb));               \
        } else if (prev != NULL) {                                                  \
            CYCE_VSTORE_GRAD(prev_out + j, lanes, CYCE_VOP(mul)(                    \
                CYCE_VOP(maskz_loadu)(lanes, prev + j), vscale));                   \
        }                                                                           \
        if (ahead != NULL) {                                                        \
            __builtin_prefetch(ahead + j, 0, CYCE_PREFETCH_LOCALITY);               \
            __builtin_prefetch(ahead + j + far, 0, 2);                              \
        }                                                                           \
        if (out != NULL) {                                                          \
            CYCE_VOP(mask_storeu)(out + j, lanes, e);                               \
        }                                                                           \
        others = CYCE_VOP(mask_add)(others, other, others, one);                    \
        SUM;                                                                        \
    } while (0)
#define CYCE_ADD_U(lanes)                                                           \
    if (smooth) {                                                                   \
        u = CYCE_VOP(mask_add)(u, lanes, u, d);                                     \
    }
    /* the next block's max over `next_lanes` of the vector at j */
#define CYCE_NEXT_MAX(next_lanes)                                                   \
    vmax = CYCE_VOP(mask_max)(vmax, next_lanes, CYCE_VLOAD_MASKZ(next_lanes, next + j), vmax)
    /* ... over the lanes of the vector at j below fused */
#define CYCE_NEXT_MAX_FUSED                                                         \
    CYCE_NEXT_MAX(j + CYCE_LANES <= fused ? all                                     \
                  : j < fused ? CYCE_FIRST_LANES(fused - j) : (CYCE_MASK)0)
    if (head != 0) {
        /* the elements before the first line, in lanes 0 to head - 1, then
         * moved up to the lanes they hold on lines.  Their share of the next
         * block's max waits for the end: that line is not in cache yet, and
         * a masked load missing it stalled the loop
         * (docs/performance.md#cache-line-alignment) */
        CYCE_BLOCK_VECTOR(CYCE_FIRST_LANES(head), (void)0,
                          rest = CYCE_VOP(mask_add)(rest, other, rest, e);
                          CYCE_ADD_U(CYCE_FIRST_LANES(head)));
        rest = CYCE_VOP(maskz_expand)((CYCE_MASK)~CYCE_FIRST_LANES(CYCE_LANES - head), rest);
        if (smooth) {
            u = CYCE_VOP(maskz_expand)((CYCE_MASK)~CYCE_FIRST_LANES(CYCE_LANES - head), u);
        }
        j = head;
    }
    for (int64_t stop = 0; stop < len;) {
        stop = stop + CYCE_BLOCK < len ? stop + CYCE_BLOCK : len;
        for (; j + CYCE_LANES <= stop; j += CYCE_LANES) {
            CYCE_BLOCK_VECTOR(all, CYCE_NEXT_MAX_FUSED,
                              rest = CYCE_VOP(mask_add)(rest, other, rest, e);
                              CYCE_ADD_U(all));
        }
        CYCE_V ends = rest, u_ends = u;
        rest = CYCE_VOP(setzero)();
        u = CYCE_VOP(setzero)();
        if (j < stop) {
            /* across the end of this CYCE_BLOCK: its first stop - j lanes
             * end this sum, the rest (in the block) start the next */
            CYCE_MASK lanes = j + CYCE_LANES <= len ? all : CYCE_FIRST_LANES(len - j);
            CYCE_MASK ending = CYCE_FIRST_LANES(stop - j);
            CYCE_BLOCK_VECTOR(lanes, CYCE_NEXT_MAX_FUSED,
                              ends = CYCE_VOP(mask_add)(ends, other & ending, ends, e);
                              rest = CYCE_VOP(maskz_mov)(other & ~ending, e);
                              if (smooth) {
                                  u_ends = CYCE_VOP(mask_add)(u_ends, ending, u_ends, d);
                                  u = CYCE_VOP(maskz_mov)(lanes & ~ending, d);
                              });
            j += CYCE_LANES;
        }
        total += (double)CYCE_VOP(reduce_add)(ends);
        if (smooth) {
            u_total += (double)CYCE_VOP(reduce_add)(u_ends);
        }
    }
    if (head != 0 && fused > 0) {
        j = 0;
        CYCE_NEXT_MAX(CYCE_FIRST_LANES(head < fused ? head : fused));
    }
#undef CYCE_BLOCK_VECTOR
#undef CYCE_ADD_U
#undef CYCE_NEXT_MAX_FUSED
#undef CYCE_NEXT_MAX
    *count = (double)len - (double)CYCE_VOP(reduce_add)(others);
    *next_max = CYCE_VOP(reduce_max)(vmax);
    if (smooth) {
        *shifted = u_total;
    }
    return total;
}

#if !CYCE_NATIVE
/* cyce_span_scale_sub without class weights, out[j] = exps[j] * a - b for
 * start <= j < stop, its contracted e * a - b stored through
 * CYCE_VSTORE_GRAD: GCC's loop rounds a half gradient with integer steps
 * where the store can take vcvtneps2bf16 or vcvtps2ph (the same bits, a
 * float16 NaN's payload aside). */
static inline __attribute__((always_inline)) void CYCE_FN(cyce_span_scale_sub_avx512)(
    const CYCE_REAL *exps, CYCE_GRAD *out, int64_t start, int64_t stop, CYCE_REAL a, CYCE_REAL b)
{
    const CYCE_V va = CYCE_VOP(set1)(a), vb = CYCE_VOP(set1)(b);
    int64_t j = start;
    for (; j + CYCE_LANES <= stop; j += CYCE_LANES) {
        CYCE_VSTORE_GRAD(out + j, (CYCE_MASK)~(CYCE_MASK)0,
                         CYCE_VOP(fmsub)(CYCE_VOP(loadu)(exps + j), va, vb));
    }
    if (j < stop) {
        CYCE_MASK tail = CYCE_FIRST_LANES(stop - j);
        CYCE_VSTORE_GRAD(out + j, tail,
                         CYCE_VOP(fmsub)(CYCE_VOP(maskz_loadu)(tail, exps + j), va, vb));
    }
}
#endif

#undef CYCE_FIRST_LANES

#if CYCE_NATIVE
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
#endif

#undef CYCE_STORE
#undef CYCE_GRAD
#undef CYCE_EXPS_IN_GRAD
#undef CYCE_VSTORE_GRAD
#undef CYCE_NATIVE
#undef CYCE_SUFFIX
#undef CYCE_VLOAD
#undef CYCE_VLOAD_MASKZ
#undef CYCE_VEXP
#undef CYCE_VPOLY
