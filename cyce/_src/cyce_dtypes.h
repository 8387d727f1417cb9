/*
 * cyce_dtypes.h -- the dtype pairs (input, gradient) of a translation unit,
 * each with the macros of cyce_rows_template.h, including CYCE_TEMPLATE
 * once per pair: float and double in cyce_kernels.c, and where
 * CYCE_HALF_TYPES (cyce_kernels_half.c) the kernels whose exps go to
 * scratch rows.  cyce_rows.h includes it for the row loops, the kernel
 * sources for the row kernels, so that both instantiate the same list.
 * No include guard: it is included once per template.
 */
#ifndef CYCE_HALF_TYPES

/* float and double: stored as they are computed, gradients of their own
 * dtype (cyce_dtypes_native.h) */
#define CYCE_NATIVE_TYPE float
#define CYCE_SUFFIX f32
#define CYCE_EXP cyce_expf_nonpos
#define CYCE_EXP_ANY cyce_expf
#include "cyce_dtypes_native.h"

#define CYCE_NATIVE_TYPE double
#define CYCE_SUFFIX f64
#define CYCE_EXP cyce_exp_nonpos
#define CYCE_EXP_ANY cyce_exp
#include "cyce_dtypes_native.h"

#else

/* computed in float, the exps in the scratch rows where the gradient
 * cannot hold them unrounded */
#define CYCE_NATIVE 0
#define CYCE_REAL float
#define CYCE_EXP cyce_expf_nonpos
#define CYCE_EXP_ANY cyce_expf

/* bfloat16 and float16, their bits (cyce_half.h), each with a gradient of
 * its own dtype and with a float one (cyce_dtypes_half.h) */
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

#if defined(CYCE_AVX512_SPANS)
/* float32 into a gradient of its own: its exps in the scratch rows, its
 * scaled values streamed out (cyce_v16_stream_store), ordered by the
 * task's closing sfence */
#define CYCE_STORE float
#define CYCE_GRAD float
#define CYCE_EXPS_IN_GRAD 0
#define CYCE_LOAD(v) (v)
#define CYCE_TO_GRAD(v) (v)
#define CYCE_TASK_FENCE() _mm_sfence()
#define CYCE_SUFFIX f32_stream
#include CYCE_TEMPLATE
#undef CYCE_STORE
#undef CYCE_GRAD
#undef CYCE_EXPS_IN_GRAD
#undef CYCE_LOAD
#undef CYCE_TO_GRAD
#undef CYCE_TASK_FENCE
#undef CYCE_SUFFIX
#endif

#undef CYCE_NATIVE
#undef CYCE_REAL
#undef CYCE_EXP
#undef CYCE_EXP_ANY

#endif

#undef CYCE_TEMPLATE
