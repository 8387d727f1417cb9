/*
 * cyce_stats.c -- the kernels of one instruction set over mapped logits:
 * softmax_stats, and softmax cross entropy at a temperature or with a logit
 * softcap (z = c tanh(x / c) / T).  setup.py compiles it beside
 * cyce_kernels.c with the same flags, and cyce_kernels.c's table points at
 * the table exported here, cyce_mapped_table_<level>.  A translation unit
 * of its own, so that these kernels do not change how GCC compiles the
 * others (their outputs keep their bits).
 *
 * Every dtype's rows are mapped into float (double for float64) rows, and
 * the float or double row loops of cyce_rows.h run over those.
 */
/* cyce_rows.h's static tile kernels, which this file does not call */
#pragma GCC diagnostic ignored "-Wunused-function"
#include <float.h>
#include "cyce_kernels_impl.h"

/* softmax_stats' block: mapped into a buffer that stays in L1 */
#define CYCE_STATS_BLOCK 2048

/* whether float rows' block passes scale a waiting row's gradient (the
 * AVX-512 ones do; the C ones leave wait out) */
#ifdef CYCE_AVX512_SPANS
#define CYCE_MAPPED_DEFERS 1
#else
#define CYCE_MAPPED_DEFERS 0
#endif

#ifdef CYCE_AVX512_SPANS
/* c tanh(v / c) and its slope sech(v / c)**2 for 16 floats, by
 * cyce_tanhf_sech2's formulas, each side computed only where a lane needs
 * it: logits well inside the cap take the polynomial alone.  1 / (1 + e)
 * is vrcp14ps and a Newton step (2**-28 relative), not a division. */
static inline __attribute__((always_inline)) __m512 cyce_vsoftcap_f32(__m512 v, __m512 cap,
                                                                      __m512 inv_cap,
                                                                      __m512 *slope)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 y = _mm512_mul_ps(v, inv_cap);
    const __m512 a = _mm512_abs_ps(y);
    /* NaN goes the exp's way, as in the scalar code */
    const __mmask16 small = _mm512_cmp_ps_mask(a, _mm512_set1_ps(CYCE_TANHF_SMALL), _CMP_LT_OQ);
    __m512 t = _mm512_setzero_ps(), s = _mm512_setzero_ps();
    if (small != 0) {
        __m512 y2 = _mm512_mul_ps(y, y);
        __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(CYCE_TANHF_P4), y2,
                                   _mm512_set1_ps(CYCE_TANHF_P3));
        p = _mm512_fmadd_ps(p, y2, _mm512_set1_ps(CYCE_TANHF_P2));
        p = _mm512_fmadd_ps(p, y2, _mm512_set1_ps(CYCE_TANHF_P1));
        p = _mm512_fmadd_ps(p, y2, _mm512_set1_ps(CYCE_TANHF_P0));
        t = _mm512_fmadd_ps(_mm512_mul_ps(y, y2), p, y);
        s = _mm512_fnmadd_ps(t, t, one);
    }
    if (small != (__mmask16)0xFFFF) {
        __m512 e = cyce_vexp_nonpos_f32(_mm512_mul_ps(a, _mm512_set1_ps(-2.0f)));
        __m512 q = _mm512_add_ps(one, e);
        __m512 r = _mm512_rcp14_ps(q);
        r = _mm512_mul_ps(r, _mm512_fnmadd_ps(q, r, _mm512_set1_ps(2.0f)));
        /* (1 - e) r >= 0 (or NaN): y's sign ored in */
        __m512 big = _mm512_or_ps(_mm512_mul_ps(_mm512_sub_ps(one, e), r),
                                  _mm512_and_ps(y, _mm512_set1_ps(-0.0f)));
        __m512 big_slope = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(4.0f), e),
                                         _mm512_mul_ps(r, r));
        t = _mm512_mask_mov_ps(big, small, t);
        s = _mm512_mask_mov_ps(big_slope, small, s);
        /* a masked class stays masked (-inf is never small) */
        const __mmask16 masked = _mm512_cmp_ps_mask(v, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ);
        *slope = s;
        return _mm512_mask_mov_ps(_mm512_mul_ps(cap, t), masked, v);
    }
    *slope = s;
    return _mm512_mul_ps(cap, t);
}
#endif

