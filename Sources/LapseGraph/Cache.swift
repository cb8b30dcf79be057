import Foundation
import LapseTensor
import Synchronization

/// SHA-256 (FIPS 180-4), used for content-hash cache keys so keys are stable across runs and machines.
public struct SHA256: Sendable {
    private var state: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) =
        (0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19)
    private var buffer: [UInt8] = []
    private var length: UInt64 = 0

    private static let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    public init() {}

    /// Feeds bytes.
    public mutating func update(_ bytes: some Sequence<UInt8>) {
        let contiguous: Void? = bytes.withContiguousStorageIfAvailable { update(UnsafeRawBufferPointer($0)) }
        if contiguous != nil { return }
        if let data = bytes as? Data {
            data.withUnsafeBytes { update($0) }
            return
        }
        let copy = Array(bytes)
        copy.withUnsafeBytes { update($0) }
    }

    /// Feeds a contiguous run of bytes: whole blocks straight from `bytes`, only a partial block is buffered (cache
    /// entries hold hundreds of megabytes of frames, hashed when written and again when read back).
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        length &+= UInt64(bytes.count)
        var i = 0
        if !buffer.isEmpty {
            let take = min(64 - buffer.count, bytes.count)
            buffer.append(contentsOf: UnsafeRawBufferPointer(start: base, count: take))
            i = take
            guard buffer.count == 64 else { return }
            buffer.withUnsafeBytes { compress($0.baseAddress!) }
            buffer.removeAll(keepingCapacity: true)
        }
        while bytes.count - i >= 64 {
            compress(base + i)
            i += 64
        }
        if i < bytes.count { buffer.append(contentsOf: UnsafeRawBufferPointer(start: base + i, count: bytes.count - i)) }
    }

    /// Feeds a string's UTF-8 followed by a 0 separator, so concatenations cannot collide.
    public mutating func update(field: String) {
        update(field.utf8)
        update(CollectionOfOne(0))
    }

    /// The digest as 64 lowercase hex characters.
    public mutating func finalizeHex() -> String {
        let bits = length &* 8
        var padding: [UInt8] = [0x80]
        while (buffer.count + padding.count) % 64 != 56 { padding.append(0) }
        padding += (0..<8).reversed().map { UInt8(truncatingIfNeeded: bits >> (UInt64($0) * 8)) }
        update(padding)
        let words = [state.0, state.1, state.2, state.3, state.4, state.5, state.6, state.7]
        return words.map { word in
            let hex = String(word, radix: 16)
            return String(repeating: "0", count: 8 - hex.count) + hex
        }.joined()
    }

    /// Hex digest of a string's UTF-8.
    public static func hex(_ text: String) -> String { hex(text.utf8) }

    /// Hex digest of bytes.
    public static func hex(_ bytes: some Sequence<UInt8>) -> String {
        var h = SHA256()
        h.update(bytes)
        return h.finalizeHex()
    }

    /// One 64-byte block; the message schedule lives on the stack.
    private mutating func compress(_ block: UnsafeRawPointer) {
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) { w in
            for i in 0..<16 {
                w[i] = UInt32(bigEndian: block.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))
            }
            @inline(__always) func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { x >> n | x << (32 - n) }
            for i in 16..<64 {
                let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
                let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
                w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
            }
            var (a, b, c, d, e, f, g, h) = state
            SHA256.k.withUnsafeBufferPointer { k in
                for i in 0..<64 {
                    let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
                    let ch = (e & f) ^ (~e & g)
                    let t1 = h &+ s1 &+ ch &+ k[i] &+ w[i]
                    let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
                    let maj = (a & b) ^ (a & c) ^ (b & c)
                    let t2 = s0 &+ maj
                    (h, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
                }
            }
            state = (state.0 &+ a, state.1 &+ b, state.2 &+ c, state.3 &+ d, state.4 &+ e, state.5 &+ f, state.6 &+ g, state.7 &+ h)
        }
    }
}

