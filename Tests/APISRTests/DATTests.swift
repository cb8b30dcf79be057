import Foundation
import Testing
import APISRPlugin
import LapseTensor
import LapseWeights

/// Shapes of APISR's released 4x DAT-small generator (keys as in 4x_APISR_DAT_GAN_generator.pth).
enum DATSmallLayout {
    static func shapes(embed c: Int = 180, depths: [Int] = [6, 6, 6, 6, 6, 6], heads: Int = 6, split: [Int] = [8, 16]) -> [String: [Int]] {
        var s: [String: [Int]] = [
            "conv_first.weight": [c, 3, 3, 3], "conv_first.bias": [c],
            "before_RG.1.weight": [c], "before_RG.1.bias": [c], "norm.weight": [c], "norm.bias": [c],
            "conv_after_body.weight": [c, c, 3, 3], "conv_after_body.bias": [c],
            "upsample.0.weight": [48, c, 3, 3], "upsample.0.bias": [48],
        ]
        func bn(_ p: String, _ n: Int) {
            for k in ["weight", "bias", "running_mean", "running_var"] { s["\(p).\(k)"] = [n] }
        }
        let hidden = 2 * c
        for i in 0..<depths.count {
            s["layers.\(i).conv.weight"] = [c, c, 3, 3]; s["layers.\(i).conv.bias"] = [c]
            for j in 0..<depths[i] {
                let p = "layers.\(i).blocks.\(j)"
                let a = "\(p).attn"
                s["\(a).qkv.weight"] = [3 * c, c]; s["\(a).qkv.bias"] = [3 * c]
                s["\(a).proj.weight"] = [c, c]; s["\(a).proj.bias"] = [c]
                s["\(a).dwconv.0.weight"] = [c, 1, 3, 3]; s["\(a).dwconv.0.bias"] = [c]; bn("\(a).dwconv.1", c)
                s["\(a).channel_interaction.1.weight"] = [c / 8, c, 1, 1]; s["\(a).channel_interaction.1.bias"] = [c / 8]
                bn("\(a).channel_interaction.2", c / 8)
                s["\(a).channel_interaction.4.weight"] = [c, c / 8, 1, 1]; s["\(a).channel_interaction.4.bias"] = [c]
                s["\(a).spatial_interaction.0.weight"] = [c / 16, c, 1, 1]; s["\(a).spatial_interaction.0.bias"] = [c / 16]
                bn("\(a).spatial_interaction.1", c / 16)
                s["\(a).spatial_interaction.3.weight"] = [1, c / 16, 1, 1]; s["\(a).spatial_interaction.3.bias"] = [1]
                if j % 2 == 0 {
                    let posDim = c / 2 / 4 / 4
                    for b in 0..<2 {
                        let q = "\(a).attns.\(b).pos"
                        s["\(q).pos_proj.weight"] = [posDim, 2]; s["\(q).pos_proj.bias"] = [posDim]
                        for (n, out) in [("pos1", posDim), ("pos2", posDim), ("pos3", heads / 2)] {
                            s["\(q).\(n).0.weight"] = [posDim]; s["\(q).\(n).0.bias"] = [posDim]
                            s["\(q).\(n).2.weight"] = [out, posDim]; s["\(q).\(n).2.bias"] = [out]
                        }
                    }
                } else {
                    s["\(a).temperature"] = [heads, 1, 1]
                }
                s["\(p).ffn.fc1.weight"] = [hidden, c]; s["\(p).ffn.fc1.bias"] = [hidden]
                s["\(p).ffn.sg.norm.weight"] = [hidden / 2]; s["\(p).ffn.sg.norm.bias"] = [hidden / 2]
                s["\(p).ffn.sg.conv.weight"] = [hidden / 2, 1, 3, 3]; s["\(p).ffn.sg.conv.bias"] = [hidden / 2]
                s["\(p).ffn.fc2.weight"] = [c, hidden / 2]; s["\(p).ffn.fc2.bias"] = [c]
                for n in ["norm1", "norm2"] { s["\(p).\(n).weight"] = [c]; s["\(p).\(n).bias"] = [c] }
            }
        }
        return s
    }

