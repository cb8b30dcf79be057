import Foundation
import Testing
import LapseGraph
import LapseNN
import LapseTensor
import LapseWeights
import DiffusionPlugin

/// Half-precision weight storage (`WeightPrecision`) on the seeded tiny UNet, motion adapter and VAE of
/// Tools/fixtures/unet_vae.py: a float16 file kept as float16 (`auto`) must give exactly what widening it at load
/// (`fp32`) gives, since widening is exact and the same float32 kernels run; `bf16` rounds and is measured.
@Suite struct HalfPrecisionTests {
    /// The section's regenerated weights written as a `dtype` safetensors file in a fresh folder, reopened lazily.
    static func saved(_ section: String, as dtype: DType, precision: WeightPrecision) throws -> (Data, Weights, URL) {
        let s = try UNetVAEFixtures.section(section, layout: .diffusers)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lapse-half-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("\(section).safetensors").path
        try SafeTensors.write(s.weights, dtype: dtype, to: path)
        var weights = try Weights.load(path)
        weights.precision = precision
        return (s.config, weights, dir)
    }

    static func unet(_ dtype: DType, _ precision: WeightPrecision) throws -> UNet2DConditionModel {
        let (config, weights, dir) = try saved("unet", as: dtype, precision: precision)
        defer { try? FileManager.default.removeItem(at: dir) }
        return try UNet2DConditionModel(config: try UNet2DConditionConfig.decode(json: config), weights: weights)
    }

    static func runUNet(_ unet: UNet2DConditionModel) throws -> Tensor {
        try unet(try UNetVAEFixtures.io("unet_sample"), timesteps: try UNetVAEFixtures.timesteps("unet_timesteps"),
                 context: try UNetVAEFixtures.io("unet_context"))
    }

    static func vae(_ dtype: DType, _ precision: WeightPrecision) throws -> AutoencoderKL {
        let (config, weights, dir) = try saved("vae", as: dtype, precision: precision)
        defer { try? FileManager.default.removeItem(at: dir) }
        return try AutoencoderKL(config: try AutoencoderKLConfig.decode(json: config), weights: weights)
    }

    static func motionModel(_ dtype: DType, _ precision: WeightPrecision) throws -> UNetMotionModel {
        let (config, weights, dir) = try saved("motion", as: dtype, precision: precision)
        defer { try? FileManager.default.removeItem(at: dir) }
        let motion = try MotionAdapter(config: try MotionAdapterConfig.decode(json: config), weights: weights, normMode: .acrossFrames)
        return try UNetMotionModel(unet: try unet(dtype, precision), motion: motion)
    }

    static func runMotion(_ model: UNetMotionModel) throws -> Tensor {
        try model(try UNetVAEFixtures.io("motion_sample"), timesteps: try UNetVAEFixtures.timesteps("motion_timesteps"),
                  context: try UNetVAEFixtures.io("motion_context"))
    }

    /// PSNR in dB of `x` against `reference`, with the reference's largest magnitude as the peak (noise predictions
    /// and decoded images are not in [0, 1]).
    static func psnr(_ x: Tensor, _ reference: Tensor) -> Double {
        let a = x.scalars, r = reference.scalars
        var mse = 0.0, peak = 0.0
        for i in r.indices {
            let d = Double(a[i]) - Double(r[i])
            mse += d * d
            peak = max(peak, abs(Double(r[i])))
        }
        mse /= Double(r.count)
        return mse == 0 ? .infinity : 10 * log10(peak * peak / mse)
    }

    /// The same kernels on widened weights: equal but for the last bits, because OpenBLAS may split one GEMM over
    /// other thread counts while other suites run theirs (in-process runs then differ by ~1e-7 relative).
    static func agree(_ a: Tensor, _ b: Tensor) -> Bool {
        guard a.shape == b.shape else { return false }
        let x = a.scalars, y = b.scalars
        var worst: Float = 0, scale: Float = 1
        for i in x.indices { worst = max(worst, abs(x[i] - y[i])); scale = max(scale, abs(y[i])) }
        if worst > 1e-5 * scale { print("half-precision agreement: max|Δ| \(worst) against max|ref| \(scale)") }
        return worst <= 1e-5 * scale
    }

