import Foundation
import LapseTensor
import LapseWeights

/// Constructor arguments of MS-Vid2Vid-XL's generator (`Vid2VidSDUNet` in modelscope's
/// `multi_modal/video_to_video/modules/unet_v2v.py`), under the argument names. The release builds it with the
/// defaults (`Vid2VidSDUNet()`), which are this struct's; `inferred(from:)` reads the sizes from a checkpoint.
public struct Vid2VidUNetConfig: Codable, Sendable, Equatable {
    public var inDim = 4
    public var dim = 320
    /// Stored by the module and never used.
    public var yDim = 1024
    /// Width of the text context the encoder's and mid block's spatial transformers attend to. The decoder's
    /// hard-code 1024, so one context fits every layer only at 1024.
    public var contextDim = 1024
    public var outDim = 4
    public var dimMult = [1, 2, 4, 4]
    /// Heads of the first temporal transformer (after the input conv), each `head_dim` wide. Every other
    /// transformer, spatial or temporal, has channels / `head_dim` heads.
    public var numHeads = 8
    /// Width of each attention head; no tensor reveals it.
    public var headDim = 64
    public var numResBlocks = 2
    /// Levels at scale 1/2^i with spatial + temporal transformers (the middle block always has them).
    public var attnScales: [Double] = [1, 0.5, 0.25]

    /// MS-Vid2Vid-XL (damo/Video-to-Video).
    public static let msVid2VidXL = Vid2VidUNetConfig()

    /// The release's values.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case inDim = "in_dim", dim, yDim = "y_dim", contextDim = "context_dim", outDim = "out_dim", dimMult = "dim_mult"
        case numHeads = "num_heads", headDim = "head_dim", numResBlocks = "num_res_blocks", attnScales = "attn_scales"
    }

    /// Decodes the argument names; absent ones keep the release's values.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Vid2VidUNetConfig()
        inDim = try c.decodeIfPresent(Int.self, forKey: .inDim) ?? d.inDim
        dim = try c.decodeIfPresent(Int.self, forKey: .dim) ?? d.dim
        yDim = try c.decodeIfPresent(Int.self, forKey: .yDim) ?? d.yDim
        contextDim = try c.decodeIfPresent(Int.self, forKey: .contextDim) ?? d.contextDim
        outDim = try c.decodeIfPresent(Int.self, forKey: .outDim) ?? d.outDim
        dimMult = try c.decodeIfPresent([Int].self, forKey: .dimMult) ?? d.dimMult
        numHeads = try c.decodeIfPresent(Int.self, forKey: .numHeads) ?? d.numHeads
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim) ?? d.headDim
        numResBlocks = try c.decodeIfPresent(Int.self, forKey: .numResBlocks) ?? d.numResBlocks
        attnScales = try c.decodeIfPresent([Double].self, forKey: .attnScales) ?? d.attnScales
    }

    /// Decodes a JSON object of the constructor arguments.
    public static func decode(json data: Data) throws -> Vid2VidUNetConfig {
        try JSONDecoder().decode(Vid2VidUNetConfig.self, from: data)
    }

    /// Whether level `i` (scale 1/2^i) has transformers: the module tests `scale in attn_scales` with the scale
    /// halved exactly at each level.
    func hasAttention(level i: Int) -> Bool { attnScales.contains(Foundation.pow(0.5, Double(i))) }

    /// Refuses what the module cannot build or this port does not run, naming the argument.
    public func validate() throws {
        func bad(_ field: String, _ reason: String) -> DiffusionError {
            .badConfig(component: "Vid2VidSDUNet", field: field, reason: reason)
        }
        guard inDim > 0, outDim > 0 else { throw bad("in_dim", "in_dim \(inDim) and out_dim \(outDim) must be positive") }
        guard !dimMult.isEmpty, dim > 0, dimMult.allSatisfy({ $0 > 0 && (dim * $0) % 32 == 0 }) else {
            throw bad("dim_mult", "dim \(dim) × dim_mult \(dimMult) must give widths divisible by 32 (its GroupNorms have 32 groups)")
        }
        guard numResBlocks >= 1 else { throw bad("num_res_blocks", "\(numResBlocks) must be ≥ 1") }
        guard headDim > 0, numHeads > 0 else { throw bad("head_dim", "head_dim \(headDim) and num_heads \(numHeads) must be positive") }
        for m in Set(dimMult) where (dim * m) % headDim != 0 {
            throw bad("head_dim", "\(dim * m) channels do not split into heads of \(headDim)")
        }
        guard contextDim == 1024 else {
            throw bad("context_dim", "\(contextDim): the decoder's spatial transformers hard-code a 1024-wide context, so only 1024 runs")
        }
    }

    /// The same network in diffusers' `UNet3DConditionModel` terms (the quirks aside, see `Vid2VidUNet`).
    var unet3D: UNet3DConditionConfig {
        var c = UNet3DConditionConfig()
        c.inChannels = inDim
        c.outChannels = outDim
        c.blockOutChannels = dimMult.map { dim * $0 }
        c.layersPerBlock = numResBlocks
        let levels = dimMult.count
        c.downBlockTypes = (0..<levels).map { hasAttention(level: $0) ? "CrossAttnDownBlock3D" : "DownBlock3D" }
        c.upBlockTypes = (0..<levels).map { hasAttention(level: levels - 1 - $0) ? "CrossAttnUpBlock3D" : "UpBlock3D" }
        c.crossAttentionDim = contextDim
        c.attentionHeadDim = .all(headDim)
        c.normNumGroups = 32
        c.normEps = 1e-5
        c.downsamplePadding = 1
        return c
    }
}

