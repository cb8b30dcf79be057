import CFFmpeg
import CMediaHelpers
import Foundation
import LapseSupport
import LapseTensor

/// Incremental decoding of the best video stream of any file libav opens (containers, GIF, still images,
/// image sequences such as `frame_%05d.png`), one frame per call.
final class VideoDecoder {
    let path: String
    private var format: UnsafeMutablePointer<AVFormatContext>?
    private var codec: UnsafeMutablePointer<AVCodecContext>?
    private var packet: UnsafeMutablePointer<AVPacket>?
    private var decoded: UnsafeMutablePointer<AVFrame>?
    private var converted: UnsafeMutablePointer<AVFrame>?
    private var sws: OpaquePointer?
    private var streamIndex: Int32 = -1
    private var timeBase = AVRational(num: 1, den: 1)
    private var startTime: Int64 = 0
    private var flushing = false
    private var decodedCount = 0
    /// What the container says before decoding.
    private(set) var info = FrameStreamInfo()

    init(path: String) throws {
        self.path = path
        _ = AV.configureLogging
        let context = try AV.openInput(path)
        format = context
        // Decoders opened while probing get the pixel cap too, so a header claiming 100000x100000 is refused by
        // libav before it allocates, and its log line names the size.
        var probeOptions = [OpaquePointer?](repeating: nil, count: Int(context.pointee.nb_streams))
        for i in probeOptions.indices { av_dict_set(&probeOptions[i], "max_pixels", String(MediaLimits.maxPixels), 0) }
        defer { for i in probeOptions.indices { av_dict_free(&probeOptions[i]) } }
        AV.clearLog()
        var status = probeOptions.withUnsafeMutableBufferPointer { avformat_find_stream_info(context, $0.baseAddress) }
        // A container with a stream but no packets ends while probing.
        if status == AV.eof { throw MediaError.noFrames(path: path) }
        guard status >= 0 else { throw MediaError.cannotOpen(path: path, reason: AV.describe(status)) }
        // What probing logged (e.g. "Picture size 100000x100000 exceeds …"), to explain a size it could not read.
        let probeLog = String(cString: lapse_av_last_error())
        AV.clearLog()

        var decoder: UnsafePointer<AVCodec>?
        let index = av_find_best_stream(context, AVMEDIA_TYPE_VIDEO, -1, -1, &decoder, 0)
        if index == lapse_averror_stream_not_found() { throw MediaError.noVideoStream(path: path) }
        guard index >= 0, let stream = context.pointee.streams[Int(index)], let parameters = stream.pointee.codecpar else {
            if index == lapse_averror_decoder_not_found(), context.pointee.nb_streams > 0 {
                throw MediaError.unsupportedCodec(path: path, codec: Self.codecName(context))
            }
            throw MediaError.cannotOpen(path: path, reason: AV.message(index))
        }
        guard let decoder else { throw MediaError.unsupportedCodec(path: path, codec: Self.codecName(context)) }
        streamIndex = index
        let width = Int(parameters.pointee.width), height = Int(parameters.pointee.height)
        if width <= 0 || height <= 0 {
            // Probing could not decode a frame header: say what libav said (often the real, refused size).
            throw MediaError.cannotOpen(path: path, reason: "the frame size could not be read"
                + (probeLog.isEmpty ? "" : " (\(probeLog))") + "; supported sizes: \(MediaLimits.description)")
        }
        try MediaLimits.check(width: width, height: height, path: path)

        guard let codec = avcodec_alloc_context3(decoder) else { throw MediaError.cannotOpen(path: path, reason: "out of memory") }
        self.codec = codec
        status = avcodec_parameters_to_context(codec, parameters)
        guard status >= 0 else { throw MediaError.cannotOpen(path: path, reason: AV.message(status)) }
        codec.pointee.thread_count = 0
        // Intra-only codecs (still images, MJPEG, FFV1) gain little from frame threading, and libavcodec 5.1's
        // frame-threaded WebP decoder aborts the process on some corrupt files (an assertion in decode.c, found by
        // the `image` fuzz family); slice threads only for them.
        if let descriptor = avcodec_descriptor_get(parameters.pointee.codec_id),
           descriptor.pointee.props & AV_CODEC_PROP_INTRA_ONLY != 0 {
            codec.pointee.thread_type = FF_THREAD_SLICE
        }
        // libav refuses larger frames itself, before allocating them (a size change mid-stream included).
        codec.pointee.max_pixels = Int64(MediaLimits.maxPixels)
        status = avcodec_open2(codec, decoder, nil)
        guard status >= 0 else {
            throw MediaError.unsupportedCodec(path: path, codec: "\(String(cString: decoder.pointee.name)): \(AV.message(status))")
        }
        packet = av_packet_alloc()
        decoded = av_frame_alloc()
        converted = av_frame_alloc()
        guard packet != nil, decoded != nil, converted != nil else { throw MediaError.cannotOpen(path: path, reason: "out of memory") }

        timeBase = stream.pointee.time_base
        startTime = stream.pointee.start_time == AV.noPTS ? 0 : stream.pointee.start_time
        let rate = AV.rational(stream.pointee.avg_frame_rate) ?? AV.rational(stream.pointee.r_frame_rate)
        let frames = stream.pointee.nb_frames > 0 ? Int(stream.pointee.nb_frames) : nil
        let layout = PackedLayout.preserving(AVPixelFormat(rawValue: parameters.pointee.format))
        let yuv = PackedLayout.isYUV(AVPixelFormat(rawValue: parameters.pointee.format))
        let color = ColorInfo(
            matrix: yuv ? ColorTags.matrixName(parameters.pointee.color_space, height: height) : "rgb",
            range: yuv && parameters.pointee.color_range != AVCOL_RANGE_JPEG ? "limited" : "full",
            bitDepth: layout.sixteenBit ? 16 : 8)
        info = FrameStreamInfo(width: width, height: height, frameRate: rate, frameCount: frames, sourcePath: path,
                               color: color)
    }

