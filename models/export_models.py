"""Export OrtFlash's small test models with torch's TorchScript ONNX exporter.

Run from the repository root with Debian's interpreter (torch 1.13, onnx 1.12):

    command -p python3 models/export_models.py

Every module below is random-initialised (fixed seed) plain torch that re-creates the attention
code of one model family, written the way that family's modeling code writes it, so that the
exporter emits the same attention subgraph it emits for the real model. Nothing is downloaded.

Families and the attention code path each one reproduces:

bert            HF BERT/RoBERTa eager (transformers >= 4.2x): per-head view+permute, scores =
                matmul(q, k.transpose(-1, -2)) / math.sqrt(d), additive extended mask
                (1.0 - mask[:, None, None, :]) * finfo(float32).min, softmax(dim=-1), matmul(p, v).
bert_legacy     Same block with the older HF mask constant (1.0 - m) * -10000.0; exported also at
                opset 11 and 12 (Softmax-11: axis attribute = 3 on the 4-D scores).
distilbert      HF DistilBERT: q = q / math.sqrt(dim_per_head) *before* the matmul,
                k.transpose(2, 3), masked_fill((mask == 0).view(bs,1,1,T).expand_as(scores),
                finfo.min) -> Where(mask, fill, scores). Head dim 80.
gpt2            HF GPT-2: Conv1D (addmm) c_attn split into q/k/v, scores / torch.full([], d ** 0.5),
                registered lower-triangular bool buffer `bias` sliced
                [:, :, T-S:T, :T], torch.where(causal, w, finfo.min), + padding mask
                (1 - m) * finfo.min.
gpt2_past       The same with a KV cache: past_key_i/past_value_i inputs (B, H, P, D) concatenated
                on dim -2, present_* outputs, q_len < kv_len, buffer row slice = bottom-right causal.
llama           HF Llama (transformers ~4.48 eager_attention_forward): RoPE (rotate_half, cat of
                freqs), GQA repeat_kv (None-index -> expand -> reshape, Hq=4, Hkv=2), scores =
                matmul(q, k.transpose(2, 3)) * scaling, 4-D causal mask = triu(full(finfo.min), 1)
                * (arange(T) > cache_position) merged with the padding mask by masked_fill on a
                slice, mask sliced [..., :T], softmax(dim=-1, dtype=float32).to(q.dtype), KV cache.
t5              HF T5 encoder-decoder: no score scaling, relative position bias (bucketed, computed
                once in the first layer, shared by the others) + additive mask, scores +=
                position_bias, softmax(scores.float()).type_as(scores); decoder self-attention
                with the HF decoder causal mask; cross-attention with a zeros position bias.
bart            HF BART/mBART/Marian (pre-SDPA, transformers 4.2x-4.3x; Whisper-HF has the same
                attention class): q_proj(x) * scaling before the head split, 3-D (B*H, S, D) bmm
                layout, mask added through view(B,H,S,T) -> + mask -> view(B*H,S,T), _expand_mask
                (masked_fill(inverted.bool(), finfo.min)), _make_causal_mask for the decoder,
                cross-attention.
bloom           HF BLOOM (transformers ~4.40 eager): fused query_key_value Linear split into heads, ALiBi
                built from the padding mask ((cumsum(m) - 1) * m positions times per-head slopes,
                (B*H, 1, T)), alibi.baddbmm(q, k, beta=1, alpha=1/sqrt(d)) on 3-D (B*H, S, D) x
                (B*H, D, T), view(B, H, S, T), masked_fill(bool causal+padding mask of
                _prepare_4d_causal_attention_mask(...).bool(), finfo.min), softmax(dim=-1,
                dtype=float32), view(B*H, S, T), bmm with V. MPT writes the same masked_fill on 4-D
                scores with a (H, 1, T) ALiBi.
mha             torch.nn.MultiheadAttention(batch_first=True) with key_padding_mask (bool, True =
                ignore) and a float causal attn_mask (triu of -inf): torch 1.13's
                F.multi_head_attention_forward 3-D path, q / sqrt(E) then baddbmm(mask, q, k^T).
mha_weights     The same module returning its (head-averaged) attention weights as a second graph
                output: a model that must NOT be fused (Softmax output used outside the pattern).
transformer_encoder
                torch.nn.TransformerEncoder (2 x TransformerEncoderLayer, batch_first) with
                src_key_padding_mask only (need_weights=False path, mask = key padding only).
vit             HF ViT: patch Conv2d + CLS token, pre-LN, BERT-style Div attention, no mask.
sdpa            HF BERT with attn_implementation="sdpa": 4-D float mask from
                _prepare_4d_attention_mask_for_sdpa (Expand -> 1 - m -> masked_fill(bool, min))
                fed to scaled_dot_product_attention. torch 1.13 has no F.scaled_dot_product_attention,
                so the op is an autograd.Function whose `symbolic` emits what torch >= 2.0's
                TorchScript symbolic (symbolic_opset14) emits: scale = 1 / Sqrt(Cast(Slice(Shape(Q),
                -1))), Mul(Q, Sqrt(scale)), Mul(Transpose(K, 0,1,3,2), Sqrt(scale)), MatMul, Add mask.
sdpa_bool       The same symbolic with a bool attn_mask (B,1,1,T), True = attend: Where(m, 0, -inf) + Add.
sdpa_causal     The same symbolic with is_causal=True (Trilu over Expand(1.0, [L,S]) -> Equal 0 ->
                Where(-inf, 0) + Add); no padding mask input.
whisper_openai  OpenAI Whisper: q and k each multiplied by (n_state // n_head) ** -0.25 computed
                from the traced shape, K permuted (0, 2, 3, 1) (no separate transpose), causal
                buffer triu(-inf, 1) sliced [:n_ctx, :n_ctx] and added, qk.float() softmax
                .to(q.dtype); audio encoder (no mask) + text decoder (self + cross attention).
gpt_neox        HF GPT-NeoX / Pythia (transformers ~4.36 eager): fused query_key_value split per head,
                partial rotary (rotary_pct 0.25), q and k viewed as (B*H, S, D),
                torch.baddbmm(zeros, q, k^T, beta=1.0, alpha=norm_factor = 1/sqrt(d)), view(B, H, S, T)
                never merged back, torch.where(bool causal buffer slice, scores, finfo.min), + padding
                mask (1 - m) * finfo.min, softmax, matmul with the 4-D value; parallel residual.
opt             HF OPT (~4.30): BART's attention (q_proj(x) * scaling, 3-D bmm) with
                view -> + causal_and_padding_mask -> torch.max(w, torch.tensor(finfo.min)) -> view; the
                decoder mask is the causal and the padding mask summed (-inf where both hide); learned
                positions from cumsum(attention_mask).
clip_text       HF CLIP text encoder (~4.30): q_proj(x) * scale, 3-D bmm, the causal mask
                (torch.empty().fill_(finfo.min).triu_(1)) and the _expand_mask padding mask added one after
                the other, each through view(B, H, S, T) -> + mask -> view(B*H, S, T).
gemma2          HF Gemma-2 (~4.44 eager): GQA (Hq=4, Hkv=2), RoPE, scaling = query_pre_attn_scalar ** -0.5,
                logit softcapping tanh(scores / cap) * cap after the scaling, the Llama-style 4-D causal +
                padding mask, sliding-window layers (even layers) hiding keys j <= i - window with
                mask.masked_fill(tril(ones_like(mask), -window), finfo.min) (HF's torch.where with a Python
                float exports a float64 fill under torch 1.13, which ONNX Runtime refuses to load);
                softmax(dtype=float32).
bloom_past      HF BLOOM with a KV cache in its own 3-D layout: past_key (B*H, D, P) concatenated on dim 2,
                past_value (B*H, P, D) on dim 1, present_* outputs, ALiBi and the causal+padding mask over
                all P + S keys.
swin            torchvision's own SwinTransformer class (v1; imported, not re-written): windows of 4x4 tokens as the
                batch (B*nW, H, N, D), q * head_dim ** -0.5 before q @ k^T, + relative position bias (1, H, N, N)
                gathered from the learned table, in shifted blocks torch.roll and the window mask: scores viewed as
                (B, nW, H, N, N), + mask (1, nW, 1, N, N) holding 0 or -100.0 (finite), viewed back; softmax, @ v.
sd_unet         Stable Diffusion UNet attention (diffusers ~0.2x): Transformer2DModel (GroupNorm, 1x1 conv proj_in,
                latent (B, C, h, w) -> (B, h*w, C)) around one BasicTransformerBlock with self-attention (attn1),
                cross-attention (attn2) on encoder_hidden_states (context length 13 != 64 latent positions) and
                a GEGLU feed-forward; the classic AttnProcessor: head_to_batch_dim to (B*H, S, D),
                torch.baddbmm(torch.empty(B*H, S, T), q, k^T, beta=0, alpha=scale), upcast_softmax
                (.float() -> softmax -> .to(dtype)), torch.bmm(probs, v), batch_to_head_dim; no masks.
deberta_v2      HF DeBERTa-v2/v3 (transformers ~4.3x, v3's configuration): DisentangledSelfAttention with relative
                attention (pos_att_type p2c + c2p, share_att_key, log-bucketed relative positions), 3-D (B*H, S, D)
                bmm with k^T / sqrt(d * 3), the c2p and p2c terms (torch.gather over relative-position indices)
                added, view(B, H, S, T), XSoftmax exported by its own symbolic (masked_fill(finfo.min) -> Softmax ->
                masked_fill(0)) with the (B, 1, S, S) mask of get_attention_mask (padded queries see no key).

falcon          HF Falcon (~4.36 eager; RW layout, new_decoder_architecture=False, multi_query=True,
                parallel_attn=True, rotary, bias=False): one fused query_key_value Linear giving H query heads
                and a single key and value head (_split_heads: [..., :-2, :], [..., [-2], :], [..., [-1], :]),
                RoPE from the cos/sin cache gathered by position_ids, KV cache concatenated on dim -2,
                query @ key.transpose(-1, -2) / math.sqrt(d) with the one K/V head broadcast by matmul,
                softmax(scores + _prepare_4d_causal_attention_mask(...), dtype=hidden_states.dtype) @ value.
qwen2           HF Qwen2 (~4.48 eager): Llama's attention (repeat_kv GQA, * scaling, 4-D mask, KV cache) with
                biased q/k/v projections; use_sliding_window=False as in the released checkpoints.
mistral         HF Mistral (~4.36 eager): GQA repeat_kv (Hq=4, Hkv=1), RoPE from the cos/sin cache,
                matmul(q, k^T) / math.sqrt(d), + the 4-D mask of _prepare_4d_causal_attention_mask with
                sliding_window=3 (AttentionMaskConverter: 1 - triu(ones_like(mask, int), P - window + 1)
                masked to finfo.min), softmax(dtype=float32).to(q.dtype), KV cache.

Variants: every family at opset 14 and 17 (sdpa* only there: the symbolic needs Trilu-14),
bert_legacy also at 11 and 12, gpt2 and distilbert also at 12, `-nofold` files exported with
do_constant_folding=False, `-fp16` files converted from the fp32 export by to_float16() below.

Outputs written next to this script: <family>-opset<N>[-nofold|-fp16].onnx, manifest.json and
reference/<family>/test_data_set_0/{input,output}_<i>.pb (ONNX TensorProto files; the batch has a
padded sequence), produced by running the PyTorch module itself.
"""

import json
import math
import os
import sys
from collections import Counter

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import helper, numpy_helper, TensorProto

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 1234
FMIN = torch.finfo(torch.float32).min


def _gelu_new(x):
    # GPT-2's tanh approximation, written as in HF `NewGELUActivation`.
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


# --------------------------------------------------------------------------------------------
# BERT / RoBERTa (HF eager), also the -10000 legacy mask
# --------------------------------------------------------------------------------------------
class BertSelfAttention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.num_attention_heads = heads
        self.attention_head_size = hidden // heads
        self.all_head_size = hidden
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(0.1)

    def transpose_for_scores(self, x):
        new_x_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
        x = x.view(new_x_shape)
        return x.permute(0, 2, 1, 3)

    def forward(self, hidden_states, attention_mask=None):
        query_layer = self.transpose_for_scores(self.query(hidden_states))
        key_layer = self.transpose_for_scores(self.key(hidden_states))
        value_layer = self.transpose_for_scores(self.value(hidden_states))
        attention_scores = torch.matmul(query_layer, key_layer.transpose(-1, -2))
        attention_scores = attention_scores / math.sqrt(self.attention_head_size)
        if attention_mask is not None:
            attention_scores = attention_scores + attention_mask
        attention_probs = nn.functional.softmax(attention_scores, dim=-1)
        attention_probs = self.dropout(attention_probs)
        context_layer = torch.matmul(attention_probs, value_layer)
        context_layer = context_layer.permute(0, 2, 1, 3).contiguous()
        new_context_layer_shape = context_layer.size()[:-2] + (self.all_head_size,)
        return context_layer.view(new_context_layer_shape)


class BertLayer(nn.Module):
    def __init__(self, hidden, heads, ffn):
        super().__init__()
        self.self_attn = BertSelfAttention(hidden, heads)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Linear(hidden, ffn)
        self.output = nn.Linear(ffn, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x, mask):
        x = self.attn_norm(self.attn_out(self.self_attn(x, mask)) + x)
        return self.out_norm(self.output(F.gelu(self.intermediate(x))) + x)


class Bert(nn.Module):
    def __init__(self, vocab=128, hidden=64, heads=2, layers=2, ffn=128, max_pos=64, mask_value=None):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_pos, hidden)
        self.token_type_embeddings = nn.Embedding(2, hidden)
        self.emb_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.register_buffer("position_ids", torch.arange(max_pos).expand((1, -1)))
        self.layers = nn.ModuleList([BertLayer(hidden, heads, ffn) for _ in range(layers)])
        self.mask_value = mask_value  # None: finfo(dtype).min (HF >= 4.2x); else e.g. -10000.0

    def get_extended_attention_mask(self, attention_mask, dtype):
        extended_attention_mask = attention_mask[:, None, None, :]
        extended_attention_mask = extended_attention_mask.to(dtype=dtype)
        fill = torch.finfo(dtype).min if self.mask_value is None else self.mask_value
        return (1.0 - extended_attention_mask) * fill

    def forward(self, input_ids, attention_mask):
        seq_length = input_ids.size(1)
        position_ids = self.position_ids[:, :seq_length]
        token_type_ids = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = self.emb_norm(x + self.position_embeddings(position_ids))
        mask = self.get_extended_attention_mask(attention_mask, x.dtype)
        for layer in self.layers:
            x = layer(x, mask)
        return x


# --------------------------------------------------------------------------------------------
# DistilBERT
# --------------------------------------------------------------------------------------------
class DistilMultiHeadSelfAttention(nn.Module):
    def __init__(self, dim, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.dim = dim
        self.dropout = nn.Dropout(p=0.1)
        self.q_lin = nn.Linear(dim, dim)
        self.k_lin = nn.Linear(dim, dim)
        self.v_lin = nn.Linear(dim, dim)
        self.out_lin = nn.Linear(dim, dim)

    def forward(self, query, key, value, mask):
        bs, q_length, dim = query.size()
        k_length = key.size(1)
        dim_per_head = self.dim // self.n_heads
        mask_reshp = (bs, 1, 1, k_length)

        def shape(x):
            return x.view(bs, -1, self.n_heads, dim_per_head).transpose(1, 2)

        def unshape(x):
            return x.transpose(1, 2).contiguous().view(bs, -1, self.n_heads * dim_per_head)

        q = shape(self.q_lin(query))
        k = shape(self.k_lin(key))
        v = shape(self.v_lin(value))
        q = q / math.sqrt(dim_per_head)
        scores = torch.matmul(q, k.transpose(2, 3))
        mask = (mask == 0).view(mask_reshp).expand_as(scores)
        scores = scores.masked_fill(mask, torch.tensor(torch.finfo(scores.dtype).min))
        weights = nn.functional.softmax(scores, dim=-1)
        weights = self.dropout(weights)
        context = torch.matmul(weights, v)
        return self.out_lin(unshape(context))


class DistilBert(nn.Module):
    def __init__(self, vocab=128, dim=160, heads=2, layers=1, hidden_dim=64, max_pos=64):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)
        self.position_embeddings = nn.Embedding(max_pos, dim)
        self.emb_norm = nn.LayerNorm(dim, eps=1e-12)
        self.attn = nn.ModuleList([DistilMultiHeadSelfAttention(dim, heads) for _ in range(layers)])
        self.sa_norm = nn.ModuleList([nn.LayerNorm(dim, eps=1e-12) for _ in range(layers)])
        self.lin1 = nn.ModuleList([nn.Linear(dim, hidden_dim) for _ in range(layers)])
        self.lin2 = nn.ModuleList([nn.Linear(hidden_dim, dim) for _ in range(layers)])
        self.out_norm = nn.ModuleList([nn.LayerNorm(dim, eps=1e-12) for _ in range(layers)])

    def forward(self, input_ids, attention_mask):
        seq_length = input_ids.size(1)
        position_ids = torch.arange(seq_length, dtype=torch.long, device=input_ids.device)
        position_ids = position_ids.unsqueeze(0).expand_as(input_ids)
        x = self.emb_norm(self.word_embeddings(input_ids) + self.position_embeddings(position_ids))
        for i in range(len(self.attn)):
            x = self.sa_norm[i](self.attn[i](x, x, x, attention_mask) + x)
            x = self.out_norm[i](self.lin2[i](F.gelu(self.lin1[i](x))) + x)
        return x


# --------------------------------------------------------------------------------------------
# GPT-2 (with and without KV cache)
# --------------------------------------------------------------------------------------------
class Conv1D(nn.Module):
    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.randn(nf) * 0.02)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


class GPT2Attention(nn.Module):
    def __init__(self, embed_dim, num_heads, max_positions):
        super().__init__()
        self.register_buffer(
            "bias",
            torch.tril(torch.ones((max_positions, max_positions), dtype=torch.bool)).view(
                1, 1, max_positions, max_positions
            ),
        )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.split_size = embed_dim
        self.c_attn = Conv1D(3 * embed_dim, embed_dim)
        self.c_proj = Conv1D(embed_dim, embed_dim)
        self.attn_dropout = nn.Dropout(0.1)

    def _attn(self, query, key, value, attention_mask=None):
        attn_weights = torch.matmul(query, key.transpose(-1, -2))
        attn_weights = attn_weights / torch.full(
            [], value.size(-1) ** 0.5, dtype=attn_weights.dtype, device=attn_weights.device
        )
        query_length, key_length = query.size(-2), key.size(-2)
        causal_mask = self.bias[:, :, key_length - query_length : key_length, :key_length]
        mask_value = torch.finfo(attn_weights.dtype).min
        mask_value = torch.full([], mask_value, dtype=attn_weights.dtype).to(attn_weights.device)
        attn_weights = torch.where(causal_mask, attn_weights.to(attn_weights.dtype), mask_value)
        if attention_mask is not None:
            attn_weights = attn_weights + attention_mask
        attn_weights = nn.functional.softmax(attn_weights, dim=-1)
        attn_weights = attn_weights.type(value.dtype)
        attn_weights = self.attn_dropout(attn_weights)
        return torch.matmul(attn_weights, value)

    def _split_heads(self, tensor, num_heads, attn_head_size):
        new_shape = tensor.size()[:-1] + (num_heads, attn_head_size)
        tensor = tensor.view(new_shape)
        return tensor.permute(0, 2, 1, 3)

    def _merge_heads(self, tensor, num_heads, attn_head_size):
        tensor = tensor.permute(0, 2, 1, 3).contiguous()
        new_shape = tensor.size()[:-2] + (num_heads * attn_head_size,)
        return tensor.view(new_shape)

    def forward(self, hidden_states, layer_past=None, attention_mask=None):
        query, key, value = self.c_attn(hidden_states).split(self.split_size, dim=2)
        query = self._split_heads(query, self.num_heads, self.head_dim)
        key = self._split_heads(key, self.num_heads, self.head_dim)
        value = self._split_heads(value, self.num_heads, self.head_dim)
        if layer_past is not None:
            past_key, past_value = layer_past
            key = torch.cat((past_key, key), dim=-2)
            value = torch.cat((past_value, value), dim=-2)
        present = (key, value)
        attn_output = self._attn(query, key, value, attention_mask)
        attn_output = self._merge_heads(attn_output, self.num_heads, self.head_dim)
        return self.c_proj(attn_output), present