/// MS-Vid2Vid-XL's generator (`Vid2VidSDUNet`), StreamingT2V's stage-3 refiner, loaded from the released `.pth`
/// in modelscope's key layout (see `Vid2VidUNet+KeyMapping.swift`). It is diffusers' `UNet3DConditionModel`
/// topology, run by the same layers as `UNet3DConditionModel`, with these differences found in the module:
///
/// - `Downsample` is a stride-2 3×3 conv padded (2, 1): heights go h → h/2 + 1 (90 → 46 → 24 → 13 for 720 px).
/// - `Upsample` is nearest ×2, then one row cropped at the top and one at the bottom (13 → 24 → 46 → 90), then
///   the conv; so every level but the lowest needs an even height, and the width must halve evenly
///   (`checkLatentSize`).
/// - The first temporal transformer has `num_heads` (8) heads of `head_dim` (64): inner width 512 on 320
///   channels, as diffusers' `transformer_in`. Every other transformer has channels / `head_dim` heads.
/// - Temporal attention: the module's `USE_TEMPORAL_TRANSFORMER = True`, so its `RelativePositionBias` and rotary
///   embeddings are never built (no such tensors in the release); temporal transformers have no positions at
///   all. They are diffusers' `TransformerTemporalModel` (GroupNorm eps 1e-6 over channels × frames × pixels,
///   `attn2` a second self-attention, GEGLU) except that `proj_in`/`proj_out` are width-1 `Conv1d`s.
/// - `ResBlock` is built with `use_scale_shift_norm=False` (the constructor's `True` is not passed on): the
///   embedding is added, as in diffusers' `ResnetBlock2D`; its `temopral_conv` (sic) is `TemporalConvLayer`.
/// - Time embedding: cos-then-sin sinusoid over `dim` with exponent −i/half (diffusers' flip_sin_to_cos True,
///   shift 0), Linear–SiLU–Linear to 4·dim. No fps embedding (`use_fps_condition` False), no low-resolution
///   input: `x_lr` is accepted and unused, and `in_dim` is 4.
/// - Norms: GroupNorm(32) eps 1e-5 in resnets, temporal convs and the head; eps 1e-6 in the transformers;
///   LayerNorm eps 1e-5. Spatial transformers use linear projections.
/// - The zero-initialised layers (`out_layers.3`, `proj_out`s, the last temporal conv, the head conv) are
///   ordinary trained weights here; dropout and DropPath do nothing at inference.
/// - StreamingT2V's refiner registers forward hooks on every temporal `attn1`/`attn2`
///   (`TemporalAttentionHookManager`); its mode stays `NONE`, where the hook recomputes the layer with
///   `context = its input`, which is the same self-attention: nothing changes.
public struct Vid2VidUNet: Sendable {
    /// The module's constructor arguments.
    public let config: Vid2VidUNetConfig
    let unet: UNet3DConditionModel

