import Foundation
import Testing
import LapseTestSupport
import DiffusionPlugin

/// A diffusers folder's own `tokenizer/` (vocab.json, merges.txt, special tokens) against transformers'
/// `CLIPTokenizer.from_pretrained` on a tiny folder whose ids are shuffled and whose padding token is `!`, as
/// ModelScope's is (Tools/fixtures/scheduler_config.py).
@Suite struct TokenizerFolderTests {
    struct Cases: Decodable {
        struct Case: Decodable {
            let prompt: String
            let ids: [Int]
        }
        let pad_id: Int
        let cases: [Case]
        let full_vocabulary_cases: [Case]
    }

    static let folder = DiffusionFixtures.url("tokenizer_folder")

    static func cases() throws -> Cases {
        try JSONDecoder().decode(Cases.self, from: Data(contentsOf: DiffusionFixtures.url("tokenizer_folder_cases.json")))
    }

    @Test func idsMatchTransformersIncludingThePadTokenSplitOutOfTheText() throws {
        let tok = try CLIPTokenizer(folder: Self.folder)
        let file = try Self.cases()
        #expect(file.cases.count == 40)
        #expect(tok.padID == file.pad_id && tok.padID != tok.endOfTextID)
        #expect(tok.vocabularySize == 512 + 1000 + 2)
        var mismatches: [String] = []
        for c in file.cases where tok.encode(c.prompt) != c.ids {
            mismatches.append("\(c.prompt.debugDescription): got \(tok.encode(c.prompt).prefix(16)) want \(c.ids.prefix(16))")
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) prompts differ:\n\(mismatches.prefix(6).joined(separator: "\n"))")
        // "!" is the padding token, so transformers matches it verbatim: one id, not the word-final "!</w>".
        #expect(tok.tokenize("!") == [file.pad_id])
    }

    @Test func wholeCLIPVocabularyFolderMatchesTransformersAndTheBuiltInTokenizer() throws {
        // ModelScope's folder: CLIP's vocabulary in vocab.json/merges.txt with "!" padding, rebuilt from models/clip.
        let builtIn = try CLIPTokenizer(vocabularyFile: DiffusionFixtures.clipVocabulary())
        let text = String(decoding: try Inflate.gunzip([UInt8](Data(contentsOf: DiffusionFixtures.clipVocabulary()))), as: UTF8.self)
        let merges = text.split(separator: "\n", omittingEmptySubsequences: false)[1...CLIPTokenizer.mergeCount]
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var vocab: [String: Int] = [:]
        for id in 0..<builtIn.vocabularySize { vocab[try #require(builtIn.token(for: id))] = id }
        try JSONSerialization.data(withJSONObject: vocab).write(to: dir.appendingPathComponent("vocab.json"))
        try Data(("#version: 0.2\n" + merges.joined(separator: "\n") + "\n").utf8).write(to: dir.appendingPathComponent("merges.txt"))
        for name in ["special_tokens_map.json", "tokenizer_config.json"] {
            try FileManager.default.copyItem(at: Self.folder.appendingPathComponent(name), to: dir.appendingPathComponent(name))
        }
        let modelScope = try CLIPTokenizer(folder: dir)
        #expect(modelScope.padID == 0 && modelScope.vocabularySize == 49408)
        let file = try Self.cases()
        #expect(file.full_vocabulary_cases.count == 20)
        for c in file.full_vocabulary_cases {
            #expect(modelScope.encode(c.prompt) == c.ids, "\(c.prompt.debugDescription)")
            // Without "!" as a special token the folder tokenizes as CLIP's own vocabulary does.
            if !c.prompt.contains("!") {
                #expect(builtIn.encode(c.prompt, padID: 0) == c.ids, "\(c.prompt.debugDescription)")
            }
        }
    }

    /// A diffusers-style folder holding only `tokenizer/` (a copy of the fixture) or nothing.
    static func checkpointFolder(withTokenizer: Bool) throws -> URL {
        let dir = try TestSupport.makeTemporaryDirectory()
        if withTokenizer {
            try FileManager.default.copyItem(at: folder, to: dir.appendingPathComponent("tokenizer"))
        }
        return dir
    }

    @Test func loadCheckpointUsesTheFoldersTokenizerElseTheVocabularyFile() throws {
        let vocab = try DiffusionFixtures.clipVocabulary().path
        let with = try Self.checkpointFolder(withTokenizer: true), without = try Self.checkpointFolder(withTokenizer: false)
        defer {
            try? FileManager.default.removeItem(at: with)
            try? FileManager.default.removeItem(at: without)
        }
        let own = try LoadCheckpoint.tokenizer(checkpoint: with.path, vocab: vocab)
        let padID = try Self.cases().pad_id
        #expect(own.vocabularySize == 1514 && own.padID == padID)
        let builtIn = try LoadCheckpoint.tokenizer(checkpoint: without.path, vocab: vocab)
        #expect(builtIn.vocabularySize == 49408 && builtIn.padID == builtIn.endOfTextID)
        // A single file never has a tokenizer folder.
        let single = try LoadCheckpoint.tokenizer(checkpoint: with.appendingPathComponent("tokenizer/vocab.json").path, vocab: vocab)
        #expect(single.vocabularySize == 49408)
        #expect(try LoadCheckpoint.schedulerConfig(checkpoint: with.path) == nil)
    }

    @Test func brokenFoldersNameTheFileAndTheProblem() throws {
        let dir = try Self.checkpointFolder(withTokenizer: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let tokenizer = dir.appendingPathComponent("tokenizer")
        func message() -> String {
            do { _ = try CLIPTokenizer(folder: tokenizer) } catch { return error.localizedDescription }
            return "no error"
        }
        // A padding token the vocabulary lacks.
        try Data(#"{"pad_token": "<|pad|>"}"#.utf8).write(to: tokenizer.appendingPathComponent("special_tokens_map.json"))
        #expect(message().contains("<|pad|>"), "\(message())")
        // Two tokens with one id.
        try Data(#"{"a": 0, "b": 0}"#.utf8).write(to: tokenizer.appendingPathComponent("vocab.json"))
        #expect(message().contains("vocab.json") && message().contains("distinct"), "\(message())")
        try FileManager.default.removeItem(at: tokenizer.appendingPathComponent("merges.txt"))
        #expect(message().contains("merges.txt"), "\(message())")
    }
}
