import CLapseKernels
import Foundation

// MARK: - Kernels as types, so every loop is specialised (no closure call per element)

protocol BinaryKernel { static func apply(_ a: Float, _ b: Float) -> Float }
enum AddKernel: BinaryKernel { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a + b } }
enum SubKernel: BinaryKernel { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a - b } }
enum MulKernel: BinaryKernel { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a * b } }
enum DivKernel: BinaryKernel { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a / b } }

protocol UnaryKernel { static func apply(_ x: Float) -> Float }
enum ExpKernel: UnaryKernel { @inline(__always) static func apply(_ x: Float) -> Float { Foundation.exp(x) } }
enum SqrtKernel: UnaryKernel { @inline(__always) static func apply(_ x: Float) -> Float { x.squareRoot() } }
enum TanhKernel: UnaryKernel { @inline(__always) static func apply(_ x: Float) -> Float { Foundation.tanh(x) } }

extension Kernels {
    /// `dst[i] = act(src[i] + bias)` over `count` floats (`src` may equal `dst`), split across cores when large;
    /// a nil activation only adds the bias.
    static func activate(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ count: Int,
                         _ activation: Activation?, bias: Float = 0) {
        let t = table
        let (kind, parameter) = activation?.kernelKind ?? (Int32(LAPSE_ACT_NONE), 0)
        parallelRanges(count, minPerTask: 16_384) { r in
            t.pointee.activation(src + r.lowerBound, dst + r.lowerBound, r.count, bias, kind, parameter)
        }
    }

    /// Applies an activation in place; used by `activate` and by the fused conv/linear epilogues.
    static func activateInPlace(_ p: UnsafeMutablePointer<Float>, _ count: Int, _ activation: Activation) {
        activate(UnsafePointer(p), p, count, activation)
    }

    /// A fresh tensor holding `activation` applied to `x`.
    static func activated(_ x: Tensor, _ activation: Activation) -> Tensor {
        let (out, o) = Tensor.uninitializedOutput(x.shape)
        withExtendedLifetime(x) { activate(x.basePointer, o, x.count, activation) }
        return out
    }

    /// Copies `x` into a fresh tensor and applies `K`.
    static func unary<K: UnaryKernel>(_ x: Tensor, _: K.Type) -> Tensor {
        let (out, o) = Tensor.output(x.shape)
        let src = x.basePointer
        parallelRanges(x.count, minPerTask: 16_384) { r in
            for i in r { o[i] = K.apply(src[i]) }
        }
        return out
    }

