import CFFmpeg
import Foundation
import LapseSupport
import LapseTensor

/// One configured libavfilter graph between a `buffer` source and a `buffersink`, fed and drained frame by frame.
///
/// Every graph text goes through `FilterAllowList` before libavfilter parses it, and the parsed graph's filters are
/// checked against the list again; every link of the configured graph must carry frames within `MediaLimits`, so a
/// `scale=100000:100000` fails when the graph is built, before any frame memory is allocated.
final class FilterPipeline {
    let text: String
    private var graph: UnsafeMutablePointer<AVFilterGraph>?
    private var source: UnsafeMutablePointer<AVFilterContext>?
    private var sink: UnsafeMutablePointer<AVFilterContext>?
    private var output: UnsafeMutablePointer<AVFrame>?
    private(set) var ended = false

    /// Builds and configures the graph for input frames of one size and format; `outputFormats` restricts what
    /// the sink accepts, so libavfilter inserts any conversion inside the graph.
    init(text: String, width: Int, height: Int, format: AVPixelFormat, timeBase: AVRational, frameRate: AVRational?,
         outputFormats: [AVPixelFormat]) throws {
        self.text = text
        let checked = try FilterAllowList.sanitize(text)
        _ = AV.configureLogging
        AV.clearLog()
        guard let graph = avfilter_graph_alloc() else { throw MediaError.filterFailed(graph: text, reason: "out of memory") }
        self.graph = graph
        graph.pointee.nb_threads = 0
        var arguments = "video_size=\(width)x\(height):pix_fmt=\(format.rawValue):time_base=\(timeBase.num)/\(timeBase.den):pixel_aspect=1/1"
        if let frameRate, frameRate.num > 0, frameRate.den > 0 { arguments += ":frame_rate=\(frameRate.num)/\(frameRate.den)" }
        let status = avfilter_graph_create_filter(&source, avfilter_get_by_name("buffer"), "in", arguments, nil, graph)
        guard status >= 0 else { throw MediaError.filterFailed(graph: text, reason: "buffer source: " + AV.describe(status)) }
        let sink = try Self.makeSink(in: graph, text: text, formats: outputFormats)
        self.sink = sink

        // The graph text's unlabelled input joins our source ("in"), its unlabelled output our sink ("out").
        var outputsAllocated = avfilter_inout_alloc()
        var inputsAllocated = avfilter_inout_alloc()
        guard let outputs = outputsAllocated, let inputs = inputsAllocated else {
            avfilter_inout_free(&outputsAllocated)
            avfilter_inout_free(&inputsAllocated)
            throw MediaError.filterFailed(graph: text, reason: "out of memory")
        }
        Self.point(outputs, named: "in", at: source)
        Self.point(inputs, named: "out", at: sink)
        try Self.parseAndConfigure(graph, text: text, checked: checked, inputs: inputs, outputs: outputs,
                                   endpoints: [source, sink], generators: false)
        output = av_frame_alloc()
        guard output != nil else { throw MediaError.filterFailed(graph: text, reason: "out of memory") }
    }

    /// Builds a graph that starts with a source filter (`testsrc2=…`, `smptehdbars=…`) and has no input.
    init(generator text: String, outputFormats: [AVPixelFormat]) throws {
        self.text = text
        let checked = try FilterAllowList.sanitize(text, generators: true)
        _ = AV.configureLogging
        AV.clearLog()
        guard let graph = avfilter_graph_alloc() else { throw MediaError.filterFailed(graph: text, reason: "out of memory") }
        self.graph = graph
        let sink = try Self.makeSink(in: graph, text: text, formats: outputFormats)
        self.sink = sink
        guard let inputs = avfilter_inout_alloc() else { throw MediaError.filterFailed(graph: text, reason: "out of memory") }
        Self.point(inputs, named: "out", at: sink)
        try Self.parseAndConfigure(graph, text: text, checked: checked, inputs: inputs, outputs: nil, endpoints: [sink],
                                   generators: true)
        output = av_frame_alloc()
        guard output != nil else { throw MediaError.filterFailed(graph: text, reason: "out of memory") }
    }

