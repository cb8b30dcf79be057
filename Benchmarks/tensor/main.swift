import COpenBLAS
import Foundation
import LapseTensor

/// Times LapseTensor's hot ops and prints one `name gflops seconds` line per case, for bench.py to compare against
/// PyTorch in the same run. Usage: TensorBenchmarks [filter]
let filter = CommandLine.arguments.dropFirst().first

func seconds(_ body: () -> Void) -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

/// Best of `repeats` after one warm-up, so one-off page faults and thread start-up don't count.
func bench(_ name: String, flops: Double, repeats: Int = 5, _ body: () -> Void) {
    if let filter, !name.contains(filter) { return }
    body()
    var best = Double.infinity
    for _ in 0..<repeats { best = min(best, seconds(body)) }
    print(String(format: "%@ %.2f %.6f", name, flops / best / 1e9, best))
    fflush(nil)
}

let g = TorchGenerator(seed: 0)
// Winograd/direct against im2col on shapes spanning several 8-tile chunks, tile-row blocks and ragged edges (the
// parity fixtures are small): prints the relative error, which must stay ≤ 1e-4.
if filter == nil || filter == "verify" {
    for (shape, cout, pad) in [([2, 24, 75, 141], 40, 1), ([1, 64, 130, 262], 64, 1), ([1, 32, 37, 70], 3, 1),
                               ([1, 16, 23, 45], 16, 0), ([1, 16, 20, 33], 24, 2)] {
        let x = g.rand(shape), w = g.rand([cout, shape[1], 3, 3]), b = g.rand([cout])
        // Reference: im2col, reached by switching Winograd off and by centring the filter in a 5×5 one (padding + 1),
        // which no 3×3 fast path takes.
        let w3 = w.scalars
        var w5 = [Float](repeating: 0, count: cout * shape[1] * 25)
        for f in 0..<(cout * shape[1]) { for i in 0..<3 { for j in 0..<3 { w5[f * 25 + (i + 1) * 5 + j + 1] = w3[f * 9 + i * 3 + j] } } }
        ConvolutionTuning.winograd = false
        let reference = conv2d(x, weight: Tensor(shape: [cout, shape[1], 5, 5], data: w5), bias: b, padding: pad + 1,
                               activation: .leakyReLU(0.2)).scalars
        ConvolutionTuning.winograd = true
        let fast = conv2d(x, weight: w, bias: b, padding: pad, activation: .leakyReLU(0.2)).scalars
        var diff: Double = 0, norm: Double = 0
        for (p, q) in zip(fast, reference) { diff += Double(p - q) * Double(p - q); norm += Double(q) * Double(q) }
        print(String(format: "verify_conv3x3_%@_to%d_pad%d relative_error %.2e", shape.map(String.init).joined(separator: "x"),
                     cout, pad, (diff / max(norm, 1e-30)).squareRoot()))
    }
}

