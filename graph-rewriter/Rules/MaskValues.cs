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
internal sealed class MaskValues(GraphAnalysis analysis)
{
    private const int MaxDepth = 24;

    /// <summary>Whether every element of <paramref name="mask"/> is provably ±0 or absorbing.</summary>
    public bool IsZeroOrAbsorbing(Value mask) => ZeroOrAbsorbing(mask, 0);

    private static bool IsZeroOrAbsorbing(double value) => value == 0 || Math.Abs(value) >= -CausalMasks.AbsorbingFill;

    private bool ZeroOrAbsorbing(Value value, int depth)
    {
        if (analysis.ConstantOf(value) is { } constant)
        {
            return constant.Data.All(IsZeroOrAbsorbing);
        }

        if (depth > MaxDepth || value.Producer is not { } node || (node.Domain.Length != 0 && node.Domain != "ai.onnx"))
        {
            return false;
        }

        var next = depth + 1;
        switch (node.OpType)
        {
            case "Identity" or "Neg" or "Unsqueeze" or "Squeeze" or "Reshape" or "Expand" or "Transpose" or "Slice" or "Gather" or "Trilu" or "Tile":
                return ZeroOrAbsorbing(node.Input(0)!, next);
            case "Cast" or "CastLike":
                // Widening keeps values; narrowing sends absorbing values to infinity and keeps zeros.
                return ElementTypes.IsFloat(analysis.ElementTypeOf(node.Input(0)!)) && ZeroOrAbsorbing(node.Input(0)!, next);
            case "ConstantOfShape":
                return node.Attribute("value")?.T is not { } fill || ConstantTensor.FromProto(fill) is { } filled && filled.Data.All(IsZeroOrAbsorbing);
            case "Where":
                return ZeroOrAbsorbing(node.Input(1)!, next) && ZeroOrAbsorbing(node.Input(2)!, next);
            case "ScatterND" or "ScatterElements":
                return ZeroOrAbsorbing(node.Input(0)!, next) && ZeroOrAbsorbing(node.Input(2)!, next);
            case "Concat":
                return node.Inputs.All(i => i is not null && ZeroOrAbsorbing(i, next));
            case "Mul" when node.Inputs.Count == 2:
                // An integer times 0 is 0; a non-zero integer times an absorbing value is at least as large (or infinite).
                return (ZeroOrAbsorbing(node.Input(0)!, next) && IsInteger(node.Input(1)!, next)) ||
                       (ZeroOrAbsorbing(node.Input(1)!, next) && IsInteger(node.Input(0)!, next));
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
