import Foundation
import LapseNN
import LapseTensor
import LapseWeights

/// Configuration of AnimateDiff motion modules, decoded from a diffusers `MotionAdapter` `config.json`.
/// Defaults are AnimateDiff v3's (`v3_sd15_mm.ckpt`).
public struct MotionAdapterConfig: Codable, Sendable, Equatable {
    public var blockOutChannels = [320, 640, 1280, 1280]
    public var motionLayersPerBlock = 2
    public var motionTransformerLayersPerBlock = 1
    public var motionNumAttentionHeads = 8
    public var motionNormNumGroups = 32
    /// Length of the sinusoidal position table: the most frames one call can animate.
    public var motionMaxSeqLength = 32
    public var useMotionMidBlock = false

    /// AnimateDiff v3 for SD1.5.
    public static let animateDiffV3 = MotionAdapterConfig()

    /// AnimateDiff v3's values.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case blockOutChannels = "block_out_channels", motionLayersPerBlock = "motion_layers_per_block"
        case motionTransformerLayersPerBlock = "motion_transformer_layers_per_block"
        case motionNumAttentionHeads = "motion_num_attention_heads", motionNormNumGroups = "motion_norm_num_groups"
        case motionMaxSeqLength = "motion_max_seq_length", useMotionMidBlock = "use_motion_mid_block"
    }

    /// Decodes diffusers' keys; absent keys keep AnimateDiff v3's values.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = MotionAdapterConfig()
        blockOutChannels = try c.decodeIfPresent([Int].self, forKey: .blockOutChannels) ?? d.blockOutChannels
        motionLayersPerBlock = try c.decodeIfPresent(Int.self, forKey: .motionLayersPerBlock) ?? d.motionLayersPerBlock
        motionTransformerLayersPerBlock = try c.decodeIfPresent(Int.self, forKey: .motionTransformerLayersPerBlock) ?? 1
        motionNumAttentionHeads = try c.decodeIfPresent(Int.self, forKey: .motionNumAttentionHeads) ?? d.motionNumAttentionHeads
        motionNormNumGroups = try c.decodeIfPresent(Int.self, forKey: .motionNormNumGroups) ?? d.motionNormNumGroups
        motionMaxSeqLength = try c.decodeIfPresent(Int.self, forKey: .motionMaxSeqLength) ?? d.motionMaxSeqLength
        useMotionMidBlock = try c.decodeIfPresent(Bool.self, forKey: .useMotionMidBlock) ?? d.useMotionMidBlock
    }

    /// Decodes a diffusers `config.json`.
    public static func decode(json data: Data) throws -> MotionAdapterConfig {
        try JSONDecoder().decode(MotionAdapterConfig.self, from: data)
    }
}

/// Where a motion module's input GroupNorm takes its statistics.
public enum MotionNormMode: Sendable, Equatable {
    /// Each frame on its own, as the original AnimateDiff code (and MagicTime, which copies it) does.
    case perFrame
    /// Over all frames of a video together, as diffusers' `AnimateDiffTransformer3D` does.
    case acrossFrames
}

/// One temporal transformer: GroupNorm, `proj_in`, transformer blocks whose two self-attentions run along the
/// frame axis of every pixel, GEGLU feed-forward, `proj_out`, residual. AnimateDiff's motion modules add
/// sinusoidal frame positions after each norm; diffusers' `TransformerTemporalModel` (ModelScope's
/// `transformer_in` and `temp_attentions`) has none and may work at an inner width other than the channels.
public struct MotionModule: Sendable {
    let norm: NormLayer
    let projIn: LinearLayer, projOut: LinearLayer
    let blocks: [BasicTransformerBlock]
    /// `[maxLength, inner]`: pe[p, 2i] = sin(p·10000^(−2i/C)), pe[p, 2i+1] = cos(…); nil: no positions.
    let positions: Tensor?
    let normMode: MotionNormMode

    /// `maxLength` nil: no positional encoding; `innerDim` nil: the transformer runs at `channels`.
    init(_ read: WeightReader, _ prefix: String, channels: Int, innerDim: Int? = nil, heads: Int, groups: Int,
         layers: Int, maxLength: Int?, normMode: MotionNormMode) throws {
        let inner = innerDim ?? channels
        norm = try NormLayer(read, prefix + "norm.", channels: channels, eps: 1e-6, groups: groups)
        projIn = try LinearLayer(read, prefix + "proj_in.", in: channels, out: inner)
        blocks = try (0..<layers).map {
            try BasicTransformerBlock(read, prefix + "transformer_blocks.\($0).", dim: inner, heads: heads, contextDim: nil)
        }
        projOut = try LinearLayer(read, prefix + "proj_out.", in: inner, out: channels)
        positions = maxLength.map { MotionModule.sinusoidalPositions(length: $0, channels: inner) }
        self.normMode = normMode
    }

