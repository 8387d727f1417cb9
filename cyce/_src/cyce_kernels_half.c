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

#define CYCE_TEMPLATE "cyce_kernels_template.h"
#include "cyce_dtypes.h"
