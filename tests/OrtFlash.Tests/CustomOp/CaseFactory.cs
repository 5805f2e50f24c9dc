namespace OrtFlash.Tests.CustomOp;

/// <summary>Random op cases with fixed seeds; data are rounded to the element type before use.</summary>
public static class CaseFactory
{
    public static AttentionCase Make(
        int seed,
        long[] query,
        long[] key,
        long[] value,
        ElementType type = ElementType.Float32,
        long[]? bias = null,
        long[]? keep = null,
        double keepProbability = 0.8,
        float queryMagnitude = 1f,
        float valueMagnitude = 1f,
        float biasMagnitude = 1f,
        float? scale = null,
        int causal = 0,
        float softcap = 0,
        string? maskedRows = null)
    {
        var rng = new Random(seed);
        return new AttentionCase
        {
            Type = type,
            QueryShape = query,
            KeyShape = key,
            ValueShape = value,
            BiasShape = bias,
            KeepShape = keep,
            Query = OpRunner.RoundTo(Uniform(rng, Count(query), queryMagnitude), type),
            Key = OpRunner.RoundTo(Uniform(rng, Count(key), 1f), type),
            Value = OpRunner.RoundTo(Uniform(rng, Count(value), valueMagnitude), type),
            Bias = bias is null ? null : OpRunner.RoundTo(Uniform(rng, Count(bias), biasMagnitude), type),
            Keep = keep is null ? null : Enumerable.Range(0, (int)Count(keep)).Select(_ => rng.NextDouble() < keepProbability).ToArray(),
            Scale = scale,
            Causal = causal,
            Softcap = softcap,
            MaskedRows = maskedRows,
        };
    }

    public static long Count(long[] shape) => shape.Aggregate(1L, (a, b) => a * b);

    private static float[] Uniform(Random rng, long count, float magnitude) =>
        Enumerable.Range(0, (int)count).Select(_ => (float)((rng.NextDouble() * 2 - 1) * magnitude)).ToArray();
}
