import Foundation
import LapseTensor

/// Locates DiffusionTests' fixtures and the fetched real assets.
enum DiffusionFixtures {
    /// Repository root, found from this file's path (Tests/DiffusionTests/…).
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func url(_ name: String) -> URL {
        if let bundled = Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures") {
            return bundled
        }
        return repoRoot.appendingPathComponent("Tests/DiffusionTests/Fixtures/\(name)")
    }

    static func json(_ name: String) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(contentsOf: url(name)))
    }

    /// The real CLIP vocabulary, fetched by scripts/fetch-assets.sh (CI always runs it).
    static func clipVocabulary() throws -> URL {
        let url = repoRoot.appendingPathComponent("models/clip/bpe_simple_vocab_16e6.txt.gz")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw FixtureError.missingAsset("\(url.path) is missing: run scripts/fetch-assets.sh")
        }
        return url
    }

    enum FixtureError: Error, CustomStringConvertible {
        case missingAsset(String)
        case malformed(String)
        var description: String {
            switch self {
            case .missingAsset(let m), .malformed(let m): return m
            }
        }
    }

    /// Largest |a - b| / max(|b|, floor) over the elements: the relative error the parity tolerances refer to.
    static func maxRelativeError(_ a: [Float], _ b: [Float], floor: Float = 1e-3) -> Float {
        precondition(a.count == b.count, "compared arrays differ in size: \(a.count) vs \(b.count)")
        var worst: Float = 0
        for (x, y) in zip(a, b) { worst = max(worst, abs(x - y) / max(abs(y), floor)) }
        return worst
    }
}
