import DiffusionPlugin
import Foundation
import LapseGraph
import LapseTensor
import LapseWeights

/// `LoadStreamingT2V {path, base, image_encoder_config = "", precision = auto}` → `unet`, `cam`, `apm`, `clip`, `vae`.
///
/// `path` is the released `streaming_t2v.ckpt`, a Lightning training checkpoint: only its `state_dict` is read, and
/// only the storages that dictionary references (the optimizer state beside it, half of the 25 GB file, is never
/// touched). `base` is the text-to-video-ms-1.7b diffusers folder: its tokenizer, its scheduler config and its UNet
/// config (the architecture); every size the weights can tell is read from the weights.
public struct LoadStreamingT2V: Node {
    public static let schema = NodeSchema(
        type: "LoadStreamingT2V", category: "loaders",
        summary: "Loads StreamingT2V (streaming_t2v.ckpt + the text-to-video-ms-1.7b folder): base UNet with CAM mergers and APM mixing, CAM, APM, CLIP, VAE",
        inputs: [
            InputSpec("path", .string, doc: "streaming_t2v.ckpt (the released Lightning checkpoint; only its state_dict is read)"),
            InputSpec("base", .string, doc: "the text-to-video-ms-1.7b diffusers folder (tokenizer/, scheduler/, unet/config.json)"),
            InputSpec("image_encoder_config", .string, default: .string(""),
                      doc: "open_clip model config JSON of the APM image encoder ({\"embed_dim\", \"vision_cfg\": {…}}); empty: ViT-H-14"),
            WeightPrecision.input,
        ],
        outputs: [
            OutputSpec("unet", .streamingUNet, doc: "ModelScope UNet3D with the 13 CAM cross-attention mergers and the APM token mixing"),
            OutputSpec("cam", .cam, doc: "the CAM branch: encoder copy and conditioning-frame embedding"),
            OutputSpec("apm", .apm, doc: "OpenCLIP image encoder and resampler"),
            OutputSpec("clip", .clip, doc: "tokenizer (the base folder's) and text encoder"),
            OutputSpec("vae", .vae, doc: "autoencoder"),
        ],
        inputFileParams: ["path", "base", "image_encoder_config"])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let path = try inputs.string("path"), base = try inputs.string("base")
        let imageEncoderConfig = try inputs.string("image_encoder_config")
        let folder = try BaseFolder(path: base)

        let all = try Weights.load(path, stateDictKey: "state_dict", precision: try WeightPrecision.param(inputs))
        if !all.warnings.isEmpty { context.log(all.warnings.joined(separator: "; ")) }
        let baseWeights = all.scoped(StreamingT2VKeys.baseModel), camWeights = all.scoped(StreamingT2VKeys.cam)
        guard !camWeights.isEmpty, !baseWeights.isEmpty else {
            throw StreamingT2VError.notStreamingT2V(path: path, reason: baseWeights.isEmpty
                ? "no base model weights (base_model.*)"
                : "no CAM weights (unet.*): this looks like a plain text-to-video checkpoint; give it to LoadCheckpoint instead")
        }
        // What no component claims: open_clip's unused text tower (expected) or a different model's tensors.
        let claimed = [StreamingT2VKeys.baseModel, StreamingT2VKeys.cam, StreamingT2VKeys.resampler,
                       StreamingT2VKeys.imageEncoder, "text_encoder.", "vae."]
        let stray = all.keys.filter { key in !claimed.contains { key.hasPrefix($0) } }
        if !stray.isEmpty {
            context.log("\((path as NSString).lastPathComponent): \(stray.count) tensors belong to no StreamingT2V component (ignored), e.g. "
                        + stray.prefix(3).joined(separator: ", "))
        }
        let unetConfig = UNet3DConditionConfig.inferred(from: baseWeights, base: folder.unet)
        let visionConfig = try imageEncoderConfig.isEmpty ? OpenCLIPVisionConfig.vitH14 : Self.visionConfig(imageEncoderConfig)

        // The text encoder and VAE are ms-1.7b's, stored in the checkpoint under their diffusers/transformers names.
        let clipWeights = CLIPTextModel.transformersWeights(from: all.scoped("text_encoder."))
        guard clipWeights.contains("text_model.embeddings.token_embedding.weight") else {
            throw StreamingT2VError.notStreamingT2V(path: path, reason: "no text encoder (text_encoder.text_model.*)")
        }
        let clipConfig = try folder.textEncoder ?? CLIPTextConfig.inferred(from: clipWeights)
        let clip = try CLIPValue.checked(config: clipConfig, weights: clipWeights, tokenizer: folder.tokenizer)
        let vaeAll = all.scoped("vae.")
        var vaeConfig = AutoencoderKLConfig.inferred(from: vaeAll, base: folder.vae ?? .sd15)
        vaeConfig.scalingFactor = folder.vae?.scalingFactor ?? vaeConfig.scalingFactor
        let vaeWeights = AutoencoderKL.diffusersWeights(from: vaeAll, config: vaeConfig)

