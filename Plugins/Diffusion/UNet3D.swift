import Foundation
import LapseNN
import LapseTensor
import LapseWeights

/// Configuration of ModelScope's text-to-video UNet (diffusers' `UNet3DConditionModel`), decoded from a diffusers
/// `config.json` (keys as diffusers names them). Missing keys take text-to-video-ms-1.7b's values.
public struct UNet3DConditionConfig: Codable, Sendable, Equatable {
    public var inChannels = 4
    public var outChannels = 4
    public var blockOutChannels = [320, 640, 1280, 1280]
    public var layersPerBlock = 2
    public var downBlockTypes = ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"]
    public var upBlockTypes = ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"]
    public var crossAttentionDim = 1024
    /// Unlike the 2-D UNet's misnomer, the 3-D blocks use this as the width of each head: a block of C channels
    /// has C / attention_head_dim heads (64 for ModelScope: 5, 10, 20, 20 heads); `transformer_in` has 8 heads.
    public var attentionHeadDim: PerBlockInt = .all(64)
    /// Refused when set, as diffusers refuses it for this model.
    public var numAttentionHeads: PerBlockInt?
    public var normNumGroups = 32
    public var normEps = 1e-5
    public var downsamplePadding = 1
    public var midBlockScaleFactor = 1.0
    public var actFn = "silu"
    public var sampleSize: Int?
    /// An extra timestep-condition projection; refused when set (no ModelScope checkpoint has one).
    public var timeCondProjDim: Int?

    /// text-to-video-ms-1.7b.
    public static let modelScope = UNet3DConditionConfig()