/// A data value the result cache may write to `--cache-dir` and read back in a later run.
///
/// Loaded models are deliberately not persistable: writing gigabytes of weights would cost as much as reading the
/// checkpoint again (the server keeps them in memory instead, `ModelCache`). `Frames` streams are recorded by the
/// cache itself as a consumer drains them (see `FramesRecording`). Register conforming types with
/// `NodeRegistry.registerPersistable`.
public protocol PersistableValue: Sendable {
    /// Stable name stored with the bytes, e.g. `Latent`; change it (or a version inside the bytes) when the
    /// encoding changes, so old entries are refused rather than misread.
    static var persistenceTag: String { get }
    /// The value's bytes (`PersistentWriter` gives a compact, exact little-endian encoding).
    func persistentData() throws -> Data
    /// Rebuilds a value from `persistentData()`'s bytes; throws (`CacheEntryError.malformed`) on anything else.
    static func restore(from data: Data) throws -> Self
}

/// A node type whose results the cache keeps in memory but never writes to `--cache-dir`: reading its inputs again
/// costs no more than reading an entry back (file loaders), or its result is a cheap per-frame transform whose exact
/// float32 copy on disk would be many times the size of its source (crop, resize, pad). Recomputing those is what
/// a cache hit downstream avoids anyway: a node is only run when a consumer of its output has to run.
public protocol DiskCacheExempt {}

/// Why a cache entry on disk was not used. The entry is removed and its node recomputed.
public enum CacheEntryError: LocalizedError, Sendable, Equatable {
    /// The file does not start with a header this version writes.
    case header(String)
    /// The payload's SHA-256 differs from the header's.
    case checksumMismatch
    /// The payload does not decode (a bug, or an entry of another build).
    case malformed(String)

    public var errorDescription: String? {
        switch self {
        case .header(let reason): reason
        case .checksumMismatch: "checksum mismatch (the entry was changed after it was written)"
        case .malformed(let reason): "the entry cannot be decoded: \(reason)"
        }
    }
}

/// Compact, exact binary encoding for `PersistableValue`s: little-endian integers, IEEE doubles by bit pattern,
/// length-prefixed UTF-8 strings and tensors as a shape followed by raw float32.
public struct PersistentWriter {
    /// The bytes written so far.
    public private(set) var data = Data()

    public init() {}

    public mutating func append(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { data.append(contentsOf: $0) } }
    public mutating func append(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { data.append(contentsOf: $0) } }
    public mutating func append(int value: Int) { append(UInt64(bitPattern: Int64(value))) }
    public mutating func append(_ value: Double) { append(value.bitPattern) }

    /// A length-prefixed UTF-8 string.
    public mutating func append(_ value: String) {
        let bytes = Array(value.utf8)
        append(UInt64(bytes.count))
        data.append(contentsOf: bytes)
    }

    /// Rank, each dimension, then the elements as little-endian float32 (the in-memory layout on the little-endian
    /// hosts Lapse runs on).
    public mutating func append(_ tensor: Tensor) {
        append(UInt32(tensor.rank))
        for dimension in tensor.shape { append(UInt64(dimension)) }
        tensor.withUnsafeBufferPointer { data.append(contentsOf: UnsafeRawBufferPointer($0)) }
    }
}

/// Reads what `PersistentWriter` wrote, checking every length against the bytes left.
public struct PersistentReader {
    private let data: Data
    private var position: Int

    public init(_ data: Data) {
        self.data = data
        position = data.startIndex
    }

    private mutating func take(_ count: Int, _ what: String) throws -> Data {
        guard count >= 0, data.endIndex - position >= count else { throw CacheEntryError.malformed("\(what) is cut short") }
        defer { position += count }
        return data[position..<(position + count)]
    }

