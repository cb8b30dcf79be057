import Foundation

extension Kernels {
    /// Mean and biased variance of `n` floats, two-pass in double so large planes stay accurate.
    @inline(__always)
    static func moments(_ p: UnsafePointer<Float>, _ n: Int) -> (mean: Float, variance: Float) {
        var s = 0.0
        for i in 0..<n { s += Double(p[i]) }
        let m = s / Double(max(n, 1))
        var v = 0.0
        for i in 0..<n { let d = Double(p[i]) - m; v += d * d }
        return (Float(m), Float(v / Double(max(n, 1))))
    }
}

/// Layer normalisation over the last dim with optional elementwise affine.
public func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Float = 1e-5) -> Tensor {
    precondition(x.rank >= 1, "layerNorm: input must have rank ≥ 1")
    let d = x.shape[x.rank - 1]
    if let weight { precondition(weight.count == d, "layerNorm: weight has \(weight.count) values, last dim is \(d)") }
    if let bias { precondition(bias.count == d, "layerNorm: bias has \(bias.count) values, last dim is \(d)") }
    let (out, o) = Tensor.output(x.shape)
    let rows = d == 0 ? 0 : x.count / d
    let p = x.basePointer, w = weight?.basePointer, b = bias?.basePointer
    Kernels.parallelRanges(rows, minPerTask: max(1, 16_384 / max(d, 1))) { r in
        for row in r {
            let src = p + row * d, dst = o + row * d
            let (m, v) = Kernels.moments(src, d)
            let inv = 1 / (v + eps).squareRoot()
            for i in 0..<d {
                var y = (src[i] - m) * inv
                if let w { y *= w[i] }
                if let b { y += b[i] }
                dst[i] = y
            }
        }
    }
    return out
}

/// Group normalisation of `[N, C, ...]`: statistics per (sample, group of C/groups channels), affine per channel.
public func groupNorm(_ x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Float = 1e-5) -> Tensor {
    precondition(x.rank >= 2, "groupNorm: input must be [N, C, ...], got \(x.shape)")
    let n = x.shape[0], c = x.shape[1]
    precondition(groups >= 1 && c % groups == 0, "groupNorm: \(c) channels do not split into \(groups) groups")
    if let weight { precondition(weight.count == c, "groupNorm: weight has \(weight.count) values, expected \(c)") }
    if let bias { precondition(bias.count == c, "groupNorm: bias has \(bias.count) values, expected \(c)") }
    let inner = x.count / max(n * c, 1), cg = c / groups, span = cg * inner
    let (out, o) = Tensor.output(x.shape)
    let p = x.basePointer, w = weight?.basePointer, b = bias?.basePointer
    Kernels.parallelRanges(n * groups, minPerTask: 1) { r in
        for ng in r {
            let base = ng * span
            let (m, v) = Kernels.moments(p + base, span)
            let inv = 1 / (v + eps).squareRoot()
            for cc in 0..<cg {
                let ch = (ng % groups) * cg + cc
                let scale = inv * (w?[ch] ?? 1), shift = (b?[ch] ?? 0) - m * scale
                let src = p + base + cc * inner, dst = o + base + cc * inner
                for i in 0..<inner { dst[i] = src[i] * scale + shift }
            }
        }
    }
    return out
}

/// Inference-mode batch normalisation over channel dim 1 with running statistics.
public func batchNorm(_ x: Tensor, mean: Tensor, variance: Tensor, weight: Tensor?, bias: Tensor?, eps: Float = 1e-5) -> Tensor {
    precondition(x.rank >= 2, "batchNorm: input must be [N, C, ...], got \(x.shape)")
    let c = x.shape[1]
    precondition(mean.count == c && variance.count == c, "batchNorm: statistics must have \(c) values")
    if let weight { precondition(weight.count == c, "batchNorm: weight has \(weight.count) values, expected \(c)") }
    if let bias { precondition(bias.count == c, "batchNorm: bias has \(bias.count) values, expected \(c)") }
    let inner = x.count / max(x.shape[0] * c, 1)
    let pm = mean.basePointer, pv = variance.basePointer, w = weight?.basePointer, b = bias?.basePointer
    var scale = [Float](repeating: 0, count: c), shift = [Float](repeating: 0, count: c)
    for ch in 0..<c {
        let inv = 1 / (pv[ch] + eps).squareRoot()
        scale[ch] = inv * (w?[ch] ?? 1)
        shift[ch] = (b?[ch] ?? 0) - pm[ch] * scale[ch]
    }
    let (out, o) = Tensor.output(x.shape)
    let p = x.basePointer
    scale.withUnsafeBufferPointer { sc in
        shift.withUnsafeBufferPointer { sh in
            Kernels.parallelRanges(x.shape[0] * c, minPerTask: max(1, 32_768 / max(inner, 1))) { r in
                for plane in r {
                    let a = sc[plane % c], s = sh[plane % c]
                    let src = p + plane * inner, dst = o + plane * inner
                    for i in 0..<inner { dst[i] = src[i] * a + s }
                }
            }
        }
    }
    return out
}

extension Kernels {
    /// Numerically stable softmax of `n` floats in place (vectorised).
    @inline(__always)
    static func softmaxRow(_ p: UnsafeMutablePointer<Float>, _ n: Int) { FastMath.softmax(p, n) }
}

/// Softmax along `axis`.
public func softmax(_ x: Tensor, axis: Int = -1) -> Tensor {
    let ax = Kernels.axis(axis, rank: x.rank)
    let n = x.shape[ax]
    let inner = x.shape[(ax + 1)...].reduce(1, *)
    let outer = x.count / max(n * inner, 1)
    let (out, o) = Tensor.output(x.shape)
    if x.count == 0 { return out }
    o.update(from: x.basePointer, count: x.count)
    if inner == 1 {
        Kernels.parallelRanges(outer, minPerTask: max(1, 16_384 / max(n, 1))) { r in
            for row in r { Kernels.softmaxRow(o + row * n, n) }
        }
    } else {
        Kernels.parallelRanges(outer * inner, minPerTask: max(1, 16_384 / max(n, 1))) { r in
            var buf = [Float](repeating: 0, count: n)
            buf.withUnsafeMutableBufferPointer { bp in
                let t = bp.baseAddress!
                for idx in r {
                    let base = o + (idx / inner) * n * inner + idx % inner
                    for i in 0..<n { t[i] = base[i * inner] }
                    Kernels.softmaxRow(t, n)
                    for i in 0..<n { base[i * inner] = t[i] }
                }
            }
        }
    }
    return out
}
