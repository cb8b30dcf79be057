import Foundation
import Synchronization

/// Errors writing an output file.
public enum AtomicFileError: LocalizedError, Sendable {
    case rename(from: String, to: String, reason: String)
    case write(path: String, reason: String)

    public var errorDescription: String? {
        switch self {
        case .rename(let from, let to, let reason): "cannot move \(from) to \(to): \(reason)"
        case .write(let path, let reason): "cannot write \(path): \(reason)"
        }
    }
}

/// Writes output files atomically: the content goes to a temporary file in the destination's folder, which is
/// renamed over the destination only once complete. A failed or cancelled write leaves no partial file.
///
/// Savers (PNG, video, tensors) call `write(to:_:)` and write to the URL they are handed. The temporary name keeps
/// the destination's extension, because encoders such as FFmpeg pick the container from it.
public enum AtomicFile {
    private static let pending = Mutex<Set<String>>([])

    /// Calls `body` with a temporary URL next to `destination`; renames it to `destination` when `body` returns,
    /// removes it when `body` throws (including `CancellationError`).
    @discardableResult
    public static func write<R>(to destination: URL, _ body: (URL) throws -> R) throws -> R {
        let folder = destination.deletingLastPathComponent()
        let name = destination.lastPathComponent
        let ext = destination.pathExtension
        let token = UUID().uuidString.prefix(8)
        let tempName = ".\(name).lapse-tmp-\(token)" + (ext.isEmpty ? "" : ".\(ext)")
        let temp = folder.appendingPathComponent(tempName)
        pending.withLock { _ = $0.insert(temp.path) }
        defer { pending.withLock { _ = $0.remove(temp.path) } }
        do {
            let result = try body(temp)
            guard FileManager.default.fileExists(atPath: temp.path) else {
                throw AtomicFileError.write(path: destination.path, reason: "nothing was written")
            }
            if rename(temp.path, destination.path) != 0 {
                let reason = String(cString: strerror(errno))
                throw AtomicFileError.rename(from: temp.path, to: destination.path, reason: reason)
            }
            return result
        } catch {
            try? FileManager.default.removeItem(at: temp)
            throw error
        }
    }

    /// Writes `data` atomically.
    public static func write(_ data: Data, to destination: URL) throws {
        try write(to: destination) { temp in
            do {
                try data.write(to: temp)
            } catch {
                throw AtomicFileError.write(path: destination.path, reason: error.localizedDescription)
            }
        }
    }

    /// Temporary files of writes in progress.
    public static var pendingTemporaryFiles: [String] { pending.withLock { Array($0) } }

    /// Removes the temporary files of every write in progress; for a forced exit (second Ctrl-C).
    public static func removeAllPending() {
        for path in pendingTemporaryFiles { unlink(path) }
    }
}
