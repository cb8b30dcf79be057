"""Interleaved Lapse-vs-reference timing shared by every benchmark script (run by hand, never in CI).

Machines here are shared and their load changes by the minute, so a benchmark never times one side and then the
other: it alternates them, reference then Lapse, for a number of pairs, and reports the median of the per-pair
ratios with their spread. Lapse's side is a long-lived benchmark process (one of the Benchmarks/*/…Benchmark
executables in its serve mode) that loads its model once, prints "ready", and answers each "run" line on its standard
input with "time <seconds> …"; the reference side is a Python callable timed in this process.

Each result is printed for people and as one `RESULT {json}` line that Benchmarks/run-all.sh collects into its table.

    import pairs
    pairs.machine_header(lapse_binary)             # CPU model, vector extensions, OpenBLAS core, kernel level
    with pairs.LapseWorker([...]) as lapse:
        pairs.interleave("RRDB-6B x4 128²", "PyTorch", torch_once, lapse.run, pairs=5, target=0.7)
"""
import json
import os
import statistics
import subprocess
import sys
import time

DEFAULT_PAIRS = 5


def _doctor(lapse_binary):
    try:
        out = subprocess.run([lapse_binary, "doctor"], capture_output=True, text=True, timeout=60)
        return out.stdout
    except (OSError, subprocess.SubprocessError) as error:
        return f"lapse doctor failed: {error}\n"


def openblas_environment(lapse_binary):
    """The environment Lapse's benchmark processes get: the OpenBLAS core `lapse` itself would run with.

    `lapse` restarts itself with OPENBLAS_CORETYPE when Debian's OpenBLAS fell back to generic kernels on a CPU newer
    than itself; the benchmark executables do not, so they get the same variable here and time what users get.
    """
    env = dict(os.environ)
    if "OPENBLAS_CORETYPE" not in env:
        for line in _doctor(lapse_binary).splitlines():
            if "restarted with OPENBLAS_CORETYPE=" in line:
                env["OPENBLAS_CORETYPE"] = line.rsplit("=", 1)[1].strip()
    return env


def machine_header(lapse_binary):
    """Prints the machine a figure belongs to: `lapse doctor`'s CPU, extensions, OpenBLAS core and Lapse kernel-level
    lines, the core count and the load."""
    print("== machine")
    for line in _doctor(lapse_binary).splitlines():
        if line.split(":", 1)[0].strip().lower() in ("cpu", "extensions", "openblas", "kernels", "lapse", "note"):
            print(line)
    print(f"cores: {os.cpu_count()}, load average: {' '.join(open('/proc/loadavg').read().split()[:3])}", flush=True)


class LapseWorker:
    """A Lapse benchmark process in serve mode: loads once, then times one workload per `run()`."""

    def __init__(self, command, env=None, echo=True):
        self.command = command
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                        env=env)
        while True:
            line = self.process.stdout.readline()
            if not line:
                sys.exit(f"{command[0]} ended before it was ready (exit {self.process.wait()})")
            if echo:
                print(line.rstrip(), flush=True)
            if line.strip() == "ready":
                break

    def run(self):
        """One timed workload: Lapse's own seconds (the first number of its "time" answer)."""
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        while True:
            line = self.process.stdout.readline()
            if not line:
                sys.exit(f"{self.command[0]} ended during a run (exit {self.process.wait()})")
            if line.startswith("time "):
                return float(line.split()[1])
            print(line.rstrip(), flush=True)

    def close(self):
        """Ends the process and prints what it says at the end (agreement with the reference, peak memory)."""
        if self.process.poll() is None:
            self.process.stdin.close()
            for line in self.process.stdout:
                print(line.rstrip(), flush=True)
            self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def timed(function):
    """Wall seconds of one call, for a reference side that has no timer of its own."""
    def once():
        start = time.perf_counter()
        function()
        return time.perf_counter() - start
    return once


def interleave(workload, reference, reference_run, lapse_run, pairs=DEFAULT_PAIRS, target=None):
    """Times `pairs` pairs (reference, then Lapse), prints each pair, then `report`'s summary; returns its result.

    `target` is the ratio the issue asks for (Lapse's time over the reference's; lower is better)."""
    reference_times, lapse_times = [], []
    for i in range(pairs):
        reference_times.append(reference_run())
        lapse_times.append(lapse_run())
        print(f"  pair {i + 1}/{pairs}: {reference} {reference_times[-1]:.3f} s, Lapse {lapse_times[-1]:.3f} s, "
              f"ratio {lapse_times[-1] / reference_times[-1]:.3f}", flush=True)
    return report(workload, reference, reference_times, lapse_times, target)


def report(workload, reference, reference_times, lapse_times, target=None):
    """Prints the medians, the median per-pair ratio and its spread (lowest to highest ratio) and a RESULT line, for
    pairs timed alternately (by `interleave`, or by a script with a loop of its own); returns the result dictionary."""
    ratios = sorted(l / r for l, r in zip(lapse_times, reference_times))
    result = {
        "workload": workload,
        "reference": reference,
        "lapse_s": statistics.median(lapse_times),
        "reference_s": statistics.median(reference_times),
        "ratio": statistics.median(ratios),
        "ratio_min": ratios[0],
        "ratio_max": ratios[-1],
        "pairs": len(ratios),
        "target": target,
    }
    verdict = "" if target is None else ("  (target ≤ %.2f: %s)" % (target, "met" if result["ratio"] <= target else "NOT met"))
    print(f"{workload}: Lapse {result['lapse_s']:.3f} s, {reference} {result['reference_s']:.3f} s (medians); "
          f"median ratio {result['ratio']:.3f}, spread {ratios[0]:.3f}–{ratios[-1]:.3f} over {len(ratios)} pairs{verdict}",
          flush=True)
    print("RESULT " + json.dumps(result), flush=True)
    return result
