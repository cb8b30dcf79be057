import LapseTensor
import LapseWeights

/// The weight of a linear or convolution layer as the loader chose to keep it (`WeightPrecision`): a float32
/// tensor, or a 16-bit `HalfTensor` (usually a zero-copy view of a float16/bfloat16 checkpoint) widened to float32
/// each time the layer runs. The widened copy lives only for that call, so a model's resident weights are half the
/// size while the GEMM and convolution kernels see the same float32 values they would after widening at load.
public struct LayerWeight: Sendable {
    @usableFromInline
    enum Storage: Sendable {
        case float(Tensor)
        case half(HalfTensor)
    }

    @usableFromInline
    let storage: Storage

    /// A float32 weight.
    public init(_ tensor: Tensor) { storage = .float(tensor) }

    /// A 16-bit weight, widened at use.
    public init(_ half: HalfTensor) { storage = .half(half) }

    /// Size of each dimension, known without widening.
    public var shape: [Int] {
        switch storage {
        case .float(let t): t.shape
        case .half(let h): h.shape
        }
    }

    /// How the weight is held: `.f32`, `.f16` or `.bf16`.
    public var dtype: DType {
        switch storage {
        case .float: .f32
        case .half(let h): h.dtype
        }
    }

    /// Bytes the weight keeps in memory (or in mapped file pages once touched).
    public var residentBytes: Int {
        switch storage {
        case .float(let t): t.count * 4
        case .half(let h): h.byteCount
        }
    }

    /// The weight as float32: the tensor itself, or a fresh widening of the 16-bit data (exact) for this use.
    @inlinable
    public var float: Tensor {
        switch storage {
        case .float(let t): t
        case .half(let h): h.widened()
        }
    }

    /// The same weight under another shape with the same element count (no copy, no widening).
    public func reshaped(_ shape: [Int]) -> LayerWeight {
        switch storage {
        case .float(let t): LayerWeight(t.reshaped(shape))
        case .half(let h): LayerWeight(h.reshaped(shape))
        }
    }
}

extension WeightReader {
    /// How layer weights read through this reader are kept (the weights' `precision`).
    public var precision: WeightPrecision { weights.precision }

    /// The layer weight `name`, which must have exactly `shape`, kept as `precision` says: `.auto` keeps a
    /// float16/bfloat16 tensor of the file as it is, `.bf16` rounds anything else to bfloat16, `.fp32` widens.
    public func layerWeight(_ name: String, _ shape: [Int]) throws -> LayerWeight {
        let actual = try self.shape(name)
        guard actual == shape else { throw wording.wrongShape(name, expected: shape, actual: actual) }
        return try stored(name)
    }

    /// A linear layer's weight `[out, in]` (also accepted as `[out, in, 1, 1]` or `[out, in, 1]`, see
    /// `linearWeight`), kept as `precision` says.
    public func linearLayerWeight(_ name: String, out: Int, in inputs: Int) throws -> LayerWeight {
        if let shape = weights.shape(of: name), shape == [out, inputs, 1, 1] || shape == [out, inputs, 1] {
            return try stored(name).reshaped([out, inputs])
        }
        return try layerWeight(name, [out, inputs])
    }

    private func stored(_ name: String) throws -> LayerWeight {
        switch precision {
        case .fp32:
            return LayerWeight(try weights.tensor(name))
        case .auto:
            if let half = try weights.halfTensor(name) { return LayerWeight(half) }
            return LayerWeight(try weights.tensor(name))
        case .bf16:
            if let half = try weights.halfTensor(name), half.dtype == .bf16 { return LayerWeight(half) }
            return LayerWeight(HalfTensor(rounding: try weights.tensor(name), to: .bf16))
        }
    }
}
