/*
 * cyce_kernels.c -- the kernels of one instruction set.  setup.py compiles
 * this file once per level with that level's flags and -DCYCE_ISA=<level>;
 * each object exports one table, cyce_kernels_<level>, and nothing else.
 */
#include <math.h>
#include <string.h>
#include "cyce_kernels.h"
#include "cyce_rows.h"

#ifndef CYCE_ISA
#define CYCE_ISA baseline
#endif
#ifndef CYCE_SIMD_LEVEL
#define CYCE_SIMD_LEVEL "baseline"
#endif
#ifndef CYCE_CFLAGS
#define CYCE_CFLAGS ""
#endif

/* A row's gradient whose scaling pass waits for the next row's exps: still
 * exp(x - block max), to be multiplied by exp_scale * factor[k] block by
 * block, then its label slot set. */
typedef struct {
    void *grad;               /* NULL: no row waiting */
    const double *factor;
    double exp_scale;
    int64_t label;
    double label_grad;
} cyce_deferred;

/* An element's loss and gradient, returned by value. */
typedef struct {
    double loss;
    double grad;
} cyce_loss_grad;

/* PyTorch's BCEWithLogitsLoss of one element, without its weight:
 * loss = p y softplus(-x) + (1 - y) softplus(x), grad = (1 + (p - 1) y) s(x) - p y,
 * s the sigmoid, p = pos_weight.  Both softplus terms are >= 0 and share
 * exp(-|x|): nothing overflows or cancels (PyTorch's form loses a small loss
 * to cancellation for x << 0).  A term whose coefficient is 0 adds 0, so
 * x = +-inf with the matching target gives 0, not NaN.  In double whatever
 * the dtype: log1p has no vector form here, and a float result is then
 * correctly rounded. */
static inline cyce_loss_grad cyce_elem_sigmoid_bce(double x, double y, double pos_weight)
{
    double e = exp(-fabs(x));
    double log1p_e = log1p(e);
    double neg_term = pos_weight * y;   /* the weight of -log s(x) = softplus(-x) */
    double pos_term = 1.0 - y;          /* the weight of -log(1 - s(x)) = softplus(x) */
    double loss = 0.0;
    if (neg_term != 0.0) {
        loss = loss + neg_term * (fmax(-x, 0.0) + log1p_e);
    }
    if (pos_term != 0.0) {
        loss = loss + pos_term * (fmax(x, 0.0) + log1p_e);
    }
    if (x != x) {
        loss = x;                       /* NaN in, NaN out */
    }
    double sigmoid = x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
    cyce_loss_grad result = {loss, (1.0 + (pos_weight - 1.0) * y) * sigmoid - neg_term};
    return result;
}

/* PyTorch's BCELoss of one element, without its weight: each log clamped at
 * -100 (p = 0 or 1 gives a finite loss), PyTorch's gradient
 * (p - y) / max(p (1 - p), 1e-12). */
static inline cyce_loss_grad cyce_elem_probability_bce(double p, double y)
{
    double log_p = fmax(log(p), -100.0);
    double log_not_p = fmax(log1p(-p), -100.0);
    cyce_loss_grad result = {-(y * log_p + (1.0 - y) * log_not_p),
                             (p - y) / fmax(p * (1.0 - p), 1e-12)};
    return result;
}

/* element i of targets, float or double, as a double */
#define CYCE_TARGET(targets, f64, i) \
    ((f64) ? ((const double *)(targets))[i] : (double)((const float *)(targets))[i])

#define CYCE_REAL float
#define CYCE_SUFFIX f32
#define CYCE_EXP_ANY cyce_expf
#include "cyce_kernels_template.h"
#undef CYCE_REAL
#undef CYCE_SUFFIX
#undef CYCE_EXP_ANY

#define CYCE_REAL double
#define CYCE_SUFFIX f64
#define CYCE_EXP_ANY cyce_exp
#include "cyce_kernels_template.h"
#undef CYCE_REAL
#undef CYCE_SUFFIX
#undef CYCE_EXP_ANY

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
    log1p_values,
};
