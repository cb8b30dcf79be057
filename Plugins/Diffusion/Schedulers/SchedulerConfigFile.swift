import Foundation
import LapseSupport

/// A diffusers `scheduler_config.json` as written (absent keys stay absent), from which each `SchedulerKind` is
/// built the way diffusers' `Kind.from_config(config)` builds it: the keys in that scheduler's `__init__` signature
/// are taken from the file, every other key keeps the scheduler's own default (diffusers 0.27.2, StreamingT2V's pin).
///
/// So `DPMSolverMultistepScheduler.from_config` of ModelScope's DDIM config keeps `solver_order` 2, `dpmsolver++`
/// and `linspace` spacing while taking the betas, `steps_offset` and `prediction_type` from the file.
public struct SchedulerConfigFile: Sendable {
    /// The file's path, or `magictime` for the built-in configuration, for messages.
    public let source: String
    /// The members of the file's top-level object.
    private let members: [String: JSONValue]

    /// `_class_name`, the scheduler the file was saved from (informational: any kind can be built from it).
    public var className: String? {
        if case .string(let s)? = members["_class_name"]?.kind { return s }
        return nil
    }

    /// Parses the text of a `scheduler_config.json` and type-checks every key any supported scheduler reads.
    /// `source` names the file in errors. Python's `Infinity`/`NaN` (diffusers writes `lambda_min_clipped` as
    /// `-Infinity`) are accepted.
    public init(json: Data, source: String) throws {
        self.source = source
        let root: JSONValue
        do { root = try JSONParser.parse(json, allowingNonFiniteNumbers: true) } catch {
            throw DiffusionError.fileUnreadable(path: source, reason: error.localizedDescription)
        }
        guard case .object(let list) = root.kind else {
            throw DiffusionError.fileUnreadable(path: source, reason: "a scheduler config is a JSON object, this is a \(root.typeName)")
        }
        var members = Dictionary(list.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        // Keys diffusers records as left at their defaults are not passed on by from_config.
        if case .array(let defaults)? = members["_use_default_values"]?.kind {
            for case .string(let key) in defaults.map(\.kind) { members.removeValue(forKey: key) }
        }
        self.members = members
        // Wrong types are errors whichever kind is built later, so a bad file fails where it is loaded.
        for kind in SchedulerKind.allCases { _ = try resolve(kind, checkSupport: false) }
    }

    /// Reads `path` through the input-file rule (regular files only).
    public static func read(_ path: String) throws -> SchedulerConfigFile {
        let data: Data
        do { data = try InputFile.read(path) } catch {
            throw DiffusionError.fileUnreadable(path: path, reason: error.localizedDescription)
        }
        return try SchedulerConfigFile(json: data, source: path)
    }

    /// MagicTime's scheduler: the DDIM keyword arguments of its inference config (AnimateDiff's
    /// `noise_scheduler_kwargs`), linear betas 0.00085…0.012, `steps_offset` 1, no clipping, `set_alpha_to_one`.
    public static let magicTime: SchedulerConfigFile = {
        let json = #"{"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "#
            + #""beta_schedule": "linear", "steps_offset": 1, "clip_sample": false, "set_alpha_to_one": true}"#
        // The literal above is valid: a failure here is a programming error caught by the tests.
        return try! SchedulerConfigFile(json: Data(json.utf8), source: "magictime")
    }()

    /// The settings `kind.from_config(self)` would have, or an error naming the file, the key and the problem
    /// when the file asks for an option the scheduler here does not implement.
    public func schedulerConfig(for kind: SchedulerKind) throws -> SchedulerConfig {
        try resolve(kind, checkSupport: true)
    }

    // MARK: - from_config

    /// The `__init__` keyword arguments of each diffusers scheduler (0.27.2), plus later options that change the
    /// result when set (refused unless at their default rather than silently ignored).
    static func keys(of kind: SchedulerKind) -> Set<String> {
        let common: Set<String> = ["num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                                   "prediction_type", "timestep_spacing", "steps_offset", "rescale_betas_zero_snr"]
        switch kind {
        case .ddim:
            return common.union(["clip_sample", "set_alpha_to_one", "thresholding", "dynamic_thresholding_ratio",
                                 "clip_sample_range", "sample_max_value"])
        case .dpmpp2m:
            return common.union(["solver_order", "thresholding", "dynamic_thresholding_ratio", "sample_max_value",
                                 "algorithm_type", "solver_type", "lower_order_final", "euler_at_final",
                                 "use_karras_sigmas", "use_lu_lambdas", "final_sigmas_type", "lambda_min_clipped",
                                 "variance_type", "use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas",
                                 "use_dynamic_shifting"])
        case .euler:
            return common.union(["interpolation_type", "use_karras_sigmas", "sigma_min", "sigma_max", "timestep_type",
                                 "use_exponential_sigmas", "use_beta_sigmas", "final_sigmas_type"])
        case .eulerAncestral:
            return common
        }
    }

    /// Each scheduler's own defaults for the keys it reads (diffusers' `__init__` defaults).
    static func defaults(of kind: SchedulerKind) -> SchedulerConfig {
        var c = SchedulerConfig()
        c.numTrainTimesteps = 1000
        c.betaStart = 0.0001
        c.betaEnd = 0.02
        c.betaSchedule = .linear
        c.stepsOffset = 0
        c.predictionType = .epsilon
        switch kind {
        case .ddim:
            c.timestepSpacing = .leading
            c.clipSample = true
            c.setAlphaToOne = true
            c.clipSampleRange = 1
        case .dpmpp2m:
            c.timestepSpacing = .linspace
            c.solverOrder = 2
            c.lowerOrderFinal = true
        case .euler, .eulerAncestral:
            c.timestepSpacing = .linspace
        }
        return c
    }

    private typealias Key = SchedulerConfig.CodingKeys

    private func resolve(_ kind: SchedulerKind, checkSupport: Bool) throws -> SchedulerConfig {
        let reads = Self.keys(of: kind)
        var c = Self.defaults(of: kind)
        // Keys outside the scheduler's signature are dropped by diffusers' extract_init_dict, as here.
        func has(_ key: String) -> Bool { reads.contains(key) && members[key] != nil }
        if has(Key.numTrainTimesteps.stringValue) { c.numTrainTimesteps = try int(Key.numTrainTimesteps.stringValue) }
        if has(Key.betaStart.stringValue) { c.betaStart = try number(Key.betaStart.stringValue) }
        if has(Key.betaEnd.stringValue) { c.betaEnd = try number(Key.betaEnd.stringValue) }
        if has(Key.betaSchedule.stringValue) { c.betaSchedule = try choice(Key.betaSchedule.stringValue, BetaSchedule.self) }
        if has(Key.stepsOffset.stringValue) { c.stepsOffset = try int(Key.stepsOffset.stringValue) }
        if has(Key.timestepSpacing.stringValue) { c.timestepSpacing = try choice(Key.timestepSpacing.stringValue, TimestepSpacing.self) }
        if has(Key.predictionType.stringValue) { c.predictionType = try choice(Key.predictionType.stringValue, PredictionType.self) }
        if has(Key.setAlphaToOne.stringValue) { c.setAlphaToOne = try bool(Key.setAlphaToOne.stringValue) }
        if has(Key.clipSample.stringValue) { c.clipSample = try bool(Key.clipSample.stringValue) }
        if has(Key.clipSampleRange.stringValue) { c.clipSampleRange = try number(Key.clipSampleRange.stringValue) }
        if has(Key.solverOrder.stringValue) { c.solverOrder = try int(Key.solverOrder.stringValue) }
        if has(Key.lowerOrderFinal.stringValue) { c.lowerOrderFinal = try bool(Key.lowerOrderFinal.stringValue) }
        // Options read for their type only: they matter solely together with an option refused below.
        for key in ["dynamic_thresholding_ratio", "sample_max_value", "flow_shift"] where has(key) { _ = try number(key) }
        for key in ["sigma_min", "sigma_max"] where has(key) { _ = try number(key, nullable: true) }

        // Options with no implementation here: refused when set to anything but the value that means "off".
        for key in ["thresholding", "rescale_betas_zero_snr", "use_karras_sigmas", "use_lu_lambdas", "use_exponential_sigmas",
                    "use_beta_sigmas", "use_flow_sigmas", "use_dynamic_shifting", "euler_at_final"] where has(key) {
            // A zero final σ already makes DPM-Solver's last step first order, which is all euler_at_final asks.
            if try bool(key, nullable: true) == true, checkSupport, key != "euler_at_final" {
                throw unsupported(key, "true", "false")
            }
        }
        if has("trained_betas"), members["trained_betas"]?.isNull == false, checkSupport {
            throw unsupported("trained_betas", "a list", "null: betas come from beta_start, beta_end and beta_schedule")
        }
        if has("variance_type"), try string("variance_type", nullable: true) != nil, checkSupport {
            throw unsupported("variance_type", "\"\(try string("variance_type"))\"", "null")
        }
        if has("algorithm_type") {
            // diffusers maps the retired "deis" to dpmsolver++.
            let value = try string("algorithm_type")
            if !["dpmsolver++", "deis"].contains(value), checkSupport { throw unsupported("algorithm_type", "\"\(value)\"", "\"dpmsolver++\"") }
        }
        if has("solver_type") {
            // diffusers maps the UniPC names logrho/bh1/bh2 to midpoint.
            let value = try string("solver_type")
            if !["midpoint", "logrho", "bh1", "bh2"].contains(value), checkSupport { throw unsupported("solver_type", "\"\(value)\"", "\"midpoint\"") }
        }
        for (key, expected) in [("final_sigmas_type", "zero"), ("interpolation_type", "linear")] where has(key) {
            let value = try string(key)
            if value != expected, checkSupport { throw unsupported(key, "\"\(value)\"", "\"\(expected)\"") }
        }
        if has("timestep_type") {
            // Continuous timesteps change the network's input only for v-prediction (diffusers' condition).
            let value = try string("timestep_type")
            if value != "discrete", c.predictionType == .vPrediction, checkSupport {
                throw unsupported("timestep_type", "\"\(value)\" with v_prediction", "\"discrete\"")
            }
        }
        if has("lambda_min_clipped") {
            let value = try number("lambda_min_clipped", allowInfinite: true)
            if checkSupport, value > -Double.infinity {
                // diffusers drops the timesteps whose log-SNR λ is below the bound; a bound under the whole schedule's
                // λ drops none and changes nothing.
                let schedule = NoiseSchedule(c)
                let lambdaMin = schedule.alphasCumprod.map { a in Foundation.log(a.squareRoot()) - Foundation.log((1 - a).squareRoot()) }.min() ?? 0
                if value > Double(lambdaMin) {
                    throw unsupported("lambda_min_clipped", "\(value)", "a bound at or below the schedule's smallest λ \(lambdaMin) (e.g. -Infinity)")
                }
            }
        }
        if checkSupport {
            try c.validate(component, steps: 1)
            if kind == .dpmpp2m, !(1...2).contains(c.solverOrder) {
                throw unsupported("solver_order", "\(c.solverOrder)", "1 or 2")
            }
        }
        return c
    }

    // MARK: - Typed access with messages that name the file, key and position

    private var component: String { "scheduler config \(source)" }

    private func fail(_ key: String, _ reason: String) -> DiffusionError {
        let at = members[key].map { " (line \($0.location.line))" } ?? ""
        return .badConfig(component: component, field: key, reason: reason + at)
    }

    private func unsupported(_ key: String, _ value: String, _ supported: String) -> DiffusionError {
        fail(key, "\(value) is not supported (only \(supported))")
    }

    private func int(_ key: String) throws -> Int {
        guard case .number(_, let integer)? = members[key]?.kind, let integer else {
            throw fail(key, "expected an integer, got \(members[key]?.jsonText ?? "nothing")")
        }
        return integer
    }

    private func number(_ key: String, nullable: Bool = false, allowInfinite: Bool = false) throws -> Double {
        switch members[key]?.kind {
        case .number(let d, _)? where d.isFinite || (allowInfinite && !d.isNaN): return d
        case .null? where nullable: return .nan
        default:
            throw fail(key, "expected a \(allowInfinite ? "" : "finite ")number\(nullable ? " or null" : ""), got \(members[key]?.jsonText ?? "nothing")")
        }
    }

    private func bool(_ key: String, nullable: Bool) throws -> Bool? {
        switch members[key]?.kind {
        case .bool(let b)?: return b
        case .null? where nullable: return nil
        default: throw fail(key, "expected true or false, got \(members[key]?.jsonText ?? "nothing")")
        }
    }

    private func bool(_ key: String) throws -> Bool {
        guard case .bool(let b)? = members[key]?.kind else {
            throw fail(key, "expected true or false, got \(members[key]?.jsonText ?? "nothing")")
        }
        return b
    }

    private func string(_ key: String, nullable: Bool) throws -> String? {
        switch members[key]?.kind {
        case .string(let s)?: return s
        case .null? where nullable: return nil
        default: throw fail(key, "expected a string\(nullable ? " or null" : ""), got \(members[key]?.jsonText ?? "nothing")")
        }
    }

    private func string(_ key: String) throws -> String {
        guard let s = try string(key, nullable: false) else { throw fail(key, "expected a string") }
        return s
    }

    private func choice<E: RawRepresentable & CaseIterable>(_ key: String, _: E.Type) throws -> E where E.RawValue == String {
        let s = try string(key)
        guard let value = E(rawValue: s) else {
            throw fail(key, "\"\(s)\" is not supported (one of \(E.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")))")
        }
        return value
    }
}

extension JSONValue {
    /// True for JSON `null`.
    var isNull: Bool {
        if case .null = kind { return true }
        return false
    }
}
