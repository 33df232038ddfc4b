/* NIQE's heavy passes in C: part of batchsr's native library (batchsr/native.py).
 *
 * The numpy path in niqe.py spends most of an image's time in two places: the 7x7
 * Gaussian of the MSCN coefficients (two float64 passes over the image and its square)
 * and the five AGGD fits per block (a dozen whole-array passes per fit). Here each is
 * one pass, with the same results:
 *
 *   niqe_mscn      the MSCN coefficients, in the block layout of niqe._mscn_blocks.
 *                  The filter sums in float64 (SciPy's ndimage.convolve does) and rounds
 *                  to float32 once; variance, square root and division are float32.
 *   niqe_half      BasicSR's imresize(img / 255, 0.5) * 255 of the second scale: the
 *                  bicubic taps' float32 products summed in the orders torch's CPU mv
 *                  uses (niqe._imresize_half found them), bit for bit.
 *   niqe_y         the official Y channel (to_y_channel, rounded), by its definition.
 *   niqe_fit_sums  per block and fit, the float32 sums of squares and of magnitudes in
 *                  numpy's pairwise order (what np.mean forms in BasicSR, bit for bit),
 *                  the float64 sum of the negative values' squares, and the numbers of
 *                  negative and positive values: the contract of niqe._fit_sums.
 *
 * Bit-exactness rests on plain IEEE float32 and float64 arithmetic in the order written
 * (kernels.h: no fused multiply-add, no fast-math). gcc vectorises the loops only where
 * that keeps the order (the 8 lanes of a pairwise base case are numpy's 8 accumulators).
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "kernels.h"

#define TAPS 7
#define HALF 3

/* Eight lanes as one vector. gcc's vectoriser leaves mixed-width loops such as the
 * signed parts below scalar (measured: 40 ms of a 2040x1632 image's fits), so the sums
 * are written with vector types; lane j is accumulator r[j] of numpy's pairwise sum. */
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));

/* What a fit needs of the sign of its values, summed over a whole block: the squares of
 * the negative values in float64 (8 lanes, our order: the caller allows a few float32
 * ulps) and the numbers of negative and of positive values. */
typedef struct {
    v8d neg_sq;
    v8i neg, pos;
} Signed;

/* Vectors pass by pointer: a vector argument or return value of a non-AVX function
 * draws gcc's -Wpsabi note although every helper here is inlined. */
static inline void load8(v8f *v, const float *x)
{
    memcpy(v, x, sizeof *v);
}

static inline void add_signed(Signed *acc, const v8f *v, const v8f *sq)
{
    const v8f zero = {0};
    v8i is_neg = *v < zero, is_pos = *v > zero; /* -1 where true */
    acc->neg_sq += __builtin_convertvector((v8f)((v8i)*sq & is_neg), v8d);
    acc->neg -= is_neg;
    acc->pos -= is_pos;
}

static inline float lanes_sum(const v8f *v)
{
    const v8f r = *v;
    return ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
}

/* A value outside whole vectors: its sign parts, lane 0 (any lane would do). */
static inline void add_signed_one(Signed *acc, float v)
{
    if (v < 0.0f) {
        acc->neg_sq[0] += (double)(v * v);
        acc->neg[0] += 1;
    }
    acc->pos[0] += v > 0.0f;
}

/* numpy's pairwise summation (loops_utils.h.src, PW_BLOCKSIZE 128): a run of at most 128
 * values is a leaf, summed in 8 accumulators (fewer than 8 values: one, in order); longer
 * runs split in two at a multiple of 8 near the middle. np.add.reduce starts from the
 * identity 0. The split depends on the length only, so the leaves of a block are laid
 * out once per call (leaf_sizes), summed by an inlined loop (vectorised in each clone of
 * niqe_fit_sums: a recursive function could not be), and combined by the same tree
 * (combine). */
static ptrdiff_t leaf_sizes(ptrdiff_t n, ptrdiff_t *sizes, ptrdiff_t k)
{
    if (n <= 128) {
        sizes[k] = n;
        return k + 1;
    }
    ptrdiff_t n2 = n / 2;
    n2 -= n2 % 8;
    return leaf_sizes(n - n2, sizes, leaf_sizes(n2, sizes, k));
}

static float combine(const float *leaf, ptrdiff_t n, ptrdiff_t *next)
{
    if (n <= 128)
        return leaf[(*next)++];
    ptrdiff_t n2 = n / 2;
    n2 -= n2 % 8;
    float left = combine(leaf, n2, next);
    float right = combine(leaf, n - n2, next);
    return left + right;
}