    /// A `buffersink` named "out" that accepts only `formats`, so libavfilter inserts any conversion inside the graph.
    private static func makeSink(in graph: UnsafeMutablePointer<AVFilterGraph>, text: String,
                                 formats: [AVPixelFormat]) throws -> UnsafeMutablePointer<AVFilterContext> {
        var sink: UnsafeMutablePointer<AVFilterContext>?
        var status = avfilter_graph_create_filter(&sink, avfilter_get_by_name("buffersink"), "out", nil, nil, graph)
        guard status >= 0, let sink else { throw MediaError.filterFailed(graph: text, reason: "buffer sink: " + AV.describe(status)) }
        status = formats.withUnsafeBytes { bytes in
            av_opt_set_bin(sink, "pix_fmts", bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(bytes.count),
                           AV_OPT_SEARCH_CHILDREN)
        }
        guard status >= 0 else { throw MediaError.filterFailed(graph: text, reason: "sink formats: " + AV.describe(status)) }
        return sink
    }

    /// Makes `entry` a one-element list naming `filter`'s first pad, as avfilter_graph_parse_ptr expects.
    private static func point(_ entry: UnsafeMutablePointer<AVFilterInOut>, named name: String,
                              at filter: UnsafeMutablePointer<AVFilterContext>?) {
        entry.pointee.name = av_strdup(name)
        entry.pointee.filter_ctx = filter
        entry.pointee.pad_idx = 0
        entry.pointee.next = nil
    }

    /// Parses the checked text between the given endpoints, checks the parsed filters against the allow-list again,
    /// configures the graph and checks every link's frame size.
    private static func parseAndConfigure(_ graph: UnsafeMutablePointer<AVFilterGraph>, text: String, checked: String,
                                          inputs: UnsafeMutablePointer<AVFilterInOut>?,
                                          outputs: UnsafeMutablePointer<AVFilterInOut>?,
                                          endpoints: [UnsafeMutablePointer<AVFilterContext>?], generators: Bool) throws {
        var inputList = inputs, outputList = outputs
        var status = avfilter_graph_parse_ptr(graph, checked, &inputList, &outputList, nil)
        // parse_ptr took over the lists and returned what stayed unlinked; free that instead of the originals.
        avfilter_inout_free(&inputList)
        avfilter_inout_free(&outputList)
        guard status >= 0 else { throw MediaError.filterFailed(graph: text, reason: AV.describe(status)) }
        for filter in filters(of: graph) where !endpoints.contains(filter) {
            let name = filter.pointee.filter.map { String(cString: $0.pointee.name) } ?? "?"
            guard FilterAllowList.isAllowed(name, generators: generators) else {
                throw MediaError.filterRefused(graph: text, reason: "filter \(name) is not allowed")
            }
        }
        status = avfilter_graph_config(graph, nil)
        guard status >= 0 else {
            var reason = AV.describe(status)
            // libav's own size check ("Picture size 100000x100000 is invalid") ran first: add Lapse's limits.
            if reason.contains("Picture size") { reason += "; supported frame sizes: \(MediaLimits.description)" }
            throw MediaError.filterFailed(graph: text, reason: reason)
        }
        for filter in filters(of: graph) {
            for i in 0..<Int(filter.pointee.nb_outputs) {
                guard let link = filter.pointee.outputs[i], link.pointee.type == AVMEDIA_TYPE_VIDEO else { continue }
                let width = Int(link.pointee.w), height = Int(link.pointee.h)
                guard MediaLimits.allows(width: width, height: height) else {
                    let name = filter.pointee.filter.map { String(cString: $0.pointee.name) } ?? "?"
                    throw MediaError.filterFailed(graph: text, reason:
                        "\(name) would make \(width)x\(height) frames; supported frame sizes: \(MediaLimits.description)")
                }
            }
        }
    }

