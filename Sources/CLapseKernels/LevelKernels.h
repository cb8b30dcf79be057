// The kernels of one instruction-set level. Generic.c, AVX2.c and AVX512.c each include this file once, with
// LEVEL (the name suffix) and VW (lanes of the elementwise loops) defined and, for the x86 levels, a
// `#pragma clang attribute` giving every function below that level's target features, so the same source compiles
// to SSE2, AVX2+FMA and AVX-512 code in one binary. Loops use clang's vector extensions rather than intrinsics, so
// each level gets its own register width and FMA contraction from one text.
//
// Accuracy matches the Swift kernels these replaced: exp is the Cephes polynomial (≤ 2 ulp), sigmoid works from
// e^-|x| so neither side overflows or cancels, GELU's Φ uses an erfc fit with < 1.2e-7 fractional error.

#include <stdint.h>
#include <string.h>
#include "CLapseKernels.h"

#define LK_CAT2(a, b) a##_##b
#define LK_CAT(a, b) LK_CAT2(a, b)
#define LK(name) LK_CAT(name, LEVEL)
/// Helpers are always inlined into the level's entry points, so they take on its target features and vector ABI.
#define LK_INLINE static inline __attribute__((always_inline))

typedef float vf __attribute__((ext_vector_type(VW)));
typedef int32_t vi __attribute__((ext_vector_type(VW)));
typedef float v8 __attribute__((ext_vector_type(8)));
typedef float v16 __attribute__((ext_vector_type(16)));

LK_INLINE vf load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
LK_INLINE void store(vf v, float *p) { memcpy(p, &v, sizeof v); }
LK_INLINE v8 load8(const float *p) { v8 v; memcpy(&v, p, sizeof v); return v; }
LK_INLINE void store8(v8 v, float *p) { memcpy(p, &v, sizeof v); }
LK_INLINE vf splat(float x) { return (vf)x; }

/// `where ? a : b` per lane (`where` is a comparison result: all ones or zero).
LK_INLINE vf select(vi where, vf a, vf b) { return (vf)((where & (vi)a) | (~where & (vi)b)); }
/// max/min that keep `a` when either is NaN, like the Swift kernels' `replacing(with:where:)` forms.
LK_INLINE vf vmax(vf a, vf b) { return select(b > a, b, a); }
LK_INLINE vf vmin(vf a, vf b) { return select(b < a, b, a); }

/// Splits x = n·ln2 + r with |r| ≤ ln2/2; returns r and sets 2^n (n ∈ [−126, 127] for clamped inputs).
LK_INLINE vf reduce(vf x, vf *scale) {
    // n = round(x / ln2) by the 1.5·2²³ trick: adding it leaves n in the low mantissa bits.
    vf shifted = x * 1.44269504088896341f + 12582912.0f;
    vf n = shifted - 12582912.0f;
    vi ni = (vi)shifted - 0x4B400000;
    // ln2 split in two so n·ln2_hi is exact.
    vf r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    *scale = (vf)((ni + 127) << 23);
    return r;
}

/// The Cephes e^r polynomial in Horner form from `leading`, the part above the 8.33e-3 term.
LK_INLINE vf polynomial_tail(vf leading, vf r) {
    vf p = leading;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    return p * (r * r) + r + 1.0f;
}

/// e^x with ≤ 2 ulp error; inputs clamped to [−87.3, 88.37] (overflow saturates near 2.4e38 instead of inf).
LK_INLINE vf vexp(vf input) {
    vf x = vmin(vmax(input, splat(-87.33654f)), splat(88.37626f));
    vf scale;
    vf r = reduce(x, &scale);
    return polynomial_tail(1.9875691500e-4f * r + 1.3981999507e-3f, r) * scale;
}

