#!/usr/bin/env python3
"""The op and rewritten models through ONNX Runtime's CUDA execution provider against its CPU provider,
from Python (no .NET): what tests/OrtFlash.Tests/CustomOp/FlashAttentionCudaTests.cs checks, for a GPU
machine that has python3, numpy and the onnxruntime package but no .NET.

    python3 benchmarks/cuda/ort_cuda_check.py [--dir .ort-gpu] [--lib PATH] [--providers cuda|cpu]
                                              [--only ops|models] [--quick] [--filter GLOB]... [--no-cpu-half]

Needs numpy and onnxruntime; onnx is optional. The op library is registered with
SessionOptions.register_custom_ops_library: --lib, else DIR/libortflash.so, else DIR/libortflash.so.xz
(unpacked into a temporary folder). It must be a build with the CUDA kernels (prepare_ort_models.sh checks).

ops: one FlashAttention node per case and type (float32, float16, bfloat16; float32 on CUDA, which runs prefill
on the 3xTF32 tensor-core kernel by default, also with ORTFLASH_CUDA_FLOAT32_TENSOR_CORES=0, the tiled SIMT
kernel, as op:CASE:float32:simt), the cases of
FlashAttentionCudaTests plus both causal alignments, a padding keep mask, grouped-query decoding, rows with
no visible key ("zero" and "nan") and rows masked only by the type's lowest finite bias. The models are
built with onnx.helper when onnx is importable, else read from ort_models/ beside this script (the same
models, committed; --write-op-models DIR writes them). bfloat16 models take and return float32 and Cast
around the op, since numpy has no bfloat16; their inputs are rounded to bfloat16 first. Inputs are
generated with fixed seeds. Each output, on the CPU provider and on the CUDA provider, must match a
float64 reference within the bounds of Tolerance.cs (|d| <= atol * max|V| + rtol * |ref|; NaN only where
the reference has NaN), and the two providers must agree on NaN placement.

models: the bundled models rewritten by the CLI, as prepare_ort_models.sh left them in DIR
(manifest.json, models/, inputs/*.npz). For every input set the ORIGINAL model on the CPU provider is
the reference; the rewritten model on the CUDA provider must match it within ComparisonTolerance.cs
(rtol and atol * max|expected|: 1e-4 float32, 1e-2 float16). Also printed, not judged: the rewritten
model on the CPU provider and the original on the CUDA provider, against the same reference.

Where the op ran: every CUDA session profiles its runs, and every FlashAttention node must have run on
CUDAExecutionProvider (the profile's Node events name the provider). Op sessions also set
session.disable_cpu_ep_fallback=1, so that a node the CUDA provider cannot take fails the session instead
of moving to the CPU. A session that ONNX Runtime created on the CPU after all (its Python binding falls
back when the CUDA provider cannot be created) is an error, never a pass.

--providers cpu runs the same comparisons with the CPU provider as the 'actual' side (a check of this
script and of the library's CPU kernels). With --providers cuda and no usable CUDA provider, the CPU half
(op against the reference, rewritten against original, on the CPU) still runs unless --no-cpu-half, and
the exit status is 3.

Exit status: 0 every comparison passed; 1 a mismatch, a node off CUDA, or an error; 2 bad arguments or
missing files; 3 skipped: no onnxruntime module, or no usable CUDAExecutionProvider (a line starting with
'SKIP:' says why).

Preparation, on the development machine (prepare_ort_models.sh calls these with Debian's python3, which
has onnx): --write-op-models DIR; --write-manifest DIR ENTRY... (inputs and manifest.json for the rewritten
models in DIR/models). --self-test checks the reference, tolerances, profile parsing, skip logic, the
committed op models and the input generator, without onnxruntime (CTest ort_cuda_check_self_test).
"""

import argparse
import fnmatch
import glob
import json
import lzma
import os
import shutil
import sys
import tempfile
import zlib

try:
    import numpy as np
except ImportError as missing:  # exit 3 as for a missing onnxruntime: the machine lacks it, the code is not wrong
    print(f"SKIP: no numpy module\n  ({missing}; python {sys.version.split()[0]} at {sys.executable})")
    sys.exit(3)

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_SKIP = 0, 1, 2, 3
DOMAIN = "com.ortflash"
TYPES = ("float32", "float16", "bfloat16")
FLOAT32_SWITCH = "ORTFLASH_CUDA_FLOAT32_TENSOR_CORES"  # read by the op library on every call
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
OP_MODEL_DIR = os.path.join(HERE, "ort_models")
CUDA_EP, CPU_EP = "CUDAExecutionProvider", "CPUExecutionProvider"

# Tolerance.cs: (absolute, as a share of max|V|; relative).
OP_TOLERANCE = {"float32": (2e-5, 1e-4), "float16": (2e-3, 2e-3), "bfloat16": (1.6e-2, 1.6e-2)}
# ComparisonTolerance.cs: (relative; absolute, as a share of the output's largest finite |expected|).
MODEL_TOLERANCE = {"float32": (1e-4, 1e-4), "float64": (1e-4, 1e-4), "float16": (1e-2, 1e-2), "bfloat16": (5e-2, 5e-2)}
# The most negative finite value of each type: a bias of it masks a key only numerically.
LOWEST = {"float32": float(np.finfo(np.float32).min), "float16": -65504.0,
          "bfloat16": float(np.array([0xFF7F0000], dtype=np.uint32).view(np.float32)[0])}


# ---- Numbers ----------------------------------------------------------------------------------------------

