import DiffusionPlugin
import LapseGraph
import LapseTensor
import LapseWeights

extension DataType where Object == StreamingUNetValue {
    /// StreamingT2V's base UNet: ModelScope's UNet3D with the CAM's cross-attention mergers and the APM token mixing.
    public static var streamingUNet: DataType<StreamingUNetValue> { DataType("StreamingT2VUNet") }
}

extension DataType where Object == CAMValue {
    /// The CAM branch (short-term memory): the UNet encoder copy and the conditioning-frame embedding.
    public static var cam: DataType<CAMValue> { DataType("CAM") }
}

extension DataType where Object == APMValue {
    /// The APM (long-term memory) up to its tokens: the OpenCLIP image tower and the resampler.
    public static var apm: DataType<APMValue> { DataType("APM") }
}

extension DataType where Object == AppearanceValue {
    /// The APM anchor's tokens for both guidance branches, as `EncodeAppearance` makes them.
    public static var appearance: DataType<AppearanceValue> { DataType("Appearance") }
}

/// What flows on `LoadStreamingT2V`'s `unet` port: the checkpoint's `base_model.*` tensors (names without the
/// prefix), the base folder's UNet configuration and the scheduler the base model was published with.
/// Nothing is built until `StreamExtend` runs.
public struct StreamingUNetValue: Sendable {
    /// The UNet3D's architecture (the base folder's `unet/config.json`).
    public var config: UNet3DConditionConfig
    /// `base_model.*` of the checkpoint's `state_dict`, prefix removed: the UNet3D, its 13 mergers and the mixing.
    public var weights: Weights
    /// The base folder's `scheduler/scheduler_config.json` (DDIM for text-to-video-ms-1.7b).
    public var scheduler: SchedulerConfigFile?

    public init(config: UNet3DConditionConfig, weights: Weights, scheduler: SchedulerConfigFile?) {
        self.config = config
        self.weights = weights
        self.scheduler = scheduler
    }
}

/// What flows on a `CAM` port: the checkpoint's `unet.*` tensors (the encoder copy and the frame embedding).
public struct CAMValue: Sendable {
    /// `unet.*` of the checkpoint's `state_dict`, prefix removed.
    public var weights: Weights

    public init(weights: Weights) { self.weights = weights }
}

/// What flows on an `APM` port: the image tower's configuration with the checkpoint's image-encoder and resampler
/// tensors; built by `EncodeAppearance`.
public struct APMValue: Sendable {
    /// The open_clip vision tower's configuration (ViT-H/14 for the release).
    public var visionConfig: OpenCLIPVisionConfig
    /// The checkpoint's `state_dict` (the encoder reads `image_encoder.model.visual.*` and `resampler.*`).
    public var weights: Weights

    public init(visionConfig: OpenCLIPVisionConfig, weights: Weights) {
        self.visionConfig = visionConfig
        self.weights = weights
    }

    /// The image tower and resampler built from `weights`.
    public func makeEncoder() throws -> AppearanceEncoder {
        try AppearanceEncoder(weights: weights, visionConfig: visionConfig)
    }
}

/// What flows on an `Appearance` port: the APM tokens that condition every chunk of a video.
public struct AppearanceValue: Sendable {
    /// Tokens `[1, 16, D]` of the anchor frame.
    public var conditional: Tensor
    /// Tokens `[1, 16, D]` of a uniform grey image: the unconditional guidance branch's, as in the original.
    public var unconditional: Tensor

    public init(conditional: Tensor, unconditional: Tensor) {
        self.conditional = conditional
        self.unconditional = unconditional
    }
}

extension StreamingT2VDenoiser {
    /// The denoiser from the parts `LoadStreamingT2V` hands on separately: `base_model.*` (the `unet` port) and
    /// `unet.*` (the `cam` port), prefixes removed.
    public init(base: Weights, cam: Weights, config: UNet3DConditionConfig) throws {
        let stateDict = Weights(origin: base.origin)
            .adding(base, prefix: StreamingT2VKeys.baseModel)
            .adding(cam, prefix: StreamingT2VKeys.cam)
        try self.init(weights: stateDict, config: config)
    }
}
