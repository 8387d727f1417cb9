/*
 * cyce_rows.h -- the row primitives the Cython kernels call, for float and
 * double, plus what the build reports about itself.
 *
 * The functions are static inline: each kernel module (baseline, AVX2+FMA)
 * compiles them with its own flags, and cyce picks the module at import from
 * the CPU's features.
 */
#ifndef CYCE_ROWS_H
#define CYCE_ROWS_H

#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include "cyce_exp.h"

#include "cyce_kernels.h"

#define CYCE_BLOCK 256
#define CYCE_LINE 64          /* bytes per cache line (x86-64, most ARM) */
/* Long rows go block by block (cyce_row_blocked_exp_sum_m1): blocks of
 * CYCE_ONLINE_BLOCK_BYTES, at most CYCE_ONLINE_MAX_BLOCKS per row (longer
 * rows get longer blocks).  A block stays in L1 between its max (taken
 * during the previous block's exps) and its exps.  One cache line over
 * 16 KiB: blocks a multiple of 4 KiB long made the loss alone of 256000
 * classes 25% slower.  Measured (2-vCPU Xeon, AVX-512 build, 1 thread, best
 * of 7, ms, loss alone / in place), float32 4096 x 32000 and 512 x 256000:
 *   8 KiB  74 / 63 and 78 / 87;  16 KiB  52 / 63 and 62 / 67;
 *   16 KiB + 64 B  52 / 63 and 48 / 67;  24 KiB  54 / 66 and 50 / 70;
 *   32 KiB  54 / 64 and 54 / 70;
 * float64 4096 x 32000 in place: 16 KiB 131, 16 KiB + 64 B 126, 24 KiB 132.
 * The three-pass kernel it replaced: 63 / 73 and 87 / 94. */
#ifndef CYCE_ONLINE_BLOCK_BYTES
#define CYCE_ONLINE_BLOCK_BYTES (16 * 1024 + CYCE_LINE)
#endif
#define CYCE_ONLINE_MAX_BLOCKS 256
/* A row's scaling pass (a multiply per vector, from cache) runs during the
 * next row's exps, where the vector units are the bottleneck and the loads
 * and stores go beside them (row_softmax_ce_hard in _kernels.pxi), for
 * float rows of at most CYCE_DEFER_MAX_BYTES.  Longer rows scale in a pass
 * of their own: with two long rows in play at once the deferred scaling
 * costs more than it hides.  Measured (2-vCPU Xeon, AVX-512 loops, 1 thread,
 * in place, float32, per 131M elements, deferred / not, best of 7 alternating
 * in one process, ms), by row length:
 *   125 KiB 46.3 / 52.7,  141 KiB 47.4 / 53.9,  156 KiB 51.5 / 53.5,
 *   160 KiB 56.0 / 54.7,  164 KiB 56.7 / 54.5,  172 KiB 60.0 / 53.3,
 *   188 KiB 59.8 / 55.5,  250 KiB 62.6 / 54.3,  500 KiB 66.7 / 61.7,
 *   750 KiB 63.3 / 59.3,  1000 KiB 54 to 59 / 57.2,  1500 KiB 57.7 / 57.7.
 * Earlier, with GCC's loops: float64 was slower deferred at every shape
 * (4096 x 32000 120 / 128, 16384 x 1000 14.7 / 15.8 ms): not for double. */
#ifndef CYCE_DEFER_MAX_BYTES
#define CYCE_DEFER_MAX_BYTES (144 * 1024)
#endif
/* The blocked kernel prefetches as it goes, CYCE_PREFETCH_AHEAD_BYTES ahead
 * of its exps (across row ends: the rows are contiguous).  The hardware
 * prefetcher does not keep the next block's max reads fed on this VM:
 * without it the loss alone of 4096 x 32000 float32 took 117 ms with the AVX2
 * build (in place 94 ms), with it 65 (75).  Measured, 1 thread, float32,
 * ms, loss alone / in place, AVX2 then AVX-512 build:
 *   16 KiB: 4096 x 32000  65 / 75 and 52 / 62;  16384 x 1000  8.0 / 8.7 and 7.0 / 7.6
 *   32 KiB: 4096 x 32000  67 / 76 and 52 / 62;  16384 x 1000  8.4 / 8.5 and 6.9 / 7.3
 *   64 KiB: 4096 x 32000  67 / 76 and 52 / 62;  16384 x 1000  8.0 / 8.9 and 7.0 / 7.6
 * 512 x 256000 (AVX-512): 51 / 65 at each distance. */