/// e^x for x ≤ 0 or NaN (softmax after subtracting the row max), ≤ 2e-7 relative error: no upper clamp and no r⁷
/// term, two vector ops fewer in the loop attention spends a third of its time in.
LK_INLINE vf vexp_nonpositive(vf input) {
    vf scale;
    vf r = reduce(vmax(input, splat(-87.33654f)), &scale);
    return polynomial_tail(splat(1.3981999507e-3f), r) * scale;
}

/// 1/(1+e^-x), ≤ ~3 ulp: from e^-|x| ∈ (0, 1], and e·s on the negative side instead of 1 − s.
LK_INLINE vf vsigmoid(vf x) {
    vi negative = x < 0.0f;
    vf ax = select(negative, -x, x);
    // exp clamps at −87.3, so past that return the true limit 0.
    vf e = select(ax > 87.3f, splat(0.0f), vexp(-ax));
    vf s = 1.0f / (1.0f + e);
    return select(negative, e * s, s);
}

/// Φ(x) = ½·erfc(−x/√2) with ≤ 5e-7 relative error, accurate deep in the negative tail (see FastMath history:
/// erfc(z) = t·exp(−z² + P(t)), t = 1/(1 + z/2), with z² split so the large part of the exponent is exact).
LK_INLINE vf vnormal_cdf(vf x) {
    vi negative = x < 0.0f;
    vf ax = select(negative, -x, x);
    vf z = ax * 0.70710678118654752f;
    vf t = 1.0f / (1.0f + 0.5f * z);
    vf p = splat(0.17087277f);
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    vf xh = (vf)((vi)ax & (int32_t)0xFFFFF000);
    vf xl = ax - xh;
    vf erfc = t * vexp(-0.5f * (xh * xh)) * vexp(p - 0.5f * (xl * (ax + xh)));
    // Past z ≈ 9.2 erfc is below the float range and exp's clamp would show: flush to 0.
    vf half = select(z > 9.2f, splat(0.0f), 0.5f * erfc);
    return select(negative, half, 1.0f - half);
}

LK_INLINE vf apply_activation(vf x, int kind, float parameter) {
    switch (kind) {
    case LAPSE_ACT_RELU: return select(x > 0.0f, x, splat(0.0f));
    case LAPSE_ACT_LEAKY_RELU: return select(x >= 0.0f, x, x * parameter);
    case LAPSE_ACT_SILU: return x * vsigmoid(x);
    case LAPSE_ACT_GELU: return x * vnormal_cdf(x);
    case LAPSE_ACT_GELU_TANH: {
        // The inner argument is rounded step by step as torch computes it (no FMA): in the far tails a fused
        // multiply-add moves it enough to change the result by ~8e-6 relative.
#pragma clang fp contract(off)
        // ½(1 + tanh(y)) is exactly sigmoid(2y), which avoids tanh's cancellation near zero.
        vf inner = 0.79788456080286536f * (x + 0.044715f * x * x * x);
        return x * vsigmoid(inner + inner);
    }
    case LAPSE_ACT_QUICK_GELU: return x * vsigmoid(1.702f * x);
    case LAPSE_ACT_SIGMOID: return vsigmoid(x);
    default: return x;
    }
}

/// One loop per kind, so the switch is outside the loop after inlining; the tail goes through a zero-padded
/// vector, so bodies and tails give identical results for equal inputs.
#define LK_ACTIVATION_LOOP(KIND)                                                                              \
    for (; i + VW <= count; i += VW) store(apply_activation(load(src + i) + b, KIND, parameter), dst + i);   \
    if (i < count) {                                                                                          \
        float buffer[VW] = {0};                                                                               \
        memcpy(buffer, src + i, (size_t)(count - i) * sizeof(float));                                        \
        store(apply_activation(load(buffer) + b, KIND, parameter), buffer);                                   \
        memcpy(dst + i, buffer, (size_t)(count - i) * sizeof(float));                                         \
    }

