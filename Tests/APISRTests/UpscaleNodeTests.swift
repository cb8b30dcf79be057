import Foundation
import Testing
import APISRPlugin
import LapseGraph
import LapseTensor
import LapseTestSupport
import LapseWeights

@Suite("Tiled upscaling")
struct TilingTests {
    private func srvgg() throws -> any UpscaleNetwork {
        try UpscaleModelLoader.load(path: APISRFixtures.path("srvgg_x4.pth")).network
    }

    @Test("tiled equals untiled within 1e-3 on a size that is no multiple of the tile")
    func seamless() throws {
        let net = try srvgg()
        let image = APISRFixtures.smoothImage(channels: 3, height: 45, width: 61).reshaped([1, 3, 45, 61])
        let whole = try APISRFixtures.runUntiled(net, image)
        var reports: [(Int, Int)] = []
        let tiled = try TiledUpscaler(network: net, tile: 16, overlap: 16, maxMemoryMB: 2048)
            .upscale(image, progress: { reports.append(($0, $1)) })
        #expect(tiled.shape == [1, 3, 180, 244])
        #expect(APISRFixtures.maxAbsDifference(tiled, whole) <= 1e-3)
        // 45 → 2 rows (3 would make cores shorter than the overlap), 61 → 3 columns.
        #expect(reports.count == 6 && reports.last! == (6, 6))
    }

    @Test("a deep network (RRDB) stays close to untiled across tile borders with the default overlap")
    func deepNetworkSeams() throws {
        let net = try UpscaleModelLoader.load(path: APISRFixtures.path("rrdb_x2.pth")).network
        let image = APISRFixtures.smoothImage(channels: 3, height: 38, width: 30).reshaped([1, 3, 38, 30])
        let whole = try APISRFixtures.runUntiled(net, image)
        let tiled = try TiledUpscaler(network: net, tile: 16, overlap: 16).upscale(image)
        #expect(tiled.shape == whole.shape)
        #expect(APISRFixtures.maxAbsDifference(tiled, whole) <= 1e-3)
    }

    @Test("tile 0 chooses a tile that fits max_memory_mb; a budget that can't hold the output is an error")
    func automaticTile() throws {
        let net = try srvgg()
        let roomy = TiledUpscaler(network: net, tile: 0, overlap: 16, maxMemoryMB: 2048)
        #expect(try roomy.coreSize(width: 64, height: 48) == 64)  // whole image in one pass
        let tight = TiledUpscaler(network: net, tile: 0, overlap: 16, maxMemoryMB: 64)
        let core = try tight.coreSize(width: 400, height: 300)
        #expect(core < 300 && core >= 16)
        let bytes = (core + 32) * (core + 32) * net.bytesPerInputPixel
        #expect(bytes <= 64 << 20)
        #expect(throws: TilingError.self) {
            _ = try TiledUpscaler(network: net, tile: 0, overlap: 16, maxMemoryMB: 64).coreSize(width: 4000, height: 4000)
        }
    }

    @Test("tiles smaller than the network's minimum and empty images are refused")
    func badSizes() throws {
        let net = try srvgg()
        #expect(throws: TilingError.self) {
            _ = try TiledUpscaler(network: net, tile: 2).upscale(Tensor(zeros: [1, 3, 8, 8]))
        }
        #expect(throws: TilingError.self) {
            _ = try TiledUpscaler(network: net).upscale(Tensor(zeros: [1, 3, 0, 8]))
        }
    }

    @Test("images smaller than the minimum tile (1×1, 2×3) are reflect-padded and cropped back")
    func tinyImages() throws {
        let net = try UpscaleModelLoader.load(path: APISRFixtures.path("rrdb_x2.pth")).network
        for (h, w) in [(1, 1), (2, 3)] {
            let out = try TiledUpscaler(network: net).upscale(APISRFixtures.noise([1, 3, h, w], seed: 3))
            #expect(out.shape == [1, 3, 2 * h, 2 * w])
            #expect(out.scalars.allSatisfy { $0.isFinite })
        }
    }
}

@Suite("Upscale and LoadUpscaleModel nodes")
struct UpscaleNodeTests {
    private func loadNode(_ path: String, arch: String = "auto") throws -> UpscaleModel {
        let context = TestNodeContext(nodeID: "1", nodeType: "LoadUpscaleModel")
        let out = try LoadUpscaleModel().run(NodeInputs(["path": .string(path), "arch": .string(arch)]), context: context)
        #expect(context.logs.contains { $0.contains("SRVGG") || $0.contains("RRDB") })
        guard case .object(let model)? = out.values["model"], let typed = model as? UpscaleModel else {
            throw NodeError.failed("no model output")
        }
        return typed
    }

