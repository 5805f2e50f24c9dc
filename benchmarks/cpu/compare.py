#!/usr/bin/env python3
"""Compares two builds of the CPU micro-benchmark on a shared machine: runs them alternately
(A, B, A, B, ...), keeps each configuration's best and median call time over all runs, and prints
the ratio B / A (below 1: B is faster).

  python3 benchmarks/cpu/compare.py BASELINE_BENCH CANDIDATE_BENCH [--runs N] [bench options...]

With `--clock cpu` among the bench options the builds are timed by CPU time, which on a machine
shared with other work is far steadier than the wall clock.
"""
import statistics
import subprocess
import sys


def run(binary, options):
    """{(shape, dtype, threads): best ms} of one run."""
    text = subprocess.run([binary, *options], check=True, capture_output=True, text=True).stdout
    rows = {}
    for line in text.splitlines():
        parts = line.split()  # shape words, dtype, threads, best ms, median ms, GFLOP/s, of peak, (median)
        if len(parts) < 8 or parts[-7] not in ("f32", "f16"):
            continue
        rows[(" ".join(parts[:-7]), parts[-7], int(parts[-6]))] = float(parts[-5])
    return rows


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        return 2
    a, b, rest = argv[1], argv[2], argv[3:]
    runs = 5
    if "--runs" in rest:
        i = rest.index("--runs")
        runs = int(rest[i + 1])
        rest = rest[:i] + rest[i + 2:]
    options = ["--rounds", "2", "--seconds", "0.2", *rest]
    times = {a: {}, b: {}}
    for _ in range(runs):
        for binary in (a, b):
            for key, ms in run(binary, options).items():
                times[binary].setdefault(key, []).append(ms)
    print(f"{'shape':26} {'dtype':5} {'thr':>3} {'A best':>9} {'B best':>9} {'B/A best':>9} {'B/A median':>11}")
    for key in times[a]:
        ta, tb = times[a][key], times[b].get(key)
        if not tb:
            continue
        print(f"{key[0]:26} {key[1]:5} {key[2]:3} {min(ta):9.3f} {min(tb):9.3f} {min(tb) / min(ta):9.3f} "
              f"{statistics.median(tb) / statistics.median(ta):11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
