import Foundation
import LapseTensor
import Synchronization

// How `ResultCache` keeps `Frames` on disk (its own file, so it can follow `Frames` into another module).
//
// A node's `Frames` is lazy: its frames are computed while a consumer pulls them. Writing the stream when the node
// returns would pull it an extra time (running the model twice) and hold every frame, so the cache records the
// stream instead: the first pass that a consumer drains to its end writes each frame to the entry as it goes by,
// and the entry is completed when the stream ends. A pass that is not drained (a consumer that stops early), that
// fails, or whose frames grow past the cache's limit per entry leaves nothing, so an unbounded stream is never
// written in full. Frames are stored exactly, as little-endian float32 (the layout in memory on the hosts Lapse
// runs on), and read back one at a time, so a cached video streams from disk in the same bounded memory.

/// A `Frames` stream being recorded into a cache entry.
final class FramesRecording: Sendable {
    private enum Phase {
        case idle
        case recording
        /// The entry is written; later passes read it instead of running the producer again.
        case finished(Frames)
        /// Over the size limit or not writable: not tried again in this process.
        case abandoned
    }

    /// Record header: magic, flags, channels, height, width, colour index (6 × UInt32), index and time (2 × UInt64).
    static let recordHeaderLength = 40
    /// `LFR1`, little-endian.
    static let recordMagic: UInt32 = 0x3152_464C

    private let upstream: Frames
    private let output: String
    private let pending: CacheEntryWriter.Pending
    private let file: URL
    private let limit: Int
    private let log: @Sendable (String) -> Void
    private let onFinish: @Sendable (Frames) -> Void
    private let phase = Mutex<Phase>(.idle)

    /// Records `frames` (the node's output `output`) into the entry at `file`, together with the rest of the node's
    /// result in `pending`; `limit` bounds the frames' bytes. `onFinish` gets the stream read back from the entry.
    init(frames: Frames, output: String, pending: CacheEntryWriter.Pending, file: URL, limit: Int,
         log: @escaping @Sendable (String) -> Void, onFinish: @escaping @Sendable (Frames) -> Void) {
        upstream = frames
        self.output = output
        self.pending = pending
        self.file = file
        self.limit = limit
        self.log = log
        self.onFinish = onFinish
    }

    /// The stream to hand downstream in place of the node's own.
    var frames: Frames { Frames(info: upstream.info) { try self.makeSource() } }

    private func makeSource() throws -> any FrameSource {
        let (start, finished) = phase.withLock { phase -> (Bool, Frames?) in
            switch phase {
            case .idle:
                phase = .recording
                return (true, nil)
            case .finished(let frames): return (false, frames)
            case .recording, .abandoned: return (false, nil)
            }
        }
        if let finished { return try finished.makeSource() }
        let source: any FrameSource
        do {
            source = try upstream.makeSource()
        } catch {
            if start { release() }
            throw error
        }
        guard start else { return source }
        do {
            return Recorder(source, writer: try CacheEntryWriter(target: file), owner: self)
        } catch {
            abandon("could not write the cache entry: \(error.localizedDescription)")
            return source
        }
    }

    /// A recording pass ended without completing the entry; another pass may try.
    fileprivate func release() { phase.withLock { if case .recording = $0 { $0 = .idle } } }

    fileprivate func abandon(_ message: String) {
        phase.withLock { $0 = .abandoned }
        log(message)
    }

    fileprivate func finish(_ writer: CacheEntryWriter, count: Int, colors: [ColorInfo]) {
        var info = upstream.info
        info.frameCount = count
        let length = writer.written
        do {
            try writer.finish(pending, stream: .init(name: output, offset: 0, length: length, frameCount: count,
                                                     colors: colors, info: info))
            let handle = try CacheEntryHandle(path: file.path)
            let restored = Self.fileFrames(handle: handle, offset: CacheEntryFormat.headerLength, length: length,
                                           count: count, colors: colors, info: info)
            phase.withLock { $0 = .finished(restored) }
            onFinish(restored)
        } catch {
            writer.discard()
            abandon("could not write the cache entry: \(error.localizedDescription)")
        }
    }

    fileprivate var limitBytes: Int { limit }

    /// Passes frames through, appending each to the entry.
    private final class Recorder: FrameSource {
        private let upstream: any FrameSource
        private var writer: CacheEntryWriter?
        private let owner: FramesRecording
        private var colors: [ColorInfo] = []
        private var count = 0

        init(_ upstream: any FrameSource, writer: CacheEntryWriter, owner: FramesRecording) {
            self.upstream = upstream
            self.writer = writer
            self.owner = owner
        }

