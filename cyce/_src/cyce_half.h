/*
 * cyce_half.h -- bfloat16 and float16 storage: conversions to float32, in
 * which the kernels compute, and back, rounded to nearest even.  Both are
 * held as uint16_t bits.  Every conversion is branch-free, so that GCC
 * vectorises the loops that call it.
 *
 * bfloat16 is float32's upper half: widening is a shift, and rounding an
 * add of 0x7fff plus the kept part's lowest bit (ties to even).  The
 * AVX-512 stores (cyce_avx512.h) take AVX512_BF16's vcvtneps2bf16 where the
 * CPU has it, and these steps for vectors holding a subnormal, which it
 * flushes to zero.
 *
 * float16 goes through integer operations here too, exact for subnormals,
 * +-inf for values beyond 65504 rounded, a NaN for a NaN: the values F16C's
 * vcvtph2ps / vcvtps2ph give (a NaN's payload aside), which the AVX-512
 * loops use (cyce_avx512.h).  Not F16C through GCC's _Float16 in the C loops: GCC
 * does not vectorise _Float16 conversions without AVX512-FP16.
 */
#ifndef CYCE_HALF_H
#define CYCE_HALF_H

#include <stdint.h>
#include <string.h>

static inline __attribute__((always_inline)) float cyce_float_of_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline __attribute__((always_inline)) uint32_t cyce_bits_of_float(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline __attribute__((always_inline)) float cyce_bf16_to_float(uint16_t h)
{
    return cyce_float_of_bits((uint32_t)h << 16);
}

/* A NaN keeps its sign and gets the quiet bit, so that dropping the low
 * half cannot turn it into an infinity. */
static inline __attribute__((always_inline)) uint16_t cyce_float_to_bf16(float f)
{
    uint32_t u = cyce_bits_of_float(f);
    uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
    uint32_t quiet = u | 0x00400000u;
    return (uint16_t)((f != f ? quiet : rounded) >> 16);
}

/* The exponent and mantissa move to float's places and the exponent is
 * rebiased by 112; an infinity or NaN (exponent 31) gets float's 255; a
 * subnormal or zero (exponent 0) is its mantissa times 2**-24, made exact
 * as (2**-14 + m 2**-24) - 2**-14. */
static inline __attribute__((always_inline)) float cyce_f16_to_float(uint16_t h)
{
    uint32_t magnitude = (uint32_t)(h & 0x7fffu) << 13;
    uint32_t exponent = h & 0x7c00u;
    uint32_t rebiased = magnitude + (112u << 23);
    uint32_t special = rebiased + (112u << 23);
    float tiny = cyce_float_of_bits(magnitude + (113u << 23)) - cyce_float_of_bits(113u << 23);
    uint32_t bits = exponent == 0x7c00u ? special
                  : exponent == 0 ? cyce_bits_of_float(tiny) : rebiased;
    return cyce_float_of_bits(bits | (uint32_t)(h & 0x8000u) << 16);
}

/* Rounded to nearest even: a normal result adds 0xfff plus the kept part's
 * lowest bit before the shift; a subnormal one (below 2**-14) is added to
 * 2**-1 in float, whose rounding drops exactly the bits float16 cannot
 * hold; from 65520 up (the first value that rounds past 65504) +-inf, and a
 * NaN is float16's quiet NaN. */
static inline __attribute__((always_inline)) uint16_t cyce_float_to_f16(float f)
{
    uint32_t u = cyce_bits_of_float(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t magnitude = u & 0x7fffffffu;
    uint32_t normal = (magnitude + 0xc8000fffu + ((magnitude >> 13) & 1u)) >> 13;
    float shifted = cyce_float_of_bits(magnitude) + 0.5f;
    uint32_t subnormal = cyce_bits_of_float(shifted) - 0x3f000000u;
    uint32_t bits = magnitude > 0x7f800000u ? 0x7e00u
                  : magnitude >= 0x477ff000u ? 0x7c00u
                  : magnitude < 0x38800000u ? subnormal : normal;
    return (uint16_t)(bits | sign);
}

#endif
