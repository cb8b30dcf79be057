#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Freed large blocks kept for reuse, keyed by exact size and bounded in total.
///
/// A network allocates the same few activation sizes over and over (a UNet step makes thousands of 42–168 MB
/// tensors); memory handed back to the kernel comes back zero-filled page by page, and those page faults and
/// clearing were ~12 % of a UNet+motion step. Freed blocks (up to `limit` bytes, oldest dropped first) serve the next
/// request of the same size; the cost is at most `limit` more resident memory than the live tensors need (256 MiB:
/// six 42 MB UNet activations at 256²; RRDB ×4 of a 1080p frame under a 2048 MB tile budget peaks at 1.7 GB).
final class BlockCache: Sendable {
    static let shared = BlockCache(limit: 256 << 20)

    typealias State = (blocks: [Int: [UInt]], order: [(bytes: Int, address: UInt)], total: Int)
    let limit: Int
    private let state = Mutex<State>((blocks: [:], order: [], total: 0))

    init(limit: Int) { self.limit = limit }

    /// A cached block of exactly `bytes`, if any.
    func take(bytes: Int) -> UnsafeMutableRawPointer? {
        state.withLock { s -> UnsafeMutableRawPointer? in
            guard let address = s.blocks[bytes]?.popLast() else { return nil }
            if s.blocks[bytes]?.isEmpty == true { s.blocks[bytes] = nil }
            if let i = s.order.lastIndex(where: { $0.address == address }) { s.order.remove(at: i) }
            s.total -= bytes
            return UnsafeMutableRawPointer(bitPattern: address)
        }
    }

    /// Keeps `raw` for reuse unless it alone exceeds the limit; evicts (frees) the oldest blocks to stay within it.
    func keep(_ raw: UnsafeMutableRawPointer, bytes: Int) -> Bool {
        guard bytes <= limit else { return false }
        free(state.withLock { s -> [(bytes: Int, address: UInt)] in
            let evicted = Self.evictOldest(&s) { _, total in total + bytes <= limit }
            let address = UInt(bitPattern: raw)
            s.blocks[bytes, default: []].append(address)
            s.order.append((bytes: bytes, address: address))
            s.total += bytes
            return evicted
        })
        return true
    }

    /// Removes the oldest entries until `done(released, total)` holds or the cache is empty; returns them.
    private static func evictOldest(_ s: inout State, until done: (Int, Int) -> Bool) -> [(bytes: Int, address: UInt)] {
        var out: [(bytes: Int, address: UInt)] = [], released = 0
        while !done(released, s.total), !s.order.isEmpty {
            let victim = s.order.removeFirst()
            if var list = s.blocks[victim.bytes], let i = list.firstIndex(of: victim.address) {
                list.remove(at: i)
                s.blocks[victim.bytes] = list.isEmpty ? nil : list
            }
            s.total -= victim.bytes
            released += victim.bytes
            out.append(victim)
        }
        return out
    }

    /// Unmaps evicted blocks outside the lock.
    private func free(_ blocks: [(bytes: Int, address: UInt)]) {
        for block in blocks {
            if let raw = UnsafeMutableRawPointer(bitPattern: block.address) { Kernels.unmapBlock(raw, bytes: block.bytes) }
        }
    }
}

extension Kernels {
    /// Blocks at least this large go through `BlockCache`.
    static let reuseThreshold = 4 << 20

    /// Memory for tensors and kernel scratch, 64-byte aligned, uninitialised unless `zeroed`; large blocks are
    /// reused from `BlockCache` when a freed one of the same size is there. Give it back with `release(_:bytes:)`.
    /// A freshly mapped block is already zero, so `zeroed` clears only reused and small blocks.
    /// (Transparent huge pages were tried as well: no gain on top of reuse, and on a fragmented machine the
    /// kernel's synchronous compaction made timings erratic.)
    @inline(__always)
    static func allocate(bytes: Int, zeroed: Bool = false) -> UnsafeMutableRawPointer {
        let raw: UnsafeMutableRawPointer
        if bytes >= reuseThreshold {
            if let reused = BlockCache.shared.take(bytes: bytes) {
                raw = reused
            } else {
                raw = mapBlock(bytes: bytes)
                if mappedBlocksAreZero { return raw }
            }
        } else {
            raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        }
        if zeroed { raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes) }
        return raw
    }

    /// Whether `mapBlock` hands out zero-filled memory (anonymous mmap does).
    #if canImport(Glibc)
    static let mappedBlocksAreZero = true
    #else
    static let mappedBlocksAreZero = false
    #endif

    /// Large blocks come straight from the kernel and go straight back (`munmap`), so freeing one always lowers
    /// the resident size. Through malloc, 4–32 MB blocks freed by the worker threads stayed in glibc's arenas
    /// (its mmap threshold rises after each large free) and an RRDB ×4 of a 1080p frame peaked anywhere from 1.6
    /// to 3.0 GB from run to run.
    static func mapBlock(bytes: Int) -> UnsafeMutableRawPointer {
        #if canImport(Glibc)
        guard let raw = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), raw != MAP_FAILED else {
            fatalError("out of memory: cannot map \(bytes >> 20) MiB for a tensor")
        }
        return raw
        #else
        return UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        #endif
    }

    /// Returns a block from `mapBlock(bytes:)` to the kernel.
    static func unmapBlock(_ raw: UnsafeMutableRawPointer, bytes: Int) {
        #if canImport(Glibc)
        munmap(raw, bytes)
        #else
        raw.deallocate()
        #endif
    }

    /// Returns a block from `allocate(bytes:)`: large ones go to `BlockCache` for the next request of the same size.
    @inline(__always)
    static func release(_ raw: UnsafeMutableRawPointer, bytes: Int) {
        guard bytes >= reuseThreshold else { raw.deallocate(); return }
        if !BlockCache.shared.keep(raw, bytes: bytes) { unmapBlock(raw, bytes: bytes) }
    }

    /// `release(_:bytes:)` for `count` floats from `allocateFloats`.
    @inline(__always)
    static func releaseFloats(_ pointer: UnsafeMutablePointer<Float>, _ count: Int) {
        release(UnsafeMutableRawPointer(pointer), bytes: max(count, 1) * MemoryLayout<Float>.stride)
    }

    /// `allocate(bytes:)` for `count` floats.
    @inline(__always)
    static func allocateFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
        allocate(bytes: max(count, 1) * MemoryLayout<Float>.stride).bindMemory(to: Float.self, capacity: max(count, 1))
    }
}

extension Tensor {
    /// A fresh output tensor whose elements are left uninitialised, for kernels that overwrite every element:
    /// skipping `Tensor(zeros:)`'s memset saves one full memory pass on bandwidth-bound ops.
    @inline(__always)
    static func uninitializedOutput(_ shape: [Int]) -> (Tensor, UnsafeMutablePointer<Float>) {
        let storage = TensorStorage(uninitializedCount: Tensor.elementCount(shape))
        return (Tensor(shape: shape, storage: storage), storage.pointer)
    }
}
