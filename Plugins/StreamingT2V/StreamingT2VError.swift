import Foundation

/// Problems with StreamingT2V's files, each naming the file and what to give instead.
public enum StreamingT2VError: LocalizedError, Sendable {
    /// The checkpoint is readable but is not StreamingT2V's.
    case notStreamingT2V(path: String, reason: String)
    /// The `base` folder is not text-to-video-ms-1.7b's.
    case badBase(path: String, reason: String)
    /// Another input file is unusable.
    case badFile(path: String, reason: String)

    public var errorDescription: String? {
        switch self {
        case .notStreamingT2V(let path, let reason): "\(path) is not a StreamingT2V checkpoint: \(reason)"
        case .badBase(let path, let reason): "base \(path): \(reason)"
        case .badFile(let path, let reason): "\(path): \(reason)"
        }
    }
}
