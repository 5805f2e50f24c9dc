using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Patterns;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.GraphRewriter.Rules;

/// <summary>
/// Recognises causal masks from their structure so the op can use its causal attribute instead of
/// reading a materialised mask. A mask is only recognised when its shape is proven to be
/// (query length, key length); anything else stays an ordinary bias or keep input, which is exact.
/// </summary>
/// <param name="analysis">Types, shapes and constants of the graph.</param>
/// <param name="scoresBounded">Whether the scores may be taken to satisfy |s| ≤ <see cref="ScoreBound"/>
/// (<see cref="RewriteOptions.CausalForPaddedRows"/>), so that a fill at or below <see cref="BoundedScoresFill"/> hides a
/// key too; otherwise only −inf and absorbing fills do.</param>
internal sealed class CausalMasks(GraphAnalysis analysis, bool scoresBounded = false)
{
    private bool _keyCoversQuery;
    private Dim _keyOffset;

    /// <summary>Fill values at or below this are absorbing in fp32: s + F == F for |s| &lt; 2^64.</summary>
    internal const double AbsorbingFill = -3.094850098213451e26; // −2^88

    /// <summary>
    /// float16's lowest finite value (finfo(float16).min, what float16 exports fill with). With every score within
    /// ±<see cref="ScoreBound"/>, a key whose masked score is at or below this fill weighs exactly 0 in any row that has
    /// a key the mask leaves alone (see <see cref="RewriteOptions.CausalForPaddedRows"/> for the derivation).
    /// </summary>
    internal const double BoundedScoresFill = -65504;

    /// <summary>The bound on |score| that makes <see cref="BoundedScoresFill"/> hide a key: 2^14.</summary>
    internal const double ScoreBound = 16384;

    /// <summary>The causal structure of <paramref name="term"/> over (Sq, Skv), or null.</summary>
    /// <param name="term">The mask term.</param>
    /// <param name="queryLength">Sq.</param>
    /// <param name="keyLength">Skv.</param>
    /// <param name="keyCoversQuery">Skv ≥ Sq is proven by the caller (the keys are a concatenation ending with
    /// Sq new keys), for when the dimensions alone cannot prove that a buffer slice starts at a non-negative row.</param>
    /// <param name="keyOffset">Skv − Sq as the caller can state it (the lengths of the cached keys before the new ones);
    /// by default the difference of the two dimensions.</param>
    public CausalStructure? Recognize(MaskTerm term, Dim queryLength, Dim keyLength, bool keyCoversQuery = false, Dim? keyOffset = null)
    {
        _keyCoversQuery = keyCoversQuery;
        _keyOffset = keyOffset ?? Dim.Subtract(keyLength, queryLength);
        if (term.Kind == MaskKind.AdditiveBias)
        {
            return AdditiveCausal(term.Source, queryLength, keyLength);
        }

        if (term.Kind is MaskKind.KeepNegativeInfinity or MaskKind.FiniteFill && IsHidingFill(term.Fill))
        {
            var alignment = term.KeepWhenTrue ? KeepCausal(term.Source, queryLength, keyLength) : HiddenCausal(term.Source, queryLength, keyLength);
            return alignment == CausalAlignment.None ? null : new CausalStructure(alignment, term.Fill);
        }

        return null;
    }

    /// <summary>
    /// A causal mask with the padding folded in, split into the causal structure and the padding part: the padding is
    /// <c>Padding</c>, hidden where it is zero (<c>HiddenWhereZero</c>, Llama's m) or where it is true (a bool condition,
    /// the older builder's). Null when the mask is provably neither form.
    /// </summary>
    public (CausalStructure Causal, Value Padding, bool HiddenWhereZero)? RecognizeWithPadding(MaskTerm term, Dim queryLength, Dim keyLength, Dim? keyOffset = null)
    {
        if (ScatteredWithPadding(term, queryLength, keyLength, keyOffset) is { } scattered)
        {
            return (scattered.Causal, scattered.PaddingKeep, true);
        }

        return MergedWithPadding(term, queryLength, keyLength, keyOffset) is { } merged ? (merged.Causal, merged.Hidden, false) : null;
    }

