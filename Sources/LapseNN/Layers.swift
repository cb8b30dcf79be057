import LapseTensor
import LapseWeights

/// Whether a layer reads a bias: PyTorch modules built with `bias=False` have none, others must have one, and a few
/// loaders accept either.
public enum BiasPresence: Sendable {
    /// `prefix + "bias"` must exist.
    case required
    /// Used when the file has it.
    case ifPresent
    /// Never read, even if the file has one.
    case none
}

/// A fully connected layer (`torch.nn.Linear`): `y = x Wᵀ + b` over the last dimension.
public struct LinearLayer: Sendable {
    /// `[out, in]`, as the loader chose to keep it (float32 or 16-bit, see `LayerWeight`).
    public let storedWeight: LayerWeight
    /// `[out]`, if the layer has a bias.
    public let bias: Tensor?

    /// From tensors already in hand.
    public init(weight: Tensor, bias: Tensor?) {
        self.init(weight: LayerWeight(weight), bias: bias)
    }

    /// From a weight kept as float32 or 16-bit.
    public init(weight: LayerWeight, bias: Tensor?) {
        storedWeight = weight
        self.bias = bias
    }

    /// Reads `prefix + "weight"` (`[out, in]`, or a 1×1 convolution / width-1 Conv1d of it, see
    /// `WeightReader.linearWeight`), kept as the reader's `precision` says, and, per `bias`, `prefix + "bias"` `[out]`.
    public init(_ read: WeightReader, _ prefix: String, in inputs: Int, out: Int, bias: BiasPresence = .required) throws {
        storedWeight = try read.linearLayerWeight(prefix + "weight", out: out, in: inputs)
        switch bias {
        case .required: self.bias = try read(prefix + "bias", [out])
        case .ifPresent: self.bias = try read.optional(prefix + "bias", [out])
        case .none: self.bias = nil
        }
    }

    /// `[out, in]` as float32 (a fresh widening when the layer keeps 16-bit weights).
    public var weight: Tensor { storedWeight.float }

    /// Input features.
    public var inFeatures: Int { storedWeight.shape[1] }
    /// Output features.
    public var outFeatures: Int { storedWeight.shape[0] }

    @inlinable
    public func callAsFunction(_ x: Tensor) -> Tensor { linear(x, weight: storedWeight.float, bias: bias) }
}

/// A 2-D convolution (`torch.nn.Conv2d`) with PyTorch weights `[out, in/groups, k, k]`, zero padding (by default
/// "same" for odd kernels: k/2), optional bias and a fused activation.
public struct Conv2DLayer: Sendable {
    /// `[out, in/groups, k, k]`, as the loader chose to keep it (float32 or 16-bit, see `LayerWeight`).
    public let storedWeight: LayerWeight
    public let bias: Tensor?
    public let stride: Int
    /// Padding of the width, and of the height unless `verticalPadding` is set.
    public let padding: Int
    /// Padding of the height when it differs from the width's (MS-Vid2Vid-XL's downsamplers pad (2, 1)).
    public let verticalPadding: Int?
    public let groups: Int

    /// From tensors already in hand; `padding` nil is k/2.
    public init(weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int? = nil, verticalPadding: Int? = nil,
                groups: Int = 1) {
        self.init(weight: LayerWeight(weight), bias: bias, stride: stride, padding: padding,
                  verticalPadding: verticalPadding, groups: groups)
    }

    /// From a weight kept as float32 or 16-bit; `padding` nil is k/2.
    public init(weight: LayerWeight, bias: Tensor?, stride: Int = 1, padding: Int? = nil, verticalPadding: Int? = nil,
                groups: Int = 1) {
        storedWeight = weight
        self.bias = bias
        self.stride = stride
        let padding = padding ?? weight.shape[2] / 2
        self.padding = padding
        self.verticalPadding = verticalPadding == padding ? nil : verticalPadding
        self.groups = groups
    }

    /// Reads `prefix + "weight"` `[out, in/groups, kernel, kernel]` (kept as the reader's `precision` says) and
    /// `prefix + "bias"` `[out]`.
    public init(_ read: WeightReader, _ prefix: String, in inputs: Int, out: Int, kernel: Int, stride: Int = 1,
                padding: Int? = nil, verticalPadding: Int? = nil, groups: Int = 1) throws {
        self.init(weight: try read.layerWeight(prefix + "weight", [out, inputs / groups, kernel, kernel]),
                  bias: try read(prefix + "bias", [out]), stride: stride, padding: padding ?? kernel / 2,
                  verticalPadding: verticalPadding, groups: groups)
    }

