import LapseGraph
import LapseTensor

/// A super-resolution generator ready to run: weights loaded, hyper-parameters known.
///
/// Each architecture (RRDB, SRVGGNetCompact, GRL, DAT) conforms; `Upscale` only talks to this protocol, so tiling,
/// padding and streaming are written once.
public protocol UpscaleNetwork: Sendable {
    /// Architecture name shown to users, e.g. `RRDB`, `GRL`.
    var architecture: String { get }
    /// Output size ÷ input size.
    var scale: Int { get }
    /// The network's input height and width must be a multiple of this (window size, pixel-unshuffle factor, …).
    var sizeMultiple: Int { get }
    /// Smallest tile side that keeps the architecture's behaviour (e.g. one attention window); smaller tiles are refused.
    var minimumTile: Int { get }
    /// Rough peak working memory in bytes per input pixel, used to pick a tile size from a memory budget.
    var bytesPerInputPixel: Int { get }
    /// Runs the network on `[1, 3, H, W]` RGB in [0, 1] (H and W multiples of `sizeMultiple`) → `[1, 3, H·s, W·s]`.
    func forward(_ input: Tensor) throws -> Tensor
}

/// The value on `UpscaleModel` ports: a loaded network and where it came from.
public struct UpscaleModel: Sendable {
    public let network: any UpscaleNetwork
    /// The checkpoint file the network was loaded from.
    public let path: String

    public init(network: any UpscaleNetwork, path: String) {
        self.network = network
        self.path = path
    }
}

extension DataType where Object == UpscaleModel {
    /// A loaded super-resolution network.
    public static var upscaleModel: DataType<UpscaleModel> { DataType("UpscaleModel") }
}
