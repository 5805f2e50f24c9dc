#!/usr/bin/env python3
"""Estimates the registers and spills of the Hopper (sm_90a) kernels with an nvcc that cannot build sm_90a (such
as Debian's 11.8): an approximation, for machines without nvcc >= 12.3 and without a GPU.

    python3 benchmarks/cuda/hopper_register_proxy.py [--nvcc nvcc] [--ccbin clang++-14] [-D MACRO=VALUE ...]

It copies customop/ to a temporary directory and, in the copy only:
  - the sm_90a instructions become nothing (ORTFLASH_SM90A_ASM), except that
  - each wgmma becomes an empty asm statement that reads and writes all its accumulators and reads its other
    operands (so that they are live in registers where the real instruction needs them), and an mbarrier
    wait reads %clock (so that ptxas cannot prove the wait endless and drop what follows);
  - the TMA kernel is bounded at 256 threads: its consumers run with 240 registers after setmaxnreg, which an
    older ptxas does not know, and a 256-thread bound gives about that budget;
then compiles fwd_hopper{64,96,128,256}.cu for sm_90 with ptxas -v and prints registers and spill bytes per kernel.
What it cannot see: the register constraints of the real wgmma (accumulators in particular registers) and
anything ptxas 12+ schedules differently. Treat near-limit numbers (above ~230) as likely spills.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
UNITS = ("fwd_hopper64", "fwd_hopper96", "fwd_hopper128", "fwd_hopper256")

# For a cuda.h older than CUDA 12 (no tensor maps): the types the host code names, with the values it passes.
TENSOR_MAP_TYPES = """#include <cuda.h>
#if CUDA_VERSION < 12000
typedef struct alignas(64) { unsigned long long opaque[16]; } CUtensorMap;
typedef enum { CU_TENSOR_MAP_DATA_TYPE_UINT8 = 0, CU_TENSOR_MAP_DATA_TYPE_FLOAT16 = 6, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 = 9 } CUtensorMapDataType;
typedef enum { CU_TENSOR_MAP_INTERLEAVE_NONE = 0 } CUtensorMapInterleave;
typedef enum { CU_TENSOR_MAP_SWIZZLE_128B = 3 } CUtensorMapSwizzle;
typedef enum { CU_TENSOR_MAP_L2_PROMOTION_L2_256B = 3 } CUtensorMapL2promotion;
typedef enum { CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE = 0 } CUtensorMapFloatOOBfill;
#endif
"""


def proxy_wgmma(accumulators, inputs):
    outs = ", ".join(f'"+f"(d[{i}])' for i in range(accumulators))
    return f'asm volatile("" : {outs} : {inputs});'


def patch(cuda_dir):
    """Turns the copy's sm_90a code into the register proxy described above; fails loudly if the sources moved."""
    path = os.path.join(cuda_dir, "wgmma_primitives.cuh")
    text = open(path).read()
    trap = "#define ORTFLASH_SM90A_ASM(...) __trap()"
    other_targets = "#elif !defined(ORTFLASH_SIMT)\n// Other device targets"
    wait_break = "    if (done != 0) break;"
    for needle in (trap, other_targets, wait_break):
        if needle not in text:
            sys.exit(f"hopper_register_proxy: wgmma_primitives.cuh no longer has {needle!r}; update this script")
    text = text.replace(trap, "#define ORTFLASH_SM90A_ASM(...) do {} while (0)")
    start = text.index(other_targets)
    end = text.index("#endif", start)
    proxies = "#elif !defined(ORTFLASH_SIMT)\n"
    for n in (64, 96, 128, 256):
        r = n // 2
        ss = proxy_wgmma(r, '"l"(a), "l"(b), "r"(int(acc))')
        rs = proxy_wgmma(r, '"r"(x[0]), "r"(x[1]), "r"(x[2]), "r"(x[3]), "l"(b), "r"(int(acc))')
        proxies += (f"template <class T>\nstruct Wgmma<T, {n}> {{\n"
                    f"  __device__ __forceinline__ static void ss(float (&d)[{r}], uint64_t a, uint64_t b, bool acc) {{ {ss} }}\n"
                    f"  __device__ __forceinline__ static void rs_n_major(float (&d)[{r}], const uint32_t (&x)[4], uint64_t b, "
                    f"bool acc) {{ {rs} }}\n}};\n")
    text = text[:start] + proxies + text[end:]
    text = text.replace(wait_break, '    asm volatile("mov.u32 %0, %%clock;" : "=r"(done));\n' + wait_break)
    open(path, "w").write(text)

    path = os.path.join(cuda_dir, "hopper_kernel.cuh")
    text = open(path).read()
    bound = "__launch_bounds__(Tr::kTmaThreads, 1) hopper_tma_fwd_kernel"
    if bound not in text:
        sys.exit("hopper_register_proxy: hopper_kernel.cuh no longer has the TMA kernel's launch bound; update this script")
    open(path, "w").write(text.replace(bound, "__launch_bounds__(256, 1) hopper_tma_fwd_kernel"))


def kernel_name(mangled, cxxfilt):
    if cxxfilt is None:
        return mangled
    name = subprocess.run([cxxfilt, mangled], capture_output=True, text=True).stdout.strip()
    name = name.replace("ortflash::cuda::", "").replace("void ", "")
    return re.sub(r"\(FwdParams.*", "", name)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nvcc", default="nvcc")
    parser.add_argument("--ccbin", default="clang++-14", help="host compiler for nvcc (empty: nvcc's default)")
    parser.add_argument("-D", dest="defines", action="append", default=[], help="a macro for the build, e.g. ORTFLASH_HOPPER_OVERLAP=1")
    args = parser.parse_args()
    if shutil.which(args.nvcc) is None:
        sys.exit(f"hopper_register_proxy: no {args.nvcc}")
    cxxfilt = shutil.which("c++filt")
    with tempfile.TemporaryDirectory() as work:
        shutil.copytree(os.path.join(ROOT, "customop"), os.path.join(work, "customop"))
        cuda_dir = os.path.join(work, "customop", "src", "cuda")
        patch(cuda_dir)
        types = os.path.join(work, "tensor_map_types.h")
        open(types, "w").write(TENSOR_MAP_TYPES)
        print(f"{'kernel':100} {'regs':>5} {'spill B':>8}")
        for unit in UNITS:
            command = [args.nvcc, "-std=c++17", "-O3", "-arch=sm_90", "-Xptxas=-v", "-include", types,
                       "-I", os.path.join(work, "customop", "include"), "-c", "-o", os.path.join(work, unit + ".o"),
                       os.path.join(cuda_dir, unit + ".cu")] + [f"-D{d}" for d in args.defines]
            if args.ccbin:
                command[1:1] = ["-ccbin", args.ccbin]
            run = subprocess.run(command, capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(f"hopper_register_proxy: {unit}.cu did not compile:\n{run.stderr[-3000:]}")
            name = None
            spill = 0
            for line in run.stderr.splitlines():
                if m := re.search(r"Compiling entry function '(\w+)'", line):
                    name, spill = m.group(1), 0
                elif m := re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line):
                    spill = int(m.group(1)) + int(m.group(2))
                elif (m := re.search(r"Used (\d+) registers", line)) and name is not None:
                    print(f"{kernel_name(name, cxxfilt):100} {int(m.group(1)):>5} {spill:>8}", flush=True)
                    name = None


if __name__ == "__main__":
    main()