    /// The sinusoidal table AnimateDiff's `PositionalEncoding` builds (frequencies computed in float32 as there).
    static func sinusoidalPositions(length: Int, channels: Int) -> Tensor {
        var pe = [Float](repeating: 0, count: length * channels)
        let factor = Float(-Foundation.log(10000.0) / Double(channels))
        for i in stride(from: 0, to: channels, by: 2) {
            let div = Foundation.exp(Float(i) * factor)
            for p in 0..<length {
                let arg = Float(p) * div
                pe[p * channels + i] = Foundation.sin(arg)
                if i + 1 < channels { pe[p * channels + i + 1] = Foundation.cos(arg) }
            }
        }
        return Tensor(shape: [length, channels], data: pe)
    }

    /// `x` `[B·F, C, H, W]` holding `frames` consecutive frames per video.
    func callAsFunction(_ x: Tensor, frames: Int) throws -> Tensor {
        if let positions, frames > positions.shape[0] {
            let maxLength = positions.shape[0]
            throw DiffusionError.badInput(component: "MotionModule",
                                          reason: "\(frames) frames exceed the motion module's \(maxLength) sinusoidal frame positions (motion_max_seq_length); generate at most \(maxLength) frames per window")
        }
        let bf = x.shape[0], c = x.shape[1], hw = x.shape[2] * x.shape[3]
        guard frames >= 1, bf % frames == 0 else {
            throw DiffusionError.badInput(component: "MotionModule", reason: "batch \(bf) is not a multiple of \(frames) frames")
        }
        let b = bf / frames
        // Tokens [B·H·W, F, C]: every pixel of every video attends along its frames.
        let tokens: Tensor
        switch normMode {
        case .perFrame:
            tokens = permute(norm.group(x).reshaped([b, frames, c, hw]), [0, 3, 1, 2])
        case .acrossFrames:
            let video = permute(x.reshaped([b, frames, c, hw]), [0, 2, 1, 3])  // [B, C, F, HW]
            tokens = permute(norm.group(video), [0, 3, 2, 1])
        }
        var h = projIn(tokens.reshaped([b * hw, frames, c]))
        let pe = positions.map { frames == $0.shape[0] ? $0 : slice($0, axis: 0, start: 0, end: frames) }
        for block in blocks { h = block(h, context: nil, positional: pe) }
        h = projOut(h)
        return x + permute(h.reshaped([b, hw, frames, c]), [0, 2, 3, 1]).reshaped(x.shape)
    }
}

/// AnimateDiff motion modules for every block of a UNet (diffusers' `MotionAdapter`): one after each resnet /
/// transformer of the down blocks, of the up blocks, and optionally in the mid block.
public struct MotionAdapter: Sendable {
    /// The adapter's configuration.
    public let config: MotionAdapterConfig
    let down: [[MotionModule]]
    let up: [[MotionModule]]
    let mid: MotionModule?

    /// Builds the modules from diffusers-named (`down_blocks.N.motion_modules.M.…`) or original AnimateDiff
    /// (`….temporal_transformer.transformer_blocks.0.attention_blocks.0.…`) weights; other tensors (e.g. a full
    /// UNet's) are ignored. When the file carries AnimateDiff's `pos_encoder.pe` table its length overrides
    /// `motion_max_seq_length`, and a `mid_block.motion_modules.0` in the file turns on `use_motion_mid_block`.
    /// `normMode` defaults to AnimateDiff's per-frame GroupNorm.
    public init(config: MotionAdapterConfig, weights all: Weights, normMode: MotionNormMode = .perFrame) throws {
        var config = config
        let weights = Self.diffusersWeights(from: all)
        if let length = Self.positionTableLength(in: all) { config.motionMaxSeqLength = length }
        // AnimateDiff v1/v2 files carry a mid-block module, v3 none; the file decides, not a possibly generic config.
        if weights.keys.contains(where: { $0.hasPrefix("mid_block.motion_modules.") }) { config.useMotionMidBlock = true }
        self.config = config
        let read = WeightReader(weights, component: "MotionAdapter")
        let ch = config.blockOutChannels
        guard !ch.isEmpty, ch.allSatisfy({ $0 % config.motionNormNumGroups == 0 && $0 % config.motionNumAttentionHeads == 0 }) else {
            throw DiffusionError.badConfig(component: "MotionAdapter", field: "block_out_channels",
                                           reason: "\(ch) must split into \(config.motionNormNumGroups) groups and \(config.motionNumAttentionHeads) heads")
        }
        func module(_ prefix: String, _ channels: Int) throws -> MotionModule {
            try MotionModule(read, prefix, channels: channels, heads: config.motionNumAttentionHeads,
                             groups: config.motionNormNumGroups, layers: config.motionTransformerLayersPerBlock,
                             maxLength: config.motionMaxSeqLength, normMode: normMode)
        }
        down = try ch.indices.map { i in
            try (0..<config.motionLayersPerBlock).map { try module("down_blocks.\(i).motion_modules.\($0).", ch[i]) }
        }
        let reversed = Array(ch.reversed())
        up = try reversed.indices.map { i in
            try (0...config.motionLayersPerBlock).map { try module("up_blocks.\(i).motion_modules.\($0).", reversed[i]) }
        }
        mid = config.useMotionMidBlock ? try module("mid_block.motion_modules.0.", ch[ch.count - 1]) : nil
    }
}

