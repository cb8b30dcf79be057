// Atomic output files, the input-file rule and the text helpers are part of the API every node uses.
@_exported import LapseSupport
// Frames live in LapseTensor, below both the graph runtime and LapseMedia; the types a streaming node names are
// re-exported so that a node file needs `import LapseGraph` only.
@_exported import struct LapseTensor.Frame
@_exported import class LapseTensor.Frames
@_exported import struct LapseTensor.FrameStreamInfo
@_exported import struct LapseTensor.ColorInfo
@_exported import protocol LapseTensor.FrameSource
@_exported import class LapseTensor.ClosureFrameSource
