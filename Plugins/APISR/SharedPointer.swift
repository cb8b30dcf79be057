/// A raw pointer handed to `DispatchQueue.concurrentPerform` bodies. Sound because every parallel loop in this
/// module writes disjoint ranges and the memory outlives the loop.
struct SharedPointer<T>: @unchecked Sendable {
    let base: UnsafeMutablePointer<T>
    init(_ base: UnsafeMutablePointer<T>) { self.base = base }
    init(_ base: UnsafePointer<T>) { self.base = UnsafeMutablePointer(mutating: base) }
}
