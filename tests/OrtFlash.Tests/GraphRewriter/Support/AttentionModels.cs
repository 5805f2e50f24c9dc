using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.GraphRewriter.Rules;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;
using static OrtFlash.Tests.Rewriter.Support.ModelBuilder;

namespace OrtFlash.Tests.Rewriter.Support;

/// <summary>What a fused variant must look like after the rewrite.</summary>
public sealed record Expectation(
    KeyLayout KeyLayout,
    ScalePlacement ScalePlacement,
    float Scale,
    CausalAlignment Causal = CausalAlignment.None,
    MaskedRowPolicy MaskedRows = MaskedRowPolicy.NaN,
    float Softcap = 0,
    bool KvHeadRepeatRemoved = false,
    string? NoteContains = null);

/// <summary>A small model reproducing one exporter's attention spelling, with inputs for it.</summary>
public sealed record AttentionModel(
    string Name,
    Func<ModelProto> Build,
    Func<Random, long, long, Dictionary<string, TestTensor>> Inputs,
    Expectation? Fused,
    string? RefusalContains = null,
    bool NoReferenceProbe = false) // the op's output is not a graph output (subgraph, reshaped after the op)
{
    public override string ToString() => Name;
}

/// <summary>The catalogue of attention spellings the rewriter must fuse or refuse.</summary>
internal static class AttentionModels
{
    public const long Batch = 2;
    public const long Heads = 2;
    public const long HeadDim = 8;
    private static readonly float InvSqrtD = 1 / MathF.Sqrt(HeadDim);
    private const float FloatMin = float.MinValue;

    /// <summary>(query length, key length) pairs every parity test runs.</summary>
    public static readonly (long S, long T)[] Lengths = [(1, 1), (4, 4), (5, 9), (7, 3)];

