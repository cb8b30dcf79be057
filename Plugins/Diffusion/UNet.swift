import Foundation
import LapseNN
import LapseTensor
import LapseWeights

/// A config value that diffusers allows as one integer for every block or as a list with one per block.
public enum PerBlockInt: Codable, Sendable, Equatable {
    case all(Int)
    case perBlock([Int])

    /// The value for block `index` of `count`.
    public func value(_ index: Int) -> Int {
        switch self {
        case .all(let v): return v
        case .perBlock(let vs): return vs[min(index, vs.count - 1)]
        }
    }

    /// Decodes an integer or an integer list.
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let v = try? c.decode(Int.self) { self = .all(v) } else { self = .perBlock(try c.decode([Int].self)) }
    }

    /// Encodes as diffusers writes it: a bare integer or a list.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .all(let v): try c.encode(v)
        case .perBlock(let vs): try c.encode(vs)
        }
    }
}

/// Configuration of a Stable Diffusion 1.x-style `UNet2DConditionModel`, decoded from a diffusers `config.json`
/// (keys as diffusers names them). Missing keys take SD1.5's values.
public struct UNet2DConditionConfig: Codable, Sendable, Equatable {
    public var inChannels = 4
    public var outChannels = 4
    public var blockOutChannels = [320, 640, 1280, 1280]
    public var layersPerBlock = 2
    public var downBlockTypes = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
    public var upBlockTypes = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    public var midBlockType: String? = "UNetMidBlock2DCrossAttn"
    public var crossAttentionDim = 768
    /// diffusers' historical misnomer: for SD1.x this is the number of heads (8), not their width.
    public var attentionHeadDim: PerBlockInt = .all(8)
    /// Number of heads when given explicitly; otherwise `attention_head_dim` is used, as diffusers does.
    public var numAttentionHeads: PerBlockInt?
    public var transformerLayersPerBlock = 1
    public var normNumGroups = 32
    public var normEps = 1e-5
    public var sampleSize = 64
    public var flipSinToCos = true
    public var freqShift = 0
    public var downsamplePadding = 1
    public var useLinearProjection = false
    public var actFn = "silu"

    /// Stable Diffusion 1.5.
    public static let sd15 = UNet2DConditionConfig()

