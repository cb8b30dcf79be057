import CLapseKernels
import Foundation

extension Kernels {
    /// Mean and biased variance of `n` floats in one vector pass (the level's `moments` kernel).
    ///
    /// Sums are taken of x − x₀ (x₀ the first element, close to the mean for real activations), so E[d²] − E[d]²
    /// doesn't cancel; float lanes accumulate blocks of 512 elements, which are then added in double so large planes
    /// keep their accuracy. The mean comes back as `shift + delta` (x₀ plus a small correction) because one float
    /// cannot hold it to better than half an ulp of |mean|, which with |mean| ≫ spread is a visible error after
    /// normalising; the normalising kernels subtract x₀ first, then δ, then scale.
    @inline(__always)
    static func moments(_ t: UnsafePointer<LapseKernelTable>, _ p: UnsafePointer<Float>, _ n: Int)
        -> (shift: Float, delta: Float, variance: Float) {
        var shift: Float = 0, delta: Float = 0, variance: Float = 0
        t.pointee.moments(p, n, &shift, &delta, &variance)
        return (shift, delta, variance)
    }
}

/// Layer normalisation over the last dim with optional elementwise affine.
public func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Float = 1e-5) -> Tensor {
    precondition(x.rank >= 1, "layerNorm: input must have rank ≥ 1")
    let d = x.shape[x.rank - 1]
    if let weight { precondition(weight.count == d, "layerNorm: weight has \(weight.count) values, last dim is \(d)") }
    if let bias { precondition(bias.count == d, "layerNorm: bias has \(bias.count) values, last dim is \(d)") }
    let (out, o) = Tensor.uninitializedOutput(x.shape)
    let rows = d == 0 ? 0 : x.count / d
    let p = x.basePointer, w = weight?.basePointer, b = bias?.basePointer, t = Kernels.table
    Kernels.parallelRanges(rows, minPerTask: max(1, 16_384 / max(d, 1))) { r in
        for row in r {
            let src = p + row * d, dst = o + row * d
            let (x0, dm, v) = Kernels.moments(t, src, d)
            t.pointee.normalize(src, dst, d, x0, dm, 1 / (v + eps).squareRoot(), w, b)
        }
    }
    return out
}

/// Group normalisation of `[N, C, ...]`: statistics per (sample, group of C/groups channels), affine per channel,
/// then `activation` (if any) applied in place, sparing the extra full-size tensor of a separate activation call.
public func groupNorm(_ x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Float = 1e-5,
                      activation: Activation? = nil) -> Tensor {
    precondition(x.rank >= 2, "groupNorm: input must be [N, C, ...], got \(x.shape)")
    let n = x.shape[0], c = x.shape[1]
    precondition(groups >= 1 && c % groups == 0, "groupNorm: \(c) channels do not split into \(groups) groups")
    if let weight { precondition(weight.count == c, "groupNorm: weight has \(weight.count) values, expected \(c)") }
    if let bias { precondition(bias.count == c, "groupNorm: bias has \(bias.count) values, expected \(c)") }
    let inner = x.count / max(n * c, 1), cg = c / groups, span = cg * inner
    let (out, o) = Tensor.uninitializedOutput(x.shape)
    let p = x.basePointer, w = weight?.basePointer, b = bias?.basePointer, t = Kernels.table
    Kernels.parallelRanges(n * groups, minPerTask: 1) { r in
        for ng in r {
            let base = ng * span
            let (x0, dm, v) = Kernels.moments(t, p + base, span)
            let inv = 1 / (v + eps).squareRoot()
            for cc in 0..<cg {
                let ch = (ng % groups) * cg + cc
                let scale = inv * (w?[ch] ?? 1), shift = b?[ch] ?? 0
                let src = p + base + cc * inner, dst = o + base + cc * inner
                t.pointee.affine(src, dst, inner, x0, dm, scale, shift)
            }
        }
    }
    if let activation { Kernels.activateInPlace(o, out.count, activation) }
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
    let (out, o) = Tensor.uninitializedOutput(x.shape)
    let p = x.basePointer, t = Kernels.table
    scale.withUnsafeBufferPointer { sc in
        shift.withUnsafeBufferPointer { sh in
            Kernels.parallelRanges(x.shape[0] * c, minPerTask: max(1, 32_768 / max(inner, 1))) { r in
                for plane in r {
                    let a = sc[plane % c], s = sh[plane % c]
                    let src = p + plane * inner, dst = o + plane * inner
                    t.pointee.affine(src, dst, inner, 0, 0, a, s)
                }
            }
        }
    }
    return out
}

/// Softmax along `axis`.
public func softmax(_ x: Tensor, axis: Int = -1) -> Tensor {
    let ax = Kernels.axis(axis, rank: x.rank)
    let n = x.shape[ax]
    let inner = x.shape[(ax + 1)...].reduce(1, *)
    let outer = x.count / max(n * inner, 1)
    let (out, o) = Tensor.uninitializedOutput(x.shape)
    if x.count == 0 { return out }
    let src = x.basePointer, t = Kernels.table
    if inner == 1 {
        // Copy and normalise each row while it is in cache, on all cores.
        Kernels.parallelRanges(outer, minPerTask: max(1, 16_384 / max(n, 1))) { r in
            for row in r {
                (o + row * n).update(from: src + row * n, count: n)
                t.pointee.softmax(o + row * n, n)
            }
        }
    } else {
        o.update(from: src, count: x.count)
        Kernels.parallelRanges(outer * inner, minPerTask: max(1, 16_384 / max(n, 1))) { r in
            var buf = [Float](repeating: 0, count: n)
            buf.withUnsafeMutableBufferPointer { bp in
                let row = bp.baseAddress!
                for idx in r {
                    let base = o + (idx / inner) * n * inner + idx % inner
                    for i in 0..<n { row[i] = base[i * inner] }
                    t.pointee.softmax(row, n)
                    for i in 0..<n { base[i * inner] = row[i] }
                }
            }
        }
    }
    return out
}
