/* The colour conversions of Y-only models in C: part of batchsr's native library
 * (native.py). The tile stage's RGB -> YCbCr planes, and the stitch stage's merge:
 *
 * batchsr_merge_y is color.merge_y: an SR Y region and the input's Cb/Cr planes to RGB
 * uint8, with Cb and Cr upscaled bicubically the way PIL's resize(BICUBIC) does it on
 * float planes (resample.py: the horizontal pass's float64 sums rounded to float32, the
 * vertical pass in float64). As in merge_y, the upscale is taken of three planes of
 * chroma terms (each of R, G, B less its Y term, plus 0.5 so that truncation rounds)
 * instead of the two chroma planes: the filter is linear and keeps constants. The taps
 * and weights come from resample.bicubic_taps; taps outside the image have weight 0 and
 * an index clamped into it. Each output pixel is a fixed sequence of float64 operations
 * on its own taps, so a region's merge is that region of the whole image's, bit for bit;
 * against numpy's path (BLAS sums, in BLAS's order) a pixel can land one level away where
 * its value lies within a float64 rounding of a half-integer.
 *
 * One pass over the output rows: the horizontal pass of each low-resolution row is done
 * once, into a ring of 8 rows (an output row's 4 taps span at most 4 consecutive rows,
 * and the rows only move down), so the working memory is 8 rows of the region's width.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "kernels.h"

#define RING 8

/* One low-resolution row's horizontal pass for the three colour terms, float32. */
static inline void across(const float *cb, const float *cr, ptrdiff_t q0, ptrdiff_t nq,
                          const double *k, double *terms, const int64_t *col_idx,
                          const double *col_w, ptrdiff_t ws, float *dst)
{
    for (int c = 0; c < 3; c++) {
        double *t = terms + c * nq;
        const double k1 = k[3 * c + 1], k2 = k[3 * c + 2], k0 = k[9 + c];
        for (ptrdiff_t q = 0; q < nq; q++) {
            double v = (double)cb[q0 + q] * k1;
            v += (double)cr[q0 + q] * k2;
            t[q] = v + k0;
        }
    }
    for (int c = 0; c < 3; c++) {
        const double *t = terms + c * nq;
        float *d = dst + c * ws;
        for (ptrdiff_t j = 0; j < ws; j++) {
            const int64_t *ix = col_idx + 4 * j;
            const double *w = col_w + 4 * j;
            double s = w[0] * t[ix[0]];
            s += w[1] * t[ix[1]];
            s += w[2] * t[ix[2]];
            s += w[3] * t[ix[3]];
            d[j] = (float)s;
        }
    }
}

/* y: hs x ws float32 rows y_stride apart. cbcr: 2 x big_h x big_w float32, the whole
 * input's Cb and Cr. row_idx, row_w: hs x 4 input rows (clamped) and weights of each
 * output row; col_idx, col_w: ws x 4 of each output column, the columns relative to q0,
 * the first of the nq input columns the taps reach. k: 3 x 3 row-major, channel c's
 * weights of (Y, Cb, Cr) in 0..255 units per [0, 1] unit, then 3 offsets (the +0.5
 * included). out: hs x ws x 3 uint8, rows out_stride bytes apart. Returns 0, or -1
 * without memory. */
KERNEL_CLONES
int batchsr_merge_y(const float *y, ptrdiff_t hs, ptrdiff_t ws, ptrdiff_t y_stride,
                    const float *cbcr, ptrdiff_t big_h, ptrdiff_t big_w,
                    const int64_t *row_idx, const double *row_w, const int64_t *col_idx,
                    const double *col_w, ptrdiff_t q0, ptrdiff_t nq, const double *k,
                    uint8_t *out, ptrdiff_t out_stride)
{
    float *ring = malloc((size_t)(RING * 3 * ws) * sizeof(float));
    double *terms = malloc((size_t)(3 * nq) * sizeof(double));
    double *plane = malloc((size_t)(3 * ws) * sizeof(double));
    if (ring == NULL || terms == NULL || plane == NULL) {
        free(ring);
        free(terms);
        free(plane);
        return -1;
    }
    int64_t held[RING];
    for (int s = 0; s < RING; s++)
        held[s] = -1;
    const float *cb = cbcr, *cr = cbcr + big_h * big_w;
    const double k_y = k[0];
    for (ptrdiff_t i = 0; i < hs; i++) {
        const float *rows[4];
        for (int t = 0; t < 4; t++) {
            int64_t r = row_idx[4 * i + t];
            float *slot = ring + (r % RING) * 3 * ws;
            if (held[r % RING] != r) {
                across(cb + r * big_w, cr + r * big_w, q0, nq, k, terms, col_idx, col_w, ws,
                       slot);
                held[r % RING] = r;
            }
            rows[t] = slot;
        }
        const double *w = row_w + 4 * i;
        const float *yr = y + i * y_stride;
        uint8_t *o = out + i * out_stride;
        for (int c = 0; c < 3; c++) {
            const float *h0 = rows[0] + c * ws, *h1 = rows[1] + c * ws;
            const float *h2 = rows[2] + c * ws, *h3 = rows[3] + c * ws;
            double *p = plane + c * ws;
            for (ptrdiff_t j = 0; j < ws; j++) {
                double v = w[0] * (double)h0[j];
                v += w[1] * (double)h1[j];
                v += w[2] * (double)h2[j];
                v += w[3] * (double)h3[j];
                v += (double)yr[j] * k_y;
                v = v < 0.0 ? 0.0 : (v > 255.0 ? 255.0 : v);
                p[j] = v;
            }
        }
        for (ptrdiff_t j = 0; j < ws; j++) {
            /* truncation rounds: the terms carry the 0.5 */
            o[3 * j] = (uint8_t)plane[j];
            o[3 * j + 1] = (uint8_t)plane[ws + j];
            o[3 * j + 2] = (uint8_t)plane[2 * ws + j];
        }
    }
    free(ring);
    free(terms);
    free(plane);
    return 0;
}

/* color.rgb_to_ycbcr, planar: MATLAB's YCbCr of uint8 RGB in [0, 1], as float32 planes.
 * Per pixel and channel c: ((r m[c][0] + g m[c][1]) + b m[c][2] + off[c]) / 255 in
 * float64 (r, g, b the values / 255), stored float32; equal to numpy's matmul to a
 * float64 rounding. rgb: h x w pixels of 3 bytes, rows row_stride bytes apart. y: h x w;
 * cbcr: 2 x h x w. m: 3 x 3 row-major; off: 3. */
KERNEL_CLONES
void batchsr_ycbcr_planes(const uint8_t *rgb, ptrdiff_t h, ptrdiff_t w, ptrdiff_t row_stride,
                          const double *m, const double *off, float *y, float *cbcr)
{
    float *cb = cbcr, *cr = cbcr + h * w;
    for (ptrdiff_t i = 0; i < h; i++) {
        const uint8_t *px = rgb + i * row_stride;
        for (ptrdiff_t j = 0; j < w; j++) {
            double r = px[3 * j] / 255.0, g = px[3 * j + 1] / 255.0, b = px[3 * j + 2] / 255.0;
            double v0 = r * m[0] + g * m[1];
            double v1 = r * m[3] + g * m[4];
            double v2 = r * m[6] + g * m[7];
            v0 += b * m[2];
            v1 += b * m[5];
            v2 += b * m[8];
            y[i * w + j] = (float)((v0 + off[0]) / 255.0);
            cb[i * w + j] = (float)((v1 + off[1]) / 255.0);
            cr[i * w + j] = (float)((v2 + off[2]) / 255.0);
        }
    }
}
