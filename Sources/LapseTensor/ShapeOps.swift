import Foundation

/// Rearranges `[N, C·r², H, W]` into `[N, C, H·r, W·r]` (sub-pixel convolution output).
public func pixelShuffle(_ x: Tensor, factor r: Int) -> Tensor {
    precondition(x.rank == 4 && r >= 1 && x.shape[1] % (r * r) == 0,
                 "pixelShuffle: input \(x.shape) channels not divisible by \(r)²")
    let n = x.shape[0], c = x.shape[1] / (r * r), h = x.shape[2], w = x.shape[3]
    let (out, o) = Tensor.output([n, c, h * r, w * r])
    let p = x.basePointer
    Kernels.parallelRanges(n * c, minPerTask: 1) { range in
        for nc in range {
            for i in 0..<r {
                for j in 0..<r {
                    let src = p + (nc * r * r + i * r + j) * h * w
                    for y in 0..<h {
                        let dst = o + (nc * h * r + y * r + i) * w * r + j
                        let line = src + y * w
                        for xx in 0..<w { dst[xx * r] = line[xx] }
                    }
                }
            }
        }
    }
    return out
}

/// Inverse of `pixelShuffle`: `[N, C, H·r, W·r]` → `[N, C·r², H, W]`.
public func pixelUnshuffle(_ x: Tensor, factor r: Int) -> Tensor {
    precondition(x.rank == 4 && r >= 1 && x.shape[2] % r == 0 && x.shape[3] % r == 0,
                 "pixelUnshuffle: spatial size of \(x.shape) not divisible by \(r)")
    let n = x.shape[0], c = x.shape[1], h = x.shape[2] / r, w = x.shape[3] / r
    let (out, o) = Tensor.output([n, c * r * r, h, w])
    let p = x.basePointer
    Kernels.parallelRanges(n * c, minPerTask: 1) { range in
        for nc in range {
            for i in 0..<r {
                for j in 0..<r {
                    let dst = o + (nc * r * r + i * r + j) * h * w
                    for y in 0..<h {
                        let src = p + (nc * h * r + y * r + i) * w * r + j
                        let line = dst + y * w
                        for xx in 0..<w { line[xx] = src[xx * r] }
                    }
                }
            }
        }
    }
    return out
}

extension Kernels {
    /// Source index for padded position `i` (may be outside `0..<n`), or nil for constant padding.
    @inline(__always)
    static func padSource(_ i: Int, _ n: Int, _ mode: PaddingMode) -> Int? {
        if i >= 0 && i < n { return i }
        switch mode {
        case .zeros: return nil
        case .replicate: return i < 0 ? 0 : n - 1
        case .reflect:
            if n == 1 { return 0 }
            // Mirror without repeating the edge; loop so pads wider than n-1 still resolve (torch rejects those).
            var j = i
            let period = 2 * (n - 1)
            j = ((j % period) + period) % period
            return j < n ? j : period - j
        }
    }
}