    /// <summary>
    /// HF's older <c>_prepare_4d_causal_attention_mask</c> (<c>AttentionMaskConverter.to_4d</c>; BLOOM, Falcon, Mistral
    /// ~4.36): <c>causal.masked_fill(padding.bool(), F)</c>, exported as Where(c, F, X) with X the causal mask of
    /// <see cref="MadeCausalWithCache"/>. Where X hides a key the result is F whatever c holds; where X shows one (0
    /// there) it is F exactly where c is true. So the mask is the causal structure plus "F where c". Added to the scores
    /// (Falcon) that is it; BLOOM hides where the mask is nonzero (Where(Cast(bool, mask), F', scores)), and as F ≠ 0 and
    /// X is 0 exactly on the keys it shows, that is "hidden where c or X hides", with the fill F'. Returns the causal
    /// structure (with the fill the scores get) and c; null when the graph is not provably that. A mask that hides
    /// anything else (Mistral's sliding window, a Where between the causal mask and the padding) is not recognised.
    /// </summary>
    private (CausalStructure Causal, Value Hidden)? MergedWithPadding(MaskTerm term, Dim queryLength, Dim keyLength, Dim? keyOffset)
    {
        _keyCoversQuery = false;
        _keyOffset = keyOffset ?? Dim.Subtract(keyLength, queryLength);
        var mask = term.Source;
        double? scoresFill = null;
        if (term.Kind is MaskKind.FiniteFill or MaskKind.KeepNegativeInfinity && !term.KeepWhenTrue && !term.HiddenWhereZero && IsHidingFill(term.Fill))
        {
            // Hidden where Cast(bool, mask) is true: the bool casts (and float casts, which keep a value zero or not) go.
            mask = WithoutSameTypeCasts(mask);
            if (Ops.Producer(mask, "Cast") is not { } toBool || !IsBool(mask))
            {
                return null;
            }

            mask = toBool.Input(0)!;
            while (Ops.Producer(mask, "Cast") is { } cast && ElementTypes.IsFloat(analysis.ElementTypeOf(cast.Input(0)!)))
            {
                mask = cast.Input(0)!;
            }

            scoresFill = term.Fill;
        }
        else if (term.Kind != MaskKind.AdditiveBias || term.Subtracted)
        {
            return null;
        }

        // Casts that change the type would round F (finfo.min of float32 is −inf in float16), so only same-type ones go.
        mask = WithoutSameTypeCasts(mask);
        if (Ops.Producer(mask, "Where") is not { } where || !IsBool(where.Input(0)!) || analysis.ScalarOf(where.Input(1)!) is not { } fill ||
            !IsHidingFill(fill) || MadeCausalWithCache(where.Input(2)!, queryLength, keyLength) is not { } causal || !causal.Fill.Equals(fill))
        {
            return null;
        }

        return (scoresFill is { } hide ? causal with { Fill = hide } : causal, where.Input(0)!);
    }

    private Value WithoutSameTypeCasts(Value value)
    {
        while (Ops.Producer(value, "Cast", "Identity") is { } cast && analysis.ElementTypeOf(cast.Input(0)!) is var from &&
               from != DataType.Undefined && from == analysis.ElementTypeOf(value))
        {
            value = cast.Input(0)!;
        }

        return value;
    }

    private bool IsBool(Value value) => analysis.ElementTypeOf(value) == DataType.Bool;

    /// <summary>
    /// The older builder's causal mask: Concat(axis −1) of zeros (Sq, P) for the cached keys and the (Sq, Sq) mask of
    /// <see cref="MadeCausal"/>, repeated over leading axes; without a cache the square alone. Key j is visible to
    /// query i iff j &lt; P or j − P ≤ i, i.e. j ≤ i + P: lower-right when P is Skv − Sq.
    /// </summary>
    private CausalStructure? MadeCausalWithCache(Value mask, Dim queryLength, Dim keyLength)
    {
        mask = Unbroadcast(mask, queryLength, keyLength);
        if (Ops.Producer(mask, "Concat") is not { } concat)
        {
            return keyLength.SameAs(queryLength) == true && MadeCausal(mask, queryLength, keyLength) is { } square
                ? square
                : null;
        }

        if (concat.Inputs.Count != 2 || concat.IntAttribute("axis") is not { } axis || analysis.ShapeOf(concat.Input(0)!) is not [var rows, var past] ||
            (axis != -1 && axis != 1) || rows.SameAs(queryLength) != true || Filled(concat.Input(0)!) is not 0.0 ||
            (past.SameAs(_keyOffset) != true && Dim.Add(past, queryLength).SameAs(keyLength) != true) ||
            MadeCausal(concat.Input(1)!, queryLength, queryLength) is not { } causal)
        {
            return null;
        }

        return causal with { Alignment = past.Size == 0 ? CausalAlignment.UpperLeft : CausalAlignment.LowerRight };
    }

