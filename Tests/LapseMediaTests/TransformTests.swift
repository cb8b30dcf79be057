import Foundation
import LapseGraph
import LapseMedia
import LapseTensor
import LapseTestSupport
import MediaPlugin
import Testing

@Suite("Filter node and frame transforms")
struct TransformTests {
    @Test("Filter runs libavfilter chains and reports bad ones with the filter text")
    func filter() throws {
        let clip = try MediaIO.synthesize("testsrc2=size=64x48:rate=25", frameCount: 25)
        let scaled = try MediaIO.filter(clip, graph: "scale=32:-2,fps=8")
        #expect(scaled.info.width == 32 && scaled.info.height == 24)
        #expect(scaled.info.fps == 8)
        #expect(try scaled.collect().count == 8)
        // hflip on planar float is exact: compare with mirroring in Swift.
        let original = try #require(try clip.collect().first)
        let flipped = try #require(try MediaIO.filter(clip, graph: "hflip").collect().first)
        let a = original.image.scalars, b = flipped.image.scalars
        var same = true
        for c in 0..<3 { for y in 0..<48 { for x in 0..<64 where a[(c * 48 + y) * 64 + x] != b[(c * 48 + y) * 64 + 63 - x] { same = false } } }
        #expect(same)
        for bad in ["nosuchfilter=3", "scale=w=", "split[a][b]"] {
            #expect { try MediaIO.filter(clip, graph: bad) } throws: { error in
                error.localizedDescription.contains(bad)
            }
        }
    }

    @Test("resize: constants stay constant, area halves average 2x2 blocks, nearest picks pixels, aspect kept")
    func resize() throws {
        let flat = Tensor(repeating: 0.3, shape: [3, 17, 23])
        for mode in ResizeMode.allCases {
            for (w, h) in [(40, 30), (7, 5)] {
                let out = FrameOps.resize(flat, width: w, height: h, mode: mode)
                #expect(out.shape == [3, h, w])
                #expect(out.scalars.allSatisfy { abs($0 - 0.3) < 1e-5 }, "\(mode) \(w)x\(h)")
            }
        }
        let ramp = Tensor(shape: [1, 4, 4], data: (0..<16).map(Float.init))
        let area = FrameOps.resize(ramp, width: 2, height: 2, mode: .area).scalars
        #expect(area == [2.5, 4.5, 10.5, 12.5])
        let nearest = FrameOps.resize(ramp, width: 2, height: 2, mode: .nearest).scalars
        #expect(nearest == [5, 7, 13, 15])
        let up = FrameOps.resize(ramp, width: 8, height: 8, mode: .nearest).scalars
        #expect(up[0] == 0 && up[1] == 0 && up[2] == 1 && up[63] == 15)
        #expect(try FrameOps.targetSize(width: 640, height: -1, sourceWidth: 1920, sourceHeight: 1080) == (640, 360))
        #expect(try FrameOps.targetSize(width: 0, height: 0, sourceWidth: 5, sourceHeight: 7) == (5, 7))
    }

    @Test("crop, pad (reflect/replicate/zeros), FrameRange and ConcatFrames")
    func geometryAndRanges() throws {
        let image = Tensor(shape: [1, 3, 3], data: (1...9).map(Float.init))
        #expect(try FrameOps.crop(image, x: 1, y: 1, width: 2, height: 2).scalars == [5, 6, 8, 9])
        #expect(throws: MediaError.self) { try FrameOps.crop(image, x: 2, y: 0, width: 2, height: 1) }
        let row = Tensor(shape: [1, 1, 3], data: [1, 2, 3])
        #expect(Array(FrameOps.pad(row, multipleOf: 5, mode: .reflect).scalars.prefix(10)) == [1, 2, 3, 2, 1, 1, 2, 3, 2, 1])
        #expect(Array(FrameOps.pad(row, multipleOf: 5, mode: .replicate).scalars.prefix(10)) == [1, 2, 3, 3, 3, 1, 2, 3, 3, 3])
        #expect(Array(FrameOps.pad(row, multipleOf: 5, mode: .zeros).scalars.prefix(10)) == [1, 2, 3, 0, 0, 0, 0, 0, 0, 0])
        #expect(FrameOps.pad(image, multipleOf: 4, mode: .reflect).shape == [1, 4, 4])

        let frames = Frames(frames: (0..<10).map { Frame(image: Tensor(repeating: Float($0), shape: [1, 1, 1]), index: $0, time: Double($0) / 10) },
                            info: FrameStreamInfo(frameRate: (10, 1)))
        let range = try FrameOps.range(frames, start: 2, count: 3, step: 3)
        #expect(range.info.frameCount == 3)
        #expect(try range.collect().map { $0.image.scalars[0] } == [2, 5, 8])
        let both = FrameOps.concat(range, frames)
        let joined = try both.collect()
        #expect(joined.count == 13 && both.info.frameCount == 13)
        #expect(joined.map(\.index) == Array(0..<13))
        let times = joined.compactMap(\.time)
        #expect(times.count == 13 && zip(times, times.dropFirst()).allSatisfy { $0 < $1 })
    }

    @Test("MediaPlugin registers the public node names and ports")
    func registry() throws {
        let registry = NodeRegistry()
        try MediaPlugin.register(into: registry)
        let expected: [String: [String]] = [
            "LoadImage": ["path"], "SaveImage": ["frames", "path", "bit_depth", "overwrite"],
            "LoadVideo": ["path", "start", "max_frames", "every_nth", "fps"],
            "SaveVideo": ["frames", "path", "fps", "codec", "crf", "preset", "audio_from", "overwrite"],
            "Filter": ["frames", "graph"], "Resize": ["frames", "width", "height", "mode"],
            "Crop": ["frames", "x", "y", "width", "height"], "Pad": ["frames", "multiple_of", "mode"],
            "FrameRange": ["frames", "start", "count", "step"], "ConcatFrames": ["first", "second"],
        ]
        for (type, ports) in expected {
            let entry = try #require(registry.entry(for: type), "\(type) is not registered")
            let names = Set(entry.schema.inputs.map(\.name))
            #expect(Set(ports).isSubset(of: names), "\(type) ports \(names)")
            #expect(entry.schema.isOutput == type.hasPrefix("Save"))
        }
    }
}