    public static IEnumerable<AttentionModel> Fusable()
    {
        yield return new("Div after MatMul, padding mask (1-m)*-10000", DivWithPaddingChain, PaddingInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("Mul(c, scores), Add(mask, scores), finfo.min mask", MulFirstAddFirst, AdditiveMaskInputs(FloatMin),
            new(KeyLayout.SwapLastAxes, ScalePlacement.MultiplyScores, InvSqrtD));
        yield return new("No scale, T5 position bias (1,H,S,T)", NoScalePositionBias, PositionBiasInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.None, 1.0f));
        yield return new("Query scaled before the head split (BART)", QueryScaledBeforeHeadSplit, BartInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.QueryBeforeHeadSplit, 1.0f));
        yield return new("Q and Kᵀ each times sqrt of a shape-derived scale, -inf bool mask, IsNaN guard", SymmetricShapeDerivedScale, BoolMaskInputs(fullyMaskedBatch: true),
            new(KeyLayout.SwapLastAxes, ScalePlacement.Query | ScalePlacement.Key, InvSqrtD, MaskedRows: MaskedRowPolicy.Zero));
        yield return new("Key Transpose(0,2,3,1) merged with the head split (Whisper)", KeyHeadSplitMerged, WhisperInputs,
            new(KeyLayout.HeadSplitMerged, ScalePlacement.Query | ScalePlacement.Key, InvSqrtD));
        yield return new("Key Reshape→Transpose(0,2,1)→Reshape (dynamo)", KeyReshapedRank3, PlainInputs,
            new(KeyLayout.ReshapedRank3, ScalePlacement.MultiplyScores, InvSqrtD));
        yield return new("3-D (B·H, S, D) layout with (N,1,T) mask", Rank3Layout, Rank3Inputs,
            new(KeyLayout.Rank3, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("Where(keep, scores, -inf) with IsNaN guard", WhereKeepWithGuard, BoolMaskInputs(fullyMaskedBatch: true),
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD, MaskedRows: MaskedRowPolicy.Zero));
        yield return new("Where(keep, scores, -inf) without guard", WhereKeepNoGuard, BoolMaskInputs(fullyMaskedBatch: false),
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("Where(hide, finfo.min, scores) (DistilBERT)", WhereHideFiniteMin, BoolMaskInputs(fullyMaskedBatch: true),
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("Where(hide, -inf, scores) (masked_fill with -inf)", WhereHideNegativeInfinity, BoolMaskInputs(fullyMaskedBatch: true),
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("HF _make_causal_mask alone, expanded to (B, 1, S, S) (BART's decoder without a decoder mask): the causal attribute",
            MadeCausalMaskAlone, PlainSquareInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD, Causal: CausalAlignment.UpperLeft));
        yield return new("Padding mask expanded to the scores' shape, then inverted and filled (BART's _expand_mask): passed unexpanded",
            ExpandedPaddingMask, IntegerPaddingInputs(fullyMaskedBatch: true),
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD, NoteContains: "passed at the shape it broadcasts from"));
        yield return new("Padding bias added to a ConstantOfShape of zeros of the scores' shape (T5 cross-attention): passed unbroadcast",
            ZerosPlusPaddingBias, PaddingInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.None, 1.0f, NoteContains: "Add of zeros"));
        yield return new("Max clamp after a -inf additive mask (OPT)", MaxClamp, AdditiveMaskInputs(float.NegativeInfinity, fullyMaskedBatch: true),
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("ALiBi slopes·(j − i) from Range/Sub/Mul/Unsqueeze plus a finfo.min padding mask (one bias)", AlibiWithPadding, PaddingInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("ALiBi and a (1 − m)·finfo.min padding mask of an int64 m added one after the other (two masks, summed exactly for m in {0, 1})",
            () => AlibiThenPadding(DataType.Int64, FloatMin), IntegerPaddingInputs(fullyMaskedBatch: true),
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD, NoteContains: "holding 0 and 1"));
        yield return new("ALiBi and a (1 − m)·finfo.min padding mask of a bool m added one after the other (two masks, summed exactly)",
            () => AlibiThenPadding(DataType.Bool, FloatMin), IntegerPaddingInputs(fullyMaskedBatch: true, DataType.Bool),
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("Where(keep, s, finfo.min), then + (1 − m)·finfo.min of a bool m: the bias Where(keep, M, finfo.min + M)",
            () => WhereFillThenPadding(DataType.Bool), WhereFillThenPaddingInputs(DataType.Bool),
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("Causal triu(full(finfo.min), 1) plus a (1 − m)·finfo.min padding mask of a bool m: both only hide, summed into one bias",
            () => CausalTriuPlusPadding(DataType.Bool), IntegerPaddingInputs(fullyMaskedBatch: true, DataType.Bool),
            new(KeyLayout.SwapLastAxes, ScalePlacement.MultiplyScores, InvSqrtD, NoteContains: "kept as a mask input"));
        yield return new("Max(scores + finfo.min mask, finfo.min) clamp (HF OPT/XGLM)", MaxClamp, AdditiveMaskInputs(FloatMin, fullyMaskedBatch: true),
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("Causal mask from Trilu (SDPA is_causal)", CausalTrilu, PlainInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD, Causal: CausalAlignment.UpperLeft));
        yield return new("Causal bool keep from Trilu", CausalTriluKeep, PlainInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.MultiplyScores, InvSqrtD, Causal: CausalAlignment.UpperLeft));
        yield return new("Softcap (Gemma-2)", Softcap, PaddingInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.MultiplyScores, InvSqrtD, Softcap: 2.0f));
        yield return new("Dropout (inference) and Identity after Softmax", DropoutIdentity, PlainInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("GQA head repeat Unsqueeze→Expand→Reshape removed", () => GqaHeadRepeat(einsumValue: false), GqaInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.MultiplyScores, InvSqrtD, KvHeadRepeatRemoved: true));
        yield return new("Multi-query: one key head broadcast by MatMul", MultiQueryBroadcast, GqaInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("Opset 11 Softmax with axis=3", Opset11LastAxis, PaddingInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("Causal Trilu plus a finfo.min padding mask: causal stays a mask", CausalWithPadding, AdditiveMaskInputs(FloatMin, fullyMaskedBatch: true),
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD, NoteContains: "kept as a mask input"));
        yield return new("Causal Trilu plus a -inf bool keep mask", CausalWithKeep, BoolMaskInputs(fullyMaskedBatch: true),
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD, Causal: CausalAlignment.UpperLeft));
        yield return new("Mask expanded to Shape(scores) (DistilBERT)", MaskExpandedToScoresShape, BoolMaskInputs(fullyMaskedBatch: false),
            new(KeyLayout.SwapLastAxes, ScalePlacement.Query, InvSqrtD, NoteContains: "passed at the shape it broadcasts from"));
        yield return new("nn.MultiheadAttention: Transpose(1,2,0) key, baddbmm Mul by 1", MultiheadAttention, MultiheadInputs,
            new(KeyLayout.Rank3SequenceFirst, ScalePlacement.Query | ScalePlacement.MultiplyScores, InvSqrtD));
        yield return new("Dropout with ratio 0 in training mode (torchvision's F.dropout(p=0.0)) is the identity", DropoutRatioZeroTraining, PlainInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("Swin: 4-D window scores + a per-head bias, viewed as (B, nW, H, S, T), + the −100 window mask, viewed back",
            () => SwinWindows(-100), SwinInputs, new(KeyLayout.SwapLastAxes, ScalePlacement.Query, InvSqrtD, NoteContains: "summed into one bias"));
        yield return new("BART 3-D scores with Reshape→Add→Reshape mask", BartReshapedMask, BartMaskInputs,
            new(KeyLayout.Rank3, ScalePlacement.QueryBeforeHeadSplit, 1.0f), NoReferenceProbe: true);
        yield return new("BLOOM: alibi.baddbmm on 3-D scores, a (B, H, S, T) view masked with finfo.min by a bool mask, Softmax, view back",
            () => Bloom(BloomVariant.Plain), BloomInputs(past: false), new(KeyLayout.Rank3Transposed, ScalePlacement.MultiplyScores, InvSqrtD), NoReferenceProbe: true);
        yield return new("BLOOM with a KV cache: Concat(past_key (B·H, D, P), Kᵀ, axis 2), Concat(past_value, V, axis 1)",
            () => Bloom(BloomVariant.Past), BloomInputs(past: true), new(KeyLayout.Rank3Transposed, ScalePlacement.MultiplyScores, InvSqrtD), NoReferenceProbe: true);
        yield return new("MPT: (H, 1, T) ALiBi added to 4-D scores, masked_fill(bool, finfo.min), Softmax of scores.float()", Mpt, MptInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.MultiplyScores, InvSqrtD));
        yield return new("BLOOM-style ALiBi (A, 1, T) on the 3-D scores with A not provably B·H (A = B·H here): broadcast to the rows, then regrouped",
            () => Bloom(BloomVariant.UnrelatedAlibi), BloomUnrelatedAlibiInputs(Batch * Heads), new(KeyLayout.Rank3Transposed, ScalePlacement.MultiplyScores, InvSqrtD), NoReferenceProbe: true);
        yield return new("BLOOM-style ALiBi (A, 1, T) on the 3-D scores with A not provably B·H (A = 1 here): broadcast to the rows, then regrouped",
            () => Bloom(BloomVariant.UnrelatedAlibi), BloomUnrelatedAlibiInputs(1), new(KeyLayout.Rank3Transposed, ScalePlacement.MultiplyScores, InvSqrtD), NoReferenceProbe: true);
        yield return new("GPT-NeoX: baddbmm into zeros on 3-D scores, a (B, H, S, T) view never merged back, causal buffer Where, value product on the view",
            () => GptNeoX(GptNeoXVariant.Plain), SelfAttentionInputs, new(KeyLayout.Rank3, ScalePlacement.MultiplyScores, InvSqrtD, Causal: CausalAlignment.LowerRight));
        yield return new("GPT-NeoX with its padding mask added after the causal Where", () => GptNeoX(GptNeoXVariant.Padding), (r, s, _) => AdditiveMaskInputs(FloatMin)(r, s, s),
            new(KeyLayout.Rank3, ScalePlacement.MultiplyScores, InvSqrtD, NoteContains: "kept as a mask input"));
        yield return new("Stable Diffusion (diffusers AttnProcessor): head_to_batch_dim, baddbmm(empty, q, kᵀ, beta=0) into zeros times 0, upcast Casts around Softmax, bmm, batch_to_head_dim",
            () => DiffusersAttention(DiffusersVariant.EmptyInput), DiffusersInputs(withBaddbmmInput: false), new(KeyLayout.Rank3, ScalePlacement.MultiplyScores, InvSqrtD),
            NoReferenceProbe: true);
        yield return new("baddbmm(x, q, kᵀ, beta=0) with x a graph input: x·0 is not provably 0 (0·inf is NaN), so it stays the op's bias",
            () => DiffusersAttention(DiffusersVariant.InputTimesZero), DiffusersInputs(withBaddbmmInput: true), new(KeyLayout.Rank3, ScalePlacement.MultiplyScores, InvSqrtD),
            NoReferenceProbe: true);
        yield return new("OPT: Max(scores + mask, finfo.min) inside the (B, H, S, T) view, merged back before Softmax", OptClampInView, CausalPlusPaddingInputs,
            new(KeyLayout.Rank3, ScalePlacement.QueryBeforeHeadSplit, 1.0f), NoReferenceProbe: true);
        yield return new("CLIP: a causal triu(full(finfo.min), 1) and a padding mask, each added on a view of its own (merged and split again between)",
            ClipTwoViews, ClipInputs, new(KeyLayout.Rank3, ScalePlacement.QueryBeforeHeadSplit, 1.0f, NoteContains: "kept as a mask input"), NoReferenceProbe: true);
        yield return new("Softcapped scores widened to float64 for a float64 sliding-window mask of 0 and finfo.min (a Gemma-2 mask typed float64)",
            () => Float64Scores(Float64Variant.SlidingWindow), SlidingWindowInputs, new(KeyLayout.SwapLastAxes, ScalePlacement.MultiplyScores, InvSqrtD, Softcap: 2.0f,
            NoteContains: "converted from Double to Float"));
        yield return new("GPT-2: no-op Cast, finite causal Where, then padding Add", Gpt2WhereThenAdd, AdditiveMaskInputs(FloatMin),
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD, NoteContains: "kept as a mask input"));
        yield return new("T5: no-op Cast to float before Softmax", T5NoOpCast, PositionBiasInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.None, 1.0f));
        yield return new("Mask subtracted: Sub(scores, (1-m)*10000) (tf2onnx)", SubtractedMask, PaddingInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.Query, InvSqrtD));
        yield return new("Causal from triu(full(finfo.min), 1) (Llama)", CausalTriuOfMin, PlainInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.MultiplyScores, InvSqrtD, Causal: CausalAlignment.UpperLeft));
        yield return new("Causal from a sliced lower-triangular buffer (GPT-2 without padding)", CausalBufferSlice, SelfAttentionInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD, Causal: CausalAlignment.LowerRight));
        yield return new("Causal from a sliced -inf triangle buffer added to the scores (Whisper)", CausalAdditiveBuffer, SelfAttentionInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.Query | ScalePlacement.Key, InvSqrtD, Causal: CausalAlignment.LowerRight));
        yield return new("GPT-2 with a KV cache: Concat kept outside, buffer causal lower-right", Gpt2WithPast, PastInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD, Causal: CausalAlignment.LowerRight));
        yield return new("Llama causal mask without padding: triu(full(finfo.min), 1) · (arange(T) > cache_position), KV cache", () => LlamaCachePosition(triangle: true), PastInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.MultiplyScores, InvSqrtD, Causal: CausalAlignment.LowerRight));
        yield return new("Llama causal mask exported with one query (no triu): full(finfo.min) · (arange(T) > cache_position)", () => LlamaCachePosition(triangle: false), PastInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.MultiplyScores, InvSqrtD, Causal: CausalAlignment.LowerRight));
        yield return new("Llama-style mask whose cache position starts at another input's length: stays a bias", () => LlamaCachePosition(triangle: true, offsetInput: true),
            (r, s, t) => { var inputs = PastInputs(r, s, t); inputs["offset"] = new TestTensor(DataType.Float, [t], new float[t]); return inputs; },
            new(KeyLayout.SwapLastAxes, ScalePlacement.MultiplyScores, InvSqrtD));
        yield return new("Attention inside an If branch reading outer values", InsideIfBranch, IfInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD), NoReferenceProbe: true);
        yield return new("Softmax written as Exp(x − ReduceMax) / ReduceSum, axes -1 (TorchScript, unknown rank)", () => DecomposedSoftmax(opset: 17, axis: -1, subtractMax: true), PaddingInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD, NoteContains: "Softmax written out"));
        yield return new("Softmax written out at opset 18 (axes inputs, axis 3) with a -inf bool mask", () => DecomposedSoftmax(opset: 18, axis: 3, subtractMax: true), BoolMaskInputs(fullyMaskedBatch: true),
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD, NoteContains: "Softmax written out"));
        yield return new("Attention inside a model-local function with declared input types", () => AttentionInFunction(declareTypes: true, attributeReference: false), PlainInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.MultiplyScores, InvSqrtD), NoReferenceProbe: true);
        yield return new("Attention inside a function taking its scale from the caller: the call inlined", () => AttentionInFunction(declareTypes: false, attributeReference: true), PlainInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.MultiplyScores, InvSqrtD));
        yield return new("Einsum (B,S,H,D) operands, pre-scaled query, -1e9 padding (Keras MultiHeadAttention via tf2onnx)", KerasEinsum, KerasInputs,
            new(KeyLayout.Einsum, ScalePlacement.Query, InvSqrtD), NoReferenceProbe: true);
        yield return new("Einsum bhqd,bhkd->bhqk and bhqk,bhkd->bhqd, Div scale", TorchEinsum, PlainInputs,
            new(KeyLayout.Einsum, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("Einsum on 3-D sequence-first operands (S, N, D) with an (N,1,T) mask", SequenceFirstEinsum, SequenceFirstEinsumInputs,
            new(KeyLayout.Einsum, ScalePlacement.DivideScores, InvSqrtD), NoReferenceProbe: true);
        yield return new("Einsum on 3-D sequence-first operands with a Reshape→Add→Reshape mask", SequenceFirstEinsumReshapedMask, SequenceFirstEinsumViewInputs,
            new(KeyLayout.Einsum, ScalePlacement.DivideScores, InvSqrtD), NoReferenceProbe: true);
        yield return new("Keras Einsum with the mask expanded to Shape(scores)", KerasEinsumShapeReader, KerasBoolMaskInputs,
            new(KeyLayout.Einsum, ScalePlacement.Query, InvSqrtD, NoteContains: "passed at the shape it broadcasts from"), NoReferenceProbe: true);
        yield return new("MatMul scores, Einsum value product bhqk,bhkd->bhqd", EinsumValueAfterMatMulScores, PlainInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("MatMul scores, Einsum value product of (B,T,H,D) values giving (B,S,H,D)", EinsumValueBshdAfterMatMulScores, EinsumValueBshdInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD), NoReferenceProbe: true);
        yield return new("Einsum scores from (B,S,H,D) query and key, MatMul value product", EinsumScoresMatMulValue, EinsumScoresInputs,
            new(KeyLayout.Einsum, ScalePlacement.MultiplyScores, InvSqrtD));
        yield return new("Einsum with ellipses ...qd,...kd->...qk and ...qk,...kd->...qd", () => EllipsisEinsum("...qd,...kd->...qk", "...qk,...kd->...qd"), PlainInputs,
            new(KeyLayout.Einsum, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("Einsum with a batch letter before the ellipsis, b...qd,b...kd->b...qk and b...qk,b...kd->b...qd",
            () => EllipsisEinsum("b...qd,b...kd->b...qk", "b...qk,b...kd->b...qd"), PlainInputs,
            new(KeyLayout.Einsum, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("Einsum with an ellipsis for the batch of (B,S,H,D) operands, ...qhd,...khd->...hqk and ...hqk,...khd->...qhd", EllipsisEinsumBshd, BshdInputs,
            new(KeyLayout.Einsum, ScalePlacement.Query, InvSqrtD), NoReferenceProbe: true);
        yield return new("Einsum with ellipses on 3-D (N,S,D) operands, MatMul value product", EllipsisEinsumRank3, Rank3QkvInputs,
            new(KeyLayout.Einsum, ScalePlacement.DivideScores, InvSqrtD));
        yield return new("GQA head repeat removed with MatMul scores and an Einsum value product", () => GqaHeadRepeat(einsumValue: true), GqaInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.MultiplyScores, InvSqrtD, KvHeadRepeatRemoved: true));
        yield return new("GQA head repeat removed with Einsum scores and value product (ellipses)", GqaHeadRepeatEinsum, GqaInputs,
            new(KeyLayout.Einsum, ScalePlacement.MultiplyScores, InvSqrtD, KvHeadRepeatRemoved: true));
        yield return new("Interleaved head repeat (Unsqueeze(1)) with Einsum products kept: K and V fed already repeated", GqaInterleavedRepeatEinsum, GqaInputs,
            new(KeyLayout.Einsum, ScalePlacement.MultiplyScores, InvSqrtD));
        yield return new("XSoftmax (HF DeBERTa): Where(hide, finfo.min, scores + q·k bias) → Softmax → Where(hide, 0, p), rows fully hidden",
            () => XSoftmax(XSoftmaxVariant.Exact), BoolMaskInputs(fullyMaskedBatch: true),
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD, MaskedRows: MaskedRowPolicy.Zero, NoteContains: "zeroes exactly the keys"));
    }

    /// <summary>
    /// Integer masks m in (1 − m)·finfo.min next to another finfo.min, run with m = 2 (+finfo.max) in batch 0: exact only
    /// under RewriteOptions.IntegerMasksAreBinary, refused without it. Each refusal names what it contains.
    /// </summary>
    public static IEnumerable<AttentionModel> IntegerMasksHoldingTwo()
    {
        // Found by the differential fuzz test (seed 158): (s + finfo.min) + finfo.max is 0 where s + (finfo.min + finfo.max) is s.
        yield return new("Causal triu(full(finfo.min), 1) plus (1 − m)·finfo.min of an int64 m: m = 2 gives +finfo.max, which cancels the causal fill when summed",
            () => CausalTriuPlusPadding(DataType.Int64), PaddingOfTwos, null, "absorbing values of opposite signs");
        // Found by the differential fuzz test (seed 1284): the bias F + M is finfo.min + finfo.max = 0 where the graph has s + 0.
        yield return new("Where(keep, s, finfo.min), then + (1 − m)·finfo.min of an int64 m: m = 2 gives +finfo.max, which cancels the fill in the op's bias",
            () => WhereFillThenPadding(DataType.Int64), WhereFillThenPaddingInputs(DataType.Int64), null, "fill and mask would cancel");
        // The note was dropped for views of 3-D scores before the view's own check kept CheckMasks' notes.
        yield return new("GPT-NeoX view: Where(causal buffer, s, finfo.min), then (1 − m)·finfo.min of an int64 m: m = 2 cancels the fill in the op's bias",
            () => GptNeoX(GptNeoXVariant.IntegerPadding), (r, s, _) => PaddingOfTwos(r, s, s), null, "fill and mask would cancel");
        yield return new("ALiBi then (1 − m)·finfo.min of an int64 m, next to a mask that is not proven free of finfo.min",
            () => AlibiThenPadding(DataType.Int64, FloatMin), PaddingOfTwos, null, "absorbing values of opposite signs");
    }

    public static IEnumerable<AttentionModel> OnnxAttention()
    {
        yield return new("ONNX Attention-23 with a float mask", OnnxAttentionFloatMask, QueryByKeyMaskInputs(DataType.Float, keySameAsQuery: false),
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, MaskedRows: MaskedRowPolicy.Zero, NoteContains: LowestHidesNote));
        yield return new("ONNX Attention-23, bool mask, is_causal, explicit scale", OnnxAttentionCausalBool, QueryByKeyMaskInputs(DataType.Bool, keySameAsQuery: true),
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, 0.25f, Causal: CausalAlignment.UpperLeft, MaskedRows: MaskedRowPolicy.Zero));
        yield return new("ONNX Attention-23 with a KV cache and present outputs", OnnxAttentionWithPast, PastInputs,
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, Causal: CausalAlignment.LowerRight, MaskedRows: MaskedRowPolicy.Zero));
        yield return new("ONNX Attention-23 with 3-D inputs and GQA heads", OnnxAttention3D, Hidden3DInputs,
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, MaskedRows: MaskedRowPolicy.Zero), NoReferenceProbe: true);
        yield return new("ONNX Attention-24 with nonpad_kv_seqlen inside a model-local function", OnnxAttentionInFunction, NonPadInputs(threeD: false),
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, MaskedRows: MaskedRowPolicy.Zero), NoReferenceProbe: true);
        yield return new("ONNX Attention-23 without scale and with a symbolic head dim", OnnxAttentionSymbolicHeadDim, PlainInputs,
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, float.NaN, MaskedRows: MaskedRowPolicy.Zero, NoteContains: "op's own default"));
        yield return new("ONNX Attention-23 with softcap, explicit scale and a float mask", OnnxAttentionSoftcap, QueryByKeyMaskInputs(DataType.Float, keySameAsQuery: false),
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, 0.5f, MaskedRows: MaskedRowPolicy.Zero, Softcap: 1.5f, NoteContains: LowestHidesNote));
        yield return new("ONNX Attention-23, qk_matmul_output_mode 0 with the QK output declared but unused", OnnxAttentionQkOutputUnused, PlainInputs,
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, MaskedRows: MaskedRowPolicy.Zero));
        yield return new("ONNX Attention-24 with nonpad_kv_seqlen (a row fully padded)", () => OnnxAttentionNonPad(threeD: false), NonPadInputs(threeD: false),
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, MaskedRows: MaskedRowPolicy.Zero));
        yield return new("ONNX Attention-24, 3-D inputs with nonpad_kv_seqlen", () => OnnxAttentionNonPad(threeD: true), NonPadInputs(threeD: true),
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, MaskedRows: MaskedRowPolicy.Zero), NoReferenceProbe: true);
        yield return new("ONNX Attention-24 with nonpad_kv_seqlen and is_causal (lengths T, T−1, T/2 and 0)", () => OnnxAttentionNonPad(threeD: false, causal: true),
            NonPadCausalInputs(threeD: false),
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, Causal: CausalAlignment.LowerRight, MaskedRows: MaskedRowPolicy.Zero, NoteContains: NonPadCausalNote));
        yield return new("ONNX Attention-24, 3-D inputs with nonpad_kv_seqlen and is_causal", () => OnnxAttentionNonPad(threeD: true, causal: true), NonPadCausalInputs(threeD: true),
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, Causal: CausalAlignment.LowerRight, MaskedRows: MaskedRowPolicy.Zero, NoteContains: NonPadCausalNote),
            NoReferenceProbe: true);
        yield return new("ONNX Attention-23, float mask hiding whole rows with finfo.min and −inf", () => OnnxAttentionMask(DataType.Float, ["B", 1, "S", "T"]),
            HiddenRowMaskInputs(DataType.Float, [Batch, 1], keySameAsQuery: false),
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, MaskedRows: MaskedRowPolicy.Zero, NoteContains: LowestHidesNote));
        yield return new("ONNX Attention-23, (S, T) float mask with finfo.min rows, is_causal", () => OnnxAttentionMask(DataType.Float, ["S", "T"], causal: true),
            HiddenRowMaskInputs(DataType.Float, [], keySameAsQuery: true),
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, Causal: CausalAlignment.UpperLeft, MaskedRows: MaskedRowPolicy.Zero, NoteContains: LowestHidesNote));
        yield return new("ONNX Attention-23, (H, S, T) float mask, softcap applied before it", () => OnnxAttentionMask(DataType.Float, [Heads, "S", "T"], softcap: 2f),
            HiddenRowMaskInputs(DataType.Float, [Heads], keySameAsQuery: false),
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, MaskedRows: MaskedRowPolicy.Zero, Softcap: 2f, NoteContains: LowestHidesNote));
        yield return new("ONNX Attention-23, bool mask with all-false rows, is_causal with T ≠ S (upper-left), softcap",
            () => OnnxAttentionMask(DataType.Bool, ["B", 1, "S", "T"], causal: true, softcap: 2f), HiddenRowMaskInputs(DataType.Bool, [Batch, 1], keySameAsQuery: false),
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, Causal: CausalAlignment.UpperLeft, MaskedRows: MaskedRowPolicy.Zero, Softcap: 2f));
        yield return new("ONNX Attention-23, softmax_precision float", () => OnnxAttentionMask(DataType.Bool, ["B", 1, "S", "T"], softmaxPrecision: (long)DataType.Float),
            HiddenRowMaskInputs(DataType.Bool, [Batch, 1], keySameAsQuery: false),
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, MaskedRows: MaskedRowPolicy.Zero));
        yield return new("ONNX Attention-23, KV cache with a bool mask over past and new keys, is_causal", () => OnnxAttentionPastWithMask(DataType.Bool, causal: true),
            PastMaskInputs(DataType.Bool),
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, Causal: CausalAlignment.LowerRight, MaskedRows: MaskedRowPolicy.Zero));
        yield return new("ONNX Attention-23, KV cache with a float mask hiding whole rows", () => OnnxAttentionPastWithMask(DataType.Float, causal: false),
            PastMaskInputs(DataType.Float),
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, MaskedRows: MaskedRowPolicy.Zero, NoteContains: LowestHidesNote));
        yield return new("ONNX Attention-23, 3-D inputs with an (S, T) float mask and is_causal", OnnxAttention3DMaskCausal, Hidden3DMaskInputs,
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, Causal: CausalAlignment.UpperLeft, MaskedRows: MaskedRowPolicy.Zero, NoteContains: LowestHidesNote),
            NoReferenceProbe: true);
        yield return new("ONNX Attention-23 in float16, bool mask with all-false rows, is_causal",
            () => OnnxAttentionMask(DataType.Bool, ["B", 1, "S", "T"], causal: true, type: DataType.Float16), HiddenRowMaskInputs(DataType.Bool, [Batch, 1], keySameAsQuery: true, DataType.Float16),
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, Causal: CausalAlignment.UpperLeft, MaskedRows: MaskedRowPolicy.Zero), NoReferenceProbe: true);
        yield return new("ONNX Attention-23 in float16, float16 mask hiding whole rows with −65504",
            () => OnnxAttentionMask(DataType.Float16, ["B", 1, "S", "T"], type: DataType.Float16), HiddenRowMaskInputs(DataType.Float16, [Batch, 1], keySameAsQuery: false, DataType.Float16),
            new(KeyLayout.NotTransposed, ScalePlacement.Attribute, InvSqrtD, MaskedRows: MaskedRowPolicy.Zero, NoteContains: LowestHidesNote), NoReferenceProbe: true);
    }

    public const string LowestHidesNote = "lowest finite value hide their key";
    public const string NonPadCausalNote = "j ≤ i + nonpad_kv_seqlen[b] − q_len";

    public static IEnumerable<AttentionModel> OnnxAttentionRefused()
    {
        yield return new("ONNX Attention whose QK output is used", OnnxAttentionQkOutput, PlainInputs, null, "QK matmul output");
        yield return new("ONNX Attention, mask covering 4 of 8 keys (ONNX Runtime does not pad it)", () => OnnxAttentionStaticMask(8, 1, 1, 3, 4), PlainInputs, null,
            "covers 4 keys of 8; ONNX Runtime 1.31 rejects");
        yield return new("ONNX Attention, mask broadcast over keys (last dim 1)", () => OnnxAttentionStaticMask(8, 1, 1, 3, 1), PlainInputs, null, "covers 1 keys of 8");
        yield return new("ONNX Attention, mask broadcast over queries (B, 1, 1, T)", () => OnnxAttentionStaticMask(8, 1, 1, 1, 8), PlainInputs, null,
            "has 1 query rows for a query length of 3");
        yield return new("ONNX Attention, 1-D mask", () => OnnxAttentionStaticMask(8, 8), PlainInputs, null, "rejects masks that are not 2-D, 3-D or 4-D");
        yield return new("ONNX Attention, mask heads dim neither 1 nor the query heads", () => OnnxAttentionStaticMask(8, 3, 3, 8), PlainInputs, null, "does not broadcast");
        yield return new("ONNX Attention, KV cache mask covering only the new keys", OnnxAttentionPastShortMask, PlainInputs, null, "covers 2 keys of 5");
        yield return new("ONNX Attention, past_key without a present_key output", OnnxAttentionPastWithoutPresent, PlainInputs, null, "no present_key output");
        yield return new("ONNX Attention, softmax_precision float16", () => OnnxAttentionMask(DataType.Bool, ["B", 1, "S", "T"], softmaxPrecision: (long)DataType.Float16), PlainInputs, null,
            "softmax_precision 10");
        yield return new("ONNX Attention in float16 with a float32 mask", () => OnnxAttentionMask(DataType.Float, ["B", 1, "S", "T"], type: DataType.Float16), PlainInputs, null,
            "mask 'mask' is Float, attention runs in Float16");
        yield return new("ONNX Attention-24, nonpad_kv_seqlen with attn_mask", OnnxAttentionNonPadWithMask, PlainInputs, null, "nonpad_kv_seqlen and attn_mask");
        yield return new("ONNX Attention-24, nonpad_kv_seqlen with a KV cache", OnnxAttentionNonPadWithPast, PlainInputs, null, "nonpad_kv_seqlen and past_key/past_value");
    }

    /// <summary>4-D Attention with an attn_mask of the given dims (symbols or numbers), is_causal, softcap and softmax_precision as asked.</summary>
    private static ModelProto OnnxAttentionMask(DataType maskType, object[] maskDims, bool causal = false, float softcap = 0, long softmaxPrecision = 0,
                                                DataType type = DataType.Float)
    {
        var (b, q, k, v) = Bhsd(opset: 23, type: type);
        var mask = b.Input("mask", maskType, maskDims);
        var attributes = new List<AttributeProto>();
        if (causal)
        {
            attributes.Add(Int("is_causal", 1));
        }

        if (softcap > 0)
        {
            attributes.Add(Float("softcap", softcap));
        }

        if (softmaxPrecision != 0)
        {
            attributes.Add(Int("softmax_precision", softmaxPrecision));
        }

        b.Rename(b.Node("Attention", [q, k, v, mask], [.. attributes]), "out");
        b.Output("out", type);
        return b.Model;
    }

    /// <summary>
    /// A mask of the given leading dims × (S, T): random values in [−2, 2] (bool: mostly true) with, per
    /// batch/head slice, query row 0 hidden entirely (finfo.min, or −inf in the second slice) and a few
    /// single keys hidden.
    /// </summary>
    private static Func<Random, long, long, Dictionary<string, TestTensor>> HiddenRowMaskInputs(DataType maskType, long[] leading, bool keySameAsQuery,
                                                                                                 DataType type = DataType.Float) => (r, s, t) =>
    {
        t = keySameAsQuery ? s : t;
        var inputs = Qkv(r, s, t, type: type);
        var slices = leading.Aggregate(1L, (p, d) => p * d);
        var data = new float[slices * s * t];
        var lowest = (float)ElementTypes.Lowest(maskType == DataType.Bool ? DataType.Float : maskType);
        for (var i = 0; i < data.Length; i++)
        {
            var slice = i / (s * t);
            var row = i / t % s;
            var hidden = row == 0 || r.Next(5) == 0;
            var fill = slice % 2 == 1 && row == 0 ? float.NegativeInfinity : lowest;
            data[i] = maskType == DataType.Bool ? (hidden ? 0 : 1) : hidden ? fill : (float)(r.NextDouble() * 4 - 2);
            if (maskType == DataType.Float16)
            {
                data[i] = (float)(Half)data[i];
            }
        }

        inputs["mask"] = new TestTensor(maskType, [.. leading, s, t], data);
        return inputs;
    };

    private static ModelProto OnnxAttentionPastWithMask(DataType maskType, bool causal)
    {
        var (b, q, k, v) = Bhsd(opset: 23, keyLength: "S");
        var mask = b.Input("mask", maskType, "B", 1, "S", "T");
        var pastKey = b.Input("past_key", DataType.Float, "B", Heads, "P", HeadDim);
        var pastValue = b.Input("past_value", DataType.Float, "B", Heads, "P", HeadDim);
        var outputs = b.NodeOutputs("Attention", [q, k, v, mask, pastKey, pastValue], 3, causal ? [Int("is_causal", 1)] : []);
        b.Rename(outputs[0], "out");
        b.Rename(outputs[1], "present_key");
        b.Output("out");
        b.Output("present_key");
        return b.Model;
    }

    /// <summary>S new keys after t past ones, with a (B, 1, S, t + S) mask hiding whole rows.</summary>
    private static Func<Random, long, long, Dictionary<string, TestTensor>> PastMaskInputs(DataType maskType) => (r, s, t) =>
    {
        var inputs = HiddenRowMaskInputs(maskType, [Batch, 1], keySameAsQuery: false)(r, s, t + s);
        var fresh = Qkv(r, s, s);
        inputs["k"] = fresh["k"];
        inputs["v"] = fresh["v"];
        inputs["past_key"] = TestTensor.Random(r, [Batch, Heads, t, HeadDim]);
        inputs["past_value"] = TestTensor.Random(r, [Batch, Heads, t, HeadDim]);
        return inputs;
    };

    private static ModelProto OnnxAttention3DMaskCausal()
    {
        var b = new ModelBuilder(23);
        var q = b.Input("q", DataType.Float, "B", "S", Heads * HeadDim);
        var k = b.Input("k", DataType.Float, "B", "T", HeadDim);
        var v = b.Input("v", DataType.Float, "B", "T", HeadDim);
        var mask = b.Input("mask", DataType.Float, "S", "T");
        b.Rename(b.Node("Attention", [q, k, v, mask], Int("q_num_heads", Heads), Int("kv_num_heads", 1), Int("is_causal", 1)), "out");
        b.Output("out");
        return b.Model;
    }

    private static Dictionary<string, TestTensor> Hidden3DMaskInputs(Random r, long s, long t)
    {
        var inputs = Hidden3DInputs(r, s, t);
        inputs["mask"] = HiddenRowMaskInputs(DataType.Float, [], keySameAsQuery: false)(r, s, t)["mask"];
        return inputs;
    }

    /// <summary>Static shapes: Q (2, 2, 3, 8), K/V with <paramref name="keyLength"/> keys, and a float mask of <paramref name="maskDims"/>.</summary>
    private static ModelProto OnnxAttentionStaticMask(long keyLength, params long[] maskDims)
    {
        var b = new ModelBuilder(23);
        var q = b.Input("q", DataType.Float, Batch, Heads, 3, HeadDim);
        var k = b.Input("k", DataType.Float, Batch, Heads, keyLength, HeadDim);
        var v = b.Input("v", DataType.Float, Batch, Heads, keyLength, HeadDim);
        var mask = b.Input("mask", DataType.Float, [.. maskDims.Cast<object>()]);
        b.Rename(b.Node("Attention", [q, k, v, mask]), "out");
        b.Output("out");
        return b.Model;
    }

    private static ModelProto OnnxAttentionPastShortMask()
    {
        var b = new ModelBuilder(23);
        var q = b.Input("q", DataType.Float, Batch, Heads, 2, HeadDim);
        var k = b.Input("k", DataType.Float, Batch, Heads, 2, HeadDim);
        var v = b.Input("v", DataType.Float, Batch, Heads, 2, HeadDim);
        var mask = b.Input("mask", DataType.Bool, Batch, 1, 2, 2);
        var pastKey = b.Input("past_key", DataType.Float, Batch, Heads, 3, HeadDim);
        var pastValue = b.Input("past_value", DataType.Float, Batch, Heads, 3, HeadDim);
        var outputs = b.NodeOutputs("Attention", [q, k, v, mask, pastKey, pastValue], 3);
        b.Rename(outputs[0], "out");
        b.Rename(outputs[1], "present_key");
        b.Output("out");
        b.Output("present_key");
        return b.Model;
    }

    private static ModelProto OnnxAttentionPastWithoutPresent()
    {
        var (b, q, k, v) = Bhsd(opset: 23, keyLength: "S");
        var pastKey = b.Input("past_key", DataType.Float, "B", Heads, "P", HeadDim);
        var pastValue = b.Input("past_value", DataType.Float, "B", Heads, "P", HeadDim);
        b.Rename(b.Node("Attention", [q, k, v, "", pastKey, pastValue]), "out");
        b.Output("out");
        return b.Model;
    }

    private static ModelProto OnnxAttentionNonPadWithMask()
    {
        var (b, q, k, v) = Bhsd(opset: 24);
        var mask = b.Input("mask", DataType.Bool, "B", 1, "S", "T");
        var lengths = b.Input("nonpad_kv_seqlen", DataType.Int64, "B");
        b.Rename(b.Node("Attention", [q, k, v, mask, "", "", lengths]), "out");
        b.Output("out");
        return b.Model;
    }

    private static ModelProto OnnxAttentionNonPadWithPast()
    {
        var (b, q, k, v) = Bhsd(opset: 24, keyLength: "S");
        var pastKey = b.Input("past_key", DataType.Float, "B", Heads, "P", HeadDim);
        var pastValue = b.Input("past_value", DataType.Float, "B", Heads, "P", HeadDim);
        var lengths = b.Input("nonpad_kv_seqlen", DataType.Int64, "B");
        var outputs = b.NodeOutputs("Attention", [q, k, v, "", pastKey, pastValue, lengths], 3);
        b.Rename(outputs[0], "out");
        b.Rename(outputs[1], "present_key");
        b.Output("out");
        b.Output("present_key");
        return b.Model;
    }

    public static IEnumerable<AttentionModel> InLoops()
    {
        yield return new("Attention inside a Loop body, carried state and outer values", InsideLoopBody, LoopInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.MultiplyScores, InvSqrtD), NoReferenceProbe: true);
        yield return new("Attention inside a Scan body: scanned query, outer-scope key and value", InsideScanBody, ScanInputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, InvSqrtD), NoReferenceProbe: true);
    }

    public static IEnumerable<AttentionModel> Float16()
    {
        yield return new("float16 with Cast to float around Softmax", Float16CastAroundSoftmax, Float16Inputs,
            new(KeyLayout.SwapLastAxes, ScalePlacement.DivideScores, 1 / (float)(Half)MathF.Sqrt(HeadDim)));
        yield return new("float16 with a float16-to-float16 Cast, then Cast to float, before Softmax (converted diffusers upcast)",
            Float16SameTypeCastBeforeSoftmax, Float16Inputs, new(KeyLayout.SwapLastAxes, ScalePlacement.MultiplyScores, (float)(Half)InvSqrtD));
        yield return new("float16 Keras Einsum with Cast to float around Softmax", Float16KerasEinsum, Float16KerasInputs,
            new(KeyLayout.Einsum, ScalePlacement.Query, (float)(Half)InvSqrtD), NoReferenceProbe: true);
    }

    private static ModelProto Float16KerasEinsum()
    {
        var b = new ModelBuilder(13);
        var q = b.Input("q", DataType.Float16, "B", "S", Heads, HeadDim);
        var k = b.Input("k", DataType.Float16, "B", "T", Heads, HeadDim);
        var v = b.Input("v", DataType.Float16, "B", "T", Heads, HeadDim);
        var scores = b.Node("Einsum", [k, b.Node("Mul", [q, b.Scalar(InvSqrtD, DataType.Float16)])], Str("equation", "aecd,abcd->acbe"));
        var probabilities = Softmax(b, b.Node("Cast", [scores], Int("to", (long)DataType.Float)));
        var cast = b.Node("Cast", [probabilities], Int("to", (long)DataType.Float16));
        b.Rename(b.Node("Einsum", [cast, v], Str("equation", "acbe,aecd->abcd")), "out");
        b.Output("out", DataType.Float16);
        return b.Model;
    }

    private static Dictionary<string, TestTensor> Float16KerasInputs(Random r, long s, long t) => new()
    {
        ["q"] = TestTensor.Random(r, [Batch, s, Heads, HeadDim], DataType.Float16),
        ["k"] = TestTensor.Random(r, [Batch, t, Heads, HeadDim], DataType.Float16),
        ["v"] = TestTensor.Random(r, [Batch, t, Heads, HeadDim], DataType.Float16),
    };

    public static IEnumerable<AttentionModel> Refused()
    {
        yield return new("Probabilities are a graph output", ProbabilitiesAsOutput, PlainInputs, null, "is a graph output");
        yield return new("Scores also used outside the pattern", ScoresUsedOutside, PlainInputs, null, "outside the attention pattern");
        yield return new("Softmax over axis 1", SoftmaxAxis1, PlainInputs, null, "not over the last axis");
        yield return new("Opset 11 Softmax with the default axis", Opset11DefaultAxis, PlainInputs, null, "flattened axes");
        yield return new("Scale is a graph input", ScaleFromInput, ScaleInputs, null, "not a constant");
        yield return new("Where fill -10000", WhereFillTenThousand, BoolMaskInputs(fullyMaskedBatch: false), null, "no additive bias reproduces it");
        yield return new("Dropout in training mode", DropoutTraining, PlainInputs, null, "not provably the identity");
        yield return new("Key and value lengths differ", KeyValueLengthMismatch, PlainInputs, null, "does not match key");
        yield return new("Two additive constant masks beyond ±128 (summing them rounds visibly)", TwoAdditiveMasks, PlainInputs, null, "Two additive masks");
        yield return new("Swin-style window mask filled with −1000 next to a bias: too large to sum with it", () => SwinWindows(-1000), SwinInputs, null, "Two additive masks");
        yield return new("Swin-style window mask whose inner Where keeps a graph input (its condition is not the negation)", () => SwinWindows(-100, negatedInner: false),
            SwinInputs, null, "Two additive masks");
        yield return new("ALiBi then a (1 − m)·−10000 padding mask: −10000 does not absorb the scores", () => AlibiThenPadding(DataType.Int64, -10000), IntegerPaddingInputs(fullyMaskedBatch: false),
            null, "Two additive masks");
        yield return new("ALiBi then a (1 − m)·finfo.min padding mask of a float m, which may hold fractions", () => AlibiThenPadding(DataType.Float, FloatMin), PaddingInputs,
            null, "Two additive masks");
        // Found by the differential fuzz test (seed 83): float16 cannot hold float32's finfo.min; converted, it is −inf and a
        // row the graph spreads over the fill (uniform) becomes NaN.
        yield return new("float16 scores widened to float32, then triu(full(float32 finfo.min), 1) and a −inf padding mask: the float32 bias cannot become float16",
            Float16ScoresWithFloat32CausalAndPadding, Float16PaddingInputs, null, "not provably held exactly by Float16");
        yield return new("Softmax written out over axis 2", () => DecomposedSoftmax(opset: 17, axis: 2, subtractMax: true), PaddingInputs, null, "not provably the last axis");
        yield return new("Softmax written out without subtracting the row max", () => DecomposedSoftmax(opset: 17, axis: -1, subtractMax: false), PaddingInputs, null,
            "without subtracting the row max");
        yield return new("Softmax written out with keepdims=0", () => DecomposedSoftmax(opset: 17, axis: -1, subtractMax: true, keepDims: 0), PaddingInputs, null, "keepdims=0");
        yield return new("Attention inside a function without declared types", () => AttentionInFunction(declareTypes: false, attributeReference: false), PlainInputs, null,
            "element type of query 'q' is unknown");
        yield return new("Einsum value product contracting the query axis", EinsumContractingQueryAxis, SelfAttentionInputs, null, "not a 4-D or 3-D product contracting their last axis");
        yield return new("Einsum scores with the query axis between batch and heads", EinsumHeadsNotLeading, PlainInputs, null, "query·keyᵀ product whose leading axes both operands hold");
        yield return new("Einsum value product with an ellipsis in an operand of unknown rank", () => EllipsisOfUnknownRank(scores: false), PlainInputs, null,
            "has an ellipsis in operand 'v', whose rank is unknown");
        yield return new("Einsum scores with an ellipsis in an operand of unknown rank", () => EllipsisOfUnknownRank(scores: true), PlainInputs, null,
            "has an ellipsis in operand 'q', whose rank is unknown");
        yield return new("float32 finfo.min fill in a bfloat16 attention", Bfloat16WithFloatFill, PlainInputs, null, "cannot hold exactly");
        yield return new("BLOOM-style ALiBi on the 3-D scores whose leading dim (3) is provably neither 1 nor B·H (4)", () => Bloom(BloomVariant.MismatchedAlibi), BloomInputs(past: false), null,
            "neither is 1 nor matches the scores");
        yield return new("GPT-NeoX-style view never merged that swaps the last two axes", () => GptNeoX(GptNeoXVariant.SwappedView), SelfAttentionInputs, null,
            "does not provably only split");
        yield return new("Zeros of higher rank than the scores added to them: not dropped, refused as a mask that broadcasts the scores up", ZerosOfHigherRank,
            PlainInputs, null, "more than the scores'");
        yield return new("Two views of the scores whose second one has other (B, H) than the first", ClipSecondViewRegrouped, ClipInputs, null,
            "not provably the shape of the first view");
        yield return new("Scores widened to float64 for a −10000 mask: a row it hides entirely is a softmax of the scores in float64 only",
            () => Float64Scores(Float64Variant.TenThousand), SlidingWindowInputs, null, "absorb the scores in float64");
        yield return new("Scores widened to float64 and masked twice: finfo.min + finfo.min overflows in float32 only",
            () => Float64Scores(Float64Variant.TwoMasks), SlidingWindowInputs, null, "masked twice");
        yield return new("3-D scores viewed as (B, H, T, S): the split does not keep the last two axes", () => Bloom(BloomVariant.SwappedView), BloomInputs(past: false), null,
            "does not provably only split");
        yield return new("Probabilities merged to (B·H, S·T, 1) after Softmax", () => Bloom(BloomVariant.FlattenedProbabilities), BloomInputs(past: false), null,
            "does not provably merge");
        yield return new("XSoftmax with a bias from a graph input, which may sit at the fill", () => XSoftmax(XSoftmaxVariant.BiasFromInput), XSoftmaxInputs,
            null, "not provably bounded like the scores");
        yield return new("XSoftmax zeroing probabilities under another condition than the one hiding the scores", () => XSoftmax(XSoftmaxVariant.OtherZeroingCondition),
            XSoftmaxInputs, null, "which is not provably where");
        yield return new("XSoftmax zeroing the visible keys' probabilities (Where(hide, p, 0))", () => XSoftmax(XSoftmaxVariant.ZeroingVisible), XSoftmaxInputs,
            null, "which is not provably where");
        yield return new("XSoftmax hiding with −10000, which leaves hidden keys some weight", () => XSoftmax(XSoftmaxVariant.FillTenThousand), XSoftmaxInputs,
            null, "does not absorb the scores");
    }

    // ---- common pieces ------------------------------------------------------------------------

    private static (ModelBuilder B, string Q, string K, string V) Bhsd(long opset = 17, DataType type = DataType.Float, string keyLength = "T")
    {
        var b = new ModelBuilder(opset);
        var q = b.Input("q", type, "B", Heads, "S", HeadDim);
        var k = b.Input("k", type, "B", Heads, keyLength, HeadDim);
        var v = b.Input("v", type, "B", Heads, keyLength, HeadDim);
        return (b, q, k, v);
    }

    private static string Scores(ModelBuilder b, string q, string k) =>
        b.Node("MatMul", [q, b.Node("Transpose", [k], Ints("perm", 0, 1, 3, 2))]);

    private static string Div(ModelBuilder b, string scores) => b.Node("Div", [scores, b.Scalar(MathF.Sqrt(HeadDim))]);

    private static ModelProto Finish(ModelBuilder b, string probabilities, string v, DataType type = DataType.Float)
    {
        b.Rename(b.Node("MatMul", [probabilities, v]), "out");
        b.Output("out", type);
        return b.Model;
    }

    private static string Softmax(ModelBuilder b, string x, long axis = -1) => b.Node("Softmax", [x], Int("axis", axis));

    private static Dictionary<string, TestTensor> Qkv(Random r, long s, long t, long heads = Heads, long kvHeads = Heads, DataType type = DataType.Float) => new()
    {
        ["q"] = TestTensor.Random(r, [Batch, heads, s, HeadDim], type),
        ["k"] = TestTensor.Random(r, [Batch, kvHeads, t, HeadDim], type),
        ["v"] = TestTensor.Random(r, [Batch, kvHeads, t, HeadDim], type),
    };

    private static Dictionary<string, TestTensor> PlainInputs(Random r, long s, long t) => Qkv(r, s, t);

    // Self-attention without a cache: as many keys as queries.
    private static Dictionary<string, TestTensor> PlainSquareInputs(Random r, long s, long t) => Qkv(r, s, s);

    /// <summary>A 0/1 padding mask (B, T): batch 1 pads its last third.</summary>
    private static float[] Padding(long t, bool fullyMaskedBatch = false)
    {
        var data = new float[Batch * t];
        for (var j = 0; j < t; j++)
        {
            data[j] = fullyMaskedBatch ? 0 : 1;
            data[t + j] = j < t - t / 3 ? 1 : 0;
        }

        return data;
    }

    private static Dictionary<string, TestTensor> PaddingInputs(Random r, long s, long t)
    {
        var inputs = Qkv(r, s, t);
        inputs["mask"] = new TestTensor(DataType.Float, [Batch, t], Padding(t));
        return inputs;
    }

    private static Func<Random, long, long, Dictionary<string, TestTensor>> AdditiveMaskInputs(float fill, bool fullyMaskedBatch = false) => (r, s, t) =>
    {
        var inputs = Qkv(r, s, t);
        inputs["mask"] = new TestTensor(DataType.Float, [Batch, 1, 1, t], Padding(t, fullyMaskedBatch).Select(m => m == 1 ? 0f : fill).ToArray());
        return inputs;
    };

    private static Func<Random, long, long, Dictionary<string, TestTensor>> BoolMaskInputs(bool fullyMaskedBatch) => (r, s, t) =>
    {
        var inputs = Qkv(r, s, t);
        inputs["mask"] = new TestTensor(DataType.Bool, [Batch, 1, 1, t], Padding(t, fullyMaskedBatch));
        return inputs;
    };

    // ---- fusable variants ----------------------------------------------------------------------

    private static ModelProto DivWithPaddingChain()
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", DataType.Float, "B", "T");
        var mask4 = b.Node("Unsqueeze", [mask, b.Ints(1, 2)]);
        var inverted = b.Node("Sub", [b.Scalar(1), mask4]);
        var additive = b.Node("Mul", [inverted, b.Scalar(-10000)]);
        var masked = b.Node("Add", [Div(b, Scores(b, q, k)), additive]);
        return Finish(b, Softmax(b, masked), v);
    }

    /// <summary>
    /// HF's <c>_make_causal_mask</c> with no padding mask beside it: Where(Less(arange(S), (arange(S) + 1).view(S, 1)),
    /// 0, full((S, S), finfo.min)), cast, Unsqueezed and Expanded to (B, 1, S, S), added to the scores.
    /// </summary>
    public static ModelProto MadeCausalMaskAlone()
    {
        var (b, q, k, v) = Bhsd(keyLength: "S");
        string Int64(long value) => b.Initializer(ConstantTensor.Scalar(DataType.Int64, value));
        string Vector(string scalar) => b.Node("Unsqueeze", [scalar, b.Ints(0)]);
        var length = b.Node("Gather", [b.Node("Shape", [q]), Int64(2)], Int("axis", 0));
        var full = b.Node("ConstantOfShape", [b.Node("Concat", [Vector(length), Vector(length)], Int("axis", 0))],
            Tensor("value", new ConstantTensor(DataType.Float, [1], [FloatMin])));
        var positions = b.Node("Range", [Int64(0), length, Int64(1)]);
        var column = b.Node("Reshape", [b.Node("Add", [positions, Int64(1)]), b.Node("Concat", [Vector(length), b.Ints(1)], Int("axis", 0))]);
        var keep = b.Node("Cast", [b.Node("Less", [positions, column])], Int("to", (long)DataType.Bool));
        var causal = b.Node("Cast", [b.Node("Where", [keep, b.Scalar(0), full])], Int("to", (long)DataType.Float));
        var batch = b.Node("Gather", [b.Node("Shape", [q]), Int64(0)], Int("axis", 0));
        var target = b.Node("Concat", [Vector(batch), b.Ints(1), Vector(length), Vector(length)], Int("axis", 0));
        var expanded = b.Node("Expand", [b.Node("Unsqueeze", [causal, b.Ints(0, 1)]), target]);
        return Finish(b, Softmax(b, b.Node("Add", [Div(b, Scores(b, q, k)), expanded])), v);
    }

    /// <summary>
    /// BART's _expand_mask: the int64 (B, T) mask Unsqueezed to (B, 1, 1, T), Expanded to the scores' (B, H, S, T), cast to
    /// float, inverted, and filled with finfo.min where the inversion is non-zero (Cast to bool, Where).
    /// </summary>
    public static ModelProto ExpandedPaddingMask()
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", DataType.Int64, "B", "T");
        var scores = Div(b, Scores(b, q, k));
        var expanded = b.Node("Expand", [b.Node("Unsqueeze", [mask, b.Ints(1, 2)]), b.Node("Shape", [scores])]);
        var inverted = b.Node("Sub", [b.Scalar(1), b.Node("Cast", [expanded], Int("to", (long)DataType.Float))]);
        var hidden = b.Node("Cast", [inverted], Int("to", (long)DataType.Bool));
        var bias = b.Node("Where", [hidden, b.Scalar(FloatMin), inverted]);
        return Finish(b, Softmax(b, b.Node("Add", [scores, bias])), v);
    }

    /// <summary>T5's cross-attention: a ConstantOfShape of zeros shaped like the scores (its absent position bias) plus the
    /// (1 − m)·finfo.min padding bias of a float (B, T) mask, added to unscaled scores.</summary>
    public static ModelProto ZerosPlusPaddingBias()
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", DataType.Float, "B", "T");
        var scores = Scores(b, q, k);
        var zeros = b.Node("ConstantOfShape", [b.Node("Shape", [scores])], Tensor("value", new ConstantTensor(DataType.Float, [1], [0])));
        var padding = b.Node("Mul", [b.Node("Sub", [b.Scalar(1), b.Node("Unsqueeze", [mask, b.Ints(1, 2)])]), b.Scalar(FloatMin)]);
        return Finish(b, Softmax(b, b.Node("Add", [scores, b.Node("Add", [zeros, padding])])), v);
    }

    private static ModelProto MulFirstAddFirst()
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", DataType.Float, "B", 1, 1, "T");
        var scaled = b.Node("Mul", [b.Scalar(InvSqrtD), Scores(b, q, k)]);
        return Finish(b, Softmax(b, b.Node("Add", [mask, scaled])), v);
    }

    private static ModelProto NoScalePositionBias()
    {
        var (b, q, k, v) = Bhsd();
        var bias = b.Input("position_bias", DataType.Float, 1, Heads, "S", "T");
        return Finish(b, Softmax(b, b.Node("Add", [Scores(b, q, k), bias])), v);
    }

    private static Dictionary<string, TestTensor> PositionBiasInputs(Random r, long s, long t)
    {
        var inputs = Qkv(r, s, t);
        inputs["position_bias"] = TestTensor.Random(r, [1, Heads, s, t], scale: 3);
        return inputs;
    }

    private static ModelProto QueryScaledBeforeHeadSplit()
    {
        var b = new ModelBuilder();
        var hidden = b.Input("q_proj", DataType.Float, "B", "S", Heads * HeadDim);
        var k = b.Input("k", DataType.Float, "B", Heads, "T", HeadDim);
        var v = b.Input("v", DataType.Float, "B", Heads, "T", HeadDim);
        var scaled = b.Node("Mul", [hidden, b.Scalar(InvSqrtD)]);
        var split = b.Node("Reshape", [scaled, b.Ints(0, 0, Heads, HeadDim)]);
        var q = b.Node("Transpose", [split], Ints("perm", 0, 2, 1, 3));
        return Finish(b, Softmax(b, Scores(b, q, k)), v);
    }

    private static Dictionary<string, TestTensor> BartInputs(Random r, long s, long t)
    {
        var inputs = Qkv(r, s, t);
        inputs.Remove("q");
        inputs["q_proj"] = TestTensor.Random(r, [Batch, s, Heads * HeadDim]);
        return inputs;
    }

    private static ModelProto SymmetricShapeDerivedScale()
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", DataType.Bool, "B", 1, 1, "T");
        var headDim = b.Node("Slice", [b.Node("Shape", [q]), b.Ints(-1), b.Ints(long.MaxValue)]);
        var scale = b.Node("Div", [b.Scalar(1), b.Node("Sqrt", [b.Node("Cast", [headDim], Int("to", (long)DataType.Float))])]);
        var root = b.Node("Sqrt", [scale]);
        var qs = b.Node("Mul", [q, root]);
        var ks = b.Node("Mul", [b.Node("Transpose", [k], Ints("perm", 0, 1, 3, 2)), root]);
        var bias = b.Node("Where", [mask, b.Scalar(0), b.Scalar(float.NegativeInfinity)]);
        var probabilities = Softmax(b, b.Node("Add", [b.Node("MatMul", [qs, ks]), bias]));
        var guarded = b.Node("Where", [b.Node("IsNaN", [probabilities]), b.Scalar(0), probabilities]);
        return Finish(b, guarded, v);
    }

    private static ModelProto KeyHeadSplitMerged()
    {
        var b = new ModelBuilder();
        var q = b.Input("q", DataType.Float, "B", Heads, "S", HeadDim);
        var kProj = b.Input("k_proj", DataType.Float, "B", "T", Heads * HeadDim);
        var v = b.Input("v", DataType.Float, "B", Heads, "T", HeadDim);
        var quarter = b.Scalar(MathF.Pow(HeadDim, -0.25f));
        var kt = b.Node("Transpose", [b.Node("Reshape", [kProj, b.Ints(0, 0, Heads, HeadDim)])], Ints("perm", 0, 2, 3, 1));
        var scores = b.Node("MatMul", [b.Node("Mul", [q, quarter]), b.Node("Mul", [kt, quarter])]);
        return Finish(b, Softmax(b, scores), v);
    }

    private static Dictionary<string, TestTensor> WhisperInputs(Random r, long s, long t)
    {
        var inputs = Qkv(r, s, t);
        inputs.Remove("k");
        inputs["k_proj"] = TestTensor.Random(r, [Batch, t, Heads * HeadDim]);
        return inputs;
    }

    private static ModelProto KeyReshapedRank3()
    {
        var (b, q, k, v) = Bhsd();
        var shape = b.Node("Shape", [k]);
        var lastTwo = b.Node("Slice", [shape, b.Ints(2), b.Ints(4)]);
        var merged = b.Node("Reshape", [k, b.Node("Concat", [b.Ints(-1), lastTwo], Int("axis", 0))]);
        var swapped = b.Node("Transpose", [merged], Ints("perm", 0, 2, 1));
        var leading = b.Node("Slice", [shape, b.Ints(0), b.Ints(2)]);
        var d = b.Node("Slice", [shape, b.Ints(3), b.Ints(4)]);
        var t = b.Node("Slice", [shape, b.Ints(2), b.Ints(3)]);
        var kt = b.Node("Reshape", [swapped, b.Node("Concat", [leading, d, t], Int("axis", 0))]);
        var scores = b.Node("Mul", [b.Node("MatMul", [q, kt]), b.Scalar(InvSqrtD)]);
        return Finish(b, Softmax(b, scores), v);
    }

    private static ModelProto Rank3Layout()
    {
        var b = new ModelBuilder();
        var q = b.Input("q", DataType.Float, "N", "S", HeadDim);
        var k = b.Input("k", DataType.Float, "N", "T", HeadDim);
        var v = b.Input("v", DataType.Float, "N", "T", HeadDim);
        var mask = b.Input("mask", DataType.Float, "N", 1, "T");
        var scores = b.Node("MatMul", [q, b.Node("Transpose", [k], Ints("perm", 0, 2, 1))]);
        return Finish(b, Softmax(b, b.Node("Add", [Div(b, scores), mask])), v);
    }

    private static Dictionary<string, TestTensor> Rank3Inputs(Random r, long s, long t)
    {
        var n = Batch * Heads;
        var mask = new float[n * t];
        for (var i = 0; i < n; i++)
        {
            for (var j = 0; j < t; j++)
            {
                mask[i * t + j] = i % 2 == 1 && j >= t - t / 3 ? -10000f : 0f;
            }
        }

        return new()
        {
            ["q"] = TestTensor.Random(r, [n, s, HeadDim]),
            ["k"] = TestTensor.Random(r, [n, t, HeadDim]),
            ["v"] = TestTensor.Random(r, [n, t, HeadDim]),
            ["mask"] = new TestTensor(DataType.Float, [n, 1, t], mask),
        };
    }

    private static ModelProto WhereKeepWithGuard()
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", DataType.Bool, "B", 1, 1, "T");
        var masked = b.Node("Where", [mask, Div(b, Scores(b, q, k)), b.Scalar(float.NegativeInfinity)]);
        var probabilities = Softmax(b, masked);
        return Finish(b, b.Node("Where", [b.Node("IsNaN", [probabilities]), b.Scalar(0), probabilities]), v);
    }

    private static ModelProto WhereKeepNoGuard()
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", DataType.Bool, "B", 1, 1, "T");
        return Finish(b, Softmax(b, b.Node("Where", [mask, Div(b, Scores(b, q, k)), b.Scalar(float.NegativeInfinity)])), v);
    }

    private static ModelProto WhereHideFiniteMin()
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", DataType.Bool, "B", 1, 1, "T");
        var hide = b.Node("Not", [mask]);
        return Finish(b, Softmax(b, b.Node("Where", [hide, b.Scalar(FloatMin), Div(b, Scores(b, q, k))])), v);
    }

    private static ModelProto WhereHideNegativeInfinity()
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", DataType.Bool, "B", 1, 1, "T");
        var hide = b.Node("Not", [mask]);
        return Finish(b, Softmax(b, b.Node("Where", [hide, b.Scalar(float.NegativeInfinity), Div(b, Scores(b, q, k))])), v);
    }

    private static ModelProto MaxClamp()
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", DataType.Float, "B", 1, 1, "T");
        var clamped = b.Node("Max", [b.Node("Add", [Div(b, Scores(b, q, k)), mask]), b.Scalar(FloatMin)]);
        return Finish(b, Softmax(b, clamped), v);
    }

    /// <summary>
    /// ALiBi as BLOOM/MPT-style models export it: per-head slopes (1, H, 1, 1) times the relative
    /// position j − i, both positions from <c>Range</c> over the query and key lengths read from
    /// Shape, giving a (1, H, S, T) bias; the (1 − m)·finfo.min padding mask (B, 1, 1, T) is added to
    /// it, and the sum is added to the scaled scores once.
    /// </summary>
    public static ModelProto AlibiWithPadding() => Alibi(DataType.Float, FloatMin, separately: false);

    /// <summary>
    /// BLOOM/Falcon-style: the ALiBi bias and then the (1 − m)·<paramref name="fill"/> padding mask, each added to the scores
    /// on its own. With an integer m and an absorbing fill the padding only holds 0 and absorbing values, so the op may
    /// take their sum as one bias.
    /// </summary>
    private static ModelProto AlibiThenPadding(DataType maskType, float fill) => Alibi(maskType, fill, separately: true);

    private static ModelProto Alibi(DataType maskType, float fill, bool separately)
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", maskType, "B", "T");
        var keep = maskType == DataType.Float ? mask : b.Node("Cast", [mask], Int("to", (long)DataType.Float));
        var zero = b.Initializer(ConstantTensor.Scalar(DataType.Int64, 0));
        var one = b.Initializer(ConstantTensor.Scalar(DataType.Int64, 1));
        var two = b.Initializer(ConstantTensor.Scalar(DataType.Int64, 2));
        var queryLength = b.Node("Gather", [b.Node("Shape", [q]), two], Int("axis", 0));
        var keyLength = b.Node("Gather", [b.Node("Shape", [k]), two], Int("axis", 0));
        var i = b.Node("Unsqueeze", [b.Node("Range", [zero, queryLength, one]), b.Ints(1)]);
        var j = b.Node("Unsqueeze", [b.Node("Range", [zero, keyLength, one]), b.Ints(0)]);
        var relative = b.Node("Cast", [b.Node("Sub", [j, i])], Int("to", (long)DataType.Float));
        var slopes = b.Node("Unsqueeze", [b.Floats([Heads], [0.5f, 0.25f]), b.Ints(0, 2, 3)]);
        var alibi = b.Node("Mul", [slopes, relative]);
        var padding = b.Node("Mul", [b.Node("Sub", [b.Scalar(1), b.Node("Unsqueeze", [keep, b.Ints(1, 2)])]), b.Scalar(fill)]);
        var scores = Div(b, Scores(b, q, k));
        var masked = separately
            ? b.Node("Add", [b.Node("Add", [scores, alibi]), padding])
            : b.Node("Add", [scores, b.Node("Add", [alibi, padding])]);
        return Finish(b, Softmax(b, masked), v);
    }

    private static Func<Random, long, long, Dictionary<string, TestTensor>> IntegerPaddingInputs(bool fullyMaskedBatch, DataType type = DataType.Int64) => (r, s, t) =>
    {
        var inputs = Qkv(r, s, t);
        inputs["mask"] = new TestTensor(type, [Batch, t], Padding(t, fullyMaskedBatch));
        return inputs;
    };

    /// <summary>Llama's triu(full(finfo.min), 1) causal mask, then (1 − m)·finfo.min for an m of <paramref name="maskType"/> (B, T), each added to the scores.</summary>
    private static ModelProto CausalTriuPlusPadding(DataType maskType)
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", maskType, "B", "T");
        var causal = b.Node("Trilu", [QueryByKeyFull(b, q, k, FloatMin), b.Initializer(ConstantTensor.Scalar(DataType.Int64, 1))], Int("upper", 1));
        var keep = b.Node("Unsqueeze", [b.Node("Cast", [mask], Int("to", (long)DataType.Float)), b.Ints(1, 2)]);
        var padding = b.Node("Mul", [b.Node("Sub", [b.Scalar(1), keep]), b.Scalar(FloatMin)]);
        var scaled = b.Node("Mul", [Scores(b, q, k), b.Scalar(InvSqrtD)]);
        return Finish(b, Softmax(b, b.Node("Add", [b.Node("Add", [scaled, causal]), padding])), v);
    }

    /// <summary>Where(keep (B, 1, S, T), s, finfo.min), then (1 − m)·finfo.min for an m of <paramref name="maskType"/> (B, T) added.</summary>
    private static ModelProto WhereFillThenPadding(DataType maskType)
    {
        var (b, q, k, v) = Bhsd();
        var keep = b.Input("keep", DataType.Bool, "B", 1, "S", "T");
        var mask = b.Input("mask", maskType, "B", "T");
        var filled = b.Node("Where", [keep, Div(b, Scores(b, q, k)), b.Scalar(FloatMin)]);
        var padding = b.Node("Mul", [b.Node("Sub", [b.Scalar(1), b.Node("Unsqueeze", [b.Node("Cast", [mask], Int("to", (long)DataType.Float)), b.Ints(1, 2)])]), b.Scalar(FloatMin)]);
        return Finish(b, Softmax(b, b.Node("Add", [filled, padding])), v);
    }

    /// <summary>An int64 padding m (B, T) of 0 and 2: batch 1 pads its last third.</summary>
    private static Dictionary<string, TestTensor> PaddingOfTwos(Random r, long s, long t)
    {
        var inputs = Qkv(r, s, t);
        inputs["mask"] = new TestTensor(DataType.Int64, [Batch, t], Padding(t).Select(m => 2 * m).ToArray());
        return inputs;
    }

    /// <summary>A keep mask hiding the first query row and every third key, and a padding m that is 2 (int64) or true where batch 1 is not padded (and batch 0 all 2).</summary>
    private static Func<Random, long, long, Dictionary<string, TestTensor>> WhereFillThenPaddingInputs(DataType maskType) => (r, s, t) =>
    {
        var inputs = Qkv(r, s, t);
        inputs["keep"] = new TestTensor(DataType.Bool, [Batch, 1, s, t], Enumerable.Range(0, (int)(Batch * s * t)).Select(i => i / t % s == 0 || i % 3 == 0 ? 0f : 1f).ToArray());
        inputs["mask"] = new TestTensor(maskType, [Batch, t], Padding(t).Select(m => maskType == DataType.Int64 ? 2 * m : m).ToArray());
        return inputs;
    };

    /// <summary>(S, T) filled with <paramref name="value"/> (float32), the lengths read from Shape(q) and Shape(k).</summary>
    private static string QueryByKeyFull(ModelBuilder b, string q, string k, float value)
    {
        var s = b.Node("Slice", [b.Node("Shape", [q]), b.Ints(2), b.Ints(3)]);
        var t = b.Node("Slice", [b.Node("Shape", [k]), b.Ints(2), b.Ints(3)]);
        return b.Node("ConstantOfShape", [b.Node("Concat", [s, t], Int("axis", 0))], Tensor("value", new ConstantTensor(DataType.Float, [1], [value])));
    }

    private static ModelProto Float16ScoresWithFloat32CausalAndPadding()
    {
        var (b, q, k, v) = Bhsd(type: DataType.Float16);
        var mask = b.Input("mask", DataType.Bool, "B", 1, 1, "T");
        var scores = b.Node("Cast", [b.Node("Div", [Scores(b, q, k), b.Scalar(MathF.Sqrt(HeadDim), DataType.Float16)])], Int("to", (long)DataType.Float));
        var causal = b.Node("Trilu", [QueryByKeyFull(b, q, k, FloatMin), b.Initializer(ConstantTensor.Scalar(DataType.Int64, 1))], Int("upper", 1));
        var padding = b.Node("Where", [mask, b.Scalar(0), b.Scalar(float.NegativeInfinity)]);
        var probabilities = Softmax(b, b.Node("Add", [b.Node("Add", [scores, causal]), padding]));
        return Finish(b, b.Node("Cast", [probabilities], Int("to", (long)DataType.Float16)), v, DataType.Float16);
    }

    private static Dictionary<string, TestTensor> Float16PaddingInputs(Random r, long s, long t)
    {
        var inputs = Qkv(r, s, t, type: DataType.Float16);
        inputs["mask"] = new TestTensor(DataType.Bool, [Batch, 1, 1, t], Padding(t, fullyMaskedBatch: true));
        return inputs;
    }

    private static string QueryByKeyOnes(ModelBuilder b, string q, string k, DataType type)
    {
        var s = b.Node("Slice", [b.Node("Shape", [q]), b.Ints(2), b.Ints(3)]);
        var t = b.Node("Slice", [b.Node("Shape", [k]), b.Ints(2), b.Ints(3)]);
        return b.Node("ConstantOfShape", [b.Node("Concat", [s, t], Int("axis", 0))], Tensor("value", new ConstantTensor(type, [1], [1])));
    }

    private static ModelProto CausalTrilu()
    {
        var (b, q, k, v) = Bhsd();
        var lower = b.Node("Trilu", [QueryByKeyOnes(b, q, k, DataType.Float)], Int("upper", 0));
        var hidden = b.Node("Equal", [lower, b.Scalar(0)]);
        var bias = b.Node("Where", [hidden, b.Scalar(float.NegativeInfinity), b.Scalar(0)]);
        return Finish(b, Softmax(b, b.Node("Add", [Div(b, Scores(b, q, k)), bias])), v);
    }

    private static ModelProto CausalTriluKeep()
    {
        var (b, q, k, v) = Bhsd();
        var keep = b.Node("Cast", [b.Node("Trilu", [QueryByKeyOnes(b, q, k, DataType.Int64)], Int("upper", 0))], Int("to", (long)DataType.Bool));
        var scaled = b.Node("Mul", [Scores(b, q, k), b.Scalar(InvSqrtD)]);
        return Finish(b, Softmax(b, b.Node("Where", [keep, scaled, b.Scalar(float.NegativeInfinity)])), v);
    }

    private static ModelProto Softcap()
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", DataType.Float, "B", "T");
        var scaled = b.Node("Mul", [Scores(b, q, k), b.Scalar(InvSqrtD)]);
        var cap = b.Scalar(2.0f);
        var capped = b.Node("Mul", [b.Node("Tanh", [b.Node("Div", [scaled, cap])]), cap]);
        var additive = b.Node("Mul", [b.Node("Sub", [b.Scalar(1), b.Node("Unsqueeze", [mask, b.Ints(1, 2)])]), b.Scalar(FloatMin)]);
        return Finish(b, Softmax(b, b.Node("Add", [capped, additive])), v);
    }

    private static ModelProto DropoutIdentity()
    {
        var (b, q, k, v) = Bhsd();
        var dropped = b.Node("Dropout", [Softmax(b, Div(b, Scores(b, q, k))), b.Scalar(0.1f)]);
        return Finish(b, b.Node("Identity", [dropped]), v);
    }

    private static ModelProto GqaHeadRepeat(bool einsumValue)
    {
        var b = new ModelBuilder();
        var q = b.Input("q", DataType.Float, "B", Heads, "S", HeadDim);
        var k = b.Input("k", DataType.Float, "B", 1, "T", HeadDim);
        var v = b.Input("v", DataType.Float, "B", 1, "T", HeadDim);
        var probabilities = Softmax(b, b.Node("Mul", [Scores(b, q, RepeatHeads(b, k)), b.Scalar(InvSqrtD)]));
        if (!einsumValue)
        {
            return Finish(b, probabilities, RepeatHeads(b, v));
        }

        b.Rename(b.Node("Einsum", [probabilities, RepeatHeads(b, v)], Str("equation", "bhqk,bhkd->bhqd")), "out");
        b.Output("out");
        return b.Model;
    }

    /// <summary>
    /// (B, Hkv, T, D) → (B, Heads, T, D) by Unsqueeze→Expand→Reshape: each kv head repeated contiguously
    /// (axis 2, transformers' repeat_kv) or the heads interleaved (axis 1, which the op's GQA does not read).
    /// </summary>
    private static string RepeatHeads(ModelBuilder b, string x, long axis = 2)
    {
        var shape = b.Node("Shape", [x]);
        var batch = b.Node("Slice", [shape, b.Ints(0), b.Ints(1)]);
        var lengthDim = b.Node("Slice", [shape, b.Ints(2), b.Ints(4)]);
        var expandedShape = axis == 2
            ? b.Node("Concat", [b.Node("Slice", [shape, b.Ints(0), b.Ints(2)]), b.Ints(Heads), lengthDim], Int("axis", 0))
            : b.Node("Concat", [batch, b.Ints(Heads), b.Node("Slice", [shape, b.Ints(1), b.Ints(4)])], Int("axis", 0));
        var expanded = b.Node("Expand", [b.Node("Unsqueeze", [x, b.Ints(axis)]), expandedShape]);
        return b.Node("Reshape", [expanded, b.Node("Concat", [batch, b.Ints(Heads), lengthDim], Int("axis", 0))]);
    }

    private static ModelProto GqaHeadRepeatEinsum() => GqaEinsum(axis: 2);

    private static ModelProto GqaInterleavedRepeatEinsum() => GqaEinsum(axis: 1);

    private static ModelProto GqaEinsum(long axis)
    {
        var b = new ModelBuilder();
        var q = b.Input("q", DataType.Float, "B", Heads, "S", HeadDim);
        var k = b.Input("k", DataType.Float, "B", 1, "T", HeadDim);
        var v = b.Input("v", DataType.Float, "B", 1, "T", HeadDim);
        var scores = b.Node("Einsum", [q, RepeatHeads(b, k, axis)], Str("equation", "...qd,...kd->...qk"));
        var probabilities = Softmax(b, b.Node("Mul", [scores, b.Scalar(InvSqrtD)]));
        b.Rename(b.Node("Einsum", [probabilities, RepeatHeads(b, v, axis)], Str("equation", "...qk,...kd->...qd")), "out");
        b.Output("out");
        return b.Model;
    }

    private static ModelProto MultiQueryBroadcast()
    {
        var b = new ModelBuilder();
        var q = b.Input("q", DataType.Float, "B", Heads, "S", HeadDim);
        var k = b.Input("k", DataType.Float, "B", 1, "T", HeadDim);
        var v = b.Input("v", DataType.Float, "B", 1, "T", HeadDim);
        return Finish(b, Softmax(b, Div(b, Scores(b, q, k))), v);
    }

    private static Dictionary<string, TestTensor> GqaInputs(Random r, long s, long t) => Qkv(r, s, t, kvHeads: 1);

    private static ModelProto Opset11LastAxis()
    {
        var (b, q, k, v) = Bhsd(opset: 11);
        var mask = b.Input("mask", DataType.Float, "B", "T");
        var additive = b.Node("Mul", [b.Node("Sub", [b.Scalar(1), b.Node("Unsqueeze", [mask], Ints("axes", 1, 2))]), b.Scalar(-10000)]);
        return Finish(b, Softmax(b, b.Node("Add", [Div(b, Scores(b, q, k)), additive]), axis: 3), v);
    }

    private static string CausalBias(ModelBuilder b, string q, string k)
    {
        var lower = b.Node("Trilu", [QueryByKeyOnes(b, q, k, DataType.Float)], Int("upper", 0));
        return b.Node("Where", [b.Node("Equal", [lower, b.Scalar(0)]), b.Scalar(float.NegativeInfinity), b.Scalar(0)]);
    }

    private static ModelProto CausalWithPadding()
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", DataType.Float, "B", 1, 1, "T");
        var causal = b.Node("Add", [Div(b, Scores(b, q, k)), CausalBias(b, q, k)]);
        return Finish(b, Softmax(b, b.Node("Add", [causal, mask])), v);
    }

    private static ModelProto CausalWithKeep()
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", DataType.Bool, "B", 1, 1, "T");
        var causal = b.Node("Add", [Div(b, Scores(b, q, k)), CausalBias(b, q, k)]);
        return Finish(b, Softmax(b, b.Node("Where", [mask, causal, b.Scalar(float.NegativeInfinity)])), v);
    }

    private static ModelProto MaskExpandedToScoresShape()
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", DataType.Bool, "B", 1, 1, "T");
        var scores = Scores(b, b.Node("Div", [q, b.Scalar(MathF.Sqrt(HeadDim))]), k);
        var hide = b.Node("Cast", [b.Node("Expand", [b.Node("Not", [mask]), b.Node("Shape", [scores])])], Int("to", (long)DataType.Bool));
        return Finish(b, Softmax(b, b.Node("Where", [hide, b.Scalar(FloatMin), scores])), v);
    }

    private static ModelProto MultiheadAttention()
    {
        var b = new ModelBuilder();
        var q = b.Input("q", DataType.Float, "S", "N", HeadDim);
        var k = b.Input("k", DataType.Float, "T", "N", HeadDim);
        var v = b.Input("v", DataType.Float, "N", "T", HeadDim);
        var mask = b.Input("mask", DataType.Float, "N", 1, "T");
        var q3 = b.Node("Div", [b.Node("Transpose", [q], Ints("perm", 1, 0, 2)), b.Scalar(MathF.Sqrt(HeadDim))]);
        var scores = b.Node("Mul", [b.Node("MatMul", [q3, b.Node("Transpose", [k], Ints("perm", 1, 2, 0))]), b.Scalar(1)]);
        return Finish(b, Softmax(b, b.Node("Add", [scores, b.Node("Mul", [mask, b.Scalar(1)])])), v);
    }

    private static Dictionary<string, TestTensor> MultiheadInputs(Random r, long s, long t)
    {
        var inputs = Rank3Inputs(r, s, t);
        inputs["q"] = TestTensor.Random(r, [s, Batch * Heads, HeadDim]);
        inputs["k"] = TestTensor.Random(r, [t, Batch * Heads, HeadDim]);
        return inputs;
    }

    private static ModelProto BartReshapedMask()
    {
        var b = new ModelBuilder();
        var hidden = b.Input("q_proj", DataType.Float, "B", "S", Heads * HeadDim);
        var k = b.Input("k", DataType.Float, "B", Heads, "T", HeadDim);
        var v = b.Input("v", DataType.Float, "B", Heads, "T", HeadDim);
        var mask = b.Input("mask", DataType.Float, "B", 1, "S", "T");
        var qShape = b.Node("Shape", [hidden]);
        var batch = b.Node("Slice", [qShape, b.Ints(0), b.Ints(1)]);
        var length = b.Node("Slice", [qShape, b.Ints(1), b.Ints(2)]);
        var keyLength = b.Node("Slice", [b.Node("Shape", [k]), b.Ints(2), b.Ints(3)]);
        var flat = b.Node("Mul", [batch, b.Ints(Heads)]);
        var split = b.Node("Transpose", [b.Node("Reshape", [b.Node("Mul", [hidden, b.Scalar(InvSqrtD)]), b.Ints(0, 0, Heads, HeadDim)])], Ints("perm", 0, 2, 1, 3));
        var q3 = b.Node("Reshape", [split, b.Node("Concat", [flat, b.Ints(-1), b.Ints(HeadDim)], Int("axis", 0))]);
        var k3 = b.Node("Reshape", [k, b.Node("Concat", [flat, b.Ints(-1), b.Ints(HeadDim)], Int("axis", 0))]);
        var v3 = b.Node("Reshape", [v, b.Node("Concat", [flat, b.Ints(-1), b.Ints(HeadDim)], Int("axis", 0))]);
        var scores = b.Node("MatMul", [q3, b.Node("Transpose", [k3], Ints("perm", 0, 2, 1))]);
        var view = b.Node("Reshape", [scores, b.Node("Concat", [batch, b.Ints(Heads), length, keyLength], Int("axis", 0))]);
        var merged = b.Node("Reshape", [b.Node("Add", [view, mask]), b.Node("Concat", [flat, length, keyLength], Int("axis", 0))]);
        b.Rename(b.Node("MatMul", [Softmax(b, merged), v3]), "out");
        b.Output("out");
        return b.Model;
    }

    private static Dictionary<string, TestTensor> BartMaskInputs(Random r, long s, long t)
    {
        var inputs = BartInputs(r, s, t);
        var padding = Padding(t);
        var mask = new float[Batch * s * t];
        for (var i = 0; i < mask.Length; i++)
        {
            var batch = i / (s * t);
            mask[i] = padding[batch * t + i % t] == 1 ? 0 : FloatMin;
        }

        inputs["mask"] = new TestTensor(DataType.Float, [Batch, 1, s, t], mask);
        return inputs;
    }

    private enum BloomVariant
    {
        Plain,
        Past,
        UnrelatedAlibi,
        MismatchedAlibi,
        SwappedView,
        FlattenedProbabilities,
    }

    /// <summary>
    /// HF BLOOM (~4.40) from (B, S, H, D) q, k, v: Q and V flattened to (B·H, S, D), Kᵀ stored as (B·H, D, T) through
    /// Transpose(0,2,3,1); alibi.baddbmm = Add(Mul(MatMul, 1/√D), Mul(alibi, 1)) with alibi (B·H, 1, T) reshaped from
    /// (B, H, T); view (B, H, S, T); Where(hidden, finfo.min, ·); Softmax; Cast; view (B·H, S, T); MatMul with V.
    /// </summary>
    private static ModelProto Bloom(BloomVariant variant)
    {
        var b = new ModelBuilder();
        object batchDim = variant == BloomVariant.MismatchedAlibi ? Batch : "B";
        var q = b.Input("q", DataType.Float, batchDim, "S", Heads, HeadDim);
        var k = b.Input("k", DataType.Float, batchDim, "T", Heads, HeadDim);
        var v = b.Input("v", DataType.Float, batchDim, "T", Heads, HeadDim);
        var hidden = b.Input("mask", DataType.Bool, batchDim, 1, "S", "TK");
        var shape = b.Node("Shape", [q]);
        var batch = b.Node("Slice", [shape, b.Ints(0), b.Ints(1)]);
        var length = b.Node("Slice", [shape, b.Ints(1), b.Ints(2)]);
        var flat = b.Node("Mul", [batch, b.Ints(Heads)]);
        var q3 = b.Node("Reshape", [b.Node("Transpose", [q], Ints("perm", 0, 2, 1, 3)), b.Node("Concat", [flat, b.Ints(-1, HeadDim)], Int("axis", 0))]);
        var kT3 = b.Node("Reshape", [b.Node("Transpose", [k], Ints("perm", 0, 2, 3, 1)), b.Node("Concat", [flat, b.Ints(HeadDim, -1)], Int("axis", 0))]);
        var v3 = b.Node("Reshape", [b.Node("Transpose", [v], Ints("perm", 0, 2, 1, 3)), b.Node("Concat", [flat, b.Ints(-1, HeadDim)], Int("axis", 0))]);
        if (variant == BloomVariant.Past)
        {
            kT3 = b.Node("Concat", [b.Input("past_key", DataType.Float, "N", HeadDim, "P"), kT3], Int("axis", 2));
            v3 = b.Node("Concat", [b.Input("past_value", DataType.Float, "N", "P", HeadDim), v3], Int("axis", 1));
        }

        var keyLength = b.Node("Slice", [b.Node("Shape", [kT3]), b.Ints(2), b.Ints(3)]);
        var alibi = variant switch
        {
            BloomVariant.UnrelatedAlibi => b.Input("alibi", DataType.Float, "A", 1, "TK"),
            BloomVariant.MismatchedAlibi => b.Input("alibi", DataType.Float, 3, 1, "TK"),
            _ => b.Node("Reshape", [b.Input("alibi", DataType.Float, "B", Heads, "TK"), b.Node("Concat", [flat, b.Ints(1, -1)], Int("axis", 0))]),
        };
        var scores = b.Node("Add", [b.Node("Mul", [b.Node("MatMul", [q3, kT3]), b.Scalar(InvSqrtD)]), b.Node("Mul", [alibi, b.Scalar(1)])]);
        string[] viewDims = variant == BloomVariant.SwappedView ? [batch, b.Ints(Heads), keyLength, length] : [batch, b.Ints(Heads), length, keyLength];
        var view = b.Node("Reshape", [scores, b.Node("Concat", viewDims, Int("axis", 0))]);
        var probabilities = b.Node("Cast", [Softmax(b, b.Node("Where", [hidden, b.Scalar(FloatMin), view]))], Int("to", (long)DataType.Float));
        string[] mergedDims = variant switch
        {
            BloomVariant.SwappedView => [flat, keyLength, length],
            BloomVariant.FlattenedProbabilities => [flat, b.Ints(-1, 1)],
            _ => [flat, length, keyLength],
        };
        var merged = b.Node("Reshape", [probabilities, b.Node("Concat", mergedDims, Int("axis", 0))]);
        b.Rename(b.Node("MatMul", [merged, v3]), "out");
        b.Output("out");
        return b.Model;
    }

    /// <summary>
    /// BLOOM inputs: q (B, S, H, D), k and v (B, T, H, D) (with a cache: T new keys after P = T cached ones), ALiBi
    /// slopes·positions (B, H, T), and a bool mask (B, 1, S, T) hiding keys after the lower-right diagonal and batch 1's
    /// first third, so that with S &gt; T some rows are hidden entirely (finfo.min everywhere, a uniform softmax).
    /// </summary>
    private static Func<Random, long, long, Dictionary<string, TestTensor>> BloomInputs(bool past) => (r, s, t) =>
    {
        var keys = past ? 2 * t : t;
        var inputs = new Dictionary<string, TestTensor>
        {
            ["q"] = TestTensor.Random(r, [Batch, s, Heads, HeadDim]),
            ["k"] = TestTensor.Random(r, [Batch, t, Heads, HeadDim]),
            ["v"] = TestTensor.Random(r, [Batch, t, Heads, HeadDim]),
        };
        if (past)
        {
            inputs["past_key"] = TestTensor.Random(r, [Batch * Heads, HeadDim, t]);
            inputs["past_value"] = TestTensor.Random(r, [Batch * Heads, t, HeadDim]);
        }

        var alibi = new float[Batch * Heads * keys];
        for (var i = 0; i < alibi.Length; i++)
        {
            alibi[i] = -MathF.Pow(2, -8f * (1 + i / keys % Heads) / Heads) * (i % keys);
        }

        inputs["alibi"] = new TestTensor(DataType.Float, [Batch, Heads, keys], alibi);
        inputs["mask"] = HiddenByCausalOrPadding(s, keys);
        return inputs;
    };

    /// <summary>BLOOM inputs with an (A, 1, T) ALiBi of <paramref name="rows"/> rows (1 or B·H): per-row slopes times positions.</summary>
    private static Func<Random, long, long, Dictionary<string, TestTensor>> BloomUnrelatedAlibiInputs(long rows) => (r, s, t) =>
    {
        var inputs = BloomInputs(past: false)(r, s, t);
        inputs["alibi"] = new TestTensor(DataType.Float, [rows, 1, t],
            Enumerable.Range(0, (int)(rows * t)).Select(i => -MathF.Pow(2, -8f * (1 + i / (int)t) / Heads) * (i % t)).ToArray());
        return inputs;
    };

    private enum DiffusersVariant
    {
        EmptyInput,
        InputTimesZero,
    }

    /// <summary>
    /// diffusers' classic AttnProcessor (~0.2x) on (B, S, H·D) queries and (B, T, H·D) keys and values (T ≠ S: its
    /// cross-attention): head_to_batch_dim = Reshape(B, ·, H, D) → Transpose(0,2,1,3) → Reshape(B·H, ·, D) with sizes read
    /// from Shape, torch.baddbmm(input, q, kᵀ, beta=0, alpha) = Add(Mul(MatMul(q3, Transpose(0,2,1)(k3)), alpha), Mul(input, 0))
    /// where input is torch.empty's ConstantOfShape(0) or a graph input x (1, S, T), whose shape alone would let it be
    /// dropped like zeros; Cast(float) → Softmax → Cast(float)
    /// (upcast_softmax, .to(dtype)); bmm; batch_to_head_dim back to (B, S, H·D).
    /// </summary>
    private static ModelProto DiffusersAttention(DiffusersVariant variant)
    {
        var b = new ModelBuilder();
        var q = b.Input("q", DataType.Float, "B", "S", Heads * HeadDim);
        var k = b.Input("k", DataType.Float, "B", "T", Heads * HeadDim);
        var v = b.Input("v", DataType.Float, "B", "T", Heads * HeadDim);
        string Size(string x, long axis) => b.Node("Unsqueeze", [b.Node("Gather", [b.Node("Shape", [x]), b.Initializer(ConstantTensor.Scalar(DataType.Int64, axis))]), b.Ints(0)]);
        string HeadToBatch(string x)
        {
            var (batch, length) = (Size(x, 0), Size(x, 1));
            var headDim = b.Node("Div", [Size(x, 2), b.Ints(Heads)]);
            var split = b.Node("Reshape", [x, b.Node("Concat", [batch, length, b.Ints(Heads), headDim], Int("axis", 0))]);
            var heads = b.Node("Transpose", [split], Ints("perm", 0, 2, 1, 3));
            return b.Node("Reshape", [heads, b.Node("Concat", [b.Node("Mul", [batch, b.Ints(Heads)]), length, headDim], Int("axis", 0))]);
        }

        var (q3, k3, v3) = (HeadToBatch(q), HeadToBatch(k), HeadToBatch(v));
        var input = variant == DiffusersVariant.EmptyInput
            ? b.Node("ConstantOfShape", [b.Node("Concat", [Size(q3, 0), Size(q3, 1), Size(k3, 1)], Int("axis", 0))],
                Tensor("value", new ConstantTensor(DataType.Float, [1], [0])))
            : b.Input("x", DataType.Float, 1, "S", "T");
        var scores = b.Node("Add", [b.Node("Mul", [b.Node("MatMul", [q3, b.Node("Transpose", [k3], Ints("perm", 0, 2, 1))]), b.Scalar(InvSqrtD)]),
            b.Node("Mul", [input, b.Scalar(0)])]);
        var probabilities = b.Node("Cast", [Softmax(b, b.Node("Cast", [scores], Int("to", (long)DataType.Float)))], Int("to", (long)DataType.Float));
        var output = b.Node("MatMul", [probabilities, v3]);
        var batch = b.Node("Div", [Size(output, 0), b.Ints(Heads)]);
        var split = b.Node("Reshape", [output, b.Node("Concat", [batch, b.Ints(Heads), Size(output, 1), Size(output, 2)], Int("axis", 0))]);
        var merged = b.Node("Transpose", [split], Ints("perm", 0, 2, 1, 3));
        b.Rename(b.Node("Reshape", [merged, b.Node("Concat", [batch, Size(output, 1), b.Ints(Heads * HeadDim)], Int("axis", 0))]), "out");
        b.Output("out");
        return b.Model;
    }

    /// <summary>(B, S, H·D) queries, (B, T, H·D) keys and values; with the baddbmm input x, an inf and a NaN in it.</summary>
    private static Func<Random, long, long, Dictionary<string, TestTensor>> DiffusersInputs(bool withBaddbmmInput) => (r, s, t) =>
    {
        var inputs = new Dictionary<string, TestTensor>
        {
            ["q"] = TestTensor.Random(r, [Batch, s, Heads * HeadDim]),
            ["k"] = TestTensor.Random(r, [Batch, t, Heads * HeadDim]),
            ["v"] = TestTensor.Random(r, [Batch, t, Heads * HeadDim]),
        };
        if (withBaddbmmInput)
        {
            var x = TestTensor.Random(r, [1, s, t]);
            // 0·inf and 0·NaN are NaN: the rows holding them must come out NaN, as the original computes them.
            x.Data[0] = float.PositiveInfinity;
            x.Data[^1] = float.NaN;
            inputs["x"] = x;
        }

        return inputs;
    };

    private enum GptNeoXVariant
    {
        Plain,
        Padding,
        IntegerPadding,
        SwappedView,
    }

    /// <summary>
    /// HF GPT-NeoX (~4.36) from (B, H, S, D) q, k, v: q and k viewed as (B·H, ·, D), torch.baddbmm(zeros (B·H, S, T), q,
    /// kᵀ, beta=1, alpha=1/√D) = Add(Mul(MatMul(q3, Transpose(0,2,1)(k3)), alpha), Mul(ConstantOfShape(zeros), 1)), viewed as
    /// (B, H, S, T) and never merged back: Where(causal buffer slice, ·, finfo.min), [+ padding (B, 1, 1, T)], Softmax,
    /// Cast, MatMul with the 4-D value.
    /// </summary>
    private static ModelProto GptNeoX(GptNeoXVariant variant)
    {
        var (b, q, k, v) = Bhsd(keyLength: variant == GptNeoXVariant.SwappedView ? "T" : "S");
        var shape = b.Node("Shape", [q]);
        var batch = b.Node("Slice", [shape, b.Ints(0), b.Ints(1)]);
        var heads = b.Node("Slice", [shape, b.Ints(1), b.Ints(2)]);
        var length = b.Node("Slice", [shape, b.Ints(2), b.Ints(3)]);
        var keyLength = b.Node("Slice", [b.Node("Shape", [k]), b.Ints(2), b.Ints(3)]);
        var rows = b.Node("Mul", [batch, heads]);
        var q3 = b.Node("Reshape", [q, b.Node("Concat", [rows, length, b.Ints(HeadDim)], Int("axis", 0))]);
        var k3 = b.Node("Reshape", [k, b.Node("Concat", [rows, keyLength, b.Ints(HeadDim)], Int("axis", 0))]);
        var zerosShape = b.Node("Concat", [rows, length, keyLength], Int("axis", 0));
        var zeros = b.Node("Mul", [b.Node("ConstantOfShape", [zerosShape], Tensor("value", new ConstantTensor(DataType.Float, [1], [0]))), b.Scalar(1)]);
        var scores = b.Node("Add", [b.Node("Mul", [b.Node("MatMul", [q3, b.Node("Transpose", [k3], Ints("perm", 0, 2, 1))]), b.Scalar(InvSqrtD)]), zeros]);
        string[] viewDims = variant == GptNeoXVariant.SwappedView ? [batch, heads, keyLength, length] : [batch, heads, length, keyLength];
        var view = b.Node("Reshape", [scores, b.Node("Concat", viewDims, Int("axis", 0))]);
        var buffer = b.Initializer(new ConstantTensor(DataType.Bool, [1, 1, BufferSize, BufferSize],
            Enumerable.Range(0, BufferSize * BufferSize).Select(i => i % BufferSize <= i / BufferSize ? 1.0 : 0.0).ToArray()));
        var queryLength = b.Node("Gather", [shape, b.Initializer(ConstantTensor.Scalar(DataType.Int64, 2))]);
        var keys = b.Node("Gather", [b.Node("Shape", [k]), b.Initializer(ConstantTensor.Scalar(DataType.Int64, 2))]);
        var start = b.Node("Unsqueeze", [b.Node("Sub", [keys, queryLength]), b.Ints(0)]);
        var end = b.Node("Unsqueeze", [keys, b.Ints(0)]);
        var keep = b.Node("Slice", [b.Node("Slice", [buffer, start, end, b.Ints(2)]), b.Ints(0), end, b.Ints(3)]);
        var masked = b.Node("Where", [keep, view, b.Scalar(FloatMin)]);
        if (variant == GptNeoXVariant.Padding)
        {
            masked = b.Node("Add", [masked, b.Input("mask", DataType.Float, "B", 1, 1, "S")]);
        }
        else if (variant == GptNeoXVariant.IntegerPadding)
        {
            var m = b.Node("Unsqueeze", [b.Node("Cast", [b.Input("mask", DataType.Int64, "B", "S")], Int("to", (long)DataType.Float)), b.Ints(1, 2)]);
            masked = b.Node("Add", [masked, b.Node("Mul", [b.Node("Sub", [b.Scalar(1), m]), b.Scalar(FloatMin)])]);
        }

        return Finish(b, b.Node("Cast", [Softmax(b, masked)], Int("to", (long)DataType.Float)), v);
    }

    /// <summary>4-D scores plus zeros of shape (1, B, H, S, T), which would broadcast them to rank 5.</summary>
    private static ModelProto ZerosOfHigherRank()
    {
        var (b, q, k, v) = Bhsd();
        var scoresShape = b.Node("Concat", [b.Ints(1), b.Node("Slice", [b.Node("Shape", [q]), b.Ints(0), b.Ints(3)]), b.Node("Slice", [b.Node("Shape", [k]), b.Ints(2), b.Ints(3)])], Int("axis", 0));
        var zeros = b.Node("ConstantOfShape", [scoresShape], Tensor("value", new ConstantTensor(DataType.Float, [1], [0])));
        return Finish(b, Softmax(b, b.Node("Add", [Div(b, Scores(b, q, k)), zeros])), v);
    }

    /// <summary>BART's 3-D attention (query scaled before the head split) with the scores viewed as (B, H, S, T) by Shape-read sizes.</summary>
    private static (ModelBuilder B, string Scores, string V3, string Batch, string Length, string KeyLength, string Flat) Bart3D()
    {
        var b = new ModelBuilder();
        var hidden = b.Input("q_proj", DataType.Float, "B", "S", Heads * HeadDim);
        var k = b.Input("k", DataType.Float, "B", Heads, "T", HeadDim);
        var v = b.Input("v", DataType.Float, "B", Heads, "T", HeadDim);
        var qShape = b.Node("Shape", [hidden]);
        var batch = b.Node("Slice", [qShape, b.Ints(0), b.Ints(1)]);
        var length = b.Node("Slice", [qShape, b.Ints(1), b.Ints(2)]);
        var keyLength = b.Node("Slice", [b.Node("Shape", [k]), b.Ints(2), b.Ints(3)]);
        var flat = b.Node("Mul", [batch, b.Ints(Heads)]);
        var split = b.Node("Transpose", [b.Node("Reshape", [b.Node("Mul", [hidden, b.Scalar(InvSqrtD)]), b.Ints(0, 0, Heads, HeadDim)])], Ints("perm", 0, 2, 1, 3));
        var q3 = b.Node("Reshape", [split, b.Node("Concat", [flat, b.Ints(-1), b.Ints(HeadDim)], Int("axis", 0))]);
        var k3 = b.Node("Reshape", [k, b.Node("Concat", [flat, b.Ints(-1), b.Ints(HeadDim)], Int("axis", 0))]);
        var v3 = b.Node("Reshape", [v, b.Node("Concat", [flat, b.Ints(-1), b.Ints(HeadDim)], Int("axis", 0))]);
        var scores = b.Node("MatMul", [q3, b.Node("Transpose", [k3], Ints("perm", 0, 2, 1))]);
        return (b, scores, v3, batch, length, keyLength, flat);
    }

    private static ModelProto FinishBart3D(ModelBuilder b, string merged, string v3)
    {
        b.Rename(b.Node("MatMul", [Softmax(b, merged), v3]), "out");
        b.Output("out");
        return b.Model;
    }

    /// <summary>HF OPT (~4.30): view (B, H, S, T) → + mask → torch.max(·, finfo.min) → view (B·H, S, T), Softmax, bmm.</summary>
    private static ModelProto OptClampInView()
    {
        var (b, scores, v3, batch, length, keyLength, flat) = Bart3D();
        var mask = b.Input("mask", DataType.Float, "B", 1, "S", "T");
        var view = b.Node("Reshape", [scores, b.Node("Concat", [batch, b.Ints(Heads), length, keyLength], Int("axis", 0))]);
        var clamped = b.Node("Max", [b.Node("Add", [view, mask]), b.Scalar(FloatMin)]);
        return FinishBart3D(b, b.Node("Reshape", [clamped, b.Node("Concat", [flat, length, keyLength], Int("axis", 0))]), v3);
    }

    /// <summary>
    /// OPT's mask: a lower-right causal mask and batch 1's last third of keys padded, each finfo.min where it hides, summed
    /// (−inf where both hide); with S &gt; T some rows hide every key.
    /// </summary>
    private static Dictionary<string, TestTensor> CausalPlusPaddingInputs(Random r, long s, long t)
    {
        var inputs = BartInputs(r, s, t);
        var padding = Padding(t);
        var mask = new float[Batch * s * t];
        for (var i = 0; i < mask.Length; i++)
        {
            long entry = i / (s * t), row = i / t % s, key = i % t;
            mask[i] = (key > row + t - s ? FloatMin : 0f) + (padding[entry * t + key] == 1 ? 0f : FloatMin);
        }

        inputs["mask"] = new TestTensor(DataType.Float, [Batch, 1, s, t], mask);
        return inputs;
    }

    /// <summary>
    /// HF CLIP (~4.30): the causal mask, then the padding mask, each added on its own view: view → + causal → view back,
    /// view → + padding → view back, Softmax, bmm. The causal mask is triu(full(finfo.min), 1) over (S, T).
    /// </summary>
    private static ModelProto ClipTwoViews() => ClipViews(regroupSecond: false);

    /// <summary>As <see cref="ClipTwoViews"/>, but the second view splits the rows as (B·H, 1): not the first view's shape.</summary>
    private static ModelProto ClipSecondViewRegrouped() => ClipViews(regroupSecond: true);

    private static ModelProto ClipViews(bool regroupSecond)
    {
        var (b, scores, v3, batch, length, keyLength, flat) = Bart3D();
        var padding = b.Input("mask", DataType.Float, "B", 1, 1, "T");
        var full = b.Node("ConstantOfShape", [b.Node("Concat", [length, keyLength], Int("axis", 0))], Tensor("value", new ConstantTensor(DataType.Float, [1], [FloatMin])));
        var causal = b.Node("Trilu", [full, b.Initializer(ConstantTensor.Scalar(DataType.Int64, 1))], Int("upper", 1));
        var viewShape = b.Node("Concat", [batch, b.Ints(Heads), length, keyLength], Int("axis", 0));
        var flatShape = b.Node("Concat", [flat, length, keyLength], Int("axis", 0));
        var first = b.Node("Reshape", [b.Node("Add", [b.Node("Reshape", [scores, viewShape]), causal]), flatShape]);
        var secondShape = regroupSecond ? b.Node("Concat", [flat, b.Ints(1), length, keyLength], Int("axis", 0)) : viewShape;
        var second = b.Node("Reshape", [b.Node("Add", [b.Node("Reshape", [first, secondShape]), padding]), flatShape]);
        return FinishBart3D(b, second, v3);
    }

    /// <summary>BART inputs with a (B, 1, 1, T) padding mask of finfo.min; batch 0 is padded entirely.</summary>
    private static Dictionary<string, TestTensor> ClipInputs(Random r, long s, long t)
    {
        var inputs = BartInputs(r, s, t);
        inputs["mask"] = new TestTensor(DataType.Float, [Batch, 1, 1, t], Padding(t, fullyMaskedBatch: true).Select(m => m == 1 ? 0f : FloatMin).ToArray());
        return inputs;
    }

    private enum Float64Variant
    {
        SlidingWindow,
        TenThousand,
        TwoMasks,
    }

    /// <summary>
    /// Gemma-2-style scores · scaling and softcap c·tanh(s/c), then Cast to float64 for a float64 mask (torch 1.13 types the
    /// Python-float fill of torch.where(window, finfo.min, mask) as float64): here Where(window, finfo.min, Where(keep, 0,
    /// finfo.min)) in float64, (B, 1, S, T); Softmax in float64; Cast back to float; MatMul with V.
    /// </summary>
    private static ModelProto Float64Scores(Float64Variant variant)
    {
        var (b, q, k, v) = Bhsd();
        var window = b.Input("window", DataType.Bool, "S", "T");
        var keep = b.Input("keep", DataType.Bool, "B", 1, 1, "T");
        var scaled = b.Node("Mul", [Scores(b, q, k), b.Scalar(InvSqrtD)]);
        var cap = b.Scalar(2.0f);
        var capped = b.Node("Mul", [b.Node("Tanh", [b.Node("Div", [scaled, cap])]), cap]);
        var wide = b.Node("Cast", [capped], Int("to", (long)DataType.Double));
        var fill = variant == Float64Variant.TenThousand ? -10000f : FloatMin;
        var padding = b.Node("Where", [keep, b.Scalar(0, DataType.Double), b.Scalar(fill, DataType.Double)]);
        var masked = variant == Float64Variant.TwoMasks
            ? b.Node("Add", [b.Node("Add", [wide, padding]), b.Node("Where", [window, b.Scalar(FloatMin, DataType.Double), b.Scalar(0, DataType.Double)])])
            : b.Node("Add", [wide, b.Node("Where", [window, b.Scalar(FloatMin, DataType.Double), padding])]);
        return Finish(b, b.Node("Cast", [Softmax(b, masked)], Int("to", (long)DataType.Float)), v);
    }

    /// <summary>A sliding window of 2 keys under a lower-right causal diagonal (true = hidden), and batch 1's last third padded.</summary>
    private static Dictionary<string, TestTensor> SlidingWindowInputs(Random r, long s, long t)
    {
        var inputs = Qkv(r, s, t);
        var window = new float[s * t];
        for (var i = 0; i < window.Length; i++)
        {
            long row = i / t, key = i % t, last = row + t - s;
            window[i] = key > last || key <= last - 2 ? 1 : 0;
        }

        inputs["window"] = new TestTensor(DataType.Bool, [s, t], window);
        inputs["keep"] = new TestTensor(DataType.Bool, [Batch, 1, 1, t], Padding(t));
        return inputs;
    }

    /// <summary>
    /// HF MPT (~4.40): matmul(q, kᵀ) · softmax_scale + position_bias (H, 1, T), masked_fill(bool (B, 1, S, T) mask,
    /// finfo.min), softmax(scores.float()).to(v.dtype), matmul with V, all on 4-D tensors.
    /// </summary>
    private static ModelProto Mpt()
    {
        var (b, q, k, v) = Bhsd();
        var hidden = b.Input("mask", DataType.Bool, "B", 1, "S", "T");
        var alibi = b.Input("alibi", DataType.Float, Heads, 1, "T");
        var scores = b.Node("Add", [b.Node("Mul", [Scores(b, q, k), b.Scalar(InvSqrtD)]), alibi]);
        var masked = b.Node("Where", [hidden, b.Scalar(FloatMin), scores]);
        var probabilities = b.Node("Cast", [Softmax(b, b.Node("Cast", [masked], Int("to", (long)DataType.Float)))], Int("to", (long)DataType.Float));
        return Finish(b, probabilities, v);
    }

    private static Dictionary<string, TestTensor> MptInputs(Random r, long s, long t)
    {
        var inputs = Qkv(r, s, t);
        inputs["alibi"] = new TestTensor(DataType.Float, [Heads, 1, t],
            Enumerable.Range(0, (int)(Heads * t)).Select(i => -MathF.Pow(2, -8f * (1 + i / (int)t) / Heads) * (i % t)).ToArray());
        inputs["mask"] = HiddenByCausalOrPadding(s, t);
        return inputs;
    }

    /// <summary>A bool (B, 1, S, T) mask, true = hidden: lower-right causal, and entry 1's first third of keys padded (left padding).</summary>
    private static TestTensor HiddenByCausalOrPadding(long s, long t)
    {
        var mask = new float[Batch * s * t];
        for (var i = 0; i < mask.Length; i++)
        {
            long entry = i / (s * t), row = i / t % s, key = i % t;
            mask[i] = key > row + t - s || (entry == 1 && key < t / 3) ? 1 : 0;
        }

        return new TestTensor(DataType.Bool, [Batch, 1, s, t], mask);
    }

    internal static ModelProto Gpt2WhereThenAdd()
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", DataType.Float, "B", 1, 1, "T");
        var keep = b.Node("Cast", [b.Node("Trilu", [QueryByKeyOnes(b, q, k, DataType.Int64)], Int("upper", 0))], Int("to", (long)DataType.Bool));
        var scores = b.Node("Cast", [Div(b, Scores(b, q, k))], Int("to", (long)DataType.Float));
        var causal = b.Node("Where", [keep, scores, b.Scalar(FloatMin)]);
        var probabilities = b.Node("Cast", [Softmax(b, b.Node("Add", [causal, mask]))], Int("to", (long)DataType.Float));
        return Finish(b, probabilities, v);
    }

    private static ModelProto T5NoOpCast()
    {
        var (b, q, k, v) = Bhsd();
        var bias = b.Input("position_bias", DataType.Float, 1, Heads, "S", "T");
        var scores = b.Node("Cast", [b.Node("Add", [Scores(b, q, k), bias])], Int("to", (long)DataType.Float));
        return Finish(b, Softmax(b, scores), v);
    }

    private static ModelProto SubtractedMask()
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", DataType.Float, "B", "T");
        var penalty = b.Node("Mul", [b.Node("Sub", [b.Scalar(1), b.Node("Unsqueeze", [mask, b.Ints(1, 2)])]), b.Scalar(10000)]);
        var scores = Scores(b, b.Node("Mul", [q, b.Scalar(InvSqrtD)]), k);
        return Finish(b, Softmax(b, b.Node("Sub", [scores, penalty])), v);
    }

    private static ModelProto CausalTriuOfMin()
    {
        var (b, q, k, v) = Bhsd();
        var s = b.Node("Slice", [b.Node("Shape", [q]), b.Ints(2), b.Ints(3)]);
        var t = b.Node("Slice", [b.Node("Shape", [k]), b.Ints(2), b.Ints(3)]);
        var full = b.Node("ConstantOfShape", [b.Node("Concat", [s, t], Int("axis", 0))], Tensor("value", new ConstantTensor(DataType.Float, [1], [FloatMin])));
        var causal = b.Node("Trilu", [full, b.Initializer(ConstantTensor.Scalar(DataType.Int64, 1))], Int("upper", 1));
        var scaled = b.Node("Mul", [Scores(b, q, k), b.Scalar(InvSqrtD)]);
        return Finish(b, Softmax(b, b.Node("Add", [scaled, causal])), v);
    }

    private const int BufferSize = 16;

    private static ModelProto CausalBufferSlice()
    {
        var (b, q, k, v) = Bhsd(keyLength: "S");
        var tril = new double[BufferSize * BufferSize];
        for (var i = 0; i < BufferSize; i++)
        {
            for (var j = 0; j <= i; j++)
            {
                tril[i * BufferSize + j] = 1;
            }
        }

        var buffer = b.Initializer(new ConstantTensor(DataType.Bool, [1, 1, BufferSize, BufferSize], tril));
        var queryLength = b.Node("Gather", [b.Node("Shape", [q]), b.Initializer(ConstantTensor.Scalar(DataType.Int64, 2))]);
        var keyLength = b.Node("Gather", [b.Node("Shape", [k]), b.Initializer(ConstantTensor.Scalar(DataType.Int64, 2))]);
        var start = b.Node("Unsqueeze", [b.Node("Sub", [keyLength, queryLength]), b.Ints(0)]);
        var end = b.Node("Unsqueeze", [keyLength, b.Ints(0)]);
        var rows = b.Node("Slice", [buffer, start, end, b.Ints(2)]);
        var keep = b.Node("Slice", [rows, b.Ints(0), end, b.Ints(3)]);
        return Finish(b, Softmax(b, b.Node("Where", [keep, Div(b, Scores(b, q, k)), b.Scalar(FloatMin)])), v);
    }

    private static ModelProto CausalAdditiveBuffer()
    {
        var (b, q, k, v) = Bhsd(keyLength: "S");
        var triangle = Enumerable.Range(0, BufferSize * BufferSize)
            .Select(i => i % BufferSize <= i / BufferSize ? 0.0 : double.NegativeInfinity).ToArray();
        var buffer = b.Initializer(new ConstantTensor(DataType.Float, [BufferSize, BufferSize], triangle));
        var length = b.Node("Unsqueeze", [b.Node("Gather", [b.Node("Shape", [q]), b.Initializer(ConstantTensor.Scalar(DataType.Int64, 2))]), b.Ints(0)]);
        var mask = b.Node("Slice", [b.Node("Slice", [buffer, b.Ints(0), length, b.Ints(0)]), b.Ints(0), length, b.Ints(1)]);
        var quarter = b.Scalar(MathF.Pow(HeadDim, -0.25f));
        var scores = b.Node("MatMul", [b.Node("Mul", [q, quarter]), b.Node("Mul", [b.Node("Transpose", [k], Ints("perm", 0, 1, 3, 2)), quarter])]);
        return Finish(b, Softmax(b, b.Node("Add", [scores, mask])), v);
    }

    private static ModelProto Gpt2WithPast()
    {
        var (b, q, k, v) = Bhsd(keyLength: "S");
        var pastKey = b.Input("past_key", DataType.Float, "B", Heads, "P", HeadDim);
        var pastValue = b.Input("past_value", DataType.Float, "B", Heads, "P", HeadDim);
        var key = b.Rename(b.Node("Concat", [pastKey, k], Int("axis", -2)), "present_key");
        var value = b.Rename(b.Node("Concat", [pastValue, v], Int("axis", -2)), "present_value");
        b.Output("present_key");
        b.Output("present_value");
        var buffer = b.Initializer(new ConstantTensor(DataType.Bool, [1, 1, BufferSize, BufferSize],
            Enumerable.Range(0, BufferSize * BufferSize).Select(i => i % BufferSize <= i / BufferSize ? 1.0 : 0.0).ToArray()));
        var queryLength = b.Node("Gather", [b.Node("Shape", [q]), b.Initializer(ConstantTensor.Scalar(DataType.Int64, 2))]);
        var keyLength = b.Node("Gather", [b.Node("Shape", [key]), b.Initializer(ConstantTensor.Scalar(DataType.Int64, 2))]);
        var start = b.Node("Unsqueeze", [b.Node("Sub", [keyLength, queryLength]), b.Ints(0)]);
        var end = b.Node("Unsqueeze", [keyLength, b.Ints(0)]);
        var keep = b.Node("Slice", [b.Node("Slice", [buffer, start, end, b.Ints(2)]), b.Ints(0), end, b.Ints(3)]);
        return Finish(b, Softmax(b, b.Node("Where", [keep, Div(b, Scores(b, q, key)), b.Scalar(FloatMin)])), value);
    }

    private static Dictionary<string, TestTensor> SelfAttentionInputs(Random r, long s, long t) => Qkv(r, s, s);

    /// <summary>
    /// A float16 causal mask filled with finfo(float16).min: scores + Trilu(full((S, T), −65504), k=1), added in float16,
    /// Softmax in float32. The query is scaled before the score MatMul, so a score can reach float16's range (±65504).
    /// </summary>
    /// <param name="withPadding">Whether Where(mask, 0, −inf) of a bool (B, 1, 1, T) input <c>mask</c> (true = keep) is added
    /// after the causal mask, in float16.</param>
    internal static ModelProto Float16CausalTriuOfLowest(bool withPadding = false)
    {
        var (b, q, k, v) = Bhsd(type: DataType.Float16);
        var s = b.Node("Slice", [b.Node("Shape", [q]), b.Ints(2), b.Ints(3)]);
        var t = b.Node("Slice", [b.Node("Shape", [k]), b.Ints(2), b.Ints(3)]);
        var full = b.Node("ConstantOfShape", [b.Node("Concat", [s, t], Int("axis", 0))],
            Tensor("value", new ConstantTensor(DataType.Float16, [1], [(double)Half.MinValue])));
        var causal = b.Node("Trilu", [full, b.Initializer(ConstantTensor.Scalar(DataType.Int64, 1))], Int("upper", 1));
        var scores = Scores(b, b.Node("Mul", [q, b.Scalar(InvSqrtD, DataType.Float16)]), k);
        var masked = b.Node("Add", [scores, causal]);
        if (withPadding)
        {
            var mask = b.Input("mask", DataType.Bool, "B", 1, 1, "T");
            var padding = b.Node("Where", [mask, b.Scalar(0, DataType.Float16), b.Scalar(float.NegativeInfinity, DataType.Float16)]);
            masked = b.Node("Add", [masked, padding]);
        }

        var probabilities = Softmax(b, b.Node("Cast", [masked], Int("to", (long)DataType.Float)));
        return Finish(b, b.Node("Cast", [probabilities], Int("to", (long)DataType.Float16)), v, DataType.Float16);
    }

    /// <summary>
    /// HF Llama's <c>_prepare_4d_causal_attention_mask_with_cache_position</c> without an attention mask, as TorchScript
    /// exports it: cache_position = arange(P, P + S) from the past key's length, the (S, T) mask expanded to (B, 1, S, T)
    /// and sliced to the key length per layer.
    /// </summary>
    /// <param name="triangle">Whether the mask has the triu(·, 1) factor (absent when exported with one query).</param>
    /// <param name="offsetInput">Whether the cache position starts at the length of an unrelated input instead of the past key's.</param>
    internal static ModelProto LlamaCachePosition(bool triangle, bool offsetInput = false)
    {
        var (b, q, k, v) = Bhsd(keyLength: "S");
        var pastKey = b.Input("past_key", DataType.Float, "B", Heads, "P", HeadDim);
        var pastValue = b.Input("past_value", DataType.Float, "B", Heads, "P", HeadDim);
        var key = b.Rename(b.Node("Concat", [pastKey, k], Int("axis", -2)), "present_key");
        var value = b.Rename(b.Node("Concat", [pastValue, v], Int("axis", -2)), "present_value");
        b.Output("present_key");
        b.Output("present_value");
        string Dim(string tensor, long axis) => b.Node("Gather", [b.Node("Shape", [tensor]), b.Initializer(ConstantTensor.Scalar(DataType.Int64, axis))], Int("axis", 0));
        var past = offsetInput ? Dim(b.Input("offset", DataType.Float, "O"), 0) : Dim(pastKey, 2);
        var length = Dim(q, 2);
        var total = b.Node("Add", [Dim(pastKey, 2), length]);
        var start = past;
        var cachePosition = b.Node("Range", [start, b.Node("Add", [start, length]), b.Initializer(ConstantTensor.Scalar(DataType.Int64, 1))]);
        var beyond = b.Node("Greater", [b.Node("Range", [b.Initializer(ConstantTensor.Scalar(DataType.Int64, 0)), total, b.Initializer(ConstantTensor.Scalar(DataType.Int64, 1))]),
            b.Node("Reshape", [cachePosition, b.Ints(-1, 1)])]);
        var full = b.Node("ConstantOfShape", [b.Node("Concat", [b.Node("Unsqueeze", [length, b.Ints(0)]), b.Node("Unsqueeze", [total, b.Ints(0)])], Int("axis", 0))],
            Tensor("value", new ConstantTensor(DataType.Float, [1], [FloatMin])));
        var filled = triangle ? b.Node("Trilu", [full, b.Initializer(ConstantTensor.Scalar(DataType.Int64, 1))], Int("upper", 1)) : full;
        var causal = b.Node("Mul", [filled, b.Node("Cast", [beyond], Int("to", (long)DataType.Float))]);
        var batch = b.Node("Unsqueeze", [Dim(q, 0), b.Ints(0)]);
        var expanded = b.Node("Expand", [b.Node("Unsqueeze", [b.Node("Unsqueeze", [causal, b.Ints(0)]), b.Ints(1)]),
            b.Node("Concat", [batch, b.Ints(1, 1, 1)], Int("axis", 0))]);
        var mask = b.Node("Slice", [expanded, b.Ints(0), b.Node("Unsqueeze", [Dim(key, 2), b.Ints(0)]), b.Ints(3), b.Ints(1)]);
        var scores = b.Node("Mul", [Scores(b, q, key), b.Scalar(InvSqrtD)]);
        return Finish(b, Softmax(b, b.Node("Add", [scores, mask])), value);
    }

    /// <summary>
    /// HF's older <c>_prepare_4d_causal_attention_mask</c> as TorchScript exports it (Falcon; BLOOM casts it to bool and
    /// hides with it): the (S, S) <c>_make_causal_mask</c> Where(Less(arange(S), (arange(S) + 1).view(S, 1)), 0, full(F)),
    /// with a cache Concat(zeros(S, P), ·) on the keys, expanded to (B, 1, S, T), then
    /// Where(Cast(bool, _expand_mask(attention_mask)), F, ·). Inputs: q, k, v (B, H, S, D); past_key and past_value
    /// (B, H, P, D) with a cache; attention_mask int64 (B, T), 1 = keep.
    /// </summary>
    /// <param name="cache">Whether the keys are Concat(past_key, k) and the causal mask has zero columns for them.</param>
    /// <param name="boolHidden">Whether the scores are Where(Cast(bool, mask), F, scores) (BLOOM) instead of scores + mask (Falcon).</param>
    /// <param name="miss">What makes the mask something else than the causal mask plus the padding.</param>
    /// <param name="type">The attention's type: with Float16 every mask value is float16 (F = −65504, as Falcon's float16
    /// export builds it) and Softmax runs in float32 between Casts.</param>
    internal static ModelProto OlderBuilderCausalPadding(bool cache, bool boolHidden, OlderBuilderMiss miss = OlderBuilderMiss.None, DataType type = DataType.Float)
    {
        var (b, q, k, v) = Bhsd(type: type, keyLength: "S");
        var lowest = type == DataType.Float16 ? (float)Half.MinValue : FloatMin;
        string Dim(string tensor, long axis) => b.Node("Gather", [b.Node("Shape", [tensor]), b.Initializer(ConstantTensor.Scalar(DataType.Int64, axis))], Int("axis", 0));
        string Vector(string scalar) => b.Node("Unsqueeze", [scalar, b.Ints(0)]);
        string Int64(long value) => b.Initializer(ConstantTensor.Scalar(DataType.Int64, value));
        var length = Dim(q, 2);
        var full = b.Node("ConstantOfShape", [b.Node("Concat", [Vector(length), Vector(length)], Int("axis", 0))],
            Tensor("value", new ConstantTensor(type, [1], [lowest])));
        var positions = b.Node("Range", [Int64(0), length, Int64(1)]);
        var column = b.Node("Reshape", [b.Node("Add", [positions, Int64(miss == OlderBuilderMiss.DiagonalOffsetTwo ? 2 : 1)]),
            b.Node("Concat", [Vector(length), b.Ints(1)], Int("axis", 0))]);
        var keep = b.Node(miss == OlderBuilderMiss.KeysAboveQueries ? "Greater" : "Less", [positions, column]);
        var causal = b.Node("Cast", [b.Node("Where", [b.Node("Cast", [keep], Int("to", (long)DataType.Bool)), b.Scalar(0, type), full])], Int("to", (long)type));
        string key = k, value = v, past = Int64(0);
        if (cache)
        {
            var pastKey = b.Input("past_key", type, "B", Heads, "P", HeadDim);
            var pastValue = b.Input("past_value", type, "B", Heads, "P", HeadDim);
            key = b.Rename(b.Node("Concat", [pastKey, k], Int("axis", -2)), "present_key");
            value = b.Rename(b.Node("Concat", [pastValue, v], Int("axis", -2)), "present_value");
            b.Output("present_key", type);
            b.Output("present_value", type);
            past = Dim(pastKey, 2);
            var width = miss is OlderBuilderMiss.UnrelatedCacheWidth or OlderBuilderMiss.UnrelatedCacheWidthOwnTarget
                ? Dim(b.Input("offset", DataType.Float, "O"), 0)
                : past;
            var zeros = b.Node("ConstantOfShape", [b.Node("Concat", [Vector(length), Vector(width)], Int("axis", 0))],
                Tensor("value", new ConstantTensor(type, [1], [0])));
            causal = b.Node("Concat", [zeros, causal], Int("axis", -1));
        }

        if (miss == OlderBuilderMiss.SlidingWindow)
        {
            // Mistral (sliding_window = 3): 1 − triu(ones, P − 3 + 1) hides keys more than 2 positions behind the query.
            var ones = b.Node("ConstantOfShape", [b.Node("Shape", [causal])], Tensor("value", new ConstantTensor(DataType.Int32, [1], [1])));
            var diagonal = b.Node("Sub", [past, Int64(2)]);
            var outside = b.Node("Sub", [b.Scalar(1, DataType.Int32), b.Node("Trilu", [ones, diagonal], Int("upper", 1))]);
            causal = b.Node("Where", [b.Node("Cast", [outside], Int("to", (long)DataType.Bool)), b.Scalar(FloatMin), causal]);
        }

        // Expanded to the key length, or (UnrelatedCacheWidthOwnTarget) to the causal mask's own width, so that the Expand
        // provably keeps the last two axes whatever the zero columns' width.
        var keyAxis = miss == OlderBuilderMiss.UnrelatedCacheWidthOwnTarget ? Dim(causal, 1) : Dim(key, 2);
        var target = b.Node("Concat", [Vector(Dim(q, 0)), b.Ints(1), Vector(length), Vector(keyAxis)], Int("axis", 0));
        var expanded = b.Node("Expand", [b.Node("Unsqueeze", [causal, b.Ints(0, 1)]), target]);
        var attentionMask = b.Input("attention_mask", DataType.Int64, "B", "T");
        var inverted = b.Node("Sub", [b.Scalar(1, type), b.Node("Cast", [b.Node("Unsqueeze", [attentionMask, b.Ints(1, 2)])], Int("to", (long)type))]);
        var padding = b.Node("Where", [b.Node("Cast", [inverted], Int("to", (long)DataType.Bool)), b.Scalar(lowest, type), inverted]);
        var mask = b.Node("Where", [b.Node("Cast", [padding], Int("to", (long)DataType.Bool)), b.Scalar(lowest, type), expanded]);
        var scores = b.Node("Div", [Scores(b, q, key), b.Scalar(MathF.Sqrt(HeadDim), type)]);
        var masked = boolHidden
            ? b.Node("Where", [b.Node("Cast", [mask], Int("to", (long)DataType.Bool)), b.Scalar(lowest, type), scores])
            : b.Node("Add", [scores, mask]);
        if (type == DataType.Float)
        {
            return Finish(b, Softmax(b, masked), value);
        }

        var probabilities = Softmax(b, b.Node("Cast", [masked], Int("to", (long)DataType.Float)));
        return Finish(b, b.Node("Cast", [probabilities], Int("to", (long)type)), value, type);
    }

    /// <summary>Inputs of <see cref="OlderBuilderCausalPadding"/>: S queries, P cached keys, entry 1's first <paramref name="padded"/> keys padded.</summary>
    internal static Dictionary<string, TestTensor> OlderBuilderInputs(Random r, long s, long past, long padded, DataType type = DataType.Float)
    {
        var inputs = Qkv(r, s, s, type: type);
        if (past > 0)
        {
            inputs["past_key"] = TestTensor.Random(r, [Batch, Heads, past, HeadDim], type);
            inputs["past_value"] = TestTensor.Random(r, [Batch, Heads, past, HeadDim], type);
        }

        var total = past + s;
        inputs["attention_mask"] = new TestTensor(DataType.Int64, [Batch, total],
            Enumerable.Range(0, (int)(Batch * total)).Select(i => i < total || i % total >= padded ? 1f : 0f).ToArray());
        return inputs;
    }

    private static ModelProto OnnxAttentionFloatMask()
    {
        var (b, q, k, v) = Bhsd(opset: 23);
        var mask = b.Input("mask", DataType.Float, "B", 1, "S", "T");
        b.Rename(b.Node("Attention", [q, k, v, mask]), "out");
        b.Output("out");
        return b.Model;
    }

    private static ModelProto OnnxAttentionCausalBool()
    {
        var (b, q, k, v) = Bhsd(opset: 23, keyLength: "S");
        var mask = b.Input("mask", DataType.Bool, "B", 1, "S", "S");
        b.Rename(b.Node("Attention", [q, k, v, mask], Int("is_causal", 1), Float("scale", 0.25f)), "out");
        b.Output("out");
        return b.Model;
    }

    /// <summary>ONNX Runtime's Attention wants masks with the full query dim: (B, 1, S, T), the second batch padded.</summary>
    private static Func<Random, long, long, Dictionary<string, TestTensor>> QueryByKeyMaskInputs(DataType type, bool keySameAsQuery) => (r, s, t) =>
    {
        t = keySameAsQuery ? s : t;
        var inputs = Qkv(r, s, t);
        var padding = Padding(t);
        var mask = new float[Batch * s * t];
        for (var i = 0; i < mask.Length; i++)
        {
            var keep = padding[i / (s * t) * t + i % t] == 1;
            mask[i] = type == DataType.Bool ? (keep ? 1 : 0) : (keep ? 0 : FloatMin);
        }

        inputs["mask"] = new TestTensor(type, [Batch, 1, s, t], mask);
        return inputs;
    };

    private static ModelProto OnnxAttentionWithPast()
    {
        var (b, q, k, v) = Bhsd(opset: 23, keyLength: "S");
        var pastKey = b.Input("past_key", DataType.Float, "B", Heads, "P", HeadDim);
        var pastValue = b.Input("past_value", DataType.Float, "B", Heads, "P", HeadDim);
        var outputs = b.NodeOutputs("Attention", [q, k, v, "", pastKey, pastValue], 3, Int("is_causal", 1));
        b.Rename(outputs[0], "out");
        b.Rename(outputs[1], "present_key");
        b.Rename(outputs[2], "present_value");
        b.Output("out");
        b.Output("present_key");
        b.Output("present_value");
        return b.Model;
    }

    private static Dictionary<string, TestTensor> PastInputs(Random r, long s, long t)
    {
        var inputs = Qkv(r, s, s);
        inputs["past_key"] = TestTensor.Random(r, [Batch, Heads, t, HeadDim]);
        inputs["past_value"] = TestTensor.Random(r, [Batch, Heads, t, HeadDim]);
        return inputs;
    }

    private static ModelProto OnnxAttentionQkOutput()
    {
        var (b, q, k, v) = Bhsd(opset: 23);
        var outputs = b.NodeOutputs("Attention", [q, k, v], 4);
        b.Rename(outputs[0], "out");
        b.Rename(outputs[3], "qk");
        b.Output("out");
        b.Output("qk");
        return b.Model;
    }

    private static ModelProto OnnxAttentionSymbolicHeadDim()
    {
        var b = new ModelBuilder(23);
        var q = b.Input("q", DataType.Float, "B", Heads, "S", "D");
        var k = b.Input("k", DataType.Float, "B", Heads, "T", "D");
        var v = b.Input("v", DataType.Float, "B", Heads, "T", "D");
        b.Rename(b.Node("Attention", [q, k, v]), "out");
        b.Output("out");
        return b.Model;
    }

    private static ModelProto OnnxAttentionSoftcap()
    {
        var (b, q, k, v) = Bhsd(opset: 23);
        var mask = b.Input("mask", DataType.Float, "B", 1, "S", "T");
        b.Rename(b.Node("Attention", [q, k, v, mask], Float("softcap", 1.5f), Float("scale", 0.5f)), "out");
        b.Output("out");
        return b.Model;
    }

    private static ModelProto OnnxAttentionQkOutputUnused()
    {
        var (b, q, k, v) = Bhsd(opset: 23);
        var outputs = b.NodeOutputs("Attention", [q, k, v], 4, Int("qk_matmul_output_mode", 0));
        b.Rename(outputs[0], "out");
        b.Output("out");
        return b.Model;
    }

    private static ModelProto OnnxAttentionNonPad(bool threeD, bool causal = false)
    {
        var b = new ModelBuilder(24);
        object[] Shape(string length) => threeD ? ["B", length, Heads * HeadDim] : ["B", Heads, length, HeadDim];
        var q = b.Input("q", DataType.Float, Shape("S"));
        var k = b.Input("k", DataType.Float, Shape("T"));
        var v = b.Input("v", DataType.Float, Shape("T"));
        var lengths = b.Input("nonpad_kv_seqlen", DataType.Int64, "B");
        AttributeProto[] heads = threeD ? [Int("q_num_heads", Heads), Int("kv_num_heads", Heads)] : [];
        AttributeProto[] isCausal = causal ? [Int("is_causal", 1)] : [];
        b.Rename(b.Node("Attention", [q, k, v, "", "", "", lengths], [.. heads, .. isCausal]), "out");
        b.Output("out");
        return b.Model;
    }

    /// <summary>Four batches with T, T − 1, T / 2 and 0 non-padded keys: lengths equal to, below and far below S, and none.</summary>
    private static Func<Random, long, long, Dictionary<string, TestTensor>> NonPadCausalInputs(bool threeD) => (r, s, t) =>
    {
        const long batch = 4;
        long[] Shape(long length) => threeD ? [batch, length, Heads * HeadDim] : [batch, Heads, length, HeadDim];
        return new Dictionary<string, TestTensor>
        {
            ["q"] = TestTensor.Random(r, Shape(s)),
            ["k"] = TestTensor.Random(r, Shape(t)),
            ["v"] = TestTensor.Random(r, Shape(t)),
            ["nonpad_kv_seqlen"] = new(DataType.Int64, [batch], [t, Math.Max(t - 1, 0), t / 2, 0]),
        };
    };

    /// <summary>Batch 0 sees every key, batch 1 the first half (none when T = 1).</summary>
    private static Func<Random, long, long, Dictionary<string, TestTensor>> NonPadInputs(bool threeD) => (r, s, t) =>
    {
        var inputs = threeD
            ? new Dictionary<string, TestTensor>
            {
                ["q"] = TestTensor.Random(r, [Batch, s, Heads * HeadDim]),
                ["k"] = TestTensor.Random(r, [Batch, t, Heads * HeadDim]),
                ["v"] = TestTensor.Random(r, [Batch, t, Heads * HeadDim]),
            }
            : Qkv(r, s, t);
        inputs["nonpad_kv_seqlen"] = new TestTensor(DataType.Int64, [Batch], [t, t / 2]);
        return inputs;
    };

    private static ModelProto OnnxAttentionInFunction()
    {
        var b = new ModelBuilder(24);
        var q = b.Input("q", DataType.Float, "B", Heads, "S", HeadDim);
        var k = b.Input("k", DataType.Float, "B", Heads, "T", HeadDim);
        var v = b.Input("v", DataType.Float, "B", Heads, "T", HeadDim);
        var lengths = b.Input("nonpad_kv_seqlen", DataType.Int64, "B");
        b.Model.OpsetImport.Add(new OperatorSetIdProto { Domain = "local", Version = 1 });
        var function = new FunctionProto
        {
            Name = "PaddedAttention", Domain = "local", Input = { "fq", "fk", "fv", "lengths" }, Output = { "attended" },
            OpsetImport = { new OperatorSetIdProto { Domain = "", Version = 24 } },
            Node = { new NodeProto { OpType = "Attention", Name = "fn_attention", Input = { "fq", "fk", "fv", "", "", "", "lengths" }, Output = { "attended" } } },
        };
        function.ValueInfo.Add(ValueInfo("fq", DataType.Float, ["B", Heads, "S", HeadDim]));
        function.ValueInfo.Add(ValueInfo("fk", DataType.Float, ["B", Heads, "T", HeadDim]));
        function.ValueInfo.Add(ValueInfo("fv", DataType.Float, ["B", Heads, "T", HeadDim]));
        function.ValueInfo.Add(ValueInfo("lengths", DataType.Int64, ["B"]));
        b.Model.Functions.Add(function);
        b.Graph.Node.Add(new NodeProto { OpType = "PaddedAttention", Domain = "local", Name = "call", Input = { q, k, v, lengths }, Output = { "out" } });
        b.Output("out");
        return b.Model;
    }

    private static ModelProto OnnxAttention3D()
    {
        var b = new ModelBuilder(23);
        var q = b.Input("q", DataType.Float, "B", "S", Heads * HeadDim);
        var k = b.Input("k", DataType.Float, "B", "T", HeadDim);
        var v = b.Input("v", DataType.Float, "B", "T", HeadDim);
        b.Rename(b.Node("Attention", [q, k, v], Int("q_num_heads", Heads), Int("kv_num_heads", 1)), "out");
        b.Output("out");
        return b.Model;
    }

    private static Dictionary<string, TestTensor> Hidden3DInputs(Random r, long s, long t) => new()
    {
        ["q"] = TestTensor.Random(r, [Batch, s, Heads * HeadDim]),
        ["k"] = TestTensor.Random(r, [Batch, t, HeadDim]),
        ["v"] = TestTensor.Random(r, [Batch, t, HeadDim]),
    };

    private static ModelProto InsideIfBranch()
    {
        var (b, q, k, v) = Bhsd();
        var condition = b.Input("use_attention", DataType.Bool);
        var branch = new ModelBuilder();
        var scores = branch.Node("MatMul", [q, branch.Node("Transpose", [k], Ints("perm", 0, 1, 3, 2))]);
        var divided = branch.Node("Div", [scores, branch.Scalar(MathF.Sqrt(HeadDim))]);
        branch.Rename(branch.Node("MatMul", [branch.Node("Softmax", [divided], Int("axis", -1)), v]), "attended");
        branch.Output("attended");
        var other = new ModelBuilder();
        other.Rename(other.Node("Identity", [v]), "passed");
        other.Output("passed");
        b.Rename(b.Node("If", [condition], GraphAttribute("then_branch", branch.Graph), GraphAttribute("else_branch", other.Graph)), "out");
        b.Output("out");
        return b.Model;
    }

    private static ModelProto InsideLoopBody()
    {
        var (b, q, k, v) = Bhsd(keyLength: "S");
        var trips = b.Input("trips", DataType.Int64);
        var body = new ModelBuilder();
        body.Input("iteration", DataType.Int64);
        body.Input("condition_in", DataType.Bool);
        body.Input("state_in", DataType.Float, "B", Heads, "S", HeadDim);
        var scores = body.Node("Mul", [body.Node("MatMul", [q, body.Node("Transpose", [k], Ints("perm", 0, 1, 3, 2))]), body.Scalar(InvSqrtD)]);
        var attended = body.Node("MatMul", [body.Node("Softmax", [scores], Int("axis", -1)), v]);
        body.Rename(body.Node("Add", ["state_in", attended]), "state_out");
        body.Rename(body.Node("Identity", ["condition_in"]), "condition_out");
        body.Output("condition_out", DataType.Bool);
        body.Output("state_out");
        b.Rename(b.Node("Loop", [trips, "", q], GraphAttribute("body", body.Graph)), "out");
        b.Output("out");
        return b.Model;
    }

    /// <summary>
    /// Scan over a stack of queries (axis 0): the body computes attention of each slice against K and V
    /// read from the outer scope, accumulates it in a carried state and emits it as the scan output.
    /// </summary>
    private static ModelProto InsideScanBody()
    {
        var b = new ModelBuilder();
        var queries = b.Input("queries", DataType.Float, ScanSteps, "B", Heads, "S", HeadDim);
        var k = b.Input("k", DataType.Float, "B", Heads, "T", HeadDim);
        var v = b.Input("v", DataType.Float, "B", Heads, "T", HeadDim);
        var state = b.Input("state", DataType.Float, "B", Heads, "S", HeadDim);
        var body = new ModelBuilder();
        body.Input("state_in", DataType.Float, "B", Heads, "S", HeadDim);
        var q = body.Input("query", DataType.Float, "B", Heads, "S", HeadDim);
        var scores = body.Node("MatMul", [q, body.Node("Transpose", [k], Ints("perm", 0, 1, 3, 2))]);
        var divided = body.Node("Div", [scores, body.Scalar(MathF.Sqrt(HeadDim))]);
        var attended = body.Rename(body.Node("MatMul", [body.Node("Softmax", [divided], Int("axis", -1)), v]), "attended");
        body.Rename(body.Node("Add", ["state_in", attended]), "state_out");
        body.Output("state_out");
        body.Output("attended");
        var outputs = b.NodeOutputs("Scan", [state, queries], 2, GraphAttribute("body", body.Graph), Int("num_scan_inputs", 1));
        b.Rename(outputs[0], "final_state");
        b.Rename(outputs[1], "out");
        b.Output("final_state");
        b.Output("out");
        return b.Model;
    }

    private const long ScanSteps = 3;

    private static Dictionary<string, TestTensor> ScanInputs(Random r, long s, long t)
    {
        var inputs = Qkv(r, s, t);
        inputs.Remove("q");
        inputs["queries"] = TestTensor.Random(r, [ScanSteps, Batch, Heads, s, HeadDim]);
        inputs["state"] = TestTensor.Random(r, [Batch, Heads, s, HeadDim]);
        return inputs;
    }

    private static Dictionary<string, TestTensor> LoopInputs(Random r, long s, long t)
    {
        var inputs = Qkv(r, s, s);
        inputs["trips"] = new TestTensor(DataType.Int64, [], [2]);
        return inputs;
    }

    private static Dictionary<string, TestTensor> IfInputs(Random r, long s, long t)
    {
        var inputs = Qkv(r, s, s);
        inputs["use_attention"] = new TestTensor(DataType.Bool, [], [1]);
        return inputs;
    }

    private static ModelProto Float16CastAroundSoftmax()
    {
        var (b, q, k, v) = Bhsd(type: DataType.Float16);
        var scores = b.Node("Div", [Scores(b, q, k), b.Scalar(MathF.Sqrt(HeadDim), DataType.Float16)]);
        var probabilities = b.Node("Softmax", [b.Node("Cast", [scores], Int("to", (long)DataType.Float))], Int("axis", -1));
        return Finish(b, b.Node("Cast", [probabilities], Int("to", (long)DataType.Float16)), v, DataType.Float16);
    }

    /// <summary>
    /// diffusers' <c>attention_scores.float()</c> after a float16 conversion: the Cast(to=FLOAT) became Cast(to=FLOAT16) of
    /// float16 scores, and the converter wrapped Softmax in Cast(FLOAT) → Softmax → Cast(FLOAT16).
    /// </summary>
    private static ModelProto Float16SameTypeCastBeforeSoftmax()
    {
        var (b, q, k, v) = Bhsd(type: DataType.Float16);
        var scores = b.Node("Mul", [Scores(b, q, k), b.Scalar(InvSqrtD, DataType.Float16)]);
        var sameType = b.Node("Cast", [scores], Int("to", (long)DataType.Float16));
        var probabilities = b.Node("Softmax", [b.Node("Cast", [sameType], Int("to", (long)DataType.Float))], Int("axis", -1));
        return Finish(b, b.Node("Cast", [probabilities], Int("to", (long)DataType.Float16)), v, DataType.Float16);
    }

    private static Dictionary<string, TestTensor> Float16Inputs(Random r, long s, long t) => Qkv(r, s, t, type: DataType.Float16);

    /// <summary>
    /// Div(Exp(Sub(x, ReduceMax(x))), ReduceSum(Exp(...))) over <paramref name="axis"/>; at opset 18 both
    /// reductions take axes as inputs, before it ReduceMax takes an attribute (ReduceSum an input from 13).
    /// A mask input of type bool becomes a Where with −inf; a float (B, T) one a (1 − m)·−10000 bias.
    /// </summary>
    private static ModelProto DecomposedSoftmax(long opset, long axis, bool subtractMax, long keepDims = 1)
    {
        var (b, q, k, v) = Bhsd(opset);
        var scores = Div(b, Scores(b, q, k));
        if (opset >= 18)
        {
            var mask = b.Input("mask", DataType.Bool, "B", 1, 1, "T");
            scores = b.Node("Where", [mask, scores, b.Scalar(float.NegativeInfinity)]);
        }
        else
        {
            var mask = b.Input("mask", DataType.Float, "B", "T");
            scores = b.Node("Add", [scores, b.Node("Mul", [b.Node("Sub", [b.Scalar(1), b.Node("Unsqueeze", [mask, b.Ints(1, 2)])]), b.Scalar(-10000)])]);
        }

        var keep = Int("keepdims", keepDims);
        var shifted = scores;
        if (subtractMax)
        {
            var max = opset >= 18 ? b.Node("ReduceMax", [scores, b.Ints(axis)], keep) : b.Node("ReduceMax", [scores], Ints("axes", axis), keep);
            shifted = b.Node("Sub", [scores, max]);
        }

        var exp = b.Node("Exp", [shifted]);
        return Finish(b, b.Node("Div", [exp, b.Node("ReduceSum", [exp, b.Ints(axis)], keep)]), v);
    }

    /// <summary>
    /// The main graph calls local::SelfAttention(q, k, v), whose body is the attention; with
    /// <paramref name="declareTypes"/> its value_info types the inputs, with
    /// <paramref name="attributeReference"/> the scale is the caller's attribute.
    /// </summary>
    private static ModelProto AttentionInFunction(bool declareTypes, bool attributeReference)
    {
        var (b, q, k, v) = Bhsd();
        b.Model.IrVersion = 10;
        b.Model.OpsetImport.Add(new OperatorSetIdProto { Domain = "local", Version = 1 });
        var function = new FunctionProto
        {
            Name = "SelfAttention", Domain = "local", Input = { "q", "k", "v" }, Output = { "attended" },
            OpsetImport = { new OperatorSetIdProto { Domain = "", Version = 17 } },
        };
        if (declareTypes)
        {
            function.ValueInfo.AddRange(new[] { "q", "k", "v" }.Select(n => ValueInfo(n, DataType.Float, ["B", Heads, n == "q" ? "S" : "T", HeadDim])));
        }

        void Op(string type, string[] inputs, string output, params AttributeProto[] attributes) =>
            function.Node.Add(new NodeProto { OpType = type, Name = "fn_" + output, Input = { inputs }, Output = { output }, Attribute = { attributes } });
        Op("Transpose", ["k"], "kt", Ints("perm", 0, 1, 3, 2));
        Op("MatMul", ["q", "kt"], "scores");
        if (attributeReference)
        {
            function.Attribute.Add("scale");
            Op("Constant", [], "scale", new AttributeProto { Name = "value_float", RefAttrName = "scale", Type = AttributeProto.Types.AttributeType.Float });
        }
        else
        {
            Op("Constant", [], "scale", Float("value_float", InvSqrtD));
        }

        Op("Mul", ["scores", "scale"], "scaled");
        Op("Softmax", ["scaled"], "probabilities", Int("axis", -1));
        Op("MatMul", ["probabilities", "v"], "attended");
        b.Model.Functions.Add(function);
        var call = new NodeProto { OpType = "SelfAttention", Domain = "local", Name = "call", Input = { q, k, v }, Output = { "out" } };
        if (attributeReference)
        {
            call.Attribute.Add(Float("scale", InvSqrtD));
        }

        b.Graph.Node.Add(call);
        b.Output("out");
        return b.Model;
    }

    private static ModelProto KerasEinsum()
    {
        var b = new ModelBuilder(13);
        var q = b.Input("q", DataType.Float, "B", "S", Heads, HeadDim);
        var k = b.Input("k", DataType.Float, "B", "T", Heads, HeadDim);
        var v = b.Input("v", DataType.Float, "B", "T", Heads, HeadDim);
        var mask = b.Input("mask", DataType.Float, "B", "S", "T");
        var scaled = b.Node("Mul", [q, b.Scalar(InvSqrtD)]);
        var scores = b.Node("Einsum", [k, scaled], Str("equation", "aecd,abcd->acbe"));
        var adder = b.Node("Mul", [b.Node("Sub", [b.Scalar(1), b.Node("Unsqueeze", [mask, b.Ints(1)])]), b.Scalar(-1e9f)]);
        var probabilities = Softmax(b, b.Node("Add", [scores, adder]));
        b.Rename(b.Node("Einsum", [probabilities, v], Str("equation", "acbe,aecd->abcd")), "out");
        b.Output("out");
        return b.Model;
    }

    private static Dictionary<string, TestTensor> KerasInputs(Random r, long s, long t)
    {
        var padding = Padding(t, fullyMaskedBatch: true);
        var mask = new float[Batch * s * t];
        for (var i = 0; i < mask.Length; i++)
        {
            mask[i] = padding[i / (s * t) * t + i % t];
        }

        return new()
        {
            ["q"] = TestTensor.Random(r, [Batch, s, Heads, HeadDim]),
            ["k"] = TestTensor.Random(r, [Batch, t, Heads, HeadDim]),
            ["v"] = TestTensor.Random(r, [Batch, t, Heads, HeadDim]),
            ["mask"] = new TestTensor(DataType.Float, [Batch, s, t], mask),
        };
    }

    private static ModelProto SequenceFirstEinsum()
    {
        var b = new ModelBuilder();
        var q = b.Input("q", DataType.Float, "S", "N", HeadDim);
        var k = b.Input("k", DataType.Float, "T", "N", HeadDim);
        var v = b.Input("v", DataType.Float, "T", "N", HeadDim);
        var mask = b.Input("mask", DataType.Float, "N", 1, "T");
        var scores = b.Node("Einsum", [q, k], Str("equation", "snd,tnd->nst"));
        var probabilities = Softmax(b, b.Node("Add", [Div(b, scores), mask]));
        b.Rename(b.Node("Einsum", [v, probabilities], Str("equation", "tnd,nst->snd")), "out");
        b.Output("out");
        return b.Model;
    }

    private static Dictionary<string, TestTensor> SequenceFirstEinsumInputs(Random r, long s, long t)
    {
        var inputs = Rank3Inputs(r, s, t);
        inputs["q"] = TestTensor.Random(r, [s, Batch * Heads, HeadDim]);
        inputs["k"] = TestTensor.Random(r, [t, Batch * Heads, HeadDim]);
        inputs["v"] = TestTensor.Random(r, [t, Batch * Heads, HeadDim]);
        return inputs;
    }

    private static ModelProto SequenceFirstEinsumReshapedMask()
    {
        var b = new ModelBuilder();
        var q = b.Input("q", DataType.Float, "S", "N", HeadDim);
        var k = b.Input("k", DataType.Float, "T", "N", HeadDim);
        var v = b.Input("v", DataType.Float, "T", "N", HeadDim);
        var mask = b.Input("mask", DataType.Float, "B", 1, "S", "T");
        var scores = Div(b, b.Node("Einsum", [q, k], Str("equation", "snd,tnd->nst")));
        var lengths = b.Node("Slice", [b.Node("Shape", [scores]), b.Ints(1), b.Ints(3)]);
        var view = b.Node("Reshape", [scores, b.Node("Concat", [b.Ints(-1, Heads), lengths], Int("axis", 0))]);
        var merged = b.Node("Reshape", [b.Node("Add", [view, mask]), b.Node("Concat", [b.Ints(-1), lengths], Int("axis", 0))]);
        b.Rename(b.Node("Einsum", [Softmax(b, merged), v], Str("equation", "nst,tnd->snd")), "out");
        b.Output("out");
        return b.Model;
    }

    private static Dictionary<string, TestTensor> SequenceFirstEinsumViewInputs(Random r, long s, long t)
    {
        var inputs = BartMaskInputs(r, s, t);
        inputs.Remove("q_proj");
        inputs["q"] = TestTensor.Random(r, [s, Batch * Heads, HeadDim]);
        inputs["k"] = TestTensor.Random(r, [t, Batch * Heads, HeadDim]);
        inputs["v"] = TestTensor.Random(r, [t, Batch * Heads, HeadDim]);
        return inputs;
    }

    private static ModelProto KerasEinsumShapeReader()
    {
        var b = new ModelBuilder(13);
        var q = b.Input("q", DataType.Float, "B", "S", Heads, HeadDim);
        var k = b.Input("k", DataType.Float, "B", "T", Heads, HeadDim);
        var v = b.Input("v", DataType.Float, "B", "T", Heads, HeadDim);
        var mask = b.Input("mask", DataType.Bool, "B", 1, 1, "T");
        var scores = b.Node("Einsum", [k, b.Node("Mul", [q, b.Scalar(InvSqrtD)])], Str("equation", "aecd,abcd->acbe"));
        var hide = b.Node("Expand", [b.Node("Not", [mask]), b.Node("Shape", [scores])]);
        var probabilities = Softmax(b, b.Node("Where", [hide, b.Scalar(FloatMin), scores]));
        b.Rename(b.Node("Einsum", [probabilities, v], Str("equation", "acbe,aecd->abcd")), "out");
        b.Output("out");
        return b.Model;
    }

    private static Dictionary<string, TestTensor> KerasBoolMaskInputs(Random r, long s, long t)
    {
        var inputs = KerasInputs(r, s, t);
        inputs["mask"] = new TestTensor(DataType.Bool, [Batch, 1, 1, t], Padding(t, fullyMaskedBatch: true));
        return inputs;
    }

    private static ModelProto TorchEinsum()
    {
        var (b, q, k, v) = Bhsd();
        var scores = b.Node("Einsum", [q, k], Str("equation", "bhqd,bhkd->bhqk"));
        var probabilities = Softmax(b, Div(b, scores));
        b.Rename(b.Node("Einsum", [probabilities, v], Str("equation", "bhqk,bhkd->bhqd")), "out");
        b.Output("out");
        return b.Model;
    }

    private static ModelProto EinsumScoresMatMulValue()
    {
        var b = new ModelBuilder();
        var q = b.Input("q", DataType.Float, "B", "S", Heads, HeadDim);
        var k = b.Input("k", DataType.Float, "B", "T", Heads, HeadDim);
        var v = b.Input("v", DataType.Float, "B", Heads, "T", HeadDim);
        var scores = b.Node("Einsum", [q, k], Str("equation", "bqhd, bkhd -> bhqk"));
        return Finish(b, Softmax(b, b.Node("Mul", [scores, b.Scalar(InvSqrtD)])), v);
    }

    private static Dictionary<string, TestTensor> EinsumScoresInputs(Random r, long s, long t) => new()
    {
        ["q"] = TestTensor.Random(r, [Batch, s, Heads, HeadDim]),
        ["k"] = TestTensor.Random(r, [Batch, t, Heads, HeadDim]),
        ["v"] = TestTensor.Random(r, [Batch, Heads, t, HeadDim]),
    };

    private static ModelProto EllipsisEinsum(string scoreEquation, string valueEquation)
    {
        var (b, q, k, v) = Bhsd();
        var scores = b.Node("Einsum", [q, k], Str("equation", scoreEquation));
        b.Rename(b.Node("Einsum", [Softmax(b, Div(b, scores)), v], Str("equation", valueEquation)), "out");
        b.Output("out");
        return b.Model;
    }

    private static ModelProto EllipsisEinsumBshd()
    {
        var b = new ModelBuilder();
        var q = b.Input("q", DataType.Float, "B", "S", Heads, HeadDim);
        var k = b.Input("k", DataType.Float, "B", "T", Heads, HeadDim);
        var v = b.Input("v", DataType.Float, "B", "T", Heads, HeadDim);
        var scores = b.Node("Einsum", [b.Node("Mul", [q, b.Scalar(InvSqrtD)]), k], Str("equation", "...qhd,...khd->...hqk"));
        b.Rename(b.Node("Einsum", [Softmax(b, scores), v], Str("equation", "...hqk,...khd->...qhd")), "out");
        b.Output("out");
        return b.Model;
    }

    private static Dictionary<string, TestTensor> BshdInputs(Random r, long s, long t) => new()
    {
        ["q"] = TestTensor.Random(r, [Batch, s, Heads, HeadDim]),
        ["k"] = TestTensor.Random(r, [Batch, t, Heads, HeadDim]),
        ["v"] = TestTensor.Random(r, [Batch, t, Heads, HeadDim]),
    };

    private static ModelProto EllipsisEinsumRank3()
    {
        var b = new ModelBuilder();
        var q = b.Input("q", DataType.Float, "N", "S", HeadDim);
        var k = b.Input("k", DataType.Float, "N", "T", HeadDim);
        var v = b.Input("v", DataType.Float, "N", "T", HeadDim);
        return Finish(b, Softmax(b, Div(b, b.Node("Einsum", [q, k], Str("equation", "...sd,...td->...st")))), v);
    }

    private static Dictionary<string, TestTensor> Rank3QkvInputs(Random r, long s, long t) => new()
    {
        ["q"] = TestTensor.Random(r, [Batch * Heads, s, HeadDim]),
        ["k"] = TestTensor.Random(r, [Batch * Heads, t, HeadDim]),
        ["v"] = TestTensor.Random(r, [Batch * Heads, t, HeadDim]),
    };

    // ---- refused variants ----------------------------------------------------------------------

    /// <summary>Ellipsis Einsum attention whose query and key (scores), or value, are declared without a shape.</summary>
    private static ModelProto EllipsisOfUnknownRank(bool scores)
    {
        var b = new ModelBuilder();
        foreach (var name in new[] { "q", "k", "v" })
        {
            var unknown = scores ? name != "v" : name == "v";
            b.Graph.Input.Add(ValueInfo(name, DataType.Float, unknown ? null : ["B", Heads, name == "q" ? "S" : "T", HeadDim]));
        }

        var probabilities = Softmax(b, Div(b, b.Node("Einsum", ["q", "k"], Str("equation", scores ? "...qd,...kd->...qk" : "bhqd,bhkd->bhqk"))));
        if (scores)
        {
            return Finish(b, probabilities, "v");
        }

        b.Rename(b.Node("Einsum", [probabilities, "v"], Str("equation", "...qk,...kd->...qd")), "out");
        b.Output("out");
        return b.Model;
    }


    private static ModelProto EinsumHeadsNotLeading()
    {
        var b = new ModelBuilder();
        var q = b.Input("q", DataType.Float, "B", Heads, "S", HeadDim);
        var k = b.Input("k", DataType.Float, "B", Heads, "T", HeadDim);
        var v = b.Input("v", DataType.Float, "B", 1, "T", HeadDim);
        var scores = b.Node("Einsum", [q, k], Str("equation", "bhqd,bhkd->bqhk"));
        return Finish(b, Softmax(b, Div(b, scores)), v);
    }

    private static ModelProto EinsumContractingQueryAxis()
    {
        var (b, q, k, v) = Bhsd(keyLength: "S");
        b.Rename(b.Node("Einsum", [Softmax(b, Div(b, Scores(b, q, k))), v], Str("equation", "bhqk,bhqd->bhkd")), "out");
        b.Output("out");
        return b.Model;
    }

    private static ModelProto EinsumValueBshdAfterMatMulScores()
    {
        var b = new ModelBuilder();
        var q = b.Input("q", DataType.Float, "B", Heads, "S", HeadDim);
        var k = b.Input("k", DataType.Float, "B", Heads, "T", HeadDim);
        var v = b.Input("v", DataType.Float, "B", "T", Heads, HeadDim);
        b.Rename(b.Node("Einsum", [Softmax(b, Div(b, Scores(b, q, k))), v], Str("equation", "bhqk,bkhd->bqhd")), "out");
        b.Output("out");
        return b.Model;
    }

    private static Dictionary<string, TestTensor> EinsumValueBshdInputs(Random r, long s, long t)
    {
        var inputs = Qkv(r, s, t);
        inputs["v"] = TestTensor.Random(r, [Batch, t, Heads, HeadDim]);
        return inputs;
    }

    private static ModelProto EinsumValueAfterMatMulScores()
    {
        var (b, q, k, v) = Bhsd();
        b.Rename(b.Node("Einsum", [Softmax(b, Div(b, Scores(b, q, k))), v], Str("equation", "bhqk,bhkd->bhqd")), "out");
        b.Output("out");
        return b.Model;
    }

    private static ModelProto ProbabilitiesAsOutput()
    {
        var (b, q, k, v) = Bhsd();
        var probabilities = b.Rename(Softmax(b, Div(b, Scores(b, q, k))), "attention_probs");
        b.Output("attention_probs");
        return Finish(b, probabilities, v);
    }

    private static ModelProto ScoresUsedOutside()
    {
        var (b, q, k, v) = Bhsd();
        var scores = Div(b, Scores(b, q, k));
        b.Rename(b.Node("ReduceMax", [scores], Int("keepdims", 0)), "max_score");
        b.Output("max_score");
        return Finish(b, Softmax(b, scores), v);
    }

    private static ModelProto SoftmaxAxis1()
    {
        var (b, q, k, v) = Bhsd();
        return Finish(b, Softmax(b, Div(b, Scores(b, q, k)), axis: 1), v);
    }

    private static ModelProto Opset11DefaultAxis()
    {
        var (b, q, k, v) = Bhsd(opset: 11);
        return Finish(b, b.Node("Softmax", [Div(b, Scores(b, q, k))]), v);
    }

    private static ModelProto ScaleFromInput()
    {
        var (b, q, k, v) = Bhsd();
        var scale = b.Input("scale", DataType.Float);
        return Finish(b, Softmax(b, b.Node("Div", [Scores(b, q, k), scale])), v);
    }

    private static Dictionary<string, TestTensor> ScaleInputs(Random r, long s, long t)
    {
        var inputs = Qkv(r, s, t);
        inputs["scale"] = new TestTensor(DataType.Float, [], [3]);
        return inputs;
    }

    /// <summary>Which part of HF DeBERTa's XSoftmax a variant changes (all but <see cref="Exact"/> must be refused).</summary>
    internal enum XSoftmaxVariant
    {
        Exact,
        BiasFromInput,
        OtherZeroingCondition,
        ZeroingVisible,
        FillTenThousand,
    }

    /// <summary>
    /// HF DeBERTa's XSoftmax as its own ONNX symbolic writes it: scores plus a bias, Where(hide, finfo.min, ·), Softmax,
    /// Where(hide, 0, p), each Where reading its own Cast to bool of one hide condition. The exact bias is a product of Q
    /// and K (DeBERTa's c2p/p2c terms are such products, gathered), so it is bounded as the scores are.
    /// </summary>
    private static ModelProto XSoftmax(XSoftmaxVariant variant)
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", DataType.Bool, "B", 1, 1, "T");
        var hidden = b.Node("Not", [mask]);
        var bias = variant == XSoftmaxVariant.BiasFromInput
            ? b.Input("bias", DataType.Float, "B", Heads, "S", "T")
            : b.Node("Mul", [Scores(b, q, k), b.Scalar(0.5f)]);
        var fill = variant == XSoftmaxVariant.FillTenThousand ? -10000f : FloatMin;
        var filled = b.Node("Where", [b.Node("Cast", [hidden], Int("to", (long)DataType.Bool)), b.Scalar(fill), b.Node("Add", [Div(b, Scores(b, q, k)), bias])]);
        var probabilities = Softmax(b, filled);
        var zeroing = variant == XSoftmaxVariant.OtherZeroingCondition
            ? b.Node("Not", [b.Input("other", DataType.Bool, "B", 1, 1, "T")])
            : b.Node("Cast", [hidden], Int("to", (long)DataType.Bool));
        var zeroed = variant == XSoftmaxVariant.ZeroingVisible
            ? b.Node("Where", [zeroing, probabilities, b.Scalar(0)])
            : b.Node("Where", [zeroing, b.Scalar(0), probabilities]);
        return Finish(b, zeroed, v);
    }

    private static Dictionary<string, TestTensor> XSoftmaxInputs(Random r, long s, long t)
    {
        var inputs = BoolMaskInputs(fullyMaskedBatch: true)(r, s, t);
        inputs["bias"] = TestTensor.Random(r, [Batch, Heads, s, t]);
        inputs["other"] = new TestTensor(DataType.Bool, [Batch, 1, 1, t], Padding(t));
        return inputs;
    }

    private static ModelProto WhereFillTenThousand()
    {
        var (b, q, k, v) = Bhsd();
        var mask = b.Input("mask", DataType.Bool, "B", 1, 1, "T");
        return Finish(b, Softmax(b, b.Node("Where", [mask, Div(b, Scores(b, q, k)), b.Scalar(-10000)])), v);
    }

    private static ModelProto DropoutTraining()
    {
        var (b, q, k, v) = Bhsd();
        var training = b.Initializer(new ConstantTensor(DataType.Bool, [], [1]));
        return Finish(b, b.Node("Dropout", [Softmax(b, Div(b, Scores(b, q, k))), b.Scalar(0.1f), training]), v);
    }

    private static ModelProto DropoutRatioZeroTraining()
    {
        var (b, q, k, v) = Bhsd();
        var training = b.Initializer(new ConstantTensor(DataType.Bool, [], [1]));
        return Finish(b, b.Node("Dropout", [Softmax(b, Div(b, Scores(b, q, k))), b.Scalar(0), training]), v);
    }

    /// <summary>Windows per image in <see cref="SwinWindows"/>: the test batch of 2 is one image of two windows.</summary>
    private const long SwinWindowCount = 2;

    /// <summary>
    /// torchvision's shifted_window_attention on (B·nW, H, S, D) windows: q·c before the MatMul, + a constant per-head bias,
    /// view(B, nW, H, S, T) with B = rows // nW, + the window mask (1, nW, 1, S, T) = Where(d == 0, 0, Where(Not(d == 0), fill, d))
    /// of region differences d, view(−1, H, S, T), Softmax, · V. <paramref name="negatedInner"/> false: the inner condition is
    /// d == 0 again, so d itself can reach the mask.
    /// </summary>
    private static ModelProto SwinWindows(float fill, bool negatedInner = true)
    {
        var (b, q, k, v) = Bhsd();
        var regions = b.Input("regions", DataType.Float, SwinWindowCount, "S", "T");
        var perHead = b.Floats([1, Heads, 1, 1], [0.5f, -0.25f]);
        var scores = b.Node("Add", [b.Node("MatMul", [b.Node("Mul", [q, b.Scalar(InvSqrtD)]), b.Node("Transpose", [k], Ints("perm", 0, 1, 3, 2))]), perHead]);
        var same = b.Node("Cast", [b.Node("Equal", [regions, b.Scalar(0)])], Int("to", (long)DataType.Bool));
        var innerCondition = negatedInner ? b.Node("Not", [b.Node("Equal", [regions, b.Scalar(0)])]) : b.Node("Equal", [regions, b.Scalar(0)]);
        var filled = b.Node("Where", [b.Node("Cast", [innerCondition], Int("to", (long)DataType.Bool)), b.Scalar(fill), regions]);
        var mask = b.Node("Unsqueeze", [b.Node("Unsqueeze", [b.Node("Where", [same, b.Scalar(0), filled]), b.Ints(1)]), b.Ints(0)]);
        var shape = b.Node("Shape", [scores]);
        var images = b.Node("Div", [b.Node("Slice", [shape, b.Ints(0), b.Ints(1)]), b.Ints(SwinWindowCount)]);
        var view = b.Node("Reshape", [scores, b.Node("Concat", [images, b.Ints(SwinWindowCount), b.Node("Slice", [shape, b.Ints(1), b.Ints(4)])], Int("axis", 0))]);
        var merged = b.Node("Reshape", [b.Node("Add", [view, mask]), b.Node("Concat", [b.Ints(-1), b.Node("Slice", [shape, b.Ints(1), b.Ints(4)])], Int("axis", 0))]);
        return Finish(b, Softmax(b, merged), v);
    }

    /// <summary>Q, K, V and region ids per window (small integers, so that both 0 and the fill occur in the mask).</summary>
    private static Dictionary<string, TestTensor> SwinInputs(Random r, long s, long t)
    {
        var inputs = Qkv(r, s, t);
        var count = SwinWindowCount * s * t;
        inputs["regions"] = new TestTensor(DataType.Float, [SwinWindowCount, s, t], Enumerable.Range(0, (int)count).Select(_ => (float)r.Next(-1, 2)).ToArray());
        return inputs;
    }

    private static ModelProto KeyValueLengthMismatch()
    {
        var b = new ModelBuilder();
        var q = b.Input("q", DataType.Float, 2, Heads, 4, HeadDim);
        var k = b.Input("k", DataType.Float, 2, Heads, 6, HeadDim);
        var v = b.Input("v", DataType.Float, 2, Heads, 5, HeadDim);
        return Finish(b, Softmax(b, Div(b, Scores(b, q, k))), v);
    }

    private static ModelProto Bfloat16WithFloatFill()
    {
        var (b, q, k, v) = Bhsd(type: DataType.Bfloat16);
        var mask = b.Input("mask", DataType.Bool, "B", 1, 1, "T");
        var scores = b.Node("Cast", [Scores(b, q, k)], Int("to", (long)DataType.Float));
        var masked = b.Node("Where", [mask, scores, b.Scalar(FloatMin)]);
        var probabilities = b.Node("Cast", [Softmax(b, masked)], Int("to", (long)DataType.Bfloat16));
        return Finish(b, probabilities, v, DataType.Bfloat16);
    }

    private static ModelProto TwoAdditiveMasks()
    {
        var (b, q, k, v) = Bhsd();
        var m1 = b.Floats([1], [500f]);
        var m2 = b.Floats([1], [-250f]);
        return Finish(b, Softmax(b, b.Node("Add", [b.Node("Add", [Div(b, Scores(b, q, k)), m1]), m2])), v);
    }
}

/// <summary>What turns <see cref="AttentionModels.OlderBuilderCausalPadding"/> into a mask that is not causal plus padding.</summary>
public enum OlderBuilderMiss
{
    /// <summary>The builder as HF writes it.</summary>
    None,

    /// <summary>arange(S) &lt; arange(S) + 2: every query also sees the next key.</summary>
    DiagonalOffsetTwo,

    /// <summary>Greater instead of Less: the visible keys lie above the diagonal.</summary>
    KeysAboveQueries,

    /// <summary>Mistral's sliding window (3) hides old keys in the same mask.</summary>
    SlidingWindow,

    /// <summary>The zero columns are as wide as an unrelated input, not the cache.</summary>
    UnrelatedCacheWidth,

    /// <summary>
    /// The zero columns are as wide as an unrelated input and the mask is expanded to its own width, not the key length:
    /// only the zero columns' width tells it from the builder.
    /// </summary>
    UnrelatedCacheWidthOwnTarget,
}