    /// <summary>
    /// HF's <c>_make_causal_mask</c>: full((S, S), F).masked_fill(arange(S) &lt; (arange(S) + 1).view(S, 1), 0), exported as
    /// Where(Less(Range(0, S), Reshape(Add(Range(0, S), 1), [S, 1])), 0, ConstantOfShape(F)), possibly cast: key j is
    /// visible to query i iff j &lt; i + 1. Upper-left over (Sq, Skv).
    /// </summary>
    private CausalStructure? MadeCausal(Value mask, Dim queryLength, Dim keyLength)
    {
        while (Ops.Producer(mask, "Cast") is { } cast)
        {
            mask = cast.Input(0)!;
        }

        if (Ops.Producer(mask, "Where") is not { } where || analysis.ScalarOf(where.Input(1)!) != 0 || Filled(where.Input(2)!) is not { } fill ||
            !IsHidingFill(fill) || !IsQueryByKey(where.Input(2)!, queryLength, keyLength))
        {
            return null;
        }

        var keep = where.Input(0)!;
        while (Ops.Producer(keep, "Cast") is { } cast)
        {
            keep = cast.Input(0)!;
        }

        if (Ops.Producer(keep, "Less") is not { } less || UnitRange(less.Input(0)!) is not { } keys || keys.Start.Size != 0 ||
            keys.End.SameAs(keyLength) != true || Ops.Producer(less.Input(1), "Reshape") is not { } column ||
            !IsColumnShape(column.Input(1)!, queryLength) || Ops.Producer(column.Input(0), "Add") is not { } next ||
            Ops.WithScalar(next, analysis, 1, 0) is not { Constant: 1 } plusOne || UnitRange(plusOne.Operand) is not { } queries ||
            queries.Start.Size != 0 || queries.End.SameAs(queryLength) != true)
        {
            return null;
        }

        return new CausalStructure(CausalAlignment.UpperLeft, fill);
    }

    /// <summary>Whether a Reshape target makes a column of <paramref name="length"/> rows: [−1, 1] or [Sq, 1].</summary>
    private bool IsColumnShape(Value shape, Dim length) =>
        analysis.ConstantOf(shape)?.AsInt64() is [-1, 1] || analysis.ShapeVector(shape) is [var rows, { Size: 1 }] && rows.SameAs(length) == true;

    /// <summary>
    /// HF Llama's causal mask with the padding folded in (and every model sharing its mask code):
    /// <c>mask[..., :T] = mask[..., :T].masked_fill(mask[..., :T] + m == 0, F)</c>, exported as a ScatterND that
    /// rewrites every position of the causal mask. Where the causal mask hides a key the result stays F whatever m holds
    /// (the Where writes F or keeps the F already there, even where F + m is 0, as float16's −65504 + 65504 is); where it
    /// shows one (±0 there) the result is F exactly where m == 0. So the mask is the causal structure plus "F where
    /// m == 0, else 0" on the visible keys. Returns the causal structure and m (broadcastable to the scores); null when
    /// the graph is not provably that.
    /// </summary>
    private (CausalStructure Causal, Value PaddingKeep)? ScatteredWithPadding(MaskTerm term, Dim queryLength, Dim keyLength, Dim? keyOffset)
    {
        _keyCoversQuery = false;
        _keyOffset = keyOffset ?? Dim.Subtract(keyLength, queryLength);
        if (term.Kind != MaskKind.AdditiveBias || term.Subtracted || Ops.Producer(Unbroadcast(term.Source, queryLength, keyLength), "ScatterND") is not { } scatter ||
            scatter.StringAttribute("reduction") is { } reduction && reduction != "none")
        {
            return null;
        }

        var data = scatter.Input(0)!;
        if (AdditiveCausal(data, queryLength, keyLength) is not { } causal || !WritesEveryPosition(scatter.Input(1)!, data))
        {
            return null;
        }

        // Reshape and Expand to the shape the tensor already has change nothing.
        var updates = scatter.Input(2)!;
        while (Ops.Producer(updates, "Reshape", "Expand") is { } reshape && analysis.ShapeOf(reshape.Input(0)!) is { } before &&
               analysis.ShapeVector(reshape.Input(1)!) is { } after && before.Count == after.Length &&
               before.Zip(after).All(p => p.First.SameAs(p.Second) == true))
        {
            updates = reshape.Input(0)!;
        }

        // masked_fill(cond, F) of the causal mask itself: Where(cond, F, data).
        if (Ops.Producer(updates, "Where") is not { } fill || analysis.ScalarOf(fill.Input(1)!) is not { } filled || !filled.Equals(causal.Fill) ||
            !IsWholeOf(fill.Input(2)!, data, keyLength))
        {
            return null;
        }

        var condition = fill.Input(0)!;
        while (Ops.Producer(condition, "Cast") is { } cast)
        {
            condition = cast.Input(0)!;
        }

        if (Ops.Producer(condition, "Equal") is not { } equal)
        {
            return null;
        }

        for (var i = 0; i < 2; i++)
        {
            if (analysis.ScalarOf(equal.Input(1 - i)!) == 0 && Ops.Producer(equal.Input(i), "Add") is { Inputs.Count: 2 } add)
            {
                for (var j = 0; j < 2; j++)
                {
                    if (IsWholeOf(add.Input(j)!, data, keyLength))
                    {
                        return (causal, add.Input(1 - j)!);
                    }
                }
            }
        }

        return null;
    }