class GPT2Block(nn.Module):
    def __init__(self, hidden, heads, max_positions):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden, eps=1e-5)
        self.attn = GPT2Attention(hidden, heads, max_positions)
        self.ln_2 = nn.LayerNorm(hidden, eps=1e-5)
        self.c_fc = Conv1D(4 * hidden, hidden)
        self.c_proj = Conv1D(hidden, 4 * hidden)

    def forward(self, x, layer_past, attention_mask):
        a, present = self.attn(self.ln_1(x), layer_past=layer_past, attention_mask=attention_mask)
        x = x + a
        x = x + self.c_proj(_gelu_new(self.c_fc(self.ln_2(x))))
        return x, present


class GPT2(nn.Module):
    def __init__(self, vocab=128, hidden=64, heads=2, layers=2, n_positions=64):
        super().__init__()
        self.wte = nn.Embedding(vocab, hidden)
        self.wpe = nn.Embedding(n_positions, hidden)
        self.h = nn.ModuleList([GPT2Block(hidden, heads, n_positions) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(hidden, eps=1e-5)

    def forward(self, input_ids, attention_mask, *past):
        input_shape = input_ids.size()
        batch_size = input_ids.shape[0]
        past_key_values = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        if not past_key_values:
            past_length = 0
            past_key_values = [None] * len(self.h)
        else:
            past_length = past_key_values[0][0].size(-2)
        position_ids = torch.arange(past_length, input_shape[-1] + past_length, dtype=torch.long)
        position_ids = position_ids.unsqueeze(0).view(-1, input_shape[-1])
        attention_mask = attention_mask.view(batch_size, -1)
        attention_mask = attention_mask[:, None, None, :]
        attention_mask = attention_mask.to(dtype=self.wte.weight.dtype)
        attention_mask = (1.0 - attention_mask) * torch.finfo(self.wte.weight.dtype).min
        x = self.wte(input_ids) + self.wpe(position_ids)
        presents = []
        for block, layer_past in zip(self.h, past_key_values):
            x, present = block(x, layer_past, attention_mask)
            presents.extend(present)
        x = self.ln_f(x)
        return (x, *presents) if past else x


# --------------------------------------------------------------------------------------------
# Llama (HF ~4.48): RoPE, GQA repeat_kv, `* scaling`, 4-D causal + padding mask, KV cache
# --------------------------------------------------------------------------------------------
class LlamaRMSNorm(nn.Module):
    def __init__(self, hidden, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class LlamaRotaryEmbedding(nn.Module):
    def __init__(self, dim, base=10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.attention_scaling = 1.0

    def forward(self, x, position_ids):
        inv_freq_expanded = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
        position_ids_expanded = position_ids[:, None, :].float()
        freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


def repeat_kv(hidden_states, n_rep):
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0):
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        causal_mask = attention_mask[:, :, :, : key_states.shape[-2]]
        attn_weights = attn_weights + causal_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)
    return attn_output.transpose(1, 2).contiguous()


class LlamaAttention(nn.Module):
    def __init__(self, hidden, heads, kv_heads, attention_bias=False):
        super().__init__()
        self.head_dim = hidden // heads
        self.num_key_value_groups = heads // kv_heads
        self.scaling = self.head_dim ** -0.5
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=attention_bias)
        self.k_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=attention_bias)
        self.v_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=attention_bias)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=False)

    def forward(self, hidden_states, position_embeddings, attention_mask, past_key, past_value):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        # DynamicCache.update: torch.cat([cache, new], dim=-2)
        key_states = torch.cat([past_key, key_states], dim=-2)
        value_states = torch.cat([past_value, value_states], dim=-2)
        attn_output = eager_attention_forward(self, query_states, key_states, value_states, attention_mask,
                                              scaling=self.scaling)
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), key_states, value_states


class LlamaDecoderLayer(nn.Module):
    def __init__(self, hidden, heads, kv_heads, intermediate, attention_bias=False):
        super().__init__()
        self.self_attn = LlamaAttention(hidden, heads, kv_heads, attention_bias)
        self.input_layernorm = LlamaRMSNorm(hidden)
        self.post_attention_layernorm = LlamaRMSNorm(hidden)
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x, position_embeddings, mask, past_key, past_value):
        a, k, v = self.self_attn(self.input_layernorm(x), position_embeddings, mask, past_key, past_value)
        x = x + a
        h = self.post_attention_layernorm(x)
        x = x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))
        return x, k, v


class Llama(nn.Module):
    def __init__(self, vocab=128, hidden=128, heads=4, kv_heads=2, layers=2, intermediate=64, attention_bias=False):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList([LlamaDecoderLayer(hidden, heads, kv_heads, intermediate, attention_bias)
                                     for _ in range(layers)])
        self.norm = LlamaRMSNorm(hidden)
        self.rotary_emb = LlamaRotaryEmbedding(hidden // heads)

    @staticmethod
    def _prepare_4d_causal_attention_mask_with_cache_position(attention_mask, sequence_length, target_length,
                                                              dtype, cache_position, batch_size):
        min_dtype = torch.finfo(dtype).min
        causal_mask = torch.full((sequence_length, target_length), fill_value=min_dtype, dtype=dtype)
        if sequence_length != 1:
            causal_mask = torch.triu(causal_mask, diagonal=1)
        causal_mask *= torch.arange(target_length) > cache_position.reshape(-1, 1)
        causal_mask = causal_mask[None, None, :, :].expand(batch_size, 1, -1, -1)
        if attention_mask is not None:
            causal_mask = causal_mask.clone()
            mask_length = attention_mask.shape[-1]
            padding_mask = causal_mask[:, :, :, :mask_length] + attention_mask[:, None, None, :]
            padding_mask = padding_mask == 0
            causal_mask[:, :, :, :mask_length] = causal_mask[:, :, :, :mask_length].masked_fill(
                padding_mask, min_dtype)
        return causal_mask

    def forward(self, input_ids, attention_mask, *past):
        inputs_embeds = self.embed_tokens(input_ids)
        past_seen_tokens = past[0].shape[-2]
        cache_position = torch.arange(past_seen_tokens, past_seen_tokens + inputs_embeds.shape[1])
        position_ids = cache_position.unsqueeze(0)
        causal_mask = self._prepare_4d_causal_attention_mask_with_cache_position(
            attention_mask, inputs_embeds.shape[1], attention_mask.shape[-1], inputs_embeds.dtype,
            cache_position, inputs_embeds.shape[0])
        x = inputs_embeds
        position_embeddings = self.rotary_emb(x, position_ids)
        presents = []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, position_embeddings, causal_mask, past[2 * i], past[2 * i + 1])
            presents += [k, v]
        return (self.norm(x), *presents)


# --------------------------------------------------------------------------------------------
# T5 (HF): relative position bias, no scaling, encoder-decoder
# --------------------------------------------------------------------------------------------
class T5LayerNorm(nn.Module):
    def __init__(self, hidden, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        variance = hidden_states.to(torch.float32).pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states


class T5Attention(nn.Module):
    def __init__(self, d_model, n_heads, d_kv, is_decoder, has_relative_attention_bias,
                 num_buckets=32, max_distance=128):
        super().__init__()
        self.is_decoder = is_decoder
        self.has_relative_attention_bias = has_relative_attention_bias
        self.relative_attention_num_buckets = num_buckets
        self.relative_attention_max_distance = max_distance
        self.n_heads = n_heads
        self.key_value_proj_dim = d_kv
        self.inner_dim = n_heads * d_kv
        self.q = nn.Linear(d_model, self.inner_dim, bias=False)
        self.k = nn.Linear(d_model, self.inner_dim, bias=False)
        self.v = nn.Linear(d_model, self.inner_dim, bias=False)
        self.o = nn.Linear(self.inner_dim, d_model, bias=False)
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(num_buckets, n_heads)

    @staticmethod
    def _relative_position_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
        relative_buckets = 0
        if bidirectional:
            num_buckets //= 2
            relative_buckets += (relative_position > 0).to(torch.long) * num_buckets
            relative_position = torch.abs(relative_position)
        else:
            relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
        max_exact = num_buckets // 2
        is_small = relative_position < max_exact
        relative_position_if_large = max_exact + (
            torch.log(relative_position.float() / max_exact)
            / math.log(max_distance / max_exact)
            * (num_buckets - max_exact)
        ).to(torch.long)
        relative_position_if_large = torch.min(
            relative_position_if_large, torch.full_like(relative_position_if_large, num_buckets - 1))
        relative_buckets += torch.where(is_small, relative_position, relative_position_if_large)
        return relative_buckets

    def compute_bias(self, query_length, key_length):
        context_position = torch.arange(query_length, dtype=torch.long)[:, None]
        memory_position = torch.arange(key_length, dtype=torch.long)[None, :]
        relative_position = memory_position - context_position
        relative_position_bucket = self._relative_position_bucket(
            relative_position, bidirectional=(not self.is_decoder),
            num_buckets=self.relative_attention_num_buckets, max_distance=self.relative_attention_max_distance)
        values = self.relative_attention_bias(relative_position_bucket)
        return values.permute([2, 0, 1]).unsqueeze(0)

    def forward(self, hidden_states, mask=None, key_value_states=None, position_bias=None):
        batch_size, seq_length = hidden_states.shape[:2]
        real_seq_length = seq_length
        key_length = real_seq_length if key_value_states is None else key_value_states.shape[1]

        def shape(states):
            return states.view(batch_size, -1, self.n_heads, self.key_value_proj_dim).transpose(1, 2)

        def unshape(states):
            return states.transpose(1, 2).contiguous().view(batch_size, -1, self.inner_dim)

        kv_input = hidden_states if key_value_states is None else key_value_states
        query_states = shape(self.q(hidden_states))
        key_states = shape(self.k(kv_input))
        value_states = shape(self.v(kv_input))
        scores = torch.matmul(query_states, key_states.transpose(3, 2))
        if position_bias is None:
            if not self.has_relative_attention_bias:
                position_bias = torch.zeros((1, self.n_heads, real_seq_length, key_length),
                                            device=scores.device, dtype=scores.dtype)
            else:
                position_bias = self.compute_bias(real_seq_length, key_length)
            if mask is not None:
                position_bias = position_bias + mask
        position_bias_masked = position_bias
        scores += position_bias_masked
        attn_weights = nn.functional.softmax(scores.float(), dim=-1).type_as(scores)
        attn_output = unshape(torch.matmul(attn_weights, value_states))
        return self.o(attn_output), position_bias


class T5Block(nn.Module):
    def __init__(self, d_model, n_heads, d_kv, d_ff, is_decoder, has_bias):
        super().__init__()
        self.is_decoder = is_decoder
        self.self_norm = T5LayerNorm(d_model)
        self.self_attn = T5Attention(d_model, n_heads, d_kv, is_decoder, has_bias)
        if is_decoder:
            self.cross_norm = T5LayerNorm(d_model)
            self.cross_attn = T5Attention(d_model, n_heads, d_kv, is_decoder, False)
        self.ff_norm = T5LayerNorm(d_model)
        self.wi = nn.Linear(d_model, d_ff, bias=False)
        self.wo = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x, mask, position_bias, enc=None, enc_mask=None, enc_position_bias=None):
        a, position_bias = self.self_attn(self.self_norm(x), mask=mask, position_bias=position_bias)
        x = x + a
        if self.is_decoder:
            a, enc_position_bias = self.cross_attn(self.cross_norm(x), mask=enc_mask, key_value_states=enc,
                                                   position_bias=enc_position_bias)
            x = x + a
        x = x + self.wo(F.relu(self.wi(self.ff_norm(x))))
        return x, position_bias, enc_position_bias


class T5(nn.Module):
    def __init__(self, vocab=128, d_model=64, n_heads=4, d_kv=16, d_ff=128, enc_layers=2, dec_layers=1):
        super().__init__()
        self.shared = nn.Embedding(vocab, d_model)
        self.encoder = nn.ModuleList([T5Block(d_model, n_heads, d_kv, d_ff, False, i == 0)
                                      for i in range(enc_layers)])
        self.enc_norm = T5LayerNorm(d_model)
        self.decoder = nn.ModuleList([T5Block(d_model, n_heads, d_kv, d_ff, True, i == 0)
                                      for i in range(dec_layers)])
        self.dec_norm = T5LayerNorm(d_model)

    @staticmethod
    def invert_attention_mask(encoder_attention_mask, dtype):
        encoder_extended_attention_mask = encoder_attention_mask[:, None, None, :]
        encoder_extended_attention_mask = encoder_extended_attention_mask.to(dtype=dtype)
        return (1.0 - encoder_extended_attention_mask) * torch.finfo(dtype).min

    @staticmethod
    def decoder_extended_attention_mask(attention_mask, input_shape, dtype):
        batch_size, seq_length = input_shape
        seq_ids = torch.arange(seq_length)
        causal_mask = seq_ids[None, None, :].repeat(batch_size, seq_length, 1) <= seq_ids[None, :, None]
        causal_mask = causal_mask.to(attention_mask.dtype)
        extended_attention_mask = causal_mask[:, None, :, :] * attention_mask[:, None, None, :]
        extended_attention_mask = extended_attention_mask.to(dtype=dtype)
        return (1.0 - extended_attention_mask) * torch.finfo(dtype).min

    def forward(self, input_ids, attention_mask, decoder_input_ids):
        x = self.shared(input_ids)
        mask = self.invert_attention_mask(attention_mask, x.dtype)
        position_bias = None
        for block in self.encoder:
            x, position_bias, _ = block(x, mask, position_bias)
        enc = self.enc_norm(x)

        y = self.shared(decoder_input_ids)
        batch_size, seq_length = decoder_input_ids.shape
        decoder_attention_mask = torch.ones(batch_size, seq_length, device=y.device)
        dec_mask = self.decoder_extended_attention_mask(decoder_attention_mask, (batch_size, seq_length), y.dtype)
        enc_mask = self.invert_attention_mask(attention_mask, y.dtype)
        position_bias = None
        enc_position_bias = None
        for block in self.decoder:
            y, position_bias, enc_position_bias = block(y, dec_mask, position_bias, enc, enc_mask, enc_position_bias)
        return self.dec_norm(y)


# --------------------------------------------------------------------------------------------
# BART (HF pre-SDPA): q_proj * scaling, 3-D bmm layout, view -> + mask -> view
# --------------------------------------------------------------------------------------------
def _make_causal_mask(input_ids_shape, dtype, past_key_values_length=0):
    bsz, tgt_len = input_ids_shape
    mask = torch.full((tgt_len, tgt_len), torch.finfo(dtype).min)
    mask_cond = torch.arange(mask.size(-1))
    mask.masked_fill_(mask_cond < (mask_cond + 1).view(mask.size(-1), 1), 0)
    mask = mask.to(dtype)
    return mask[None, None, :, :].expand(bsz, 1, tgt_len, tgt_len + past_key_values_length)


def _expand_mask(mask, dtype, tgt_len=None):
    bsz, src_len = mask.size()
    tgt_len = tgt_len if tgt_len is not None else src_len
    expanded_mask = mask[:, None, None, :].expand(bsz, 1, tgt_len, src_len).to(dtype)
    inverted_mask = 1.0 - expanded_mask
    return inverted_mask.masked_fill(inverted_mask.to(torch.bool), torch.finfo(dtype).min)


class BartAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, bias=True, k_bias=True):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim ** -0.5
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=k_bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def _shape(self, tensor, seq_len, bsz):
        return tensor.view(bsz, seq_len, self.num_heads, self.head_dim).transpose(1, 2).contiguous()

    def forward(self, hidden_states, key_value_states=None, attention_mask=None):
        bsz, tgt_len, _ = hidden_states.size()
        query_states = self.q_proj(hidden_states) * self.scaling
        if key_value_states is not None:
            key_states = self._shape(self.k_proj(key_value_states), -1, bsz)
            value_states = self._shape(self.v_proj(key_value_states), -1, bsz)
        else:
            key_states = self._shape(self.k_proj(hidden_states), -1, bsz)
            value_states = self._shape(self.v_proj(hidden_states), -1, bsz)
        proj_shape = (bsz * self.num_heads, -1, self.head_dim)
        query_states = self._shape(query_states, tgt_len, bsz).view(*proj_shape)
        key_states = key_states.reshape(*proj_shape)
        value_states = value_states.reshape(*proj_shape)
        src_len = key_states.size(1)
        attn_weights = torch.bmm(query_states, key_states.transpose(1, 2))
        if attention_mask is not None:
            attn_weights = attn_weights.view(bsz, self.num_heads, tgt_len, src_len) + attention_mask
            attn_weights = attn_weights.view(bsz * self.num_heads, tgt_len, src_len)
        attn_weights = nn.functional.softmax(attn_weights, dim=-1)
        attn_probs = nn.functional.dropout(attn_weights, p=0.0, training=self.training)
        attn_output = torch.bmm(attn_probs, value_states)
        attn_output = attn_output.view(bsz, self.num_heads, tgt_len, self.head_dim)
        attn_output = attn_output.transpose(1, 2)
        attn_output = attn_output.reshape(bsz, tgt_len, self.embed_dim)
        return self.out_proj(attn_output)


class BartEncoderLayer(nn.Module):
    def __init__(self, d, heads, ffn):
        super().__init__()
        self.self_attn = BartAttention(d, heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, x, mask):
        x = self.self_attn_layer_norm(x + self.self_attn(x, attention_mask=mask))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class BartDecoderLayer(nn.Module):
    def __init__(self, d, heads, ffn):
        super().__init__()
        self.self_attn = BartAttention(d, heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = BartAttention(d, heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, x, mask, enc, enc_mask):
        x = self.self_attn_layer_norm(x + self.self_attn(x, attention_mask=mask))
        x = self.encoder_attn_layer_norm(x + self.encoder_attn(x, key_value_states=enc, attention_mask=enc_mask))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class Bart(nn.Module):
    offset = 2

    def __init__(self, vocab=128, d=64, heads=2, ffn=128, max_pos=64):
        super().__init__()
        self.shared = nn.Embedding(vocab, d)
        self.enc_pos = nn.Embedding(max_pos + self.offset, d)
        self.dec_pos = nn.Embedding(max_pos + self.offset, d)
        self.enc_ln = nn.LayerNorm(d)
        self.dec_ln = nn.LayerNorm(d)
        self.encoder_layer = BartEncoderLayer(d, heads, ffn)
        self.decoder_layer = BartDecoderLayer(d, heads, ffn)

    def _positions(self, table, input_ids, past_key_values_length=0):
        bsz, seq_len = input_ids.shape[:2]
        positions = torch.arange(past_key_values_length, past_key_values_length + seq_len, dtype=torch.long)
        return table(positions.expand(bsz, -1) + self.offset)

    def forward(self, input_ids, attention_mask, decoder_input_ids):
        x = self.enc_ln(self.shared(input_ids) + self._positions(self.enc_pos, input_ids))
        x = self.encoder_layer(x, _expand_mask(attention_mask, x.dtype))
        y = self.dec_ln(self.shared(decoder_input_ids) + self._positions(self.dec_pos, decoder_input_ids))
        causal = _make_causal_mask(decoder_input_ids.shape, y.dtype)
        enc_mask = _expand_mask(attention_mask, y.dtype, tgt_len=decoder_input_ids.shape[-1])
        return self.decoder_layer(y, causal, x, enc_mask)


# --------------------------------------------------------------------------------------------
# BLOOM (HF ~4.40 eager): fused QKV, ALiBi from the padding mask, alibi.baddbmm on 3-D tensors,
# view(B, H, S, T) -> masked_fill(bool causal+padding mask, finfo.min) -> softmax -> view(B*H, S, T)
# --------------------------------------------------------------------------------------------
def _bloom_gelu(x):
    return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


def build_alibi_tensor(attention_mask, num_heads, dtype):
    batch_size, seq_length = attention_mask.shape
    closest_power_of_2 = 2 ** math.floor(math.log2(num_heads))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(closest_power_of_2) - 3))), dtype=torch.float32)
    powers = torch.arange(1, 1 + closest_power_of_2, dtype=torch.int32)
    slopes = torch.pow(base, powers)
    if closest_power_of_2 != num_heads:
        extra_base = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest_power_of_2) - 3))), dtype=torch.float32)
        num_remaining_heads = min(closest_power_of_2, num_heads - closest_power_of_2)
        extra_powers = torch.arange(1, 1 + 2 * num_remaining_heads, 2, dtype=torch.int32)
        slopes = torch.cat([slopes, torch.pow(extra_base, extra_powers)], dim=0)
    # Positions count only unpadded tokens: (cumsum(m) - 1) * m, so left padding does not shift them.
    arange_tensor = ((attention_mask.cumsum(dim=-1) - 1) * attention_mask)[:, None, :]
    alibi = slopes[..., None] * arange_tensor
    return alibi.reshape(batch_size * num_heads, 1, seq_length).to(dtype)


