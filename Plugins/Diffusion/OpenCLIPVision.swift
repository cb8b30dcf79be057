import Foundation
import LapseNN
import LapseTensor
import LapseWeights

/// Shape of an OpenCLIP ViT image tower, decoded from an open_clip model config (`open_clip/model_configs/*.json`:
/// `embed_dim` and `vision_cfg`; `text_cfg` is ignored). Options that change the architecture away from the plain
/// ViT this port implements (layer scale, attentional pooling, average pooling, no `ln_pre`, LayerNorm after
/// pooling, sin-cos positions, timm towers, custom activation/norm arguments) are decoded so `validate` can refuse
/// them by name instead of computing something else.
public struct OpenCLIPVisionConfig: Codable, Sendable, Equatable {
    /// Width of the pooled embedding (`proj`'s columns).
    public var embedDim: Int
    /// Input side in pixels (square).
    public var imageSize: Int
    /// Number of transformer blocks.
    public var layers: Int
    /// Width of the residual stream.
    public var width: Int
    /// Width of one attention head; heads = width / head_width.
    public var headWidth: Int
    /// Side of the square patches (the stride and kernel of `conv1`).
    public var patchSize: Int
    /// MLP hidden width over `width` (open_clip takes `int(width * mlp_ratio)`).
    public var mlpRatio: Double
    /// open_clip's top-level `quick_gelu` (OpenAI-trained towers); false means exact (erf) GELU.
    public var quickGELU: Bool
    /// Refused unless nil: layer scale.
    public var lsInitValue: Double?
    /// Refused unless false: attentional pooler.
    public var attentionalPool: Bool
    /// Refused unless false: no LayerNorm before the transformer.
    public var noLnPre: Bool
    /// Refused unless "tok": how tokens are pooled.
    public var poolType: String
    /// Refused unless false: LayerNorm after pooling.
    public var finalLnAfterPool: Bool
    /// Refused unless "learnable": positional embedding type.
    public var posEmbedType: String
    /// Refused unless nil: a timm backbone instead of open_clip's ViT.
    public var timmModelName: String?
    /// Refused when present: extra activation / norm constructor arguments.
    public var hasActKwargs: Bool
    public var hasNormKwargs: Bool

    /// OpenCLIP ViT-H/14 (`ViT-H-14.json`), the image encoder of StreamingT2V's APM.
    public static let vitH14 = OpenCLIPVisionConfig(embedDim: 1024, imageSize: 224, layers: 32, width: 1280,
                                                    headWidth: 80, patchSize: 14)

    /// A configuration from explicit values; the refused options take open_clip's defaults.
    public init(embedDim: Int, imageSize: Int, layers: Int, width: Int, headWidth: Int, patchSize: Int,
                mlpRatio: Double = 4, quickGELU: Bool = false) {
        self.embedDim = embedDim
        self.imageSize = imageSize
        self.layers = layers
        self.width = width
        self.headWidth = headWidth
        self.patchSize = patchSize
        self.mlpRatio = mlpRatio
        self.quickGELU = quickGELU
        lsInitValue = nil
        attentionalPool = false
        noLnPre = false
        poolType = "tok"
        finalLnAfterPool = false
        posEmbedType = "learnable"
        timmModelName = nil
        hasActKwargs = false
        hasNormKwargs = false
    }

    enum CodingKeys: String, CodingKey {
        case embedDim = "embed_dim", visionCfg = "vision_cfg", quickGELU = "quick_gelu"
    }

    enum VisionKeys: String, CodingKey {
        case imageSize = "image_size", layers, width, headWidth = "head_width", patchSize = "patch_size"
        case mlpRatio = "mlp_ratio", lsInitValue = "ls_init_value", attentionalPool = "attentional_pool"
        case noLnPre = "no_ln_pre", poolType = "pool_type", finalLnAfterPool = "final_ln_after_pool"
        case posEmbedType = "pos_embed_type", timmModelName = "timm_model_name", actKwargs = "act_kwargs"
        case normKwargs = "norm_kwargs"
    }

