import CFFmpeg
import Foundation
import LapseSupport
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

    /// Checks a media input path the way every loader does before opening it: a regular file (symlinks to one are
    /// fine), or for an image-sequence pattern every file of the sequence. FIFOs, devices and folders are refused
    /// with what they are, since opening a FIFO blocks and reading a device never ends.
    public static func checkInput(path: String) throws {
        try AV.checkInputFiles(path)
    }

    /// True when `path` is a media file with at least one audio stream (false for missing, unreadable or
    /// non-regular files, which are never opened).
    public static func hasAudio(path: String) -> Bool {
        var context: UnsafeMutablePointer<AVFormatContext>? = try? AV.openInput(path)
        guard context != nil else { return false }
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
        guard start >= 0 else { throw MediaError.invalidArgument("\(TerminalText.quoted(path)): start must be >= 0, got \(start)") }
        guard maxFrames >= 0 else { throw MediaError.invalidArgument("\(TerminalText.quoted(path)): max_frames must be >= 0, got \(maxFrames)") }
        guard everyNth >= 1 else { throw MediaError.invalidArgument("\(TerminalText.quoted(path)): every_nth must be >= 1, got \(everyNth)") }
        guard fps >= 0, fps <= 1000 else { throw MediaError.invalidArgument("\(TerminalText.quoted(path)): fps must be in 0...1000, got \(fps)") }
        let probe = try VideoDecoder(path: path)
        var info = probe.info
        let sourceFPS = info.fps
        if fps > 0 {
            let q = av_d2q(fps, 100_000)
            info.frameRate = (Int(q.num), Int(q.den))
        } else if everyNth > 1, let rate = info.frameRate {
            // Reduced and kept within libav's 32-bit fractions, whatever every_nth is.
            info.frameRate = AV.divide(rate, by: everyNth)
        }
        if let sourceCount = info.frameCount {
            // Written so that no value of start or every_nth can overflow.
            let remaining = max(0, sourceCount - start)
            var count: Int? = remaining == 0 ? 0 : (remaining - 1) / everyNth + 1
            if fps > 0, let sourceFPS, sourceFPS > 0, let kept = count {
                let estimate = (Double(kept) * everyNth.double * fps / sourceFPS).rounded()
                count = estimate.isFinite && estimate < 1e12 ? Int(estimate) : nil
            }
            if maxFrames > 0, let known = count { count = min(known, maxFrames) }
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
    /// frame number (`out_%05d.png`, numbered from 1, at most 10 digits wide). The path must end in `.png`.
    ///
    /// The files are written under temporary names and renamed into place together once the last one is complete,
    /// so a failure or Ctrl-C part way leaves none of them (the temporaries are tracked for the CLI's cleanup).
    /// The path is checked before any frame is pulled, so a bad path fails before upstream work starts. With
    /// `replacing` false an existing file at any of the paths is an error (`OutputPathError.exists`).
    /// - Returns: the paths written.
    @discardableResult
    public static func saveImages(_ frames: Frames, path: String, bitDepth: Int = 8, replacing: Bool = true,
                                  progress: FrameProgress? = nil) throws -> [String] {
        guard bitDepth == 8 || bitDepth == 16 else {
            throw MediaError.invalidArgument("\(TerminalText.quoted(path)): bit_depth must be 8 or 16, got \(bitDepth)")
        }
        try checkImageOutputPath(path)
        let pattern = try SequencePattern(path)
        try AtomicFile.prepare(pattern?.path(for: 1) ?? path, replacing: replacing)
        let source = try frames.makeSource()
        guard let first = try source.next() else { throw MediaError.noFrames(path: path) }
        var pending: Frame? = try source.next()
        if pending != nil, pattern == nil {
            throw MediaError.sequencePatternRequired(path: path, frames: frames.info.frameCount ?? 2)
        }
        let total = frames.info.frameCount ?? 0
        let group = AtomicFileGroup()
        var current: Frame? = first
        var number = 1
        while let frame = current {
            let target = pattern?.path(for: number) ?? path
            try PNGCodec.write(frame, to: target, bitDepth: bitDepth, group: group, replacing: replacing)
            try progress?(number, total)
            number += 1
            current = pending
            pending = current == nil ? nil : try source.next()
        }
        let written = group.targets
        try group.commit()
        return written
    }

    /// Refuses an image output path that is not `.png`: SaveImage writes PNG only, and PNG bytes under another
    /// extension would mislead every program that trusts the name.
    public static func checkImageOutputPath(_ path: String) throws {
        try InputFile.checkName(path)
        // What stands at the path is reported first: "/dev/null" is a device before it is a wrong extension.
        let kind = FileKind(path: path)
        guard kind == .missing || kind == .regular else { throw FileAccessError.notRegularFile(path: path, kind: kind.description) }
        let ext = URL(fileURLWithPath: path).pathExtension
        guard ext.lowercased() == "png" else {
            throw MediaError.invalidArgument(
                "\(TerminalText.quoted(path)): SaveImage writes PNG files only, so the path must end in .png"
                + (ext.isEmpty ? "" : " (not .\(TerminalText.quoted(ext)))")
                + "; for a GIF, WebM or MP4 use SaveVideo")
        }
    }

    /// Encodes frames into a video file (see `VideoEncodingOptions`), streaming, through a temporary file that is
    /// renamed into place only when everything succeeded. With `replacing` false an existing file at `path` is an
    /// error (`OutputPathError.exists`), before the first frame and again when the file is moved into place.
    /// - Returns: notes worth logging (e.g. padding of odd sizes).
    @discardableResult
    public static func saveVideo(_ frames: Frames, path: String, options: VideoEncodingOptions = VideoEncodingOptions(),
                                 replacing: Bool = true, progress: FrameProgress? = nil) throws -> [String] {
        var notes: [String] = []
        // Before URL(fileURLWithPath:), which would cut or percent-encode a NUL instead of refusing it.
        try InputFile.checkName(path)
        try AtomicFile.write(to: URL(fileURLWithPath: path), replacing: replacing) { temp in
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

extension MediaIO {
    /// The file a saver of `frames` writes for its `path` param, a plain path or an `OutputPathTemplate`: `{stem}`
    /// is the stem of the file the frames were decoded from (`FrameStreamInfo.sourceStem`), `{n}` the lowest free
    /// number, judged for an image sequence (`sequence`, a path with `%05d`) by its first file. `overwrite` false, or
    /// `{n}`, makes the target one that must not be replaced.
    public static func outputTarget(_ path: String, for frames: Frames, overwrite: Bool, sequence: Bool = false) throws -> OutputTarget {
        try InputFile.checkName(path)
        let template = try OutputPathTemplate(path)
        return try template.target(stem: frames.info.sourceStem, overwrite: overwrite) { candidate in
            guard sequence, let pattern = try? SequencePattern(candidate) else { return candidate }
            return pattern.path(for: 1)
        }
    }
}

/// A printf-style frame-number pattern in a path (`%d`, `%05d`), substituted without calling printf.
struct SequencePattern {
    /// Widest zero-padded frame number accepted: 10 digits hold any 32-bit frame count; wider is a mistake (and
    /// `%999999999d` would build a gigabyte file name).
    static let maxWidth = 10

    private let prefix: Substring
    private let suffix: Substring
    private let width: Int

    /// The pattern of `path`, nil when it has none, or an error when its width is absurd.
    init?(_ path: String) throws {
        guard let percent = path.lastIndex(of: "%") else { return nil }
        var cursor = path.index(after: percent)
        var digits = 0
        var width = 0
        while cursor < path.endIndex, let digit = path[cursor].wholeNumberValue, path[cursor].isASCII {
            digits += 1
            if width <= Self.maxWidth { width = width * 10 + digit }
            cursor = path.index(after: cursor)
        }
        guard cursor < path.endIndex, path[cursor] == "d" else { return nil }
        guard width <= Self.maxWidth else {
            throw MediaError.invalidArgument(
                "\(TerminalText.quoted(path, limit: 120)): the frame-number pattern is \(digits > 6 ? "far " : "")too wide; use at most %0\(Self.maxWidth)d (e.g. out_%05d.png)")
        }
        prefix = path[..<percent]
        suffix = path[path.index(after: cursor)...]
        self.width = width
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
