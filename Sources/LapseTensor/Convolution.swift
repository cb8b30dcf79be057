import CLapseKernels
import COpenBLAS

/// Convolution geometry along one spatial axis.
struct ConvAxis {
    var input: Int, kernel: Int, stride: Int, padding: Int, dilation: Int
    var output: Int { (input + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1 }

    /// Output positions `o` whose tap `t` reads inside the input: `0 ≤ o·stride − padding + t·dilation < input`.
    @inline(__always)
    func validRange(tap t: Int) -> Range<Int> {
        let shift = padding - t * dilation
        let lo = shift <= 0 ? 0 : min(output, (shift + stride - 1) / stride)
        let limit = input + shift - 1
        let hi = limit < 0 ? 0 : min(output, limit / stride + 1)
        return lo..<max(lo, hi)
    }
}

extension Kernels {
    /// Budget for one im2col tile, in floats, so the column matrix stays cache/memory friendly on big frames.
    static let columnBudget = 1 << 22

    /// Adds a per-channel bias and applies an activation over `[planes, inner]` output laid out as `(n, channel)`.
    static func biasActivate(_ o: UnsafeMutablePointer<Float>, planes: Int, channels: Int, inner: Int,
                             bias: UnsafePointer<Float>?, activation: Activation?) {
        if bias == nil && activation == nil { return }
        let t = table
        let (kind, parameter) = activation?.kernelKind ?? (Int32(LAPSE_ACT_NONE), 0)
        parallelRanges(planes, minPerTask: max(1, 16_384 / max(inner, 1))) { r in
            for plane in r {
                let p = o + plane * inner
                t.pointee.activation(p, p, inner, bias?[plane % channels] ?? 0, kind, parameter)
            }
        }
    }