    /// text-to-video-ms-1.7b's values.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case inChannels = "in_channels", outChannels = "out_channels", blockOutChannels = "block_out_channels"
        case layersPerBlock = "layers_per_block", downBlockTypes = "down_block_types", upBlockTypes = "up_block_types"
        case crossAttentionDim = "cross_attention_dim", attentionHeadDim = "attention_head_dim"
        case numAttentionHeads = "num_attention_heads", normNumGroups = "norm_num_groups", normEps = "norm_eps"
        case downsamplePadding = "downsample_padding", midBlockScaleFactor = "mid_block_scale_factor", actFn = "act_fn"
        case sampleSize = "sample_size", timeCondProjDim = "time_cond_proj_dim"
    }

    /// Decodes diffusers' keys; absent keys keep text-to-video-ms-1.7b's values.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = UNet3DConditionConfig()
        inChannels = try c.decodeIfPresent(Int.self, forKey: .inChannels) ?? d.inChannels
        outChannels = try c.decodeIfPresent(Int.self, forKey: .outChannels) ?? d.outChannels
        blockOutChannels = try c.decodeIfPresent([Int].self, forKey: .blockOutChannels) ?? d.blockOutChannels
        layersPerBlock = try c.decodeIfPresent(Int.self, forKey: .layersPerBlock) ?? d.layersPerBlock
        downBlockTypes = try c.decodeIfPresent([String].self, forKey: .downBlockTypes) ?? d.downBlockTypes
        upBlockTypes = try c.decodeIfPresent([String].self, forKey: .upBlockTypes) ?? d.upBlockTypes
        crossAttentionDim = try c.decodeIfPresent(Int.self, forKey: .crossAttentionDim) ?? d.crossAttentionDim
        attentionHeadDim = try c.decodeIfPresent(PerBlockInt.self, forKey: .attentionHeadDim) ?? d.attentionHeadDim
        numAttentionHeads = try c.decodeIfPresent(PerBlockInt.self, forKey: .numAttentionHeads)
        normNumGroups = try c.decodeIfPresent(Int.self, forKey: .normNumGroups) ?? d.normNumGroups
        normEps = try c.decodeIfPresent(Double.self, forKey: .normEps) ?? d.normEps
        downsamplePadding = try c.decodeIfPresent(Int.self, forKey: .downsamplePadding) ?? d.downsamplePadding
        midBlockScaleFactor = try c.decodeIfPresent(Double.self, forKey: .midBlockScaleFactor) ?? d.midBlockScaleFactor
        actFn = try c.decodeIfPresent(String.self, forKey: .actFn) ?? d.actFn
        sampleSize = try c.decodeIfPresent(Int.self, forKey: .sampleSize)
        timeCondProjDim = try c.decodeIfPresent(Int.self, forKey: .timeCondProjDim)
    }

    /// Decodes a diffusers `config.json`.
    public static func decode(json data: Data) throws -> UNet3DConditionConfig {
        try JSONDecoder().decode(UNet3DConditionConfig.self, from: data)
    }

    /// Width of each attention head in block `index` (up blocks use the reversed list).
    func headDim(_ index: Int) -> Int { attentionHeadDim.value(index) }

    /// The configuration of the spatial layers alone, which are exactly a `UNet2DConditionModel`'s (same tensor
    /// names): 2-D block types, heads C / head width, linear projections, one transformer block per layer.
    public var spatialConfig: UNet2DConditionConfig {
        var c = UNet2DConditionConfig()
        c.inChannels = inChannels
        c.outChannels = outChannels
        c.blockOutChannels = blockOutChannels
        c.layersPerBlock = layersPerBlock
        c.downBlockTypes = downBlockTypes.map { $0.replacingOccurrences(of: "3D", with: "2D") }
        c.upBlockTypes = upBlockTypes.map { $0.replacingOccurrences(of: "3D", with: "2D") }
        c.midBlockType = "UNetMidBlock2DCrossAttn"
        c.crossAttentionDim = crossAttentionDim
        let heads = blockOutChannels.indices.map { blockOutChannels[$0] / max(headDim($0), 1) }
        c.attentionHeadDim = .perBlock(heads)
        c.numAttentionHeads = .perBlock(heads)
        c.transformerLayersPerBlock = 1
        c.normNumGroups = normNumGroups
        c.normEps = normEps
        c.flipSinToCos = true
        c.freqShift = 0
        c.downsamplePadding = downsamplePadding
        c.useLinearProjection = true
        c.actFn = actFn
        c.sampleSize = sampleSize ?? c.sampleSize
        return c
    }

    /// Refuses what diffusers' class refuses or this port does not implement, naming the field.
    public func validate() throws {
        func bad(_ field: String, _ reason: String) -> DiffusionError {
            .badConfig(component: "UNet3DConditionModel", field: field, reason: reason)
        }
        for t in downBlockTypes where !["CrossAttnDownBlock3D", "DownBlock3D"].contains(t) {
            throw bad("down_block_types", "\"\(t)\" is not CrossAttnDownBlock3D or DownBlock3D")
        }
        for t in upBlockTypes where !["CrossAttnUpBlock3D", "UpBlock3D"].contains(t) {
            throw bad("up_block_types", "\"\(t)\" is not CrossAttnUpBlock3D or UpBlock3D")
        }
        if numAttentionHeads != nil {
            throw bad("num_attention_heads", "must be absent (diffusers' UNet3DConditionModel refuses it; heads follow attention_head_dim)")
        }
        if timeCondProjDim != nil { throw bad("time_cond_proj_dim", "a timestep-condition projection is not supported") }
        guard midBlockScaleFactor == 1 else { throw bad("mid_block_scale_factor", "\(midBlockScaleFactor) is not 1") }
        for i in blockOutChannels.indices where headDim(i) <= 0 || blockOutChannels[i] % headDim(i) != 0 {
            throw bad("attention_head_dim", "\(blockOutChannels[i]) channels of block \(i) do not split into heads of \(headDim(i))")
        }
        try spatialConfig.validate()
    }
}

/// ModelScope's temporal convolution block (diffusers' `TemporalConvLayer`): four times GroupNorm → SiLU → a
/// (3, 1, 1) convolution along the frames, added to the input.
struct TemporalConvLayer: Sendable {
    let norms: [NormLayer]
    let convs: [(weight: Tensor, bias: Tensor)]

    init(_ read: WeightReader, _ prefix: String, channels: Int, groups: Int) throws {
        // conv1 = [GroupNorm, SiLU, Conv3d]; conv2-4 = [GroupNorm, SiLU, Dropout, Conv3d].
        norms = try (1...4).map { try NormLayer(read, prefix + "conv\($0).0.", channels: channels, eps: 1e-5, groups: groups) }
        convs = try (1...4).map { k in
            let p = prefix + "conv\(k).\(k == 1 ? 2 : 3)."
            return (try read(p + "weight", [channels, channels, 3, 1, 1]), try read(p + "bias", [channels]))
        }
    }

