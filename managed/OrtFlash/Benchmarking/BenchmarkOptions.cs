using OrtFlash.Verification;

namespace OrtFlash.Benchmarking;

/// <summary>How <see cref="ModelBenchmark"/> generates inputs, opens the two sessions and times them.</summary>
public sealed record BenchmarkOptions
{
    /// <summary>The sequence lengths to time at; each gets its own generated inputs.</summary>
    public IReadOnlyList<int> SequenceLengths { get; init; } = [128, 512];

    /// <summary>Batch, past length, seed, padding; <see cref="InputGenerationOptions.SequenceLength"/> is replaced by each
    /// of <see cref="SequenceLengths"/>.</summary>
    public InputGenerationOptions Inputs { get; init; } = new();

    /// <summary>Session settings of the original model; CPU by default.</summary>
    public OrtFlashSessionOptions OriginalSession { get; init; } = new() { Provider = ExecutionProvider.Cpu };

    /// <summary>Session settings of the rewritten model; CPU by default.</summary>
    public OrtFlashSessionOptions RewrittenSession { get; init; } = new() { Provider = ExecutionProvider.Cpu };

    /// <summary>Untimed runs of each model per sequence length before timing (at least one always runs: it checks that
    /// both models run on the inputs).</summary>
    public int WarmupIterations { get; init; } = 3;

    /// <summary>Timed runs of each model per sequence length, interleaved (original, rewritten, original, …).</summary>
    public int Iterations { get; init; } = 20;

    /// <summary>Timing of one sequence length stops after this long even if fewer than <see cref="Iterations"/> ran (one
    /// pair always runs); null: no limit.</summary>
    public TimeSpan? TimeBudget { get; init; } = TimeSpan.FromSeconds(60);

    internal void Validate()
    {
        ArgumentNullException.ThrowIfNull(SequenceLengths, nameof(SequenceLengths));
        if (SequenceLengths.Count == 0 || SequenceLengths.Any(s => s < 1))
        {
            throw new ArgumentException("Sequence lengths must be one or more positive numbers.", nameof(SequenceLengths));
        }

        ArgumentNullException.ThrowIfNull(Inputs, nameof(Inputs));
        ArgumentNullException.ThrowIfNull(OriginalSession, nameof(OriginalSession));
        ArgumentNullException.ThrowIfNull(RewrittenSession, nameof(RewrittenSession));
        ArgumentOutOfRangeException.ThrowIfNegative(WarmupIterations, nameof(WarmupIterations));
        ArgumentOutOfRangeException.ThrowIfLessThan(Iterations, 1, nameof(Iterations));
        if (TimeBudget is { } budget && budget <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(TimeBudget), budget, "The time budget must be positive.");
        }

        Inputs.Validate();
    }
}
