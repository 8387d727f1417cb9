/*
 * cyce_rows.h -- the row primitives the row kernels of
 * cyce_kernels_template.h call, for each storage dtype (float, double,
 * bfloat16, float16), and their tuning constants.
 *
 * The functions are static inline: cyce_kernels.c is compiled once per
 * instruction set (baseline, avx2, avx512: setup.py), and each object
 * compiles them with its own flags.
 */
#ifndef CYCE_ROWS_H
#define CYCE_ROWS_H

#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include "cyce_exp.h"
#include "cyce_half.h"

#include "cyce_kernels.h"

#define CYCE_BLOCK 256
#define CYCE_LINE 64          /* bytes per cache line (x86-64, most ARM) */
/* Long rows go block by block (cyce_row_blocked_exp_sum_m1): blocks of
 * CYCE_ONLINE_BLOCK_BYTES, at most CYCE_ONLINE_MAX_BLOCKS per row (longer
 * rows get longer blocks).  A block stays in L1 between its max (taken
 * during the previous block's exps) and its exps; one cache line over
 * 16 KiB, since blocks a multiple of 4 KiB long were slower
 * (docs/performance.md#block-length). */
#ifndef CYCE_ONLINE_BLOCK_BYTES
#define CYCE_ONLINE_BLOCK_BYTES (16 * 1024 + CYCE_LINE)
#endif
#define CYCE_ONLINE_MAX_BLOCKS 256
/* A row's scaling pass (a multiply per vector, from cache) runs during the
 * next row's exps, where the vector units are the bottleneck and the loads
 * and stores go beside them (row_softmax_ce_hard in
 * cyce_kernels_template.h), for float rows of at most CYCE_DEFER_MAX_BYTES.
 * Longer rows, and double rows, scale in a pass of their own: with two long
 * rows in play at once the deferred scaling costs more than it hides
 * (docs/performance.md#deferred-scaling). */
#ifndef CYCE_DEFER_MAX_BYTES
#define CYCE_DEFER_MAX_BYTES (144 * 1024)
#endif
/* The blocked kernel prefetches as it goes, CYCE_PREFETCH_AHEAD_BYTES ahead
 * of its exps (across row ends: the rows are contiguous): the hardware
 * prefetcher alone did not keep the next block's max reads fed
 * (docs/performance.md#prefetch-distance). */
#ifndef CYCE_PREFETCH_AHEAD_BYTES
#define CYCE_PREFETCH_AHEAD_BYTES (16384)
#endif
/* Into which cache those prefetches go: L1 (3) for float, L2 (2) for
 * double, the faster of the two for each dtype
 * (docs/performance.md#prefetch-locality). */
#define CYCE_PREFETCH_LOCALITY (sizeof(CYCE_REAL) == 4 ? 3 : 2)
/* The AVX-512 block loop prefetches each line a second time,
 * CYCE_PREFETCH_FAR_BYTES past the first, into L2.  The first alone keeps
 * only about as many misses in flight as L1 holds; with the lines already
 * in L2 the loop reads at the core's limit.  Not in the C loop of the other
 * objects, whose exps are the bottleneck (docs/performance.md#far-prefetch). */
#ifndef CYCE_PREFETCH_FAR_BYTES
#define CYCE_PREFETCH_FAR_BYTES (16384)
#endif
/* cyce_row_exp_sum_m1 (soft targets, label smoothing) prefetches the whole
 * next row during its exps for rows of at least CYCE_PREFETCH_MIN_CLASSES
 * classes and at most CYCE_PREFETCH_MAX_BYTES, so that the next row's max
 * pass reads from cache while this row's exps keep the core busy.  Shorter
 * rows are left to the hardware prefetcher; longer ones too, since a long
 * row and the next one no longer fit in L2 together
 * (docs/performance.md#next-row-prefetch). */
#ifndef CYCE_PREFETCH_MIN_CLASSES
#define CYCE_PREFETCH_MIN_CLASSES 256
#endif
#ifndef CYCE_PREFETCH_MAX_BYTES
#define CYCE_PREFETCH_MAX_BYTES (128 * 1024)
#endif

/* ---- softmax cross entropy against an integer label: one row's terms ----
 *
 * The loss of a row and the coefficients of its gradient, from the row's
 * statistics (shared by the long-row and the tile kernels, and written in
 * plain arithmetic so that a loop over a tile's rows vectorises):
 *   max, total_m1 = sum(exp(x - max)) - 1, label_shifted = x[label] - max,
 *   label_exp_m1 = exp(label_shifted) - 1 (used for the gradient only; see
 *   cyce_label_exp_m1), smooth_shifted = sum_c w_c (x_c - max) (used only
 *   when smoothing), W = weight_total, e = smoothing, z = z_loss:
 *
 *   loss = (1-e) w_y (lse - x_y) + (e/C) sum_c w_c (lse - x_c) + z lse^2
 *   grad = (1-e) w_y (p - onehot_y) + (e/C) (W p - w) + 2 z lse p
 *
 * lse - x_c is computed as log(sum exp(x - max)) - (x_c - max): every term
 * non-negative, no cancellation for large logits; the log is log1p(total_m1),
 * exact for a confidently right row, whose sum is 1 + tiny.  The label's
 * slot p_y - 1 would cancel for such a row; written as
 * (label_exp_m1 - total_m1) / sum in double it keeps full precision.
 * Everything is times row_weight (the loss) or row_weight * grad_scale. */
