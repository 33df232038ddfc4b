/* NIQE's two heavy passes in C, loaded with ctypes by batchsr/metrics/native.py.
 *
 * The numpy path in niqe.py spends most of an image's time in two places: the 7x7
 * Gaussian of the MSCN coefficients (two float64 passes over the image and its square)
 * and the five AGGD fits per block (a dozen whole-array passes per fit). Here each is
 * one pass, with the same results:
 *
 *   niqe_mscn      the MSCN coefficients, in the block layout of niqe._mscn_blocks.
 *                  The filter sums in float64 (SciPy's ndimage.convolve does) and rounds
 *                  to float32 once; variance, square root and division are float32.
 *   niqe_fit_sums  per block and fit, the float32 sums of squares and of magnitudes in
 *                  numpy's pairwise order (what np.mean forms in BasicSR, bit for bit),
 *                  the float64 sum of the negative values' squares, and the numbers of
 *                  negative and positive values: the contract of niqe._fit_sums.
 *
 * Bit-exactness rests on plain IEEE float32 and float64 arithmetic in the order written:
 * build with -ffp-contract=off (no fused multiply-add) and never -ffast-math. gcc
 * vectorises the loops only where that keeps the order (the 8 lanes of a pairwise base
 * case are numpy's 8 accumulators). Every function is reentrant: the score stage calls
 * them from several threads, and ctypes releases the GIL around each call.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* One build runs at each machine's best width (AVX-512, AVX2 or SSE2): glibc picks the
 * clone when the library loads, so a wheel or CI build is never tied to its builder. */
#define NIQE_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NIQE_CLONES
#endif

#define TAPS 7
#define HALF 3

/* native.ABI_VERSION: bumped with every change of a signature or meaning below. */
int niqe_native_abi(void) { return 1; }

/* numpy's pairwise summation (loops_utils.h.src, PW_BLOCKSIZE 128) of f(x[i]) for the
 * two transforms NIQE needs at once, square and magnitude: each float32 sum is the one
 * np.add.reduce gives for np.square(x) and np.abs(x), starting from the identity 0. */
static inline void pairwise_sq_abs(const float *x, ptrdiff_t n, float *sq, float *ab)
{
    if (n < 8) {
        float s = 0.0f, a = 0.0f;
        for (ptrdiff_t i = 0; i < n; i++) {
            s += x[i] * x[i];
            a += fabsf(x[i]);
        }
        *sq = s;
        *ab = a;
    } else if (n <= 128) {
        float rs[8], ra[8];
        for (int j = 0; j < 8; j++) {
            rs[j] = x[j] * x[j];
            ra[j] = fabsf(x[j]);
        }
        ptrdiff_t i = 8;
        for (; i < n - (n % 8); i += 8) {
            for (int j = 0; j < 8; j++) {
                rs[j] += x[i + j] * x[i + j];
                ra[j] += fabsf(x[i + j]);
            }
        }
        float s = ((rs[0] + rs[1]) + (rs[2] + rs[3])) + ((rs[4] + rs[5]) + (rs[6] + rs[7]));
        float a = ((ra[0] + ra[1]) + (ra[2] + ra[3])) + ((ra[4] + ra[5]) + (ra[6] + ra[7]));
        for (; i < n; i++) {
            s += x[i] * x[i];
            a += fabsf(x[i]);
        }
        *sq = s;
        *ab = a;
    } else {
        ptrdiff_t n2 = n / 2;
        n2 -= n2 % 8;
        float s1, a1, s2, a2;
        pairwise_sq_abs(x, n2, &s1, &a1);
        pairwise_sq_abs(x + n2, n - n2, &s2, &a2);
        *sq = s1 + s2;
        *ab = a1 + a2;
    }
}

/* Eight lanes as one vector: gcc's vectoriser leaves the mixed-width loop below scalar
 * (measured: 40 ms of a 2040x1632 image's fits), so it is written with vector types. */
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));

/* Sum of the squares of the negative values (float64 in 8 lanes: the order is ours, the
 * caller allows a few float32 ulps) and the numbers of negative and positive values. */
static inline void signed_parts(const float *x, ptrdiff_t n, double *neg_sq, int64_t *n_neg,
                                int64_t *n_pos)
{
    v8d acc = {0};
    v8i neg = {0}, pos = {0};
    const v8f zero = {0};
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f v;
        memcpy(&v, x + i, sizeof v);
        v8i is_neg = v < zero, is_pos = v > zero;  /* -1 where true */
        v8f sq = v * v;
        v8f neg_sq_f = (v8f)((v8i)sq & is_neg);
        acc += __builtin_convertvector(neg_sq_f, v8d);
        neg -= is_neg;
        pos -= is_pos;
    }
    double total = 0.0;
    int64_t tn = 0, tp = 0;
    for (int j = 0; j < 8; j++) {
        total += acc[j];
        tn += neg[j];
        tp += pos[j];
    }
    for (; i < n; i++) {
        float v = x[i];
        total += v < 0.0f ? (double)(v * v) : 0.0;
        tn += v < 0.0f;
        tp += v > 0.0f;
    }
    *neg_sq = total;
    *n_neg = tn;
    *n_pos = tp;
}

/* BasicSR compute_feature's fit inputs: block * np.roll(block, (di, dj), axis=(0, 1)),
 * so x[r, c] = b[r, c] * b[(r - di) mod bs, (c - dj) mod bs]. */
