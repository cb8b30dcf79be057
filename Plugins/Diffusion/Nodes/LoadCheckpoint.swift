import Foundation
import LapseGraph
import LapseTensor
import LapseWeights

/// The per-component configurations of a Stable Diffusion checkpoint, as `LoadCheckpoint`'s `config` JSON gives
/// them: `{"unet": {…}, "vae": {…}, "text_encoder": {…}}`, each in the published (diffusers / transformers) field
/// names. Absent sections or fields keep SD1.5's values; sizes readable from the weights are read from them.
public struct CheckpointConfig: Codable, Sendable {
    /// The UNet's diffusers `config.json` fields.
    public var unet: UNet2DConditionConfig?
    /// The VAE's diffusers `config.json` fields.
    public var vae: AutoencoderKLConfig?
    /// The text encoder's transformers `config.json` fields.
    public var textEncoder: CLIPTextConfig?

    enum CodingKeys: String, CodingKey {
        case unet, vae, textEncoder = "text_encoder"
    }

    /// Nothing given: SD1.5 everywhere.
    public init(unet: UNet2DConditionConfig? = nil, vae: AutoencoderKLConfig? = nil, textEncoder: CLIPTextConfig? = nil) {
        self.unet = unet
        self.vae = vae
        self.textEncoder = textEncoder
    }
}

/// Errors of the checkpoint, motion-module and sampling nodes, each naming the file, node or port at fault.
public enum DiffusionNodeError: LocalizedError, Sendable {
    /// A checkpoint lacks a whole component (no UNet, VAE or text-encoder tensors under any known naming).
    case missingComponent(path: String, component: String, hint: String)
    /// A configuration JSON could not be decoded.
    case badConfigFile(path: String, reason: String)
    /// The motion modules do not fit the UNet they are applied to.
    case motionMismatch(reason: String)
    /// More frames than a motion module has positions for.
    case tooManyFrames(frames: Int, limit: Int)
    /// A size that does not fit the VAE's 8× downsampling.
    case badSize(port: String, value: Int, multiple: Int)

    public var errorDescription: String? {
        switch self {
        case .missingComponent(let path, let component, let hint):
            return "\(path): no \(component) weights found (\(hint))"
        case .badConfigFile(let path, let reason):
            return "config \(path): \(reason)"
        case .motionMismatch(let reason):
            return "motion module does not fit this UNet: \(reason)"
        case .tooManyFrames(let frames, let limit):
            return "\(frames) frames exceed the motion module's \(limit) frame positions: AnimateDiff modules add a "
                + "sinusoidal position per frame from a table of \(limit) (motion_max_seq_length) and cannot place frames "
                + "beyond it; generate at most \(limit) frames (MagicTime is trained at 16)"
        case .badSize(let port, let value, let multiple):
            return "\(port) \(value) is not a multiple of \(multiple) (the VAE downsamples by \(multiple))"
        }
    }
}

/// The block layout diffusers-named UNet weights reveal, the same for the 2-D and the 3-D UNet (their spatial
/// tensors share names): block widths, layers per block and which blocks have attention.
struct UNetBlockLayout {
    var widths: [Int]
    var layersPerBlock: Int
    var downHasAttention: [Bool]
    var upHasAttention: [Bool]

    /// `nil` when the weights have no down block.
    init?(_ weights: Weights) {
        widths = []
        while let s = weights.shape(of: "down_blocks.\(widths.count).resnets.0.conv1.weight") { widths.append(s[0]) }
        guard !widths.isEmpty else { return nil }
        layersPerBlock = 0
        while weights.contains("down_blocks.0.resnets.\(layersPerBlock).conv1.weight") { layersPerBlock += 1 }
        downHasAttention = widths.indices.map { weights.contains("down_blocks.\($0).attentions.0.proj_in.weight") }
        upHasAttention = widths.indices.map { weights.contains("up_blocks.\($0).attentions.0.proj_in.weight") }
    }
}