    /// `x` `[B·F, C, H, W]` holding `frames` consecutive frames per video.
    func callAsFunction(_ x: Tensor, frames: Int) throws -> Tensor {
        let bf = x.shape[0], c = x.shape[1], hgt = x.shape[2], wid = x.shape[3]
        guard frames >= 1, bf % frames == 0 else {
            throw DiffusionError.badInput(component: "TemporalConvLayer", reason: "batch \(bf) is not a multiple of \(frames) frames")
        }
        let video = permute(x.reshaped([bf / frames, frames, c, hgt, wid]), [0, 2, 1, 3, 4])  // [B, C, F, H, W]
        var h = video
        for (norm, conv) in zip(norms, convs) {
            h = conv3d(norm.group(h, activation: .silu), weight: conv.weight, bias: conv.bias, padding: [1, 0, 0])
        }
        return permute(video + h, [0, 2, 1, 3, 4]).reshaped(x.shape)
    }
}

/// The temporal layers of `UNet3DConditionModel`: `transformer_in` after conv_in, a `TemporalConvLayer` after
/// every resnet and a `TransformerTemporalModel` after every spatial transformer (across-frame GroupNorm, no
/// frame positions), in the down, mid and up blocks.
struct UNet3DTemporalLayers: UNetTemporalLayers {
    let transformerIn: MotionModule
    let downConvs: [[TemporalConvLayer]], downAttentions: [[MotionModule]]
    let midConvs: [TemporalConvLayer], midAttention: MotionModule
    let upConvs: [[TemporalConvLayer]], upAttentions: [[MotionModule]]

    /// `encoderOnly` reads no up-path layers; `transformerInHeads` heads of `attention_head_dim` make
    /// `transformer_in`'s inner width (diffusers hard-codes 8; MS-Vid2Vid-XL's `num_heads`).
    init(config: UNet3DConditionConfig, read: WeightReader, encoderOnly: Bool = false, transformerInHeads: Int = 8) throws {
        let ch = config.blockOutChannels, groups = config.normNumGroups, lpb = config.layersPerBlock
        func attention(_ prefix: String, _ channels: Int, headDim: Int) throws -> MotionModule {
            try MotionModule(read, prefix, channels: channels, heads: channels / headDim, groups: groups, layers: 1,
                             maxLength: nil, normMode: .acrossFrames)
        }
        func conv(_ prefix: String, _ channels: Int) throws -> TemporalConvLayer {
            try TemporalConvLayer(read, prefix, channels: channels, groups: groups)
        }
        transformerIn = try MotionModule(read, "transformer_in.", channels: ch[0], innerDim: transformerInHeads * config.headDim(0),
                                         heads: transformerInHeads,
                                         groups: groups, layers: 1, maxLength: nil, normMode: .acrossFrames)
        downConvs = try ch.indices.map { i in try (0..<lpb).map { try conv("down_blocks.\(i).temp_convs.\($0).", ch[i]) } }
        downAttentions = try ch.indices.map { i in
            guard config.downBlockTypes[i].hasPrefix("CrossAttn") else { return [] }
            return try (0..<lpb).map { try attention("down_blocks.\(i).temp_attentions.\($0).", ch[i], headDim: config.headDim(i)) }
        }
        let top = ch[ch.count - 1]
        midConvs = try (0..<2).map { try conv("mid_block.temp_convs.\($0).", top) }
        midAttention = try attention("mid_block.temp_attentions.0.", top, headDim: config.headDim(ch.count - 1))
        if encoderOnly {
            upConvs = []
            upAttentions = []
            return
        }
        let reversed = Array(ch.reversed())
        upConvs = try reversed.indices.map { i in try (0...lpb).map { try conv("up_blocks.\(i).temp_convs.\($0).", reversed[i]) } }
        upAttentions = try reversed.indices.map { i in
            guard config.upBlockTypes[i].hasPrefix("CrossAttn") else { return [] }
            return try (0...lpb).map {
                try attention("up_blocks.\(i).temp_attentions.\($0).", reversed[i], headDim: config.headDim(ch.count - 1 - i))
            }
        }
    }

    func afterConvIn(_ h: Tensor, frames: Int) throws -> Tensor { try transformerIn(h, frames: frames) }

