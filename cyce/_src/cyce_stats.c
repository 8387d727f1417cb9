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
#include "cyce_kernels_impl.h"

/* softmax_stats' block: mapped into a buffer that stays in L1 */
#define CYCE_STATS_BLOCK 2048

#define CYCE_TABLE_NAME(suffix) CYCE_CAT3(cyce_mapped_kernels, suffix, CYCE_ISA)
#define CYCE_TEMPLATE "cyce_stats_template.h"

#define CYCE_NATIVE_TYPE float
#define CYCE_SUFFIX f32
#define CYCE_REAL_SUFFIX f32
#define CYCE_TANH_SECH2 cyce_tanhf_sech2
#define CYCE_EXP cyce_expf_nonpos
#define CYCE_EXP_ANY cyce_expf
#include "cyce_dtypes_native.h"
#undef CYCE_REAL_SUFFIX
#undef CYCE_TANH_SECH2

#define CYCE_NATIVE_TYPE double
#define CYCE_SUFFIX f64
#define CYCE_REAL_SUFFIX f64
#define CYCE_TANH_SECH2 cyce_tanh_sech2
#define CYCE_EXP cyce_exp_nonpos
#define CYCE_EXP_ANY cyce_exp
#include "cyce_dtypes_native.h"
#undef CYCE_REAL_SUFFIX
#undef CYCE_TANH_SECH2

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
