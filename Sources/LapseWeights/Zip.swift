/// A minimal reader of the zip container PyTorch writes: it parses the central directory (ZIP64 included) of a
/// memory-mapped file and locates each entry's data. Only STORED (uncompressed) entries can be read, which is what
/// `torch.save` produces; compressed or encrypted entries are refused.
struct ZipArchive {
    struct Entry {
        var name: String
        /// Offset of the entry's local header; the data offset is resolved lazily by `dataRange`.
        var localHeaderOffset: Int
        var size: Int
        var compressedSize: Int
        var method: Int
        var flags: Int
    }

    let file: MappedFile
    private(set) var entries: [String: Entry] = [:]
    private(set) var names: [String] = []

    init(_ file: MappedFile) throws {
        self.file = file
        let path = file.path
        func bad(_ r: String) -> WeightsError { .malformed(file: path, reason: "zip: " + r) }
        let n = file.count
        guard n >= 22 else { throw WeightsError.truncated(file: path, reason: "zip is shorter than its end-of-directory record") }
        // The end-of-central-directory record sits in the last 22 + 65535 (comment) bytes.
        var eocd = -1
        var i = n - 22
        let lowest = max(0, n - 22 - 65535)
        while i >= lowest {
            if file.u32(i) == 0x0605_4B50 { eocd = i; break }
            i -= 1
        }
        guard eocd >= 0 else { throw WeightsError.truncated(file: path, reason: "zip end-of-central-directory record not found") }
        var count = Int(file.u16(eocd + 10))
        var cdSize = Int(file.u32(eocd + 12))
        var cdOffset = Int(file.u32(eocd + 16))
        if count == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF {
            let locator = eocd - 20
            guard locator >= 0, file.u32(locator) == 0x0706_4B50 else { throw bad("ZIP64 locator missing") }
            let z64 = file.u64(locator + 8)
            guard z64 <= UInt64(n - 56), file.u32(Int(z64)) == 0x0606_4B50 else { throw bad("ZIP64 end-of-directory record missing") }
            let o = Int(z64)
            let c = file.u64(o + 32), s = file.u64(o + 40), off = file.u64(o + 48)
            guard c <= UInt64(n), s <= UInt64(n), off <= UInt64(n) else { throw bad("ZIP64 directory fields exceed the file") }
            count = Int(c); cdSize = Int(s); cdOffset = Int(off)
        }
        guard file.contains(offset: cdOffset, length: cdSize) else {
            throw WeightsError.truncated(file: path, reason: "zip central directory (\(cdSize) bytes at \(cdOffset)) lies past the end of the file")
        }
        guard count <= cdSize / 46 + 1 else { throw bad("directory claims \(count) entries in \(cdSize) bytes") }
        var p = cdOffset
        let end = cdOffset + cdSize
        for _ in 0..<count {
            guard p + 46 <= end, file.u32(p) == 0x0201_4B50 else { throw bad("corrupt central directory entry at \(p)") }
            let flags = Int(file.u16(p + 8))
            let method = Int(file.u16(p + 10))
            var compressed = Int(file.u32(p + 20))
            var size = Int(file.u32(p + 24))
            let nameLength = Int(file.u16(p + 28))
            let extraLength = Int(file.u16(p + 30))
            let commentLength = Int(file.u16(p + 32))
            var local = Int(file.u32(p + 42))
            guard p + 46 + nameLength + extraLength + commentLength <= end else { throw bad("central directory entry overruns the directory") }
            let name = String(decoding: file.bytes(p + 46, nameLength), as: UTF8.self)
            // ZIP64 extended information: only the fields saturated in the fixed record are present, in order.
            var e = p + 46 + nameLength
            let extraEnd = e + extraLength
            while e + 4 <= extraEnd {
                let id = file.u16(e), len = Int(file.u16(e + 2))
                guard e + 4 + len <= extraEnd else { throw bad("extra field of \"\(name)\" overruns its entry") }
                if id == 0x0001 {
                    var f = e + 4
                    func next() throws -> Int {
                        guard f + 8 <= e + 4 + len else { throw bad("short ZIP64 field in \"\(name)\"") }
                        let v = file.u64(f); f += 8
                        guard v <= UInt64(n) else { throw bad("ZIP64 field of \"\(name)\" exceeds the file size") }
                        return Int(v)
                    }
                    if size == 0xFFFF_FFFF { size = try next() }
                    if compressed == 0xFFFF_FFFF { compressed = try next() }
                    if local == 0xFFFF_FFFF { local = try next() }
                }
                e += 4 + len
            }
            if entries[name] == nil { names.append(name) }
            entries[name] = Entry(name: name, localHeaderOffset: local, size: size, compressedSize: compressed,
                                  method: method, flags: flags)
            p = extraEnd + commentLength
        }
    }