/* One leaf's sums of x^2 and |x|, with the sign parts riding along. */
static inline void leaf_sums(const float *x, ptrdiff_t n, float *sq, float *ab, Signed *acc)
{
    const v8i magnitude = {0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff,
                           0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff};
    float s = 0.0f, a = 0.0f;
    ptrdiff_t i = 0;
    if (n >= 8) {
        v8f v;
        load8(&v, x);
        v8f rs = v * v, ra = (v8f)((v8i)v & magnitude);
        add_signed(acc, &v, &rs);
        for (i = 8; i < n - (n % 8); i += 8) {
            load8(&v, x + i);
            v8f sq8 = v * v;
            rs += sq8;
            ra += (v8f)((v8i)v & magnitude);
            add_signed(acc, &v, &sq8);
        }
        s = lanes_sum(&rs);
        a = lanes_sum(&ra);
    }
    for (; i < n; i++) {
        s += x[i] * x[i];
        a += fabsf(x[i]);
        add_signed_one(acc, x[i]);
    }
    *sq = s;
    *ab = a;
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
KERNEL_CLONES
int niqe_fit_sums(const float *blocks, ptrdiff_t nb, ptrdiff_t bs, float *sum_sq,
                  float *sum_abs, double *neg_sq, int64_t *counts)
{
    ptrdiff_t n = bs * bs;
    ptrdiff_t most = n / 8 + 1; /* leaves are over 64 values long, bar a single one */
    float *x = malloc((size_t)n * sizeof(float));
    ptrdiff_t *sizes = malloc((size_t)most * sizeof(ptrdiff_t));
    float *leaf_sq = malloc((size_t)(2 * most) * sizeof(float));
    if (x == NULL || sizes == NULL || leaf_sq == NULL) {
        free(x);
        free(sizes);
        free(leaf_sq);
        return -1;
    }
    float *leaf_ab = leaf_sq + most;
    ptrdiff_t leaves = leaf_sizes(n, sizes, 0);
    for (ptrdiff_t k = 0; k < nb; k++) {
        const float *b = blocks + k * n;
        for (int fit = 0; fit < 5; fit++) {
            const float *v = b;
            if (fit > 0) {
                fit_input(b, bs, SHIFTS[fit - 1][0], SHIFTS[fit - 1][1], x);
                v = x;
            }
            ptrdiff_t at = fit * nb + k;
            Signed acc = {{0}, {0}, {0}};
            const float *run = v;
            for (ptrdiff_t j = 0; j < leaves; j++) {
                leaf_sums(run, sizes[j], &leaf_sq[j], &leaf_ab[j], &acc);
                run += sizes[j];
            }
            ptrdiff_t next = 0;
            sum_sq[at] = combine(leaf_sq, n, &next);
            next = 0;
            sum_abs[at] = combine(leaf_ab, n, &next);
            double total = 0.0;
            int64_t n_neg = 0, n_pos = 0;
            for (int j = 0; j < 8; j++) {
                total += acc.neg_sq[j];
                n_neg += acc.neg[j];
                n_pos += acc.pos[j];
            }
            neg_sq[at] = total;
            counts[at] = n_neg;
            counts[5 * nb + at] = n_pos;
        }
    }
    free(x);
    free(sizes);
    free(leaf_sq);
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
KERNEL_CLONES
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

/* Symmetric padding of niqe._reflect: -1 is 0, n is n - 1. */
static inline ptrdiff_t reflect(ptrdiff_t i, ptrdiff_t n)
{
    if (i < 0)
        i = -i - 1;
    return i >= n ? 2 * n - 1 - i : i;
}

/* img: (h, w) float32 in [0, 255], h and w multiples of 4. taps: the 8 float32 weights
 * (niqe._HALF_TAPS). out: (h / 2, w / 2) float32, imresize(img / 255, 0.5) * 255 with
 * every operation rounded to float32 as BasicSR's torch code rounds it:
 *   rows first, output row i from image rows 2i - 3 .. 2i + 4, summed tap 0 to 7;
 *   then columns, output column 2m + s from columns 4m + 2s - 3 .. 4m + 2s + 4 (products
 *   t0..t7), summed ((((((t0+t1)+t2)+t4)+(t3+t5))+t6)+t7) for even columns and
 *   ((((((t0+t1)+t2)+t3)+t4)+t6)+(t5+t7)) for odd ones.
 * The row pass's output is split by column phase (padded column mod 4) so that every
 * product of the column pass reads consecutive values. Returns 0, or -1 without memory. */
KERNEL_CLONES
int niqe_half(const float *img, ptrdiff_t h, ptrdiff_t w, const float *taps, float *out)
{
    ptrdiff_t q = w / 4, ph_len = q + 2, w2 = w / 2;
    /* 8 image rows divided by 255 (slot r % 8 holds row r: a row is divided once),
     * one row-pass row, its 4 phases. */
    float *rows = malloc((size_t)(8 * w + w + 4 * ph_len) * sizeof(float));
    if (rows == NULL)
        return -1;
    float *v = rows + 8 * w, *ph = v + w;
    ptrdiff_t held[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
    for (ptrdiff_t i = 0; i < h / 2; i++) {
        const float *src[8];
        for (int k = 0; k < 8; k++) {
            ptrdiff_t r = reflect(2 * i - 3 + k, h);
            float *slot = rows + (r % 8) * w;
            if (held[r % 8] != r) {
                const float *in = img + r * w;
                for (ptrdiff_t c = 0; c < w; c++)
                    slot[c] = in[c] / 255.0f;
                held[r % 8] = r;
            }
            src[k] = slot;
        }
        for (ptrdiff_t c = 0; c < w; c++) {
            float a = taps[0] * src[0][c];
            for (int k = 1; k < 8; k++)
                a += taps[k] * src[k][c];
            v[c] = a;
        }
        /* Padded column P = c + 3 (c = -3 .. w + 4, reflected) goes to phase P % 4. */
        for (ptrdiff_t p = 0; p < 4 * ph_len; p++)
            ph[(p % 4) * ph_len + p / 4] = v[reflect(p - 3, w)];
        float *o = out + i * w2;
        const float *p0 = ph, *p1 = ph + ph_len, *p2 = ph + 2 * ph_len, *p3 = ph + 3 * ph_len;
        for (ptrdiff_t m = 0; m < q; m++) {
            /* even output column 2m: padded columns 4m + k */
            float t0 = taps[0] * p0[m], t1 = taps[1] * p1[m], t2 = taps[2] * p2[m];
            float t3 = taps[3] * p3[m], t4 = taps[4] * p0[m + 1], t5 = taps[5] * p1[m + 1];
            float t6 = taps[6] * p2[m + 1], t7 = taps[7] * p3[m + 1];
            o[2 * m] = (((((t0 + t1) + t2) + t4) + (t3 + t5)) + t6) + t7;
            /* odd output column 2m + 1: padded columns 4m + 2 + k */
            t0 = taps[0] * p2[m], t1 = taps[1] * p3[m], t2 = taps[2] * p0[m + 1];
            t3 = taps[3] * p1[m + 1], t4 = taps[4] * p2[m + 1], t5 = taps[5] * p3[m + 1];
            t6 = taps[6] * p0[m + 2], t7 = taps[7] * p1[m + 2];
            o[2 * m + 1] = (((((t0 + t1) + t2) + t3) + t4) + t6) + (t5 + t7);
        }
        for (ptrdiff_t c = 0; c < w2; c++)
            o[c] *= 255.0f;
    }
    free(rows);
    return 0;
}

/* BasicSR to_y_channel + round of RGB pixels, by the definition (niqe._y_of_colours):
 * float32(v) / 255 per channel, widened; the float64 products with MATLAB's weights summed
 * blue, green, red (np.dot's order, checked on all 2**24 colours); + 16, / 255, stored
 * float32, * 255 in float32, rounded half to even. rgb: h x w pixels of 3 bytes, rows
 * row_stride bytes apart. out: h x w float32. */
KERNEL_CLONES
void niqe_y(const uint8_t *rgb, ptrdiff_t h, ptrdiff_t w, ptrdiff_t row_stride, float *out)
{
    for (ptrdiff_t i = 0; i < h; i++) {
        const uint8_t *px = rgb + i * row_stride;
        float *o = out + i * w;
        for (ptrdiff_t j = 0; j < w; j++) {
            double r = (double)((float)px[3 * j] / 255.0f);
            double g = (double)((float)px[3 * j + 1] / 255.0f);
            double b = (double)((float)px[3 * j + 2] / 255.0f);
            double s = b * 24.966 + g * 128.553;
            s += r * 65.481;
            s += 16.0;
            s /= 255.0;
            float y = (float)s * 255.0f;
            o[j] = rintf(y);
        }
    }
}