    /// SD1.5's values.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case inChannels = "in_channels", outChannels = "out_channels", blockOutChannels = "block_out_channels"
        case layersPerBlock = "layers_per_block", downBlockTypes = "down_block_types", upBlockTypes = "up_block_types"
        case midBlockType = "mid_block_type", crossAttentionDim = "cross_attention_dim"
        case attentionHeadDim = "attention_head_dim", numAttentionHeads = "num_attention_heads"
        case transformerLayersPerBlock = "transformer_layers_per_block", normNumGroups = "norm_num_groups"
        case normEps = "norm_eps", sampleSize = "sample_size", flipSinToCos = "flip_sin_to_cos", freqShift = "freq_shift"
        case downsamplePadding = "downsample_padding", useLinearProjection = "use_linear_projection", actFn = "act_fn"
    }

    /// Decodes diffusers' keys; absent keys keep SD1.5's values (diffusers omits defaults in older configs).
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = UNet2DConditionConfig()
        inChannels = try c.decodeIfPresent(Int.self, forKey: .inChannels) ?? d.inChannels
        outChannels = try c.decodeIfPresent(Int.self, forKey: .outChannels) ?? d.outChannels
        blockOutChannels = try c.decodeIfPresent([Int].self, forKey: .blockOutChannels) ?? d.blockOutChannels
        layersPerBlock = try c.decodeIfPresent(Int.self, forKey: .layersPerBlock) ?? d.layersPerBlock
        downBlockTypes = try c.decodeIfPresent([String].self, forKey: .downBlockTypes) ?? d.downBlockTypes
        upBlockTypes = try c.decodeIfPresent([String].self, forKey: .upBlockTypes) ?? d.upBlockTypes
        midBlockType = c.contains(.midBlockType) ? try c.decodeIfPresent(String.self, forKey: .midBlockType) : d.midBlockType
        crossAttentionDim = try c.decodeIfPresent(Int.self, forKey: .crossAttentionDim) ?? d.crossAttentionDim
        attentionHeadDim = try c.decodeIfPresent(PerBlockInt.self, forKey: .attentionHeadDim) ?? d.attentionHeadDim
        numAttentionHeads = try c.decodeIfPresent(PerBlockInt.self, forKey: .numAttentionHeads)
        transformerLayersPerBlock = try c.decodeIfPresent(Int.self, forKey: .transformerLayersPerBlock) ?? 1
        normNumGroups = try c.decodeIfPresent(Int.self, forKey: .normNumGroups) ?? d.normNumGroups
        normEps = try c.decodeIfPresent(Double.self, forKey: .normEps) ?? d.normEps
        sampleSize = try c.decodeIfPresent(Int.self, forKey: .sampleSize) ?? d.sampleSize
        flipSinToCos = try c.decodeIfPresent(Bool.self, forKey: .flipSinToCos) ?? d.flipSinToCos
        freqShift = try c.decodeIfPresent(Int.self, forKey: .freqShift) ?? d.freqShift
        downsamplePadding = try c.decodeIfPresent(Int.self, forKey: .downsamplePadding) ?? d.downsamplePadding
        useLinearProjection = try c.decodeIfPresent(Bool.self, forKey: .useLinearProjection) ?? d.useLinearProjection
        actFn = try c.decodeIfPresent(String.self, forKey: .actFn) ?? d.actFn
    }

    /// Decodes a diffusers `config.json`.
    public static func decode(json data: Data) throws -> UNet2DConditionConfig {
        try JSONDecoder().decode(UNet2DConditionConfig.self, from: data)
    }

    /// Heads of the spatial transformers of down block `index` (up blocks use the reversed list).
    func heads(_ index: Int) -> Int { (numAttentionHeads ?? attentionHeadDim).value(index) }

    func validate() throws {
        func bad(_ field: String, _ reason: String) -> DiffusionError {
            .badConfig(component: "UNet2DConditionModel", field: field, reason: reason)
        }
        let n = blockOutChannels.count
        guard n >= 1, blockOutChannels.allSatisfy({ $0 > 0 && $0 % normNumGroups == 0 }) else {
            throw bad("block_out_channels", "\(blockOutChannels) must be non-empty and divisible by norm_num_groups \(normNumGroups)")
        }
        guard downBlockTypes.count == n, upBlockTypes.count == n else {
            throw bad("down_block_types", "\(downBlockTypes.count) down and \(upBlockTypes.count) up blocks for \(n) block_out_channels")
        }
        for t in downBlockTypes where !["CrossAttnDownBlock2D", "DownBlock2D"].contains(t) {
            throw bad("down_block_types", "\"\(t)\" is not CrossAttnDownBlock2D or DownBlock2D")
        }
        for t in upBlockTypes where !["CrossAttnUpBlock2D", "UpBlock2D"].contains(t) {
            throw bad("up_block_types", "\"\(t)\" is not CrossAttnUpBlock2D or UpBlock2D")
        }
        if let midBlockType, midBlockType != "UNetMidBlock2DCrossAttn" {
            throw bad("mid_block_type", "\"\(midBlockType)\" is not UNetMidBlock2DCrossAttn")
        }
        guard actFn == "silu" else { throw bad("act_fn", "\"\(actFn)\" is not silu") }
        guard layersPerBlock >= 1, transformerLayersPerBlock >= 1 else {
            throw bad("layers_per_block", "layers_per_block \(layersPerBlock) and transformer_layers_per_block \(transformerLayersPerBlock) must be ≥ 1")
        }
        for i in 0..<n where blockOutChannels[i] % heads(i) != 0 {
            throw bad("attention_head_dim", "\(blockOutChannels[i]) channels of block \(i) do not split into \(heads(i)) heads")
        }
    }
}

/// Stable Diffusion's denoising UNet (diffusers' `UNet2DConditionModel`, SD1.x block types), optionally with
/// AnimateDiff motion modules (see `UNetMotionModel`). Inputs are batches of frames `[N, C, h, w]` with one text
/// context `[N, S, D]` and one timestep per item.
public struct UNet2DConditionModel: Sendable {
    /// The model's configuration.
    public let config: UNet2DConditionConfig

    struct DownBlock: Sendable {
        var resnets: [ResnetBlock2D]
        var attentions: [SpatialTransformer]
        var downsampler: Conv2DLayer?
    }

    struct UpBlock: Sendable {
        var resnets: [ResnetBlock2D]
        var attentions: [SpatialTransformer]
        var upsampler: Upsample2DLayer?
    }

