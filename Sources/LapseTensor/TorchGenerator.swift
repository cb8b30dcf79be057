import Foundation

/// A random generator that reproduces PyTorch's CPU generator bit for bit for float32 `randn` and `rand`, so
/// pipelines seeded like their Python originals start from the same noise.
///
/// Torch draws from a 32-bit Mersenne Twister (mt19937 seeded with the low 32 bits of the seed):
/// - `rand`: each value is the low 24 bits of one 32-bit draw, times 2⁻²⁴.
/// - `randn` with ≥ 16 elements: the whole tensor is first filled with such uniforms, then Box–Muller runs in float
///   over blocks of 16 (pairing element j with j+8); a tail that is not a multiple of 16 redraws 16 fresh uniforms
///   into the last 16 slots and transforms them again.
/// - `randn` with < 16 elements: double-precision Box–Muller from 53-bit uniforms (two 32-bit draws each), whose
///   second (sine) value is cached in the generator and consumed by the next small draw.
///
/// The ≥ 16 path follows the vectorised kernel torch runs on x86-64 (verified on this project's AVX2/AVX-512 machines);
/// torch on other architectures uses libm log/sin/cos there and can differ in the last bits.
public final class TorchGenerator {
    private var state = [UInt32](repeating: 0, count: 624)
    private var index = 624
    private var cachedNormal: Double?

    /// A generator in the state `torch.manual_seed(seed)` leaves the default CPU generator in.
    public init(seed: UInt64) { manualSeed(seed) }

    /// Re-seeds like `torch.manual_seed`, dropping any cached normal sample.
    public func manualSeed(_ seed: UInt64) {
        state[0] = UInt32(truncatingIfNeeded: seed)
        for i in 1..<624 {
            let prev = state[i - 1]
            state[i] = 1_812_433_253 &* (prev ^ (prev >> 30)) &+ UInt32(i)
        }
        index = 624
        cachedNormal = nil
    }

    /// The generator's whole state as 626 words (624 Mersenne Twister words, the position, and the cached normal's
    /// bits or 0 with a flag in the position's top bit), so long work can save it and resume bit for bit.
    public var snapshot: [UInt64] {
        var words = state.map(UInt64.init)
        words.append(UInt64(index) | (cachedNormal == nil ? 0 : 1 << 63))
        words.append(cachedNormal?.bitPattern ?? 0)
        return words
    }

    /// A generator continuing exactly where the one that made `snapshot` was; `nil` for words that no generator
    /// could have made.
    public init?(snapshot words: [UInt64]) {
        guard words.count == 626, words[..<624].allSatisfy({ $0 <= UInt64(UInt32.max) }) else { return nil }
        let position = words[624] & ~(1 << 63)
        guard position <= 624 else { return nil }
        state = words[..<624].map { UInt32($0) }
        index = Int(position)
        cachedNormal = words[624] >> 63 == 1 ? Double(bitPattern: words[625]) : nil
    }

