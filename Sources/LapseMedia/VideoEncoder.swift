import CFFmpeg
import Foundation
import LapseSupport
import LapseTensor

/// Settings for writing a video file.
public struct VideoEncodingOptions: Sendable {
    /// `auto` (from the extension: .mp4/.mov/.m4v → h264, .webm → vp9, .gif → gif, .mkv → ffv1), `h264`, `vp9`,
    /// `gif`, `ffv1` (lossless) or `h264rgb` (lossless RGB H.264 through libx264rgb at crf 0).
    public var codec: String
    /// Constant rate factor for h264/vp9 (0 = lossless for h264).
    public var crf: Int
    /// x264 preset name (`ultrafast` … `veryslow`); mapped to libvpx's cpu-used for VP9.
    public var preset: String
    /// `auto`, `yuv420p` or `yuv444p` for h264/vp9; ignored by the RGB and palette codecs.
    public var pixelFormat: String
    /// Output rate; nil keeps the stream's own rate (8 fps when it has none).
    public var fps: Double?
    /// A media file whose first audio stream is copied into the output, or nil.
    public var audioFrom: String?

    public init(codec: String = "auto", crf: Int = 18, preset: String = "medium", pixelFormat: String = "auto",
                fps: Double? = nil, audioFrom: String? = nil) {
        self.codec = codec
        self.crf = crf
        self.preset = preset
        self.pixelFormat = pixelFormat
        self.fps = fps
        self.audioFrom = audioFrom
    }

    /// Codec names accepted by `codec`.
    public static let codecs = ["auto", "h264", "vp9", "gif", "ffv1", "h264rgb"]
    /// x264 preset names accepted by `preset`.
    public static let presets = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                                 "veryslow", "placebo"]

    /// The concrete codec for a path, resolving `auto` from the extension.
    public func resolvedCodec(for path: String) throws -> String {
        guard codec == "auto" else {
            guard Self.codecs.contains(codec) else {
                throw MediaError.invalidArgument("\(TerminalText.quoted(path)): unknown codec \"\(codec)\"; use one of \(Self.codecs.joined(separator: ", "))")
            }
            return codec
        }
        switch URL(fileURLWithPath: path).pathExtension.lowercased() {
        case "mp4", "mov", "m4v": return "h264"
        case "webm": return "vp9"
        case "gif": return "gif"
        case "mkv", "nut": return "ffv1"
        case let ext:
            throw MediaError.invalidArgument(
                "\(TerminalText.quoted(path)): cannot choose a codec for the extension \".\(TerminalText.quoted(ext))\"; use .mp4, .webm, .gif or .mkv, or set codec")
        }
    }
}

/// Encodes frames into a container incrementally: frames → packed RGB → libavfilter (colour conversion, or
/// palette generation for GIF) → encoder → muxer, optionally interleaving an audio stream copied from a source file.
final class VideoEncoder {
    private let path: String
    private let tempPath: String
    private let options: VideoEncodingOptions
    private let codecName: String
    private let rate: AVRational
    /// The encoder's clock; see init.
    private let timeBase: AVRational
    /// One frame at `rate` in `timeBase` ticks: the step for frames without a time.
    private let ticksPerFrame: Int64
    private var output: UnsafeMutablePointer<AVFormatContext>?
    private var encoder: UnsafeMutablePointer<AVCodecContext>?
    private var stream: UnsafeMutablePointer<AVStream>?
    private var packet: UnsafeMutablePointer<AVPacket>?
    private var pipeline: FilterPipeline?
    private var audio: AudioCopier?
    private var inputLayout = PackedLayout.forChannels(3, sixteenBit: false)
    private var frameWidth = 0, frameHeight = 0, codedWidth = 0, codedHeight = 0
    private var nextPTS: Int64 = 0
    private(set) var framesWritten = 0
    private var headerWritten = false
    /// A note for the log, e.g. that an odd size was padded.
    private(set) var notes: [String] = []