def _prepare_4d_causal_attention_mask(attention_mask, input_shape, dtype, past_key_values_length, sliding_window=None):
    # AttentionMaskConverter(is_causal=True, sliding_window).to_4d: causal (with zero columns for the past) merged with
    # _expand_mask by masked_fill; 0 = attend, finfo.min = hidden. With a sliding window, keys more than
    # sliding_window - 1 positions behind the query are hidden too (mask.masked_fill_ before the expand).
    bsz, tgt_len = input_shape
    causal_4d_mask = None
    if tgt_len > 1:
        mask = torch.full((tgt_len, tgt_len), torch.finfo(dtype).min)
        mask_cond = torch.arange(mask.size(-1))
        mask.masked_fill_(mask_cond < (mask_cond + 1).view(mask.size(-1), 1), 0)
        mask = mask.to(dtype)
        if past_key_values_length > 0:
            mask = torch.cat([torch.zeros(tgt_len, past_key_values_length, dtype=dtype), mask], dim=-1)
        if sliding_window is not None:
            diagonal = past_key_values_length - sliding_window + 1
            context_mask = 1 - torch.triu(torch.ones_like(mask, dtype=torch.int), diagonal=diagonal)
            mask.masked_fill_(context_mask.bool(), torch.finfo(dtype).min)
        causal_4d_mask = mask[None, None, :, :].expand(bsz, 1, tgt_len, tgt_len + past_key_values_length)
    expanded_attn_mask = _expand_mask(attention_mask, dtype, tgt_len=tgt_len)
    if causal_4d_mask is not None:
        expanded_attn_mask = causal_4d_mask.masked_fill(expanded_attn_mask.bool(), torch.finfo(dtype).min)
    return expanded_attn_mask


class BloomAttention(nn.Module):
    def __init__(self, hidden_size, num_heads):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.inv_norm_factor = 1.0 / math.sqrt(self.head_dim)
        self.beta = 1.0
        self.query_key_value = nn.Linear(hidden_size, 3 * hidden_size, bias=True)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.attention_dropout = nn.Dropout(0.0)

    def _split_heads(self, fused_qkv):
        batch_size, seq_length, three_times_hidden_size = fused_qkv.shape
        fused_qkv = fused_qkv.view(batch_size, seq_length, self.num_heads, 3, self.head_dim)
        return fused_qkv[..., 0, :], fused_qkv[..., 1, :], fused_qkv[..., 2, :]

    def _merge_heads(self, x):
        batch_size_and_num_heads, seq_length, _ = x.shape
        batch_size = batch_size_and_num_heads // self.num_heads
        x = x.view(batch_size, self.num_heads, seq_length, self.head_dim)
        x = x.permute(0, 2, 1, 3)
        return x.reshape(batch_size, seq_length, self.num_heads * self.head_dim)

    def forward(self, hidden_states, residual, alibi, attention_mask):
        fused_qkv = self.query_key_value(hidden_states)
        (query_layer, key_layer, value_layer) = self._split_heads(fused_qkv)
        batch_size, q_length, _, _ = query_layer.shape
        query_layer = query_layer.transpose(1, 2).reshape(batch_size * self.num_heads, q_length, self.head_dim)
        key_layer = key_layer.permute(0, 2, 3, 1).reshape(batch_size * self.num_heads, self.head_dim, q_length)
        value_layer = value_layer.transpose(1, 2).reshape(batch_size * self.num_heads, q_length, self.head_dim)
        _, _, kv_length = key_layer.shape
        matmul_result = alibi.baddbmm(batch1=query_layer, batch2=key_layer, beta=self.beta, alpha=self.inv_norm_factor)
        attention_scores = matmul_result.view(batch_size, self.num_heads, q_length, kv_length)
        input_dtype = attention_scores.dtype
        attn_weights = torch.masked_fill(attention_scores, attention_mask, torch.finfo(attention_scores.dtype).min)
        attention_probs = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(input_dtype)
        attention_probs = self.attention_dropout(attention_probs)
        attention_probs_reshaped = attention_probs.view(batch_size * self.num_heads, q_length, kv_length)
        context_layer = torch.bmm(attention_probs_reshaped, value_layer)
        context_layer = self._merge_heads(context_layer)
        return self.dense(context_layer) + residual


class BloomBlock(nn.Module):
    def __init__(self, hidden_size, num_heads):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(hidden_size, eps=1e-5)
        self.self_attention = BloomAttention(hidden_size, num_heads)
        self.post_attention_layernorm = nn.LayerNorm(hidden_size, eps=1e-5)
        self.dense_h_to_4h = nn.Linear(hidden_size, 4 * hidden_size)
        self.dense_4h_to_h = nn.Linear(4 * hidden_size, hidden_size)

    def forward(self, hidden_states, alibi, attention_mask):
        layernorm_output = self.input_layernorm(hidden_states)
        attention_output = self.self_attention(layernorm_output, hidden_states, alibi, attention_mask)
        layernorm_output = self.post_attention_layernorm(attention_output)
        return self.dense_4h_to_h(_bloom_gelu(self.dense_h_to_4h(layernorm_output))) + attention_output


class Bloom(nn.Module):
    def __init__(self, vocab=128, hidden=64, heads=4, layers=2):
        super().__init__()
        self.num_heads = heads
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.word_embeddings_layernorm = nn.LayerNorm(hidden, eps=1e-5)
        self.h = nn.ModuleList([BloomBlock(hidden, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(hidden, eps=1e-5)

    def forward(self, input_ids, attention_mask):
        batch_size, seq_length = input_ids.shape
        hidden_states = self.word_embeddings_layernorm(self.word_embeddings(input_ids))
        alibi = build_alibi_tensor(attention_mask, self.num_heads, dtype=hidden_states.dtype)
        causal_mask = _prepare_4d_causal_attention_mask(attention_mask, (batch_size, seq_length),
                                                        hidden_states.dtype, past_key_values_length=0)
        causal_mask = causal_mask.bool()
        for block in self.h:
            hidden_states = block(hidden_states, alibi, causal_mask)
        return self.ln_f(hidden_states)


# --------------------------------------------------------------------------------------------
# torch.nn.MultiheadAttention / TransformerEncoder
# --------------------------------------------------------------------------------------------
class TorchMHA(nn.Module):
    """Self-attention through nn.MultiheadAttention with key padding and a causal float mask."""

    def __init__(self, vocab=128, embed_dim=64, num_heads=4, return_weights=False):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed_dim)
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
        self.return_weights = return_weights

    def forward(self, input_ids, attention_mask):
        x = self.embed(input_ids)
        sz = input_ids.shape[1]
        causal = torch.triu(torch.full((sz, sz), float("-inf")), diagonal=1)
        key_padding_mask = attention_mask == 0
        out, weights = self.attn(x, x, x, key_padding_mask=key_padding_mask, attn_mask=causal)
        return (out, weights) if self.return_weights else out


class TorchTransformerEncoder(nn.Module):
    def __init__(self, d_model=64, nhead=2, ffn=128, layers=2):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=ffn, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, inputs_embeds, attention_mask):
        return self.encoder(inputs_embeds, src_key_padding_mask=attention_mask == 0)


# --------------------------------------------------------------------------------------------
# ViT (HF): patch embeddings, pre-LN, Div attention, no mask
# --------------------------------------------------------------------------------------------
class ViTLayer(nn.Module):
    def __init__(self, hidden, heads, mlp):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(hidden, eps=1e-12)
        self.attention = BertSelfAttention(hidden, heads)
        self.attn_out = nn.Linear(hidden, hidden)
        self.layernorm_after = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Linear(hidden, mlp)
        self.output = nn.Linear(mlp, hidden)

    def forward(self, x):
        x = self.attn_out(self.attention(self.layernorm_before(x))) + x
        return self.output(F.gelu(self.intermediate(self.layernorm_after(x)))) + x


class ViT(nn.Module):
    def __init__(self, image=32, patch=8, channels=3, hidden=128, heads=2, mlp=128, layers=1):
        super().__init__()
        self.projection = nn.Conv2d(channels, hidden, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.position_embeddings = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, hidden) * 0.02)
        self.layers = nn.ModuleList([ViTLayer(hidden, heads, mlp) for _ in range(layers)])
        self.layernorm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, pixel_values):
        batch_size = pixel_values.shape[0]
        x = self.projection(pixel_values).flatten(2).transpose(1, 2)
        cls_tokens = self.cls_token.expand(batch_size, -1, -1)
        x = torch.cat((cls_tokens, x), dim=1) + self.position_embeddings
        for layer in self.layers:
            x = layer(x)
        return self.layernorm(x)


# --------------------------------------------------------------------------------------------
# scaled_dot_product_attention as torch >= 2.0's TorchScript exporter writes it (opset 14+)
# --------------------------------------------------------------------------------------------
INT64_MAX = 9223372036854775807


def _sdpa_reference(q, k, v, mask, is_causal):
    scale = 1.0 / math.sqrt(q.size(-1))
    w = torch.matmul(q, k.transpose(-2, -1)) * scale
    if is_causal:
        keep = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool).tril()
        w = w.masked_fill(~keep, float("-inf"))
    elif mask is not None:
        w = w.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else w + mask
    return torch.matmul(torch.softmax(w, dim=-1), v)


def _sdpa_symbolic(g, query, key, value, attn_mask, is_causal):
    # Same node sequence as symbolic_opset14.scaled_dot_product_attention (torch 2.x, scale=None,
    # dropout_p=0).
    query_shape = g.op("Shape", query)
    query_shape_last = g.op("Slice", query_shape,
                            g.op("Constant", value_t=torch.tensor([-1], dtype=torch.int64)),
                            g.op("Constant", value_t=torch.tensor([INT64_MAX], dtype=torch.int64)))
    embedding_size = g.op("Cast", query_shape_last, to_i=TensorProto.FLOAT)
    const_one = g.op("Constant", value_t=torch.tensor([1.0], dtype=torch.float))
    scale = g.op("Div", const_one, g.op("Sqrt", embedding_size))
    scale = g.op("Cast", scale, to_i=TensorProto.FLOAT)
    if is_causal:
        query_shape = g.op("Shape", query)
        key_shape = g.op("Shape", key)
        last_idx = g.op("Constant", value_t=torch.tensor([-1], dtype=torch.int64))
        second_last_idx = g.op("Constant", value_t=torch.tensor([-2], dtype=torch.int64))
        target_length = g.op("Slice", query_shape, second_last_idx, last_idx)
        source_length = g.op("Slice", key_shape, second_last_idx, last_idx)
        size = g.op("Concat", target_length, source_length, axis_i=0)
        ones = g.op("Expand", g.op("Constant", value_t=torch.tensor([1.0])), size)
        lower = g.op("Trilu", ones, upper_i=0)
        zero = g.op("Constant", value_t=torch.tensor([0.0]))
        neg_inf = g.op("Constant", value_t=torch.tensor([-float("inf")]))
        attn_mask = g.op("Where", g.op("Equal", lower, zero), neg_inf, zero)
    key_transposed = g.op("Transpose", key, perm_i=[0, 1, 3, 2])
    query_scaled = g.op("Mul", query, g.op("Sqrt", scale))
    key_transposed_scaled = g.op("Mul", key_transposed, g.op("Sqrt", scale))
    mul_qk = g.op("MatMul", query_scaled, key_transposed_scaled)
    if attn_mask is None:
        mul_qk_add = mul_qk
    elif not is_causal and attn_mask.type().scalarType() == "Bool":
        const_zero = g.op("Constant", value_t=torch.tensor([0.0]))
        const_neg_inf = g.op("Constant", value_t=torch.tensor([-float("inf")]))
        mul_qk_add = g.op("Add", mul_qk, g.op("Where", attn_mask, const_zero, const_neg_inf))
    else:
        mul_qk_add = g.op("Add", mul_qk, attn_mask)
    attn_weight = g.op("Softmax", mul_qk_add, axis_i=-1)
    return g.op("MatMul", attn_weight, value)


class _SdpaMasked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask):
        return _sdpa_reference(q, k, v, mask, False)

    @staticmethod
    def symbolic(g, q, k, v, mask):
        return _sdpa_symbolic(g, q, k, v, mask, False)


class _SdpaCausal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        return _sdpa_reference(q, k, v, None, True)

    @staticmethod
    def symbolic(g, q, k, v):
        return _sdpa_symbolic(g, q, k, v, None, True)


def scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False):
    if is_causal:
        return _SdpaCausal.apply(query, key, value)
    return _SdpaMasked.apply(query, key, value, attn_mask)


def _prepare_4d_attention_mask_for_sdpa(mask, dtype, tgt_len):
    return _expand_mask(mask, dtype, tgt_len)


class SdpaSelfAttention(BertSelfAttention):
    """HF BertSdpaSelfAttention: the BERT projections, SDPA in place of the eager math."""

    def forward(self, hidden_states, attention_mask=None, is_causal=False):
        bsz, tgt_len, _ = hidden_states.size()
        query_layer = self.transpose_for_scores(self.query(hidden_states))
        key_layer = self.transpose_for_scores(self.key(hidden_states))
        value_layer = self.transpose_for_scores(self.value(hidden_states))
        attn_output = scaled_dot_product_attention(query_layer, key_layer, value_layer,
                                                   attn_mask=attention_mask, is_causal=is_causal)
        attn_output = attn_output.transpose(1, 2)
        return attn_output.reshape(bsz, tgt_len, self.all_head_size)


class SdpaLayer(BertLayer):
    def __init__(self, hidden, heads, ffn):
        super().__init__(hidden, heads, ffn)
        self.self_attn = SdpaSelfAttention(hidden, heads)

    def forward(self, x, mask, is_causal=False):
        x = self.attn_norm(self.attn_out(self.self_attn(x, mask, is_causal)) + x)
        return self.out_norm(self.output(F.gelu(self.intermediate(x))) + x)


class SdpaEncoder(nn.Module):
    """mask_kind: 'float4d' (HF BERT sdpa), 'bool' (hand-written bool mask), 'causal' (is_causal)."""

    def __init__(self, mask_kind, vocab=128, hidden=64, heads=2, layers=2, ffn=128, max_pos=64):
        super().__init__()
        self.mask_kind = mask_kind
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_pos, hidden)
        self.emb_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList([SdpaLayer(hidden, heads, ffn) for _ in range(layers)])

    def forward(self, input_ids, attention_mask=None):
        seq_length = input_ids.size(1)
        position_ids = torch.arange(seq_length, dtype=torch.long).unsqueeze(0)
        x = self.emb_norm(self.word_embeddings(input_ids) + self.position_embeddings(position_ids))
        if self.mask_kind == "float4d":
            mask = _prepare_4d_attention_mask_for_sdpa(attention_mask, x.dtype, tgt_len=seq_length)
        elif self.mask_kind == "bool":
            mask = attention_mask.bool()[:, None, None, :]
        else:
            mask = None
        for layer in self.layers:
            x = layer(x, mask, is_causal=self.mask_kind == "causal")
        return x


# --------------------------------------------------------------------------------------------
# OpenAI Whisper: q*scale, k*scale with scale = (n_state // n_head) ** -0.25, K permute(0,2,3,1)
# --------------------------------------------------------------------------------------------
def _sinusoids(length, channels, max_timescale=10000):
    log_timescale_increment = np.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_timescale_increment * torch.arange(channels // 2))
    scaled_time = torch.arange(length)[:, np.newaxis] * inv_timescales[np.newaxis, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


class WhisperMultiHeadAttention(nn.Module):
    def __init__(self, n_state, n_head):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x, xa=None, mask=None):
        q = self.query(x)
        k = self.key(x if xa is None else xa)
        v = self.value(x if xa is None else xa)
        wv, qk = self.qkv_attention(q, k, v, mask)
        return self.out(wv), qk

    def qkv_attention(self, q, k, v, mask=None):
        n_batch, n_ctx, n_state = q.shape
        scale = (n_state // self.n_head) ** -0.25
        q = q.view(*q.shape[:2], self.n_head, -1).permute(0, 2, 1, 3) * scale
        k = k.view(*k.shape[:2], self.n_head, -1).permute(0, 2, 3, 1) * scale
        v = v.view(*v.shape[:2], self.n_head, -1).permute(0, 2, 1, 3)
        qk = q @ k
        if mask is not None:
            qk = qk + mask[:n_ctx, :n_ctx]
        qk = qk.float()
        w = F.softmax(qk, dim=-1).to(q.dtype)
        return (w @ v).permute(0, 2, 1, 3).flatten(start_dim=2), qk.detach()


class WhisperBlock(nn.Module):
    def __init__(self, n_state, n_head, cross_attention=False):
        super().__init__()
        self.attn = WhisperMultiHeadAttention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state)
        self.cross_attn = WhisperMultiHeadAttention(n_state, n_head) if cross_attention else None
        self.cross_attn_ln = nn.LayerNorm(n_state) if cross_attention else None
        self.mlp = nn.Sequential(nn.Linear(n_state, 2 * n_state), nn.GELU(), nn.Linear(2 * n_state, n_state))
        self.mlp_ln = nn.LayerNorm(n_state)

    def forward(self, x, xa=None, mask=None):
        x = x + self.attn(self.attn_ln(x), mask=mask)[0]
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.cross_attn_ln(x), xa)[0]
        return x + self.mlp(self.mlp_ln(x))


class WhisperOpenAI(nn.Module):
    def __init__(self, n_mels=16, n_audio_ctx=16, n_vocab=128, n_text_ctx=32, n_state=64, n_head=2):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", _sinusoids(n_audio_ctx, n_state))
        self.audio_block = WhisperBlock(n_state, n_head)
        self.ln_post = nn.LayerNorm(n_state)
        self.token_embedding = nn.Embedding(n_vocab, n_state)
        self.text_positional_embedding = nn.Parameter(torch.randn(n_text_ctx, n_state) * 0.02)
        self.text_block = WhisperBlock(n_state, n_head, cross_attention=True)
        self.ln = nn.LayerNorm(n_state)
        mask = torch.empty(n_text_ctx, n_text_ctx).fill_(-np.inf).triu_(1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, mel, tokens):
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x))
        x = x.permute(0, 2, 1)
        x = (x + self.positional_embedding).to(x.dtype)
        xa = self.ln_post(self.audio_block(x))
        y = self.token_embedding(tokens) + self.text_positional_embedding[: tokens.shape[-1]]
        return self.ln(self.text_block(y, xa, mask=self.mask))


