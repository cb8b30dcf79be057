import Foundation

/// Errors from decoding gzip (RFC 1952) / DEFLATE (RFC 1951) data.
public enum InflateError: Error, LocalizedError, Equatable {
    /// The gzip member header is missing or malformed.
    case badGzipHeader(String)
    /// The DEFLATE stream is corrupt at the given byte offset.
    case corrupt(String, byteOffset: Int)
    /// The stream ended before its final block.
    case truncated
    /// The decompressed bytes do not match the gzip trailer (CRC-32 or length).
    case checksumMismatch(expected: UInt32, actual: UInt32)

    public var errorDescription: String? {
        switch self {
        case .badGzipHeader(let why): return "gzip: bad header (\(why))"
        case .corrupt(let why, let offset): return "deflate: corrupt stream at byte \(offset): \(why)"
        case .truncated: return "deflate: stream ends before its final block"
        case .checksumMismatch(let expected, let actual):
            return String(format: "gzip: CRC-32 mismatch (trailer %08x, data %08x)", expected, actual)
        }
    }
}

/// A small DEFLATE / gzip decoder.
///
/// Lapse reads the CLIP BPE vocabulary straight from the gzip file it is distributed as; zlib is not a declared
/// system library of the package and Foundation on Linux offers no decompression, so this is written here.
public enum Inflate {
    /// Decompresses a gzip file's contents (all members, concatenated), verifying each member's CRC-32 and size.
    public static func gunzip(_ data: [UInt8]) throws -> [UInt8] {
        var output: [UInt8] = []
        var position = 0
        repeat {
            let start = try skipGzipHeader(data, from: position)
            var reader = BitReader(bytes: data, position: start)
            let memberStart = output.count
            try inflate(&reader, into: &output)
            position = reader.alignedPosition
            guard position + 8 <= data.count else { throw InflateError.truncated }
            let crc = readLE32(data, position)
            let size = readLE32(data, position + 4)
            let actual = CRC32.checksum(output[memberStart...])
            guard actual == crc else { throw InflateError.checksumMismatch(expected: crc, actual: actual) }
            guard size == UInt32(truncatingIfNeeded: output.count - memberStart) else {
                throw InflateError.badGzipHeader("trailer size \(size) != \(output.count - memberStart) decoded bytes")
            }
            position += 8
        } while position + 2 <= data.count && data[position] == 0x1f && data[position + 1] == 0x8b
        return output
    }

    /// Decompresses a raw DEFLATE stream (no zlib or gzip wrapper).
    public static func inflate(_ data: [UInt8]) throws -> [UInt8] {
        var reader = BitReader(bytes: data, position: 0)
        var output: [UInt8] = []
        try inflate(&reader, into: &output)
        return output
    }

    private static func readLE32(_ d: [UInt8], _ i: Int) -> UInt32 {
        UInt32(d[i]) | UInt32(d[i + 1]) << 8 | UInt32(d[i + 2]) << 16 | UInt32(d[i + 3]) << 24
    }

    private static func skipGzipHeader(_ d: [UInt8], from start: Int) throws -> Int {
        guard d.count >= start + 18 else { throw InflateError.badGzipHeader("file shorter than a gzip header") }
        guard d[start] == 0x1f, d[start + 1] == 0x8b else { throw InflateError.badGzipHeader("no 1f 8b magic") }
        guard d[start + 2] == 8 else { throw InflateError.badGzipHeader("compression method \(d[start + 2]) is not deflate") }
        let flags = d[start + 3]
        var p = start + 10
        if flags & 0x04 != 0 {  // FEXTRA
            guard p + 2 <= d.count else { throw InflateError.truncated }
            p += 2 + (Int(d[p]) | Int(d[p + 1]) << 8)
        }
        for flag: UInt8 in [0x08, 0x10] where flags & flag != 0 {  // FNAME, FCOMMENT: zero-terminated
            while p < d.count && d[p] != 0 { p += 1 }
            p += 1
        }
        if flags & 0x02 != 0 { p += 2 }  // FHCRC
        guard p < d.count else { throw InflateError.truncated }
        return p
    }

    // MARK: - DEFLATE