    init(path: String, tempPath: String, options: VideoEncodingOptions, streamRate: (numerator: Int, denominator: Int)?) throws {
        _ = AV.configureLogging
        self.path = path
        self.tempPath = tempPath
        self.options = options
        codecName = try options.resolvedCodec(for: path)
        if let fps = options.fps {
            guard fps > 0, fps <= 1000 else { throw MediaError.invalidArgument("\(TerminalText.quoted(path)): fps \(fps) is out of range (0, 1000]") }
            rate = av_d2q(fps, 100_000)
        } else if let streamRate = AV.avRational(streamRate) {
            rate = streamRate
        } else {
            rate = AVRational(num: 8, den: 1)
        }
        // A forced rate retimes the frames one per tick of 1/fps. Otherwise the frames' own times are kept on a
        // fine clock (1/90000 s, MPEG's), so variable-rate sources (GIF frame delays, gaps) keep their timing
        // instead of being rounded onto a grid of the average rate.
        timeBase = options.fps == nil ? AVRational(num: 1, den: 90_000) : AVRational(num: rate.den, den: rate.num)
        ticksPerFrame = max(1, av_rescale_q(1, AVRational(num: rate.den, den: rate.num), timeBase))
        guard options.crf >= 0, options.crf <= 63 else { throw MediaError.invalidArgument("\(TerminalText.quoted(path)): crf \(options.crf) is out of range 0...63") }
        guard VideoEncodingOptions.presets.contains(options.preset) else {
            throw MediaError.invalidArgument("\(TerminalText.quoted(path)): unknown preset \"\(options.preset)\"")
        }
        guard ["auto", "yuv420p", "yuv444p"].contains(options.pixelFormat) else {
            throw MediaError.invalidArgument("\(TerminalText.quoted(path)): unknown pixel format \"\(options.pixelFormat)\"; use auto, yuv420p or yuv444p")
        }
        guard av_guess_format(nil, path, nil) != nil else {
            throw MediaError.invalidArgument("\(TerminalText.quoted(path)): no container format for this extension")
        }
    }

    deinit {
        avcodec_free_context(&encoder)
        av_packet_free(&packet)
        if let output {
            if output.pointee.oformat.pointee.flags & AVFMT_NOFILE == 0 { avio_closep(&output.pointee.pb) }
            avformat_free_context(output)
        }
    }

    private func fail(_ status: Int32, _ what: String) -> MediaError {
        .encodeFailed(path: path, reason: "\(what): \(AV.describe(status))")
    }

