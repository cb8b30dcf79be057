import Foundation
import LapseSupport
import LapseTensor

/// Shape and element type of one tensor in a checkpoint, known without reading its data.
public struct TensorInfo: Sendable, Equatable {
    public let dtype: DType
    public let shape: [Int]
    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
}

/// Where a tensor's bytes live inside a mapped file. Validated when the file is opened, so reading can't go out of
/// bounds later.
struct TensorLocation {
    /// Byte offset of element 0 of the underlying storage.
    var storageByteOffset: Int
    /// Offset, in elements, of the tensor's first element inside the storage.
    var elementOffset: Int
    /// Element strides; nil for a contiguous row-major tensor.
    var strides: [Int]?
}

/// A checkpoint opened for reading: safetensors, a PyTorch zip checkpoint, or an ncnn `.param`/`.bin` pair.
///
/// Opening parses only the headers (safetensors JSON, zip directory and `data.pkl`, ncnn param text); tensor data
/// stays in the memory-mapped file until `tensor(_:)` asks for it. float32 data that is contiguous and aligned is
/// returned zero-copy; every other dtype or a strided view is converted into a fresh float32 tensor.
public final class CheckpointFile: @unchecked Sendable {
    /// The container format detected from the file's leading bytes.
    public enum Format: String, Sendable { case safetensors, torch, ncnn }

    enum Source {
        case mapped(TensorLocation)
        case materialized(Tensor)
    }

    struct Entry {
        var info: TensorInfo
        var source: Source
    }

    /// The path the checkpoint was opened from.
    public let path: String
    public let format: Format
    /// Tensor names in file order (safetensors: data order; torch: pickle order, nested names joined by `.`).
    public let keys: [String]
    /// safetensors `__metadata__` (empty for other formats).
    public let metadata: [String: String]
    /// The whole unpickled object of a torch checkpoint (tensors appear as `.tensor(key)`); nil for other formats.
    public let root: PickleValue?
    /// The layer graph of an ncnn model; nil for other formats.
    public let ncnn: NCNNModel?
    /// The top-level key the file was opened for (`open(_:stateDictKey:)`); nil when every tensor loaded.
    public let stateDictKey: String?
    /// Things the user should know that did not stop the load, one line each, naming the file (for example the
    /// classes of a Lightning checkpoint's training state that were kept as inert placeholders). Nodes pass them
    /// to `NodeContext.log`.
    public let warnings: [String]

    let file: MappedFile
    let entries: [String: Entry]

    init(path: String, format: Format, file: MappedFile, keys: [String], entries: [String: Entry],
         metadata: [String: String] = [:], root: PickleValue? = nil, ncnn: NCNNModel? = nil,
         stateDictKey: String? = nil, warnings: [String] = []) {
        self.path = path
        self.format = format
        self.file = file
        self.keys = keys
        self.entries = entries
        self.metadata = metadata
        self.root = root
        self.ncnn = ncnn
        self.stateDictKey = stateDictKey
        self.warnings = warnings
    }

