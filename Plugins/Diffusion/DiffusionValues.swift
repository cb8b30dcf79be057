import Foundation
import LapseGraph
import LapseTensor
import LapseWeights

extension DataType where Object == UNetValue {
    /// A denoising UNet (weights + config, optionally with AnimateDiff motion modules), as `LoadCheckpoint` makes it.
    public static var unet: DataType<UNetValue> { DataType("UNet") }
}

extension DataType where Object == VAEValue {
    /// A KL autoencoder (weights + config), as `LoadCheckpoint` makes it.
    public static var vae: DataType<VAEValue> { DataType("VAE") }
}

extension DataType where Object == LatentValue {
    /// Diffusion latents `[B, 4, F, h, w]`.
    public static var latent: DataType<LatentValue> { DataType("Latent") }
}

extension DataType where Object == MotionWeights {
    /// AnimateDiff motion modules, as `LoadMotionModule` reads them.
    public static var motion: DataType<MotionWeights> { DataType("MotionModule") }
}

/// AnimateDiff motion-module weights under diffusers' `MotionAdapter` names, with their configuration.
///
/// Kept as weights (not a built `MotionAdapter`) so LoRA-style nodes can hand on copies with merged tensors; the
/// adapter is built by `Sample` when it runs.
public struct MotionWeights: Sendable {
    /// Sizes the tensors cannot tell (heads, groups); `motion_max_seq_length` and the mid block follow the file.
    public var config: MotionAdapterConfig
    /// Tensors named `down_blocks.N.motion_modules.M.…` (diffusers' names).
    public var weights: Weights

    /// Pairs a configuration with diffusers-named motion weights.
    public init(config: MotionAdapterConfig, weights: Weights) {
        self.config = config
        self.weights = weights
    }

    /// Builds the motion modules (per-frame GroupNorm, as AnimateDiff and MagicTime run them).
    public func makeAdapter(normMode: MotionNormMode = .perFrame) throws -> MotionAdapter {
        try MotionAdapter(config: config, weights: weights, normMode: normMode)
    }
}

/// What flows on a `UNet` port: the SD UNet's weights under diffusers names and its configuration, plus the motion
/// modules once `ApplyMotionModule` attached them.
///
/// Models are built lazily (`makeModel()`, called by `Sample`), so nodes between the loader and the sampler (LoRA,
/// MagicAdapter) can return copies whose `weights` hold merged tensors without building anything.
public struct UNetValue: Sendable {
    /// The UNet's architecture.
    public var config: UNet2DConditionConfig
    /// Tensors named as diffusers' `UNet2DConditionModel` names them (`down_blocks.0.resnets.0.conv1.weight`, …).
    public var weights: Weights
    /// Motion modules making this a video UNet, or `nil` for a plain (per-frame) image UNet.
    public var motion: MotionWeights?
    /// The `scheduler/scheduler_config.json` of the diffusers folder the UNet came from (what `Sample`'s
    /// `scheduler_config = auto` uses); `nil` for single files and folders without one.
    public var schedulerConfig: SchedulerConfigFile?
    /// Set when `weights` are a `UNet3DConditionModel`'s (ModelScope text-to-video); `config` then describes its
    /// spatial layers (`UNet3DConditionConfig.spatialConfig`: same tensor names, channels, context width), which is
    /// what `Sample`'s checks read. `nil` for SD UNets.
    public var unet3D: UNet3DConditionConfig?
    /// Set when `weights` are MS-Vid2Vid-XL's generator (`Vid2VidSDUNet`, modelscope names), StreamingT2V's refiner;
    /// `config` then describes its spatial layers as for `unet3D`. Such a UNet predicts v on the
    /// logsnr_cosine_interp schedule: `RefineVideo` samples it, `PredictNoise` evaluates it, `Sample` refuses it.
    public var vid2vid: Vid2VidUNetConfig?

    /// Pairs a configuration with diffusers-named UNet weights.
    public init(config: UNet2DConditionConfig, weights: Weights, motion: MotionWeights? = nil) {
        self.config = config
        self.weights = weights
        self.motion = motion
    }

    /// A ModelScope text-to-video UNet from diffusers-named `UNet3DConditionModel` weights.
    public init(unet3D: UNet3DConditionConfig, weights: Weights) {
        self.config = unet3D.spatialConfig
        self.weights = weights
        self.unet3D = unet3D
    }

