import Dispatch
import Foundation
import LapseSupport
import LapseTensor

/// Resampling filters for `FrameOps.resize`.
public enum ResizeMode: String, CaseIterable, Sendable {
    case lanczos, bicubic, bilinear, area, nearest
}

/// Border handling for `FrameOps.pad`.
public enum PadMode: String, CaseIterable, Sendable {
    /// Mirror without repeating the edge pixel (…c b | a b c | b a…), as models trained with reflection padding expect.
    case reflect
    /// Repeat the edge pixel.
    case replicate
    /// Fill with 0.
    case zeros
}

/// Geometry operations on `[C, H, W]` frame tensors, in float, without leaving Swift.
public enum FrameOps {
    /// Resolves a requested size where 0 or -1 on one side keeps the aspect ratio (both 0 keeps the size).
    public static func targetSize(width: Int, height: Int, sourceWidth: Int, sourceHeight: Int) throws -> (Int, Int) {
        let w = width <= 0 ? nil : width, h = height <= 0 ? nil : height
        // A side too large for an Int comes back as Int.max, which every size check then refuses (no trap here).
        func side(_ value: Double) -> Int { value.isFinite && value < 1e15 ? max(1, Int(value.rounded())) : Int.max }
        switch (w, h) {
        case let (w?, h?): return (w, h)
        case let (w?, nil): return (w, side(Double(sourceHeight) * Double(w) / Double(sourceWidth)))
        case let (nil, h?): return (side(Double(sourceWidth) * Double(h) / Double(sourceHeight)), h)
        case (nil, nil): return (sourceWidth, sourceHeight)
        }
    }

    /// Per output coordinate: first source index and normalised weights (fixed tap count, zero-padded).
    private struct Taps {
        var start: [Int]
        var weights: [Float]
        var count: Int
    }

    private static func kernel(_ mode: ResizeMode) -> (support: Double, f: (Double) -> Double) {
        switch mode {
        case .bilinear: return (1, { x in max(0, 1 - abs(x)) })
        case .bicubic:
            // Keys cubic with a = -0.5 (PIL, OpenCV's INTER_CUBIC uses -0.75; -0.5 is the interpolating standard).
            return (2, { t in
                let x = abs(t), a = -0.5
                if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
                if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
                return 0
            })
        case .lanczos:
            return (3, { x in
                if x == 0 { return 1 }
                if abs(x) >= 3 { return 0 }
                let px = Double.pi * x
                return 3 * sin(px) * sin(px / 3) / (px * px)
            })
        case .area: return (0.5, { x in x >= -0.5 && x < 0.5 ? 1 : 0 })
        case .nearest: return (0.5, { _ in 1 })
        }
    }

    private static func taps(input: Int, output: Int, mode: ResizeMode) -> Taps {
        let scale = Double(input) / Double(output)
        if mode == .nearest {
            return Taps(start: (0..<output).map { min(input - 1, Int((Double($0) + 0.5) * scale)) },
                        weights: [Float](repeating: 1, count: output), count: 1)
        }
        let (support, f) = kernel(mode)
        // Downscaling stretches the kernel over the source so every input pixel contributes (antialiasing).
        let filterScale = max(scale, 1)
        let radius = support * filterScale
        let count = Int(ceil(radius)) * 2 + 1
        var starts = [Int](repeating: 0, count: output)
        var weights = [Float](repeating: 0, count: output * count)
        for i in 0..<output {
            let center = (Double(i) + 0.5) * scale
            let left = max(0, Int(floor(center - radius)))
            let right = min(input, Int(ceil(center + radius)))
            var sum = 0.0
            var local = [Double](repeating: 0, count: count)
            for j in left..<min(right, left + count) {
                let w = f((Double(j) + 0.5 - center) / filterScale)
                local[j - left] = w
                sum += w
            }
            starts[i] = left
            for k in 0..<count { weights[i * count + k] = Float(sum != 0 ? local[k] / sum : (k == 0 ? 1 : 0)) }
            // Taps that fall past the end carry zero weight; clamp the start so reads stay in bounds.
            if left + count > input { starts[i] = left }
        }
        return Taps(start: starts, weights: weights, count: count)
    }

