import LapseTensor

/// Element types found in checkpoints. Everything is converted to float32 when a tensor is read; only `f32` is
/// served zero-copy.
public enum DType: String, Sendable, CaseIterable, CustomStringConvertible {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u8 = "U8", bool = "BOOL"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f64, .i64: 8
        case .f32, .i32: 4
        case .f16, .bf16, .i16: 2
        case .i8, .u8, .bool: 1
        }
    }

    public var description: String { rawValue }

    /// Converts `count` elements starting at `src` (any alignment) into float32.
    ///
    /// Offsets use wrapping arithmetic (`&*`): every caller converts a range the readers and
    /// `CheckpointFile.checkBounds` proved to lie inside the mapped file, so they cannot overflow, and the
    /// overflow checks would otherwise cost ~1.5× on these loops now that the module keeps its checks.
    func convert(_ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>) {
        switch self {
        case .f32:
            UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: count &* 4)
            for i in 0..<count { dst[i] = Float(bitPattern: UInt32(littleEndian: dst[i].bitPattern)) }
        case .f64:
            for i in 0..<count {
                dst[i] = Float(Double(bitPattern: UInt64(littleEndian: src.loadUnaligned(fromByteOffset: i &* 8, as: UInt64.self))))
            }
        case .f16:
            for i in 0..<count {
                dst[i] = halfToFloat(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: i &* 2, as: UInt16.self)))
            }
        case .bf16:
            for i in 0..<count {
                let bits = UInt16(littleEndian: src.loadUnaligned(fromByteOffset: i &* 2, as: UInt16.self))
                dst[i] = Float(bitPattern: UInt32(bits) << 16)
            }
        case .i64:
            for i in 0..<count { dst[i] = Float(Int64(littleEndian: src.loadUnaligned(fromByteOffset: i &* 8, as: Int64.self))) }
        case .i32:
            for i in 0..<count { dst[i] = Float(Int32(littleEndian: src.loadUnaligned(fromByteOffset: i &* 4, as: Int32.self))) }
        case .i16:
            for i in 0..<count { dst[i] = Float(Int16(littleEndian: src.loadUnaligned(fromByteOffset: i &* 2, as: Int16.self))) }
        case .i8:
            for i in 0..<count { dst[i] = Float(src.load(fromByteOffset: i, as: Int8.self)) }
        case .u8:
            for i in 0..<count { dst[i] = Float(src.load(fromByteOffset: i, as: UInt8.self)) }
        case .bool:
            for i in 0..<count { dst[i] = src.load(fromByteOffset: i, as: UInt8.self) != 0 ? 1 : 0 }
        }
    }
}

/// IEEE 754 binary16 → binary32, exact for every input including subnormals, infinities and NaN payloads. Written
/// without branches so widening loops (`DType.convert`, `HalfTensor.widen`) vectorise: normals rebias the exponent,
/// subnormals are `mantissa × 2⁻²⁴`, infinities and NaN keep their bits.
@inline(__always)
func halfToFloat(_ h: UInt16) -> Float {
    let x = UInt32(h)
    let sign = (x & 0x8000) << 16
    let magnitude = x & 0x7FFF
    let normal = (magnitude << 13) &+ 0x3800_0000
    let special = (magnitude << 13) | 0x7F80_0000
    let subnormal = (Float(Int32(bitPattern: magnitude)) * 0x1p-24).bitPattern
    let bits = magnitude >= 0x7C00 ? special : (magnitude < 0x0400 ? subnormal : normal)
    return Float(bitPattern: bits | sign)
}

/// binary32 → binary16 with round-to-nearest-even, used by the safetensors writer.
func floatToHalf(_ f: Float) -> UInt16 {
    let bits = f.bitPattern
    let sign = UInt16((bits >> 16) & 0x8000)
    let exp = Int((bits >> 23) & 0xFF)
    var mant = bits & 0x7F_FFFF
    if exp == 0xFF { return sign | 0x7C00 | (mant != 0 ? 0x200 : 0) }
    let e = exp - 127 + 15
    if e >= 0x1F { return sign | 0x7C00 }
    if e <= 0 {
        if e < -10 { return sign }
        mant |= 0x80_0000
        let shift = UInt32(14 - e)
        var half = mant >> shift
        let rem = mant & ((1 << shift) - 1)
        let halfway = UInt32(1) << (shift - 1)
        if rem > halfway || (rem == halfway && (half & 1) != 0) { half += 1 }
        return sign | UInt16(half)
    }
    var half = UInt32(e << 10) | (mant >> 13)
    let rem = mant & 0x1FFF
    if rem > 0x1000 || (rem == 0x1000 && (half & 1) != 0) { half += 1 }
    return sign | UInt16(truncatingIfNeeded: half)
}

/// Overflow-checked product of dimensions; nil for a negative dimension or an overflow.
func checkedProduct(_ dims: [Int]) -> Int? {
    var acc = 1
    for d in dims {
        guard d >= 0 else { return nil }
        let (p, o) = acc.multipliedReportingOverflow(by: d)
        if o { return nil }
        acc = p
    }
    return acc
}
