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
#define CYCE_VSTEP(k) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / k##f));
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    CYCE_TAYLOR_6_TO_0(CYCE_VSTEP)
#undef CYCE_VSTEP
    return p;
}

/* exp(r) for |r| <= ln2 / 2, 16 floats, for the pairs whose outputs are
 * bfloat16 or float16: a degree-5 polynomial fitted for the least largest
 * relative error, 1.5e-7 (about 2.5 float32 ulp) where cyce_v16_expf_poly's
 * degree 7 keeps float32 outputs within 2 ulp.  Two FMAs fewer on the exp's
 * chain; a half result needs half an ulp of its own (at least 2**-9 relative
 * for bfloat16, 2**-12 for float16) and the float32 loss 1e-5 relative,
 * which a relative error of each exp keeps (the sum of the exps is taken
 * without cancellation). */
static inline __attribute__((always_inline)) __m512 cyce_v16_expf_poly_half(__m512 r)
{
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(8.290272206e-03f), r, _mm512_set1_ps(4.189816117e-02f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.666763872e-01f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.999914765e-01f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(9.999997020e-01f));
    return _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
}

/* The polynomial of cyce_exp_reduced (unit 1), 8 doubles. */
static inline __attribute__((always_inline)) __m512d cyce_v8_exp_poly(__m512d r)
{
#define CYCE_VSTEP(k) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / k));
    __m512d p = _mm512_set1_pd(1.0 / 6227020800.0);
    CYCE_TAYLOR_12_TO_7(CYCE_VSTEP)
    CYCE_TAYLOR_6_TO_0(CYCE_VSTEP)
#undef CYCE_VSTEP
    return p;
}

/* The pairs of dtypes (input, gradient) of this translation unit, as in
 * cyce_dtypes.h; the template undefines each pair's macros, the vector
 * width's are undefined here. */
#ifdef CYCE_HALF_TYPES
/* 16 bfloat16 or float16 values (their bits), widened to float: a shift
 * into the upper half, or vcvtph2ps; masked lanes read nothing and are 0. */
static inline __attribute__((always_inline)) __m512 cyce_v16_bf16_load(__mmask16 lanes,
                                                                       const uint16_t *p)
{
    __m256i bits = _mm256_maskz_loadu_epi16(lanes, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

static inline __attribute__((always_inline)) __m512 cyce_v16_f16_load(__mmask16 lanes,
                                                                      const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lanes, p));
}

/* 16 floats rounded to nearest even into bfloat16 or float16 (vcvtps2ph),
 * masked lanes left as they are.  bfloat16 takes AVX512_BF16's
 * vcvtneps2bf16 where the CPU has it (asm: the level's flags do not include
 * it), else cyce_float_to_bf16's integer steps, a NaN kept quiet; the two
 * give the same bits except that vcvtneps2bf16 flushes subnormal inputs to
 * zero, so a vector holding one takes the integer steps. */
static inline __attribute__((always_inline)) void cyce_v16_bf16_store(uint16_t *p, __mmask16 lanes,
                                                                      __m512 v)
{
    if (__builtin_cpu_supports("avx512bf16")
        && _mm512_fpclass_ps_mask(v, 0x20 /* subnormal */) == 0) {
        __m256i rounded;
        __asm__("vcvtneps2bf16 %1, %0" : "=v"(rounded) : "v"(v));
        _mm256_mask_storeu_epi16(p, lanes, rounded);
        return;
    }
    __m512i u = _mm512_castps_si512(v);
    __m512i lowest_kept = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lowest_kept));
    __m512i quiet = _mm512_or_si512(u, _mm512_set1_epi32(0x00400000));
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    __m512i bits = _mm512_srli_epi32(_mm512_mask_mov_epi32(rounded, nan, quiet), 16);
    _mm512_mask_cvtepi32_storeu_epi16(p, lanes, bits);
}

