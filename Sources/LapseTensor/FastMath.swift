/// Vectorised float kernels for the softmax/activation hot loops. libm's `expf` is scalar and costs more than the
/// surrounding GEMMs in attention; this Cephes-style exp runs eight lanes at once with ≤ 2 ulp error.
enum FastMath {
    typealias V = SIMD8<Float>

    /// e^x for each lane with ≤ 2 ulp error; inputs are clamped to [−87.3, 88.37], so underflow gives ~0 and
    /// overflow saturates near 2.4e38 instead of inf (harmless for softmax/sigmoid, which is where it is used).
    @inline(__always)
    static func exp(_ input: V) -> V {
        let x = vmin(vmax(input, V(repeating: -87.33654)), V(repeating: 88.37626))
        let (r, scale) = reduce(x)
        return polynomialTail(V(repeating: 1.9875691500e-4) * r + 1.3981999507e-3, r) * scale
    }

    /// Splits x = n·ln2 + r with |r| ≤ ln2/2 and returns r and 2^n (n ∈ [-126, 127] for the clamped inputs).
    @inline(__always)
    private static func reduce(_ x: V) -> (r: V, scale: V) {
        // n = round(x / ln2) via the 1.5·2²³ trick: adding it leaves n in the low mantissa bits.
        let shifted = x * 1.44269504088896341 + 12_582_912
        let n = shifted - 12_582_912
        let ni = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000
        // ln2 split in two so n·ln2_hi is exact.
        var r = x - n * 0.693359375
        r = r + n * 2.12194440e-4
        return (r, unsafeBitCast((ni &+ 127) &<< 23, to: V.self))
    }

    /// Finishes the Cephes e^r polynomial (Horner form) from `leading`, the part accumulated above the 8.33e-3 term.
    @inline(__always)
    private static func polynomialTail(_ leading: V, _ r: V) -> V {
        var p = leading
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        return p * (r * r) + r + 1
    }

    /// 1/(1+e^-x) per lane, ≤ ~3 ulp. Works from e^-|x| ∈ (0, 1] so nothing overflows; the negative side is
    /// e·s rather than 1 − s, which keeps full relative accuracy for tiny outputs instead of cancelling.
    @inline(__always)
    static func sigmoid(_ x: V) -> V {
        let ax = x.replacing(with: -x, where: x .< 0)
        // exp clamps its input at −87.3, so past that point return the (denormal-flushed) true limit 0.
        let e = exp(-ax).replacing(with: 0, where: ax .> 87.3)
        let s = 1 / (1 + e)
        return s.replacing(with: e * s, where: x .< 0)
    }

    /// Φ(x) = ½·erfc(−x/√2), the standard normal CDF, per lane with ≤ 5e-7 relative error.
    ///
    /// erfc(z) for z ≥ 0 uses the Chebyshev-fitted form t·exp(−z² + P(t)), t = 1/(1 + z/2) (fractional error
    /// < 1.2e-7 for every z ≥ 0); the lower half of Φ is then ½·erfc directly, so GELU keeps its relative
    /// accuracy deep in the negative tail where 1 + erf(x) would cancel. z² = x²/2 is split as xh² + xl·(|x| + xh)
    /// with xh the top 12 mantissa bits (xh² exact), and the two parts go through separate exps: one rounded
    /// exponent of size ~50 would otherwise cost 1e-5 relative error.
    @inline(__always)
    static func normalCDF(_ x: V) -> V {
        let ax = x.replacing(with: -x, where: x .< 0)
        let z = ax * 0.70710678118654752
        let t = 1 / (1 + 0.5 * z)
        var p = V(repeating: 0.17087277)
        p = p * t - 0.82215223
        p = p * t + 1.48851587
        p = p * t - 1.13520398
        p = p * t + 0.27886807
        p = p * t - 0.18628806
        p = p * t + 0.09678418
        p = p * t + 0.37409196
        p = p * t + 1.00002368
        p = p * t - 1.26551223
        let xh = unsafeBitCast(unsafeBitCast(ax, to: SIMD8<UInt32>.self) & 0xFFFF_F000, to: V.self)
        let xl = ax - xh
        let erfc = t * exp(-0.5 * (xh * xh)) * exp(p - 0.5 * (xl * (ax + xh)))
        // Past z ≈ 9.2 (|x| > 13) erfc is below the normal float range and exp's input clamp would show: flush to 0.
        let half = (0.5 * erfc).replacing(with: 0, where: z .> 9.2)
        return half.replacing(with: 1 - half, where: x .>= 0)
    }

