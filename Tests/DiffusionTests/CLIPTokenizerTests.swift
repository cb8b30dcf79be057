import Foundation
import Testing
import DiffusionPlugin

/// Parity of the CLIP BPE tokenizer with transformers' CLIPTokenizer on the real vocabulary.
@Suite struct CLIPTokenizerTests {
    static let shared: Result<CLIPTokenizer, Error> = Result { try CLIPTokenizer(vocabularyFile: DiffusionFixtures.clipVocabulary()) }

    @Test func vocabularyMatchesCLIP() throws {
        let tok = try Self.shared.get()
        #expect(tok.vocabularySize == 49408)
        #expect(tok.startOfTextID == 49406)
        #expect(tok.endOfTextID == 49407)
        #expect(tok.token(for: 0) == "!")
        #expect(tok.token(for: 256) == "!</w>")
        #expect(tok.token(for: 512) == "in")  // first merge "i n"
    }

    @Test func idsMatchTransformersOnFixturePrompts() throws {
        let tok = try Self.shared.get()
        let root = try #require(try DiffusionFixtures.json("clip_tokenizer.json") as? [String: Any])
        let cases = try #require(root["cases"] as? [[String: Any]])
        #expect(cases.count >= 200)
        var mismatches: [String] = []
        for c in cases {
            let prompt = try #require(c["prompt"] as? String)
            let expected = try #require(c["ids"] as? [Int])
            let ids = tok.encode(prompt)
            if ids != expected { mismatches.append("\(prompt.debugDescription): got \(ids.prefix(20)) want \(expected.prefix(20))") }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) of \(cases.count) prompts differ:\n\(mismatches.prefix(8).joined(separator: "\n"))")
    }

    @Test func truncatesKeepingEOSAndPadsWithEOS() throws {
        let tok = try Self.shared.get()
        let long = tok.encode(String(repeating: "flower ", count: 200))
        #expect(long.count == 77)
        #expect(long.first == 49406 && long.last == 49407)
        #expect(long[1..<76].allSatisfy { $0 != 49407 })
        let short = tok.encode("a cat")
        #expect(short.count == 77)
        #expect(Array(short[3...]).allSatisfy { $0 == 49407 })
        #expect(tok.encode("a cat", maxLength: 8, padID: 0) == [49406, 320, 2368, 49407, 0, 0, 0, 0])
    }

    @Test func decodeRoundTripsNormalisedText() throws {
        let tok = try Self.shared.get()
        let ids = tok.tokenize("A Café, 2 émojis 🌸!")
        #expect(tok.decode(ids) == "a café , 2 émojis 🌸!")
    }

    @Test func rejectsTruncatedVocabulary() throws {
        #expect(throws: DiffusionError.self) { try CLIPTokenizer(mergesText: "#version: 0.2\ni n\nt h\n") }
    }
}

/// The DEFLATE / gzip decoder on hand-made streams (the real vocabulary file covers dynamic Huffman blocks).
@Suite struct InflateTests {
    @Test func storedAndFixedBlocks() throws {
        // Stored block "hi", final: BFINAL=1 BTYPE=00, LEN=2, NLEN=~2.
        #expect(try Inflate.inflate([0x01, 0x02, 0x00, 0xfd, 0xff, 0x68, 0x69]) == Array("hi".utf8))
        // zlib.compressobj(wbits=-15) of "aaaaaaaaaa" (fixed Huffman with a back-reference).
        #expect(try Inflate.inflate([0x4b, 0x4c, 0x84, 0x01, 0x00]) == Array("aaaaaaaaaa".utf8))
    }

    @Test func gzipChecksIntegrity() throws {
        // gzip.compress(b"hello", mtime=0)
        var gz: [UInt8] = [0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xff, 0xcb, 0x48, 0xcd, 0xc9, 0xc9,
                           0x07, 0x00, 0x86, 0xa6, 0x10, 0x36, 0x05, 0x00, 0x00, 0x00]
        #expect(try Inflate.gunzip(gz) == Array("hello".utf8))
        gz[17] ^= 0xff
        #expect(throws: InflateError.self) { try Inflate.gunzip(gz) }
        #expect(throws: InflateError.self) { try Inflate.gunzip(Array(gz.prefix(12))) }
    }
}
