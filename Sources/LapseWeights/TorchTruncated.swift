import LapseSupport

/// Where a torch zip checkpoint that lost its end (an interrupted download or copy) was cut: the zip directory is
/// written last, so it is the first thing such a file loses, and the generic "no end-of-directory record" says
/// nothing useful about a 25 GB file. `torch.save` writes `data.pkl` first, then each storage `data/KEY` with its
/// size only in a data descriptor after the bytes; the pickle gives every storage's size, so the local headers can
/// be walked (one page each, nothing read in between) up to the entry the file ends in.
extension TorchCheckpoint {
    private static let localHeader: UInt32 = 0x0403_4B50
    private static let descriptor: UInt32 = 0x0807_4B50
    /// How far to look for the data descriptor of a small entry whose size the pickle does not give.
    private static let descriptorSearch = 1 << 16

    /// The error naming the storage and tensor a truncated zip checkpoint ends in; nil when the file does not start
    /// like one `torch.save` wrote, so the caller keeps its generic message.
    static func diagnoseTruncatedZip(_ file: MappedFile) -> WeightsError? {
        let path = file.path, n = file.count
        guard let first = local(file, at: 0), first.name == "data.pkl" || first.name.hasSuffix("/data.pkl") else { return nil }
        let prefix = String(first.name.dropLast("data.pkl".count))
        let advice = "; the file is incomplete (an interrupted download or copy): download or copy it again"
        func cut(_ reason: String) -> WeightsError { .truncated(file: path, reason: "it ends at byte \(n), " + reason + advice) }
        guard first.start <= n else { return cut("inside the zip header of data.pkl") }

        // Sizes of the storage entries, from the persistent ids.
        let reference = zipStorageReference(path)
        var sizes: [String: Int] = [:]
        var unpickler = Unpickler(path: path, data: file.bytes(first.start, n - first.start), placeholders: true) { pid in
            let storage = try reference(pid)
            let (bytes, overflow) = storage.numel.multipliedReportingOverflow(by: storage.dtype.size)
            if !overflow { sizes[prefix + "data/" + storage.key] = max(sizes[prefix + "data/" + storage.key] ?? 0, bytes) }
            return storage
        }
        let top: Unpickler.Obj
        do {
            top = try unpickler.load()
        } catch let error as WeightsError {
            switch error {
            case .forbiddenGlobal: return error  // a hostile file stays refused for what it is
            case .truncated: return cut("inside data.pkl (the description of the tensors), before any tensor data")
            default: return nil
            }
        } catch {
            return nil
        }
        sizes[first.name] = first.size ?? unpickler.end

        /// The first tensor on storage `key`, by its dotted name: a walk of the whole object that stops there.
        func tensorName(on key: String) -> String? {
            struct Found: Error { let name: String }
            do {
                _ = try build(file, top: top, pickled: unpickler.tensors, nodeLimit: unpickler.elementLimit) { storage, name in
                    if storage.key == key { throw Found(name: name) }
                    return 0  // never read: the walk ends at the tensor sought, or the file is refused anyway
                }
            } catch let found as Found {
                return found.name
            } catch {}
            return nil
        }
        func inside(_ name: String, start: Int, size: Int?) -> WeightsError {
            let span = size.map { ", which needs bytes \(start)..<\(start + $0)" } ?? ""
            if name.hasPrefix(prefix + "data/") {
                let key = String(name.dropFirst(prefix.count + 5))
                let tensor = tensorName(on: key).map { " (tensor \"\(TerminalText.quoted($0, limit: 160))\")" } ?? ""
                return cut("inside the data of storage \"\(TerminalText.quoted(key, limit: 60))\"\(tensor)\(span)")
            }
            if name == first.name { return cut("inside data.pkl\(span)") }
            return cut("inside the zip entry \"\(TerminalText.quoted(name, limit: 120))\"\(span), after the tensor data it had")
        }

        var p = 0
        while let h = local(file, at: p) {
            guard h.start <= n else { return inside(h.name, start: h.start, size: nil) }
            let size: Int
            if let s = h.size ?? sizes[h.name] {
                size = s
            } else if let s = descriptorDistance(file, from: h.start) {
                size = s
            } else {
                // No descriptor within reach: the file ends inside this entry, or it is not one torch wrote.
                return n - h.start < descriptorSearch ? inside(h.name, start: h.start, size: nil) : nil
            }
            guard size <= n - h.start else { return inside(h.name, start: h.start, size: size) }
            var q = h.start + size
            if h.flags & 8 != 0 {
                // Descriptor: optional signature, CRC-32, then both sizes in 4 bytes each (8 each in ZIP64).
                if file.contains(offset: q, length: 4), file.u32(q) == descriptor { q += 4 }
                if file.contains(offset: q, length: 12), Int(file.u32(q + 4)) == size, Int(file.u32(q + 8)) == size {
                    q += 12
                } else if file.contains(offset: q, length: 20), file.u64(q + 4) == UInt64(size), file.u64(q + 12) == UInt64(size) {
                    q += 20
                } else if n - q < 20 {
                    return cut("just after the data of \"\(TerminalText.quoted(h.name, limit: 120))\", before the zip directory")
                } else {
                    return nil  // sizes that do not match the pickle: not a file this walk understands
                }
            }
            p = q
        }
        // Every entry is whole: the cut is in the central directory that follows them.
        return cut("inside the zip directory after the last entry (every entry's data is present, the index of the archive is not)")
    }

    /// A local file header: the entry's name, flags, its size when the header gives it, and where its data starts.
    private static func local(_ file: MappedFile, at p: Int) -> (name: String, flags: Int, size: Int?, start: Int)? {
        guard file.contains(offset: p, length: 30), file.u32(p) == localHeader, file.u16(p + 8) == 0 else { return nil }
        let flags = Int(file.u16(p + 6)), compressed = file.u32(p + 18)
        let nameLength = Int(file.u16(p + 26)), extraLength = Int(file.u16(p + 28))
        guard file.contains(offset: p + 30, length: nameLength) else { return nil }
        let name = String(decoding: file.bytes(p + 30, nameLength), as: UTF8.self)
        let sized = flags & 8 == 0 && compressed != 0xFFFF_FFFF
        return (name, flags, sized ? Int(compressed) : nil, p + 30 + nameLength + extraLength)
    }

    /// The size of an entry starting at `start` whose data descriptor (with signature) lies within
    /// `descriptorSearch` bytes: the first signature whose size fields equal the distance to it.
    private static func descriptorDistance(_ file: MappedFile, from start: Int) -> Int? {
        let end = min(file.count, start + descriptorSearch)
        var q = start
        while q + 4 <= end {
            if file.u32(q) == descriptor {
                let distance = q - start
                if file.contains(offset: q, length: 16), Int(file.u32(q + 8)) == distance, Int(file.u32(q + 12)) == distance { return distance }
                if file.contains(offset: q, length: 24), file.u64(q + 8) == UInt64(distance), file.u64(q + 16) == UInt64(distance) { return distance }
            }
            q += 1
        }
        return nil
    }
}