    /// MS-Vid2Vid-XL's generator from modelscope-named weights (`input_blocks.1.0.in_layers.2.weight`, …).
    public init(vid2vid: Vid2VidUNetConfig, weights: Weights) {
        self.config = vid2vid.unet3D.spatialConfig
        self.weights = weights
        self.vid2vid = vid2vid
    }

    /// The kind of network on the port, for log lines and errors.
    public var kindDescription: String {
        if vid2vid != nil { return "MS-Vid2Vid-XL UNet" }
        if unet3D != nil { return "ModelScope UNet3D" }
        return motion == nil ? "image UNet per frame" : "video UNet"
    }

    /// The spatial UNet built from `weights` (an SD UNet; a 3-D UNet is built by `makeModel()`).
    public func makeUNet() throws -> UNet2DConditionModel {
        if unet3D != nil || vid2vid != nil {
            throw DiffusionError.badConfig(component: vid2vid != nil ? "Vid2VidSDUNet" : "UNet3DConditionModel", field: "_class_name",
                                           reason: "a 3-D UNet is not an image UNet; build it with makeModel()")
        }
        return try UNet2DConditionModel(config: config, weights: weights)
    }

    /// Batch and frame count of latents `shape` this UNet can take (`[B, inChannels, F, h, w]`, no more frames than
    /// its motion modules' positions); the error names the `latent` port. Shared by the nodes that run the UNet.
    public func latentSize(_ shape: [Int]) throws -> (batch: Int, frames: Int) {
        guard shape.count == 5, shape[1] == config.inChannels else {
            throw NodeError.invalidValue(port: "latent", reason: "the UNet takes [B, \(config.inChannels), F, h, w] latents, got \(shape)")
        }
        if let motion, shape[2] > motion.config.motionMaxSeqLength {
            throw DiffusionNodeError.tooManyFrames(frames: shape[2], limit: motion.config.motionMaxSeqLength)
        }
        return (shape[0], shape[2])
    }

    /// The runnable denoiser: the 3-D UNet, a video UNet when motion modules are attached, else the image UNet
    /// applied per frame.
    public func makeModel() throws -> VideoDenoiser {
        if let vid2vid { return .vid2vid(try Vid2VidUNet(config: vid2vid, weights: weights)) }
        if let unet3D { return .unet3D(try UNet3DConditionModel(config: unet3D, weights: weights)) }
        let unet = try makeUNet()
        if let motion { return .video(try UNetMotionModel(unet: unet, motion: try motion.makeAdapter())) }
        return .image(unet)
    }
}

/// A built denoiser that takes `[B, C, F, h, w]` latents either way: AnimateDiff's video UNet, or an image UNet
/// run on every frame independently (plain Stable Diffusion when `F == 1`).
public enum VideoDenoiser: Sendable {
    case image(UNet2DConditionModel)
    case video(UNetMotionModel)
    /// ModelScope's text-to-video UNet.
    case unet3D(UNet3DConditionModel)
    /// MS-Vid2Vid-XL's generator (StreamingT2V's refiner).
    case vid2vid(Vid2VidUNet)

    /// Noise prediction for `sample` `[B, C, F, h, w]`, one timestep for all, text `context` `[B, S, D]`.
    public func callAsFunction(_ sample: Tensor, timestep: Float, context: Tensor) throws -> Tensor {
        switch self {
        case .vid2vid(let model):
            return try model(sample, timestep: timestep, context: context)
        case .unet3D(let model):
            return try model(sample, timestep: timestep, context: context)
        case .video(let model):
            return try model(sample, timesteps: [timestep], context: context)
        case .image(let unet):
            guard sample.rank == 5 else {
                throw DiffusionError.badInput(component: "UNet2DConditionModel", reason: "sample must be [B, C, F, h, w], got \(sample.shape)")
            }
            let b = sample.shape[0], c = sample.shape[1], f = sample.shape[2], h = sample.shape[3], w = sample.shape[4]
            let frames = permute(sample, [0, 2, 1, 3, 4]).reshaped([b * f, c, h, w])
            let ctx = f == 1 ? context : UNetMotionModel.repeatInterleave(context, count: f)
            let out = try unet(frames, timesteps: [timestep], context: ctx)
            return permute(out.reshaped([b, f, out.shape[1], h, w]), [0, 2, 1, 3, 4])
        }
    }
}