    func afterResnet(_ h: Tensor, at site: UNetLayerSite, frames: Int) throws -> Tensor {
        switch site {
        case .down(let i, let j): return try downConvs[i][j](h, frames: frames)
        case .mid(let j): return try midConvs[j](h, frames: frames)
        case .up(let i, let j): return try upConvs[i][j](h, frames: frames)
        }
    }

    func afterLayer(_ h: Tensor, at site: UNetLayerSite, frames: Int) throws -> Tensor {
        switch site {
        case .down(let i, let j): return downAttentions[i].isEmpty ? h : try downAttentions[i][j](h, frames: frames)
        case .mid: return try midAttention(h, frames: frames)
        case .up(let i, let j): return upAttentions[i].isEmpty ? h : try upAttentions[i][j](h, frames: frames)
        }
    }
}

/// What `UNet3DConditionModel.encoderFeatures` returns: the encoder half's activations, per frame `[B·F, C, h, w]`.
public struct UNet3DEncoderFeatures: Sendable {
    /// diffusers' `down_block_res_samples`: conv_in + transformer_in (+ the added tensor), then each down layer's
    /// output (resnet, temporal conv, spatial and temporal transformers), then each downsampler's output — 12 for
    /// text-to-video-ms-1.7b, channels 320×4, 640×3, 1280×5.
    public var residuals: [Tensor]
    /// The mid block's output.
    public var mid: Tensor
}

/// ModelScope's text-to-video UNet (diffusers' `UNet3DConditionModel`, text-to-video-ms-1.7b): the spatial layers
/// of an SD-style UNet (run per frame) interleaved with temporal convolutions and temporal transformers. Runs
/// `[B, C, F, h, w]` latents.
///
/// Built for reuse: `encoderFeatures` runs the encoder half alone (StreamingT2V's CAM branch), and the forward
/// takes `UNetHooks` that rewrite the skips, the mid output and each spatial cross-attention's context.
public struct UNet3DConditionModel: Sendable {
    /// The model's configuration.
    public let config: UNet3DConditionConfig
    /// The spatial layers (conv_in, time embedding, resnets, spatial transformers, samplers, output head).
    let spatial: UNet2DConditionModel
    let temporal: UNet3DTemporalLayers

    /// Builds the model from diffusers-named weights (`down_blocks.0.temp_convs.0.conv1.2.weight`, …); extra
    /// tensors are ignored.
    public init(config: UNet3DConditionConfig, weights: Weights) throws {
        try self.init(config: config, weights: weights, component: "UNet3DConditionModel")
    }

    /// The same with the variations of models that share this topology (MS-Vid2Vid-XL): their samplers and the
    /// heads of `transformer_in`; `component` names the model in errors.
    init(config: UNet3DConditionConfig, weights: Weights, component: String, resampling: UNetResampling = .diffusers,
         transformerInHeads: Int = 8) throws {
        try config.validate()
        self.config = config
        spatial = try UNet2DConditionModel(config: config.spatialConfig, weights: weights, component: component,
                                           resampling: resampling)
        temporal = try UNet3DTemporalLayers(config: config, read: WeightReader(weights, component: component),
                                            transformerInHeads: transformerInHeads)
    }

    /// The encoder half alone (conv_in, time embedding, transformer_in, down and mid blocks) from diffusers-named
    /// weights that need hold nothing else: StreamingT2V's CAM branch, which only `encoderFeatures` runs (the forward
    /// throws).
    public init(encoderOf config: UNet3DConditionConfig, weights: Weights) throws {
        try config.validate()
        self.config = config
        spatial = try UNet2DConditionModel(config: config.spatialConfig, weights: weights, component: "UNet3DConditionModel (encoder)",
                                           encoderOnly: true)
        temporal = try UNet3DTemporalLayers(config: config, read: WeightReader(weights, component: "UNet3DConditionModel (encoder)"),
                                            encoderOnly: true)
    }