    private func run(_ model: UpscaleModel, _ frames: [Frame], tile: Int = 0, context: TestNodeContext) throws -> [Frame] {
        let inputs = NodeInputs(["model": .object(model), "frames": .object(Frames(frames: frames)),
                                 "tile": .int(tile), "overlap": .int(16), "max_memory_mb": .int(2048)])
        let out = try Upscale().run(inputs, context: context)
        guard case .object(let stream)? = out.values["frames"], let frames = stream as? Frames else {
            throw NodeError.failed("no frames output")
        }
        return try frames.collect()
    }

    @Test("schemas are the public contract")
    func schemas() {
        #expect(LoadUpscaleModel.schema.type == "LoadUpscaleModel")
        #expect(LoadUpscaleModel.schema.inputs.map(\.name) == ["path", "arch"])
        #expect(LoadUpscaleModel.schema.outputs.map(\.name) == ["model"])
        #expect(Upscale.schema.type == "Upscale")
        #expect(Upscale.schema.inputs.map(\.name) == ["model", "frames", "tile", "overlap", "max_memory_mb"])
        #expect(Upscale.schema.outputs.map(\.name) == ["frames"])
        let registry = NodeRegistry()
        #expect(throws: Never.self) { try APISRPlugin.register(into: registry) }
        #expect(registry.entry(for: "Upscale") != nil && registry.entry(for: "LoadUpscaleModel") != nil)
    }

    @Test("RGB, RGBA (alpha bicubic) and gray frames stream through with per-frame and per-tile progress")
    func channelLayouts() throws {
        let model = try loadNode(APISRFixtures.path("srvgg_x4.pth"))
        let rgb = APISRFixtures.smoothImage(channels: 3, height: 9, width: 7)
        let alpha = APISRFixtures.smoothImage(channels: 1, height: 9, width: 7, seed: 11)
        let rgba = concat([rgb, alpha], axis: 0)
        let gray = slice(rgb, axis: 0, start: 1, end: 2)
        let context = TestNodeContext(nodeID: "2", nodeType: "Upscale")
        let out = try run(model, [Frame(image: rgb, index: 0), Frame(image: rgba, index: 1), Frame(image: gray, index: 2)],
                          context: context)
        #expect(out.map(\.image.shape) == [[3, 36, 28], [4, 36, 28], [1, 36, 28]])
        let direct = try model.network.forward(rgb.reshaped([1, 3, 9, 7])).reshaped([3, 36, 28])
        #expect(APISRFixtures.maxAbsDifference(out[0].image, direct) <= 1e-5)
        // RGBA: the colour planes equal the RGB result, alpha is the bicubic resize clamped to [0, 1].
        #expect(APISRFixtures.maxAbsDifference(slice(out[1].image, axis: 0, start: 0, end: 3), direct) <= 1e-5)
        let expectedAlpha = clamp(resize(alpha.reshaped([1, 1, 9, 7]), height: 36, width: 28, mode: .bicubic), min: 0, max: 1)
        #expect(APISRFixtures.maxAbsDifference(slice(out[1].image, axis: 0, start: 3, end: 4), expectedAlpha.reshaped([1, 36, 28])) <= 1e-6)
        // Gray: replicated to RGB, averaged back.
        let grayRGB = try model.network.forward(concat([gray, gray, gray], axis: 0).reshaped([1, 3, 9, 7]))
        #expect(APISRFixtures.maxAbsDifference(out[2].image, mean(grayRGB.reshaped([3, 36, 28]), axes: [0], keepDims: true)) <= 1e-5)
        let frameReports = context.progressReports.filter { $0.unit == "frame" }
        #expect(frameReports.map(\.step) == [1, 2, 3] && frameReports.allSatisfy { $0.total == 3 })
        #expect(context.progressReports.contains { $0.unit == "tile" })
    }

