#!/usr/bin/env python3
"""Times the OrtFlash CUDA forward kernel against PyTorch's SDPA and a naive matmul-softmax-matmul, in one
run on one GPU.

    python3 benchmarks/cuda/bench_attention.py --lib build/gpu-kernels/libortflash_kernels.so [--mode MODE]

--mode prefill (default): fp16 and bf16, head dim 64 (32 heads) and 128 (16 heads), causal and not,
sequence length S from 512 to 16k at 16k tokens per batch (B = 16384 / S), against SDPA's flash
backend. FLOPs = 4·B·H·S²·D, halved when causal.

--mode decode: one query row per head against a KV cache of kv_len keys, fp16 and bf16, head dim 128,
q_heads:kv_heads 32:8 (grouped, Llama-3-8B), 32:1 (multi-query) and 32:32, B = 1 and 8, kv_len 1k to 64k.
Decoding is bound by memory: GB/s = bytes of K and V (once per kv head) + Q + out, over the time. SDPA
is timed with every backend that accepts the shape (flash, efficient, cuDNN) and, for grouped heads,
with enable_gqa where this PyTorch has it and with K/V repeated to q_heads beforehand (not timed); the
fastest that agrees is reported, and named. The L2 cache is flushed before every timed run.

--mode encoder: a padded encoder batch (BERT/ViT-style, not causal) with an additive key-padding bias
(B,1,1,S) in the input dtype — every other batch entry has its last quarter of keys masked by the dtype's
lowest finite value, as Hugging Face models build it — so the kernels' general (bias) variant runs; fp16, bf16
and float32 (float32 on the tensor cores in 3xTF32), 12 heads of 64 (BERT-base) and 16 of 128, S 128 to 2048 at
16k tokens per batch. Against SDPA with the bias as attn_mask (fastest agreeing of its backends: flash takes
no mask) and the naive graph with the fp32 softmax of exported models; --tf32 lets the naive graph's float32
matmuls use TF32, as ONNX Runtime's CUDA provider does by default. --encoder-masks picks the masks:
padding-bias (the default, above), full-bias (a (B,1,S,S) bias: causal plus the padding, finfo.min where hidden,
as decoder exports build their 4-d mask; the kernel still runs as not causal), padding-keep (a (B,1,1,S)
boolean keep mask, SDPA's boolean attn_mask) and none. --pad-fraction sets the padded share of the odd entries' keys;
the kernels skip the key tiles wholly in the padding (live key ranges, by default only from 1024 keys with a keep
mask and 2048 with a bias), and --live-keys both also times every row without that (ORTFLASH_CUDA_LIVE_KEYS=0) and
with the pass at every length (=1), so the three can be compared in one run. --float32-tensor-cores both
also times every float32 row on the tiled SIMT kernel and on both forms of the 3xTF32 tensor-core kernel
(ORTFLASH_CUDA_FLOAT32_TENSOR_CORES=0, 1 and 2; the library runs 2 by default).

--mode all: the three tables. Every configuration first checks that the outputs agree; timings are the
median of --iters CUDA-event-timed runs after --warmup runs. --self-test checks the formulas, the
argument handling and the table format without a GPU (and without PyTorch).
"""

import argparse
import ctypes
import math
import os
import statistics
import sys
import warnings

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # --self-test runs without PyTorch
    torch = None

# dtype name -> ortflash::DType code, element size in bytes, max abs error tolerated against SDPA.
DTYPES = {"float16": (1, 2, 4e-3), "bfloat16": (2, 2, 2e-2)}
ENCODER_DTYPES = dict(DTYPES, float32=(0, 4, 2e-4))
SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION"}
LLAMA3_8B_HEADS, MQA_HEADS, MHA_HEADS = (32, 8), (32, 1), (32, 32)


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


# ---- Pure parts: arguments, formulas, table rows (no PyTorch, no GPU) ----

