import Foundation
import LapseGraph
import LapseMedia
import LapseTensor

extension FuzzFamilies {
    /// Media decoders and the filter-graph check: PNG through libpng, image and video containers through libav,
    /// and filter-graph text through `FilterAllowList` and libavfilter.
    static var mediaFamilies: [FuzzFamily] {
        [png, image, video, filterGraph]
    }

    /// Most frames a target pulls from one input: a mutated header can claim hours of video, and each frame of a
    /// 32x32 seed decodes in well under a millisecond, so this keeps every input far below the hang limit.
    static let maxFramesPerInput = 300

    /// The committed seed files of a family (`Tools/fuzz/corpus/<family>/`), found from this source file.
    static func corpusFiles(_ family: String, filePath: String = #filePath) -> [Data] {
        let folder = URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("corpus/\(family)")
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder.path) else { return [] }
        return names.sorted().filter { !$0.hasPrefix(".") }.compactMap {
            FileManager.default.contents(atPath: folder.appendingPathComponent($0).path)
        }
    }

    /// Pulls frames until the end or `maxFramesPerInput`, touching each frame's pixels so nothing stays lazy.
    static func drain(_ frames: Frames) throws {
        let source = try frames.makeSource()
        var pulled = 0
        while pulled < maxFramesPerInput, let frame = try source.next() {
            _ = frame.image.scalars.first
            pulled += 1
        }
    }

    static let png = FuzzFamily(
        name: "png", summary: "PNG files through libpng (LoadImage's .png path)",
        seeds: {
            // Every layout libpng writes for us, plus the committed palette/16-bit/gray/1-bit files.
            let dir = NSTemporaryDirectory() + "lapse-fuzz-seed-png-\(getpid())"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            var seeds: [Data] = []
            for (channels, depth) in [(1, 8), (2, 8), (3, 8), (4, 16)] {
                let image = Tensor(shape: [channels, 4, 5], data: (0..<(channels * 20)).map { Float($0 % 7) / 6 })
                let path = dir + "/seed.png"
                try PNGCodec.write(Frame(image: image), to: path, bitDepth: depth)
                seeds.append(try Data(contentsOf: URL(fileURLWithPath: path)))
            }
            return seeds + corpusFiles("png")
        },
        run: { input, scratch in
            let path = scratch + "/input.png"
            try input.write(to: URL(fileURLWithPath: path))
            try drain(try MediaIO.loadImage(path: path))
        })

    static let image = FuzzFamily(
        name: "image", summary: "BMP, JPEG, GIF, WebP and TIFF images through libav (LoadImage's other path)",
        seeds: { corpusFiles("image") },
        run: { input, scratch in
            // No extension: libav probes the content, as it does for any image whose name does not say its format.
            let path = scratch + "/input.image"
            try input.write(to: URL(fileURLWithPath: path))
            try drain(try MediaIO.loadImage(path: path))
        })

    static let video = FuzzFamily(
        name: "video", summary: "mp4, mkv, avi and webm containers, every frame decoded (LoadVideo's path)",
        seeds: { corpusFiles("video") },
        run: { input, scratch in
            let path = scratch + "/input.video"
            try input.write(to: URL(fileURLWithPath: path))
            try drain(try MediaIO.loadVideo(path: path))
        })

    /// Filter-graph seeds: allowed chains of every kind, and refused ones for the mutator to splice from.
    static let filterSeeds = [
        "null", "hflip,vflip", "scale=16:-2:flags=lanczos", "crop=8:8:2:2,pad=16:16:4:4", "transpose=1,rotate=0.5",
        "eq=contrast=1.2:brightness=0.1,hue=h=30", "colorchannelmixer=rr=0.5:gg=0.5", "curves=vintage",
        "curves=r='0/0 0.5/0.7 1/1'", "unsharp=5:5:1.0,gblur=sigma=1.5,avgblur=2", "fps=5,setpts=PTS*2,trim=end=1",
        "format=gray,format=gbrp", "split[a][b];[a][b]hstack", "[in]null[x];[x]negate",
        "split[a][b];[a]palettegen[p];[b][p]paletteuse", "lutrgb=r=negval", "select='eq(n\\,1)'", "fade=in:0:2",
        "drawbox=x=1:y=1:w=4:h=4:color=red", "frei0r=filter_name=x", "movie=x.mp4", "curves=psfile=x.acv",
        // Found by this family: NaN as a curves point and boxblur on float frames corrupted libavfilter's heap
        // (both refused up front now).
        "curves=r='NaN/0 0.5/0.7 1/1'", "boxblur=2",
    ]

    static let filterGraph = FuzzFamily(
        name: "filter-graph", summary: "filter-graph text through the allow-list and libavfilter on a tiny clip",
        dictionary: ["scale", "crop", "pad", "fps", "setpts", "trim", "format", "curves", "split", "hstack", "frei0r",
                     "movie", "sendcmd", "lut3d", "psfile", "plot", "debug_kdtree", "filename", "@a", "[a]", "[b]",
                     "=", ":", ",", ";", "'", "\\", "PTS*1000", "N", "iw*100", "ih", "-1", "10000"],
        seeds: { filterSeeds.map { Data($0.utf8) } },
        run: { input, _ in
            let clip = Frames(frames: (0..<3).map { i in
                Frame(image: Tensor(repeating: Float(i) / 3, shape: [3, 8, 8]), index: i, time: Double(i) / 10)
            }, info: FrameStreamInfo(width: 8, height: 8, frameRate: (10, 1), frameCount: 3))
            try drain(try MediaIO.filter(clip, graph: String(decoding: input, as: UTF8.self)))
        })
}
