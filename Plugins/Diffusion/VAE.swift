import Foundation
import LapseNN
import LapseTensor
import LapseWeights

/// Configuration of Stable Diffusion's `AutoencoderKL`, decoded from a diffusers `config.json`; missing keys take
/// SD1.5's values.
public struct AutoencoderKLConfig: Codable, Sendable, Equatable {
    public var inChannels = 3
    public var outChannels = 3
    public var blockOutChannels = [128, 256, 512, 512]
    public var layersPerBlock = 2
    public var latentChannels = 4
    public var normNumGroups = 32
    public var sampleSize = 512
    /// Latents are `scaling_factor · z` in the diffusion space (SD1.x: 0.18215).
    public var scalingFactor = 0.18215
    public var midBlockAddAttention = true

    /// The SD1.x VAE.
    public static let sd15 = AutoencoderKLConfig()

    /// SD1.5's values.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case inChannels = "in_channels", outChannels = "out_channels", blockOutChannels = "block_out_channels"
        case layersPerBlock = "layers_per_block", latentChannels = "latent_channels", normNumGroups = "norm_num_groups"
        case sampleSize = "sample_size", scalingFactor = "scaling_factor", midBlockAddAttention = "mid_block_add_attention"
    }

    /// Decodes diffusers' keys; absent keys keep the SD1.x VAE's values.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = AutoencoderKLConfig()
        inChannels = try c.decodeIfPresent(Int.self, forKey: .inChannels) ?? d.inChannels
        outChannels = try c.decodeIfPresent(Int.self, forKey: .outChannels) ?? d.outChannels
        blockOutChannels = try c.decodeIfPresent([Int].self, forKey: .blockOutChannels) ?? d.blockOutChannels
        layersPerBlock = try c.decodeIfPresent(Int.self, forKey: .layersPerBlock) ?? d.layersPerBlock
        latentChannels = try c.decodeIfPresent(Int.self, forKey: .latentChannels) ?? d.latentChannels
        normNumGroups = try c.decodeIfPresent(Int.self, forKey: .normNumGroups) ?? d.normNumGroups
        sampleSize = try c.decodeIfPresent(Int.self, forKey: .sampleSize) ?? d.sampleSize
        scalingFactor = try c.decodeIfPresent(Double.self, forKey: .scalingFactor) ?? d.scalingFactor
        midBlockAddAttention = try c.decodeIfPresent(Bool.self, forKey: .midBlockAddAttention) ?? true
    }

    /// Decodes a diffusers `config.json`.
    public static func decode(json data: Data) throws -> AutoencoderKLConfig {
        try JSONDecoder().decode(AutoencoderKLConfig.self, from: data)
    }

    func validate() throws {
        guard !blockOutChannels.isEmpty, blockOutChannels.allSatisfy({ $0 > 0 && $0 % normNumGroups == 0 }) else {
            throw DiffusionError.badConfig(component: "AutoencoderKL", field: "block_out_channels",
                                           reason: "\(blockOutChannels) must be non-empty and divisible by norm_num_groups \(normNumGroups)")
        }
        guard layersPerBlock >= 1, latentChannels >= 1 else {
            throw DiffusionError.badConfig(component: "AutoencoderKL", field: "layers_per_block",
                                           reason: "layers_per_block \(layersPerBlock) and latent_channels \(latentChannels) must be ≥ 1")
        }
    }
}

/// Stable Diffusion's KL autoencoder (diffusers' `AutoencoderKL`): images in [-1, 1] ↔ unscaled latents.
/// Frames are processed one at a time, as MagicTime decodes, so memory stays at one frame's activations.
public struct AutoencoderKL: Sendable {
    /// The model's configuration.
    public let config: AutoencoderKLConfig

    /// The mid block shared by encoder and decoder: resnet, single-head attention (with bias), resnet.
    struct MidBlock: Sendable {
        let resnet1: ResnetBlock2D, resnet2: ResnetBlock2D
        let attentionNorm: NormLayer?
        let attention: AttentionLayer?

        init(_ read: WeightReader, _ prefix: String, channels: Int, groups: Int, attention hasAttention: Bool) throws {
            resnet1 = try ResnetBlock2D(read, prefix + "resnets.0.", in: channels, out: channels, timeChannels: nil, groups: groups, eps: 1e-6)
            if hasAttention {
                let p = prefix + "attentions.0."
                attentionNorm = try NormLayer(read, p + "group_norm.", channels: channels, eps: 1e-6, groups: groups)
                attention = try AttentionLayer(read, p, queryDim: channels, contextDim: channels, heads: 1, qkvBias: true)
            } else {
                attentionNorm = nil
                attention = nil
            }
            resnet2 = try ResnetBlock2D(read, prefix + "resnets.1.", in: channels, out: channels, timeChannels: nil, groups: groups, eps: 1e-6)
        }

