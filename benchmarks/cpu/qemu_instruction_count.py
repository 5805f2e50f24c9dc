"""Instructions one kernel call executes on a 64-bit ARM path, counted under qemu-user (no ARM machine to time on).

Runs a cross build's ortflash_cpu_one_call (tests/cross.sh linux-arm64 builds it) under qemu-aarch64 with its execution log
(-d in_asm,exec,nochain: every translated block's instructions, and a line each time a block runs), sums the
instructions of the blocks run, and subtracts a run that does everything but the call (path `none`: start-up and
the random inputs). Prints the count per path and shape, and each path's count over the first path's.

Instruction counts are not time: they leave out how instructions overlap, stall on memory, or differ in cost (an
FMA against a multiply and an add). Under qemu the time itself means nothing for ARM hardware (it emulates
FMA in software), so this is the measure here until the NEON path is timed on an ARM machine.

  python3 benchmarks/cpu/qemu_instruction_count.py --build build/arm64 [--paths neon,portable] [--dtypes f32,f16]
      [--shapes 12x128x128x64 ...]   # heads x q_len x kv_len x head_dim, "c" suffix: causal
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading

SYSROOT = "/usr/aarch64-linux-gnu"
TRACE = re.compile(r"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")
INSN = re.compile(r"^0x([0-9a-f]+):\s")


def count_instructions(binary, args, qemu="qemu-aarch64"):
    """Guest instructions the program executes (its whole run), from qemu's execution log read through a pipe."""
    folder = tempfile.mkdtemp(prefix="ortflash-icount-")
    fifo = os.path.join(folder, "log")
    os.mkfifo(fifo)
    sizes, runs = {}, {}

    def read():
        block_pc, block_len = None, 0
        with open(fifo, "r", errors="replace") as log:
            for line in log:
                if line.startswith("Trace"):
                    match = TRACE.match(line)
                    if match:
                        pc = int(match.group(1), 16)
                        runs[pc] = runs.get(pc, 0) + 1
                elif line.startswith("IN:"):
                    block_pc, block_len = None, 0
                elif line.startswith("0x"):
                    match = INSN.match(line)
                    if match:
                        if block_pc is None:
                            block_pc = int(match.group(1), 16)
                        block_len += 1
                        sizes[block_pc] = block_len

    reader = threading.Thread(target=read)
    reader.start()
    result = subprocess.run([qemu, "-L", SYSROOT, "-d", "in_asm,exec,nochain", "-D", fifo, binary, *args],
                            capture_output=True, text=True)
    reader.join()
    os.unlink(fifo)
    os.rmdir(folder)
    if result.returncode != 0:
        sys.exit(f"{binary} {' '.join(args)} failed: {result.stderr.strip()}")
    missing = [pc for pc in runs if pc not in sizes]
    if missing:
        sys.exit(f"{len(missing)} executed blocks were never translated in the log (e.g. {missing[0]:#x})")
    return sum(sizes[pc] * n for pc, n in runs.items()), result.stdout.strip()


def parse_shape(text):
    causal = text.endswith("c")
    heads, q_len, kv_len, head_dim = (int(x) for x in text.rstrip("c").split("x"))
    return heads, q_len, kv_len, head_dim, causal


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", required=True, help="the cross build folder (holds benchmarks/cpu/ortflash_cpu_one_call)")
    parser.add_argument("--paths", default="portable,neon")
    parser.add_argument("--dtypes", default="f32,f16")
    parser.add_argument("--shapes", nargs="+", default=["12x128x128x64", "4x256x256x128c", "12x1x2048x64"])
    options = parser.parse_args()
    binary = os.path.join(options.build, "benchmarks", "cpu", "ortflash_cpu_one_call")
    if not os.path.exists(binary):
        sys.exit(f"no {binary}: build the cross build first (bash tests/cross.sh linux-arm64 RESULTS build/native)")
    paths = options.paths.split(",")
    print(f"{'shape':<18} {'dtype':<5} " + " ".join(f"{p + ' instr':>16}" for p in paths) +
          "".join(f" {p + '/' + paths[0]:>16}" for p in paths[1:]))
    for shape in options.shapes:
        heads, q_len, kv_len, head_dim, causal = parse_shape(shape)
        for dtype in options.dtypes.split(","):
            call = [dtype, str(heads), str(q_len), str(kv_len), str(head_dim)] + (["causal"] if causal else [])
            base, _ = count_instructions(binary, ["none", *call])
            counts = [count_instructions(binary, [path, *call])[0] - base for path in paths]
            print(f"{shape:<18} {dtype:<5} " + " ".join(f"{c:>16,}" for c in counts) +
                  "".join(f" {c / counts[0]:>16.3f}" for c in counts[1:]), flush=True)


if __name__ == "__main__":
    main()