    public init(from decoder: any Decoder) throws {
        let top = try decoder.container(keyedBy: CodingKeys.self)
        let v = try top.nestedContainer(keyedBy: VisionKeys.self, forKey: .visionCfg)
        self.init(embedDim: try top.decode(Int.self, forKey: .embedDim),
                  imageSize: try v.decode(Int.self, forKey: .imageSize),
                  layers: try v.decode(Int.self, forKey: .layers),
                  width: try v.decode(Int.self, forKey: .width),
                  headWidth: try v.decodeIfPresent(Int.self, forKey: .headWidth) ?? 64,
                  patchSize: try v.decodeIfPresent(Int.self, forKey: .patchSize) ?? 16,
                  mlpRatio: try v.decodeIfPresent(Double.self, forKey: .mlpRatio) ?? 4,
                  quickGELU: try top.decodeIfPresent(Bool.self, forKey: .quickGELU) ?? false)
        lsInitValue = try v.decodeIfPresent(Double.self, forKey: .lsInitValue)
        // open_clip accepts a bool or a pooler kind ("parallel", "cascade"); any kind is an attentional pooler.
        if let flag = try? v.decodeIfPresent(Bool.self, forKey: .attentionalPool) {
            attentionalPool = flag
        } else {
            attentionalPool = try v.decodeIfPresent(String.self, forKey: .attentionalPool) != nil
        }
        noLnPre = try v.decodeIfPresent(Bool.self, forKey: .noLnPre) ?? false
        poolType = try v.decodeIfPresent(String.self, forKey: .poolType) ?? "tok"
        finalLnAfterPool = try v.decodeIfPresent(Bool.self, forKey: .finalLnAfterPool) ?? false
        posEmbedType = try v.decodeIfPresent(String.self, forKey: .posEmbedType) ?? "learnable"
        timmModelName = try v.decodeIfPresent(String.self, forKey: .timmModelName)
        hasActKwargs = try v.contains(.actKwargs) && !v.decodeNil(forKey: .actKwargs)
        hasNormKwargs = try v.contains(.normKwargs) && !v.decodeNil(forKey: .normKwargs)
    }

    public func encode(to encoder: any Encoder) throws {
        var top = encoder.container(keyedBy: CodingKeys.self)
        try top.encode(embedDim, forKey: .embedDim)
        try top.encode(quickGELU, forKey: .quickGELU)
        var v = top.nestedContainer(keyedBy: VisionKeys.self, forKey: .visionCfg)
        try v.encode(imageSize, forKey: .imageSize)
        try v.encode(layers, forKey: .layers)
        try v.encode(width, forKey: .width)
        try v.encode(headWidth, forKey: .headWidth)
        try v.encode(patchSize, forKey: .patchSize)
        try v.encode(mlpRatio, forKey: .mlpRatio)
        try v.encodeIfPresent(lsInitValue, forKey: .lsInitValue)
        try v.encode(attentionalPool, forKey: .attentionalPool)
        try v.encode(noLnPre, forKey: .noLnPre)
        try v.encode(poolType, forKey: .poolType)
        try v.encode(finalLnAfterPool, forKey: .finalLnAfterPool)
        try v.encode(posEmbedType, forKey: .posEmbedType)
        try v.encodeIfPresent(timmModelName, forKey: .timmModelName)
    }

    /// Decodes an open_clip model config JSON.
    public static func decode(json data: Data) throws -> OpenCLIPVisionConfig {
        try JSONDecoder().decode(OpenCLIPVisionConfig.self, from: data)
    }

    /// Attention heads per block.
    public var heads: Int { width / headWidth }
    /// Patches per side (open_clip floors; pixels past the last whole patch are not seen).
    public var grid: Int { imageSize / patchSize }
    /// MLP hidden width, truncated as Python's `int()` does.
    public var mlpWidth: Int { Int(Double(width) * mlpRatio) }