# --------------------------------------------------------------------------------------------
# GPT-NeoX / Pythia (HF ~4.36 eager): fused QKV per head, partial rotary, torch.baddbmm on 3-D (B*H, S, D)
# tensors into a zeros tensor, view(B, H, S, T), causal torch.where on the bool buffer slice, + padding mask
# --------------------------------------------------------------------------------------------
class GPTNeoXRotaryEmbedding(nn.Module):
    def __init__(self, dim, max_position_embeddings, base=10000):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        t = torch.arange(max_position_embeddings, dtype=torch.int64).type_as(inv_freq)
        freqs = torch.outer(t, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_cached", emb.cos(), persistent=False)
        self.register_buffer("sin_cached", emb.sin(), persistent=False)

    def forward(self, x, seq_len):
        return self.cos_cached[:seq_len].to(dtype=x.dtype), self.sin_cached[:seq_len].to(dtype=x.dtype)


def neox_apply_rotary_pos_emb(q, k, cos, sin, position_ids, unsqueeze_dim=1):
    cos = cos[position_ids].unsqueeze(unsqueeze_dim)
    sin = sin[position_ids].unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


class GPTNeoXAttention(nn.Module):
    def __init__(self, hidden_size, num_heads, rotary_pct, max_positions):
        super().__init__()
        self.num_attention_heads = num_heads
        self.hidden_size = hidden_size
        self.head_size = hidden_size // num_heads
        self.rotary_ndims = int(self.head_size * rotary_pct)
        self.register_buffer("bias", torch.tril(torch.ones((max_positions, max_positions), dtype=torch.bool)).view(
            1, 1, max_positions, max_positions), persistent=False)
        self.rotary_emb = GPTNeoXRotaryEmbedding(self.rotary_ndims, max_positions)
        self.norm_factor = self.head_size ** -0.5
        self.query_key_value = nn.Linear(hidden_size, 3 * hidden_size)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.attention_dropout = nn.Dropout(0.0)

    def forward(self, hidden_states, attention_mask, position_ids):
        qkv = self.query_key_value(hidden_states)
        new_qkv_shape = qkv.size()[:-1] + (self.num_attention_heads, 3 * self.head_size)
        qkv = qkv.view(*new_qkv_shape)
        query = qkv[..., : self.head_size].permute(0, 2, 1, 3)
        key = qkv[..., self.head_size: 2 * self.head_size].permute(0, 2, 1, 3)
        value = qkv[..., 2 * self.head_size:].permute(0, 2, 1, 3)
        query_rot = query[..., : self.rotary_ndims]
        query_pass = query[..., self.rotary_ndims:]
        key_rot = key[..., : self.rotary_ndims]
        key_pass = key[..., self.rotary_ndims:]
        seq_len = key.shape[-2]
        cos, sin = self.rotary_emb(value, seq_len=seq_len)
        query, key = neox_apply_rotary_pos_emb(query_rot, key_rot, cos, sin, position_ids)
        query = torch.cat((query, query_pass), dim=-1)
        key = torch.cat((key, key_pass), dim=-1)
        attn_output = self._attn(query, key, value, attention_mask)
        attn_output = self._merge_heads(attn_output)
        return self.dense(attn_output)

    def _merge_heads(self, tensor):
        tensor = tensor.permute(0, 2, 1, 3).contiguous()
        return tensor.view(tensor.size(0), tensor.size(1), self.num_attention_heads * self.head_size)

    def _attn(self, query, key, value, attention_mask=None):
        batch_size, num_attention_heads, query_length, attn_head_size = query.size()
        key_length = key.size(-2)
        causal_mask = self.bias[:, :, key_length - query_length: key_length, :key_length]
        query = query.view(batch_size * num_attention_heads, query_length, attn_head_size)
        key = key.view(batch_size * num_attention_heads, key_length, attn_head_size)
        attn_scores = torch.zeros(batch_size * num_attention_heads, query_length, key_length, dtype=query.dtype,
                                  device=key.device)
        attn_scores = torch.baddbmm(attn_scores, query, key.transpose(1, 2), beta=1.0, alpha=self.norm_factor)
        attn_scores = attn_scores.view(batch_size, num_attention_heads, query_length, key_length)
        mask_value = torch.finfo(attn_scores.dtype).min
        mask_value = torch.tensor(mask_value, dtype=attn_scores.dtype).to(attn_scores.device)
        attn_scores = torch.where(causal_mask, attn_scores, mask_value)
        if attention_mask is not None:
            attn_scores = attn_scores + attention_mask
        attn_weights = nn.functional.softmax(attn_scores, dim=-1)
        attn_weights = attn_weights.to(value.dtype)
        attn_weights = self.attention_dropout(attn_weights)
        return torch.matmul(attn_weights, value)


class GPTNeoXLayer(nn.Module):
    def __init__(self, hidden, heads, rotary_pct, max_positions):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(hidden, eps=1e-5)
        self.post_attention_layernorm = nn.LayerNorm(hidden, eps=1e-5)
        self.attention = GPTNeoXAttention(hidden, heads, rotary_pct, max_positions)
        self.dense_h_to_4h = nn.Linear(hidden, 4 * hidden)
        self.dense_4h_to_h = nn.Linear(4 * hidden, hidden)

    def forward(self, hidden_states, attention_mask, position_ids):
        attn_output = self.attention(self.input_layernorm(hidden_states), attention_mask, position_ids)
        # use_parallel_residual (Pythia): x + attn(ln1(x)) + mlp(ln2(x))
        mlp_output = self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(self.post_attention_layernorm(hidden_states))))
        return mlp_output + attn_output + hidden_states


class GPTNeoX(nn.Module):
    def __init__(self, vocab=128, hidden=64, heads=4, layers=2, rotary_pct=0.25, max_positions=64):
        super().__init__()
        self.embed_in = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList([GPTNeoXLayer(hidden, heads, rotary_pct, max_positions) for _ in range(layers)])
        self.final_layer_norm = nn.LayerNorm(hidden, eps=1e-5)

    def forward(self, input_ids, attention_mask):
        batch_size, seq_length = input_ids.shape
        position_ids = torch.arange(0, seq_length, dtype=torch.long).unsqueeze(0)
        attention_mask = attention_mask.view(batch_size, -1)
        attention_mask = attention_mask[:, None, None, :]
        attention_mask = attention_mask.to(dtype=self.embed_in.weight.dtype)
        attention_mask = (1.0 - attention_mask) * torch.finfo(self.embed_in.weight.dtype).min
        hidden_states = self.embed_in(input_ids)
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, position_ids)
        return self.final_layer_norm(hidden_states)


# --------------------------------------------------------------------------------------------
# OPT (HF ~4.30): BART's attention with a clamp: view -> + mask -> torch.max(w, finfo.min) -> view
# --------------------------------------------------------------------------------------------
class OPTAttention(BartAttention):
    def forward(self, hidden_states, attention_mask=None):
        bsz, tgt_len, _ = hidden_states.size()
        query_states = self.q_proj(hidden_states) * self.scaling
        key_states = self._shape(self.k_proj(hidden_states), -1, bsz)
        value_states = self._shape(self.v_proj(hidden_states), -1, bsz)
        proj_shape = (bsz * self.num_heads, -1, self.head_dim)
        query_states = self._shape(query_states, tgt_len, bsz).view(*proj_shape)
        key_states = key_states.view(*proj_shape)
        value_states = value_states.view(*proj_shape)
        src_len = key_states.size(1)
        attn_weights = torch.bmm(query_states, key_states.transpose(1, 2))
        if attention_mask is not None:
            attn_weights = attn_weights.view(bsz, self.num_heads, tgt_len, src_len) + attention_mask
            attn_weights = torch.max(attn_weights, torch.tensor(torch.finfo(attn_weights.dtype).min))
            attn_weights = attn_weights.view(bsz * self.num_heads, tgt_len, src_len)
        attn_weights = nn.functional.softmax(attn_weights, dim=-1)
        attn_probs = nn.functional.dropout(attn_weights, p=0.0, training=self.training)
        attn_output = torch.bmm(attn_probs, value_states)
        attn_output = attn_output.view(bsz, self.num_heads, tgt_len, self.head_dim)
        attn_output = attn_output.transpose(1, 2)
        attn_output = attn_output.reshape(bsz, tgt_len, self.embed_dim)
        return self.out_proj(attn_output)


class OPTDecoderLayer(nn.Module):
    def __init__(self, d, heads, ffn):
        super().__init__()
        self.self_attn = OPTAttention(d, heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, x, mask):
        # do_layer_norm_before=True (every OPT size but 350m)
        x = x + self.self_attn(self.self_attn_layer_norm(x), attention_mask=mask)
        return x + self.fc2(F.relu(self.fc1(self.final_layer_norm(x))))


class OPTLearnedPositionalEmbedding(nn.Embedding):
    offset = 2

    def __init__(self, num_embeddings, embedding_dim):
        super().__init__(num_embeddings + self.offset, embedding_dim)

    def forward(self, attention_mask, past_key_values_length=0):
        attention_mask = attention_mask.long()
        positions = (torch.cumsum(attention_mask, dim=1).type_as(attention_mask) * attention_mask).long() - 1
        positions = positions[:, past_key_values_length:]
        return super().forward(positions + self.offset)


class OPT(nn.Module):
    def __init__(self, vocab=128, d=64, heads=2, ffn=128, layers=2, max_pos=64):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.embed_positions = OPTLearnedPositionalEmbedding(max_pos, d)
        self.layers = nn.ModuleList([OPTDecoderLayer(d, heads, ffn) for _ in range(layers)])
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, input_ids, attention_mask):
        input_shape = input_ids.size()
        inputs_embeds = self.embed_tokens(input_ids)
        # _prepare_decoder_attention_mask: the causal and the padding mask, each finfo.min where hidden, summed
        # (finfo.min + finfo.min = -inf where both hide; the clamp in the attention turns that back into finfo.min).
        combined_attention_mask = _make_causal_mask(input_shape, inputs_embeds.dtype)
        expanded_attn_mask = _expand_mask(attention_mask, inputs_embeds.dtype, tgt_len=input_shape[-1])
        causal_attention_mask = expanded_attn_mask + combined_attention_mask
        x = inputs_embeds + self.embed_positions(attention_mask)
        for layer in self.layers:
            x = layer(x, causal_attention_mask)
        return self.final_layer_norm(x)


# --------------------------------------------------------------------------------------------
# CLIP text encoder (HF ~4.30): BART-style 3-D attention with the causal and the padding mask added
# one after the other, each through its own view(B, H, S, T) -> + mask -> view(B*H, S, T)
# --------------------------------------------------------------------------------------------
class CLIPAttention(BartAttention):
    def __init__(self, embed_dim, num_heads):
        super().__init__(embed_dim, num_heads)
        self.scale = self.head_dim ** -0.5

    def forward(self, hidden_states, attention_mask=None, causal_attention_mask=None):
        bsz, tgt_len, embed_dim = hidden_states.size()
        query_states = self.q_proj(hidden_states) * self.scale
        key_states = self._shape(self.k_proj(hidden_states), -1, bsz)
        value_states = self._shape(self.v_proj(hidden_states), -1, bsz)
        proj_shape = (bsz * self.num_heads, -1, self.head_dim)
        query_states = self._shape(query_states, tgt_len, bsz).view(*proj_shape)
        key_states = key_states.view(*proj_shape)
        value_states = value_states.view(*proj_shape)
        src_len = key_states.size(1)
        attn_weights = torch.bmm(query_states, key_states.transpose(1, 2))
        if causal_attention_mask is not None:
            attn_weights = attn_weights.view(bsz, self.num_heads, tgt_len, src_len) + causal_attention_mask
            attn_weights = attn_weights.view(bsz * self.num_heads, tgt_len, src_len)
        if attention_mask is not None:
            attn_weights = attn_weights.view(bsz, self.num_heads, tgt_len, src_len) + attention_mask
            attn_weights = attn_weights.view(bsz * self.num_heads, tgt_len, src_len)
        attn_weights = nn.functional.softmax(attn_weights, dim=-1)
        attn_probs = nn.functional.dropout(attn_weights, p=0.0, training=self.training)
        attn_output = torch.bmm(attn_probs, value_states)
        attn_output = attn_output.view(bsz, self.num_heads, tgt_len, self.head_dim)
        attn_output = attn_output.transpose(1, 2)
        attn_output = attn_output.reshape(bsz, tgt_len, embed_dim)
        return self.out_proj(attn_output)


def _quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class CLIPEncoderLayer(nn.Module):
    def __init__(self, d, heads, ffn):
        super().__init__()
        self.self_attn = CLIPAttention(d, heads)
        self.layer_norm1 = nn.LayerNorm(d, eps=1e-5)
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.layer_norm2 = nn.LayerNorm(d, eps=1e-5)

    def forward(self, x, attention_mask, causal_attention_mask):
        x = x + self.self_attn(self.layer_norm1(x), attention_mask, causal_attention_mask)
        return x + self.fc2(_quick_gelu(self.fc1(self.layer_norm2(x))))


class CLIPTextTransformer(nn.Module):
    def __init__(self, vocab=128, d=64, heads=4, ffn=128, layers=2, max_pos=32):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, d)
        self.position_embedding = nn.Embedding(max_pos, d)
        self.register_buffer("position_ids", torch.arange(max_pos).expand((1, -1)))
        self.layers = nn.ModuleList([CLIPEncoderLayer(d, heads, ffn) for _ in range(layers)])
        self.final_layer_norm = nn.LayerNorm(d, eps=1e-5)

    @staticmethod
    def _build_causal_attention_mask(bsz, seq_len, dtype):
        mask = torch.empty(bsz, seq_len, seq_len, dtype=dtype)
        mask.fill_(torch.tensor(torch.finfo(dtype).min))
        mask.triu_(1)
        return mask.unsqueeze(1)

    def forward(self, input_ids, attention_mask):
        bsz, seq_len = input_ids.shape
        position_ids = self.position_ids[:, :seq_len]
        x = self.token_embedding(input_ids) + self.position_embedding(position_ids)
        causal_attention_mask = self._build_causal_attention_mask(bsz, seq_len, x.dtype)
        mask = _expand_mask(attention_mask, x.dtype)
        for layer in self.layers:
            x = layer(x, mask, causal_attention_mask)
        return self.final_layer_norm(x)


# --------------------------------------------------------------------------------------------
# Gemma-2 (HF ~4.44 eager): GQA, scaling = query_pre_attn_scalar ** -0.5, logit softcapping tanh(w / c) * c,
# 4-D causal mask, sliding-window layers (every even layer) hide keys j <= i - window with torch.where
# --------------------------------------------------------------------------------------------
class Gemma2RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.randn(dim) * 0.1)

    def forward(self, x):
        output = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return (output * (1.0 + self.weight.float())).type_as(x)


class Gemma2Attention(nn.Module):
    def __init__(self, hidden, heads, kv_heads, head_dim, query_pre_attn_scalar, softcap, sliding_window):
        super().__init__()
        self.num_heads = heads
        self.num_key_value_heads = kv_heads
        self.num_key_value_groups = heads // kv_heads
        self.head_dim = head_dim
        self.scaling = query_pre_attn_scalar ** -0.5
        self.attn_logit_softcapping = softcap
        self.sliding_window = sliding_window
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=False)

    def forward(self, hidden_states, position_embeddings, attention_mask):
        bsz, q_len, _ = hidden_states.size()
        query_states = self.q_proj(hidden_states).view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        key_states = repeat_kv(key_states, self.num_key_value_groups)
        value_states = repeat_kv(value_states, self.num_key_value_groups)
        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) * self.scaling
        if self.attn_logit_softcapping is not None:
            attn_weights = attn_weights / self.attn_logit_softcapping
            attn_weights = torch.tanh(attn_weights)
            attn_weights = attn_weights * self.attn_logit_softcapping
        if attention_mask is not None:
            causal_mask = attention_mask[:, :, :, : key_states.shape[-2]]
            attn_weights = attn_weights + causal_mask
        attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attn_output = torch.matmul(attn_weights, value_states)
        attn_output = attn_output.transpose(1, 2).contiguous().view(bsz, q_len, -1)
        return self.o_proj(attn_output)


class Gemma2DecoderLayer(nn.Module):
    def __init__(self, hidden, heads, kv_heads, head_dim, intermediate, query_pre_attn_scalar, softcap, sliding_window,
                 layer_idx):
        super().__init__()
        self.is_sliding = not bool(layer_idx % 2)
        self.sliding_window = sliding_window
        self.self_attn = Gemma2Attention(hidden, heads, kv_heads, head_dim, query_pre_attn_scalar, softcap,
                                         sliding_window if self.is_sliding else None)
        self.input_layernorm = Gemma2RMSNorm(hidden)
        self.post_attention_layernorm = Gemma2RMSNorm(hidden)
        self.pre_feedforward_layernorm = Gemma2RMSNorm(hidden)
        self.post_feedforward_layernorm = Gemma2RMSNorm(hidden)
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, hidden_states, position_embeddings, attention_mask):
        if self.is_sliding and attention_mask is not None:
            min_dtype = torch.finfo(hidden_states.dtype).min
            sliding_window_mask = torch.tril(torch.ones_like(attention_mask, dtype=torch.bool),
                                             diagonal=-self.sliding_window)
            # HF writes torch.where(sliding_window_mask, min_dtype, attention_mask). torch 1.13 exports that Where with
            # a float64 fill next to the float32 mask, a model ONNX Runtime refuses to load (and casts the scores to
            # float64 to add it); masked_fill computes the same and exports the float32 Where newer exporters give.
            attention_mask = attention_mask.masked_fill(sliding_window_mask, min_dtype)
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states = self.self_attn(hidden_states, position_embeddings, attention_mask)
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.pre_feedforward_layernorm(hidden_states)
        hidden_states = self.down_proj(F.gelu(self.gate_proj(hidden_states), approximate="tanh") *
                                       self.up_proj(hidden_states))
        hidden_states = self.post_feedforward_layernorm(hidden_states)
        return residual + hidden_states


class Gemma2(nn.Module):
    def __init__(self, vocab=128, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128, layers=2,
                 query_pre_attn_scalar=24, softcap=5.0, sliding_window=4):
        super().__init__()
        self.hidden = hidden
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList([Gemma2DecoderLayer(hidden, heads, kv_heads, head_dim, intermediate,
                                                        query_pre_attn_scalar, softcap, sliding_window, i)
                                     for i in range(layers)])
        self.norm = Gemma2RMSNorm(hidden)
        self.rotary_emb = LlamaRotaryEmbedding(head_dim)

    def forward(self, input_ids, attention_mask):
        inputs_embeds = self.embed_tokens(input_ids)
        cache_position = torch.arange(0, inputs_embeds.shape[1])
        position_ids = cache_position.unsqueeze(0)
        causal_mask = Llama._prepare_4d_causal_attention_mask_with_cache_position(
            attention_mask, inputs_embeds.shape[1], attention_mask.shape[-1], inputs_embeds.dtype,
            cache_position, inputs_embeds.shape[0])
        normalizer = torch.tensor(self.hidden ** 0.5, dtype=inputs_embeds.dtype)
        x = inputs_embeds * normalizer
        position_embeddings = self.rotary_emb(x, position_ids)
        for layer in self.layers:
            x = layer(x, position_embeddings, causal_mask)
        return self.norm(x)