    let timeLinear1: LinearLayer, timeLinear2: LinearLayer
    let convIn: Conv2DLayer
    let downBlocks: [DownBlock]
    let midResnets: [ResnetBlock2D]
    let midAttention: SpatialTransformer?
    let upBlocks: [UpBlock]
    /// Absent in an encoder-only UNet (StreamingT2V's CAM branch), whose forward throws.
    let normOut: NormLayer?, convOut: Conv2DLayer?

    /// Builds the UNet from diffusers-named weights, or from a whole LDM single-file checkpoint
    /// (`model.diffusion_model.…`, mapped by `diffusersWeights(from:config:)`). Extra tensors are ignored.
    public init(config: UNet2DConditionConfig, weights all: Weights) throws {
        try self.init(config: config, weights: all, component: "UNet2DConditionModel")
    }

    /// `component` names the model in errors (the 3-D UNet builds its spatial layers through here); `encoderOnly`
    /// reads no up path or output head (`encode` works, the forward throws); `resampling` changes how the samplers
    /// pad and crop (MS-Vid2Vid-XL).
    init(config: UNet2DConditionConfig, weights all: Weights, component: String, encoderOnly: Bool = false,
         resampling: UNetResampling = .diffusers) throws {
        try config.validate()
        self.config = config
        let read = WeightReader(Self.diffusersWeights(from: all, config: config), component: component)
        let ch = config.blockOutChannels, lpb = config.layersPerBlock, groups = config.normNumGroups
        let eps = Float(config.normEps), temb = ch[0] * 4, ctx = config.crossAttentionDim
        let tl = config.transformerLayersPerBlock
        timeLinear1 = try LinearLayer(read, "time_embedding.linear_1.", in: ch[0], out: temb)
        timeLinear2 = try LinearLayer(read, "time_embedding.linear_2.", in: temb, out: temb)
        convIn = try Conv2DLayer(read, "conv_in.", in: config.inChannels, out: ch[0], kernel: 3)

        var downs: [DownBlock] = []
        var output = ch[0]
        for (i, type) in config.downBlockTypes.enumerated() {
            let input = output
            output = ch[i]
            let p = "down_blocks.\(i)."
            var block = DownBlock(resnets: [], attentions: [], downsampler: nil)
            for j in 0..<lpb {
                block.resnets.append(try ResnetBlock2D(read, p + "resnets.\(j).", in: j == 0 ? input : output, out: output,
                                                       timeChannels: temb, groups: groups, eps: eps))
                if type.hasPrefix("CrossAttn") {
                    block.attentions.append(try SpatialTransformer(read, p + "attentions.\(j).", channels: output,
                                                                   heads: config.heads(i), contextDim: ctx, groups: groups,
                                                                   layers: tl))
                }
            }
            if i < ch.count - 1 {
                block.downsampler = try Conv2DLayer(read, p + "downsamplers.0.conv.", in: output, out: output, kernel: 3,
                                                    stride: 2, padding: config.downsamplePadding,
                                                    verticalPadding: resampling.downsampleVerticalPadding)
            }
            downs.append(block)
        }
        downBlocks = downs

        let top = ch[ch.count - 1]
        if config.midBlockType != nil {
            midResnets = try (0..<2).map {
                try ResnetBlock2D(read, "mid_block.resnets.\($0).", in: top, out: top, timeChannels: temb, groups: groups, eps: eps)
            }
            midAttention = try SpatialTransformer(read, "mid_block.attentions.0.", channels: top,
                                                  heads: config.heads(ch.count - 1), contextDim: ctx, groups: groups, layers: tl)
        } else {
            midResnets = []
            midAttention = nil
        }

        if encoderOnly {
            upBlocks = []
            normOut = nil
            convOut = nil
            return
        }
        var ups: [UpBlock] = []
        let reversed = Array(ch.reversed())
        var previous = reversed[0]
        for (i, type) in config.upBlockTypes.enumerated() {
            let out = reversed[i], input = reversed[min(i + 1, ch.count - 1)]
            let p = "up_blocks.\(i)."
            var block = UpBlock(resnets: [], attentions: [], upsampler: nil)
            for j in 0...lpb {
                let skip = j == lpb ? input : out
                let resIn = j == 0 ? previous : out
                block.resnets.append(try ResnetBlock2D(read, p + "resnets.\(j).", in: resIn + skip, out: out,
                                                       timeChannels: temb, groups: groups, eps: eps))
                if type.hasPrefix("CrossAttn") {
                    block.attentions.append(try SpatialTransformer(read, p + "attentions.\(j).", channels: out,
                                                                   heads: config.heads(ch.count - 1 - i), contextDim: ctx,
                                                                   groups: groups, layers: tl))
                }
            }
            if i < ch.count - 1 {
                block.upsampler = Upsample2DLayer(conv: try Conv2DLayer(read, p + "upsamplers.0.conv.", in: out, out: out, kernel: 3),
                                                  cropRows: resampling.upsampleCropRows)
            }
            ups.append(block)
            previous = out
        }
        upBlocks = ups
        normOut = try NormLayer(read, "conv_norm_out.", channels: ch[0], eps: eps, groups: groups)
        convOut = try Conv2DLayer(read, "conv_out.", in: ch[0], out: config.outChannels, kernel: 3)
    }