    /// Throws `DiffusionError.badConfig` naming the first unusable field.
    public func validate() throws {
        func bad(_ field: String, _ reason: String) -> DiffusionError {
            .badConfig(component: "OpenCLIPVisionModel", field: field, reason: reason)
        }
        for (field, value) in [("embed_dim", embedDim), ("vision_cfg.image_size", imageSize),
                               ("vision_cfg.layers", layers), ("vision_cfg.width", width),
                               ("vision_cfg.head_width", headWidth), ("vision_cfg.patch_size", patchSize)] where value < 1 {
            throw bad(field, "\(value) must be positive")
        }
        guard width % headWidth == 0 else {
            throw bad("vision_cfg.head_width", "width \(width) is not a multiple of head_width \(headWidth)")
        }
        guard patchSize <= imageSize else {
            throw bad("vision_cfg.patch_size", "patch \(patchSize) is larger than the \(imageSize)-pixel image")
        }
        guard mlpRatio.isFinite, mlpWidth >= 1 else { throw bad("vision_cfg.mlp_ratio", "\(mlpRatio) gives no MLP width") }
        let unsupported = "is not supported by this port (open_clip's plain ViT tower only)"
        if let lsInitValue { throw bad("vision_cfg.ls_init_value", "layer scale (\(lsInitValue)) \(unsupported)") }
        if attentionalPool { throw bad("vision_cfg.attentional_pool", "an attentional pooler \(unsupported)") }
        if noLnPre { throw bad("vision_cfg.no_ln_pre", "true \(unsupported)") }
        if poolType != "tok" { throw bad("vision_cfg.pool_type", "\"\(poolType)\" \(unsupported); only \"tok\"") }
        if finalLnAfterPool { throw bad("vision_cfg.final_ln_after_pool", "true \(unsupported)") }
        if posEmbedType != "learnable" {
            throw bad("vision_cfg.pos_embed_type", "\"\(posEmbedType)\" \(unsupported); only \"learnable\"")
        }
        if let timmModelName { throw bad("vision_cfg.timm_model_name", "timm tower \"\(timmModelName)\" \(unsupported)") }
        if hasActKwargs { throw bad("vision_cfg.act_kwargs", "custom activation arguments \(unsupported)") }
        if hasNormKwargs { throw bad("vision_cfg.norm_kwargs", "custom LayerNorm arguments \(unsupported)") }
    }
}

/// open_clip's `VisionTransformer` (the `visual` tower of a CLIP model) with its default 'tok' pooling: patch
/// embedding, class token and learned positions, `ln_pre`, pre-LayerNorm blocks (exact GELU unless `quick_gelu`,
/// LayerNorm eps 1e-5, no layer scale), then `ln_post(x)[:, 0] @ proj`. `embed` adds StreamingT2V's APM
/// preprocessing in front.
public struct OpenCLIPVisionModel: Sendable {
    /// The model's configuration, checked against the weights.
    public let config: OpenCLIPVisionConfig

    /// OpenAI CLIP's per-channel normalisation (RGB), which OpenCLIP towers are trained with.
    public static let imageMean: [Float] = [0.48145466, 0.4578275, 0.40821073]
    public static let imageStd: [Float] = [0.26862954, 0.26130258, 0.27577711]

    /// `conv1.weight` as a linear map from a flattened `[3, p, p]` patch: `[width, 3·p·p]`.
    private let patchWeight: Tensor
    private let classEmbedding: Tensor  // [1, 1, width]
    private let positionalEmbedding: Tensor  // [grid² + 1, width]
    private let preNorm: NormLayer
    private let blocks: [CLIPEncoderLayer]
    private let postNorm: NormLayer
    private let projection: Tensor  // [width, embed_dim]

    /// Builds the tower from open_clip weights (`visual.…`), found under any prefix (a whole CLIP state dict,
    /// StreamingT2V's `image_encoder.model.visual.…`, or a bare `VisionTransformer` state dict); pass `prefix` when
    /// a file holds several towers. Sizes the weights reveal are checked against `config`; other tensors are ignored.
    public init(config: OpenCLIPVisionConfig = .vitH14, weights all: Weights, prefix: String? = nil) throws {
        try config.validate()
        let weights = try OpenCLIPVisionModel.visualWeights(from: all, prefix: prefix)
        try OpenCLIPVisionModel.checkSizes(config, against: weights)
        let component = "OpenCLIPVisionModel (\(weights.origin))"
        let report = weights.report(expected: OpenCLIPVisionModel.expectedShapes(config).mapValues { Optional($0) })
        if let first = report.missing.first {
            throw DiffusionError.missingWeight(component: component, key: first,
                                               closeMatches: report.closeMatches[first]
                                                   ?? DiffusionError.closeMatches(to: first, in: weights.keys))
        }
        if let bad = report.shapeMismatches.first {
            throw DiffusionError.weightShape(component: component, key: bad.name, expected: bad.expected, actual: bad.actual)
        }
        self.config = config
        // nn.MultiheadAttention's fused projection: rows q, k, v, each cut as a view of the fused tensor.
        var split = weights
        for i in 0..<config.layers {
            let a = "visual.transformer.resblocks.\(i).attn."
            for (fused, suffix) in [("in_proj_weight", "weight"), ("in_proj_bias", "bias")] {
                split = try split.splittingRows(of: a + fused, into: ["q", "k", "v"].map { a + $0 + "_proj." + suffix })
            }
        }
        let read = WeightReader(split, component: "OpenCLIPVisionModel")
        let d = config.width, p = config.patchSize, f = config.mlpWidth, eps: Float = 1e-5
        patchWeight = try read("visual.conv1.weight", [d, 3, p, p]).reshaped([d, 3 * p * p])
        classEmbedding = try read("visual.class_embedding", [d]).reshaped([1, 1, d])
        positionalEmbedding = try read("visual.positional_embedding", [config.grid * config.grid + 1, d])
        preNorm = try NormLayer(read, "visual.ln_pre.", channels: d, eps: eps)
        let activation: Activation = config.quickGELU ? .quickGELU : .gelu
        blocks = try (0..<config.layers).map { i in
            try CLIPEncoderLayer(read, "visual.transformer.resblocks.\(i).", names: .openCLIP, width: d, mlp: f, eps: eps,
                                 heads: config.heads, activation: activation)
        }
        postNorm = try NormLayer(read, "visual.ln_post.", channels: d, eps: eps)
        projection = try read("visual.proj", [d, config.embedDim])
    }