static void LK(lapse_activation)(const float *src, float *dst, long count, float bias, int kind, float parameter) {
    long i = 0;
    vf b = splat(bias);
    switch (kind) {
    case LAPSE_ACT_RELU: LK_ACTIVATION_LOOP(LAPSE_ACT_RELU) break;
    case LAPSE_ACT_LEAKY_RELU: LK_ACTIVATION_LOOP(LAPSE_ACT_LEAKY_RELU) break;
    case LAPSE_ACT_SILU: LK_ACTIVATION_LOOP(LAPSE_ACT_SILU) break;
    case LAPSE_ACT_GELU: LK_ACTIVATION_LOOP(LAPSE_ACT_GELU) break;
    case LAPSE_ACT_GELU_TANH: LK_ACTIVATION_LOOP(LAPSE_ACT_GELU_TANH) break;
    case LAPSE_ACT_QUICK_GELU: LK_ACTIVATION_LOOP(LAPSE_ACT_QUICK_GELU) break;
    case LAPSE_ACT_SIGMOID: LK_ACTIVATION_LOOP(LAPSE_ACT_SIGMOID) break;
    default: LK_ACTIVATION_LOOP(LAPSE_ACT_NONE) break;
    }
}

#define LK_GATE_LOOP(KIND)                                                                                    \
    for (; i + VW <= count; i += VW) store(load(value + i) * apply_activation(load(gate + i), KIND, 0), dst + i); \
    if (i < count) {                                                                                          \
        float v[VW] = {0}, g[VW] = {0};                                                                       \
        memcpy(v, value + i, (size_t)(count - i) * sizeof(float));                                            \
        memcpy(g, gate + i, (size_t)(count - i) * sizeof(float));                                             \
        store(load(v) * apply_activation(load(g), KIND, 0), v);                                               \
        memcpy(dst + i, v, (size_t)(count - i) * sizeof(float));                                              \
    }

static void LK(lapse_gate)(const float *value, const float *gate, float *dst, long count, int kind) {
    long i = 0;
    if (kind == LAPSE_ACT_SILU) {
        LK_GATE_LOOP(LAPSE_ACT_SILU)
    } else {
        LK_GATE_LOOP(LAPSE_ACT_GELU)
    }
}

/// Largest lane, ignoring NaN lanes like the `>` comparisons of the loops.
LK_INLINE float horizontal_max(vf v) {
    float lanes[VW];
    store(v, lanes);
    float m = lanes[0];
    for (int l = 1; l < VW; l++) if (lanes[l] > m) m = lanes[l];
    return m;
}

LK_INLINE float horizontal_sum(vf v) {
    float lanes[VW];
    store(v, lanes);
    float s = 0;
    for (int l = 0; l < VW; l++) s += lanes[l];
    return s;
}

/// Row max with four independent accumulators, so the loop isn't bound by one dependency chain.
LK_INLINE float row_max(const float *p, long n) {
    long vectors = n / VW, i = 0;
    float m = -__builtin_inff();
    if (vectors > 0) {
        vf m0 = splat(-__builtin_inff()), m1 = m0, m2 = m0, m3 = m0;
        for (; i + 4 <= vectors; i += 4) {
            m0 = vmax(m0, load(p + i * VW)); m1 = vmax(m1, load(p + i * VW + VW));
            m2 = vmax(m2, load(p + i * VW + 2 * VW)); m3 = vmax(m3, load(p + i * VW + 3 * VW));
        }
        for (; i < vectors; i++) m0 = vmax(m0, load(p + i * VW));
        m = horizontal_max(vmax(vmax(m0, m1), vmax(m2, m3)));
    }
    for (long j = vectors * VW; j < n; j++) if (p[j] > m) m = p[j];
    return m;
}

