import Foundation
import LapseTensor
import LapseWeights
import Testing

/// Pickle opcodes for hand-made hostile checkpoints.
struct PickleBuilder {
    var bytes: [UInt8] = [0x80, 0x02]

    mutating func raw(_ b: [UInt8]) { bytes += b }
    mutating func str(_ s: String) { bytes += [0x58] + withUnsafeBytes(of: UInt32(s.utf8.count).littleEndian, Array.init) + Array(s.utf8) }
    mutating func global(_ module: String, _ name: String) { bytes += [0x63] + Array("\(module)\n\(name)\n".utf8) }
    /// A signed integer of any size (LONG1).
    mutating func int(_ v: Int) {
        var le = withUnsafeBytes(of: Int64(v).littleEndian, Array.init)
        while le.count > 1, (le.last == 0 && le[le.count - 2] & 0x80 == 0) || (le.last == 0xFF && le[le.count - 2] & 0x80 != 0) { le.removeLast() }
        bytes += [0x8A, UInt8(le.count)] + le
    }
    mutating func tuple(_ ints: [Int]) { bytes += [0x28]; for v in ints { int(v) }; bytes += [0x74] }
    /// `_rebuild_tensor_v2(storage(key, float32, numel), offset, size, stride, False, OrderedDict())`.
    mutating func tensor(storage key: String, numel: Int, offset: Int = 0, size: [Int], stride: [Int]) {
        global("torch._utils", "_rebuild_tensor_v2")
        bytes += [0x28, 0x28]
        str("storage"); global("torch", "FloatStorage"); str(key); str("cpu"); int(numel)
        bytes += [0x74, 0x51]
        int(offset); tuple(size); tuple(stride)
        bytes += [0x89]
        global("collections", "OrderedDict"); bytes += [0x29, 0x52]
        bytes += [0x74, 0x52]
    }
    mutating func stop() { bytes += [0x2E] }
}

/// A torch zip checkpoint of `pickle` with float32 storage "0" holding `elements` values 0, 1, 2, ….
func torchFile(_ pickle: [UInt8], storageElements elements: Int = 4) throws -> String {
    var data: [UInt8] = []
    for i in 0..<elements { data += withUnsafeBytes(of: Float(i).bitPattern.littleEndian, Array.init) }
    let zip = StoredZip.archive([("archive/data.pkl", pickle), ("archive/byteorder", Array("little".utf8)), ("archive/data/0", data)])
    return try writeBytes(zip, "hostile.pth")
}

/// Checkpoints made to break the readers: each must end in a `WeightsError` naming the file and the problem, in
/// bounded time and memory.
@Suite("Hostile checkpoints")
struct HostileCheckpointTests {
    func expectRefused(_ path: String, containing text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let error = expectWeightsError(path, { _ = try CheckpointFile.open(path) }, sourceLocation: sourceLocation)
        #expect(error?.errorDescription?.contains(text) == true, "\(error?.errorDescription ?? "no error")", sourceLocation: sourceLocation)
    }

    @Test("50,000 nested tuples are refused while unpickling, not overflowing the stack", arguments: [300, 50_000])
    func deepTuples(depth: Int) throws {
        var p = PickleBuilder()
        p.raw([0x29] + [UInt8](repeating: 0x85, count: depth))  // EMPTY_TUPLE, then TUPLE1 over and over
        p.stop()
        expectRefused(try torchFile(p.bytes), containing: "deeper than 200 levels")
    }

    @Test("nesting up to the limit still loads")
    func nestingAtTheLimit() throws {
        var p = PickleBuilder()
        p.raw([0x29] + [UInt8](repeating: 0x85, count: 199))
        p.stop()
        let file = try CheckpointFile.open(try torchFile(p.bytes))
        #expect(file.keys.isEmpty)
    }

    @Test("a list appended to itself (a cycle) is refused")
    func selfAppend() throws {
        var p = PickleBuilder()
        p.raw([0x5D, 0x71, 0x00, 0x68, 0x00, 0x61])  // EMPTY_LIST, BINPUT 0, BINGET 0, APPEND
        p.stop()
        expectRefused(try torchFile(p.bytes), containing: "after putting it inside another container")
    }

    @Test("a 50,000-deep chain of lists built through the memo is refused")
    func memoChain() throws {
        var p = PickleBuilder()
        p.raw([0x5D, 0x72] + withUnsafeBytes(of: UInt32(0).littleEndian, Array.init))  // root list, LONG_BINPUT 0
        for i in 0..<50_000 {
            // LONG_BINGET i, EMPTY_LIST, LONG_BINPUT i+1, APPEND, POP: list i gets list i+1 after being nested.
            p.raw([0x6A] + withUnsafeBytes(of: UInt32(i).littleEndian, Array.init) + [0x5D, 0x72]
                  + withUnsafeBytes(of: UInt32(i + 1).littleEndian, Array.init) + [0x61, 0x30])
        }
        p.stop()
        expectRefused(try torchFile(p.bytes), containing: "after putting it inside another container")
    }

