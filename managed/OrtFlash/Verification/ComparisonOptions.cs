namespace OrtFlash.Verification;

/// <summary>How <see cref="ModelComparer"/> generates inputs, runs the two models and judges their outputs.</summary>
public sealed record ComparisonOptions
{
    /// <summary>The sequence lengths to run at; each gets its own generated inputs.</summary>
    public IReadOnlyList<int> SequenceLengths { get; init; } = [7, 16];

    /// <summary>Batch, past length, seed, padding; <see cref="InputGenerationOptions.SequenceLength"/> is replaced by each
    /// of <see cref="SequenceLengths"/>.</summary>
    public InputGenerationOptions Inputs { get; init; } = new();

    /// <summary>Overrides the relative tolerance of every floating-point output; null: the default of its type
    /// (<see cref="ComparisonTolerance.For"/>).</summary>
    public double? RelativeTolerance { get; init; }

    /// <summary>Overrides the absolute tolerance (a fraction of the output's magnitude) of every floating-point output.</summary>
    public double? AbsoluteTolerance { get; init; }

    /// <summary>Session settings of the expected (reference) model; CPU by default.</summary>
    public OrtFlashSessionOptions ExpectedSession { get; init; } = new() { Provider = ExecutionProvider.Cpu };

    /// <summary>Session settings of the actual model (the one under test); CPU by default.</summary>
    public OrtFlashSessionOptions ActualSession { get; init; } = new() { Provider = ExecutionProvider.Cpu };

    /// <summary>How many of the largest element differences each output keeps.</summary>
    public int LargestDifferencesPerOutput { get; init; } = 3;

    /// <summary>The tolerance for an output of this element type under these options.</summary>
    public ComparisonTolerance ToleranceFor(Microsoft.ML.OnnxRuntime.Tensors.TensorElementType type)
    {
        var tolerance = ComparisonTolerance.For(type);
        if (tolerance == ComparisonTolerance.Exact)
        {
            return tolerance;
        }

        return new ComparisonTolerance(RelativeTolerance ?? tolerance.Relative, AbsoluteTolerance ?? tolerance.Absolute);
    }

    internal void Validate()
    {
        ArgumentNullException.ThrowIfNull(SequenceLengths, nameof(SequenceLengths));
        if (SequenceLengths.Count == 0 || SequenceLengths.Any(s => s < 1))
        {
            throw new ArgumentException("Sequence lengths must be one or more positive numbers.", nameof(SequenceLengths));
        }

        ArgumentNullException.ThrowIfNull(Inputs, nameof(Inputs));
        ArgumentNullException.ThrowIfNull(ExpectedSession, nameof(ExpectedSession));
        ArgumentNullException.ThrowIfNull(ActualSession, nameof(ActualSession));
        if (RelativeTolerance is < 0 || AbsoluteTolerance is < 0 || double.IsNaN(RelativeTolerance ?? 0) || double.IsNaN(AbsoluteTolerance ?? 0))
        {
            throw new ArgumentException("Tolerances must be non-negative numbers.");
        }

        ArgumentOutOfRangeException.ThrowIfNegative(LargestDifferencesPerOutput, nameof(LargestDifferencesPerOutput));
    }
}
