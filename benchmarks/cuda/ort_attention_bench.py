#!/usr/bin/env python3
"""Attention inside ONNX Runtime, side by side: the FlashAttention op against what an ONNX Runtime user has
without it, in one process, on one device, through the same provider.

    python3 benchmarks/cuda/ort_attention_bench.py --lib libortflash.so [--ort-capi libonnxruntime.so]
        [--provider cuda|cpu] [--scenarios encoder causal plain decode] [--dtypes float16] ...

Contenders, each a one-node (or one-subgraph) model fed its own native layout, inputs and outputs bound in
place on the device (no copies in the timed runs):
  ortflash    com.ortflash::FlashAttention: Q, K, V as (B, H, S, D), a (B, 1, 1, T) padding bias, causal = 1
  unfused     what exporters spell out: MatMul(Q, Kᵀ) → Mul(scale) → Add(mask) → Softmax → MatMul(V), with a
              (B, 1, 1, T) padding bias or a (1, 1, S, T) causal triangle of the dtype's lowest value; K and V
              repeated to the query heads for grouped heads (Unsqueeze → Expand → Reshape, as Llama exports)
  mha         com.microsoft.MultiHeadAttention, ONNX Runtime's fused attention (what its transformer optimizer
              makes of BERT/GPT-2 attention; on CUDA its flash and memory-efficient kernels): query (B, S, H·D),
              key/value (B, T, H·D), or (B, H, T, D) when decoding; key_padding_mask (B, T) int32; unidirectional
              for causal. It has no grouped heads: not run where Hq ≠ Hkv
  attention   ONNX Attention (opset 23) as ONNX Runtime runs it: (B, H, S, D), is_causal, a boolean keep mask
              (B, 1, 1, T), or (B, 1, S, T) where ONNX Runtime refuses the broadcast one (marked *)
  ortflash-tf32  (asked for only) the op with its float32 CUDA kernel in one TF32 pass, float32 only

Scenarios (--tokens tokens per batch, B = tokens / S; --seqlens S):
  encoder     a padded encoder batch (BERT): not causal, entry b keeps T - (b mod 4)·T/8 keys
  causal      decoder prefill without padding (GPT/Llama): S = T, causal
  decoder     decoder prefill as HF exports spell it (Llama, GPT-2, Qwen2, …): S = T, the causal triangle and the
              encoder's padding in one (B, 1, S, T) additive mask of the dtype's lowest value, which every contender
              takes as it is (the op's bias, the unfused Add, MHA's attention_bias, ONNX Attention's float attn_mask)
  decoder-left  the same with the padding at the start (batched prompts, padded on the left for generation): an
              entry's first rows see only padding, which the mask hides too (their softmax runs over the lowest value
              everywhere; the check leaves those rows out)
  plain       no mask at all (ViT, CLIP's vision tower)
  decode      one query row against T cached keys (--decode-seqlens), 32 heads of 128, 32:32 and 32:8
              (grouped; --decode-shapes), B 1 and 8 (--decode-batches)

Every contender's output is first checked against a float64 reference on a few rows of the first and last batch
entry and head; one that disagrees is reported WRONG and not timed (exit 1). --cuda-graph turns on the CUDA
provider's CUDA graphs (enable_cuda_graph): ONNX Runtime captures a run and replays it, without per-kernel launch
costs (what decoding loops use); the output checked is then a replay's. Times are the median wall time of
Session.Run, which ends with the provider's stream synchronised: what an application sees, ONNX Runtime's
per-run overhead included. Ratios are contender time / ortflash time (above 1: the op is faster). TFLOP/s
counts 4·B·H·S·T·D (visible pairs only when causal; padded keys counted, as the kernels see them).

ONNX Runtime: the onnxruntime module where it is installed, else --ort-capi (ort_capi.py over the C API of a
libonnxruntime.so, e.g. the NuGet package's; for CUDA the GPU package's, unpacked by ort_gpu_chunks.sh). Device
buffers come from PyTorch (CUDA only). On the CPU everything runs from numpy arrays. --self-test checks the model
writer, the reference and the table without ONNX Runtime.
"""

import argparse
import gc
import math
import os
import platform
import statistics
import struct
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DOMAIN = "com.ortflash"
CONTENDERS = ("ortflash", "unfused", "mha", "attention", "ortflash-tf32")
DEFAULT_CONTENDERS = CONTENDERS[:4]
SCENARIOS = ("encoder", "causal", "decoder", "decoder-left", "plain", "decode")
# dtype -> (ONNX element type, numpy type, absolute and relative tolerance against the float64 reference)
DTYPES = {"float16": (10, np.float16, 4e-3, 1e-2), "float32": (1, np.float32, 2e-5, 1e-4)}
TF32_TOLERANCE = (4e-3, 1e-2)  # float32 where the provider's MatMuls may use TF32 (--tf32)
EXIT_PASS, EXIT_WRONG, EXIT_USAGE = 0, 1, 2

# ---- A minimal ONNX protobuf writer (onnx.proto field numbers; no onnx package needed) ---------------------------


def _varint(n):
    n &= (1 << 64) - 1  # negative int64s as ten bytes, as protobuf writes them
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number, wire, payload):
    return _varint(number << 3 | wire) + payload


def _bytes(number, data):
    data = data.encode() if isinstance(data, str) else data
    return _field(number, 2, _varint(len(data)) + data)


def _int(number, value):
    return _field(number, 0, _varint(value))


