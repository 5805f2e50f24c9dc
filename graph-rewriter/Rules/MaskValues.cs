using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Patterns;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.GraphRewriter.Rules;

/// <summary>
/// What a mask's elements can provably be, read from how the graph builds it. Used to decide when two additive
/// masks may be summed before the scores: (s + a) + p == s + (a + p) exactly when every element of p is ±0 (adds
/// nothing either way) or absorbing (|p| ≥ 2⁸⁸ or infinite: s + a + p and a + p both round to p, or to the same
/// infinity, for the scores a model produces).
/// </summary>
/// <param name="analysis">Types, shapes and constants of the graph.</param>
/// <param name="integerMasksAreBinary">Whether an integer tensor used as a mask factor is taken to hold only 0 and 1
/// (<see cref="RewriteOptions.IntegerMasksAreBinary"/>); otherwise it may hold any integer.</param>
/// <param name="absorbing">The magnitude from which a value counts as absorbing: 2⁸⁸ for float32 arithmetic (the default);
/// <see cref="Float64Absorbing"/> for masks added in float64.</param>
internal sealed class MaskValues(GraphAnalysis analysis, bool integerMasksAreBinary, double absorbing = -CausalMasks.AbsorbingFill)
{
    /// <summary>2¹¹⁷: in float64, s + v == v for |s| &lt; 2⁶⁴ from here on (float32's finfo.min, about 2¹²⁸, is such a value).</summary>
    internal const double Float64Absorbing = 1.661534994731145e35;

    private const int MaxDepth = 24;

    /// <summary>The signs the absorbing values of a mask provably have.</summary>
    [Flags]
    public enum Signs
    {
        /// <summary>Only ±0.</summary>
        None = 0,

        /// <summary>Absorbing values may be negative (−inf, finfo.min).</summary>
        Negative = 1,

        /// <summary>Absorbing values may be positive.</summary>
        Positive = 2,
    }

    /// <summary>Whether every element of <paramref name="mask"/> is provably ±0 or absorbing.</summary>
    public bool IsZeroOrAbsorbing(Value mask) => AbsorbingSigns(mask) is not null;

    /// <summary>
    /// The signs the absorbing values of <paramref name="mask"/> may have when every element is provably ±0 or absorbing;
    /// null otherwise. Two absorbing values of opposite signs cancel (finfo.min + finfo.max == 0), so two masks may only be
    /// summed before the scores when no such pair can meet.
    /// </summary>
    public Signs? AbsorbingSigns(Value mask) => ZeroOrAbsorbing(mask, 0);

    /// <summary>2⁶⁴: the magnitude the rewriter takes every MatMul product (every score q·kᵀ) to stay below.</summary>
    internal const double ScoreBound = 1.8446744073709552e19;

    /// <summary>
    /// Whether every element of <paramref name="bias"/> is provably bounded as the scores are: a sum of at most 2²⁰ terms, each
    /// a MatMul product (moved by Gather, GatherElements, Transpose, Reshape, Squeeze, Unsqueeze, Expand, Tile, Slice or
    /// Identity, negated, divided by a constant of magnitude ≥ 1 or multiplied by one ≤ 1) or a constant below 2⁶⁴. With
    /// every product below 2⁶⁴, such a bias stays below 2⁸⁴, far from the absorbing values (HF DeBERTa's c2p and p2c terms:
    /// query·position-key products gathered by relative distance).
    /// </summary>
    public bool IsBoundedLikeScores(Value bias) => ScoreTerms(bias, 0) is <= 1 << 20;

    private long? ScoreTerms(Value value, int depth)
    {
        if (analysis.ConstantOf(value) is { } constant)
        {
            return constant.Data.All(d => Math.Abs(d) < ScoreBound) ? 1 : null;
        }

        if (depth > MaxDepth || value.Producer is not { } node || (node.Domain.Length != 0 && node.Domain != "ai.onnx"))
        {
            return null;
        }

        var next = depth + 1;
        switch (node.OpType)
        {
            case "MatMul":
                return 1;
            case "Identity" or "Unsqueeze" or "Squeeze" or "Reshape" or "Expand" or "Transpose" or "Slice" or "Gather" or "GatherElements" or "Tile" or "Neg":
                return ScoreTerms(node.Input(0)!, next);
            case "Add" or "Sub" when node.Inputs.Count == 2:
                return ScoreTerms(node.Input(0)!, next) is { } a && ScoreTerms(node.Input(1)!, next) is { } b ? a + b : null;
            case "Div" when node.Inputs.Count == 2 && analysis.ScalarOf(node.Input(1)!) is { } divisor && Math.Abs(divisor) >= 1:
                return ScoreTerms(node.Input(0)!, next);
            case "Mul" when node.Inputs.Count == 2:
                for (var i = 0; i < 2; i++)
                {
                    if (analysis.ScalarOf(node.Input(i)!) is { } factor && Math.Abs(factor) <= 1)
                    {
                        return ScoreTerms(node.Input(1 - i)!, next);
                    }
                }

                return null;
            default:
                return null;
        }
    }