#ifndef CYCE_PREFETCH_AHEAD_BYTES
#define CYCE_PREFETCH_AHEAD_BYTES (16384)
#endif
/* Into which cache those prefetches go: L1 (3) for float, L2 (2) for
 * double.  Measured with the AVX-512 loops of cyce_avx512.h, 1 thread, ms,
 * loss alone / in place, L1 then L2, two runs each:
 *   float32 4096 x 32000  42.0-42.6 / 49.9-50.9  and  44.0-45.2 / 51.5-52.2;
 *   float32 512 x 256000  38.8-39.0 / 55.1-57.2  and  42.4-42.5 / 57.8-59.4;
 *   float64 4096 x 32000  93.6-98.5 / 120-124  and  96.4-96.5 / 115-117.
 * Farther ahead, 24 to 64 KiB, was 10 to 20% slower for float32; 8 KiB
 * within the noise of 16. */
#define CYCE_PREFETCH_LOCALITY (sizeof(CYCE_REAL) == 4 ? 3 : 2)
/* The AVX-512 block loop prefetches each line a second time,
 * CYCE_PREFETCH_FAR_BYTES past the first, into L2.  The first, a block
 * ahead, is the line the next block's max is about to load anyway: alone,
 * it kept about as many misses in flight as L1 holds, and one core read
 * DRAM at about 14 GB/s.  Asked for a block earlier, the L2 has the lines
 * ready and the loop reads at the core's limit (a plain loop of AVX-512
 * loads over the same 500 MiB: 15.5 GB/s, 33.7 ms).  Measured in the
 * benchmark's worker (1 thread, median of 15, ms, in place / loss alone):
 * float32 512 x 256000 55.8 / 39.5 -> 47.8 / 35.3, 4096 x 32000 50.1 / 40.1
 * -> 41.6 / 37.1 (with cyce_block_exp_sum's unswitched calls: 44.0 / 33.6
 * and 39.5 / 35.3); 8 and 16 KiB past the first the same, 32 and 48 KiB
 * 1 to 10% slower at 4096 x 32000; a scratch harness: 176 KiB slower than
 * none.  Not in the AVX2 build's C loop: its exps are the bottleneck, and
 * the extra prefetch made the loss alone 2 to 3% slower there. */
#ifndef CYCE_PREFETCH_FAR_BYTES
#define CYCE_PREFETCH_FAR_BYTES (16384)
#endif
/* cyce_row_exp_sum_m1 (soft targets, label smoothing)
 * prefetches the whole next row during its exps for rows of at least
 * CYCE_PREFETCH_MIN_CLASSES classes and at most CYCE_PREFETCH_MAX_BYTES, so
 * that the next row's max pass reads from cache while this row's exps keep
 * the core busy.  Shorter rows are left to the hardware prefetcher; longer
 * ones too, since a long row and the next one no longer fit in L2 together,
 * and the prefetches evict what the scaling pass is about to read.  Measured
 * (2-vCPU Xeon with AVX-512), in place, 1 thread, with the hard-label kernel
 * of the time (a max pass, then this one, then the scaling):
 * 16384 x 1000 float32 13.6 ms without the prefetch, 11.2 ms with;
 * 4096 x 32000 float32 (125 KiB rows) 82 ms without, 73 ms with (and 78 ms
 * prefetching two rows ahead, 81 ms four);
 * 4096 x 32000 float64 (250 KiB rows) 220 ms without, 222 ms with;
 * 512 x 256000 float32 97 ms without, 112 ms with. */
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
    double loss;          /* the row's loss, times its sample weight */
    double exp_scale;     /* grad[c] = exp_scale * exp(x_c - max) - weight_scale * w[c], */
    double weight_scale;
    double label_grad;    /* except grad[label] */
} cyce_hard_terms;

static inline cyce_hard_terms cyce_softmax_ce_hard_terms(
    int64_t n, double max, double total_m1, double label_shifted, double label_exp_m1,
    double label_weight, double weight_total, double smooth_shifted, double row_weight,
    double smoothing, double z_loss, double grad_scale)
{
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

/* the AVX-512 build's exp-and-sum loops by hand (cyce_avx512.h) */
#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include "cyce_avx512.h"
#define CYCE_AVX512_SPANS 1
#endif

#define CYCE_REAL float
#define CYCE_SUFFIX f32
#define CYCE_EXP cyce_expf_nonpos
#include "cyce_rows_template.h"
#undef CYCE_REAL
#undef CYCE_SUFFIX
#undef CYCE_EXP

#define CYCE_REAL double
#define CYCE_SUFFIX f64
#define CYCE_EXP cyce_exp_nonpos
#include "cyce_rows_template.h"
#undef CYCE_REAL
#undef CYCE_SUFFIX
#undef CYCE_EXP

#endif
