/*
 * cyce_exp.h -- branch-free exp and tanh for float and double, and log1p for
 * double, that GCC vectorises.
 *
 * Why not libm: without -ffast-math (which would break the inf/nan semantics
 * cyce promises) GCC calls expf/exp one element at a time.  These functions
 * are plain arithmetic and selects, so a loop that calls them becomes SIMD
 * (docs/performance.md#compiler-flags).
 *
 * Method (the classic one):
 *   exp(x) = 2**n * exp(r),  n = round(x / ln2),  r = x - n*ln2 in [-ln2/2, ln2/2]
 *   - n is rounded with the "add 1.5 * 2**p, subtract it" trick, which needs no
 *     SSE4.1 round instruction and leaves n in the low mantissa bits (so no
 *     float->int conversion, which is undefined for NaN in C);
 *   - r uses a two-constant Cody-Waite split of ln2 so n*LN2_HI is exact;
 *   - exp(r) is the Taylor polynomial by Horner: degree 7 for float (truncation
 *     < 1e-8 relative), degree 13 for double (< 1e-17 relative);
 *   - 2**n is built from exponent bits in two halves, so results in the
 *     subnormal range are rounded once, correctly, instead of flushed to 0.
 * Edges: x below the underflow limit (including -inf) gives exactly +0, above
 * the overflow limit (including +inf) gives +inf, NaN gives NaN.  The
 * _nonpos variants, for softmax's x - max <= 0, skip the overflow handling.
 * Accuracy: within 2 ulp of the correctly rounded result over the whole
 * range (tests/test_exp.py checks this against a float64/mpmath reference).
 */
#ifndef CYCE_EXP_H
#define CYCE_EXP_H

#include <stdint.h>
#include <math.h>

typedef union { float f; uint32_t u; } cyce_f32_bits;
typedef union { double f; uint64_t u; } cyce_f64_bits;

/* The range reduction's constants, shared with cyce_avx512.h's vector
 * exps (which must give the same bits) and, ln2 in double, with
 * cyce_log1p_nonneg. */
#define CYCE_EXPF_LOG2E 1.44269504088896341f
#define CYCE_EXPF_LN2_HI 0.693359375f           /* 9 significant bits: n*ln2_hi exact */
#define CYCE_EXPF_LN2_LO (-2.12194440e-4f)
#define CYCE_EXPF_ROUND 12582912.0f             /* 1.5 * 2**23 */
#define CYCE_EXP_LOG2E 1.4426950408889634074
#define CYCE_EXP_LN2_HI 6.93147180369123816490e-01  /* low 32 bits zero: n*ln2_hi exact */
#define CYCE_EXP_LN2_LO 1.90821492927058770002e-10
#define CYCE_EXP_ROUND 6755399441055744.0             /* 1.5 * 2**52 */
#define CYCE_EXPF_LOWER (-104.0f)               /* exp(-104) < min subnormal / 2 */
#define CYCE_EXPF_UPPER 88.72283935546875f      /* largest x with exp(x) finite */
#define CYCE_EXP_LOWER (-746.0)                 /* exp(-746) < min subnormal / 2 */
#define CYCE_EXP_UPPER 709.782712893383973096   /* largest x with exp(x) finite */
/* the bits of the ROUND constants, and of the exponent fields */
#define CYCE_EXPF_ROUND_BITS 0x4B400000u
#define CYCE_EXP_ROUND_BITS 0x4338000000000000ull
#define CYCE_EXPF_BIAS 127
#define CYCE_EXP_BIAS 1023
#define CYCE_EXPF_MANTISSA_BITS 23
#define CYCE_EXP_MANTISSA_BITS 52

/* exp(r)'s Taylor coefficients 1/k!, the highest degree first, as the
 * divisors k! (STEP(k) is one Horner step with coefficient 1/k, the type's
 * literal suffix pasted on by STEP): float's polynomial is 1/7! and then
 * 1/6! to 1/0!, double's 1/13!, 1/12! to 1/7!, and the same tail.  The
 * scalar exps here and the vector ones of cyce_avx512.h evaluate these. */
