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
    /// <summary>Fill values at or below this are absorbing in fp32: s + F == F for |s| &lt; 2^64.</summary>
    internal const double AbsorbingFill = -3.094850098213451e26; // −2^88

    /// <summary>The causal structure of <paramref name="term"/> over (Sq, Skv), or null.</summary>
    public CausalStructure? Recognize(MaskTerm term, Dim queryLength, Dim keyLength)
    {
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

        if (Ops.Producer(mask, "Trilu") is { } trilu && trilu.IntAttribute("upper") == 1 && TriluOffset(trilu) == 1 &&
            Filled(trilu.Input(0)!) is { } full && IsHidingFill(full) && IsQueryByKey(trilu.Input(0)!, queryLength, keyLength))
        {
            return new CausalStructure(CausalAlignment.UpperLeft, full);
        }

        return null;
    }

    /// <summary>A boolean tensor that is true on and below the diagonal: Trilu(ones, upper=0), possibly cast.</summary>
    private CausalAlignment KeepCausal(Value keep, Dim queryLength, Dim keyLength)
    {
        while (Ops.Producer(keep, "Cast") is { } cast)
        {
            keep = cast.Input(0)!;
        }

        if (Ops.Producer(keep, "Trilu") is { } trilu && (trilu.IntAttribute("upper") ?? 1) == 0 && TriluOffset(trilu) == 0 &&
            Filled(trilu.Input(0)!) is { } one && one != 0 && IsQueryByKey(trilu.Input(0)!, queryLength, keyLength))
        {
            return CausalAlignment.UpperLeft;
        }

        return CausalAlignment.None;
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
