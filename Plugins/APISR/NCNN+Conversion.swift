import Foundation
import LapseTensor
import LapseWeights

/// Turns the ncnn layer graphs that Real-ESRGAN ships (realesrgan-x4plus(-anime), realesr-animevideov3-x2/x3/x4)
/// back into PyTorch state dicts, so ncnn files go through the same detection and the same networks as `.pth` files.
///
/// The graph is checked against the architecture's layer pattern (layer types, fused activations, residual
/// coefficients, resampling modes), not just counted, so a graph that merely has the right number of convolutions
/// but computes something else is refused.
enum NCNNConversion {
    /// A converted model: a state dict in Real-ESRGAN names, plus an output resize some ncnn exports append
    /// (animevideov3-x2/x3 are the ×4 network followed by a bicubic ×0.5 / ×0.75 Interp).
    struct Converted {
        var stateDict: [String: Tensor]
        var architecture: UpscaleArchitecture
        /// Output resize as a fraction (numerator, denominator), nil when the network output is final.
        var outputResize: (numerator: Int, denominator: Int)?
    }

    static let rrdbLayers: Set<String> = ["Input", "Convolution", "Split", "Concat", "Eltwise", "BinaryOp", "Interp"]
    static let srvggLayers: Set<String> = ["Input", "Convolution", "Split", "PReLU", "PixelShuffle", "Interp", "BinaryOp"]

    static func convert(_ checkpoint: CheckpointFile, model: NCNNModel) throws -> Converted {
        let file = checkpoint.path
        let types = Set(model.layers.map(\.type))
        func fail(_ reason: String) -> UpscaleModelError { .unsupportedNCNN(file: file, reason: reason) }
        if types.contains("Concat") || types.contains("Eltwise") {
            guard types.isSubset(of: rrdbLayers) else {
                throw fail("RRDB-like graph with unexpected layer types \(types.subtracting(rrdbLayers).sorted())")
            }
            return try convertRRDB(checkpoint, model: model, fail: fail)
        }
        if types.contains("PReLU") && types.contains("PixelShuffle") {
            guard types.isSubset(of: srvggLayers) else {
                throw fail("SRVGG-like graph with unexpected layer types \(types.subtracting(srvggLayers).sorted())")
            }
            return try convertSRVGG(checkpoint, model: model, fail: fail)
        }
        let counts = Dictionary(grouping: model.layers, by: \.type).map { "\($0.key) ×\($0.value.count)" }.sorted()
        throw fail("layer types \(counts.joined(separator: ", ")) match neither RRDB (Convolution/Concat/Eltwise) "
            + "nor SRVGGNetCompact (Convolution/PReLU/PixelShuffle)")
    }

    private static func convWeights(_ checkpoint: CheckpointFile, _ layer: NCNNLayer, into dict: inout [String: Tensor],
                                     as name: String, fail: (String) -> UpscaleModelError) throws {
        guard layer.int(3, default: 1) == 1, layer.int(2, default: 1) == 1, layer.int(1) % 2 == 1,
              layer.int(4) == layer.int(1) / 2, layer.params[11] == nil || layer.int(11) == layer.int(1) else {
            throw fail("convolution \(layer.name) is not a square stride-1 'same' convolution")
        }
        dict[name + ".weight"] = try checkpoint.tensor(layer.name + ".weight")
        if layer.int(5) != 0 { dict[name + ".bias"] = try checkpoint.tensor(layer.name + ".bias") }
    }

    /// ncnn's fused activation on a convolution: 0 none, 2 leaky ReLU with slope param 10[0].
    private static func hasLeakyReLU(_ layer: NCNNLayer, slope: Float) -> Bool {
        layer.int(9) == 2 && (layer.params[10]?.array.first).map { abs($0 - slope) < 1e-6 } == true
    }

    private static func convertRRDB(_ checkpoint: CheckpointFile, model: NCNNModel,
                                    fail: (String) -> UpscaleModelError) throws -> Converted {
        let convs = model.layers.filter { $0.type == "Convolution" }
        let concats = model.layers.filter { $0.type == "Concat" }.count
        guard concats > 0, concats % 12 == 0 else {
            throw fail("\(concats) Concat layers; an RRDB block has 12 (4 per dense block)")
        }
        let blocks = concats / 12
        let denseConvs = blocks * 15
        guard convs.count >= 1 + denseConvs + 3 else {
            throw fail("\(convs.count) convolutions are too few for \(blocks) RRDB blocks")
        }
        for e in model.layers where e.type == "Eltwise" {
            guard e.int(0) == 1, e.params[1]?.array == [0.2, 1] else {
                throw fail("Eltwise \(e.name) is not the residual sum 0.2·x + y of an RRDB")
            }
        }
        let interps = model.layers.filter { $0.type == "Interp" }
        for i in interps {
            guard i.int(0) == 1, i.float(1) == 2, i.float(2) == 2 else {
                throw fail("Interp \(i.name) is not a nearest ×2 upsample")
            }
        }
        var dict: [String: Tensor] = [:]
        guard convs[0].int(9) == 0 else { throw fail("the first convolution \(convs[0].name) has a fused activation") }
        try convWeights(checkpoint, convs[0], into: &dict, as: "conv_first", fail: fail)
        for b in 0..<blocks {
            for k in 0..<3 {
                for j in 0..<5 {
                    let layer = convs[1 + b * 15 + k * 5 + j]
                    guard (j < 4) == hasLeakyReLU(layer, slope: 0.2), j < 4 || layer.int(9) == 0 else {
                        throw fail("convolution \(layer.name) should \(j < 4 ? "end in LeakyReLU 0.2" : "have no activation") "
                            + "as dense conv \(j + 1) of an RDB")
                    }
                    try convWeights(checkpoint, layer, into: &dict, as: "body.\(b).rdb\(k + 1).conv\(j + 1)", fail: fail)
                }
            }
        }
        let tail = Array(convs[(1 + denseConvs)...])
        // tail: conv_body, one conv per Interp, conv_hr, conv_last.
        guard tail.count == interps.count + 3 else {
            throw fail("after the RRDB blocks expected conv_body, \(interps.count) upsampling convs, conv_hr and conv_last; "
                + "found \(tail.count) convolutions")
        }
        guard tail[0].int(9) == 0, tail[tail.count - 1].int(9) == 0,
              tail[1..<(tail.count - 1)].allSatisfy({ hasLeakyReLU($0, slope: 0.2) }) else {
            throw fail("the convolutions after the RRDB blocks don't have RRDBNet's activations")
        }
        try convWeights(checkpoint, tail[0], into: &dict, as: "conv_body", fail: fail)
        for u in 0..<interps.count {
            try convWeights(checkpoint, tail[1 + u], into: &dict, as: "conv_up\(u + 1)", fail: fail)
        }
        try convWeights(checkpoint, tail[tail.count - 2], into: &dict, as: "conv_hr", fail: fail)
        try convWeights(checkpoint, tail[tail.count - 1], into: &dict, as: "conv_last", fail: fail)
        return Converted(stateDict: dict, architecture: .rrdb, outputResize: nil)
    }

