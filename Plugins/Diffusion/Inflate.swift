import CZlib
import Foundation

/// Errors from decompressing gzip (RFC 1952) or raw DEFLATE (RFC 1951) data with the system zlib.
public enum InflateError: Error, LocalizedError, Equatable {
    /// zlib refused the stream: corrupt data, a bad header or a checksum mismatch (zlib's own message).
    case corrupt(String)
    /// The stream ended before its end marker.
    case truncated
    /// The decompressed data would exceed the caller's limit (a gzip bomb, or the wrong file).
    case tooLarge(limit: Int)
    /// Bytes that are not a gzip member follow the compressed data.
    case trailingData(offset: Int)

    public var errorDescription: String? {
        switch self {
        case .corrupt(let why): return "compressed data is corrupt: \(why)"
        case .truncated: return "compressed data ends before its end marker (the file is truncated)"
        case .tooLarge(let limit): return "decompresses to more than \(limit) bytes, the most allowed for this file"
        case .trailingData(let offset): return "unexpected bytes after the compressed data at byte \(offset)"
        }
    }
}

/// gzip and DEFLATE decompression through the system zlib (the library libpng already links), with a cap on the
/// output so a small hostile file cannot expand into gigabytes.
public enum Inflate {
    /// The default output cap: the CLIP vocabulary is 1.4 MB decompressed.
    public static let defaultLimit = 64 << 20

    /// Decompresses a gzip file's contents (every member, concatenated); zlib checks each member's CRC-32 and size.
    public static func gunzip(_ data: [UInt8], limit: Int = defaultLimit) throws -> [UInt8] {
        // 16 + MAX_WBITS: expect a gzip header and trailer.
        try run(data, windowBits: 16 + MAX_WBITS, members: true, limit: limit)
    }

    /// Decompresses a raw DEFLATE stream (no zlib or gzip wrapper).
    public static func inflate(_ data: [UInt8], limit: Int = defaultLimit) throws -> [UInt8] {
        try run(data, windowBits: -MAX_WBITS, members: false, limit: limit)
    }

    private static func run(_ data: [UInt8], windowBits: Int32, members: Bool, limit: Int) throws -> [UInt8] {
        var stream = z_stream()
        guard inflateInit2_(&stream, windowBits, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw InflateError.corrupt("zlib could not start: \(message(stream))")
        }
        defer { inflateEnd(&stream) }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var consumed = 0
        while true {
            let remaining = data.count - consumed
            // zlib counts in UInt32: feed at most 1 GiB at a time.
            let feed = min(remaining, 1 << 30)
            let status: Int32 = data.withUnsafeBufferPointer { input in
                chunk.withUnsafeMutableBufferPointer { out in
                    stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress.map { $0 + consumed })
                    stream.avail_in = uInt(feed)
                    stream.next_out = out.baseAddress
                    stream.avail_out = uInt(out.count)
                    return CZlib.inflate(&stream, Z_NO_FLUSH)
                }
            }
            consumed += feed - Int(stream.avail_in)
            let produced = chunk.count - Int(stream.avail_out)
            guard output.count + produced <= limit else { throw InflateError.tooLarge(limit: limit) }
            output += chunk.prefix(produced)
            switch status {
            case Z_OK:
                // No progress with input left means zlib wants more than the data holds.
                if produced == 0 && feed - Int(stream.avail_in) == 0 { throw InflateError.truncated }
            case Z_BUF_ERROR:
                if consumed >= data.count { throw InflateError.truncated }
            case Z_STREAM_END:
                guard consumed < data.count else { return output }
                // gzip allows several members in a row; anything else after the data is an error.
                guard members, data.count - consumed >= 2, data[consumed] == 0x1F, data[consumed + 1] == 0x8B else {
                    throw InflateError.trailingData(offset: consumed)
                }
                guard inflateReset(&stream) == Z_OK else { throw InflateError.corrupt(message(stream)) }
            case Z_NEED_DICT:
                throw InflateError.corrupt("the stream needs a preset dictionary")
            default:
                throw InflateError.corrupt(message(stream))
            }
        }
    }

    private static func message(_ stream: z_stream) -> String {
        stream.msg.map { String(cString: $0) } ?? "unknown zlib error"
    }
}
