/*
 * cyce_dtypes_native.h -- one native pair for cyce_dtypes.h: input,
 * gradient and arithmetic all CYCE_NATIVE_TYPE (float or double).  The
 * includer defines CYCE_NATIVE_TYPE, CYCE_SUFFIX, CYCE_EXP and CYCE_EXP_ANY;
 * this file undefines them.  No include guard: it is included once per type.
 */
#define CYCE_REAL CYCE_NATIVE_TYPE
#define CYCE_STORE CYCE_NATIVE_TYPE
#define CYCE_GRAD CYCE_NATIVE_TYPE
#define CYCE_LOAD(v) (v)
#define CYCE_TO_GRAD(v) (v)
#define CYCE_NATIVE 1
#define CYCE_EXPS_IN_GRAD 1
#include CYCE_TEMPLATE
#undef CYCE_REAL
#undef CYCE_STORE
#undef CYCE_GRAD
#undef CYCE_LOAD
#undef CYCE_TO_GRAD
#undef CYCE_NATIVE
#undef CYCE_EXPS_IN_GRAD
#undef CYCE_NATIVE_TYPE
#undef CYCE_SUFFIX
#undef CYCE_EXP
#undef CYCE_EXP_ANY
