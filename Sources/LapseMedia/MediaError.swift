import Foundation
import LapseSupport

/// Errors from media reading, writing and processing. Every message names the file (or filter text) and the reason.
public enum MediaError: LocalizedError, Sendable {
    /// The input file does not exist.
    case fileNotFound(path: String)
    /// The file exists but could not be opened or parsed as media.
    case cannotOpen(path: String, reason: String)
    /// Decoding failed part way (truncated or corrupt data).
    case decodeFailed(path: String, reason: String)
    /// The file has no video or image stream.
    case noVideoStream(path: String)
    /// No decoder or encoder for the codec.
    case unsupportedCodec(path: String, codec: String)
    /// The file decoded to zero frames.
    case noFrames(path: String)
    /// Width or height are zero, negative or beyond what memory could hold.
    case absurdDimensions(path: String, width: Int, height: Int)
    /// The output could not be created or written.
    case cannotWrite(path: String, reason: String)
    /// Encoding or muxing failed.
    case encodeFailed(path: String, reason: String)
    /// A libavfilter graph could not be built or failed while running.
    case filterFailed(graph: String, reason: String)
    /// A libavfilter graph names a filter or option that could load code or touch files (see `FilterAllowList`).
    case filterRefused(graph: String, reason: String)
    /// Several frames were given to a single-image path without a `%05d`-style pattern.
    case sequencePatternRequired(path: String, frames: Int)
    /// A frame differs from the stream's first frame in a way the output cannot follow.
    case inconsistentFrames(path: String, reason: String)
    /// A parameter value the operation cannot use.
    case invalidArgument(String)

    public var errorDescription: String? {
        // File names and filter text come from graphs: control characters are escaped before they reach a terminal.
        func q(_ s: String) -> String { TerminalText.quoted(s) }
        return switch self {
        case .fileNotFound(let path): "\(q(path)): file not found"
        case .cannotOpen(let path, let reason): "\(q(path)): cannot open: \(reason)"
        case .decodeFailed(let path, let reason): "\(q(path)): decoding failed: \(reason)"
        case .noVideoStream(let path): "\(q(path)): no video or image stream in the file"
        case .unsupportedCodec(let path, let codec): "\(q(path)): unsupported codec \(codec)"
        case .noFrames(let path): "\(q(path)): the file contains no frames"
        case .absurdDimensions(let path, let w, let h):
            "\(q(path)): frame size \(w)x\(h) is outside the supported range (\(MediaLimits.description))"
        case .cannotWrite(let path, let reason): "\(q(path)): cannot write: \(reason)"
        case .encodeFailed(let path, let reason): "\(q(path)): encoding failed: \(reason)"
        case .filterFailed(let graph, let reason): "filter \"\(q(graph))\": \(reason)"
        case .filterRefused(let graph, let reason): "filter \"\(q(graph))\": refused: \(reason)"
        case .sequencePatternRequired(let path, let n):
            "\(q(path)): \(n) frames to save but the path has no frame-number pattern; use e.g. out_%05d.png"
        case .inconsistentFrames(let path, let reason): "\(q(path)): \(reason)"
        case .invalidArgument(let message): message
        }
    }
}

/// Size limits applied before allocating frame memory, so a corrupt header cannot request gigabytes.
public enum MediaLimits {
    /// Largest width or height accepted.
    public static let maxDimension = 32_768
    /// Largest pixel count accepted (about 16k x 8k).
    public static let maxPixels = 1 << 27

    /// The limits in words, for messages.
    public static let description = "1...\(maxDimension) per side, at most \(maxPixels) pixels"

    /// True when a frame of this size may be allocated (overflow-safe for any Int inputs).
    public static func allows(width: Int, height: Int) -> Bool {
        // Both sides are at most 32768 once the first checks pass, so the product cannot overflow.
        width > 0 && height > 0 && width <= maxDimension && height <= maxDimension && width * height <= maxPixels
    }

    /// Throws `absurdDimensions` unless the size is plausible.
    public static func check(width: Int, height: Int, path: String) throws {
        guard allows(width: width, height: height) else {
            throw MediaError.absurdDimensions(path: path, width: width, height: height)
        }
    }
}
