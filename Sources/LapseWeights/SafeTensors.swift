import Foundation
import LapseSupport
import LapseTensor

/// The safetensors format: an 8-byte little-endian header length, a JSON header mapping names to
/// `{dtype, shape, data_offsets}` (offsets relative to the data area after the header), then the raw data.
public enum SafeTensors {
    /// Headers larger than this are refused as hostile (the reference implementation uses the same limit).
    static let maxHeaderBytes = 100_000_000
    /// Most tensors a header may declare: Stable Diffusion checkpoints have 1,000–3,000, the largest LLM shards a
    /// few thousand; the cap keeps a hostile header from costing minutes and gigabytes before it is refused.
    static let maxTensors = 100_000
    /// Most JSON values (commas outside strings) a header may hold: ~10 per tensor plus metadata entries.
    static let maxHeaderValues = 32 * maxTensors

    /// Objects (`{`) and separators (`,`) outside strings, counted in one pass without building anything.
    static func scanCounts(_ bytes: UnsafeRawBufferPointer) -> (objects: Int, separators: Int) {
        var objects = 0, separators = 0
        var inString = false, escaped = false
        for b in bytes {
            if inString {
                if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
            } else if b == UInt8(ascii: "\"") {
                inString = true
            } else if b == UInt8(ascii: "{") {
                objects += 1
            } else if b == UInt8(ascii: ",") {
                separators += 1
            }
        }
        return (objects, separators)
    }

