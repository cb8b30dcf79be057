import CFFmpeg
import Foundation
import CMediaHelpers

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

    static func pixelFormatName(_ format: AVPixelFormat) -> String {
        av_get_pix_fmt_name(format).map { String(cString: $0) } ?? "pixel format \(format.rawValue)"
    }

    static func rational(_ r: AVRational) -> (numerator: Int, denominator: Int)? {
        r.num > 0 && r.den > 0 ? (Int(r.num), Int(r.den)) : nil
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
