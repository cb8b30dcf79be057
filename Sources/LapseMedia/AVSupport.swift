import CFFmpeg
import Foundation
import CMediaHelpers
import LapseSupport

/// Small helpers around libav's C conventions (negative error codes, macros Swift cannot import).
enum AV {
    static let eagain = lapse_averror_eagain()
    static let eof = lapse_averror_eof()
    static let noPTS = lapse_av_nopts_value()

    /// libav's own text for an error code, e.g. "Invalid data found when processing input".
    static func message(_ code: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        if av_strerror(code, &buffer, buffer.count) < 0 { return "error \(code)" }
        return String(nulTerminated: buffer)
    }

    /// libav's own text for an error code plus the last error line libav logged on this thread (it often says
    /// more, e.g. "No such filter: 'foo'"), and clears that line.
    static func describe(_ code: Int32) -> String {
        let detail = String(cString: lapse_av_last_error())
        lapse_av_clear_error()
        let base = message(code)
        guard !detail.isEmpty, detail != base else { return base }
        return "\(base) (\(detail))"
    }

    /// Forgets this thread's last logged error line, before an operation whose failure should be explained.
    static func clearLog() { lapse_av_clear_error() }

    /// libav logs to stderr by default; our errors quote its error lines instead, so the log is captured per thread
    /// and only echoed when `LAPSE_AV_LOG=1` asks for it while debugging.
    static let configureLogging: Void = {
        lapse_av_log_install(ProcessInfo.processInfo.environment["LAPSE_AV_LOG"] == "1" ? 1 : 0)
    }()

    /// Demuxers a graph's input may use: media containers, still-image formats, image sequences and audio files.
    /// Playlists and indirections (`concat`, `hls`, `dash`, `sdp`), capture devices and `lavfi` are left out, since
    /// they open other files, the network or hardware named inside the file.
    static let demuxers = [
        "mov", "matroska", "webm", "avi", "flv", "mpegts", "mpeg", "ogg", "nut", "asf", "mxf", "ivf", "obu", "h264",
        "hevc", "m4v", "mjpeg", "yuv4mpegpipe", "gif", "apng", "image2", "image2pipe", "bmp_pipe", "jpeg_pipe",
        "png_pipe", "webp_pipe", "tiff_pipe", "gif_pipe", "pam_pipe", "pbm_pipe", "pgm_pipe", "ppm_pipe", "pcx_pipe",
        "qoi_pipe", "dpx_pipe", "exr_pipe", "j2k_pipe", "jpegls_pipe", "jpegxl_pipe", "psd_pipe", "sgi_pipe",
        "sunrast_pipe", "xwd_pipe", "dds_pipe",
        "wav", "w64", "mp3", "aac", "flac", "ac3", "eac3", "dts", "aiff", "caf", "wv", "tta", "ape", "amr", "au",
    ].joined(separator: ",")

    /// Opens a media input the one safe way: the path (or every file of an image-sequence pattern) must be a regular
    /// file, checked before libav opens it (a FIFO would block forever, `/dev/zero` never ends); libav may use the
    /// `file` protocol only (no network, no `concat:`/`subfile:` indirection) and the demuxers of `demuxers`.
    static func openInput(_ path: String) throws -> UnsafeMutablePointer<AVFormatContext> {
        _ = configureLogging
        try checkInputFiles(path)
        var options: OpaquePointer?
        defer { av_dict_free(&options) }
        av_dict_set(&options, "protocol_whitelist", "file", 0)
        av_dict_set(&options, "format_whitelist", demuxers, 0)
        // Sequences are numbered patterns only: no glob expansion, which would open files no check has seen.
        av_dict_set(&options, "pattern_type", "sequence", 0)
        var context: UnsafeMutablePointer<AVFormatContext>?
        clearLog()
        // A ':' would make libav read "name:" as a protocol; "file:" keeps a local path a local path.
        let url = path.contains(":") ? "file:" + path : path
        let status = avformat_open_input(&context, url, nil, &options)
        guard status >= 0, let context else {
            // Containers written with no frames (or cut before the first) end while the header is parsed.
            let prefix = status == eof ? "the file ends before any frame: " : ""
            throw MediaError.cannotOpen(path: path, reason: prefix + describe(status))
        }
        return context
    }

    /// `InputFile.check` for one file, with a missing file reported as `MediaError.fileNotFound`.
    static func checkInputFile(_ path: String) throws {
        do {
            try InputFile.check(path)
        } catch FileAccessError.notFound {
            throw MediaError.fileNotFound(path: path)
        }
    }

    /// `InputFile.check` for a path, or for every file an image-sequence pattern (`f_%05d.png`) names, found as
    /// libav's image2 demuxer finds them: the first of numbers 0-4 that exists, then consecutive numbers until one is
    /// missing (where libav stops reading too).
    static func checkInputFiles(_ path: String) throws {
        guard path.contains("%"), frameFileName(path, number: 0) != nil else {
            try checkInputFile(path)
            return
        }
        let exists = { (n: Int) in frameFileName(path, number: n).map { FileKind(path: $0) != .missing } ?? false }
        guard let start = (0..<5).first(where: exists) else { throw MediaError.fileNotFound(path: path) }
        var number = start
        while let name = frameFileName(path, number: number), FileKind(path: name) != .missing {
            try checkInputFile(name)
            number += 1
        }
    }

