import Foundation
import LapseGraph
import LapseTensor

// Conditioning and latents are what the expensive diffusion nodes (TextEncode, Sample, VAEEncode, PredictNoise)
// produce and are small next to the models that made them, so `--cache-dir` keeps them: a second run with the same
// prompt and seed loads no model. The models themselves (`UNetValue`, `VAEValue`, `CLIPValue`) are not persisted.

extension Conditioning: PersistableValue {
    /// Bumped with the encoding: an entry in another encoding is refused and recomputed, never misread.
    public static let persistenceTag = "Conditioning.v1"

    /// The prompts, then the embeddings as raw float32.
    public func persistentData() throws -> Data {
        var writer = PersistentWriter()
        writer.append(UInt64(prompts.count))
        for prompt in prompts { writer.append(prompt) }
        writer.append(embeddings)
        return writer.data
    }

    public static func restore(from data: Data) throws -> Conditioning {
        var reader = PersistentReader(data)
        let count = try reader.uint64()
        guard count <= UInt64(data.count) else { throw CacheEntryError.malformed("\(count) prompts") }
        var prompts: [String] = []
        for _ in 0..<count { prompts.append(try reader.string()) }
        let embeddings = try reader.tensor()
        try reader.finish()
        return Conditioning(embeddings: embeddings, prompts: prompts)
    }
}

extension LatentValue: PersistableValue {
    /// Bumped with the encoding: an entry in another encoding is refused and recomputed, never misread.
    public static let persistenceTag = "Latent.v1"

    /// The frame rate, then the `[B, C, F, h, w]` tensor as raw float32.
    public func persistentData() throws -> Data {
        var writer = PersistentWriter()
        writer.append(frameRate)
        writer.append(tensor)
        return writer.data
    }

    public static func restore(from data: Data) throws -> LatentValue {
        var reader = PersistentReader(data)
        let frameRate = try reader.double()
        let tensor = try reader.tensor()
        try reader.finish()
        guard tensor.rank == 5 else { throw CacheEntryError.malformed("latents of shape \(tensor.shape)") }
        return LatentValue(tensor: tensor, frameRate: frameRate)
    }
}

// Reading these files again costs what reading a cache entry would; a copy in the cache would only take space.
extension LoadLatent: DiskCacheExempt {}
extension LoadConditioning: DiskCacheExempt {}
// Zeros of a given shape: cheaper to make than to read.
extension EmptyLatentVideo: DiskCacheExempt {}