    @Test("GRL: a tile smaller than its attention window is refused; an image smaller than the window still works")
    func windowedNetwork() throws {
        let model = try loadNodeAny(APISRFixtures.path("grl_tiny.pth"))
        let window = model.network.minimumTile
        #expect(window > 4)
        let context = TestNodeContext()
        let error = #expect(throws: NodeError.self) {
            _ = try run(model, [Frame(image: Tensor(zeros: [3, 20, 20]))], tile: 4, context: context)
        }
        #expect(error?.localizedDescription.contains("GRL") == true)
        let out = try run(model, [Frame(image: APISRFixtures.smoothImage(channels: 3, height: 5, width: 7))], context: context)
        #expect(out[0].image.shape == [3, 20, 28])
        #expect(out[0].image.scalars.allSatisfy { $0.isFinite })
    }

    private func loadNodeAny(_ path: String) throws -> UpscaleModel {
        let out = try LoadUpscaleModel().run(NodeInputs(["path": .string(path), "arch": .string("auto")]),
                                             context: TestNodeContext())
        guard case .object(let model)? = out.values["model"], let typed = model as? UpscaleModel else {
            throw NodeError.failed("no model output")
        }
        return typed
    }

    @Test("a tile below the minimum, an empty frame and cancellation are errors")
    func badInputs() throws {
        let model = try loadNode(APISRFixtures.path("srvgg_x2.pth"))
        let context = TestNodeContext()
        #expect(throws: NodeError.self) {
            _ = try run(model, [Frame(image: Tensor(zeros: [3, 8, 8]))], tile: 3, context: context)
        }
        #expect(throws: NodeError.self) {
            _ = try run(model, [Frame(image: Tensor(zeros: [3, 0, 8]))], context: context)
        }
        context.cancel()
        #expect(throws: CancellationError.self) {
            _ = try run(model, [Frame(image: Tensor(zeros: [3, 8, 8]))], context: context)
        }
    }
}

@Suite("Loading bad checkpoints")
struct BadCheckpointTests {
    @Test("an unknown architecture lists the keys found and the architectures known")
    func unknownArchitecture() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("mystery.safetensors").path
        try SafeTensors.write([("encoder.layer.0.weight", Tensor(zeros: [4, 3])), ("encoder.layer.0.bias", Tensor(zeros: [4]))], to: path)
        let error = #expect(throws: UpscaleModelError.self) { _ = try UpscaleModelLoader.load(path: path) }
        let message = error?.localizedDescription ?? ""
        #expect(message.contains("mystery.safetensors") && message.contains("encoder.layer.0.weight [4, 3]"))
        #expect(message.contains("RRDB") && message.contains("SRVGGNetCompact"))
    }

    @Test("wrong file type, truncated checkpoint and missing tensors name the file", arguments: ["text", "truncated", "partial"])
    func broken(kind: String) throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("broken-\(kind).pth").path
        switch kind {
        case "text":
            try Data("not a checkpoint\n".utf8).write(to: URL(fileURLWithPath: path))
        case "truncated":
            let data = try Data(contentsOf: URL(fileURLWithPath: APISRFixtures.path("rrdb_x4.pth")))
            try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: path))
        default:
            // RRDB signature keys but the rest of the network missing.
            try SafeTensors.write([("conv_first.weight", Tensor(zeros: [8, 3, 3, 3])),
                                             ("body.0.rdb1.conv1.weight", Tensor(zeros: [4, 8, 3, 3]))], to: path)
        }
        do {
            _ = try UpscaleModelLoader.load(path: path)
            Issue.record("\(kind) checkpoint loaded")
        } catch {
            #expect(error.localizedDescription.contains("broken-\(kind).pth"), "\(error.localizedDescription)")
        }
    }

    @Test("an ncnn graph that is neither RRDB nor SRVGG is refused, listing its layer types")
    func unknownNCNNGraph() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let param = """
            7767517
            3 3
            Input            in0   0 1 data
            Convolution      conv0 1 1 data c0 0=4 1=3 4=1 5=1 6=108
            ReLU             relu0 1 1 c0 output
            """
        try Data(param.utf8).write(to: dir.appendingPathComponent("odd.param"))
        var bin = Data(count: 4)  // fp32 tag 0
        bin.append(Data(count: (108 + 4) * 4))
        try bin.write(to: dir.appendingPathComponent("odd.bin"))
        let error = #expect(throws: UpscaleModelError.self) {
            _ = try UpscaleModelLoader.load(path: dir.appendingPathComponent("odd.param").path)
        }
        let message = error?.localizedDescription ?? ""
        #expect(message.contains("odd.param") && message.contains("ReLU") && message.contains("SRVGGNetCompact"))
    }
}