    /// Opens a checkpoint, choosing the reader from the file's magic bytes rather than its extension (`.bin` is
    /// used both by PyTorch and by ncnn). An ncnn `.bin` given directly is paired with the `.param` beside it.
    ///
    /// `stateDictKey` opens a PyTorch training checkpoint (a Lightning `.ckpt`) for the state dict under that
    /// top-level key: only its tensors load (their storages are located when the file opens and read when asked
    /// for; the optimizer state and the rest are never touched), and the training metadata around it may name
    /// classes outside the unpickler's allow-list, which become inert placeholders listed in `warnings`. Globals
    /// that run code are still refused for the whole file, and so is a placeholder under the key. Without it, a
    /// torch file's every tensor loads and any global outside the allow-list is refused. Formats other than
    /// PyTorch hold tensors only and ignore the key.
    public static func open(_ path: String, stateDictKey: String? = nil) throws -> CheckpointFile {
        let file = try MappedFile(path: path)
        let head = file.bytes(0, min(file.count, 512))
        if file.count == 0 { throw WeightsError.unknownFormat(file: path, reason: "file is empty") }
        if head.count >= 4, head[0] == 0x50, head[1] == 0x4B, (head[2] == 3 && head[3] == 4) || (head[2] == 5 && head[3] == 6) {
            return try TorchCheckpoint.open(file, stateDictKey: stateDictKey)
        }
        if head.starts(with: Array("7767517".utf8)) {
            let bin = (path as NSString).deletingPathExtension + ".bin"
            return try NCNNModel.openCheckpoint(paramFile: file, binPath: bin)
        }
        if head.count >= 9, head[8] == UInt8(ascii: "{") {
            return try SafeTensors.open(file)
        }
        if head.count > 262, Array(head[257..<262]) == Array("ustar".utf8) {
            throw WeightsError.unsupported(file: path, reason: "legacy tar-format PyTorch checkpoint (torch < 0.4); re-save it with torch.save in a recent PyTorch")
        }
        if head.count >= 2, head[0] == 0x80, head[1] >= 2, head[1] <= 5 {
            return try TorchCheckpoint.openLegacy(file, stateDictKey: stateDictKey)
        }
        if path.hasSuffix(".bin") {
            let param = (path as NSString).deletingPathExtension + ".param"
            if FileManager.default.fileExists(atPath: param) {
                let paramFile = try MappedFile(path: param)
                if paramFile.bytes(0, min(paramFile.count, 7)).starts(with: Array("7767517".utf8)) {
                    return try NCNNModel.openCheckpoint(paramFile: paramFile, binPath: path)
                }
            }
        }
        throw WeightsError.unknownFormat(file: path, reason: "not safetensors, a PyTorch zip checkpoint or an ncnn model")
    }

    /// Shape of a tensor, or nil when there is no tensor of that name.
    public func shape(of key: String) -> [Int]? { entries[key]?.info.shape }

    /// Stored element type of a tensor, or nil when there is no tensor of that name.
    public func dtype(of key: String) -> DType? { entries[key]?.info.dtype }

    /// Shape and dtype of a tensor.
    public func info(of key: String) -> TensorInfo? { entries[key]?.info }

    /// True when the checkpoint holds a tensor named `key`.
    public func contains(_ key: String) -> Bool { entries[key] != nil }

    /// How many times `tensor(_:)` or `tensor(_:rows:)` has read each key since the file was opened. Lets a caller
    /// prove that a loader which takes one component out of a whole checkpoint (the VAE of an LDM file) never read the
    /// others' data.
    public var readCounts: [String: Int] {
        readLock.lock()
        defer { readLock.unlock() }
        return reads
    }

    // Models read their tensors from several threads; the counts are guarded.
    private let readLock = NSLock()
    private var reads: [String: Int] = [:]

    /// Reads one tensor as float32: zero-copy for aligned contiguous F32, converted otherwise.
    public func tensor(_ key: String) throws -> Tensor {
        guard let entry = entries[key] else {
            throw WeightsError.missingTensor(file: path, name: key, suggestions: closeMatches(for: key, in: keys))
        }
        readLock.lock()
        reads[key, default: 0] += 1
        readLock.unlock()
        switch entry.source {
        case .materialized(let t): return t
        case .mapped(let loc):
            try checkBounds(key, entry.info, loc)
            return read(entry.info, loc)
        }
    }

