/* Bi-Level reshaping (docs/algorithm.md section 5) for CPU tensors, one row at a time.

   The math of oar_kernels/reference/bilevel.py in float32, rewritten for speed; results agree
   with the reference to a few ulp (tests/test_bilevel_native.py states the tolerance):
   - log1p is a vectorizable polynomial (below), not libm's scalar log1pf;
   - the per-element divisions become products with per-row reciprocals;
   - the quantile's two order statistics come from a value histogram plus a selection
     inside one bin (kth_pair): O(R) per row, no sort;
   - every per-element loop is branch-free so the compiler vectorizes it (built with
     -fno-trapping-math, which lets it if-convert, and -fopenmp-simd for the reductions).

   Plain C99 with no Python or torch headers, so any C compiler builds it in well under a
   second when the package is installed (setup.py), and the caller can run row ranges on several
   threads (ctypes releases the GIL).  */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* 8 mask bytes, all True. Multiplying 8 bytes of 0/1 by it leaves in byte j the count of
   ones in bytes 0..j (little-endian): a prefix sum of the mask in one instruction. */
#define ALL_SET 0x0101010101010101ULL
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define LITTLE_ENDIAN_BYTES 1
#else
#define LITTLE_ENDIAN_BYTES 0 /* the prefix trick reads bytes in the other order: per element */
#endif

/* log1p(v) for v >= 0 (finite), to about 2 ulp, in a form compilers vectorize: log(1 + v) by
   exponent/mantissa split and the Cephes logf polynomial, then Goldberg's correction
   log1p(v) = log(u) * v / (u - 1) with u = 1 + v rounded, which recovers the bits of v lost
   in that rounding. libm's scalar log1pf costs ~4x more and dominated the whole kernel. */
static inline float log1p_nonneg(float v) {
    float u = 1.0f + v;
    union { float f; uint32_t i; } b = {u};
    int32_t e = (int32_t)(b.i >> 23) - 127;
    b.i = (b.i & 0x007fffffu) | 0x3f800000u; /* mantissa in [1, 2) */
    float m = b.f;
    int big = m > 1.41421356f;
    m = big ? 0.5f * m : m;
    float ef = (float)(e + big);
    float f = m - 1.0f, z = f * f;
    float p = 7.0376836292e-2f;
    p = p * f - 1.1514610310e-1f;
    p = p * f + 1.1676998740e-1f;
    p = p * f - 1.2420140846e-1f;
    p = p * f + 1.4249322787e-1f;
    p = p * f - 1.6668057665e-1f;
    p = p * f + 2.0000714765e-1f;
    p = p * f - 2.4999993993e-1f;
    p = p * f + 3.3333331174e-1f;
    float y = f * z * p - 2.12194440e-4f * ef - 0.5f * z;
    float logu = (f + y) + 0.693359375f * ef;
    float d = u - 1.0f;
    return d == 0.0f ? v : logu * (v / (d == 0.0f ? 1.0f : d));
}

static void swapf(float *a, float *b) { float t = *a; *a = *b; *b = t; }

/* Leaves v[k] holding the k-th smallest of v[0..n), smaller-or-equal values before it and
   larger-or-equal after it (Hoare partition around a median of three). */
static void select_kth(float *v, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    while (hi > lo) {
        int64_t mid = lo + (hi - lo) / 2;
        if (v[mid] < v[lo]) swapf(&v[mid], &v[lo]);
        if (v[hi] < v[lo]) swapf(&v[hi], &v[lo]);
        if (v[hi] < v[mid]) swapf(&v[hi], &v[mid]);
        float pivot = v[mid];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) { swapf(&v[i], &v[j]); i++; j--; }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return; /* j < k < i: v[k] == pivot, already in place */
    }
}

/* The k-th and (k+1)-th smallest of v[0..n) (k + 1 < n, else both the k-th), without
   sorting and without reordering v: a value histogram over [lo, hi] (the row's min and max)
   finds the bin holding rank k; only that bin's values are copied out and selected among.
   The bin index is a monotone function of the value, so bins partition v in order.
   bins[] holds NB + 1 ints, idx[] and tmp[] n each. */