    /// Opens everything once the first frame gives the size.
    private func start(with frame: Frame) throws {
        frameWidth = frame.width
        frameHeight = frame.height
        try MediaLimits.check(width: frameWidth, height: frameHeight, path: path)
        let deep = frame.color.bitDepth > 8
        let yuvFormat = options.pixelFormat == "yuv444p" ? AV_PIX_FMT_YUV444P : AV_PIX_FMT_YUV420P
        let encoderName: String
        var filter: String
        var target: AVPixelFormat
        var isYUV = false
        switch codecName {
        case "h264", "vp9":
            encoderName = codecName == "h264" ? "libx264" : "libvpx-vp9"
            target = yuvFormat
            isYUV = true
            inputLayout = .forChannels(3, sixteenBit: false)
            filter = "scale=out_color_matrix=bt709:out_range=tv:flags=bicubic+accurate_rnd+full_chroma_int,format=\(AV.pixelFormatName(target))"
        case "h264rgb":
            encoderName = "libx264rgb"
            target = AV_PIX_FMT_RGB24
            inputLayout = .forChannels(3, sixteenBit: false)
            filter = "null"
        case "gif":
            encoderName = "gif"
            target = AV_PIX_FMT_PAL8
            inputLayout = .forChannels(frame.channels == 4 || frame.channels == 2 ? 4 : 3, sixteenBit: false)
            // palettegen needs every frame before the first output, so libavfilter queues them (as 8-bit frames);
            // one pass keeps the upstream from running twice.
            filter = "split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse=dither=sierra2_4a"
        default:  // ffv1: store exactly what the frame holds
            encoderName = "ffv1"
            let channels = frame.channels == 2 && deep ? 4 : frame.channels
            inputLayout = .forChannels(channels, sixteenBit: deep)
            target = switch (channels, deep) {
            case (3, false): AV_PIX_FMT_BGR0
            case (4, false): AV_PIX_FMT_BGRA
            default: inputLayout.format
            }
            filter = "null"
        }
        // 4:2:0 H.264 needs even sizes: repeat the last column/row rather than refuse or distort.
        codedWidth = frameWidth
        codedHeight = frameHeight
        if isYUV, target == AV_PIX_FMT_YUV420P, frameWidth % 2 == 1 || frameHeight % 2 == 1 {
            codedWidth += frameWidth % 2
            codedHeight += frameHeight % 2
            notes.append("padded \(frameWidth)x\(frameHeight) to \(codedWidth)x\(codedHeight) for yuv420p by repeating the edge")
        }

        guard let codec = avcodec_find_encoder_by_name(encoderName) else {
            throw MediaError.unsupportedCodec(path: path, codec: "\(encoderName) (no such encoder in this libavcodec)")
        }
        var context: UnsafeMutablePointer<AVFormatContext>?
        var status = avformat_alloc_output_context2(&context, av_guess_format(nil, path, nil), nil, tempPath)
        guard status >= 0, let context else { throw fail(status, "cannot create the container") }
        output = context
        guard avformat_query_codec(context.pointee.oformat, codec.pointee.id, FF_COMPLIANCE_NORMAL) == 1 else {
            throw MediaError.encodeFailed(path: path, reason: "the \(String(cString: context.pointee.oformat.pointee.name)) container cannot hold \(encoderName); pick a matching codec or extension")
        }
        pipeline = try FilterPipeline(text: filter, width: codedWidth, height: codedHeight, format: inputLayout.format,
                                      timeBase: timeBase, frameRate: rate,
                                      outputFormats: [target])

        guard let encoder = avcodec_alloc_context3(codec), let packet = av_packet_alloc() else {
            throw MediaError.encodeFailed(path: path, reason: "out of memory")
        }
        self.encoder = encoder
        self.packet = packet
        encoder.pointee.width = Int32(codedWidth)
        encoder.pointee.height = Int32(codedHeight)
        encoder.pointee.pix_fmt = target
        encoder.pointee.time_base = timeBase
        encoder.pointee.framerate = rate
        encoder.pointee.sample_aspect_ratio = AVRational(num: 1, den: 1)
        encoder.pointee.thread_count = 0
        if isYUV {
            encoder.pointee.colorspace = AVCOL_SPC_BT709
            encoder.pointee.color_primaries = AVCOL_PRI_BT709
            encoder.pointee.color_trc = AVCOL_TRC_BT709
            encoder.pointee.color_range = AVCOL_RANGE_MPEG
        } else if target != AV_PIX_FMT_PAL8 {
            encoder.pointee.colorspace = AVCOL_SPC_RGB
            encoder.pointee.color_range = AVCOL_RANGE_JPEG
        }
        if context.pointee.oformat.pointee.flags & AVFMT_GLOBALHEADER != 0 {
            encoder.pointee.flags |= AV_CODEC_FLAG_GLOBAL_HEADER
        }
        var settings: OpaquePointer?
        defer { av_dict_free(&settings) }
        switch encoderName {
        case "libx264", "libx264rgb":
            av_dict_set(&settings, "preset", options.preset, 0)
            av_dict_set(&settings, "crf", encoderName == "libx264rgb" ? "0" : String(options.crf), 0)
        case "libvpx-vp9":
            av_dict_set(&settings, "crf", String(options.crf), 0)
            av_dict_set(&settings, "b", "0", 0)
            av_dict_set(&settings, "row-mt", "1", 0)
            let speed = max(0, min(8, 8 - (VideoEncodingOptions.presets.firstIndex(of: options.preset) ?? 5)))
            av_dict_set(&settings, "cpu-used", String(speed), 0)
            if options.crf == 0 { av_dict_set(&settings, "lossless", "1", 0) }
        case "ffv1":
            av_dict_set(&settings, "level", "3", 0)
        default: break
        }
        status = avcodec_open2(encoder, codec, &settings)
        guard status >= 0 else { throw fail(status, "cannot open the \(encoderName) encoder") }
        guard let stream = avformat_new_stream(context, nil) else { throw MediaError.encodeFailed(path: path, reason: "out of memory") }
        self.stream = stream
        stream.pointee.time_base = encoder.pointee.time_base
        stream.pointee.avg_frame_rate = rate
        status = avcodec_parameters_from_context(stream.pointee.codecpar, encoder)
        guard status >= 0 else { throw fail(status, "stream parameters") }

        if let source = options.audioFrom {
            audio = try AudioCopier(source: source, output: context, destination: path)
        }
        if context.pointee.oformat.pointee.flags & AVFMT_NOFILE == 0 {
            AV.clearLog()
            status = avio_open(&context.pointee.pb, tempPath, AVIO_FLAG_WRITE)
            guard status >= 0 else { throw MediaError.cannotWrite(path: path, reason: AV.describe(status)) }
        }
        AV.clearLog()
        status = avformat_write_header(context, nil)
        guard status >= 0 else { throw fail(status, "cannot write the container header") }
        headerWritten = true
    }

