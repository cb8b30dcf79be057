import Dispatch
import Foundation
import LapseTensor

/// Errors of the tiled upscaling itself (before or between tiles).
public enum TilingError: LocalizedError, Sendable {
    case tileTooSmall(tile: Int, minimum: Int, architecture: String)
    case emptyImage(width: Int, height: Int)
    case budgetTooSmall(megabytes: Int, neededMegabytes: Int)
    case wrongOutput(architecture: String, expected: [Int], actual: [Int])

    public var errorDescription: String? {
        switch self {
        case .tileTooSmall(let tile, let minimum, let arch):
            "tile \(tile) is smaller than the \(arch) network's minimum of \(minimum) pixels"
        case .emptyImage(let w, let h):
            "cannot upscale an empty \(w)×\(h) image"
        case .budgetTooSmall(let mb, let needed):
            "max_memory_mb \(mb) cannot hold even the output image and one minimal tile (about \(needed) MB)"
        case .wrongOutput(let arch, let expected, let actual):
            "the \(arch) network returned \(actual), expected \(expected)"
        }
    }
}

/// Runs an `UpscaleNetwork` over an image of any size in overlapping tiles and blends them seamlessly, with the
/// shared `TiledMap`.
///
/// The image is (virtually) reflect-padded to the network's `sizeMultiple`; APISR itself crops the input to a
/// multiple of 4 instead, losing up to 3 pixel rows/columns; here the output is always exactly scale × the input.
/// Each tile runs with `overlap` extra pixels of real image context on every side, and neighbouring outputs are
/// cross-faded with complementary linear ramps over `overlap` pixels centred on the tile border, so every kept
/// pixel has at least `overlap / 2` pixels of context: for networks whose receptive field fits in that the result
/// equals the untiled one to float rounding; for deeper ones any seam is spread over the ramp.
public struct TiledUpscaler: Sendable {
    public let network: any UpscaleNetwork
    /// Tile side in input pixels (0: chosen from `maxMemoryBytes`).
    public let tile: Int
    /// Context and blend width in input pixels.
    public let overlap: Int
    /// Memory budget for the output image plus one tile's working set.
    public let maxMemoryBytes: Int

    public init(network: any UpscaleNetwork, tile: Int = 0, overlap: Int = 16, maxMemoryMB: Int = 2048) {
        self.network = network
        self.tile = tile
        self.overlap = max(0, overlap)
        self.maxMemoryBytes = max(1, maxMemoryMB) << 20
    }

    /// The tile layout for an image of `channels` channels (the network keeps the channel count).
    private func map(channels: Int) throws -> TiledMap {
        if tile > 0, tile < network.minimumTile {
            throw TilingError.tileTooSmall(tile: tile, minimum: network.minimumTile, architecture: network.architecture)
        }
        return TiledMap(scale: network.scale, sizeMultiple: network.sizeMultiple, minimumTile: network.minimumTile,
                        context: overlap, blend: overlap, padding: .reflect, tile: tile,
                        maxMemoryBytes: maxMemoryBytes, bytesPerInputPixel: network.bytesPerInputPixel,
                        outputChannels: channels)
    }

    /// `TiledMap`'s errors in the words of the `Upscale` node.
    private func rephrase(_ error: TiledMapError) -> TilingError {
        switch error {
        case .emptyInput(let shape):
            .emptyImage(width: shape.last ?? 0, height: shape.count >= 2 ? shape[shape.count - 2] : 0)
        case .budgetTooSmall(let bytes, let needed):
            .budgetTooSmall(megabytes: bytes >> 20, neededMegabytes: (needed + (1 << 20) - 1) >> 20)
        case .wrongOutput(let expected, let actual):
            .wrongOutput(architecture: network.architecture, expected: expected, actual: actual)
        }
    }

    /// The tile core side this run will use for an image of the given size.
    public func coreSize(width: Int, height: Int, channels: Int = 3) throws -> Int {
        do {
            return try map(channels: channels).coreSize(height: height, width: width, channels: channels)
        } catch let error as TiledMapError {
            throw rephrase(error)
        }
    }

    /// Upscales `[1, 3, H, W]` RGB → `[1, 3, H·s, W·s]`. `progress(done, total)` is called after each tile;
    /// `checkCancellation` before each.
    public func upscale(_ image: Tensor, progress: (Int, Int) -> Void = { _, _ in },
                        checkCancellation: () throws -> Void = {}) throws -> Tensor {
        precondition(image.rank == 4 && image.shape[0] == 1, "TiledUpscaler takes [1, C, H, W]")
        let (channels, height, width) = (image.shape[1], image.shape[2], image.shape[3])
        guard height > 0, width > 0 else { throw TilingError.emptyImage(width: width, height: height) }
        let tiler = try map(channels: channels)
        let network = network
        do {
            return try tiler.apply(image, progress: progress, checkCancellation: checkCancellation) {
                try network.forward($0)
            }
        } catch let error as TiledMapError {
            throw rephrase(error)
        }
    }
}
