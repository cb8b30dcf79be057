import CLapseKernels

/// Direct 3×3 stride-1 convolution for layers with few output channels (the upscalers' final RGB conv).
///
/// With only a handful of output rows the im2col + GEMM path spends its time copying a 9×-inflated column matrix and
/// packing it for a GEMM whose M is 3; here each output row accumulates `in[y + k][x + j] · w[o][c][k][j]` straight
/// from three zero-padded input lines per channel, so the input is read ~3 times instead of being copied 9 times.
extension Kernels {
    /// Output-channel count up to which `conv2d` takes the direct path for 3×3 stride-1 convolutions.
    static let directMaxOutputs = 8

    static func directApplies(kh: Int, kw: Int, vy: ConvAxis, vx: ConvAxis, groups: Int, outputs: Int) -> Bool {
        kh == 3 && kw == 3 && vy.stride == 1 && vx.stride == 1 && vy.dilation == 1 && vx.dilation == 1 && groups == 1
            && outputs <= directMaxOutputs
    }

    static func conv3x3FewOutputs(_ px: UnsafePointer<Float>, _ pw: UnsafePointer<Float>, _ o: UnsafeMutablePointer<Float>,
                                  n: Int, c: Int, oc: Int, vy: ConvAxis, vx: ConvAxis) {
        let h = vy.input, w = vx.input, ho = vy.output, wo = vx.output, padT = vy.padding, padL = vx.padding
        let accLength = (wo + 7) / 8 * 8, lineLength = accLength + 10, t = table
        parallelRanges(n * ho, minPerTask: max(1, 4096 / max(wo, 1))) { r in
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: oc * accLength + 3 * lineLength)
            defer { scratch.deallocate() }
            let acc = scratch, lines = scratch + oc * accLength
            for row in r {
                let b = row / ho, oy = row % ho
                acc.update(repeating: 0, count: oc * accLength)
                for ch in 0..<c {
                    let plane = px + (b * c + ch) * h * w
                    // lines[k][j] = in[oy − padT + k][j − padL], zero outside the plane.
                    for k in 0..<3 {
                        let line = lines + k * lineLength, iy = oy - padT + k
                        line.update(repeating: 0, count: lineLength)
                        if iy < 0 || iy >= h { continue }
                        let lo = max(0, padL), srcLo = max(0, -padL)
                        let count = min(w - srcLo, lineLength - lo)
                        if count > 0 { (line + lo).update(from: plane + iy * w + srcLo, count: count) }
                    }
                    let l0 = UnsafePointer(lines), l1 = l0 + lineLength, l2 = l1 + lineLength
                    for oo in 0..<oc {
                        t.pointee.conv3x3_accumulate(acc + oo * accLength, l0, l1, l2, pw + (oo * c + ch) * 9, accLength)
                    }
                }
                for oo in 0..<oc {
                    (o + ((b * oc + oo) * ho + oy) * wo).update(from: acc + oo * accLength, count: wo)
                }
            }
        }
    }
}