def value_info(name, elem_type, dims):
    """ValueInfoProto: name, TypeProto.tensor_type (elem_type, shape: dim_value, or dim_param for a str)."""
    shape = b"".join(_bytes(1, _bytes(2, d) if isinstance(d, str) else _int(1, d)) for d in dims)
    tensor = _int(1, elem_type) + _bytes(2, shape)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor))


def attribute(name, value):
    """AttributeProto for a float, int, string or list of ints."""
    if isinstance(value, float):
        return _bytes(1, name) + _field(2, 5, struct.pack("<f", value)) + _int(20, 1)
    if isinstance(value, bool) or isinstance(value, int):
        return _bytes(1, name) + _int(3, int(value)) + _int(20, 2)
    if isinstance(value, str):
        return _bytes(1, name) + _bytes(4, value) + _int(20, 3)
    return _bytes(1, name) + b"".join(_int(8, v) for v in value) + _int(20, 7)


def node(op_type, inputs, outputs, name, domain="", **attributes):
    out = b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs)
    out += _bytes(3, name) + _bytes(4, op_type)
    out += b"".join(_bytes(5, attribute(k, v)) for k, v in attributes.items())
    return out + (_bytes(7, domain) if domain else b"")


def tensor(name, array):
    """TensorProto with raw_data (little-endian, as ONNX stores it)."""
    array = np.ascontiguousarray(array)
    elem = {np.dtype(np.float32): 1, np.dtype(np.float16): 10, np.dtype(np.int64): 7}[array.dtype]
    return b"".join(_int(1, d) for d in array.shape) + _int(2, elem) + _bytes(8, name) + _bytes(9, array.tobytes())


def model(nodes, inputs, outputs, initializers=(), opsets=(("", 17),), name="attention"):
    graph = b"".join(_bytes(1, n) for n in nodes) + _bytes(2, name)
    graph += b"".join(_bytes(5, t) for t in initializers)
    graph += b"".join(_bytes(11, v) for v in inputs) + b"".join(_bytes(12, v) for v in outputs)
    ir_version = 10 if any(domain == "" and version >= 21 for domain, version in opsets) else 8
    opset_imports = b"".join(_bytes(8, (_bytes(1, d) if d else b"") + _int(2, v)) for d, v in opsets)
    return _int(1, ir_version) + _bytes(2, "ortflash.ort_attention_bench") + _bytes(7, graph) + opset_imports


# ---- Cases ----------------------------------------------------------------------------------------------------