        func callAsFunction(_ x: Tensor) -> Tensor {
            var h = resnet1(x, activatedTimeEmbedding: nil)
            if let attention, let attentionNorm {
                let n = h.shape[0], c = h.shape[1], hw = h.shape[2] * h.shape[3]
                let tokens = permute(attentionNorm.group(h).reshaped([n, c, hw]), [0, 2, 1])
                h = h + permute(attention(tokens), [0, 2, 1]).reshaped(h.shape)
            }
            return resnet2(h, activatedTimeEmbedding: nil)
        }
    }

    let encoderConvIn: Conv2DLayer
    let encoderBlocks: [(resnets: [ResnetBlock2D], downsampler: Conv2DLayer?)]
    let encoderMid: MidBlock
    let encoderNormOut: NormLayer, encoderConvOut: Conv2DLayer
    let quantConv: Conv2DLayer, postQuantConv: Conv2DLayer
    let decoderConvIn: Conv2DLayer
    let decoderMid: MidBlock
    let decoderBlocks: [(resnets: [ResnetBlock2D], upsampler: Upsample2DLayer?)]
    let decoderNormOut: NormLayer, decoderConvOut: Conv2DLayer

    /// Builds the VAE from diffusers-named weights or a whole LDM single-file checkpoint (`first_stage_model.…`,
    /// mapped by `diffusersWeights(from:config:)`). Extra tensors are ignored.
    public init(config: AutoencoderKLConfig, weights all: Weights) throws {
        try config.validate()
        self.config = config
        let read = WeightReader(Self.diffusersWeights(from: all, config: config), component: "AutoencoderKL")
        let ch = config.blockOutChannels, g = config.normNumGroups, lpb = config.layersPerBlock
        let top = ch[ch.count - 1], z = config.latentChannels

        encoderConvIn = try Conv2DLayer(read, "encoder.conv_in.", in: config.inChannels, out: ch[0], kernel: 3)
        var previous = ch[0]
        encoderBlocks = try ch.indices.map { i in
            let input = previous
            previous = ch[i]
            let resnets = try (0..<lpb).map {
                try ResnetBlock2D(read, "encoder.down_blocks.\(i).resnets.\($0).", in: $0 == 0 ? input : ch[i], out: ch[i],
                                  timeChannels: nil, groups: g, eps: 1e-6)
            }
            // LDM pads right/bottom by one and convolves without padding: the output grid differs from padding 1.
            let down = i < ch.count - 1
                ? try Conv2DLayer(read, "encoder.down_blocks.\(i).downsamplers.0.conv.", in: ch[i], out: ch[i], kernel: 3,
                                  stride: 2, padding: 0)
                : nil
            return (resnets, down)
        }
        encoderMid = try MidBlock(read, "encoder.mid_block.", channels: top, groups: g, attention: config.midBlockAddAttention)
        encoderNormOut = try NormLayer(read, "encoder.conv_norm_out.", channels: top, eps: 1e-6, groups: g)
        encoderConvOut = try Conv2DLayer(read, "encoder.conv_out.", in: top, out: 2 * z, kernel: 3)
        quantConv = try Conv2DLayer(read, "quant_conv.", in: 2 * z, out: 2 * z, kernel: 1)
        postQuantConv = try Conv2DLayer(read, "post_quant_conv.", in: z, out: z, kernel: 1)

        decoderConvIn = try Conv2DLayer(read, "decoder.conv_in.", in: z, out: top, kernel: 3)
        decoderMid = try MidBlock(read, "decoder.mid_block.", channels: top, groups: g, attention: config.midBlockAddAttention)
        let reversed = Array(ch.reversed())
        previous = reversed[0]
        decoderBlocks = try reversed.indices.map { i in
            let input = previous
            previous = reversed[i]
            let resnets = try (0...lpb).map {
                try ResnetBlock2D(read, "decoder.up_blocks.\(i).resnets.\($0).", in: $0 == 0 ? input : reversed[i],
                                  out: reversed[i], timeChannels: nil, groups: g, eps: 1e-6)
            }
            let up = i < ch.count - 1
                ? Upsample2DLayer(conv: try Conv2DLayer(read, "decoder.up_blocks.\(i).upsamplers.0.conv.", in: reversed[i],
                                                        out: reversed[i], kernel: 3))
                : nil
            return (resnets, up)
        }
        decoderNormOut = try NormLayer(read, "decoder.conv_norm_out.", channels: ch[0], eps: 1e-6, groups: g)
        decoderConvOut = try Conv2DLayer(read, "decoder.conv_out.", in: ch[0], out: config.outChannels, kernel: 3)
    }

