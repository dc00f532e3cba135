/* The masked steps of AlphaAdam and AlphaSGD over many CPU tensors, one call per pass
   (see alphaadam/optim/native.py).

AlphaAdam, pass 1 per tensor: update the Adam moments, compute the bias-corrected direction u and the
mask M, leave M * u in the gradient buffer, and reduce sum(u^2), sum((M * u)^2) and sum(M).
AlphaAdam, pass 2 per tensor: theta <- theta * decay - step * (M * u), with step = lr * alpha.
AlphaSGD, pass 1 per tensor: update the momentum buffer (u, torch.optim.SGD's direction), leave M * u in
the gradient buffer and reduce the same sums; pass 2 is AlphaAdam's with no decay (SGD's weight decay
is coupled: it is inside u).

Work is split into fixed blocks of every tensor, run in parallel; per-block sums are added in block
order, so results do not depend on the number of threads. Within a block, fp32 sums run over short
vectorised stretches and are then added in double precision.

Every mask test is a select inside the vector loop: the library must be built with
-fno-trapping-math, or gcc keeps it a branch on CPUs without AVX-512 and the loop stays scalar. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define BLOCK 65536 /* elements per parallel job: long enough to stream, three fp32 arrays fit in L2 */
#define STRETCH 1024 /* elements per vectorised partial sum before it is widened to double */

enum { MASK_ASYNC = 0, MASK_SYNC = 1, MASK_NONE = 2 };
enum { HP_BETA1, HP_BETA2, HP_EPS, HP_INV_BC1, HP_INV_BC2_SQRT, HP_COUNT };
/* AlphaSGD's table: u = buffer <- buffer * MOMENTUM + GRAD_WEIGHT * d_p (0 and 1 at the first step),
   with d_p = g + WEIGHT_DECAY * theta. */
enum { SGD_MOMENTUM, SGD_GRAD_WEIGHT, SGD_WEIGHT_DECAY, SGD_COUNT };
enum { OUT_FULL, OUT_MASKED, OUT_KEPT, OUT_COUNT };

/* A mode number packs the options that are literals in the vector loops; each case of the switches
   below compiles to its own branch-free loop. */
#define MODE_MASK(k) ((k) / 4)
#define MODE_STRICT(k) (((k) / 2) % 2 == 0)
#define MODE_FLAG(k) ((k) % 2) /* AlphaSGD: weight decay; unused by AlphaAdam */
#define MODE(mask, strict, flag) (4 * (mask) + 2 * !(strict) + !!(flag))
#define EACH_MODE(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

typedef struct {
    int32_t tensor;
    int64_t lo, hi;
} job_t;

typedef void (*block_fn)(const void *ctx, int tensor, int64_t lo, int64_t hi, double *sums);

static job_t *split_into_jobs(int n, const int64_t *sizes, int64_t *count)
{
    int64_t jobs = 0;
    for (int i = 0; i < n; i++)
        jobs += (sizes[i] + BLOCK - 1) / BLOCK;
    job_t *list = malloc((jobs ? jobs : 1) * sizeof *list);
    if (!list)
        return NULL;
    int64_t k = 0;
    for (int i = 0; i < n; i++)
        for (int64_t lo = 0; lo < sizes[i]; lo += BLOCK) {
            list[k].tensor = i;
            list[k].lo = lo;
            list[k].hi = lo + BLOCK < sizes[i] ? lo + BLOCK : sizes[i];
            k++;
        }
    *count = jobs;
    return list;
}

/* Runs `block` over every block of every tensor in parallel. With `out` (n x OUT_COUNT), each block
   writes its own sums, which are then added per tensor in block order. Returns -1 when out of memory. */
static int for_each_block(int n, const int64_t *sizes, int threads, block_fn block, const void *ctx,
                          double *out)
{
    int64_t jobs = 0;
    job_t *list = split_into_jobs(n, sizes, &jobs);
    double *sums = out ? calloc((jobs ? jobs : 1) * OUT_COUNT, sizeof *sums) : NULL;
    if (!list || (out && !sums)) {
        free(list);
        free(sums);
        return -1;
    }
#pragma omp parallel for schedule(dynamic, 2) num_threads(threads) if (jobs > 4)
    for (int64_t q = 0; q < jobs; q++)
        block(ctx, list[q].tensor, list[q].lo, list[q].hi, sums ? sums + OUT_COUNT * q : NULL);
    if (out) {
        for (int i = 0; i < n * OUT_COUNT; i++)
            out[i] = 0;
        for (int64_t q = 0; q < jobs; q++)
            for (int k = 0; k < OUT_COUNT; k++)
                out[OUT_COUNT * list[q].tensor + k] += sums[OUT_COUNT * q + k];
    }
    free(list);
    free(sums);
    return 0;
}