    /// Grouped 2-D convolution of an NCHW tensor by im2col + SGEMM, tiled over output rows.
    static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, vertical: ConvAxis, horizontal: ConvAxis,
                       groups: Int, activation: Activation?, op: StaticString,
                       prelu slopes: UnsafePointer<Float>? = nil,
                       into destination: (storage: TensorStorage, offset: Int)? = nil) -> Tensor {
        precondition(x.rank == 4, "\(op): input must be [N, C, H, W], got \(x.shape)")
        precondition(weight.rank == 4, "\(op): weight must be [out, in/groups, kh, kw], got \(weight.shape)")
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        let oc = weight.shape[0], cg = weight.shape[1], kh = weight.shape[2], kw = weight.shape[3]
        precondition(groups >= 1 && c % groups == 0 && oc % groups == 0 && cg == c / groups,
                     "\(op): weight \(weight.shape) does not fit input \(x.shape) with groups=\(groups)")
        if let bias { precondition(bias.count == oc, "\(op): bias has \(bias.count) values, expected \(oc)") }
        let vy = vertical, vx = horizontal
        precondition(vy.kernel == kh && vx.kernel == kw && vy.input == h && vx.input == w, "\(op): geometry mismatch")
        let ho = vy.output, wo = vx.output
        precondition(ho > 0 && wo > 0, "\(op): input \(x.shape) too small for kernel \(kh)×\(kw) (padding \(vy.padding), dilation \(vy.dilation))")
        let og = oc / groups, kk = cg * kh * kw, plane = ho * wo
        // Every path below writes each output element (GEMMs with beta 0, the transforms, the direct kernels;
        // depthwise clears its own planes), so the memset of a zeroed tensor would be a wasted memory pass.
        let (out, o): (Tensor, UnsafeMutablePointer<Float>)
        if let destination {
            out = Tensor(shape: [n, oc, ho, wo], storage: destination.storage, offset: destination.offset)
            o = destination.storage.pointer + destination.offset
        } else {
            (out, o) = Tensor.uninitializedOutput([n, oc, ho, wo])
        }
        let px = x.basePointer, pw = weight.basePointer
        let pointwise = kh == 1 && kw == 1 && vy.stride == 1 && vx.stride == 1 && vy.padding == 0 && vx.padding == 0
        let winograd = winogradApplies(kh: kh, kw: kw, vy: vy, vx: vx, groups: groups, channels: c, outputs: oc, images: n)
        if groups == 1 && n > 1 && plane < 256 && !winograd {
            // Small maps over a batch (a UNet's 4×4 and 8×8 levels over 32 frames): one GEMM per image would have a
            // few dozen columns and OpenBLAS would re-pack the whole O×K weight matrix for each of them.
            batchedColumnsConv(px, pw, o, n: n, c: c, oc: oc, h: h, w: w, vy: vy, vx: vx, pointwise: pointwise)
        } else if pointwise {
            for b in 0..<n {
                for g in 0..<groups {
                    sgemm(transA: false, transB: false, m: og, n: plane, k: cg,
                          a: pw + g * og * kk, lda: kk, b: px + (b * c + g * cg) * h * w, ldb: h * w,
                          c: o + (b * oc + g * og) * plane, ldc: plane)
                }
            }
        } else if winograd {
            // Bias and (leaky) ReLU ride along in the output transform; other activations run afterwards.
            let slope: Float? = switch activation {
            case .relu: 0
            case .leakyReLU(let s): s
            default: nil
            }
            let u = winogradWeightsCached(weight, oc: oc, c: c)
            winogradConv3x3(px, u.pointer, o, n: n, c: c, oc: oc, vy: vy, vx: vx, bias: bias?.basePointer,
                            slope: slope, slopes: activation == nil ? slopes : nil)
            withExtendedLifetime(u) {}
            if slope == nil, let activation {
                biasActivate(o, planes: n * oc, channels: oc, inner: plane, bias: nil, activation: activation)
            }
            if let slopes, activation != nil {
                // Both an activation and PReLU: PReLU comes after the activation, so it cannot be fused.
                applyPReLU(o, planes: n * oc, channels: oc, inner: plane, slopes: slopes)
            }
            return out
        } else if directApplies(kh: kh, kw: kw, vy: vy, vx: vx, groups: groups, outputs: oc) {
            conv3x3FewOutputs(px, pw, o, n: n, c: c, oc: oc, vy: vy, vx: vx)
        } else if cg == 1 && og == 1 {
            depthwise(px, pw, o, planes: n * c, channels: c, h: h, w: w, vy: vy, vx: vx)
        } else {
            let tileRows = max(1, min(ho, columnBudget / max(kk * wo, 1)))
            let col = UnsafeMutablePointer<Float>.allocate(capacity: kk * tileRows * wo)
            defer { col.deallocate() }
            for b in 0..<n {
                for g in 0..<groups {
                    let src = px + (b * c + g * cg) * h * w
                    var r0 = 0
                    while r0 < ho {
                        let rows = min(tileRows, ho - r0), cols = rows * wo
                        im2col(src, col, taps: kk, kh: kh, kw: kw, w: w, rows: r0..<(r0 + rows), wo: wo, vy: vy, vx: vx)
                        sgemm(transA: false, transB: false, m: og, n: cols, k: kk,
                              a: pw + g * og * kk, lda: kk, b: col, ldb: cols,
                              c: o + (b * oc + g * og) * plane + r0 * wo, ldc: plane)
                        r0 += rows
                    }
                }
            }
        }
        biasActivate(o, planes: n * oc, channels: oc, inner: plane, bias: bias?.basePointer, activation: activation)
        if let slopes { applyPReLU(o, planes: n * oc, channels: oc, inner: plane, slopes: slopes) }
        return out
    }

    /// Per-channel PReLU in place over `[planes, inner]` output laid out as `(n, channel)`.
    static func applyPReLU(_ o: UnsafeMutablePointer<Float>, planes: Int, channels: Int, inner: Int,
                           slopes: UnsafePointer<Float>) {
        let t = table
        parallelRanges(planes, minPerTask: max(1, 16_384 / max(inner, 1))) { r in
            for plane in r {
                let p = o + plane * inner
                t.pointee.activation(p, p, inner, 0, Int32(LAPSE_ACT_LEAKY_RELU), slopes[plane % channels])
            }
        }
    }