    /// Broadcasting binary op. Dimensions are coalesced so the inner loop runs over the longest run with fixed
    /// strides; common cases (same shape, scalar operand) become a single flat loop.
    static func binary<K: BinaryKernel>(_ a: Tensor, _ b: Tensor, _: K.Type) -> Tensor {
        let shape = broadcastShape(a.shape, b.shape)
        let (out, o) = Tensor.output(shape)
        let total = out.count
        if total == 0 { return out }
        let pa = a.basePointer, pb = b.basePointer
        if a.shape == b.shape {
            parallelRanges(total, minPerTask: 32_768) { r in for i in r { o[i] = K.apply(pa[i], pb[i]) } }
            return out
        }
        if b.count == 1 && a.count == total {
            let s = pb[0]
            parallelRanges(total, minPerTask: 32_768) { r in for i in r { o[i] = K.apply(pa[i], s) } }
            return out
        }
        if a.count == 1 && b.count == total {
            let s = pa[0]
            parallelRanges(total, minPerTask: 32_768) { r in for i in r { o[i] = K.apply(s, pb[i]) } }
            return out
        }
        // Coalesce adjacent dims whose strides are compatible for both operands.
        let sa = broadcastStrides(a.shape, to: shape), sb = broadcastStrides(b.shape, to: shape)
        var dims: [Int] = [], da: [Int] = [], db: [Int] = []
        for i in 0..<shape.count where shape[i] != 1 {
            if let last = dims.last, da.last! == sa[i] * shape[i], db.last! == sb[i] * shape[i] {
                dims[dims.count - 1] = last * shape[i]
                da[da.count - 1] = sa[i]; db[db.count - 1] = sb[i]
            } else {
                dims.append(shape[i]); da.append(sa[i]); db.append(sb[i])
            }
        }
        if dims.isEmpty { o[0] = K.apply(pa[0], pb[0]); return out }
        let n = dims.last!, ia = da.last!, ib = db.last!
        let rows = total / n
        let outerDims = Array(dims.dropLast()), outerA = Array(da.dropLast()), outerB = Array(db.dropLast())
        parallelRanges(rows, minPerTask: max(1, 32_768 / n)) { r in
            for row in r {
                var rem = row, offA = 0, offB = 0
                for d in stride(from: outerDims.count - 1, through: 0, by: -1) {
                    let idx = rem % outerDims[d]; rem /= outerDims[d]
                    offA += idx * outerA[d]; offB += idx * outerB[d]
                }
                let dst = o + row * n, x = pa + offA, y = pb + offB
                if ia == 1 && ib == 1 {
                    for i in 0..<n { dst[i] = K.apply(x[i], y[i]) }
                } else if ia == 1 && ib == 0 {
                    let s = y[0]; for i in 0..<n { dst[i] = K.apply(x[i], s) }
                } else if ia == 0 && ib == 1 {
                    let s = x[0]; for i in 0..<n { dst[i] = K.apply(s, y[i]) }
                } else {
                    for i in 0..<n { dst[i] = K.apply(x[i * ia], y[i * ib]) }
                }
            }
        }
        return out
    }

    /// Tensor–scalar op; `scalarFirst` selects `s op x` for the non-commutative kernels.
    static func scalar<K: BinaryKernel>(_ x: Tensor, _ s: Float, scalarFirst: Bool, _: K.Type) -> Tensor {
        let (out, o) = Tensor.output(x.shape)
        let p = x.basePointer
        parallelRanges(x.count, minPerTask: 32_768) { r in
            if scalarFirst { for i in r { o[i] = K.apply(s, p[i]) } } else { for i in r { o[i] = K.apply(p[i], s) } }
        }
        return out
    }
}

// MARK: - Public elementwise API

/// Elementwise sum with NumPy/PyTorch broadcasting.
public func + (a: Tensor, b: Tensor) -> Tensor { Kernels.binary(a, b, AddKernel.self) }
/// Elementwise difference with broadcasting.
public func - (a: Tensor, b: Tensor) -> Tensor { Kernels.binary(a, b, SubKernel.self) }
/// Elementwise product with broadcasting.
public func * (a: Tensor, b: Tensor) -> Tensor { Kernels.binary(a, b, MulKernel.self) }
/// Elementwise quotient with broadcasting.
public func / (a: Tensor, b: Tensor) -> Tensor { Kernels.binary(a, b, DivKernel.self) }

/// Adds a scalar to every element.
public func + (a: Tensor, b: Float) -> Tensor { Kernels.scalar(a, b, scalarFirst: false, AddKernel.self) }
/// Subtracts a scalar from every element.
public func - (a: Tensor, b: Float) -> Tensor { Kernels.scalar(a, b, scalarFirst: false, SubKernel.self) }
/// Multiplies every element by a scalar.
public func * (a: Tensor, b: Float) -> Tensor { Kernels.scalar(a, b, scalarFirst: false, MulKernel.self) }
/// Divides every element by a scalar.
public func / (a: Tensor, b: Float) -> Tensor { Kernels.scalar(a, b, scalarFirst: false, DivKernel.self) }
/// Adds every element to a scalar.
public func + (a: Float, b: Tensor) -> Tensor { Kernels.scalar(b, a, scalarFirst: true, AddKernel.self) }
/// Subtracts every element from a scalar.
public func - (a: Float, b: Tensor) -> Tensor { Kernels.scalar(b, a, scalarFirst: true, SubKernel.self) }
/// Multiplies a scalar by every element.
public func * (a: Float, b: Tensor) -> Tensor { Kernels.scalar(b, a, scalarFirst: true, MulKernel.self) }
/// Divides a scalar by every element.
public func / (a: Float, b: Tensor) -> Tensor { Kernels.scalar(b, a, scalarFirst: true, DivKernel.self) }

