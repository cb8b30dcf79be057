import Dispatch
import LapseTensor

/// Conversions between planar float frames (`[C, H, W]`, nominal [0, 1]) and the interleaved integer and planar
/// float layouts libpng and libav use.
///
/// Quantisation rounds to nearest after clamping, so 8- and 16-bit values survive float and back exactly.
enum PixelPacking {
    /// How one output channel is made from the input planes.
    private enum Recipe {
        case plane(Int)
        case one
        case luma
    }

    private static func recipes(from inChannels: Int, to outChannels: Int) -> [Recipe] {
        let hasAlpha = inChannels == 2 || inChannels == 4
        let alphaPlane = inChannels - 1
        let colour: [Recipe] = inChannels >= 3 ? [.plane(0), .plane(1), .plane(2)] : [.plane(0), .plane(0), .plane(0)]
        let gray: Recipe = inChannels >= 3 ? .luma : .plane(0)
        let alpha: Recipe = hasAlpha ? .plane(alphaPlane) : .one
        switch outChannels {
        case 1: return [gray]
        case 2: return [gray, alpha]
        case 3: return colour
        default: return colour + [alpha]
        }
    }

    /// Runs `body(rowStart, rowEnd)` over bands of rows, in parallel when the image is large enough to pay for it.
    private static func forEachBand(height: Int, work: Int, _ body: (Int, Int) -> Void) {
        if work < 1 << 16 || height < 8 {
            body(0, height)
            return
        }
        let bands = min(height, 16)
        // Bands write disjoint rows, so sharing the closure across threads is safe.
        nonisolated(unsafe) let body = body
        DispatchQueue.concurrentPerform(iterations: bands) { band in
            body(band * height / bands, (band + 1) * height / bands)
        }
    }

    /// Interleaved unsigned integers (8-bit bytes or native-endian 16-bit words) to a planar float tensor.
    static func unpack(_ source: UnsafeRawPointer, lineSize: Int, width: Int, height: Int, channels: Int,
                       sixteenBit: Bool) -> Tensor {
        var tensor = Tensor(zeros: [channels, height, width])
        let plane = width * height
        let scale: Float = sixteenBit ? 1 / 65535 : 1 / 255
        tensor.withUnsafeMutableBufferPointer { out in
            let dst = out.baseAddress!
            forEachBand(height: height, work: plane * channels) { y0, y1 in
                for y in y0..<y1 {
                    let row = source + y * lineSize
                    let outRow = dst + y * width
                    if sixteenBit {
                        let words = row.assumingMemoryBound(to: UInt16.self)
                        for x in 0..<width {
                            for c in 0..<channels { outRow[c * plane + x] = Float(words[x * channels + c]) * scale }
                        }
                    } else {
                        let bytes = row.assumingMemoryBound(to: UInt8.self)
                        for x in 0..<width {
                            for c in 0..<channels { outRow[c * plane + x] = Float(bytes[x * channels + c]) * scale }
                        }
                    }
                }
            }
        }
        return tensor
    }

    /// A planar float tensor to interleaved integers with `outChannels` channels, optionally padded to a larger
    /// size by repeating the last column and row (odd sizes for 4:2:0 encoders).
    static func pack(_ image: Tensor, into destination: UnsafeMutableRawPointer, lineSize: Int, outChannels: Int,
                     sixteenBit: Bool, paddedWidth: Int? = nil, paddedHeight: Int? = nil) {
        let channels = image.shape[0], height = image.shape[1], width = image.shape[2]
        let outWidth = paddedWidth ?? width, outHeight = paddedHeight ?? height
        let plane = width * height
        let recipe = recipes(from: channels, to: outChannels)
        let maxValue: Float = sixteenBit ? 65535 : 255
        image.withUnsafeBufferPointer { buffer in
            let src = buffer.baseAddress!
            forEachBand(height: outHeight, work: outWidth * outHeight * outChannels) { y0, y1 in
                for y in y0..<y1 {
                    let rowOffset = min(y, height - 1) * width
                    let row = destination + y * lineSize
                    for (o, r) in recipe.enumerated() {
                        for x in 0..<outWidth {
                            let i = rowOffset + min(x, width - 1)
                            let v: Float
                            switch r {
                            case .plane(let p): v = src[p * plane + i]
                            case .one: v = 1
                            case .luma: v = 0.2126 * src[i] + 0.7152 * src[plane + i] + 0.0722 * src[2 * plane + i]
                            }
                            // NaN compares false both ways and lands on 0 rather than trapping in the conversion.
                            let q = v > 0 ? min(v * maxValue + 0.5, maxValue) : 0
                            if sixteenBit {
                                row.assumingMemoryBound(to: UInt16.self)[x * outChannels + o] = UInt16(q)
                            } else {
                                row.assumingMemoryBound(to: UInt8.self)[x * outChannels + o] = UInt8(q)
                            }
                        }
                    }
                }
            }
        }
    }

    /// Copies one float plane with a row stride (libav planar float frames) into a tensor plane, or back.
    static func copyPlane(from source: UnsafePointer<Float>, sourceStride: Int, to destination: UnsafeMutablePointer<Float>,
                          destinationStride: Int, width: Int, height: Int) {
        for y in 0..<height {
            (destination + y * destinationStride).update(from: source + y * sourceStride, count: width)
        }
    }
}
