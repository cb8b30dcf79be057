import Foundation
import LapseTensor
import Testing

/// The shared tiler behind `Upscale` and `VAEDecode`: layouts, padding, blending and errors, with bodies whose
/// untiled result is known.
@Suite struct TiledMapTests {
    /// Nearest-neighbour ×`s` of `2x + 1`: every output pixel depends on one input pixel.
    static func pointwise(_ x: Tensor, scale s: Int) -> Tensor {
        let (c, h, w) = (x.shape[1], x.shape[2], x.shape[3])
        let v = x.scalars
        var out = [Float](repeating: 0, count: c * h * s * w * s)
        for ch in 0..<c {
            for y in 0..<(h * s) {
                for xx in 0..<(w * s) { out[(ch * h * s + y) * w * s + xx] = 2 * v[(ch * h + y / s) * w + xx / s] + 1 }
            }
        }
        return Tensor(shape: [1, c, h * s, w * s], data: out)
    }

    /// Mean over the (2r+1)² window with zeros outside, to 2 output channels (sum and difference of the first two
    /// input channels): a receptive field of radius `r`.
    static func boxBlur(_ x: Tensor, radius r: Int) -> Tensor {
        let (h, w) = (x.shape[2], x.shape[3])
        let v = x.scalars
        var out = [Float](repeating: 0, count: 2 * h * w)
        for y in 0..<h {
            for xx in 0..<w {
                var a: Float = 0, b: Float = 0
                for dy in -r...r {
                    for dx in -r...r {
                        let (sy, sx) = (y + dy, xx + dx)
                        guard sy >= 0, sy < h, sx >= 0, sx < w else { continue }
                        a += v[sy * w + sx]
                        b += v[(h + sy) * w + sx]
                    }
                }
                let n = Float((2 * r + 1) * (2 * r + 1))
                out[y * w + xx] = (a + b) / n
                out[(h + y) * w + xx] = (a - b) / n
            }
        }
        return Tensor(shape: [1, 2, h, w], data: out)
    }

    static func maxRelative(_ a: Tensor, _ b: Tensor) -> Float {
        zip(a.scalars, b.scalars).map { abs($0 - $1) / max(abs($1), 1) }.max() ?? 0
    }

    @Test("a pointwise body with hard tile borders gives back the untiled result exactly, padding cropped away",
          arguments: [PaddingMode.reflect, .replicate, .zeros])
    func pointwiseExact(padding: PaddingMode) throws {
        let input = TorchGenerator(seed: 1).randn([1, 3, 23, 37])
        let tiler = TiledMap(scale: 2, sizeMultiple: 4, context: 4, blend: 0, padding: padding, tile: 8)
        var reports: [(Int, Int)] = []
        let out = try tiler.apply(input, progress: { reports.append(($0, $1)) }) { Self.pointwise($0, scale: 2) }
        #expect(out.shape == [1, 3, 46, 74])
        #expect(out.scalars == Self.pointwise(input, scale: 2).scalars)
        // 24 padded rows → 3 cores of 8, 40 columns → 5: 15 tiles, counted in order.
        #expect(reports.count == 15 && reports.map(\.0) == Array(1...15) && reports.allSatisfy { $0.1 == 15 })
    }

    @Test("an identity body through cross-faded tiles gives back the input to float rounding")
    func identityBlended() throws {
        let input = TorchGenerator(seed: 2).rand([1, 4, 30, 19])
        let out = try TiledMap(context: 6, tile: 7).apply(input) { $0 }
        #expect(out.shape == input.shape)
        let worst = zip(out.scalars, input.scalars).map { abs($0 - $1) }.max() ?? 1
        #expect(worst <= 2e-7, "max abs \(worst)")
    }

    @Test("a body of receptive field 2 matches the untiled result when the kept context covers it",
          arguments: [(tile: 6, context: 4, blend: 4), (tile: 9, context: 3, blend: 2), (tile: 5, context: 6, blend: 8)])
    func receptiveField(layout: (tile: Int, context: Int, blend: Int)) throws {
        let input = TorchGenerator(seed: 3).randn([1, 2, 26, 31])
        let tiler = TiledMap(context: layout.context, blend: layout.blend, tile: layout.tile, outputChannels: 2)
        let tiled = try tiler.apply(input) { Self.boxBlur($0, radius: 2) }
        let whole = Self.boxBlur(input, radius: 2)
        #expect(tiled.shape == whole.shape)
        #expect(Self.maxRelative(tiled, whole) <= 1e-6, "max relative \(Self.maxRelative(tiled, whole))")
    }

    @Test("too little context shows seams: the test above can fail")
    func tooLittleContext() throws {
        let input = TorchGenerator(seed: 3).randn([1, 2, 26, 31])
        let tiled = try TiledMap(context: 1, blend: 2, tile: 6).apply(input) { Self.boxBlur($0, radius: 2) }
        #expect(Self.maxRelative(tiled, Self.boxBlur(input, radius: 2)) > 1e-2)
    }

    @Test("tile 0 runs the whole input once when the budget allows, else tiles within it")
    func memoryBudget() throws {
        let input = TorchGenerator(seed: 4).rand([1, 3, 64, 48])
        let roomy = TiledMap(scale: 2, context: 8, maxMemoryBytes: 64 << 20, bytesPerInputPixel: 1000)
        #expect(try roomy.coreSize(height: 64, width: 48, channels: 3) == 64)
        var calls = 0
        _ = try roomy.apply(input) { calls += 1; return Self.pointwise($0, scale: 2) }
        #expect(calls == 1)
        let tight = TiledMap(scale: 2, context: 8, maxMemoryBytes: 1 << 20, bytesPerInputPixel: 1000)
        let core = try tight.coreSize(height: 64, width: 48, channels: 3)
        #expect(core < 48 && (core + 16) * (core + 16) * 1000 <= 1 << 20)
        #expect(throws: TiledMapError.self) {
            _ = try TiledMap(context: 8, maxMemoryBytes: 1 << 20, bytesPerInputPixel: 1000)
                .coreSize(height: 4000, width: 4000, channels: 3)
        }
    }

    @Test("cancellation stops between tiles; empty inputs and wrong body outputs are errors")
    func errors() throws {
        struct Stop: Error {}
        let input = TorchGenerator(seed: 5).rand([1, 1, 16, 16])
        var calls = 0
        #expect(throws: Stop.self) {
            _ = try TiledMap(context: 2, tile: 4).apply(input, checkCancellation: { if calls == 2 { throw Stop() } }) {
                calls += 1; return $0
            }
        }
        #expect(calls == 2)
        #expect(throws: TiledMapError.emptyInput(shape: [1, 1, 0, 5])) {
            _ = try TiledMap().apply(Tensor(zeros: [1, 1, 0, 5])) { $0 }
        }
        #expect(throws: TiledMapError.wrongOutput(expected: [1, 1, 32, 32], actual: [1, 1, 16, 16])) {
            _ = try TiledMap(scale: 2, tile: 16).apply(input) { $0 }
        }
    }
}