/// Replaces the row by e^(x − m) (with `exp_fn`) and returns Σ.
#define LK_EXP_ROW(EXP)                                                                                       \
    long vectors = n / VW;                                                                                    \
    vf vm = splat(m), vs = splat(0.0f);                                                                       \
    for (long i = 0; i < vectors; i++) {                                                                      \
        vf e = EXP(load(p + i * VW) - vm);                                                                    \
        store(e, p + i * VW);                                                                                 \
        vs += e;                                                                                              \
    }                                                                                                         \
    float s = horizontal_sum(vs);                                                                             \
    long done = vectors * VW;                                                                                 \
    if (done < n) {                                                                                           \
        float tail[VW];                                                                                       \
        for (int l = 0; l < VW; l++) tail[l] = done + l < n ? p[done + l] - m : -__builtin_inff();            \
        store(EXP(load(tail)), tail);                                                                         \
        for (long j = done; j < n; j++) { p[j] = tail[j - done]; s += tail[j - done]; }                      \
    }

static float LK(lapse_softmax_unnormalised)(float *p, long n) {
    float m = row_max(p, n);
    if (m == -__builtin_inff()) {
        for (long i = 0; i < n; i++) p[i] = __builtin_nanf("");
        return __builtin_nanf("");
    }
    LK_EXP_ROW(vexp_nonpositive)
    return 1.0f / s;
}

static void LK(lapse_softmax)(float *p, long n) {
    float m = row_max(p, n);
    if (m == -__builtin_inff()) {  // fully masked row: torch yields NaN
        for (long i = 0; i < n; i++) p[i] = __builtin_nanf("");
        return;
    }
    LK_EXP_ROW(vexp)
    float inverse = 1.0f / s;
    for (long i = 0; i < n; i++) p[i] *= inverse;
}

static void LK(lapse_scale_add)(float *row, long count, float factor, const float *other, long stride) {
    if (!other) {
        for (long i = 0; i < count; i++) row[i] *= factor;
    } else if (stride == 1) {
        for (long i = 0; i < count; i++) row[i] = row[i] * factor + other[i];
    } else {
        for (long i = 0; i < count; i++) row[i] = row[i] * factor + other[i * stride];
    }
}

static void LK(lapse_axpy)(float *dst, const float *src, long count, float a, long stride) {
    if (stride == 1) {
        for (long i = 0; i < count; i++) dst[i] += a * src[i];
    } else {
        for (long i = 0; i < count; i++) dst[i] += a * src[i * stride];
    }
}

static void LK(lapse_l2_normalize)(const float *src, float *dst, long count) {
    vf acc = splat(0.0f);
    long i = 0;
    for (; i + VW <= count; i += VW) { vf x = load(src + i); acc += x * x; }
    float s = horizontal_sum(acc);
    for (; i < count; i++) s += src[i] * src[i];
    float norm = __builtin_sqrtf(s);
    float inverse = 1.0f / (norm > 1e-12f ? norm : 1e-12f);
    for (i = 0; i < count; i++) dst[i] = src[i] * inverse;
}

/// Sums of d = x − x₀ and d² (x₀ the first element, close to the mean for real activations, so E[d²] − E[d]²
/// doesn't cancel), in float lanes over blocks of 512 elements added up in double.
static void LK(lapse_moments)(const float *p, long n, float *shift, float *delta, float *variance) {
    if (n == 0) { *shift = 0; *delta = 0; *variance = 0; return; }
    float x0 = p[0];
    vf vshift = splat(x0);
    double sum = 0, squares = 0;
    long i = 0;
    while (i + VW <= n) {
        long end = i + 512 < n ? i + 512 : n;
        vf s = splat(0.0f), q = splat(0.0f);
        for (; i + VW <= end; i += VW) {
            vf d = load(p + i) - vshift;
            s += d;
            q += d * d;
        }
        sum += horizontal_sum(s);
        squares += horizontal_sum(q);
    }
    for (; i < n; i++) { double d = (double)(p[i] - x0); sum += d; squares += d * d; }
    double m = sum / (double)n, v = squares / (double)n - m * m;
    *shift = x0;
    *delta = (float)m;
    *variance = (float)(v > 0 ? v : 0);
}