    /// `[out, in/groups, k, k]` as float32 (a fresh widening when the layer keeps 16-bit weights).
    public var weight: Tensor { storedWeight.float }

    public var outChannels: Int { storedWeight.shape[0] }
    /// Input channels of one group (all of them for an ungrouped convolution).
    public var inChannels: Int { storedWeight.shape[1] }
    public var kernel: Int { storedWeight.shape[2] }

    @inlinable
    public func callAsFunction(_ x: Tensor, activation: Activation? = nil) -> Tensor {
        let weight = storedWeight.float
        if let verticalPadding {
            return conv2d(x, weight: weight, bias: bias, stride: stride, padding: (vertical: verticalPadding, horizontal: padding),
                          activation: activation)
        }
        return conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, groups: groups, activation: activation)
    }
}

/// The affine parameters of a GroupNorm or LayerNorm (`weight`, `bias`, both `[channels]`) with its epsilon.
public struct NormLayer: Sendable {
    public let weight: Tensor
    public let bias: Tensor
    public let eps: Float
    /// Groups of `group(_:)`; unused by `layer(_:)`.
    public let groups: Int

    /// Reads `prefix + "weight"` and `prefix + "bias"`, both `[channels]`.
    public init(_ read: WeightReader, _ prefix: String, channels: Int, eps: Float, groups: Int = 0) throws {
        weight = try read(prefix + "weight", [channels])
        bias = try read(prefix + "bias", [channels])
        self.eps = eps
        self.groups = groups
    }

    /// GroupNorm over `[N, C, ...]`, optionally followed by an activation in the same pass.
    @inlinable
    public func group(_ x: Tensor, activation: Activation? = nil) -> Tensor {
        groupNorm(x, groups: groups, weight: weight, bias: bias, eps: eps, activation: activation)
    }

    /// LayerNorm over the last dimension.
    @inlinable
    public func layer(_ x: Tensor) -> Tensor { layerNorm(x, weight: weight, bias: bias, eps: eps) }
}

/// An inference-mode `BatchNorm2d`: running statistics and affine parameters, eps 1e-5 (PyTorch's default).
public struct BatchNormLayer: Sendable {
    public let mean: Tensor
    public let variance: Tensor
    public let weight: Tensor
    public let bias: Tensor

    /// Reads `prefix + "running_mean"`, `"running_var"`, `"weight"` and `"bias"`, all `[channels]`.
    public init(_ read: WeightReader, _ prefix: String, channels: Int) throws {
        mean = try read(prefix + "running_mean", [channels])
        variance = try read(prefix + "running_var", [channels])
        weight = try read(prefix + "weight", [channels])
        bias = try read(prefix + "bias", [channels])
    }

    @inlinable
    public func callAsFunction(_ x: Tensor) -> Tensor {
        batchNorm(x, mean: mean, variance: variance, weight: weight, bias: bias)
    }
}

/// Multi-head attention with separate q/k/v projections and an output projection, in diffusers' `Attention` names
/// (`to_q`, `to_k`, `to_v`, `to_out.0`): the SD UNets' self- and cross-attention, the motion modules' temporal
/// attention and StreamingT2V's cross-attention mergers.
public struct AttentionLayer: Sendable {
    public let toQ: LinearLayer, toK: LinearLayer, toV: LinearLayer, toOut: LinearLayer
    public let heads: Int

    /// Reads the four projections under `prefix`; q/k/v biases only when `qkvBias`, the output projection's always.
    public init(_ read: WeightReader, _ prefix: String, queryDim: Int, contextDim: Int, heads: Int,
                qkvBias: Bool = false) throws {
        let bias: BiasPresence = qkvBias ? .required : .none
        toQ = try LinearLayer(read, prefix + "to_q.", in: queryDim, out: queryDim, bias: bias)
        toK = try LinearLayer(read, prefix + "to_k.", in: contextDim, out: queryDim, bias: bias)
        toV = try LinearLayer(read, prefix + "to_v.", in: contextDim, out: queryDim, bias: bias)
        toOut = try LinearLayer(read, prefix + "to_out.0.", in: queryDim, out: queryDim)
        self.heads = heads
    }

    /// `x` `[N, L, C]`, `context` `[N, S, Cctx]` (nil: self-attention) → `[N, L, C]`.
    public func callAsFunction(_ x: Tensor, context: Tensor? = nil) -> Tensor {
        let ctx = context ?? x
        // Token-major heads straight from the projections: no split/merge copies of q, k, v and the result.
        let merged = multiHeadAttention(query: toQ(x), key: toK(ctx), value: toV(ctx), heads: heads)
        return toOut(merged)
    }
}
