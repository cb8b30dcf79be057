import Foundation

/// Everything that can go wrong while reading or writing a checkpoint. Every case names the file it concerns so a
/// message read in a log without context still says which file is broken and how.
public enum WeightsError: LocalizedError, Sendable, Equatable {
    /// The file could not be opened, mapped or written (`reason` is the system's message).
    case io(file: String, reason: String)
    /// The file's leading bytes match no supported format.
    case unknownFormat(file: String, reason: String)
    /// A recognised format that this reader deliberately does not handle (legacy torch, compressed zip entries, …).
    case unsupported(file: String, reason: String)
    /// The file ends before a structure it declares.
    case truncated(file: String, reason: String)
    /// A structural field is inconsistent or out of range (lying header, overlapping data, absurd shape, …).
    case malformed(file: String, reason: String)
    /// A dtype name or storage type this reader does not know.
    case unknownDType(file: String, dtype: String)
    /// A pickle refers to a global outside the allow-list; nothing was executed.
    case forbiddenGlobal(file: String, name: String)
    /// A pickle contains an opcode outside the supported set, or uses one incorrectly.
    case invalidPickle(file: String, reason: String)
    /// A tensor name that is not in the file or collection; `suggestions` are close names that are.
    case missingTensor(file: String, name: String, suggestions: [String])
    /// A tensor exists but has another shape than the model expects.
    case shapeMismatch(file: String, name: String, expected: [Int], actual: [Int])
    /// A strict load found missing and/or unexpected keys.
    case keyMismatch(file: String, report: LoadReport)

    /// The file the error concerns.
    public var file: String {
        switch self {
        case .io(let f, _), .unknownFormat(let f, _), .unsupported(let f, _), .truncated(let f, _),
             .malformed(let f, _), .unknownDType(let f, _), .forbiddenGlobal(let f, _), .invalidPickle(let f, _),
             .missingTensor(let f, _, _), .shapeMismatch(let f, _, _, _), .keyMismatch(let f, _):
            return f
        }
    }

    public var errorDescription: String? {
        switch self {
        case .io(let f, let r): return "\(f): \(r)"
        case .unknownFormat(let f, let r): return "\(f): unrecognised checkpoint format: \(r)"
        case .unsupported(let f, let r): return "\(f): not supported: \(r)"
        case .truncated(let f, let r): return "\(f): file is truncated: \(r)"
        case .malformed(let f, let r): return "\(f): malformed: \(r)"
        case .unknownDType(let f, let d): return "\(f): unknown dtype \"\(d)\""
        case .forbiddenGlobal(let f, let n):
            return "\(f): pickle refers to forbidden global \"\(n)\"; only tensor-rebuilding globals are allowed"
        case .invalidPickle(let f, let r): return "\(f): invalid pickle: \(r)"
        case .missingTensor(let f, let n, let s):
            return "\(f): no tensor named \"\(n)\"" + (s.isEmpty ? "" : " (did you mean \(s.map { "\"\($0)\"" }.joined(separator: ", "))?)")
        case .shapeMismatch(let f, let n, let e, let a):
            return "\(f): tensor \"\(n)\" has shape \(a), expected \(e)"
        case .keyMismatch(let f, let report): return "\(f): state dict does not match the model:\n\(report)"
        }
    }
}
