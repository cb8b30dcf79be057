import Foundation
import LapseNN
import LapseTensor

extension DATNetwork {
    /// Hyper-parameters of a DAT generator, read from a state dict.
    struct Config: Sendable, Equatable {
        var embedDim: Int
        var depths: [Int]
        var heads: [Int]
        var splitSize: [Int]
        var ffnHidden: Int
        var scale: Int
        var inChannels: Int
    }

    /// Infers the configuration. The split size comes from the `rpe_biases` buffer when the file has it,
    /// otherwise from APISR's DAT-small release ([8, 16]).
    static func inferConfig(_ r: WeightReader) throws -> Config {
        let first = try r.shape("conv_first.weight")
        guard first.count == 4 else {
            throw TransformerUpscalerError.badShape(architecture: "DAT", key: "conv_first.weight", expected: [-1, 3, 3, 3], actual: first)
        }
        let embed = first[0]
        let groups = r.sequenceLength("layers")
        guard groups > 0 else { throw TransformerUpscalerError.missingKey(architecture: "DAT", key: "layers.0.blocks.0.attn.qkv.weight") }
        var depths: [Int] = [], heads: [Int] = []
        for i in 0..<groups {
            let d = r.sequenceLength("layers.\(i).blocks")
            guard d > 0 else { throw TransformerUpscalerError.missingKey(architecture: "DAT", key: "layers.\(i).blocks.0.attn.qkv.weight") }
            depths.append(d)
            if d >= 2 {
                heads.append(try r.shape("layers.\(i).blocks.1.attn.temperature")[0])
            } else {
                heads.append(try r.shape("layers.\(i).blocks.0.attn.attns.0.pos.pos3.2.weight")[0] * 2)
            }
        }
        guard r.contains("conv_after_body.weight") else {
            throw TransformerUpscalerError.unsupported(architecture: "DAT", detail: "only resi_connection '1conv' is implemented")
        }
        guard r.contains("upsample.0.weight"), !r.contains("conv_last.weight") else {
            throw TransformerUpscalerError.unsupported(architecture: "DAT", detail: "only the 'pixelshuffledirect' upsampler of APISR is implemented")
        }
        let up = try r.shape("upsample.0.weight")
        let scale = Int(Double(up[0] / first[1]).squareRoot().rounded())
        guard scale * scale * first[1] == up[0] else {
            throw TransformerUpscalerError.badShape(architecture: "DAT", key: "upsample.0.weight",
                                                    expected: [scale * scale * first[1], embed, 3, 3], actual: up)
        }
        var split = [8, 16]
        if let rpe = r.weights["layers.0.blocks.0.attn.attns.0.rpe_biases"], rpe.rank == 2, rpe.shape[1] == 2, rpe.shape[0] > 0 {
            // The last row holds (H_sp − 1, W_sp − 1).
            let last = rpe.scalars.suffix(2).map { Int($0.rounded()) + 1 }
            split = last
        }
        let hidden = try r.shape("layers.0.blocks.0.ffn.fc1.weight")[0]
        return Config(embedDim: embed, depths: depths, heads: heads, splitSize: split, ffnHidden: hidden,
                      scale: scale, inChannels: first[1])
    }
}