    /// Reads rows `rows` of a tensor's first dimension as float32, touching only those rows' bytes (zero-copy where
    /// `tensor(_:)` would be): one part of a fused tensor such as the q, k or v third of an `in_proj_weight`, without
    /// converting the other parts of a float16 file.
    public func tensor(_ key: String, rows: Range<Int>) throws -> Tensor {
        guard let entry = entries[key] else {
            throw WeightsError.missingTensor(file: path, name: key, suggestions: closeMatches(for: key, in: keys))
        }
        let shape = entry.info.shape
        guard let first = shape.first, rows.lowerBound >= 0, rows.upperBound <= first else {
            throw WeightsError.shapeMismatch(file: path, name: key, expected: [rows.upperBound] + shape.dropFirst(), actual: shape)
        }
        readLock.lock()
        reads[key, default: 0] += 1
        readLock.unlock()
        let inner = Array(shape.dropFirst())
        switch entry.source {
        case .materialized(let t):
            return Tensor(shape: [rows.count] + inner, storage: t.storage, offset: t.offset + rows.lowerBound * Tensor.elementCount(inner))
        case .mapped(var loc):
            let info = TensorInfo(dtype: entry.info.dtype, shape: [rows.count] + inner)
            loc.elementOffset += rows.lowerBound * (loc.strides?[0] ?? Tensor.elementCount(inner))
            try checkBounds(key, info, loc)
            return read(info, loc)
        }
    }

    /// A float16/bfloat16 tensor (or rows `rows` of its first dimension) as a zero-copy `HalfTensor` over the mapped
    /// file, or nil when it is stored otherwise (float32, a strided view, an odd address, an ncnn or materialised
    /// entry): the caller then reads it with `tensor(_:)`. Counted in `readCounts` like a read.
    public func halfTensor(_ key: String, rows: Range<Int>? = nil) throws -> HalfTensor? {
        guard let entry = entries[key], entry.info.dtype == .f16 || entry.info.dtype == .bf16,
              case .mapped(var loc) = entry.source, loc.strides == nil, UInt16(littleEndian: 1) == 1 else { return nil }
        var info = entry.info
        if let rows {
            let shape = info.shape
            guard let first = shape.first, rows.lowerBound >= 0, rows.upperBound <= first else {
                throw WeightsError.shapeMismatch(file: path, name: key, expected: [rows.upperBound] + shape.dropFirst(), actual: shape)
            }
            let inner = Array(shape.dropFirst())
            info = TensorInfo(dtype: info.dtype, shape: [rows.count] + inner)
            loc.elementOffset += rows.lowerBound * Tensor.elementCount(inner)
        }
        try checkBounds(key, info, loc)
        let start = file.base + (loc.storageByteOffset + loc.elementOffset * 2)
        guard Int(bitPattern: start) % 2 == 0, info.count > 0 else { return nil }
        readLock.lock()
        reads[key, default: 0] += 1
        readLock.unlock()
        return HalfTensor(dtype: info.dtype, shape: info.shape, pointer: start.assumingMemoryBound(to: UInt16.self), owner: file)
    }

    /// Re-checks, before anything is allocated, what each reader validated when it opened the file: every byte the
    /// tensor reads lies inside the file, and a strided view materialises at most `Unpickler.maxExpandedView` more
    /// elements than the bytes it reads hold. A reader bug then surfaces as an error, not a wild read or a huge
    /// allocation.
    private func checkBounds(_ key: String, _ info: TensorInfo, _ loc: TensorLocation) throws {
        func bad() -> WeightsError {
            .malformed(file: path, reason: "tensor \"\(TerminalText.quoted(key, limit: 120))\" of shape \(info.shape) lies outside the file or repeats its data too often")
        }
        guard let n = checkedProduct(info.shape) else { throw bad() }
        if n == 0 { return }
        let size = info.dtype.size
        guard loc.elementOffset >= 0, loc.storageByteOffset >= 0,
              case let (startElements, false) = loc.elementOffset.multipliedReportingOverflow(by: size),
              case let (start, false) = loc.storageByteOffset.addingReportingOverflow(startElements) else { throw bad() }
        var lastElement = n - 1
        if let strides = loc.strides {
            guard strides.count == info.shape.count else { throw bad() }
            lastElement = 0
            for (d, st) in zip(info.shape, strides) {
                guard st >= 0, case let (m, false) = (d - 1).multipliedReportingOverflow(by: st),
                      case let (sum, false) = lastElement.addingReportingOverflow(m) else { throw bad() }
                lastElement = sum
            }
            guard n <= lastElement + 1 || n <= Unpickler.maxExpandedView else { throw bad() }
        }
        guard case let (lastByte, false) = lastElement.multipliedReportingOverflow(by: size),
              case let (spanBytes, false) = lastByte.addingReportingOverflow(size),
              file.contains(offset: start, length: spanBytes) else { throw bad() }
    }

