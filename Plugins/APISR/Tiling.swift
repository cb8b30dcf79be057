import Dispatch
import Foundation
import LapseTensor

/// Errors of the tiled upscaling itself (before or between tiles).
public enum TilingError: LocalizedError, Sendable {
    case tileTooSmall(tile: Int, minimum: Int, architecture: String)
    case emptyImage(width: Int, height: Int)
    case budgetTooSmall(megabytes: Int, neededMegabytes: Int)
    case wrongOutput(architecture: String, expected: [Int], actual: [Int])

    public var errorDescription: String? {
        switch self {
        case .tileTooSmall(let tile, let minimum, let arch):
            "tile \(tile) is smaller than the \(arch) network's minimum of \(minimum) pixels"
        case .emptyImage(let w, let h):
            "cannot upscale an empty \(w)×\(h) image"
        case .budgetTooSmall(let mb, let needed):
            "max_memory_mb \(mb) cannot hold even the output image and one minimal tile (about \(needed) MB)"
        case .wrongOutput(let arch, let expected, let actual):
            "the \(arch) network returned \(actual), expected \(expected)"
        }
    }
}

/// Runs an `UpscaleNetwork` over an image of any size in overlapping tiles and blends them seamlessly.
///
/// The image is (virtually) reflect-padded to the network's `sizeMultiple`; APISR itself crops the input to a
/// multiple of 4 instead, losing up to 3 pixel rows/columns; here the output is always exactly scale × the input.
/// Tiles split the padded image evenly; each is run with `overlap` extra pixels of real image context on every
/// side, and neighbouring outputs are cross-faded with complementary linear ramps over `overlap` pixels centred
/// on the tile border. The ramps sum to one, so no normalisation pass is needed, and every kept pixel has at least
/// `overlap / 2` pixels of context: for networks whose receptive field fits in that context the result equals the
/// untiled one to float rounding; for deeper ones any seam is spread over the ramp.
public struct TiledUpscaler: Sendable {
    public let network: any UpscaleNetwork
    /// Tile side in input pixels (0: chosen from `maxMemoryBytes`).
    public let tile: Int
    /// Context and blend width in input pixels.
    public let overlap: Int
    /// Memory budget for the output image plus one tile's working set.
    public let maxMemoryBytes: Int

    public init(network: any UpscaleNetwork, tile: Int = 0, overlap: Int = 16, maxMemoryMB: Int = 2048) {
        self.network = network
        self.tile = tile
        self.overlap = max(0, overlap)
        self.maxMemoryBytes = max(1, maxMemoryMB) << 20
    }

    /// The even split of one padded axis into tile cores: boundaries on multiples of `multiple`, every core at
    /// least `minimum` long (the cross-fade ramps of a core's two ends must not overlap, or the weights stop
    /// summing to one).
    static func boundaries(length: Int, core: Int, multiple: Int, minimum: Int = 1) -> [Int] {
        var count = max(1, (length + core - 1) / core)
        while true {
            var edges = [0]
            for i in 1..<max(count, 1) {
                let raw = Double(i * length) / Double(count)
                let snapped = Int((raw / Double(multiple)).rounded()) * multiple
                if snapped > edges.last!, snapped < length { edges.append(snapped) }
            }
            edges.append(length)
            let shortest = zip(edges.dropFirst(), edges).map { $0 - $1 }.min() ?? length
            if shortest >= minimum || count == 1 { return edges }
            count -= 1
        }
    }

    /// An axis length after reflect padding: a multiple of `sizeMultiple`, and never below the minimum tile.
    func paddedLength(_ length: Int) -> Int {
        let m = max(1, network.sizeMultiple)
        return max(roundUp(length, m), roundUp(network.minimumTile, m))
    }

    /// The tile core side this run will use for an image of the given size.
    public func coreSize(width: Int, height: Int, channels: Int = 3) throws -> Int {
        let m = max(1, network.sizeMultiple)
        let padW = paddedLength(width), padH = paddedLength(height)
        let context = roundUp(overlap, m)
        let minimumCore = max(roundUp(network.minimumTile, m), roundUp(overlap, m), m)
        if tile > 0 {
            guard tile >= network.minimumTile else {
                throw TilingError.tileTooSmall(tile: tile, minimum: network.minimumTile, architecture: network.architecture)
            }
            return max(roundUp(tile, m), minimumCore)
        }
        let s = network.scale
        let fixed = (padW * padH * channels + padW * s * padH * s * channels) * MemoryLayout<Float>.size
        let perPixel = max(1, network.bytesPerInputPixel)
        let available = maxMemoryBytes - fixed
        let minimumBytes = (minimumCore + 2 * context) * (minimumCore + 2 * context) * perPixel
        guard available >= minimumBytes else {
            throw TilingError.budgetTooSmall(megabytes: maxMemoryBytes >> 20,
                                             neededMegabytes: (fixed + minimumBytes + (1 << 20) - 1) >> 20)
        }
        // Whole image at once when it fits: no context needed, no seams at all.
        if padW * padH * perPixel <= available { return max(padW, padH) }
        let side = Int(Double(available / perPixel).squareRoot())
        let core = (side - 2 * context) / m * m
        return max(core, minimumCore)
    }

