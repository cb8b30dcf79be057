import LapseTensor

/// How a loader keeps a model's layer weights in memory (the `precision` param of the loader nodes).
///
/// Computation is float32 in every case: a 16-bit weight is widened to float32 per layer when the layer runs (Debian's
/// OpenBLAS 0.3.21 exports no `cblas_sbgemm`, so there is no bf16 GEMM to call). Widening float16 or bfloat16 to
/// float32 is exact, so keeping a half file's tensors as they are stored changes no output.
public enum WeightPrecision: String, Sendable, CaseIterable, CustomStringConvertible {
    /// Keep a float16/bfloat16 file's layer weights in 16 bits (zero-copy in the mapped file; exact); float32 files
    /// stay float32.
    case auto
    /// Widen everything to float32 when the model loads (the behaviour before half storage existed).
    case fp32
    /// Store layer weights as bfloat16 whatever the file holds (float32 files are rounded: half the memory, lossy).
    case bf16

    /// The values a loader's `precision` param accepts.
    public static let parameterValues: [String] = allCases.map(\.rawValue)

    public var description: String { rawValue }
}

/// A tensor kept as 16-bit floats (`DType.f16` or `.bf16`): either a zero-copy view into a memory-mapped checkpoint
/// (clean, file-backed pages the kernel can drop under pressure) or an owned buffer (`init(rounding:to:)`).
///
/// Layers widen it to float32 when they run (`widen(into:)`, `widened()`); the bits are never changed.
public struct HalfTensor: @unchecked Sendable {
    /// `.f16` or `.bf16`.
    public let dtype: DType
    /// Size of each dimension, outermost first.
    public let shape: [Int]
    /// First element (2-byte aligned, little-endian).
    let pointer: UnsafePointer<UInt16>
    /// Keeps the memory alive: the mapped file or an owned `HalfBuffer`.
    let owner: AnyObject

    /// Number of elements.
    public var count: Int { Tensor.elementCount(shape) }
    /// Bytes the 16-bit data takes.
    public var byteCount: Int { count * 2 }

    init(dtype: DType, shape: [Int], pointer: UnsafePointer<UInt16>, owner: AnyObject) {
        precondition(dtype == .f16 || dtype == .bf16, "HalfTensor holds F16 or BF16, not \(dtype)")
        self.dtype = dtype
        self.shape = shape
        self.pointer = pointer
        self.owner = owner
    }

    /// Rounds a float32 tensor to `dtype` (`.f16` or `.bf16`, round to nearest even) into an owned buffer.
    public init(rounding tensor: Tensor, to dtype: DType) {
        precondition(dtype == .f16 || dtype == .bf16, "HalfTensor holds F16 or BF16, not \(dtype)")
        let buffer = HalfBuffer(count: tensor.count)
        tensor.withUnsafeBufferPointer { src in
            for i in 0..<src.count {
                buffer.pointer[i] = dtype == .f16 ? floatToHalf(src[i]) : floatToBFloat16(src[i])
            }
        }
        self.init(dtype: dtype, shape: tensor.shape, pointer: UnsafePointer(buffer.pointer), owner: buffer)
    }

    /// The same elements under another shape with the same element count (no copy).
    public func reshaped(_ newShape: [Int]) -> HalfTensor {
        precondition(Tensor.elementCount(newShape) == count, "cannot reshape \(shape) to \(newShape)")
        return HalfTensor(dtype: dtype, shape: newShape, pointer: pointer, owner: owner)
    }

    /// Writes the `count` elements widened to float32 (exact) to `dst`.
    public func widen(into dst: UnsafeMutablePointer<Float>) {
        let n = count
        let src = pointer
        switch dtype {
        case .bf16:
            for i in 0..<n { dst[i] = Float(bitPattern: UInt32(UInt16(littleEndian: src[i])) << 16) }
        default:
            for i in 0..<n { dst[i] = halfToFloat(UInt16(littleEndian: src[i])) }
        }
    }

    /// A fresh float32 tensor with the widened elements (uninitialised storage, then every element written).
    public func widened() -> Tensor {
        let storage = TensorStorage(uninitializedCount: count)
        if count > 0 { widen(into: storage.pointer) }
        return Tensor(shape: shape, storage: storage)
    }
}

/// Owned 16-bit storage of a `HalfTensor`.
final class HalfBuffer {
    let pointer: UnsafeMutablePointer<UInt16>
    init(count: Int) {
        pointer = .allocate(capacity: max(count, 1))
    }
    deinit { pointer.deallocate() }
}
