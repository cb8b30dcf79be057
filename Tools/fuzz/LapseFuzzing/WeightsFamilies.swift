import Foundation
import LapseTensor
import LapseWeights

extension FuzzFamilies {
    /// Checkpoint parsers: safetensors, PyTorch zip and legacy pickles, the zip container, ncnn param/bin.
    static var weightsFamilies: [FuzzFamily] {
        [safetensors]
    }

    /// Opens `path` as a checkpoint and reads every tensor it claims to hold.
    static func readEveryTensor(_ path: String) throws {
        let file = try CheckpointFile.open(path)
        for key in file.keys { _ = try file.tensor(key) }
    }

    static let safetensors = FuzzFamily(
        name: "safetensors", summary: "safetensors header JSON and data offsets",
        dictionary: ["\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"F16\"", "\"BF16\"", "\"F32\"", "\"__metadata__\"", "[", "]", "{", "}", ","],
        seeds: {
            let dir = NSTemporaryDirectory() + "lapse-fuzz-seed-\(getpid())"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            var seeds: [Data] = []
            for dtype in [DType.f32, .f16, .bf16] {
                let path = dir + "/seed.safetensors"
                try SafeTensors.write([("a.weight", Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5, 6])), ("b", Tensor(shape: [1], data: [7]))],
                                      metadata: ["format": "pt"], dtype: dtype, to: path)
                seeds.append(try Data(contentsOf: URL(fileURLWithPath: path)))
            }
            return seeds
        },
        run: { input, scratch in
            let path = scratch + "/input.safetensors"
            try input.write(to: URL(fileURLWithPath: path))
            try readEveryTensor(path)
        })
}
