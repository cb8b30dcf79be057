import Dispatch
import Foundation

/// Errors of the tile layout and of the tile results; callers that know more (an architecture, a port) rephrase them.
public enum TiledMapError: LocalizedError, Sendable, Equatable {
    case emptyInput(shape: [Int])
    case budgetTooSmall(bytes: Int, neededBytes: Int)
    case wrongOutput(expected: [Int], actual: [Int])

    public var errorDescription: String? {
        switch self {
        case .emptyInput(let shape):
            "TiledMap needs a non-empty [1, C, H, W] input, got \(shape)"
        case .budgetTooSmall(let bytes, let needed):
            "a memory budget of \(bytes >> 20) MB cannot hold the input, the output and one minimal tile "
                + "(about \((needed + (1 << 20) - 1) >> 20) MB): raise the budget or pass a tile size"
        case .wrongOutput(let expected, let actual):
            "the tile function returned \(actual), expected \(expected) (scale × the tile, same channels every tile)"
        }
    }
}

/// Applies a function `[1, C, h, w] → [1, C', h·s, w·s]` to an input of any size in overlapping tiles and blends
/// the outputs into one `[1, C', H·s, W·s]`.
///
/// The input is (virtually) padded to `sizeMultiple` and at least `minimumTile`, and the output cropped back to
/// exactly `scale` × the input. Tile cores split the padded input evenly (no sliver at the edge); each tile runs
/// with `context` extra input pixels on every side, and neighbouring outputs are cross-faded with complementary
/// linear ramps `blend` pixels wide centred on the core border. The ramps sum to one, so no normalisation pass is
/// needed, and every pixel that gets weight has at least `context − blend / 2` pixels of context: a body whose
/// receptive field fits in that gives the untiled result to float rounding; for deeper ones any seam is spread
/// over the ramp. A layout with one tile runs the body once on the whole (padded) input, untouched by weights.
public struct TiledMap: Sendable {
    /// Output size ÷ input size.
    public let scale: Int
    /// Tile sides (context included) are multiples of this; the input is padded up to it.
    public let sizeMultiple: Int
    /// Smallest tile side the body accepts; edge tiles grow inward to reach it.
    public let minimumTile: Int
    /// Extra input pixels each tile sees past its core, rounded up to `sizeMultiple`.
    public let context: Int
    /// Width in input pixels of the cross-fade centred on each interior core border (at most `2 · context`).
    public let blend: Int
    /// How the input is padded (bottom and right) to `sizeMultiple`.
    public let padding: PaddingMode
    /// Tile core side in input pixels; 0 picks it from `maxMemoryBytes`.
    public let tile: Int
    /// Budget for the input, the output and one tile's working set (`bytesPerInputPixel` per tile pixel).
    public let maxMemoryBytes: Int
    /// The body's rough peak working memory per input pixel.
    public let bytesPerInputPixel: Int
    /// Output channels every tile must return, also counted in the memory budget (0: as the first tile returns;
    /// the budget then assumes as many as the input).
    public let outputChannels: Int

    /// A tiler; `blend` defaults to `context` (every weighted pixel keeps at least half the context).
    public init(scale: Int = 1, sizeMultiple: Int = 1, minimumTile: Int = 1, context: Int = 16, blend: Int? = nil,
                padding: PaddingMode = .reflect, tile: Int = 0, maxMemoryBytes: Int = 2048 << 20,
                bytesPerInputPixel: Int = 4, outputChannels: Int = 0) {
        let multiple = max(1, sizeMultiple)
        self.scale = max(1, scale)
        self.sizeMultiple = multiple
        self.minimumTile = max(1, minimumTile)
        self.context = roundUp(max(0, context), multiple)
        self.blend = min(max(0, blend ?? context), 2 * self.context)
        self.padding = padding
        self.tile = max(0, tile)
        self.maxMemoryBytes = max(1, maxMemoryBytes)
        self.bytesPerInputPixel = max(1, bytesPerInputPixel)
        self.outputChannels = max(0, outputChannels)
    }

    /// An axis length after padding: a multiple of `sizeMultiple`, and never below the minimum tile.
    public func paddedLength(_ length: Int) -> Int {
        max(roundUp(length, sizeMultiple), roundUp(minimumTile, sizeMultiple))
    }

