import CFFmpeg
import Foundation
import LapseSupport
import LapseTensor

extension MediaIO {
    /// Runs frames through a libavfilter video filter chain (e.g. `"scale=640:-2,fps=8"`, `"hflip,eq=contrast=1.2"`).
    ///
    /// Frames enter as planar float (exact for filters that only move pixels) and leave as planar float; libavfilter
    /// inserts conversions for filters that need other formats. When the input size is known the graph is
    /// configured here once, so a bad filter text fails before any frame is pulled; each pass builds it again.
    public static func filter(_ frames: Frames, graph text: String, progress: FrameProgress? = nil) throws -> Frames {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { throw MediaError.filterFailed(graph: text, reason: "empty filter graph") }
        // Refused filters fail here even when the input size is unknown and the graph is built only at the first frame.
        _ = try FilterAllowList.sanitize(trimmed)
        var info = frames.info
        let rate = AV.avRational(frames.info.frameRate)
        if let width = info.width, let height = info.height {
            let probe = try FilterPipeline(text: trimmed, width: width, height: height,
                                           format: FrameBridge.floatFormat(channels: 3), timeBase: FilterSource.timeBase,
                                           frameRate: rate, outputFormats: FilterSource.outputFormats)
            info.width = probe.outputWidth
            info.height = probe.outputHeight
            info.frameRate = AV.rational(probe.outputFrameRate)
            if info.frameRate == nil || info.frameRate.map({ $0.numerator != Int(rate?.num ?? 0) || $0.denominator != Int(rate?.den ?? 0) }) == true {
                info.frameCount = nil  // a rate change (fps=…) changes the count in a way only running it tells
            }
        } else {
            info.width = nil
            info.height = nil
            info.frameCount = nil
        }
        let outInfo = info
        return Frames(info: outInfo) {
            FilterSource(upstream: try frames.makeSource(), text: trimmed, inputRate: rate, progress: progress,
                         total: outInfo.frameCount ?? 0)
        }
    }
}

extension MediaIO {
    /// Frames made by a libavfilter source, e.g. `"testsrc2=size=320x240:rate=25"` (test clips, benchmarks).
    /// - Parameter frameCount: frames to produce; generators are endless, so this is required.
    public static func synthesize(_ text: String, frameCount: Int) throws -> Frames {
        guard frameCount > 0 else { throw MediaError.invalidArgument("synthesize: frameCount must be positive") }
        let probe = try FilterPipeline(generator: text, outputFormats: FilterSource.outputFormats)
        let info = FrameStreamInfo(width: probe.outputWidth, height: probe.outputHeight,
                                   frameRate: AV.rational(probe.outputFrameRate), frameCount: frameCount,
                                   sourcePath: nil, color: .rgb8)
        return Frames(info: info) { GeneratorSource(try FilterPipeline(generator: text, outputFormats: FilterSource.outputFormats),
                                                    count: frameCount) }
    }
}

final class GeneratorSource: FrameSource {
    private let pipeline: FilterPipeline
    private let count: Int
    private var emitted = 0

    init(_ pipeline: FilterPipeline, count: Int) {
        self.pipeline = pipeline
        self.count = count
    }

    func next() throws -> Frame? {
        guard emitted < count else { return nil }
        // A source filter's sink may answer "again" while its graph schedules; request until a frame comes.
        for _ in 0..<1000 {
            if let out = try pipeline.pull() {
                let time = out.pointee.pts == AV.noPTS ? nil : Double(out.pointee.pts) * av_q2d(pipeline.outputTimeBase)
                defer { emitted += 1 }
                return FrameBridge.frame(fromPlanarFloat: out, index: emitted, time: time, color: .rgb8)
            }
            if pipeline.ended { return nil }
        }
        throw MediaError.filterFailed(graph: pipeline.text, reason: "the source produced no frame")
    }
}

/// Pulls upstream frames through a filter pipeline built from the first frame's size and channel count.
final class FilterSource: FrameSource {
    /// Microsecond timestamps: fine enough for any frame rate, coarse enough to never overflow.
    static let timeBase = AVRational(num: 1, den: 1_000_000)
    /// Most frames a graph may emit per input frame (`fps=1000` on a 1 fps source makes 1000): more means a
    /// `setpts`/`fps` combination that would run without end.
    static let maxFramesPerInput = 10_000
    static let outputFormats = [AV_PIX_FMT_GBRPF32LE, AV_PIX_FMT_GBRAPF32LE, AV_PIX_FMT_GRAYF32LE]

    private let upstream: any FrameSource
    private let text: String
    private let inputRate: AVRational?
    private let progress: FrameProgress?
    private let total: Int
    private var pipeline: FilterPipeline?
    private var size: (Int, Int, Int)?
    private var upstreamEnded = false
    private var emitted = 0
    private var sinceInput = 0
    private var color = ColorInfo.rgb8

    init(upstream: any FrameSource, text: String, inputRate: AVRational?, progress: FrameProgress?, total: Int) {
        self.upstream = upstream
        self.text = text
        self.inputRate = inputRate
        self.progress = progress
        self.total = total
    }

    func next() throws -> Frame? {
        while true {
            if let pipeline, let out = try pipeline.pull() {
                let pts = out.pointee.pts
                let time = pts == AV.noPTS ? nil : Double(pts) * av_q2d(pipeline.outputTimeBase)
                sinceInput += 1
                guard sinceInput <= Self.maxFramesPerInput else {
                    throw MediaError.filterFailed(graph: text, reason:
                        "more than \(Self.maxFramesPerInput) output frames for one input frame; check fps and setpts")
                }
                try MediaLimits.check(width: Int(out.pointee.width), height: Int(out.pointee.height), path: "filter output")
                let frame = FrameBridge.frame(fromPlanarFloat: out, index: emitted, time: time, color: color)
                emitted += 1
                try progress?(emitted, total)
                return frame
            }
            if upstreamEnded { return nil }
            guard let input = try upstream.next() else {
                upstreamEnded = true
                guard let pipeline else { return nil }
                try pipeline.push(nil)
                continue
            }
            let channels = input.channels == 2 ? 4 : input.channels
            if pipeline == nil {
                size = (input.width, input.height, channels)
                color = ColorInfo(matrix: "rgb", range: "full", bitDepth: input.color.bitDepth)
                pipeline = try FilterPipeline(text: text, width: input.width, height: input.height,
                                              format: FrameBridge.floatFormat(channels: channels), timeBase: Self.timeBase,
                                              frameRate: inputRate, outputFormats: Self.outputFormats)
            } else if let size, size != (input.width, input.height, channels) {
                throw MediaError.filterFailed(graph: text, reason:
                    "frame \(input.index) is \(input.width)x\(input.height)x\(channels) but the graph was configured for \(size.0)x\(size.1)x\(size.2)")
            }
            let av = try FrameBridge.planarFloat(input)
            var owned: UnsafeMutablePointer<AVFrame>? = av
            defer { av_frame_free(&owned) }
            let seconds = input.time ?? Double(input.index) / (inputRate.map { av_q2d($0) } ?? 25)
            guard let pts = AV.timestamp(seconds: seconds, unitsPerSecond: 1_000_000) else {
                throw MediaError.filterFailed(graph: text, reason: "frame \(input.index) has no usable time (\(seconds) s)")
            }
            av.pointee.pts = pts
            sinceInput = 0
            try pipeline!.push(av)
        }
    }
}
