import LapseSupport

/// PyTorch's legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`) format: five pickles in a row — magic
/// number, protocol version, system info, the object, the list of storage keys — followed by each storage as an
/// 8-byte element count and its raw bytes. Storages are located by walking those headers; their data stays mapped.
extension TorchCheckpoint {
    static let legacyMagic: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]  // 0x1950a86a20f9469cfc6c

    static func openLegacy(_ file: MappedFile, stateDictKey: String? = nil) throws -> CheckpointFile {
        let path = file.path
        var pos = 0
        var objectElementLimit = 0
        var storages: [String: PickledStorage] = [:]
        let noStorages: (Unpickler.Obj) throws -> PickledStorage = { _ in
            throw WeightsError.invalidPickle(file: path, reason: "storage reference outside the object pickle")
        }
        var placeholderClasses: [String] = []
        func next(_ persistentLoad: ((Unpickler.Obj) throws -> PickledStorage)? = nil) throws -> (Unpickler.Obj, [PickledTensor]) {
            guard pos < file.count else { throw WeightsError.truncated(file: path, reason: "legacy checkpoint ends after \(pos) bytes") }
            // Placeholders only in the object pickle, and only when one top-level key is asked for.
            var u = Unpickler(path: path, data: file.bytes(pos, file.count - pos), placeholders: persistentLoad != nil && stateDictKey != nil,
                              persistentLoad: persistentLoad ?? noStorages)
            let v = try u.load()
            if persistentLoad != nil {
                objectElementLimit = u.elementLimit  // the object pickle's own bound
                placeholderClasses = u.placeholderClasses
            }
            pos += u.end
            return (v, u.tensors)
        }
        guard case .bigInt(let magic) = try next().0, magic == legacyMagic else {
            throw WeightsError.unknownFormat(file: path, reason: "pickle without PyTorch's legacy magic number")
        }
        guard case .int(let version) = try next().0, version == 1001 else {
            throw WeightsError.unsupported(file: path, reason: "legacy PyTorch checkpoint with an unknown protocol version")
        }
        if case .dict(let info) = try next().0, let i = info.keys.firstIndex(where: { $0.hashKey == "slittle_endian" }),
           case .bool(false) = info.values[i] {
            throw WeightsError.unsupported(file: path, reason: "big-endian checkpoint")
        }
        let (top, tensors) = try next { pid in
            guard case .tuple(let t, _) = pid, t.count >= 6, case .string("storage") = t[0] else {
                throw WeightsError.invalidPickle(file: path, reason: "persistent id is not ('storage', type, key, location, size, view)")
            }
            let dtype = try storageDType(t[1], path)
            guard case .string(let key) = t[2], case .int(let numel) = t[4], numel >= 0 else {
                throw WeightsError.invalidPickle(file: path, reason: "storage id has no key or size")
            }
            if storages[key] == nil { storages[key] = PickledStorage(key: key, dtype: dtype, numel: numel) }
            guard storages[key]!.dtype == dtype else {
                throw WeightsError.malformed(file: path, reason: "storage \"\(key)\" is used with two dtypes")
            }
            // A view into the root storage: (view_key, offset, size), all in elements.
            if case .tuple(let view, _) = t[5] {
                guard view.count == 3, case .int(let offset) = view[1], case .int(let size) = view[2], offset >= 0, size >= 0,
                      offset <= numel, size <= numel - offset else {
                    throw WeightsError.malformed(file: path, reason: "storage view of \"\(key)\" lies outside it")
                }
                return PickledStorage(key: key, dtype: dtype, numel: size, elementOffset: offset)
            }
            return storages[key]!
        }
        guard case .list(let box) = try next().0 else {
            throw WeightsError.malformed(file: path, reason: "legacy checkpoint has no storage key list")
        }
        // The storages follow the pickles, each an element count and its bytes. The walk reads one header per
        // storage (a page each), never the data in between.
        var offsets: [String: Int] = [:]
        var cut: (key: String, reason: String)?
        for item in box.items {
            guard case .string(let key) = item else { throw WeightsError.malformed(file: path, reason: "storage key is not a string") }
            guard file.contains(offset: pos, length: 8) else {
                cut = (key, "it ends at byte \(file.count), before storage \"\(TerminalText.quoted(key, limit: 60))\"")
                break
            }
            let count = file.u64(pos)
            let size = storages[key]?.dtype.size ?? 1
            guard count <= UInt64(file.count), case let (bytes, false) = Int(count).multipliedReportingOverflow(by: size),
                  file.contains(offset: pos + 8, length: bytes) else {
                cut = (key, "storage \"\(TerminalText.quoted(key, limit: 60))\" of \(count) elements extends past the end of the file (byte \(file.count))")
                break
            }
            if let s = storages[key], Int(count) < s.numel {
                throw WeightsError.malformed(file: path, reason: "storage \"\(key)\" holds \(count) elements but the pickle needs \(s.numel)")
            }
            offsets[key] = pos + 8
            pos += 8 + bytes
        }
        if let cut {
            // Name the tensor the cut falls in: a walk of the whole object that stops at the first tensor on it.
            let advice = "; the file is incomplete (an interrupted download or copy): download or copy it again"
            _ = try build(file, top: top, pickled: tensors, nodeLimit: objectElementLimit) { storage, tensor in
                if storage.key == cut.key {
                    throw WeightsError.truncated(file: path, reason: cut.reason + " (tensor \"\(TerminalText.quoted(tensor, limit: 160))\")" + advice)
                }
                return offsets[storage.key] ?? 0  // never read: the file is refused below if not here
            }
            throw WeightsError.truncated(file: path, reason: cut.reason + advice)
        }
        for key in storages.keys where offsets[key] == nil {
            throw WeightsError.truncated(file: path, reason: "storage \"\(key)\" is not in the file")
        }
        return try build(file, top: top, pickled: tensors, nodeLimit: objectElementLimit, stateDictKey: stateDictKey,
                         placeholderClasses: placeholderClasses) { storage, _ in offsets[storage.key]! }
    }
}
