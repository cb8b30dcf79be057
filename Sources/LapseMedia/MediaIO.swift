import CFFmpeg
import Foundation
import LapseGraph
import LapseTensor

/// Called once per frame produced or consumed: (frames done, total or 0). Throwing stops the stream
/// (nodes pass cancellation through it).
public typealias FrameProgress = @Sendable (_ done: Int, _ total: Int) throws -> Void

/// Entry points for reading and writing images and video; the media nodes are thin wrappers over these.
public enum MediaIO {
    /// Extensions read through libpng; everything else goes through libav.
    static func isPNG(_ path: String) -> Bool { URL(fileURLWithPath: path).pathExtension.lowercased() == "png" }

    /// Reads one still image: PNG through libpng, JPEG, WebP, BMP, TIFF, GIF (first frame) … through libavcodec.
    public static func loadImage(path: String) throws -> Frames {
        let frame: Frame
        if isPNG(path) {
            frame = try PNGCodec.read(path: path)
        } else {
            let decoder = try VideoDecoder(path: path)
            guard let raw = try decoder.nextRaw() else { throw MediaError.noFrames(path: path) }
            var first = try decoder.convert(raw, index: 0)
            first.time = nil
            frame = first
        }
        return Frames(frames: [frame], info: FrameStreamInfo(width: frame.width, height: frame.height, frameCount: 1,
                                                             sourcePath: path, color: frame.color))
    }

    /// True when `path` is a media file with at least one audio stream (false for missing or unreadable files).
    public static func hasAudio(path: String) -> Bool {
        var context: UnsafeMutablePointer<AVFormatContext>?
        guard avformat_open_input(&context, path, nil, nil) >= 0, context != nil else { return false }
        defer { avformat_close_input(&context) }
        guard avformat_find_stream_info(context, nil) >= 0 else { return false }
        return av_find_best_stream(context, AVMEDIA_TYPE_AUDIO, -1, -1, nil, 0) >= 0
    }

    /// Opens a video (or animated image, or image sequence pattern) for lazy decoding. The header is read now so
    /// a bad file fails here; frames are decoded only while a consumer pulls them.
    ///
    /// - Parameters:
    ///   - start: source frames to skip first.
    ///   - maxFrames: stop after this many output frames (0 = all).
    ///   - everyNth: keep one source frame in `everyNth`, after `start`.
    ///   - fps: resample the kept frames to this rate by timestamps, dropping or repeating frames (0 = keep).
    public static func loadVideo(path: String, start: Int = 0, maxFrames: Int = 0, everyNth: Int = 1, fps: Double = 0,
                                 progress: FrameProgress? = nil) throws -> Frames {
        guard start >= 0 else { throw MediaError.invalidArgument("\(path): start must be >= 0, got \(start)") }
        guard maxFrames >= 0 else { throw MediaError.invalidArgument("\(path): max_frames must be >= 0, got \(maxFrames)") }
        guard everyNth >= 1 else { throw MediaError.invalidArgument("\(path): every_nth must be >= 1, got \(everyNth)") }
        guard fps >= 0, fps <= 1000 else { throw MediaError.invalidArgument("\(path): fps must be in 0...1000, got \(fps)") }
        let probe = try VideoDecoder(path: path)
        var info = probe.info
        let sourceFPS = info.fps
        if fps > 0 {
            let q = av_d2q(fps, 100_000)
            info.frameRate = (Int(q.num), Int(q.den))
        } else if everyNth > 1, let rate = info.frameRate {
            info.frameRate = (rate.numerator, rate.denominator * everyNth)
        }
        if var count = info.frameCount {
            count = max(0, count - start)
            count = (count + everyNth - 1) / everyNth
            if fps > 0, let sourceFPS, sourceFPS > 0 { count = Int((Double(count) * everyNth.double * fps / sourceFPS).rounded()) }
            if maxFrames > 0 { count = min(count, maxFrames) }
            info.frameCount = count
        }
        let total = info.frameCount ?? (maxFrames > 0 ? maxFrames : 0)
        let settings = DecodeSettings(start: start, maxFrames: maxFrames, everyNth: everyNth, fps: fps, total: total)
        nonisolated(unsafe) var firstDecoder: VideoDecoder? = probe
        let lock = NSLock()
        return Frames(info: info) {
            // The probe's decoder serves the first pass, so a single-consumer graph opens the file once.
            let reuse: VideoDecoder? = lock.withLock {
                defer { firstDecoder = nil }
                return firstDecoder
            }
            return DecodingSource(decoder: try reuse ?? VideoDecoder(path: path), settings: settings, progress: progress)
        }
    }

    /// Writes frames as PNG: one frame to `path`, several to a numbered sequence when `path` holds a printf-style
    /// frame number (`out_%05d.png`, numbered from 1). Each file is written atomically.
    /// - Returns: the paths written.
    @discardableResult
    public static func saveImages(_ frames: Frames, path: String, bitDepth: Int = 8, progress: FrameProgress? = nil) throws -> [String] {
        guard bitDepth == 8 || bitDepth == 16 else {
            throw MediaError.invalidArgument("\(path): bit_depth must be 8 or 16, got \(bitDepth)")
        }
        let pattern = SequencePattern(path)
        let source = try frames.makeSource()
        guard let first = try source.next() else { throw MediaError.noFrames(path: path) }
        var pending: Frame? = try source.next()
        if pending != nil, pattern == nil {
            throw MediaError.sequencePatternRequired(path: path, frames: frames.info.frameCount ?? 2)
        }
        let total = frames.info.frameCount ?? 0
        var written: [String] = []
        var current: Frame? = first
        var number = 1
        while let frame = current {
            let target = pattern?.path(for: number) ?? path
            try PNGCodec.write(frame, to: target, bitDepth: bitDepth)
            written.append(target)
            try progress?(number, total)
            number += 1
            current = pending
            pending = current == nil ? nil : try source.next()
        }
        return written
    }

