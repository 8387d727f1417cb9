/*
 * cyce_kernels_half.c -- the kernels of one instruction set whose exps go
 * to scratch rows: bfloat16 and float16 (with a gradient of their own dtype
 * or float), and, at the avx512 level, float32 into a gradient of its own,
 * streamed out.  setup.py compiles it beside cyce_kernels.c, with the same
 * flags then -O2; each table is exported as cyce_kernels_<dtypes>_<level>
 * for cyce_kernels.c's table.
 */
#define CYCE_HALF_TYPES 1
#include "cyce_kernels_impl.h"

#define CYCE_TABLE_NAME(suffix) CYCE_CAT3(cyce_kernels, suffix, CYCE_ISA)

/* bfloat16 and float16: their bits (cyce_half.h), computed in float, with
 * a gradient of the input's dtype or a float one */
#define CYCE_NATIVE 0
#define CYCE_REAL float
#define CYCE_EXP_ANY cyce_expf

#define CYCE_STORE uint16_t
#define CYCE_LOAD(v) cyce_bf16_to_float(v)
#define CYCE_EXPS_IN_GRAD 0
#define CYCE_GRAD uint16_t
#define CYCE_TO_GRAD(v) cyce_float_to_bf16(v)
#define CYCE_SUFFIX bf16
#include "cyce_kernels_template.h"
#undef CYCE_EXPS_IN_GRAD
#undef CYCE_GRAD
#undef CYCE_TO_GRAD
#undef CYCE_SUFFIX
#define CYCE_EXPS_IN_GRAD 1
#define CYCE_GRAD float
#define CYCE_TO_GRAD(v) (v)
#define CYCE_SUFFIX bf16_f32
#include "cyce_kernels_template.h"
#undef CYCE_EXPS_IN_GRAD
#undef CYCE_GRAD
#undef CYCE_TO_GRAD
#undef CYCE_SUFFIX
#undef CYCE_LOAD
#undef CYCE_STORE

#define CYCE_STORE uint16_t
#define CYCE_LOAD(v) cyce_f16_to_float(v)
#define CYCE_EXPS_IN_GRAD 0
#define CYCE_GRAD uint16_t
#define CYCE_TO_GRAD(v) cyce_float_to_f16(v)
#define CYCE_SUFFIX f16
#include "cyce_kernels_template.h"
#undef CYCE_EXPS_IN_GRAD
#undef CYCE_GRAD
#undef CYCE_TO_GRAD
#undef CYCE_SUFFIX
#define CYCE_EXPS_IN_GRAD 1
#define CYCE_GRAD float
#define CYCE_TO_GRAD(v) (v)
#define CYCE_SUFFIX f16_f32
#include "cyce_kernels_template.h"
#undef CYCE_EXPS_IN_GRAD
#undef CYCE_GRAD
#undef CYCE_TO_GRAD
#undef CYCE_SUFFIX
#undef CYCE_LOAD
#undef CYCE_STORE

#undef CYCE_NATIVE
#undef CYCE_REAL
#undef CYCE_EXP_ANY

/* float32 into a gradient of its own (cyce_rows.h's f32_stream loops) */
#if defined(CYCE_AVX512_SPANS)
#define CYCE_NATIVE 0
#define CYCE_REAL float
#define CYCE_STORE float
#define CYCE_GRAD float
#define CYCE_EXPS_IN_GRAD 0
#define CYCE_LOAD(v) (v)
#define CYCE_TO_GRAD(v) (v)
#define CYCE_EXP_ANY cyce_expf
#define CYCE_TASK_FENCE() _mm_sfence()
#define CYCE_SUFFIX f32_stream
#include "cyce_kernels_template.h"
#undef CYCE_NATIVE
#undef CYCE_REAL
#undef CYCE_STORE
#undef CYCE_GRAD
#undef CYCE_EXPS_IN_GRAD
#undef CYCE_LOAD
#undef CYCE_TO_GRAD
#undef CYCE_EXP_ANY
#undef CYCE_TASK_FENCE
#undef CYCE_SUFFIX
#endif