#define CYCE_TABLE_NAME(suffix) CYCE_CAT3(cyce_mapped_kernels, suffix, CYCE_ISA)
#define CYCE_TEMPLATE "cyce_stats_template.h"

#define CYCE_NATIVE_TYPE float
#define CYCE_SUFFIX f32
#define CYCE_REAL_SUFFIX f32
#define CYCE_TANH_SECH2 cyce_tanhf_sech2
#define CYCE_EXP cyce_expf_nonpos
#define CYCE_EXP_ANY cyce_expf
#ifdef CYCE_AVX512_SPANS
#define CYCE_SV __m512
#define CYCE_SVOP(op) _mm512_##op##_ps
#define CYCE_SVCMP _mm512_mask_cmp_ps_mask
#define CYCE_SMASK __mmask16
#define CYCE_SLANES 16
#define CYCE_STATS_VEXP cyce_vexp_nonpos_f32
#define CYCE_STATS_VSOFTCAP cyce_vsoftcap_f32
#endif
#include "cyce_dtypes_native.h"
#undef CYCE_REAL_SUFFIX
#undef CYCE_TANH_SECH2
#undef CYCE_SV
#undef CYCE_SVOP
#undef CYCE_SVCMP
#undef CYCE_SMASK
#undef CYCE_SLANES
#undef CYCE_STATS_VEXP
#undef CYCE_STATS_VSOFTCAP

#define CYCE_NATIVE_TYPE double
#define CYCE_SUFFIX f64
#define CYCE_REAL_SUFFIX f64
#define CYCE_TANH_SECH2 cyce_tanh_sech2
#define CYCE_EXP cyce_exp_nonpos
#define CYCE_EXP_ANY cyce_exp
#ifdef CYCE_AVX512_SPANS
#define CYCE_SV __m512d
#define CYCE_SVOP(op) _mm512_##op##_pd
#define CYCE_SVCMP _mm512_mask_cmp_pd_mask
#define CYCE_SMASK __mmask8
#define CYCE_SLANES 8
#define CYCE_STATS_VEXP cyce_vexp_nonpos_f64
#endif
#include "cyce_dtypes_native.h"
#undef CYCE_REAL_SUFFIX
#undef CYCE_TANH_SECH2
/* (the AVX-512 stats loops are the native types' alone) */
#undef CYCE_SV
#undef CYCE_SVOP
#undef CYCE_SVCMP
#undef CYCE_SMASK
#undef CYCE_SLANES
#undef CYCE_STATS_VEXP

/* bfloat16 and float16, computed in float, each with a gradient of its own
 * dtype and a float one */
#define CYCE_NATIVE 0
#define CYCE_REAL float
#define CYCE_REAL_SUFFIX f32
#define CYCE_TANH_SECH2 cyce_tanhf_sech2
#define CYCE_EXP cyce_expf_nonpos
#define CYCE_EXP_ANY cyce_expf
#define CYCE_STORE uint16_t

#define CYCE_LOAD(v) cyce_bf16_to_float(v)
#define CYCE_HALF_TO_GRAD(v) cyce_float_to_bf16(v)
#define CYCE_HALF_SUFFIX bf16
#define CYCE_HALF_F32_SUFFIX bf16_f32
#include "cyce_dtypes_half.h"

#define CYCE_LOAD(v) cyce_f16_to_float(v)
#define CYCE_HALF_TO_GRAD(v) cyce_float_to_f16(v)
#define CYCE_HALF_SUFFIX f16
#define CYCE_HALF_F32_SUFFIX f16_f32
#include "cyce_dtypes_half.h"

#undef CYCE_STORE
#undef CYCE_NATIVE
#undef CYCE_REAL
#undef CYCE_REAL_SUFFIX
#undef CYCE_TANH_SECH2
#undef CYCE_EXP
#undef CYCE_EXP_ANY
#undef CYCE_TEMPLATE

const cyce_mapped_table CYCE_CAT3(cyce_mapped, table, CYCE_ISA) = {
    &CYCE_TABLE_NAME(f32),
    &CYCE_TABLE_NAME(f64),
    &CYCE_TABLE_NAME(bf16),
    &CYCE_TABLE_NAME(bf16_f32),
    &CYCE_TABLE_NAME(f16),
    &CYCE_TABLE_NAME(f16_f32),
};