    /// Encodes frames into a video file (see `VideoEncodingOptions`), streaming, through a temporary file that is
    /// renamed into place only when everything succeeded.
    /// - Returns: notes worth logging (e.g. padding of odd sizes).
    @discardableResult
    public static func saveVideo(_ frames: Frames, path: String, options: VideoEncodingOptions = VideoEncodingOptions(),
                                 progress: FrameProgress? = nil) throws -> [String] {
        var notes: [String] = []
        try AtomicFile.write(to: URL(fileURLWithPath: path)) { temp in
            let encoder = try VideoEncoder(path: path, tempPath: temp.path, options: options, streamRate: frames.info.frameRate)
            let source = try frames.makeSource()
            let total = frames.info.frameCount ?? 0
            while let frame = try source.next() {
                try encoder.write(frame)
                try progress?(encoder.framesWritten, total)
            }
            try encoder.finish()
            notes = encoder.notes
        }
        return notes
    }
}

extension Int {
    fileprivate var double: Double { Double(self) }
}

/// A printf-style frame-number pattern in a path (`%d`, `%05d`), substituted without calling printf.
struct SequencePattern {
    private let prefix: Substring
    private let suffix: Substring
    private let width: Int

    init?(_ path: String) {
        guard let percent = path.lastIndex(of: "%") else { return nil }
        var cursor = path.index(after: percent)
        var digits = ""
        while cursor < path.endIndex, path[cursor].isNumber {
            digits.append(path[cursor])
            cursor = path.index(after: cursor)
        }
        guard cursor < path.endIndex, path[cursor] == "d" else { return nil }
        prefix = path[..<percent]
        suffix = path[path.index(after: cursor)...]
        width = Int(digits) ?? 0
    }

    func path(for number: Int) -> String {
        let digits = String(number)
        return prefix + String(repeating: "0", count: max(0, width - digits.count)) + digits + suffix
    }
}

struct DecodeSettings {
    var start: Int
    var maxFrames: Int
    var everyNth: Int
    var fps: Double
    var total: Int
}

/// Pulls decoded frames, applying start / every_nth / fps / max_frames, one frame at a time.
final class DecodingSource: FrameSource {
    private let decoder: VideoDecoder
    private let settings: DecodeSettings
    private let progress: FrameProgress?
    private var sourceIndex = 0
    private var emitted = 0
    private var sawAny = false
    /// For fps resampling: the last kept frame, waiting until the next one shows how long it lasts.
    private var held: Frame?
    private var lookahead: Frame?
    private var finished = false
    private var firstTime: Double?

    init(decoder: VideoDecoder, settings: DecodeSettings, progress: FrameProgress?) {
        self.decoder = decoder
        self.settings = settings
        self.progress = progress
    }

    /// The next source frame that survives start/every_nth, converted, or nil at the end.
    private func nextKept() throws -> Frame? {
        while let raw = try decoder.nextRaw() {
            sawAny = true
            let index = sourceIndex
            sourceIndex += 1
            guard index >= settings.start, (index - settings.start) % settings.everyNth == 0 else { continue }
            return try decoder.convert(raw, index: index)
        }
        if !sawAny { throw MediaError.noFrames(path: decoder.path) }
        return nil
    }

    func next() throws -> Frame? {
        if finished || (settings.maxFrames > 0 && emitted >= settings.maxFrames) { return nil }
        var frame: Frame
        if settings.fps > 0 {
            guard let resampled = try nextResampled() else {
                finished = true
                return nil
            }
            frame = resampled
        } else {
            guard let kept = try nextKept() else {
                finished = true
                return nil
            }
            frame = kept
            if let t = frame.time {
                if firstTime == nil { firstTime = t }
                frame.time = t - firstTime!
            }
        }
        frame.index = emitted
        emitted += 1
        try progress?(emitted, settings.total)
        return frame
    }

    /// Output frame k shows the last source frame starting at or before k / fps (what ffmpeg's fps filter does
    /// with round-down), so frames are dropped or repeated to hit the rate.
    private func nextResampled() throws -> Frame? {
        let target = Double(emitted) / settings.fps
        if held == nil {
            guard let first = try nextKept() else { return nil }
            firstTime = first.time ?? 0
            held = first
            lookahead = try nextKept()
        }
        while let next = lookahead, relativeTime(next) <= target + 1e-9 {
            held = next
            lookahead = try nextKept()
        }
        guard var frame = held else { return nil }
        if lookahead == nil {
            // Past the last frame's own duration the stream ends.
            let duration = decoder.info.fps.map { 1 / $0 } ?? 1 / settings.fps
            if target >= relativeTime(frame) + duration - 1e-9 { return nil }
        }
        frame.time = target
        return frame
    }

    private func relativeTime(_ frame: Frame) -> Double {
        (frame.time ?? Double(frame.index) / (decoder.info.fps ?? settings.fps)) - (firstTime ?? 0)
    }
}