    /// Shortest core: tiles hold the minimum tile, and a core's two ramps must not overlap (or the weights stop
    /// summing to one).
    private var minimumCore: Int {
        max(roundUp(minimumTile, sizeMultiple), roundUp(blend, sizeMultiple), sizeMultiple)
    }

    /// The tile core side a run will use for a `channels × height × width` input.
    public func coreSize(height: Int, width: Int, channels: Int) throws -> Int {
        let m = sizeMultiple
        let padW = paddedLength(width), padH = paddedLength(height)
        if tile > 0 { return max(roundUp(tile, m), minimumCore) }
        let s = scale
        let outChannels = outputChannels > 0 ? outputChannels : channels
        let fixed = (padW * padH * channels + padW * s * padH * s * outChannels) * MemoryLayout<Float>.size
        let available = maxMemoryBytes - fixed
        let minimumBytes = (minimumCore + 2 * context) * (minimumCore + 2 * context) * bytesPerInputPixel
        guard available >= minimumBytes else {
            throw TiledMapError.budgetTooSmall(bytes: maxMemoryBytes, neededBytes: fixed + minimumBytes)
        }
        // Whole input at once when it fits: no context needed, no seams at all.
        if padW * padH * bytesPerInputPixel <= available { return max(padW, padH) }
        let side = Int(Double(available / bytesPerInputPixel).squareRoot())
        let core = (side - 2 * context) / m * m
        return max(core, minimumCore)
    }

