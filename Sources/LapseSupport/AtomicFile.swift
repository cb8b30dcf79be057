import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes output files atomically: the content goes to a temporary file in the destination's folder, which is
/// renamed over the destination only once complete. A failed or cancelled write leaves no partial file.
///
/// The one writer every saver uses (PNG, video, tensors, cache entries), so one rule holds for all outputs:
/// - only a regular file is ever replaced: a FIFO, a device, a socket or a folder at the path is refused;
/// - a symbolic link is kept and its target is written (atomically, next to the target), so `out.mp4 → /disk/out.mp4`
///   keeps pointing where the user pointed it;
/// - a missing folder is made (as ComfyUI's and chaiNNer's savers do); a path with a NUL character is refused;
/// - with `replacing: false` nothing at the path is ever replaced, not even a regular file: the finished file is
///   linked into place, which fails when the name was taken meanwhile (`OutputPathError.exists`).
///
/// The temporary name keeps the destination's extension, because encoders such as FFmpeg pick the container from it.
public enum AtomicFile {
    private static let pending = Mutex<Set<String>>([])

    /// Calls `body` with a temporary URL next to `destination`; renames it to `destination` when `body` returns,
    /// removes it when `body` throws (including `CancellationError`). With `replacing` false an existing
    /// `destination` is an error, checked before `body` runs and again when the file is moved into place.
    @discardableResult
    public static func write<R>(to destination: URL, replacing: Bool = true, _ body: (URL) throws -> R) throws -> R {
        let target = try prepare(destination.path, replacing: replacing)
        let temp = temporaryURL(for: target)
        track(temp.path)
        defer { untrack(temp.path) }
        do {
            let result = try body(temp)
            try commit(temp: temp.path, to: target.path, replacing: replacing)
            return result
        } catch {
            unlink(temp.path)
            throw error
        }
    }

    /// Writes `data` atomically.
    public static func write(_ data: Data, to destination: URL, replacing: Bool = true) throws {
        try write(to: destination, replacing: replacing) { temp in
            do {
                try data.write(to: temp)
            } catch {
                throw FileAccessError.write(path: destination.path, reason: systemReason(error))
            }
        }
    }

    /// Checks `path` as an output and returns the file to replace: the path itself, or a symlink's final target.
    /// Creates the folder when missing. Throws before any work starts, so a run does not compute for nothing.
    /// With `replacing` false anything at `path` (a file, a link, even a dangling one) is refused.
    @discardableResult
    public static func prepare(_ path: String, replacing: Bool = true) throws -> URL {
        try InputFile.checkName(path)
        guard !path.isEmpty else { throw FileAccessError.write(path: path, reason: "the path is empty") }
        if !replacing, FileKind(path: path, followLinks: false) != .missing { throw OutputPathError.exists(path: path) }
        let target = try URL(fileURLWithPath: finalTarget(of: path))
        let kind = FileKind(path: target.path)
        guard kind == .missing || kind == .regular else {
            throw FileAccessError.notRegularFile(path: path, kind: kind.description)
        }
        let folder = target.deletingLastPathComponent().path
        switch FileKind(path: folder) {
        case .directory:
            break
        case .missing:
            do {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            } catch {
                throw FileAccessError.folder(path: path, reason: "cannot create folder \(folder): \(systemReason(error))")
            }
        case let other:
            throw FileAccessError.folder(path: path, reason: "\(folder) is \(other.description), not a folder")
        }
        guard access(folder, W_OK) == 0 else {
            throw FileAccessError.folder(path: path, reason: "folder \(folder) is not writable")
        }
        return target
    }

    /// Follows a chain of symbolic links at `path` itself (dangling ones included, whose target is then created).
    static func finalTarget(of path: String) throws -> String {
        var current = path
        for _ in 0..<40 {
            guard FileKind(path: current, followLinks: false) == .symlink else { return current }
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let length = readlink(current, &buffer, buffer.count - 1)
            guard length >= 0 else {
                throw FileAccessError.write(path: path, reason: "cannot read the symbolic link \(current): \(String(cString: strerror(errno)))")
            }
            let link = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            current = link.hasPrefix("/") ? link
                : URL(fileURLWithPath: current).deletingLastPathComponent().appendingPathComponent(link).path
        }
        throw FileAccessError.write(path: path, reason: "too many levels of symbolic links")
    }