    @Test("a tuple shared 2^150 times over is refused before it is expanded")
    func sharedExpansion() throws {
        var p = PickleBuilder()
        p.raw([0x29, 0x71, 0x00])  // EMPTY_TUPLE, BINPUT 0
        for i in 0..<150 { p.raw([0x68, UInt8(i), 0x68, UInt8(i), 0x86, 0x71, UInt8(i + 1)]) }  // (t, t)
        p.stop()
        let start = Date()
        expectRefused(try torchFile(p.bytes), containing: "expands to more than")
        #expect(Date().timeIntervalSince(start) < 20)
    }

    @Test("a stride-0 view far larger than its storage is refused", arguments: [1 << 40, 1_000_000_000, 65_537])
    func expandedView(size: Int) throws {
        var p = PickleBuilder()
        p.raw([0x7D, 0x28]); p.str("w")
        p.tensor(storage: "0", numel: 1, size: [size], stride: [0])
        p.raw([0x75]); p.stop()
        expectRefused(try torchFile(p.bytes, storageElements: 1), containing: "views that repeat storage elements may have at most 65536")
    }

    @Test("a small expanded view still loads, every element the one stored")
    func smallExpandedView() throws {
        var p = PickleBuilder()
        p.raw([0x7D, 0x28]); p.str("w")
        p.tensor(storage: "0", numel: 4, offset: 3, size: [1000, 3], stride: [0, 0])
        p.raw([0x75]); p.stop()
        let file = try CheckpointFile.open(try torchFile(p.bytes))
        let w = try file.tensor("w")
        #expect(w.shape == [1000, 3] && w.scalars.allSatisfy { $0 == 3 })
    }

    @Test("a pickle whose root is not a container is refused, saying what it is", arguments: [
        ([0x4B, 42] as [UInt8], "an int (42)"), ([0x4E], "None"), ([0x58, 1, 0, 0, 0, 0x61], "a string (\"a\")"),
    ])
    func nonContainerRoot(body: [UInt8], description: String) throws {
        var p = PickleBuilder()
        p.raw(body); p.stop()
        expectRefused(try torchFile(p.bytes), containing: "the pickle holds \(description), not a checkpoint: a checkpoint is a dict of tensors")
    }

    @Test("a dict without tensors still opens (its values are readable through root)")
    func dictWithoutTensors() throws {
        var p = PickleBuilder()
        p.raw([0x7D, 0x28]); p.str("epoch"); p.int(3); p.raw([0x75]); p.stop()
        let file = try CheckpointFile.open(try torchFile(p.bytes))
        #expect(file.keys.isEmpty && file.root?["epoch"] == .int(3))
    }

    // MARK: - safetensors

    func safetensors(header: String, data: [UInt8] = []) throws -> String {
        var bytes = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian, Array.init) + Array(header.utf8)
        bytes += data
        return try writeBytes(bytes, "hostile.safetensors")
    }

    @Test("duplicate tensor names are refused, not resolved to the last one")
    func duplicateNames() throws {
        let path = try safetensors(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                                   data: [UInt8](repeating: 0, count: 8))
        expectRefused(path, containing: "duplicate key")
    }

    @Test("a million empty tensors are refused by the count, in well under a second")
    func millionTensors() throws {
        var header = "{"
        header.reserveCapacity(70_000_000)
        for i in 0..<1_000_000 { header += "\"t\(i)\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}," }
        header.removeLast()
        header += "}"
        let path = try safetensors(header: header)
        let start = Date()
        expectRefused(path, containing: "at most 100000 are allowed")
        let seconds = Date().timeIntervalSince(start)
        #expect(seconds < 2, "took \(seconds) s")
    }

    @Test("a header with a hundred thousand tensors (the limit) loads; one more is refused")
    func tensorsAtTheLimit() throws {
        var header = "{"
        for i in 0..<100_000 { header += "\"t\(i)\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}," }
        header.removeLast()
        let file = try CheckpointFile.open(try safetensors(header: header + "}"))
        #expect(file.keys.count == 100_000)
        expectRefused(try safetensors(header: header + ",\"one-more\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}"),
                      containing: "header declares 100001 tensors; at most 100000 are allowed")
    }

    @Test("a header declaring more than the 100 MB limit is refused before it is read")
    func hugeHeader() throws {
        var bytes = withUnsafeBytes(of: UInt64(200_000_000).littleEndian, Array.init) + Array("{}".utf8)
        bytes += [UInt8](repeating: 0x20, count: 16)
        let path = try writeBytes(bytes, "huge.safetensors")
        expectRefused(path, containing: "header claims 200000000 bytes")
    }
}
