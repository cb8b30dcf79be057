import Foundation
import LapseGraph
import LapseTensor

/// Shared helpers for Lapse's test targets.
public enum TestSupport {
    /// A fresh temporary directory, removed by the caller when done.
    public static func makeTemporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lapse-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}