    /// Ungrouped convolution of several images per GEMM: their column matrices side by side (`[K, images·plane]`),
    /// one `[O, images·plane]` product, then each image's planes copied to their place in `o`. Images are taken in
    /// runs whose columns fit a 64 MiB budget. `pointwise` (1×1, stride 1, no padding): columns are the planes.
    static func batchedColumnsConv(_ px: UnsafePointer<Float>, _ pw: UnsafePointer<Float>, _ o: UnsafeMutablePointer<Float>,
                                   n: Int, c: Int, oc: Int, h: Int, w: Int, vy: ConvAxis, vx: ConvAxis, pointwise: Bool) {
        let kh = vy.kernel, kw = vx.kernel, ho = vy.output, wo = vx.output, plane = ho * wo, kk = c * kh * kw
        let perRun = max(1, min(n, (columnBudget * 4) / max(kk * plane, 1)))
        let col = allocateFloats(kk * perRun * plane)
        let product = allocateFloats(oc * perRun * plane)
        defer { releaseFloats(col, kk * perRun * plane); releaseFloats(product, oc * perRun * plane) }
        var b0 = 0
        while b0 < n {
            let images = min(perRun, n - b0), ld = images * plane
            let src = px + b0 * c * h * w
            if pointwise {
                parallelRanges(c, minPerTask: max(1, 65_536 / max(ld, 1))) { r in
                    for ch in r {
                        for i in 0..<images {
                            let from = src + (i * c + ch) * plane, to = col + ch * ld + i * plane
                            if plane > 16 { to.update(from: from, count: plane) } else { for p in 0..<plane { to[p] = from[p] } }
                        }
                    }
                }
            } else {
                im2col(src, col, taps: kk, kh: kh, kw: kw, w: w, rows: 0..<ho, wo: wo, vy: vy, vx: vx, ld: ld,
                       images: images, imageStride: c * h * w)
            }
            sgemm(transA: false, transB: false, m: oc, n: ld, k: kk, a: pw, lda: kk, b: col, ldb: ld, c: product, ldc: ld)
            parallelRanges(oc, minPerTask: max(1, 65_536 / max(ld, 1))) { r in
                for ch in r {
                    for i in 0..<images {
                        (o + ((b0 + i) * oc + ch) * plane).update(from: product + ch * ld + i * plane, count: plane)
                    }
                }
            }
            b0 += images
        }
    }

    /// Fills the `[taps, rows·wo]` column matrix for output rows `rows` of one group (`src` = its first channel).
    /// `ld` is the column matrix's row length (default `rows·wo`). With `images` > 1, image `i` (at
    /// `src + i·imageStride`) fills columns `i·rows·wo …` of each row, so a batch of small maps becomes one matrix in
    /// one parallel pass (a UNet's 4×4 level: 32 images × 11,520 taps of 4-float rows, where a pass per image and a
    /// library copy per row cost a fifth of the GEMM).
    static func im2col(_ src: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>, taps: Int, kh: Int, kw: Int,
                       w: Int, rows: Range<Int>, wo: Int, vy: ConvAxis, vx: ConvAxis, ld: Int? = nil,
                       images: Int = 1, imageStride: Int = 0) {
        let cols = rows.count * wo, h = vy.input, ld = ld ?? cols * images
        parallelRanges(taps, minPerTask: max(1, 65_536 / max(cols * images, 1))) { r in
            for tap in r {
                let ci = tap / (kh * kw), ki = (tap / kw) % kh, kj = tap % kw
                let valid = vx.validRange(tap: kj)
                let xoff = kj * vx.dilation - vx.padding
                for image in 0..<images {
                    let channel = src + image * imageStride + ci * h * w
                    let dst = col + tap * ld + image * cols
                    for (ri, oy) in rows.enumerated() {
                        let row = dst + ri * wo
                        let iy = oy * vy.stride - vy.padding + ki * vy.dilation
                        if iy < 0 || iy >= h {
                            for ox in 0..<wo { row[ox] = 0 }
                            continue
                        }
                        let line = channel + iy * w
                        for ox in 0..<valid.lowerBound { row[ox] = 0 }
                        if vx.stride == 1 && valid.count > 16 {
                            (row + valid.lowerBound).update(from: line + valid.lowerBound + xoff, count: valid.count)
                        } else {
                            for ox in valid { row[ox] = line[ox * vx.stride + xoff] }
                        }
                        for ox in valid.upperBound..<wo { row[ox] = 0 }
                    }
                }
            }
        }
    }

