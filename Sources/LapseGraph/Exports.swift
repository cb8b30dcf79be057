// Atomic output files, the input-file rule and the text helpers are part of the API every node uses.
@_exported import LapseSupport