extension MotionAdapter: UNetTemporalLayers {
    /// AnimateDiff's modules follow each layer of the down and up blocks (after the transformer where the block
    /// has one) and, in v1/v2, the mid block's transformer.
    func afterLayer(_ h: Tensor, at site: UNetLayerSite, frames: Int) throws -> Tensor {
        switch site {
        case .down(let i, let j): return try down[i][j](h, frames: frames)
        case .up(let i, let j): return try up[i][j](h, frames: frames)
        case .mid: return try mid.map { try $0(h, frames: frames) } ?? h
        }
    }
}

/// The AnimateDiff video UNet (diffusers' `UNetMotionModel`): an SD UNet whose blocks are followed by motion
/// modules. Runs `[B, C, F, h, w]` latents.
public struct UNetMotionModel: Sendable {
    /// The spatial (per-frame) UNet.
    public let unet: UNet2DConditionModel
    /// The temporal modules.
    public let motion: MotionAdapter

    /// Pairs a UNet with motion modules; their block widths must agree.
    public init(unet: UNet2DConditionModel, motion: MotionAdapter) throws {
        guard unet.config.blockOutChannels == motion.config.blockOutChannels,
              unet.config.layersPerBlock == motion.config.motionLayersPerBlock else {
            throw DiffusionError.badConfig(component: "UNetMotionModel", field: "block_out_channels",
                                           reason: "UNet blocks \(unet.config.blockOutChannels)×\(unet.config.layersPerBlock) do not match motion modules \(motion.config.blockOutChannels)×\(motion.config.motionLayersPerBlock)")
        }
        if motion.mid != nil, unet.config.midBlockType == nil {
            throw DiffusionError.badConfig(component: "UNetMotionModel", field: "use_motion_mid_block",
                                           reason: "the motion adapter has a mid-block module but the UNet has no mid block")
        }
        self.unet = unet
        self.motion = motion
    }

    /// Noise prediction for `sample` `[B, C, F, h, w]` with one timestep per video (or one for all) and text
    /// `context` `[B, S, D]` (repeated for every frame) or already per frame `[B·F, S, D]`.
    public func callAsFunction(_ sample: Tensor, timesteps: [Float], context: Tensor) throws -> Tensor {
        guard sample.rank == 5 else {
            throw DiffusionError.badInput(component: "UNetMotionModel", reason: "sample must be [B, C, F, h, w], got \(sample.shape)")
        }
        let b = sample.shape[0], c = sample.shape[1], f = sample.shape[2], h = sample.shape[3], w = sample.shape[4]
        guard f <= motion.config.motionMaxSeqLength else {
            throw DiffusionError.badInput(component: "UNetMotionModel",
                                          reason: "\(f) frames exceed the motion modules' \(motion.config.motionMaxSeqLength) sinusoidal frame positions (motion_max_seq_length); AnimateDiff cannot place frames beyond it, so generate at most \(motion.config.motionMaxSeqLength) frames per window")
        }
        guard timesteps.count == b || timesteps.count == 1 else {
            throw DiffusionError.badInput(component: "UNetMotionModel", reason: "\(timesteps.count) timesteps for \(b) videos")
        }
        let frames = permute(sample, [0, 2, 1, 3, 4]).reshaped([b * f, c, h, w])
        let steps = timesteps.count == b ? timesteps.flatMap { Array(repeating: $0, count: f) } : timesteps
        var ctx = context
        if context.rank == 3, context.shape[0] == b, b * f != b {
            ctx = Self.repeatInterleave(context, count: f)
        }
        let out = try unet.forward(frames, timesteps: steps, context: ctx, temporal: motion, frames: f,
                                  component: "UNetMotionModel")
        return permute(out.reshaped([b, f, out.shape[1], h, w]), [0, 2, 1, 3, 4])
    }

    /// Each item of dim 0 repeated `count` times in place (torch `repeat_interleave`).
    static func repeatInterleave(_ x: Tensor, count: Int) -> Tensor {
        let rest = Array(x.shape.dropFirst())
        let expanded = x.reshaped([x.shape[0], 1] + rest) + Tensor(zeros: [1, count] + rest.map { _ in 1 })
        return expanded.reshaped([x.shape[0] * count] + rest)
    }
}