    private static let lengthBase: [Int] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59,
                                            67, 83, 99, 115, 131, 163, 195, 227, 258]
    private static let lengthExtra: [Int] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4,
                                             5, 5, 5, 5, 0]
    private static let distanceBase: [Int] = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513,
                                              769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
    private static let distanceExtra: [Int] = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10,
                                               10, 11, 11, 12, 12, 13, 13]
    /// Order in which code-length code lengths are stored in a dynamic block header.
    private static let codeLengthOrder: [Int] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]

    private static let fixedLiteral = try! Huffman(lengths: (0..<288).map { $0 < 144 ? 8 : $0 < 256 ? 9 : $0 < 280 ? 7 : 8 })
    private static let fixedDistance = try! Huffman(lengths: [Int](repeating: 5, count: 30))

    private static func inflate(_ r: inout BitReader, into out: inout [UInt8]) throws {
        var final = false
        while !final {
            final = try r.bits(1) == 1
            switch try r.bits(2) {
            case 0:
                r.alignToByte()
                let len = try r.bits(16), nlen = try r.bits(16)
                guard len == ~nlen & 0xffff else {
                    throw InflateError.corrupt("stored block length \(len) does not match its complement", byteOffset: r.position)
                }
                try r.copyBytes(len, into: &out)
            case 1:
                try inflateBlock(&r, literal: fixedLiteral, distance: fixedDistance, into: &out)
            case 2:
                let (literal, distance) = try readDynamicTables(&r)
                try inflateBlock(&r, literal: literal, distance: distance, into: &out)
            default:
                throw InflateError.corrupt("reserved block type 3", byteOffset: r.position)
            }
        }
    }

    private static func readDynamicTables(_ r: inout BitReader) throws -> (Huffman, Huffman) {
        let hlit = try r.bits(5) + 257, hdist = try r.bits(5) + 1, hclen = try r.bits(4) + 4
        var codeLengthLengths = [Int](repeating: 0, count: 19)
        for i in 0..<hclen { codeLengthLengths[codeLengthOrder[i]] = try r.bits(3) }
        let codeLengthCode = try Huffman(lengths: codeLengthLengths)
        var lengths: [Int] = []
        lengths.reserveCapacity(hlit + hdist)
        while lengths.count < hlit + hdist {
            let symbol = try codeLengthCode.decode(&r)
            switch symbol {
            case 0..<16: lengths.append(symbol)
            case 16:
                guard let previous = lengths.last else {
                    throw InflateError.corrupt("repeat code 16 with no previous length", byteOffset: r.position)
                }
                lengths += repeatElement(previous, count: 3 + (try r.bits(2)))
            case 17: lengths += repeatElement(0, count: 3 + (try r.bits(3)))
            default: lengths += repeatElement(0, count: 11 + (try r.bits(7)))
            }
        }
        guard lengths.count == hlit + hdist else {
            throw InflateError.corrupt("code lengths overrun the table", byteOffset: r.position)
        }
        guard lengths[256] > 0 else { throw InflateError.corrupt("no end-of-block code", byteOffset: r.position) }
        return (try Huffman(lengths: Array(lengths[0..<hlit])), try Huffman(lengths: Array(lengths[hlit...])))
    }

    private static func inflateBlock(_ r: inout BitReader, literal: Huffman, distance: Huffman,
                                     into out: inout [UInt8]) throws {
        while true {
            let symbol = try literal.decode(&r)
            if symbol < 256 {
                out.append(UInt8(symbol))
            } else if symbol == 256 {
                return
            } else {
                let li = symbol - 257
                guard li < 29 else { throw InflateError.corrupt("length symbol \(symbol)", byteOffset: r.position) }
                let length = lengthBase[li] + (try r.bits(lengthExtra[li]))
                let di = try distance.decode(&r)
                guard di < 30 else { throw InflateError.corrupt("distance symbol \(di)", byteOffset: r.position) }
                let dist = distanceBase[di] + (try r.bits(distanceExtra[di]))
                guard dist <= out.count else {
                    throw InflateError.corrupt("distance \(dist) before start of output", byteOffset: r.position)
                }
                // Overlapping copies (dist < length) repeat the recent bytes, so copy one byte at a time.
                let from = out.count - dist
                for k in 0..<length { out.append(out[from + k]) }
            }
        }
    }
}