    /// <summary>Whether <paramref name="value"/> is <paramref name="data"/> or a slice of all its keys.</summary>
    private bool IsWholeOf(Value value, Value data, Dim keyLength) =>
        value == data || (Ops.Producer(value, "Slice") is { } slice && slice.Input(0) == data && IsWholeKeySlice(slice, keyLength));

    /// <summary>
    /// Whether ScatterND indices are the full coordinate grid of <paramref name="data"/> in row-major order, as
    /// TorchScript exports an index_put over every position: Concat(axis −1) of, per axis a, Unsqueeze(Expand(r_a,
    /// Shape(r_0 + … + r_last)), −1), where r_a is arange(dim a) reshaped to lie along axis a (the last one possibly
    /// sliced to [0, dim)).
    /// </summary>
    private bool WritesEveryPosition(Value indices, Value data)
    {
        if (analysis.ShapeOf(data) is not { Count: > 0 } shape || Ops.Producer(indices, "Concat") is not { } concat ||
            concat.IntAttribute("axis") is not { } axis || (axis != -1 && axis != shape.Count) || concat.Inputs.Count != shape.Count)
        {
            return false;
        }

        var rank = shape.Count;
        var parts = new List<Value>();
        Value? target = null;
        for (var a = 0; a < rank; a++)
        {
            if (Ops.Producer(concat.Inputs[a], "Unsqueeze") is not { } unsqueeze || analysis.AxesOf(unsqueeze) is not [var at] || (at != -1 && at != rank) ||
                Ops.Producer(unsqueeze.Input(0), "Expand") is not { } expand || (target is not null && ExpandShape(expand) != target))
            {
                return false;
            }

            target = ExpandShape(expand);
            var part = expand.Input(0)!;
            var range = part;
            if (a < rank - 1)
            {
                long[] alongAxis = [-1, .. Enumerable.Repeat(1L, rank - 1 - a)];
                if (Ops.Producer(part, "Reshape") is not { } reshape || analysis.ConstantOf(reshape.Input(1)!)?.AsInt64() is not { } to ||
                    !to.SequenceEqual(alongAxis))
                {
                    return false;
                }

                range = reshape.Input(0)!;
            }
            else if (Ops.Producer(part, "Slice") is { } slice)
            {
                if (slice.Input(3) is not { } axesInput || analysis.ConstantOf(axesInput)?.AsInt64() is not [0] ||
                    analysis.ShapeVector(slice.Input(1)!) is not [{ Size: 0 }] || analysis.ShapeVector(slice.Input(2)!) is not [var end] ||
                    end.SameAs(shape[a]) != true || (slice.Input(4) is { } steps && analysis.ConstantOf(steps)?.AsInt64() is not [1]))
                {
                    return false;
                }

                range = slice.Input(0)!;
            }

            if (UnitRange(range) is not { } r || r.Start.Size != 0 || r.End.SameAs(shape[a]) != true)
            {
                return false;
            }

            parts.Add(part);
        }

        // The grid is the broadcast of exactly those parts, each once.
        return Ops.Producer(target, "Shape") is { } gridShape && gridShape.Attribute("start") is null && gridShape.Attribute("end") is null &&
               AddLeaves(gridShape.Input(0)!) is { } leaves && leaves.Count == rank && leaves.ToHashSet().SetEquals(parts);
    }

    /// <summary>
    /// The shape an Expand broadcasts to, seen through the exporter's Where(Equal(x, −1), 1, x) (expand's −1 meaning
    /// "keep"): a Shape output never holds −1, so that Where is x itself.
    /// </summary>
    private Value ExpandShape(Node expand)
    {
        var shape = expand.Input(1)!;
        if (Ops.Producer(shape, "Where") is { } where && Ops.Producer(where.Input(2), "Shape") is not null &&
            Ops.Producer(where.Input(0), "Equal") is { } equal && equal.Inputs.Contains(where.Input(2)) &&
            equal.Inputs.FirstOrDefault(i => i != where.Input(2)) is { } compared && IsAllNegative(compared))
        {
            return where.Input(2)!;
        }

        return shape;
    }