static inline __attribute__((always_inline)) void cyce_v16_f16_store(uint16_t *p, __mmask16 lanes,
                                                                     __m512 v)
{
    _mm256_mask_storeu_epi16(p, lanes, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* 16 floats into a gradient no one reads before the call returns, without
 * reading its line first: a streaming store where the vector is a whole
 * aligned line, a plain one otherwise (the stores are ordered by the task's
 * closing sfence). */
static inline __attribute__((always_inline)) void cyce_v16_stream_store(float *p, __mmask16 lanes,
                                                                       __m512 v)
{
    if (lanes == (__mmask16)0xffff && (uintptr_t)p % 64 == 0) {
        _mm512_stream_ps(p, v);
    } else {
        _mm512_mask_storeu_ps(p, lanes, v);
    }
}

#endif

/* 16 float lanes */
#define CYCE_REAL float
#define CYCE_LANES 16
#define CYCE_MASK __mmask16
#define CYCE_V __m512
#define CYCE_VOP(op) _mm512_##op##_ps
#define CYCE_VCMP_MASK _mm512_mask_cmp_ps_mask
#define CYCE_VCONST(name) CYCE_EXPF_##name
#ifndef CYCE_HALF_TYPES
#define CYCE_STORE float
#define CYCE_NATIVE 1
#define CYCE_SUFFIX f32
#define CYCE_VPOLY cyce_v16_expf_poly
#define CYCE_VLOAD(p) _mm512_loadu_ps(p)
#define CYCE_VLOAD_MASKZ(mask, p) _mm512_maskz_loadu_ps(mask, p)
#define CYCE_GRAD float
#define CYCE_EXPS_IN_GRAD 1
#define CYCE_VSTORE_GRAD(p, mask, v) _mm512_mask_storeu_ps(p, mask, v)
#include "cyce_avx512_template.h"
#else
#define CYCE_STORE uint16_t
#define CYCE_NATIVE 0
#define CYCE_SUFFIX bf16
#define CYCE_VPOLY cyce_v16_expf_poly_half
#define CYCE_VLOAD(p) cyce_v16_bf16_load((__mmask16)0xffff, p)
#define CYCE_VLOAD_MASKZ(mask, p) cyce_v16_bf16_load(mask, p)
#define CYCE_GRAD uint16_t
#define CYCE_EXPS_IN_GRAD 0
#define CYCE_VSTORE_GRAD(p, mask, v) cyce_v16_bf16_store(p, mask, v)
#include "cyce_avx512_template.h"

#define CYCE_STORE uint16_t
#define CYCE_NATIVE 0
#define CYCE_SUFFIX bf16_f32
#define CYCE_VPOLY cyce_v16_expf_poly
#define CYCE_VLOAD(p) cyce_v16_bf16_load((__mmask16)0xffff, p)
#define CYCE_VLOAD_MASKZ(mask, p) cyce_v16_bf16_load(mask, p)
#define CYCE_GRAD float
#define CYCE_EXPS_IN_GRAD 1
#define CYCE_VSTORE_GRAD(p, mask, v) _mm512_mask_storeu_ps(p, mask, v)
#include "cyce_avx512_template.h"

#define CYCE_STORE uint16_t
#define CYCE_NATIVE 0
#define CYCE_SUFFIX f16
#define CYCE_VPOLY cyce_v16_expf_poly_half
#define CYCE_VLOAD(p) cyce_v16_f16_load((__mmask16)0xffff, p)
#define CYCE_VLOAD_MASKZ(mask, p) cyce_v16_f16_load(mask, p)
#define CYCE_GRAD uint16_t
#define CYCE_EXPS_IN_GRAD 0
#define CYCE_VSTORE_GRAD(p, mask, v) cyce_v16_f16_store(p, mask, v)
#include "cyce_avx512_template.h"

#define CYCE_STORE uint16_t
#define CYCE_NATIVE 0
#define CYCE_SUFFIX f16_f32
#define CYCE_VPOLY cyce_v16_expf_poly
#define CYCE_VLOAD(p) cyce_v16_f16_load((__mmask16)0xffff, p)
#define CYCE_VLOAD_MASKZ(mask, p) cyce_v16_f16_load(mask, p)
#define CYCE_GRAD float
#define CYCE_EXPS_IN_GRAD 1
#define CYCE_VSTORE_GRAD(p, mask, v) _mm512_mask_storeu_ps(p, mask, v)
#include "cyce_avx512_template.h"

#define CYCE_STORE float
#define CYCE_NATIVE 0
#define CYCE_SUFFIX f32_stream
#define CYCE_VPOLY cyce_v16_expf_poly
#define CYCE_VLOAD(p) _mm512_loadu_ps(p)
#define CYCE_VLOAD_MASKZ(mask, p) _mm512_maskz_loadu_ps(mask, p)
#define CYCE_GRAD float
#define CYCE_EXPS_IN_GRAD 0
#define CYCE_VSTORE_GRAD(p, mask, v) cyce_v16_stream_store(p, mask, v)
#include "cyce_avx512_template.h"
#endif
#include "cyce_avx512_width_end.h"

#ifndef CYCE_HALF_TYPES
/* 8 double lanes */
#define CYCE_REAL double
#define CYCE_LANES 8
#define CYCE_MASK __mmask8
#define CYCE_V __m512d
#define CYCE_VOP(op) _mm512_##op##_pd
#define CYCE_VCMP_MASK _mm512_mask_cmp_pd_mask
#define CYCE_VCONST(name) CYCE_EXP_##name
#define CYCE_STORE double
#define CYCE_NATIVE 1
#define CYCE_SUFFIX f64
#define CYCE_VPOLY cyce_v8_exp_poly
#define CYCE_VLOAD(p) _mm512_loadu_pd(p)
#define CYCE_VLOAD_MASKZ(mask, p) _mm512_maskz_loadu_pd(mask, p)
#define CYCE_GRAD double
#define CYCE_EXPS_IN_GRAD 1
#define CYCE_VSTORE_GRAD(p, mask, v) _mm512_mask_storeu_pd(p, mask, v)
#include "cyce_avx512_template.h"
#include "cyce_avx512_width_end.h"
#endif

#endif