    /// StreamingT2V's APM preprocessing (`FrozenOpenCLIPImageEmbedder.preprocess`) to `size`×`size`: kornia's
    /// bicubic resize with `align_corners=True` and its Gaussian anti-aliasing, then `(x + 1) / 2`, then the CLIP
    /// mean/std. `pixels` `[B, 3, H, W]` in [-1, 1] → `[B, 3, size, size]`.
    public static func preprocess(pixelsMinusOneToOne pixels: Tensor, size: Int) throws -> Tensor {
        guard pixels.rank == 4, pixels.shape[1] == 3, pixels.shape[0] > 0, pixels.shape[2] > 0, pixels.shape[3] > 0 else {
            throw DiffusionError.badInput(component: "OpenCLIPVisionModel",
                                          reason: "images must be [B, 3, H, W] with B, H, W > 0, got \(pixels.shape)")
        }
        guard size > 0 else { throw DiffusionError.badInput(component: "OpenCLIPVisionModel", reason: "size \(size) must be positive") }
        let resized = gaussianAntialiasedResize(pixels, height: size, width: size, mode: .bicubic, alignCorners: true)
        let mean = Tensor(shape: [1, 3, 1, 1], data: imageMean), std = Tensor(shape: [1, 3, 1, 1], data: imageStd)
        return ((resized + 1) / 2 - mean) / std
    }

    /// `preprocess(pixelsMinusOneToOne:size:)` to this tower's image size.
    public func preprocess(pixelsMinusOneToOne pixels: Tensor) throws -> Tensor {
        try OpenCLIPVisionModel.preprocess(pixelsMinusOneToOne: pixels, size: config.imageSize)
    }

    /// Pooled embeddings `[B, embed_dim]` of preprocessed images `[B, 3, image_size, image_size]`.
    public func callAsFunction(_ pixels: Tensor) throws -> Tensor {
        let s = config.imageSize
        guard pixels.rank == 4, pixels.shape[0] > 0, Array(pixels.shape.dropFirst()) == [3, s, s] else {
            throw DiffusionError.badInput(component: "OpenCLIPVisionModel",
                                          reason: "images must be [B, 3, \(s), \(s)] (preprocessed), got \(pixels.shape)")
        }
        let b = pixels.shape[0], d = config.width, p = config.patchSize, g = config.grid
        // conv1 has kernel = stride = patch: a GEMM over flattened patches, in (row, column) raster order.
        var cropped = pixels
        if g * p != s {
            cropped = slice(slice(pixels, axis: 2, start: 0, end: g * p), axis: 3, start: 0, end: g * p)
        }
        let patches = permute(cropped.reshaped([b, 3, g, p, g, p]), [0, 2, 4, 1, 3, 5]).reshaped([b, g * g, 3 * p * p])
        let tokens = linear(patches, weight: patchWeight, bias: nil)
        let classTokens = classEmbedding + Tensor(zeros: [b, 1, d])
        var h = preNorm.layer(concat([classTokens, tokens], axis: 1) + positionalEmbedding)
        for block in blocks { h = block(h) }
        // LayerNorm is per token, so normalising only the class token equals ln_post(x)[:, 0].
        let pooled = postNorm.layer(slice(h, axis: 1, start: 0, end: 1).reshaped([b, d]))
        return matmul(pooled, projection)
    }

    /// APM preprocessing then the tower: images `[B, 3, H, W]` in [-1, 1] → `[B, embed_dim]`.
    public func embed(pixelsMinusOneToOne pixels: Tensor) throws -> Tensor {
        try self(preprocess(pixelsMinusOneToOne: pixels))
    }
}