    /// Builds the network from modelscope-named weights (`input_blocks.1.0.in_layers.2.weight`, …; a
    /// `state_dict` container is already unwrapped by `Weights.load`). Every tensor of the module must be present
    /// with its shape, and tensors outside its blocks are refused, as by the original's strict `load_state_dict`
    /// (extra names inside a block are ignored); errors name the modelscope key.
    public init(config: Vid2VidUNetConfig, weights: Weights) throws {
        try config.validate()
        self.config = config
        let renamed = try Self.diffusersWeights(from: weights, config: config)
        do {
            unet = try UNet3DConditionModel(config: config.unet3D, weights: renamed.weights, component: "Vid2VidSDUNet",
                                            resampling: .vid2vid, transformerInHeads: config.numHeads)
        } catch DiffusionError.missingWeight(_, let key, _) {
            let name = renamed.modelscopeName(key)
            throw DiffusionError.missingWeight(component: "Vid2VidSDUNet (\(weights.origin))", key: name,
                                               closeMatches: DiffusionError.closeMatches(to: name, in: weights.keys))
        } catch DiffusionError.weightShape(_, let key, let expected, let actual) {
            throw DiffusionError.weightShape(component: "Vid2VidSDUNet (\(weights.origin))", key: renamed.modelscopeName(key),
                                             expected: expected, actual: actual)
        }
    }

    /// Builds the network with the sizes `weights` reveal (`Vid2VidUNetConfig.inferred`), head width `headDim`.
    public init(weights: Weights, headDim: Int = 64) throws {
        var base = Vid2VidUNetConfig()
        base.headDim = headDim
        try self.init(config: try Vid2VidUNetConfig.inferred(from: weights, base: base), weights: weights)
    }

    /// The model output (v for MS-Vid2Vid-XL) for latents `sample` `[B, in_dim, F, h, w]` at one `timestep`
    /// (any real value, embedded as given) with text `context` `[B, S, 1024]`, as `forward(x, t, y)`.
    public func callAsFunction(_ sample: Tensor, timestep: Float, context: Tensor) throws -> Tensor {
        guard sample.rank == 5, sample.shape[1] == config.inDim, sample.shape[2] >= 1 else {
            throw DiffusionError.badInput(component: "Vid2VidSDUNet",
                                          reason: "latents must be [B, \(config.inDim), F, h, w] with F ≥ 1, got \(sample.shape)")
        }
        guard context.rank == 3, context.shape[0] == sample.shape[0], context.shape[2] == config.contextDim else {
            throw DiffusionError.badInput(component: "Vid2VidSDUNet",
                                          reason: "context must be [\(sample.shape[0]), S, \(config.contextDim)] (one per video), got \(context.shape)")
        }
        try Self.checkLatentSize(height: sample.shape[3], width: sample.shape[4], levels: config.dimMult.count)
        return try unet(sample, timestep: timestep, context: context)
    }

    /// Refuses a latent size the down/up path cannot bring back to itself. Each downsampling turns h rows into
    /// h/2 + 1 (rounded down) and w columns into ⌈w/2⌉; each upsampling turns h into 2h − 2 and w into 2w. So
    /// above the lowest of `levels` levels the height must be even (90 → 46 → 24 → 13) and the width must be
    /// divisible by 2^(levels − 1).
    public static func checkLatentSize(height: Int, width: Int, levels: Int) throws {
        var h = height, w = width
        for level in 0..<max(levels - 1, 0) {
            guard h >= 2, h % 2 == 0, w >= 2, w % 2 == 0 else {
                let sizes = "\(height)×\(width) latent (\(8 * height)×\(8 * width) px)"
                throw DiffusionError.badInput(component: "Vid2VidSDUNet",
                                              reason: "a \(sizes) does not fit the UNet: at level \(level) it is \(h)×\(w), but every level above the lowest needs an even height (down: h → h/2+1, up: h → 2h−2) and the width must be divisible by \(1 << (levels - 1)); 720×1280 px (90×160 latent) works")
            }
            h = h / 2 + 1
            w /= 2
        }
    }

    /// Whether modelscope-named `weights` are a `Vid2VidSDUNet`'s: an input conv followed by a temporal
    /// transformer with `Conv1d` projections and `temopral_conv` resnets.
    public static func matches(_ weights: Weights) -> Bool {
        weights.contains("input_blocks.0.0.weight") && weights.shape(of: "input_blocks.0.1.proj_in.weight")?.count == 3
            && weights.contains("input_blocks.1.0.temopral_conv.conv1.0.weight")
    }
}
