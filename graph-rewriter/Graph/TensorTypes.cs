using OrtFlash.GraphRewriter.Onnx;

namespace OrtFlash.GraphRewriter.Graph;

/// <summary>One dimension of a shape: a known size, a named symbolic size, or unknown.</summary>
public readonly record struct Dim(long? Size, string? Symbol)
{
    /// <summary>A dimension whose size nothing tells.</summary>
    public static Dim Unknown => default;

    /// <summary>A dimension of known size.</summary>
    public static Dim Of(long size) => new(size, null);

    /// <summary>A symbolic dimension (dim_param).</summary>
    public static Dim Named(string symbol) => new(null, symbol);

    /// <summary>Whether the size is a known number.</summary>
    public bool IsKnown => Size.HasValue;

    /// <summary>True when provably equal, false when provably different, null when undecidable.</summary>
    public bool? SameAs(Dim other)
    {
        if (Size is { } a && other.Size is { } b)
        {
            return a == b;
        }

        if (Symbol is not null && Symbol == other.Symbol)
        {
            return true;
        }

        return null;
    }

    /// <summary>The difference of two dimensions when it can be stated (numbers, or a symbol minus itself).</summary>
    public static Dim Subtract(Dim left, Dim right)
    {
        if (left.Size is { } a && right.Size is { } b)
        {
            return Of(a - b);
        }

        if (left.Symbol is not null && left.Symbol == right.Symbol)
        {
            return Of(0);
        }

        if (right.Size == 0)
        {
            return left;
        }

        // (P+S) − S = P: cancel a term of a symbolic sum.
        if (left.Symbol is not null && right.Symbol is not null && Terms(left) is { Count: > 1 } terms && terms.Remove(right.Symbol))
        {
            return Sum(terms);
        }

        // An opaque difference: equal only to the same difference of the same dimensions.
        return left.Symbol is not null && right.Symbol is not null ? Named($"({left.Symbol})−({right.Symbol})") : Unknown;
    }

    /// <summary>The sum of two dimensions; sums of symbols are kept as sorted term lists ("P+S").</summary>
    public static Dim Add(Dim left, Dim right) => (left.Size, right.Size) switch
    {
        ({ } a, { } b) => Of(a + b),
        (0, _) => right,
        (_, 0) => left,
        _ when left.Symbol is not null && right.Symbol is not null => Sum([.. Terms(left)!, .. Terms(right)!]),
        _ => Unknown,
    };

    private const char TermSeparator = '+';

    private static List<string>? Terms(Dim dim) =>
        dim.Symbol is null || dim.Symbol.Contains('−', StringComparison.Ordinal) ? null : [.. dim.Symbol.Split(TermSeparator)];

    private static Dim Sum(List<string> terms)
    {
        terms.Sort(StringComparer.Ordinal);
        return Named(string.Join(TermSeparator, terms));
    }

    /// <summary>
    /// Whether the dimension cannot be negative: a number ≥ 0, or a dimension name, product or sum
    /// of them (every named dimension is a size); a difference of names is not known to be.
    /// </summary>
    public bool IsNonNegative => Size is { } size ? size >= 0 : Symbol is not null && !Symbol.Contains('−', StringComparison.Ordinal);

    /// <summary>Separates the factors of a symbolic product ("2·batch·heads").</summary>
    private const char FactorSeparator = '·';

    /// <summary>The product of two dimensions; symbolic products are kept as sorted factor lists.</summary>
    public static Dim Multiply(Dim left, Dim right)
    {
        if (left.Size is { } a && right.Size is { } b)
        {
            return Of(a * b);
        }

        return Factors(left) is { } l && Factors(right) is { } r ? FromFactors(l.Coefficient * r.Coefficient, [.. l.Symbols, .. r.Symbols]) : Unknown;
    }

    /// <summary>The quotient of two products when it is exact (every factor of the divisor cancels).</summary>
    public static Dim Divide(Dim dividend, Dim divisor)
    {
        if (Factors(dividend) is not { } n || Factors(divisor) is not { } d || d.Coefficient == 0 || n.Coefficient % d.Coefficient != 0)
        {
            return Unknown;
        }

        var remaining = n.Symbols.ToList();
        foreach (var symbol in d.Symbols)
        {
            if (!remaining.Remove(symbol))
            {
                return Unknown;
            }
        }

        return FromFactors(n.Coefficient / d.Coefficient, remaining);
    }

    private static (long Coefficient, List<string> Symbols)? Factors(Dim dim)
    {
        if (dim.Size is { } size)
        {
            return (size, []);
        }

        if (dim.Symbol is null)
        {
            return null;
        }

        long coefficient = 1;
        var symbols = new List<string>();
        foreach (var part in dim.Symbol.Split(FactorSeparator))
        {
            if (long.TryParse(part, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var number))
            {
                coefficient *= number;
            }
            else
            {
                symbols.Add(part);
            }
        }

        return (coefficient, symbols);
    }

    private static Dim FromFactors(long coefficient, List<string> symbols)
    {
        if (symbols.Count == 0)
        {
            return Of(coefficient);
        }

        symbols.Sort(StringComparer.Ordinal);
        var parts = coefficient == 1 ? symbols : symbols.Prepend(coefficient.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return coefficient == 0 ? Of(0) : Named(string.Join(FactorSeparator, parts));
    }

    /// <inheritdoc/>
    public override string ToString() => Size?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? Symbol ?? "?";
}

/// <summary>The element type and (if known) the shape of a tensor value.</summary>
/// <param name="ElementType">ONNX element type.</param>
/// <param name="Shape">The dimensions, or null when even the rank is unknown.</param>
public sealed record TensorType(TensorProto.Types.DataType ElementType, IReadOnlyList<Dim>? Shape)
{
    /// <summary>The rank, or null when unknown.</summary>
    public int? Rank => Shape?.Count;

    /// <summary>Reads a declared <see cref="TypeProto"/>; null for non-tensor types.</summary>
    public static TensorType? FromProto(TypeProto? type)
    {
        if (type?.TensorType is not { } tensor)
        {
            return null;
        }

        IReadOnlyList<Dim>? shape = tensor.Shape is null
            ? null
            : tensor.Shape.Dim.Select(d => d.ValueCase switch
            {
                TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue => Dim.Of(d.DimValue),
                TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam => Dim.Named(d.DimParam),
                _ => Dim.Unknown,
            }).ToArray();
        return new TensorType((TensorProto.Types.DataType)tensor.ElemType, shape);
    }

    /// <inheritdoc/>
    public override string ToString() =>
        $"{ElementType}[{(Shape is null ? "?" : string.Join(",", Shape))}]";
}

/// <summary>Facts about ONNX element types.</summary>
public static class ElementTypes
{
    /// <summary>Whether the op's T may be this type (float, float16, bfloat16).</summary>
    public static bool IsAttentionType(TensorProto.Types.DataType type) =>
        type is TensorProto.Types.DataType.Float or TensorProto.Types.DataType.Float16 or TensorProto.Types.DataType.Bfloat16;

    /// <summary>The lowest finite value of a float type (finfo.min).</summary>
    public static double Lowest(TensorProto.Types.DataType type) => type switch
    {
        TensorProto.Types.DataType.Float => float.MinValue,
        TensorProto.Types.DataType.Float16 => (double)Half.MinValue,
        TensorProto.Types.DataType.Bfloat16 => BFloat16ToDouble(0xFF7F),
        TensorProto.Types.DataType.Double => double.MinValue,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "not a float type"),
    };

    /// <summary>Whether the type is a floating-point type.</summary>
    public static bool IsFloat(TensorProto.Types.DataType type) =>
        IsAttentionType(type) || type == TensorProto.Types.DataType.Double;

    /// <summary>Rounds <paramref name="value"/> to what a tensor of <paramref name="type"/> stores.</summary>
    public static double Round(double value, TensorProto.Types.DataType type) => type switch
    {
        TensorProto.Types.DataType.Float => (float)value,
        TensorProto.Types.DataType.Float16 => (double)(Half)value,
        TensorProto.Types.DataType.Bfloat16 => BFloat16ToDouble(DoubleToBFloat16(value)),
        TensorProto.Types.DataType.Double => value,
        TensorProto.Types.DataType.Bool => value != 0 ? 1 : 0,
        TensorProto.Types.DataType.Int8 => ToInteger(value, sbyte.MinValue, sbyte.MaxValue),
        TensorProto.Types.DataType.Uint8 => ToInteger(value, byte.MinValue, byte.MaxValue),
        TensorProto.Types.DataType.Int16 => ToInteger(value, short.MinValue, short.MaxValue),
        TensorProto.Types.DataType.Uint16 => ToInteger(value, ushort.MinValue, ushort.MaxValue),
        TensorProto.Types.DataType.Int32 => ToInteger(value, int.MinValue, int.MaxValue),
        TensorProto.Types.DataType.Uint32 => ToInteger(value, uint.MinValue, uint.MaxValue),
        _ => double.IsNaN(value) ? value : Math.Truncate(value),
    };

    private static double ToInteger(double value, double min, double max) =>
        double.IsNaN(value) ? 0 : Math.Clamp(Math.Truncate(value), min, max);

    /// <summary>bfloat16 bits, round to nearest even.</summary>
    public static ushort DoubleToBFloat16(double value)
    {
        var bits = BitConverter.SingleToUInt32Bits((float)value);
        if (float.IsNaN((float)value))
        {
            return 0x7FC0;
        }

        var rounding = 0x7FFFu + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    /// <summary>The value of bfloat16 bits.</summary>
    public static double BFloat16ToDouble(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);
}