    private Signs? SignOf(double value) =>
        value == 0 ? Signs.None : Math.Abs(value) >= absorbing ? (value < 0 ? Signs.Negative : Signs.Positive) : null;

    private Signs? SignsOf(IEnumerable<double> values)
    {
        var signs = Signs.None;
        foreach (var value in values)
        {
            if (SignOf(value) is not { } sign)
            {
                return null;
            }

            signs |= sign;
        }

        return signs;
    }

    private static Signs? Union(Signs? a, Signs? b) => a is { } x && b is { } y ? x | y : null;

    private static Signs Flipped(Signs signs) =>
        (signs.HasFlag(Signs.Negative) ? Signs.Positive : Signs.None) | (signs.HasFlag(Signs.Positive) ? Signs.Negative : Signs.None);

    private Signs? ZeroOrAbsorbing(Value value, int depth)
    {
        if (analysis.ConstantOf(value) is { } constant)
        {
            return SignsOf(constant.Data);
        }

        if (depth > MaxDepth || value.Producer is not { } node || (node.Domain.Length != 0 && node.Domain != "ai.onnx"))
        {
            return null;
        }

        var next = depth + 1;
        switch (node.OpType)
        {
            case "Identity" or "Unsqueeze" or "Squeeze" or "Reshape" or "Expand" or "Transpose" or "Slice" or "Gather" or "Trilu" or "Tile":
                return ZeroOrAbsorbing(node.Input(0)!, next);
            case "Neg":
                return ZeroOrAbsorbing(node.Input(0)!, next) is { } negated ? Flipped(negated) : null;
            case "Cast" or "CastLike":
                // Widening keeps values; narrowing sends absorbing values to infinity and keeps zeros.
                return ElementTypes.IsFloat(analysis.ElementTypeOf(node.Input(0)!)) ? ZeroOrAbsorbing(node.Input(0)!, next) : null;
            case "ConstantOfShape":
                return node.Attribute("value")?.T is not { } fill ? Signs.None : ConstantTensor.FromProto(fill) is { } filled ? SignsOf(filled.Data) : null;
            case "Where":
                return Union(ZeroOrAbsorbing(node.Input(1)!, next), ZeroOrAbsorbing(node.Input(2)!, next));
            case "ScatterND" or "ScatterElements":
                return Union(ZeroOrAbsorbing(node.Input(0)!, next), ZeroOrAbsorbing(node.Input(2)!, next));
            case "Concat":
                return node.Inputs.Aggregate((Signs?)Signs.None, (signs, input) => input is null ? null : Union(signs, ZeroOrAbsorbing(input, next)));
            case "Mul" when node.Inputs.Count == 2:
                // An integer times 0 is 0; a non-zero integer times an absorbing value is at least as large (or infinite),
                // with the same sign when the integer is provably not negative, and either sign otherwise ((1 − 2)·finfo.min
                // is +finfo.max).
                for (var i = 0; i < 2; i++)
                {
                    if (ZeroOrAbsorbing(node.Input(i)!, next) is { } signs && IsInteger(node.Input(1 - i)!, next))
                    {
                        return IsZeroOrOne(node.Input(1 - i)!, next) || signs == Signs.None ? signs : signs | Flipped(signs);
                    }
                }

                return null;
            default:
                return null;
        }
    }

    /// <summary>
    /// The largest magnitude an element of <paramref name="mask"/> provably has, when every element is provably finite;
    /// null otherwise. Read through data movement, negation, float casts and Where, whose branch that its condition rules
    /// out is skipped: Swin's <c>m.masked_fill(m != 0, −100).masked_fill(m == 0, 0)</c> exports
    /// <c>Where(m == 0, 0, Where(Not(m == 0), −100, m))</c>, whose inner m is never taken.
    /// </summary>
    public double? MagnitudeBound(Value mask) => Magnitude(mask, 0);

