namespace OrtFlash.GraphRewriter.Graph;

/// <summary>
/// An Einsum equation with explicit subscripts: one string of letters per operand and one for the
/// output (derived as in numpy when the equation has no "->": the letters used once, sorted).
/// Ellipses and letters repeated inside one operand (diagonals) are not represented: parsing such
/// an equation gives null.
/// </summary>
/// <param name="Operands">The subscripts of each operand, one letter per axis.</param>
/// <param name="Output">The subscripts of the result.</param>
public sealed record EinsumEquation(IReadOnlyList<string> Operands, string Output)
{
    /// <summary>Parses <paramref name="equation"/>; null when it uses an ellipsis, a repeated letter, or is malformed.</summary>
    public static EinsumEquation? Parse(string? equation)
    {
        if (equation is null)
        {
            return null;
        }

        var text = string.Concat(equation.Where(c => !char.IsWhiteSpace(c)));
        if (text.Contains('.', StringComparison.Ordinal))
        {
            return null;
        }

        var arrow = text.IndexOf("->", StringComparison.Ordinal);
        var inputs = (arrow < 0 ? text : text[..arrow]).Split(',');
        string output;
        if (arrow < 0)
        {
            var counts = string.Concat(inputs).GroupBy(c => c).ToDictionary(g => g.Key, g => g.Count());
            output = string.Concat(counts.Where(p => p.Value == 1).Select(p => p.Key).Order());
        }
        else
        {
            output = text[(arrow + 2)..];
        }

        bool Valid(string subscripts) => subscripts.All(char.IsAsciiLetter) && subscripts.Distinct().Count() == subscripts.Length;
        if (inputs.Any(s => !Valid(s)) || !Valid(output) || output.Any(c => !inputs.Any(s => s.Contains(c, StringComparison.Ordinal))))
        {
            return null;
        }

        return new EinsumEquation(inputs, output);
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