static void LK(lapse_normalize)(const float *src, float *dst, long n, float x0, float delta, float scale,
                         const float *w, const float *b) {
    if (w && b) {
        for (long i = 0; i < n; i++) dst[i] = (src[i] - x0 - delta) * scale * w[i] + b[i];
    } else if (w) {
        for (long i = 0; i < n; i++) dst[i] = (src[i] - x0 - delta) * scale * w[i];
    } else if (b) {
        for (long i = 0; i < n; i++) dst[i] = (src[i] - x0 - delta) * scale + b[i];
    } else {
        for (long i = 0; i < n; i++) dst[i] = (src[i] - x0 - delta) * scale;
    }
}

/// Subtracting before scaling keeps the precision that folding the mean into the shift would cancel away.
static void LK(lapse_affine)(const float *src, float *dst, long n, float x0, float delta, float scale, float shift) {
    for (long i = 0; i < n; i++) dst[i] = (src[i] - x0 - delta) * scale + shift;
}

/// Explicit vectors (VW lanes, then 8) with the taps splatted once: the auto-vectorised form paid for alias checks,
/// and taps read through `f` inside the loop are reloaded after every store to `acc` (they might alias).
static void LK(lapse_conv3x3_accumulate)(float *acc, const float *l0, const float *l1, const float *l2, const float *f,
                                         long count) {
    const vf w0 = f[0], w1 = f[1], w2 = f[2], w3 = f[3], w4 = f[4], w5 = f[5], w6 = f[6], w7 = f[7], w8 = f[8];
    long x = 0;
    for (; x + VW <= count; x += VW) {
        vf s = load(acc + x);
        s += w0 * load(l0 + x) + w1 * load(l0 + x + 1) + w2 * load(l0 + x + 2);
        s += w3 * load(l1 + x) + w4 * load(l1 + x + 1) + w5 * load(l1 + x + 2);
        s += w6 * load(l2 + x) + w7 * load(l2 + x + 1) + w8 * load(l2 + x + 2);
        store(s, acc + x);
    }
    const v8 h0 = f[0], h1 = f[1], h2 = f[2], h3 = f[3], h4 = f[4], h5 = f[5], h6 = f[6], h7 = f[7], h8 = f[8];
    for (; x < count; x += 8) {
        v8 s = load8(acc + x);
        s += h0 * load8(l0 + x) + h1 * load8(l0 + x + 1) + h2 * load8(l0 + x + 2);
        s += h3 * load8(l1 + x) + h4 * load8(l1 + x + 1) + h5 * load8(l1 + x + 2);
        s += h6 * load8(l2 + x) + h7 * load8(l2 + x + 1) + h8 * load8(l2 + x + 2);
        store8(s, acc + x);
    }
}

/// G·(a, b, c)ᵀ for the F(4×4, 3×3) filter transform, with rounded reciprocals instead of divisions.
LK_INLINE void through_g(float a, float b, float c, float out[6]) {
    const float sixth = 1.0f / 6, twelfth = 1.0f / 12, twentyFourth = 1.0f / 24;
    float outer = a * twentyFourth + c * sixth, middle = b * twelfth;
    out[0] = a * 0.25f;
    out[1] = -(a + b + c) * sixth;
    out[2] = -(a - b + c) * sixth;
    out[3] = outer + middle;
    out[4] = outer - middle;
    out[5] = c;
}

static void LK(lapse_winograd_weights)(const float *filters, float *u, long begin, long end, long stride) {
    for (long pair = begin; pair < end; pair++) {
        const float *g = filters + pair * 9;
        float c0[6], c1[6], c2[6];
        through_g(g[0], g[3], g[6], c0);
        through_g(g[1], g[4], g[7], c1);
        through_g(g[2], g[5], g[8], c2);
        for (int i = 0; i < 6; i++) {
            float row[6];
            through_g(c0[i], c1[i], c2[i], row);
            float *base = u + (long)(i * 6) * stride + pair;
            for (int j = 0; j < 6; j++) base[j * stride] = row[j];
        }
    }
}