def round_bf16(x):
    """float32 -> the nearest bfloat16 (ties to even), returned as float32 (finite inputs)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def round_to(x, dtype):
    """Values of type dtype, as float32 (what the op sees)."""
    if dtype == "float16":
        return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        return round_bf16(x)
    return np.asarray(x, dtype=np.float32)


def feed_array(x, dtype):
    """What a model of this type takes for a float input: float16, or float32 (bfloat16 models Cast inside)."""
    return x.astype(np.float16) if dtype == "float16" else x.astype(np.float32)


# ---- The op cases -----------------------------------------------------------------------------------------

class OpCase:
    def __init__(self, name, q, k, v, seed, bias=None, keep=None, causal=0, softcap=0.0, masked_rows=None,
                 scale=None, keep_probability=0.8, pattern=None):
        self.name, self.q, self.k, self.v, self.seed = name, q, k, v, seed
        self.bias, self.keep, self.causal, self.softcap = bias, keep, causal, softcap
        self.masked_rows, self.scale, self.keep_probability, self.pattern = masked_rows, scale, keep_probability, pattern

    def __repr__(self):
        return self.name


def _pattern_padding(case, bias, keep, lowest):
    """Batch entry b keeps the first kv - b * kv // 3 keys (right padding), in every row."""
    kv = keep.shape[-1]
    for b in range(keep.shape[0]):
        keep[b, ..., kv - b * kv // 3:] = False


def _pattern_empty_rows(case, bias, keep, lowest):
    """Two more rows (3 and 17) with no visible key, besides those causal alignment 2 leaves empty."""
    keep[..., 3, :] = False
    keep[..., 17, :] = False


def _pattern_bias_rows(case, bias, keep, lowest):
    """Rows masked only by the type's lowest finite bias: rows 0 and 5 wholly, row 9 on every other key."""
    bias[..., 0, :] = lowest
    bias[..., 5, :] = lowest
    bias[..., 9, ::2] = lowest


OP_CASES = (
    # FlashAttentionCudaTests.Cases
    OpCase("Hdim64_Bias", [2, 8, 300, 64], [2, 8, 300, 64], [2, 8, 300, 64], 1, bias=[2, 1, 1, 300]),
    OpCase("Hdim128_Gqa_Causal", [1, 8, 257, 128], [1, 2, 257, 128], [1, 2, 257, 128], 2, causal=1),
    OpCase("Decode", [1, 4, 1, 128], [1, 4, 4099, 128], [1, 4, 4099, 128], 3, causal=2, keep=[1, 1, 1, 4099]),
    OpCase("Hdim80_Softcap", [2, 2, 33, 80], [2, 2, 47, 80], [2, 2, 47, 80], 4, softcap=5.0, masked_rows="nan",
           keep=[2, 1, 33, 47]),
    OpCase("Rank3_Hdim256", [3, 17, 256], [3, 29, 256], [3, 29, 256], 5, bias=[3, 17, 29]),
    OpCase("OddHeadDims", [1, 2, 40, 7], [1, 2, 33, 7], [1, 2, 33, 12], 6, causal=2),  # rows 0..6 see no key: zero
    # More: grouped decoding over a padded cache, both causal alignments with several tiles, empty rows.
    OpCase("Decode_Gqa_Padded", [2, 32, 1, 128], [2, 8, 1000, 128], [2, 8, 1000, 128], 7, causal=2,
           keep=[2, 1, 1, 1000], pattern=_pattern_padding),
    OpCase("Causal_BottomRight_Cache", [1, 4, 100, 64], [1, 4, 300, 64], [1, 4, 300, 64], 8, causal=2),
    OpCase("Causal_TopLeft_Padded_Scale", [2, 4, 130, 64], [2, 4, 130, 64], [2, 4, 130, 64], 9, causal=1,
           keep=[2, 1, 1, 130], pattern=_pattern_padding, scale=0.3),
    OpCase("MaskedRows_Nan", [1, 2, 40, 64], [1, 2, 24, 64], [1, 2, 24, 64], 10, causal=2, masked_rows="nan",
           keep=[1, 2, 40, 24], pattern=_pattern_empty_rows),
    OpCase("MaskedRows_Zero", [1, 2, 40, 64], [1, 2, 24, 64], [1, 2, 24, 64], 11, causal=2, masked_rows="zero",
           keep=[1, 2, 40, 24], pattern=_pattern_empty_rows),
    OpCase("LowestBias_Rows", [1, 2, 50, 64], [1, 2, 70, 64], [1, 2, 70, 64], 12, bias=[1, 1, 50, 70],
           pattern=_pattern_bias_rows),
)
QUICK_CASES = ("Hdim64_Bias", "Hdim128_Gqa_Causal", "Decode", "MaskedRows_Nan", "LowestBias_Rows")


def case_data(case, dtype):
    """Q, K, V, bias, keep with fixed seeds, rounded to dtype (float32 arrays; keep bool)."""
    rng = np.random.default_rng(case.seed)

    def uniform(shape):
        return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)

    q, k, v = uniform(case.q), uniform(case.k), uniform(case.v)
    bias = uniform(case.bias) if case.bias else None
    keep = rng.random(case.keep) < case.keep_probability if case.keep else None
    if case.pattern:
        case.pattern(case, bias, keep, LOWEST[dtype])
    q, k, v = (round_to(x, dtype) for x in (q, k, v))
    bias = round_to(bias, dtype) if bias is not None else None
    return q, k, v, bias, keep


def reference(case, q, k, v, bias, keep):
    """The op's contract (DESIGN.md) in float64, except that the bias is added to the scores in float32."""
    rank3 = q.ndim == 3
    if rank3:
        q, k, v = q[:, None], k[:, None], v[:, None]
        bias = bias[:, None] if bias is not None and bias.ndim == 3 else bias
        keep = keep[:, None] if keep is not None and keep.ndim == 3 else keep
    batch, q_heads, q_len, head_dim = q.shape
    group = q_heads // k.shape[1]
    kv_len = k.shape[2]
    k64 = np.repeat(k.astype(np.float64), group, axis=1)
    v64 = np.repeat(v.astype(np.float64), group, axis=1)
    scale = case.scale if case.scale is not None else 1.0 / np.sqrt(head_dim)
    scores = scale * np.matmul(q.astype(np.float64), np.swapaxes(k64, -1, -2))
    if case.softcap:
        scores = case.softcap * np.tanh(scores / case.softcap)
    if bias is not None:
        scores = (scores.astype(np.float32) + bias.astype(np.float32)).astype(np.float64)
    visible = np.ones((batch, q_heads, q_len, kv_len), dtype=bool)
    if keep is not None:
        visible &= np.broadcast_to(keep, visible.shape)
    if case.causal:
        row = np.arange(q_len)[:, None]
        limit = row if case.causal == 1 else row + kv_len - q_len
        visible &= np.arange(kv_len)[None, :] <= limit
    any_visible = visible.any(axis=-1, keepdims=True)
    scores = np.where(visible, scores, -np.inf)
    top = np.where(any_visible, scores.max(axis=-1, keepdims=True), 0.0)
    weights = np.where(visible, np.exp(scores - top), 0.0)
    weights /= np.where(any_visible, weights.sum(axis=-1, keepdims=True), 1.0)
    out = np.matmul(weights, v64)
    out = np.where(any_visible, out, np.nan if case.masked_rows == "nan" else 0.0)
    return out[:, 0] if rank3 else out


def op_check(actual, expected, value_scale, dtype):
    """Tolerance.cs: (ok, worst |d| / allowed, message)."""
    absolute, relative = OP_TOLERANCE[dtype]
    a = np.asarray(actual, dtype=np.float64).ravel()
    e = np.asarray(expected, dtype=np.float64).ravel()
    if a.shape != e.shape:
        return False, np.inf, f"output has {a.size} elements, the reference {e.size}"
    nan = np.isnan(e)
    wrong_nan = np.flatnonzero(nan & ~np.isnan(a))
    if wrong_nan.size:
        return False, np.inf, f"element {wrong_nan[0]}: expected NaN, got {a[wrong_nan[0]]!r}"
    bad = np.flatnonzero(~nan & ~np.isfinite(a))
    if bad.size:
        return False, np.inf, f"element {bad[0]}: expected {e[bad[0]]!r}, got {a[bad[0]]!r}"
    allowed = absolute * max(1e-3, value_scale) + relative * np.abs(np.where(nan, 0.0, e))
    diff = np.where(nan, 0.0, np.abs(a - e))
    ratio = diff / allowed
    worst = int(np.argmax(ratio)) if ratio.size else 0
    worst_ratio = float(ratio[worst]) if ratio.size else 0.0
    if worst_ratio > 1.0:
        return False, worst_ratio, (f"element {worst} is {a[worst]!r}, reference {e[worst]!r} "
                                    f"(|d| {diff[worst]:.3g} > allowed {allowed[worst]:.3g})")
    return True, worst_ratio, ""


# ---- Op models (onnx.helper, or the committed copies) ---------------------------------------------------------

def op_model_name(case, dtype):
    return f"{case.name}_{dtype}.onnx"


