import Foundation
import Testing
import APISRPlugin
import LapseTensor
import LapseWeights

/// Fixture access for the GRL / DAT parity tests (made by Tools/fixtures/apisr_transformers.py).
enum TransformerFixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// Raw little-endian float32 file as a tensor of `shape`.
    static func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        let data = try Data(contentsOf: directory.appendingPathComponent(name))
        let count = Tensor.elementCount(shape)
        try #require(data.count == count * 4, "\(name): \(data.count) bytes, expected \(count * 4)")
        var values = [Float](repeating: 0, count: count)
        _ = values.withUnsafeMutableBytes { data.copyBytes(to: $0) }
        return Tensor(shape: shape, data: values)
    }

    /// The unwrapped state dict of a release-format checkpoint, read through LapseWeights.
    static func stateDict(_ name: String) throws -> [String: Tensor] {
        let weights = try Weights.load(path(name))
        var dict: [String: Tensor] = [:]
        for key in weights.keys { dict[key] = try weights.tensor(key) }
        return dict
    }

    /// max |a − b| / max |b|.
    static func relativeError(_ a: Tensor, _ b: Tensor) -> Float {
        let x = a.scalars, y = b.scalars
        var diff: Float = 0, scale: Float = 0
        for i in 0..<min(x.count, y.count) {
            diff = max(diff, abs(x[i] - y[i]))
            scale = max(scale, abs(y[i]))
        }
        return diff / max(scale, 1e-12)
    }

    /// Deterministic pseudo-random tensor in [-amplitude, amplitude] (for layout tests that need no reference).
    static func noise(_ shape: [Int], seed: UInt64, amplitude: Float) -> Tensor {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        let values = (0..<Tensor.elementCount(shape)).map { _ -> Float in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return (Float(state % 20001) / 10000 - 1) * amplitude
        }
        return Tensor(shape: shape, data: values)
    }
}

/// Shapes of APISR's released 4x GRL "tiny2" generator (keys exactly as in 4x_APISR_GRL_GAN_generator.pth).
enum GRLTiny2Layout {
    static func shapes(embed c: Int = 64, depths: [Int] = [4, 4, 4, 4], heads: Int = 2, feats: Int = 64) -> [String: [Int]] {
        var s: [String: [Int]] = [
            "conv_first.weight": [c, 3, 3, 3], "conv_first.bias": [c],
            "norm_start.weight": [c], "norm_start.bias": [c], "norm_end.weight": [c], "norm_end.bias": [c],
            "conv_after_body.weight": [c, c, 3, 3], "conv_after_body.bias": [c],
            "conv_before_upsample.0.weight": [feats, c, 3, 3], "conv_before_upsample.0.bias": [feats],
            "conv_last.weight": [3, feats, 3, 3], "conv_last.bias": [3],
            // size-dependent buffers of the release (64×64), which the port must ignore
            "table_w": [1, 15, 15, 2], "table_sh": [1, 11, 11, 2], "index_sh_a2w": [16, 64], "mask_w": [64, 64, 64],
        ]
        for name in ["conv_up1", "conv_up2", "conv_hr"] {
            s["\(name).weight"] = [feats, feats, 3, 3]; s["\(name).bias"] = [feats]
        }
        for i in 0..<depths.count {
            s["layers.\(i).conv.weight"] = [c, c, 3, 3]; s["layers.\(i).conv.bias"] = [c]
            for j in 0..<depths[i] {
                let p = "layers.\(i).blocks.\(j)"
                s["\(p).attn.qkv.body.weight"] = [3 * c, c]; s["\(p).attn.qkv.body.bias"] = [3 * c]
                s["\(p).attn.anchor.body.0.reduction.weight"] = [c / 2, c]; s["\(p).attn.anchor.body.0.reduction.bias"] = [c / 2]
                for t in ["window_attn.attn_transform", "stripe_attn.attn_transform1", "stripe_attn.attn_transform2"] {
                    s["\(p).attn.\(t).logit_scale"] = [heads, 1, 1]
                    s["\(p).attn.\(t).cpb_mlp.0.weight"] = [512, 2]; s["\(p).attn.\(t).cpb_mlp.0.bias"] = [512]
                    s["\(p).attn.\(t).cpb_mlp.2.weight"] = [heads, 512]
                }
                s["\(p).attn.proj.weight"] = [c, c]; s["\(p).attn.proj.bias"] = [c]
                s["\(p).mlp.fc1.weight"] = [2 * c, c]; s["\(p).mlp.fc1.bias"] = [2 * c]
                s["\(p).mlp.fc2.weight"] = [c, 2 * c]; s["\(p).mlp.fc2.bias"] = [c]
                for n in ["norm1", "norm2"] { s["\(p).\(n).weight"] = [c]; s["\(p).\(n).bias"] = [c] }
            }
        }
        return s
    }