    /// The even split of one padded axis into cores: boundaries on multiples of `multiple`, every core at least
    /// `minimum` long.
    public static func boundaries(length: Int, core: Int, multiple: Int, minimum: Int = 1) -> [Int] {
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

    /// Runs `body` over `[1, C, H, W]` in tiles → `[1, C', H·s, W·s]`. `checkCancellation` is called before each
    /// tile, `progress(done, total)` after each.
    public func apply(_ input: Tensor, progress: (Int, Int) -> Void = { _, _ in },
                      checkCancellation: () throws -> Void = {},
                      body: (Tensor) throws -> Tensor) throws -> Tensor {
        precondition(input.rank == 4 && input.shape[0] == 1, "TiledMap takes [1, C, H, W]")
        let (channels, height, width) = (input.shape[1], input.shape[2], input.shape[3])
        guard channels > 0, height > 0, width > 0 else { throw TiledMapError.emptyInput(shape: input.shape) }
        let m = sizeMultiple, s = scale
        let padH = paddedLength(height), padW = paddedLength(width)
        let core = try coreSize(height: height, width: width, channels: channels)
        let shortest = max(roundUp(blend, m), m)
        let rows = Self.boundaries(length: padH, core: core, multiple: m, minimum: shortest)
        let cols = Self.boundaries(length: padW, core: core, multiple: m, minimum: shortest)
        let total = (rows.count - 1) * (cols.count - 1)
        let single = total == 1
        let half = Double(blend) / 2
        var output: Tensor? = nil
        let rowMap = indexMap(count: padH, size: height)
        let colMap = indexMap(count: padW, size: width)
        var done = 0
        for ty in 0..<(rows.count - 1) {
            for tx in 0..<(cols.count - 1) {
                try checkCancellation()
                let (y0, y1, x0, x1) = (rows[ty], rows[ty + 1], cols[tx], cols[tx + 1])
                let ry0c = single ? 0 : max(0, y0 - context), ry1c = single ? padH : min(padH, y1 + context)
                let rx0c = single ? 0 : max(0, x0 - context), rx1c = single ? padW : min(padW, x1 + context)
                let (ry0, ry1) = grow(ry0c, ry1c, limit: padH)
                let (rx0, rx1) = grow(rx0c, rx1c, limit: padW)
                let piece = extract(input, rows: Array(rowMap[ry0..<ry1]), cols: Array(colMap[rx0..<rx1]))
                let result = try body(piece)
                // Output channels: as declared, else as the first tile returned.
                let outC = output?.shape[1] ?? (outputChannels > 0 ? outputChannels
                                                                   : (result.rank == 4 ? max(result.shape[1], 1) : 1))
                let expected = [1, outC, (ry1 - ry0) * s, (rx1 - rx0) * s]
                guard result.shape == expected else {
                    throw TiledMapError.wrongOutput(expected: expected, actual: result.shape)
                }
                if output == nil { output = Tensor(zeros: [1, outC, height * s, width * s]) }
                let wy = rampWeights(from: ry0 * s, to: min(ry1 * s, height * s), core: (y0, y1),
                                     first: ty == 0, last: ty == rows.count - 2, half: half)
                let wx = rampWeights(from: rx0 * s, to: min(rx1 * s, width * s), core: (x0, x1),
                                     first: tx == 0, last: tx == cols.count - 2, half: half)
                accumulate(result, into: &output!, originY: ry0 * s, originX: rx0 * s, wy: wy, wx: wx)
                done += 1
                progress(done, total)
            }
        }
        return output!
    }

    /// Small edge tiles grow (inside the padded input) to the minimum tile, e.g. one attention window.
    private func grow(_ start: Int, _ end: Int, limit: Int) -> (Int, Int) {
        var (a, b) = (start, end)
        let need = roundUp(minimumTile, sizeMultiple), m = sizeMultiple
        while b - a < need {
            if b < limit { b = min(limit, b + m) } else if a > 0 { a = max(0, a - m) } else { break }
        }
        return (a, b)
    }

    /// Source index of each padded position `0..<count` of an axis of `size` real pixels (-1: zero padding).
    private func indexMap(count: Int, size: Int) -> [Int] {
        (0..<count).map { Kernels.padSource($0, size, padding) ?? -1 }
    }

    /// Gathers `[1, C, rows, cols]` from the input through index maps (padding included).
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
                            guard r >= 0 else { continue }
                            let srow = sp + ch * h * w + r * w
                            let drow = dp + (ch * rows.count + i) * ow
                            for j in 0..<ow where cm[j] >= 0 { drow[j] = srow[cm[j]] }
                        }
                    }
                }
            }
        }
        return out
    }

    /// Weights for output positions [from, to): 1 inside the core, linear ramps of width `2·half` input pixels
    /// centred on interior core edges, measured at output pixel centres.
    private func rampWeights(from: Int, to: Int, core: (Int, Int), first: Bool, last: Bool,
                             half: Double) -> (start: Int, weights: [Float]) {
        guard to > from else { return (from, []) }
        let s = Double(scale)
        var weights = [Float](repeating: 0, count: to - from)
        for i in 0..<(to - from) {
            let u = (Double(from + i) + 0.5) / s
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

    /// `output += wy ⊗ wx · tile` over the tile's footprint, channels in parallel.
    private func accumulate(_ tile: Tensor, into output: inout Tensor, originY: Int, originX: Int,
                            wy: (start: Int, weights: [Float]), wx: (start: Int, weights: [Float])) {
        let (c, th, tw) = (tile.shape[1], tile.shape[2], tile.shape[3])
        let (oh, ow) = (output.shape[2], output.shape[3])
        // First and last columns with a non-zero weight, so the inner loop skips the unused context.
        guard let firstX = wx.weights.firstIndex(where: { $0 > 0 }),
              let lastX = wx.weights.lastIndex(where: { $0 > 0 }) else { return }
        tile.withUnsafeBufferPointer { src in
            output.withUnsafeMutableBufferPointer { dst in
                let psrc = UncheckedBox(UnsafeMutablePointer(mutating: src.baseAddress!))
                let pdst = UncheckedBox(dst.baseAddress!)
                wx.weights.withUnsafeBufferPointer { wxBuffer in
                    let pwx = UncheckedBox(wxBuffer.baseAddress!)
                    let weightsY = wy.weights, startY = wy.start, startX = wx.start
                    DispatchQueue.concurrentPerform(iterations: c) { ch in
                        let sp = psrc.value, dp = pdst.value, wxs = pwx.value
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

private func roundUp(_ value: Int, _ multiple: Int) -> Int {
    multiple <= 1 ? value : (value + multiple - 1) / multiple * multiple
}
