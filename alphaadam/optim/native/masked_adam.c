/* AlphaAdam's two passes over many CPU tensors in one call each (see alphaadam/optim/native.py).

Pass 1, per tensor: update the Adam moments, compute the bias-corrected direction u and the mask M,
leave M * u in the gradient buffer, and reduce sum(u^2), sum((M * u)^2) and sum(M).
Pass 2, per tensor: theta <- theta * decay - step * (M * u), with step = lr * alpha.

Work is split into fixed blocks of every tensor, run in parallel; per-block sums are added in block
order, so results do not depend on the number of threads. Within a block, fp32 sums run over short
vectorised stretches and are then added in double precision. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define BLOCK 65536 /* elements per parallel job: long enough to stream, three fp32 arrays fit in L2 */
#define STRETCH 1024 /* elements per vectorised partial sum before it is widened to double */

enum { MASK_ASYNC = 0, MASK_SYNC = 1, MASK_NONE = 2 };
enum { HP_BETA1, HP_BETA2, HP_EPS, HP_INV_BC1, HP_INV_BC2_SQRT, HP_COUNT };
enum { OUT_FULL, OUT_MASKED, OUT_KEPT, OUT_COUNT };

typedef struct {
    int32_t tensor;
    int64_t lo, hi;
} job_t;

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

/* One stretch of pass 1. `mask` and `strict` are literals at every call site, so each combination
   compiles to its own branch-free vector loop. */
#define DEFINE_PASS1(T, ACC, SQRT)                                                                     \
    static inline __attribute__((always_inline)) void pass1_stretch_##T(                               \
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
    static void pass1_block_##T(T *g, T *m, T *v, int64_t lo, int64_t hi, const double *hp, int mode,  \
                                double *sums)                                                          \
    {                                                                                                  \
        for (int64_t s = lo; s < hi; s += STRETCH) {                                                   \
            const int64_t e = s + STRETCH < hi ? s + STRETCH : hi;                                     \
            switch (mode) {                                                                            \
            case 0: pass1_stretch_##T(g, m, v, s, e, hp, MASK_ASYNC, 1, sums); break;                  \
            case 1: pass1_stretch_##T(g, m, v, s, e, hp, MASK_ASYNC, 0, sums); break;                  \
            case 2: pass1_stretch_##T(g, m, v, s, e, hp, MASK_SYNC, 1, sums); break;                   \
            case 3: pass1_stretch_##T(g, m, v, s, e, hp, MASK_SYNC, 0, sums); break;                   \
            default: pass1_stretch_##T(g, m, v, s, e, hp, MASK_NONE, 1, sums); break;                  \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
                                                                                                       \
    int alphaadam_pass1_##T(int n, T **g, T **m, T **v, const int64_t *sizes, const double *hp,        \
                            int mask, int strict, double *out, int threads)                            \
    {                                                                                                  \
        int64_t jobs;                                                                                  \
        job_t *list = split_into_jobs(n, sizes, &jobs);                                                \
        double *sums = calloc((jobs ? jobs : 1) * OUT_COUNT, sizeof *sums);                            \
        if (!list || !sums) {                                                                          \
            free(list);                                                                                \
            free(sums);                                                                                \
            return -1;                                                                                 \
        }                                                                                              \
        const int mode = mask == MASK_NONE ? 4 : 2 * mask + !strict;                                   \
        _Pragma("omp parallel for schedule(dynamic, 2) num_threads(threads) if (jobs > 4)")            \
        for (int64_t q = 0; q < jobs; q++) {                                                           \
            const int i = list[q].tensor;                                                              \
            pass1_block_##T(g[i], m[i], v[i], list[q].lo, list[q].hi, hp + HP_COUNT * i, mode,         \
                            sums + OUT_COUNT * q);                                                     \
        }                                                                                              \
        for (int i = 0; i < n * OUT_COUNT; i++)                                                        \
            out[i] = 0;                                                                                \
        for (int64_t q = 0; q < jobs; q++)                                                             \
            for (int k = 0; k < OUT_COUNT; k++)                                                        \
                out[OUT_COUNT * list[q].tensor + k] += sums[OUT_COUNT * q + k];                        \
        free(list);                                                                                    \
        free(sums);                                                                                    \
        return 0;                                                                                      \
    }                                                                                                  \
                                                                                                       \
    int alphaadam_pass2_##T(int n, T **param, T **dir, const int64_t *sizes, const double *step,       \
                            const double *decay, int threads)                                          \
    {                                                                                                  \
        int64_t jobs;                                                                                  \
        job_t *list = split_into_jobs(n, sizes, &jobs);                                                \
        if (!list)                                                                                     \
            return -1;                                                                                 \
        _Pragma("omp parallel for schedule(dynamic, 2) num_threads(threads) if (jobs > 4)")            \
        for (int64_t q = 0; q < jobs; q++) {                                                           \
            const int i = list[q].tensor;                                                              \
            T *restrict p = param[i];                                                                  \
            const T *restrict d = dir[i];                                                              \
            const T s = (T)step[i], c = (T)decay[i];                                                   \
            _Pragma("omp simd")                                                                        \
            for (int64_t j = list[q].lo; j < list[q].hi; j++)                                          \
                p[j] = p[j] * c - s * d[j];                                                            \
        }                                                                                              \
        free(list);                                                                                    \
        return 0;                                                                                      \
    }

typedef float f32;
typedef double f64;
DEFINE_PASS1(f32, float, sqrtf)
DEFINE_PASS1(f64, double, sqrt)