    /// The filter instances of a graph (including the source and sink and any conversions libavfilter inserted).
    private static func filters(of graph: UnsafeMutablePointer<AVFilterGraph>) -> [UnsafeMutablePointer<AVFilterContext>] {
        (0..<Int(graph.pointee.nb_filters)).compactMap { graph.pointee.filters[$0] }
    }

    deinit {
        av_frame_free(&output)
        avfilter_graph_free(&graph)
    }

    var outputWidth: Int { Int(av_buffersink_get_w(sink)) }
    var outputHeight: Int { Int(av_buffersink_get_h(sink)) }
    var outputFormat: AVPixelFormat { AVPixelFormat(rawValue: av_buffersink_get_format(sink)) }
    var outputTimeBase: AVRational { av_buffersink_get_time_base(sink) }
    var outputFrameRate: AVRational { av_buffersink_get_frame_rate(sink) }

    /// Hands a frame to the graph (taking its reference), or signals the end with nil.
    func push(_ frame: UnsafeMutablePointer<AVFrame>?) throws {
        AV.clearLog()
        let status = av_buffersrc_add_frame_flags(source, frame, 0)
        guard status >= 0 else { throw MediaError.filterFailed(graph: text, reason: AV.describe(status)) }
    }

    /// The next filtered frame (valid until the next call), or nil when the graph needs more input or has ended.
    func pull() throws -> UnsafeMutablePointer<AVFrame>? {
        guard let output, !ended else { return nil }
        av_frame_unref(output)
        let status = av_buffersink_get_frame(sink, output)
        if status >= 0 { return output }
        if status == AV.eof {
            ended = true
            return nil
        }
        if status == AV.eagain { return nil }
        throw MediaError.filterFailed(graph: text, reason: AV.describe(status))
    }
}

/// Conversions between `Frame` and libav frames.
enum FrameBridge {
    /// A new libav frame holding `frame` as packed integers in `layout`, padded by edge repetition to the given size.
    static func packed(_ frame: Frame, layout: PackedLayout, width: Int? = nil, height: Int? = nil) throws
        -> UnsafeMutablePointer<AVFrame> {
        let w = width ?? frame.width, h = height ?? frame.height
        guard let av = av_frame_alloc() else { throw MediaError.invalidArgument("out of memory for a \(w)x\(h) frame") }
        av.pointee.width = Int32(w)
        av.pointee.height = Int32(h)
        av.pointee.format = layout.format.rawValue
        let status = av_frame_get_buffer(av, 0)
        guard status >= 0 else {
            var doomed: UnsafeMutablePointer<AVFrame>? = av
            av_frame_free(&doomed)
            throw MediaError.invalidArgument("cannot allocate a \(w)x\(h) frame: \(AV.message(status))")
        }
        PixelPacking.pack(frame.image, into: UnsafeMutableRawPointer(av.pointee.data.0!), lineSize: Int(av.pointee.linesize.0),
                          outChannels: layout.channels, sixteenBit: layout.sixteenBit, paddedWidth: w, paddedHeight: h)
        return av
    }

    /// Planar float formats for a channel count: gray, or RGB(A) (gray+alpha travels as RGBA).
    static func floatFormat(channels: Int) -> AVPixelFormat {
        switch channels {
        case 1: AV_PIX_FMT_GRAYF32LE
        case 3: AV_PIX_FMT_GBRPF32LE
        default: AV_PIX_FMT_GBRAPF32LE
        }
    }

    /// libav stores planar RGB as G, B, R(, A); this maps our channel order onto its plane numbers.
    private static func planeIndex(channel: Int, format: AVPixelFormat) -> Int {
        format == AV_PIX_FMT_GRAYF32LE ? 0 : [2, 0, 1, 3][channel]
    }