    private func read(_ info: TensorInfo, _ loc: TensorLocation) -> Tensor {
        let n = info.count
        let size = info.dtype.size
        let start = loc.storageByteOffset + loc.elementOffset * size
        if loc.strides == nil {
            let pointer = file.base + start
            if info.dtype == .f32, Int(bitPattern: pointer) % 4 == 0, n > 0, UInt32(littleEndian: 1) == 1 {
                let floats = UnsafeMutableRawPointer(mutating: pointer).assumingMemoryBound(to: Float.self)
                return Tensor(shape: info.shape, storage: TensorStorage(borrowing: floats, count: n, owner: file))
            }
            var t = Tensor(zeros: info.shape)
            t.withUnsafeMutableBufferPointer { dst in
                if n > 0 { info.dtype.convert(pointer, count: n, into: dst.baseAddress!) }
            }
            return t
        }
        // A strided view (e.g. a transposed tensor saved by torch): gather it into contiguous memory, one
        // innermost run at a time.
        let strides = loc.strides!
        let shape = info.shape
        var t = Tensor(zeros: shape)
        guard n > 0 else { return t }
        let rank = shape.count
        let inner = rank == 0 ? 1 : shape[rank - 1]
        let innerStride = rank == 0 ? 0 : strides[rank - 1]
        let rows = n / inner
        t.withUnsafeMutableBufferPointer { dst in
            var index = [Int](repeating: 0, count: max(rank - 1, 0))
            for row in 0..<rows {
                var element = 0
                for d in 0..<index.count { element &+= index[d] &* strides[d] }
                let out = dst.baseAddress! + row * inner
                // Wrapping arithmetic: checkBounds proved the furthest element lies inside the file.
                let first = file.base + (start &+ element &* size)
                if innerStride == 1 {
                    info.dtype.convert(first, count: inner, into: out)
                } else if info.dtype == .f32 {
                    // A transposed float32 tensor: one strided load per element, without a call per element.
                    let step = innerStride &* 4
                    for i in 0..<inner {
                        out[i] = Float(bitPattern: UInt32(littleEndian: first.loadUnaligned(fromByteOffset: i &* step, as: UInt32.self)))
                    }
                } else {
                    for i in 0..<inner { info.dtype.convert(first + i &* innerStride &* size, count: 1, into: out + i) }
                }
                var d = index.count - 1
                while d >= 0 {
                    index[d] += 1
                    if index[d] < shape[d] { break }
                    index[d] = 0
                    d -= 1
                }
            }
        }
        return t
    }
}

/// Up to three names from `candidates` closest to `name`: those sharing its last component, then by edit distance.
func closeMatches(for name: String, in candidates: [String], limit: Int = 3) -> [String] {
    let target = Array(name.utf8)
    let leaf = name.split(separator: ".").last.map(String.init) ?? name
    var scored: [(Int, String)] = []
    for c in candidates {
        let bytes = Array(c.utf8)
        // Edit distance is quadratic; skip it for names so different in length that they can't be close.
        if abs(bytes.count - target.count) > max(8, target.count / 2) && !c.hasSuffix(leaf) { continue }
        var d = LapseSupport.editDistance(target, bytes)
        if c.hasSuffix("." + leaf) || c == leaf { d = min(d, max(1, abs(bytes.count - target.count))) }
        if d <= max(3, target.count / 3) { scored.append((d, c)) }
    }
    return scored.sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }.prefix(limit).map(\.1)
}