    static func stateDict(seed: UInt64 = 1) -> [String: Tensor] {
        var d: [String: Tensor] = [:]
        for (i, (key, shape)) in shapes().sorted(by: { $0.key < $1.key }).enumerated() {
            let fanIn = shape.count > 1 ? shape.dropFirst().reduce(1, *) : 16
            d[key] = TransformerFixtures.noise(shape, seed: seed &+ UInt64(i), amplitude: 1.7 / Float(fanIn).squareRoot())
        }
        return d
    }
}

@Suite("GRL (APISR tiny2)")
struct GRLTests {
    @Test("matches spandrel's GRL on a seeded reduced model, 12×20 input reflect-padded inside")
    func parityWithReference() throws {
        let dict = try TransformerFixtures.stateDict("grl_tiny.pth")
        #expect(GRLNetwork.canLoad(Set(dict.keys)))
        #expect(!DATNetwork.canLoad(Set(dict.keys)))
        let net = try GRLNetwork(stateDict: dict)
        #expect(net.embedDim == 16)
        #expect(net.depths == [2, 1])
        #expect(net.heads.window == [2, 2] && net.heads.stripe == [2, 2])
        #expect(net.windowSize == 8 && net.stripeSize == [8, 8] && net.anchorDownFactor == 2)
        let input = try TransformerFixtures.tensor("grl_tiny_input.bin", shape: [1, 3, 12, 20])
        let expected = try TransformerFixtures.tensor("grl_tiny_output.bin", shape: [1, 3, 48, 80])
        let output = try net.forward(input)
        #expect(output.shape == [1, 3, 48, 80])
        let err = TransformerFixtures.relativeError(output, expected)
        #expect(err <= 1e-4, "relative error \(err)")
        // Attending the shifted windows two at a time (bounded mask memory) gives the same result.
        let grouped = try GRLNetwork(stateDict: dict, attentionMaskBudget: 2 * 2 * 64 * 64).forward(input)
        let groupedErr = TransformerFixtures.relativeError(grouped, expected)
        #expect(groupedErr <= 1e-4, "relative error with grouped windows \(groupedErr)")
    }

    @Test("infers APISR's released tiny2 configuration from the key shapes and runs any input size")
    func releaseLayout() throws {
        let net = try GRLNetwork(stateDict: GRLTiny2Layout.stateDict())
        #expect(net.embedDim == 64 && net.depths == [4, 4, 4, 4])
        #expect(net.heads.window == [2, 2, 2, 2] && net.heads.stripe == [2, 2, 2, 2])
        #expect(net.windowSize == 8 && net.stripeSize == [8, 8] && net.anchorDownFactor == 2)
        #expect(net.scale == 4)
        let out = try net.forward(TransformerFixtures.noise([1, 3, 9, 17], seed: 3, amplitude: 0.5) + 0.5)
        #expect(out.shape == [1, 3, 36, 68])
        #expect(out.scalars.allSatisfy { $0.isFinite })
        // Smaller than the padding: reflection is impossible, the reference falls back to zeros.
        let tiny = try net.forward(Tensor(repeating: 0.5, shape: [1, 3, 3, 5]))
        #expect(tiny.shape == [1, 3, 12, 20])
        #expect(tiny.scalars.allSatisfy { $0.isFinite })
    }

    @Test("names the missing or mis-shaped key")
    func errors() throws {
        var dict = GRLTiny2Layout.stateDict()
        dict["layers.2.blocks.1.attn.proj.weight"] = nil
        #expect(throws: TransformerUpscalerError.missingKey(architecture: "GRL", key: "layers.2.blocks.1.attn.proj.weight")) {
            try GRLNetwork(stateDict: dict)
        }
        dict = GRLTiny2Layout.stateDict()
        dict["layers.0.blocks.3.mlp.fc2.weight"] = Tensor(zeros: [64, 100])
        #expect(throws: TransformerUpscalerError.badShape(architecture: "GRL", key: "layers.0.blocks.3.mlp.fc2.weight",
                                                          expected: [64, 128], actual: [64, 100])) {
            try GRLNetwork(stateDict: dict)
        }
        let net = try GRLNetwork(stateDict: GRLTiny2Layout.stateDict())
        #expect(throws: TransformerUpscalerError.self) { try net.forward(Tensor(zeros: [1, 4, 8, 8])) }
        let message = TransformerUpscalerError.missingKey(architecture: "GRL", key: "norm_end.weight").localizedDescription
        #expect(message.contains("norm_end.weight") && message.contains("GRL"))
    }
}