# --------------------------------------------------------------------------------------------
# BLOOM with a KV cache (HF ~4.40): past_key (B*H, D, P) and past_value (B*H, P, D) concatenated on the
# 3-D layout (key on dim 2, value on dim 1), ALiBi and the causal+padding mask over all P + S keys
# --------------------------------------------------------------------------------------------
class BloomAttentionPast(BloomAttention):
    def forward(self, hidden_states, residual, alibi, attention_mask, past_key, past_value):
        fused_qkv = self.query_key_value(hidden_states)
        (query_layer, key_layer, value_layer) = self._split_heads(fused_qkv)
        batch_size, q_length, _, _ = query_layer.shape
        query_layer = query_layer.transpose(1, 2).reshape(batch_size * self.num_heads, q_length, self.head_dim)
        key_layer = key_layer.permute(0, 2, 3, 1).reshape(batch_size * self.num_heads, self.head_dim, q_length)
        value_layer = value_layer.transpose(1, 2).reshape(batch_size * self.num_heads, q_length, self.head_dim)
        key_layer = torch.cat((past_key, key_layer), dim=2)
        value_layer = torch.cat((past_value, value_layer), dim=1)
        present = (key_layer, value_layer)
        _, _, kv_length = key_layer.shape
        matmul_result = alibi.baddbmm(batch1=query_layer, batch2=key_layer, beta=self.beta, alpha=self.inv_norm_factor)
        attention_scores = matmul_result.view(batch_size, self.num_heads, q_length, kv_length)
        input_dtype = attention_scores.dtype
        attn_weights = torch.masked_fill(attention_scores, attention_mask, torch.finfo(attention_scores.dtype).min)
        attention_probs = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(input_dtype)
        attention_probs = self.attention_dropout(attention_probs)
        attention_probs_reshaped = attention_probs.view(batch_size * self.num_heads, q_length, kv_length)
        context_layer = torch.bmm(attention_probs_reshaped, value_layer)
        context_layer = self._merge_heads(context_layer)
        return self.dense(context_layer) + residual, present


class BloomBlockPast(BloomBlock):
    def __init__(self, hidden_size, num_heads):
        super().__init__(hidden_size, num_heads)
        self.self_attention = BloomAttentionPast(hidden_size, num_heads)

    def forward(self, hidden_states, alibi, attention_mask, past_key, past_value):
        layernorm_output = self.input_layernorm(hidden_states)
        attention_output, present = self.self_attention(layernorm_output, hidden_states, alibi, attention_mask,
                                                        past_key, past_value)
        layernorm_output = self.post_attention_layernorm(attention_output)
        return self.dense_4h_to_h(_bloom_gelu(self.dense_h_to_4h(layernorm_output))) + attention_output, present


class BloomPast(Bloom):
    def __init__(self, vocab=128, hidden=64, heads=4, layers=2):
        super().__init__(vocab, hidden, heads, layers)
        self.h = nn.ModuleList([BloomBlockPast(hidden, heads) for _ in range(layers)])

    def forward(self, input_ids, attention_mask, *past):
        batch_size, seq_length = input_ids.shape
        past_key_values_length = past[0].shape[2]
        hidden_states = self.word_embeddings_layernorm(self.word_embeddings(input_ids))
        alibi = build_alibi_tensor(attention_mask, self.num_heads, dtype=hidden_states.dtype)
        causal_mask = _prepare_4d_causal_attention_mask(attention_mask, (batch_size, seq_length),
                                                        hidden_states.dtype, past_key_values_length)
        causal_mask = causal_mask.bool()
        presents = []
        for i, block in enumerate(self.h):
            hidden_states, present = block(hidden_states, alibi, causal_mask, past[2 * i], past[2 * i + 1])
            presents.extend(present)
        return (self.ln_f(hidden_states), *presents)


# --------------------------------------------------------------------------------------------
# Stable Diffusion UNet transformer block (diffusers ~0.2x): Transformer2DModel around one
# BasicTransformerBlock, attention as the classic AttnProcessor computes it
# --------------------------------------------------------------------------------------------
class DiffusersAttention(nn.Module):
    def __init__(self, query_dim, cross_attention_dim=None, heads=8, dim_head=64, upcast_softmax=False):
        super().__init__()
        inner_dim = dim_head * heads
        cross_attention_dim = cross_attention_dim if cross_attention_dim is not None else query_dim
        self.upcast_softmax = upcast_softmax
        self.rescale_output_factor = 1.0
        self.scale = dim_head ** -0.5
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(cross_attention_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(cross_attention_dim, inner_dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim), nn.Dropout(0.0)])

    def head_to_batch_dim(self, tensor):
        head_size = self.heads
        batch_size, seq_len, dim = tensor.shape
        tensor = tensor.reshape(batch_size, seq_len, head_size, dim // head_size)
        tensor = tensor.permute(0, 2, 1, 3)
        return tensor.reshape(batch_size * head_size, seq_len, dim // head_size)

    def batch_to_head_dim(self, tensor):
        head_size = self.heads
        batch_size, seq_len, dim = tensor.shape
        tensor = tensor.reshape(batch_size // head_size, head_size, seq_len, dim)
        return tensor.permute(0, 2, 1, 3).reshape(batch_size // head_size, seq_len, dim * head_size)

    def get_attention_scores(self, query, key):
        dtype = query.dtype
        baddbmm_input = torch.empty(query.shape[0], query.shape[1], key.shape[1], dtype=query.dtype,
                                    device=query.device)
        attention_scores = torch.baddbmm(baddbmm_input, query, key.transpose(-1, -2), beta=0, alpha=self.scale)
        if self.upcast_softmax:
            attention_scores = attention_scores.float()
        attention_probs = attention_scores.softmax(dim=-1)
        return attention_probs.to(dtype)

    def forward(self, hidden_states, encoder_hidden_states=None):
        # AttnProcessor.__call__ without a mask (attention_mask None), group norm or spatial norm
        query = self.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        key = self.to_k(encoder_hidden_states)
        value = self.to_v(encoder_hidden_states)
        query = self.head_to_batch_dim(query)
        key = self.head_to_batch_dim(key)
        value = self.head_to_batch_dim(value)
        attention_probs = self.get_attention_scores(query, key)
        hidden_states = torch.bmm(attention_probs, value)
        hidden_states = self.batch_to_head_dim(hidden_states)
        hidden_states = self.to_out[1](self.to_out[0](hidden_states))
        return hidden_states / self.rescale_output_factor


class GEGLU(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, hidden_states):
        hidden_states, gate = self.proj(hidden_states).chunk(2, dim=-1)
        return hidden_states * F.gelu(gate)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, dim_head, cross_attention_dim, upcast_softmax, mult=4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = DiffusersAttention(dim, heads=heads, dim_head=dim_head, upcast_softmax=upcast_softmax)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = DiffusersAttention(dim, cross_attention_dim=cross_attention_dim, heads=heads, dim_head=dim_head,
                                        upcast_softmax=upcast_softmax)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, hidden_states, encoder_hidden_states):
        hidden_states = self.attn1(self.norm1(hidden_states)) + hidden_states
        hidden_states = self.attn2(self.norm2(hidden_states), encoder_hidden_states=encoder_hidden_states) + hidden_states
        ff_output = self.norm3(hidden_states)
        for module in self.ff:
            ff_output = module(ff_output)
        return ff_output + hidden_states


class Transformer2DModel(nn.Module):
    """Continuous input, use_linear_projection=False (SD 1.x): GroupNorm, 1x1 conv proj_in, (B, h*w, C)."""

    def __init__(self, in_channels=64, heads=2, dim_head=32, cross_attention_dim=48, norm_num_groups=32,
                 upcast_softmax=True):
        super().__init__()
        inner_dim = heads * dim_head
        self.norm = nn.GroupNorm(num_groups=norm_num_groups, num_channels=in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(in_channels, inner_dim, kernel_size=1, stride=1, padding=0)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner_dim, heads, dim_head, cross_attention_dim, upcast_softmax)])
        self.proj_out = nn.Conv2d(inner_dim, in_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, sample, encoder_hidden_states):
        batch, _, height, width = sample.shape
        residual = sample
        hidden_states = self.proj_in(self.norm(sample))
        inner_dim = hidden_states.shape[1]
        hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch, height * width, inner_dim)
        for block in self.transformer_blocks:
            hidden_states = block(hidden_states, encoder_hidden_states)
        hidden_states = hidden_states.reshape(batch, height, width, inner_dim).permute(0, 3, 1, 2).contiguous()
        return self.proj_out(hidden_states) + residual


# --------------------------------------------------------------------------------------------
# DeBERTa-v2 / v3 (HF ~4.3x): disentangled attention with c2p + p2c relative terms, XSoftmax
# --------------------------------------------------------------------------------------------
def deberta_log_bucket_position(relative_pos, bucket_size, max_position):
    # make_log_bucket_position: distances below bucket_size // 2 stay exact, longer ones share
    # log-spaced buckets.
    sign = torch.sign(relative_pos)
    mid = bucket_size // 2
    abs_pos = torch.where((relative_pos < mid) & (relative_pos > -mid),
                          torch.tensor(mid - 1).type_as(relative_pos), torch.abs(relative_pos))
    log_pos = torch.ceil(torch.log(abs_pos / mid) / torch.log(torch.tensor((max_position - 1) / mid))
                         * (mid - 1)) + mid
    return torch.where(abs_pos <= mid, relative_pos.type_as(log_pos), log_pos * sign)


def deberta_build_relative_position(query_size, key_size, bucket_size=-1, max_position=-1):
    q_ids = torch.arange(0, query_size)
    k_ids = torch.arange(0, key_size)
    rel_pos_ids = q_ids[:, None] - k_ids[None, :]
    if bucket_size > 0 and max_position > 0:
        rel_pos_ids = deberta_log_bucket_position(rel_pos_ids, bucket_size, max_position)
    rel_pos_ids = rel_pos_ids.to(torch.long)
    rel_pos_ids = rel_pos_ids[:query_size, :]
    return rel_pos_ids.unsqueeze(0)


class XSoftmax(torch.autograd.Function):
    """HF DeBERTa's masked softmax: hidden scores filled with finfo.min, softmax, hidden probabilities
    set to 0 (so a query row whose keys are all hidden gives zeros). Its `symbolic` is HF's own ONNX
    form: r_mask = Cast(BOOL, Sub(1, Cast(INT64, mask))), Where(r_mask, finfo.min, x), Softmax,
    Where(r_mask, 0, p), each masked_fill casting its mask to BOOL once more as opset 9's does."""

    @staticmethod
    def forward(ctx, scores, mask, dim):
        hidden = ~(mask.to(torch.bool))
        probs = torch.softmax(scores.masked_fill(hidden, torch.tensor(torch.finfo(scores.dtype).min)), dim)
        probs.masked_fill_(hidden, 0)
        return probs

    @staticmethod
    def symbolic(g, scores, mask, dim):
        as_long = g.op("Cast", mask, to_i=TensorProto.INT64)
        hidden = g.op("Cast", g.op("Sub", g.op("Constant", value_t=torch.tensor(1, dtype=torch.int64)), as_long),
                      to_i=TensorProto.BOOL)
        fill = g.op("Constant", value_t=torch.tensor(torch.finfo(torch.float32).min))
        filled = g.op("Where", g.op("Cast", hidden, to_i=TensorProto.BOOL), fill, scores)
        rank = scores.type().dim()
        axis = dim + rank if dim < 0 and rank is not None else dim
        probs = g.op("Softmax", filled, axis_i=axis)
        zero = g.op("Constant", value_t=torch.tensor(0.0))
        return g.op("Where", g.op("Cast", hidden, to_i=TensorProto.BOOL), zero, probs)


class DebertaV2DisentangledSelfAttention(nn.Module):
    def __init__(self, hidden, heads, position_buckets, max_relative_positions, pos_att_type=("p2c", "c2p")):
        super().__init__()
        self.num_attention_heads = heads
        self.query_proj = nn.Linear(hidden, hidden)
        self.key_proj = nn.Linear(hidden, hidden)
        self.value_proj = nn.Linear(hidden, hidden)
        self.pos_att_type = list(pos_att_type)
        self.position_buckets = position_buckets
        self.max_relative_positions = max_relative_positions
        self.pos_ebd_size = position_buckets if position_buckets > 0 else max_relative_positions
        self.share_att_key = True  # v3: positions go through query_proj/key_proj too

    def transpose_for_scores(self, x, attention_heads):
        x = x.view(x.size()[:-1] + (attention_heads, -1))
        return x.permute(0, 2, 1, 3).contiguous().view(-1, x.size(1), x.size(-1))

    def forward(self, hidden_states, attention_mask, relative_pos, rel_embeddings):
        query_layer = self.transpose_for_scores(self.query_proj(hidden_states), self.num_attention_heads)
        key_layer = self.transpose_for_scores(self.key_proj(hidden_states), self.num_attention_heads)
        value_layer = self.transpose_for_scores(self.value_proj(hidden_states), self.num_attention_heads)
        scale_factor = 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)
        scale = torch.sqrt(torch.tensor(query_layer.size(-1), dtype=torch.float) * scale_factor)
        attention_scores = torch.bmm(query_layer, key_layer.transpose(-1, -2) / scale.to(dtype=query_layer.dtype))
        rel_att = self.disentangled_attention_bias(query_layer, key_layer, relative_pos, rel_embeddings, scale_factor)
        attention_scores = attention_scores + rel_att
        attention_scores = attention_scores.view(-1, self.num_attention_heads, attention_scores.size(-2),
                                                 attention_scores.size(-1))
        attention_probs = XSoftmax.apply(attention_scores, attention_mask, -1)
        context_layer = torch.bmm(attention_probs.view(-1, attention_probs.size(-2), attention_probs.size(-1)),
                                  value_layer)
        context_layer = context_layer.view(-1, self.num_attention_heads, context_layer.size(-2),
                                           context_layer.size(-1)).permute(0, 2, 1, 3).contiguous()
        return context_layer.view(context_layer.size()[:-2] + (-1,))

    def disentangled_attention_bias(self, query_layer, key_layer, relative_pos, rel_embeddings, scale_factor):
        relative_pos = relative_pos.unsqueeze(0).unsqueeze(0) if relative_pos.dim() == 2 else relative_pos.unsqueeze(1)
        att_span = self.pos_ebd_size
        relative_pos = relative_pos.long()
        rel_embeddings = rel_embeddings[0:att_span * 2, :].unsqueeze(0)
        repeats = query_layer.size(0) // self.num_attention_heads
        pos_query_layer = self.transpose_for_scores(self.query_proj(rel_embeddings),
                                                    self.num_attention_heads).repeat(repeats, 1, 1)
        pos_key_layer = self.transpose_for_scores(self.key_proj(rel_embeddings),
                                                  self.num_attention_heads).repeat(repeats, 1, 1)
        score = 0
        if "c2p" in self.pos_att_type:
            # content -> position: query i against the embedding of its distance to key j
            scale = torch.sqrt(torch.tensor(pos_key_layer.size(-1), dtype=torch.float) * scale_factor)
            c2p_att = torch.bmm(query_layer, pos_key_layer.transpose(-1, -2))
            c2p_pos = torch.clamp(relative_pos + att_span, 0, att_span * 2 - 1)
            c2p_att = torch.gather(c2p_att, dim=-1, index=c2p_pos.squeeze(0).expand(
                [query_layer.size(0), query_layer.size(1), relative_pos.size(-1)]))
            score += c2p_att / scale.to(dtype=c2p_att.dtype)
        if "p2c" in self.pos_att_type:
            # position -> content: key j against the embedding of the (negated) distance, transposed
            scale = torch.sqrt(torch.tensor(pos_query_layer.size(-1), dtype=torch.float) * scale_factor)
            if key_layer.size(-2) != query_layer.size(-2):
                r_pos = deberta_build_relative_position(key_layer.size(-2), key_layer.size(-2),
                                                        self.position_buckets, self.max_relative_positions)
                r_pos = r_pos.unsqueeze(0)
            else:
                r_pos = relative_pos
            p2c_pos = torch.clamp(-r_pos + att_span, 0, att_span * 2 - 1)
            p2c_att = torch.bmm(key_layer, pos_query_layer.transpose(-1, -2))
            p2c_att = torch.gather(p2c_att, dim=-1, index=p2c_pos.squeeze(0).expand(
                [query_layer.size(0), key_layer.size(-2), key_layer.size(-2)])).transpose(-1, -2)
            score += p2c_att / scale.to(dtype=p2c_att.dtype)
        return score


class DebertaV2Layer(nn.Module):
    def __init__(self, hidden, heads, ffn, position_buckets, max_relative_positions):
        super().__init__()
        self.self_attn = DebertaV2DisentangledSelfAttention(hidden, heads, position_buckets, max_relative_positions)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-7)
        self.intermediate = nn.Linear(hidden, ffn)
        self.output = nn.Linear(ffn, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=1e-7)

    def forward(self, x, mask, relative_pos, rel_embeddings):
        x = self.attn_norm(self.attn_out(self.self_attn(x, mask, relative_pos, rel_embeddings)) + x)
        return self.out_norm(self.output(F.gelu(self.intermediate(x))) + x)


class DebertaV2(nn.Module):
    """DeBERTa-v3 configuration: no absolute positions, relative attention with log buckets, shared
    position/content projections, LayerNorm on the relative embeddings, no conv layer."""

    def __init__(self, vocab=128, hidden=64, heads=4, layers=2, ffn=128, position_buckets=4,
                 max_relative_positions=16):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.emb_norm = nn.LayerNorm(hidden, eps=1e-7)
        self.position_buckets = position_buckets
        self.max_relative_positions = max_relative_positions
        self.rel_embeddings = nn.Embedding(position_buckets * 2, hidden)
        self.rel_norm = nn.LayerNorm(hidden, eps=1e-7)
        self.layers = nn.ModuleList([DebertaV2Layer(hidden, heads, ffn, position_buckets, max_relative_positions)
                                     for _ in range(layers)])

    @staticmethod
    def get_attention_mask(attention_mask):
        # (B, 1, S, S): key j visible to query i iff both are unpadded, so a padded query sees nothing.
        extended_attention_mask = attention_mask.unsqueeze(1).unsqueeze(2)
        return extended_attention_mask * extended_attention_mask.squeeze(-2).unsqueeze(-1)

    def forward(self, input_ids, attention_mask):
        x = self.emb_norm(self.word_embeddings(input_ids))
        x = x * attention_mask.unsqueeze(2).to(x.dtype)
        mask = self.get_attention_mask(attention_mask)
        relative_pos = deberta_build_relative_position(x.size(-2), x.size(-2), self.position_buckets,
                                                       self.max_relative_positions)
        rel_embeddings = self.rel_norm(self.rel_embeddings.weight)
        for layer in self.layers:
            x = layer(x, mask, relative_pos, rel_embeddings)
        return x


