using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Patterns;

namespace OrtFlash.GraphRewriter.Rules;

/// <summary>
/// Recognises causal masks from their structure so the op can use its causal attribute instead of
/// reading a materialised mask. A mask is only recognised when its shape is proven to be
/// (query length, key length); anything else stays an ordinary bias or keep input, which is exact.
/// </summary>
internal sealed class CausalMasks(GraphAnalysis analysis)
{
    private bool _keyCoversQuery;

    /// <summary>Fill values at or below this are absorbing in fp32: s + F == F for |s| &lt; 2^64.</summary>
    internal const double AbsorbingFill = -3.094850098213451e26; // −2^88

    /// <summary>The causal structure of <paramref name="term"/> over (Sq, Skv), or null.</summary>
    /// <param name="term">The mask term.</param>
    /// <param name="queryLength">Sq.</param>
    /// <param name="keyLength">Skv.</param>
    /// <param name="keyCoversQuery">Skv ≥ Sq is proven by the caller (the keys are a concatenation ending with
    /// Sq new keys), for when the dimensions alone cannot prove that a buffer slice starts at a non-negative row.</param>
    public CausalStructure? Recognize(MaskTerm term, Dim queryLength, Dim keyLength, bool keyCoversQuery = false)
    {
        _keyCoversQuery = keyCoversQuery;
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

    private static bool IsHidingFill(double fill) => double.IsNegativeInfinity(fill) || fill <= AbsorbingFill;

    /// <summary>Where(hidden, F, 0), Where(keep, 0, F) or Trilu(full(F), upper=1, k=1), possibly cast.</summary>
    private CausalStructure? AdditiveCausal(Value mask, Dim queryLength, Dim keyLength)
    {
        while (Ops.Producer(mask, "Cast", "CastLike") is { } cast)
        {
            mask = cast.Input(0)!;
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

            return alignment == CausalAlignment.None ? null : new CausalStructure(alignment, fill);
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
    private static double? AdditiveTriangleFill(ConstantTensor buffer)
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
/// <param name="Fill">What hidden scores become (−inf, or an absorbing finite value).</param>
internal sealed record CausalStructure(CausalAlignment Alignment, double Fill);
