#!/usr/bin/env python3
"""Times the OrtFlash CUDA forward kernel against PyTorch's SDPA flash backend and a naive
matmul-softmax-matmul, in one run on one GPU.

    python3 benchmarks/cuda/bench_attention.py --lib build/gpu-kernels/libortflash_kernels.so

Shapes: fp16 and bf16, head dim 64 (32 heads) and 128 (16 heads), causal and not, sequence length
S from 512 to 16k at 16k tokens per batch (B = 16384 / S). FLOPs = 4·B·H·S²·D, halved when causal.
Every configuration first checks that the three outputs agree; timings are the median of
--iters CUDA-event-timed runs after --warmup runs.
"""

import argparse
import ctypes
import math
import statistics
import sys

import torch
import torch.nn.functional as F

DTYPES = {"float16": (torch.float16, 1), "bfloat16": (torch.bfloat16, 2)}


class AttentionParams(ctypes.Structure):
    """Mirror of ortflash::AttentionParams (customop/include/ortflash/attention_params.h)."""

    _fields_ = [
        ("dtype", ctypes.c_int32),
        ("q", ctypes.c_void_p),
        ("k", ctypes.c_void_p),
        ("v", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
        ("bias", ctypes.c_void_p),
        ("keep", ctypes.c_void_p),
        ("batch", ctypes.c_int64),
        ("q_heads", ctypes.c_int64),
        ("kv_heads", ctypes.c_int64),
        ("q_len", ctypes.c_int64),
        ("kv_len", ctypes.c_int64),
        ("head_dim", ctypes.c_int64),
        ("v_head_dim", ctypes.c_int64),
        ("q_stride", ctypes.c_int64 * 3),
        ("k_stride", ctypes.c_int64 * 3),
        ("v_stride", ctypes.c_int64 * 3),
        ("out_stride", ctypes.c_int64 * 3),
        ("bias_stride", ctypes.c_int64 * 4),
        ("keep_stride", ctypes.c_int64 * 4),
        ("scale", ctypes.c_float),
        ("softcap", ctypes.c_float),
        ("causal", ctypes.c_int32),
        ("masked_rows", ctypes.c_int32),
    ]


def load_library(path):
    lib = ctypes.CDLL(path)
    lib.ortflash_attention_forward.argtypes = [ctypes.POINTER(AttentionParams), ctypes.c_void_p]
    lib.ortflash_attention_forward.restype = ctypes.c_char_p
    lib.ortflash_attention_params_size.argtypes = []
    lib.ortflash_attention_params_size.restype = ctypes.c_size_t
    native = lib.ortflash_attention_params_size()
    if native != ctypes.sizeof(AttentionParams):
        sys.exit(f"AttentionParams mirror is {ctypes.sizeof(AttentionParams)} bytes, the library's is {native}")
    return lib


def bhsd_strides(t):
    return (ctypes.c_int64 * 3)(t.stride(0), t.stride(1), t.stride(2))


def ortflash_call(lib, q, k, v, out, dtype_code, causal):
    """Returns a zero-argument function that enqueues the kernel on the current stream."""
    p = AttentionParams()
    p.dtype = dtype_code
    p.q, p.k, p.v, p.out = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr()
    p.batch, p.q_heads, p.q_len, p.head_dim = q.shape
    p.kv_heads, p.kv_len, p.v_head_dim = k.shape[1], k.shape[2], v.shape[3]
    p.q_stride, p.k_stride, p.v_stride, p.out_stride = (bhsd_strides(t) for t in (q, k, v, out))
    p.scale = 1.0 / math.sqrt(q.shape[3])
    p.causal = 1 if causal else 0
    p.masked_rows = 0
    params = ctypes.byref(p)

    def run():
        error = lib.ortflash_attention_forward(params, ctypes.c_void_p(torch.cuda.current_stream().cuda_stream))
        if error is not None:
            raise RuntimeError(error.decode())

    run.params = p  # keeps the struct alive as long as the closure
    return run


def flash_sdpa_context():
    """A context manager forcing SDPA's flash backend, whichever API this PyTorch has."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.FLASH_ATTENTION)
    except ImportError:
        return torch.backends.cuda.sdp_kernel(enable_flash=True, enable_math=False, enable_mem_efficient=False)


def naive_attention(q, k, v, causal):
    scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        s = q.shape[-2]
        hidden = torch.ones(s, s, dtype=torch.bool, device=q.device).triu_(1)
        scores.masked_fill_(hidden, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def time_ms(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    start = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for i in range(iters):
        start[i].record()
        fn()
        end[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(start, end))


def tflops(batch, heads, seq, dim, causal, ms):
    flops = 4.0 * batch * heads * seq * seq * dim / (2.0 if causal else 1.0)
    return flops / (ms * 1e-3) / 1e12


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib", required=True, help="path to libortflash_kernels.so")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--head-dims", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--seqlens", nargs="+", type=int, default=[512, 1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--tokens", type=int, default=16384, help="tokens per batch (B = tokens / S)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--naive-max-seq", type=int, default=16384, help="skip the naive baseline above this S")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        sys.exit("no CUDA device visible to PyTorch")
    lib = load_library(args.lib)
    torch.manual_seed(0)
    print(f"GPU: {torch.cuda.get_device_name()}  (torch {torch.__version__}, CUDA {torch.version.cuda})")
    print("TFLOP/s = 4*B*H*S^2*D / time (halved when causal); median of", args.iters, "runs")
    header = f"{'dtype':9} {'D':>4} {'H':>3} {'causal':6} {'S':>6} {'B':>3} | {'ortflash':>9} {'sdpa-flash':>10} {'naive':>8} | {'ratio':>6}  {'ms':>8}"
    print(header)
    print("-" * len(header))

    mismatches = 0
    for dtype_name in args.dtypes:
        dtype, dtype_code = DTYPES[dtype_name]
        atol = 2e-2 if dtype == torch.bfloat16 else 4e-3
        for dim in args.head_dims:
            heads = 16 if dim >= 128 else 32
            for causal in (False, True):
                for seq in args.seqlens:
                    batch = max(1, args.tokens // seq)
                    shape = (batch, heads, seq, dim)
                    q, k, v = (torch.randn(shape, device="cuda", dtype=dtype) for _ in range(3))
                    out = torch.empty_like(q)
                    ours = ortflash_call(lib, q, k, v, out, dtype_code, causal)

                    def sdpa():
                        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

                    with flash_sdpa_context():
                        want = sdpa()
                        ours()
                        torch.cuda.synchronize()
                        err = (out.float() - want.float()).abs().max().item()
                        agree = err <= atol
                        mismatches += not agree
                        ms_ours = time_ms(ours, args.warmup, args.iters)
                        ms_sdpa = time_ms(sdpa, args.warmup, args.iters)

                    naive_cell = "skipped"
                    if seq <= args.naive_max_seq:
                        try:
                            naive_err = (naive_attention(q, k, v, causal).float() - want.float()).abs().max().item()
                            agree_naive = naive_err <= 4 * atol
                            mismatches += not agree_naive
                            ms_naive = time_ms(lambda: naive_attention(q, k, v, causal), 1, max(3, args.iters // 4))
                            naive_cell = f"{tflops(batch, heads, seq, dim, causal, ms_naive):8.1f}"
                            if not agree_naive:
                                naive_cell += f" (MISMATCH {naive_err:.2e})"
                        except torch.cuda.OutOfMemoryError:
                            naive_cell = "oom"
                        torch.cuda.empty_cache()

                    t_ours = tflops(batch, heads, seq, dim, causal, ms_ours)
                    t_sdpa = tflops(batch, heads, seq, dim, causal, ms_sdpa)
                    line = (f"{dtype_name:9} {dim:>4} {heads:>3} {str(causal):6} {seq:>6} {batch:>3} | "
                            f"{t_ours:9.1f} {t_sdpa:10.1f} {naive_cell:>8} | {t_ours / t_sdpa:6.2f}  {ms_ours:8.3f}")
                    if not agree:
                        line += f"  MISMATCH vs sdpa: max abs err {err:.2e} > {atol:.0e}"
                    print(line, flush=True)
                    del q, k, v, out, want
                    torch.cuda.empty_cache()
    if mismatches:
        sys.exit(f"{mismatches} configuration(s) disagreed with SDPA")


if __name__ == "__main__":
    main()