    static func stateDict(seed: UInt64 = 5, depths: [Int] = [6, 6, 6, 6, 6, 6]) -> [String: Tensor] {
        var d: [String: Tensor] = [:]
        for (i, (key, shape)) in shapes(depths: depths).sorted(by: { $0.key < $1.key }).enumerated() {
            let fanIn = shape.count > 1 ? shape.dropFirst().reduce(1, *) : 16
            var t = TransformerFixtures.noise(shape, seed: seed &+ UInt64(i), amplitude: 1.7 / Float(fanIn).squareRoot())
            if key.hasSuffix("running_var") { t = t * t + 0.5 }
            d[key] = t
        }
        // The release's split-size buffer: rows (dy, dx) for dy in −7…7, dx in −15…15.
        var rpe: [Float] = []
        for dy in -7...7 { for dx in -15...15 { rpe += [Float(dy), Float(dx)] } }
        d["layers.0.blocks.0.attn.attns.0.rpe_biases"] = Tensor(shape: [rpe.count / 2, 2], data: rpe)
        return d
    }
}

@Suite("DAT (APISR DAT-small)")
struct DATTests {
    @Test("matches spandrel's DAT on a seeded reduced model, 12×20 input zero-padded inside the spatial attention")
    func parityWithReference() throws {
        let dict = try TransformerFixtures.stateDict("dat_small.pth")
        #expect(DATNetwork.canLoad(Set(dict.keys)))
        #expect(!GRLNetwork.canLoad(Set(dict.keys)))
        let net = try DATNetwork(stateDict: dict)
        #expect(net.embedDim == 64 && net.depths == [3] && net.heads == [4])
        #expect(net.splitSize == [8, 16] && net.ffnHidden == 128 && net.scale == 4)
        let input = try TransformerFixtures.tensor("dat_small_input.bin", shape: [1, 3, 12, 20])
        let expected = try TransformerFixtures.tensor("dat_small_output.bin", shape: [1, 3, 48, 80])
        let output = try net.forward(input)
        #expect(output.shape == [1, 3, 48, 80])
        let err = TransformerFixtures.relativeError(output, expected)
        #expect(err <= 1e-4, "relative error \(err)")
        // One shifted window at a time (bounded mask memory) gives the same result.
        let grouped = try DATNetwork(stateDict: dict, attentionMaskBudget: 2 * 128 * 128).forward(input)
        let groupedErr = TransformerFixtures.relativeError(grouped, expected)
        #expect(groupedErr <= 1e-4, "relative error with grouped windows \(groupedErr)")
    }

    @Test("infers APISR's released DAT-small configuration from the key shapes")
    func releaseLayout() throws {
        let net = try DATNetwork(stateDict: DATSmallLayout.stateDict())
        #expect(net.embedDim == 180 && net.depths == [6, 6, 6, 6, 6, 6] && net.heads == [6, 6, 6, 6, 6, 6])
        #expect(net.splitSize == [8, 16] && net.ffnHidden == 360 && net.scale == 4)
        // Two groups are enough to run both shifted and unshifted spatial blocks on a small odd-sized input.
        let small = try DATNetwork(stateDict: DATSmallLayout.stateDict(depths: [2, 2]))
        let out = try small.forward(TransformerFixtures.noise([1, 3, 10, 18], seed: 9, amplitude: 0.5) + 0.5)
        #expect(out.shape == [1, 3, 40, 72])
        #expect(out.scalars.allSatisfy { $0.isFinite })
    }

    @Test("names the missing or mis-shaped key")
    func errors() throws {
        var dict = DATSmallLayout.stateDict(depths: [2, 2])
        dict["layers.1.blocks.1.attn.temperature"] = nil
        // Without the temperature, group 1's head count is unknown: the key is reported.
        #expect(throws: TransformerUpscalerError.missingKey(architecture: "DAT", key: "layers.1.blocks.1.attn.temperature")) {
            try DATNetwork(stateDict: dict)
        }
        dict = DATSmallLayout.stateDict(depths: [2, 2])
        dict["layers.0.blocks.0.attn.dwconv.1.running_var"] = Tensor(zeros: [90])
        #expect(throws: TransformerUpscalerError.badShape(architecture: "DAT", key: "layers.0.blocks.0.attn.dwconv.1.running_var",
                                                          expected: [180], actual: [90])) {
            try DATNetwork(stateDict: dict)
        }
        dict = DATSmallLayout.stateDict(depths: [2, 2])
        dict["conv_last.weight"] = Tensor(zeros: [3, 64, 3, 3])
        #expect(throws: TransformerUpscalerError.self) { try DATNetwork(stateDict: dict) }
    }
}