    /// The posterior's mean and log-variance `[N, latent, H/f, W/f]` (unscaled) for images `[N, in, H, W]` in
    /// [-1, 1]; H and W must be multiples of the downsampling factor. Log-variance is clamped to [-30, 20].
    public func encode(_ images: Tensor) throws -> (mean: Tensor, logVariance: Tensor) {
        let factor = 1 << (config.blockOutChannels.count - 1)
        guard images.rank == 4, images.shape[1] == config.inChannels, images.shape[2] % factor == 0,
              images.shape[3] % factor == 0, images.shape[2] > 0, images.shape[3] > 0 else {
            throw DiffusionError.badInput(component: "AutoencoderKL.encode",
                                          reason: "images must be [N, \(config.inChannels), H, W] with H, W multiples of \(factor), got \(images.shape)")
        }
        var means: [Tensor] = [], logVars: [Tensor] = []
        for i in 0..<images.shape[0] {
            var h = encoderConvIn(slice(images, axis: 0, start: i, end: i + 1))
            for block in encoderBlocks {
                for resnet in block.resnets { h = resnet(h, activatedTimeEmbedding: nil) }
                if let down = block.downsampler {
                    h = down(pad(h, left: 0, right: 1, top: 0, bottom: 1, mode: .zeros))
                }
            }
            h = encoderMid(h)
            h = quantConv(encoderConvOut(encoderNormOut.group(h, activation: .silu)))
            let parts = chunk(h, 2, axis: 1)
            means.append(parts[0])
            logVars.append(clamp(parts[1], min: -30, max: 20))
        }
        return (concat(means, axis: 0), concat(logVars, axis: 0))
    }

    /// Diffusion latents drawn from the posterior with the caller's `noise` (same shape as `mean`):
    /// `scaling_factor · (mean + exp(½ · logvar) · noise)`, log-variance clamped to [-30, 20] as LDM's
    /// `DiagonalGaussianDistribution` clamps it. This is `get_first_stage_encoding(encode(x))` with the
    /// `torch.randn` inside `posterior.sample()` replaced by `noise`, so a caller draws it from its own seeded
    /// generator (StreamingT2V's refiner encodes one frame at a time, each frame drawing its own noise).
    public func sampleLatents(mean: Tensor, logVariance: Tensor, noise: Tensor) throws -> Tensor {
        guard mean.rank == 4, mean.shape[1] == config.latentChannels, logVariance.shape == mean.shape, noise.shape == mean.shape else {
            throw DiffusionError.badInput(component: "AutoencoderKL.sampleLatents",
                                          reason: "mean, log-variance and noise must all be [N, \(config.latentChannels), h, w], got \(mean.shape), \(logVariance.shape), \(noise.shape)")
        }
        let std = exp(clamp(logVariance, min: -30, max: 20) * 0.5)
        return (mean + std * noise) * Float(config.scalingFactor)
    }

    /// Encodes images `[N, in, H, W]` in [-1, 1] and samples their posterior with `noise` `[N, latent, H/f, W/f]`
    /// (`sampleLatents`): scaled diffusion latents, as LDM's `get_first_stage_encoding(encode(x))`.
    public func encodeSampling(_ images: Tensor, noise: Tensor) throws -> Tensor {
        let posterior = try encode(images)
        return try sampleLatents(mean: posterior.mean, logVariance: posterior.logVariance, noise: noise)
    }

    /// Images `[N, out, H, W]` (about [-1, 1], not clamped) from unscaled latents `[N, latent, h, w]` — divide
    /// diffusion latents by `scaling_factor` first.
    public func decode(_ latents: Tensor) throws -> Tensor {
        guard latents.rank == 4, latents.shape[1] == config.latentChannels, latents.shape[2] > 0, latents.shape[3] > 0 else {
            throw DiffusionError.badInput(component: "AutoencoderKL.decode",
                                          reason: "latents must be [N, \(config.latentChannels), h, w], got \(latents.shape)")
        }
        var frames: [Tensor] = []
        for i in 0..<latents.shape[0] { frames.append(decodeOne(slice(latents, axis: 0, start: i, end: i + 1))) }
        return frames.count == 1 ? frames[0] : concat(frames, axis: 0)
    }

    /// One frame: `[1, latent, h, w]` → `[1, out, h·f, w·f]`.
    func decodeOne(_ latent: Tensor) -> Tensor {
        var h = decoderConvIn(postQuantConv(latent))
        h = decoderMid(h)
        for block in decoderBlocks {
            for resnet in block.resnets { h = resnet(h, activatedTimeEmbedding: nil) }
            if let up = block.upsampler { h = up(h, height: h.shape[2] * 2, width: h.shape[3] * 2) }
        }
        return decoderConvOut(decoderNormOut.group(h, activation: .silu))
    }
}