    /// Upscales `[1, 3, H, W]` RGB → `[1, 3, H·s, W·s]`. `progress(done, total)` is called after each tile;
    /// `checkCancellation` before each.
    public func upscale(_ image: Tensor, progress: (Int, Int) -> Void = { _, _ in },
                        checkCancellation: () throws -> Void = {}) throws -> Tensor {
        precondition(image.rank == 4 && image.shape[0] == 1, "TiledUpscaler takes [1, C, H, W]")
        let (channels, height, width) = (image.shape[1], image.shape[2], image.shape[3])
        guard height > 0, width > 0 else { throw TilingError.emptyImage(width: width, height: height) }
        let m = max(1, network.sizeMultiple)
        let s = network.scale
        let padH = paddedLength(height), padW = paddedLength(width)
        let core = try coreSize(width: width, height: height, channels: channels)
        let context = roundUp(overlap, m)
        let shortest = max(roundUp(overlap, m), m)
        let rows = Self.boundaries(length: padH, core: core, multiple: m, minimum: shortest)
        let cols = Self.boundaries(length: padW, core: core, multiple: m, minimum: shortest)
        let total = (rows.count - 1) * (cols.count - 1)
        let half = Double(overlap) / 2
        var output = Tensor(zeros: [1, channels, height * s, width * s])
        let rowMap = reflectMap(count: padH, size: height)
        let colMap = reflectMap(count: padW, size: width)
        var done = 0
        for ty in 0..<(rows.count - 1) {
            for tx in 0..<(cols.count - 1) {
                try checkCancellation()
                let (y0, y1, x0, x1) = (rows[ty], rows[ty + 1], cols[tx], cols[tx + 1])
                let single = rows.count == 2 && cols.count == 2
                let ry0c = single ? 0 : max(0, y0 - context), ry1c = single ? padH : min(padH, y1 + context)
                let rx0c = single ? 0 : max(0, x0 - context), rx1c = single ? padW : min(padW, x1 + context)
                // Small edge tiles grow (inside the image) to the network's minimum, e.g. one attention window.
                let (ry0, ry1) = grow(ry0c, ry1c, limit: padH, multiple: m)
                let (rx0, rx1) = grow(rx0c, rx1c, limit: padW, multiple: m)
                let input = extract(image, rows: Array(rowMap[ry0..<ry1]), cols: Array(colMap[rx0..<rx1]))
                let result = try network.forward(input)
                let expected = [1, channels, (ry1 - ry0) * s, (rx1 - rx0) * s]
                guard result.shape == expected else {
                    throw TilingError.wrongOutput(architecture: network.architecture, expected: expected, actual: result.shape)
                }
                // Per-axis weights over the output rows/columns this tile contributes to.
                let wy = rampWeights(from: ry0 * s, to: min(ry1 * s, height * s), scale: s, core: (y0, y1),
                                     first: ty == 0, last: ty == rows.count - 2, half: half)
                let wx = rampWeights(from: rx0 * s, to: min(rx1 * s, width * s), scale: s, core: (x0, x1),
                                     first: tx == 0, last: tx == cols.count - 2, half: half)
                accumulate(result, into: &output, originY: ry0 * s, originX: rx0 * s, wy: wy, wx: wx)
                done += 1
                progress(done, total)
            }
        }
        return output
    }

    private func grow(_ start: Int, _ end: Int, limit: Int, multiple m: Int) -> (Int, Int) {
        var (a, b) = (start, end)
        let need = roundUp(network.minimumTile, m)
        while b - a < need {
            if b < limit { b = min(limit, b + m) } else if a > 0 { a = max(0, a - m) } else { break }
        }
        return (a, b)
    }

