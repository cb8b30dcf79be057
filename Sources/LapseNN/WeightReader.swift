import LapseTensor
import LapseWeights

/// How a model family words a missing or mis-shaped weight: each family keeps its own error type (and so its
/// messages), while the reading itself is written once in `WeightReader`.
public protocol WeightErrorWording: Sendable {
    /// The error for a tensor `name` that `weights` does not hold.
    func missing(_ name: String, in weights: Weights) -> any Error
    /// The error for a tensor `name` whose shape is `actual` where the model needs `expected`.
    func wrongShape(_ name: String, expected: [Int], actual: [Int]) -> any Error
}

/// Reads a model's tensors by name with the shape its configuration implies, in the words of the model's family
/// (`WeightErrorWording`). Every model in Lapse (upscalers, diffusion, StreamingT2V) builds its layers through this
/// reader; lazy entries of `Weights` are only read when a layer asks for them.
public struct WeightReader: Sendable {
    /// The tensors being read.
    public let weights: Weights
    /// The family's error vocabulary.
    public let wording: any WeightErrorWording

    /// A reader over `weights` that reports failures with `wording`.
    public init(_ weights: Weights, wording: any WeightErrorWording) {
        self.weights = weights
        self.wording = wording
    }

    /// True when a tensor `name` exists.
    public func contains(_ name: String) -> Bool { weights.contains(name) }

    /// The shape of `name` without reading it, or the family's "missing" error.
    public func shape(_ name: String) throws -> [Int] {
        guard let shape = weights.shape(of: name) else { throw wording.missing(name, in: weights) }
        return shape
    }

    /// The tensor `name` whatever its shape (the caller checks what it needs).
    public func tensor(_ name: String) throws -> Tensor {
        _ = try shape(name)
        return try weights.tensor(name)
    }

    /// The tensor `name`, which must have exactly `shape`; the shape is checked before anything is read.
    public func callAsFunction(_ name: String, _ shape: [Int]) throws -> Tensor {
        let actual = try self.shape(name)
        guard actual == shape else { throw wording.wrongShape(name, expected: shape, actual: actual) }
        return try weights.tensor(name)
    }

    /// The tensor `name` if present, which must then have exactly `shape`.
    public func optional(_ name: String, _ shape: [Int]) throws -> Tensor? {
        guard contains(name) else { return nil }
        return try self(name, shape)
    }

    /// A linear weight `[out, in]`, also accepted as a 1×1 convolution `[out, in, 1, 1]` (how LDM stores the VAE's
    /// attention projections and how SD1.x stores `proj_in`/`proj_out`) or a width-1 `Conv1d` `[out, in, 1]` (how
    /// MS-Vid2Vid-XL stores its temporal transformers' `proj_in`/`proj_out`), returned as `[out, in]`.
    public func linearWeight(_ name: String, out: Int, in inputs: Int) throws -> Tensor {
        if let shape = weights.shape(of: name), shape == [out, inputs, 1, 1] || shape == [out, inputs, 1] {
            return try weights.tensor(name).reshaped([out, inputs])
        }
        return try self(name, [out, inputs])
    }

    /// Sorted distinct integers `N` of names `prefix.N` and `prefix.N.…` (the indices of a PyTorch `ModuleList` or
    /// `Sequential`, which may have gaps where a child holds no weights).
    public func indices(under prefix: String) -> [Int] {
        var found = Set<Int>()
        let marker = prefix + "."
        for name in weights.keys where name.hasPrefix(marker) {
            if let n = Int(name.dropFirst(marker.count).prefix { $0 != "." }) { found.insert(n) }
        }
        return found.sorted()
    }

    /// Number of consecutive children `prefix.0.…`, `prefix.1.…`, … (a `ModuleList`'s length).
    public func sequenceLength(_ prefix: String) -> Int {
        let marker = prefix + "."
        var found = Set<Int>()
        for name in weights.keys where name.hasPrefix(marker) {
            let rest = name.dropFirst(marker.count)
            if let dot = rest.firstIndex(of: "."), let n = Int(rest[..<dot]) { found.insert(n) }
        }
        var n = 0
        while found.contains(n) { n += 1 }
        return n
    }
}