    private static func convertSRVGG(_ checkpoint: CheckpointFile, model: NCNNModel,
                                     fail: (String) -> UpscaleModelError) throws -> Converted {
        let convs = model.layers.filter { $0.type == "Convolution" }
        let prelus = model.layers.filter { $0.type == "PReLU" }
        guard convs.count >= 2, prelus.count == convs.count - 1 else {
            throw fail("\(convs.count) convolutions and \(prelus.count) PReLU layers; SRVGGNetCompact has one PReLU after "
                + "every convolution but the last")
        }
        guard convs.allSatisfy({ $0.int(9) == 0 }) else { throw fail("a convolution has a fused activation") }
        var dict: [String: Tensor] = [:]
        for (i, conv) in convs.enumerated() {
            try convWeights(checkpoint, conv, into: &dict, as: "body.\(2 * i)", fail: fail)
            if i < prelus.count { dict["body.\(2 * i + 1).weight"] = try checkpoint.tensor(prelus[i].name + ".weight") }
        }
        guard let shuffle = model.layers.first(where: { $0.type == "PixelShuffle" }) else { throw fail("no PixelShuffle") }
        let factor = shuffle.int(0)
        // The residual: nearest upsample of the input by the same factor, added after the PixelShuffle.
        let interps = model.layers.filter { $0.type == "Interp" }
        guard let residual = interps.first, residual.int(0) == 1,
              residual.float(1) == Float(factor), residual.float(2) == Float(factor) else {
            throw fail("expected a nearest ×\(factor) Interp of the input for the residual")
        }
        var resize: (numerator: Int, denominator: Int)?
        if interps.count == 2 {
            let post = interps[1]
            let s = post.float(1)
            guard post.int(0) == 3, post.float(2) == s, post.int(6) == 0 else {
                throw fail("the final Interp \(post.name) is not a bicubic resize with equal scales")
            }
            guard let fraction = [(1, 2), (3, 4), (1, 4), (3, 2), (1, 1)].first(where: { abs(Float($0.0) / Float($0.1) - s) < 1e-6 }),
                  (factor * fraction.0) % fraction.1 == 0 else {
                throw fail("output resize ×\(s) after a ×\(factor) network does not give a whole scale")
            }
            resize = (fraction.0, fraction.1)
        } else if interps.count > 2 {
            throw fail("\(interps.count) Interp layers; expected the residual upsample and at most one output resize")
        }
        return Converted(stateDict: dict, architecture: .srvgg, outputResize: resize)
    }
}

/// A network followed by a bicubic resize of its output (ncnn exports of animevideov3-x2/x3: the ×4 network, then
/// ×0.5 / ×0.75). The resize matches ncnn's Interp (A = −0.75, half-pixel centres, no antialiasing), which is
/// PyTorch's `interpolate(mode="bicubic", align_corners=False)`.
public struct ResizedOutputNetwork: UpscaleNetwork {
    public let base: any UpscaleNetwork
    /// Output size = base output size · numerator / denominator.
    public let numerator: Int
    public let denominator: Int

    public init(base: any UpscaleNetwork, numerator: Int, denominator: Int) {
        precondition((base.scale * numerator) % denominator == 0, "resize must keep a whole scale")
        self.base = base
        self.numerator = numerator
        self.denominator = denominator
    }

    public var architecture: String { base.architecture }
    public var scale: Int { base.scale * numerator / denominator }
    public var sizeMultiple: Int { base.sizeMultiple }
    public var minimumTile: Int { base.minimumTile }
    public var bytesPerInputPixel: Int { base.bytesPerInputPixel + base.scale * base.scale * 3 * 4 * 2 }

    public func forward(_ input: Tensor) throws -> Tensor {
        let y = try base.forward(input)
        return resize(y, height: input.shape[2] * scale, width: input.shape[3] * scale, mode: .bicubic)
    }
}