typedef struct {
    void **param, **grad, **m, **v, **buf;
    const double *hp, *step, *decay;
    int mode;
} args_t;

#define DEFINE_KERNELS(T, ACC, SQRT)                                                                   \
    static inline __attribute__((always_inline)) void adam_stretch_##T(                                \
        T *restrict g, T *restrict m, T *restrict v, int64_t lo, int64_t hi, const double *hp,         \
        const int mask, const int strict, double *sums)                                                \
    {                                                                                                  \
        const T b2 = (T)hp[HP_BETA2], eps = (T)hp[HP_EPS];                                             \
        const T w1 = (T)(1.0 - hp[HP_BETA1]), w2 = (T)(1.0 - hp[HP_BETA2]);                            \
        const T inv_bc1 = (T)hp[HP_INV_BC1], inv_bc2_sqrt = (T)hp[HP_INV_BC2_SQRT];                    \
        ACC full = 0, masked = 0;                                                                      \
        int32_t kept = 0;                                                                              \
        _Pragma("omp simd reduction(+ : full, masked, kept)")                                          \
        for (int64_t j = lo; j < hi; j++) {                                                            \
            const T gj = g[j], m_old = m[j];                                                           \
            const T m_new = m_old + w1 * (gj - m_old); /* torch.lerp for weights below 0.5 */          \
            const T v_new = b2 * v[j] + w2 * (gj * gj);                                                \
            const T u = (m_new * inv_bc1) / (SQRT(v_new) * inv_bc2_sqrt + eps);                        \
            const T agree = (mask == MASK_ASYNC ? m_old : m_new) * gj;                                 \
            const int keep = mask == MASK_NONE ? 1 : (strict ? agree > 0 : agree >= 0);                \
            const T d = keep ? u : (T)0;                                                               \
            m[j] = m_new;                                                                              \
            v[j] = v_new;                                                                              \
            g[j] = d;                                                                                  \
            full += u * u;                                                                             \
            masked += d * d;                                                                           \
            kept += keep;                                                                              \
        }                                                                                              \
        sums[OUT_FULL] += full;                                                                        \
        sums[OUT_MASKED] += masked;                                                                    \
        sums[OUT_KEPT] += (double)kept;                                                                \
    }                                                                                                  \
                                                                                                       \
    static void adam_block_##T(const void *ctx, int i, int64_t lo, int64_t hi, double *sums)           \
    {                                                                                                  \
        const args_t *a = ctx;                                                                         \
        T *g = a->grad[i], *m = a->m[i], *v = a->v[i];                                                 \
        const double *hp = a->hp + HP_COUNT * i;                                                       \
        for (int64_t s = lo; s < hi; s += STRETCH) {                                                   \
            const int64_t e = s + STRETCH < hi ? s + STRETCH : hi;                                     \
            switch (a->mode) {                                                                         \
                EACH_MODE(ADAM_CASE_##T)                                                               \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
                                                                                                       \
    static void update_block_##T(const void *ctx, int i, int64_t lo, int64_t hi, double *sums)         \
    {                                                                                                  \
        const args_t *a = ctx;                                                                         \
        T *restrict p = a->param[i];                                                                   \
        const T *restrict d = a->grad[i];                                                              \
        const T s = (T)a->step[i], c = (T)a->decay[i];                                                 \
        (void)sums;                                                                                    \
        _Pragma("omp simd")                                                                            \
        for (int64_t j = lo; j < hi; j++)                                                              \
            p[j] = p[j] * c - s * d[j];                                                                \
    }                                                                                                  \
                                                                                                       \
    /* AlphaSGD's direction u is the updated momentum buffer (torch.optim.SGD without Nesterov).    \
       Like AlphaAdam's first pass, it leaves M * u in the gradient for alphaadam_pass2. */          \
    static inline __attribute__((always_inline)) void sgd_stretch_##T(                                 \
        const T *restrict p, T *restrict g, T *restrict buf, int64_t lo, int64_t hi,                   \
        const double *hp, const int mask, const int strict, const int decay, double *sums)            \
    {                                                                                                  \
        const T mom = (T)hp[SGD_MOMENTUM], w = (T)hp[SGD_GRAD_WEIGHT], wd = (T)hp[SGD_WEIGHT_DECAY];   \
        ACC full = 0, masked = 0;                                                                      \
        int32_t kept = 0;                                                                              \
        _Pragma("omp simd reduction(+ : full, masked, kept)")                                          \
        for (int64_t j = lo; j < hi; j++) {                                                            \
            const T b_old = buf[j];                                                                    \
            const T dp = decay ? g[j] + wd * p[j] : g[j];                                              \
            const T u = b_old * mom + w * dp;                                                          \
            const T agree = (mask == MASK_ASYNC ? b_old : u) * dp;                                     \
            const int keep = mask == MASK_NONE ? 1 : (strict ? agree > 0 : agree >= 0);                \
            const T d = keep ? u : (T)0;                                                               \
            buf[j] = u;                                                                                \
            g[j] = d;                                                                                  \
            full += u * u;                                                                             \
            masked += d * d;                                                                           \
            kept += keep;                                                                              \
        }                                                                                              \
        sums[OUT_FULL] += full;                                                                        \
        sums[OUT_MASKED] += masked;                                                                    \
        sums[OUT_KEPT] += (double)kept;                                                                \
    }                                                                                                  \
                                                                                                       \
    static void sgd_block_##T(const void *ctx, int i, int64_t lo, int64_t hi, double *sums)            \
    {                                                                                                  \
        const args_t *a = ctx;                                                                         \
        T *p = a->param[i], *g = a->grad[i], *buf = a->buf[i];                                         \
        const double *hp = a->hp + SGD_COUNT * i;                                                      \
        for (int64_t s = lo; s < hi; s += STRETCH) {                                                   \
            const int64_t e = s + STRETCH < hi ? s + STRETCH : hi;                                     \
            switch (a->mode) {                                                                         \
                EACH_MODE(SGD_CASE_##T)                                                                \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
                                                                                                       \
    int alphaadam_pass1_##T(int n, void **g, void **m, void **v, const int64_t *sizes,                 \
                            const double *hp, int mask, int strict, double *out, int threads)          \
    {                                                                                                  \
        const args_t a = {.grad = g, .m = m, .v = v, .hp = hp, .mode = MODE(mask, strict, 0)};         \
        return for_each_block(n, sizes, threads, adam_block_##T, &a, out);                             \
    }                                                                                                  \
                                                                                                       \
    int alphaadam_pass2_##T(int n, void **param, void **dir, const int64_t *sizes,                     \
                            const double *step, const double *decay, int threads)                      \
    {                                                                                                  \
        const args_t a = {.param = param, .grad = dir, .step = step, .decay = decay};                  \
        return for_each_block(n, sizes, threads, update_block_##T, &a, NULL);                          \
    }                                                                                                  \
                                                                                                       \
    int alphasgd_pass1_##T(int n, void **param, void **grad, void **buf, const int64_t *sizes,         \
                          const double *hp, int mask, int strict, int decay, double *out,              \
                          int threads)                                                                 \
    {                                                                                                  \
        const args_t a = {.param = param, .grad = grad, .buf = buf, .hp = hp,                          \
                          .mode = MODE(mask, strict, decay)};                                          \
        return for_each_block(n, sizes, threads, sgd_block_##T, &a, out);                              \
    }

/* The cases of the switches in DEFINE_KERNELS, one per mode number k. */
#define ADAM_CASE(T, k)                                                                                \
    case k: adam_stretch_##T(g, m, v, s, e, hp, MODE_MASK(k), MODE_STRICT(k), sums); break;
#define SGD_CASE(T, k)                                                                                 \
    case k: sgd_stretch_##T(p, g, buf, s, e, hp, MODE_MASK(k), MODE_STRICT(k), MODE_FLAG(k), sums); break;
#define ADAM_CASE_f32(k) ADAM_CASE(f32, k)
#define ADAM_CASE_f64(k) ADAM_CASE(f64, k)
#define SGD_CASE_f32(k) SGD_CASE(f32, k)
#define SGD_CASE_f64(k) SGD_CASE(f64, k)

typedef float f32;
typedef double f64;
DEFINE_KERNELS(f32, float, sqrtf)
DEFINE_KERNELS(f64, double, sqrt)

/* The widest x86 vector extension this build may use (what -march selected), for benchmarks' records. */
const char *alphaadam_isa(void)
{
#if defined(__AVX512F__)
    return "avx512";
#elif defined(__AVX2__)
    return "avx2";
#elif defined(__AVX__)
    return "avx";
#elif defined(__SSE2__)
    return "sse2";
#elif defined(__ARM_NEON)
    return "neon";
#else
    return "generic";
#endif
}
