import Foundation
import LapseGraph
import LapseTensor
import LapseWeights

/// `LoadCLIP {path, vocab, config}` → `clip`.
public struct LoadCLIP: Node {
    public static let schema = NodeSchema(
        type: "LoadCLIP", category: "conditioning",
        summary: "Loads a CLIP text encoder from a transformers file or a single-file SD checkpoint, with the BPE vocabulary",
        inputs: [
            InputSpec("path", .string, doc: "text_encoder/model.safetensors (or .bin), or an LDM single-file checkpoint"),
            InputSpec("vocab", .string, default: .string("models/clip/bpe_simple_vocab_16e6.txt.gz"),
                      doc: "CLIP's bpe_simple_vocab_16e6.txt(.gz), fetched by scripts/fetch-assets.sh"),
            InputSpec("config", .string, default: .string(""),
                      doc: "optional transformers config.json; empty infers sizes from the weights (quick_gelu, 64-wide heads)"),
        ],
        outputs: [OutputSpec("clip", .clip, doc: "tokenizer and text transformer")],
        inputFileParams: ["path", "vocab"])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let path = try inputs.string("path")
        let weights = try Weights.load(path)
        let configPath = try inputs.string("config")
        let config: CLIPTextConfig
        if configPath.isEmpty {
            config = try CLIPTextConfig.inferred(from: weights)
        } else {
            do {
                config = try CLIPTextConfig.decode(json: InputFile.read(configPath))
            } catch let error as DecodingError {
                throw NodeError.invalidValue(port: "config", reason: "\(configPath): not a CLIP text config (\(error))")
            }
        }
        let tokenizer = try CLIPTokenizer(vocabularyFile: URL(fileURLWithPath: try inputs.string("vocab")))
        let value = try CLIPValue.checked(config: config, weights: weights, tokenizer: tokenizer)
        context.log("\((path as NSString).lastPathComponent): CLIP text encoder, \(config.numHiddenLayers) layers × "
                    + "\(config.hiddenSize) wide, \(config.numAttentionHeads) heads, \(config.hiddenAct)")
        return NodeOutputs("clip", .clip, value)
    }
}
