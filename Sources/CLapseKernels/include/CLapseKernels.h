#ifndef CLAPSE_KERNELS_H
#define CLAPSE_KERNELS_H

/// Lapse's own hot loops (activations, softmax, norms, the Winograd transforms, the direct 3×3 conv), compiled once
/// per instruction-set level and chosen at run time, so one binary runs at full speed on any x86-64 CPU.
///
/// Each level fills one table of function pointers; `lapse_kernels_active()` is the table picked at load time from
/// CPUID (or the `LAPSE_CPU_LEVEL` override). Callers read the table once per op and call through it per row or
/// range, so the indirection costs nothing measurable next to the loops.

#ifdef __cplusplus
extern "C" {
#endif

/// Instruction-set levels, weakest first. `generic` is the compiler's baseline for the target (SSE2 on x86-64).
enum {
    LAPSE_LEVEL_GENERIC = 0,
    LAPSE_LEVEL_AVX2 = 1,   ///< AVX2 + FMA (Haswell, Zen 1 and later)
    LAPSE_LEVEL_AVX512 = 2, ///< AVX-512 F/DQ/BW/VL (Skylake-SP, Ice Lake, Zen 4 and later)
    LAPSE_LEVEL_COUNT = 3
};

/// Pointwise functions of `lapse_activation`; `parameter` is the negative slope of leaky ReLU.
enum {
    LAPSE_ACT_NONE = 0,
    LAPSE_ACT_RELU = 1,
    LAPSE_ACT_LEAKY_RELU = 2,
    LAPSE_ACT_SILU = 3,
    LAPSE_ACT_GELU = 4,
    LAPSE_ACT_GELU_TANH = 5,
    LAPSE_ACT_QUICK_GELU = 6,
    LAPSE_ACT_SIGMOID = 7
};

typedef struct LapseKernelTable {
    /// "generic", "avx2" or "avx512".
    const char *_Nonnull name;
    /// dst[i] = act(src[i] + bias); `src` may equal `dst`.
    void (*_Nonnull activation)(const float *_Nonnull src, float *_Nonnull dst, long count, float bias, int kind,
                                float parameter);
    /// dst[i] = value[i] · act(gate[i]) (GELU or SiLU); `dst` may equal `value`.
    void (*_Nonnull gate)(const float *_Nonnull value, const float *_Nonnull gate, float *_Nonnull dst, long count,
                          int kind);
    /// Replaces the row by e^(x − max) and returns 1/Σ; a fully masked row (max = −∞) becomes NaN.
    float (*_Nonnull softmax_unnormalised)(float *_Nonnull row, long count);
    /// Softmax of the row in place.
    void (*_Nonnull softmax)(float *_Nonnull row, long count);
    /// row[i] = row[i]·factor + other[i·stride] (`other` may be NULL).
    void (*_Nonnull scale_add)(float *_Nonnull row, long count, float factor, const float *_Nullable other,
                               long stride);
    /// dst[i] += a·src[i·stride] (the depthwise convolution's taps).
    void (*_Nonnull axpy)(float *_Nonnull dst, const float *_Nonnull src, long count, float a, long stride);
    /// dst = src / max(‖src‖₂, 1e-12).
    void (*_Nonnull l2_normalize)(const float *_Nonnull src, float *_Nonnull dst, long count);
    /// Mean as shift + delta (shift = src[0]) and biased variance, in one pass (see Normalization.swift).
    void (*_Nonnull moments)(const float *_Nonnull src, long count, float *_Nonnull shift, float *_Nonnull delta,
                             float *_Nonnull variance);
    /// dst[i] = ((src[i] − x0 − delta)·scale)·w[i] + b[i]; `w`/`b` NULL mean 1/0.
    void (*_Nonnull normalize)(const float *_Nonnull src, float *_Nonnull dst, long count, float x0, float delta,
                               float scale, const float *_Nullable weight, const float *_Nullable bias);
    /// dst[i] = (src[i] − x0 − delta)·scale + shift.
    void (*_Nonnull affine)(const float *_Nonnull src, float *_Nonnull dst, long count, float x0, float delta,
                            float scale, float shift);
    /// acc[x] += Σ f[3k + j]·line_k[x + j] over a 3×3 filter, for x < count (count a multiple of 8).
    void (*_Nonnull conv3x3_accumulate)(float *_Nonnull acc, const float *_Nonnull line0,
                                        const float *_Nonnull line1, const float *_Nonnull line2,
                                        const float *_Nonnull filter, long count);
    /// Winograd F(4×4, 3×3) filter transform U = G g Gᵀ for filter pairs [begin, end): u[ξ·stride + pair].
    void (*_Nonnull winograd_weights)(const float *_Nonnull filters, float *_Nonnull u, long begin, long end,
                                      long stride);
    /// Input transform of one tile row of one channel (see Winograd.swift for the layout).
    void (*_Nonnull winograd_input)(const float *_Nonnull plane, long height, long width, long y0, long padLeft,
                                    long chunks, float *_Nonnull dst, long channelStride, float *_Nonnull line);
    /// Output transform of one tile row of one output channel, with bias and optional leaky slope.
    void (*_Nonnull winograd_output)(const float *_Nonnull src, long step, float *_Nonnull dstPlane, long outHeight,
                                     long outWidth, long tileRow, long chunks, float bias, int hasSlope, float slope);
} LapseKernelTable;

/// The table of `level`, or NULL when this CPU (or this build's architecture) cannot run it.
const LapseKernelTable *_Nullable lapse_kernels_table(int level);
/// The table chosen at load time.
const LapseKernelTable *_Nonnull lapse_kernels_active(void);
/// The level chosen at load time.
int lapse_kernels_active_level(void);
/// The strongest level this CPU and OS support.
int lapse_kernels_best_level(void);
/// 1 when `LAPSE_CPU_LEVEL` chose the level, 0 when CPUID did.
int lapse_kernels_overridden(void);
/// Why the override was not followed (unknown value, or a level the CPU lacks), or NULL.
const char *_Nullable lapse_kernels_note(void);

#ifdef __cplusplus
}
#endif
#endif