/// LSB-first bit reader over a byte array, as DEFLATE packs its bits.
private struct BitReader {
    let bytes: [UInt8]
    var position: Int
    private var buffer: UInt64 = 0
    private var count = 0

    init(bytes: [UInt8], position: Int) {
        self.bytes = bytes
        self.position = position
    }

    /// The byte position just after the last consumed bit, discarding any partial byte.
    var alignedPosition: Int { position - count / 8 }

    mutating func refill(_ need: Int) throws {
        while count < need {
            guard position < bytes.count else { throw InflateError.truncated }
            buffer |= UInt64(bytes[position]) << UInt64(count)
            position += 1
            count += 8
        }
    }

    mutating func bits(_ n: Int) throws -> Int {
        if n == 0 { return 0 }
        try refill(n)
        let value = Int(buffer & ((1 << UInt64(n)) - 1))
        buffer >>= UInt64(n)
        count -= n
        return value
    }

    /// Peeks up to `n` bits without failing at the end of input (missing bits read as zero).
    mutating func peek(_ n: Int) -> Int {
        while count < n && position < bytes.count {
            buffer |= UInt64(bytes[position]) << UInt64(count)
            position += 1
            count += 8
        }
        return Int(buffer & ((1 << UInt64(n)) - 1))
    }

    mutating func consume(_ n: Int) throws {
        guard n <= count else { throw InflateError.truncated }
        buffer >>= UInt64(n)
        count -= n
    }

    mutating func alignToByte() {
        let drop = count % 8
        buffer >>= UInt64(drop)
        count -= drop
    }

    mutating func copyBytes(_ n: Int, into out: inout [UInt8]) throws {
        // After alignment the buffer holds whole bytes; drain them before reading the array directly.
        var remaining = n
        while remaining > 0 && count >= 8 {
            out.append(UInt8(truncatingIfNeeded: buffer))
            buffer >>= 8
            count -= 8
            remaining -= 1
        }
        guard position + remaining <= bytes.count else { throw InflateError.truncated }
        out += bytes[position..<(position + remaining)]
        position += remaining
    }
}

/// A canonical Huffman code decoded through one flat table indexed by the next `maxLength` bits.
private struct Huffman {
    /// Entry = symbol << 4 | code length; 0 where no code matches.
    private var table: [UInt32]
    private let maxLength: Int

    init(lengths: [Int]) throws {
        let maxLength = max(lengths.max() ?? 0, 1)
        guard maxLength <= 15 else { throw InflateError.corrupt("code length \(maxLength) > 15", byteOffset: 0) }
        self.maxLength = maxLength
        var countPerLength = [Int](repeating: 0, count: 16)
        for l in lengths where l > 0 { countPerLength[l] += 1 }
        var nextCode = [Int](repeating: 0, count: 16)
        var code = 0
        for bits in 1...15 {
            code = (code + countPerLength[bits - 1]) << 1
            nextCode[bits] = code
        }
        table = [UInt32](repeating: 0, count: 1 << maxLength)
        for (symbol, length) in lengths.enumerated() where length > 0 {
            let c = nextCode[length]
            nextCode[length] += 1
            guard c < 1 << length else { throw InflateError.corrupt("over-subscribed Huffman code", byteOffset: 0) }
            // Codes are stored MSB-first but read LSB-first: index by the bit-reversed code, all suffix fillings.
            var reversed = 0
            for b in 0..<length where c & (1 << b) != 0 { reversed |= 1 << (length - 1 - b) }
            var index = reversed
            while index < table.count {
                table[index] = UInt32(symbol) << 4 | UInt32(length)
                index += 1 << length
            }
        }
    }

    func decode(_ r: inout BitReader) throws -> Int {
        let entry = table[r.peek(maxLength)]
        guard entry != 0 else { throw InflateError.corrupt("invalid Huffman code", byteOffset: r.position) }
        try r.consume(Int(entry & 15))
        return Int(entry >> 4)
    }
}

/// CRC-32 (IEEE 802.3, reflected), as gzip's trailer uses.
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xedb8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var crc: UInt32 = 0xffff_ffff
        for b in bytes { crc = table[Int((crc ^ UInt32(b)) & 0xff)] ^ (crc >> 8) }
        return crc ^ 0xffff_ffff
    }
}
