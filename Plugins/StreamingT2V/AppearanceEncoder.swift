import DiffusionPlugin
import LapseTensor
import LapseWeights

/// StreamingT2V's appearance preservation module (APM) up to its tokens: the OpenCLIP vision tower (with the
/// original's preprocessing: kornia bicubic resize to the tower's size, `(x+1)/2`, CLIP mean/std) and the resampler.
/// The tokens of the anchor frame condition every chunk of the video; the unconditional branch uses the tokens of
/// a zero image in [-1, 1] (uniform 0.5 grey), as the original does.
public struct AppearanceEncoder: Sendable {
    /// The image tower.
    public let vision: OpenCLIPVisionModel
    /// The embedding-to-token MLP.
    public let resampler: AppearanceResampler

    /// From the two parts; the tower's embedding width must be the resampler's.
    public init(vision: OpenCLIPVisionModel, resampler: AppearanceResampler) throws {
        guard vision.config.embedDim == resampler.width else {
            throw DiffusionError.badConfig(component: "AppearanceEncoder", field: "embed_dim",
                                           reason: "the image encoder embeds to \(vision.config.embedDim) but the resampler reads \(resampler.width): give the open_clip config of the checkpoint's image encoder")
        }
        self.vision = vision
        self.resampler = resampler
    }

    /// From a StreamingT2V checkpoint's weights (`image_encoder.model.visual.*`, `resampler.*`) and the open_clip
    /// config of its image encoder (ViT-H/14 for the release).
    public init(weights: Weights, visionConfig: OpenCLIPVisionConfig = .vitH14) throws {
        try self.init(vision: try OpenCLIPVisionModel(config: visionConfig, weights: weights,
                                                      prefix: StreamingT2VKeys.imageEncoder + "visual."),
                      resampler: try AppearanceResampler(weights: weights.scoped(StreamingT2VKeys.resampler)))
    }

    /// Tokens `[1, 16, D]` of anchor frames `[F, 3, H, W]` in [-1, 1] (StreamingT2V uses one: the first frame).
    public func tokens(anchorPixels: Tensor) throws -> Tensor {
        try resampler(try vision.embed(pixelsMinusOneToOne: anchorPixels))
    }

    /// The unconditional branch's tokens: those of zero images (0.5 grey) of the anchor's size `[F, 3, H, W]`.
    public func unconditionalTokens(like anchorPixels: Tensor) throws -> Tensor {
        try tokens(anchorPixels: Tensor(zeros: anchorPixels.shape))
    }
}