    /// Predicts the noise for `sample` `[N, in, h, w]` at one timestep per item (`timesteps.count == N`, or one
    /// value for all) with text `context` `[N, S, cross_attention_dim]` (or `[1, S, D]`, shared).
    public func callAsFunction(_ sample: Tensor, timesteps: [Float], context: Tensor) throws -> Tensor {
        try forward(sample, timesteps: timesteps, context: context, temporal: nil, frames: 1)
    }

    /// The time embedding (after SiLU, as every resnet consumes it) and the per-item text context of one call.
    struct StepConditioning {
        let activatedTimeEmbedding: Tensor
        let context: Tensor
    }

    /// Shared forward of the image UNet and the video UNets: `frames` consecutive items form one video, and the
    /// `temporal` layers (AnimateDiff's motion modules, ModelScope's temporal convolutions and transformers) mix
    /// information along them; `hooks` rewrite the skips, the mid output and the cross-attention contexts.
    func forward(_ sample: Tensor, timesteps: [Float], context: Tensor, temporal: (any UNetTemporalLayers)?, frames: Int,
                 hooks: UNetHooks? = nil, component: String = "UNet2DConditionModel") throws -> Tensor {
        let conditioning = try prepare(sample, timesteps: timesteps, context: context, component: component)
        var (skips, h) = try encode(sample, conditioning, temporal: temporal, frames: frames, hooks: hooks,
                                    addAfterStem: nil)
        if let rewrite = hooks?.skips {
            let rewritten = try rewrite(skips)
            guard rewritten.count == skips.count, zip(rewritten, skips).allSatisfy({ $0.shape == $1.shape }) else {
                throw DiffusionError.badInput(component: component,
                                              reason: "the skip hook returned \(rewritten.map(\.shape)), expected \(skips.map(\.shape))")
            }
            skips = rewritten
        }
        if let rewrite = hooks?.midOutput {
            let shape = h.shape
            h = try rewrite(h)
            guard h.shape == shape else {
                throw DiffusionError.badInput(component: component, reason: "the mid-output hook returned \(h.shape), expected \(shape)")
            }
        }
        return try decode(h, skips: skips, conditioning, temporal: temporal, frames: frames, hooks: hooks)
    }

    /// Checks the inputs and computes the time embedding and the per-item context.
    func prepare(_ sample: Tensor, timesteps: [Float], context: Tensor, component: String) throws -> StepConditioning {
        guard sample.rank == 4, sample.shape[1] == config.inChannels else {
            throw DiffusionError.badInput(component: component,
                                          reason: "sample must be [N, \(config.inChannels), h, w], got \(sample.shape)")
        }
        let n = sample.shape[0]
        let levels = config.blockOutChannels.count - 1
        guard sample.shape[2] >= 1 << levels, sample.shape[3] >= 1 << levels else {
            throw DiffusionError.badInput(component: component,
                                          reason: "latent \(sample.shape[2])×\(sample.shape[3]) is smaller than the \(1 << levels)× downsampling")
        }
        guard timesteps.count == n || timesteps.count == 1 else {
            throw DiffusionError.badInput(component: component, reason: "\(timesteps.count) timesteps for a batch of \(n)")
        }
        guard context.rank == 3, context.shape[2] == config.crossAttentionDim, context.shape[0] == n || context.shape[0] == 1 else {
            throw DiffusionError.badInput(component: component,
                                          reason: "context must be [\(n), S, \(config.crossAttentionDim)], got \(context.shape)")
        }
        let ctx = context.shape[0] == n ? context : concat(Array(repeating: context, count: n), axis: 0)
        let steps = timesteps.count == n ? timesteps : Array(repeating: timesteps[0], count: n)
        let embedded = timestepEmbedding(steps, dim: config.blockOutChannels[0], flipSinToCos: config.flipSinToCos,
                                         downscaleFreqShift: Float(config.freqShift))
        // Every resnet applies SiLU to the embedding before projecting it: do it once.
        return StepConditioning(activatedTimeEmbedding: silu(timeLinear2(silu(timeLinear1(embedded)))), context: ctx)
    }