    /// Encodes one frame. Every frame must have the first frame's size.
    func write(_ frame: Frame) throws {
        if pipeline == nil { try start(with: frame) }
        guard frame.width == frameWidth, frame.height == frameHeight else {
            throw MediaError.inconsistentFrames(path: path, reason:
                "frame \(framesWritten) is \(frame.width)x\(frame.height) but the video is \(frameWidth)x\(frameHeight); add a Resize node")
        }
        var pts = nextPTS
        if options.fps == nil, let time = frame.time {
            guard let ticks = AV.timestamp(seconds: time, unitsPerSecond: av_q2d(AVRational(num: timeBase.den, den: timeBase.num))) else {
                throw MediaError.inconsistentFrames(path: path, reason: "frame \(framesWritten) has an unusable time (\(time) s)")
            }
            // Keep source timestamps (variable-rate GIFs, gaps), but never reorder or repeat one.
            pts = max(nextPTS, ticks)
            nextPTS = pts + 1
        } else {
            nextPTS = pts + ticksPerFrame
        }
        let av = try FrameBridge.packed(frame, layout: inputLayout, width: codedWidth, height: codedHeight)
        av.pointee.pts = pts
        var owned: UnsafeMutablePointer<AVFrame>? = av
        defer { av_frame_free(&owned) }
        try pipeline!.push(av)
        try drainFilter()
        framesWritten += 1
    }

    private func drainFilter() throws {
        guard let pipeline, let encoder else { return }
        while let filtered = try pipeline.pull() {
            filtered.pointee.pts = av_rescale_q(filtered.pointee.pts, pipeline.outputTimeBase, encoder.pointee.time_base)
            filtered.pointee.pict_type = AV_PICTURE_TYPE_NONE
            let status = avcodec_send_frame(encoder, filtered)
            guard status >= 0 else { throw fail(status, "encoder rejected frame") }
            try drainEncoder()
        }
    }

    private func drainEncoder() throws {
        guard let encoder, let packet, let stream, let output else { return }
        while true {
            let status = avcodec_receive_packet(encoder, packet)
            if status == AV.eagain || status == AV.eof { return }
            guard status >= 0 else { throw fail(status, "encoding") }
            av_packet_rescale_ts(packet, encoder.pointee.time_base, stream.pointee.time_base)
            packet.pointee.stream_index = stream.pointee.index
            if let audio {
                let until = packet.pointee.dts == AV.noPTS ? packet.pointee.pts : packet.pointee.dts
                try audio.copy(until: Double(until) * av_q2d(stream.pointee.time_base))
            }
            let written = av_interleaved_write_frame(output, packet)
            guard written >= 0 else { throw MediaError.cannotWrite(path: path, reason: AV.describe(written)) }
        }
    }

    /// Flushes the filter and the encoder and writes the trailer. Zero frames is an error: there is no empty video.
    func finish() throws {
        guard framesWritten > 0, let pipeline, let encoder, let output else {
            throw MediaError.encodeFailed(path: path, reason: "no frames to write")
        }
        try pipeline.push(nil)
        try drainFilter()
        let status = avcodec_send_frame(encoder, nil)
        guard status >= 0 else { throw fail(status, "flushing the encoder") }
        try drainEncoder()
        try audio?.copy(until: .infinity)
        let trailer = av_write_trailer(output)
        guard trailer >= 0 else { throw MediaError.cannotWrite(path: path, reason: AV.describe(trailer)) }
        if headerWritten, output.pointee.oformat.pointee.flags & AVFMT_NOFILE == 0 {
            let closed = avio_closep(&output.pointee.pb)
            guard closed >= 0 else { throw MediaError.cannotWrite(path: path, reason: AV.describe(closed)) }
        }
    }
}

