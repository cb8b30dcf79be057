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
    ///
    /// The tensor is allocated uninitialised (every element is written) and each row is converted eight pixels at
    /// a time with the channel count as a compile-time constant, so the loop has no per-element dispatch.
    static func unpack(_ source: UnsafeRawPointer, lineSize: Int, width: Int, height: Int, channels: Int,
                       sixteenBit: Bool) -> Tensor {
        let plane = width * height
        let storage = TensorStorage(uninitializedCount: channels * plane)
        let dst = storage.pointer
        let scale: Float = sixteenBit ? 1 / 65535 : 1 / 255
        forEachBand(height: height, work: plane * channels) { y0, y1 in
            for y in y0..<y1 {
                let row = source + y * lineSize
                let out = dst + y * width
                if sixteenBit {
                    let words = row.assumingMemoryBound(to: UInt16.self)
                    switch channels {
                    case 1: unpackRow(words, out, plane: plane, width: width, channels: 1, scale: scale)
                    case 2: unpackRow(words, out, plane: plane, width: width, channels: 2, scale: scale)
                    case 3: unpackRow(words, out, plane: plane, width: width, channels: 3, scale: scale)
                    default: unpackRow(words, out, plane: plane, width: width, channels: 4, scale: scale)
                    }
                } else {
                    let bytes = row.assumingMemoryBound(to: UInt8.self)
                    switch channels {
                    case 1: unpackRow(bytes, out, plane: plane, width: width, channels: 1, scale: scale)
                    case 2: unpackRow(bytes, out, plane: plane, width: width, channels: 2, scale: scale)
                    case 3: unpackRow(bytes, out, plane: plane, width: width, channels: 3, scale: scale)
                    default: unpackRow(bytes, out, plane: plane, width: width, channels: 4, scale: scale)
                    }
                }
            }
        }
        return Tensor(shape: [channels, height, width], storage: storage)
    }

    /// One interleaved row to `channels` plane rows `plane` floats apart; `channels` is a literal at every call.
    @inline(__always)
    private static func unpackRow<T: FixedWidthInteger & UnsignedInteger>(
        _ src: UnsafePointer<T>, _ dst: UnsafeMutablePointer<Float>, plane: Int, width: Int, channels: Int, scale: Float
    ) {
        let vscale = SIMD8<Float>(repeating: scale)
        var x = 0
        while x + 8 <= width {
            let s = src + x * channels
            for c in 0..<channels {
                var v = SIMD8<Int32>()
                for k in 0..<8 { v[k] = Int32(truncatingIfNeeded: s[k * channels + c]) }
                UnsafeMutableRawPointer(dst + c * plane + x).storeBytes(of: SIMD8<Float>(v) * vscale, as: SIMD8<Float>.self)
            }
            x += 8
        }
        while x < width {
            for c in 0..<channels { dst[c * plane + x] = Float(src[x * channels + c]) * scale }
            x += 1
        }
    }

    /// Eight floats scaled to [0, maxValue + 0.5) for truncation, i.e. rounding half up after clamping; NaN and
    /// negatives give 0. Callers truncate lane by lane: the generic `SIMD8<Int32>(_:rounding:)` initialiser is
    /// an out-of-line per-element conversion that cost more than x264 itself.
    @inline(__always)
    private static func quantise(_ v: SIMD8<Float>, _ maxValue: Float) -> SIMD8<Float> {
        var q = v * maxValue + 0.5
        q.replace(with: 0, where: .!(v .> 0))
        q.replace(with: maxValue, where: q .> maxValue)
        return q
    }

    /// One plane row to every `stride`-th integer of an interleaved row (columns 0..<width only).
    @inline(__always)
    private static func packRow<T: FixedWidthInteger & UnsignedInteger>(
        _ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<T>, width: Int, stride: Int, maxValue: Float
    ) {
        var x = 0
        while x + 8 <= width {
            let q = quantise(UnsafeRawPointer(src + x).loadUnaligned(as: SIMD8<Float>.self), maxValue)
            for k in 0..<8 { dst[(x + k) * stride] = T(truncatingIfNeeded: Int32(q[k])) }
            x += 8
        }
        if x < width {
            var v = SIMD8<Float>(repeating: 0)
            for k in 0..<(width - x) { v[k] = src[x + k] }
            let q = quantise(v, maxValue)
            for k in 0..<(width - x) { dst[(x + k) * stride] = T(truncatingIfNeeded: Int32(q[k])) }
        }
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
                        if case .plane(let p) = r {
                            // Common case: straight plane copy, vectorised; padded columns repeat the last one.
                            let from = src + p * plane + rowOffset
                            if sixteenBit {
                                let words = row.assumingMemoryBound(to: UInt16.self) + o
                                packRow(from, words, width: min(width, outWidth), stride: outChannels, maxValue: maxValue)
                                for x in width..<max(outWidth, width) { words[x * outChannels] = words[(width - 1) * outChannels] }
                            } else {
                                let bytes = row.assumingMemoryBound(to: UInt8.self) + o
                                packRow(from, bytes, width: min(width, outWidth), stride: outChannels, maxValue: maxValue)
                                for x in width..<max(outWidth, width) { bytes[x * outChannels] = bytes[(width - 1) * outChannels] }
                            }
                            continue
                        }
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
