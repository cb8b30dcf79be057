import Foundation

// What savers share about their output paths: `{stem}` and `{n}` templates (`OutputPathTemplate`) and `overwrite`.

extension NodeSchema {
    /// A `checkParameters` check for savers: each of `params` that is a literal string must be a well-formed output
    /// path template (known placeholders, only in the file name), so a misspelt `{stme}` fails validation rather than
    /// a run's end.
    public static func outputPathCheck(_ params: [String]) -> ParameterCheck {
        { values in
            params.compactMap { name in
                guard case .string(let text)? = values[name] else { return nil }
                do {
                    _ = try OutputPathTemplate(text)
                    return nil
                } catch {
                    return ParameterProblem(parameter: name, message: error.localizedDescription)
                }
            }
        }
    }

    /// The `overwrite` input savers declare, with the same meaning everywhere.
    public static let overwriteInput = InputSpec(
        "overwrite", .bool, default: .bool(true),
        doc: "replace a file already at the path (default true); false makes an existing file an error naming it. A path with {n} never replaces anything")
}

extension NodeInputs {
    /// A saver's `overwrite` input (`NodeSchema.overwriteInput`): true when absent, as validation would default it, so
    /// code that runs a saver directly with the inputs it took before `overwrite` existed keeps working.
    public func overwrite() throws -> Bool {
        has("overwrite") ? try bool("overwrite") : true
    }
}
