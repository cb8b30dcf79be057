import LapseGraph
import LapseMedia

/// `SaveVideo {path, fps, codec, crf, preset, audio_from, pix_fmt, overwrite}` ← `frames`: streaming encode through
/// libav; the path may be a template with `{stem}` (the input file's name) and `{n}` (the next free number).
struct SaveVideoNode: Node {
    static let schema = NodeSchema(
        type: "SaveVideo", category: "media/io",
        summary: "Encodes frames: mp4/H.264 (libx264, yuv420p BT.709), webm/VP9, GIF (palettegen/paletteuse), lossless mkv/FFV1.",
        inputs: [
            InputSpec("frames", .frames, doc: "frames to encode (all of one size)"),
            InputSpec("path", .string, doc: "output file; the extension picks the container. {stem} = the input file's name without extension, {n} = the lowest number whose file does not exist yet (e.g. out/{stem}_x2.mp4)"),
            InputSpec("fps", .float, default: .float(0), min: 0, max: 1000,
                      doc: "frame rate, 0 = the stream's own rate, or 8 when it has none (default 0)"),
            InputSpec("codec", .string, default: .string("auto"), allowed: VideoEncodingOptions.codecs,
                      doc: "auto (.mp4/.mov → h264, .webm → vp9, .gif → gif, .mkv → ffv1), h264, vp9, gif, ffv1, h264rgb (lossless)"),
            InputSpec("crf", .int, default: .int(18), min: 0, max: 63, doc: "quality for h264/vp9, lower is better, 0 = lossless (default 18)"),
            InputSpec("preset", .string, default: .string("medium"), allowed: VideoEncodingOptions.presets,
                      doc: "x264 speed preset (default medium); also sets VP9's cpu-used"),
            InputSpec("audio_from", .string, default: .string(""),
                      doc: "copy the audio stream of this media file into the output; \"source\" = the file the frames were decoded from (kept when it has audio, skipped with a note when it has none); \"\" = no audio (default)"),
            InputSpec("pix_fmt", .string, default: .string("auto"), allowed: ["auto", "yuv420p", "yuv444p"],
                      doc: "chroma layout for h264/vp9: auto (= yuv420p, odd sizes padded by one edge pixel) or yuv444p"),
            NodeSchema.overwriteInput,
        ],
        isOutput: true, outputFileParams: ["path"], checkParameters: NodeSchema.outputPathCheck(["path"]))

    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let frames = try inputs.frames("frames")
        let target = try MediaIO.outputTarget(try inputs.string("path"), for: frames, overwrite: try inputs.overwrite())
        let path = target.path
        let fps = try inputs.float("fps")
        var audio = try inputs.string("audio_from")
        if audio == "source" {
            // Upstream nodes keep the decoded file in the stream info, so a graph can keep a video's sound without
            // naming the file twice; a silent source is not an error here, as it is for an explicit path.
            if let source = frames.info.sourcePath, MediaIO.hasAudio(path: source) {
                audio = source
            } else {
                context.log("\(frames.info.sourcePath ?? "the input"): no audio stream to keep; writing video only")
                audio = ""
            }
        }
        // An explicit audio file is checked now, before upstream nodes compute the first frame.
        if !audio.isEmpty { try MediaIO.checkInput(path: audio) }
        let options = VideoEncodingOptions(codec: try inputs.string("codec"), crf: try inputs.int("crf"),
                                           preset: try inputs.string("preset"), pixelFormat: try inputs.string("pix_fmt"),
                                           fps: fps > 0 ? fps : nil, audioFrom: audio.isEmpty ? nil : audio)
        let notes = try MediaIO.saveVideo(frames, path: path, options: options, replacing: target.replacing,
                                          progress: context.frameProgress)
        for note in notes { context.log("\(path): \(note)") }
        context.log("wrote \(path)")
        return .none
    }
}
