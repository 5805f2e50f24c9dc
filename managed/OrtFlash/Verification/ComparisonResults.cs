using System.Globalization;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OrtFlash.Verification;

/// <summary>How one output of the actual model compares with the expected one.</summary>
public enum OutputVerdict
{
    /// <summary>Same shape and type, every element within tolerance, the same NaNs and infinities.</summary>
    Match,

    /// <summary>Some element is outside the tolerance, or NaN/infinity on one side only.</summary>
    OutOfTolerance,

    /// <summary>The shapes differ; elements were not compared.</summary>
    ShapeMismatch,

    /// <summary>The element types differ; elements were not compared.</summary>
    TypeMismatch,

    /// <summary>The expected model has this output, the actual one does not.</summary>
    MissingInActual,

    /// <summary>The actual model has an output the expected one does not.</summary>
    UnexpectedInActual,

    /// <summary>Not a numeric or boolean tensor (strings, sequences, maps); reported, not compared, not failing.</summary>
    NotCompared,
}

/// <summary>One element of an output and how far apart the two models put it.</summary>
/// <param name="Index">Its coordinates in the output.</param>
/// <param name="Expected">The expected model's value.</param>
/// <param name="Actual">The actual model's value.</param>
public readonly record struct ElementDifference(IReadOnlyList<long> Index, double Expected, double Actual)
{
    /// <summary>|Actual − Expected|; NaN when one side is not finite.</summary>
    public double AbsoluteDifference => Math.Abs(Actual - Expected);

    /// <summary>"[1,3,17] 0.51234 → 0.51301".</summary>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"[{string.Join(",", Index)}] {Expected:G6} → {Actual:G6}");
}

/// <summary>
/// One output at one sequence length. Differences are measured over elements finite on both sides;
/// <see cref="MaxRelativeDifference"/> divides by <c>max(|expected|, 1e-3 · Magnitude)</c>, so that elements near zero
/// do not turn rounding noise into huge ratios. <see cref="ToleranceUsed"/> is the largest
/// <c>|actual − expected| / allowed</c>: at most 1 when every element is within <see cref="Tolerance"/>.
/// </summary>
public sealed record OutputComparison
{
    /// <summary>The output's name.</summary>
    public required string Name { get; init; }

    /// <summary>The verdict; <see cref="Passed"/> says whether it fails the comparison.</summary>
    public required OutputVerdict Verdict { get; init; }

    /// <summary>Element type in the expected model (null when it lacks the output).</summary>
    public TensorElementType? ExpectedType { get; init; }

    /// <summary>Element type in the actual model (null when it lacks the output).</summary>
    public TensorElementType? ActualType { get; init; }

    /// <summary>Shape in the expected model's result.</summary>
    public IReadOnlyList<long>? ExpectedShape { get; init; }

    /// <summary>Shape in the actual model's result.</summary>
    public IReadOnlyList<long>? ActualShape { get; init; }

    /// <summary>The tolerance applied.</summary>
    public ComparisonTolerance Tolerance { get; init; }

    /// <summary>Largest finite |expected| (the scale of the absolute tolerance); 0 when all are 0.</summary>
    public double Magnitude { get; init; }

    /// <summary>Largest |actual − expected| over elements finite on both sides.</summary>
    public double MaxAbsoluteDifference { get; init; }

    /// <summary>Largest |actual − expected| / max(|expected|, 1e-3 · Magnitude).</summary>
    public double MaxRelativeDifference { get; init; }

    /// <summary>Largest |actual − expected| / allowed; ≤ 1 within tolerance.</summary>
    public double ToleranceUsed { get; init; }

    /// <summary>Elements compared.</summary>
    public long ElementCount { get; init; }

    /// <summary>Elements outside the tolerance (finite on both sides).</summary>
    public long ElementsOutOfTolerance { get; init; }

    /// <summary>Elements that are NaN on one side only, or an infinity the other side does not have.</summary>
    public long NonFiniteMismatches { get; init; }

    /// <summary>The elements with the largest differences, non-finite mismatches first.</summary>
    public IReadOnlyList<ElementDifference> LargestDifferences { get; init; } = [];

    /// <summary>True unless this output fails the comparison.</summary>
    public bool Passed => Verdict is OutputVerdict.Match or OutputVerdict.NotCompared;
}

/// <summary>Both models run on the inputs generated for one sequence length.</summary>
public sealed record ComparisonRun
{
    /// <summary>The sequence length the inputs were generated for.</summary>
    public required int SequenceLength { get; init; }

    /// <summary>What was fed, one line per input ("input_ids Int64[2,7]: token ids in [0, 128) ...").</summary>
    public required IReadOnlyList<string> Inputs { get; init; }

    /// <summary>Inputs the two models declare differently (missing on one side); empty when they agree.</summary>
    public IReadOnlyList<string> InputMismatches { get; init; } = [];

    /// <summary>The actual model's error when it failed to run; its outputs are then absent.</summary>
    public string? ActualRunError { get; init; }

    /// <summary>Per output: the expected model's outputs in order, then any the actual model adds.</summary>
    public IReadOnlyList<OutputComparison> Outputs { get; init; } = [];

    /// <summary>True when the actual model ran on the same inputs and every output passed.</summary>
    public bool Passed => ActualRunError is null && InputMismatches.Count == 0 && Outputs.All(o => o.Passed);
}

/// <summary>The result of <see cref="ModelComparer.Compare"/>.</summary>
public sealed record ComparisonReport
{
    /// <summary>The reference model's name.</summary>
    public required string ExpectedModel { get; init; }

    /// <summary>The model under test's name.</summary>
    public required string ActualModel { get; init; }

    /// <summary>The provider the expected model ran on.</summary>
    public required ExecutionProvider ExpectedProvider { get; init; }

    /// <summary>The provider the actual model ran on.</summary>
    public required ExecutionProvider ActualProvider { get; init; }

    /// <summary>One run per sequence length, in the order asked.</summary>
    public required IReadOnlyList<ComparisonRun> Runs { get; init; }

    /// <summary>True when every run passed.</summary>
    public bool Passed => Runs.All(r => r.Passed);
}