    public mutating func uint32() throws -> UInt32 {
        UInt32(littleEndian: try take(4, "a number").withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
    }

    public mutating func uint64() throws -> UInt64 {
        UInt64(littleEndian: try take(8, "a number").withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
    }

    public mutating func int() throws -> Int { Int(Int64(bitPattern: try uint64())) }
    public mutating func double() throws -> Double { Double(bitPattern: try uint64()) }

    public mutating func string() throws -> String {
        let count = try uint64()
        guard count <= UInt64(data.endIndex - position) else { throw CacheEntryError.malformed("a string is cut short") }
        guard let text = String(data: try take(Int(count), "a string"), encoding: .utf8) else {
            throw CacheEntryError.malformed("a string is not UTF-8")
        }
        return text
    }

    public mutating func tensor() throws -> Tensor {
        let rank = try uint32()
        guard rank <= 16 else { throw CacheEntryError.malformed("a tensor of rank \(rank)") }
        var shape: [Int] = []
        var count = 1
        for _ in 0..<rank {
            let dimension = try uint64()
            guard dimension <= UInt64(Int32.max) else { throw CacheEntryError.malformed("a tensor dimension of \(dimension)") }
            shape.append(Int(dimension))
            let (product, overflow) = count.multipliedReportingOverflow(by: Int(dimension))
            guard !overflow, product <= (data.endIndex - position) / 4 else { throw CacheEntryError.malformed("a tensor is cut short") }
            count = product
        }
        let bytes = try take(count * 4, "a tensor")
        var tensor = Tensor(zeros: shape)
        tensor.withUnsafeMutableBufferPointer { out in bytes.withUnsafeBytes { _ = $0.copyBytes(to: out) } }
        return tensor
    }

    /// Throws unless every byte was read (trailing bytes mean the entry is not what it claims).
    public func finish() throws {
        guard position == data.endIndex else { throw CacheEntryError.malformed("\(data.endIndex - position) unread bytes") }
    }
}

/// Cache keys: a content hash of everything that determines a node's result.
public enum CacheKey {
    /// Hashes the node type (and where it came from), its resolved literal values, the identities of its input
    /// files (canonical path, device, inode, size and modification time in nanoseconds, as `ModelCache` keys
    /// models: an edited or replaced file misses) and the keys of the upstream outputs it links to.
    public static func compute(for node: ResolvedNode, upstreamKeys: [String: String]) -> String {
        var h = SHA256()
        h.update(field: "lapse-node-v2")
        h.update(field: node.type)
        h.update(field: node.entry.source)
        for name in node.literals.keys.sorted() {
            h.update(field: name)
            h.update(field: encode(node.literals[name]!))
        }
        for path in node.inputFiles {
            h.update(field: "file")
            h.update(field: path)
            if let identity = ModelCache.FileIdentity(path: path) {
                h.update(field: "\(identity.path) \(identity.device) \(identity.inode) \(identity.size) \(identity.modified)")
            } else {
                h.update(field: "unreadable")
            }
        }
        for link in node.links {
            h.update(field: "link")
            h.update(field: link.port)
            h.update(field: upstreamKeys[link.nodeID] ?? "")
            h.update(field: link.output)
        }
        return h.finalizeHex()
    }

    private static func encode(_ value: Value) -> String {
        switch value {
        case .int(let i): "i:\(i)"
        case .float(let d): "f:\(d.bitPattern)"
        case .bool(let b): "b:\(b)"
        case .string(let s): "s:\(s)"
        case .object(let o): "o:\(String(reflecting: type(of: o)))"
        }
    }
}

/// Node results by cache key: in memory for the life of the object, and on disk under `directory` (`--cache-dir`)
/// for results made only of plain values, `PersistableValue`s and at most one `Frames` stream.
///
/// An entry is one file, `<directory>/<first two hex digits>/<key>.lapse`:
/// a header line `lapse-cache-v3 <SHA-256 of the rest>`, the values' bytes, a JSON manifest naming each output and
/// where its bytes are, and the manifest's length (8 bytes, little-endian). A `Frames` stream is written frame by
/// frame while a consumer drains it (one record per frame: a 40-byte header with channels, size, index, time and
/// colour, then the pixels as little-endian float32) and the entry is completed when the stream ends; a stream that
/// is not drained, fails, or grows past `maxEntryBytes` leaves no entry. Entries are written to a hidden temporary
/// file and renamed into place, so a reader never sees a partial one.
public final class ResultCache: Sendable {
    /// Where persistable results are written (`--cache-dir`); `nil` keeps results in memory only.
    public let directory: URL?
    /// Largest entry written to disk; a larger result (a long upscaled video) is kept in memory only.
    public let maxEntryBytes: Int
    /// 4 GiB: about 120 frames of 1280×2288 RGB float32, a 4× upscale of a 320×572 clip.
    public static let defaultMaxEntryBytes = 4 << 30
    private let memory = Mutex<[String: NodeOutputs]>([:])

    public init(directory: URL? = nil, maxEntryBytes: Int = ResultCache.defaultMaxEntryBytes) {
        self.directory = directory
        self.maxEntryBytes = maxEntryBytes
    }

    /// What a lookup found.
    public enum Lookup {
        case hit(NodeOutputs)
        case miss
        /// An entry on disk failed its checksum or could not be decoded; it was removed and will be recomputed.
        case corrupt(path: String, reason: String)
    }

    /// A cached result: from memory, else from disk when its checksum holds and it decodes with the registry's
    /// persistable types. A damaged or hand-edited entry is removed and reported, never used. Reading an entry
    /// hashes all of it; its frames are then read from the file as a consumer pulls them.
    public func lookup(_ key: String, registry: NodeRegistry) -> Lookup {
        if let hit = memory.withLock({ $0[key] }) { return .hit(hit) }
        guard let file = fileURL(for: key), FileKind(path: file.path) != .missing else { return .miss }
        do {
            let outputs = try CacheEntryReader.read(file.path, key: key, registry: registry)
            memory.withLock { $0[key] = outputs }
            return .hit(outputs)
        } catch {
            unlink(file.path)
            return .corrupt(path: file.path, reason: error.localizedDescription)
        }
    }

    /// Forgets a result in memory and on disk (an entry that decoded but does not fit its node any more).
    public func remove(_ key: String) {
        memory.withLock { _ = $0.removeValue(forKey: key) }
        if let file = fileURL(for: key) { unlink(file.path) }
    }

    /// Remembers a result and returns the outputs to hand downstream. With a cache directory and `toDisk`, a
    /// result of plain values and `PersistableValue`s is written now; one with a `Frames` stream gets that stream
    /// wrapped so the first pass that drains it writes the entry (later passes in this process read the entry).
    /// Anything else (a loaded model) stays in memory only. Problems writing are given to `log`, never thrown: a
    /// cache that cannot be written must not fail the run.
    public func store(_ outputs: NodeOutputs, for key: String, nodeType: String, toDisk: Bool = true,
                      log: @escaping @Sendable (String) -> Void = { _ in }) -> NodeOutputs {
        memory.withLock { $0[key] = outputs }
        guard toDisk, let file = fileURL(for: key) else { return outputs }
        var inline: [String: Value] = [:]
        var blobs: [(name: String, tag: String, data: Data)] = []
        var stream: (name: String, frames: Frames)?
        for (name, value) in outputs.values.sorted(by: { $0.key < $1.key }) {
            switch value {
            case .int, .float, .bool, .string:
                inline[name] = value
            case .object(let object):
                if let frames = object as? Frames, stream == nil {
                    stream = (name, frames)
                } else if let persistable = object as? any PersistableValue {
                    do {
                        blobs.append((name, type(of: persistable).persistenceTag, try persistable.persistentData()))
                    } catch {
                        log("not cached on disk: output \"\(name)\" could not be encoded: \(error.localizedDescription)")
                        return outputs
                    }
                } else {
                    return outputs  // a model, or a second stream: memory only
                }
            }
        }
        let pending = CacheEntryWriter.Pending(key: key, nodeType: nodeType, inline: inline, blobs: blobs,
                                               empty: outputs.emptyReasons)
        let size = blobs.reduce(0) { $0 + $1.data.count }
        guard size <= maxEntryBytes else {
            log("not cached on disk: the result is \(Self.describe(bytes: size)), over the \(Self.describe(bytes: maxEntryBytes)) limit per entry")
            return outputs
        }
        guard let stream else {
            do {
                try CacheEntryWriter.writeNow(pending, to: file)
            } catch {
                log("could not write the cache entry: \(error.localizedDescription)")
            }
            return outputs
        }
        let recording = FramesRecording(frames: stream.frames, output: stream.name, pending: pending, file: file,
                                        limit: maxEntryBytes - size, log: log) { [weak self] restored in
            var updated = outputs
            updated.values[stream.name] = .object(restored)
            self?.memory.withLock { $0[key] = updated }
        }
        var wrapped = outputs
        wrapped.values[stream.name] = .object(recording.frames)
        return wrapped
    }

    /// Forgets the in-memory results whose keys are not in `keys` (a batch keeps what the last item used, such as
    /// its loaded models, so the next item with the same model does not load it again, and memory stays bounded).
    public func retainOnly(_ keys: Set<String>) {
        memory.withLock { $0 = $0.filter { keys.contains($0.key) } }
    }

    /// Number of results held in memory.
    public var count: Int { memory.withLock { $0.count } }

    /// The folder where the node execution with this cache key may keep resumable work (`NodeContext.workDirectory`):
    /// `<directory>/work/<key>`; `nil` without a cache directory. Not created here: a node creates it on first use.
    public func workDirectory(for key: String) -> URL? {
        directory?.appendingPathComponent("work").appendingPathComponent(key)
    }

    /// A size for messages: bytes below 1 MiB, else whole MiB.
    static func describe(bytes: Int) -> String { bytes < 1 << 20 ? "\(bytes) bytes" : "\(bytes >> 20) MiB" }

    /// The entry file of a key (it may not exist).
    public func fileURL(for key: String) -> URL? {
        directory?.appendingPathComponent(String(key.prefix(2))).appendingPathComponent("\(key).lapse")
    }
}

/// The entry file format's constants.
enum CacheEntryFormat {
    /// First word of an entry's header line; the line goes on with the SHA-256 of the payload that follows it.
    static let magic = "lapse-cache-v3"
    /// `magic`, a space, 64 hex digits, a newline.
    static let headerLength = magic.utf8.count + 1 + 64 + 1

    static func header(digest: String) -> Data { Data((magic + " " + digest + "\n").utf8) }
}

/// Writes entry files: header placeholder, payload hashed as it is written, then the real header, then a rename.
final class CacheEntryWriter {
    /// Everything of an entry except a stream: written once the stream (if any) has ended.
    struct Pending: Sendable {
        let key: String
        let nodeType: String
        let inline: [String: Value]
        let blobs: [(name: String, tag: String, data: Data)]
        /// Optional outputs the node left empty, with why.
        let empty: [String: String]
    }

    /// Where a finished stream's records are in the payload, with what is needed to read them back.
    struct StreamPart {
        let name: String
        let offset: Int
        let length: Int
        let frameCount: Int
        let colors: [ColorInfo]
        let info: FrameStreamInfo
    }

    private let target: URL
    private let temp: String
    private let fd: Int32
    private var hash = SHA256()
    /// Payload bytes written (offsets in the manifest count from the payload's start).
    private(set) var written = 0
    private var closed = false

    init(target: URL) throws {
        let folder = target.deletingLastPathComponent()
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        self.target = target
        temp = folder.appendingPathComponent(".\(target.lastPathComponent).tmp-\(UUID().uuidString.prefix(8))").path
        fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileAccessError.write(path: temp, reason: String(cString: strerror(errno))) }
        let placeholder = [UInt8](repeating: 0x20, count: CacheEntryFormat.headerLength)
        do { try placeholder.withUnsafeBytes { try writeAll($0) } } catch { discard(); throw error }
    }

    deinit { discard() }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw FileAccessError.write(path: temp, reason: String(cString: strerror(errno))) }
            done += n
        }
    }

    /// Appends payload bytes.
    func append(_ bytes: UnsafeRawBufferPointer) throws {
        try writeAll(bytes)
        hash.update(bytes)
        written += bytes.count
    }

    func append(_ data: Data) throws { try data.withUnsafeBytes { try append($0) } }

    /// Writes the blobs, the manifest and its length, the header; renames the file into place.
    func finish(_ pending: Pending, stream: StreamPart?) throws {
        var outputs: [String: Any] = [:]
        for (name, value) in pending.inline {
            switch value {
            case .int(let i): outputs[name] = ["kind": "int", "value": String(i)]
            case .float(let d): outputs[name] = ["kind": "float", "bits": String(d.bitPattern)]
            case .bool(let b): outputs[name] = ["kind": "bool", "value": b]
            case .string(let s): outputs[name] = ["kind": "string", "value": s]
            case .object: continue
            }
        }
        for blob in pending.blobs {
            outputs[blob.name] = ["kind": "object", "tag": blob.tag, "offset": written, "length": blob.data.count]
            try append(blob.data)
        }
        if let stream {
            var info: [String: Any] = ["color": Self.encode(stream.info.color)]
            if let width = stream.info.width { info["width"] = width }
            if let height = stream.info.height { info["height"] = height }
            if let rate = stream.info.frameRate { info["rate"] = [rate.numerator, rate.denominator] }
            if let count = stream.info.frameCount { info["frameCount"] = count }
            if let source = stream.info.sourcePath { info["sourcePath"] = source }
            outputs[stream.name] = ["kind": "frames", "offset": stream.offset, "length": stream.length,
                                    "frames": stream.frameCount, "colors": stream.colors.map(Self.encode), "info": info]
        }
        let manifest = try JSONSerialization.data(withJSONObject: ["key": pending.key, "type": pending.nodeType, "outputs": outputs,
                                                                   "empty": pending.empty],
                                                  options: [.sortedKeys])
        try append(manifest)
        try withUnsafeBytes(of: UInt64(manifest.count).littleEndian) { try append($0) }
        let header = CacheEntryFormat.header(digest: hash.finalizeHex())
        let wroteHeader = header.withUnsafeBytes { pwrite(fd, $0.baseAddress!, $0.count, 0) }
        guard wroteHeader == header.count else { throw FileAccessError.write(path: temp, reason: String(cString: strerror(errno))) }
        closed = true
        guard close(fd) == 0 else {
            unlink(temp)
            throw FileAccessError.write(path: temp, reason: String(cString: strerror(errno)))
        }
        guard rename(temp, target.path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temp)
            throw FileAccessError.rename(from: temp, to: target.path, reason: reason)
        }
    }

    /// Removes the unfinished file.
    func discard() {
        guard !closed else { return }
        closed = true
        close(fd)
        unlink(temp)
    }

    /// Writes an entry with no stream at once.
    static func writeNow(_ pending: Pending, to file: URL) throws {
        let writer = try CacheEntryWriter(target: file)
        try writer.finish(pending, stream: nil)
    }

    static func encode(_ color: ColorInfo) -> [String: Any] {
        ["matrix": color.matrix, "range": color.range, "bitDepth": color.bitDepth]
    }
}