    /// Resamples every channel to `width` x `height`.
    public static func resize(_ image: Tensor, width: Int, height: Int, mode: ResizeMode) -> Tensor {
        let channels = image.shape[0], inH = image.shape[1], inW = image.shape[2]
        if width == inW && height == inH { return image }
        let horizontal = taps(input: inW, output: width, mode: mode)
        let vertical = taps(input: inH, output: height, mode: mode)
        // Horizontal pass into [C, inH, width], then vertical into [C, height, width].
        var middle = Tensor(zeros: [channels, inH, width])
        image.withUnsafeBufferPointer { src in
            middle.withUnsafeMutableBufferPointer { dst in
                nonisolated(unsafe) let s = src.baseAddress!, d = dst.baseAddress!
                DispatchQueue.concurrentPerform(iterations: channels * inH) { row in
                    let input = s + row * inW, output = d + row * width
                    horizontal.weights.withUnsafeBufferPointer { w in
                        for x in 0..<width {
                            let start = horizontal.start[x]
                            let n = min(horizontal.count, inW - start)
                            var acc: Float = 0
                            for k in 0..<n { acc += input[start + k] * w[x * horizontal.count + k] }
                            output[x] = acc
                        }
                    }
                }
            }
        }
        var result = Tensor(zeros: [channels, height, width])
        middle.withUnsafeBufferPointer { src in
            result.withUnsafeMutableBufferPointer { dst in
                nonisolated(unsafe) let s = src.baseAddress!, d = dst.baseAddress!
                DispatchQueue.concurrentPerform(iterations: channels * height) { job in
                    let c = job / height, y = job % height
                    let start = vertical.start[y]
                    let n = min(vertical.count, inH - start)
                    let output = d + (c * height + y) * width
                    output.update(repeating: 0, count: width)
                    vertical.weights.withUnsafeBufferPointer { w in
                        for k in 0..<n {
                            let weight = w[y * vertical.count + k]
                            if weight == 0 { continue }
                            let input = s + (c * inH + start + k) * width
                            for x in 0..<width { output[x] += weight * input[x] }
                        }
                    }
                }
            }
        }
        return result
    }

    /// True when the rectangle at (`x`, `y`) of size `width` x `height` lies inside a `frameWidth` x `frameHeight`
    /// frame; written so that no Int input can overflow (`x + width` is never computed).
    public static func cropFits(x: Int, y: Int, width: Int, height: Int, frameWidth: Int, frameHeight: Int) -> Bool {
        x >= 0 && y >= 0 && width > 0 && height > 0 && x <= frameWidth && y <= frameHeight
            && width <= frameWidth - x && height <= frameHeight - y
    }

    /// `n` rounded up to a multiple of `m`, or nil when that does not fit in an Int.
    public static func paddedSize(_ n: Int, multipleOf m: Int) -> Int? {
        let m = max(1, m)
        let remainder = n % m
        if remainder == 0 { return n }
        let (padded, overflow) = n.addingReportingOverflow(m - remainder)
        return overflow ? nil : padded
    }

