/*
 * cyce_dtypes_half.h -- one half type's two pairs for cyce_dtypes.h: a
 * gradient of its own dtype (its exps in the scratch rows) and a float one
 * (its exps in the gradient).  The includer defines CYCE_STORE, CYCE_LOAD,
 * CYCE_HALF_TO_GRAD and the two suffixes; this file undefines all but
 * CYCE_STORE.  No include guard: it is included once per half type.
 */
#define CYCE_EXPS_IN_GRAD 0
#define CYCE_GRAD uint16_t
#define CYCE_TO_GRAD(v) CYCE_HALF_TO_GRAD(v)
#define CYCE_SUFFIX CYCE_HALF_SUFFIX
#include CYCE_TEMPLATE
#undef CYCE_EXPS_IN_GRAD
#undef CYCE_GRAD
#undef CYCE_TO_GRAD
#undef CYCE_SUFFIX

#define CYCE_EXPS_IN_GRAD 1
#define CYCE_GRAD float
#define CYCE_TO_GRAD(v) (v)
#define CYCE_SUFFIX CYCE_HALF_F32_SUFFIX
#include CYCE_TEMPLATE
#undef CYCE_EXPS_IN_GRAD
#undef CYCE_GRAD
#undef CYCE_TO_GRAD
#undef CYCE_SUFFIX

#undef CYCE_LOAD
#undef CYCE_HALF_TO_GRAD
#undef CYCE_HALF_SUFFIX
#undef CYCE_HALF_F32_SUFFIX