/// What flows on a `VAE` port: the autoencoder's weights under diffusers names and its configuration; built on use.
public struct VAEValue: Sendable {
    /// The autoencoder's architecture and `scaling_factor`.
    public var config: AutoencoderKLConfig
    /// Tensors named as diffusers' `AutoencoderKL` names them (`decoder.up_blocks.0.resnets.0.conv1.weight`, …).
    public var weights: Weights

    /// Pairs a configuration with diffusers-named VAE weights.
    public init(config: AutoencoderKLConfig, weights: Weights) {
        self.config = config
        self.weights = weights
    }

    /// The autoencoder built from `weights`.
    public func makeModel() throws -> AutoencoderKL { try AutoencoderKL(config: config, weights: weights) }

    /// The spatial downsampling factor between pixels and latents (8 for SD).
    public var downsamplingFactor: Int { 1 << (config.blockOutChannels.count - 1) }
}

/// What flows on a `CLIP` port: the tokenizer with the text transformer's weights (transformers names) and
/// configuration. The encoder is built on use, so LoRA-style nodes can merge into `weights` first.
public struct CLIPValue: Sendable {
    /// The text transformer's architecture.
    public var config: CLIPTextConfig
    /// Tensors named as transformers' `CLIPTextModel` names them (`text_model.encoder.layers.0.…`).
    public var weights: Weights
    /// The BPE tokenizer.
    public var tokenizer: CLIPTokenizer

    /// Pairs a tokenizer with transformers-named text-encoder weights and their configuration.
    public init(config: CLIPTextConfig, weights: Weights, tokenizer: CLIPTokenizer) {
        self.config = config
        self.weights = weights
        self.tokenizer = tokenizer
    }

    /// The tokenizer and text transformer built from `weights`.
    public func makeEncoder() throws -> CLIPTextEncoder {
        try CLIPTextEncoder(tokenizer: tokenizer, model: CLIPTextModel(config: config, weights: weights))
    }
}

/// What flows on a `Latent` port: diffusion latents, scaled by the VAE's `scaling_factor` as the UNet sees them.
public struct LatentValue: Sendable {
    /// `[B, 4, F, h, w]`: batch, latent channels, frames, height/8, width/8 (F is 1 for still images).
    public var tensor: Tensor
    /// Frame rate to give decoded frames: EmptyLatentVideo's `fps`, a loaded file's, or VAEEncode's source's.
    public var frameRate: Double

    /// Wraps a `[B, C, F, h, w]` latent tensor.
    public init(tensor: Tensor, frameRate: Double) {
        self.tensor = tensor
        self.frameRate = frameRate
    }

    /// Batch, channels, frames, height, width.
    public var batch: Int { tensor.shape[0] }
    public var channels: Int { tensor.shape[1] }
    public var frames: Int { tensor.shape[2] }
    public var height: Int { tensor.shape[3] }
    public var width: Int { tensor.shape[4] }
}

extension CLIPValue {
    /// A value over any layout `CLIPTextModel.transformersWeights(from:)` accepts, its names and shapes checked
    /// against `config` without reading tensors, so a wrong file fails at load rather than at the first prompt.
    public static func checked(config: CLIPTextConfig, weights all: Weights, tokenizer: CLIPTokenizer) throws -> CLIPValue {
        try config.validate()
        guard tokenizer.vocabularySize <= config.vocabSize else {
            throw DiffusionError.badConfig(component: "CLIPTextEncoder", field: "vocab_size",
                                           reason: "model has \(config.vocabSize) tokens, tokenizer \(tokenizer.vocabularySize)")
        }
        let weights = CLIPTextModel.transformersWeights(from: all)
        let report = weights.report(expected: CLIPTextModel.expectedShapes(config).mapValues { Optional($0) })
        let component = "CLIPTextModel (\(all.origin))"
        if let first = report.missing.first {
            throw DiffusionError.missingWeight(component: component, key: first,
                                               closeMatches: report.closeMatches[first] ?? DiffusionError.closeMatches(to: first, in: weights.keys))
        }
        if let bad = report.shapeMismatches.first {
            throw DiffusionError.weightShape(component: component, key: bad.name, expected: bad.expected, actual: bad.actual)
        }
        return CLIPValue(config: config, weights: weights, tokenizer: tokenizer)
    }
}
