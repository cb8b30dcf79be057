import Foundation

extension Kernels {
    /// Per-output-index taps of a 1-D resampling: `start[i] ..< start[i] + taps` with `weights[i * taps + j]`;
    /// for clamped (bicubic) borders `indices` lists each tap's source explicitly.
    struct Resampler {
        var taps: Int
        var indices: [Int]  // [out * taps]
        var weights: [Float]  // [out * taps]
    }

    /// Torch's `area_pixel_compute_scale` in float.
    static func pixelScale(_ input: Int, _ output: Int, alignCorners: Bool) -> Float {
        if alignCorners { return output > 1 ? Float(input - 1) / Float(output - 1) : 0 }
        return Float(input) / Float(output)
    }

    static func cubic1(_ x: Float, _ a: Float) -> Float { ((a + 2) * x - (a + 3)) * x * x + 1 }
    static func cubic2(_ x: Float, _ a: Float) -> Float { ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }

    static func resampler(input: Int, output: Int, mode: ResizeMode, alignCorners: Bool, antialias: Bool) -> Resampler {
        let scale = pixelScale(input, output, alignCorners: alignCorners)
        switch mode {
        case .nearest:
            let s = Float(input) / Float(output)
            let idx = (0..<output).map { Swift.min(Int((Float($0) * s).rounded(.down)), input - 1) }
            return Resampler(taps: 1, indices: idx, weights: [Float](repeating: 1, count: output))
        case .bilinear where antialias, .bicubic where antialias:
            return antialiased(input: input, output: output, scale: scale, cubic: mode == .bicubic, alignCorners: alignCorners)
        case .bilinear:
            var idx: [Int] = [], w: [Float] = []
            for i in 0..<output {
                let src = alignCorners ? scale * Float(i) : Swift.max(scale * (Float(i) + 0.5) - 0.5, 0)
                let i0 = Swift.min(Int(src), input - 1)
                let i1 = i0 + (i0 < input - 1 ? 1 : 0)
                let l1 = Swift.min(Swift.max(src - Float(i0), 0), 1)
                idx += [i0, i1]; w += [1 - l1, l1]
            }
            return Resampler(taps: 2, indices: idx, weights: w)
        case .bicubic:
            var idx: [Int] = [], w: [Float] = []
            let a: Float = -0.75
            for i in 0..<output {
                let src = alignCorners ? scale * Float(i) : scale * (Float(i) + 0.5) - 0.5
                let f = src.rounded(.down)
                let t = src - f, i0 = Int(f)
                for k in -1...2 { idx.append(Swift.min(Swift.max(i0 + k, 0), input - 1)) }
                w += [cubic2(t + 1, a), cubic1(t, a), cubic1(1 - t, a), cubic2(2 - t, a)]
            }
            return Resampler(taps: 4, indices: idx, weights: w)
        }
    }

    /// Torch's anti-aliased (PIL-style) filter weights: the kernel is stretched by the downscale factor.
    static func antialiased(input: Int, output: Int, scale: Float, cubic: Bool, alignCorners: Bool) -> Resampler {
        let interp: Float = cubic ? 4 : 2
        let support = scale >= 1 ? interp * 0.5 * scale : interp * 0.5
        let taps = Int(support.rounded(.up)) * 2 + 1
        let invScale: Float = scale >= 1 ? 1 / scale : 1
        func filter(_ x: Float) -> Float {
            let ax = Swift.abs(x)
            if !cubic { return ax < 1 ? 1 - ax : 0 }
            let a: Float = -0.5
            if ax < 1 { return ((a + 2) * ax - (a + 3)) * ax * ax + 1 }
            if ax < 2 { return (((ax - 5) * ax + 8) * ax - 4) * a }
            return 0
        }
        var idx = [Int](repeating: 0, count: output * taps), w = [Float](repeating: 0, count: output * taps)
        for i in 0..<output {
            let center = scale * (Float(i) + 0.5)
            let xmin = Swift.max(Int(center - support + 0.5), 0)
            let xsize = Swift.min(Int(center + support + 0.5), input) - xmin
            var total: Float = 0
            for j in 0..<Swift.max(xsize, 0) {
                let v = filter((Float(j + xmin) - center + 0.5) * invScale)
                w[i * taps + j] = v; total += v
                idx[i * taps + j] = xmin + j
            }
            if total != 0 { for j in 0..<Swift.max(xsize, 0) { w[i * taps + j] /= total } }
            for j in Swift.max(xsize, 0)..<taps { idx[i * taps + j] = xmin }
        }
        return Resampler(taps: taps, indices: idx, weights: w)
    }
}

/// Resizes the last two dims of an NCHW tensor, matching `torch.nn.functional.interpolate(size:)` for nearest,
/// bilinear and bicubic, with `align_corners` and `antialias`. Separable: width pass, then height pass.
public func resize(_ x: Tensor, height: Int, width: Int, mode: ResizeMode, alignCorners: Bool = false,
                   antialias: Bool = false) -> Tensor {
    precondition(x.rank == 4, "resize: input must be [N, C, H, W], got \(x.shape)")
    precondition(height > 0 && width > 0, "resize: output size \(height)×\(width) must be positive")
    let h = x.shape[2], w = x.shape[3]
    precondition(h > 0 && w > 0, "resize: empty input \(x.shape)")
    let rx = Kernels.resampler(input: w, output: width, mode: mode, alignCorners: alignCorners, antialias: antialias)
    let ry = Kernels.resampler(input: h, output: height, mode: mode, alignCorners: alignCorners, antialias: antialias)
    return Kernels.separable(x, rx, ry, height: height, width: width)
}

