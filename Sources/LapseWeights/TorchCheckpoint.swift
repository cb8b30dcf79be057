import Foundation
import LapseSupport

/// PyTorch's zip checkpoint (torch ≥ 1.6): `ARCHIVE/data.pkl` describes the object, `ARCHIVE/data/KEY` holds each
/// storage's raw little-endian bytes.
enum TorchCheckpoint {
    /// Most bytes of tensor and container names the walk may build: a name grows with its depth, and shared
    /// containers are walked once per reference, so a hostile pickle could otherwise make gigabytes of names.
    static let maxNameBytes = 1 << 28

    static func open(_ file: MappedFile, stateDictKey: String? = nil) throws -> CheckpointFile {
        let path = file.path
        let zip: ZipArchive
        do {
            zip = try ZipArchive(file)
        } catch WeightsError.truncated(let f, let reason) {
            // A download or copy cut short loses the central directory at the end of the file; the local headers
            // still say where the cut falls, so the message can name the storage and tensor it is in.
            throw diagnoseTruncatedZip(file) ?? WeightsError.truncated(file: f, reason: reason)
        }
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
        var unpickler = Unpickler(path: path, data: file.bytes(pklOffset, pkl.size), placeholders: stateDictKey != nil,
                                  persistentLoad: zipStorageReference(path))
        let top = try unpickler.load()
        // Storages are located and size-checked only for the tensors that load, when they load: the training
        // state around a state dict is never touched, not even its zip headers.
        var located: [String: (offset: Int, size: Int)] = [:]
        return try build(file, top: top, pickled: unpickler.tensors, nodeLimit: unpickler.elementLimit,
                         stateDictKey: stateDictKey, placeholderClasses: unpickler.placeholderClasses) { storage, tensor in
            let entryName = prefix + "data/" + storage.key
            let location: (offset: Int, size: Int)
            if let known = located[storage.key] {
                location = known
            } else {
                guard let entry = zip.entries[entryName] else {
                    throw WeightsError.malformed(file: path, reason: "storage \"\(storage.key)\" of tensor \"\(TerminalText.quoted(tensor, limit: 160))\" has no entry \(entryName) in the archive")
                }
                do {
                    location = (try zip.dataOffset(entry), entry.size)
                } catch let error as WeightsError {
                    throw error.adding("tensor \"\(TerminalText.quoted(tensor, limit: 160))\"")
                }
                located[storage.key] = location
            }
            guard case let (bytes, false) = storage.numel.multipliedReportingOverflow(by: storage.dtype.size), bytes <= location.size else {
                throw WeightsError.truncated(file: path, reason: "storage \"\(storage.key)\" of tensor \"\(TerminalText.quoted(tensor, limit: 160))\" needs \(storage.numel) × \(storage.dtype.size) bytes but its entry holds \(location.size)")
            }
            return location.offset
        }
    }

    /// The zip format's persistent ids `('storage', torch.XStorage, key, location, numel)`, checked for shape only:
    /// whether the storage's entry exists and is big enough is checked when a tensor on it is loaded.
    static func zipStorageReference(_ path: String) -> (Unpickler.Obj) throws -> PickledStorage {
        { pid in
            guard case .tuple(let t, _) = pid, t.count >= 5, case .string("storage") = t[0] else {
                throw WeightsError.invalidPickle(file: path, reason: "persistent id is not ('storage', type, key, location, numel)")
            }
            let dtype = try storageDType(t[1], path)
            guard case .string(let key) = t[2] else { throw WeightsError.invalidPickle(file: path, reason: "storage key is not a string") }
            // t[3] is the device the storage was saved from ("cpu", "cuda:0", …); everything loads to the CPU.
            guard case .int(let numel) = t[4], numel >= 0 else {
                throw WeightsError.invalidPickle(file: path, reason: "storage \"\(key)\" has no valid element count")
            }
            return PickledStorage(key: key, dtype: dtype, numel: numel)
        }
    }

    /// The dtype of a persistent id's storage class.
    static func storageDType(_ type: Unpickler.Obj, _ path: String) throws -> DType {
        switch type {
        case .global(let name):
            guard let dtype = Unpickler.storageTypes[name] else { throw WeightsError.unknownDType(file: path, dtype: name) }
            return dtype
        case .placeholder(let name): throw WeightsError.unknownDType(file: path, dtype: name)
        default: throw WeightsError.invalidPickle(file: path, reason: "storage type is not a storage class")
        }
    }

