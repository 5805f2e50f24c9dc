#!/usr/bin/env python3
"""Counts the instructions of each kernel's key-tile loop on its fast path, from SASS, without a GPU.

    cuobjdump -sass build/cuda/CMakeFiles/ortflash_cuda.dir/customop/src/cuda/fwd_hdim128.cu.o > k.sass
    python3 benchmarks/cuda/sass_fast_path.py k.sass [--filter FwdTraits] [--ops 12]

    (or let it run cuobjdump: python3 benchmarks/cuda/sass_fast_path.py fwd_hdim128.cubin)

A kernel's main loop is taken to be the span of its last backward branch. Its fast path is the cheapest
iteration through that span, every forward branch going whichever way costs fewer instructions: in the
tensor-core kernel, a key tile that needs no mask, no rescale of the output and no bound checks. Instructions that are
predicated off still count (they take an issue slot). The tensor-core kernel issues from one warp
scheduler per 16 mma; the ratio of other instructions to HMMA says how much of that issue bandwidth the
softmax, addressing and loads take — a static measure to compare code changes where no GPU is at hand
(it says nothing about latency, stalls or memory). The cheapest path is also the one of a thread with the
least to do: at head dim 96 the threads of the load columns 12-15 copy nothing, so its fast path has no
LDGSTS (compare such kernels by their other instructions).
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
    """(loop body, fast path) of the span of the last backward branch; ([], []) when there is no loop. The fast
    path is the iteration with the fewest instructions: the loop body is a DAG of forward branches (a predicated
    BRA may go either way, an unconditional one must jump; EXIT ends no iteration), and the cheapest way from
    its first instruction to the backward branch is found from the end up."""
    backward = [i for i in instructions if (t := branch_target(i)) is not None and t < i[0]]
    if not backward:
        return [], []
    last = max(backward, key=lambda i: i[0])
    low, high = branch_target(last), last[0]
    body = [i for i in instructions if low <= i[0] <= high]
    index = {ins[0]: n for n, ins in enumerate(body)}
    infinite = float("inf")
    cost, step = [infinite] * len(body), [None] * len(body)
    cost[-1] = 1  # the backward branch itself
    for n in range(len(body) - 2, -1, -1):
        ins = body[n]
        if ins[2].startswith("EXIT") and not ins[1]:
            continue
        target = branch_target(ins)
        options = []
        if target is None or ins[1]:  # falls through unless an unconditional branch
            options.append(n + 1)
        if target is not None and target in index and index[target] > n:
            options.append(index[target])
        best = min(options, key=lambda m: cost[m], default=None)
        if best is not None and cost[best] < infinite:
            cost[n], step[n] = 1 + cost[best], best
    path, n = [], 0
    while n is not None and cost[0] < infinite:
        path.append(body[n])
        n = step[n]
    return body, path


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
    # if/else: the cheaper arm is the fast path, whichever way its branch goes
    if_else = parse_functions("""
        Function : _Z2kv
        /*0000*/                   HMMA.16816.F32 R4, R8, R12, R4 ;
        /*0010*/               @P0 BRA 0x50 ;
        /*0020*/                   IADD3 R1, R1, 0x1, RZ ;
        /*0030*/                   IADD3 R1, R1, 0x1, RZ ;
        /*0040*/                   BRA 0x60 ;
        /*0050*/                   LDGSTS [R2], [R4.64] ;
        /*0060*/               @P1 BRA 0x0 ;
        /*0070*/                   EXIT ;
    """)["_Z2kv"]
    _, path = fast_path(if_else)
    assert [i[0] for i in path] == [0x0, 0x10, 0x50, 0x60], path
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