    @Test func float16UNetKeptAsFloat16MatchesWideningAtLoad() throws {
        let widened = try Self.runUNet(try Self.unet(.f16, .fp32))
        let kept = try Self.runUNet(try Self.unet(.f16, .auto))
        #expect(kept.shape == widened.shape)
        #expect(Self.agree(kept, widened))
    }

    @Test func float16MotionModelKeptAsFloat16MatchesWideningAtLoad() throws {
        let widened = try Self.runMotion(try Self.motionModel(.f16, .fp32))
        let kept = try Self.runMotion(try Self.motionModel(.f16, .auto))
        #expect(Self.agree(kept, widened))
    }

    @Test func float16VAEKeptAsFloat16MatchesWideningAtLoad() throws {
        let latent = try UNetVAEFixtures.io("vae_latent")
        let widened = try Self.vae(.f16, .fp32).decode(latent)
        let kept = try Self.vae(.f16, .auto).decode(latent)
        #expect(Self.agree(kept, widened))
        let image = try UNetVAEFixtures.io("vae_image")
        #expect(Self.agree(try Self.vae(.f16, .auto).encode(image).mean, try Self.vae(.f16, .fp32).encode(image).mean))
    }

    /// `auto` leaves float32 files alone, so it is the default; `bf16` rounds float32 weights and costs accuracy,
    /// which these figures show on the parity sets (printed for docs/diffusion.md).
    @Test func bfloat16StorageAgainstFloat32() throws {
        let reference = try Self.runUNet(try Self.unet(.f32, .fp32))
        #expect(Self.agree(try Self.runUNet(try Self.unet(.f32, .auto)), reference))
        let bf16 = try Self.runUNet(try Self.unet(.f32, .bf16))
        let f16File = try Self.runUNet(try Self.unet(.f16, .auto))
        let unetBF16 = Self.psnr(bf16, reference), unetF16 = Self.psnr(f16File, reference)

        let latent = try UNetVAEFixtures.io("vae_latent")
        let vaeReference = try Self.vae(.f32, .fp32).decode(latent)
        let vaeBF16 = Self.psnr(try Self.vae(.f32, .bf16).decode(latent), vaeReference)
        let vaeF16 = Self.psnr(try Self.vae(.f16, .auto).decode(latent), vaeReference)

        let motionReference = try Self.runMotion(try Self.motionModel(.f32, .fp32))
        let motionBF16 = Self.psnr(try Self.runMotion(try Self.motionModel(.f32, .bf16)), motionReference)
        let motionF16 = Self.psnr(try Self.runMotion(try Self.motionModel(.f16, .auto)), motionReference)
        func dB(_ x: Double) -> String { String(format: "%.1f dB", x) }
        print("Half-precision PSNR vs fp32 weights: UNet bf16 \(dB(unetBF16)), fp16 file \(dB(unetF16)); "
              + "UNet+motion bf16 \(dB(motionBF16)), fp16 file \(dB(motionF16)); VAE decode bf16 \(dB(vaeBF16)), fp16 file \(dB(vaeF16))")
        // Rounding to 8 mantissa bits must still leave the outputs recognisably the same, and coarser than fp16's 11.
        #expect(unetBF16 > 20 && vaeBF16 > 20 && motionBF16 > 20)
        #expect(unetF16 > unetBF16 && vaeF16 > vaeBF16)
    }

    struct Wording: WeightErrorWording {
        struct Failure: Error { let text: String }
        func missing(_ name: String, in weights: Weights) -> any Error { Failure(text: "missing \(name)") }
        func wrongShape(_ name: String, expected: [Int], actual: [Int]) -> any Error { Failure(text: "\(name) \(actual)") }
    }