static inline void fit_input(const float *b, ptrdiff_t bs, int di, int dj, float *x)
{
    for (ptrdiff_t r = 0; r < bs; r++) {
        const float *row = b + r * bs;
        const float *src = b + ((r - di + bs) % bs) * bs;
        float *out = x + r * bs;
        if (dj == 1) {
            out[0] = row[0] * src[bs - 1];
            for (ptrdiff_t c = 1; c < bs; c++)
                out[c] = row[c] * src[c - 1];
        } else if (dj == -1) {
            for (ptrdiff_t c = 0; c < bs - 1; c++)
                out[c] = row[c] * src[c + 1];
            out[bs - 1] = row[bs - 1] * src[0];
        } else {
            for (ptrdiff_t c = 0; c < bs; c++)
                out[c] = row[c] * src[c];
        }
    }
}

static const int SHIFTS[4][2] = {{0, 1}, {1, 0}, {1, 1}, {1, -1}};

/* blocks: (nb, bs * bs) float32, one flattened block per row. Outputs, fit-major:
 * sum_sq, sum_abs (5, nb) float32; neg_sq (5, nb) float64; counts (2, 5, nb) int64,
 * negatives then positives. Returns 0, or -1 when the scratch block cannot be had. */
NIQE_CLONES
int niqe_fit_sums(const float *blocks, ptrdiff_t nb, ptrdiff_t bs, float *sum_sq,
                  float *sum_abs, double *neg_sq, int64_t *counts)
{
    ptrdiff_t n = bs * bs;
    float *x = malloc((size_t)n * sizeof(float));
    if (x == NULL)
        return -1;
    for (ptrdiff_t k = 0; k < nb; k++) {
        const float *b = blocks + k * n;
        for (int fit = 0; fit < 5; fit++) {
            const float *v = b;
            if (fit > 0) {
                fit_input(b, bs, SHIFTS[fit - 1][0], SHIFTS[fit - 1][1], x);
                v = x;
            }
            ptrdiff_t at = fit * nb + k;
            pairwise_sq_abs(v, n, &sum_sq[at], &sum_abs[at]);
            signed_parts(v, n, &neg_sq[at], &counts[at], &counts[5 * nb + at]);
        }
    }
    free(x);
    return 0;
}

/* The vertical pass of one output row: v1 and v2 (length w, written) are the filter's
 * column sums of the image and of its float32 square, rows clamped at the edges. */
static inline void vertical(const float *img, ptrdiff_t h, ptrdiff_t w, ptrdiff_t y,
                            const double *g, double *restrict v1, double *restrict v2)
{
    const float *rows[TAPS];
    for (int k = 0; k < TAPS; k++) {
        ptrdiff_t r = y + k - HALF;
        r = r < 0 ? 0 : (r >= h ? h - 1 : r);
        rows[k] = img + r * w;
    }
    for (ptrdiff_t c = 0; c < w; c++) {
        float p = rows[0][c];
        double s1 = g[0] * (double)p;
        double s2 = g[0] * (double)(p * p);
        for (int k = 1; k < TAPS; k++) {
            p = rows[k][c];
            s1 += g[k] * (double)p;
            s2 += g[k] * (double)(p * p);
        }
        v1[c] = s1;
        v2[c] = s2;
    }
}

/* img: (nh * bs, nw * bs) float32. out: (nw, nh, bs, bs) float32, block column outer,
 * as niqe._mscn_blocks returns it. g: the 7 taps of the separable Gaussian (the 2-D
 * window is g g^T). Returns 0, or -1 when the row buffers cannot be had. */
NIQE_CLONES
int niqe_mscn(const float *img, ptrdiff_t h, ptrdiff_t w, ptrdiff_t bs, const double *g,
              float *out)
{
    ptrdiff_t nh = h / bs, padded = w + 2 * HALF;
    double *buf = malloc((size_t)(2 * padded) * sizeof(double));
    float *row = malloc((size_t)w * sizeof(float));
    if (buf == NULL || row == NULL) {
        free(buf);
        free(row);
        return -1;
    }
    double *v1 = buf, *v2 = buf + padded;
    for (ptrdiff_t y = 0; y < h; y++) {
        vertical(img, h, w, y, g, v1 + HALF, v2 + HALF);
        for (int k = 0; k < HALF; k++) {  /* mode='nearest': edge columns repeated */
            v1[k] = v1[HALF];
            v2[k] = v2[HALF];
            v1[padded - 1 - k] = v1[padded - 1 - HALF];
            v2[padded - 1 - k] = v2[padded - 1 - HALF];
        }
        const float *src = img + y * w;
        for (ptrdiff_t c = 0; c < w; c++) {
            double m1 = g[0] * v1[c], m2 = g[0] * v2[c];
            for (int k = 1; k < TAPS; k++) {
                m1 += g[k] * v1[c + k];
                m2 += g[k] * v2[c + k];
            }
            float mu = (float)m1, mu_sq = (float)m2;
            float sigma = sqrtf(fabsf(mu_sq - mu * mu)) + 1.0f;
            row[c] = (src[c] - mu) / sigma;
        }
        /* Scatter the row into its blocks: (block column, block row, row in block). */
        ptrdiff_t bh = y / bs, r0 = y % bs;
        for (ptrdiff_t bw = 0; bw < w / bs; bw++) {
            float *dst = out + ((bw * nh + bh) * bs + r0) * bs;
            for (ptrdiff_t c = 0; c < bs; c++)
                dst[c] = row[bw * bs + c];
        }
    }
    free(buf);
    free(row);
    return 0;
}