    /// Gathers `[1, C, rows, cols]` from the image through index maps (reflect padding included).
    private func extract(_ image: Tensor, rows: [Int], cols: [Int]) -> Tensor {
        let (c, h, w) = (image.shape[1], image.shape[2], image.shape[3])
        var out = Tensor(zeros: [1, c, rows.count, cols.count])
        image.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                let sp = src.baseAddress!, dp = dst.baseAddress!
                let ow = cols.count
                cols.withUnsafeBufferPointer { cm in
                    for ch in 0..<c {
                        for (i, r) in rows.enumerated() {
                            let srow = sp + ch * h * w + r * w
                            let drow = dp + (ch * rows.count + i) * ow
                            for j in 0..<ow { drow[j] = srow[cm[j]] }
                        }
                    }
                }
            }
        }
        return out
    }

    /// `(start, weights)` for output positions [from, to): 1 inside the core, linear ramps of width `2·half` input
    /// pixels centred on interior core edges, measured at output pixel centres.
    private func rampWeights(from: Int, to: Int, scale s: Int, core: (Int, Int), first: Bool, last: Bool,
                             half: Double) -> (start: Int, weights: [Float]) {
        guard to > from else { return (from, []) }
        var weights = [Float](repeating: 0, count: to - from)
        for i in 0..<(to - from) {
            let u = (Double(from + i) + 0.5) / Double(s)
            var w = 1.0
            if !first {
                w = half > 0 ? min(w, max(0, (u - (Double(core.0) - half)) / (2 * half))) : (u >= Double(core.0) ? 1 : 0)
            }
            if !last {
                w = half > 0 ? min(w, max(0, ((Double(core.1) + half) - u) / (2 * half))) : (u < Double(core.1) ? w : 0)
            }
            weights[i] = Float(min(1, w))
        }
        return (from, weights)
    }

    private func accumulate(_ tile: Tensor, into output: inout Tensor, originY: Int, originX: Int,
                            wy: (start: Int, weights: [Float]), wx: (start: Int, weights: [Float])) {
        let (c, th, tw) = (tile.shape[1], tile.shape[2], tile.shape[3])
        let (oh, ow) = (output.shape[2], output.shape[3])
        // First and last columns with a non-zero weight, so the inner loop skips the unused context.
        guard let firstX = wx.weights.firstIndex(where: { $0 > 0 }),
              let lastX = wx.weights.lastIndex(where: { $0 > 0 }) else { return }
        tile.withUnsafeBufferPointer { src in
            output.withUnsafeMutableBufferPointer { dst in
                let psrc = SharedPointer(src.baseAddress!), pdst = SharedPointer(dst.baseAddress!)
                wx.weights.withUnsafeBufferPointer { wxBuffer in
                    let pwx = SharedPointer(wxBuffer.baseAddress!)
                    let weightsY = wy.weights, startY = wy.start, startX = wx.start
                    DispatchQueue.concurrentPerform(iterations: c) { ch in
                        let sp = psrc.base, dp = pdst.base, wxs = pwx.base
                        for (i, weightY) in weightsY.enumerated() where weightY > 0 {
                            let y = startY + i
                            guard y < oh else { continue }
                            let srow = sp + (ch * th + (y - originY)) * tw
                            let drow = dp + (ch * oh + y) * ow
                            for j in firstX...lastX {
                                let x = startX + j
                                if x >= ow { break }
                                drow[x] += weightY * wxs[j] * srow[x - originX]
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Index map of a reflect-padded axis: positions `0..<count` of an axis of `size` real pixels, mirrored without
/// repeating the edge pixel (PyTorch's `reflect`), folding again when the padding exceeds the image.
func reflectMap(count: Int, size: Int) -> [Int] {
    guard size > 1 else { return [Int](repeating: 0, count: count) }
    let period = 2 * (size - 1)
    return (0..<count).map { i in
        let r = i % period
        return r < size ? r : period - r
    }
}

func roundUp(_ value: Int, _ multiple: Int) -> Int {
    multiple <= 1 ? value : (value + multiple - 1) / multiple * multiple
}

/// A raw pointer handed to `DispatchQueue.concurrentPerform` bodies. Sound because every parallel loop in this
/// module writes disjoint ranges and the memory outlives the loop.
struct SharedPointer<T>: @unchecked Sendable {
    let base: UnsafeMutablePointer<T>
    init(_ base: UnsafeMutablePointer<T>) { self.base = base }
    init(_ base: UnsafePointer<T>) { self.base = UnsafeMutablePointer(mutating: base) }
}
