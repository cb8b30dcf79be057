import LapseSupport

/// Colour description carried with frames, so an encoder can write what a decoder read.
public struct ColorInfo: Sendable, Hashable {
    /// YUV matrix of the source or destination (`bt709`, `bt601`, …); RGB sources use `rgb`.
    public var matrix: String
    /// `limited` (16–235) or `full` (0–255) range of the YUV source.
    public var range: String
    /// Bits per component of the source (8, 10, 16, …).
    public var bitDepth: Int

    public init(matrix: String = "bt709", range: String = "limited", bitDepth: Int = 8) {
        self.matrix = matrix
        self.range = range
        self.bitDepth = bitDepth
    }

    /// Plain sRGB, as read from PNG.
    public static let rgb8 = ColorInfo(matrix: "rgb", range: "full", bitDepth: 8)
}

/// One image or video frame: planar float pixels plus timing.
public struct Frame: Sendable {
    /// Pixels as a `[channels, height, width]` tensor with values nominally in [0, 1].
    /// Channels: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA.
    public var image: Tensor
    /// Presentation time in seconds, when known.
    public var time: Double?
    /// Position in the stream, from 0.
    public var index: Int
    public var color: ColorInfo

    public init(image: Tensor, index: Int = 0, time: Double? = nil, color: ColorInfo = .rgb8) {
        precondition(image.rank == 3 && (1...4).contains(image.shape[0]), "frame image must be [C, H, W] with 1-4 channels")
        self.image = image
        self.index = index
        self.time = time
        self.color = color
    }

    public var channels: Int { image.shape[0] }
    public var height: Int { image.shape[1] }
    public var width: Int { image.shape[2] }
}

/// What is known about a stream before it is decoded.
public struct FrameStreamInfo: Sendable {
    /// Frame size when known up front (every frame of a video has it; image sequences may vary).
    public var width: Int?
    public var height: Int?
    /// Frames per second as a fraction (numerator, denominator), when the source has one.
    public var frameRate: (numerator: Int, denominator: Int)?
    /// Number of frames when known.
    public var frameCount: Int?
    /// The media file the stream came from, e.g. for `SaveVideo.audio_from`.
    public var sourcePath: String?
    public var color: ColorInfo

    public init(width: Int? = nil, height: Int? = nil, frameRate: (numerator: Int, denominator: Int)? = nil,
                frameCount: Int? = nil, sourcePath: String? = nil, color: ColorInfo = .rgb8) {
        self.width = width
        self.height = height
        self.frameRate = frameRate
        self.frameCount = frameCount
        self.sourcePath = sourcePath
        self.color = color
    }

    /// Frames per second as a Double, when known.
    public var fps: Double? { frameRate.map { Double($0.numerator) / Double($0.denominator) } }
}

/// A pull iterator over frames. Returns `nil` when the stream ends.
public protocol FrameSource: AnyObject {
    func next() throws -> Frame?
}

/// A lazily evaluated stream of frames, the value carried on `Frames` ports.
///
/// Nothing is decoded until a consumer pulls: each consumer calls `makeSource()` and pulls frames one at a time, so
/// a pipeline holds a small, fixed number of frames whatever the video's length. Two consumers of one stream each
/// get an independent source (the producer runs again), which keeps memory bounded at the cost of recomputation.
public final class Frames: Sendable {
    public let info: FrameStreamInfo
    private let factory: @Sendable () throws -> any FrameSource

    public init(info: FrameStreamInfo, makeSource: @escaping @Sendable () throws -> any FrameSource) {
        self.info = info
        factory = makeSource
    }

    /// Starts a new pass over the stream.
    public func makeSource() throws -> any FrameSource { try factory() }

    /// A stream over frames already in memory (a single image is a stream of one frame).
    public convenience init(frames: [Frame], info: FrameStreamInfo = FrameStreamInfo()) {
        var info = info
        if info.frameCount == nil { info.frameCount = frames.count }
        if info.width == nil, let first = frames.first { info.width = first.width; info.height = first.height }
        self.init(info: info) { ArrayFrameSource(frames) }
    }

    /// A stream whose frames are this stream's frames passed through `transform`, one at a time.
    public func map(info newInfo: FrameStreamInfo? = nil,
                    _ transform: @escaping @Sendable (Frame) throws -> Frame) -> Frames {
        let upstream = self
        return Frames(info: newInfo ?? info) { MappedFrameSource(try upstream.makeSource(), transform) }
    }

    /// Pulls every frame into memory; for tests and small streams only.
    public func collect() throws -> [Frame] {
        let source = try makeSource()
        var out: [Frame] = []
        while let frame = try source.next() { out.append(frame) }
        return out
    }
}

/// A frame source driven by a closure whose captures hold its state: the shortest way for a node to stream frames
/// it computes one at a time.
public final class ClosureFrameSource: FrameSource {
    private let pull: () throws -> Frame?

    /// A source whose `next()` calls `pull`; `pull` returns `nil` at the end of the stream.
    public init(_ pull: @escaping () throws -> Frame?) { self.pull = pull }

    public func next() throws -> Frame? { try pull() }
}

private final class ArrayFrameSource: FrameSource {
    private var frames: [Frame]
    private var position = 0
    init(_ frames: [Frame]) { self.frames = frames }
    func next() throws -> Frame? {
        guard position < frames.count else { return nil }
        defer { position += 1 }
        return frames[position]
    }
}

private final class MappedFrameSource: FrameSource {
    private let upstream: any FrameSource
    private let transform: (Frame) throws -> Frame
    init(_ upstream: any FrameSource, _ transform: @escaping (Frame) throws -> Frame) {
        self.upstream = upstream
        self.transform = transform
    }
    func next() throws -> Frame? {
        guard let frame = try upstream.next() else { return nil }
        return try transform(frame)
    }
}

extension FrameStreamInfo {
    /// What `{stem}` in a saver's path becomes for this stream: the file name, without folder and extension, of the
    /// media file the frames were decoded from (`sourcePath`, which frame nodes pass along), or `nil` for frames that
    /// were generated.
    public var sourceStem: String? { sourcePath.flatMap(OutputPathTemplate.stem(ofSource:)) }
}