/// Elements k, k+4, …, k+28 of 32 floats at `p`, for k = 0…3: one coordinate of 8 horizontally adjacent tiles.
LK_INLINE void deinterleave4(const float *p, v8 *d0, v8 *d1, v8 *d2, v8 *d3) {
    v16 a, b;
    memcpy(&a, p, sizeof a);
    memcpy(&b, p + 16, sizeof b);
    *d0 = __builtin_shufflevector(a, b, 0, 4, 8, 12, 16, 20, 24, 28);
    *d1 = __builtin_shufflevector(a, b, 1, 5, 9, 13, 17, 21, 25, 29);
    *d2 = __builtin_shufflevector(a, b, 2, 6, 10, 14, 18, 22, 26, 30);
    *d3 = __builtin_shufflevector(a, b, 3, 7, 11, 15, 19, 23, 27, 31);
}

/// Bᵀ applied to six vectors.
LK_INLINE void input_transform(v8 d0, v8 d1, v8 d2, v8 d3, v8 d4, v8 d5, v8 r[6]) {
    v8 t1 = d4 - 4 * d2, t2 = d3 - 4 * d1, t3 = d4 - d2, t4 = 2 * (d3 - d1);
    r[0] = 4 * d0 - 5 * d2 + d4;
    r[1] = t1 + t2;
    r[2] = t1 - t2;
    r[3] = t3 + t4;
    r[4] = t3 - t4;
    r[5] = 4 * d1 - 5 * d3 + d5;
}

/// Aᵀ applied to six vectors.
LK_INLINE void output_transform(v8 m0, v8 m1, v8 m2, v8 m3, v8 m4, v8 m5, v8 r[4]) {
    v8 a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4;
    r[0] = m0 + a + c;
    r[1] = b + 2 * d;
    r[2] = a + 4 * c;
    r[3] = b + 8 * d + m5;
}

static void LK(lapse_winograd_input)(const float *plane, long h, long w, long y0, long padL, long chunks, float *dst,
                              long cld, float *line) {
    float hbuf[6 * 48];
    long step = 6 * cld;
    for (long chunk = 0; chunk < chunks; chunk++) {
        // A chunk reads columns x0 ..< x0 + 36 of rows y0 ..< y0 + 6: straight from the plane when all of it is
        // inside, else through a zero-padded copy (6 rows of 40).
        long x0 = chunk * 32 - padL;
        const float *src;
        long pitch;
        if (x0 >= 0 && x0 + 36 <= w && y0 >= 0 && y0 + 6 <= h) {
            src = plane + y0 * w + x0;
            pitch = w;
        } else {
            long lo = x0 > 0 ? x0 : 0, hiEnd = x0 + 36 < w ? x0 + 36 : w, hi = hiEnd > lo ? hiEnd : lo;
            long span = hi - lo;
            // Inline loops, not memset/memcpy: at 128² half of all chunks touch an edge, and a library call per
            // ≤ 36-float row was ~10 % of an RRDB run.
            for (int k = 0; k < 6; k++) {
                float *row = line + k * 40;
                long y = y0 + k;
                for (int j = 0; j < 40; j += 8) store8((v8)0.0f, row + j);
                if (y < 0 || y >= h || span == 0) continue;
                const float *from = plane + y * w + lo;
                float *to = row + (lo - x0);
                long j = 0;
                for (; j + 8 <= span; j += 8) store8(load8(from + j), to + j);
                for (; j < span; j++) to[j] = from[j];
            }
            src = line;
            pitch = 40;
        }
        for (int k = 0; k < 6; k++) {
            const float *p = src + k * pitch;
            v8 d0, d1, d2, d3, d4, d5, unused0, unused1, r[6];
            deinterleave4(p, &d0, &d1, &d2, &d3);
            deinterleave4(p + 4, &d4, &d5, &unused0, &unused1);
            input_transform(d0, d1, d2, d3, d4, d5, r);
            for (int j = 0; j < 6; j++) store8(r[j], hbuf + k * 48 + j * 8);
        }
        float *d = dst + chunk * 8;
        for (int j = 0; j < 6; j++) {
            v8 r[6];
            input_transform(load8(hbuf + j * 8), load8(hbuf + 48 + j * 8), load8(hbuf + 96 + j * 8),
                            load8(hbuf + 144 + j * 8), load8(hbuf + 192 + j * 8), load8(hbuf + 240 + j * 8), r);
            float *q = d + j * cld;
            for (int k = 0; k < 6; k++) store8(r[k], q + k * step);
        }
    }
}