#define CYCE_TAYLOR_12_TO_7(STEP) \
    STEP(479001600.0) STEP(39916800.0) STEP(3628800.0) STEP(362880.0) STEP(40320.0) STEP(5040.0)
#define CYCE_TAYLOR_6_TO_0(STEP) \
    STEP(720.0) STEP(120.0) STEP(24.0) STEP(6.0) STEP(2.0) STEP(1.0) STEP(1.0)

/* float: exp(r) by its Taylor polynomial to degree 7, each coefficient
 * times unit (cyce_exp_template.h) */
#define CYCE_X float
#define CYCE_XBITS cyce_f32_bits
#define CYCE_XINT int32_t
#define CYCE_XUINT uint32_t
#define CYCE_XFN(name) cyce_expf##name
#define CYCE_XC(name) CYCE_EXPF_##name
#define CYCE_XSTEP(k) p = p * r + unit / k##f;
#define CYCE_XPOLY(p, r, unit) do {                     \
        p = unit / 5040.0f;                             \
        CYCE_TAYLOR_6_TO_0(CYCE_XSTEP)                  \
    } while (0)
#include "cyce_exp_template.h"

/* double: to degree 13 */
#define CYCE_X double
#define CYCE_XBITS cyce_f64_bits
#define CYCE_XINT int64_t
#define CYCE_XUINT uint64_t
#define CYCE_XFN(name) cyce_exp##name
#define CYCE_XC(name) CYCE_EXP_##name
#define CYCE_XSTEP(k) p = p * r + unit / k;
#define CYCE_XPOLY(p, r, unit) do {                     \
        p = unit / 6227020800.0;                        \
        CYCE_TAYLOR_12_TO_7(CYCE_XSTEP)                 \
        CYCE_TAYLOR_6_TO_0(CYCE_XSTEP)                  \
    } while (0)
#include "cyce_exp_template.h"

/* tanh(y), and 1 - tanh(y)**2 into *sech2 (the logit softcap's value and
 * slope), branch-free.  For |y| < 0.625 Cephes' odd polynomial (tanhf:
 * S. L. Moshier's minimax fit) and 1 - t*t, at least 0.69, so without
 * cancellation; beyond, from e = exp(-2|y|) <= 0.29: tanh = (1 - e) / (1 + e)
 * and sech**2 = 4e / (1 + e)**2, which keeps its relative precision where
 * tanh rounds to 1.  A few ulp; +-inf give +-1 and 0, NaN gives NaN. */
#define CYCE_TANHF_P4 -5.70498872745e-3f
#define CYCE_TANHF_P3 2.06390887954e-2f
#define CYCE_TANHF_P2 -5.37397155531e-2f
#define CYCE_TANHF_P1 1.33314422036e-1f
#define CYCE_TANHF_P0 -3.33332819422e-1f
#define CYCE_TANHF_SMALL 0.625f
static inline __attribute__((always_inline)) float cyce_tanhf_sech2(float y, float *sech2)
{
    float a = fabsf(y), y2 = y * y;
    float p = CYCE_TANHF_P4;
    p = p * y2 + CYCE_TANHF_P3;
    p = p * y2 + CYCE_TANHF_P2;
    p = p * y2 + CYCE_TANHF_P1;
    p = p * y2 + CYCE_TANHF_P0;
    float small = y + y * y2 * p;
    float e = cyce_expf_nonpos(-2.0f * a);
    float inv = 1.0f / (1.0f + e);
    float big = copysignf((1.0f - e) * inv, y);
    int is_small = a < CYCE_TANHF_SMALL;
    *sech2 = is_small ? 1.0f - small * small : 4.0f * e * inv * inv;
    return is_small ? small : big;
}

/* The same in double: for |y| < 0.625 Cephes' rational approximation
 * (tanh: y + y^3 P(y^2) / Q(y^2)). */