    static func open(_ file: MappedFile) throws -> CheckpointFile {
        let path = file.path
        guard file.count >= 8 else { throw WeightsError.truncated(file: path, reason: "shorter than the 8-byte header length") }
        let declared = file.u64(0)
        guard declared <= UInt64(file.count - 8) else {
            throw WeightsError.truncated(file: path, reason: "header claims \(declared) bytes but the file has only \(file.count - 8) after the length")
        }
        let headerLength = Int(declared)
        guard headerLength <= maxHeaderBytes else {
            throw WeightsError.malformed(file: path, reason: "header of \(headerLength) bytes exceeds the \(maxHeaderBytes)-byte limit")
        }
        let header = file.bytes(8, headerLength)
        // Count before parsing: a parse tree costs tens of bytes per value, so a header packed with a million empty
        // tensors is refused by this linear scan, not after building the tree.
        let counts = scanCounts(header)
        guard counts.objects <= maxTensors + 2 else {
            throw WeightsError.malformed(file: path, reason: "header declares \(counts.objects - 2) or more tensors; at most \(maxTensors) are allowed (real checkpoints have a few thousand)")
        }
        guard counts.separators <= maxHeaderValues else {
            throw WeightsError.malformed(file: path, reason: "header has more than \(maxHeaderValues) values (\(counts.separators) commas outside strings)")
        }
        // The strict parser refuses duplicate keys: two tensors of one name would otherwise leave whichever came last.
        let json: JSONValue
        do {
            json = try JSONParser.parse(Data(header))
        } catch {
            throw WeightsError.malformed(file: path, reason: "header is not valid JSON: \(TerminalText.quoted(error.message)) at line \(error.location.line), column \(error.location.column)")
        }
        guard case .object(let members) = json.kind else {
            throw WeightsError.malformed(file: path, reason: "header is a JSON \(json.typeName), not an object")
        }
        // The scan above allows for the root and `__metadata__` objects; count the tensors exactly now.
        let tensorCount = members.count - (members.contains { $0.key == "__metadata__" } ? 1 : 0)
        guard tensorCount <= maxTensors else {
            throw WeightsError.malformed(file: path, reason: "header declares \(tensorCount) tensors; at most \(maxTensors) are allowed (real checkpoints have a few thousand)")
        }
        let dataStart = 8 + headerLength
        let dataSize = file.count - dataStart
        var metadata: [String: String] = [:]
        var found: [(name: String, begin: Int, end: Int, info: TensorInfo)] = []
        found.reserveCapacity(members.count)
        for (name, value) in members {
            let quoted = "\"" + TerminalText.quoted(name, limit: 120) + "\""
            if name == "__metadata__" {
                guard case .object(let entries) = value.kind else {
                    throw WeightsError.malformed(file: path, reason: "__metadata__ is a \(value.typeName), not an object")
                }
                for (k, v) in entries {
                    guard case .string(let text) = v.kind else {
                        throw WeightsError.malformed(file: path, reason: "__metadata__ value for \"\(TerminalText.quoted(k, limit: 120))\" is a \(v.typeName), not a string")
                    }
                    metadata[k] = text
                }
                continue
            }
            guard case .object = value.kind else {
                throw WeightsError.malformed(file: path, reason: "entry \(quoted) is a \(value.typeName), not an object")
            }
            guard case .string(let dtypeName)? = value["dtype"]?.kind else {
                throw WeightsError.malformed(file: path, reason: "tensor \(quoted) has no dtype string")
            }
            guard let dtype = DType(rawValue: dtypeName) else { throw WeightsError.unknownDType(file: path, dtype: TerminalText.escaped(dtypeName)) }
            guard case .array(let shapeItems)? = value["shape"]?.kind else {
                throw WeightsError.malformed(file: path, reason: "tensor \(quoted) has no shape array")
            }
            let shape = try shapeItems.map { item -> Int in
                guard case .number(_, let integer?) = item.kind, integer >= 0 else {
                    throw WeightsError.malformed(file: path, reason: "tensor \(quoted) has an invalid dimension \(item.jsonText.prefix(40)) in its shape")
                }
                return integer
            }
            guard case .array(let offsets)? = value["data_offsets"]?.kind, offsets.count == 2,
                  case .number(_, let begin?) = offsets[0].kind, case .number(_, let end?) = offsets[1].kind else {
                throw WeightsError.malformed(file: path, reason: "tensor \(quoted) needs data_offsets [begin, end] of integers")
            }
            guard begin >= 0, begin <= end, end <= dataSize else {
                throw WeightsError.malformed(file: path, reason: "tensor \(quoted) data_offsets [\(begin), \(end)] lie outside the \(dataSize)-byte data area")
            }
            guard let count = checkedProduct(shape), case let (bytes, false) = count.multipliedReportingOverflow(by: dtype.size) else {
                throw WeightsError.malformed(file: path, reason: "tensor \(quoted) has an absurd shape \(shape)")
            }
            guard bytes == end - begin else {
                throw WeightsError.malformed(file: path, reason: "tensor \(quoted) of shape \(shape) and dtype \(dtype) needs \(bytes) bytes but data_offsets span \(end - begin)")
            }
            found.append((name, begin, end, TensorInfo(dtype: dtype, shape: shape)))
        }
        found.sort { $0.begin != $1.begin ? $0.begin < $1.begin : $0.end < $1.end }
        for i in found.indices.dropFirst() where found[i].begin < found[i - 1].end {
            throw WeightsError.malformed(file: path, reason: "tensors \"\(found[i - 1].name)\" and \"\(found[i].name)\" overlap in the data area")
        }
        var entries: [String: CheckpointFile.Entry] = [:]
        for t in found {
            entries[t.name] = .init(info: t.info, source: .mapped(TensorLocation(storageByteOffset: dataStart + t.begin, elementOffset: 0, strides: nil)))
        }
        return CheckpointFile(path: path, format: .safetensors, file: file, keys: found.map(\.name), entries: entries,
                              metadata: metadata)
    }

