using OrtFlash.GraphRewriter.Graph;

namespace OrtFlash.GraphRewriter.Patterns;

/// <summary>
/// One position of a pattern with the alternatives exporters put there. Alternatives are tried in
/// order; the first that matches wins and its result carries the tag saying which one it was.
/// </summary>
/// <typeparam name="TResult">What a matching alternative yields (a record holding its tag).</typeparam>
/// <param name="Name">The slot's name in traces.</param>
/// <param name="Alternatives">The alternatives, most specific first.</param>
public sealed record Slot<TResult>(string Name, IReadOnlyList<Alternative<TResult>> Alternatives)
    where TResult : class
{
    /// <summary>The first alternative's result for <paramref name="value"/>, or null when none matches.</summary>
    public TResult? Match(Value value)
    {
        foreach (var alternative in Alternatives)
        {
            if (alternative.TryMatch(value) is { } result)
            {
                return result;
            }
        }

        return null;
    }
}

/// <summary>One way a slot can look.</summary>
/// <typeparam name="TResult">What the alternative yields when it matches.</typeparam>
/// <param name="Name">A short description for traces.</param>
/// <param name="TryMatch">Matches the value flowing out of the slot (walking to its producers); null when it does not match.</param>
public sealed record Alternative<TResult>(string Name, Func<Value, TResult?> TryMatch)
    where TResult : class;

/// <summary>Small queries on the graph that patterns are written with.</summary>
public static class Ops
{
    /// <summary>The producer of <paramref name="value"/> when it is a default-domain <paramref name="opType"/> node.</summary>
    public static Node? Producer(Value? value, string opType) =>
        value?.Producer is { } node && node.Is(opType) ? node : null;

    /// <summary>The producer of <paramref name="value"/> when it is one of the default-domain <paramref name="opTypes"/>.</summary>
    public static Node? Producer(Value? value, params ReadOnlySpan<string> opTypes)
    {
        if (value?.Producer is not { } node || (node.Domain.Length != 0 && node.Domain != "ai.onnx"))
        {
            return null;
        }

        foreach (var opType in opTypes)
        {
            if (node.OpType == opType)
            {
                return node;
            }
        }

        return null;
    }

    /// <summary>
    /// For a binary node with one operand folding to a single-element constant: the other operand,
    /// the constant and the constant's input index. <paramref name="constantIndices"/> limits where
    /// the constant may sit (Div: only 1; Mul: either).
    /// </summary>
    public static (Value Operand, double Constant, int ConstantIndex)? WithScalar(
        Node node, GraphAnalysis analysis, params ReadOnlySpan<int> constantIndices)
    {
        ArgumentNullException.ThrowIfNull(node);
        ArgumentNullException.ThrowIfNull(analysis);
        if (node.Inputs.Count != 2 || node.Input(0) is not { } a || node.Input(1) is not { } b)
        {
            return null;
        }

        foreach (var index in constantIndices)
        {
            var (constant, operand) = index == 0 ? (a, b) : (b, a);
            // A one-element constant of higher rank than the operand would broadcast the result up.
            if (analysis.ConstantOf(constant) is { IsScalar: true } c && c.Dims.Count <= (analysis.ShapeOf(operand)?.Count ?? 1))
            {
                return (operand, c.Data[0], index);
            }
        }

        return null;
    }
}
