import DiffusionPlugin
import Foundation
import LapseTensor
import LapseTestSupport
import LapseWeights
import Testing

/// The seeded tiny StreamingT2V of Tools/fixtures/streamingt2v.py: weights regenerated from the manifest with
/// TorchGenerator (bit-identical to the script's `torch.rand`) under the checkpoint's key names; inputs and the
/// original code's outputs from the safetensors files beside it.
enum StreamingT2VFixtures {
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func url(_ name: String) -> URL {
        if let bundled = Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures") { return bundled }
        return repoRoot.appendingPathComponent("Tests/StreamingT2VTests/Fixtures/\(name)")
    }

    nonisolated(unsafe) private static var manifestCache: [String: Any]?
    nonisolated(unsafe) private static var weightCache: [String: Weights] = [:]
    nonisolated(unsafe) private static var files: [String: CheckpointFile] = [:]
    private static let lock = NSLock()

    static func manifest() throws -> [String: Any] {
        lock.lock()
        defer { lock.unlock() }
        if let manifestCache { return manifestCache }
        let data = try Data(contentsOf: url("streamingt2v_manifest.json"))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        manifestCache = json
        return json
    }

    /// The checkpoint-named tensors of the given sections (`base_model`, `unet`, `resampler`, `image_encoder`, …).
    static func weights(_ sections: [String]) throws -> Weights {
        let all = try #require(try manifest()["sections"] as? [String: Any])
        var out = Weights(origin: "streamingt2v-tiny")
        for name in sections {
            lock.lock()
            let cached = weightCache[name]
            lock.unlock()
            let section: Weights
            if let cached {
                section = cached
            } else {
                let w = try SeededWeights.make(section: try #require(all[name] as? [String: Any]), origin: name)
                lock.lock()
                weightCache[name] = w
                lock.unlock()
                section = w
            }
            for key in section.keys { out[key] = try section.tensor(key) }
        }
        return out
    }

    /// The tiny base folder's UNet configuration.
    static func unetConfig() throws -> UNet3DConditionConfig {
        try UNet3DConditionConfig.decode(json: Data(contentsOf: url("tiny_base/unet/config.json")))
    }

    /// The tiny open_clip vision tower's configuration.
    static func visionConfig() throws -> OpenCLIPVisionConfig {
        let config = try #require(try manifest()["open_clip_config"])
        return try OpenCLIPVisionConfig.decode(json: JSONSerialization.data(withJSONObject: config))
    }

    /// A tensor of `streamingt2v_step.safetensors` or `streamingt2v_extension.safetensors`.
    static func tensor(_ name: String, file: String = "streamingt2v_step.safetensors") throws -> Tensor {
        lock.lock()
        defer { lock.unlock() }
        if files[file] == nil { files[file] = try CheckpointFile.open(url(file).path) }
        return try files[file]!.tensor(name)
    }

    /// ‖a − b‖ / ‖b‖, the relative error the project's parity tolerances refer to.
    static func relativeError(_ a: Tensor, _ b: Tensor) -> Float {
        precondition(a.shape == b.shape, "compared tensors differ in shape: \(a.shape) vs \(b.shape)")
        var num: Double = 0, den: Double = 0
        for (x, y) in zip(a.scalars, b.scalars) {
            num += Double(x - y) * Double(x - y)
            den += Double(y) * Double(y)
        }
        return Float((num / max(den, .leastNonzeroMagnitude)).squareRoot())
    }

    static func maxAbsError(_ a: Tensor, _ b: Tensor) -> Float {
        precondition(a.shape == b.shape, "compared tensors differ in shape: \(a.shape) vs \(b.shape)")
        return zip(a.scalars, b.scalars).reduce(0) { max($0, abs($1.0 - $1.1)) }
    }
}
