import DiffusionPlugin
import Foundation
import LapseGraph
import LapseWeights

/// `LoadVid2VidModel {unet, text_encoder = "", vae = "", vocab, config = "", precision = auto}` → `unet`, `clip`, `vae`.
///
/// StreamingT2V's stage-3 refiner, MS-Vid2Vid-XL, from the files of damo/Video-to-Video as published: the
/// generator `.pth` in modelscope's `Vid2VidSDUNet` key layout (`non_ema_0035000.pth`), OpenCLIP ViT-H-14's
/// `open_clip_pytorch_model.bin` (its text tower only: the penultimate layer then `ln_final`, prompts tokenized
/// as `open_clip.tokenize` does, padding with 0) and SD2.1's `v2-1_512-ema-pruned.ckpt` (its first-stage VAE only).
/// Sizes come from the weights (the head width, which no shape tells, from `config` or the release's 64). The text encoder and the VAE are optional: left empty, their outputs are left
/// empty and fail the node that reads them, naming the param to set, so a graph that only runs `PredictNoise` needs
/// just the UNet file.
/// Every file is identified before use, so swapped params are named.
public struct LoadVid2VidModel: Node {
    public static let schema = NodeSchema(
        type: "LoadVid2VidModel", category: "loaders",
        summary: "Loads MS-Vid2Vid-XL (damo/Video-to-Video), StreamingT2V's refiner: the generator UNet, the OpenCLIP ViT-H text tower, the SD2.1 VAE",
        inputs: [
            InputSpec("unet", .string, doc: "the generator .pth in modelscope's Vid2VidSDUNet layout (non_ema_0035000.pth)"),
            InputSpec("text_encoder", .string, default: .string(""),
                      doc: "OpenCLIP ViT-H-14 open_clip_pytorch_model.bin (text tower read); empty: no `clip` output"),
            InputSpec("vae", .string, default: .string(""),
                      doc: "SD2.1 v2-1_512-ema-pruned.ckpt (its first_stage_model VAE read); empty: no `vae` output"),
            InputSpec("vocab", .string, default: .string("models/clip/bpe_simple_vocab_16e6.txt.gz"),
                      doc: "open_clip's bpe_simple_vocab_16e6.txt(.gz), fetched by scripts/fetch-assets.sh; read only with text_encoder"),
            InputSpec("config", .string, default: .string(""),
                      doc: "optional JSON of Vid2VidSDUNet's constructor arguments ({\"head_dim\": 64, …}) for what the weights cannot tell; empty: the release's"),
            WeightPrecision.input,
        ],
        outputs: [
            OutputSpec("unet", .unet, doc: "the Vid2VidSDUNet generator (v-prediction; RefineVideo samples it)"),
            OutputSpec("clip", .clip, optional: true,
                       doc: "open_clip tokenizer and the ViT-H text tower (penultimate layer + ln_final); empty without text_encoder"),
            OutputSpec("vae", .vae, optional: true, doc: "SD2.1 autoencoder (scaling factor 0.18215); empty without vae"),
        ],
        inputFileParams: ["unet", "text_encoder", "vae", "vocab", "config"])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let unetPath = try inputs.string("unet")
        let textPath = try inputs.string("text_encoder"), vaePath = try inputs.string("vae")

        let precision = try WeightPrecision.param(inputs)
        let unetWeights = try Weights.load(unetPath, precision: precision)
        try Self.expect(.vid2vidUNet, param: "unet", path: unetPath, weights: unetWeights)
        // Head width is the one size no tensor shape tells; the release's (64) unless a config says otherwise.
        let configPath = try inputs.string("config")
        let base: Vid2VidUNetConfig
        do {
            base = try configPath.isEmpty ? .msVid2VidXL : Vid2VidUNetConfig.decode(json: InputFile.read(configPath))
        } catch let error as DecodingError {
            throw NodeError.invalidValue(port: "config", reason: "\(configPath): not Vid2VidSDUNet arguments (\(error))")
        }
        let config = try Vid2VidUNetConfig.inferred(from: unetWeights, base: base)
        // Built once here so a damaged file fails at load, naming the tensor (mapped fp32 tensors are not read).
        _ = try Vid2VidUNet(config: config, weights: unetWeights)
        var outputs = NodeOutputs("unet", .unet, UNetValue(vid2vid: config, weights: unetWeights))
        var summary = ["UNet \(config.dimMult.map { $0 * config.dim }) × \(config.numResBlocks)"]

