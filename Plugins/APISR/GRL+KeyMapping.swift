import Foundation
import LapseNN
import LapseTensor

extension GRLNetwork {
    /// Hyper-parameters of a GRL generator, read from a state dict.
    struct Config: Sendable, Equatable {
        var embedDim: Int
        var depths: [Int]
        var headsWindow: [Int]
        var headsStripe: [Int]
        var mlpHidden: Int
        var windowSize: Int
        var stripeSize: [Int]
        var anchorDownFactor: Int
        var reconstructionFeatures: Int
        var inChannels: Int
        var outChannels: Int
    }

    /// Infers the configuration; what the state dict cannot say comes from APISR's released "tiny2" config
    /// (window 8, stripes 8×8, anchor down-factor 2, no stripe shift).
    static func inferConfig(_ r: WeightReader) throws -> Config {
        let first = try r.shape("conv_first.weight")
        guard first.count == 4 else {
            throw TransformerUpscalerError.badShape(architecture: "GRL", key: "conv_first.weight", expected: [-1, 3, 3, 3], actual: first)
        }
        let embed = first[0]
        let stages = r.sequenceLength("layers")
        guard stages > 0 else { throw TransformerUpscalerError.missingKey(architecture: "GRL", key: "layers.0.blocks.0.attn.qkv.body.weight") }
        var depths: [Int] = [], hw: [Int] = [], hs: [Int] = []
        for i in 0..<stages {
            let d = r.sequenceLength("layers.\(i).blocks")
            guard d > 0 else { throw TransformerUpscalerError.missingKey(architecture: "GRL", key: "layers.\(i).blocks.0.attn.qkv.body.weight") }
            depths.append(d)
            hw.append(try r.shape("layers.\(i).blocks.0.attn.window_attn.attn_transform.logit_scale")[0])
            hs.append(try r.shape("layers.\(i).blocks.0.attn.stripe_attn.attn_transform1.logit_scale")[0])
        }
        guard r.contains("layers.0.blocks.0.attn.qkv.body.weight") else {
            throw TransformerUpscalerError.unsupported(architecture: "GRL", detail: "only the linear qkv projection is implemented")
        }
        guard r.contains("layers.0.blocks.0.attn.anchor.body.0.reduction.weight"), r.sequenceLength("layers.0.blocks.0.attn.anchor.body") == 1 else {
            throw TransformerUpscalerError.unsupported(architecture: "GRL", detail: "only the one-stage avgpool anchor projection is implemented")
        }
        if r.contains("layers.0.blocks.0.conv.cab.0.weight") {
            throw TransformerUpscalerError.unsupported(architecture: "GRL", detail: "local_connection (CAB) blocks")
        }
        guard r.contains("conv_up1.weight"), r.contains("conv_before_upsample.0.weight") else {
            throw TransformerUpscalerError.unsupported(architecture: "GRL", detail: "only the 'nearest+conv' ×4 upsampler of APISR is implemented")
        }
        let afterBody = try r.shape("conv_after_body.weight")
        guard afterBody.count == 4, afterBody[2] == 3 else {
            throw TransformerUpscalerError.unsupported(architecture: "GRL", detail: "only conv_type '1conv' is implemented")
        }
        let hidden = try r.shape("layers.0.blocks.0.mlp.fc1.weight")[0]

        var window = 8, stripe = [8, 8], downFactor = 2
        // The release carries its size-dependent tables; their shapes pin the size-independent settings.
        if let tw = r.weights["table_w"], tw.rank == 4 { window = (tw.shape[1] + 1) / 2 }
        if let idx = r.weights["index_sh_a2w"], idx.rank == 2, let ts = r.weights["table_sh"], ts.rank == 4 {
            let ratio = Double(max(idx.shape[0], idx.shape[1])) / Double(max(1, min(idx.shape[0], idx.shape[1])))
            downFactor = Int(ratio.squareRoot().rounded())
            // table side = s + s / df - 1
            func invert(_ side: Int) -> Int { Int((Double(side + 1) / (1 + 1 / Double(downFactor))).rounded()) }
            stripe = [invert(ts.shape[1]), invert(ts.shape[2])]
        }
        let feats = try r.shape("conv_before_upsample.0.weight")[0]
        let outCh = try r.shape("conv_last.weight")[0]
        return Config(embedDim: embed, depths: depths, headsWindow: hw, headsStripe: hs, mlpHidden: hidden,
                      windowSize: window, stripeSize: stripe, anchorDownFactor: downFactor,
                      reconstructionFeatures: feats, inChannels: first[1], outChannels: outCh)
    }
}