extension UNet2DConditionConfig {
    /// `base` with the sizes the diffusers-named `weights` reveal: input/output channels, block widths, layers per
    /// block, which blocks have attention, the mid block and the cross-attention width. Head counts stay `base`'s.
    public static func inferred(from weights: Weights, base: UNet2DConditionConfig = .sd15) -> UNet2DConditionConfig {
        var c = base
        guard let convIn = weights.shape(of: "conv_in.weight"), convIn.count == 4 else { return c }
        c.inChannels = convIn[1]
        if let out = weights.shape(of: "conv_out.weight") { c.outChannels = out[0] }
        guard let layout = UNetBlockLayout(weights) else { return c }
        c.blockOutChannels = layout.widths
        c.layersPerBlock = layout.layersPerBlock
        c.downBlockTypes = layout.downHasAttention.map { $0 ? "CrossAttnDownBlock2D" : "DownBlock2D" }
        c.upBlockTypes = layout.upHasAttention.map { $0 ? "CrossAttnUpBlock2D" : "UpBlock2D" }
        c.midBlockType = weights.contains("mid_block.resnets.0.conv1.weight") ? "UNetMidBlock2DCrossAttn" : nil
        let attention = weights.keys.first { $0.hasSuffix("transformer_blocks.0.attn2.to_k.weight") }
        if let attention, let s = weights.shape(of: attention), s.count == 2 { c.crossAttentionDim = s[1] }
        if let proj = weights.keys.first(where: { $0.hasSuffix("attentions.0.proj_in.weight") }), let s = weights.shape(of: proj) {
            c.useLinearProjection = s.count == 2
        }
        return c
    }
}

extension AutoencoderKLConfig {
    /// `base` with the block widths, layers per block and latent channels the diffusers-named `weights` reveal.
    public static func inferred(from weights: Weights, base: AutoencoderKLConfig = .sd15) -> AutoencoderKLConfig {
        var c = base
        var widths: [Int] = []
        while let s = weights.shape(of: "encoder.down_blocks.\(widths.count).resnets.0.conv1.weight") { widths.append(s[0]) }
        guard !widths.isEmpty else { return c }
        var layers = 0
        while weights.contains("encoder.down_blocks.0.resnets.\(layers).conv1.weight") { layers += 1 }
        c.blockOutChannels = widths
        c.layersPerBlock = layers
        if let s = weights.shape(of: "post_quant_conv.weight") { c.latentChannels = s[0] }
        if let s = weights.shape(of: "encoder.conv_in.weight") { c.inChannels = s[1] }
        if let s = weights.shape(of: "decoder.conv_out.weight") { c.outChannels = s[0] }
        c.midBlockAddAttention = weights.contains("decoder.mid_block.attentions.0.to_q.weight")
        return c
    }
}

/// `LoadCheckpoint {path, config, vocab, precision}` → `unet`, `clip`, `vae`.
public struct LoadCheckpoint: Node {
    public static let schema = NodeSchema(
        type: "LoadCheckpoint", category: "loaders",
        summary: "Loads a Stable Diffusion 1.x checkpoint (LDM single file .safetensors/.ckpt, or a diffusers folder) as UNet, CLIP and VAE",
        inputs: [
            InputSpec("path", .string, doc: "single-file checkpoint (e.g. v1-5-pruned-emaonly.safetensors, a DreamBooth model) or a diffusers folder with unet/, vae/, text_encoder/"),
            InputSpec("config", .string, default: .string(""),
                      doc: "optional JSON {\"unet\": {…}, \"vae\": {…}, \"text_encoder\": {…}} in diffusers/transformers field names; empty: SD1.5, sizes read from the weights"),
            InputSpec("vocab", .string, default: .string("models/clip/bpe_simple_vocab_16e6.txt.gz"),
                      doc: "CLIP's bpe_simple_vocab_16e6.txt(.gz), fetched by scripts/fetch-assets.sh; a diffusers folder's own tokenizer/ takes its place"),
            WeightPrecision.input,
        ],
        outputs: [
            OutputSpec("unet", .unet, doc: "denoising UNet (weights, built by Sample)"),
            OutputSpec("clip", .clip, doc: "tokenizer and text-encoder weights"),
            OutputSpec("vae", .vae, doc: "autoencoder (weights, built by VAEDecode/VAEEncode)"),
        ],
        inputFileParams: ["path", "vocab"])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let path = try inputs.string("path")
        var config = try Self.readConfig(try inputs.string("config"))
        var (unetAll, vaeAll, clipAll) = try Self.readComponents(path, config: &config)
        let precision = try WeightPrecision.param(inputs)
        unetAll.precision = precision; vaeAll.precision = precision; clipAll.precision = precision
        let name = (path as NSString).lastPathComponent
        // A ModelScope text-to-video folder: its spatial layers load and check as an SD UNet's below.
        let unet3D = try Self.unet3DConfig(checkpoint: path, weights: unetAll)
        if let unet3D { config.unet = unet3D.spatialConfig }

