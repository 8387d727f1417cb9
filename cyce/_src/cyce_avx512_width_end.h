/*
 * cyce_avx512_width_end.h -- undefines one vector width's macros
 * (cyce_avx512.h defines them for 16 float and 8 double lanes).
 * No include guard: it is included once per width.
 */
#undef CYCE_REAL
#undef CYCE_LANES
#undef CYCE_MASK
#undef CYCE_V
#undef CYCE_VOP
#undef CYCE_VCMP_MASK
#undef CYCE_VCONST
