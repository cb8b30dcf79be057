// Times Lapse's media path on one file: `decode` pulls every frame as float RGB, `transcode` re-encodes with x264.
// Run by Benchmarks/media/run.sh, which times the ffmpeg program on the same file in the same run.
import Foundation
import LapseGraph
import LapseMedia

let arguments = CommandLine.arguments
guard arguments.count >= 3, ["decode", "transcode"].contains(arguments[1]) else {
    FileHandle.standardError.write(Data("usage: MediaBenchmark decode INPUT | transcode INPUT OUTPUT [preset] [crf]\n".utf8))
    exit(2)
}
do {
    let start = Date()
    var frames = 0
    let input = try MediaIO.loadVideo(path: arguments[2])
    if arguments[1] == "decode" {
        let source = try input.makeSource()
        while try source.next() != nil { frames += 1 }
    } else {
        guard arguments.count >= 4 else { throw MediaError.invalidArgument("transcode needs an OUTPUT path") }
        let preset = arguments.count > 4 ? arguments[4] : "medium"
        let crf = arguments.count > 5 ? Int(arguments[5]) ?? 23 : 23
        let counted = input.map { frame in frame }
        try MediaIO.saveVideo(counted, path: arguments[3], options: VideoEncodingOptions(codec: "h264", crf: crf, preset: preset))
        frames = try MediaIO.loadVideo(path: arguments[3]).info.frameCount ?? 0
    }
    let seconds = Date().timeIntervalSince(start)
    print(String(format: "%@ %d frames in %.2f s = %.1f fps", arguments[1], frames, seconds, Double(frames) / seconds))
} catch {
    FileHandle.standardError.write(Data("error: \(error.localizedDescription)\n".utf8))
    exit(1)
}