    /// <summary>Whether every element is provably negative: a constant, or ConstantOfShape(v) · c with v · c &lt; 0.</summary>
    private bool IsAllNegative(Value value)
    {
        if (analysis.ConstantOf(value) is { } constant)
        {
            return constant.Data.All(d => d < 0);
        }

        return Ops.Producer(value, "Mul") is { Inputs.Count: 2 } mul && Ops.WithScalar(mul, analysis, 1, 0) is { } factor &&
               Filled(factor.Operand) is { } filled && filled * factor.Constant < 0;
    }

    private static List<Value>? AddLeaves(Value sum)
    {
        if (Ops.Producer(sum, "Add") is not { Inputs.Count: 2 } add)
        {
            return [sum];
        }

        return AddLeaves(add.Input(0)!) is { } left && AddLeaves(add.Input(1)!) is { } right ? [.. left, .. right] : null;
    }

    /// <summary>Whether a fill hides the keys it is put on: −inf, an absorbing value, or, with bounded scores, −65504 or below.</summary>
    private bool IsHidingFill(double fill) =>
        double.IsNegativeInfinity(fill) || fill <= AbsorbingFill || (scoresBounded && fill <= BoundedScoresFill);

    /// <summary>Where(hidden, F, 0), Where(keep, 0, F) or Trilu(full(F), upper=1, k=1), possibly cast.</summary>
    private CausalStructure? AdditiveCausal(Value mask, Dim queryLength, Dim keyLength)
    {
        mask = Unbroadcast(mask, queryLength, keyLength);
        if (Ops.Producer(mask, "Mul") is { Inputs.Count: 2 } mul)
        {
            return CachePositionCausal(mul, queryLength, keyLength);
        }

        if (Ops.Producer(mask, "Where") is { } where)
        {
            var whenTrue = analysis.ScalarOf(where.Input(1)!);
            var whenFalse = analysis.ScalarOf(where.Input(2)!);
            var alignment = CausalAlignment.None;
            double fill = 0;
            if (whenTrue is { } hide && IsHidingFill(hide) && whenFalse == 0)
            {
                (alignment, fill) = (HiddenCausal(where.Input(0)!, queryLength, keyLength), hide);
            }
            else if (whenFalse is { } keepFill && IsHidingFill(keepFill) && whenTrue == 0)
            {
                (alignment, fill) = (KeepCausal(where.Input(0)!, queryLength, keyLength), keepFill);
            }

            // HF's _make_causal_mask on its own (BART, Marian and Whisper decoders exported without a decoder mask):
            // Where(Less(arange(S), arange(S) + 1 as a column), 0, full(F)).
            return alignment == CausalAlignment.None ? MadeCausalWithCache(mask, queryLength, keyLength) : new CausalStructure(alignment, fill);
        }

        if (Ops.Producer(mask, "Concat") is not null)
        {
            return MadeCausalWithCache(mask, queryLength, keyLength);  // the same after zero columns for cached keys
        }

        if (Ops.Producer(mask, "Slice") is not null)
        {
            // OpenAI Whisper: rows and columns of a constant buffer holding 0 on and below the diagonal, −inf above.
            var (alignment, buffer) = SlicedBuffer(mask, queryLength, keyLength);
            return alignment != CausalAlignment.None && buffer is not null && AdditiveTriangleFill(buffer) is { } hide
                ? new CausalStructure(alignment, hide)
                : null;
        }

        if (Ops.Producer(mask, "Trilu") is { } trilu && trilu.IntAttribute("upper") == 1 && TriluOffset(trilu) == 1 &&
            Filled(trilu.Input(0)!) is { } full && IsHidingFill(full) && IsQueryByKey(trilu.Input(0)!, queryLength, keyLength))
        {
            return new CausalStructure(CausalAlignment.UpperLeft, full);
        }

        return null;
    }

