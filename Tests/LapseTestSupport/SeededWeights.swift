import Foundation
import LapseTensor
import LapseWeights

/// Weights of the fixture scripts' seeded tiny models, regenerated instead of committed.
///
/// Every script (Tools/fixtures/*.py) re-seeds its model's parameters in state-dict order from one
/// `torch.Generator(seed)`: value = offset + scale·(2·torch.rand(shape) − 1). `TorchGenerator` reproduces those draws
/// bit for bit, so a manifest of `[name, shape, scale, offset, …]` rows and the seed is all a fixture stores.
public enum SeededWeights {
    /// A manifest row that is not `[name, shape, scale, offset, …]`.
    public struct BadRow: LocalizedError {
        public let row: String
        public var errorDescription: String? { "seeded-weights manifest row \(row) is not [name, shape, scale, offset, …]" }
    }

    /// The tensors of `rows`, drawn in row order from `TorchGenerator(seed)`. `name` picks each tensor's name and
    /// shape from its row (default: the row's own name and shape); the values are drawn with the row's shape.
    public static func make(rows: [[Any]], seed: Int, origin: String = "seeded",
                            name: ([Any]) -> (String, [Int])? = { row in
                                (row[0] as? String).flatMap { n in (row[1] as? [Int]).map { (n, $0) } }
                            }) throws -> Weights {
        let generator = TorchGenerator(seed: UInt64(seed))
        var weights = Weights(origin: origin)
        for row in rows {
            guard row.count >= 4, let shape = row[1] as? [Int], let scale = row[2] as? Double, let offset = row[3] as? Double,
                  let (key, keyShape) = name(row) else {
                throw BadRow(row: "\(row.prefix(4))")
            }
            let values = (generator.rand(shape) * 2 - 1) * Float(scale) + Float(offset)
            weights[key] = keyShape == shape ? values : values.reshaped(keyShape)
        }
        return weights
    }

    /// `make(rows:seed:)` on a manifest section `{"seed": N, "tensors": [rows]}`; `seed` overrides the section's.
    public static func make(section: [String: Any], seed: Int? = nil, origin: String = "seeded") throws -> Weights {
        guard let rows = section["tensors"] as? [[Any]], let seed = seed ?? (section["seed"] as? Int) else {
            throw BadRow(row: "section without \"tensors\" rows or \"seed\"")
        }
        return try make(rows: rows, seed: seed, origin: origin)
    }
}