    /// Turns the unpickled object into the public value tree, naming each tensor by its path of dict keys / list
    /// indices, and records where each loaded tensor's bytes are (`resolve` gives a storage's byte offset in the
    /// file, checking it for the tensor it names).
    ///
    /// With `stateDictKey`, only the tensors under that top-level key load (the others stay `.tensor(name)` values
    /// in `root` without an entry), and a placeholder under it is an error: a state dict holds tensors and plain
    /// containers only. The unpickler already bounded the depth (so this recursion is bounded too); `nodeLimit`
    /// bounds the walk of containers shared through the memo, which are expanded once per reference.
    static func build(_ file: MappedFile, top: Unpickler.Obj, pickled: [PickledTensor], nodeLimit: Int,
                      stateDictKey: String? = nil, placeholderClasses: [String] = [],
                      resolve: (PickledStorage, String) throws -> Int) throws -> CheckpointFile {
        let path = file.path
        if let stateDictKey { try checkStateDict(top, key: stateDictKey, path: path) }
        var keys: [String] = []
        var entries: [String: CheckpointFile.Entry] = [:]
        var nodes = 0
        var nameBytes = 0
        func convert(_ o: Unpickler.Obj, _ name: String, _ depth: Int, _ loads: Bool) throws -> PickleValue {
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
            case .placeholder(let c):
                if loads, let stateDictKey {
                    throw WeightsError.unsupported(file: path, reason: "\"\(TerminalText.quoted(name, limit: 160))\" in the state dict \"\(stateDictKey)\" is an object of class \(c), which Lapse does not load (a state dict holds tensors and plain containers; nothing was imported or run)")
                }
                return .placeholder(c)
            case .storage(let s): return .global("storage:\(s.key)")
            case .list(let box): return .list(try box.items.enumerated().map { try convert($0.element, child(String($0.offset)), depth + 1, loads) })
            case .tuple(let items, _): return .tuple(try items.enumerated().map { try convert($0.element, child(String($0.offset)), depth + 1, loads) })
            case .set(let box): return .set(try box.items.map { try convert($0, child("?"), depth + 1, loads) })
            case .dict(let box):
                var out: [PickleValue.DictEntry] = []
                out.reserveCapacity(box.keys.count)
                for (k, v) in Swift.zip(box.keys, box.values) {
                    let key = try convert(k, "", depth + 1, loads)
                    let label: String
                    switch key {
                    case .string(let s): label = s
                    case .int(let i): label = String(i)
                    default: label = "?"
                    }
                    // Under a top-level key, only that key's subtree loads.
                    let childLoads = loads || (depth == 0 && stateDictKey != nil && key == .string(stateDictKey!))
                    out.append(.init(key: key, value: try convert(v, child(label), depth + 1, childLoads)))
                }
                return .dict(out)
            case .tensor(let index):
                let t = pickled[index]
                let key = name.isEmpty ? "tensor" : name
                if loads, entries[key] == nil {
                    keys.append(key)
                    let contiguous = isContiguous(t.shape, t.strides)
                    entries[key] = .init(info: TensorInfo(dtype: t.storage.dtype, shape: t.shape),
                                         source: .mapped(TensorLocation(storageByteOffset: try resolve(t.storage, key),
                                                                        elementOffset: t.offset + t.storage.elementOffset,
                                                                        strides: contiguous ? nil : t.strides)))
                }
                return .tensor(key)
            }
        }
        let root = try convert(top, "", 0, stateDictKey == nil)
        // A checkpoint is a dict of tensors (a state dict, or a training checkpoint wrapping one); a bare tensor
        // also loads. A scalar or string root is some other pickle, and "0 tensors loaded" would hide that.
        switch root {
        case .dict, .list, .tuple, .tensor: break
        default:
            throw WeightsError.malformed(file: path, reason: "the pickle holds \(describe(root)), not a checkpoint: a checkpoint is a dict of tensors (a state dict)")
        }
        var warnings: [String] = []
        if !placeholderClasses.isEmpty, let stateDictKey {
            // Every class, up to a bound that only a hostile file reaches (a real checkpoint names a dozen or two).
            let shown = placeholderClasses.prefix(40).map { TerminalText.quoted($0, limit: 120) }.joined(separator: ", ")
            let more = placeholderClasses.count > 40 ? " and \(placeholderClasses.count - 40) more" : ""
            warnings.append("\(path): the training state outside \"\(stateDictKey)\" names \(placeholderClasses.count) class(es) Lapse does not load (\(shown)\(more)); they were kept as inert placeholders, nothing was imported or run")
        }
        return CheckpointFile(path: path, format: .torch, file: file, keys: keys, entries: entries, root: root,
                              stateDictKey: stateDictKey, warnings: warnings)
    }

    /// Refuses a pickle without a dict under `key` at its top level, before anything is walked.
    static func checkStateDict(_ top: Unpickler.Obj, key: String, path: String) throws {
        guard case .dict(let box) = top else {
            throw WeightsError.malformed(file: path, reason: "the pickle holds \(top.kind) at its top level, not a training checkpoint with a \"\(key)\" entry")
        }
        guard let i = box.keys.firstIndex(where: { $0.hashKey == "s" + key }) else {
            let names = box.keys.compactMap { if case .string(let s) = $0 { "\"\(TerminalText.quoted(s, limit: 60))\"" } else { nil } }
            throw WeightsError.malformed(file: path, reason: "the checkpoint has no \"\(key)\" entry (its top-level keys: \(names.prefix(20).joined(separator: ", "))\(names.count > 20 ? ", …" : "")); is it the right file?")
        }
        guard case .dict = box.values[i] else {
            throw WeightsError.malformed(file: path, reason: "\"\(key)\" holds \(box.values[i].kind), not a state dict (a dict of tensors)")
        }
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
        case .placeholder(let c): "an object of class \(c)"
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

extension WeightsError {
    /// The same error with `context` (which tensor, which storage) put before its reason.
    func adding(_ context: String) -> WeightsError {
        switch self {
        case .truncated(let f, let r): .truncated(file: f, reason: context + ": " + r)
        case .malformed(let f, let r): .malformed(file: f, reason: context + ": " + r)
        case .unsupported(let f, let r): .unsupported(file: f, reason: context + ": " + r)
        case .invalidPickle(let f, let r): .invalidPickle(file: f, reason: context + ": " + r)
        default: self
        }
    }
}