static void LK(lapse_winograd_output)(const float *src0, long step, float *dstPlane, long ho, long wo, long ty, long chunks,
                               float bias, int hasSlope, float slope) {
    float hbuf[4 * 48];
    v8 bv = (v8)bias;
    for (long chunk = 0; chunk < chunks; chunk++) {
        const float *src = src0 + chunk * 8;
        // Columns through Aᵀ (rows of M), kept as 4×6 vectors.
        for (int j = 0; j < 6; j++) {
            const float *q = src + j * step;
            v8 s[4];
            output_transform(load8(q), load8(q + 6 * step), load8(q + 12 * step), load8(q + 18 * step),
                             load8(q + 24 * step), load8(q + 30 * step), s);
            for (int i = 0; i < 4; i++) store8(s[i], hbuf + i * 48 + j * 8);
        }
        long ox = chunk * 32;
        for (int i = 0; i < 4; i++) {
            long oy = ty * 4 + i;
            if (oy >= ho) break;
            const float *hb = hbuf + i * 48;
            v8 y[4];
            output_transform(load8(hb), load8(hb + 8), load8(hb + 16), load8(hb + 24), load8(hb + 32), load8(hb + 40), y);
            for (int k = 0; k < 4; k++) {
                y[k] += bv;
                if (hasSlope) {
                    v8 scaled = y[k] * slope;
                    typedef int32_t v8i __attribute__((ext_vector_type(8)));
                    v8i negative = y[k] < 0.0f;
                    y[k] = (v8)((negative & (v8i)scaled) | (~negative & (v8i)y[k]));
                }
            }
            // Lane t of y[k] is column 4t + k of the output row: interleave back to row order.
            v16 a01 = __builtin_shufflevector(y[0], y[1], 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
            v16 a23 = __builtin_shufflevector(y[2], y[3], 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
            v16 lo = __builtin_shufflevector(a01, a23, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
            v16 hi = __builtin_shufflevector(a01, a23, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
            float *dst = dstPlane + oy * wo + ox;
            if (ox + 32 <= wo) {
                memcpy(dst, &lo, sizeof lo);
                memcpy(dst + 16, &hi, sizeof hi);
            } else {
                float tail[32];
                memcpy(tail, &lo, sizeof lo);
                memcpy(tail + 16, &hi, sizeof hi);
                memcpy(dst, tail, (size_t)(wo - ox) * sizeof(float));
            }
        }
    }
}

const LapseKernelTable LK(lapse_kernels) = {
    .name = LK_NAME,
    .activation = LK(lapse_activation),
    .gate = LK(lapse_gate),
    .softmax_unnormalised = LK(lapse_softmax_unnormalised),
    .softmax = LK(lapse_softmax),
    .scale_add = LK(lapse_scale_add),
    .axpy = LK(lapse_axpy),
    .l2_normalize = LK(lapse_l2_normalize),
    .moments = LK(lapse_moments),
    .normalize = LK(lapse_normalize),
    .affine = LK(lapse_affine),
    .conv3x3_accumulate = LK(lapse_conv3x3_accumulate),
    .winograd_weights = LK(lapse_winograd_weights),
    .winograd_input = LK(lapse_winograd_input),
    .winograd_output = LK(lapse_winograd_output),
};