/// An open entry file, shared by the frame sources reading it; it stays readable while held even if the entry is
/// removed or replaced meanwhile.
final class CacheEntryHandle: Sendable {
    let path: String
    let fd: Int32

    init(path: String) throws {
        self.path = path
        fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileAccessError.notReadable(path: path, reason: String(cString: strerror(errno))) }
    }

    deinit { close(fd) }

    var size: Int {
        var info = stat()
        return fstat(fd, &info) == 0 ? Int(info.st_size) : -1
    }

    /// Reads exactly `count` bytes at `offset` into `buffer`.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0, errno == EINTR { continue }
            guard n > 0 else {
                throw CacheEntryError.malformed(n == 0 ? "the file ends early" : String(cString: strerror(errno)))
            }
            done += n
        }
    }

    func read(count: Int, at offset: Int) throws -> Data {
        var data = Data(count: count)
        try data.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        return data
    }
}

/// Reads and checks entry files.
enum CacheEntryReader {
    static func read(_ path: String, key: String, registry: NodeRegistry) throws -> NodeOutputs {
        guard FileKind(path: path) == .regular else { throw CacheEntryError.header("not a regular file") }
        let handle = try CacheEntryHandle(path: path)
        let size = handle.size
        let headerLength = CacheEntryFormat.headerLength
        guard size >= headerLength + 8 else { throw CacheEntryError.header("no \(CacheEntryFormat.magic) header line") }
        let header = String(decoding: try handle.read(count: headerLength, at: 0), as: UTF8.self)
        let words = header.dropLast().split(separator: " ")
        guard header.hasSuffix("\n"), words.count == 2, words[0] == CacheEntryFormat.magic, words[1].count == 64 else {
            throw CacheEntryError.header("unknown header (an entry of another version?)")
        }
        // The whole payload is hashed before anything is used: a frame read later is known to be what was written.
        var hash = SHA256()
        let chunk = 4 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 16)
        defer { buffer.deallocate() }
        var position = headerLength
        while position < size {
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(chunk, size - position)])
            try handle.read(into: part, at: position)
            hash.update(UnsafeRawBufferPointer(part))
            position += part.count
        }
        guard hash.finalizeHex() == words[1] else { throw CacheEntryError.checksumMismatch }
        let payloadLength = size - headerLength
        let lengthBytes = try handle.read(count: 8, at: size - 8)
        let manifestLength = Int(UInt64(littleEndian: lengthBytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }))
        guard manifestLength > 0, manifestLength <= payloadLength - 8 else { throw CacheEntryError.malformed("bad manifest length") }
        let manifestOffset = payloadLength - 8 - manifestLength
        let manifest = try handle.read(count: manifestLength, at: headerLength + manifestOffset)
        guard let root = try? JSONSerialization.jsonObject(with: manifest) as? [String: Any], root["key"] as? String == key,
              let outputs = root["outputs"] as? [String: [String: Any]] else {
            throw CacheEntryError.malformed("the entry belongs to another key or is not a cache entry")
        }
        func range(_ item: [String: Any], _ name: String) throws -> (offset: Int, length: Int) {
            guard let offset = item["offset"] as? Int, let length = item["length"] as? Int, offset >= 0, length >= 0,
                  offset <= manifestOffset - length else {
                throw CacheEntryError.malformed("output \"\(name)\" points outside the entry")
            }
            return (headerLength + offset, length)
        }
        var values: [String: Value] = [:]
        let empty = root["empty"] as? [String: String] ?? [:]
        for (name, item) in outputs {
            let bad = CacheEntryError.malformed("output \"\(name)\"")
            switch item["kind"] as? String {
            case "int": guard let s = item["value"] as? String, let i = Int(s) else { throw bad }; values[name] = .int(i)
            case "float": guard let s = item["bits"] as? String, let b = UInt64(s) else { throw bad }; values[name] = .float(Double(bitPattern: b))
            case "bool": guard let b = item["value"] as? Bool else { throw bad }; values[name] = .bool(b)
            case "string": guard let s = item["value"] as? String else { throw bad }; values[name] = .string(s)
            case "object":
                guard let tag = item["tag"] as? String else { throw bad }
                guard let type = registry.persistableType(tag: tag) else {
                    throw CacheEntryError.malformed("output \"\(name)\" is a \(tag), which no loaded module can read")
                }
                let (offset, length) = try range(item, name)
                values[name] = .object(try type.restore(from: try handle.read(count: length, at: offset)))
            case "frames":
                let (offset, length) = try range(item, name)
                guard let count = item["frames"] as? Int, count >= 0, let colorItems = item["colors"] as? [[String: Any]],
                      let infoItem = item["info"] as? [String: Any] else { throw bad }
                let colors = try colorItems.map { try decodeColor($0) }
                var info = FrameStreamInfo(color: try decodeColor(infoItem["color"] as? [String: Any] ?? [:]))
                info.width = infoItem["width"] as? Int
                info.height = infoItem["height"] as? Int
                if let rate = infoItem["rate"] as? [Int], rate.count == 2, rate[1] != 0 { info.frameRate = (rate[0], rate[1]) }
                info.frameCount = infoItem["frameCount"] as? Int
                info.sourcePath = infoItem["sourcePath"] as? String
                values[name] = .object(FramesRecording.fileFrames(handle: handle, offset: offset, length: length, count: count,
                                                                  colors: colors, info: info))
            default: throw bad
            }
        }
        var result = NodeOutputs(values)
        for (name, reason) in empty where values[name] == nil { result.leaveEmpty(name, reason: reason) }
        return result
    }

    static func decodeColor(_ item: [String: Any]) throws -> ColorInfo {
        guard let matrix = item["matrix"] as? String, let range = item["range"] as? String, let depth = item["bitDepth"] as? Int else {
            throw CacheEntryError.malformed("a colour description")
        }
        return ColorInfo(matrix: matrix, range: range, bitDepth: depth)
    }
}