    /// One spatial transformer, its blocks' cross-attention contexts passed through the hook (if any), which
    /// sees each block's diffusers path (`down_blocks.0.attentions.1.transformer_blocks.0.attn2`).
    private func attend(_ transformer: SpatialTransformer, _ h: Tensor, context: Tensor, path: @autoclosure () -> String,
                        hooks: UNetHooks?) throws -> Tensor {
        guard let rewrite = hooks?.crossAttentionContext else { return transformer(h, context: context) }
        let prefix = path()
        let contexts = try transformer.blocks.indices.map { k in
            let out = try rewrite("\(prefix).transformer_blocks.\(k).attn2", context)
            guard out.rank == 3, out.shape[0] == context.shape[0], out.shape[2] == context.shape[2] else {
                throw DiffusionError.badInput(component: "UNet", reason: "the cross-attention hook of \(prefix) returned \(out.shape) for a context \(context.shape)")
            }
            return out
        }
        return transformer(h, contexts: contexts)
    }

    /// conv_in (+ the temporal stem), `addAfterStem`, the down blocks and the mid block: the skips (diffusers'
    /// `down_block_res_samples`) and the mid-block output.
    func encode(_ sample: Tensor, _ c: StepConditioning, temporal: (any UNetTemporalLayers)?, frames: Int, hooks: UNetHooks?,
                addAfterStem: Tensor?) throws -> (skips: [Tensor], mid: Tensor) {
        let temb = c.activatedTimeEmbedding, ctx = c.context
        var h = convIn(sample)
        if let temporal { h = try temporal.afterConvIn(h, frames: frames) }
        if let addAfterStem {
            guard addAfterStem.shape == h.shape else {
                throw DiffusionError.badInput(component: "UNet", reason: "the tensor added after the stem is \(addAfterStem.shape), expected \(h.shape)")
            }
            h = h + addAfterStem
        }
        var skips = [h]
        for (i, block) in downBlocks.enumerated() {
            for j in block.resnets.indices {
                h = block.resnets[j](h, activatedTimeEmbedding: temb)
                if let temporal { h = try temporal.afterResnet(h, at: .down(i, j), frames: frames) }
                if !block.attentions.isEmpty {
                    h = try attend(block.attentions[j], h, context: ctx, path: "down_blocks.\(i).attentions.\(j)", hooks: hooks)
                }
                if let temporal { h = try temporal.afterLayer(h, at: .down(i, j), frames: frames) }
                skips.append(h)
            }
            if let down = block.downsampler {
                h = down(h)
                skips.append(h)
            }
        }
        if let midAttention {
            h = midResnets[0](h, activatedTimeEmbedding: temb)
            if let temporal { h = try temporal.afterResnet(h, at: .mid(0), frames: frames) }
            h = try attend(midAttention, h, context: ctx, path: "mid_block.attentions.0", hooks: hooks)
            if let temporal { h = try temporal.afterLayer(h, at: .mid(0), frames: frames) }
            h = midResnets[1](h, activatedTimeEmbedding: temb)
            if let temporal { h = try temporal.afterResnet(h, at: .mid(1), frames: frames) }
        }
        return (skips, h)
    }

    /// The up blocks and the output head, consuming `skips` from the end.
    func decode(_ mid: Tensor, skips: [Tensor], _ c: StepConditioning, temporal: (any UNetTemporalLayers)?, frames: Int,
                hooks: UNetHooks?) throws -> Tensor {
        guard let normOut, let convOut else {
            throw DiffusionError.badInput(component: "UNet", reason: "built as an encoder only: it has no up path to run")
        }
        let temb = c.activatedTimeEmbedding, ctx = c.context
        var h = mid, skips = skips
        for (i, block) in upBlocks.enumerated() {
            for j in block.resnets.indices {
                h = concat([h, skips.removeLast()], axis: 1)
                h = block.resnets[j](h, activatedTimeEmbedding: temb)
                if let temporal { h = try temporal.afterResnet(h, at: .up(i, j), frames: frames) }
                if !block.attentions.isEmpty {
                    h = try attend(block.attentions[j], h, context: ctx, path: "up_blocks.\(i).attentions.\(j)", hooks: hooks)
                }
                if let temporal { h = try temporal.afterLayer(h, at: .up(i, j), frames: frames) }
            }
            if let up = block.upsampler, let next = skips.last {
                h = up(h, height: next.shape[2], width: next.shape[3])
                guard h.shape[2] == next.shape[2], h.shape[3] == next.shape[3] else {
                    throw DiffusionError.badInput(component: "UNet",
                                                  reason: "up block \(i) upsamples to \(h.shape[2])×\(h.shape[3]) but its skip is \(next.shape[2])×\(next.shape[3]); the latent size does not survive this UNet's down/up path")
                }
            }
        }
        return convOut(normOut.group(h, activation: .silu))
    }
}

