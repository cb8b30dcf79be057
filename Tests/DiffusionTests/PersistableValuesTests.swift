import DiffusionPlugin
import Foundation
import LapseGraph
import LapseTensor
import LapseTestSupport
import Testing

/// Conditioning and latents written to `--cache-dir` and read back by a fresh cache, as a later process would.
@Suite("Diffusion values in the result cache")
struct PersistableValuesTests {
    static func registry() throws -> NodeRegistry {
        let registry = NodeRegistry()
        try DiffusionPlugin.register(into: registry)
        return registry
    }

    /// Values that are not round numbers, including a negative zero and a subnormal, to show the copy is exact.
    static func tensor(_ shape: [Int], seed: Float) -> Tensor {
        let count = shape.reduce(1, *)
        var values = (0..<count).map { Float(sin(Double($0) * 1.7 + Double(seed))) * 3.1 }
        values[0] = -0.0
        values[count - 1] = Float.leastNonzeroMagnitude
        return Tensor(shape: shape, data: values)
    }

    @Test func conditioningAndLatentsRoundTripExactly() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let conditioning = Conditioning(embeddings: Self.tensor([2, 7, 16], seed: 1), prompts: ["a cat, 猫", ""])
        let latent = LatentValue(tensor: Self.tensor([1, 4, 3, 5, 6], seed: 2), frameRate: 7.5)
        let key = String(repeating: "ab", count: 32)
        let stored = ResultCache(directory: dir).store(
            NodeOutputs(["conditioning": .object(conditioning), "latent": .object(latent), "steps": .int(25)]),
            for: key, nodeType: "Test")
        #expect(stored.values.count == 3)
        guard case .hit(let outputs) = ResultCache(directory: dir).lookup(key, registry: try Self.registry()) else {
            Issue.record("no entry was written")
            return
        }
        guard case .object(let c)? = outputs.values["conditioning"], let readConditioning = c as? Conditioning,
              case .object(let l)? = outputs.values["latent"], let readLatent = l as? LatentValue,
              case .int(25)? = outputs.values["steps"] else {
            Issue.record("outputs came back as other types: \(outputs.values)")
            return
        }
        #expect(readConditioning.prompts == conditioning.prompts)
        #expect(readConditioning.embeddings.shape == [2, 7, 16])
        #expect(readConditioning.embeddings.scalars.map(\.bitPattern) == conditioning.embeddings.scalars.map(\.bitPattern))
        #expect(readLatent.frameRate == 7.5 && readLatent.tensor.shape == [1, 4, 3, 5, 6])
        #expect(readLatent.tensor.scalars.map(\.bitPattern) == latent.tensor.scalars.map(\.bitPattern))
    }

    @Test func malformedBytesAreRefused() throws {
        let good = try LatentValue(tensor: Self.tensor([1, 4, 1, 2, 2], seed: 3), frameRate: 8).persistentData()
        #expect(throws: CacheEntryError.self) { try LatentValue.restore(from: good.dropLast()) }
        #expect(throws: CacheEntryError.self) { try LatentValue.restore(from: good + Data([0])) }
        // A shape claiming far more elements than the bytes hold is refused before anything is allocated.
        var huge = PersistentWriter()
        huge.append(8.0)
        huge.append(UInt32(5))
        for _ in 0..<5 { huge.append(UInt64(1 << 30)) }
        #expect(throws: CacheEntryError.self) { try LatentValue.restore(from: huge.data) }
        let conditioning = try Conditioning(embeddings: Self.tensor([1, 2, 3], seed: 4), prompts: ["x"]).persistentData()
        #expect(throws: CacheEntryError.self) { try Conditioning.restore(from: conditioning.prefix(10)) }
    }
}