    /// Noise prediction for `sample` `[B, C, F, h, w]` at one timestep for all videos, with text `context`
    /// `[B, S, D]` (repeated for every frame, as diffusers does) or already per frame `[B·F, S, D]`; `hooks`
    /// rewrite the skips, the mid output and the cross-attention contexts on the way.
    public func callAsFunction(_ sample: Tensor, timestep: Float, context: Tensor, hooks: UNetHooks? = nil) throws -> Tensor {
        let (frames, ctx, shape) = try perFrame(sample, context: context)
        let out = try spatial.forward(frames, timesteps: [timestep], context: ctx, temporal: temporal, frames: shape.f,
                                      hooks: hooks, component: "UNet3DConditionModel")
        return permute(out.reshaped([shape.b, shape.f, out.shape[1], shape.h, shape.w]), [0, 2, 1, 3, 4])
    }

    /// The encoder half for `sample` `[B, C, F, h, w]` (context as for the forward): the down-block residuals and
    /// the mid-block output, per frame. `addAfterTransformerIn` `[B·F, block_out_channels[0], h, w]`, if given, is
    /// added to the conv_in + transformer_in output before anything else sees it (StreamingT2V's CAM adds its
    /// conditioning-frame embedding there), so it is part of the first residual.
    public func encoderFeatures(_ sample: Tensor, timestep: Float, context: Tensor,
                                addAfterTransformerIn: Tensor? = nil) throws -> UNet3DEncoderFeatures {
        let (frames, ctx, shape) = try perFrame(sample, context: context)
        let conditioning = try spatial.prepare(frames, timesteps: [timestep], context: ctx, component: "UNet3DConditionModel")
        let (skips, mid) = try spatial.encode(frames, conditioning, temporal: temporal, frames: shape.f, hooks: nil,
                                              addAfterStem: addAfterTransformerIn)
        return UNet3DEncoderFeatures(residuals: skips, mid: mid)
    }

    /// `[B, C, F, h, w]` as `[B·F, C, h, w]` and the context per frame.
    private func perFrame(_ sample: Tensor, context: Tensor) throws -> (Tensor, Tensor, (b: Int, f: Int, h: Int, w: Int)) {
        guard sample.rank == 5, sample.shape[1] == config.inChannels else {
            throw DiffusionError.badInput(component: "UNet3DConditionModel",
                                          reason: "sample must be [B, \(config.inChannels), F, h, w], got \(sample.shape)")
        }
        let b = sample.shape[0], c = sample.shape[1], f = sample.shape[2], h = sample.shape[3], w = sample.shape[4]
        guard context.rank == 3, context.shape[0] == b || context.shape[0] == b * f else {
            throw DiffusionError.badInput(component: "UNet3DConditionModel",
                                          reason: "context must be [\(b), S, D] or [\(b * f), S, D], got \(context.shape)")
        }
        let frames = permute(sample, [0, 2, 1, 3, 4]).reshaped([b * f, c, h, w])
        let ctx = context.shape[0] == b * f ? context : UNetMotionModel.repeatInterleave(context, count: f)
        return (frames, ctx, (b, f, h, w))
    }
}

extension UNet3DConditionConfig {
    /// `base` with the sizes the diffusers-named `weights` reveal: input/output channels, block widths, layers per
    /// block, which blocks have attention and the cross-attention width. Head widths stay `base`'s.
    public static func inferred(from weights: Weights, base: UNet3DConditionConfig = .modelScope) -> UNet3DConditionConfig {
        var c = base
        guard let convIn = weights.shape(of: "conv_in.weight"), convIn.count == 4 else { return c }
        c.inChannels = convIn[1]
        if let out = weights.shape(of: "conv_out.weight") { c.outChannels = out[0] }
        guard let layout = UNetBlockLayout(weights) else { return c }
        c.blockOutChannels = layout.widths
        c.layersPerBlock = layout.layersPerBlock
        c.downBlockTypes = layout.downHasAttention.map { $0 ? "CrossAttnDownBlock3D" : "DownBlock3D" }
        c.upBlockTypes = layout.upHasAttention.map { $0 ? "CrossAttnUpBlock3D" : "UpBlock3D" }
        if let key = weights.keys.first(where: { $0.hasSuffix("attentions.0.transformer_blocks.0.attn2.to_k.weight") && !$0.contains("temp_") }),
           let s = weights.shape(of: key), s.count == 2 {
            c.crossAttentionDim = s[1]
        }
        return c
    }

    /// Whether diffusers-named `weights` are a `UNet3DConditionModel`'s (it alone has `transformer_in`).
    public static func matches(_ weights: Weights) -> Bool { weights.contains("transformer_in.proj_in.weight") }
}