# --------------------------------------------------------------------------------------------
# Family table: constructor, example inputs, I/O description, expectations for the manifest
# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
# Falcon (HF ~4.36 eager, RW architecture: new_decoder_architecture=False, multi_query=True, parallel_attn=True,
# rotary, no bias): one fused query_key_value Linear giving H query heads plus one key and one value head,
# query @ key^T with the single K/V head broadcast by matmul, / math.sqrt(d), + 4-D causal+padding mask
# --------------------------------------------------------------------------------------------
class FalconAttention(nn.Module):
    def __init__(self, hidden_size, num_heads, max_position_embeddings):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.num_kv_heads = 1
        self.rotary_emb = GPTNeoXRotaryEmbedding(self.head_dim, max_position_embeddings)
        # multi_query: the fused projection holds H query heads, then one key head and one value head
        self.query_key_value = nn.Linear(hidden_size, hidden_size + 2 * self.head_dim, bias=False)
        self.dense = nn.Linear(hidden_size, hidden_size, bias=False)

    def _split_heads(self, fused_qkv):
        batch_size, seq_length, _ = fused_qkv.shape
        fused_qkv = fused_qkv.view(batch_size, seq_length, self.num_heads + 2, self.head_dim)
        return fused_qkv[..., :-2, :], fused_qkv[..., [-2], :], fused_qkv[..., [-1], :]

    def forward(self, hidden_states, attention_mask, position_ids, past_key, past_value):
        fused_qkv = self.query_key_value(hidden_states)
        query_layer, key_layer, value_layer = self._split_heads(fused_qkv)
        batch_size, query_length, _, _ = query_layer.shape
        query_layer = query_layer.transpose(1, 2).reshape(batch_size, self.num_heads, query_length, self.head_dim)
        key_layer = key_layer.transpose(1, 2).reshape(batch_size, self.num_kv_heads, query_length, self.head_dim)
        value_layer = value_layer.transpose(1, 2).reshape(batch_size, self.num_kv_heads, query_length, self.head_dim)
        kv_seq_len = key_layer.shape[-2] + past_key.shape[-2]
        cos, sin = self.rotary_emb(value_layer, seq_len=kv_seq_len)
        query_layer, key_layer = neox_apply_rotary_pos_emb(query_layer, key_layer, cos, sin, position_ids)
        key_layer = torch.cat((past_key, key_layer), dim=-2)
        value_layer = torch.cat((past_value, value_layer), dim=-2)
        present = (key_layer, value_layer)
        attention_scores = query_layer @ key_layer.transpose(-1, -2)
        attention_scores /= math.sqrt(self.head_dim)
        attention_scores = F.softmax(attention_scores + attention_mask, dim=-1, dtype=hidden_states.dtype)
        attn_output = attention_scores @ value_layer
        attn_output = attn_output.view(batch_size, self.num_heads, query_length, self.head_dim)
        attn_output = attn_output.permute(0, 2, 1, 3)
        attn_output = attn_output.reshape(batch_size, query_length, self.num_heads * self.head_dim)
        return self.dense(attn_output), present


class FalconDecoderLayer(nn.Module):
    def __init__(self, hidden_size, num_heads, max_position_embeddings):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(hidden_size, eps=1e-5)
        self.self_attention = FalconAttention(hidden_size, num_heads, max_position_embeddings)
        self.dense_h_to_4h = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        self.dense_4h_to_h = nn.Linear(4 * hidden_size, hidden_size, bias=False)

    def forward(self, hidden_states, attention_mask, position_ids, past_key, past_value):
        residual = hidden_states
        attention_layernorm_out = self.input_layernorm(hidden_states)
        attention_output, present = self.self_attention(attention_layernorm_out, attention_mask, position_ids,
                                                        past_key, past_value)
        # parallel_attn: the MLP reads the same layer norm output as the attention, both join the residual
        mlp_output = self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(attention_layernorm_out)))
        mlp_output += attention_output
        return mlp_output + residual, present


class Falcon(nn.Module):
    def __init__(self, vocab=128, hidden=64, heads=4, layers=2, max_position_embeddings=64):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.h = nn.ModuleList([FalconDecoderLayer(hidden, heads, max_position_embeddings) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(hidden, eps=1e-5)

    def forward(self, input_ids, attention_mask, *past):
        batch_size, seq_length = input_ids.shape
        inputs_embeds = self.word_embeddings(input_ids)
        past_key_values_length = past[0].shape[-2]
        position_ids = torch.arange(past_key_values_length, seq_length + past_key_values_length).unsqueeze(0)
        mask = _prepare_4d_causal_attention_mask(attention_mask, (batch_size, seq_length), inputs_embeds.dtype,
                                                 past_key_values_length)
        hidden_states = inputs_embeds
        presents = []
        for i, block in enumerate(self.h):
            hidden_states, present = block(hidden_states, mask, position_ids, past[2 * i], past[2 * i + 1])
            presents.extend(present)
        return (self.ln_f(hidden_states), *presents)


# --------------------------------------------------------------------------------------------
# Qwen2 (HF ~4.48 eager): Llama's attention with biased q/k/v projections (o_proj without), GQA repeat_kv,
# `* scaling`, the Llama 4-D mask (use_sliding_window=False, the released checkpoints' setting)
# --------------------------------------------------------------------------------------------
def _qwen2():
    return Llama(vocab=128, hidden=64, heads=4, kv_heads=2, layers=2, intermediate=128, attention_bias=True)


# --------------------------------------------------------------------------------------------
# Mistral (HF ~4.36 eager): GQA repeat_kv, rotary from a cos/sin cache gathered by position_ids,
# matmul(q, k^T) / math.sqrt(d), the 4-D mask of _prepare_4d_causal_attention_mask(..., sliding_window): keys
# older than the window hidden by finfo.min in the same additive mask; DynamicCache concatenation
# --------------------------------------------------------------------------------------------
class MistralAttention(nn.Module):
    def __init__(self, hidden, heads, kv_heads, max_position_embeddings):
        super().__init__()
        self.num_heads = heads
        self.head_dim = hidden // heads
        self.num_key_value_heads = kv_heads
        self.num_key_value_groups = heads // kv_heads
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=False)
        self.rotary_emb = GPTNeoXRotaryEmbedding(self.head_dim, max_position_embeddings)

    def forward(self, hidden_states, attention_mask, position_ids, past_key, past_value):
        bsz, q_len, _ = hidden_states.size()
        query_states = self.q_proj(hidden_states).view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        kv_seq_len = key_states.shape[-2] + past_key.shape[-2]
        cos, sin = self.rotary_emb(value_states, seq_len=kv_seq_len)
        query_states, key_states = neox_apply_rotary_pos_emb(query_states, key_states, cos, sin, position_ids)
        key_states = torch.cat([past_key, key_states], dim=-2)
        value_states = torch.cat([past_value, value_states], dim=-2)
        present = (key_states, value_states)
        key_states = repeat_kv(key_states, self.num_key_value_groups)
        value_states = repeat_kv(value_states, self.num_key_value_groups)
        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(self.head_dim)
        attn_weights = attn_weights + attention_mask
        attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attn_output = torch.matmul(attn_weights, value_states)
        attn_output = attn_output.transpose(1, 2).contiguous().reshape(bsz, q_len, self.num_heads * self.head_dim)
        return self.o_proj(attn_output), present


class MistralDecoderLayer(nn.Module):
    def __init__(self, hidden, heads, kv_heads, intermediate, max_position_embeddings):
        super().__init__()
        self.self_attn = MistralAttention(hidden, heads, kv_heads, max_position_embeddings)
        self.input_layernorm = LlamaRMSNorm(hidden)
        self.post_attention_layernorm = LlamaRMSNorm(hidden)
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x, mask, position_ids, past_key, past_value):
        a, present = self.self_attn(self.input_layernorm(x), mask, position_ids, past_key, past_value)
        x = x + a
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h)), present


class Mistral(nn.Module):
    def __init__(self, vocab=128, hidden=64, heads=4, kv_heads=1, layers=2, intermediate=128,
                 max_position_embeddings=64, sliding_window=3):
        super().__init__()
        self.sliding_window = sliding_window
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList([MistralDecoderLayer(hidden, heads, kv_heads, intermediate, max_position_embeddings)
                                     for _ in range(layers)])
        self.norm = LlamaRMSNorm(hidden)

    def forward(self, input_ids, attention_mask, *past):
        batch_size, seq_length = input_ids.shape
        past_key_values_length = past[0].shape[-2]
        position_ids = torch.arange(past_key_values_length, seq_length + past_key_values_length)
        position_ids = position_ids.unsqueeze(0).view(-1, seq_length)
        inputs_embeds = self.embed_tokens(input_ids)
        mask = _prepare_4d_causal_attention_mask(attention_mask, (batch_size, seq_length), inputs_embeds.dtype,
                                                 past_key_values_length, sliding_window=self.sliding_window)
        x = inputs_embeds
        presents = []
        for i, layer in enumerate(self.layers):
            x, present = layer(x, mask, position_ids, past[2 * i], past[2 * i + 1])
            presents.extend(present)
        return (self.norm(x), *presents)


B, S = 2, 7          # reference batch: sequence 1 is right-padded (last 3 positions masked)
P = 3                # past length for the KV-cache families
SD_CONTEXT = 13      # sd_unet's context length (encoder_hidden_states), not the latent's 64 positions


def _ids(vocab, b, s, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (b, s), generator=g)


def _right_padded_mask(b, s, pad):
    m = torch.ones(b, s, dtype=torch.int64)
    m[1, s - pad:] = 0
    return m


def _left_padded_mask(b, s, pad):
    m = torch.ones(b, s, dtype=torch.int64)
    m[1, :pad] = 0
    return m


MASK_DOC = "int64 (B, T) padding mask, 1 = keep (attend), 0 = padding"


def _text_family(model_fn, vocab, mask_dtype=torch.int64):
    def inputs():
        return (_ids(vocab, B, S, 1), _right_padded_mask(B, S, 3).to(mask_dtype))
    mask_doc = MASK_DOC if mask_dtype == torch.int64 else "bool (B, T) padding mask, True = keep, False = padding"
    return dict(
        make=model_fn, inputs=inputs,
        input_names=["input_ids", "attention_mask"],
        input_doc={"input_ids": "int64 (B, S) token ids", "attention_mask": mask_doc},
        output_names=["last_hidden_state"],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                      "last_hidden_state": {0: "batch", 1: "sequence"}},
        padding_mask=dict(input="attention_mask", dtype="bool" if mask_dtype == torch.bool else "int64",
                          keep=True if mask_dtype == torch.bool else 1))


def _past_family(model_fn, vocab, layers, kv_heads, head_dim, output_first="last_hidden_state"):
    def inputs():
        past = []
        g = torch.Generator().manual_seed(7)
        for _ in range(2 * layers):
            past.append(torch.randn(B, kv_heads, P, head_dim, generator=g))
        return (_ids(vocab, B, S - P, 2), _left_padded_mask(B, S, 2), *past)
    names = ["input_ids", "attention_mask"]
    doc = {"input_ids": "int64 (B, S) new token ids",
           "attention_mask": "int64 (B, P+S) padding mask over past and new tokens, 1 = keep, 0 = padding "
                             "(reference input is left-padded, as in batched generation)"}
    outs = [output_first]
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total_sequence"},
            output_first: {0: "batch", 1: "sequence"}}
    for i in range(layers):
        for kind in ("key", "value"):
            n = f"past_{kind}_{i}"
            names.append(n)
            doc[n] = f"float32 (B, Hkv={kv_heads}, P, D={head_dim}) cached {kind}s of layer {i}"
            axes[n] = {0: "batch", 2: "past_sequence"}
            o = f"present_{kind}_{i}"
            outs.append(o)
            axes[o] = {0: "batch", 2: "total_sequence"}
    return dict(make=model_fn, inputs=inputs, input_names=names, input_doc=doc, output_names=outs,
                dynamic_axes=axes, padding_mask=dict(input="attention_mask", dtype="int64", keep=1))


def _seq2seq_family(model_fn, vocab):
    def inputs():
        return (_ids(vocab, B, S, 3), _right_padded_mask(B, S, 3), _ids(vocab, B, 5, 4))
    return dict(
        make=model_fn, inputs=inputs,
        input_names=["input_ids", "attention_mask", "decoder_input_ids"],
        input_doc={"input_ids": "int64 (B, S) encoder token ids",
                   "attention_mask": MASK_DOC + " (encoder keys; also masks cross-attention)",
                   "decoder_input_ids": "int64 (B, S_dec) decoder token ids (decoder self-attention is causal, "
                                        "no decoder padding mask)"},
        output_names=["last_hidden_state"],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                      "decoder_input_ids": {0: "batch", 1: "decoder_sequence"},
                      "last_hidden_state": {0: "batch", 1: "decoder_sequence"}},
        padding_mask=dict(input="attention_mask", dtype="int64", keep=1))


def _float_family(model_fn):
    def inputs():
        g = torch.Generator().manual_seed(5)
        return (torch.randn(B, S, 64, generator=g), _right_padded_mask(B, S, 3))
    return dict(
        make=model_fn, inputs=inputs,
        input_names=["inputs_embeds", "attention_mask"],
        input_doc={"inputs_embeds": "float32 (B, S, 64) input features",
                   "attention_mask": MASK_DOC + " (converted inside to key_padding_mask = attention_mask == 0, "
                                                "bool, True = ignore)"},
        output_names=["last_hidden_state"],
        dynamic_axes={"inputs_embeds": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                      "last_hidden_state": {0: "batch", 1: "sequence"}},
        padding_mask=dict(input="attention_mask", dtype="int64", keep=1))


def _mha_family(return_weights):
    fam = _text_family(lambda: TorchMHA(return_weights=return_weights), 128)
    fam["input_doc"]["attention_mask"] += " (converted inside to key_padding_mask = attention_mask == 0)"
    if return_weights:
        fam["output_names"] = ["attn_output", "attn_weights"]
        fam["dynamic_axes"] = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                               "attn_output": {0: "batch", 1: "sequence"},
                               "attn_weights": {0: "batch", 1: "sequence", 2: "sequence"}}
    return fam


def _vit_family():
    def inputs():
        g = torch.Generator().manual_seed(6)
        return (torch.randn(B, 3, 32, 32, generator=g),)
    return dict(make=ViT, inputs=inputs, input_names=["pixel_values"],
                input_doc={"pixel_values": "float32 (B, 3, 32, 32) image; 17 tokens (CLS + 4x4 patches), no mask"},
                output_names=["last_hidden_state"],
                dynamic_axes={"pixel_values": {0: "batch"}, "last_hidden_state": {0: "batch"}},
                padding_mask=None)


def _sdpa_causal_family():
    def inputs():
        return (_ids(128, B, S, 8),)
    return dict(make=lambda: SdpaEncoder("causal"), inputs=inputs, input_names=["input_ids"],
                input_doc={"input_ids": "int64 (B, S) token ids; no padding mask (is_causal=True cannot be "
                                        "combined with attn_mask in SDPA)"},
                output_names=["last_hidden_state"],
                dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                              "last_hidden_state": {0: "batch", 1: "sequence"}},
                padding_mask=None)


def _whisper_family():
    def inputs():
        g = torch.Generator().manual_seed(9)
        return (torch.randn(B, 16, 32, generator=g), _ids(128, B, 5, 10))
    return dict(make=WhisperOpenAI, inputs=inputs, input_names=["mel", "tokens"],
                input_doc={"mel": "float32 (B, 16, 32) log-mel features (frames fixed: 16 audio positions)",
                           "tokens": "int64 (B, S) decoder tokens; no padding mask (OpenAI Whisper has none)"},
                output_names=["last_hidden_state"],
                dynamic_axes={"mel": {0: "batch"}, "tokens": {0: "batch", 1: "sequence"},
                              "last_hidden_state": {0: "batch", 1: "sequence"}},
                padding_mask=None)


def _bloom_past_family(layers=2, heads=4, head_dim=16):
    def inputs():
        past = []
        g = torch.Generator().manual_seed(7)
        for _ in range(layers):
            past.append(torch.randn(B * heads, head_dim, P, generator=g))
            past.append(torch.randn(B * heads, P, head_dim, generator=g))
        return (_ids(128, B, S - P, 2), _left_padded_mask(B, S, 2), *past)
    names = ["input_ids", "attention_mask"]
    doc = {"input_ids": "int64 (B, S) new token ids",
           "attention_mask": "int64 (B, P+S) padding mask over past and new tokens, 1 = keep, 0 = padding "
                             "(reference input is left-padded, as in batched generation)"}
    outs = ["last_hidden_state"]
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total_sequence"},
            "last_hidden_state": {0: "batch", 1: "sequence"}}
    for i in range(layers):
        for kind, layout, seq_axis in (("key", f"(B*H, D={head_dim}, P)", 2), ("value", f"(B*H, P, D={head_dim})", 1)):
            n = f"past_{kind}_{i}"
            names.append(n)
            doc[n] = f"float32 {layout} cached {kind}s of layer {i}, H={heads} heads per batch entry (B*H = batch_x_heads)"
            axes[n] = {0: "batch_x_heads", seq_axis: "past_sequence"}
            o = f"present_{kind}_{i}"
            outs.append(o)
            axes[o] = {0: "batch_x_heads", seq_axis: "total_sequence"}
    return dict(make=BloomPast, inputs=inputs, input_names=names, input_doc=doc, output_names=outs,
                dynamic_axes=axes, padding_mask=dict(input="attention_mask", dtype="int64", keep=1))


SWIN_IMAGE = 64      # 64x64 pixels: 16x16 tokens in stage 1 (16 windows of 4x4), 8x8 in stage 2 (4 windows), so the
                     # shifted blocks of both stages keep their shift (torchvision drops it when window >= feature map)


def _swin():
    from torchvision.models.swin_transformer import SwinTransformer
    return SwinTransformer(patch_size=[4, 4], embed_dim=24, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4], mlp_ratio=2.0,
                           stochastic_depth_prob=0.0, num_classes=10)


def _swin_family():
    def inputs():
        g = torch.Generator().manual_seed(9)
        return (torch.randn(B, 3, SWIN_IMAGE, SWIN_IMAGE, generator=g),)
    return dict(make=_swin, inputs=inputs, input_names=["pixel_values"],
                input_doc={"pixel_values": f"float32 (B, 3, {SWIN_IMAGE}, {SWIN_IMAGE}) image; 4x4 patches, 4x4 windows "
                                           "of 16 tokens, no mask input"},
                output_names=["logits"],
                dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                padding_mask=None)

def _sd_unet_family():
    def inputs():
        g = torch.Generator().manual_seed(12)
        return (torch.randn(B, 64, 8, 8, generator=g), torch.randn(B, SD_CONTEXT, 48, generator=g))
    return dict(make=Transformer2DModel, inputs=inputs, input_names=["sample", "encoder_hidden_states"],
                input_doc={"sample": "float32 (B, 64, h, w) latent feature map (h = w = 8 in the reference: 64 query "
                                     "positions); no mask",
                           "encoder_hidden_states": f"float32 (B, T, 48) text-encoder context for cross-attention (T = "
                                                    f"{SD_CONTEXT} in the reference, SD's 77 cut short); no mask"},
                output_names=["out_sample"],
                dynamic_axes={"sample": {0: "batch", 2: "height", 3: "width"},
                              "encoder_hidden_states": {0: "batch", 1: "context_sequence"},
                              "out_sample": {0: "batch", 2: "height", 3: "width"}},
                padding_mask=None)