        var unetConfig = UNet2DConditionConfig.inferred(from: unetAll, base: config.unet ?? .sd15)
        // LDM numbers its blocks flatly, so the renaming needs layers_per_block first: the first downsampler
        // (`input_blocks.K.0.op`) sits right after layers_per_block entries of the first block.
        let ldm = unetAll.scoped(UNet2DConditionModel.singleFilePrefix)
        if let k = (1..<64).first(where: { ldm.contains("input_blocks.\($0).0.op.weight") }) { unetConfig.layersPerBlock = k - 1 }
        let unetWeights = UNet2DConditionModel.diffusersWeights(from: unetAll, config: unetConfig)
        guard unetWeights.contains("conv_in.weight") else {
            throw DiffusionNodeError.missingComponent(path: path, component: "UNet",
                                                      hint: "expected model.diffusion_model.* or diffusers conv_in.weight; "
                                                          + "closest present: " + DiffusionError.closeMatches(to: "model.diffusion_model.input_blocks.0.0.weight", in: unetAll.keys).joined(separator: ", "))
        }
        let unetFinal = UNet2DConditionConfig.inferred(from: unetWeights, base: unetConfig)
        try unetFinal.validate()

        var vaeConfig = config.vae ?? .sd15
        let vaeMapped = AutoencoderKL.diffusersWeights(from: vaeAll, config: vaeConfig)
        guard vaeMapped.contains("decoder.conv_in.weight") else {
            throw DiffusionNodeError.missingComponent(path: path, component: "VAE",
                                                      hint: "expected first_stage_model.* or diffusers decoder.conv_in.weight")
        }
        vaeConfig = AutoencoderKLConfig.inferred(from: vaeMapped, base: vaeConfig)
        let vaeWeights = AutoencoderKL.diffusersWeights(from: vaeAll, config: vaeConfig)
        try vaeConfig.validate()

        let clipWeights = CLIPTextModel.transformersWeights(from: clipAll)
        guard clipWeights.contains("text_model.embeddings.token_embedding.weight") else {
            throw DiffusionNodeError.missingComponent(path: path, component: "text encoder",
                                                      hint: "expected cond_stage_model.transformer.text_model.* or transformers text_model.*")
        }
        let clipConfig = try config.textEncoder ?? CLIPTextConfig.inferred(from: clipWeights)
        let tokenizer = try Self.tokenizer(checkpoint: path, vocab: try inputs.string("vocab"))
        let clip = try CLIPValue.checked(config: clipConfig, weights: clipWeights, tokenizer: tokenizer)

        // Build the UNet and VAE once so a damaged or foreign checkpoint fails here, naming the missing or misshapen
        // tensor and its nearest keys, instead of in Sample/VAEDecode after text encoding (fp32 files are mapped,
        // so this reads no data; fp16 ones convert, about a second for SD1.5, freed straight away).
        if let unet3D {
            _ = try UNet3DConditionModel(config: unet3D, weights: unetWeights)
        } else {
            _ = try UNet2DConditionModel(config: unetFinal, weights: unetWeights)
        }
        _ = try AutoencoderKL(config: vaeConfig, weights: vaeWeights)