/// Copies the packets of a source file's first audio stream into an output, interleaved by time.
final class AudioCopier {
    private let source: String
    private var input: UnsafeMutablePointer<AVFormatContext>?
    private var packet: UnsafeMutablePointer<AVPacket>?
    private let output: UnsafeMutablePointer<AVFormatContext>
    private let inputIndex: Int32
    private let outputStream: UnsafeMutablePointer<AVStream>
    private var pending = false
    private var ended = false
    private let destination: String

    init(source: String, output: UnsafeMutablePointer<AVFormatContext>, destination: String) throws {
        self.source = source
        self.output = output
        self.destination = destination
        let context = try AV.openInput(source)
        input = context
        var status: Int32
        status = avformat_find_stream_info(context, nil)
        guard status >= 0 else {
            avformat_close_input(&input)
            throw MediaError.cannotOpen(path: source, reason: AV.describe(status))
        }
        let index = av_find_best_stream(context, AVMEDIA_TYPE_AUDIO, -1, -1, nil, 0)
        guard index >= 0, let stream = context.pointee.streams[Int(index)] else {
            avformat_close_input(&input)
            throw MediaError.cannotOpen(path: source, reason: "audio_from: the file has no audio stream")
        }
        let codecID = stream.pointee.codecpar.pointee.codec_id
        guard avformat_query_codec(output.pointee.oformat, codecID, FF_COMPLIANCE_NORMAL) == 1 else {
            avformat_close_input(&input)
            throw MediaError.encodeFailed(path: destination, reason:
                "audio_from \(source): \(String(cString: avcodec_get_name(codecID))) audio cannot be stored in a \(String(cString: output.pointee.oformat.pointee.name)) file")
        }
        guard let out = avformat_new_stream(output, nil), let packet = av_packet_alloc() else {
            avformat_close_input(&input)
            throw MediaError.encodeFailed(path: destination, reason: "out of memory")
        }
        status = avcodec_parameters_copy(out.pointee.codecpar, stream.pointee.codecpar)
        guard status >= 0 else {
            avformat_close_input(&input)
            var p: UnsafeMutablePointer<AVPacket>? = packet
            av_packet_free(&p)
            throw MediaError.encodeFailed(path: destination, reason: "audio_from \(source): \(AV.describe(status))")
        }
        out.pointee.codecpar.pointee.codec_tag = 0
        out.pointee.time_base = stream.pointee.time_base
        inputIndex = index
        outputStream = out
        self.packet = packet
    }

    deinit {
        av_packet_free(&packet)
        avformat_close_input(&input)
    }

    /// Writes source audio packets up to `seconds` (all remaining ones for `.infinity`).
    func copy(until seconds: Double) throws {
        guard let input, let packet else { return }
        let inTimeBase = input.pointee.streams[Int(inputIndex)]!.pointee.time_base
        while !ended {
            if !pending {
                let status = av_read_frame(input, packet)
                if status < 0 {
                    ended = true
                    if status != AV.eof { throw MediaError.decodeFailed(path: source, reason: AV.describe(status)) }
                    return
                }
                if packet.pointee.stream_index != inputIndex {
                    av_packet_unref(packet)
                    continue
                }
                pending = true
            }
            let ts = packet.pointee.dts != AV.noPTS ? packet.pointee.dts : packet.pointee.pts
            if ts != AV.noPTS, Double(ts) * av_q2d(inTimeBase) > seconds { return }
            av_packet_rescale_ts(packet, inTimeBase, outputStream.pointee.time_base)
            packet.pointee.stream_index = outputStream.pointee.index
            packet.pointee.pos = -1
            pending = false
            let status = av_interleaved_write_frame(output, packet)
            guard status >= 0 else { throw MediaError.cannotWrite(path: destination, reason: "audio: " + AV.describe(status)) }
        }
    }
}