    /// Direct depthwise convolution (one input and one output channel per group), where im2col+GEMM would be a
    /// matrix-vector product per channel. `planes` = N·C; filter `plane % channels` applies to each plane.
    static func depthwise(_ px: UnsafePointer<Float>, _ pw: UnsafePointer<Float>, _ o: UnsafeMutablePointer<Float>,
                          planes: Int, channels: Int, h: Int, w: Int, vy: ConvAxis, vx: ConvAxis) {
        let kh = vy.kernel, kw = vx.kernel, ho = vy.output, wo = vx.output, t = table
        parallelRanges(planes, minPerTask: max(1, 16_384 / max(ho * wo, 1))) { r in
            for p in r {
                let src = px + p * h * w, dst = o + p * ho * wo
                let filter = pw + (p % channels) * kh * kw
                dst.update(repeating: 0, count: ho * wo)
                for ki in 0..<kh {
                    let rowsValid = vy.validRange(tap: ki)
                    for kj in 0..<kw {
                        let wt = filter[ki * kw + kj]
                        let valid = vx.validRange(tap: kj)
                        let xoff = kj * vx.dilation - vx.padding
                        for oy in rowsValid {
                            let line = src + (oy * vy.stride - vy.padding + ki * vy.dilation) * w
                            if valid.isEmpty { continue }
                            let lo = valid.lowerBound
                            t.pointee.axpy(dst + oy * wo + lo, line + lo * vx.stride + xoff, valid.count, wt, vx.stride)
                        }
                    }
                }
            }
        }
    }
}

/// 2-D convolution of NCHW input with a PyTorch-layout weight `[out, in/groups, kh, kw]`, with the bias and an
/// optional activation fused into the output pass. Non-zero padding modes pad explicitly first.
public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0, dilation: Int = 1,
                   groups: Int = 1, paddingMode: PaddingMode = .zeros, activation: Activation? = nil) -> Tensor {
    precondition(x.rank == 4 && weight.rank == 4, "conv2d: input \(x.shape) / weight \(weight.shape) must be rank 4")
    precondition(stride >= 1 && dilation >= 1 && padding >= 0, "conv2d: invalid stride/padding/dilation")
    var input = x, pad = padding
    if padding > 0 && paddingMode != .zeros {
        input = LapseTensor.pad(x, left: padding, right: padding, top: padding, bottom: padding, mode: paddingMode)
        pad = 0
    }
    let vy = ConvAxis(input: input.shape[2], kernel: weight.shape[2], stride: stride, padding: pad, dilation: dilation)
    let vx = ConvAxis(input: input.shape[3], kernel: weight.shape[3], stride: stride, padding: pad, dilation: dilation)
    return Kernels.conv2d(input, weight: weight, bias: bias, vertical: vy, horizontal: vx, groups: groups,
                          activation: activation, op: "conv2d")
}

/// Zero-padded 2-D convolution with different padding along the height and the width (PyTorch's
/// `nn.Conv2d(padding=(vertical, horizontal))`), bias and optional activation fused into the output pass.
public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: (vertical: Int, horizontal: Int),
                   activation: Activation? = nil) -> Tensor {
    precondition(x.rank == 4 && weight.rank == 4, "conv2d: input \(x.shape) / weight \(weight.shape) must be rank 4")
    precondition(stride >= 1 && padding.vertical >= 0 && padding.horizontal >= 0, "conv2d: invalid stride/padding")
    let vy = ConvAxis(input: x.shape[2], kernel: weight.shape[2], stride: stride, padding: padding.vertical, dilation: 1)
    let vx = ConvAxis(input: x.shape[3], kernel: weight.shape[3], stride: stride, padding: padding.horizontal, dilation: 1)
    return Kernels.conv2d(x, weight: weight, bias: bias, vertical: vy, horizontal: vx, groups: 1,
                          activation: activation, op: "conv2d")
}

/// Zero-padded 2-D convolution followed by a per-channel PReLU (`slopes`: one per output channel, or one for all),
/// fused into the convolution's output pass where the algorithm allows, so the activation costs no extra sweep
/// over the feature map (SRVGG runs PReLU after every conv).
public func conv2dPReLU(_ x: Tensor, weight: Tensor, bias: Tensor?, padding: Int = 0, slopes: Tensor) -> Tensor {
    precondition(x.rank == 4 && weight.rank == 4, "conv2dPReLU: input \(x.shape) / weight \(weight.shape) must be rank 4")
    let oc = weight.shape[0]
    precondition(slopes.count == oc || slopes.count == 1,
                 "conv2dPReLU: \(slopes.count) slopes for \(oc) output channels")
    let perChannel = slopes.count == oc ? slopes : Tensor(repeating: slopes.basePointer[0], shape: [oc])
    let vy = ConvAxis(input: x.shape[2], kernel: weight.shape[2], stride: 1, padding: padding, dilation: 1)
    let vx = ConvAxis(input: x.shape[3], kernel: weight.shape[3], stride: 1, padding: padding, dilation: 1)
    let y = Kernels.conv2d(x, weight: weight, bias: bias, vertical: vy, horizontal: vx, groups: 1, activation: nil,
                           op: "conv2dPReLU", prelu: perChannel.basePointer)
    withExtendedLifetime(perChannel) {}
    return y
}

