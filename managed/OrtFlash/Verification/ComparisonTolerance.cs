using Microsoft.ML.OnnxRuntime.Tensors;

namespace OrtFlash.Verification;

/// <summary>
/// How far an actual output element may be from the expected one:
/// <c>|actual − expected| ≤ Absolute · M + Relative · |expected|</c>, where M is the output's magnitude (the largest
/// finite |expected| in that output, or 1 when all are 0). Scaling the absolute term by M makes the test
/// independent of the output's units, and lets elements near zero differ by the rounding noise of the large ones.
/// </summary>
/// <param name="Relative">The relative term (rtol).</param>
/// <param name="Absolute">The absolute term, as a fraction of the output's magnitude (atol).</param>
public readonly record struct ComparisonTolerance(double Relative, double Absolute)
{
    /// <summary>float/double: 1e-4 relative, 1e-4 of the magnitude.</summary>
    public static ComparisonTolerance Float32 { get; } = new(1e-4, 1e-4);

    /// <summary>float16 (10-bit mantissa, eps ≈ 1e-3): about ten roundings, 1e-2.</summary>
    public static ComparisonTolerance Float16 { get; } = new(1e-2, 1e-2);

    /// <summary>bfloat16 (7-bit mantissa, eps ≈ 8e-3): 5e-2.</summary>
    public static ComparisonTolerance BFloat16 { get; } = new(5e-2, 5e-2);

    /// <summary>Integers and booleans: exact.</summary>
    public static ComparisonTolerance Exact { get; } = new(0, 0);

    /// <summary>The default for outputs of this element type.</summary>
    public static ComparisonTolerance For(TensorElementType type) => type switch
    {
        TensorElementType.Float or TensorElementType.Double => Float32,
        TensorElementType.Float16 => Float16,
        TensorElementType.BFloat16 => BFloat16,
        _ => Exact,
    };

    /// <summary>The largest difference allowed for an element whose expected value is <paramref name="expected"/>,
    /// in an output of magnitude <paramref name="magnitude"/>.</summary>
    public double Allowed(double expected, double magnitude) => Absolute * magnitude + Relative * Math.Abs(expected);

    /// <inheritdoc />
    public override string ToString() => $"rtol {Format(Relative)}, atol {Format(Absolute)}·max|expected|";

    private static string Format(double value) => value.ToString(
        value == 0 || Math.Abs(value) is >= 1e-2 and < 1e3 ? "0.###" : "0.##e+0", System.Globalization.CultureInfo.InvariantCulture);
}
