import Foundation
import LapseGraph
import LapseTensor
import LapseWeights

/// Reads an upscaler checkpoint and builds the network it holds.
public enum UpscaleModelLoader {
    /// Loads `.pth` (torch zip pickles, any of the usual state-dict containers and prefixes, any storage
    /// location), `.safetensors` or an ncnn `.param` (with its `.bin`), detecting the architecture from the tensors.
    /// `architecture` is `auto` or one of `UpscaleArchitecture`'s raw values, which must then match.
    public static func load(path: String, architecture: String = "auto") throws -> UpscaleModel {
        let checkpoint = try CheckpointFile.open(path)
        if let graph = checkpoint.ncnn {
            let converted = try NCNNConversion.convert(checkpoint, model: graph)
            if architecture != "auto", architecture.lowercased() != converted.architecture.name {
                throw UpscaleModelError.architectureMismatch(file: path, requested: architecture,
                                                             detected: converted.architecture.name)
            }
            var network = try ArchitectureDetection.network(stateDict: converted.stateDict, file: path,
                                                             requested: converted.architecture.name)
            if let r = converted.outputResize, r.numerator != r.denominator {
                network = ResizedOutputNetwork(base: network, numerator: r.numerator, denominator: r.denominator)
            }
            return UpscaleModel(network: network, path: path)
        }
        let weights = try Weights.stateDict(from: checkpoint)
        var dict: [String: Tensor] = [:]
        for key in weights.keys { dict[key] = try weights.tensor(key) }
        let network = try ArchitectureDetection.network(stateDict: dict, file: path, requested: architecture)
        return UpscaleModel(network: network, path: path)
    }

    /// The files a load of `path` reads: the file, and the other half of an ncnn `.param` / `.bin` pair if present.
    public static func files(for path: String) -> [String] {
        let stem = (path as NSString).deletingPathExtension
        let partner = path.hasSuffix(".param") ? stem + ".bin" : path.hasSuffix(".bin") ? stem + ".param" : nil
        guard let partner, FileManager.default.fileExists(atPath: partner) else { return [path] }
        return [path, partner]
    }
}

/// `LoadUpscaleModel {path, arch: "auto"}` → `model`.
public struct LoadUpscaleModel: Node {
    public static let schema = NodeSchema(
        type: "LoadUpscaleModel", category: "image/upscaling",
        summary: "Loads an APISR / Real-ESRGAN upscaler (.pth, .safetensors or ncnn .param), detecting its architecture",
        inputs: [
            InputSpec("path", .string, doc: "checkpoint: .pth, .safetensors, or an ncnn .param with its .bin beside it"),
            InputSpec("arch", .string, default: .string("auto"), allowed: UpscaleArchitecture.parameterValues,
                      doc: "architecture; auto detects it from the weights"),
        ],
        outputs: [OutputSpec("model", .upscaleModel, doc: "the loaded network")],
        inputFileParams: ["path"])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let path = try inputs.string("path")
        let arch = try inputs.string("arch")
        // Kept between jobs of `lapse serve` (within its model memory budget); keyed by both files of an ncnn pair.
        let model = try ModelCache.shared.value(kind: "UpscaleModel", files: UpscaleModelLoader.files(for: path), params: "arch=\(arch)") {
            try UpscaleModelLoader.load(path: path, architecture: arch)
        }
        let detail: String
        switch model.network {
        case let n as RRDBNetwork: detail = n.configuration.description
        case let n as SRVGGNetwork: detail = n.configuration.description
        case let n as ResizedOutputNetwork: detail = "×\(n.base.scale) network, output resized to ×\(n.scale)"
        default: detail = "×\(model.network.scale)"
        }
        context.log("\((path as NSString).lastPathComponent): \(model.network.architecture) (\(detail))")
        return NodeOutputs("model", .upscaleModel, model)
    }
}
