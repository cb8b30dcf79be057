import Foundation
import LapseFuzzing
import Testing

/// A short pass of every fuzz family (the full campaign is `Tools/fuzz/run.sh`, by hand). A crash or a trap in a
/// parser kills the test process, which fails the suite; each refused input must carry a message a user can act on.
@Suite("Fuzz smoke pass")
struct FuzzSmokeTests {
    @Test(arguments: FuzzFamilies.all.map(\.name))
    func family(_ name: String) throws {
        let family = try #require(FuzzFamilies.named(name))
        let report = try FuzzRunner(family: family, seed: 0x5EED).run(inputs: 1500, seconds: 6)
        #expect(report.inputs > 0)
        #expect(report.vagueErrors.isEmpty, "errors without a usable message: \(report.vagueErrors)")
        #expect(report.slowest < 10, "an input took \(report.slowest) s")
    }
}
