import Foundation
import Testing
import LapseTensor
import LapseWeights
import DiffusionPlugin

/// The seeded tiny UNet / motion-adapter / VAE of Tools/fixtures/unet_vae.py: weights are regenerated from the
/// manifest with TorchGenerator (bit-identical to the script's `torch.rand`), inputs and diffusers' outputs come from
/// unet_vae_io.safetensors.
enum UNetVAEFixtures {
    /// Which names to give the regenerated tensors.
    enum Layout {
        /// diffusers' module names.
        case diffusers
        /// The single-file layout: LDM `model.diffusion_model.` / `first_stage_model.`, original AnimateDiff names.
        case singleFile
    }

    struct Section {
        let config: Data
        let weights: Weights
    }

    nonisolated(unsafe) private static var manifestCache: [String: Any]?
    private static let lock = NSLock()

    static func manifest() throws -> [String: Any] {
        lock.lock()
        defer { lock.unlock() }
        if let manifestCache { return manifestCache }
        let json = try #require(try DiffusionFixtures.json("unet_vae_manifest.json") as? [String: Any])
        manifestCache = json
        return json
    }

    /// `name` is "unet", "motion" or "vae".
    static func section(_ name: String, layout: Layout) throws -> Section {
        let entry = try #require(try manifest()[name] as? [String: Any])
        let seed = try #require(entry["seed"] as? Int)
        let rows = try #require(entry["tensors"] as? [[Any]])
        let generator = TorchGenerator(seed: UInt64(seed))
        var weights = Weights(origin: "\(name)-tiny (\(layout))")
        for row in rows {
            let shape = try #require(row[1] as? [Int])
            let scale = Float(try #require(row[2] as? Double)), offset = Float(try #require(row[3] as? Double))
            let uniform = generator.rand(shape)
            let values = (uniform * 2 - 1) * scale + offset
            switch layout {
            case .diffusers: weights[try #require(row[0] as? String)] = values
            case .singleFile: weights[try #require(row[4] as? String)] = values.reshaped(try #require(row[5] as? [Int]))
            }
        }
        return Section(config: try JSONSerialization.data(withJSONObject: try #require(entry["config"])), weights: weights)
    }

    nonisolated(unsafe) private static var ioCache: CheckpointFile?

    /// A tensor from unet_vae_io.safetensors.
    static func io(_ name: String) throws -> Tensor {
        lock.lock()
        defer { lock.unlock() }
        if ioCache == nil { ioCache = try CheckpointFile.open(DiffusionFixtures.url("unet_vae_io.safetensors").path) }
        return try ioCache!.tensor(name)
    }

    static func unet(layout: Layout = .diffusers) throws -> UNet2DConditionModel {
        let s = try section("unet", layout: layout)
        return try UNet2DConditionModel(config: try UNet2DConditionConfig.decode(json: s.config), weights: s.weights)
    }

    static func motion(layout: Layout = .diffusers, normMode: MotionNormMode) throws -> MotionAdapter {
        let s = try section("motion", layout: layout)
        return try MotionAdapter(config: try MotionAdapterConfig.decode(json: s.config), weights: s.weights, normMode: normMode)
    }

    static func vae(layout: Layout = .diffusers) throws -> AutoencoderKL {
        let s = try section("vae", layout: layout)
        return try AutoencoderKL(config: try AutoencoderKLConfig.decode(json: s.config), weights: s.weights)
    }

    static func timesteps(_ name: String) throws -> [Float] { try io(name).scalars }
}