    deinit {
        sws_freeContext(sws)
        av_frame_free(&decoded)
        av_frame_free(&converted)
        av_packet_free(&packet)
        avcodec_free_context(&codec)
        avformat_close_input(&format)
    }

    private static func codecName(_ context: UnsafeMutablePointer<AVFormatContext>) -> String {
        for i in 0..<Int(context.pointee.nb_streams) {
            if let par = context.pointee.streams[i]?.pointee.codecpar, par.pointee.codec_type == AVMEDIA_TYPE_VIDEO {
                return String(cString: avcodec_get_name(par.pointee.codec_id)) + " (no decoder in this libavcodec)"
            }
        }
        return "unknown"
    }

    /// The next decoded frame as libav gives it (valid until the next call), or nil at the end.
    func nextRaw() throws -> UnsafeMutablePointer<AVFrame>? {
        guard let codec, let decoded, let packet, let format else { return nil }
        AV.clearLog()
        while true {
            av_frame_unref(decoded)
            let received = avcodec_receive_frame(codec, decoded)
            if received >= 0 {
                decodedCount += 1
                return decoded
            }
            if received == AV.eof { return nil }
            guard received == AV.eagain else { throw MediaError.decodeFailed(path: path, reason: AV.describe(received)) }
            if flushing { return nil }
            let read = av_read_frame(format, packet)
            if read < 0 {
                if read != AV.eof, let pb = format.pointee.pb, pb.pointee.error < 0 {
                    throw MediaError.decodeFailed(path: path, reason: AV.message(read))
                }
                avcodec_send_packet(codec, nil)
                flushing = true
                continue
            }
            defer { av_packet_unref(packet) }
            guard packet.pointee.stream_index == streamIndex else { continue }
            let sent = avcodec_send_packet(codec, packet)
            if sent < 0, sent != AV.eagain, sent != AV.eof {
                throw MediaError.decodeFailed(path: path, reason: "frame \(decodedCount): \(AV.describe(sent))")
            }
        }
    }

    /// Presentation time of a decoded frame in seconds from the stream start.
    func time(of frame: UnsafeMutablePointer<AVFrame>) -> Double? {
        let pts = frame.pointee.best_effort_timestamp
        guard pts != AV.noPTS else { return nil }
        return Double(pts - startTime) * av_q2d(timeBase)
    }

    /// Converts a decoded frame to planar float, honouring its YUV matrix and range.
    func convert(_ frame: UnsafeMutablePointer<AVFrame>, index: Int) throws -> Frame {
        let width = Int(frame.pointee.width), height = Int(frame.pointee.height)
        try MediaLimits.check(width: width, height: height, path: path)
        let source = AVPixelFormat(rawValue: frame.pointee.format)
        let layout = PackedLayout.preserving(source)
        let yuv = PackedLayout.isYUV(source)
        let matrix = yuv ? ColorTags.matrixName(frame.pointee.colorspace, height: height) : "rgb"
        let fullRange = !yuv || frame.pointee.color_range == AVCOL_RANGE_JPEG
            || [AV_PIX_FMT_YUVJ420P, AV_PIX_FMT_YUVJ422P, AV_PIX_FMT_YUVJ444P, AV_PIX_FMT_YUVJ440P].contains(source)
        let packed: UnsafeMutablePointer<AVFrame>
        if source == layout.format {
            packed = frame
        } else {
            guard let converted else { throw MediaError.decodeFailed(path: path, reason: "out of memory") }
            // Full-resolution chroma interpolation for quality; SWS_ACCURATE_RND is left out because it disables
            // swscale's SIMD paths (4x the conversion time at 1080p) for at most one code value.
            let flags = SWS_BICUBIC | SWS_FULL_CHR_H_INT | SWS_FULL_CHR_H_INP
            guard let context = sws_getCachedContext(sws, Int32(width), Int32(height), source, Int32(width),
                                                     Int32(height), layout.format, flags, nil, nil, nil) else {
                throw MediaError.decodeFailed(path: path, reason: "cannot convert from \(AV.pixelFormatName(source))")
            }
            sws = context
            if yuv {
                let table = sws_getCoefficients(ColorTags.swsColorspace(matrix))
                sws_setColorspaceDetails(context, table, fullRange ? 1 : 0, sws_getCoefficients(SWS_CS_DEFAULT), 1,
                                         0, 1 << 16, 1 << 16)
            }
            if converted.pointee.width != Int32(width) || converted.pointee.height != Int32(height)
                || converted.pointee.format != layout.format.rawValue {
                av_frame_unref(converted)
                converted.pointee.width = Int32(width)
                converted.pointee.height = Int32(height)
                converted.pointee.format = layout.format.rawValue
                let status = av_frame_get_buffer(converted, 0)
                guard status >= 0 else { throw MediaError.decodeFailed(path: path, reason: AV.message(status)) }
            }
            let status = sws_scale_frame(context, converted, frame)
            guard status >= 0 else { throw MediaError.decodeFailed(path: path, reason: AV.message(status)) }
            packed = converted
        }
        let tensor = PixelPacking.unpack(UnsafeRawPointer(packed.pointee.data.0!), lineSize: Int(packed.pointee.linesize.0),
                                         width: width, height: height, channels: layout.channels,
                                         sixteenBit: layout.sixteenBit)
        return Frame(image: tensor, index: index, time: time(of: frame),
                     color: ColorInfo(matrix: matrix, range: fullRange ? "full" : "limited",
                                      bitDepth: layout.sixteenBit ? 16 : 8))
    }
}