    /// A hidden sibling of `target` with the same extension; the name is cut so it stays within NAME_MAX.
    static func temporaryURL(for target: URL) -> URL {
        let name = target.lastPathComponent
        let ext = target.pathExtension
        let token = UUID().uuidString.prefix(8)
        let tempName = ".\(name.prefix(120)).lapse-tmp-\(token)" + (ext.isEmpty ? "" : ".\(ext.prefix(16))")
        return target.deletingLastPathComponent().appendingPathComponent(tempName)
    }

    /// Moves a finished temporary file over `target`, re-checking the target (it may have changed while we wrote).
    /// With `replacing` false the file is hard-linked into place, which the kernel refuses atomically when the name
    /// exists; on a file system without hard links a check right before the rename stands in.
    static func commit(temp: String, to target: String, replacing: Bool = true) throws {
        guard FileKind(path: temp) == .regular else {
            throw FileAccessError.write(path: target, reason: "nothing was written")
        }
        let kind = FileKind(path: target, followLinks: false)
        if !replacing {
            guard kind == .missing else { throw OutputPathError.exists(path: target) }
            if link(temp, target) == 0 {
                unlink(temp)
                return
            }
            let code = errno
            if code == EEXIST { throw OutputPathError.exists(path: target) }
            guard code == EPERM || code == EOPNOTSUPP || code == EMLINK || code == EXDEV else {
                throw FileAccessError.rename(from: temp, to: target, reason: String(cString: strerror(code)))
            }
            guard FileKind(path: target, followLinks: false) == .missing else { throw OutputPathError.exists(path: target) }
        }
        guard kind == .missing || kind == .regular else {
            throw FileAccessError.notRegularFile(path: target, kind: kind.description)
        }
        if rename(temp, target) != 0 {
            throw FileAccessError.rename(from: temp, to: target, reason: String(cString: strerror(errno)))
        }
    }

    /// The system's own words for a Foundation file error ("No space left on device"), not Cocoa's error number.
    public static func systemReason(_ error: any Error) -> String {
        let ns = error as NSError
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))) }
        return ns.localizedFailureReason ?? ns.localizedDescription
    }

    /// Temporary files of writes in progress.
    public static var pendingTemporaryFiles: [String] { pending.withLock { Array($0) } }

    /// Removes the temporary files of every write in progress; for a forced exit (second Ctrl-C, SIGTERM).
    public static func removeAllPending() {
        for path in pendingTemporaryFiles { unlink(path) }
    }

    fileprivate static func track(_ path: String) { pending.withLock { _ = $0.insert(path) } }
    fileprivate static func untrack(_ path: String) { pending.withLock { _ = $0.remove(path) } }
}

/// Several files written as one output (an image sequence): each goes to a temporary name, and all are renamed into
/// place by `commit()` once the last one is written. Until then an interrupted or failed run leaves none of them;
/// `discard()` (or deinit without commit) removes the temporaries.
public final class AtomicFileGroup: @unchecked Sendable {
    private var staged: [(temp: String, target: String, replacing: Bool)] = []

    public init() {}

    /// Calls `body` with a temporary URL for `destination`, keeping the file staged until `commit()`; with
    /// `replacing` false an existing `destination` is an error, now and at `commit()`.
    public func write<R>(to destination: URL, replacing: Bool = true, _ body: (URL) throws -> R) throws -> R {
        let target = try AtomicFile.prepare(destination.path, replacing: replacing)
        let temp = AtomicFile.temporaryURL(for: target)
        AtomicFile.track(temp.path)
        staged.append((temp.path, target.path, replacing))
        return try body(temp)
    }

    /// The final paths of the staged files, in order.
    public var targets: [String] { staged.map(\.target) }

    /// Renames every staged file into place.
    public func commit() throws {
        defer { discard() }
        // Removed from `staged` only once in place, so a failed move's temporary is removed by `discard()` too.
        while let (temp, target, replacing) = staged.first {
            try AtomicFile.commit(temp: temp, to: target, replacing: replacing)
            staged.removeFirst()
            AtomicFile.untrack(temp)
        }
    }

    /// Removes every staged temporary file.
    public func discard() {
        for (temp, _, _) in staged {
            unlink(temp)
            AtomicFile.untrack(temp)
        }
        staged.removeAll()
    }

    deinit { discard() }
}