        // Build everything once so a damaged or foreign checkpoint fails here, naming the tensor, rather than after
        // stage 1 has run (fp32 tensors are mapped: this reads no weight data).
        _ = try StreamingT2VDenoiser(base: baseWeights, cam: camWeights, config: unetConfig)
        let apm = APMValue(visionConfig: visionConfig, weights: all)
        _ = try apm.makeEncoder()
        _ = try AutoencoderKL(config: vaeConfig, weights: vaeWeights)

        context.log("\((path as NSString).lastPathComponent): UNet3D \(unetConfig.blockOutChannels) × \(unetConfig.layersPerBlock) "
                    + "with CAM and APM, image encoder \(visionConfig.layers) layers × \(visionConfig.width), "
                    + "CLIP \(clipConfig.numHiddenLayers) layers × \(clipConfig.hiddenSize); base \((base as NSString).lastPathComponent)")
        var outputs = NodeOutputs()
        outputs.set("unet", .streamingUNet, StreamingUNetValue(config: unetConfig, weights: baseWeights, scheduler: folder.scheduler))
        outputs.set("cam", .cam, CAMValue(weights: camWeights))
        outputs.set("apm", .apm, apm)
        outputs.set("clip", .clip, clip)
        outputs.set("vae", .vae, VAEValue(config: vaeConfig, weights: vaeWeights))
        return outputs
    }

    static func visionConfig(_ path: String) throws -> OpenCLIPVisionConfig {
        do { return try OpenCLIPVisionConfig.decode(json: try InputFile.read(path)) } catch {
            throw StreamingT2VError.badFile(path: path, reason: "not an open_clip model config {\"embed_dim\", \"vision_cfg\": {…}} (\(error.localizedDescription))")
        }
    }
}

/// The parts of a text-to-video-ms-1.7b diffusers folder StreamingT2V needs: configs and the tokenizer.
struct BaseFolder {
    let unet: UNet3DConditionConfig
    let textEncoder: CLIPTextConfig?
    let vae: AutoencoderKLConfig?
    let tokenizer: CLIPTokenizer
    let scheduler: SchedulerConfigFile?

    init(path: String) throws {
        guard FileKind(path: path) == .directory else {
            throw StreamingT2VError.badBase(path: path, reason: "not a folder; give the text-to-video-ms-1.7b diffusers folder (model_index.json, unet/, tokenizer/, scheduler/)")
        }
        let root = URL(fileURLWithPath: path)
        func json(_ relative: String) throws -> Data? {
            let file = root.appendingPathComponent(relative).path
            return FileKind(path: file) == .missing ? nil : try InputFile.read(file)
        }
        guard let unetJSON = try json("unet/config.json") else {
            throw StreamingT2VError.badBase(path: path, reason: "no unet/config.json: StreamingT2V takes its UNet architecture from the text-to-video-ms-1.7b folder")
        }
        let className = (try? JSONSerialization.jsonObject(with: unetJSON) as? [String: Any])?["_class_name"] as? String
        guard className == "UNet3DConditionModel" else {
            throw StreamingT2VError.badBase(path: path, reason: "unet/config.json describes \(className.map { "a \($0)" } ?? "no known class"), not ModelScope's UNet3DConditionModel: the base must be text-to-video-ms-1.7b")
        }
        do {
            unet = try UNet3DConditionConfig.decode(json: unetJSON)
            textEncoder = try json("text_encoder/config.json").map(CLIPTextConfig.decode(json:))
            vae = try json("vae/config.json").map(AutoencoderKLConfig.decode(json:))
        } catch {
            throw StreamingT2VError.badBase(path: path, reason: "a config.json does not decode (\(error))")
        }
        guard FileKind(path: root.appendingPathComponent("tokenizer/vocab.json").path) != .missing else {
            throw StreamingT2VError.badBase(path: path, reason: "no tokenizer/vocab.json: the prompt is tokenized with the base folder's own tokenizer")
        }
        tokenizer = try LoadCheckpoint.tokenizer(checkpoint: path, vocab: "")
        scheduler = try LoadCheckpoint.schedulerConfig(checkpoint: path)
    }
}
