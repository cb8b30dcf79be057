extension Tensor {
    /// A fresh output tensor whose elements are left uninitialised, for kernels that overwrite every element:
    /// skipping `Tensor(zeros:)`'s memset saves one full memory pass on bandwidth-bound ops.
    @inline(__always)
    static func uninitializedOutput(_ shape: [Int]) -> (Tensor, UnsafeMutablePointer<Float>) {
        let storage = TensorStorage(uninitializedCount: Tensor.elementCount(shape))
        return (Tensor(shape: shape, storage: storage), storage.pointer)
    }
}