    private double? Magnitude(Value value, int depth)
    {
        if (analysis.ConstantOf(value) is { } constant)
        {
            return constant.Data.All(double.IsFinite) ? constant.Data.Select(Math.Abs).DefaultIfEmpty(0).Max() : null;
        }

        if (depth > MaxDepth || value.Producer is not { } node || (node.Domain.Length != 0 && node.Domain != "ai.onnx"))
        {
            return null;
        }

        var next = depth + 1;
        switch (node.OpType)
        {
            case "Identity" or "Unsqueeze" or "Squeeze" or "Reshape" or "Expand" or "Transpose" or "Slice" or "Gather" or "Tile" or "Neg":
                return Magnitude(node.Input(0)!, next);
            case "Cast":
                // Between float types a value of magnitude up to 65504 stays finite (float16's largest is 65504).
                return ElementTypes.IsFloat(analysis.ElementTypeOf(node.Input(0)!)) && Magnitude(node.Input(0)!, next) is { } bound && bound <= 65504 ? bound : null;
            case "ConstantOfShape":
                return node.Attribute("value")?.T is not { } fill ? 0 : ConstantTensor.FromProto(fill) is { } filled && filled.Data.All(double.IsFinite)
                    ? filled.Data.Select(Math.Abs).DefaultIfEmpty(0).Max() : null;
            case "Where":
                var whenTrue = Magnitude(node.Input(1)!, next);
                var otherwise = node.Input(2)!.Producer is { } inner && inner.Is("Where") && Negates(inner.Input(0)!, node.Input(0)!)
                    ? Magnitude(inner.Input(1)!, next) : Magnitude(node.Input(2)!, next);
                return whenTrue is { } a && otherwise is { } b ? Math.Max(a, b) : null;
            default:
                return null;
        }
    }

    /// <summary>Whether condition <paramref name="negation"/> is provably Not(<paramref name="condition"/>).</summary>
    private bool Negates(Value negation, Value condition) =>
        WithoutBoolCasts(negation).Producer is { } not && not.Is("Not") && SameCondition(not.Input(0)!, condition);

    /// <summary>Whether two conditions are the same value, or the same comparison of the same values and constants.</summary>
    private bool SameCondition(Value a, Value b)
    {
        (a, b) = (WithoutBoolCasts(a), WithoutBoolCasts(b));
        if (a == b)
        {
            return true;
        }

        return a.Producer is { } x && b.Producer is { } y && x.OpType == y.OpType && x.Domain == y.Domain &&
               x.OpType is "Equal" or "Less" or "Greater" or "LessOrEqual" or "GreaterOrEqual" && x.Inputs.Count == 2 && y.Inputs.Count == 2 &&
               Enumerable.Range(0, 2).All(i => x.Input(i) == y.Input(i) ||
                   (analysis.ConstantOf(x.Input(i)!) is { } c && analysis.ConstantOf(y.Input(i)!) is { } d && c.Dims.SequenceEqual(d.Dims) && c.Data.SequenceEqual(d.Data)));
    }

    private Value WithoutBoolCasts(Value value)
    {
        while (value.Producer is { } cast && cast.Is("Cast") && cast.IntAttribute("to") == (long)DataType.Bool &&
               analysis.ElementTypeOf(cast.Input(0)!) == DataType.Bool)
        {
            value = cast.Input(0)!;
        }

        return value;
    }

    /// <summary>Whether every element is provably 0 or 1: a bool cast to a number, 1 minus such a value, and constants.</summary>
    private bool IsZeroOrOne(Value value, int depth)
    {
        if (analysis.ConstantOf(value) is { } constant)
        {
            return constant.Data.All(d => d is 0 or 1);
        }

        var type = analysis.ElementTypeOf(value);
        if (type == DataType.Bool || (integerMasksAreBinary && type != DataType.Undefined && !ElementTypes.IsFloat(type)))
        {
            return true;
        }

        if (depth > MaxDepth || value.Producer is not { } node || (node.Domain.Length != 0 && node.Domain != "ai.onnx"))
        {
            return false;
        }

        var next = depth + 1;
        return node.OpType switch
        {
            "Identity" or "Unsqueeze" or "Squeeze" or "Reshape" or "Expand" or "Transpose" or "Slice" or "Gather" or "Cast" or "CastLike" =>
                IsZeroOrOne(node.Input(0)!, next),
            "Sub" when node.Inputs.Count == 2 => analysis.ScalarOf(node.Input(0)!) == 1 && IsZeroOrOne(node.Input(1)!, next),
            "Not" => true,
            _ => false,
        };
    }

