namespace OrtFlash.Tests.CustomOp;

/// <summary>
/// How closely the op must match the double-precision reference, per element type. Inputs are already rounded
/// to the type, so the error comes from fp32 accumulation (≈1e-6 relative) plus rounding the output to T:
/// half an ulp is 2^-11 ≈ 4.9e-4 for float16 and 2^-8 ≈ 3.9e-3 for bfloat16, so the bounds are a few ulps.
/// Bounds scale with the largest |V| (the output is a convex combination of V rows).
/// </summary>
public static class Tolerance
{
    public static (double Absolute, double Relative) For(ElementType type) => type switch
    {
        ElementType.Float16 => (2e-3, 2e-3),
        ElementType.BFloat16 => (1.6e-2, 1.6e-2),
        _ => (2e-5, 1e-4),
    };

    /// <summary>float32 in one TF32 pass (the op's CUDA kernel, session config entry ortflash.cuda.float32_tensor_cores = 3):
    /// its products keep float16's 10 mantissa bits, so float16's bound.</summary>
    public static (double Absolute, double Relative) Tf32 => For(ElementType.Float16);

    /// <summary>Asserts |actual − expected| ≤ abs·max|V| + rel·|expected| element-wise (the bound of the case's type,
    /// or <paramref name="bound"/>); NaN must match NaN.</summary>
    public static void AssertClose(AttentionCase c, float[] actual, double[] expected, (double Absolute, double Relative)? bound = null)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length), $"output size of {c}");
        var (absolute, relative) = bound ?? For(c.Type);
        double valueScale = c.Value.Length == 0 ? 1 : Math.Max(1e-3, c.Value.Max(v => Math.Abs(v)));
        double worst = 0;
        int worstIndex = -1;
        for (int i = 0; i < actual.Length; i++)
        {
            if (double.IsNaN(expected[i]))
            {
                Assert.That(float.IsNaN(actual[i]), Is.True, $"element {i} of {c}: expected NaN, got {actual[i]}");
                continue;
            }

            Assert.That(float.IsFinite(actual[i]), Is.True, $"element {i} of {c}: expected {expected[i]}, got {actual[i]}");
            double excess = Math.Abs(actual[i] - expected[i]) - (absolute * valueScale + relative * Math.Abs(expected[i]));
            if (excess > worst)
            {
                worst = excess;
                worstIndex = i;
            }
        }

        Assert.That(worstIndex, Is.EqualTo(-1),
            () => $"{c}: element {worstIndex} is {actual[worstIndex]}, reference {expected[worstIndex]} (tolerance exceeded by {worst:G3})");
    }
}