def head_counts(text):
    """'32:8' -> (q_heads, kv_heads); q_heads must be a multiple of kv_heads."""
    try:
        q_heads, kv_heads = (int(n) for n in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not q_heads:kv_heads, e.g. 32:8") from None
    if q_heads < 1 or kv_heads < 1 or q_heads % kv_heads:
        raise argparse.ArgumentTypeError(f"q_heads {q_heads} is not a positive multiple of kv_heads {kv_heads}")
    return q_heads, kv_heads


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib", help="path to libortflash_kernels.so (required unless --self-test)")
    parser.add_argument("--mode", choices=("prefill", "decode", "encoder", "all"), default="prefill")
    parser.add_argument("--self-test", action="store_true", help="check formulas and formatting; no GPU needed")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    prefill = parser.add_argument_group("prefill")
    prefill.add_argument("--head-dims", nargs="+", type=int, default=[64, 128])
    prefill.add_argument("--seqlens", nargs="+", type=int, default=[512, 1024, 2048, 4096, 8192, 16384])
    prefill.add_argument("--tokens", type=int, default=16384, help="tokens per batch (B = tokens / S)")
    prefill.add_argument("--naive-max-seq", type=int, default=16384, help="skip the naive baseline above this S")
    parser.add_argument("--hopper", choices=("default", "off", "1", "2", "both"), default="default",
                         help="the sm_90a wgmma kernels (ORTFLASH_CUDA_HOPPER; builds with nvcc >= 12.3): default the "
                              "library's choice (the TMA kernel from 256 keys on an H100/H200), off the mma.sync kernel, 1 "
                              "with cp.async loads, 2 with TMA loads by a producer warpgroup (also the masks), or both: the "
                              "default, and every prefill row also times 0, 1 and 2, every 16-bit encoder row 0 and 2, each "
                              "checked, as 'mma' 'wgmma' and 'tma' suffixes")
    encoder = parser.add_argument_group("encoder")
    encoder.add_argument("--encoder-dtypes", nargs="+", default=list(ENCODER_DTYPES), choices=list(ENCODER_DTYPES))
    encoder.add_argument("--encoder-heads", nargs="+", type=head_dims_arg, metavar="H:D", default=[(12, 64), (16, 128)])
    encoder.add_argument("--encoder-seqlens", nargs="+", type=int, default=[128, 512, 2048])
    encoder.add_argument("--tf32", action="store_true", help="the naive graph's float32 matmuls may use TF32")
    encoder.add_argument("--encoder-masks", nargs="+", default=["padding-bias"], choices=list(ENCODER_MASKS))
    encoder.add_argument("--pad-fraction", type=pad_fraction_arg, default=0.25,
                         help="fraction of the keys of every other batch entry that are padding (default 0.25)")
    encoder.add_argument("--float32-tensor-cores", choices=("default", "both"), default="default",
                         help="both: every float32 encoder row also times the tiled SIMT kernel "
                              "(ORTFLASH_CUDA_FLOAT32_TENSOR_CORES=0) and the tensor-core kernel in 3xTF32 (=1, and =2 "
                              "with K and V split once per block, the library's default), checked, as 'simt', '3xtf32' "
                              "and '3xtf32-tiles' suffixes with their ratios to SDPA")
    encoder.add_argument("--live-keys", choices=("on", "both"), default="on",
                         help="both: every encoder row also times the kernel with ORTFLASH_CUDA_LIVE_KEYS=0 (every key "
                              "tile computed, no live-key pass) and =1 (the pass at every length), as 'all-keys' and "
                              "'live-keys' suffixes with their ratios to SDPA, and rows with a full-bias mask with "
                              "ORTFLASH_CUDA_LIVE_ROWS=1 (the per-slice passes, opt-in), as 'live-rows'")
    decode = parser.add_argument_group("decode")
    decode.add_argument("--decode-heads", nargs="+", type=head_counts, metavar="HQ:HKV",
                        default=[LLAMA3_8B_HEADS, MQA_HEADS, MHA_HEADS])
    decode.add_argument("--decode-head-dim", type=int, default=128)
    decode.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    decode.add_argument("--kv-lens", nargs="+", type=int, default=[1024, 4096, 16384, 65536])
    decode.add_argument("--decode-bias", action="store_true",
                        help="a (B,1,1,kv_len) padding bias in the input dtype, as decoder exports pass their mask: odd "
                             "batch entries have their first eighth of keys (left padding) at the dtype's lowest value")
    decode.add_argument("--sdpa-backends", nargs="+", choices=list(SDPA_BACKENDS), default=list(SDPA_BACKENDS))
    decode.add_argument("--l2-flush-mib", type=int, default=256,
                        help="MiB written before every timed decode run so K/V come from memory (0: no flush)")
    args = parser.parse_args(argv)
    if not args.self_test and not args.lib:
        parser.error("--lib is required")
    return args


def pad_fraction_arg(text):
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a fraction in [0, 1)")
    return value


def head_dims_arg(text):
    """'12:64' -> (heads, head dim)."""
    try:
        heads, dim = (int(n) for n in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not heads:head_dim, e.g. 12:64") from None
    if heads < 1 or dim < 1:
        raise argparse.ArgumentTypeError(f"'{text}' needs positive heads and head dim")
    return heads, dim


ENCODER_MASKS = ("padding-bias", "full-bias", "padding-keep", "none")
ROW_VARYING_MASKS = ("full-bias",)  # masks whose live keys differ by query row (the per-slice passes)
# ORTFLASH_CUDA_FLOAT32_TENSOR_CORES values and their suffixes: the tiled SIMT kernel, 3xTF32 with the splits in every
# warp, or with K and V split once per block in shared memory (the library's default).
FLOAT32_VARIANTS = (("0", "simt"), ("1", "3xtf32"), ("2", "3xtf32-tiles"))


def encoder_mask(kind, batch, seq, dtype, device="cuda", fraction=0.25):
    """The encoder table's mask: a bias in `dtype` (finfo.min where hidden), a boolean keep mask, or None ("none")."""
    if kind == "none":
        return None
    keep = torch.ones((batch, 1, 1 if kind != "full-bias" else seq, seq), dtype=torch.bool, device=device)
    for b, hidden in enumerate(padded_keys(batch, seq, fraction)):
        if hidden:
            keep[b, ..., seq - hidden:] = False
    if kind == "full-bias":
        keep &= torch.ones((seq, seq), dtype=torch.bool, device=device).tril_()
    if kind == "padding-keep":
        return keep
    bias = torch.zeros(keep.shape, dtype=dtype, device=device)
    return bias.masked_fill_(~keep, torch.finfo(dtype).min)


def padded_keys(batch, seq, fraction=0.25):
    """Keys hidden per batch entry in the encoder table: every other entry (the odd ones) loses its last `fraction`."""
    return [int(seq * fraction) if b % 2 else 0 for b in range(batch)]


def tflops(batch, heads, seq, dim, causal, ms):
    flops = 4.0 * batch * heads * seq * seq * dim / (2.0 if causal else 1.0)
    return flops / (ms * 1e-3) / 1e12


def decode_bytes(batch, q_heads, kv_heads, kv_len, head_dim, v_head_dim, element_size):
    """Bytes one decoding step must move: K and V once per kv head, the query row, the output row."""
    kv = batch * kv_heads * kv_len * (head_dim + v_head_dim)
    return element_size * (kv + batch * q_heads * (head_dim + v_head_dim))


def gbps(nbytes, ms):
    return nbytes / (ms * 1e-3) / 1e9


def decode_shapes(args):
    """(dtype name, q_heads, kv_heads, batch, kv_len) in table order."""
    return [(dtype_name, q_heads, kv_heads, batch, kv_len)
            for dtype_name in args.dtypes
            for q_heads, kv_heads in args.decode_heads
            for batch in args.batches
            for kv_len in args.kv_lens]


def prefill_header():
    return (f"{'dtype':9} {'D':>4} {'H':>3} {'causal':6} {'S':>6} {'B':>3} | "
            f"{'ortflash':>9} {'sdpa-flash':>10} {'naive':>8} | {'ratio':>6}  {'ms':>8}")


def prefill_row(dtype_name, dim, heads, causal, seq, batch, t_ours, t_sdpa, naive_cell, ms_ours):
    return (f"{dtype_name:9} {dim:>4} {heads:>3} {str(causal):6} {seq:>6} {batch:>3} | "
            f"{t_ours:9.1f} {t_sdpa:10.1f} {naive_cell:>8} | {t_ours / t_sdpa:6.2f}  {ms_ours:8.3f}")


def hopper_suffix(name, t_variant, t_sdpa):
    """A further ortflash timing of the row with --hopper both: a Hopper kernel's TFLOP/s and its ratio to SDPA."""
    return f"  {name} {t_variant:7.1f} ({t_variant / t_sdpa:.2f})"


def encoder_header():
    return (f"{'dtype':9} {'mask':12} {'D':>4} {'H':>3} {'S':>6} {'B':>3} | "
            f"{'ortflash':>9} {'sdpa':>9} {'naive':>8} | {'ratio':>6}  {'ms':>8}  sdpa variant")


def encoder_row(dtype_name, dim, heads, seq, batch, t_ours, t_sdpa, naive_cell, ms_ours, sdpa_variant,
                mask="padding-bias"):
    """t_sdpa None: no SDPA backend took the shape."""
    sdpa_cell, ratio_cell = ("n/a", "n/a") if t_sdpa is None else (f"{t_sdpa:9.1f}", f"{t_ours / t_sdpa:6.2f}")
    return (f"{dtype_name:9} {mask:12} {dim:>4} {heads:>3} {seq:>6} {batch:>3} | "
            f"{t_ours:9.1f} {sdpa_cell:>9} {naive_cell:>8} | {ratio_cell:>6}  {ms_ours:8.3f}  {sdpa_variant}")


def decode_header():
    return (f"{'dtype':9} {'Hq':>3} {'Hkv':>3} {'D':>4} {'B':>2} {'kv_len':>6} | "
            f"{'ortflash':>8} {'sdpa':>8} {'naive':>8} | {'ratio':>6} {'ours us':>9} {'sdpa us':>9}  sdpa variant")


def decode_row(dtype_name, q_heads, kv_heads, dim, batch, kv_len, nbytes, ms_ours, ms_sdpa, sdpa_variant, naive_cell):
    """ms_sdpa None: no SDPA variant ran on this shape."""
    sdpa_cells = ("n/a", "n/a", "n/a") if ms_sdpa is None else (
        f"{gbps(nbytes, ms_sdpa):8.1f}", f"{ms_sdpa / ms_ours:6.2f}", f"{ms_sdpa * 1e3:9.1f}")
    return (f"{dtype_name:9} {q_heads:>3} {kv_heads:>3} {dim:>4} {batch:>2} {kv_len:>6} | "
            f"{gbps(nbytes, ms_ours):8.1f} {sdpa_cells[0]:>8} {naive_cell:>8} | "
            f"{sdpa_cells[1]:>6} {ms_ours * 1e3:9.1f} {sdpa_cells[2]:>9}  {sdpa_variant}")


# ---- On the GPU ----

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


def ortflash_call(lib, q, k, v, out, dtype_code, causal, bias=None):
    """Returns a zero-argument function that enqueues the kernel on the current stream. bias: None or a
    4-d tensor broadcast to (B, Hq, Sq, Skv) by its strides (size-1 dimensions read with stride 0); a
    boolean one is passed as the keep mask."""
    p = AttentionParams()
    if bias is not None:
        strides = (ctypes.c_int64 * 4)(*(0 if bias.shape[i] == 1 else bias.stride(i) for i in range(4)))
        if bias.dtype == torch.bool:
            p.keep, p.keep_stride = bias.data_ptr(), strides
        else:
            p.bias, p.bias_stride = bias.data_ptr(), strides
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

    run.params, run.bias = p, bias  # keep the struct and the bias alive as long as the closure
    return run


def sdpa_context(backend):
    """A context manager forcing one SDPA backend, whichever API this PyTorch has; None if it has not that one."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        if backend == "cudnn":
            return None
        return torch.backends.cuda.sdp_kernel(enable_flash=backend == "flash", enable_math=False,
                                              enable_mem_efficient=backend == "efficient")
    member = getattr(SDPBackend, SDPA_BACKENDS[backend], None)
    return None if member is None else sdpa_kernel(member)


def naive_attention(q, k, v, causal):
    scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        s = q.shape[-2]
        hidden = torch.ones(s, s, dtype=torch.bool, device=q.device).triu_(1)
        scores.masked_fill_(hidden, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def naive_masked_attention(q, k, v, bias):
    """As exported encoders compute it: scores + bias (a boolean mask: where-filled with finfo.min), softmax in
    float32, back to the input type."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if bias is None:
        pass
    elif bias.dtype == torch.bool:
        scores = scores.masked_fill(~bias, torch.finfo(scores.dtype).min)
    else:
        scores = scores + bias
    return torch.matmul(torch.softmax(scores.float(), dim=-1).to(q.dtype), v)


def naive_grouped_attention(q, k, v, bias=None):
    """Non-causal; the query heads that share a kv head are stacked as rows, so K and V are read once per kv head.
    bias: None or broadcast over heads and rows, (B,1,1,kv_len)."""
    batch, q_heads, q_len, dim = q.shape
    kv_heads = k.shape[1]
    rows = q.reshape(batch, kv_heads, q_heads // kv_heads * q_len, dim)
    scores = torch.matmul(rows, k.transpose(-1, -2)) * (1.0 / math.sqrt(dim))
    if bias is not None:
        scores = scores + bias
    return torch.matmul(torch.softmax(scores, dim=-1), v).reshape(batch, q_heads, q_len, v.shape[-1])


def time_ms(fn, warmup, iters, before_each=None):
    """Median CUDA-event time of fn; before_each (e.g. an L2 flush) runs outside the timed span."""
    for _ in range(warmup):
        fn()
    start = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for i in range(iters):
        if before_each is not None:
            before_each()
        start[i].record()
        fn()
        end[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(start, end))


def run_with_setting(name, value, ours, out, want, args):
    """Runs and times `ours` with the environment variable `name` at `value` (the library reads it on every call;
    restored after). Returns (max abs err of its output against want, median ms)."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        out.zero_()
        ours()
        torch.cuda.synchronize()
        return max_abs_err(out, want), time_ms(ours, args.warmup, args.iters)
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def run_hopper_variant(variant, ours, out, want, args):
    """Runs and times `ours` with ORTFLASH_CUDA_HOPPER=variant. Returns (max abs err against want, median ms)."""
    return run_with_setting("ORTFLASH_CUDA_HOPPER", variant, ours, out, want, args)


def max_abs_err(a, b):
    return (a.float() - b.float()).abs().max().item()


def run_prefill(args, lib):
    """Prints the prefill table; returns the number of configurations that disagreed."""
    print("TFLOP/s = 4*B*H*S^2*D / time (halved when causal); median of", args.iters, "runs")
    header = prefill_header()
    print(header)
    print("-" * len(header))

    mismatches = 0
    for dtype_name in args.dtypes:
        dtype_code, _, atol = DTYPES[dtype_name]
        dtype = getattr(torch, dtype_name)
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

                    with sdpa_context("flash"):
                        want = sdpa()
                        ours()
                        torch.cuda.synchronize()
                        err = max_abs_err(out, want)
                        agree = err <= atol
                        mismatches += not agree
                        ms_ours = time_ms(ours, args.warmup, args.iters)
                        ms_sdpa = time_ms(sdpa, args.warmup, args.iters)

                    naive_cell = "skipped"
                    if seq <= args.naive_max_seq:
                        try:
                            naive_err = max_abs_err(naive_attention(q, k, v, causal), want)
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
                    line = prefill_row(dtype_name, dim, heads, causal, seq, batch, t_ours, t_sdpa, naive_cell, ms_ours)
                    if not agree:
                        line += f"  MISMATCH vs sdpa: max abs err {err:.2e} > {atol:.0e}"
                    for variant, name in (("0", "mma"), ("1", "wgmma"), ("2", "tma")) if args.hopper == "both" else ():
                        err_variant, ms_variant = run_hopper_variant(variant, ours, out, want, args)
                        line += hopper_suffix(name, tflops(batch, heads, seq, dim, causal, ms_variant), t_sdpa)
                        if err_variant > atol:
                            mismatches += 1
                            line += f" MISMATCH vs sdpa: max abs err {err_variant:.2e} > {atol:.0e}"
                    print(line, flush=True)
                    del q, k, v, out, want
                    torch.cuda.empty_cache()
    return mismatches


def run_naive(naive, want, want_name, tolerance, notes, cell, args, before_each=None):
    """Runs the naive baseline once: checked against `want` (or made the reference when no SDPA variant ran),
    then timed. Returns (table cell, want, want_name, 1 if it disagreed else 0); the cell is "oom" when it does
    not fit in memory."""
    disagreed = 0
    try:
        naive_out = naive()
        if want is None:
            want, want_name = naive_out, "naive"
        elif max_abs_err(naive_out, want) > tolerance:
            notes.append(f"naive MISMATCH {max_abs_err(naive_out, want):.2e}")
            disagreed = 1
        del naive_out
        text = cell(time_ms(naive, 1, max(3, args.iters // 4), before_each))
    except torch.cuda.OutOfMemoryError:
        text = "oom"
    torch.cuda.empty_cache()
    return text, want, want_name, disagreed


def run_encoder(args, lib):
    """Prints the padded-encoder table; returns the number of configurations that disagreed."""
    print(f"encoder: not causal; masks: padding-bias (B,1,1,S) in the input dtype (odd batch entries: last "
          f"{args.pad_fraction:g} of keys at the dtype's lowest value), full-bias (B,1,S,S) causal + padding, padding-keep (B,1,1,S) bool; TFLOP/s = 4*B*H*S^2*D / time, masked keys counted; median of", args.iters,
          "runs; sdpa = the fastest agreeing backend with the bias as attn_mask; naive: float32 softmax"
          + (", TF32 matmuls" if args.tf32 else ""))
    header = encoder_header()
    print(header)
    print("-" * len(header))
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    mismatches = 0
    for mask_kind, dtype_name in ((m, d) for m in args.encoder_masks for d in args.encoder_dtypes):
        dtype_code, _, atol = ENCODER_DTYPES[dtype_name]
        dtype = getattr(torch, dtype_name)
        naive_atol = 5e-3 if dtype == torch.float32 and args.tf32 else 4 * atol
        for heads, dim in args.encoder_heads:
            for seq in args.encoder_seqlens:
                batch = max(1, args.tokens // seq)
                q, k, v = (torch.randn((batch, heads, seq, dim), device="cuda", dtype=dtype) for _ in range(3))
                bias = encoder_mask(mask_kind, batch, seq, dtype, fraction=args.pad_fraction)
                out = torch.empty_like(q)
                ours = ortflash_call(lib, q, k, v, out, dtype_code, False, bias)
                ours()
                want, want_name, ms_sdpa, sdpa_name, notes = time_fastest_sdpa(
                    q, [("", k, v, {"attn_mask": bias} if bias is not None else {})], atol, args, None)
                torch.cuda.empty_cache()

                naive_cell, want, want_name, disagreed = run_naive(
                    lambda: naive_masked_attention(q, k, v, bias), want, want_name, naive_atol, notes,
                    lambda ms: f"{tflops(batch, heads, seq, dim, False, ms):8.1f}", args)
                mismatches += disagreed

                err = max_abs_err(out, want) if want is not None else math.nan
                if not err <= atol:
                    notes.insert(0, f"MISMATCH vs {want_name or 'nothing (no baseline ran)'}: max abs err {err:.2e}"
                                    f" > {atol:.0e}")
                    mismatches += 1
                ms_ours = time_ms(ours, args.warmup, args.iters)
                t_sdpa = None if ms_sdpa is None else tflops(batch, heads, seq, dim, False, ms_sdpa)
                line = encoder_row(dtype_name, dim, heads, seq, batch, tflops(batch, heads, seq, dim, False, ms_ours),
                                   t_sdpa, naive_cell, ms_ours, sdpa_name, mask_kind)
                live_settings = [("ORTFLASH_CUDA_LIVE_KEYS", "0", "all-keys"), ("ORTFLASH_CUDA_LIVE_KEYS", "1", "live-keys")]
                if mask_kind in ROW_VARYING_MASKS:  # the per-slice passes, opt-in: are they worth a default yet?
                    live_settings.append(("ORTFLASH_CUDA_LIVE_ROWS", "1", "live-rows"))
                for variable, setting, name in live_settings if args.live_keys == "both" and want is not None else ():
                    err_live, ms_live = run_with_setting(variable, setting, ours, out, want, args)
                    line += hopper_suffix(name, tflops(batch, heads, seq, dim, False, ms_live), t_sdpa or math.nan)
                    if not err_live <= atol:
                        notes.insert(0, f"{name} MISMATCH vs {want_name}: max abs err {err_live:.2e} > {atol:.0e}")
                        mismatches += 1
                for variant, name in FLOAT32_VARIANTS if args.float32_tensor_cores == "both" and dtype_name == "float32" \
                        and want is not None else ():
                    err_tc, ms_tc = run_with_setting("ORTFLASH_CUDA_FLOAT32_TENSOR_CORES", variant, ours, out, want, args)
                    line += hopper_suffix(name, tflops(batch, heads, seq, dim, False, ms_tc), t_sdpa or math.nan)
                    if not err_tc <= atol:
                        notes.insert(0, f"{name} MISMATCH vs {want_name}: max abs err {err_tc:.2e} > {atol:.0e}")
                        mismatches += 1
                # Masks run on the TMA kernel only (the cp.async one leaves them to the mma.sync kernel).
                for variant, name in (("0", "mma"), ("2", "tma")) if args.hopper == "both" and dtype_name != "float32" \
                        and want is not None else ():
                    err_variant, ms_variant = run_hopper_variant(variant, ours, out, want, args)
                    line += hopper_suffix(name, tflops(batch, heads, seq, dim, False, ms_variant), t_sdpa or math.nan)
                    if not err_variant <= atol:
                        notes.insert(0, f"{name} MISMATCH vs {want_name}: max abs err {err_variant:.2e} > {atol:.0e}")
                        mismatches += 1
                print(line + "".join("  " + note for note in notes), flush=True)
                del q, k, v, bias, out, want
                torch.cuda.empty_cache()
    return mismatches


def decode_padding_bias(batch, kv_len, dtype, device="cuda"):
    """--decode-bias: odd batch entries have their first eighth of keys (left padding) at finfo.min."""
    bias = torch.zeros((batch, 1, 1, kv_len), dtype=dtype, device=device)
    bias[1::2, ..., :kv_len // 8] = torch.finfo(dtype).min
    return bias


def sdpa_decode_layouts(q, k, v):
    """(name, key, value, extra SDPA arguments) for SDPA: the heads as given (enable_gqa when grouped) and,
    when grouped, K/V repeated to q_heads beforehand, as a model without grouped-head support would hold them."""
    group = q.shape[1] // k.shape[1]
    if group == 1:
        return [("", k, v, {})]
    layouts = [("gqa", k, v, {"enable_gqa": True})]
    try:
        layouts.append(("rep", k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), {}))
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
    return layouts


def sdpa_candidates(q, layouts, backends):
    """Yields (variant name, backend, fn, output of a first call) for every backend x layout this PyTorch runs.
    A backend's context manager is single-use: time fn under a fresh sdpa_context(backend)."""
    for backend in backends:
        for layout, key, value, extra in layouts:
            def fn(key=key, value=value, extra=extra):
                return F.scaled_dot_product_attention(q, key, value, **extra)

            context = sdpa_context(backend)
            if context is None:
                break
            try:
                with context, warnings.catch_warnings():  # a backend that refuses the shape warns, then raises
                    warnings.simplefilter("ignore")
                    got = fn()
                    torch.cuda.synchronize()
            except (RuntimeError, TypeError):  # TypeError: no enable_gqa in this PyTorch
                continue
            yield f"{backend}/{layout}" if layout else backend, backend, fn, got


def time_fastest_sdpa(q, layouts, atol, args, flush):
    """Runs every SDPA backend x layout (see sdpa_candidates), checks each against the first, times those that
    agree. Returns (first output, its name, fastest time in ms, its name, notes); output and time are None when no
    variant ran."""
    want, want_name, best_ms, best_name, notes = None, None, None, "none ran", []
    for name, backend, fn, got in sdpa_candidates(q, layouts, args.sdpa_backends):
        if want is None:
            want, want_name = got, name
        elif max_abs_err(got, want) > atol:
            notes.append(f"({name} disagrees with {want_name}: not timed)")
            continue
        with sdpa_context(backend):
            ms = time_ms(fn, args.warmup, args.iters, flush)
        if best_ms is None or ms < best_ms:
            best_ms, best_name = ms, name
    return want, want_name, best_ms, best_name, notes


def run_decode(args, lib):
    """Prints the decode table; returns the number of configurations that disagreed."""
    flush = None
    if args.l2_flush_mib > 0:
        flush = torch.empty(args.l2_flush_mib << 20, dtype=torch.uint8, device="cuda").zero_
    print(f"decode: one query row per head, head dim {args.decode_head_dim}, not causal"
          + (", (B,1,1,kv_len) padding bias" if args.decode_bias else "") + "; GB/s = bytes of K+V "
          "(once per kv head) + Q + out / time; ratio = sdpa time / ortflash time")
    l2 = f"L2 flushed ({args.l2_flush_mib} MiB written) before each" if flush is not None else "L2 not flushed"
    print(f"median of {args.iters} runs, {l2}; sdpa = the fastest agreeing of backends {' '.join(args.sdpa_backends)}"
          " x layouts (gqa: enable_gqa=True; rep: K/V repeated to Hq heads beforehand, not timed)")
    header = decode_header()
    print(header)
    print("-" * len(header))

    dim = args.decode_head_dim
    mismatches = 0
    for dtype_name, q_heads, kv_heads, batch, kv_len in decode_shapes(args):
        dtype_code, element_size, atol = DTYPES[dtype_name]
        dtype = getattr(torch, dtype_name)
        nbytes = decode_bytes(batch, q_heads, kv_heads, kv_len, dim, dim, element_size)
        q = torch.randn((batch, q_heads, 1, dim), device="cuda", dtype=dtype)
        k, v = (torch.randn((batch, kv_heads, kv_len, dim), device="cuda", dtype=dtype) for _ in range(2))
        out = torch.empty_like(q)
        bias = decode_padding_bias(batch, kv_len, dtype) if args.decode_bias else None
        ours = ortflash_call(lib, q, k, v, out, dtype_code, False, bias)
        ours()
        layouts = [(name, key, value, dict(extra, **({"attn_mask": bias} if bias is not None else {})))
                   for name, key, value, extra in sdpa_decode_layouts(q, k, v)]
        want, want_name, ms_sdpa, sdpa_name, notes = time_fastest_sdpa(q, layouts, atol, args, flush)
        torch.cuda.empty_cache()

        naive_cell, want, want_name, disagreed = run_naive(
            lambda: naive_grouped_attention(q, k, v, bias), want, want_name, 4 * atol, notes,
            lambda ms: f"{gbps(nbytes, ms):8.1f}", args, flush)
        mismatches += disagreed

        err = max_abs_err(out, want) if want is not None else math.nan
        if not err <= atol:
            notes.insert(0, f"MISMATCH vs {want_name}: max abs err {err:.2e} > {atol:.0e}")
            mismatches += 1
        ms_ours = time_ms(ours, args.warmup, args.iters, flush)
        line = decode_row(dtype_name, q_heads, kv_heads, dim, batch, kv_len, nbytes, ms_ours, ms_sdpa, sdpa_name,
                          naive_cell)
        print(line + "".join("  " + note for note in notes), flush=True)
        del q, k, v, out, want
        torch.cuda.empty_cache()
    return mismatches


# ---- Self-test (no GPU) ----

def self_test():
    checks = []

    def check(name, condition):
        checks.append(name)
        if not condition:
            sys.exit(f"self-test failed: {name}")

    defaults = parse_args(["--lib", "x.so"])
    check("default mode is prefill", defaults.mode == "prefill")
    check("decode defaults", defaults.decode_heads == [(32, 8), (32, 1), (32, 32)]
          and defaults.batches == [1, 8] and defaults.kv_lens == [1024, 4096, 16384, 65536])
    args = parse_args(["--mode", "decode", "--self-test", "--decode-heads", "32:8", "8:8", "--kv-lens", "4096"])
    check("heads parsed as pairs", args.decode_heads == [(32, 8), (8, 8)] and args.lib is None)
    for bad in (["--decode-heads", "32:5", "--lib", "x"], ["--decode-heads", "32", "--lib", "x"], [], ["--mode", "x"]):
        try:
            with open("/dev/null", "w") as devnull:
                saved, sys.stderr = sys.stderr, devnull
                try:
                    parse_args(bad)
                finally:
                    sys.stderr = saved
            check(f"{bad} rejected", False)
        except SystemExit as e:
            check(f"{bad} rejected", e.code == 2)
    shapes = decode_shapes(parse_args(["--lib", "x"]))
    check("decode shapes: 2 dtypes x 3 head pairs x 2 batches x 4 kv_lens", len(shapes) == 48
          and shapes[0] == ("float16", 32, 8, 1, 1024) and shapes[-1] == ("bfloat16", 32, 32, 8, 65536))

    check("tflops", math.isclose(tflops(1, 1, 1000, 1000, False, 1.0), 4.0)
          and math.isclose(tflops(2, 1, 1000, 1000, True, 1.0), 4.0))
    # Llama-3-8B step at 4k keys, fp16: K+V = 8 heads * 4096 * 256 * 2 B, Q = out = 32 * 128 * 2 B.
    nbytes = decode_bytes(1, 32, 8, 4096, 128, 128, 2)
    check("decode bytes", nbytes == 16_777_216 + 16_384)
    check("GB/s", math.isclose(gbps(nbytes, 0.01), 1679.36))

    # The prefill rows must stay as they were (earlier runs' tables are compared against new ones).
    check("prefill header", prefill_header() ==
          "dtype        D   H causal      S   B |  ortflash sdpa-flash    naive |  ratio        ms")
    check("prefill row", prefill_row("bfloat16", 128, 16, True, 2048, 8, 312.456, 298.1, f"{45.67:8.1f}", 1.23456) ==
          "bfloat16   128  16 True     2048   8 |     312.5      298.1     45.7 |   1.05     1.235")
    check("hopper suffix", hopper_suffix("tma", 412.34, 380.0) == "  tma   412.3 (1.09)")
    check("prefill row, naive skipped", prefill_row("float16", 64, 32, False, 16384, 1, 1, 2, "skipped", 3).endswith(
          "  skipped |   0.50     3.000"))
    row = decode_row("float16", 32, 8, 128, 1, 4096, nbytes, 0.01, 0.02, "flash/gqa", "  1.0")
    check("decode row lines up with its header", row.index("|") == decode_header().index("|")
          and row.rindex("|") == decode_header().rindex("|") and row.endswith("  flash/gqa"))
    check("decode row numbers", "  1679.4    839.7" in row and "  2.00      10.0      20.0" in row)
    check("decode row without sdpa", "n/a" in decode_row("float16", 32, 8, 128, 1, 4096, nbytes, 0.01, None,
                                                          "none ran", "  1.0"))

    check("encoder defaults", defaults.encoder_heads == [(12, 64), (16, 128)] and defaults.encoder_seqlens ==
          [128, 512, 2048] and defaults.encoder_dtypes == ["float16", "bfloat16", "float32"] and not defaults.tf32)
    check("encoder heads parsed", parse_args(["--lib", "x", "--encoder-heads", "8:96"]).encoder_heads == [(8, 96)])
    check("padded keys: odd entries lose their last quarter", padded_keys(4, 512) == [0, 128, 0, 128])
    check("padded keys: another fraction", padded_keys(2, 512, 0.5) == [0, 256])
    check("pad fraction and live keys default", defaults.pad_fraction == 0.25 and defaults.live_keys == "on")
    check("float32 and Hopper kernels as the library chooses by default",
          defaults.float32_tensor_cores == "default" and defaults.hopper == "default")
    check("no mask", encoder_mask("none", 2, 128, None) is None)
    for bad in ("1", "-0.1", "x"):
        try:
            parse_args(["--lib", "x", "--pad-fraction", bad])
            check(f"pad fraction {bad} rejected", False)
        except SystemExit as e:
            check(f"pad fraction {bad} rejected", e.code == 2)
    row = encoder_row("float32", 64, 12, 512, 32, 12.34, 10.0, "     5.0", 1.5, "efficient")
    check("encoder row lines up with its header", row.index("|") == encoder_header().index("|")
          and row.rindex("|") == encoder_header().rindex("|") and "  1.23" in row and row.endswith("  efficient"))
    check("encoder masks default", defaults.encoder_masks == ["padding-bias"])
    check("encoder row names its mask", " full-bias " in encoder_row("float16", 64, 12, 512, 32, 1.0, 2.0, "x", 1.0,
                                                                      "cudnn", "full-bias"))
    check("encoder row without sdpa", "n/a" in encoder_row("float32", 64, 12, 512, 32, 1.0, None, "oom", 1.0, "none"))

    if torch is None:
        print(f"self-test passed: {len(checks)} checks (no PyTorch: the naive grouped attention was not checked)")
        return
    torch.manual_seed(0)
    for q_heads, kv_heads, q_len in ((32, 8, 1), (4, 1, 3), (6, 6, 2)):
        q = torch.randn(2, q_heads, q_len, 16, dtype=torch.float64)
        k, v = (torch.randn(2, kv_heads, 37, 16, dtype=torch.float64) for _ in range(2))
        group = q_heads // kv_heads
        want = naive_attention(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), False)
        check(f"naive grouped attention {q_heads}:{kv_heads}", torch.allclose(naive_grouped_attention(q, k, v), want))
    q, k, v = (torch.randn(2, 3, 9, 16, dtype=torch.float64) for _ in range(3))
    bias = torch.zeros(2, 1, 1, 9, dtype=torch.float64)
    check("naive masked attention, zero bias", torch.allclose(naive_masked_attention(q, k, v, bias),
                                                              naive_attention(q, k, v, False), atol=1e-6))
    bias[1, 0, 0, 5:] = torch.finfo(torch.float64).min
    masked = naive_masked_attention(q, k, v, bias)
    check("naive masked attention hides the padded keys", torch.allclose(
        masked[1], naive_attention(q[1:], k[1:, :, :5], v[1:, :, :5], False)[0], atol=1e-6))
    keep = encoder_mask("padding-keep", 2, 8, torch.float64, "cpu")
    check("padding keep: entry 1 hides its last quarter", keep.shape == (2, 1, 1, 8) and keep[0].all()
          and keep[1, 0, 0].tolist() == [True] * 6 + [False] * 2)
    full = encoder_mask("full-bias", 2, 8, torch.float64, "cpu")
    lowest = torch.finfo(torch.float64).min
    check("full bias: causal plus the padding", full.shape == (2, 1, 8, 8) and full[0, 0, 2].tolist() ==
          [0.0] * 3 + [lowest] * 5 and full[1, 0, 7].tolist() == [0.0] * 6 + [lowest] * 2)
    check("naive masked attention, boolean keep = its bias",
          torch.allclose(naive_masked_attention(q[:, :, :8], k[:, :, :8], v[:, :, :8], keep),
                         naive_masked_attention(q[:, :, :8], k[:, :, :8], v[:, :, :8],
                                                encoder_mask("padding-bias", 2, 8, torch.float64, "cpu")), atol=1e-9))
    bias = decode_padding_bias(2, 16, torch.float64, "cpu")
    check("decode padding bias: entry 1 loses its first two keys", bias[0].eq(0).all() and
          bias[1, 0, 0].tolist() == [torch.finfo(torch.float64).min] * 2 + [0.0] * 14)
    q = torch.randn(2, 8, 1, 16, dtype=torch.float64)
    k, v = (torch.randn(2, 2, 16, 16, dtype=torch.float64) for _ in range(2))
    check("naive grouped attention with a padding bias hides the padded keys", torch.allclose(
        naive_grouped_attention(q, k, v, bias)[1], naive_grouped_attention(q[1:], k[1:, :, 2:], v[1:, :, 2:])[0]))
    print(f"self-test passed: {len(checks)} checks (torch {torch.__version__})")


def main():
    args = parse_args()
    if args.self_test:
        self_test()
        return
    if torch is None:
        sys.exit("PyTorch is not installed")
    if not torch.cuda.is_available():
        sys.exit("no CUDA device visible to PyTorch")
    # Set before the first call; the library reads it on every call. "default" and "both" leave the library's choice.
    if args.hopper in ("off", "1", "2"):
        os.environ["ORTFLASH_CUDA_HOPPER"] = "0" if args.hopper == "off" else args.hopper
    lib = load_library(args.lib)
    torch.manual_seed(0)
    print(f"GPU: {torch.cuda.get_device_name()}  (torch {torch.__version__}, CUDA {torch.version.cuda})")
    mismatches = 0
    if args.mode in ("prefill", "all"):
        mismatches += run_prefill(args, lib)
    if args.mode in ("decode", "all"):
        if args.mode == "all":
            print()
        mismatches += run_decode(args, lib)
    if args.mode in ("encoder", "all"):
        if args.mode == "all":
            print()
        mismatches += run_encoder(args, lib)
    if mismatches:
        sys.exit(f"{mismatches} configuration(s) disagreed with SDPA")


if __name__ == "__main__":
    main()
