import Foundation
import LapseTensor
import LapseWeights
import Testing

/// Paths of this target's fixtures and of the fetched real assets.
enum Paths {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static func fixture(_ name: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/\(name)").path
    }
    /// A fetched real asset; records a failure naming the fetch script when it is missing.
    static func asset(_ relative: String) throws -> String {
        let path = root.appendingPathComponent(relative).path
        try #require(FileManager.default.fileExists(atPath: path),
                     "missing \(relative): run scripts/fetch-assets.sh to fetch the real assets")
        return path
    }
}

/// Largest absolute difference between two tensors of the same shape.
func maxDifference(_ a: Tensor, _ b: Tensor) -> Float {
    precondition(a.shape == b.shape)
    return a.withUnsafeBufferPointer { x in
        b.withUnsafeBufferPointer { y in
            var m: Float = 0
            for i in 0..<x.count {
                if x[i].isNaN != y[i].isNaN { return .infinity }
                if x[i] == y[i] { continue }  // equal infinities
                m = max(m, abs(x[i] - y[i]))
            }
            return m
        }
    }
}

/// Asserts that reading `error` produced a `WeightsError` naming `file`.
func expectWeightsError(_ path: String, _ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> WeightsError? {
    do {
        try body()
        Issue.record("expected an error for \(path)", sourceLocation: sourceLocation)
        return nil
    } catch let error as WeightsError {
        #expect(error.errorDescription?.contains(path) == true || error.file == path, sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("untyped error \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

func tempPath(_ name: String) -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("lapse-weights-\(UUID().uuidString)-\(name)").path
}

func writeBytes(_ bytes: [UInt8], _ name: String) throws -> String {
    let p = tempPath(name)
    try Data(bytes).write(to: URL(fileURLWithPath: p))
    return p
}