/// How a UNet's downsamplers pad and its upsamplers size their output.
struct UNetResampling: Sendable, Equatable {
    /// Height padding of the stride-2 downsampling convs when it differs from `downsample_padding`.
    var downsampleVerticalPadding: Int?
    /// Rows cropped at the top and the bottom after nearest ×2 (0: resize to the skip's size, as diffusers does).
    var upsampleCropRows = 0

    /// diffusers' samplers.
    static let diffusers = UNetResampling()
    /// MS-Vid2Vid-XL's: `Downsample` pads (2, 1), `Upsample` doubles and crops one row top and bottom (90 → 46 →
    /// 24 → 13 → 24 → 46 → 90 latent rows).
    static let vid2vid = UNetResampling(downsampleVerticalPadding: 2, upsampleCropRows: 1)
}

/// Where a temporal layer sits among a UNet's spatial layers: block and layer indices as diffusers numbers them.
enum UNetLayerSite {
    case down(Int, Int)
    case mid(Int)
    case up(Int, Int)
}

/// Layers that turn the image UNet into a video UNet by mixing along the `frames` consecutive items of each video,
/// run at fixed places of the shared forward: after conv_in, after each resnet, and after each layer (resnet plus
/// spatial transformer, if the block has one). Defaults pass through.
protocol UNetTemporalLayers: Sendable {
    func afterConvIn(_ h: Tensor, frames: Int) throws -> Tensor
    func afterResnet(_ h: Tensor, at site: UNetLayerSite, frames: Int) throws -> Tensor
    func afterLayer(_ h: Tensor, at site: UNetLayerSite, frames: Int) throws -> Tensor
}

extension UNetTemporalLayers {
    func afterConvIn(_ h: Tensor, frames: Int) throws -> Tensor { h }
    func afterResnet(_ h: Tensor, at site: UNetLayerSite, frames: Int) throws -> Tensor { h }
    func afterLayer(_ h: Tensor, at site: UNetLayerSite, frames: Int) throws -> Tensor { h }
}

/// Optional rewrites inside a UNet forward, for models built on a UNet (StreamingT2V's CAM mergers and APM token
/// mixing). Every hook is optional and costs nothing when absent. Tensors are per frame, `[B·F, …]`, frames of a
/// video consecutive, as diffusers lays them out.
public struct UNetHooks: Sendable {
    /// Rewrites the whole skip list after the down pass (diffusers' `down_block_res_samples`: the stem output,
    /// then each down layer's output and each downsampler's output); must keep the count and shapes.
    public var skips: (@Sendable ([Tensor]) throws -> [Tensor])?
    /// Rewrites the mid block's output before the up pass; must keep its shape.
    public var midOutput: (@Sendable (Tensor) throws -> Tensor)?
    /// Rewrites the context `[B·F, S, D]` given to one spatial cross-attention, named by its diffusers path
    /// (`down_blocks.0.attentions.1.transformer_blocks.0.attn2`, `mid_block.attentions.0.…`, `up_blocks.…`); may
    /// change the token count S, not the batch or the width.
    public var crossAttentionContext: (@Sendable (_ path: String, _ context: Tensor) throws -> Tensor)?

    /// Hooks, each nil (absent) by default.
    public init(skips: (@Sendable ([Tensor]) throws -> [Tensor])? = nil,
                midOutput: (@Sendable (Tensor) throws -> Tensor)? = nil,
                crossAttentionContext: (@Sendable (_ path: String, _ context: Tensor) throws -> Tensor)? = nil) {
        self.skips = skips
        self.midOutput = midOutput
        self.crossAttentionContext = crossAttentionContext
    }
}