#define NB 512 /* most bins used; a row of n values uses about n / 4 */
static void kth_pair(const float *v, int64_t n, int64_t k, float lo, float hi, int32_t *bins,
                     int32_t *idx, float *tmp, float *out_k, float *out_k1) {
    const int32_t nb = n / 4 < 16 ? 16 : (n / 4 > NB ? NB : (int32_t)(n / 4));
    float scale = hi > lo ? (float)nb / (hi - lo) : 0.0f;
    #pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        int32_t b = (int32_t)((v[i] - lo) * scale);
        b = b < nb - 1 ? b : nb - 1;
        idx[i] = b > 0 ? b : 0; /* never out of range, even for non-finite input */
    }
    for (int b = 0; b <= nb; b++) bins[b] = 0;
    for (int64_t i = 0; i < n; i++) bins[idx[i] + 1]++;
    for (int b = 0; b < nb; b++) bins[b + 1] += bins[b]; /* bins[b]: count below bin b */
    int32_t bk = 0;
    while (bins[bk + 1] <= k) bk++;
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++) { /* branch-free: bin bk's values to tmp */
        tmp[c] = v[i];
        c += idx[i] == bk;
    }
    int64_t kk = k - bins[bk];
    select_kth(tmp, c, kk);
    *out_k = tmp[kk];
    if (k + 1 >= n) {
        *out_k1 = tmp[kk];
    } else if (kk + 1 < c) { /* everything after position kk is >= it: the next is their min */
        float m = tmp[kk + 1];
        for (int64_t i = kk + 2; i < c; i++) m = tmp[i] < m ? tmp[i] : m;
        *out_k1 = m;
    } else { /* rank k is the largest of its bin: the next is the smallest of later bins */
        float above = INFINITY;
        for (int64_t i = 0; i < n; i++) {
            float cand = idx[i] > bk ? v[i] : INFINITY;
            above = cand < above ? cand : above;
        }
        *out_k1 = above;
    }
}

/* Rows [row_begin, row_end) of scores[B, T] (float32, contiguous) and mask[B, T] (0/1
   bytes) into out[B, T]. scratch holds 4 * T + NB + 1 floats. Returns 0, or 1 (and stops) at
   a row with a NaN or Inf score at a masked position. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* One AVX2 build next to the baseline, picked at load time: 8-wide vectors for the log and
   weight loops. -std=c99 keeps FMA contraction off, so both give the same bits. */
