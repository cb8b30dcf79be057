import DiffusionPlugin

/// Where StreamingT2V's tensors live in the released Lightning checkpoint's `state_dict` (`streaming_t2v.ckpt`) and
/// the names each piece reads under its prefix.
///
/// - `base_model.*`: the ModelScope UNet (diffusers' `UNet3DConditionModel` names) plus the CAM mergers
///   (`cross_attention_merger_down_blocks.{i}.temporal_transformer.*`, `cross_attention_merger_mid_block.…`) and the
///   APM token mixing inside every spatial attn2 (`….transformer_blocks.0.attn2.{conv,conv_ln,alpha}`).
/// - `unet.*`: the CAM branch, a copy of the UNet's encoder half plus `controlnet_cond_embedding.*`.
/// - `resampler.context_embedding.{0,2}.*`: the APM resampler.
/// - `image_encoder.model.visual.*`: the OpenCLIP vision tower (the text tower's tensors beside it are unused).
public enum StreamingT2VKeys {
    /// Prefix of the base UNet, its mergers and its token mixing.
    public static let baseModel = "base_model."
    /// Prefix of the CAM branch (encoder copy + frame embedding).
    public static let cam = "unet."
    /// Prefix of the APM resampler.
    public static let resampler = "resampler."
    /// Prefix of the OpenCLIP vision tower (`visual.` follows).
    public static let imageEncoder = "image_encoder.model."

    /// The merger on skip `index` (diffusers' `down_block_res_samples` order), under `base_model.`.
    static func downMerger(_ index: Int) -> String { "cross_attention_merger_down_blocks.\(index).temporal_transformer." }
    /// The merger on the mid-block output, under `base_model.`.
    static let midMerger = "cross_attention_merger_mid_block.temporal_transformer."
    /// The frame embedding, under `unet.`.
    static let frameEmbedding = "controlnet_cond_embedding."
    /// The resampler MLP's two linears, under `resampler.`.
    static let resamplerIn = "context_embedding.0.", resamplerOut = "context_embedding.2."

    /// diffusers paths of a UNet3D's spatial cross-attentions (`down_blocks.0.attentions.1.transformer_blocks.0.attn2`,
    /// `mid_block.…`, `up_blocks.…`): the places the APM token mixing sits, in forward order.
    static func spatialCrossAttentionPaths(_ config: UNet3DConditionConfig) -> [String] {
        var paths: [String] = []
        for (i, type) in config.downBlockTypes.enumerated() where type.hasPrefix("CrossAttn") {
            for j in 0..<config.layersPerBlock { paths.append("down_blocks.\(i).attentions.\(j).transformer_blocks.0.attn2") }
        }
        paths.append("mid_block.attentions.0.transformer_blocks.0.attn2")
        for (i, type) in config.upBlockTypes.enumerated() where type.hasPrefix("CrossAttn") {
            for j in 0...config.layersPerBlock { paths.append("up_blocks.\(i).attentions.\(j).transformer_blocks.0.attn2") }
        }
        return paths
    }

    /// Number of skips a UNet3D's down pass produces (the stem, each layer, each downsampler): one merger each.
    static func skipCount(_ config: UNet3DConditionConfig) -> Int {
        1 + config.blockOutChannels.count * config.layersPerBlock + (config.blockOutChannels.count - 1)
    }
}
