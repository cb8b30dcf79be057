import DiffusionPlugin
import Foundation
import LapseTensor
import StreamingT2VPlugin
import Testing

@Suite("StreamingT2V extension loop")
struct StreamExtensionTests {
    private let loop = StreamExtension(chunk: 4, context: 2, steps: 3, eta: 1, scheduler: SchedulerConfig(),
                                       latentChannels: 2, downsamplingFactor: 2)

    @Test func validLengthsAreChunkPlusMultiplesOfTheStride() {
        let st2v = StreamExtension(scheduler: SchedulerConfig())
        #expect(st2v.stride == 8)
        #expect(st2v.nearestValidLengths(to: 80) == (80, 80))
        #expect(st2v.nearestValidLengths(to: 81) == (80, 88))
        #expect(st2v.nearestValidLengths(to: 10) == (nil, 16))
        #expect(st2v.length(firstChunk: 16, generatedChunks: 8) == 80)
    }

    /// The loop draws the starting latents `[1, C, chunk, h, w]`, then one frame-major `[chunk, C, h, w]` tensor per
    /// DDIM step, and hands the denoiser the previous chunk's last `context` frames in [-1, 1].
    @Test func drawsNoiseInTheOriginalsOrderAndConditionsOnTheLastFrames() throws {
        let previous = TorchGenerator(seed: 5).rand([4, 3, 4, 4])
        let seen = SeenInputs()
        let generator = TorchGenerator(seed: 33)
        let out = try loop.nextChunk(after: previous, generator: generator, denoise: { latents, t, frames in
            seen.record(latents: latents, timestep: t, frames: frames)
            return latents * 0.5
        }, decode: { latents in permute(latents, [0, 2, 1, 3, 4]).reshaped([4, 2, 2, 2]) })
        #expect(out.shape == [4, 2, 2, 2])

        let reference = TorchGenerator(seed: 33)
        let start = reference.randn([1, 2, 4, 2, 2])
        #expect(seen.first?.latents.scalars == start.scalars)
        #expect(seen.count == 3)
        let expectedFrames = slice(previous, axis: 0, start: 2, end: 4) * 2 - 1
        #expect(seen.first?.frames.scalars == expectedFrames.scalars)
        // After the chunk, the generator has made exactly the start draw and three step draws.
        for _ in 0..<3 { _ = reference.randn([4, 2, 2, 2]) }
        #expect(generator.randn([5]).scalars == reference.randn([5]).scalars)
    }
}

/// What the fake denoiser was called with.
private final class SeenInputs: @unchecked Sendable {
    private let lock = NSLock()
    private var calls: [(latents: Tensor, timestep: Float, frames: Tensor)] = []
    func record(latents: Tensor, timestep: Float, frames: Tensor) { lock.withLock { calls.append((latents, timestep, frames)) } }
    var first: (latents: Tensor, timestep: Float, frames: Tensor)? { lock.withLock { calls.first } }
    var count: Int { lock.withLock { calls.count } }
}
