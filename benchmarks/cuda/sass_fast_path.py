#!/usr/bin/env python3
"""Counts the instructions of each kernel's key-tile loop on its fast path, from SASS, without a GPU.

    cuobjdump -sass build/cuda/CMakeFiles/ortflash_cuda.dir/customop/src/cuda/fwd_hdim128.cu.o > k.sass
    python3 benchmarks/cuda/sass_fast_path.py k.sass [--filter FwdTraits] [--ops 12]

    (or let it run cuobjdump: python3 benchmarks/cuda/sass_fast_path.py fwd_hdim128.cubin)

A kernel's main loop is taken to be the span of its last backward branch. Its fast path is that span
without every forward branch's body, i.e. the iteration in which every forward branch jumps: in the
tensor-core kernel, a key tile that needs no mask and no rescale of the output. Instructions that are
predicated off still count (they take an issue slot). The tensor-core kernel issues from one warp
scheduler per 16 mma; the ratio of other instructions to HMMA says how much of that issue bandwidth the
softmax, addressing and loads take — a static measure to compare code changes where no GPU is at hand
(it says nothing about latency, stalls or memory).
"""

import argparse
import collections
import re
import subprocess
import sys

INSTRUCTION = re.compile(r"\s+/\*([0-9a-f]+)\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)(.*)")
FUNCTION = re.compile(r"\s*Function : (\S+)")
TARGET = re.compile(r"0x([0-9a-f]+)")


def parse_functions(text):
    """{mangled name: [(address, predicate, opcode, operands)]} in listing order."""
    functions, current = {}, None
    for line in text.splitlines():
        named = FUNCTION.match(line)
        if named:
            current = functions.setdefault(named.group(1), [])
            continue
        match = INSTRUCTION.match(line)
        if match and current is not None:
            current.append((int(match.group(1), 16), match.group(2) or "", match.group(3), match.group(4)))
    return functions


def branch_target(instruction):
    if not instruction[2].startswith("BRA"):
        return None
    found = TARGET.search(instruction[3])
    return int(found.group(1), 16) if found else None


def fast_path(instructions):
    """(loop body, fast path) of the span of the last backward branch; ([], []) when there is no loop."""
    backward = [i for i in instructions if (t := branch_target(i)) is not None and t < i[0]]
    if not backward:
        return [], []
    last = max(backward, key=lambda i: i[0])
    low, high = branch_target(last), last[0]
    body = [i for i in instructions if low <= i[0] <= high]
    skipped = set()
    for i in body:
        target = branch_target(i)
        if target is not None and target > i[0]:
            skipped.update(j[0] for j in body if i[0] < j[0] < target)
    return body, [i for i in body if i[0] not in skipped]


def summarize(name, instructions, top):
    body, path = fast_path(instructions)
    if not body:
        return f"{name}: no loop"
    ops = collections.Counter(i[2].split(".")[0] for i in path)
    mma = ops.get("HMMA", 0)
    ratio = f", {(len(path) - mma) / mma:.2f} other per HMMA" if mma else ""
    common = " ".join(f"{op} {count}" for op, count in ops.most_common(top))
    return f"{name}: loop {len(body)}, fast path {len(path)} ({mma} HMMA{ratio})\n    {common}"


def demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
        return dict(zip(names, out.splitlines()))
    except (OSError, subprocess.CalledProcessError):
        return {n: n for n in names}


def self_test():
    listing = """
        Function : _Z6kernelv
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   HMMA.16816.F32 R4, R8, R12, R4 ;
        /*0020*/               @!P0 BRA 0x50 ;
        /*0030*/                   FMUL R4, R4, R5 ;
        /*0040*/                   FMUL R5, R5, R5 ;
        /*0050*/               @P1 FADD R6, R6, R7 ;
        /*0060*/                   HMMA.16816.F32 R4, R8, R12, R4 ;
        /*0070*/               @P2 BRA 0x10 ;
        /*0080*/                   EXIT ;
        Function : _Z5otherv
        /*0000*/                   EXIT ;
    """
    functions = parse_functions(listing)
    assert list(functions) == ["_Z6kernelv", "_Z5otherv"], functions
    body, path = fast_path(functions["_Z6kernelv"])
    assert [i[0] for i in body] == [0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70], body
    assert [i[2].split(".")[0] for i in path] == ["HMMA", "BRA", "FADD", "HMMA", "BRA"], path
    assert fast_path(functions["_Z5otherv"]) == ([], [])
    line = summarize("k", functions["_Z6kernelv"], 3)
    assert line.startswith("k: loop 7, fast path 5 (2 HMMA, 1.50 other per HMMA)"), line
    print("self-test passed")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", nargs="?", help="a cuobjdump -sass listing, or a cubin/object to disassemble")
    parser.add_argument("--filter", default="flash_fwd_kernel", help="substring of the (mangled) kernel names")
    parser.add_argument("--ops", type=int, default=12, help="most common opcodes to list per kernel")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        self_test()
        return
    if not args.input:
        parser.error("an input file is required")
    try:
        with open(args.input, "rb") as f:
            head = f.read(4)
    except OSError as e:
        sys.exit(f"sass_fast_path.py: cannot read {args.input}: {e.strerror}")
    if head == b"\x7fELF":
        try:
            text = subprocess.run(["cuobjdump", "-sass", args.input], capture_output=True, text=True,
                                  check=True).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            sys.exit(f"sass_fast_path.py: cuobjdump -sass {args.input} failed: {e}")
    else:
        with open(args.input, encoding="utf-8", errors="replace") as f:
            text = f.read()
    functions = {n: i for n, i in parse_functions(text).items() if args.filter in n}
    if not functions:
        sys.exit(f"sass_fast_path.py: no kernel matching '{args.filter}' in {args.input}")
    names = demangle(list(functions))
    for name, instructions in functions.items():
        print(summarize(names[name], instructions, args.ops))


if __name__ == "__main__":
    main()
