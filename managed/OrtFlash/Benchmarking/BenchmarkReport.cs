using Microsoft.ML.OnnxRuntime.Tensors;

namespace OrtFlash.Benchmarking;

/// <summary>Latency of one model at one sequence length, over its timed runs, in milliseconds.</summary>
/// <param name="Runs">Timed runs.</param>
/// <param name="MedianMs">The median.</param>
/// <param name="P10Ms">The 10th percentile (linear interpolation between the two nearest runs).</param>
/// <param name="P90Ms">The 90th percentile.</param>
public readonly record struct LatencySummary(int Runs, double MedianMs, double P10Ms, double P90Ms)
{
    /// <summary>Summarises <paramref name="milliseconds"/>, one entry per run.</summary>
    /// <exception cref="ArgumentException">There is no run.</exception>
    public static LatencySummary Of(IReadOnlyCollection<double> milliseconds)
    {
        ArgumentNullException.ThrowIfNull(milliseconds);
        if (milliseconds.Count == 0)
        {
            throw new ArgumentException("A latency summary needs at least one run.", nameof(milliseconds));
        }

        var sorted = milliseconds.Order().ToArray();
        return new LatencySummary(sorted.Length, Percentile(sorted, 0.5), Percentile(sorted, 0.1), Percentile(sorted, 0.9));
    }

    private static double Percentile(double[] sorted, double fraction)
    {
        double position = fraction * (sorted.Length - 1);
        int below = (int)Math.Floor(position);
        int above = Math.Min(below + 1, sorted.Length - 1);
        return sorted[below] + (position - below) * (sorted[above] - sorted[below]);
    }
}

/// <summary>
/// The attention probabilities (the Softmax output, batch × heads × queries × keys) that the original model
/// materialises in one attention block the rewrite fuses, as measured on a run: the largest over the blocks.
/// The fused op keeps its scores in tiles and has no such tensor.
/// </summary>
/// <param name="Blocks">Fused blocks whose probabilities were measured (those in the main graph with one Softmax).</param>
/// <param name="LargestBytes">The largest such tensor, in bytes.</param>
/// <param name="Shape">Its shape.</param>
/// <param name="ElementType">Its element type.</param>
public sealed record AttentionProbabilities(int Blocks, long LargestBytes, IReadOnlyList<long> Shape, TensorElementType ElementType);

/// <summary>Both models timed at one sequence length on the same inputs.</summary>
public sealed record BenchmarkRun
{
    /// <summary>The sequence length (new tokens per batch entry).</summary>
    public required int SequenceLength { get; init; }

    /// <summary>The generated inputs, described ("input_ids Int64[2,128]: token ids in [0, 50257)").</summary>
    public required IReadOnlyList<string> Inputs { get; init; }

    /// <summary>The original model's latency.</summary>
    public required LatencySummary Original { get; init; }

    /// <summary>The rewritten model's latency.</summary>
    public required LatencySummary Rewritten { get; init; }

    /// <summary>The rewritten model's median over the original's: below 1, the rewrite is faster.</summary>
    public double Ratio => Rewritten.MedianMs / Original.MedianMs;

    /// <summary>The largest attention probabilities the original materialises per fused block; null when not measured.</summary>
    public AttentionProbabilities? OriginalAttentionProbabilities { get; init; }
}

/// <summary>What <see cref="ModelBenchmark.Run"/> measured.</summary>
public sealed record BenchmarkReport
{
    /// <summary>The original model's name.</summary>
    public required string OriginalModel { get; init; }

    /// <summary>The rewritten model's name.</summary>
    public required string RewrittenModel { get; init; }

    /// <summary>The provider the original ran on.</summary>
    public required ExecutionProvider OriginalProvider { get; init; }

    /// <summary>The provider the rewritten model ran on.</summary>
    public required ExecutionProvider RewrittenProvider { get; init; }

    /// <summary>One entry per sequence length, in the order asked for.</summary>
    public required IReadOnlyList<BenchmarkRun> Runs { get; init; }
}
