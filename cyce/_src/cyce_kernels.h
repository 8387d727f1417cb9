/*
 * cyce_kernels.h -- what the Cython module (cyce/_core.pyx) calls: the
 * options of a loss, the arrays of one call, and the table of kernels.
 *
 * cyce_kernels.c is compiled once per instruction set (baseline, AVX2+FMA,
 * AVX-512: setup.py), each object exporting one table; the module picks a
 * table once, at import, from the CPU's features (cyce_kernels_for_level).
 * The kernels are plain C over contiguous rows, with no Python and no
 * OpenMP of their own: the module runs the prange over their tasks.
 */
#ifndef CYCE_KERNELS_H
#define CYCE_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* The options of a cross-entropy call, for every row kernel. */
typedef struct {
    const double *class_weight;   /* n_classes weights, or NULL for all ones */
    double weight_total;          /* their sum (n_classes when NULL) */
    const double *sample_weight;  /* one weight per row, or NULL for all ones */
    double label_smoothing;
    double z_loss;
    double grad_scale;            /* the reduction's 1 / denominator */
    int64_t ignore_index;
    /* the logits' map z = c tanh(x / c) / T (cyce_stats.c's kernels alone) */
    double temperature;           /* T (1: none) */
    double logit_softcap;         /* c (0: none) */
} cyce_ce_opts;

/* The arrays of one call over rows (all C-contiguous, n_rows x n_classes
 * unless said otherwise; x and grad of the table's dtype, probabilities
 * float or double). */
typedef struct {
    const void *x;
    void *grad;                   /* NULL for the loss alone; may be x */
    const int64_t *labels;        /* n_rows class indices (integer targets) */
    const void *targets;          /* probabilities (soft targets) */
    int targets_f64;              /* targets are double, else float */
    double *row_loss;             /* n_rows losses, or NULL where not wanted */
    int64_t n_rows;
    int64_t n_classes;
} cyce_rows;

/* The arrays of an elementwise binary loss over the flattened
 * (n_elements / n_classes, n_classes) array; weight and pos_weight are
 * broadcast through their byte strides.  values and grad are of the
 * table's dtype; weight, pos_weight and loss_out of the type it computes in
 * (float for bfloat16 and float16). */
typedef struct {
    const void *values;
    const void *targets;
    int targets_f64;
    const char *weight;           /* or NULL */
    int64_t weight_strides[2];
    const char *pos_weight;       /* n_classes entries, or NULL */
    int64_t pos_weight_stride;
    void *grad;                   /* or NULL; may be values */
    void *loss_out;               /* each element's loss, or NULL */
    int64_t n_elements;
    int64_t n_classes;
    double grad_scale;
} cyce_elements;

enum { CYCE_SIGMOID_BCE = 0, CYCE_PROBABILITY_BCE = 1 };

/* Rows of at most CYCE_SHORT_MAX classes go through the tile kernel,
 * CYCE_TILE at a time, one row per SIMD lane: the row loops' set-up costs
 * more than a short row's exps (docs/performance.md#short-rows). */
#define CYCE_TILE 64
#define CYCE_SHORT_MAX 32
/* Elements per task of the binary losses. */
#define CYCE_BINARY_BLOCK 4096

/* The kernels of one storage dtype.  A task is a range of rows (or, for
 * the binary losses, of CYCE_BINARY_BLOCK elements); a task returning a
 * double returns the sum of its losses in row order.
 *
 * The tasks that take a scratch store a row's exps there where the output
 * cannot hold them unrounded (a bfloat16 or float16 one): two rows of
 * n_classes * exps_itemsize bytes of the calling thread's own (a row whose
 * scaling waits, and the next), needed when a gradient or softmax is
 * written; exps_itemsize is 0 (no scratch: pass NULL) where the exps go to
 * the output itself.  logsumexp writes float for the half types. */
typedef struct {
    size_t exps_itemsize;
    void (*logsumexp)(const cyce_rows *rows, void *out, int64_t first, int64_t stop);
    void (*softmax)(const cyce_rows *rows, int log_space, void *scratch, int64_t first,
                    int64_t stop);
    double (*softmax_ce_hard)(const cyce_rows *rows, const cyce_ce_opts *opts, void *scratch,
                              int64_t first, int64_t stop);
    void (*softmax_ce_soft)(const cyce_rows *rows, const cyce_ce_opts *opts, void *scratch,
                            int64_t first, int64_t stop);
    double (*binary)(const cyce_elements *elements, int kind, int64_t start, int64_t stop);
    void (*categorical_ce)(const cyce_rows *rows, const cyce_ce_opts *opts, double eps,
                           int64_t first, int64_t stop);
    /* the exps and the exp-and-sum loop the kernels use, for their tests
     * (NULL for the half types) */
    void (*exp_values)(const void *x, void *out, int64_t n);
    void (*exp_nonpos_values)(const void *x, void *out, int64_t n);
    void (*span_exp_sum_count)(const void *x, void *out, int64_t n, double shift, double top,
                               double *sum, double *count);
    /* the index of the first of n probabilities outside [0, 1] (NaN
     * included), or -1 (NULL for the half types, whose targets are read as
     * float32) */
    int64_t (*first_bad_probability)(const void *t, int64_t n);
} cyce_dtype_kernels;