    /// Writes tensors to a safetensors file atomically (temp file + rename), in the given order, converting to
    /// `dtype` (F32, F16 or BF16). With `replacing` false an existing file at `path` is an error and stays as it is
    /// (a saver's `overwrite = false`, or a name `{n}` picked).
    public static func write(_ tensors: [(name: String, tensor: Tensor)], metadata: [String: String] = [:],
                             dtype: DType = .f32, to path: String, replacing: Bool = true) throws {
        guard [.f32, .f16, .bf16].contains(dtype) else {
            throw WeightsError.unsupported(file: path, reason: "the safetensors writer stores F32, F16 or BF16, not \(dtype)")
        }
        var seen = Set<String>()
        var header = "{"
        var parts: [String] = []
        if !metadata.isEmpty {
            let items = metadata.keys.sorted().map { "\(JSONValue.quote($0)):\(JSONValue.quote(metadata[$0]!))" }
            parts.append("\"__metadata__\":{\(items.joined(separator: ","))}")
        }
        var offset = 0
        for (name, tensor) in tensors {
            guard name != "__metadata__", seen.insert(name).inserted else {
                throw WeightsError.malformed(file: path, reason: "tensor name \"\(name)\" is duplicated or reserved")
            }
            let bytes = tensor.count * dtype.size
            parts.append("\(JSONValue.quote(name)):{\"dtype\":\"\(dtype.rawValue)\",\"shape\":[\(tensor.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}")
            offset += bytes
        }
        header += parts.joined(separator: ",") + "}"
        var headerBytes = Array(header.utf8)
        // Pad with spaces so the data area starts 8-byte aligned, which keeps F32 reads zero-copy.
        while (8 + headerBytes.count) % 8 != 0 { headerBytes.append(UInt8(ascii: " ")) }
        try AtomicFile.write(to: URL(fileURLWithPath: path), replacing: replacing) { temp in
            do {
                guard FileManager.default.createFile(atPath: temp.path, contents: nil) else {
                    throw WeightsError.io(file: path, reason: "cannot create a temporary file next to it")
                }
                let handle = try FileHandle(forWritingTo: temp)
                defer { try? handle.close() }
                var prefix = Data(count: 8)
                prefix.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(headerBytes.count).littleEndian, as: UInt64.self) }
                try handle.write(contentsOf: prefix + Data(headerBytes))
                for (_, tensor) in tensors {
                    try tensor.withUnsafeBufferPointer { src in
                        switch dtype {
                        case .f32:
                            try handle.write(contentsOf: Data(buffer: src))
                        default:
                            // Convert in bounded chunks so writing a large tensor never doubles its memory.
                            let chunk = 1 << 20
                            var start = 0
                            var out = [UInt16](repeating: 0, count: min(chunk, src.count))
                            while start < src.count {
                                let n = min(chunk, src.count - start)
                                for i in 0..<n {
                                    let f = src[start + i]
                                    out[i] = dtype == .f16 ? floatToHalf(f) : floatToBFloat16(f)
                                }
                                try out.withUnsafeBytes { try handle.write(contentsOf: Data($0.prefix(n * 2))) }
                                start += n
                            }
                        }
                    }
                }
                try handle.synchronize()
            } catch let error as WeightsError {
                throw error
            } catch {
                throw WeightsError.io(file: path, reason: "write failed: \(AtomicFile.systemReason(error))")
            }
        }
    }

    /// Writes a `Weights` collection (every tensor is read, converted and written in key order).
    public static func write(_ weights: Weights, metadata: [String: String] = [:], dtype: DType = .f32, to path: String,
                             replacing: Bool = true) throws {
        var list: [(name: String, tensor: Tensor)] = []
        for key in weights.keys { list.append((key, try weights.tensor(key))) }
        try write(list, metadata: metadata, dtype: dtype, to: path, replacing: replacing)
    }
}

/// binary32 → bfloat16 with round-to-nearest-even (NaN kept quiet).
func floatToBFloat16(_ f: Float) -> UInt16 {
    let bits = f.bitPattern
    if f.isNaN { return UInt16(bits >> 16) | 0x40 }
    let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
    return UInt16(rounded >> 16)
}
