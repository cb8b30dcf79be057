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

    /// Runs blocking work (socket reads, a child process) on a thread of its own. Swift Testing runs tests on Swift
    /// concurrency's pool, one thread per core; blocking those would starve the rest of the suite, the in-process
    /// servers' handlers among them.
    public static func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
        }
    }

    /// Starts `process` and waits for it to exit without holding a thread. Swift Testing runs tests on Swift
    /// concurrency's pool, one thread per core: a test parked in `waitUntilExit()` (a SwiftPM build, say) holds one,
    /// and on a 2-core machine two of them stall every other test, the in-process servers' start-up among them.
    public static func runToExit(_ process: Process) async throws {
        try await withCheckedThrowingContinuation { (finished: CheckedContinuation<Void, any Error>) in
            process.terminationHandler = { _ in finished.resume() }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                finished.resume(throwing: error)
            }
        }
    }
}