__attribute__((target_clones("avx2", "default")))
#endif
int oar_bilevel_rows(const float *scores, const uint8_t *mask, float *out, int64_t T,
                     int64_t row_begin, int64_t row_end, float tau, float beta, float floor_w,
                     int sum_to_len, float *scratch) {
    const float eps = 1e-8f;
    float *s = scratch;               /* the row's s values, compacted, then its weights */
    float *tmp = scratch + T;         /* selection workspace */
    int32_t *idx = (int32_t *)(scratch + 2 * T);
    int32_t *bins = (int32_t *)(scratch + 3 * T);
    for (int64_t r = row_begin; r < row_end; r++) {
        const float *x = scores + r * T;
        const uint8_t *m = mask + r * T;
        float *o = out + r * T;
        /* compact the masked positions' scores (what lies off the mask, NaN included, is never
           used). Masks are mostly runs: 8 positions at a time when all or none are masked. */
        int64_t n = 0, t = 0;
        for (; t + 8 <= T; t += 8) {
            uint64_t chunk;
            memcpy(&chunk, m + t, 8);
            if (chunk == ALL_SET) {
                for (int j = 0; j < 8; j++) s[n + j] = x[t + j];
                n += 8;
            } else if (chunk != 0 && LITTLE_ENDIAN_BYTES) { /* slot of j = masked count before j, no serial chain;
                an unmasked j writes the slot the next masked one then overwrites */
                uint64_t before = chunk * ALL_SET - chunk;
                for (int j = 0; j < 8; j++)
                    s[n + ((before >> (8 * j)) & 0xff)] = x[t + j];
                n += (chunk * ALL_SET) >> 56;
            } else if (chunk != 0) {
                for (int j = 0; j < 8; j++) {
                    s[n] = x[t + j];
                    n += m[t + j] != 0;
                }
            }
        }
        for (; t < T; t++) {
            s[n] = x[t];
            n += m[t] != 0;
        }
        if (n == 0) {
            for (int64_t t = 0; t < T; t++) o[t] = 1.0f;
            continue;
        }
        float smin = INFINITY, smax = 0.0f;
        int finite = 1;
        #pragma omp simd reduction(min:smin) reduction(max:smax) reduction(&:finite)
        for (int64_t i = 0; i < n; i++) {
            float v = s[i];
            finite &= (v - v) == 0.0f; /* false for NaN and +-Inf */
            v = v > 0.0f ? v : 0.0f;
            float sv = log1p_nonneg(v);
            s[i] = sv;
            smin = sv < smin ? sv : smin;
            smax = sv > smax ? sv : smax;
        }
        if (!finite) return 1; /* the caller raises; rows before this one are written */
        float span = smax - smin;
        if (!(span > 0.0f)) span = 1.0f; /* range taken as 1 when max == min */

        /* quantile of n = (s - min) / span, numpy's "linear" method; n is monotone in s */
        int64_t last = n - 1;
        double virt = (double)tau * (double)last;
        double lo_d = floor(virt);
        float frac = (float)(virt - lo_d);
        int64_t lo = (int64_t)lo_d;
        float s_lo, s_hi;
        kth_pair(s, n, lo, smin, smax, bins, idx, tmp, &s_lo, &s_hi);
        float a = (s_lo - smin) / span, b = (s_hi - smin) / span, diff = b - a;
        float q = frac >= 0.5f ? b - diff * (1.0f - frac) : a + diff * frac; /* numpy's lerp */

        /* Reciprocals turn the per-element divisions into products (within 1 ulp of the
           reference's quotients; w is continuous at n = q, so a flipped comparison there
           moves w by an ulp too). */
        float inv_span = 1.0f / span, inv_q = 1.0f / (q + eps), slope = beta / ((1.0f - q) + eps);
        float total = 0.0f;
        #pragma omp simd reduction(+:total)
        for (int64_t i = 0; i < n; i++) { /* both branches, then a select: no mispredictions */
            float nn = (s[i] - smin) * inv_span;
            float sup = nn * inv_q;
            sup = sup < floor_w ? floor_w : sup;
            float boost = (nn - q) * slope + 1.0f;
            float w = nn < q ? sup : boost;
            s[i] = w;
            total += w;
        }
        float f = sum_to_len ? (float)n / (total + eps) : 1.0f;
        int64_t i = 0;
        for (t = 0; t + 8 <= T; t += 8) {
            uint64_t chunk;
            memcpy(&chunk, m + t, 8);
            if (chunk == ALL_SET) {
                for (int j = 0; j < 8; j++) o[t + j] = s[i + j] * f;
                i += 8;
            } else if (chunk == 0) {
                for (int j = 0; j < 8; j++) o[t + j] = 1.0f;
            } else if (LITTLE_ENDIAN_BYTES) {
                uint64_t before = chunk * ALL_SET - chunk;
                for (int j = 0; j < 8; j++) { /* load unconditionally (in bounds: s has T
                    slots, i + 7 < T here), then select: no branch to mispredict */
                    float v = s[i + ((before >> (8 * j)) & 0xff)] * f;
                    o[t + j] = m[t + j] ? v : 1.0f;
                }
                i += (chunk * ALL_SET) >> 56;
            } else {
                for (int j = 0; j < 8; j++) {
                    o[t + j] = m[t + j] ? s[i] * f : 1.0f;
                    i += m[t + j] != 0;
                }
            }
        }
        for (; t < T; t++) {
            o[t] = m[t] ? s[i] * f : 1.0f;
            i += m[t] != 0;
        }
    }
    return 0;
}