    /// <summary>
    /// Strips what only casts or repeats a (Sq, Skv) mask: Cast, Identity, Unsqueeze of leading axes, Expand of
    /// leading axes, and a slice of keys [0, Skv) of a mask already Skv keys wide. Stops at anything else.
    /// </summary>
    private Value Unbroadcast(Value mask, Dim queryLength, Dim keyLength)
    {
        while (true)
        {
            if (Ops.Producer(mask, "Cast", "CastLike", "Identity") is { } cast)
            {
                mask = cast.Input(0)!;
            }
            else if (Ops.Producer(mask, "Unsqueeze", "Expand") is { } repeat && KeepsLastTwoAxes(repeat))
            {
                mask = repeat.Input(0)!;
            }
            else if (Ops.Producer(mask, "Slice") is { } slice && IsWholeKeySlice(slice, keyLength))
            {
                mask = slice.Input(0)!;
            }
            else
            {
                return mask;
            }
        }
    }

    /// <summary>Whether an Unsqueeze or Expand leaves the last two axes of its (at least 2-D) input as they are.</summary>
    private bool KeepsLastTwoAxes(Node node)
    {
        if (analysis.ShapeOf(node.Input(0)!) is not { Count: >= 2 } input || analysis.ShapeOf(node.Output(0)!) is not { Count: >= 2 } output)
        {
            return false;
        }

        if (node.Is("Unsqueeze"))
        {
            // Unsqueeze only adds axes of size 1; the last two stay last when no new axis lands after them.
            return analysis.AxesOf(node) is { } axes && axes.All(a => (a < 0 ? a + output.Count : a) < output.Count - 2);
        }

        return output[^1].SameAs(input[^1]) == true && output[^2].SameAs(input[^2]) == true;
    }

    /// <summary>Slice(x, [0], [Skv], [last axis]) of an x whose last axis is Skv long: the identity.</summary>
    private bool IsWholeKeySlice(Node slice, Dim keyLength)
    {
        if (analysis.ShapeOf(slice.Input(0)!) is not { Count: >= 2 } shape || shape[^1].SameAs(keyLength) != true ||
            slice.Input(3) is not { } axesInput || analysis.ConstantOf(axesInput)?.AsInt64() is not [var axis] ||
            (axis < 0 ? axis + shape.Count : axis) != shape.Count - 1 ||
            (slice.Input(4) is { } steps && analysis.ConstantOf(steps)?.AsInt64() is not [1]))
        {
            return false;
        }

        return analysis.ShapeVector(slice.Input(1)!) is [{ Size: 0 }] && analysis.ShapeVector(slice.Input(2)!) is [var end] && end.SameAs(keyLength) == true;
    }

    /// <summary>
    /// HF Llama's causal mask (and every model sharing its mask code): full((Sq, Skv), F), upper triangle above the
    /// diagonal (Trilu k=1; absent when exported with Sq = 1), times (arange(Skv) &gt; cache_position[:, None]) where
    /// cache_position = arange(P, P + Sq). Key j is hidden from query i iff j &gt; i + P (the triangle only hides a
    /// subset of that, since P ≥ 0), so this is the lower-right causal mask when P is Skv − Sq. Hidden scores get F·1 = F,
    /// visible ones F·0 or 0·x, both zero.
    /// </summary>
    private CausalStructure? CachePositionCausal(Node mul, Dim queryLength, Dim keyLength)
    {
        for (var i = 0; i < 2; i++)
        {
            if (HiddenBeyondCachePosition(mul.Input(1 - i)!, queryLength, keyLength) is not { } past ||
                past.SameAs(_keyOffset) != true || !past.IsNonNegative)
            {
                continue;
            }

            var filled = mul.Input(i)!;
            if (Ops.Producer(filled, "Trilu") is { } trilu)
            {
                if (trilu.IntAttribute("upper") != 1 || TriluOffset(trilu) != 1)
                {
                    continue;
                }

                filled = trilu.Input(0)!;
            }

            if (Filled(filled) is { } fill && IsHidingFill(fill) && IsQueryByKey(filled, queryLength, keyLength))
            {
                return new CausalStructure(past.Size == 0 ? CausalAlignment.UpperLeft : CausalAlignment.LowerRight, fill);
            }
        }

        return null;
    }