// The upscalers' 3×3 layers (RRDB dense blocks 64…192→32/64, SRVGG 64→64), by both algorithms.
for (size, cin, cout) in [(128, 64, 64), (128, 64, 32), (128, 192, 64), (256, 64, 64), (256, 64, 32), (256, 96, 32),
                          (512, 64, 64), (32, 64, 64)] {
    let x = g.rand([1, cin, size, size]), w = g.rand([cout, cin, 3, 3]), b = g.rand([cout])
    let flops = 2.0 * Double(cout * cin * 9 * size * size)
    for winograd in [false, true] {
        ConvolutionTuning.winograd = winograd
        bench("conv3x3_\(cin)to\(cout)_\(size)_\(winograd ? "winograd" : "im2col")", flops: flops) {
            _ = conv2d(x, weight: w, bias: b, padding: 1, activation: .leakyReLU(0.2))
        }
    }
}
// The SD UNet's 3×3 layers on a 16-frame CFG batch (32 images) of a 256² video: many small maps with wide channels,
// where the tiles of one image are too few to amortise packing the weights in each GEMM.
for (size, cin, cout) in [(32, 320, 320), (16, 640, 640), (8, 1280, 1280), (4, 1280, 1280), (8, 2560, 1280),
                          (32, 640, 320)] {
    let x = g.rand([32, cin, size, size]), w = g.rand([cout, cin, 3, 3]), b = g.rand([cout])
    let flops = 2.0 * Double(32 * cout * cin * 9 * size * size)
    for winograd in [false, true] {
        ConvolutionTuning.winograd = winograd
        bench("unet_conv3x3_32x\(cin)to\(cout)_\(size)_\(winograd ? "winograd" : "im2col")", flops: flops, repeats: 2) {
            _ = conv2d(x, weight: w, bias: b, padding: 1)
        }
    }
}
do {  // the UNet's 1×1 shortcut at its 4×4 level and a stride-2 downsampler into it
    let x = g.rand([32, 2560, 4, 4]), w = g.rand([1280, 2560, 1, 1]), b = g.rand([1280])
    bench("unet_conv1x1_32x2560to1280_4", flops: 2.0 * Double(32 * 1280 * 2560 * 16), repeats: 2) {
        _ = conv2d(x, weight: w, bias: b)
    }
    let x8 = g.rand([32, 1280, 8, 8]), w3 = g.rand([1280, 1280, 3, 3])
    bench("unet_conv3x3s2_32x1280to1280_8", flops: 2.0 * Double(32 * 1280 * 1280 * 9 * 16), repeats: 2) {
        _ = conv2d(x8, weight: w3, bias: b, stride: 2, padding: 1)
    }
}
do {  // the SD UNet's transformer pieces at 256² × 16 frames with CFG: level-0 GEGLU feed-forward over 32·1024 tokens,
      // spatial self-attention over 1024 tokens per frame, and the motion modules' attention over 16 frames per pixel.
    let x = g.rand([32, 1024, 320]), wi = g.rand([2560, 320]), bi = g.rand([2560]), wo = g.rand([320, 1280]), bo = g.rand([320])
    bench("unet_geglu_ff_32x1024x320", flops: 2.0 * 32 * 1024 * 320 * (2560 + 1280), repeats: 3) {
        _ = gatedFeedForward(x, inWeight: wi, inBias: bi, outWeight: wo, outBias: bo)
    }
    let q = g.rand([32, 1024, 320]), k = g.rand([32, 1024, 320]), v = g.rand([32, 1024, 320])
    bench("unet_mha_32x1024_h8d40", flops: 4.0 * 32 * 1024 * 1024 * 320, repeats: 3) {
        _ = multiHeadAttention(query: q, key: k, value: v, heads: 8)
    }
    let mq = g.rand([2048, 16, 320]), mk = g.rand([2048, 16, 320]), mv = g.rand([2048, 16, 320])
    bench("motion_mha_2048x16_h8d40", flops: 4.0 * 2048 * 16 * 16 * 320, repeats: 3) {
        _ = multiHeadAttention(query: mq, key: mk, value: mv, heads: 8)
    }
}
ConvolutionTuning.winograd = true
do {  // the final RGB conv of a ×4 upscaler (direct path for ≤ 8 output channels)
    let x = g.rand([1, 64, 512, 512]), w = g.rand([3, 64, 3, 3]), b = g.rand([3])
    bench("conv3x3_64to3_512", flops: 2.0 * Double(3 * 64 * 9 * 512 * 512)) {
        _ = conv2d(x, weight: w, bias: b, padding: 1)
    }
}
for d in [40, 64] {
    let q = g.rand([1, 16, 4096, d]), k = g.rand([1, 16, 4096, d]), v = g.rand([1, 16, 4096, d])
    bench("attention_16x4096_d\(d)", flops: 4.0 * 16 * 4096 * 4096 * Double(d), repeats: 3) {
        _ = attention(query: q, key: k, value: v)
    }
}
do {  // GRL/DAT windows: 256 windows of 8×8 tokens, 6 heads of 16 dims, shared mask; plain and cosine
    let q = g.rand([256, 6, 64, 16]), k = g.rand([256, 6, 64, 16]), v = g.rand([256, 6, 64, 16])
    let mask = g.rand([1, 6, 64, 64]), logit = g.rand([6])
    let flops = 4.0 * 256 * 6 * 64 * 64 * 16
    bench("attention_window_256x6x64_d16", flops: flops) { _ = attention(query: q, key: k, value: v, mask: mask) }
    bench("cosine_attention_window_256x6x64_d16", flops: flops) {
        _ = cosineAttention(query: q, key: k, value: v, logitScale: logit, mask: mask)
    }
}
let n = 2048
let a = g.rand([n, n]), bm = g.rand([n, n])
bench("gemm_2048_matmul", flops: 2.0 * Double(n * n * n)) { _ = matmul(a, bm) }
let c = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
a.withUnsafeBufferPointer { pa in
    bm.withUnsafeBufferPointer { pb in
        bench("gemm_2048_openblas", flops: 2.0 * Double(n * n * n)) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1, pa.baseAddress, Int32(n),
                        pb.baseAddress, Int32(n), 0, c, Int32(n))
        }
    }
}
c.deallocate()

do {
    let s = g.rand([16, 4096, 4096 / 16])
    bench("softmax_16x4096x256", flops: Double(s.count)) { _ = softmax(s, axis: -1) }
    let x = g.rand([64, 256, 256])
    bench("silu_4M", flops: Double(x.count)) { _ = silu(x) }
    bench("gelu_4M", flops: Double(x.count)) { _ = gelu(x) }
    let gx = x.reshaped([1, 64, 256, 256]), gw = g.rand([64]), gb = g.rand([64])
    bench("groupnorm32_4M", flops: Double(x.count)) { _ = groupNorm(gx, groups: 32, weight: gw, bias: gb) }
    let lx = x.reshaped([16_384, 256]), lw = g.rand([256]), lb = g.rand([256])
    bench("layernorm256_4M", flops: Double(x.count)) { _ = layerNorm(lx, weight: lw, bias: lb) }
}