    /// The file name of frame `number` of a printf-style pattern, as libav computes it, or nil when `path` is not one.
    static func frameFileName(_ path: String, number: Int) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        guard av_get_frame_filename2(&buffer, Int32(buffer.count), path, Int32(number), 0) >= 0 else { return nil }
        return String(nulTerminated: buffer)
    }

    static func pixelFormatName(_ format: AVPixelFormat) -> String {
        av_get_pix_fmt_name(format).map { String(cString: $0) } ?? "pixel format \(format.rawValue)"
    }

    static func rational(_ r: AVRational) -> (numerator: Int, denominator: Int)? {
        r.num > 0 && r.den > 0 ? (Int(r.num), Int(r.den)) : nil
    }

    /// A frame rate as libav's 32-bit fraction: exact when both parts fit, otherwise the nearest fraction that does
    /// (rates divided by a large `every_nth` or `step`), nil when it is not a positive finite rate.
    static func avRational(_ rate: (numerator: Int, denominator: Int)?) -> AVRational? {
        guard let rate, rate.numerator > 0, rate.denominator > 0 else { return nil }
        if let num = Int32(exactly: rate.numerator), let den = Int32(exactly: rate.denominator) {
            return AVRational(num: num, den: den)
        }
        let value = Double(rate.numerator) / Double(rate.denominator)
        let q = av_d2q(value, Int32.max)
        return q.num > 0 && q.den > 0 ? q : nil
    }

    /// A rate divided by `factor` (every n-th frame kept) without overflowing: the fraction is reduced, and falls
    /// back to the nearest 32-bit fraction when it would not fit.
    static func divide(_ rate: (numerator: Int, denominator: Int), by factor: Int) -> (numerator: Int, denominator: Int)? {
        guard factor > 0 else { return rate }
        func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
        let g = gcd(rate.numerator, factor)
        let (den, overflow) = rate.denominator.multipliedReportingOverflow(by: factor / g)
        guard !overflow else { return nil }
        return rational(avRational((rate.numerator / g, den)) ?? AVRational(num: 0, den: 1))
    }

    /// A time in seconds as a timestamp in `unitsPerSecond`, or nil when it is not finite or too large for libav
    /// (a `setpts` expression or a corrupt source can make any double).
    static func timestamp(seconds: Double, unitsPerSecond: Double) -> Int64? {
        let value = (seconds * unitsPerSecond).rounded()
        guard value.isFinite, abs(value) < 9.0e15 else { return nil }
        return Int64(value)
    }
}

/// The packed layouts frames are converted through, chosen from a pixel format's component count and depth.
struct PackedLayout {
    var format: AVPixelFormat
    var channels: Int
    var sixteenBit: Bool

    /// The layout that keeps everything a decoded format carries: gray stays gray, alpha stays, >8 bits become 16.
    static func preserving(_ format: AVPixelFormat) -> PackedLayout {
        guard let desc = av_pix_fmt_desc_get(format) else { return PackedLayout(format: AV_PIX_FMT_RGB24, channels: 3, sixteenBit: false) }
        let flags = desc.pointee.flags
        let alpha = flags & UInt64(AV_PIX_FMT_FLAG_ALPHA) != 0
        let isPalette = flags & UInt64(AV_PIX_FMT_FLAG_PAL) != 0
        let isRGB = flags & UInt64(AV_PIX_FMT_FLAG_RGB) != 0
        let components = Int(desc.pointee.nb_components)
        let gray = !isRGB && !isPalette && components <= 2
        let deep = desc.pointee.comp.0.depth > 8
        return forChannels(gray ? (alpha ? 2 : 1) : (alpha ? 4 : 3), sixteenBit: deep)
    }

    static func forChannels(_ channels: Int, sixteenBit: Bool) -> PackedLayout {
        let format: AVPixelFormat = switch (channels, sixteenBit) {
        case (1, false): AV_PIX_FMT_GRAY8
        case (1, true): AV_PIX_FMT_GRAY16LE
        case (2, false): AV_PIX_FMT_YA8
        case (2, true): AV_PIX_FMT_YA16LE
        case (3, false): AV_PIX_FMT_RGB24
        case (3, true): AV_PIX_FMT_RGB48LE
        case (_, false): AV_PIX_FMT_RGBA
        case (_, true): AV_PIX_FMT_RGBA64LE
        }
        return PackedLayout(format: format, channels: min(max(channels, 1), 4), sixteenBit: sixteenBit)
    }

    /// True for YUV formats, whose matrix and range matter when converting.
    static func isYUV(_ format: AVPixelFormat) -> Bool {
        guard let desc = av_pix_fmt_desc_get(format) else { return false }
        let flags = desc.pointee.flags
        return flags & UInt64(AV_PIX_FMT_FLAG_RGB) == 0 && flags & UInt64(AV_PIX_FMT_FLAG_PAL) == 0
            && desc.pointee.nb_components >= 3
    }
}

/// Maps libav colour tags to the names `ColorInfo` uses and to swscale's coefficient tables.
enum ColorTags {
    static func matrixName(_ space: AVColorSpace, height: Int) -> String {
        switch space {
        case AVCOL_SPC_BT709: "bt709"
        case AVCOL_SPC_BT470BG, AVCOL_SPC_SMPTE170M: "bt601"
        case AVCOL_SPC_BT2020_NCL, AVCOL_SPC_BT2020_CL: "bt2020"
        case AVCOL_SPC_SMPTE240M: "smpte240m"
        case AVCOL_SPC_FCC: "fcc"
        case AVCOL_SPC_RGB: "rgb"
        // Untagged video: players assume BT.709 for HD and BT.601 for SD, and so do we.
        default: height >= 720 ? "bt709" : "bt601"
        }
    }

    static func swsColorspace(_ name: String) -> Int32 {
        switch name {
        case "bt709": SWS_CS_ITU709
        case "bt2020": SWS_CS_BT2020
        case "smpte240m": SWS_CS_SMPTE240M
        case "fcc": SWS_CS_FCC
        default: SWS_CS_ITU601
        }
    }
}

extension String {
    /// Text of a NUL-terminated C character buffer.
    init(nulTerminated buffer: [CChar]) {
        self.init(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
