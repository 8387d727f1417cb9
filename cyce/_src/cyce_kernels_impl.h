/*
 * cyce_kernels_impl.h -- what the two kernel sources of an instruction set
 * share: cyce_kernels.c (float and double, and the table) and
 * cyce_kernels_half.c (bfloat16 and float16, in a translation unit of
 * their own so that their code does not change how GCC inlines the
 * float and double kernels).
 */
#ifndef CYCE_KERNELS_IMPL_H
#define CYCE_KERNELS_IMPL_H

#include <math.h>
#include <string.h>
#include "cyce_kernels.h"
#include "cyce_rows.h"

#ifndef CYCE_ISA
#define CYCE_ISA baseline
#endif

#define CYCE_CAT3_(a, b, c) a##_##b##_##c
#define CYCE_CAT3(a, b, c) CYCE_CAT3_(a, b, c)

/* A row's gradient whose scaling pass waits for the next row's exps: still
 * exp(x - block max), to be multiplied by exp_scale * factor[k] block by
 * block, less weight_scale (label smoothing's share of each class), then its
 * label slot set. */
typedef struct {
    void *grad;               /* NULL: no row waiting */
    void *exps;               /* its exps (grad itself: only float rows wait) */
    const double *factor;
    double exp_scale;
    double weight_scale;
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

#endif
