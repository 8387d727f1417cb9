/*
 * cyce_avx512.h -- the exp-and-sum loops of the softmax rows in AVX-512
 * intrinsics, for the avx512 object of cyce_kernels.c (cyce_rows.h includes
 * it only where __AVX512F__ and __AVX512DQ__ are defined; the other objects
 * keep the loops GCC vectorises).
 *
 * Why by hand: those loops are bound by the vector units, and GCC's version
 * spends more vector instructions per vector than these:
 *   - 2**n is applied by vscalef, one instruction for the add, shift and
 *     multiply of cyce_expf_nonpos (the same value, rounded once: the same
 *     bits, subnormal results included);
 *   - the terms equal to the top are left out of the sum and the others
 *     counted with one compare and two masked adds, where GCC made five
 *     instructions of the compare, two selects and two adds.
 * (docs/performance.md#avx-512-exp-loops)
 */
#ifndef CYCE_AVX512_H
#define CYCE_AVX512_H

#include <immintrin.h>
#include <stdint.h>
#include "cyce_exp.h"

/* The polynomial of cyce_expf_reduced (unit 1), 16 floats: exp(r) for
 * |r| <= ln2 / 2.  The vector exps around it are written once, for float
 * and double, in cyce_avx512_template.h (cyce_vexp_nonpos). */
static inline __attribute__((always_inline)) __m512 cyce_v16_expf_poly(__m512 r)
{
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.0f / 5040.0f), r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
}

/* The polynomial of cyce_exp_reduced (unit 1), 8 doubles. */
static inline __attribute__((always_inline)) __m512d cyce_v8_exp_poly(__m512d r)
{
    __m512d p = _mm512_fmadd_pd(_mm512_set1_pd(1.0 / 6227020800.0), r,
                                _mm512_set1_pd(1.0 / 479001600.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 39916800.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 3628800.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 362880.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 40320.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 5040.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 720.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 120.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 24.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 6.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0.5));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    return _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
}

#define CYCE_REAL float
#define CYCE_SUFFIX f32
#define CYCE_LANES 16
#define CYCE_MASK __mmask16
#define CYCE_V __m512
#define CYCE_VOP(op) _mm512_##op##_ps
#define CYCE_VCMP_MASK _mm512_mask_cmp_ps_mask
#define CYCE_VPOLY cyce_v16_expf_poly
#define CYCE_VCONST(name) CYCE_EXPF_##name
#include "cyce_avx512_template.h"

#define CYCE_REAL double
#define CYCE_SUFFIX f64
#define CYCE_LANES 8
#define CYCE_MASK __mmask8
#define CYCE_V __m512d
#define CYCE_VOP(op) _mm512_##op##_pd
#define CYCE_VCMP_MASK _mm512_mask_cmp_pd_mask
#define CYCE_VPOLY cyce_v8_exp_poly
#define CYCE_VCONST(name) CYCE_EXP_##name
#include "cyce_avx512_template.h"

#endif
