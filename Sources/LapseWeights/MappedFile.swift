import Foundation
import LapseSupport
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A whole file mapped read-only into memory (private copy-on-write, so a tensor that is later written through
/// never touches the file). Tensors borrow pointers into it and keep it alive as their storage owner; pages are only
/// read from disk when touched, which is what lets a multi-gigabyte checkpoint be opened without reading it.
final class MappedFile: @unchecked Sendable {
    let path: String
    let base: UnsafeRawPointer
    let count: Int
    private let mapped: Bool

    init(path: String) throws {
        self.path = path
        // Refuse FIFOs and devices before open(), which would block on a FIFO until a writer appears.
        do {
            try InputFile.check(path)
        } catch {
            throw WeightsError.io(file: path, reason: (error as? FileAccessError).map(Self.reason) ?? "\(error)")
        }
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw WeightsError.io(file: path, reason: "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw WeightsError.io(file: path, reason: "cannot stat: \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw WeightsError.io(file: path, reason: "not a regular file") }
        let size = Int(info.st_size)
        if size == 0 {
            // mmap refuses zero-length mappings; an empty file is still a valid input to reject with a format error.
            base = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 16))
            count = 0
            mapped = false
            return
        }
        guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw WeightsError.io(file: path, reason: "cannot map \(size) bytes: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
        count = size
        mapped = true
    }

    /// The part of a file-access error that follows the path (the error case names the file itself).
    private static func reason(_ error: FileAccessError) -> String {
        switch error {
        case .notFound: "no such file"
        case .notRegularFile(_, let kind): "is \(kind), not a regular file"
        case .nulInPath: "the path contains a NUL character"
        case .notReadable(_, let r), .folder(_, let r), .write(_, let r): r
        case .rename(_, _, let r): r
        }
    }

    deinit {
        if mapped { munmap(UnsafeMutableRawPointer(mutating: base), count) } else { base.deallocate() }
    }

    /// The bytes `range`, or nil when it is not inside the file.
    func contains(offset: Int, length: Int) -> Bool {
        offset >= 0 && length >= 0 && offset <= count && length <= count - offset
    }

    func bytes(_ offset: Int, _ length: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + offset, count: length)
    }

    func u16(_ o: Int) -> UInt16 { UInt16(littleEndian: base.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
    func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: base.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
    func u64(_ o: Int) -> UInt64 { UInt64(littleEndian: base.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
}
