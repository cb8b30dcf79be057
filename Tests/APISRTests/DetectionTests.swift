import Foundation
import Testing
import APISRPlugin
import LapseTensor

/// Detection from the tensors alone, across every committed release-layout fixture.
@Suite("Architecture detection")
struct DetectionTests {
    @Test("each fixture is detected as its architecture with the right scale", arguments: [
        ("rrdb_x4.pth", "RRDB", 4), ("rrdb_x4.safetensors", "RRDB", 4), ("rrdb_old.pth", "RRDB", 4),
        ("rrdb_x2.pth", "RRDB", 2), ("srvgg_x4.pth", "SRVGG", 4), ("srvgg_x2.pth", "SRVGG", 2),
        ("grl_tiny.pth", "GRL", 4), ("dat_small.pth", "DAT", 4),
    ])
    func detected(name: String, architecture: String, scale: Int) throws {
        let model = try UpscaleModelLoader.load(path: APISRFixtures.path(name))
        #expect(model.network.architecture == architecture)
        #expect(model.network.scale == scale)
        #expect(model.path.hasSuffix(name))
    }

    @Test("key signatures: each layout matches exactly one architecture")
    func signatures() {
        let rrdb: Set<String> = ["conv_first.weight", "body.0.rdb1.conv1.weight"]
        let old: Set<String> = ["model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight"]
        let srvgg: Set<String> = ["body.0.weight", "body.1.weight", "body.2.weight"]
        #expect(ArchitectureDetection.detect(rrdb) == .rrdb)
        #expect(ArchitectureDetection.detect(old) == .rrdb)
        #expect(ArchitectureDetection.detect(srvgg) == .srvgg)
        #expect(ArchitectureDetection.detect(["encoder.weight"]) == nil)
    }
}