# Attention facts per family. `blocks` lists every attention block in graph (Softmax) order as
# (role, causal): causal is what the block's mask encodes — "none", "top-left" (key j visible to
# query i iff j <= i) or "bottom-right" (j <= i + T - S; the KV-cache alignment). `scale` is the
# total factor applied to Q·Kᵀ (1.0 when the family applies none).
ENC = ("encoder self-attention", "none")
FAMILIES = {
    "bert": dict(
        spec=_text_family(lambda: Bert(hidden=64, heads=2), 128), opsets=[14, 17],
        blocks=[ENC] * 2, heads=(2, 2), head_dim=32, kv_cache=False, scale=32 ** -0.5,
        tags="K: Transpose(0,2,3,1) straight from the head-split Reshape (the exporter merged permute(0,2,1,3) and "
             "transpose(-1,-2)); post-QK Div(scores, const 5.656854 = sqrt(32)); Add(scores, mask) with mask = "
             "Mul(Sub(1.0, Cast(Unsqueeze(Unsqueeze(m)))), finfo(float32).min) of shape (B,1,1,T), shared by both "
             "layers; Softmax(axis=-1)"),
    "bert_legacy": dict(
        spec=_text_family(lambda: Bert(hidden=64, heads=4, mask_value=-10000.0), 128), opsets=[11, 12, 14, 17],
        blocks=[ENC] * 2, heads=(4, 4), head_dim=16, kv_cache=False, scale=0.25,
        tags="as bert with the older mask constant: Mul(Sub(1, m), -10000.0); Div by const 4.0; opset 11/12: "
             "Softmax-11 with axis=3 (= last axis of the 4-D scores, so per-row and fusable)"),
    "distilbert": dict(
        spec=_text_family(DistilBert, 128), opsets=[12, 14, 17],
        blocks=[ENC], heads=(2, 2), head_dim=80, kv_cache=False, scale=80 ** -0.5,
        tags="pre-QK Div(Q, const 8.944272 = sqrt(80)) on the 4-D Q, directly feeding MatMul; K Transpose(0,2,3,1); "
             "no post-scale; Where(cond, finfo.min, scores) — scores at Where input 2, cond = Cast(bool, "
             "Expand(Reshape(Equal(m, 0), (B,1,1,T)), Shape(scores))) so True = masked; Softmax(axis=-1, or 3 at "
             "opset 12)"),
    "gpt2": dict(
        spec=_text_family(GPT2, 128), opsets=[12, 14, 17],
        blocks=[("decoder self-attention", "bottom-right")] * 2, heads=(2, 2), head_dim=32, kv_cache=False,
        scale=32 ** -0.5,
        tags="Gemm (addmm) c_attn -> Split -> Reshape -> Transpose; post-QK Div(scores, d) with d shape-derived: "
             "Add(ConstantOfShape([]), Pow(Cast(Squeeze(Slice(Shape(V), -1))), 0.5)) (torch.full([], "
             "v.size(-1) ** 0.5)); Cast(FLOAT) no-op; Where(Slice(Slice(bias tril bool [1,1,64,64], rows "
             "T-S:T axis 2), :T axis 3), scores, finfo.min) — scores at Where input 1, True = keep; then "
             "Add((1-m)*finfo.min (B,1,1,T)); Softmax; Cast(FLOAT) no-op (.type(v.dtype)); S == T here"),
    "gpt2_past": dict(
        spec=_past_family(GPT2, 128, layers=2, kv_heads=2, head_dim=32), opsets=[14, 17],
        blocks=[("decoder self-attention with KV cache", "bottom-right")] * 2, heads=(2, 2), head_dim=32,
        kv_cache=True, scale=32 ** -0.5,
        tags="as gpt2 plus KV cache: K = Transpose(0,1,3,2)(Concat(past_key_i, k, axis=-2)); the Concat outputs "
             "are the graph outputs present_key_i/present_value_i (V side = that Concat directly); S < T = P+S, "
             "buffer row slice starts at T-S (bottom-right)"),
    "llama": dict(
        spec=_past_family(Llama, 128, layers=2, kv_heads=2, head_dim=32), opsets=[14, 17],
        blocks=[("decoder self-attention with KV cache", "bottom-right")] * 2, heads=(4, 2), head_dim=32,
        kv_cache=True, scale=32 ** -0.5,
        tags="RoPE (Mul/Slice/Neg/Concat/Add) on Q and K; K,V = Concat(past, new, axis=-2) (= present outputs) "
             "then repeat_kv Unsqueeze(2) -> Expand -> Reshape (Hkv=2 -> Hq=4, interleaved h // 2); K "
             "Transpose(0,1,3,2); post-QK Mul(scores, const 0.1767767); Add(scores, Slice(mask, :T on axis 3)) "
             "with the 4-D (B,1,S,T) mask = ScatterND(Expand(Mul(Trilu(full(finfo.min), k=1, upper), "
             "Greater(arange(T), cache_position))), padding masked_fill); Softmax(axis=-1) -> Cast(FLOAT) -> "
             "Cast(FLOAT) (softmax dtype=float32, .to(q.dtype))"),
    "t5": dict(
        spec=_seq2seq_family(T5, 128), opsets=[14, 17],
        blocks=[ENC, ENC, ("decoder self-attention", "top-left"), ("cross-attention", "none")],
        heads=(4, 4), head_dim=16, kv_cache=False, scale=1.0,
        tags="no scale at all (scale = 1.0); K Transpose(0,2,3,1); Add(scores, bias) with bias = position_bias "
             "(1,H,S,T) + mask: relative-position bias (Gather of the bucket table, Transpose(2,0,1), Unsqueeze) "
             "for encoder (shared by both layers) and decoder self-attention (+ causal (1-c*m)*finfo.min), zeros "
             "(1,H,S,T) + (1-m)*finfo.min for cross-attention; Cast(FLOAT) before Softmax (scores.float()), "
             "no-op in fp32; cross-attention has S_dec != T_enc"),
    "bart": dict(
        spec=_seq2seq_family(Bart, 128), opsets=[14, 17],
        blocks=[ENC, ("decoder self-attention", "top-left"), ("cross-attention", "none")],
        heads=(2, 2), head_dim=32, kv_cache=False, scale=32 ** -0.5,
        tags="pre-scale Mul(q_proj(x), const 0.1767767) on the 3-D projection before Reshape -> Transpose(0,2,1,3) "
             "-> Reshape(B*H,S,D); K Reshape(B*H,T,D) -> Transpose(0,2,1); 3-D MatMul; mask via Reshape(B,H,S,T) "
             "-> Add -> Reshape(B*H,S,T); masks (B,1,S,T): _expand_mask = Where(Cast(bool, 1-m), finfo.min, 1-m), "
             "decoder _make_causal_mask = finfo.min above the diagonal, 0 elsewhere (Where on a Less of two "
             "Ranges), Expand; Softmax(axis=-1) on the 3-D tensor"),
    "bloom": dict(
        spec=_text_family(Bloom, 128), opsets=[14, 17],
        blocks=[("decoder self-attention", "top-left")] * 2, heads=(4, 4), head_dim=16, kv_cache=False,
        scale=16 ** -0.5,
        tags="fused query_key_value Linear -> Reshape(B,S,H,3,D) -> Gather per q/k/v; Q = Reshape(B*H,S,D) of "
             "Transpose(0,2,1,3), K^T = Reshape(B*H,D,S) of Transpose(0,2,3,1) (head split merged with K^T), V as Q; "
             "alibi.baddbmm = Add(Mul(MatMul(Q3, K3^T), const 0.25), Mul(alibi, 1.0)) with alibi (B*H,1,T) = "
             "slopes (H,1) * ((CumSum(m) - 1) * m); Reshape(B,H,S,T); Where(Cast(bool, mask), finfo.min, scores) "
             "with the bool (B,1,S,T) causal+padding mask of _prepare_4d_causal_attention_mask(...).bool(); "
             "Softmax(axis=-1) on the 4-D view; Cast(FLOAT) (dtype=float32, .to(dtype)); Reshape(B*H,S,T) -> MatMul(V3)"),
    "mha": dict(
        spec=_mha_family(False), opsets=[14, 17],
        blocks=[("self-attention", "top-left")], heads=(4, 4), head_dim=16, kv_cache=False, scale=16 ** -0.5,
        tags="nn.MultiheadAttention 3-D (B*H,S,D): Q = Div(Transpose(1,0,2)(Reshape(q, (S,B*H,D))), const 4.0) "
             "(pre-scale); K = Transpose(1,2,0)(Reshape(k, (T,B*H,D))) — one Transpose does both the batch-first "
             "swap and K^T; baddbmm(mask, q, k^T) = Add(Mul(MatMul, alpha=1), Mul(mask, beta=1)); mask (B*H,S,T) "
             "= Where(kpm (B*H,1,T) bool, -inf, triu(full(-inf), 1)) (S,S); Softmax(axis=-1)"),
    "mha_weights": dict(
        spec=_mha_family(True), opsets=[14, 17],
        blocks=[("self-attention", "top-left")], heads=(4, 4), head_dim=16, kv_cache=False, scale=16 ** -0.5,
        expected_fusions=0,
        tags="as mha, but the module also returns its head-averaged attention weights: the Softmax output feeds "
             "Reshape -> ReduceSum -> Div -> graph output attn_weights, so fusion must be REFUSED"),
    "transformer_encoder": dict(
        spec=_float_family(TorchTransformerEncoder), opsets=[14, 17],
        blocks=[ENC] * 2, heads=(2, 2), head_dim=32, kv_cache=False, scale=32 ** -0.5,
        tags="nn.TransformerEncoderLayer -> F.multi_head_attention_forward, same 3-D graph as mha with only the "
             "key padding mask: mask = Where(kpm (B*H,1,T), -inf, zeros); pre-scale Div(Q, const 5.656854); "
             "baddbmm -> MatMul, Mul(1), Add; Softmax(axis=-1)"),
    "vit": dict(
        spec=_vit_family(), opsets=[14, 17],
        blocks=[ENC], heads=(2, 2), head_dim=64, kv_cache=False, scale=0.125,
        tags="MatMul -> Div(const 8.0) -> Softmax(axis=-1) -> MatMul, no mask; K Transpose(0,2,3,1); sequence "
             "fixed at 17 (CLS + 16 patches)"),
    "sdpa": dict(
        spec=_text_family(lambda: SdpaEncoder("float4d"), 128), opsets=[14, 17],
        blocks=[ENC] * 2, heads=(2, 2), head_dim=32, kv_cache=False, scale=32 ** -0.5,
        tags="TorchScript SDPA symbolic: s = Cast(Div(1.0, Sqrt(Cast(Slice(Shape(Q), [-1], [INT64_MAX]))))); "
             "MatMul(Mul(Q, Sqrt(s)), Mul(Transpose(0,2,3,1)(K), Sqrt(s))) (two Sqrt nodes of the same s; K "
             "transposes merged); Add(scores, mask) with the float (B,1,S,T) mask = Where(Cast(bool, 1-m), "
             "finfo.min, 1-m) over Expand; Softmax(axis=-1)"),
    "sdpa_bool": dict(
        spec=_text_family(lambda: SdpaEncoder("bool"), 128, mask_dtype=torch.bool), opsets=[14, 17],
        blocks=[ENC] * 2, heads=(2, 2), head_dim=32, kv_cache=False, scale=32 ** -0.5,
        tags="as sdpa with a bool graph input (True = attend) used as a (B,1,1,T) bool attn_mask: "
             "Add(scores, Where(m, 0.0, -inf)); a fully padded row would give NaN"),
    "sdpa_causal": dict(
        spec=_sdpa_causal_family(), opsets=[14, 17],
        blocks=[("causal self-attention", "top-left")] * 2, heads=(2, 2), head_dim=32, kv_cache=False,
        scale=32 ** -0.5,
        tags="as sdpa with is_causal=True and no mask: Add(scores, Where(Equal(Trilu(Expand(1.0, Concat(Slice("
             "Shape(Q), -2:-1), Slice(Shape(K), -2:-1))), upper=0), 0.0), -inf, 0.0)) (L,S)"),
    "whisper_openai": dict(
        spec=_whisper_family(), opsets=[14, 17],
        blocks=[ENC, ("decoder self-attention", "top-left"), ("cross-attention", "none")],
        heads=(2, 2), head_dim=32, kv_cache=False, scale=32 ** -0.5,
        tags="symmetric pre-scale: MatMul(Mul(Transpose(0,2,1,3)(Q), s), Mul(Transpose(0,2,3,1)(Reshape(K)), s)) "
             "with one shared s = Pow(Cast(FLOAT, Cast(Cast(Div(Gather(Shape(q_proj), 2), 2)))), -0.25) (int "
             "division n_state // n_head from the traced shape); decoder self-attention adds Slice(Slice(triu(-inf,"
             "1) buffer [32,32])) (top-left, no cache); Cast(FLOAT) before (qk.float()) and after Softmax "
             "(.to(q.dtype)), both no-ops in fp32; encoder and cross-attention unmasked"),
    "gpt_neox": dict(
        spec=_text_family(GPTNeoX, 128), opsets=[14, 17],
        blocks=[("decoder self-attention", "bottom-right")] * 2, heads=(4, 4), head_dim=16, kv_cache=False,
        scale=16 ** -0.5,
        tags="fused query_key_value Linear -> Reshape(B,S,H,3D) -> Slice per q/k/v -> Transpose(0,2,1,3); partial rotary "
             "(RoPE on the first 4 of 16 dims from cos/sin buffers gathered by position_ids, Concat with the rest); Q = "
             "Reshape(B*H,S,D), K = Transpose(0,2,1)(Reshape(B*H,T,D)); torch.baddbmm(zeros, q, k^T, beta=1.0, alpha=0.25) = "
             "Add(Mul(MatMul, 0.25), Mul(ConstantOfShape((B*H,S,T)) zeros, 1.0)); Reshape(B,H,S,T), a view never merged back; "
             "Where(Slice(Slice(bias tril bool [1,1,64,64], rows T-S:T), :T), scores, finfo.min) (scores at input 1, True = "
             "keep); Add((1-m)*finfo.min (B,1,1,T)); Softmax(axis=-1) on the view; Cast(FLOAT) no-op; MatMul with the 4-D "
             "(B,H,T,D) value; S == T here"),
    "opt": dict(
        spec=_text_family(OPT, 128), opsets=[14, 17],
        blocks=[("decoder self-attention", "top-left")] * 2, heads=(2, 2), head_dim=32, kv_cache=False,
        scale=32 ** -0.5,
        tags="q_proj(x) * scaling (Mul 0.1767767 before the head split); 3-D (B*H,S,D) bmm, K Reshape(B*H,T,D) -> "
             "Transpose(0,2,1); Reshape(B,H,S,T) -> Add(mask) -> Max(x, finfo.min) (torch.max clamp) -> Reshape(B*H,S,T); "
             "mask (B,1,S,T) = _expand_mask padding + _make_causal_mask, each finfo.min where it hides, summed (-inf where "
             "both hide, which the clamp turns back into finfo.min); positions (cumsum(m) * m) - 1 through CumSum; pre-LN "
             "decoder layers; Softmax(axis=-1) on the 3-D tensor"),
    "clip_text": dict(
        spec=_text_family(CLIPTextTransformer, 128), opsets=[14, 17],
        blocks=[("causal self-attention", "top-left")] * 2, heads=(4, 4), head_dim=16, kv_cache=False,
        scale=16 ** -0.5,
        tags="q_proj(x) * scale (Mul 0.25 before the head split); 3-D bmm as BART; the causal and the padding mask are added "
             "one after the other, each on a view of its own: Reshape(B,H,S,T) -> Add(causal) -> Reshape(B*H,S,T) -> "
             "Reshape(B,H,S,T) -> Add(padding) -> Reshape(B*H,S,T); causal (B,1,S,S) = Unsqueeze(Trilu(k=1, upper) of "
             "ConstantOfShape(finfo.min)) (torch.empty().fill_(finfo.min).triu_(1)), padding (B,1,S,T) = _expand_mask "
             "Where(Cast(bool, 1-m), finfo.min, 1-m); quick_gelu pre-LN encoder; Softmax(axis=-1) on the 3-D tensor"),
    "gemma2": dict(
        spec=_text_family(Gemma2, 128), opsets=[14, 17],
        blocks=[("decoder self-attention, sliding window 4", "bottom-right"),
                ("decoder self-attention", "bottom-right")], heads=(4, 2), head_dim=16, kv_cache=False,
        scale=24 ** -0.5,
        tags="GQA (Hq=4, Hkv=2) repeat_kv Unsqueeze(2) -> Expand -> Reshape, RoPE; Mul(scores, 0.2041241 = "
             "query_pre_attn_scalar 24 ** -0.5, not 1/sqrt(16)); softcap Div(x, 5) -> Tanh -> Mul(x, 5) (cap 5, below "
             "Gemma-2's 50 so that it bends the small random scores); Add(Slice(mask, :T)) of the Llama-style (B,1,S,T) "
             "causal+padding mask; layer 0 (sliding, window 4): that mask with Where(Cast(bool, Trilu(ConstantOfShape(Shape("
             "mask)), k=-4, lower)), finfo.min, mask) (masked_fill; HF's torch.where(window, finfo.min, mask) exports a "
             "float64 fill under torch 1.13 that ONNX Runtime refuses to load); Softmax -> Cast(FLOAT) -> Cast(FLOAT) "
             "(softmax dtype=float32, .to(q.dtype))"),
    "bloom_past": dict(
        spec=_bloom_past_family(), opsets=[14, 17],
        blocks=[("decoder self-attention with KV cache", "bottom-right")] * 2, heads=(4, 4), head_dim=16,
        kv_cache=True, scale=16 ** -0.5,
        tags="as bloom plus a KV cache in HF BLOOM's 3-D layout: K^T = Concat(past_key_i (B*H,D,P), Reshape(B*H,D,S) of "
             "Transpose(0,2,3,1), axis=2), V = Concat(past_value_i (B*H,P,D), V3, axis=1); the Concats are the graph "
             "outputs present_key_i/present_value_i; ALiBi (B*H,1,P+S) from the (B,P+S) mask; "
             "_prepare_4d_causal_attention_mask with past_key_values_length = P (zero causal columns for the cache: "
             "bottom-right); the cache's B*H is a declared dim name (batch_x_heads), the ALiBi's a computed 4*batch"),
    "swin": dict(
        spec=_swin_family(), opsets=[14, 17],
        blocks=[("window self-attention", "none"), ("shifted window self-attention", "none")] * 2, heads=(2, 2),
        head_dim=12, kv_cache=False, scale=12 ** -0.5,
        tags="torchvision's own SwinTransformer (v1, shifted_window_attention): 2 stages x (regular, shifted) blocks, "
             "embed dim 24, 2 heads in stage 1 and 4 in stage 2 (heads records stage 1), head dim 12; windows of N = 16 tokens as "
             "the batch (B*nW, H, N, D): fused qkv Linear -> Reshape(B*nW,N,3,H,D) -> Transpose(2,0,3,1,4) -> Gather; "
             "Mul(q, 0.2886751 = 12 ** -0.5) on the gathered 4-D q before the MatMul; K Transpose(0,1,3,2); Add(scores, relative position bias (1,H,N,N)) "
             "(the table gathered by the index buffer, folded to a constant); shifted blocks (torch.roll by 2 before "
             "the window partition and back after it) then Reshape(B,nW,H,N,N) -> Add(mask (1,nW,1,N,N), 0 or -100.0, "
             "finite) -> Reshape(B*nW,H,N,N); Softmax(axis=-1); MatMul(P, V)"),
    "sd_unet": dict(
        spec=_sd_unet_family(), opsets=[14, 17],
        blocks=[("self-attention (attn1)", "none"), ("cross-attention (attn2)", "none")], heads=(2, 2), head_dim=32,
        kv_cache=False, scale=32 ** -0.5,
        tags="diffusers Transformer2DModel (GroupNorm -> 1x1 Conv proj_in -> Transpose(0,2,3,1) -> Reshape(B,h*w,C)) around "
             "one BasicTransformerBlock (attn1 self, attn2 cross on encoder_hidden_states, GEGLU feed-forward); classic "
             "AttnProcessor: bias-free to_q/to_k/to_v, head_to_batch_dim = Reshape(B,S,H,D) -> Transpose(0,2,1,3) -> "
             "Reshape(B*H,S,D) for Q, K and V (shape entries computed from Shape, with integer Div for D); K^T = "
             "Transpose(0,2,1) of the 3-D key; get_attention_scores = torch.baddbmm(torch.empty(B*H,S,T), q, k^T, beta=0, "
             "alpha=scale) = Add(Mul(MatMul, 0.1767767), Mul(ConstantOfShape((B*H,S,T), value 0.0), 0.0)) (torch.empty "
             "exports as zeros, beta=0 as a Mul by 0.0); upcast_softmax .float() = Cast(FLOAT) before Softmax(axis=-1) on "
             "the 3-D scores, .to(dtype) = Cast(FLOAT) after, both no-ops in fp32; torch.bmm(probs, V3); no mask; "
             "cross-attention has T (context) != S (h*w)"),
    "falcon": dict(
        spec=_past_family(Falcon, 128, layers=2, kv_heads=1, head_dim=16), opsets=[14, 17],
        blocks=[("decoder self-attention with KV cache, multi-query", "bottom-right")] * 2, heads=(4, 1),
        head_dim=16, kv_cache=True, scale=16 ** -0.5,
        tags="fused query_key_value Linear (no bias) -> Reshape(B,S,H+2,D) -> Q = Slice(:-2 on axis 2), K and V = Gather "
             "of the index lists [-2] and [-1] (one key and one value head, (B,S,1,D)) -> Transpose(0,2,1,3) -> "
             "Reshape(B,H|1,S,D) (traced sizes); RoPE on Q and K from cos/sin caches sliced [:P+S] and gathered by "
             "position_ids = arange(P, P+S); K,V = Concat(past, new, axis=-2) (= present outputs, Hkv=1), K "
             "Transpose(0,1,3,2); the single K/V head broadcast by MatMul itself (no repeat in the graph); Div(scores, "
             "const 4.0 = math.sqrt(16)); Add(scores, mask) with the (B,1,S,P+S) float mask of "
             "_prepare_4d_causal_attention_mask = Where(Cast(bool, Cast(bool, _expand_mask)), finfo.min, Expand(causal "
             "with zero columns for the cache)); Softmax(axis=-1) -> Cast(FLOAT) (softmax dtype=hidden_states.dtype); "
             "parallel attention + MLP residual"),
    "qwen2": dict(
        spec=_past_family(_qwen2, 128, layers=2, kv_heads=2, head_dim=16), opsets=[14, 17],
        blocks=[("decoder self-attention with KV cache", "bottom-right")] * 2, heads=(4, 2), head_dim=16,
        kv_cache=True, scale=16 ** -0.5,
        tags="as llama with biased projections: q/k/v = Add(MatMul, bias) (o_proj without bias) before the head split; "
             "RoPE, K,V = Concat(past, new, axis=-2) (= present outputs), repeat_kv Unsqueeze(2) -> Expand -> Reshape "
             "(Hkv=2 -> Hq=4), K Transpose(0,1,3,2); Mul(scores, const 0.25 = scaling); Add(Slice(mask, :T)) of Llama's "
             "(B,1,S,T) ScatterND mask; Softmax(axis=-1) -> Cast(FLOAT) -> Cast(FLOAT)"),
    "mistral": dict(
        spec=_past_family(Mistral, 128, layers=2, kv_heads=1, head_dim=16), opsets=[14, 17],
        blocks=[("decoder self-attention with KV cache, sliding window 3", "bottom-right")] * 2, heads=(4, 1),
        head_dim=16, kv_cache=True, scale=16 ** -0.5,
        tags="q/k/v without bias, RoPE from cos/sin caches gathered by position_ids (arange(P, P+S)); K,V = Concat(past, "
             "new, axis=-2) (= present outputs, Hkv=1), repeat_kv Unsqueeze(2) -> Expand -> Reshape (n_rep = 4), K "
             "Transpose(0,1,3,2); Div(scores, const 4.0 = math.sqrt(16)); Add(scores, mask) with the (B,1,S,P+S) float "
             "mask of _prepare_4d_causal_attention_mask(sliding_window=3): the causal mask with zero cache columns, then "
             "Where(Cast(bool, Sub(1, Trilu(ConstantOfShape(Shape(mask)) int32, k = P - 3 + 1 (shape-derived), upper))), "
             "finfo.min, mask) hiding keys more than 2 positions behind the query, expanded, then the padding merged by "
             "Where(Cast(bool, Cast(bool, _expand_mask)), finfo.min, ·); Softmax(axis=-1) -> Cast(FLOAT) -> Cast(FLOAT)"),
    "deberta_v2": dict(
        spec=_text_family(DebertaV2, 128), opsets=[14, 17],
        blocks=[ENC] * 2, heads=(4, 4), head_dim=16, kv_cache=False, scale=48 ** -0.5,
        tags="HF DeBERTa-v2/v3 DisentangledSelfAttention (relative_attention, pos_att_type [p2c, c2p], share_att_key, position_buckets 4, "
             "max_relative_positions 16, 4 heads of 16 in 3-D (B*H, S, D) layout): scores = MatMul(Q3, Div(Transpose(0,2,1)(K3), 6.928203 = "
             "sqrt(16 * 3))) (the scale on K before the bmm); + rel_att (B*H, S, T) = Add(Add(Div(GatherElements(MatMul(Q3, "
             "pos_key^T), clamp(rel + 4)), 6.928203), 0), Div(Transpose(GatherElements(MatMul(K3, pos_query^T), clamp(4 - rel))), "
             "6.928203)) with log-bucketed relative positions computed from the sequence length and pos_query/pos_key the "
             "LayerNorm-ed relative embeddings through query_proj/key_proj, Tile-d to B*H; Reshape(-1, H, S, T); XSoftmax as "
             "HF's own symbolic exports it: r = Cast(BOOL, Sub(1, Cast(INT64, mask))) with mask = (B,1,S,S) outer product of "
             "the padding mask with itself (get_attention_mask), Where(Cast(BOOL, r), finfo.min, x) -> Softmax(axis=3) -> "
             "Where(Cast(BOOL, r), 0.0, p) (padded query rows see no key and give zeros); Reshape(-1, S, T); MatMul(P, V3)"),
}

