import Foundation
import Testing
import APISRPlugin
import LapseTensor
import LapseWeights

/// RRDB against spandrel on seeded weights saved in the release layouts (Tools/fixtures/apisr.py).
@Suite("RRDB parity")
struct RRDBParityTests {
    private func rrdb(_ name: String) throws -> RRDBNetwork {
        let model = try UpscaleModelLoader.load(path: APISRFixtures.path(name))
        return try #require(model.network as? RRDBNetwork, "\(name) loaded as \(model.network.architecture)")
    }

    @Test("4x params_ema .pth: hyper-parameters inferred, output matches spandrel")
    func fourTimes() throws {
        let net = try rrdb("rrdb_x4.pth")
        #expect(net.configuration == RRDBNetwork.Configuration(features: 12, blocks: 2, growth: 8, upsampleStages: 2,
                                                               unshuffle: 1, imageChannels: 3))
        #expect(net.scale == 4 && net.sizeMultiple == 1)
        let out = try net.forward(APISRFixtures.smallInput())
        let expected = try APISRFixtures.float32("rrdb_x4_output.bin", shape: [1, 3, 44, 52])
        #expect(out.shape == expected.shape)
        #expect(APISRFixtures.relativeError(out, expected) <= 1e-4)
    }

    @Test("the same weights as .safetensors and in the old ESRGAN layout give the same output")
    func otherContainersAndLayouts() throws {
        let expected = try APISRFixtures.float32("rrdb_x4_output.bin", shape: [1, 3, 44, 52])
        for name in ["rrdb_x4.safetensors", "rrdb_old.pth"] {
            let net = try rrdb(name)
            #expect(net.configuration.blocks == 2 && net.configuration.growth == 8 && net.scale == 4, "\(name)")
            let out = try net.forward(APISRFixtures.smallInput())
            #expect(APISRFixtures.relativeError(out, expected) <= 1e-4, "\(name)")
        }
    }

    @Test("APISR 2x layout (pixel-unshuffle, model_state_dict, _orig_mod., saved on cuda:0), odd input size")
    func twoTimesUnshuffle() throws {
        let net = try rrdb("rrdb_x2.pth")
        #expect(net.configuration.unshuffle == 2 && net.scale == 2 && net.sizeMultiple == 2)
        #expect(net.configuration.blocks == 1 && net.configuration.features == 12)
        // 11×13 is not a multiple of 2: the tiler reflect-pads like spandrel does, and crops to exactly 2×.
        let out = try APISRFixtures.runUntiled(net, APISRFixtures.smallInput())
        let expected = try APISRFixtures.float32("rrdb_x2_output.bin", shape: [1, 3, 22, 26])
        #expect(out.shape == expected.shape)
        #expect(APISRFixtures.relativeError(out, expected) <= 1e-4)
    }

    @Test("arch names: an explicit matching arch loads, a different one is refused naming both")
    func explicitArchitecture() throws {
        _ = try UpscaleModelLoader.load(path: APISRFixtures.path("rrdb_x4.pth"), architecture: "rrdb")
        let error = #expect(throws: UpscaleModelError.self) {
            _ = try UpscaleModelLoader.load(path: APISRFixtures.path("rrdb_x4.pth"), architecture: "srvgg")
        }
        let message = error?.localizedDescription ?? ""
        #expect(message.contains("rrdb_x4.pth") && message.contains("srvgg") && message.contains("rrdb"))
    }
}

@Suite("SRVGGNetCompact parity")
struct SRVGGParityTests {
    @Test("x4 params .pth and x2 model_state_dict with module. prefix match spandrel", arguments: [
        ("srvgg_x4.pth", 4, 16, 4), ("srvgg_x2.pth", 2, 8, 3),
    ])
    func parity(name: String, scale: Int, features: Int, convs: Int) throws {
        let model = try UpscaleModelLoader.load(path: APISRFixtures.path(name))
        let net = try #require(model.network as? SRVGGNetwork)
        #expect(net.scale == scale && net.configuration.features == features && net.configuration.convs == convs)
        let out = try net.forward(APISRFixtures.smallInput())
        let expected = try APISRFixtures.float32("\(name.dropLast(4))_output.bin", shape: [1, 3, 11 * scale, 13 * scale])
        #expect(out.shape == expected.shape)
        #expect(APISRFixtures.relativeError(out, expected) <= 1e-4)
    }
}
