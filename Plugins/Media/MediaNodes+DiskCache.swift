import LapseGraph

// The media nodes read files or transform frames cheaply (FFmpeg filters, crops, resizes): writing their frames to
// `--cache-dir` as exact float32 would take many times the space of the source and about as long to read back as
// recomputing them. The cache keeps their results in memory only; a cached result downstream (an upscaler's frames)
// is what spares them from running at all.
extension LoadImageNode: DiskCacheExempt {}
extension LoadVideoNode: DiskCacheExempt {}
extension FilterNode: DiskCacheExempt {}
extension ResizeNode: DiskCacheExempt {}
extension CropNode: DiskCacheExempt {}
extension PadNode: DiskCacheExempt {}
extension FrameRangeNode: DiskCacheExempt {}
extension ConcatFramesNode: DiskCacheExempt {}