    /// e^x for lanes known to be ≤ 0 or NaN (softmax after subtracting the row max), ≤ 2e-7 relative error:
    /// `exp` without the upper clamp (dead work there) and without the r⁷ term (worth ~1e-7 at |r| ≤ ln2/2).
    /// Attention spends a third of its time in this exp, so the two saved vector ops per lane matter.
    @inline(__always)
    static func expNonPositive(_ input: V) -> V {
        let (r, scale) = reduce(vmax(input, V(repeating: -87.33654)))
        return polynomialTail(V(repeating: 1.3981999507e-3), r) * scale
    }

    /// The first two passes of softmax: replaces the row by e^(x − max) and returns 1/Σ, so the caller can fold
    /// the normalisation into a smaller product (attention scales its output row instead of the score row).
    /// A fully masked row (max = −∞) becomes NaN, as in torch.
    @inline(__always)
    static func softmaxUnnormalised(_ p: UnsafeMutablePointer<Float>, _ n: Int) -> Float {
        let vectors = n / 8
        var m = -Float.infinity
        if vectors > 0 {
            // Four independent maxima so the loop isn't bound by one dependency chain.
            var m0 = V(repeating: -.infinity), m1 = m0, m2 = m0, m3 = m0
            var i = 0
            while i + 4 <= vectors {
                m0 = vmax(m0, load(p + i * 8)); m1 = vmax(m1, load(p + i * 8 + 8))
                m2 = vmax(m2, load(p + i * 8 + 16)); m3 = vmax(m3, load(p + i * 8 + 24))
                i += 4
            }
            while i < vectors { m0 = vmax(m0, load(p + i * 8)); i += 1 }
            m = vmax(vmax(m0, m1), vmax(m2, m3)).max()
        }
        for i in (vectors * 8)..<n where p[i] > m { m = p[i] }
        if m == -.infinity {
            for i in 0..<n { p[i] = .nan }
            return .nan
        }
        let vmax = V(repeating: m)
        var vs = V(repeating: 0)
        for i in 0..<vectors {
            let e = expNonPositive(load(p + i * 8) - vmax)
            store(e, p + i * 8)
            vs += e
        }
        var s = vs.sum()
        if vectors * 8 < n {
            var tail = V(repeating: -.infinity)
            for i in (vectors * 8)..<n { tail[i - vectors * 8] = p[i] - m }
            let e = expNonPositive(tail)
            for i in (vectors * 8)..<n { p[i] = e[i - vectors * 8]; s += e[i - vectors * 8] }
        }
        return 1 / s
    }

    /// Softmax of `n` floats in place: max, exp-and-sum, scale, eight lanes at a time.
    @inline(__always)
    static func softmax(_ p: UnsafeMutablePointer<Float>, _ n: Int) {
        let vectors = n / 8
        var m = -Float.infinity
        if vectors > 0 {
            var vm = V(repeating: -.infinity)
            for i in 0..<vectors { vm = vmax(vm, load(p + i * 8)) }
            m = vm.max()
        }
        for i in (vectors * 8)..<n where p[i] > m { m = p[i] }
        if m == -.infinity {  // fully masked row: torch yields NaN
            for i in 0..<n { p[i] = .nan }
            return
        }
        let vmax = V(repeating: m)
        var vs = V(repeating: 0)
        for i in 0..<vectors {
            let e = exp(load(p + i * 8) - vmax)
            store(e, p + i * 8)
            vs += e
        }
        var s = vs.sum()
        if vectors * 8 < n {
            var tail = V(repeating: -.infinity)
            for i in (vectors * 8)..<n { tail[i - vectors * 8] = p[i] - m }
            let e = exp(tail)
            for i in (vectors * 8)..<n { p[i] = e[i - vectors * 8]; s += e[i - vectors * 8] }
        }
        let inv = V(repeating: 1 / s)
        for i in 0..<vectors { store(load(p + i * 8) * inv, p + i * 8) }
        for i in (vectors * 8)..<n { p[i] *= inv[0] }
    }

    // `replacing(with:where:)` inlines to vector blends; the stdlib's pointwiseMin/Max stayed out-of-line calls
    // costing ~20% of attention time.
    @inline(__always)
    static func vmax(_ a: V, _ b: V) -> V {
        a.replacing(with: b, where: b .> a)
    }
    @inline(__always)
    static func vmin(_ a: V, _ b: V) -> V {
        a.replacing(with: b, where: b .< a)
    }

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    @inline(__always)
    static func load(_ p: UnsafeMutablePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    @inline(__always)
    static func store(_ v: V, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self) }
}