/// Pads the last two dims (`left`/`right` on width, `top`/`bottom` on height) like `F.pad`.
public func pad(_ x: Tensor, left: Int, right: Int, top: Int, bottom: Int, mode: PaddingMode, value: Float = 0) -> Tensor {
    precondition(x.rank >= 2, "pad: input must have rank ≥ 2, got \(x.shape)")
    precondition(left >= 0 && right >= 0 && top >= 0 && bottom >= 0, "pad: negative padding")
    let h = x.shape[x.rank - 2], w = x.shape[x.rank - 1]
    if mode == .reflect {
        precondition(left < w && right < w && top < h && bottom < h,
                     "pad: reflect padding (\(left), \(right), \(top), \(bottom)) must be smaller than input size \(h)×\(w)")
    }
    if mode == .replicate { precondition(h > 0 && w > 0, "pad: replicate padding of an empty tensor") }
    let ho = h + top + bottom, wo = w + left + right
    let planes = x.count / max(h * w, 1)
    let (out, o) = Tensor.output(Array(x.shape.dropLast(2)) + [ho, wo])
    let p = x.basePointer
    var columns = [Int](repeating: -1, count: wo)
    for j in 0..<wo { columns[j] = Kernels.padSource(j - left, w, mode) ?? -1 }
    columns.withUnsafeBufferPointer { cols in
        Kernels.parallelRanges(planes, minPerTask: max(1, 16_384 / max(ho * wo, 1))) { r in
            for plane in r {
                let src = p + plane * h * w, dst = o + plane * ho * wo
                for y in 0..<ho {
                    let row = dst + y * wo
                    guard let sy = Kernels.padSource(y - top, h, mode) else {
                        row.update(repeating: value, count: wo); continue
                    }
                    let line = src + sy * w
                    for j in 0..<wo { let s = cols[j]; row[j] = s >= 0 ? line[s] : value }
                }
            }
        }
    }
    return out
}

/// Circularly shifts elements along each of `axes` by the matching `shifts` (like `torch.roll`).
public func roll(_ x: Tensor, shifts: [Int], axes: [Int]) -> Tensor {
    precondition(shifts.count == axes.count, "roll: \(shifts.count) shifts for \(axes.count) axes")
    var current = x
    for (shift, axis) in zip(shifts, axes) {
        let ax = Kernels.axis(axis, rank: x.rank)
        let n = current.shape[ax]
        if n == 0 { continue }
        let s = ((shift % n) + n) % n
        if s == 0 { continue }
        let inner = current.shape[(ax + 1)...].reduce(1, *)
        let outer = current.count / max(n * inner, 1)
        let (out, o) = Tensor.output(current.shape)
        let p = current.basePointer
        let block = n * inner
        for b in 0..<outer {
            // out[i + s] = in[i]: two contiguous copies per outer block.
            (o + b * block + s * inner).update(from: p + b * block, count: (n - s) * inner)
            (o + b * block).update(from: p + b * block + (n - s) * inner, count: s * inner)
        }
        current = out
    }
    if current.storage === x.storage { return Tensor(shape: x.shape, data: x.scalars) }
    return current
}

/// Concatenates tensors along `axis`; all other dims must agree.
public func concat(_ xs: [Tensor], axis: Int) -> Tensor {
    precondition(!xs.isEmpty, "concat: no tensors")
    let rank = xs[0].rank
    let ax = Kernels.axis(axis, rank: rank)
    var shape = xs[0].shape
    shape[ax] = 0
    for t in xs {
        precondition(t.rank == rank, "concat: rank mismatch \(t.shape) vs \(xs[0].shape)")
        for d in 0..<rank where d != ax {
            precondition(t.shape[d] == xs[0].shape[d], "concat: shape \(t.shape) differs from \(xs[0].shape) off axis \(ax)")
        }
        shape[ax] += t.shape[ax]
    }
    let inner = shape[(ax + 1)...].reduce(1, *)
    let outer = shape[..<ax].reduce(1, *)
    let (out, o) = Tensor.output(shape)
    let rowOut = shape[ax] * inner
    var start = 0
    for t in xs {
        let len = t.shape[ax] * inner
        let p = t.basePointer
        if len > 0 {
            for b in 0..<outer { (o + b * rowOut + start).update(from: p + b * len, count: len) }
        }
        start += len
    }
    return out
}

/// Splits along `axis` into consecutive pieces of the given sizes (which must sum to the dim).
public func split(_ x: Tensor, sizes: [Int], axis: Int) -> [Tensor] {
    let ax = Kernels.axis(axis, rank: x.rank)
    precondition(sizes.reduce(0, +) == x.shape[ax] && sizes.allSatisfy { $0 >= 0 },
                 "split: sizes \(sizes) do not sum to dim \(ax) of \(x.shape)")
    var start = 0
    return sizes.map { size in
        defer { start += size }
        return slice(x, axis: ax, start: start, end: start + size)
    }
}

