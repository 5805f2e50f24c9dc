#!/usr/bin/env python3
"""A numpy model of the tensor-core kernel's index math, for checking changes without a GPU.

It transcribes, from customop/src/cuda, (1) the shared-memory row layout (SmemRowLayout), the
per-lane ldmatrix addresses (LdmatrixAddress) and the fragment plumbing of Q·Kᵀ and P·V under the
PTX semantics of ldmatrix(.trans) and mma.m16n8k16, checking S and O for every tile configuration
and that every ldmatrix phase is bank-conflict free; and (2) the block-level control flow
(block_work, key-tile order, tile-level mask decisions, online softmax with the -inf guard,
split-KV partials and the combine) against a float64 reference on random shapes; and (3) in float32,
rows masked only by a huge finite bias (finfo.min, -1e9) against the unfused float32 softmax.

It is a model, not the kernel: keep it in step with the CUDA code when either changes.
    /usr/bin/python3 benchmarks/cuda/kernel_model.py      (needs numpy)
"""
import math

import numpy as np

LOG2E = 1.4426950408889634

def run(D, Bm, Bn, warps=4):
    """Fragment plumbing and bank conflicts of one tile configuration."""
    chunks = D // 8
    swz = chunks % 8 == 0
    rc = chunks if swz else (chunks + 1 if chunks % 2 == 0 else chunks)
    def offset(row, chunk):  # elements
        phys = (chunk ^ (row & 7)) if swz else chunk
        return (row * rc + phys) * 8
    class Addr:
        def __init__(s, base, lane_row, lane_chunk):
            s.row_base = base + lane_row * rc * 16
            s.off = [(((2*j + lane_chunk) ^ (lane_row & 7)) if swz else (2*j + lane_chunk)) * 16 for j in range(4)]
        def at(s, row_offset, step):
            return s.row_base + (row_offset * rc + 2 * (step & ~3)) * 16 + s.off[step & 3]
    rng = np.random.default_rng(D * 1000 + Bn)
    Q = rng.standard_normal((Bm, D)); K = rng.standard_normal((Bn, D)); V = rng.standard_normal((Bn, D))
    qt = Bm * rc * 8; kt = Bn * rc * 8
    smem = np.full(qt + 2 * kt, np.nan)   # element-indexed; byte address = 2*index
    threads = warps * 32
    def load(base_el, M, rows):
        # both load_tile_async branches write tile row r, chunk c at offset(r, c)
        written = set()
        for idx in range(rows * chunks):
            r, c = idx // chunks, idx % chunks
            o = offset(r, c)
            assert o not in written; written.add(o)
            smem[base_el + o: base_el + o + 8] = M[r, c*8:(c+1)*8]
    load(0, Q, Bm); load(qt, K, Bn); load(qt + kt, V, Bn)
    def ldsm(addrs, trans):  # addrs: 32 byte addresses -> regs[lane][i] = 2 elements
        mats = []
        for i in range(4):
            m = np.array([smem[addrs[8*i + r] // 2: addrs[8*i + r] // 2 + 8] for r in range(8)])
            assert addrs[8*i] % 16 == 0
            mats.append(m)
        regs = []
        for lane in range(32):
            g, t = lane // 4, lane % 4
            if trans: regs.append([ (mats[i][2*t, g], mats[i][2*t+1, g]) for i in range(4)])
            else: regs.append([ (mats[i][g, 2*t], mats[i][g, 2*t+1]) for i in range(4)])
        return regs
    def mma(C, A, B0, B1):  # per-lane fragments -> matrices
        Am = np.zeros((16, 16)); Bmat = np.zeros((16, 8))
        for lane in range(32):
            g, t = lane // 4, lane % 4
            a = A[lane]
            Am[g, 2*t:2*t+2] = a[0]; Am[g+8, 2*t:2*t+2] = a[1]; Am[g, 2*t+8:2*t+10] = a[2]; Am[g+8, 2*t+8:2*t+10] = a[3]
            Bmat[2*t:2*t+2, g] = B0[lane]; Bmat[2*t+8:2*t+10, g] = B1[lane]
        Cm = Am @ Bmat
        for lane in range(32):
            g, t = lane // 4, lane % 4
            C[lane][0] += Cm[g, 2*t]; C[lane][1] += Cm[g, 2*t+1]; C[lane][2] += Cm[g+8, 2*t]; C[lane][3] += Cm[g+8, 2*t+1]
    rows_per_warp = Bm // warps; mtiles = rows_per_warp // 16; ntiles = Bn // 8; dtiles = D // 8
    for warp in range(warps):
        wr0 = warp * rows_per_warp
        qa = [Addr(0, wr0 + (l & 15), l >> 4) for l in range(32)]
        ka = [Addr(2*qt, (l & 7) + ((l >> 4) << 3), (l >> 3) & 1) for l in range(32)]
        va = [Addr(2*(qt+kt), l & 15, l >> 4) for l in range(32)]
        s = [[[[0.0]*4 for _ in range(32)] for _ in range(ntiles)] for _ in range(mtiles)]
        for ks in range(D // 16):
            a = [ldsm([qa[l].at(mt*16, ks) for l in range(32)], False) for mt in range(mtiles)]
            for np_ in range(ntiles // 2):
                b = ldsm([ka[l].at(np_*16, ks) for l in range(32)], False)
                for mt in range(mtiles):
                    mma(s[mt][2*np_], a[mt], [b[l][0] for l in range(32)], [b[l][1] for l in range(32)])
                    mma(s[mt][2*np_+1], a[mt], [b[l][2] for l in range(32)], [b[l][3] for l in range(32)])
        S = Q @ K.T
        for mt in range(mtiles):
            for nt in range(ntiles):
                for l in range(32):
                    g, t = l // 4, l % 4
                    for e in range(4):
                        row = wr0 + mt*16 + g + (e >> 1)*8; col = nt*8 + 2*t + (e & 1)
                        assert abs(s[mt][nt][l][e] - S[row, col]) < 1e-9, (D, Bm, Bn, warp, mt, nt, l, e)
        # P := S (no softmax needed to check the plumbing); O = P V
        o = [[[[0.0]*4 for _ in range(32)] for _ in range(dtiles)] for _ in range(mtiles)]
        for kp in range(Bn // 16):
            pa = [[ [ (s[mt][2*kp][l][0], s[mt][2*kp][l][1]), (s[mt][2*kp][l][2], s[mt][2*kp][l][3]),
                      (s[mt][2*kp+1][l][0], s[mt][2*kp+1][l][1]), (s[mt][2*kp+1][l][2], s[mt][2*kp+1][l][3]) ] for l in range(32)] for mt in range(mtiles)]
            for dp in range(dtiles // 2):
                b = ldsm([va[l].at(kp*16, dp) for l in range(32)], True)
                for mt in range(mtiles):
                    mma(o[mt][2*dp], pa[mt], [b[l][0] for l in range(32)], [b[l][1] for l in range(32)])
                    mma(o[mt][2*dp+1], pa[mt], [b[l][2] for l in range(32)], [b[l][3] for l in range(32)])
        O = S @ V
        for mt in range(mtiles):
            for dt in range(dtiles):
                for l in range(32):
                    g, t = l // 4, l % 4
                    for e in range(4):
                        row = wr0 + mt*16 + g + (e >> 1)*8; col = dt*8 + 2*t + (e & 1)
                        assert abs(o[mt][dt][l][e] - O[row, col]) < 1e-8, ('O', D, Bm, Bn, warp, mt, dt, l, e)
    # bank conflicts: for every ldmatrix phase (8 addresses of one matrix) the 16-byte slots mod 128 B differ
    def check_banks(addr_fn, steps, offsets):
        for st in steps:
            for ro in offsets:
                addrs = [addr_fn(l).at(ro, st) for l in range(32)]
                for i in range(4):
                    slots = {(a % 128) // 16 for a in addrs[8*i:8*i+8]}
                    assert len(slots) == 8, ('bank conflict', D, st, ro, i)
    check_banks(lambda l: Addr(0, (l & 15), l >> 4), range(D // 16), [0, 16])
    check_banks(lambda l: Addr(0, (l & 7) + ((l >> 4) << 3), (l >> 3) & 1), range(D // 16), [0, 16])
    print(f"D={D} Bm={Bm} Bn={Bn}: S and O fragments match, ldmatrix conflict-free")

def check_fragments():
    for cfg in [(32, 128, 64), (64, 128, 64), (96, 128, 32), (128, 128, 32), (256, 64, 64), (128, 128, 64)]:
        run(*cfg)
def reference(q, k, v, bias, keep, scale, softcap, causal, nan_rows):
    B, Hq, Sq, D = q.shape; Hkv, Skv, Dv = k.shape[1], k.shape[2], v.shape[3]
    out = np.zeros((B, Hq, Sq, Dv))
    for b in range(B):
        for h in range(Hq):
            kh = h // (Hq // Hkv)
            s = scale * q[b, h] @ k[b, kh].T
            if softcap > 0: s = softcap * np.tanh(s / softcap)
            if bias is not None: s = s + bias[b, h]
            vis = np.ones((Sq, Skv), bool)
            i = np.arange(Sq)[:, None]; j = np.arange(Skv)[None, :]
            if causal == 1: vis &= j <= i
            if causal == 2: vis &= j <= i + Skv - Sq
            if keep is not None: vis &= keep[b, h]
            s = np.where(vis, s, -np.inf)
            for r in range(Sq):
                m = s[r].max() if Skv else -np.inf
                if m == -np.inf:
                    out[b, h, r] = np.nan if nan_rows else 0
                    continue
                p = np.exp(s[r] - m)
                out[b, h, r] = p @ v[b, kh] / p.sum()
    return out

def kernel(q, k, v, bias, keep, scale, softcap, causal, nan_rows, Bm, Bn, num_splits):
    B, Hq, Sq, D = q.shape; Hkv, Skv, Dv = k.shape[1], k.shape[2], v.shape[3]
    off = Skv - Sq if causal == 2 else 0
    plain = softcap <= 0 and bias is None
    nmb = (Sq + Bm - 1) // Bm
    rows_total = B * Hq * Sq
    part_o = np.zeros((num_splits, rows_total, Dv)); part_m = np.zeros((num_splits, rows_total)); part_l = np.zeros((num_splits, rows_total))
    out = np.full((B, Hq, Sq, Dv), 12345.0)
    for index in range(nmb * num_splits * Hq * B):
        m_slot = index % nmb; idx = index // nmb
        split = idx % num_splits; idx //= num_splits
        h = idx % Hq; b = idx // Hq
        mb = nmb - 1 - m_slot if causal else m_slot
        m0 = mb * Bm
        key_end = Skv
        if causal:
            last_row = min(m0 + Bm, Sq) - 1
            key_end = max(0, min(key_end, last_row + off + 1))
        visible_tiles = (key_end + Bn - 1) // Bn
        all_tiles = (Skv + Bn - 1) // Bn
        tps = (all_tiles + num_splits - 1) // num_splits
        tb = split * tps; te = min(visible_tiles, tb + tps)
        kh = h // (Hq // Hkv)
        rows = np.arange(m0, m0 + Bm)
        Qt = np.zeros((Bm, D)); valid_r = rows < Sq; Qt[valid_r] = q[b, h, rows[valid_r]]
        mx = np.full(Bm, -np.inf); l = np.zeros(Bm); acc = np.zeros((Bm, Dv))
        for tile in range(te - 1, tb - 1, -1):
            n0 = tile * Bn
            cols = np.arange(n0, n0 + Bn); valid_c = cols < Skv
            Kt = np.zeros((Bn, D)); Kt[valid_c] = k[b, kh, cols[valid_c]]
            Vt = np.zeros((Bn, Dv)); Vt[valid_c] = v[b, kh, cols[valid_c]]
            s = Qt @ Kt.T
            need_mask = keep is not None or n0 + Bn > Skv or (causal and n0 + Bn - 1 > m0 + off)
            if plain:
                x = s * (scale * LOG2E)
            else:
                t = s * scale
                if softcap > 0: t = softcap * np.tanh(t * (1 / softcap))
                if bias is not None:
                    bb = np.zeros_like(t)
                    rr, cc = np.nonzero(valid_r[:, None] & valid_c[None, :])
                    bb[rr, cc] = bias[b, h, rows[rr], cols[cc]]
                    t = t + bb
                x = t * LOG2E
            if need_mask:
                vis = cols[None, :] < Skv
                if causal: vis = vis & (cols[None, :] <= rows[:, None] + off)
                if keep is not None:
                    kk = np.ones((Bm, Bn), bool)
                    rr, cc = np.nonzero(valid_r[:, None] & valid_c[None, :])
                    kk[rr, cc] = keep[b, h, rows[rr], cols[cc]]
                    vis = vis & kk
                x = np.where(vis, x, -np.inf)
            tile_max = np.maximum(mx, x.max(axis=1))
            sub = np.where(tile_max == -np.inf, 0.0, tile_max)
            sc = np.exp2(mx - sub)
            mx = tile_max
            l = l * sc; acc = acc * sc[:, None]
            p = np.exp2(x - sub[:, None])
            l = l + p.sum(1); acc = acc + p @ Vt
        for r in range(Bm):
            row = m0 + r
            if row >= Sq: continue
            masked = mx[r] == -np.inf
            inv = 0.0 if masked else 1.0 / l[r]
            ri = (b * Hq + h) * Sq + row
            if num_splits > 1:
                part_o[split, ri] = acc[r] * inv
                part_m[split, ri] = mx[r]; part_l[split, ri] = l[r]  # max and sum apart (fwd_params.cuh)
            else:
                out[b, h, row] = (np.nan if nan_rows else 0.0) if masked else acc[r] * inv
    if num_splits > 1:
        for ri in range(rows_total):
            row = ri % Sq; bh = ri // Sq; h = bh % Hq; b = bh // Hq
            M = part_m[:, ri].max()
            if M == -np.inf:
                out[b, h, row] = np.nan if nan_rows else 0.0
                continue
            w = part_l[:, ri] * np.exp2(part_m[:, ri] - M); w = w / w.sum()
            out[b, h, row] = w @ part_o[:, ri]
    return out

def check_control_flow():
    rng = np.random.default_rng(0)
    count = 0
    for trial in range(400):
        B = int(rng.integers(1, 3)); Hkv = int(rng.integers(1, 3)); Hq = Hkv * int(rng.integers(1, 3))
        Sq = int(rng.choice([1, 2, 5, 17, 64, 65, 127, 130, 200])); Skv = int(rng.choice([0, 1, 3, 31, 32, 33, 64, 100, 257]))
        D = int(rng.choice([8, 16])); Dv = int(rng.choice([8, 24]))
        Bm, Bn = [(128, 64), (128, 32), (64, 64)][int(rng.integers(0, 3))]
        splits = int(rng.choice([1, 1, 2, 3, 7]))
        causal = int(rng.integers(0, 3)); softcap = float(rng.choice([0, 3.0])); nan_rows = bool(rng.integers(0, 2))
        q = rng.standard_normal((B, Hq, Sq, D)); k = rng.standard_normal((B, Hkv, Skv, D)); v = rng.standard_normal((B, Hkv, Skv, Dv))
        bias = rng.standard_normal((B, Hq, Sq, Skv)) if rng.integers(0, 2) else None
        if bias is not None and Sq > 2 and Skv: bias[0, 0, 1, :] = -np.inf
        keep = rng.random((B, Hq, Sq, Skv)) < 0.7 if rng.integers(0, 2) else None
        if keep is not None and Sq > 3: keep[:, :, 3, :] = False
        scale = 1 / math.sqrt(D)
        want = reference(q, k, v, bias, keep, scale, softcap, causal, nan_rows)
        got = kernel(q, k, v, bias, keep, scale, softcap, causal, nan_rows, Bm, Bn, splits)
        ok = np.allclose(got, want, atol=1e-9, equal_nan=True)
        if not ok:
            print("MISMATCH", dict(B=B, Hq=Hq, Hkv=Hkv, Sq=Sq, Skv=Skv, Bm=Bm, Bn=Bn, splits=splits, causal=causal, softcap=softcap, bias=bias is not None, keep=keep is not None))
            raise SystemExit(1)
        count += 1
    print("matched", count, "random configurations")

def score_to_log2_f32(natural):
    """softmax.cuh score_to_log2 after score + bias, in float32: a finite score that overflows in
    the log2(e) multiply is clamped to -+FLT_MAX instead of becoming -+inf (a hidden key)."""
    with np.errstate(over="ignore"):
        x = (natural * np.float32(LOG2E)).astype(np.float32)
    over = np.isinf(x) & ~np.isinf(natural)
    x[over] = np.copysign(np.finfo(np.float32).max, x[over])
    return x

def check_huge_bias():
    """A row masked only by a huge finite bias (finfo.min, -1e9) against the unfused float32 graph,
    through tiles and split-KV partials (max and sum kept apart) in float32."""
    rng = np.random.default_rng(1)
    f32 = np.float32
    for bias_value in [np.finfo(np.float32).min, f32(-3.3895314e38), f32(-1e9), f32(-1e4)]:
        for n, tile, splits in [(150, 64, 3), (1000, 32, 7), (70, 64, 1)]:
            score = (rng.standard_normal(n) * 0.5).astype(f32)
            v = rng.standard_normal((n, 8)).astype(f32)
            natural = (score + bias_value).astype(f32)
            e = np.exp(natural - natural.max()); want = (e / e.sum()) @ v     # unfused graph
            x = score_to_log2_f32(natural)
            tiles = [x[i:i + tile] for i in range(0, n, tile)]; vt = [v[i:i + tile] for i in range(0, n, tile)]
            per = -(-len(tiles) // splits)
            part = []
            for sp in range(splits):
                mx, l, acc = f32(-np.inf), f32(0), np.zeros(8, f32)
                for t in range(min(len(tiles), (sp + 1) * per) - 1, sp * per - 1, -1):
                    new = max(mx, tiles[t].max()); sub = f32(0) if new == -np.inf else new
                    sc = np.exp2(f32(mx - sub)); w = np.exp2((tiles[t] - sub).astype(f32))
                    l = f32(l * sc + w.sum()); acc = (acc * sc + w @ vt[t]).astype(f32); mx = new
                part.append((mx, l, acc / l if l > 0 else acc))
            M = max(m for m, _, _ in part)
            wts = np.array([l * np.exp2(f32(m - M)) if m != -np.inf else 0.0 for m, l, _ in part])
            got = sum(w * o for w, (_, _, o) in zip(wts, part)) / wts.sum()
            assert np.allclose(got, want, atol=1e-4), (bias_value, n, tile, splits, got, want)
    print("huge finite biases: rows masked only by them match the unfused float32 softmax")

if __name__ == "__main__":
    check_fragments()
    check_control_flow()
    check_huge_bias()