# Extra files: (family, opset, variant)
EXTRA_VARIANTS = [("bert", 14, "nofold"), ("bart", 17, "nofold"), ("bert", 17, "fp16"), ("llama", 17, "fp16"),
                  ("qwen2", 17, "fp16"), ("mistral", 17, "fp16"), ("sd_unet", 17, "fp16"), ("deberta_v2", 17, "fp16"),
                  ("falcon", 17, "fp16")]
# The scale the fp16 graphs really carry: their scale constants were rounded to float16 (a divisor is rounded, then
# inverted; DeBERTa divides K by its rounded sqrt(16 * 3)).
FP16_SCALE = {"bert": 1.0 / float(np.float16(32 ** 0.5)), "llama": float(np.float16(32 ** -0.5)),
              "qwen2": float(np.float16(0.25)), "mistral": 1.0 / float(np.float16(4.0)),
              "sd_unet": float(np.float16(32 ** -0.5)), "deberta_v2": 1.0 / float(np.float16(48 ** 0.5)),
              "falcon": 1.0 / float(np.float16(4.0))}
# fp16 files that must not fuse: DeBERTa's XSoftmax hides keys with Where(c, -65504, x) and zeroes the probabilities
# after Softmax; -65504 is only a finite score in float16, so a hidden key can keep weight where the op's would be 0.
FP16_EXPECTED_FUSIONS = {"deberta_v2": 0}
FP16_TAGS = (" [fp16 file: Softmax is wrapped as Cast(FLOAT) -> Softmax -> Cast(FLOAT16); every Cast(to=FLOAT) of "
             "the fp32 export became Cast(to=FLOAT16); finfo(float32).min constants became -65504]")


# --------------------------------------------------------------------------------------------
# Export, fp16 conversion, reference data, graph checks
# --------------------------------------------------------------------------------------------
def build(family):
    torch.manual_seed(SEED)
    model = FAMILIES[family]["spec"]["make"]()
    model.eval()
    return model


def export(family, opset, path, fold=True):
    spec = FAMILIES[family]["spec"]
    model = build(family)
    args = spec["inputs"]()
    torch.onnx.export(model, args, path, input_names=spec["input_names"], output_names=spec["output_names"],
                      dynamic_axes=spec["dynamic_axes"], opset_version=opset, do_constant_folding=fold)


def _to_fp16_array(arr):
    # Clamp like onnxconverter-common's float16 converter: finfo(float32).min becomes -65504, not -inf.
    fmax = np.finfo(np.float16).max
    return np.clip(arr, -fmax, fmax).astype(np.float16) if np.isfinite(arr).all() else \
        np.where(np.isfinite(arr), np.clip(arr, -fmax, fmax), arr).astype(np.float16)


def to_float16(src, dst):
    """fp32 -> fp16 the way onnxconverter-common's convert_float_to_float16 does it (keep_io_types=False),
    with Softmax kept in float32: Cast(to=FLOAT) before each Softmax and Cast(to=FLOAT16) after it."""
    m = onnx.load(src)
    g = m.graph
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(_to_fp16_array(numpy_helper.to_array(init)), init.name))
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    new_nodes = []
    for node in g.node:
        for attr in node.attribute:
            if attr.name in ("value",) and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(_to_fp16_array(numpy_helper.to_array(attr.t)), attr.t.name))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
        if node.op_type == "Softmax":
            x, y = node.input[0], node.output[0]
            new_nodes.append(helper.make_node("Cast", [x], [x + "_fp32"], to=TensorProto.FLOAT,
                                              name=node.name + "_InputCast"))
            node.input[0] = x + "_fp32"
            node.output[0] = y + "_fp32"
            new_nodes.append(node)
            new_nodes.append(helper.make_node("Cast", [y + "_fp32"], [y], to=TensorProto.FLOAT16,
                                              name=node.name + "_OutputCast"))
            continue
        new_nodes.append(node)
    del g.node[:]
    g.node.extend(new_nodes)
    # value_info entries may now be stale; let shape inference redo them.
    del g.value_info[:]
    m = onnx.shape_inference.infer_shapes(m)
    onnx.save(m, dst)


def save_reference(family):
    spec = FAMILIES[family]["spec"]
    model = build(family)
    args = spec["inputs"]()
    with torch.no_grad():
        outs = model(*args)
    if not isinstance(outs, (tuple, list)):
        outs = (outs,)
    d = os.path.join(HERE, "reference", family, "test_data_set_0")
    os.makedirs(d, exist_ok=True)
    for i, (name, t) in enumerate(zip(spec["input_names"], args)):
        with open(os.path.join(d, f"input_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(t.numpy(), name).SerializeToString())
    for i, (name, t) in enumerate(zip(spec["output_names"], outs)):
        arr = t.numpy()
        assert np.isfinite(arr).all(), f"{family}: reference output {name} has non-finite values"
        with open(os.path.join(d, f"output_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(arr, name).SerializeToString())
    return os.path.relpath(d, HERE)


def _const_value(graph_consts, name):
    v = graph_consts.get(name)
    if v is not None and v.size == 1:
        x = float(v.reshape(-1)[0])
        return f"{x:.6g}"
    return None


class GraphView:
    def __init__(self, model):
        self.g = model.graph
        self.producer = {}
        self.consumers = {}
        self.consts = {i.name: numpy_helper.to_array(i) for i in self.g.initializer}
        for n in self.g.node:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value":
                        self.consts[n.output[0]] = numpy_helper.to_array(a.t)
        self.outputs = {o.name for o in self.g.output}

    def label(self, n):
        s = n.op_type
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Softmax":
            s += f"(axis={attrs.get('axis', 'default')})"
        elif n.op_type == "Transpose":
            s += f"({','.join(map(str, attrs.get('perm', [])))})"
        elif n.op_type == "Cast":
            s += f"(to={TensorProto.DataType.Name(attrs['to'])})"
        elif n.op_type in ("Mul", "Div", "Add", "Sub", "Max", "Pow"):
            c = [_const_value(self.consts, i) for i in n.input]
            if any(c):
                s += "(" + ", ".join(x if x else "x" for x in c) + ")"
        return s

    def chain_up(self, name, stop, depth=6):
        """Op types along the first non-constant input, upward, at most `depth` nodes."""
        out = []
        while depth > 0 and name in self.producer:
            n = self.producer[name]
            if n.op_type == "Constant":
                break
            out.append(self.label(n))
            if n.op_type in stop:
                break
            cand = [i for i in n.input if i and i not in self.consts and i in self.producer
                    and self.producer[i].op_type != "Constant"]
            if not cand:
                break
            name = cand[0]
            depth -= 1
        return out

    def attention_blocks(self):
        blocks = []
        for sm in [n for n in self.g.node if n.op_type == "Softmax"]:
            # Down: Softmax -> [Cast|Dropout|Identity|Where|Reshape]* -> MatMul(P, V) (BLOOM views the 4-D
            # probabilities as (B*H, S, T) for its bmm; DeBERTa's XSoftmax zeroes hidden probabilities with a Where)
            down = []
            cur = sm.output[0]
            pv = None
            for _ in range(4):
                cons = self.consumers.get(cur, [])
                mm = [c for c in cons if c.op_type == "MatMul"]
                if mm:
                    pv = mm[0]
                    break
                nxt = [c for c in cons if c.op_type in ("Cast", "Dropout", "Identity", "Reshape")
                       or (c.op_type == "Where" and cur in c.input[1:])]
                if not nxt:
                    break
                down.append(self.label(nxt[0]))
                cur = nxt[0].output[0]
            # Up: Softmax <- ... <- MatMul(Q, K^T); side inputs summarised
            up = []
            side = []
            cur = sm.input[0]
            qk = None
            for _ in range(8):
                n = self.producer.get(cur)
                if n is None:
                    break
                if n.op_type == "MatMul":
                    qk = n
                    break
                up.append(self.label(n))
                data = None
                for i in n.input:
                    if not i:
                        continue
                    if data is None and self._reaches_matmul(i, 6):
                        data = i
                    elif i not in self.consts:
                        chain = self.chain_up(i, stop=(), depth=7)
                        if chain:
                            side.append(f"{n.op_type} side: " + " <- ".join(chain))
                if data is None:
                    break
                cur = data
            entry = {"core": " -> ".join(
                (["MatMul(QK)"] if qk else ["?"]) + list(reversed(up)) + [self.label(sm)] + down +
                (["MatMul(PV)"] if pv else ["?"])), "mask/bias": side}
            if qk is not None:
                entry["Q side"] = " <- ".join(self.chain_up(qk.input[0], stop=("MatMul", "Gemm", "Concat"), depth=6))
                entry["K side"] = " <- ".join(self.chain_up(qk.input[1], stop=("MatMul", "Gemm", "Concat"), depth=6))
            if pv is not None:
                entry["V side"] = " <- ".join(self.chain_up(pv.input[1], stop=("MatMul", "Gemm", "Concat"), depth=6))
            entry["softmax_output_is_graph_output_or_shared"] = (
                sm.output[0] in self.outputs or len(self.consumers.get(sm.output[0], [])) > 1)
            entry["complete"] = qk is not None and pv is not None
            blocks.append(entry)
        return blocks

    def _reaches_matmul(self, name, depth):
        while depth > 0:
            n = self.producer.get(name)
            if n is None or n.op_type == "Constant":
                return False
            if n.op_type == "MatMul":
                return True
            if n.op_type not in ("Div", "Mul", "Add", "Sub", "Where", "Cast", "Reshape", "Max", "Tanh"):
                return False
            nxt = [i for i in n.input if i and self._producer_op(i) in
                   ("MatMul", "Div", "Mul", "Add", "Sub", "Where", "Cast", "Reshape", "Max", "Tanh")]
            if not nxt:
                return False
            # Prefer an input that itself continues toward MatMul.
            for i in nxt:
                if self._producer_op(i) == "MatMul":
                    return True
            name = nxt[0] if len(nxt) == 1 else next(
                (i for i in nxt if self._reaches_matmul(i, depth - 1)), nxt[0])
            depth -= 1
        return False

    def _producer_op(self, name):
        n = self.producer.get(name)
        return n.op_type if n is not None else None


def check_model(path, family):
    m = onnx.load(path)
    onnx.checker.check_model(m)
    view = GraphView(m)
    ops = Counter(n.op_type for n in m.graph.node)
    blocks = view.attention_blocks()
    expected = len(FAMILIES[family]["blocks"])
    assert ops["Softmax"] == expected, f"{path}: {ops['Softmax']} Softmax nodes, expected {expected}"
    assert all(b["complete"] for b in blocks), f"{path}: incomplete MatMul->Softmax->MatMul chain"
    return ops, blocks


def main():
    torch.set_num_threads(1)
    manifest = []
    summary = []
    files = [(f, o, None) for f, spec in FAMILIES.items() for o in spec["opsets"]] + EXTRA_VARIANTS
    refs = {}
    for family, opset, variant in files:
        stem = f"{family}-opset{opset}" + (f"-{variant}" if variant else "")
        path = os.path.join(HERE, stem + ".onnx")
        if variant == "fp16":
            tmp = path + ".fp32.tmp"
            export(family, opset, tmp)
            to_float16(tmp, path)
            os.remove(tmp)
        else:
            export(family, opset, path, fold=(variant != "nofold"))
        if family not in refs:
            refs[family] = save_reference(family)
        ops, blocks = check_model(path, family)
        fam = FAMILIES[family]
        spec = fam["spec"]
        m = onnx.load(path)
        manifest.append({
            "file": stem + ".onnx",
            "family": family,
            "opset": opset,
            "dtype": "float16" if variant == "fp16" else "float32",
            "fp16_method": "exported fp32, converted by export_models.to_float16 (initializers/IO/Constant/Cast "
                           "to fp16, constants clamped to +-65504, Cast(FLOAT)->Softmax->Cast(FLOAT16) inserted)"
            if variant == "fp16" else None,
            "do_constant_folding": variant != "nofold",
            "inputs": {i.name: spec["input_doc"][i.name].replace("float32", "float16" if variant == "fp16"
                                                                  else "float32") for i in m.graph.input},
            "outputs": [o.name for o in m.graph.output],
            "padding_mask": spec["padding_mask"],
            "attention_blocks": len(fam["blocks"]),
            "expected_fusions": FP16_EXPECTED_FUSIONS.get(family, fam.get("expected_fusions", len(fam["blocks"])))
            if variant == "fp16" else fam.get("expected_fusions", len(fam["blocks"])),
            "blocks": [{"role": role, "causal": causal} for role, causal in fam["blocks"]],
            "causal": sorted({causal for _, causal in fam["blocks"]}),
            "scale": FP16_SCALE[family] if variant == "fp16" else fam["scale"],
            "heads": {"q": fam["heads"][0], "kv": fam["heads"][1]},
            "gqa": fam["heads"][0] != fam["heads"][1],
            "head_dim": fam["head_dim"],
            "kv_cache": fam["kv_cache"],
            "variant_tags": fam["tags"] + (FP16_TAGS if variant == "fp16" else ""),
            "reference": refs[family] + (" (fp32 reference; inputs that are float must be cast to float16)"
                                         if variant == "fp16" else ""),
            "exported_chains": blocks,
            "op_counts": dict(sorted(ops.items())),
            "size_bytes": os.path.getsize(path),
        })
        summary.append((stem, os.path.getsize(path), ops, blocks))
    with open(os.path.join(HERE, "manifest.json"), "w") as f:
        json.dump({"generator": "models/export_models.py", "torch": torch.__version__, "onnx": onnx.__version__,
                   "exporter": "torch.onnx.export (TorchScript)", "models": manifest}, f, indent=1)
        f.write("\n")

    print(f"{'file':38s} {'KiB':>5s} {'nodes':>5s} Softmax  top ops")
    for stem, size, ops, blocks in summary:
        top = ", ".join(f"{k}:{v}" for k, v in ops.most_common(8))
        print(f"{stem:38s} {size // 1024:5d} {sum(ops.values()):5d} {ops['Softmax']:7d}  {top}")
    print()
    seen = set()
    for stem, size, ops, blocks in summary:
        fam = stem.split("-opset")[0]
        key = (fam, stem.endswith("fp16"), stem.split("-opset")[1][:2])
        if key in seen:
            continue
        seen.add(key)
        b = blocks[0]
        print(f"{stem}: {b['core']}")
        for k in ("Q side", "K side", "V side"):
            if k in b:
                print(f"    {k}: {b[k]}")
        for s in b["mask/bias"]:
            print(f"    {s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