    /// Next 32-bit Mersenne Twister output.
    @inline(__always)
    private func next32() -> UInt32 {
        if index >= 624 { twist() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9d2c_5680
        y ^= (y << 15) & 0xefc6_0000
        y ^= y >> 18
        return y
    }

    private func twist() {
        for i in 0..<624 {
            let y = (state[i] & 0x8000_0000) | (state[(i + 1) % 624] & 0x7fff_ffff)
            var v = state[(i + 397) % 624] ^ (y >> 1)
            if y & 1 != 0 { v ^= 0x9908_b0df }
            state[i] = v
        }
        index = 0
    }

    /// Uniform float in [0, 1) from the low 24 bits of one draw.
    @inline(__always)
    private func uniformFloat() -> Float { Float(next32() & 0xFF_FFFF) * (1.0 / 16_777_216.0) }

    /// Uniform double in [0, 1) from the low 53 bits of a 64-bit value (first draw is the high word).
    @inline(__always)
    private func uniformDouble() -> Double {
        let hi = UInt64(next32()), lo = UInt64(next32())
        return Double(((hi << 32) | lo) & ((1 << 53) - 1)) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// One double-precision standard normal, using and refilling the Box–Muller cache.
    private func normalDouble() -> Double {
        if let cached = cachedNormal { cachedNormal = nil; return cached }
        let u1 = uniformDouble(), u2 = uniformDouble()
        let r = Foundation.sqrt(-2 * Foundation.log1p(-u2))
        let theta = 2 * Double.pi * u1
        cachedNormal = r * Foundation.sin(theta)
        return r * Foundation.cos(theta)
    }

    /// Box–Muller over 16 uniforms in place, pairing j with j+8, exactly as torch's x86 CPU kernel does it: float
    /// arithmetic with Cephes-style polynomial log and sincos (`CephesFloat`), not the C library's.
    @inline(__always)
    private static func boxMuller16(_ d: UnsafeMutablePointer<Float>) {
        let twoPi = Float(2.0 * Double.pi)
        for j in 0..<8 {
            let u1 = 1 - d[j], u2 = d[j + 8]
            let radius = (-2 * CephesFloat.log(u1)).squareRoot()
            let (s, c) = CephesFloat.sincos(twoPi * u2)
            d[j] = radius * c
            d[j + 8] = radius * s
        }
    }

    /// Standard normal samples, identical to `torch.manual_seed(s); torch.randn(shape)` on CPU in float32.
    public func randn(_ shape: [Int]) -> Tensor {
        var t = Tensor(zeros: shape)
        let n = t.count
        t.withUnsafeMutableBufferPointer { buf in
            guard let d = buf.baseAddress, n > 0 else { return }
            if n < 16 {
                for i in 0..<n { d[i] = Float(normalDouble()) }
                return
            }
            for i in 0..<n { d[i] = uniformFloat() }
            var i = 0
            while i + 16 <= n { Self.boxMuller16(d + i); i += 16 }
            if n % 16 != 0 {
                let tail = d + n - 16
                for j in 0..<16 { tail[j] = uniformFloat() }
                Self.boxMuller16(tail)
            }
        }
        return t
    }

    /// Uniform samples in [0, 1), identical to `torch.rand(shape)` on CPU in float32.
    public func rand(_ shape: [Int]) -> Tensor {
        var t = Tensor(zeros: shape)
        t.withUnsafeMutableBufferPointer { buf in
            for i in 0..<buf.count { buf[i] = uniformFloat() }
        }
        return t
    }
}

/// Float log and sincos evaluated operation by operation like the Cephes-derived polynomials in torch's AVX kernel
/// (range reduction to a mantissa in [√½, √2) / octants of π/4, then fixed minimax polynomials), so `randn` reproduces
/// torch's rounding exactly. Valid for the inputs Box–Muller gives it: log on (0, 1], sincos on [0, 2π).
enum CephesFloat {
    // The compiler that built torch contracts each multiply feeding a single add into a fused multiply-add, so the
    // same pairs are fused here (`addingProduct`); plain `*` steps are the products it leaves unfused.
    static func log(_ input: Float) -> Float {
        if input <= 0 { return .nan }
        let v = Swift.max(input, Float(bitPattern: 0x0080_0000))
        let bits = v.bitPattern
        var e = Float(Int32(bitPattern: bits >> 23) - 127) + 1
        let m = Float(bitPattern: (bits & ~0x7f80_0000) | Float(0.5).bitPattern)  // mantissa in [0.5, 1)
        var x = m - 1
        if m < 0.707106781186547524 {
            e -= 1
            x = x + m
        }
        let z = x * x
        var y: Float = 7.0376836292e-2
        y = Float(-1.1514610310e-1).addingProduct(y, x)
        y = Float(1.1676998740e-1).addingProduct(y, x)
        y = Float(-1.2420140846e-1).addingProduct(y, x)
        y = Float(1.4249322787e-1).addingProduct(y, x)
        y = Float(-1.6668057665e-1).addingProduct(y, x)
        y = Float(2.0000714765e-1).addingProduct(y, x)
        y = Float(-2.4999993993e-1).addingProduct(y, x)
        y = Float(3.3333331174e-1).addingProduct(y, x)
        y = y * x
        y = y * z
        y = y.addingProduct(e, -2.12194440e-4)
        y = y.addingProduct(-z, 0.5)
        return (x + y).addingProduct(e, 0.693359375)
    }

    static func sincos(_ input: Float) -> (sin: Float, cos: Float) {
        var x = Swift.abs(input)
        var signSin = input.sign == .minus
        var j = Int32(x * 1.27323954473516)  // octant of x / (π/4), truncated
        j = (j &+ 1) & ~1
        let y = Float(j)
        if j & 4 != 0 { signSin.toggle() }
        let cosPoly = j & 2 == 0
        // Extended-precision reduction x - y·π/4 with π/4 split into three parts.
        x = x.addingProduct(y, -0.78515625)
        x = x.addingProduct(y, -2.4187564849853515625e-4)
        x = x.addingProduct(y, -3.77489497744594108e-8)
        let signCos = (~(j &- 2)) & 4 != 0
        let z = x * x
        var c: Float = 2.443315711809948e-5
        c = Float(-1.388731625493765e-3).addingProduct(c, z)
        c = Float(4.166664568298827e-2).addingProduct(c, z)
        c = c * z; c = c * z
        c = c.addingProduct(-z, 0.5)
        c = c + 1
        var s: Float = -1.9515295891e-4
        s = Float(8.3321608736e-3).addingProduct(s, z)
        s = Float(-1.6666654611e-1).addingProduct(s, z)
        s = s * z
        s = x.addingProduct(s, x)
        let sinValue = cosPoly ? s : c, cosValue = cosPoly ? c : s
        return (signSin ? -sinValue : sinValue, signCos ? -cosValue : cosValue)
    }
}