    /// Byte range of an entry's data inside the file, after checking it is stored, unencrypted and inside the file.
    func dataOffset(_ entry: Entry) throws -> Int {
        let path = file.path
        guard entry.flags & 1 == 0 else { throw WeightsError.unsupported(file: path, reason: "zip entry \"\(entry.name)\" is encrypted") }
        guard entry.method == 0 else {
            throw WeightsError.unsupported(file: path, reason: "zip entry \"\(entry.name)\" is compressed (method \(entry.method)); PyTorch checkpoints store entries uncompressed — re-save the file with torch.save instead of re-zipping it")
        }
        let h = entry.localHeaderOffset
        guard file.contains(offset: h, length: 30), file.u32(h) == 0x0403_4B50 else {
            throw WeightsError.malformed(file: path, reason: "zip: local header of \"\(entry.name)\" is missing or corrupt")
        }
        let start = h + 30 + Int(file.u16(h + 26)) + Int(file.u16(h + 28))
        guard entry.size == entry.compressedSize, file.contains(offset: start, length: entry.size) else {
            throw WeightsError.truncated(file: path, reason: "zip entry \"\(entry.name)\" (\(entry.size) bytes at \(start)) extends past the end of the file")
        }
        return start
    }
}

/// Writes a zip archive of STORED (uncompressed) entries, the container `torch.save` produces. Lapse never writes
/// `.pth` files itself; tests and the fuzzer use this to build PyTorch checkpoints — hostile ones included — from
/// pickle bytes made in code.
public enum StoredZip {
    /// The archive bytes: a local header and the data of each entry, the central directory and its end record.
    public static func archive(_ entries: [(name: String, data: [UInt8])]) -> [UInt8] {
        var out: [UInt8] = []
        var central: [UInt8] = []
        func u16(_ v: Int, _ b: inout [UInt8]) { b += [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)] }
        func u32(_ v: UInt32, _ b: inout [UInt8]) { for k in 0..<4 { b.append(UInt8((v >> (8 * UInt32(k))) & 0xFF)) } }
        for (name, data) in entries {
            let nameBytes = Array(name.utf8)
            let offset = UInt32(out.count)
            let crc = crc32(data)
            u32(0x0403_4B50, &out); u16(20, &out); u16(0, &out); u16(0, &out); u16(0, &out); u16(0, &out)
            u32(crc, &out); u32(UInt32(data.count), &out); u32(UInt32(data.count), &out)
            u16(nameBytes.count, &out); u16(0, &out)
            out += nameBytes
            out += data
            u32(0x0201_4B50, &central); u16(20, &central); u16(20, &central); u16(0, &central); u16(0, &central)
            u16(0, &central); u16(0, &central)
            u32(crc, &central); u32(UInt32(data.count), &central); u32(UInt32(data.count), &central)
            u16(nameBytes.count, &central); u16(0, &central); u16(0, &central); u16(0, &central); u16(0, &central)
            u32(0, &central); u32(offset, &central)
            central += nameBytes
        }
        let directoryOffset = UInt32(out.count)
        out += central
        u32(0x0605_4B50, &out); u16(0, &out); u16(0, &out); u16(entries.count, &out); u16(entries.count, &out)
        u32(UInt32(central.count), &out); u32(directoryOffset, &out); u16(0, &out)
        return out
    }

    /// CRC-32 (IEEE), which zip readers other than Lapse's check.
    static func crc32(_ data: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in data {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc >> 1) ^ (0xEDB8_8320 & (0 &- (crc & 1))) }
        }
        return ~crc
    }
}