typedef struct {
    double max;
    double total_m1;
    double label_shifted;
    double label_exp_m1;
    double label_weight;  /* w_y */
    double smooth_shifted;
    double row_weight;    /* its sample weight (0 for a row to leave out) */
} cyce_hard_row;

typedef struct {
    double loss;          /* the row's loss, times its sample weight */
    double exp_scale;     /* grad[c] = exp_scale * exp(x_c - max) - weight_scale * w[c], */
    double weight_scale;
    double label_grad;    /* except grad[label] */
} cyce_hard_terms;

/* The options by value: the callers' copies, whose known zeros fold away. */
static inline cyce_hard_terms cyce_softmax_ce_hard_terms(int64_t n, cyce_hard_row row,
                                                         cyce_ce_opts opts)
{
    const double max = row.max, total_m1 = row.total_m1, label_shifted = row.label_shifted;
    const double label_exp_m1 = row.label_exp_m1, label_weight = row.label_weight;
    const double smooth_shifted = row.smooth_shifted, row_weight = row.row_weight;
    const double weight_total = opts.weight_total, smoothing = opts.label_smoothing;
    const double z_loss = opts.z_loss, grad_scale = opts.grad_scale;
    cyce_hard_terms terms;
    double total = 1.0 + total_m1;
    double inv_total = 1.0 / total;
    double log_total = cyce_log1p_nonneg(total_m1);
    double lse = max + log_total;
    double uniform = smoothing / (double)n;
    double coef = row_weight * grad_scale;
    double keep = (1.0 - smoothing) * label_weight;
    double loss = keep * (log_total - label_shifted);
    /* the optional terms are added only when asked for: 0 * inf would be NaN */
    loss = smoothing != 0.0 ? loss + uniform * (weight_total * log_total - smooth_shifted) : loss;
    loss = z_loss != 0.0 ? loss + z_loss * lse * lse : loss;
    double z_term = z_loss != 0.0 ? 2.0 * z_loss * lse : 0.0;
    terms.loss = row_weight * loss;
    terms.exp_scale = coef * (keep + uniform * weight_total + z_term) * inv_total;
    terms.weight_scale = coef * uniform;
    terms.label_grad = coef * (keep * (label_exp_m1 - total_m1) * inv_total
                               + uniform * (weight_total * (1.0 + label_exp_m1) * inv_total
                                            - label_weight)
                               + z_term * (1.0 + label_exp_m1) * inv_total);
    return terms;
}

/* exp(x_y - max) - 1 from the label's stored exp, as precise as expm1 for
 * the label's gradient slot p_y - 1 = (exp(x_y - max) - 1 - total_m1) / sum:
 * when x_y is the max it is exactly 0, and the slot is -total_m1 / sum to
 * full precision however confident the row; otherwise the label's own exp is
 * part of total_m1, so the numerator is at least 1 in magnitude and the
 * rounding of exp(x_y - max) near 1 (an ulp of 1) cannot cancel. */
static inline double cyce_label_exp_m1(double label_shifted, double label_exp)
{
    return label_shifted == 0.0 ? 0.0 : label_exp - 1.0;
}

/* A block's share of label smoothing's sum_c (z_c - max) / T, the row's
 * sum taken block by block: u, the block's sum against its own max bm (or
 * against 0 where the block is all -inf, bm = -inf), moved to the row's max
 * by len (bm - max) / T.  Every term <= 0, so the sum does not cancel. */
static inline double cyce_smoothing_share(double u, double len, double bm, double max,
                                          double inv_t)
{
    return bm == -INFINITY ? u - len * max * inv_t : u + len * ((bm - max) * inv_t);
}

/* How many elements of `size` bytes lie between p and the next cache line:
 * 0 when p starts one, or is not a multiple of size (never on a line).
 * NumPy's large arrays start 16 bytes past a line, and a vector split over
 * two lines costs the loads and stores of both; the vector loops that write
 * take these elements first, then go on whole lines. */
static inline int64_t cyce_line_head(const void *p, size_t size)
{
    uintptr_t past = (uintptr_t)p % CYCE_LINE;
    return past == 0 || past % size != 0 ? 0 : (int64_t)((CYCE_LINE - past) / size);
}

/* the avx512 object's exp-and-sum loops by hand (cyce_avx512.h) */
#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include "cyce_avx512.h"
#define CYCE_AVX512_SPANS 1
#endif

/* Label smoothing without class weights goes through the blocked rows, its
 * sum taken in the exps' loop for one add per vector, in the avx512 object
 * only: the blocked C loops of the other objects measured slower than a
 * smoothed row's max pass of its own, and so did class weights' sum in a
 * pass per block (docs/performance.md#one-pass-smoothing). */
#ifdef CYCE_AVX512_SPANS
#define CYCE_ONE_PASS_SMOOTHING 1
#else
#define CYCE_ONE_PASS_SMOOTHING 0
#endif

#define CYCE_TEMPLATE "cyce_rows_template.h"
#include "cyce_dtypes.h"

#endif