/// Zero-padded stride-1 2-D convolution of a single image whose output is written into `storage` at element
/// `offset` (returned as a view of it) instead of a fresh tensor: a dense block can then grow its channel
/// concatenation in place. The destination must not overlap the input's elements.
public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, padding: Int, activation: Activation? = nil,
                   into storage: TensorStorage, offset: Int) -> Tensor {
    precondition(x.rank == 4 && weight.rank == 4 && x.shape[0] == 1,
                 "conv2d(into:): input \(x.shape) must be [1, C, H, W] and weight \(weight.shape) rank 4")
    let vy = ConvAxis(input: x.shape[2], kernel: weight.shape[2], stride: 1, padding: padding, dilation: 1)
    let vx = ConvAxis(input: x.shape[3], kernel: weight.shape[3], stride: 1, padding: padding, dilation: 1)
    let outCount = weight.shape[0] * vy.output * vx.output
    let inStart = x.offset, inEnd = x.offset + x.count
    precondition(x.storage !== storage || offset >= inEnd || offset + outCount <= inStart,
                 "conv2d(into:): output at \(offset)..<\(offset + outCount) overlaps the input \(inStart)..<\(inEnd)")
    return Kernels.conv2d(x, weight: weight, bias: bias, vertical: vy, horizontal: vx, groups: 1,
                          activation: activation, op: "conv2d(into:)", into: (storage, offset))
}

/// 1-D convolution of `[N, C, L]` input with weight `[out, in/groups, k]`.
public func conv1d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0, dilation: Int = 1,
                   groups: Int = 1) -> Tensor {
    precondition(x.rank == 3 && weight.rank == 3, "conv1d: input \(x.shape) / weight \(weight.shape) must be rank 3")
    let vy = ConvAxis(input: 1, kernel: 1, stride: 1, padding: 0, dilation: 1)
    let vx = ConvAxis(input: x.shape[2], kernel: weight.shape[2], stride: stride, padding: padding, dilation: dilation)
    let y = Kernels.conv2d(x.reshaped([x.shape[0], x.shape[1], 1, x.shape[2]]),
                           weight: weight.reshaped([weight.shape[0], weight.shape[1], 1, weight.shape[2]]),
                           bias: bias, vertical: vy, horizontal: vx, groups: groups, activation: nil, op: "conv1d")
    return y.reshaped([y.shape[0], y.shape[1], y.shape[3]])
}

