import CMediaHelpers
import Foundation
import LapseSupport
import LapseTensor

/// PNG reading and writing through libpng (classic API behind a small C helper, see `lapse_png.c`).
public enum PNGCodec {
    /// Reads a PNG of any bit depth and colour type into one frame, keeping the file's channel count
    /// (gray, gray+alpha, RGB, RGBA; palettes expand to RGB or RGBA) and exact sample values.
    public static func read(path: String) throws -> Frame {
        // Regular files only, checked before opening: a FIFO would block, a folder would read as "bad signature".
        try AV.checkInputFile(path)
        var image = lapse_png_image()
        var message = [CChar](repeating: 0, count: 512)
        let status = lapse_png_read(path, &image, UInt32(MediaLimits.maxDimension), UInt64(MediaLimits.maxPixels),
                                    &message, message.count)
        guard status == 0 else {
            throw MediaError.cannotOpen(path: path, reason: "PNG: " + String(nulTerminated: message))
        }
        defer { lapse_png_free(&image) }
        let width = Int(image.width), height = Int(image.height), channels = Int(image.channels)
        try MediaLimits.check(width: width, height: height, path: path)
        let sixteen = image.bit_depth == 16
        let tensor = PixelPacking.unpack(UnsafeRawPointer(image.data), lineSize: width * channels * (sixteen ? 2 : 1),
                                         width: width, height: height, channels: channels, sixteenBit: sixteen)
        return Frame(image: tensor, index: 0, time: nil,
                     color: ColorInfo(matrix: "rgb", range: "full", bitDepth: sixteen ? 16 : 8))
    }

    /// Writes one frame as PNG (8 or 16 bits per sample, the frame's own channel count), atomically; with a `group`,
    /// the file stays staged in it until the group commits (image sequences). With `replacing` false an existing
    /// file at `path` is an error.
    public static func write(_ frame: Frame, to path: String, bitDepth: Int, group: AtomicFileGroup? = nil,
                             replacing: Bool = true) throws {
        guard bitDepth == 8 || bitDepth == 16 else {
            throw MediaError.invalidArgument("\(TerminalText.quoted(path)): PNG bit depth must be 8 or 16, got \(bitDepth)")
        }
        try MediaLimits.check(width: frame.width, height: frame.height, path: path)
        let channels = frame.channels, bytes = bitDepth / 8
        let lineSize = frame.width * channels * bytes
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: lineSize * frame.height, alignment: 16)
        defer { buffer.deallocate() }
        PixelPacking.pack(frame.image, into: buffer, lineSize: lineSize, outChannels: channels, sixteenBit: bitDepth == 16)
        let encode = { (temp: URL) throws in
            var message = [CChar](repeating: 0, count: 512)
            let status = lapse_png_write(temp.path, UInt32(frame.width), UInt32(frame.height), Int32(channels),
                                         Int32(bitDepth), buffer, &message, message.count)
            guard status == 0 else { throw MediaError.cannotWrite(path: path, reason: "PNG: " + String(nulTerminated: message)) }
        }
        let url = URL(fileURLWithPath: path)
        if let group {
            try group.write(to: url, replacing: replacing, encode)
        } else {
            try AtomicFile.write(to: url, replacing: replacing, encode)
        }
    }
}
