import Synchronization

/// Raw float32 memory behind one or more tensors.
///
/// Storage is either owned (allocated 64-byte aligned, large blocks reused through `Kernels.allocate`, released
/// on deinit) or borrowed from another object such as a
/// memory-mapped checkpoint, which `owner` keeps alive so zero-copy views stay valid.
public final class TensorStorage: @unchecked Sendable {
    /// First element.
    public let pointer: UnsafeMutablePointer<Float>
    /// Number of float32 elements.
    public let count: Int
    private let owner: AnyObject?
    private let ownsMemory: Bool

    /// Number of owned storages alive in this process; tests use it to prove streaming stays bounded.
    public static var liveCount: Int { live.load(ordering: .relaxed) }
    private static let live = Atomic<Int>(0)

    /// Allocates `count` zero-filled floats.
    public init(count: Int) {
        precondition(count >= 0, "negative tensor size")
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        let raw = Kernels.allocate(bytes: bytes, zeroed: true)
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        self.count = count
        owner = nil
        ownsMemory = true
        Self.live.add(1, ordering: .relaxed)
    }

    /// Allocates `count` floats without zero-filling them, for outputs the caller overwrites completely (saves a
    /// memory pass per frame on large images).
    public init(uninitializedCount count: Int) {
        precondition(count >= 0, "negative tensor size")
        let raw = Kernels.allocate(bytes: max(count, 1) * MemoryLayout<Float>.stride)
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        self.count = count
        owner = nil
        ownsMemory = true
        Self.live.add(1, ordering: .relaxed)
    }

    /// Wraps memory owned by `owner` (for example a memory-mapped file) without copying.
    public init(borrowing pointer: UnsafeMutablePointer<Float>, count: Int, owner: AnyObject) {
        self.pointer = pointer
        self.count = count
        self.owner = owner
        ownsMemory = false
    }

    deinit {
        if ownsMemory {
            Kernels.releaseFloats(pointer, count)
            Self.live.subtract(1, ordering: .relaxed)
        }
    }
}

/// A dense float32 tensor: a shape and contiguous row-major storage.
///
/// `Tensor` has value semantics: mutation through `withUnsafeMutableBufferPointer` copies the storage first when it
/// is shared, so views made by `reshaped` never see later writes to the original.
public struct Tensor: Sendable {
    /// Size of each dimension, outermost first.
    public private(set) var shape: [Int]
    /// Backing memory; may be larger than `count` when the tensor is a view of a prefix.
    public private(set) var storage: TensorStorage
    /// Element offset of this tensor's first element inside `storage`.
    public private(set) var offset: Int

    /// Number of elements (product of `shape`).
    public var count: Int { Tensor.elementCount(shape) }
    /// Number of dimensions.
    public var rank: Int { shape.count }

    /// A zero-filled tensor.
    public init(zeros shape: [Int]) {
        self.shape = shape
        storage = TensorStorage(count: Tensor.elementCount(shape))
        offset = 0
    }

    /// A tensor holding a copy of `data`, which must have exactly `shape`'s element count.
    public init(shape: [Int], data: [Float]) {
        precondition(Tensor.elementCount(shape) == data.count,
                     "shape \(shape) needs \(Tensor.elementCount(shape)) values, got \(data.count)")
        self.init(zeros: shape)
        data.withUnsafeBufferPointer { src in
            storage.pointer.update(from: src.baseAddress!, count: data.count)
        }
    }

    /// A tensor filled with one value.
    public init(repeating value: Float, shape: [Int]) {
        self.init(zeros: shape)
        if value != 0 { storage.pointer.update(repeating: value, count: count) }
    }

    /// A tensor over existing storage (no copy).
    public init(shape: [Int], storage: TensorStorage, offset: Int = 0) {
        precondition(offset >= 0 && offset + Tensor.elementCount(shape) <= storage.count,
                     "view \(shape) at \(offset) exceeds storage of \(storage.count)")
        self.shape = shape
        self.storage = storage
        self.offset = offset
    }

    /// The same elements under another shape with the same element count (no copy).
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var resolved = newShape
        if let inferred = newShape.firstIndex(of: -1) {
            let known = newShape.enumerated().filter { $0.offset != inferred }.reduce(1) { $0 * $1.element }
            resolved[inferred] = known == 0 ? 0 : count / known
        }
        precondition(Tensor.elementCount(resolved) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(shape: resolved, storage: storage, offset: offset)
    }

    /// Element values as an array (copies).
    public var scalars: [Float] {
        withUnsafeBufferPointer { Array($0) }
    }

    /// Calls `body` with the tensor's elements.
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: storage.pointer + offset, count: count))
    }

    /// Calls `body` with the tensor's elements for writing, copying the storage first if it is shared.
    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (UnsafeMutableBufferPointer<Float>) throws -> R
    ) rethrows -> R {
        if !isKnownUniquelyReferenced(&storage) || offset != 0 || storage.count != count {
            let copy = TensorStorage(count: count)
            copy.pointer.update(from: storage.pointer + offset, count: count)
            storage = copy
            offset = 0
        }
        return try body(UnsafeMutableBufferPointer(start: storage.pointer, count: count))
    }

    /// Product of dimensions; traps on overflow rather than wrapping.
    public static func elementCount(_ shape: [Int]) -> Int {
        shape.reduce(1) { acc, dim in
            precondition(dim >= 0, "negative dimension in \(shape)")
            let (product, overflow) = acc.multipliedReportingOverflow(by: dim)
            precondition(!overflow, "shape \(shape) overflows")
            return product
        }
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String { "Tensor\(shape)" }
}
