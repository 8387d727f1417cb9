/*
 * cyce_kernels.c -- the kernels of one instruction set.  setup.py compiles
 * this file and cyce_kernels_half.c once per level with that level's flags
 * and -DCYCE_ISA=<level>; this object exports one table,
 * cyce_kernels_<level>, holding the other's kernels too.
 */
#include "cyce_kernels_impl.h"

#ifndef CYCE_SIMD_LEVEL
#define CYCE_SIMD_LEVEL "baseline"
#endif
#ifndef CYCE_CFLAGS
#define CYCE_CFLAGS ""
#endif

#define CYCE_TEMPLATE "cyce_kernels_template.h"
#include "cyce_dtypes.h"

/* cyce_kernels_half.c's, for the same instruction set */
extern const cyce_dtype_kernels CYCE_CAT3(cyce_kernels, bf16, CYCE_ISA);
extern const cyce_dtype_kernels CYCE_CAT3(cyce_kernels, bf16_f32, CYCE_ISA);
extern const cyce_dtype_kernels CYCE_CAT3(cyce_kernels, f16, CYCE_ISA);
extern const cyce_dtype_kernels CYCE_CAT3(cyce_kernels, f16_f32, CYCE_ISA);
#ifdef CYCE_AVX512_SPANS
extern const cyce_dtype_kernels CYCE_CAT3(cyce_kernels, f32_stream, CYCE_ISA);
#endif
/* cyce_stats.c's */
extern const cyce_mapped_table CYCE_CAT3(cyce_mapped, table, CYCE_ISA);

static void log1p_values(const double *s, double *out, int64_t n)
{
    for (int64_t j = 0; j < n; j++) {
        out[j] = cyce_log1p_nonneg(s[j]);
    }
}

#define CYCE_TABLE_(isa) cyce_kernels_##isa
#define CYCE_TABLE(isa) CYCE_TABLE_(isa)

const cyce_kernel_table CYCE_TABLE(CYCE_ISA) = {
    CYCE_SIMD_LEVEL,
    CYCE_CFLAGS,
    &cyce_kernels_f32,
    &cyce_kernels_f64,
    &CYCE_CAT3(cyce_kernels, bf16, CYCE_ISA),
    &CYCE_CAT3(cyce_kernels, bf16_f32, CYCE_ISA),
    &CYCE_CAT3(cyce_kernels, f16, CYCE_ISA),
    &CYCE_CAT3(cyce_kernels, f16_f32, CYCE_ISA),
#ifdef CYCE_AVX512_SPANS
    &CYCE_CAT3(cyce_kernels, f32_stream, CYCE_ISA),
#else
    NULL,
#endif
    &CYCE_CAT3(cyce_mapped, table, CYCE_ISA),
    log1p_values,
};
