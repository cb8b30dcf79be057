import Foundation
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
        let contiguous: Void? = bytes.withContiguousStorageIfAvailable { absorb(UnsafeRawBufferPointer($0)) }
        if contiguous != nil { return }
        if let data = bytes as? Data {
            data.withUnsafeBytes { absorb($0) }
            return
        }
        let copy = Array(bytes)
        copy.withUnsafeBytes { absorb($0) }
    }

    /// Feeds a contiguous run of bytes a block at a time (cache entries hold megabytes of encoded tensors).
    private mutating func absorb(_ bytes: UnsafeRawBufferPointer) {
        length &+= UInt64(bytes.count)
        var i = 0
        while i < bytes.count {
            let take = min(64 - buffer.count, bytes.count - i)
            buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i..<(i + take)]))
            i += take
            if buffer.count == 64 { compress(); buffer.removeAll(keepingCapacity: true) }
        }
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

    private mutating func compress() {
        var w = [UInt32](repeating: 0, count: 64)
        for i in 0..<16 {
            w[i] = UInt32(buffer[i * 4]) << 24 | UInt32(buffer[i * 4 + 1]) << 16 | UInt32(buffer[i * 4 + 2]) << 8 | UInt32(buffer[i * 4 + 3])
        }
        func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { x >> n | x << (32 - n) }
        for i in 16..<64 {
            let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
            let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
            w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
        }
        var (a, b, c, d, e, f, g, h) = state
        for i in 0..<64 {
            let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
            let ch = (e & f) ^ (~e & g)
            let t1 = h &+ s1 &+ ch &+ SHA256.k[i] &+ w[i]
            let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
            let maj = (a & b) ^ (a & c) ^ (b & c)
            let t2 = s0 &+ maj
            (h, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
        }
        state = (state.0 &+ a, state.1 &+ b, state.2 &+ c, state.3 &+ d, state.4 &+ e, state.5 &+ f, state.6 &+ g, state.7 &+ h)
    }
}

/// A data value the result cache may write to `--cache-dir` and read back in a later run.
///
/// Lazily evaluated `Frames` streams and loaded models are deliberately not persistable: writing them would cost
/// as much as recomputing them. Register conforming types with `NodeRegistry.registerPersistable`.
public protocol PersistableValue: Sendable {
    /// Stable name stored with the bytes, e.g. `Tensors`.
    static var persistenceTag: String { get }
    /// The value's bytes.
    func persistentData() throws -> Data
    /// Rebuilds a value from `persistentData()`'s bytes.
    static func restore(from data: Data) throws -> Self
}