        // What the three components did not claim: a different model family, or a training leftover.
        if unetAll.origin == vaeAll.origin {
            let known = ["model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "conditioner.", "model_ema.",
                         "alphas_cumprod", "betas", "posterior_", "sqrt_", "log_one_minus", "model.diffusion_model"]
            let stray = unetAll.keys.filter { key in !known.contains { key.hasPrefix($0) } }
            if !stray.isEmpty, unetAll.keys.contains(where: { $0.hasPrefix("model.diffusion_model.") }) {
                context.log("\(name): \(stray.count) tensors belong to no SD1.x component (ignored), e.g. \(stray.prefix(3).joined(separator: ", "))")
            }
        }
        context.log("\(name): \(unet3D == nil ? "UNet" : "UNet3DConditionModel") \(unetFinal.blockOutChannels) × \(unetFinal.layersPerBlock), cross-attention \(unetFinal.crossAttentionDim); "
                    + "VAE \(vaeConfig.blockOutChannels); CLIP \(clipConfig.numHiddenLayers) layers × \(clipConfig.hiddenSize)")
        var unetValue = unet3D.map { UNetValue(unet3D: $0, weights: unetWeights) } ?? UNetValue(config: unetFinal, weights: unetWeights)
        unetValue.schedulerConfig = try Self.schedulerConfig(checkpoint: path)
        var outputs = NodeOutputs()
        outputs.set("unet", .unet, unetValue)
        outputs.set("clip", .clip, clip)
        outputs.set("vae", .vae, VAEValue(config: vaeConfig, weights: vaeWeights))
        return outputs
    }

    /// A diffusers folder's `scheduler/scheduler_config.json` (the scheduler the pipeline was published with), or
    /// nil for a single file or a folder without one.
    public static func schedulerConfig(checkpoint path: String) throws -> SchedulerConfigFile? {
        guard FileKind(path: path) == .directory else { return nil }
        let file = URL(fileURLWithPath: path).appendingPathComponent("scheduler/scheduler_config.json").path
        return FileKind(path: file) == .missing ? nil : try SchedulerConfigFile.read(file)
    }

    /// The tokenizer of a diffusers folder's own `tokenizer/` (its vocabulary and special tokens: ModelScope and
    /// SD2 pad with `!`), else CLIP's vocabulary file `vocab`.
    public static func tokenizer(checkpoint path: String, vocab: String) throws -> CLIPTokenizer {
        let folder = URL(fileURLWithPath: path).appendingPathComponent("tokenizer")
        if FileKind(path: path) == .directory, FileKind(path: folder.path) != .missing {
            return try CLIPTokenizer(folder: folder)
        }
        return try CLIPTokenizer(vocabularyFile: URL(fileURLWithPath: vocab))
    }

    /// The `UNet3DConditionModel` configuration of a diffusers folder whose `unet/config.json` names that class
    /// (text-to-video-ms-1.7b), or whose UNet weights have its `transformer_in` when there is no config; nil otherwise.
    static func unet3DConfig(checkpoint path: String, weights: Weights) throws -> UNet3DConditionConfig? {
        guard FileKind(path: path) == .directory else { return nil }
        let file = URL(fileURLWithPath: path).appendingPathComponent("unet/config.json").path
        guard FileKind(path: file) != .missing else {
            return UNet3DConditionConfig.matches(weights) ? UNet3DConditionConfig.inferred(from: weights) : nil
        }
        let data = try InputFile.read(file)
        let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        guard object?["_class_name"] as? String == "UNet3DConditionModel" else { return nil }
        do { return try UNet3DConditionConfig.decode(json: data) } catch {
            throw DiffusionNodeError.badConfigFile(path: file, reason: "not a UNet3DConditionModel config (\(error))")
        }
    }

    /// The optional pipeline configuration file.
    static func readConfig(_ path: String) throws -> CheckpointConfig {
        guard !path.isEmpty else { return CheckpointConfig() }
        let data: Data
        do { data = try InputFile.read(path) } catch {
            throw DiffusionNodeError.badConfigFile(path: path, reason: "cannot read (\(error.localizedDescription))")
        }
        do { return try JSONDecoder().decode(CheckpointConfig.self, from: data) } catch {
            throw DiffusionNodeError.badConfigFile(path: path, reason: "not a {unet, vae, text_encoder} config (\(error))")
        }
    }

    /// UNet, VAE and text-encoder tensors: one lazily read collection three times for a single file, or the three
    /// sub-folders of a diffusers pipeline (whose `config.json` files fill sections `config` leaves empty).
    static func readComponents(_ path: String, config: inout CheckpointConfig) throws -> (Weights, Weights, Weights) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw DiffusionError.fileUnreadable(path: path, reason: "no such file or folder")
        }
        guard isDirectory.boolValue else {
            let all = try Weights.load(path)
            return (all, all, all)
        }
        let root = URL(fileURLWithPath: path)
        func component(_ folder: String, _ names: [String]) throws -> (Weights, Data?) {
            let dir = root.appendingPathComponent(folder)
            guard let file = names.map({ dir.appendingPathComponent($0).path }).first(where: { FileManager.default.fileExists(atPath: $0) }) else {
                throw DiffusionNodeError.missingComponent(path: path, component: folder,
                                                          hint: "a diffusers folder needs \(folder)/ with one of \(names.joined(separator: ", "))")
            }
            let config = dir.appendingPathComponent("config.json").path
            // A missing config.json is allowed (the pipeline config or the weights tell the sizes); any other file
            // kind there (a FIFO would block the read) is an error.
            return (try Weights.load(file), FileKind(path: config) == .missing ? nil : try InputFile.read(config))
        }
        let model = ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.bin",
                     "diffusion_pytorch_model.fp16.bin"]
        let (unet, unetJSON) = try component("unet", model)
        let (vae, vaeJSON) = try component("vae", model)
        let (text, textJSON) = try component("text_encoder", ["model.safetensors", "model.fp16.safetensors", "pytorch_model.bin", "pytorch_model.fp16.bin"])
        do {
            if config.unet == nil, let unetJSON { config.unet = try UNet2DConditionConfig.decode(json: unetJSON) }
            if config.vae == nil, let vaeJSON { config.vae = try AutoencoderKLConfig.decode(json: vaeJSON) }
            if config.textEncoder == nil, let textJSON { config.textEncoder = try CLIPTextConfig.decode(json: textJSON) }
        } catch {
            throw DiffusionNodeError.badConfigFile(path: path, reason: "a component config.json does not decode (\(error))")
        }
        return (unet, vae, text)
    }
}