/// Splits along `axis` into `count` pieces of ceil(dim/count) (the last may be smaller; fewer when dim is small),
/// as `torch.chunk` does.
public func chunk(_ x: Tensor, _ count: Int, axis: Int) -> [Tensor] {
    precondition(count >= 1, "chunk: count must be ≥ 1")
    let ax = Kernels.axis(axis, rank: x.rank)
    let n = x.shape[ax]
    let size = (n + count - 1) / count
    if size == 0 { return [slice(x, axis: ax, start: 0, end: 0)] }
    var sizes: [Int] = []
    var start = 0
    while start < n { sizes.append(min(size, n - start)); start += size }
    return split(x, sizes: sizes, axis: ax)
}

/// Materialises `x` with its dims reordered: output dim i is input dim `axes[i]`.
public func permute(_ x: Tensor, _ axes: [Int]) -> Tensor {
    precondition(axes.count == x.rank, "permute: \(axes) for rank \(x.rank)")
    let resolved = axes.map { Kernels.axis($0, rank: x.rank) }
    precondition(Set(resolved).count == x.rank, "permute: \(axes) is not a permutation")
    let inStrides = Kernels.strides(x.shape)
    let shape = resolved.map { x.shape[$0] }
    let strides = resolved.map { inStrides[$0] }
    let (out, o) = Tensor.output(shape)
    if out.count == 0 { return out }
    if resolved == Array(0..<x.rank) { o.update(from: x.basePointer, count: x.count); return out }
    let p = x.basePointer
    let n = shape.last!, sn = strides.last!
    let rows = out.count / n
    let outer = Array(shape.dropLast()), outerStrides = Array(strides.dropLast())
    Kernels.parallelRanges(rows, minPerTask: max(1, 32_768 / n)) { r in
        for row in r {
            var rem = row, off = 0
            for d in stride(from: outer.count - 1, through: 0, by: -1) {
                off += (rem % outer[d]) * outerStrides[d]; rem /= outer[d]
            }
            let dst = o + row * n, src = p + off
            if sn == 1 { dst.update(from: src, count: n) } else { for i in 0..<n { dst[i] = src[i * sn] } }
        }
    }
    return out
}

/// Swaps two dims (materialised copy).
public func transpose(_ x: Tensor, _ a: Int, _ b: Int) -> Tensor {
    var axes = Array(0..<x.rank)
    axes.swapAt(Kernels.axis(a, rank: x.rank), Kernels.axis(b, rank: x.rank))
    return permute(x, axes)
}

/// Elements `start..<end` by `step` along `axis` (negative indices count from the end; bounds clamp like Python).
public func slice(_ x: Tensor, axis: Int, start: Int, end: Int, step: Int = 1) -> Tensor {
    precondition(step >= 1, "slice: step must be ≥ 1")
    let ax = Kernels.axis(axis, rank: x.rank)
    let n = x.shape[ax]
    func clampIndex(_ i: Int) -> Int { let j = i < 0 ? i + n : i; return Swift.min(Swift.max(j, 0), n) }
    let lo = clampIndex(start), hi = Swift.max(lo, clampIndex(end))
    let len = (hi - lo + step - 1) / step
    var shape = x.shape
    shape[ax] = len
    let inner = x.shape[(ax + 1)...].reduce(1, *)
    let outer = x.shape[..<ax].reduce(1, *)
    let (out, o) = Tensor.output(shape)
    let p = x.basePointer
    if len == 0 || inner == 0 { return out }
    for b in 0..<outer {
        let src = p + b * n * inner + lo * inner, dst = o + b * len * inner
        if step == 1 {
            dst.update(from: src, count: len * inner)
        } else {
            for i in 0..<len { (dst + i * inner).update(from: src + i * step * inner, count: inner) }
        }
    }
    return out
}
