import Foundation

extension Kernels {
    /// Sums over `axes`, accumulating in double; returns the reduced shape with kept (size-1) dims.
    static func reduceSum(_ x: Tensor, axes: [Int], op: StaticString) -> (Tensor, count: Int) {
        let resolved = Set(axes.map { Kernels.axis($0, rank: x.rank, op) })
        var kept = x.shape
        for a in resolved { kept[a] = 1 }
        let (out, o) = Tensor.output(kept)
        let reduced = resolved.reduce(1) { $0 * x.shape[$1] }
        if x.count == 0 { return (out, reduced) }
        // View the input as [outer, middle, inner] runs where possible by walking with an odometer; inner loops
        // run over the last dim with the output stride (0 when reduced).
        let outStrides = Kernels.broadcastStrides(kept, to: x.shape)
        let n = x.shape.last ?? 1, sn = outStrides.last ?? 0
        let rows = x.count / max(n, 1)
        let outer = Array(x.shape.dropLast()), outerStrides = Array(outStrides.dropLast())
        let acc = UnsafeMutablePointer<Double>.allocate(capacity: out.count)
        acc.initialize(repeating: 0, count: out.count)
        defer { acc.deallocate() }
        let p = x.basePointer
        for row in 0..<rows {
            var rem = row, off = 0
            for d in stride(from: outer.count - 1, through: 0, by: -1) {
                off += (rem % outer[d]) * outerStrides[d]; rem /= outer[d]
            }
            let src = p + row * n
            if sn == 0 {
                var s = 0.0
                for i in 0..<n { s += Double(src[i]) }
                acc[off] += s
            } else {
                for i in 0..<n { acc[off + i * sn] += Double(src[i]) }
            }
        }
        for i in 0..<out.count { o[i] = Float(acc[i]) }
        return (out, reduced)
    }
}

/// Sum over `axes` (negative axes allowed); `keepDims` keeps them as size 1.
public func sum(_ x: Tensor, axes: [Int], keepDims: Bool = false) -> Tensor {
    let (s, _) = Kernels.reduceSum(x, axes: axes, op: "sum")
    return keepDims ? s : s.reshaped(squeezed(x, axes: axes))
}

/// Mean over `axes` (negative axes allowed); `keepDims` keeps them as size 1.
public func mean(_ x: Tensor, axes: [Int], keepDims: Bool = false) -> Tensor {
    let (s, count) = Kernels.reduceSum(x, axes: axes, op: "mean")
    let m = s * (1 / Float(max(count, 1)))
    return keepDims ? m : m.reshaped(squeezed(x, axes: axes))
}

private func squeezed(_ x: Tensor, axes: [Int]) -> [Int] {
    let resolved = Set(axes.map { Kernels.axis($0, rank: x.rank) })
    return x.shape.enumerated().filter { !resolved.contains($0.offset) }.map(\.element)
}

/// Sinusoidal timestep embedding `[T, dim]` as diffusers' `get_timestep_embedding` computes it.
public func timestepEmbedding(_ timesteps: [Float], dim: Int, flipSinToCos: Bool = true, downscaleFreqShift: Float = 0,
                              maxPeriod: Float = 10000) -> Tensor {
    precondition(dim >= 2, "timestepEmbedding: dim must be ≥ 2")
    let half = dim / 2
    let logPeriod = Float(-Foundation.log(Double(maxPeriod)))
    let freqs = (0..<half).map { Foundation.exp(logPeriod * Float($0) / (Float(half) - downscaleFreqShift)) }
    var data = [Float](repeating: 0, count: timesteps.count * dim)
    for (t, step) in timesteps.enumerated() {
        for i in 0..<half {
            let arg = step * freqs[i]
            let s = Foundation.sin(arg), c = Foundation.cos(arg)
            data[t * dim + i] = flipSinToCos ? c : s
            data[t * dim + half + i] = flipSinToCos ? s : c
        }
    }
    return Tensor(shape: [timesteps.count, dim], data: data)
}