/// Cache keys: a content hash of everything that determines a node's result.
public enum CacheKey {
    /// Hashes the node type (and where it came from), its resolved literal values, the identities of its input
    /// files (path, size, modification time) and the keys of the upstream outputs it links to.
    public static func compute(for node: ResolvedNode, upstreamKeys: [String: String]) -> String {
        var h = SHA256()
        h.update(field: "lapse-node-v1")
        h.update(field: node.type)
        h.update(field: node.entry.source)
        for name in node.literals.keys.sorted() {
            h.update(field: name)
            h.update(field: encode(node.literals[name]!))
        }
        for path in node.inputFiles {
            h.update(field: "file")
            h.update(field: path)
            let attributes = try? FileManager.default.attributesOfItem(atPath: path)
            h.update(field: String((attributes?[.size] as? NSNumber)?.int64Value ?? -1))
            h.update(field: String((attributes?[.modificationDate] as? Date)?.timeIntervalSince1970.bitPattern ?? 0))
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

/// Node results by cache key: in memory for the life of the object, and on disk under `directory` for results
/// made only of value types and `PersistableValue`s.
public final class ResultCache: Sendable {
    /// Where persistable results are written (`--cache-dir`); `nil` keeps results in memory only.
    public let directory: URL?
    private let memory = Mutex<[String: NodeOutputs]>([:])

    public init(directory: URL? = nil) {
        self.directory = directory
    }

    /// What a lookup found.
    public enum Lookup {
        case hit(NodeOutputs)
        case miss
        /// An entry on disk failed its checksum or could not be decoded; it was removed and will be recomputed.
        case corrupt(path: String, reason: String)
    }

    /// A cached result: from memory, else from disk when its checksum holds and it decodes with the registry's
    /// persistable types. A damaged or hand-edited entry is removed and reported, never used.
    public func lookup(_ key: String, registry: NodeRegistry) -> Lookup {
        if let hit = memory.withLock({ $0[key] }) { return .hit(hit) }
        guard let file = fileURL(for: key), FileKind(path: file.path) != .missing else { return .miss }
        do {
            let data = try InputFile.read(file.path)
            let outputs = try decode(data, key: key, registry: registry)
            memory.withLock { $0[key] = outputs }
            return .hit(outputs)
        } catch {
            unlink(file.path)
            return .corrupt(path: file.path, reason: error.localizedDescription)
        }
    }

    /// Remembers a result; writes it to disk when every output value is persistable.
    public func store(_ outputs: NodeOutputs, for key: String, nodeType: String) throws {
        memory.withLock { $0[key] = outputs }
        guard let file = fileURL(for: key), let payload = try encode(outputs, key: key, nodeType: nodeType) else { return }
        try AtomicFile.write(Data((Self.magic + " " + SHA256.hex(payload) + "\n").utf8) + payload, to: file)
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

    private func fileURL(for key: String) -> URL? {
        directory?.appendingPathComponent(String(key.prefix(2))).appendingPathComponent("\(key).json")
    }

    /// First word of an entry's header line; the line goes on with the SHA-256 of the payload that follows it.
    static let magic = "lapse-cache-v2"

    private func encode(_ outputs: NodeOutputs, key: String, nodeType: String) throws -> Data? {
        var encoded: [String: Any] = [:]
        for (name, value) in outputs.values {
            switch value {
            case .int(let i): encoded[name] = ["kind": "int", "value": String(i)]
            case .float(let d): encoded[name] = ["kind": "float", "bits": String(d.bitPattern)]
            case .bool(let b): encoded[name] = ["kind": "bool", "value": b]
            case .string(let s): encoded[name] = ["kind": "string", "value": s]
            case .object(let object):
                guard let persistable = object as? any PersistableValue else { return nil }
                encoded[name] = ["kind": "object", "tag": type(of: persistable).persistenceTag,
                                 "data": try persistable.persistentData().base64EncodedString()]
            }
        }
        return try JSONSerialization.data(withJSONObject: ["key": key, "type": nodeType, "outputs": encoded],
                                          options: [.sortedKeys])
    }

    /// Why an entry was not used.
    struct EntryError: LocalizedError {
        let reason: String
        var errorDescription: String? { reason }
    }

    private func decode(_ data: Data, key: String, registry: NodeRegistry) throws -> NodeOutputs {
        guard let newline = data.firstIndex(of: 0x0A), newline - data.startIndex <= 128 else {
            throw EntryError(reason: "no \(Self.magic) header line")
        }
        let header = String(decoding: data[data.startIndex..<newline], as: UTF8.self).split(separator: " ")
        guard header.count == 2, header[0] == Self.magic else { throw EntryError(reason: "unknown header (an entry of another version?)") }
        let payload = data[(newline + 1)...]
        guard SHA256.hex(payload) == header[1] else { throw EntryError(reason: "checksum mismatch (the entry was changed after it was written)") }
        guard let root = try? JSONSerialization.jsonObject(with: payload) as? [String: Any], root["key"] as? String == key,
              let outputs = root["outputs"] as? [String: [String: Any]] else {
            throw EntryError(reason: "the entry belongs to another key or is not a cache entry")
        }
        var values: [String: Value] = [:]
        for (name, item) in outputs {
            let bad = EntryError(reason: "output \"\(name)\" cannot be decoded")
            switch item["kind"] as? String {
            case "int": guard let s = item["value"] as? String, let i = Int(s) else { throw bad }; values[name] = .int(i)
            case "float": guard let s = item["bits"] as? String, let b = UInt64(s) else { throw bad }; values[name] = .float(Double(bitPattern: b))
            case "bool": guard let b = item["value"] as? Bool else { throw bad }; values[name] = .bool(b)
            case "string": guard let s = item["value"] as? String else { throw bad }; values[name] = .string(s)
            case "object":
                guard let tag = item["tag"] as? String, let type = registry.persistableType(tag: tag),
                      let text = item["data"] as? String, let bytes = Data(base64Encoded: text) else { throw bad }
                values[name] = .object(try type.restore(from: bytes))
            default: throw bad
            }
        }
        return NodeOutputs(values)
    }
}