        deinit {
            // Not drained to its end (or failed): no entry.
            if let writer {
                writer.discard()
                owner.release()
            }
        }

        func next() throws -> Frame? {
            let frame: Frame?
            do {
                frame = try upstream.next()
            } catch {
                writer?.discard()
                writer = nil
                owner.release()
                throw error
            }
            guard let writer else { return frame }
            guard let frame else {
                self.writer = nil
                owner.finish(writer, count: count, colors: colors)
                return nil
            }
            do {
                try record(frame, into: writer)
            } catch let error as LimitReached {
                stop(error.message)
            } catch {
                stop("could not write the cache entry: \(error.localizedDescription)")
            }
            return frame
        }

        private struct LimitReached: Error { let message: String }

        private func stop(_ message: String) {
            writer?.discard()
            writer = nil
            owner.abandon(message)
        }

        private func record(_ frame: Frame, into writer: CacheEntryWriter) throws {
            let pixels = frame.image.count * 4
            guard writer.written + FramesRecording.recordHeaderLength + pixels <= owner.limitBytes else {
                throw LimitReached(message: "not cached on disk: the frames passed the \(ResultCache.describe(bytes: owner.limitBytes)) limit per entry at frame \(count + 1)")
            }
            let colorIndex: Int
            if let known = colors.firstIndex(of: frame.color) {
                colorIndex = known
            } else {
                colors.append(frame.color)
                colorIndex = colors.count - 1
            }
            var header = PersistentWriter()
            header.append(FramesRecording.recordMagic)
            header.append(UInt32(frame.time == nil ? 0 : 1))
            header.append(UInt32(frame.channels))
            header.append(UInt32(frame.height))
            header.append(UInt32(frame.width))
            header.append(UInt32(colorIndex))
            header.append(int: frame.index)
            header.append(frame.time ?? 0)
            try writer.append(header.data)
            try frame.image.withUnsafeBufferPointer { try writer.append(UnsafeRawBufferPointer($0)) }
            count += 1
        }
    }

    /// A stream reading the records at `offset..<offset+length` of an entry (already checked against its checksum).
    static func fileFrames(handle: CacheEntryHandle, offset: Int, length: Int, count: Int, colors: [ColorInfo],
                           info: FrameStreamInfo) -> Frames {
        Frames(info: info) { FileSource(handle: handle, offset: offset, end: offset + length, count: count, colors: colors) }
    }

    private final class FileSource: FrameSource {
        private let handle: CacheEntryHandle
        private var position: Int
        private let end: Int
        private let count: Int
        private let colors: [ColorInfo]
        private var delivered = 0

        init(handle: CacheEntryHandle, offset: Int, end: Int, count: Int, colors: [ColorInfo]) {
            self.handle = handle
            position = offset
            self.end = end
            self.count = count
            self.colors = colors
        }

        private func damaged(_ reason: String) -> CacheEntryError {
            .malformed("\(TerminalText.quoted(handle.path)), frame \(delivered + 1): \(reason)")
        }

        func next() throws -> Frame? {
            guard delivered < count else {
                guard position == end else { throw damaged("bytes after the last frame") }
                return nil
            }
            guard end - position >= FramesRecording.recordHeaderLength else { throw damaged("cut short") }
            var header = PersistentReader(try handle.read(count: FramesRecording.recordHeaderLength, at: position))
            let magic = try header.uint32(), flags = try header.uint32()
            let channels = Int(try header.uint32()), height = Int(try header.uint32()), width = Int(try header.uint32())
            let colorIndex = Int(try header.uint32())
            let index = try header.int(), time = try header.double()
            guard magic == FramesRecording.recordMagic, (1...4).contains(channels), height > 0, width > 0,
                  colorIndex < colors.count else { throw damaged("not a frame record") }
            let (elements, overflow) = (channels * height).multipliedReportingOverflow(by: width)
            guard !overflow, elements <= (end - position - FramesRecording.recordHeaderLength) / 4 else {
                throw damaged("cut short")
            }
            let storage = TensorStorage(uninitializedCount: elements)
            try handle.read(into: UnsafeMutableRawBufferPointer(start: storage.pointer, count: elements * 4),
                            at: position + FramesRecording.recordHeaderLength)
            position += FramesRecording.recordHeaderLength + elements * 4
            delivered += 1
            return Frame(image: Tensor(shape: [channels, height, width], storage: storage), index: index,
                         time: flags & 1 == 0 ? nil : time, color: colors[colorIndex])
        }
    }
}