    /// LapseNN's layers keep a float16 file's weights as float16 under `auto` (half the bytes, pointing into the
    /// file) and compute exactly what float32 weights give; `fp32` widens at load; `bf16` rounds.
    @Test func layersKeepTheFileDtypeAndComputeTheSame() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lapse-half-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let generator = TorchGenerator(seed: 12)
        let tensors: [(name: String, tensor: Tensor)] = [
            ("fc.weight", generator.rand([24, 16]) - 0.5), ("fc.bias", generator.rand([24])),
            ("proj.weight", (generator.rand([24, 16, 1, 1]) - 0.5)),
            ("conv.weight", generator.rand([32, 16, 3, 3]) - 0.5), ("conv.bias", generator.rand([32]))]
        let path = dir.appendingPathComponent("layers.safetensors").path
        try SafeTensors.write(tensors, dtype: .f16, to: path)
        var weights = try Weights.load(path)
        func layers(_ precision: WeightPrecision) throws -> (LinearLayer, LinearLayer, Conv2DLayer) {
            weights.precision = precision
            let read = WeightReader(weights, wording: Wording())
            return (try LinearLayer(read, "fc.", in: 16, out: 24), try LinearLayer(read, "proj.", in: 16, out: 24, bias: .none),
                    try Conv2DLayer(read, "conv.", in: 16, out: 32, kernel: 3))
        }
        let (fc32, proj32, conv32) = try layers(.fp32)
        let (fc16, proj16, conv16) = try layers(.auto)
        let (fcB, _, convB) = try layers(.bf16)
        #expect(fc32.storedWeight.dtype == .f32 && fc16.storedWeight.dtype == .f16 && fcB.storedWeight.dtype == .bf16)
        #expect(proj16.storedWeight.dtype == .f16 && proj16.inFeatures == 16 && proj16.outFeatures == 24)
        #expect(conv16.storedWeight.residentBytes * 2 == conv32.storedWeight.residentBytes && conv16.kernel == 3 && conv16.padding == 1)
        #expect(convB.storedWeight.dtype == .bf16)
        let x = generator.rand([3, 16]), image = generator.rand([2, 16, 12, 12])
        #expect(Self.agree(fc16(x), fc32(x)))
        #expect(Self.agree(proj16(x), proj32(x)))
        #expect(Self.agree(conv16(image, activation: .silu), conv32(image, activation: .silu)))
        #expect(fc16.weight.scalars == fc32.weight.scalars)
        #expect(fcB(x).scalars != fc32(x).scalars)
        #expect(throws: Wording.Failure.self) { _ = try WeightReader(weights, wording: Wording()).layerWeight("fc.weight", [16, 24]) }
    }

    /// The loaders' `precision` param accepts auto, fp32 and bf16 only; validation names the param.
    @Test func unknownPrecisionIsRefusedByValidation() throws {
        let registry = try MagicTimeTinyModels.registry()
        let root = DiffusionFixtures.repoRoot
        let original = try String(contentsOf: root.appendingPathComponent("graphs/magictime.json"), encoding: .utf8)
        for node in ["ckpt", "motion"] {
            for (value, valid) in [("fp8", false), ("FP32", false), ("bf16", true), ("auto", true)] {
                // Inserted as the first param of the node's params object.
                let edited = try #require(Self.insertingPrecision(value, node: node, in: original), "\(node) not found")
                #expect(edited != original)
                let result = GraphValidator(registry: registry, baseDirectory: root, checkInputFiles: false)
                    .validate(data: Data(edited.utf8), name: "magictime.json")
                switch result {
                case .success: #expect(valid, "\(node).precision = \(value) was accepted")
                case .failure(let failure):
                    #expect(!valid, "\(node).precision = \(value) was refused: \(failure)")
                    #expect("\(failure)".contains("precision") && "\(failure)".contains(node), "\(failure)")
                }
            }
        }
    }

    /// `graph` with `"precision": value` added to node `node`'s params.
    static func insertingPrecision(_ value: String, node: String, in graph: String) -> String? {
        guard let nodeRange = graph.range(of: "\"\(node)\": {"),
              let params = graph.range(of: "\"params\": {", range: nodeRange.upperBound..<graph.endIndex) else { return nil }
        var out = graph
        out.insert(contentsOf: "\"precision\": \"\(value)\", ", at: params.upperBound)
        return out
    }
}