/// 3-D convolution of `[N, C, D, H, W]` input with weight `[out, in, kd, kh, kw]` (zero padding, no groups).
///
/// Temporal kernels `(k, 1, 1)` run as k accumulated GEMMs straight over the input frames (no column matrix);
/// everything else builds a column matrix per output frame, tiled over output rows.
public func conv3d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: [Int] = [1, 1, 1], padding: [Int] = [0, 0, 0]) -> Tensor {
    precondition(x.rank == 5 && weight.rank == 5, "conv3d: input \(x.shape) / weight \(weight.shape) must be rank 5")
    precondition(stride.count == 3 && padding.count == 3, "conv3d: stride and padding need 3 values each")
    let n = x.shape[0], c = x.shape[1], d = x.shape[2], h = x.shape[3], w = x.shape[4]
    let oc = weight.shape[0], kd = weight.shape[2], kh = weight.shape[3], kw = weight.shape[4]
    precondition(weight.shape[1] == c, "conv3d: weight \(weight.shape) expects \(weight.shape[1]) input channels, input \(x.shape) has \(c)")
    if let bias { precondition(bias.count == oc, "conv3d: bias has \(bias.count) values, expected \(oc)") }
    let az = ConvAxis(input: d, kernel: kd, stride: stride[0], padding: padding[0], dilation: 1)
    let ay = ConvAxis(input: h, kernel: kh, stride: stride[1], padding: padding[1], dilation: 1)
    let ax = ConvAxis(input: w, kernel: kw, stride: stride[2], padding: padding[2], dilation: 1)
    let dout = az.output, ho = ay.output, wo = ax.output
    precondition(dout > 0 && ho > 0 && wo > 0, "conv3d: input \(x.shape) too small for kernel \(weight.shape)")
    let (out, o) = Tensor.output([n, oc, dout, ho, wo])
    let px = x.basePointer, pw = weight.basePointer
    let plane = ho * wo, kk = c * kd * kh * kw
    if kh == 1 && kw == 1 && stride[1] == 1 && stride[2] == 1 && padding[1] == 0 && padding[2] == 0 {
        // Temporal: weight re-laid out as [kd, O, C] so each tap is a plain matrix.
        let wt = UnsafeMutablePointer<Float>.allocate(capacity: kd * oc * c)
        defer { wt.deallocate() }
        for t in 0..<kd { for oo in 0..<oc { for ci in 0..<c { wt[(t * oc + oo) * c + ci] = pw[(oo * c + ci) * kd + t] } } }
        for b in 0..<n {
            for od in 0..<dout {
                var first = true
                for t in 0..<kd {
                    let id = od * az.stride - az.padding + t
                    if id < 0 || id >= d { continue }
                    Kernels.sgemm(transA: false, transB: false, m: oc, n: plane, k: c,
                                  a: wt + t * oc * c, lda: c, b: px + (b * c * d + id) * plane, ldb: d * plane,
                                  beta: first ? 0 : 1, c: o + (b * oc * dout + od) * plane, ldc: dout * plane)
                    first = false
                }
            }
        }
    } else {
        let tileRows = max(1, min(ho, Kernels.columnBudget / max(kk * wo, 1)))
        let col = UnsafeMutablePointer<Float>.allocate(capacity: kk * tileRows * wo)
        defer { col.deallocate() }
        let frameTaps = kh * kw
        for b in 0..<n {
            for od in 0..<dout {
                var r0 = 0
                while r0 < ho {
                    let rows = min(tileRows, ho - r0), cols = rows * wo
                    // Rows of the column matrix are (channel, kt, ki, kj); each (channel, kt) block is a 2-D im2col
                    // of one input frame, or zeros when the frame lies in the temporal padding.
                    Kernels.parallelRanges(c * kd, minPerTask: 1) { r in
                        for block in r {
                            let ci = block / kd, t = block % kd
                            let id = od * az.stride - az.padding + t
                            let dst = col + block * frameTaps * cols
                            if id < 0 || id >= d { dst.update(repeating: 0, count: frameTaps * cols); continue }
                            Kernels.im2colSerial(px + ((b * c + ci) * d + id) * h * w, dst, kh: kh, kw: kw, w: w,
                                                 rows: r0..<(r0 + rows), wo: wo, vy: ay, vx: ax)
                        }
                    }
                    Kernels.sgemm(transA: false, transB: false, m: oc, n: cols, k: kk, a: pw, lda: kk, b: col, ldb: cols,
                                  c: o + (b * oc * dout + od) * plane + r0 * wo, ldc: dout * plane)
                    r0 += rows
                }
            }
        }
    }
    Kernels.biasActivate(o, planes: n * oc, channels: oc, inner: dout * plane, bias: bias?.basePointer, activation: nil)
    return out
}

extension Kernels {
    /// Single-channel, single-threaded im2col (`kh·kw` rows) used inside already-parallel loops.
    static func im2colSerial(_ channel: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, kh: Int, kw: Int,
                             w: Int, rows: Range<Int>, wo: Int, vy: ConvAxis, vx: ConvAxis) {
        let cols = rows.count * wo, h = vy.input
        for ki in 0..<kh {
            for kj in 0..<kw {
                let base = dst + (ki * kw + kj) * cols
                let valid = vx.validRange(tap: kj)
                let xoff = kj * vx.dilation - vx.padding
                for (ri, oy) in rows.enumerated() {
                    let row = base + ri * wo
                    let iy = oy * vy.stride - vy.padding + ki * vy.dilation
                    if iy < 0 || iy >= h { row.update(repeating: 0, count: wo); continue }
                    let line = channel + iy * w
                    if valid.lowerBound > 0 { row.update(repeating: 0, count: valid.lowerBound) }
                    for ox in valid { row[ox] = line[ox * vx.stride + xoff] }
                    if valid.upperBound < wo { (row + valid.upperBound).update(repeating: 0, count: wo - valid.upperBound) }
                }
            }
        }
    }
}