class Case:
    def __init__(self, scenario, dtype, batch, q_heads, kv_heads, q_len, kv_len, head_dim):
        self.scenario, self.dtype = scenario, dtype
        self.batch, self.q_heads, self.kv_heads = batch, q_heads, kv_heads
        self.q_len, self.kv_len, self.head_dim = q_len, kv_len, head_dim
        self.scale = 1.0 / math.sqrt(head_dim)
        self.causal = scenario in ("causal", "decoder", "decoder-left")
        self.padded = scenario in ("encoder", "decoder", "decoder-left")
        # causal and padding in one (B, 1, S, T) additive mask
        self.mask_in_bias = scenario in ("decoder", "decoder-left")
        self.left_padded = scenario == "decoder-left"
        self.elem, self.np_type = DTYPES[dtype][0], DTYPES[dtype][1]

    def __repr__(self):
        return (f"{self.scenario} {self.dtype} B{self.batch} H{self.q_heads}:{self.kv_heads} S{self.q_len} "
                f"T{self.kv_len} D{self.head_dim}")

    def kept_keys(self):
        """Keys each batch entry keeps (padding at the end, or at the start where left_padded)."""
        if not self.padded:
            return [self.kv_len] * self.batch
        return [self.kv_len - (b % 4) * self.kv_len // 8 for b in range(self.batch)]

    def hidden_keys(self, b):
        """The slice of batch entry b's keys that its padding hides."""
        padding = self.kv_len - self.kept_keys()[b]
        return slice(0, padding) if self.left_padded else slice(self.kv_len - padding, self.kv_len)

    def sees_a_key(self, b, row):
        """Whether query row `row` of entry b sees a key the padding keeps (left padding: not its first rows)."""
        first = self.hidden_keys(b).stop if self.left_padded else 0
        last = self.kv_len - 1 if self.left_padded else self.kept_keys()[b] - 1
        if self.causal:
            last = min(last, row + self.kv_len - self.q_len)
        return first <= last

    def flops(self):
        pairs = self.q_len * self.kv_len
        if self.causal:  # upper-left aligned, S = T: row i sees i + 1 keys
            pairs = self.q_len * (self.q_len + 1) // 2
        return 4.0 * self.batch * self.q_heads * pairs * self.head_dim

    def lowest(self):
        return float(np.finfo(self.np_type).min)


def cases(args):
    out = []
    for dtype in args.dtypes:
        for scenario in args.scenarios:
            if scenario == "decode":
                for q_heads, kv_heads, dim in args.decode_shapes:
                    for batch in args.decode_batches:
                        for kv_len in args.decode_seqlens:
                            out.append(Case(scenario, dtype, batch, q_heads, kv_heads, 1, kv_len, dim))
                continue
            for heads, kv_heads, dim in args.shapes:
                for seq in args.seqlens:
                    out.append(Case(scenario, dtype, max(1, args.tokens // seq), heads, kv_heads, seq, seq, dim))
    return out


def make_data(case, seed=7):
    """Q, K, V (BHSD) in the case's dtype, and the padding pattern."""
    rng = np.random.default_rng(seed)

    def uniform(heads, length):  # unit variance; uniform draws are several times faster than normal ones
        x = rng.random((case.batch, heads, length, case.head_dim), dtype=np.float32)
        return ((x - 0.5) * np.float32(2 * math.sqrt(3))).astype(case.np_type)

    return uniform(case.q_heads, case.q_len), uniform(case.kv_heads, case.kv_len), uniform(case.kv_heads, case.kv_len)


def reference_rows(case, q, k, v, b, h, rows):
    """float64 attention output of batch entry b, query head h, query rows `rows`: (len(rows), D)."""
    g = h // (case.q_heads // case.kv_heads)
    qs = q[b, h, rows].astype(np.float64)
    scores = case.scale * qs @ k[b, g].astype(np.float64).T
    visible = np.ones(scores.shape, dtype=bool)
    visible[:, case.hidden_keys(b)] = False
    if case.causal:
        visible &= np.arange(case.kv_len)[None, :] <= (np.asarray(rows)[:, None] + case.kv_len - case.q_len)
    scores = np.where(visible, scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    return weights @ v[b, g].astype(np.float64)


def check_rows(case, q, k, v, out_bhsd, tolerance):
    """(ok, worst |d| / allowed, where) over the first and last 8 rows of the first and last entry and head, those
    that see a key."""
    first_and_last = sorted(set(list(range(min(8, case.q_len))) + list(range(max(0, case.q_len - 8), case.q_len))))
    atol, rtol = tolerance
    worst, where = 0.0, ""
    for b in sorted({0, case.batch - 1}):
        rows = [row for row in first_and_last if case.sees_a_key(b, row)]
        for h in sorted({0, case.q_heads - 1}):
            expected = reference_rows(case, q, k, v, b, h, rows)
            actual = out_bhsd[b, h, rows].astype(np.float64)
            if not np.all(np.isfinite(actual)):
                return False, math.inf, f"b{b} h{h}: not finite"
            ratio = float((np.abs(actual - expected) / (atol + rtol * np.abs(expected))).max())
            if ratio > worst:
                worst, where = ratio, f"b{b} h{h}"
    return worst <= 1.0, worst, where


# ---- The contenders' models and inputs -------------------------------------------------------------------------


class Contender:
    """A model, its inputs (name -> host array) and its output's name, shape and way back to (B, H, S, D)."""

    def __init__(self, name, model_bytes, inputs, output_shape, to_bhsd, note="", config=None):
        self.name, self.model, self.inputs = name, model_bytes, inputs
        self.output_shape, self.to_bhsd, self.note = output_shape, to_bhsd, note
        self.config = config or {}  # session config entries


def padding_bias(case):
    bias = np.zeros((case.batch, 1, 1, case.kv_len), dtype=case.np_type)
    for b in range(case.batch):
        bias[b, 0, 0, case.hidden_keys(b)] = case.lowest()
    return bias


def causal_triangle(case):
    rows = np.arange(case.q_len)[:, None] + case.kv_len - case.q_len
    hidden = np.arange(case.kv_len)[None, :] > rows
    return np.where(hidden, case.lowest(), 0.0).astype(case.np_type)[None, None]


def decoder_bias(case):
    """(B, 1, S, T): the causal triangle and each entry's padding, the dtype's lowest value where hidden."""
    bias = np.broadcast_to(causal_triangle(case), (case.batch, 1, case.q_len, case.kv_len)).copy()
    for b in range(case.batch):
        bias[b, :, :, case.hidden_keys(b)] = case.lowest()
    return bias


def bhsd_inputs(case, q, k, v):
    return {"Q": q, "K": k, "V": v}


def bhsd_value_infos(case, q, k, v, extra=()):
    infos = [value_info("Q", case.elem, q.shape), value_info("K", case.elem, k.shape), value_info("V", case.elem, v.shape)]
    return infos + list(extra)


def ortflash(case, q, k, v):
    inputs = bhsd_inputs(case, q, k, v)
    infos = bhsd_value_infos(case, q, k, v)
    names = ["Q", "K", "V"]
    if case.padded:
        inputs["bias"] = decoder_bias(case) if case.mask_in_bias else padding_bias(case)
        infos.append(value_info("bias", case.elem, inputs["bias"].shape))
        names.append("bias")
    attributes = {"scale": case.scale}
    if case.causal and not case.mask_in_bias:
        attributes["causal"] = 1
    out_shape = (case.batch, case.q_heads, case.q_len, case.head_dim)
    graph = [node("FlashAttention", names, ["Y"], "attention", domain=DOMAIN, **attributes)]
    data = model(graph, infos, [value_info("Y", case.elem, out_shape)], opsets=(("", 17), (DOMAIN, 1)))
    return Contender("ortflash", data, inputs, out_shape, lambda y: y)


def ortflash_tf32(case, q, k, v):
    """The op with its float32 CUDA kernel in one TF32 pass (session config entry 3); float32 only."""
    if case.dtype != "float32":
        return None
    contender = ortflash(case, q, k, v)
    contender.name, contender.config = "ortflash-tf32", {"ortflash.cuda.float32_tensor_cores": "3"}
    return contender


def unfused(case, q, k, v):
    inputs = bhsd_inputs(case, q, k, v)
    infos = bhsd_value_infos(case, q, k, v)
    nodes, initializers = [], [tensor("scale", np.array(case.scale, dtype=case.np_type))]
    key, value = "K", "V"
    if case.q_heads != case.kv_heads:  # Llama's repeat_kv
        group = case.q_heads // case.kv_heads
        initializers.append(tensor("axis2", np.array([2], dtype=np.int64)))
        initializers.append(tensor("expanded", np.array([case.batch, case.kv_heads, group, case.kv_len, case.head_dim],
                                                        dtype=np.int64)))
        initializers.append(tensor("repeated", np.array([case.batch, case.q_heads, case.kv_len, case.head_dim],
                                                        dtype=np.int64)))
        for name in ("K", "V"):
            nodes.append(node("Unsqueeze", [name, "axis2"], [name + "_u"], name + "_unsqueeze"))
            nodes.append(node("Expand", [name + "_u", "expanded"], [name + "_e"], name + "_expand"))
            nodes.append(node("Reshape", [name + "_e", "repeated"], [name + "_r"], name + "_reshape"))
        key, value = "K_r", "V_r"
    nodes.append(node("Transpose", [key], ["Kt"], "transpose", perm=[0, 1, 3, 2]))
    nodes.append(node("MatMul", ["Q", "Kt"], ["QK"], "qk"))
    nodes.append(node("Mul", ["QK", "scale"], ["scores"], "scale"))
    scores = "scores"
    mask = (decoder_bias(case) if case.mask_in_bias else padding_bias(case) if case.padded
            else causal_triangle(case) if case.causal else None)
    if mask is not None:
        inputs["mask"] = mask
        infos.append(value_info("mask", case.elem, mask.shape))
        nodes.append(node("Add", ["scores", "mask"], ["masked"], "mask"))
        scores = "masked"
    nodes.append(node("Softmax", [scores], ["probs"], "softmax", axis=-1))
    nodes.append(node("MatMul", ["probs", value], ["Y"], "pv"))
    out_shape = (case.batch, case.q_heads, case.q_len, case.head_dim)
    data = model(nodes, infos, [value_info("Y", case.elem, out_shape)], initializers)
    return Contender("unfused", data, inputs, out_shape, lambda y: y)


def mha(case, q, k, v):
    if case.q_heads != case.kv_heads:
        return None
    b, h, s, t, d = case.batch, case.q_heads, case.q_len, case.kv_len, case.head_dim
    inputs = {"query": np.ascontiguousarray(q.transpose(0, 2, 1, 3).reshape(b, s, h * d))}
    if case.scenario == "decode":  # the cache as it is kept, (B, H, T, D)
        inputs["key"], inputs["value"] = k, v
    else:
        inputs["key"] = np.ascontiguousarray(k.transpose(0, 2, 1, 3).reshape(b, t, h * d))
        inputs["value"] = np.ascontiguousarray(v.transpose(0, 2, 1, 3).reshape(b, t, h * d))
    names = ["query", "key", "value"]
    infos = [value_info(n, case.elem, inputs[n].shape) for n in names]
    if case.mask_in_bias:
        inputs["attention_bias"] = decoder_bias(case)
        infos.append(value_info("attention_bias", case.elem, inputs["attention_bias"].shape))
        names += ["", "", "attention_bias"]
    elif case.padded:
        keep = np.ones((b, t), dtype=np.int32)
        for entry in range(b):
            keep[entry, case.hidden_keys(entry)] = 0
        inputs["key_padding_mask"] = keep
        infos.append(value_info("key_padding_mask", 6, keep.shape))
        names += ["", "key_padding_mask"]
    attributes = {"num_heads": h, "scale": case.scale}
    if case.causal and not case.mask_in_bias:
        attributes["unidirectional"] = 1
    out_shape = (b, s, h * d)
    graph = [node("MultiHeadAttention", names, ["Y"], "attention", domain="com.microsoft", **attributes)]
    data = model(graph, infos, [value_info("Y", case.elem, out_shape)], opsets=(("", 17), ("com.microsoft", 1)))
    return Contender("mha", data, inputs, out_shape, lambda y: y.reshape(b, s, h, d).transpose(0, 2, 1, 3))


def onnx_attention(case, q, k, v, full_mask=False):
    inputs = bhsd_inputs(case, q, k, v)
    infos = bhsd_value_infos(case, q, k, v)
    names = ["Q", "K", "V"]
    if case.mask_in_bias:
        inputs["attn_mask"] = decoder_bias(case)
        infos.append(value_info("attn_mask", case.elem, inputs["attn_mask"].shape))
        names.append("attn_mask")
    elif case.padded:
        rows = case.q_len if full_mask else 1
        keep = np.ones((case.batch, 1, rows, case.kv_len), dtype=np.bool_)
        for entry in range(case.batch):
            keep[entry, :, :, case.hidden_keys(entry)] = False
        inputs["attn_mask"] = keep
        infos.append(value_info("attn_mask", 9, keep.shape))
        names.append("attn_mask")
    attributes = {"scale": case.scale}
    if case.causal and not case.mask_in_bias:
        attributes["is_causal"] = 1
    out_shape = (case.batch, case.q_heads, case.q_len, case.head_dim)
    graph = [node("Attention", names, ["Y"], "attention", **attributes)]
    data = model(graph, infos, [value_info("Y", case.elem, out_shape)], opsets=(("", 23),))
    return Contender("attention", data, inputs, out_shape, lambda y: y, note="*" if full_mask else "")


# ---- Running on a device ----------------------------------------------------------------------------------------


class Device:
    """Buffers and bound runs on the CPU (numpy) or a CUDA device (PyTorch tensors)."""

    def __init__(self, ort, provider, tf32, cuda_graph=False):
        self.ort, self.provider, self.tf32, self.cuda_graph = ort, provider, tf32, cuda_graph
        self.torch = None
        if provider == "cuda":
            import torch  # device buffers; the GPU machines have it

            if not torch.cuda.is_available():
                raise RuntimeError("PyTorch sees no CUDA device")
            self.torch = torch

    def name(self):
        if self.torch is not None:
            return self.torch.cuda.get_device_name(0)
        try:
            with open("/proc/cpuinfo") as f:
                model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
        except OSError:
            model = ""
        return f"{model or platform.processor() or 'CPU'}, {os.cpu_count()} logical cores"

    def session(self, data, library, config=None):
        options = self.ort.SessionOptions()
        options.log_severity_level = 4  # a refusal is reported in the table, not logged as well
        options.register_custom_ops_library(library)
        for key, value in (config or {}).items():
            options.add_session_config_entry(key, value)
        if self.provider == "cuda":
            cuda = {"device_id": "0", "use_tf32": "1" if self.tf32 else "0"}
            if self.cuda_graph:
                cuda["enable_cuda_graph"] = "1"
            providers = [("CUDAExecutionProvider", cuda)]
        else:
            providers = ["CPUExecutionProvider"]
        return self.ort.InferenceSession(data, sess_options=options, providers=providers)

    def buffer(self, array):
        if self.torch is None:
            return np.ascontiguousarray(array)
        return self.torch.from_numpy(np.ascontiguousarray(array)).to("cuda")

    def empty(self, shape, np_type):
        if self.torch is None:
            return np.empty(shape, dtype=np_type)
        return self.torch.empty(shape, dtype=self.torch.from_numpy(np.zeros(1, np_type)).dtype, device="cuda")

    def sync(self):
        """Waits for the whole device (ONNX Runtime's stream and PyTorch's): uploads done before a run reads them,
        and a run's work done before its time is taken, whatever the provider does at the end of Run."""
        if self.torch is not None:
            self.torch.cuda.synchronize()

    def address(self, buffer):
        return buffer.ctypes.data if self.torch is None else buffer.data_ptr()

    def host(self, buffer):
        return buffer if self.torch is None else buffer.cpu().numpy()

    def clear(self, buffer):
        """Zeroes an output buffer in place (a replayed graph must write all of it again)."""
        if self.torch is None:
            buffer.fill(0)
        else:
            buffer.zero_()

    def bind(self, session, inputs, outputs):
        """A callable that runs the session over the buffers in place."""
        if hasattr(session, "bind"):  # ort_capi
            spec = {n: (self.address(b), tuple(b.shape), np_type) for n, (b, np_type) in inputs.items()}
            out = {n: (self.address(b), tuple(b.shape), np_type) for n, (b, np_type) in outputs.items()}
            bound = session.bind(spec, out, device="cpu" if self.torch is None else "cuda")
            return bound.run, bound
        binding = session.io_binding()
        kind = "cpu" if self.torch is None else "cuda"
        for name, (b, np_type) in inputs.items():
            binding.bind_input(name, kind, 0, np_type, list(b.shape), self.address(b))
        for name, (b, np_type) in outputs.items():
            binding.bind_output(name, kind, 0, np_type, list(b.shape), self.address(b))
        return (lambda: session.run_with_iobinding(binding)), binding


def time_runs(run, sync, min_seconds, min_runs, max_runs, warmup=2):
    for _ in range(warmup):
        run()
    sync()
    times = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:160]


def run_contender(device, library, make, case, q, k, v, args):
    """(ms or None, status): 'ok', 'n/a: why', or 'WRONG: ...'."""
    contender = make(case, q, k, v)
    if contender is None:
        return None, "n/a: no grouped heads" if make is mha else "n/a: float32 only", ""
    if contender.name == "unfused":
        score_bytes = case.batch * case.q_heads * case.q_len * case.kv_len * np.dtype(case.np_type).itemsize
        if score_bytes > args.unfused_max_gib * 2**30:
            return None, f"n/a: scores {score_bytes / 2**30:.0f} GiB", ""
    session = bound = None
    try:
        session = device.session(contender.model, library, contender.config)
        buffers = {n: (device.buffer(a), a.dtype) for n, a in contender.inputs.items()}
        output = device.empty(contender.output_shape, case.np_type)
        run, bound = device.bind(session, buffers, {"Y": (output, case.np_type)})
        device.sync()
        # With CUDA graphs ONNX Runtime captures during the first runs and replays from then on: the output checked
        # is a replay's, written into a cleared buffer.
        for _ in range(3 if device.cuda_graph else 1):
            run()
        device.sync()
        if device.cuda_graph:
            device.clear(output)
            device.sync()
            run()
            device.sync()
    except Exception as error:  # onnxruntime raises its own types; a refusal is a result here
        if contender.name == "attention" and case.padded and not case.mask_in_bias and not contender.note:
            del session, bound
            return run_contender(device, library, lambda *a: onnx_attention(*a, full_mask=True), case, q, k, v, args)
        return None, f"n/a: {first_line(error)}", ""
    one_tf32_pass = contender.name == "ortflash-tf32" or (contender.name == "unfused" and args.tf32)
    tolerance = TF32_TOLERANCE if case.dtype == "float32" and (args.tf32 or one_tf32_pass) else DTYPES[case.dtype][2:]
    ok, worst, where = check_rows(case, q, k, v, contender.to_bhsd(device.host(output)), tolerance)
    if not ok:
        return None, f"WRONG: {worst:.3g}x the tolerance at {where}", contender.note
    ms = time_runs(run, device.sync, args.min_seconds, args.min_runs, args.max_runs)
    del bound, session, buffers, output
    gc.collect()
    return ms, "ok", contender.note


MAKERS = {"ortflash": ortflash, "unfused": unfused, "mha": mha, "attention": onnx_attention, "ortflash-tf32": ortflash_tf32}


def header(contenders):
    cells = "".join(f"{c:>11}" for c in contenders)
    ratios = "".join(f"{'x ' + c:>12}" for c in contenders if c != "ortflash")
    return f"{'scenario':9} {'dtype':8} {'H':>6} {'D':>4} {'B':>4} {'S':>6} {'T':>6} |{cells} |{ratios} | {'TFLOP/s':>9}"


def row(case, contenders, results):
    """One table row: ms per contender, the ratios to ortflash, ortflash's TFLOP/s."""
    def cell(name):
        ms, status, note = results[name]
        if ms is None:
            return f"{'WRONG' if status.startswith('WRONG') else 'n/a':>11}"
        return f"{ms:10.3f}{note or ' '}"

    ours = results["ortflash"][0]
    ratios = ""
    for name in contenders:
        if name == "ortflash":
            continue
        ms = results[name][0]
        ratios += f"{ms / ours:12.2f}" if ms is not None and ours else f"{'-':>12}"
    heads = f"{case.q_heads}:{case.kv_heads}" if case.q_heads != case.kv_heads else str(case.q_heads)
    tflops = f"{case.flops() / (ours * 1e-3) / 1e12:9.2f}" if ours else f"{'-':>9}"
    cells = "".join(cell(n) for n in contenders)
    return (f"{case.scenario:9} {case.dtype:8} {heads:>6} {case.head_dim:4d} {case.batch:4d} {case.q_len:6d} "
            f"{case.kv_len:6d} |{cells} |{ratios} | {tflops}")


def unpacked_library(path):
    """The op library; one given as .xz (prepare_ort_models.sh's .ort-gpu) is unpacked into a temporary folder."""
    if not path.endswith(".xz"):
        return path
    import lzma
    import shutil
    import tempfile

    target = os.path.join(tempfile.mkdtemp(prefix="ortflash-bench-"), "libortflash.so")
    with lzma.open(path) as source, open(target, "wb") as sink:
        shutil.copyfileobj(source, sink)
    return target


def load_ort(args):
    if args.ort_capi:
        sys.path.insert(0, HERE)
        import ort_capi

        return ort_capi.load(args.ort_capi)
    import onnxruntime

    return onnxruntime


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lib", help="the op library (libortflash.so; built with CUDA for --provider cuda)")
    parser.add_argument("--ort-capi", help="a libonnxruntime.so to use through ort_capi.py instead of the module")
    parser.add_argument("--provider", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(DEFAULT_CONTENDERS),
                        help="ortflash-tf32: the op with its float32 CUDA kernel in one TF32 pass (config entry 3)")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=None,
                        help="default float16 on CUDA, float32 on the CPU")
    parser.add_argument("--seqlens", nargs="+", type=int, default=None,
                        help="S (= T), or T for decode; default 512 2048 8192 on CUDA, 128 512 on the CPU")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per batch (default 16384; CPU 2048)")
    parser.add_argument("--shapes", nargs="+", default=["12x64", "16x128"],
                        help="HEADSxHEAD_DIM or QHEADS:KVHEADSxHEAD_DIM (grouped) for prefill")
    parser.add_argument("--decode-shapes", nargs="+", default=["32:32x128", "32:8x128"],
                        help="QHEADS:KVHEADSxHEAD_DIM for decode (default 32:32x128 32:8x128)")
    parser.add_argument("--decode-batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--decode-seqlens", nargs="+", type=int, default=None,
                        help="cache lengths T for decode; default 4096 16384 on CUDA, 1024 4096 on the CPU")
    parser.add_argument("--tf32", action="store_true", help="let the CUDA provider's MatMuls use TF32 (its default)")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="the CUDA provider's enable_cuda_graph: runs replay one captured graph (no launch costs)")
    parser.add_argument("--unfused-max-gib", type=float, default=8.0, help="skip the unfused graph past these scores")
    parser.add_argument("--min-seconds", type=float, default=0.3)
    parser.add_argument("--min-runs", type=int, default=5)
    parser.add_argument("--max-runs", type=int, default=200)
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args(argv)
    cpu = args.provider == "cpu"
    args.dtypes = args.dtypes or (["float32"] if cpu else ["float16"])
    args.seqlens = args.seqlens or ([128, 512] if cpu else [512, 2048, 8192])
    args.tokens = args.tokens or (2048 if cpu else 16384)
    args.decode_seqlens = args.decode_seqlens or ([1024, 4096] if cpu else [4096, 16384])
    if "ortflash" not in args.contenders:
        args.contenders = ["ortflash"] + args.contenders
    def head_shapes(option, texts):
        """HEADSxD (as HEADS:HEADSxD) or QHEADS:KVHEADSxD -> (QHEADS, KVHEADS, D)."""
        shapes = []
        for text in texts:
            heads, _, dim = text.lower().partition("x")
            q_heads, _, kv_heads = heads.partition(":")
            try:
                shape = (int(q_heads), int(kv_heads or q_heads), int(dim))
            except ValueError:
                parser.error(f"{option} takes HEADSxHEAD_DIM or QHEADS:KVHEADSxHEAD_DIM, e.g. 32:8x128: '{text}'")
            if min(shape) < 1 or shape[0] % shape[1]:
                parser.error(f"{option} '{text}': positive sizes, the query heads a multiple of the key/value heads")
            shapes.append(shape)
        return shapes

    args.shapes = head_shapes("--shapes", args.shapes)
    args.decode_shapes = head_shapes("--decode-shapes", args.decode_shapes)
    if min(args.seqlens + args.decode_seqlens) < 1 or min(args.decode_batches) < 1 or args.tokens < 1:
        parser.error("--seqlens, --decode-seqlens, --decode-batches and --tokens take positive sizes")
    if not args.self_test and not args.lib:
        parser.error("--lib is required")
    return args


def main(argv=None):
    args = parse(argv)
    if args.self_test:
        return self_test()
    if not os.path.isfile(args.lib):
        print(f"error: no op library at {args.lib}", file=sys.stderr)
        return EXIT_USAGE
    ort = load_ort(args)
    if args.cuda_graph and args.provider != "cuda":
        print("error: --cuda-graph needs --provider cuda", file=sys.stderr)
        return EXIT_USAGE
    try:
        device = Device(ort, args.provider, args.tf32, args.cuda_graph)
    except (ImportError, RuntimeError) as error:
        print(f"error: the CUDA provider's buffers come from PyTorch: {first_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    version = getattr(ort, "__version__", "?")
    print(f"ONNX Runtime {version}, {args.provider} provider, {device.name()}; "
          f"TF32 {'allowed' if args.tf32 else 'off'} in the provider's MatMuls"
          f"{'; CUDA graphs (runs replay a captured graph)' if args.cuda_graph else ''}", flush=True)
    print(f"ms per Session.Run (median); x NAME = NAME's time / ortflash's (above 1: the op is faster); "
          f"* ONNX Attention with its mask expanded to (B, 1, S, T)", flush=True)
    print(header(args.contenders), flush=True)
    wrong = 0
    notes = []
    library = unpacked_library(args.lib)
    for case in cases(args):
        q, k, v = make_data(case)
        results = {}
        for name in args.contenders:
            results[name] = run_contender(device, library, MAKERS[name], case, q, k, v, args)
            status = results[name][1]
            if status != "ok":
                notes.append(f"  {case!r}: {name}: {status}")
                # The op itself must run everywhere; the others may refuse a case.
                wrong += status.startswith("WRONG") or name == "ortflash"
        print(row(case, args.contenders, results), flush=True)
    if notes:
        print("not timed:")
        print("\n".join(notes))
    print(f"{'FAILED' if wrong else 'passed'}: {wrong} result(s) disagreed with the float64 reference or were the op's "
          "refusals")
    return EXIT_WRONG if wrong else EXIT_PASS


# ---- Self-test (no ONNX Runtime) ---------------------------------------------------------------------------------


def self_test():
    checks = []

    def check(name, ok):
        checks.append(name)
        if not ok:
            raise AssertionError(f"self-test failed: {name}")

    check("varint 300", _varint(300) == b"\xac\x02")
    check("varint -1 is ten bytes", _varint(-1) == b"\xff" * 9 + b"\x01")
    case = Case("encoder", "float16", 4, 2, 2, 16, 16, 8)
    check("padding keeps 16, 14, 12, 10 keys", case.kept_keys() == [16, 14, 12, 10])
    causal = Case("causal", "float32", 1, 2, 2, 4, 4, 8)
    check("causal FLOPs count visible pairs", causal.flops() == 4.0 * 2 * 10 * 8)
    triangle = causal_triangle(causal)[0, 0]
    check("causal triangle hides above the diagonal",
          triangle[0, 1] == np.finfo(np.float32).min and triangle[1, 1] == 0 and triangle[3, 0] == 0)
    decoder = Case("decoder", "float16", 2, 2, 2, 16, 16, 8)
    mask = decoder_bias(decoder)
    lowest = np.finfo(np.float16).min
    check("decoder mask: causal and each entry's padding, (B, 1, S, T)",
          mask.shape == (2, 1, 16, 16) and mask[0, 0, 3, 4] == lowest and mask[0, 0, 15, 15] == 0 and
          mask[1, 0, 15, 14] == lowest and mask[1, 0, 15, 13] == 0 and mask[1, 0, 0, 0] == 0)
    check("decoder: FLOPs count visible pairs", decoder.flops() == 4.0 * 2 * 2 * 136 * 8)
    left = Case("decoder-left", "float16", 2, 2, 2, 16, 16, 8)
    mask = decoder_bias(left)
    check("decoder-left mask: causal and each entry's padding at the start, the padding's rows wholly hidden",
          mask[0, 0, 0, 0] == 0 and mask[0, 0, 3, 4] == lowest and mask[1, 0, 15, 1] == lowest and
          mask[1, 0, 15, 2] == 0 and mask[1, 0, 15, 15] == 0 and (mask[1, 0, 1] == lowest).all() and
          mask[1, 0, 2, 2] == 0 and mask[1, 0, 2, 3] == lowest)
    check("decoder-left: the padding's rows see no key", not left.sees_a_key(1, 1) and left.sees_a_key(1, 2)
          and left.sees_a_key(0, 0))

    # The reference against a direct softmax, padded and grouped.
    grouped = Case("decode", "float32", 2, 4, 2, 1, 12, 8)
    grouped.padded = True
    q, k, v = make_data(grouped)
    b, h = 1, 3
    scores = grouped.scale * q[b, h, 0].astype(np.float64) @ k[b, 1].astype(np.float64).T
    kept = grouped.kept_keys()[b]
    p = np.exp(scores[:kept] - scores[:kept].max())
    direct = (p / p.sum()) @ v[b, 1, :kept].astype(np.float64)
    check("reference: grouped head 3 reads kv head 1, padding hidden",
          np.allclose(reference_rows(grouped, q, k, v, b, h, [0])[0], direct, rtol=1e-12, atol=1e-12))
    out = np.stack([[reference_rows(grouped, q, k, v, bb, hh, [0]) for hh in range(4)] for bb in range(2)])
    check("check_rows passes the reference itself", check_rows(grouped, q, k, v, out, (1e-6, 1e-6))[0])
    out[1, 3, 0, 2] += 1e-3
    check("check_rows catches a wrong element", not check_rows(grouped, q, k, v, out, (1e-6, 1e-6))[0])

    # The models, read back by the onnx package where there is one.
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        onnx = None
        print("note: no onnx module: the models are not parsed back")
    if onnx is not None:
        for maker, expected_ops in ((ortflash, ["FlashAttention"]), (mha, ["MultiHeadAttention"]),
                                    (onnx_attention, ["Attention"])):
            c = maker(case, *make_data(case))
            m = onnx.load_model_from_string(c.model)
            check(f"{c.name}: one node of the right type", [n.op_type for n in m.graph.node] == expected_ops)
            check(f"{c.name}: inputs in order", [i.name for i in m.graph.input] == list(c.inputs))
            dims = [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim]
            check(f"{c.name}: output shape", tuple(dims) == tuple(c.output_shape))
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in m.graph.node[0].attribute}
            check(f"{c.name}: scale", abs(attrs["scale"] - case.scale) < 1e-7)
        flash = onnx.load_model_from_string(ortflash(causal, *make_data(causal)).model)
        check("ortflash causal: domain and attribute", flash.graph.node[0].domain == DOMAIN and
              onnx.helper.get_attribute_value(flash.graph.node[0].attribute[1]) == 1 and
              {o.domain: o.version for o in flash.opset_import} == {"": 17, DOMAIN: 1})
        for maker in (ortflash, mha, onnx_attention):
            m = onnx.load_model_from_string(maker(decoder, *make_data(decoder)).model)
            attrs = {a.name for a in m.graph.node[0].attribute}
            check(f"{maker.__name__} decoder: the mask as a 4-D input, no causal attribute",
                  len(m.graph.input) == 4 and len(m.graph.input[3].type.tensor_type.shape.dim) == 4 and
                  not attrs & {"causal", "unidirectional", "is_causal"})
        mha_padded = onnx.load_model_from_string(mha(case, *make_data(case)).model)
        check("mha: key_padding_mask in slot 4", list(mha_padded.graph.node[0].input)[3:] == ["", "key_padding_mask"])
        check("mha: num_heads", onnx.helper.get_attribute_value(mha_padded.graph.node[0].attribute[0]) == 2)
        grouped_plain = Case("decode", "float16", 1, 4, 2, 1, 12, 8)
        check("mha refuses grouped heads", mha(grouped_plain, *make_data(grouped_plain)) is None)
        g = unfused(grouped_plain, *make_data(grouped_plain))
        gm = onnx.load_model_from_string(g.model)
        check("unfused grouped: repeat_kv then attention",
              [n.op_type for n in gm.graph.node] == ["Unsqueeze", "Expand", "Reshape"] * 2 +
              ["Transpose", "MatMul", "Mul", "Softmax", "MatMul"])
        onnx.checker.check_model(gm)
        scale = numpy_helper.to_array(next(t for t in gm.graph.initializer if t.name == "scale"))
        check("unfused: the scale initializer in the dtype", scale.dtype == np.float16 and
              abs(float(scale) - grouped_plain.scale) < 1e-3)
        um = onnx.load_model_from_string(unfused(case, *make_data(case)).model)
        check("unfused padded: the mask is added", [n.op_type for n in um.graph.node][3] == "Add")
        onnx.checker.check_model(um)
        attention = onnx.load_model_from_string(onnx_attention(case, *make_data(case), full_mask=True).model)
        check("attention: opset 23, full mask", {o.domain: o.version for o in attention.opset_import} == {"": 23} and
              [d.dim_value for d in attention.graph.input[3].type.tensor_type.shape.dim] == [4, 1, 16, 16])
    # The table.
    results = {"ortflash": (2.0, "ok", ""), "unfused": (5.0, "ok", ""), "mha": (None, "n/a: no grouped heads", ""),
               "attention": (3.0, "ok", "*")}
    line = row(causal, list(DEFAULT_CONTENDERS), results)
    check("row: ratios and a missing contender", "2.50" in line and "1.50" in line and " n/a" in line and "3.000*" in line)
    check("row lines up with the header", len(line) == len(header(list(DEFAULT_CONTENDERS))))
    check("ortflash-tf32: float32 only, with its config entry",
          ortflash_tf32(case, *make_data(case)) is None and
          ortflash_tf32(causal, *make_data(causal)).config == {"ortflash.cuda.float32_tensor_cores": "3"})
    args = parse(["--provider", "cpu", "--lib", "x", "--scenarios", "decode", "--decode-seqlens", "64"])
    check("decode cases: 32:32 and 32:8, B 1 and 8",
          [(c.q_heads, c.kv_heads, c.batch, c.kv_len) for c in cases(args)] ==
          [(32, 32, 1, 64), (32, 32, 8, 64), (32, 8, 1, 64), (32, 8, 8, 64)])
    args = parse(["--lib", "x", "--scenarios", "encoder", "--seqlens", "512", "--shapes", "12x64"])
    check("CUDA defaults: float16, 16k tokens", [(c.dtype, c.batch) for c in cases(args)] == [("float16", 32)])
    args = parse(["--lib", "x", "--scenarios", "causal", "--seqlens", "512", "--shapes", "32:8x128"])
    check("grouped prefill shapes", [(c.q_heads, c.kv_heads, c.head_dim) for c in cases(args)] == [(32, 8, 128)])
    print(f"self-test passed: {len(checks)} checks")
    return EXIT_PASS


if __name__ == "__main__":
    sys.exit(main())