def build_op_model(case, dtype):
    """One FlashAttention node; graph inputs Q, K, V (, bias) (, keep), output Y; ranks only, no sizes."""
    from onnx import TensorProto, helper

    outer = TensorProto.FLOAT16 if dtype == "float16" else TensorProto.FLOAT

    def value(name, elem, rank):
        return helper.make_tensor_value_info(name, elem, [f"{name}_d{i}" for i in range(rank)])

    inputs = [value("Q", outer, len(case.q)), value("K", outer, len(case.k)), value("V", outer, len(case.v))]
    float_inputs = ["Q", "K", "V"]
    if case.bias:
        inputs.append(value("bias", outer, len(case.bias)))
        float_inputs.append("bias")
    if case.keep:
        inputs.append(value("keep", TensorProto.BOOL, len(case.keep)))
    nodes = []
    names = {}
    for name in float_inputs:
        if dtype == "bfloat16":
            nodes.append(helper.make_node("Cast", [name], [name + "_bf16"], name=name + "_to_bf16",
                                          to=TensorProto.BFLOAT16))
            names[name] = name + "_bf16"
        else:
            names[name] = name
    op_inputs = [names["Q"], names["K"], names["V"]]
    if case.bias or case.keep:
        op_inputs.append(names["bias"] if case.bias else "")
    if case.keep:
        op_inputs.append("keep")
    attributes = {}
    if case.scale is not None:
        attributes["scale"] = float(case.scale)
    if case.causal:
        attributes["causal"] = int(case.causal)
    if case.softcap:
        attributes["softcap"] = float(case.softcap)
    if case.masked_rows is not None:
        attributes["masked_rows"] = case.masked_rows
    op_output = "Y_bf16" if dtype == "bfloat16" else "Y"
    nodes.append(helper.make_node("FlashAttention", op_inputs, [op_output], name="attention", domain=DOMAIN,
                                  **attributes))
    if dtype == "bfloat16":
        nodes.append(helper.make_node("Cast", [op_output], ["Y"], name="Y_to_float", to=TensorProto.FLOAT))
    graph = helper.make_graph(nodes, f"flash_attention_{case.name}_{dtype}", inputs,
                              [value("Y", outer, len(case.q))])
    model = helper.make_model(graph, producer_name="ortflash.ort_cuda_check", ir_version=8,
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    return model.SerializeToString()


def build_probe_model():
    """Y = X + X: a model with standard ops only, to tell a CUDA provider that cannot start from an op failure."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Add", ["X", "X"], ["Y"], name="add")], "probe",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, producer_name="ortflash.ort_cuda_check", ir_version=8,
                              opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def have_onnx():
    try:
        import onnx  # noqa: F401
        return True
    except ImportError:
        return False


def op_model_bytes(case, dtype, use_onnx):
    if use_onnx:
        return build_op_model(case, dtype)
    with open(os.path.join(OP_MODEL_DIR, op_model_name(case, dtype)), "rb") as f:
        return f.read()


def probe_model_bytes(use_onnx):
    if use_onnx:
        return build_probe_model()
    with open(os.path.join(OP_MODEL_DIR, "probe_add.onnx"), "rb") as f:
        return f.read()


def write_op_models(directory):
    os.makedirs(directory, exist_ok=True)
    for old in glob.glob(os.path.join(directory, "*.onnx")):
        os.remove(old)
    count = 0
    for case in OP_CASES:
        for dtype in TYPES:
            with open(os.path.join(directory, op_model_name(case, dtype)), "wb") as f:
                f.write(build_op_model(case, dtype))
            count += 1
    with open(os.path.join(directory, "probe_add.onnx"), "wb") as f:
        f.write(build_probe_model())
    print(f"wrote {count} op models and probe_add.onnx to {directory}")


# ---- Inputs for the bundled models (the rules of ModelInputGenerator.cs; needs onnx) ------------------------

# name, sequence (new tokens), past (cached tokens); decoder tokens max(1, sequence - 2); batch 2, entry 1 padded.
# The bundled models have 64 positions (Whisper's decoder 32): past + sequence stays within 64, and a set that the
# original cannot run (checked at preparation where ONNX Runtime is at hand) is left out.
INPUT_SETS = (("s7", 7, 3), ("s33", 33, 3), ("s61p3", 61, 3), ("decode", 1, 60))
QUICK_INPUT_SETS = ("s7", "s61p3")
FLOAT_TYPES = {1: np.float32, 10: np.float16, 11: np.float64}
INT_TYPES = {6: np.int32, 7: np.int64}
PASSTHROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"}


def _dimension_role(symbol):
    s = symbol.lower()
    if not s:
        return None
    if "batch" in s or symbol in ("N", "n", "B", "b", "bs"):
        return "batch"
    if "total" in s or ("past" in s and "+" in s):
        return "total"
    if "past" in s or "cache" in s:
        return "past"
    if "decoder" in s:
        return "decoder"
    return "sequence" if "encoder" in s else None


def _input_role(name, elem, rank):
    lower = name.lower()
    if "mask" in lower:
        return "mask"
    if elem in FLOAT_TYPES:
        return "past" if any(w in lower for w in ("past", "cache", "present")) else "features"
    if elem == 9:
        return "flag"
    if "position" in lower:
        return "positions"
    if rank <= 1 and any(w in lower for w in ("length", "lens", "seqlen")):
        return "length"
    return "ids"


def _embedding_rows(model, name):
    """Rows of the embedding table that input `name` indexes (through Cast/Reshape/...), or None."""
    initializers = {t.name: t for t in model.graph.initializer}
    consumers = {}
    for node in model.graph.node:
        for value in node.input:
            consumers.setdefault(value, []).append(node)
    frontier = [name]
    for _ in range(4):
        following = []
        for value in frontier:
            for node in consumers.get(value, []):
                if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == value \
                        and node.input[0] in initializers and initializers[node.input[0]].dims:
                    return int(initializers[node.input[0]].dims[0])
                if node.op_type in PASSTHROUGH and node.input and node.input[0] == value:
                    following.extend(node.output[:1])
        frontier = following
    return None


def generate_model_inputs(model, sequence, past, batch=2, seed=1234):
    """{input name: array} for an onnx ModelProto, and a description per input."""
    graph_inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    specs = []
    for value in graph_inputs:
        tensor = value.type.tensor_type
        dims = [(d.dim_param, d.dim_value if d.HasField("dim_value") else None) for d in tensor.shape.dim]
        specs.append((value.name, tensor.elem_type, dims))
    has_cache = any(_dimension_role(p) == "past" for _, _, dims in specs for p, _ in dims) or any(
        _input_role(n, e, len(d)) == "past" and len(d) >= 3 and d[-2][1] is None for n, e, d in specs)
    sizes = {"batch": batch, "sequence": sequence, "decoder": max(1, sequence - 2), "past": past,
             "total": past + sequence}
    arrays, described = {}, {}
    for name, elem, dims in specs:
        role = _input_role(name, elem, len(dims))
        shape = []
        for axis, (param, fixed) in enumerate(dims):
            if fixed is not None:
                shape.append(fixed)
                continue
            dim_role = _dimension_role(param)
            if dim_role is None:
                if role == "past" and len(dims) >= 3 and axis == len(dims) - 2:
                    dim_role = "past"
                elif axis == 0 and not (role == "positions" and len(dims) == 1):
                    dim_role = "batch"
                elif role == "mask" and has_cache and axis == len(dims) - 1:
                    dim_role = "total"
                else:
                    dim_role = "sequence"
            shape.append(sizes[dim_role])
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        if role == "mask":
            one_is_padded = "padding_mask" in name.lower()
            keep = np.ones(shape, dtype=bool)
            keys = shape[-1] if shape else 1
            if len(shape) >= 2:
                for b in range(shape[0]):
                    pad = max(0, min(keys - 1, b * max(1, keys // 3)))
                    if pad:
                        keep[b, ..., keys - pad:] = False
            mask = ~keep if one_is_padded else keep
            array = mask if elem == 9 else mask.astype(INT_TYPES.get(elem, FLOAT_TYPES.get(elem, np.int64)))
            text = "mask, padded at the end (entry b: min(T-1, b*max(1, T//3)) keys)"
        elif role in ("features", "past"):
            array = rng.uniform(-1.0, 1.0, size=shape).astype(FLOAT_TYPES[elem])
            text = "uniform in [-1, 1]"
        elif role == "ids":
            bound = _embedding_rows(model, name) or (2 if "type" in name.lower() else 16)
            array = rng.integers(0, bound, size=shape).astype(INT_TYPES[elem])
            text = f"ids in [0, {bound})"
        elif role == "positions":
            positions = shape[-1] if shape else 1
            array = (past + np.arange(int(np.prod(shape))) % positions).reshape(shape).astype(INT_TYPES[elem])
            text = f"positions from {past}"
        elif role == "length":
            length = past if "past" in name.lower() else past + sequence if "total" in name.lower() else sequence
            array = np.full(shape, length, dtype=INT_TYPES[elem])
            text = f"length {length}"
        else:
            array = np.full(shape, "cache" not in name.lower() or past > 0, dtype=bool)
            text = "flag"
        arrays[name] = array
        described[name] = f"{list(array.shape)} {array.dtype}: {text}"
    return arrays, described


def write_manifest(directory, entries, ort=None):
    """Inputs (DIR/inputs/*.npz) and DIR/manifest.json for the rewritten models in DIR/models.
    entries: 'NAME|ORIGINAL|REWRITTEN|FLAGS' (ORIGINAL relative to the repository, REWRITTEN to DIR).
    With an onnxruntime module (or ort_capi's stand-in), every input set is first run through the original on
    the CPU, and sets it fails on (more positions than the model has) are left out."""
    import onnx

    def runs(path, arrays):
        if ort is None:
            return ""
        try:
            session = ort.InferenceSession(path, sess_options=quiet_options(), providers=[CPU_EP])
            session.run(None, arrays)
            return ""
        except Exception as error:
            return first_line(error)

    def quiet_options():
        options = ort.SessionOptions()
        options.log_severity_level = 4
        return options

    os.makedirs(os.path.join(directory, "inputs"), exist_ok=True)
    models = []
    for entry in entries:
        parts = entry.split("|")
        if len(parts) != 4:
            raise SystemExit(f"--write-manifest: '{entry}' is not NAME|ORIGINAL|REWRITTEN|FLAGS")
        name, original, rewritten, flags = parts
        original_model = onnx.load(os.path.join(REPO, original))
        rewritten_model = onnx.load(os.path.join(directory, rewritten))
        fused = sum(1 for n in rewritten_model.graph.node if n.op_type == "FlashAttention" and n.domain == DOMAIN)
        if fused == 0:
            raise SystemExit(f"--write-manifest: {rewritten} has no FlashAttention node")
        output_types = {o.name: o.type.tensor_type.elem_type for o in original_model.graph.output}
        sets, seen = [], set()
        for set_name, sequence, past in INPUT_SETS:
            arrays, described = generate_model_inputs(original_model, sequence, past)
            shapes = tuple(sorted((k, a.shape) for k, a in arrays.items()))
            if shapes in seen:  # fixed-size models (ViT): one set is enough
                continue
            has_past = any(_dimension_role(d.dim_param) == "past" for i in original_model.graph.input
                           for d in i.type.tensor_type.shape.dim)
            if set_name == "decode" and not has_past:
                continue
            seen.add(shapes)
            failure = runs(os.path.join(REPO, original), arrays)
            if failure:
                print(f"{name}: input set {set_name} left out, the original fails on it: {failure}")
                continue
            path = os.path.join("inputs", f"{name}.{set_name}.npz")
            np.savez(os.path.join(directory, path), **arrays)
            sets.append({"name": set_name, "file": path, "inputs": described})
        models.append({"name": name, "original": original, "rewritten": rewritten,
                       "rewrite_flags": [f for f in flags.split(",") if f], "fused": fused,
                       "outputs": {k: int(v) for k, v in output_types.items()}, "input_sets": sets})
        print(f"{name}: {fused} FlashAttention nodes, input sets {', '.join(s['name'] for s in sets)}")
    manifest = {"format": 1, "tolerance": "ComparisonTolerance.cs", "models": models,
                "input_sets_checked": "on the CPU with " + ort.__version__ if ort else "no"}
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


# ---- Comparing model outputs (ComparisonTolerance.cs) --------------------------------------------------------

def model_output_check(actual, expected):
    """(ok, worst |d| / allowed, message) for one output."""
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    if actual.shape != expected.shape:
        return False, np.inf, f"shape {list(actual.shape)}, expected {list(expected.shape)}"
    kind = expected.dtype.name
    if kind not in MODEL_TOLERANCE:
        same = np.array_equal(actual, expected)
        return same, 0.0 if same else np.inf, "" if same else "integer/bool output differs"
    relative, absolute = MODEL_TOLERANCE[kind]
    e = expected.astype(np.float64).ravel()
    a = actual.astype(np.float64).ravel()
    finite = np.isfinite(e)
    magnitude = float(np.max(np.abs(e[finite]))) if finite.any() else 0.0
    magnitude = magnitude if magnitude > 0 else 1.0
    same_special = (np.isnan(e) & np.isnan(a)) | (~finite & ~np.isnan(e) & (a == e))
    special_mismatch = np.flatnonzero(~finite & ~same_special)
    if special_mismatch.size:
        i = special_mismatch[0]
        return False, np.inf, f"element {i} is {a[i]!r}, expected {e[i]!r}"
    not_finite = np.flatnonzero(finite & ~np.isfinite(a))
    if not_finite.size:
        i = not_finite[0]
        return False, np.inf, f"element {i} is {a[i]!r}, expected {e[i]!r}"
    allowed = absolute * magnitude + relative * np.abs(np.where(finite, e, 0.0))
    diff = np.where(finite, np.abs(a - e), 0.0)
    ratio = diff / allowed
    worst = int(np.argmax(ratio)) if ratio.size else 0
    worst_ratio = float(ratio[worst]) if ratio.size else 0.0
    if worst_ratio > 1.0:
        return False, worst_ratio, (f"element {worst} is {a[worst]:.6g}, expected {e[worst]:.6g} "
                                    f"(|d| {diff[worst]:.3g} > allowed {allowed[worst]:.3g})")
    return True, worst_ratio, ""


# ---- Profiles ------------------------------------------------------------------------------------------------

def flash_attention_providers(events):
    """{node name: provider} of every FlashAttention kernel run in an ONNX Runtime profile's events."""
    if isinstance(events, dict):
        events = events.get("traceEvents", [])
    found = {}
    for event in events:
        name = event.get("name", "")
        args = event.get("args") or {}
        if event.get("cat") == "Node" and name.endswith("_kernel_time") and args.get("op_name") == "FlashAttention":
            found.setdefault(name[:-len("_kernel_time")], set()).add(args.get("provider", "?"))
    return found


def check_placement(found, expected_nodes, provider):
    """'' when expected_nodes FlashAttention nodes ran, all on provider; else what is wrong."""
    if len(found) < expected_nodes:
        return f"the profile shows {len(found)} FlashAttention node(s) run, expected {expected_nodes}"
    off = sorted(f"{node} on {'/'.join(sorted(p))}" for node, p in found.items() if p != {provider})
    return "" if not off else "FlashAttention off " + provider + ": " + ", ".join(off)


# ---- ONNX Runtime sessions -----------------------------------------------------------------------------------

class SessionError(Exception):
    pass


class Runtime:
    """Creates sessions with the op library registered, on CPU or CUDA, optionally profiled."""

    def __init__(self, ort, library, workdir):
        self.ort, self.library, self.workdir = ort, library, workdir
        self.profiles = 0

    def session(self, model, provider, profile=False, strict=False, register=True):
        ort = self.ort
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if register:
            options.register_custom_ops_library(self.library)
        if profile:
            self.profiles += 1
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(self.workdir, f"profile{self.profiles}")
        if provider == CUDA_EP:
            if strict:
                options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
            # TF32 off: the provider's default TF32 MatMuls around the op differ from the CPU by more than the
            # comparison allows (the first GPU run: the original float32 models did, by 1.2-3.6x), whatever the op.
            providers = [(CUDA_EP, {"device_id": "0", "use_tf32": "0"})]
        else:
            providers = [CPU_EP]
        try:
            session = ort.InferenceSession(model, sess_options=options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types
            raise SessionError(f"creating the session on {provider} failed: {first_line(error)}") from None
        got = session.get_providers()
        if not got or got[0] != provider:
            raise SessionError(f"the session was created on {', '.join(got) or 'nothing'}, not {provider} "
                               "(ONNX Runtime fell back; see its message above)")
        return session

    @staticmethod
    def run(session, feeds):
        names = {i.name for i in session.get_inputs()}
        try:
            outputs = session.run(None, {k: v for k, v in feeds.items() if k in names})
        except Exception as error:
            raise SessionError(f"run failed: {first_line(error)}") from None
        return dict(zip([o.name for o in session.get_outputs()], outputs))

    @staticmethod
    def placement(session):
        path = session.end_profiling()
        try:
            with open(path) as f:
                return flash_attention_providers(json.load(f))
        finally:
            if path and os.path.exists(path):
                os.remove(path)


def first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:400]


# ---- The checks ---------------------------------------------------------------------------------------------

class Tally:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def record(self, ok, line):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(("PASS " if ok else "FAIL ") + line, flush=True)


def selected(label, patterns):
    return not patterns or any(fnmatch.fnmatchcase(label, p) for p in patterns)


def check_ops(runtime, actual_provider, use_onnx, quick, patterns, tally):
    sides = CPU_EP if actual_provider == CPU_EP else f"{actual_provider} and on {CPU_EP}"
    print(f"== ops: FlashAttention on {sides} against the float64 reference (Tolerance.cs); models "
          f"{'built with onnx.helper' if use_onnx else 'from ort_models/'}", flush=True)
    for case in OP_CASES:
        if quick and case.name not in QUICK_CASES:
            continue
        for dtype in TYPES:
            # float32 on CUDA once more on the tiled SIMT kernel (prefill runs on the 3xTF32 kernel by default).
            variants = [None] + (["0"] if dtype == "float32" and actual_provider != CPU_EP else [])
            for variant in variants:
                label = f"op:{case.name}:{dtype}" + (":simt" if variant else "")
                if not selected(label, patterns):
                    continue
                before = os.environ.get(FLOAT32_SWITCH)
                if variant:
                    os.environ[FLOAT32_SWITCH] = variant
                try:
                    tally.record(*check_one_op(runtime, actual_provider, use_onnx, case, dtype, label))
                except SessionError as error:
                    tally.record(False, f"{label}: {error}")
                finally:
                    if before is None:
                        os.environ.pop(FLOAT32_SWITCH, None)
                    else:
                        os.environ[FLOAT32_SWITCH] = before


def check_one_op(runtime, actual_provider, use_onnx, case, dtype, label):
    model = op_model_bytes(case, dtype, use_onnx)
    q, k, v, bias, keep = case_data(case, dtype)
    feeds = {"Q": feed_array(q, dtype), "K": feed_array(k, dtype), "V": feed_array(v, dtype)}
    if bias is not None:
        feeds["bias"] = feed_array(bias, dtype)
    if keep is not None:
        feeds["keep"] = keep
    expected = reference(case, q, k, v, bias, keep)
    value_scale = float(np.max(np.abs(v))) if v.size else 1.0
    cpu_only = actual_provider == CPU_EP
    cpu_session = runtime.session(model, CPU_EP, profile=cpu_only)
    cpu = runtime.run(cpu_session, feeds)["Y"]
    ok_cpu, ratio_cpu, why_cpu = op_check(cpu, expected, value_scale, dtype)
    text = f"{label}: cpu {ratio_cpu:.3f}"
    if cpu_only:  # the profile's reading of where the node ran, checked here too
        where = check_placement(runtime.placement(cpu_session), 1, CPU_EP)
        problems = [p for p in (why_cpu and "cpu " + why_cpu, where) if p]
        return ok_cpu and not where, text + " (|d|/allowed, worst)" + "".join(f" -- {p}" for p in problems)
    session = runtime.session(model, CUDA_EP, profile=True, strict=True)
    cuda = runtime.run(session, feeds)["Y"]
    where = check_placement(runtime.placement(session), 1, CUDA_EP)
    ok_cuda, ratio_cuda, why_cuda = op_check(cuda, expected, value_scale, dtype)
    nan_agree = np.array_equal(np.isnan(np.asarray(cpu, np.float64)), np.isnan(np.asarray(cuda, np.float64)))
    both = np.isfinite(np.asarray(cpu, np.float64)) & np.isfinite(np.asarray(cuda, np.float64))
    spread = float(np.max(np.abs(cpu[both].astype(np.float64) - cuda[both].astype(np.float64)))) if both.any() else 0.0
    text += f", cuda {ratio_cuda:.3f} (|d|/allowed, worst), max|cuda-cpu| {spread:.3g}"
    problems = [p for p in (why_cpu and "cpu " + why_cpu, why_cuda and "cuda " + why_cuda, where,
                            "" if nan_agree else "cpu and cuda put NaN in different places") if p]
    return ok_cpu and ok_cuda and not where and nan_agree, text + "".join(f" -- {p}" for p in problems)


def check_models(runtime, actual_provider, directory, quick, patterns, tally):
    manifest_path = os.path.join(directory, "manifest.json")
    with open(manifest_path) as f:
        manifest = json.load(f)
    shown = "; also shown, not judged: rewritten on CPU, original on CUDA" if actual_provider == CUDA_EP else ""
    print(f"== models: rewritten on {actual_provider} against the original on {CPU_EP} (ComparisonTolerance.cs)"
          f"{shown}", flush=True)
    for entry in manifest["models"]:
        label = f"model:{entry['name']}"
        if not selected(label, patterns):
            continue
        if quick and entry["name"] not in QUICK_MODELS:
            continue
        try:
            check_one_model(runtime, actual_provider, directory, entry, quick, label, tally)
        except SessionError as error:
            tally.record(False, f"{label}: {error}")


QUICK_MODELS = ("bert-opset17", "gpt2_past-opset17", "llama-opset17-fp16", "t5-opset17",
                "llama-opset17-fp16+causal-padded-rows")


def check_one_model(runtime, actual_provider, directory, entry, quick, label, tally):
    original = os.path.join(REPO, entry["original"])
    rewritten = os.path.join(directory, entry["rewritten"])
    expected_session = runtime.session(original, CPU_EP, register=False)
    on_cuda = actual_provider == CUDA_EP
    actual_session = runtime.session(rewritten, actual_provider, profile=True)
    # Shown beside the verdict, never part of it: a failure there is printed as such.
    def aside(make):
        try:
            return make()
        except SessionError as error:
            return str(error)

    rewritten_cpu = aside(lambda: runtime.session(rewritten, CPU_EP)) if on_cuda else None
    original_cuda = aside(lambda: runtime.session(original, CUDA_EP, register=False)) if on_cuda else None
    results = []
    for input_set in entry["input_sets"]:
        if quick and input_set["name"] not in QUICK_INPUT_SETS:
            continue
        with np.load(os.path.join(directory, input_set["file"])) as data:
            feeds = {k: data[k] for k in data.files}
        expected = runtime.run(expected_session, feeds)
        actual = runtime.run(actual_session, feeds)
        side = {name: session if session is None or isinstance(session, str)
                else aside(lambda: runtime.run(session, feeds))
                for name, session in (("rewritten-cpu", rewritten_cpu), ("original-cuda", original_cuda))}
        results.append((input_set["name"], expected, actual, side))
    where = check_placement(runtime.placement(actual_session), entry["fused"], actual_provider)
    for set_name, expected, actual, side in results:
        ok, worst, problems = True, 0.0, []
        for name, value in expected.items():
            if name not in actual:
                ok = False
                problems.append(f"{name} missing")
                continue
            good, ratio, why = model_output_check(actual[name], value)
            worst = max(worst, ratio)
            if not good:
                ok = False
                problems.append(f"{name}: {why}")
        notes = []
        for side_name, outputs in side.items():
            if isinstance(outputs, str):
                notes.append(f"{side_name} failed: {outputs}")
            elif outputs is not None:
                ratios = [model_output_check(outputs[n], v)[1] for n, v in expected.items() if n in outputs]
                notes.append(f"{side_name} {max(ratios, default=0.0):.3f}")
        if where:
            ok = False
            problems.append(where)
        text = (f"{label}:{set_name}: {actual_provider.replace('ExecutionProvider', '').lower()} {worst:.3f} "
                f"(|d|/allowed, worst output){' [' + ', '.join(notes) + ']' if notes else ''}")
        tally.record(ok, text + "".join(f" -- {p}" for p in problems))


def cuda_problem(ort, runtime, use_onnx):
    """Why the CUDA provider cannot be used here, short and in full (('', '') when it can), tried on a model of
    standard ops."""
    available = ort.get_available_providers()
    if CUDA_EP not in available:
        return (f"onnxruntime {ort.__version__} has no {CUDA_EP}",
                f"available: {', '.join(available)}; the CPU-only package, not onnxruntime-gpu")
    if hasattr(ort, "preload_dlls"):  # CUDA and cuDNN from the nvidia-* wheels or PyTorch, where the package does that
        try:
            ort.preload_dlls()
        except Exception as error:
            print(f"note: onnxruntime.preload_dlls() failed: {first_line(error)}")
    try:
        session = runtime.session(probe_model_bytes(use_onnx), CUDA_EP, register=False)
        x = np.arange(4, dtype=np.float32)
        if not np.array_equal(session.run(None, {"X": x})[0], x + x):
            return f"{CUDA_EP} computed a wrong X + X", "a model of one Add node, without the op library"
    except (SessionError, Exception) as error:
        return f"onnxruntime {ort.__version__} lists {CUDA_EP} but cannot use it", first_line(error)
    return "", ""


def find_library(args, workdir):
    if args.lib:
        return args.lib if os.path.isfile(args.lib) else None
    plain = os.path.join(args.dir, "libortflash.so")
    if os.path.isfile(plain):
        return plain
    packed = plain + ".xz"
    if os.path.isfile(packed):
        target = os.path.join(workdir, "libortflash.so")
        with lzma.open(packed) as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink)
        return target
    return None


def load_capi(library):
    """ort_capi.py's stand-in for the onnxruntime module, over this libonnxruntime.so."""
    sys.path.insert(0, HERE)
    sys.dont_write_bytecode = True  # no __pycache__ in the source tree
    import ort_capi

    return ort_capi.load(library)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="exit status: 0 passed; 1 a mismatch, a node off the provider or an "
                                     "error; 2 bad arguments or missing files; 3 skipped (no onnxruntime module, or no "
                                     "usable CUDAExecutionProvider)")
    parser.add_argument("--dir", default=os.path.join(REPO, ".ort-gpu"),
                        help="what prepare_ort_models.sh wrote (default: .ort-gpu in the repository)")
    parser.add_argument("--lib", help="the op library (default: DIR/libortflash.so, else DIR/libortflash.so.xz)")
    parser.add_argument("--providers", choices=("cuda", "cpu"), default="cuda",
                        help="the provider under test (default cuda; cpu: a check of the CPU side and of this script)")
    parser.add_argument("--only", choices=("ops", "models"), help="only the op cases, or only the models")
    parser.add_argument("--quick", action="store_true", help=f"op cases {', '.join(QUICK_CASES)}; "
                        f"models {', '.join(QUICK_MODELS)} on input sets {', '.join(QUICK_INPUT_SETS)}")
    parser.add_argument("--filter", action="append", default=[], metavar="GLOB",
                        help="only checks whose label matches, e.g. 'op:Decode*' or 'model:llama*' (repeatable)")
    parser.add_argument("--no-cpu-half", action="store_true",
                        help="without a usable CUDA provider, skip at once instead of running the CPU comparisons")
    parser.add_argument("--ort-capi", metavar="LIBONNXRUNTIME",
                        help="instead of the onnxruntime module, ort_capi.py's stand-in over this libonnxruntime.so's "
                        "C API (CPU provider only; for checking this script where only the NuGet package is)")
    parser.add_argument("--self-test", action="store_true", help="check this script without onnxruntime")
    parser.add_argument("--write-op-models", metavar="DIR", help="write the op models (needs onnx) and exit")
    parser.add_argument("--write-manifest", metavar="DIR",
                        help="write inputs and manifest.json for ENTRY... 'NAME|ORIGINAL|REWRITTEN|FLAGS' (needs onnx)")
    parser.add_argument("entries", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.entries and not args.write_manifest:
        parser.error(f"unexpected arguments: {' '.join(args.entries)}")
    if args.write_manifest and not args.entries:
        parser.error("--write-manifest needs at least one NAME|ORIGINAL|REWRITTEN|FLAGS entry")
    return args


def main(argv=None, ort_module=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.self_test:
        return self_test()
    if args.write_op_models:
        write_op_models(args.write_op_models)
        return EXIT_PASS
    if args.write_manifest:
        write_manifest(args.write_manifest, args.entries, load_capi(args.ort_capi) if args.ort_capi else None)
        return EXIT_PASS

    ort = ort_module
    if ort is None and args.ort_capi:
        ort = load_capi(args.ort_capi)
    if ort is None:
        try:
            import onnxruntime as ort
        except ImportError as error:
            print(f"SKIP: no onnxruntime module\n  ({first_line(error)}; python {sys.version.split()[0]} at "
                  f"{sys.executable})")
            return EXIT_SKIP
    use_onnx = have_onnx()
    run_models = args.only != "ops"
    if run_models and not os.path.isfile(os.path.join(args.dir, "manifest.json")):
        if args.only == "models":
            print(f"error: no {os.path.join(args.dir, 'manifest.json')} (run benchmarks/cuda/prepare_ort_models.sh)",
                  file=sys.stderr)
            return EXIT_USAGE
        print(f"note: no {os.path.join(args.dir, 'manifest.json')}: the models are left out")
        run_models = False
    if not use_onnx and not os.path.isdir(OP_MODEL_DIR):
        print(f"error: no onnx module and no {OP_MODEL_DIR}", file=sys.stderr)
        return EXIT_USAGE

    workdir = tempfile.mkdtemp(prefix="ortflash-ort-check-")
    try:
        library = find_library(args, workdir)
        if library is None:
            print(f"error: no op library ({args.lib or os.path.join(args.dir, 'libortflash.so[.xz]')})",
                  file=sys.stderr)
            return EXIT_USAGE
        runtime = Runtime(ort, library, workdir)
        print(f"onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())}); numpy {np.__version__}; "
              f"op library {library}")
        actual = CUDA_EP if args.providers == "cuda" else CPU_EP
        skip_reason, skip_detail = cuda_problem(ort, runtime, use_onnx) if actual == CUDA_EP else ("", "")
        if skip_reason:
            print(f"SKIP: {skip_reason}\n  ({skip_detail})", flush=True)
            if args.no_cpu_half:
                return EXIT_SKIP
            print("the CPU half still runs: op on CPU against the reference, rewritten against original on CPU")
            actual = CPU_EP
        tally = Tally()
        if args.only != "models":
            check_ops(runtime, actual, use_onnx, args.quick, args.filter, tally)
        if run_models:
            check_models(runtime, actual, args.dir, args.quick, args.filter, tally)
        print(f"ort_cuda_check: {tally.passed} passed, {tally.failed} failed, {tally.skipped} skipped"
              f"{' (on ' + actual + ')' if actual == CPU_EP else ''}")
        if tally.failed:
            return EXIT_FAIL
        if skip_reason:
            print(f"SKIP: {skip_reason} (the CPU half passed)")
            return EXIT_SKIP
        return EXIT_PASS if tally.passed else EXIT_FAIL
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---- Self-test (no onnxruntime; onnx where importable) -------------------------------------------------------

def self_test():
    checks = []

    def check(name, condition):
        checks.append(name)
        if not condition:
            raise SystemExit(f"self-test failed: {name}")

    # Arguments.
    args = parse_args([])
    check("defaults", args.providers == "cuda" and args.only is None and args.dir.endswith(".ort-gpu"))
    args = parse_args(["--providers", "cpu", "--only", "ops", "--filter", "op:Decode*", "--quick"])
    check("options parsed", args.providers == "cpu" and args.only == "ops" and args.filter == ["op:Decode*"])
    for bad in (["--providers", "rocm"], ["--only", "x"], ["stray"], ["--write-manifest", "d"]):
        saved, sys.stderr = sys.stderr, open(os.devnull, "w")
        try:
            parse_args(bad)
            check(f"{bad} rejected", False)
        except SystemExit as e:
            check(f"{bad} rejected", e.code == 2)
        finally:
            sys.stderr.close()
            sys.stderr = saved

    # bfloat16 rounding: ties to even, and the lowest finite value.
    x = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -2.5, 1.0 + 2 ** -9], dtype=np.float32)
    check("bf16 rounding", np.array_equal(round_bf16(x), np.array([1.0, 1.0, 1.0 + 2 ** -6, -2.5, 1.0], np.float32)))
    check("bf16 lowest", LOWEST["bfloat16"] == -3.3895313892515355e38 and round_bf16(np.float32(LOWEST["bfloat16"]))
          == np.float32(LOWEST["bfloat16"]))

    # The reference against a plain loop on a small case with every feature.
    case = OpCase("t", [2, 4, 5, 3], [2, 2, 7, 3], [2, 2, 7, 2], 99, bias=[2, 1, 5, 7], keep=[2, 1, 1, 7], causal=2,
                  softcap=2.0, masked_rows="nan", keep_probability=0.7)
    q, k, v, bias, keep = case_data(case, "float32")
    keep[1, 0, 0, :] = False
    out = reference(case, q, k, v, bias, keep)
    loop = np.zeros(out.shape)
    for b in range(2):
        for h in range(4):
            for i in range(5):
                s = [(case.softcap * np.tanh(np.dot(q[b, h, i], k[b, h // 2, j]) / np.sqrt(3) / case.softcap)
                      + bias[b, 0, i, j], j) for j in range(7) if keep[b, 0, 0, j] and j <= i + 2]
                if not s:
                    loop[b, h, i] = np.nan
                    continue
                top = max(t for t, _ in s)
                w = [(np.exp(t - top), j) for t, j in s]
                total = sum(p for p, _ in w)
                loop[b, h, i] = sum(p * v[b, h // 2, j] for p, j in w) / total
    check("reference matches a plain loop (GQA, causal 2, softcap, bias, keep, NaN rows)",
          np.allclose(out, loop, rtol=1e-6, atol=1e-6, equal_nan=True) and np.isnan(out[1]).all())
    zero_case = OpCase("z", [1, 1, 4, 2], [1, 1, 2, 2], [1, 1, 2, 2], 1, causal=2)
    qz, kz, vz, _, _ = case_data(zero_case, "float32")
    outz = reference(zero_case, qz, kz, vz, None, None)
    check("causal 2 with Sq > Skv: first rows zero", np.all(outz[0, 0, :2] == 0) and np.all(outz[0, 0, 2:] != 0))
    top_left = OpCase("c1", [1, 1, 3, 2], [1, 1, 3, 2], [1, 1, 3, 2], 1, causal=1)
    qc, kc, vc, _, _ = case_data(top_left, "float32")
    check("causal 1: row 0 is V row 0", np.allclose(reference(top_left, qc, kc, vc, None, None)[0, 0, 0], vc[0, 0, 0]))
    rank3 = OP_CASES[4]
    q3, k3, v3, b3, _ = case_data(rank3, "float16")
    check("rank 3 reference shape", reference(rank3, q3, k3, v3, b3, None).shape == (3, 17, 256))
    lowest_case = next(c for c in OP_CASES if c.name == "LowestBias_Rows")
    ql, kl, vl, bl, _ = case_data(lowest_case, "float32")
    rl = reference(lowest_case, ql, kl, vl, bl, None)
    check("rows masked by finfo.min bias average V (float32 adds the bias in fp32)",
          np.allclose(rl[0, 0, 0], vl[0, 0].astype(np.float64).mean(axis=0), atol=1e-6))
    for case in OP_CASES:
        for dtype in TYPES:
            data = case_data(case, dtype)
            if dtype == "float16":
                check(f"{case.name} float16 data are float16 values",
                      all(np.array_equal(x, x.astype(np.float16).astype(np.float32)) for x in data[:3]))
    padded = next(c for c in OP_CASES if c.name == "Decode_Gqa_Padded")
    keep_p = case_data(padded, "float32")[4]
    check("padding pattern: entry 1 drops its last third", not keep_p[1, ..., 1000 - 333:].any())

    # Tolerances.
    e = np.array([1.0, np.nan, -0.5])
    check("op tolerance passes", op_check(np.array([1.00001, np.nan, -0.5]), e, 1.0, "float32")[0])
    check("op tolerance fails", not op_check(np.array([1.001, np.nan, -0.5]), e, 1.0, "float32")[0])
    check("op NaN must match", not op_check(np.array([1.0, 0.0, -0.5]), e, 1.0, "float32")[0])
    check("op no NaN where finite", not op_check(np.array([np.nan, np.nan, -0.5]), e, 1.0, "float32")[0])
    check("op float16 bound", op_check(np.array([1.003, np.nan, -0.5]), e, 1.0, "float16")[0]
          and not op_check(np.array([1.005, np.nan, -0.5]), e, 1.0, "float16")[0])
    m = np.array([10.0, 0.0, -1.0], dtype=np.float32)
    check("model tolerance scales with the output",
          model_output_check(m + np.float32(9e-4), m)[0] and not model_output_check(m + np.float32(2.2e-3), m)[0])
    check("model float16 tolerance", model_output_check((m + 0.05).astype(np.float16), m.astype(np.float16))[0])
    check("model integer outputs exact", not model_output_check(np.array([1, 2]), np.array([1, 3]))[0]
          and model_output_check(np.array([1, 2]), np.array([1, 2]))[0])
    check("model shape mismatch", not model_output_check(np.zeros(3), np.zeros(4))[0])

    # Profiles.
    events = [{"cat": "Session", "name": "model_run"},
              {"cat": "Node", "name": "a_fence_before", "args": {"op_name": "FlashAttention"}},
              {"cat": "Node", "name": "a_kernel_time", "args": {"op_name": "FlashAttention", "provider": CUDA_EP}},
              {"cat": "Node", "name": "b_kernel_time", "args": {"op_name": "FlashAttention", "provider": CUDA_EP}},
              {"cat": "Node", "name": "c_kernel_time", "args": {"op_name": "MatMul", "provider": CPU_EP}}]
    found = flash_attention_providers(events)
    check("profile parsed", found == {"a": {CUDA_EP}, "b": {CUDA_EP}})
    check("placement ok", check_placement(found, 2, CUDA_EP) == "")
    check("placement: too few nodes", "expected 3" in check_placement(found, 3, CUDA_EP))
    events.append({"cat": "Node", "name": "b_kernel_time", "args": {"op_name": "FlashAttention", "provider": CPU_EP}})
    check("placement: a node on CPU", "b on" in check_placement(flash_attention_providers(events), 2, CUDA_EP))

    # Skips: no CUDA provider, without touching a library (--no-cpu-half), and no onnxruntime module at all.
    class FakeOrt:
        __version__ = "0.0-test"

        @staticmethod
        def get_available_providers():
            return [CPU_EP]

    with tempfile.TemporaryDirectory() as tmp:
        lib = os.path.join(tmp, "libortflash.so")
        open(lib, "wb").close()
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = open(os.devnull, "w")
        try:
            code = main(["--dir", tmp, "--only", "ops", "--no-cpu-half"], ort_module=FakeOrt)
            missing = main(["--dir", tmp, "--only", "models"], ort_module=FakeOrt)
            no_lib = main(["--dir", os.path.join(tmp, "none"), "--only", "ops"], ort_module=FakeOrt)
        finally:
            sys.stdout.close()
            sys.stdout, sys.stderr = saved
        check("no CUDAExecutionProvider: exit 3", code == EXIT_SKIP)
        check("no manifest with --only models: exit 2", missing == EXIT_USAGE)
        check("no library: exit 2", no_lib == EXIT_USAGE)
        check("no CUDA reason names the package", "CPU-only" in cuda_problem(FakeOrt, None, False)[1])

    # The whole flow on a stand-in for onnxruntime: op sessions compute the reference, model sessions a sum of
    # their inputs; the CUDA side can be made wrong, put the op on the CPU, or fall back to the CPU at creation.
    with tempfile.TemporaryDirectory() as tmp:
        for mode, expected_code in (("ok", EXIT_PASS), ("wrong", EXIT_FAIL), ("cpu-node", EXIT_FAIL),
                                    ("fallback", EXIT_SKIP), ("no-cuda", EXIT_SKIP)):
            fake = make_fake_ort(mode, tmp)
            saved = sys.stdout
            sys.stdout = captured = open(os.path.join(tmp, "out.txt"), "w+")
            try:
                code = main(["--dir", tmp, "--quick", "--filter", "op:Decode:*", "--filter", "op:MaskedRows_Nan:*",
                             "--filter", "model:*"], ort_module=fake)
            finally:
                sys.stdout = saved
            captured.seek(0)
            text = captured.read()
            captured.close()
            check(f"stand-in onnxruntime, {mode}: exit {expected_code}", code == expected_code)
            if mode == "ok":
                # 3 types x 2 cases, and float32 once more on the tiled SIMT kernel.
                check("stand-in: 8 op checks and 2 model input sets passed", "10 passed, 0 failed" in text)
                check("stand-in: float32 also ran on the SIMT kernel", "op:Decode:float32:simt" in text)
                check("stand-in: the op sessions refuse CPU fallback",
                      fake.strict_sessions == 8 and fake.registered >= 16)
            if mode == "cpu-node":
                check("stand-in: the node on the CPU is named", "FlashAttention off CUDAExecutionProvider" in text)
            if mode == "fallback":
                check("stand-in: a CUDA session made on the CPU is no CUDA provider",
                      "lists CUDAExecutionProvider but cannot use it\n" in text and "8 passed" in text)
            if mode == "no-cuda":
                check("stand-in: the CPU half ran and passed", "8 passed, 0 failed" in text and "SKIP:" in text)

    # Committed op models (byte-identical to what onnx.helper builds here) and the input generator.
    committed = sorted(os.path.basename(p) for p in glob.glob(os.path.join(OP_MODEL_DIR, "*.onnx")))
    expected_files = sorted([op_model_name(c, t) for c in OP_CASES for t in TYPES] + ["probe_add.onnx"])
    check("ort_models/ holds one model per case and type", committed == expected_files)
    if have_onnx():
        import onnx

        def canonical(data):
            return onnx.load_model_from_string(data).SerializeToString()

        stale = []
        for case in OP_CASES:
            for dtype in TYPES:
                with open(os.path.join(OP_MODEL_DIR, op_model_name(case, dtype)), "rb") as f:
                    if canonical(f.read()) != canonical(build_op_model(case, dtype)):
                        stale.append(op_model_name(case, dtype))
        check(f"ort_models/ up to date (rerun --write-op-models): {stale}", not stale)
        for f in expected_files:
            onnx.checker.check_model(onnx.load(os.path.join(OP_MODEL_DIR, f)))
        llama = onnx.load(os.path.join(REPO, "models", "llama-opset17.onnx"))
        arrays, _ = generate_model_inputs(llama, 5, 4)
        check("llama inputs: shapes", arrays["input_ids"].shape == (2, 5) and arrays["attention_mask"].shape == (2, 9)
              and arrays["past_key_0"].shape == (2, 2, 4, 32) and arrays["past_key_0"].dtype == np.float32)
        check("llama inputs: entry 1 padded at the end, entry 0 not",
              arrays["attention_mask"][0].all() and arrays["attention_mask"][1].tolist() == [1] * 6 + [0] * 3)
        rows = _embedding_rows(llama, "input_ids")
        check("llama ids below the embedding rows", rows is not None and arrays["input_ids"].max() < rows)
        again, _ = generate_model_inputs(llama, 5, 4)
        check("inputs deterministic", all(np.array_equal(arrays[n], again[n]) for n in arrays))
        t5 = onnx.load(os.path.join(REPO, "models", "t5-opset17.onnx"))
        t5_inputs, _ = generate_model_inputs(t5, 7, 3)
        check("t5 decoder length S - 2", t5_inputs["decoder_input_ids"].shape == (2, 5))
        sdpa_bool = onnx.load(os.path.join(REPO, "models", "sdpa_bool-opset17.onnx"))
        check("bool masks stay bool", generate_model_inputs(sdpa_bool, 7, 3)[0]["attention_mask"].dtype == np.bool_)
        fp16 = onnx.load(os.path.join(REPO, "models", "llama-opset17-fp16.onnx"))
        check("float16 caches", generate_model_inputs(fp16, 7, 3)[0]["past_value_1"].dtype == np.float16)
    else:
        print("note: no onnx module: the committed op models and the input generator are not checked")
    print(f"self-test passed: {len(checks)} checks")
    return EXIT_PASS


def make_fake_ort(mode, directory):
    """A stand-in for the onnxruntime module (self-test): enough of SessionOptions and InferenceSession for main()."""
    lib = os.path.join(directory, "libortflash.so")
    open(lib, "wb").close()
    np.savez(os.path.join(directory, "m.s7.npz"), a=np.ones((2, 3), np.float32), b=np.arange(6.0, dtype=np.float32))
    np.savez(os.path.join(directory, "m.s61p3.npz"), a=np.ones((2, 3), np.float32), b=np.zeros(6, np.float32))
    np.savez(os.path.join(directory, "m.s33.npz"), a=np.ones((2, 3), np.float32), b=np.zeros(6, np.float32))
    open(os.path.join(directory, "rewritten.onnx"), "wb").close()
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump({"format": 1, "models": [{"name": "bert-opset17", "original": "models/bert-opset17.onnx",
                                            "rewritten": "rewritten.onnx", "fused": 2, "input_sets": [
                                                {"name": n, "file": f"m.{n}.npz"} for n in ("s7", "s33", "s61p3")]}]},
                  f)

    class Named:
        def __init__(self, name):
            self.name = name

    class SessionOptions:
        def __init__(self):
            self.entries, self.library, self.enable_profiling, self.profile_file_prefix = {}, None, False, ""

        def register_custom_ops_library(self, path):
            self.library = path
            Fake.registered += 1

        def add_session_config_entry(self, key, value):
            self.entries[key] = value

    class InferenceSession:
        def __init__(self, model, sess_options=None, providers=None):
            wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
            self.options = sess_options
            self.provider = CPU_EP if wanted == CUDA_EP and mode == "fallback" else wanted
            self.case = None
            if isinstance(model, bytes):
                self.case = next((c for c in OP_CASES if f"flash_attention_{c.name}_".encode() in model), None)
                self.dtype = next((t for t in TYPES if f"_{t}".encode() in model), None)
            self.model = model
            if sess_options.entries.get("session.disable_cpu_ep_fallback") == "1":
                Fake.strict_sessions += 1

        def get_providers(self):
            return [self.provider] if self.provider == CPU_EP else [self.provider, CPU_EP]

        def get_inputs(self):
            if self.case is not None:
                return [Named(n) for n in ("Q", "K", "V", "bias", "keep")]
            return [Named("a"), Named("b")] if isinstance(self.model, str) else [Named("X")]

        def get_outputs(self):
            return [Named("Y")] if self.case is not None or not isinstance(self.model, str) else [Named("out")]

        def run(self, names, feeds):
            off = 1e-2 if self.provider == CUDA_EP and mode == "wrong" else 0.0
            if self.case is not None:
                data = [feeds[n].astype(np.float32) if n in feeds else None for n in ("Q", "K", "V", "bias")]
                out = reference(self.case, *data, feeds.get("keep")) + off
                return [out.astype(np.float16 if self.dtype == "float16" else np.float32)]
            if not isinstance(self.model, str):
                return [feeds["X"] + feeds["X"]]
            return [np.float32(feeds["a"].sum() + feeds["b"].sum() + off).reshape(1)]

        def end_profiling(self):
            path = self.options.profile_file_prefix + "_test.json"
            provider = CPU_EP if mode == "cpu-node" else self.provider
            with open(path, "w") as f:
                json.dump([{"cat": "Node", "name": f"n{i}_kernel_time",
                            "args": {"op_name": "FlashAttention", "provider": provider}}
                           for i in range(1 if self.case is not None else 2)], f)
            return path

    class Fake:
        __version__ = "0.0-stand-in"
        registered = strict_sessions = 0

        @staticmethod
        def get_available_providers():
            return [CPU_EP] if mode == "no-cuda" else [CUDA_EP, CPU_EP]

    Fake.SessionOptions, Fake.InferenceSession = SessionOptions, InferenceSession
    return Fake


if __name__ == "__main__":
    sys.exit(main())
