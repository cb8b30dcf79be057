import Foundation
import LapseSupport

/// PyTorch's zip checkpoint (torch ≥ 1.6): `ARCHIVE/data.pkl` describes the object, `ARCHIVE/data/KEY` holds each
/// storage's raw little-endian bytes.
enum TorchCheckpoint {
    /// Most bytes of tensor and container names the walk may build: a name grows with its depth, and shared
    /// containers are walked once per reference, so a hostile pickle could otherwise make gigabytes of names.
    static let maxNameBytes = 1 << 28

    static func open(_ file: MappedFile) throws -> CheckpointFile {
        let path = file.path
        let zip = try ZipArchive(file)
        guard let pklName = zip.names.filter({ $0 == "data.pkl" || $0.hasSuffix("/data.pkl") })
            .min(by: { $0.count < $1.count }) else {
            throw WeightsError.malformed(file: path, reason: "zip archive has no data.pkl, so it is not a PyTorch checkpoint")
        }
        let prefix = String(pklName.dropLast("data.pkl".count))
        if let byteorder = zip.entries[prefix + "byteorder"], let off = try? zip.dataOffset(byteorder),
           String(decoding: file.bytes(off, byteorder.size), as: UTF8.self) == "big" {
            throw WeightsError.unsupported(file: path, reason: "big-endian checkpoint")
        }
        let pkl = zip.entries[pklName]!
        let pklOffset = try zip.dataOffset(pkl)
        var storageOffsets: [String: Int] = [:]

        var unpickler = Unpickler(path: path, data: file.bytes(pklOffset, pkl.size)) { pid in
            guard case .tuple(let t, _) = pid, t.count >= 5, case .string("storage") = t[0] else {
                throw WeightsError.invalidPickle(file: path, reason: "persistent id is not ('storage', type, key, location, numel)")
            }
            guard case .global(let typeName) = t[1], let dtype = Unpickler.storageTypes[typeName] else {
                if case .global(let g) = t[1] { throw WeightsError.unknownDType(file: path, dtype: g) }
                throw WeightsError.invalidPickle(file: path, reason: "storage type is not a storage class")
            }
            guard case .string(let key) = t[2] else { throw WeightsError.invalidPickle(file: path, reason: "storage key is not a string") }
            // t[3] is the device the storage was saved from ("cpu", "cuda:0", …); everything loads to the CPU.
            guard case .int(let numel) = t[4], numel >= 0 else {
                throw WeightsError.invalidPickle(file: path, reason: "storage \"\(key)\" has no valid element count")
            }
            guard let entry = zip.entries[prefix + "data/" + key] else {
                throw WeightsError.malformed(file: path, reason: "storage \"\(key)\" has no entry \(prefix)data/\(key) in the archive")
            }
            let offset = try zip.dataOffset(entry)
            guard case let (bytes, false) = numel.multipliedReportingOverflow(by: dtype.size), bytes <= entry.size else {
                throw WeightsError.truncated(file: path, reason: "storage \"\(key)\" needs \(numel) × \(dtype.size) bytes but its entry holds \(entry.size)")
            }
            storageOffsets[key] = offset
            return PickledStorage(key: key, dtype: dtype, numel: numel)
        }
        let top = try unpickler.load()
        return try build(file, top: top, pickled: unpickler.tensors, storageOffsets: storageOffsets,
                         nodeLimit: unpickler.elementLimit)
    }