/// Separable Gaussian blur of the last two dims of an NCHW tensor, matching kornia's `gaussian_blur2d(x,
/// (kernelHeight, kernelWidth), (sigmaY, sigmaX), border_type)`: kornia's kernel (`exp(-x²/2σ²)` at
/// `x = i − size/2`, normalised to sum 1), horizontal pass then vertical pass, output the input's size.
///
/// `border` is kornia's border type: `.reflect` (its default; the edge pixel is not repeated), `.replicate`, or
/// `.zeros` ("constant"). Kernel sizes must be odd, as kornia requires. Where kornia (through `F.pad`) refuses a
/// reflect border at least as wide as the image, the reflection here simply continues back and forth.
public func gaussianBlur2d(_ x: Tensor, kernelHeight: Int, kernelWidth: Int, sigmaY: Float, sigmaX: Float,
                           border: PaddingMode = .reflect) -> Tensor {
    precondition(x.rank == 4, "gaussianBlur2d: input must be [N, C, H, W], got \(x.shape)")
    precondition(kernelHeight > 0 && kernelHeight % 2 == 1 && kernelWidth > 0 && kernelWidth % 2 == 1,
                 "gaussianBlur2d: kernel sizes must be odd and positive, got \(kernelHeight)×\(kernelWidth)")
    precondition(sigmaY > 0 && sigmaX > 0, "gaussianBlur2d: sigmas must be positive, got \(sigmaY), \(sigmaX)")
    let h = x.shape[2], w = x.shape[3]
    precondition(h > 0 && w > 0, "gaussianBlur2d: empty input \(x.shape)")
    let rx = Kernels.gaussianFilter(length: w, size: kernelWidth, sigma: sigmaX, border: border)
    let ry = Kernels.gaussianFilter(length: h, size: kernelHeight, sigma: sigmaY, border: border)
    return Kernels.separable(x, rx, ry, height: h, width: w)
}

/// `kornia.geometry.resize(x, (height, width), interpolation, align_corners, antialias=True)`: kornia's
/// anti-aliasing is a Gaussian blur before a plain `interpolate`, applied when either axis shrinks, with
/// σ = max((factor − 1)/2, 0.001) per axis (factor = input / output size), kernel size int(max(4σ, 3)) made odd, and
/// reflect borders. Unlike torch's `antialias`, the resampling itself is not widened. A same-size call returns `x`.
public func gaussianAntialiasedResize(_ x: Tensor, height: Int, width: Int, mode: ResizeMode,
                                      alignCorners: Bool = false) -> Tensor {
    precondition(x.rank == 4, "gaussianAntialiasedResize: input must be [N, C, H, W], got \(x.shape)")
    let h = x.shape[2], w = x.shape[3]
    if h == height && w == width { return x }
    // kornia computes the factors and σ in Python floats, then builds the kernel in the input's float32.
    let factors = (Double(h) / Double(height), Double(w) / Double(width))
    var source = x
    if max(factors.0, factors.1) > 1 {
        let sigmas = (max((factors.0 - 1) / 2, 0.001), max((factors.1 - 1) / 2, 0.001))
        func kernelSize(_ sigma: Double) -> Int { let k = Int(max(4 * sigma, 3)); return k % 2 == 0 ? k + 1 : k }
        source = gaussianBlur2d(x, kernelHeight: kernelSize(sigmas.0), kernelWidth: kernelSize(sigmas.1),
                                sigmaY: Float(sigmas.0), sigmaX: Float(sigmas.1), border: .reflect)
    }
    return resize(source, height: height, width: width, mode: mode, alignCorners: alignCorners)
}

extension Kernels {
    /// kornia's 1-D Gaussian as per-output taps over a line of `length`, borders folded into the tap indices
    /// (zero borders get weight 0).
    static func gaussianFilter(length n: Int, size: Int, sigma: Float, border: PaddingMode) -> Resampler {
        let half = size / 2
        var kernel = (0..<size).map { i -> Float in
            let x = Float(i - half)
            return Foundation.exp(-(x * x) / (2 * (sigma * sigma)))
        }
        let total = kernel.reduce(0, +)
        kernel = kernel.map { $0 / total }
        func source(_ i: Int) -> Int? {
            if i >= 0 && i < n { return i }
            switch border {
            case .zeros: return nil
            case .replicate: return Swift.min(Swift.max(i, 0), n - 1)
            case .reflect:
                if n == 1 { return 0 }
                let period = 2 * (n - 1)
                let m = ((i % period) + period) % period
                return m < n ? m : period - m
            }
        }
        var idx = [Int](repeating: 0, count: n * size), w = [Float](repeating: 0, count: n * size)
        for o in 0..<n {
            for j in 0..<size {
                if let s = source(o - half + j) { idx[o * size + j] = s; w[o * size + j] = kernel[j] }
            }
        }
        return Resampler(taps: size, indices: idx, weights: w)
    }