    /// <summary>
    /// P when <paramref name="hidden"/> is (possibly cast) Greater(arange(Skv), Reshape(arange(P, P + Sq), [−1, 1])),
    /// or the same as Less with the operands swapped: true where key j lies beyond query i's cache position P + i.
    /// </summary>
    private Dim? HiddenBeyondCachePosition(Value hidden, Dim queryLength, Dim keyLength)
    {
        while (Ops.Producer(hidden, "Cast") is { } cast)
        {
            hidden = cast.Input(0)!;
        }

        var (keys, queries) = Ops.Producer(hidden, "Greater", "Less") switch
        {
            { OpType: "Greater" } greater => (greater.Input(0), greater.Input(1)),
            { OpType: "Less" } less => (less.Input(1), less.Input(0)),
            _ => (null, null),
        };
        if (keys is null || queries is null || UnitRange(keys) is not { } keyRange || keyRange.Start.Size != 0 ||
            Dim.Subtract(keyRange.End, keyRange.Start).SameAs(keyLength) != true)
        {
            return null;
        }

        if (Ops.Producer(queries, "Reshape") is not { } column || analysis.ConstantOf(column.Input(1)!)?.AsInt64() is not [-1, 1] ||
            UnitRange(column.Input(0)!) is not { } queryRange || Dim.Subtract(queryRange.End, queryRange.Start).SameAs(queryLength) != true)
        {
            return null;
        }

        return queryRange.Start;
    }

    /// <summary>Start and end of Range(start, end, 1), each a number or a dimension read from a shape.</summary>
    private (Dim Start, Dim End)? UnitRange(Value value) =>
        Ops.Producer(value, "Range") is { } range && analysis.ScalarOf(range.Input(2)!) == 1 &&
        analysis.ShapeVector(range.Input(0)!) is [var start] && analysis.ShapeVector(range.Input(1)!) is [var end]
            ? (start, end)
            : null;

    /// <summary>
    /// A boolean tensor that is true on and below the diagonal: Trilu(ones, upper=0), or rows
    /// [T−S, T) and columns [0, T) of a constant lower-triangular buffer (GPT-2), possibly cast.
    /// </summary>
    private CausalAlignment KeepCausal(Value keep, Dim queryLength, Dim keyLength)
    {
        while (Ops.Producer(keep, "Cast") is { } cast)
        {
            keep = cast.Input(0)!;
        }

        if (Ops.Producer(keep, "Slice") is not null)
        {
            var (alignment, buffer) = SlicedBuffer(keep, queryLength, keyLength);
            return buffer is not null && IsLowerTriangular(buffer) ? alignment : CausalAlignment.None;
        }

        if (Ops.Producer(keep, "Trilu") is { } trilu && (trilu.IntAttribute("upper") ?? 1) == 0 && TriluOffset(trilu) == 0 &&
            Filled(trilu.Input(0)!) is { } one && one != 0 && IsQueryByKey(trilu.Input(0)!, queryLength, keyLength))
        {
            return CausalAlignment.UpperLeft;
        }

        return CausalAlignment.None;
    }

    /// <summary>
    /// Rows [T−S, T) and columns [0, T) of a constant (1, …, 1, N, N) buffer: with a lower-triangular
    /// buffer, key j is visible to query i iff j ≤ i + T − S. Only accepted when T − S is provably
    /// ≥ 0 (a negative start would count from the end instead). The caller checks the buffer's values.
    /// </summary>
    private (CausalAlignment Alignment, ConstantTensor? Buffer) SlicedBuffer(Value sliced, Dim queryLength, Dim keyLength)
    {
        var ranges = new Dictionary<int, (Dim Start, Dim End)>();
        var current = sliced;
        while (Ops.Producer(current, "Slice") is { } slice)
        {
            if (slice.Input(4) is { } steps && analysis.ConstantOf(steps)?.AsInt64().All(s => s == 1) != true)
            {
                return (CausalAlignment.None, null);
            }

            var rank = analysis.ShapeOf(slice.Input(0)!)?.Count;
            if (rank is null || slice.Input(3) is not { } axesInput || analysis.ConstantOf(axesInput)?.AsInt64() is not { } axes ||
                analysis.ShapeVector(slice.Input(1)!) is not { } starts || analysis.ShapeVector(slice.Input(2)!) is not { } ends ||
                starts.Length != axes.Length || ends.Length != axes.Length)
            {
                return (CausalAlignment.None, null);
            }

            for (var i = 0; i < axes.Length; i++)
            {
                var axis = (int)(axes[i] < 0 ? axes[i] + rank.Value : axes[i]);
                if (!ranges.TryAdd(axis, (starts[i], ends[i])))
                {
                    return (CausalAlignment.None, null);
                }
            }

            current = slice.Input(0)!;
        }

        while (Ops.Producer(current, "Identity") is { } identity)
        {
            current = identity.Input(0)!;
        }

        if (analysis.ConstantOf(current) is not { Dims.Count: >= 2 } buffer || buffer.Dims[^1] != buffer.Dims[^2] ||
            buffer.Dims.Take(buffer.Dims.Count - 2).Any(d => d != 1))
        {
            return (CausalAlignment.None, null);
        }

        var rowAxis = buffer.Dims.Count - 2;
        var columnAxis = buffer.Dims.Count - 1;
        if (ranges.Keys.Any(a => a != rowAxis && a != columnAxis) ||
            !ranges.TryGetValue(rowAxis, out var rows) || !ranges.TryGetValue(columnAxis, out var columns))
        {
            return (CausalAlignment.None, null);
        }

        var offset = Dim.Subtract(keyLength, queryLength);
        var proven = rows.Start.SameAs(offset) == true && (rows.Start.IsNonNegative || _keyCoversQuery) && rows.End.SameAs(keyLength) == true &&
                     columns.Start.Size == 0 && columns.End.SameAs(keyLength) == true;
        return proven ? (CausalAlignment.LowerRight, buffer) : (CausalAlignment.None, null);
    }