    /// A new libav frame holding `frame` as planar float (no quantisation, so filters that only move pixels are exact).
    static func planarFloat(_ frame: Frame) throws -> UnsafeMutablePointer<AVFrame> {
        let format = floatFormat(channels: frame.channels)
        var image = frame.image
        if frame.channels == 2 {
            // Gray+alpha has no float format in libav: widen to RGBA.
            var rgba = Tensor(zeros: [4, frame.height, frame.width])
            let plane = frame.width * frame.height
            frame.image.withUnsafeBufferPointer { src in
                rgba.withUnsafeMutableBufferPointer { dst in
                    for c in 0..<3 { (dst.baseAddress! + c * plane).update(from: src.baseAddress!, count: plane) }
                    (dst.baseAddress! + 3 * plane).update(from: src.baseAddress! + plane, count: plane)
                }
            }
            image = rgba
        }
        guard let av = av_frame_alloc() else { throw MediaError.invalidArgument("out of memory") }
        av.pointee.width = Int32(frame.width)
        av.pointee.height = Int32(frame.height)
        av.pointee.format = format.rawValue
        let status = av_frame_get_buffer(av, 0)
        guard status >= 0 else {
            var doomed: UnsafeMutablePointer<AVFrame>? = av
            av_frame_free(&doomed)
            throw MediaError.invalidArgument("cannot allocate a \(frame.width)x\(frame.height) frame: \(AV.message(status))")
        }
        let channels = image.shape[0], plane = frame.width * frame.height
        withUnsafeMutablePointer(to: &av.pointee.data) { data in
            data.withMemoryRebound(to: UnsafeMutablePointer<UInt8>?.self, capacity: 8) { planes in
                withUnsafePointer(to: &av.pointee.linesize) { lines in
                    lines.withMemoryRebound(to: Int32.self, capacity: 8) { strides in
                        image.withUnsafeBufferPointer { src in
                            for c in 0..<channels {
                                let p = planeIndex(channel: c, format: format)
                                let dst = UnsafeMutableRawPointer(planes[p]!).assumingMemoryBound(to: Float.self)
                                PixelPacking.copyPlane(from: src.baseAddress! + c * plane, sourceStride: frame.width,
                                                       to: dst, destinationStride: Int(strides[p]) / 4,
                                                       width: frame.width, height: frame.height)
                            }
                        }
                    }
                }
            }
        }
        return av
    }

    /// A frame from a planar float libav frame (`grayf32le`, `gbrpf32le` or `gbrapf32le`).
    static func frame(fromPlanarFloat av: UnsafeMutablePointer<AVFrame>, index: Int, time: Double?, color: ColorInfo) -> Frame {
        let format = AVPixelFormat(rawValue: av.pointee.format)
        let channels = format == AV_PIX_FMT_GRAYF32LE ? 1 : (format == AV_PIX_FMT_GBRPF32LE ? 3 : 4)
        let width = Int(av.pointee.width), height = Int(av.pointee.height), plane = width * height
        var image = Tensor(zeros: [channels, height, width])
        withUnsafeMutablePointer(to: &av.pointee.data) { data in
            data.withMemoryRebound(to: UnsafeMutablePointer<UInt8>?.self, capacity: 8) { planes in
                withUnsafePointer(to: &av.pointee.linesize) { lines in
                    lines.withMemoryRebound(to: Int32.self, capacity: 8) { strides in
                        image.withUnsafeMutableBufferPointer { dst in
                            for c in 0..<channels {
                                let p = planeIndex(channel: c, format: format)
                                let src = UnsafeRawPointer(planes[p]!).assumingMemoryBound(to: Float.self)
                                PixelPacking.copyPlane(from: src, sourceStride: Int(strides[p]) / 4,
                                                       to: dst.baseAddress! + c * plane, destinationStride: width,
                                                       width: width, height: height)
                            }
                        }
                    }
                }
            }
        }
        return Frame(image: image, index: index, time: time, color: color)
    }
}
