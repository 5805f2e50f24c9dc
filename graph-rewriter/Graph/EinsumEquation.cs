namespace OrtFlash.GraphRewriter.Graph;

/// <summary>
/// An Einsum equation with explicit subscripts: one string of letters per operand and one for the
/// output (derived as in numpy when the equation has no "->": the ellipsis axes, then the letters
/// used once, sorted). An ellipsis is expanded into letters the equation does not use, one per axis
/// it stands for, which needs the rank of each operand holding one; letters repeated inside one
/// operand (diagonals) are not represented.
/// </summary>
/// <param name="Operands">The subscripts of each operand, one letter per axis.</param>
/// <param name="Output">The subscripts of the result.</param>
public sealed record EinsumEquation(IReadOnlyList<string> Operands, string Output)
{
    private const string Ellipsis = "...";

    /// <summary>
    /// Parses <paramref name="equation"/>; null when it is malformed, repeats a letter in one operand,
    /// or has an ellipsis in an operand whose rank <paramref name="operandRanks"/> does not give.
    /// </summary>
    /// <param name="equation">The Einsum's equation attribute.</param>
    /// <param name="operandRanks">The rank of each operand, where known; only needed for ellipses.</param>
    public static EinsumEquation? Parse(string? equation, IReadOnlyList<int?>? operandRanks = null)
    {
        if (equation is null)
        {
            return null;
        }

        var text = string.Concat(equation.Where(c => !char.IsWhiteSpace(c)));
        var arrow = text.IndexOf("->", StringComparison.Ordinal);
        var inputs = (arrow < 0 ? text : text[..arrow]).Split(',');
        string output;
        if (arrow < 0)
        {
            var counts = string.Concat(inputs).Where(char.IsAsciiLetter).GroupBy(c => c).ToDictionary(g => g.Key, g => g.Count());
            var ellipsis = inputs.Any(s => s.Contains(Ellipsis, StringComparison.Ordinal)) ? Ellipsis : "";
            output = ellipsis + string.Concat(counts.Where(p => p.Value == 1).Select(p => p.Key).Order());
        }
        else
        {
            output = text[(arrow + 2)..];
        }

        if (text.Contains('.', StringComparison.Ordinal))
        {
            if (ExpandEllipses(inputs, output, operandRanks) is not { } expanded)
            {
                return null;
            }

            (inputs, output) = expanded;
        }

        bool Valid(string subscripts) => subscripts.All(char.IsAsciiLetter) && subscripts.Distinct().Count() == subscripts.Length;
        if (inputs.Any(s => !Valid(s)) || !Valid(output) || output.Any(c => !inputs.Any(s => s.Contains(c, StringComparison.Ordinal))))
        {
            return null;
        }

        return new EinsumEquation(inputs, output);
    }

    /// <summary>The indices of the operands of <paramref name="equation"/> that hold an ellipsis.</summary>
    public static IReadOnlyList<int> OperandsWithEllipsis(string? equation)
    {
        if (equation is null)
        {
            return [];
        }

        var arrow = equation.IndexOf("->", StringComparison.Ordinal);
        return (arrow < 0 ? equation : equation[..arrow]).Split(',')
            .Select((subscripts, index) => (subscripts, index))
            .Where(o => o.subscripts.Contains(Ellipsis, StringComparison.Ordinal))
            .Select(o => o.index).ToList();
    }

    /// <summary>
    /// Replaces each ellipsis by letters unused in the equation. As in numpy, the ellipsis axes of
    /// the operands broadcast against each other aligned on the right, so an operand whose ellipsis
    /// covers fewer axes takes the last of the letters, and the output's ellipsis takes them all.
    /// </summary>
    private static (string[] Inputs, string Output)? ExpandEllipses(string[] inputs, string output, IReadOnlyList<int?>? ranks)
    {
        if (ranks is null || ranks.Count != inputs.Length)
        {
            return null;
        }

        var spans = new int[inputs.Length];
        for (var i = 0; i < inputs.Length; i++)
        {
            var at = inputs[i].IndexOf(Ellipsis, StringComparison.Ordinal);
            if (at < 0)
            {
                continue;
            }

            var letters = inputs[i].Length - Ellipsis.Length;
            if (inputs[i].IndexOf(Ellipsis, at + Ellipsis.Length, StringComparison.Ordinal) >= 0 || ranks[i] is not { } rank || rank < letters)
            {
                return null;
            }

            spans[i] = rank - letters;
        }

        var width = spans.Length == 0 ? 0 : spans.Max();
        var used = string.Concat(inputs) + output;
        var axes = string.Concat(Enumerable.Range('a', 26).Concat(Enumerable.Range('A', 26)).Select(c => (char)c)
                                           .Where(c => !used.Contains(c, StringComparison.Ordinal)).Take(width));
        if (axes.Length < width || output.Split(Ellipsis).Length > 2)
        {
            return null;
        }

        return (inputs.Select((s, i) => s.Replace(Ellipsis, axes[(width - spans[i])..], StringComparison.Ordinal)).ToArray(),
                output.Replace(Ellipsis, axes, StringComparison.Ordinal));
    }

    /// <summary>
    /// The output shape for operands of the given shapes (a letter takes the size of the first
    /// operand axis that is not 1); null when a rank does not match its subscripts.
    /// </summary>
    public IReadOnlyList<Dim>? OutputShape(IReadOnlyList<IReadOnlyList<Dim>?> shapes)
    {
        ArgumentNullException.ThrowIfNull(shapes);
        if (shapes.Count != Operands.Count)
        {
            return null;
        }

        var sizes = new Dictionary<char, Dim>();
        for (var i = 0; i < Operands.Count; i++)
        {
            if (shapes[i] is not { } shape || shape.Count != Operands[i].Length)
            {
                return null;
            }

            for (var axis = 0; axis < shape.Count; axis++)
            {
                var letter = Operands[i][axis];
                if (!sizes.TryGetValue(letter, out var known) || known.Size == 1)
                {
                    sizes[letter] = shape[axis];
                }
            }
        }

        return Output.Select(c => sizes[c]).ToArray();
    }

    /// <summary>The permutation that brings axes labelled <paramref name="from"/> into the order <paramref name="to"/>.</summary>
    public static long[] Permutation(string from, string to)
    {
        ArgumentNullException.ThrowIfNull(from);
        ArgumentNullException.ThrowIfNull(to);
        return to.Select(c => (long)from.IndexOf(c, StringComparison.Ordinal)).ToArray();
    }
}
