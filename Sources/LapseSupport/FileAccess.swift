import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a path cannot be read or written. Every message names the path and says what to do.
public enum FileAccessError: LocalizedError, Sendable, Equatable {
    /// The path holds a NUL character, which no file system path can contain (it would silently cut the path).
    case nulInPath(path: String)
    case notFound(path: String)
    /// The path exists but is not a regular file (a FIFO, a device, a socket, a folder).
    case notRegularFile(path: String, kind: String)
    case notReadable(path: String, reason: String)
    /// An output's folder cannot be made or written.
    case folder(path: String, reason: String)
    case write(path: String, reason: String)
    case rename(from: String, to: String, reason: String)

    public var errorDescription: String? {
        switch self {
        case .nulInPath(let p):
            return "\(TerminalText.quoted(p)): the path contains a NUL character"
        case .notFound(let p):
            return "\(TerminalText.quoted(p)): no such file"
        case .notRegularFile(let p, let kind):
            return "\(TerminalText.quoted(p)) is \(kind), not a regular file; Lapse reads and replaces regular files only"
        case .notReadable(let p, let reason):
            return "\(TerminalText.quoted(p)): cannot read: \(reason)"
        case .folder(let p, let reason):
            return "cannot write \(TerminalText.quoted(p)): \(reason)"
        case .write(let p, let reason):
            return "cannot write \(TerminalText.quoted(p)): \(reason)"
        case .rename(let from, let to, let reason):
            return "cannot move \(TerminalText.quoted(from)) to \(TerminalText.quoted(to)): \(reason)"
        }
    }
}

/// What a path names, from `stat`/`lstat`, in words for error messages.
public enum FileKind: Sendable, Equatable {
    case missing, regular, directory, symlink, fifo, characterDevice, blockDevice, socket, other

    /// Follows symbolic links unless `followLinks` is false.
    public init(path: String, followLinks: Bool = true) {
        var info = stat()
        let status = followLinks ? stat(path, &info) : lstat(path, &info)
        guard status == 0 else {
            self = .missing
            return
        }
        switch info.st_mode & S_IFMT {
        case S_IFREG: self = .regular
        case S_IFDIR: self = .directory
        case S_IFLNK: self = .symlink
        case S_IFIFO: self = .fifo
        case S_IFCHR: self = .characterDevice
        case S_IFBLK: self = .blockDevice
        case S_IFSOCK: self = .socket
        default: self = .other
        }
    }

    /// "a folder", "a named pipe (FIFO)", …
    public var description: String {
        switch self {
        case .missing: "missing"
        case .regular: "a regular file"
        case .directory: "a folder"
        case .symlink: "a symbolic link"
        case .fifo: "a named pipe (FIFO)"
        case .characterDevice: "a character device"
        case .blockDevice: "a block device"
        case .socket: "a socket"
        case .other: "a special file"
        }
    }
}

/// The one rule for input paths: a path a graph names must be a regular file (symlinks to one are fine). FIFOs,
/// devices and sockets are refused *before* anything opens them, since opening a FIFO blocks until a writer comes
/// and reading `/dev/zero` never ends.
public enum InputFile {
    /// Checks `path` and returns the file's size in bytes.
    @discardableResult
    public static func check(_ path: String) throws -> Int {
        try checkName(path)
        var info = stat()
        guard stat(path, &info) == 0 else {
            let code = errno
            if code == ENOENT || code == ENOTDIR { throw FileAccessError.notFound(path: path) }
            throw FileAccessError.notReadable(path: path, reason: String(cString: strerror(code)))
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw FileAccessError.notRegularFile(path: path, kind: FileKind(path: path).description)
        }
        guard access(path, R_OK) == 0 else {
            throw FileAccessError.notReadable(path: path, reason: String(cString: strerror(errno)))
        }
        return Int(info.st_size)
    }

    /// Refuses paths no file system can hold (NUL characters), which Foundation would otherwise percent-encode.
    public static func checkName(_ path: String) throws {
        if path.utf8.contains(0) { throw FileAccessError.nulInPath(path: path) }
    }

    /// Reads a whole regular file after `check`, with the system's reason on failure.
    public static func read(_ path: String) throws -> Data {
        let size = try check(path)
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw FileAccessError.notReadable(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var data = Data(count: size)
        var done = 0
        while true {
            if done == data.count { data.count += max(4096, data.count / 2) }
            let got = data.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + done, $0.count - done) }
            if got < 0 {
                if errno == EINTR { continue }
                throw FileAccessError.notReadable(path: path, reason: String(cString: strerror(errno)))
            }
            if got == 0 { break }
            done += got
        }
        data.count = done
        return data
    }
}