    /// Turns the unpickled object into the public value tree, naming each tensor by its path of dict keys / list
    /// indices, and records where each tensor's bytes are.
    ///
    /// The unpickler already bounded the depth (so this recursion is bounded too); `nodeLimit` bounds the walk of
    /// containers shared through the memo, which are expanded once per reference.
    static func build(_ file: MappedFile, top: Unpickler.Obj, pickled: [PickledTensor], storageOffsets: [String: Int],
                      nodeLimit: Int) throws -> CheckpointFile {
        let path = file.path
        var keys: [String] = []
        var entries: [String: CheckpointFile.Entry] = [:]
        var nodes = 0
        var nameBytes = 0
        func convert(_ o: Unpickler.Obj, _ name: String, _ depth: Int) throws -> PickleValue {
            nodes += 1
            guard depth <= Unpickler.maxDepth, nodes <= nodeLimit, nameBytes <= maxNameBytes else {
                throw WeightsError.malformed(file: path, reason: "pickled object expands to more than \(nodeLimit) values or \(maxNameBytes >> 20) MiB of names through shared containers (hostile or corrupt)")
            }
            func child(_ k: String) -> String {
                nameBytes += name.utf8.count + k.utf8.count + 1
                return name.isEmpty ? k : name + "." + k
            }
            switch o {
            case .none, .mark: return .none
            case .bool(let b): return .bool(b)
            case .int(let i): return .int(i)
            case .bigInt(let b): return .bigInt(b)
            case .float(let d): return .float(d)
            case .string(let s): return .string(s)
            case .bytes(let b): return .bytes(b)
            case .global(let g): return .global(g)
            case .storage(let s): return .global("storage:\(s.key)")
            case .list(let box): return .list(try box.items.enumerated().map { try convert($0.element, child(String($0.offset)), depth + 1) })
            case .tuple(let items, _): return .tuple(try items.enumerated().map { try convert($0.element, child(String($0.offset)), depth + 1) })
            case .set(let box): return .set(try box.items.map { try convert($0, child("?"), depth + 1) })
            case .dict(let box):
                var out: [PickleValue.DictEntry] = []
                out.reserveCapacity(box.keys.count)
                for (k, v) in Swift.zip(box.keys, box.values) {
                    let key = try convert(k, "", depth + 1)
                    let label: String
                    switch key {
                    case .string(let s): label = s
                    case .int(let i): label = String(i)
                    default: label = "?"
                    }
                    out.append(.init(key: key, value: try convert(v, child(label), depth + 1)))
                }
                return .dict(out)
            case .tensor(let index):
                let t = pickled[index]
                let key = name.isEmpty ? "tensor" : name
                if entries[key] == nil {
                    keys.append(key)
                    let contiguous = isContiguous(t.shape, t.strides)
                    entries[key] = .init(info: TensorInfo(dtype: t.storage.dtype, shape: t.shape),
                                         source: .mapped(TensorLocation(storageByteOffset: storageOffsets[t.storage.key]!,
                                                                        elementOffset: t.offset + t.storage.elementOffset,
                                                                        strides: contiguous ? nil : t.strides)))
                }
                return .tensor(key)
            }
        }
        let root = try convert(top, "", 0)
        // A checkpoint is a dict of tensors (a state dict, or a training checkpoint wrapping one); a bare tensor
        // also loads. A scalar or string root is some other pickle, and "0 tensors loaded" would hide that.
        switch root {
        case .dict, .list, .tuple, .tensor: break
        default:
            throw WeightsError.malformed(file: path, reason: "the pickle holds \(describe(root)), not a checkpoint: a checkpoint is a dict of tensors (a state dict)")
        }
        return CheckpointFile(path: path, format: .torch, file: file, keys: keys, entries: entries, root: root)
    }

    /// What a non-container root is, for the message refusing it (`an int (42)`).
    static func describe(_ value: PickleValue) -> String {
        switch value {
        case .none: "None"
        case .bool(let b): "a bool (\(b ? "True" : "False"))"
        case .int(let i): "an int (\(i))"
        case .bigInt: "a big int"
        case .float(let d): "a float (\(d))"
        case .string(let s): "a string (\"\(TerminalText.quoted(s, limit: 60))\")"
        case .bytes(let b): "\(b.count) bytes"
        case .set: "a set"
        case .global(let g): "a reference to \(g)"
        case .list: "a list"
        case .tuple: "a tuple"
        case .dict: "a dict"
        case .tensor: "a tensor"
        }
    }

    static func isContiguous(_ shape: [Int], _ strides: [Int]) -> Bool {
        var expected = 1
        for d in (0..<shape.count).reversed() {
            if shape[d] != 1 && strides[d] != expected { return false }
            expected *= shape[d]
        }
        return true
    }
}