    /// The rectangle at (`x`, `y`) of size `width` x `height`; it must lie inside the image.
    public static func crop(_ image: Tensor, x: Int, y: Int, width: Int, height: Int) throws -> Tensor {
        let channels = image.shape[0], inH = image.shape[1], inW = image.shape[2]
        guard cropFits(x: x, y: y, width: width, height: height, frameWidth: inW, frameHeight: inH) else {
            throw MediaError.invalidArgument("crop \(width)x\(height) at (\(x), \(y)) does not fit inside the \(inW)x\(inH) frame")
        }
        var out = Tensor(zeros: [channels, height, width])
        image.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for c in 0..<channels {
                    for row in 0..<height {
                        (dst.baseAddress! + (c * height + row) * width)
                            .update(from: src.baseAddress! + (c * inH + y + row) * inW + x, count: width)
                    }
                }
            }
        }
        return out
    }

    /// `image` `[C, h, w]` placed at (`x`, `y`) on a zero canvas of `width`×`height` (what lies outside is cut).
    public static func place(_ image: Tensor, onCanvasWidth width: Int, height: Int, x: Int, y: Int) -> Tensor {
        let channels = image.shape[0], inH = image.shape[1], inW = image.shape[2]
        var out = Tensor(zeros: [channels, height, width])
        let x0 = max(0, x), x1 = min(width, x + inW)
        guard x0 < x1 else { return out }
        image.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for c in 0..<channels {
                    for row in max(0, y)..<min(height, y + inH) {
                        let input = src.baseAddress! + (c * inH + row - y) * inW + (x0 - x)
                        (dst.baseAddress! + (c * height + row) * width + x0).update(from: input, count: x1 - x0)
                    }
                }
            }
        }
        return out
    }

    /// Pads right and bottom so both sides become multiples of `multipleOf` (what tiled or strided models need).
    public static func pad(_ image: Tensor, multipleOf: Int, mode: PadMode) -> Tensor {
        let channels = image.shape[0], inH = image.shape[1], inW = image.shape[2]
        let m = max(1, multipleOf)
        // Callers check the padded size against MediaLimits first (PadNode does); a size past Int is left as is.
        let outW = paddedSize(inW, multipleOf: m) ?? inW, outH = paddedSize(inH, multipleOf: m) ?? inH
        if outW == inW && outH == inH { return image }
        func source(_ i: Int, _ n: Int) -> Int? {
            if i < n { return i }
            switch mode {
            case .zeros: return nil
            case .replicate: return n - 1
            case .reflect:
                if n == 1 { return 0 }
                let period = 2 * (n - 1)
                let r = i % period
                return r < n ? r : period - r
            }
        }
        let columns = (0..<outW).map { source($0, inW) }
        var out = Tensor(zeros: [channels, outH, outW])
        image.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for c in 0..<channels {
                    for y in 0..<outH {
                        guard let sy = source(y, inH) else { continue }
                        let input = src.baseAddress! + (c * inH + sy) * inW
                        let output = dst.baseAddress! + (c * outH + y) * outW
                        output.update(from: input, count: inW)
                        for x in inW..<outW { if let sx = columns[x] { output[x] = input[sx] } }
                    }
                }
            }
        }
        return out
    }

    /// Frames `start`, `start + step`, … (at most `count`, 0 = to the end), renumbered from 0.
    public static func range(_ frames: Frames, start: Int, count: Int, step: Int) throws -> Frames {
        guard start >= 0, count >= 0, step >= 1 else {
            throw MediaError.invalidArgument("FrameRange needs start >= 0, count >= 0, step >= 1 (got \(start), \(count), \(step))")
        }
        var info = frames.info
        if let total = info.frameCount {
            // Written so that no start or step can overflow.
            let remaining = max(0, total - start)
            var n = remaining == 0 ? 0 : (remaining - 1) / step + 1
            if count > 0 { n = min(n, count) }
            info.frameCount = n
        } else if count > 0 {
            info.frameCount = nil
        }
        if step > 1, let rate = info.frameRate { info.frameRate = AV.divide(rate, by: step) }
        return Frames(info: info) { RangeSource(try frames.makeSource(), start: start, count: count, step: step) }
    }

    /// `first`'s frames then `second`'s, renumbered, with `second`'s times shifted to follow on.
    public static func concat(_ first: Frames, _ second: Frames) -> Frames {
        var info = first.info
        if first.info.width != second.info.width || first.info.height != second.info.height {
            info.width = nil
            info.height = nil
        }
        if let a = first.info.frameCount, let b = second.info.frameCount { info.frameCount = a + b } else { info.frameCount = nil }
        return Frames(info: info) { ConcatSource(try first.makeSource(), second, fps: first.info.fps) }
    }
}

private final class RangeSource: FrameSource {
    private let upstream: any FrameSource
    private let start: Int, count: Int, step: Int
    private var position = 0, emitted = 0
    private var firstTime: Double?

    init(_ upstream: any FrameSource, start: Int, count: Int, step: Int) {
        self.upstream = upstream
        self.start = start
        self.count = count
        self.step = step
    }

    func next() throws -> Frame? {
        if count > 0 && emitted >= count { return nil }
        while var frame = try upstream.next() {
            let index = position
            position += 1
            guard index >= start, (index - start) % step == 0 else { continue }
            if let t = frame.time {
                if firstTime == nil { firstTime = t }
                frame.time = t - firstTime!
            }
            frame.index = emitted
            emitted += 1
            return frame
        }
        return nil
    }
}

private final class ConcatSource: FrameSource {
    private var current: any FrameSource
    private var second: Frames?
    private let fps: Double?
    private var emitted = 0
    private var offset = 0.0
    private var lastTime = -1.0

    init(_ first: any FrameSource, _ second: Frames, fps: Double?) {
        current = first
        self.second = second
        self.fps = fps
    }

    func next() throws -> Frame? {
        while true {
            if var frame = try current.next() {
                let step = 1 / (fps ?? 25)
                let time = (frame.time ?? Double(frame.index) * step) + offset
                frame.time = max(time, lastTime + 1e-6)
                lastTime = frame.time!
                frame.index = emitted
                emitted += 1
                return frame
            }
            guard let next = second else { return nil }
            second = nil
            current = try next.makeSource()
            offset = lastTime < 0 ? 0 : lastTime + 1 / (fps ?? 25)
        }
    }
}