/// Elementwise natural exponential.
public func exp(_ x: Tensor) -> Tensor { Kernels.unary(x, ExpKernel.self) }
/// Elementwise square root.
public func sqrt(_ x: Tensor) -> Tensor { Kernels.unary(x, SqrtKernel.self) }
/// Elementwise hyperbolic tangent.
public func tanh(_ x: Tensor) -> Tensor { Kernels.unary(x, TanhKernel.self) }

/// Clamps every element to `[min, max]`; a `nil` bound is open.
public func clamp(_ x: Tensor, min lower: Float?, max upper: Float?) -> Tensor {
    let (out, o) = Tensor.output(x.shape)
    let p = x.basePointer
    let lo = lower ?? -Float.infinity, hi = upper ?? Float.infinity
    Kernels.parallelRanges(x.count, minPerTask: 32_768) { r in
        // Written as comparisons (not Swift.min/max) so NaN propagates like torch.clamp.
        for i in r { let v = p[i]; o[i] = v < lo ? lo : (v > hi ? hi : v) }
    }
    return out
}

// MARK: - Activations

/// Applies one of the fusable activations.
public func activate(_ x: Tensor, _ activation: Activation) -> Tensor {
    switch activation {
    case .relu: return relu(x)
    case .leakyReLU(let slope): return leakyReLU(x, slope: slope)
    case .silu: return silu(x)
    case .gelu: return gelu(x)
    case .geluTanh: return gelu(x, approximateTanh: true)
    case .quickGELU: return quickGELU(x)
    case .sigmoid: return sigmoid(x)
    }
}

/// max(x, 0).
public func relu(_ x: Tensor) -> Tensor { Kernels.activated(x, .relu) }

/// x for x ≥ 0, `slope`·x otherwise.
public func leakyReLU(_ x: Tensor, slope: Float) -> Tensor { Kernels.activated(x, .leakyReLU(slope)) }

/// Parametric ReLU with a learned slope per channel (dim 1) or one shared slope (`weight` of one element).
public func prelu(_ x: Tensor, weight: Tensor) -> Tensor {
    let (out, o) = Tensor.uninitializedOutput(x.shape)
    let p = x.basePointer, w = weight.basePointer, t = Kernels.table
    let channels = x.rank >= 2 ? x.shape[1] : 1
    precondition(weight.count == 1 || weight.count == channels,
                 "prelu: weight has \(weight.count) slopes but input \(x.shape) has \(channels) channels")
    let inner = x.rank >= 2 ? x.shape[2...].reduce(1, *) : x.count
    let planes = x.count / max(inner, 1)
    Kernels.parallelRanges(planes, minPerTask: max(1, 32_768 / max(inner, 1))) { r in
        for plane in r {
            let slope = weight.count == 1 ? w[0] : w[plane % channels]
            t.pointee.activation(p + plane * inner, o + plane * inner, inner, 0, Int32(LAPSE_ACT_LEAKY_RELU), slope)
        }
    }
    return out
}

/// x·sigmoid(x).
public func silu(_ x: Tensor) -> Tensor { Kernels.activated(x, .silu) }

/// Gaussian error linear unit: exact (erf) or the tanh approximation.
public func gelu(_ x: Tensor, approximateTanh: Bool = false) -> Tensor {
    Kernels.activated(x, approximateTanh ? .geluTanh : .gelu)
}

/// x·sigmoid(1.702·x), the CLIP activation.
public func quickGELU(_ x: Tensor) -> Tensor { Kernels.activated(x, .quickGELU) }

/// 1 / (1 + e^-x).
public func sigmoid(_ x: Tensor) -> Tensor { Kernels.activated(x, .sigmoid) }