        if textPath.isEmpty {
            outputs.leaveEmpty("clip", reason: "LoadVid2VidModel was given no text_encoder; set its text_encoder param to OpenCLIP ViT-H-14's open_clip_pytorch_model.bin (docs/models.md)")
        } else {
            let weights = try Weights.load(textPath, precision: precision)
            try Self.expect(.openCLIP, param: "text_encoder", path: textPath, weights: weights)
            let tokenizer = try CLIPTokenizer(openCLIPVocabularyFile: URL(fileURLWithPath: try inputs.string("vocab")))
            let clip = try CLIPValue.openCLIPText(weights: weights, tokenizer: tokenizer)
            outputs.set("clip", .clip, clip)
            summary.append("text tower \(clip.config.numHiddenLayers) of \(clip.config.numHiddenLayers + 1) layers × \(clip.config.hiddenSize)")
        }

        if vaePath.isEmpty {
            outputs.leaveEmpty("vae", reason: "LoadVid2VidModel was given no vae; set its vae param to SD2.1's v2-1_512-ema-pruned.ckpt (docs/models.md)")
        } else {
            let weights = try Weights.load(vaePath, precision: precision)
            try Self.expect(.ldmVAE, param: "vae", path: vaePath, weights: weights)
            let vae = try VAEValue.ldmCheckpoint(weights)
            _ = try vae.makeModel()
            outputs.set("vae", .vae, vae)
            summary.append("VAE \(vae.config.blockOutChannels)")
        }
        context.log("\((unetPath as NSString).lastPathComponent): MS-Vid2Vid-XL " + summary.joined(separator: ", "))
        return outputs
    }

    /// The three kinds of file the node takes, told apart by tensor names alone (nothing is read).
    enum FileKind: CaseIterable {
        case vid2vidUNet, openCLIP, ldmVAE

        /// The param the file belongs to and what it is, for error messages.
        var description: String {
            switch self {
            case .vid2vidUNet: "the MS-Vid2Vid-XL generator (give it to `unet`)"
            case .openCLIP: "an OpenCLIP model (give it to `text_encoder`)"
            case .ldmVAE: "a Stable Diffusion checkpoint or VAE in LDM layout (give it to `vae`)"
            }
        }

        func matches(_ weights: Weights) -> Bool {
            switch self {
            case .vid2vidUNet:
                return Vid2VidUNet.matches(weights)
            case .openCLIP:
                return weights.contains("token_embedding.weight") && weights.contains("transformer.resblocks.0.attn.in_proj_weight")
            case .ldmVAE:
                return weights.contains("first_stage_model.encoder.conv_in.weight") || weights.contains("encoder.conv_in.weight")
            }
        }
    }

    /// Refuses a file that is not `kind`, saying what it is instead when it is one of the other two.
    static func expect(_ kind: FileKind, param: String, path: String, weights: Weights) throws {
        if kind.matches(weights) { return }
        let found = FileKind.allCases.first { $0 != kind && $0.matches(weights) }
        let what = found.map { "it is \($0.description)" }
            ?? "its \(weights.count) tensors (e.g. \(weights.keys.prefix(3).joined(separator: ", "))) are none of the three files MS-Vid2Vid-XL uses"
        throw StreamingT2VError.badFile(path: path, reason: "`\(param)` needs \(kind.description.components(separatedBy: " (").first!), but \(what); see docs/models.md")
    }
}