    /// <summary>The hiding fill of a buffer holding 0 on and below the diagonal and that fill above it, or null.</summary>
    private double? AdditiveTriangleFill(ConstantTensor buffer)
    {
        var n = buffer.Dims[^1];
        double? fill = null;
        for (var i = 0; i < n; i++)
        {
            for (var j = 0; j < n; j++)
            {
                var v = buffer.Data[(int)(i * n + j)];
                if (j <= i ? v != 0 : !IsHidingFill(v) || (fill is { } f && !f.Equals(v)))
                {
                    return null;
                }

                if (j > i)
                {
                    fill = v;
                }
            }
        }

        return fill;
    }

    private static bool IsLowerTriangular(ConstantTensor buffer)
    {
        var n = buffer.Dims[^1];
        if (buffer.Dims[^2] != n || buffer.Dims.Take(buffer.Dims.Count - 2).Any(d => d != 1))
        {
            return false;
        }

        for (var i = 0; i < n; i++)
        {
            for (var j = 0; j < n; j++)
            {
                if ((buffer.Data[(int)(i * n + j)] != 0) != (j <= i))
                {
                    return false;
                }
            }
        }

        return true;
    }

    /// <summary>A boolean tensor that is true strictly above the diagonal: Equal(tril(ones), 0) or Not(keep).</summary>
    private CausalAlignment HiddenCausal(Value hidden, Dim queryLength, Dim keyLength)
    {
        if (Ops.Producer(hidden, "Not") is { } not)
        {
            return KeepCausal(not.Input(0)!, queryLength, keyLength);
        }

        if (Ops.Producer(hidden, "Equal") is { } equal)
        {
            for (var i = 0; i < 2; i++)
            {
                if (analysis.ScalarOf(equal.Input(1 - i)!) == 0)
                {
                    return KeepCausal(equal.Input(i)!, queryLength, keyLength);
                }
            }
        }

        return CausalAlignment.None;
    }

    private long? TriluOffset(Node trilu) => trilu.Input(1) is { } k ? analysis.ScalarOf(k) is { } v ? (long)v : null : 0;

    /// <summary>The single value every element of <paramref name="value"/> holds, when provable.</summary>
    private double? Filled(Value value)
    {
        if (Ops.Producer(value, "Expand") is { } expand)
        {
            return analysis.ScalarOf(expand.Input(0)!);
        }

        if (Ops.Producer(value, "ConstantOfShape") is { } constantOfShape)
        {
            return constantOfShape.Attribute("value")?.T is { } t ? ConstantTensor.FromProto(t)?.Data[0] : 0;
        }

        if (analysis.ConstantOf(value) is { } constant && constant.Data.Count > 0 && constant.Data.All(d => d.Equals(constant.Data[0])))
        {
            return constant.Data[0];
        }

        return null;
    }

    private bool IsQueryByKey(Value value, Dim queryLength, Dim keyLength) =>
        analysis.ShapeOf(value) is { Count: 2 } shape && shape[0].SameAs(queryLength) == true && shape[1].SameAs(keyLength) == true;
}

/// <summary>A causal mask found in the graph: its alignment and the value it gives hidden scores.</summary>
/// <param name="Alignment">Which keys each query sees.</param>
/// <param name="Fill">What hidden scores become (−inf, an absorbing finite value, or with bounded scores −65504 or below).</param>
internal sealed record CausalStructure(CausalAlignment Alignment, double Fill)
{
    /// <summary>Whether the fill hides keys only for scores within ±<see cref="CausalMasks.ScoreBound"/> (finite, not absorbing).</summary>
    public bool NeedsBoundedScores => double.IsFinite(Fill) && Fill > CausalMasks.AbsorbingFill;
}