    /// <summary>
    /// Whether every element of <paramref name="mask"/> provably converts to <paramref name="type"/> unchanged (NaN and
    /// ±inf included): built from constants <paramref name="type"/> holds, values already of that type, and 0/1 factors.
    /// A graph input of a wider type is not: float32's −1e9 or finfo.min would become −inf in float16.
    /// </summary>
    public bool IsExactIn(Value mask, DataType type) => ExactIn(mask, type, 0);

    private bool ExactIn(Value value, DataType type, int depth)
    {
        static bool Holds(double d, DataType type) => double.IsNaN(d) || ElementTypes.Round(d, type) == d;
        if (analysis.ConstantOf(value) is { } constant)
        {
            return constant.Data.All(d => Holds(d, type));
        }

        var own = analysis.ElementTypeOf(value);
        if (own == type || own == DataType.Bool || IsZeroOrOne(value, depth))
        {
            return true;
        }

        if (depth > MaxDepth || value.Producer is not { } node || (node.Domain.Length != 0 && node.Domain != "ai.onnx"))
        {
            return false;
        }

        var next = depth + 1;
        switch (node.OpType)
        {
            case "Identity" or "Neg" or "Unsqueeze" or "Squeeze" or "Reshape" or "Expand" or "Transpose" or "Slice" or "Gather" or "Trilu" or "Tile":
                return ExactIn(node.Input(0)!, type, next);
            case "Cast" or "CastLike":
                return ExactIn(node.Input(0)!, type, next);
            case "ConstantOfShape":
                return node.Attribute("value")?.T is not { } fill || ConstantTensor.FromProto(fill) is { } filled && filled.Data.All(d => Holds(d, type));
            case "Where":
                return ExactIn(node.Input(1)!, type, next) && ExactIn(node.Input(2)!, type, next);
            case "Concat":
                return node.Inputs.All(i => i is not null && ExactIn(i, type, next));
            case "Mul" when node.Inputs.Count == 2:
                // 0·x is 0 (or NaN, also for the converted x) and 1·x is x.
                return (IsZeroOrOne(node.Input(0)!, next) && ExactIn(node.Input(1)!, type, next)) ||
                       (IsZeroOrOne(node.Input(1)!, next) && ExactIn(node.Input(0)!, type, next));
            default:
                return false;
        }
    }

    /// <summary>Whether every element is provably an integer (an integer or boolean tensor cast to float, and sums of them).</summary>
    private bool IsInteger(Value value, int depth)
    {
        if (analysis.ConstantOf(value) is { } constant)
        {
            return constant.Data.All(d => double.IsFinite(d) && Math.Floor(d) == d);
        }

        if (!ElementTypes.IsFloat(analysis.ElementTypeOf(value)) && analysis.ElementTypeOf(value) != DataType.Undefined)
        {
            return true;
        }

        if (depth > MaxDepth || value.Producer is not { } node || (node.Domain.Length != 0 && node.Domain != "ai.onnx"))
        {
            return false;
        }

        var next = depth + 1;
        return node.OpType switch
        {
            "Identity" or "Neg" or "Unsqueeze" or "Squeeze" or "Reshape" or "Expand" or "Transpose" or "Slice" or "Gather" or "Cast" or "CastLike" =>
                IsInteger(node.Input(0)!, next),
            // Sums of integers stay integers in float (every float beyond 2²⁴ is one); int64 → float rounds to an integer,
            // at most 2⁶³, so a few sums cannot overflow. Products could, and are not followed.
            "Add" or "Sub" when node.Inputs.Count == 2 => IsInteger(node.Input(0)!, next) && IsInteger(node.Input(1)!, next),
            "Where" => IsInteger(node.Input(1)!, next) && IsInteger(node.Input(2)!, next),
            _ => false,
        };
    }
}