static inline __attribute__((always_inline)) double cyce_tanh_sech2(double y, double *sech2)
{
    double a = fabs(y), y2 = y * y;
    double p = (-9.64399179425052238628e-1 * y2 - 9.92877231001918586564e1) * y2
        - 1.61468768441708447952e3;
    double q = ((y2 + 1.12811678491632931402e2) * y2 + 2.23548839060100448583e3) * y2
        + 4.84406305325125486048e3;
    double small = y + y * y2 * (p / q);
    double e = cyce_exp_nonpos(-2.0 * a);
    double inv = 1.0 / (1.0 + e);
    double big = copysign((1.0 - e) * inv, y);
    int is_small = a < 0.625;
    *sech2 = is_small ? 1.0 - small * small : 4.0 * e * inv * inv;
    return is_small ? small : big;
}

/* log1p(s) for s >= 0 (or NaN), branch-free so that a loop over lanes
 * vectorises (libm's log1p is a call per element).  The losses need it for
 * log(sum exp(x - max)) = log1p(sum - 1), which keeps a confident row's tiny
 * loss to full precision.
 *
 * Method: u = 1 + s rounded, with c = (s - (u - 1)) / u the first-order
 * correction for that rounding (log1p(s) = log(u) + log(1 + (s-(u-1))/u));
 * u = 2**k * f with f in [sqrt(1/2), sqrt(2)) from the exponent bits; then
 * log(f) = 2 atanh(z), z = (f - 1) / (f + 1), |z| < 0.172, by its series to
 * z**23 (truncation < 2e-19 relative), and log(u) = k ln2 + log(f) with ln2
 * split as in the exp (CYCE_EXP_LN2_HI, _LO), so k * ln2_hi is exact.
 * Within 4 ulp of double over [0, 2**1000] (tests/test_exp.py checks it
 * against mpmath); s = 0 gives exactly 0, +inf gives +inf, NaN gives NaN. */
static inline double cyce_log1p_nonneg(double s)
{
    double u = 1.0 + s;
    double correction = (s - (u - 1.0)) / u;
    cyce_f64_bits bits;
    bits.f = u;
    /* k such that u / 2**k is in [sqrt(1/2), sqrt(2)): shift the mantissa
     * boundary from 1 to sqrt(1/2) by adding the bits of 2 - sqrt(2) */
    uint64_t shifted = bits.u + (0x3ff0000000000000ull - 0x3fe6a09e667f3bcdull);
    bits.u = (shifted & 0x000fffffffffffffull) + 0x3fe6a09e667f3bcdull;
    double f = bits.f;
    /* k = (biased exponent of shifted) - 1023, converted to double through
     * the bits of 2**52 + k + 1023 (AVX2 has no int64 -> double conversion) */
    cyce_f64_bits kbits;
    kbits.u = 0x4330000000000000ull | (shifted >> 52);
    double kd = kbits.f - (4503599627370496.0 + 1023.0);
    double z = (f - 1.0) / (f + 1.0);
    double z2 = z * z;
    double p = 1.0 / 23.0;
    p = p * z2 + 1.0 / 21.0;
    p = p * z2 + 1.0 / 19.0;
    p = p * z2 + 1.0 / 17.0;
    p = p * z2 + 1.0 / 15.0;
    p = p * z2 + 1.0 / 13.0;
    p = p * z2 + 1.0 / 11.0;
    p = p * z2 + 1.0 / 9.0;
    p = p * z2 + 1.0 / 7.0;
    p = p * z2 + 1.0 / 5.0;
    p = p * z2 + 1.0 / 3.0;
    double log_f = 2.0 * z + 2.0 * z * z2 * p;
    double result = kd * CYCE_EXP_LN2_HI + ((log_f + correction) + kd * CYCE_EXP_LN2_LO);
    result = s == INFINITY ? s : result;
    return s != s ? s : result;
}

#endif
