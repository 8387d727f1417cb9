/*
 * cyce_rows.h -- the row primitives the Cython kernels call, for float and
 * double, plus what the build reports about itself.
 *
 * The functions are static inline: each kernel module (baseline, AVX2+FMA)
 * compiles them with its own flags, and cyce picks the module at import from
 * the CPU's features.
 */
#ifndef CYCE_ROWS_H
#define CYCE_ROWS_H

#include <stdint.h>
#include <math.h>
#include "cyce_exp.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define CYCE_BLOCK 256
#define CYCE_LINE 64          /* bytes per cache line (x86-64, most ARM) */

#define CYCE_REAL float
#define CYCE_SUFFIX f32
#define CYCE_EXP cyce_expf_nonpos
#include "cyce_rows_template.h"
#undef CYCE_REAL
#undef CYCE_SUFFIX
#undef CYCE_EXP

#define CYCE_REAL double
#define CYCE_SUFFIX f64
#define CYCE_EXP cyce_exp_nonpos
#include "cyce_rows_template.h"
#undef CYCE_REAL
#undef CYCE_SUFFIX
#undef CYCE_EXP

/* ---- what the build and the machine are ---- */

static inline int cyce_openmp_version(void)
{
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}

static inline int cyce_default_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static inline int cyce_cpu_has_avx2_fma(void)
{
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

#ifndef CYCE_SIMD_LEVEL
#define CYCE_SIMD_LEVEL "baseline"
#endif
#ifndef CYCE_CFLAGS
#define CYCE_CFLAGS ""
#endif
#ifdef __VERSION__
#define CYCE_COMPILER __VERSION__
#else
#define CYCE_COMPILER "unknown"
#endif

#endif
