import Foundation
import LapseTensor
import LapseWeights
import Testing

@Suite("ncnn models")
struct NCNNTests {
    @Test func tinyModelMatchesWrittenWeights() throws {
        let file = try CheckpointFile.open(Paths.fixture("tiny.param"))
        let model = try #require(file.ncnn)
        #expect(model.layers.map(\.type) == ["Input", "Split", "Convolution", "PReLU", "Convolution", "InnerProduct", "BinaryOp"])
        #expect(model.blobCount == 8)
        let conv = model.layers[2]
        #expect(conv.inputs == ["a"] && conv.outputs == ["c"])
        #expect(conv.int(0) == 4 && conv.int(1) == 3 && conv.int(9) == 2 && conv.params[10] == .array([0.2]))
        #expect(conv.weightKeys == ["conv0.weight", "conv0.bias"])
        #expect(file.dtype(of: "conv0.weight") == .f16 && file.dtype(of: "conv1.weight") == .f32)
        let reference = try CheckpointFile.open(Paths.fixture("tiny-expected.safetensors"))
        #expect(Set(file.keys) == Set(reference.keys))
        for key in reference.keys {
            let a = try file.tensor(key), b = try reference.tensor(key)
            #expect(a.shape == b.shape, "\(key)")
            #expect(maxDifference(a, b) == 0, "\(key)")
        }
        // Opening the .bin finds the .param beside it.
        #expect(try CheckpointFile.open(Paths.fixture("tiny.bin")).keys == file.keys)
    }

    @Test func realESRGANAnimeRRDB() throws {
        let file = try CheckpointFile.open(try Paths.asset("models/realesrgan/realesrgan-x4plus-anime.param"))
        let model = try #require(file.ncnn)
        #expect(model.layers.count == 268 && model.blobCount == 473)
        let counts = Dictionary(grouping: model.layers, by: \.type).mapValues(\.count)
        #expect(counts["Convolution"] == 96 && counts["Concat"] == 72 && counts["Eltwise"] == 24 && counts["Interp"] == 2)
        // 6 RRDB blocks × 3 dense blocks × 5 convs + first, trunk, 2 upsampling, hr, last = 96 convs, each with a bias.
        #expect(file.keys.count == 96 * 2)
        #expect(file.shape(of: "Conv_0.weight") == [64, 3, 3, 3])
        #expect(file.shape(of: "Conv_1.weight") == [32, 64, 3, 3])
        #expect(file.dtype(of: "Conv_0.weight") == .f16)
        let leaky = try #require(model.layers.first { $0.name == "Conv_1" })
        #expect(leaky.int(9) == 2 && leaky.params[10] == .array([0.2]))
        let last = try #require(model.layers.last { $0.type == "Convolution" })
        #expect(file.shape(of: last.name + ".weight") == [3, 64, 3, 3])
        let w = try file.tensor("Conv_0.weight").scalars
        #expect(w.allSatisfy { $0.isFinite && abs($0) < 10 } && w.contains { $0 != 0 })
    }

    @Test(arguments: ["x2", "x3", "x4"])
    func realAnimeVideoSRVGG(scale: String) throws {
        let file = try CheckpointFile.open(try Paths.asset("models/realesrgan/realesr-animevideov3-\(scale).param"))
        let model = try #require(file.ncnn)
        let convs = model.layers.filter { $0.type == "Convolution" }
        let prelus = model.layers.filter { $0.type == "PReLU" }
        #expect(convs.count == 18 && prelus.count == 17)
        #expect(file.shape(of: prelus[0].name + ".weight") == [64])
        // Every variant upsamples ×4 by pixel shuffle; x2 and x3 end with an Interp that scales down by 1/2, 3/4.
        #expect(file.shape(of: convs.last!.name + ".weight") == [48, 64, 3, 3])
        let shuffle = try #require(model.layers.first { $0.type == "PixelShuffle" })
        #expect(shuffle.int(0) == 4)
        let factor = Float(Int(scale.dropFirst())!)
        if factor != 4 {
            let last = try #require(model.layers.last)
            #expect(last.type == "Interp" && last.float(1) == factor / 4 && last.outputs == ["output"])
        }
    }

    @Test(arguments: [
        ("garbage", "unrecognised checkpoint format"),
        ("7767517\n1\n", "layer_count"),
        ("7767517\n2 2\nInput in 0 1 data\n", "declares 2 layers"),
        ("7767517\n1 1\nInput in 0 5 data\n", "expected \"Type Name"),
        ("7767517\n1 1\nConvolution c 0 0 0=4 1=3 5=1 6=abc\n", "non-number"),
        ("7767517\n1 1\nConvolution c 0 0 0=4 1=3 5=1 6=100\n", "weight_data_size"),
        ("7767517\n1 1\nConvolution c 0 0 0=4 1=3 5=1 6=36 -23310=3,1.0\n", "wrong element count"),
        ("7767517\n1 1\nConvolution c 0 0 0=4 1=1 5=1 6=4000\n", "layer c needs"),
        ("7767517\n1 1\nMysteryOp c 0 0\n", "MysteryOp"),
        ("7767517\n2 1\nInput a 0 1 x\nInput a 0 1 y\n", "duplicate layer name"),
        ("7767517\n1 1\nPReLU p 0 0 0=-4\n", "num_slope"),
    ])
    func garbageParams(text: String, message: String) throws {
        let dir = try TestSupportDir.make()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let param = dir + "/m.param"
        try Data(text.utf8).write(to: URL(fileURLWithPath: param))
        try Data(count: 40).write(to: URL(fileURLWithPath: dir + "/m.bin"))
        let error = expectWeightsError(dir) { _ = try CheckpointFile.open(param) }
        #expect(error?.errorDescription?.contains(message) == true, "\(error?.errorDescription ?? "")")
    }

    @Test func shortAndLongBinsNameTheProblem() throws {
        let dir = try TestSupportDir.make()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.copyItem(atPath: Paths.fixture("tiny.param"), toPath: dir + "/m.param")
        let bin = try Data(contentsOf: URL(fileURLWithPath: Paths.fixture("tiny.bin")))
        try bin.prefix(bin.count - 4).write(to: URL(fileURLWithPath: dir + "/m.bin"))
        var error = expectWeightsError(dir + "/m.bin") { _ = try CheckpointFile.open(dir + "/m.param") }
        #expect(error?.errorDescription?.contains("layer fc needs") == true, "\(error?.errorDescription ?? "")")
        try (bin + Data(count: 8)).write(to: URL(fileURLWithPath: dir + "/m.bin"))
        error = expectWeightsError(dir + "/m.bin") { _ = try CheckpointFile.open(dir + "/m.param") }
        #expect(error?.errorDescription?.contains("8 bytes left over") == true)
    }
}

enum TestSupportDir {
    static func make() throws -> String {
        let p = tempPath("dir")
        try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }
}