/* softmax_stats' per-row results, of the type computed in (float for the
 * half types); logprob is NULL without labels. */
typedef struct {
    void *lse;
    void *logprob;
    void *entropy;
    int64_t *argmax;
} cyce_stats_out;

/* The kernels of cyce_stats.c for one pair of dtypes: softmax_stats, and
 * softmax cross entropy of mapped logits (a temperature or a softcap), whose
 * tasks take a scratch of scratch_bytes(n_classes) bytes per thread. */
typedef struct {
    size_t (*scratch_bytes)(int64_t n_classes);
    void (*softmax_stats)(const cyce_rows *rows, const cyce_ce_opts *opts,
                          const cyce_stats_out *out, void *scratch, int64_t first, int64_t stop);
    double (*softmax_ce_hard)(const cyce_rows *rows, const cyce_ce_opts *opts, void *scratch,
                              int64_t first, int64_t stop);
    void (*softmax_ce_soft)(const cyce_rows *rows, const cyce_ce_opts *opts, void *scratch,
                            int64_t first, int64_t stop);
} cyce_mapped_kernels;

typedef struct {
    const cyce_mapped_kernels *f32;
    const cyce_mapped_kernels *f64;
    const cyce_mapped_kernels *bf16;
    const cyce_mapped_kernels *bf16_f32;
    const cyce_mapped_kernels *f16;
    const cyce_mapped_kernels *f16_f32;
} cyce_mapped_table;

typedef struct {
    const char *level;            /* "baseline", "avx2", "avx512" */
    const char *cflags;           /* the flags this table's object was compiled with */
    const cyce_dtype_kernels *f32;
    const cyce_dtype_kernels *f64;
    const cyce_dtype_kernels *bf16;
    const cyce_dtype_kernels *bf16_f32;   /* bfloat16 input, float gradient or softmax */
    const cyce_dtype_kernels *f16;
    const cyce_dtype_kernels *f16_f32;
    /* float32 into a gradient of its own, streamed out (NULL: not this level) */
    const cyce_dtype_kernels *f32_stream;
    const cyce_mapped_table *mapped;
    void (*log1p_values)(const double *s, double *out, int64_t n);
} cyce_kernel_table;

/* Rows per task of every row kernel: a tile of short rows, or up to a tile
 * of longer rows (softmax_ce_hard chains them: each row takes the next one's
 * first block max, docs/performance.md#row-chaining), at least 8 tasks where
 * there are 8 rows so that threads share the work.  It depends on the shape
 * alone, so the tasks' sums have the same bits for any thread count and any
 * schedule. */
static inline int64_t cyce_rows_per_task(int64_t n_rows, int64_t n_classes)
{
    if (n_classes <= CYCE_SHORT_MAX) {
        return CYCE_TILE;
    }
    int64_t rows = n_rows / 8 < CYCE_TILE ? n_rows / 8 : CYCE_TILE;
    return rows > 1 ? rows : 1;
}

/* ---- what the module asks of the machine ---- */

static inline int cyce_openmp_version(void)
{
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}

static inline int cyce_default_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* AVX2 and FMA, and F16C (float16 conversions; every AVX2 CPU has it) */
static inline int cyce_cpu_has_avx2_fma(void)
{
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
        && __builtin_cpu_supports("f16c");
#else
    return 0;
#endif
}

/* AVX-512 F, DQ, BW and VL, with the OS saving the 512-bit state (libgcc's
 * __builtin_cpu_supports checks XGETBV as well as CPUID). */
static inline int cyce_cpu_has_avx512(void)
{
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    return cyce_cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

#ifdef __VERSION__
#define CYCE_COMPILER __VERSION__
#else
#define CYCE_COMPILER "unknown"
#endif

extern const cyce_kernel_table cyce_kernels_baseline;
#ifdef CYCE_HAVE_AVX2
extern const cyce_kernel_table cyce_kernels_avx2;
#endif
#ifdef CYCE_HAVE_AVX512
extern const cyce_kernel_table cyce_kernels_avx512;
#endif

/* Whether this build has the kernels of level 0, 1 or 2. */
static inline int cyce_level_built(int level)
{
    switch (level) {
    case 0:
        return 1;
#ifdef CYCE_HAVE_AVX2
    case 1:
        return 1;
#endif
#ifdef CYCE_HAVE_AVX512
    case 2:
        return 1;
#endif
    default:
        return 0;
    }
}

/* The table of level 0 (baseline), 1 (AVX2+FMA) or 2 (AVX-512), or NULL
 * where this build lacks it or this CPU cannot run it. */
static inline const cyce_kernel_table *cyce_kernels_for_level(int level)
{
    switch (level) {
    case 0:
        return &cyce_kernels_baseline;
#ifdef CYCE_HAVE_AVX2
    case 1:
        return cyce_cpu_has_avx2_fma() ? &cyce_kernels_avx2 : NULL;
#endif
#ifdef CYCE_HAVE_AVX512
    case 2:
        return cyce_cpu_has_avx512() ? &cyce_kernels_avx512 : NULL;
#endif
    default:
        return NULL;
    }
}

#endif