    /// Applies `rx` along the width, then `ry` along the height, of every plane of an NCHW tensor.
    static func separable(_ x: Tensor, _ rx: Resampler, _ ry: Resampler, height: Int, width: Int) -> Tensor {
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        let planes = n * c
        let tmp = UnsafeMutablePointer<Float>.allocate(capacity: max(planes * h * width, 1))
        defer { tmp.deallocate() }
        let (out, o) = Tensor.output([n, c, height, width])
        let p = x.basePointer
        rx.indices.withUnsafeBufferPointer { xi in
            rx.weights.withUnsafeBufferPointer { xw in
                ry.indices.withUnsafeBufferPointer { yi in
                    ry.weights.withUnsafeBufferPointer { yw in
                        parallelRanges(planes, minPerTask: max(1, 16_384 / max(height * width, 1))) { r in
                            for plane in r {
                                let src = p + plane * h * w, mid = tmp + plane * h * width, dst = o + plane * height * width
                                for y in 0..<h {
                                    let line = src + y * w, row = mid + y * width
                                    for ox in 0..<width {
                                        var s: Float = 0
                                        for t in 0..<rx.taps { s += xw[ox * rx.taps + t] * line[xi[ox * rx.taps + t]] }
                                        row[ox] = s
                                    }
                                }
                                for oy in 0..<height {
                                    let row = dst + oy * width
                                    for ox in 0..<width { row[ox] = 0 }
                                    for t in 0..<ry.taps {
                                        let wt = yw[oy * ry.taps + t]
                                        if wt == 0 { continue }
                                        let line = mid + yi[oy * ry.taps + t] * width
                                        for ox in 0..<width { row[ox] += wt * line[ox] }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return withExtendedLifetime(x) { out }
    }
}

/// 2-D average pooling over the last two dims (zero padding counted in the average, floor output size).
public func avgPool2d(_ x: Tensor, kernel: Int, stride: Int? = nil, padding: Int = 0) -> Tensor {
    precondition(x.rank >= 2, "avgPool2d: input must have rank ≥ 2, got \(x.shape)")
    let s = stride ?? kernel
    precondition(kernel >= 1 && s >= 1 && padding >= 0 && padding <= kernel / 2,
                 "avgPool2d: invalid kernel \(kernel) / stride \(s) / padding \(padding)")
    let h = x.shape[x.rank - 2], w = x.shape[x.rank - 1]
    let ho = (h + 2 * padding - kernel) / s + 1, wo = (w + 2 * padding - kernel) / s + 1
    precondition(ho > 0 && wo > 0, "avgPool2d: input \(x.shape) smaller than kernel \(kernel)")
    let planes = x.count / max(h * w, 1)
    let (out, o) = Tensor.output(Array(x.shape.dropLast(2)) + [ho, wo])
    let p = x.basePointer
    let inv = 1 / Float(kernel * kernel)
    Kernels.parallelRanges(planes, minPerTask: 1) { r in
        for plane in r {
            let src = p + plane * h * w, dst = o + plane * ho * wo
            for oy in 0..<ho {
                for ox in 0..<wo {
                    var acc: Float = 0
                    for ky in 0..<kernel {
                        let iy = oy * s - padding + ky
                        if iy < 0 || iy >= h { continue }
                        for kx in 0..<kernel {
                            let ix = ox * s - padding + kx
                            if ix >= 0 && ix < w { acc += src[iy * w + ix] }
                        }
                    }
                    dst[oy * wo + ox] = acc * inv
                }
            }
        }
    }
    return out
}

/// Adaptive average pooling to `height`×`width`: bin i covers floor(i·in/out) ..< ceil((i+1)·in/out).
public func adaptiveAvgPool2d(_ x: Tensor, height: Int, width: Int) -> Tensor {
    precondition(x.rank >= 2 && height > 0 && width > 0, "adaptiveAvgPool2d: bad input \(x.shape) or size \(height)×\(width)")
    let h = x.shape[x.rank - 2], w = x.shape[x.rank - 1]
    let planes = x.count / max(h * w, 1)
    let (out, o) = Tensor.output(Array(x.shape.dropLast(2)) + [height, width])
    let p = x.basePointer
    Kernels.parallelRanges(planes, minPerTask: 1) { r in
        for plane in r {
            let src = p + plane * h * w, dst = o + plane * height * width
            for oy in 0..<height {
                let y0 = oy * h / height, y1 = ((oy + 1) * h + height - 1) / height
                for ox in 0..<width {
                    let x0 = ox * w / width, x1 = ((ox + 1) * w + width - 1) / width
                    var acc: Float = 0
                    for y in y0..<y1 { for xx in x0..<x1 { acc += src[y * w + xx] } }
                    dst[oy * width + ox] = acc / Float((y1 - y0) * (x1 - x0))
                }
            }
        }
    }
    return out
}
