using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OrtFlash.Verification;

/// <summary>
/// Runs two models — an original and its rewrite, one model twice, or one model on two execution providers — on the
/// same generated inputs and compares every output.
/// </summary>
public static class ModelComparer
{
    /// <summary>Share of the magnitude under which <see cref="OutputComparison.MaxRelativeDifference"/> stops dividing by |expected|.</summary>
    private const double RelativeFloor = 1e-3;

    /// <summary>
    /// Compares <paramref name="actual"/> with <paramref name="expected"/> at every sequence length of
    /// <paramref name="options"/>. Inputs are generated from the expected model's declared inputs (and its
    /// embedding tables); the actual model gets the inputs it declares too.
    /// </summary>
    /// <exception cref="InvalidModelException">Either model cannot be loaded, or the expected model fails on the generated inputs.</exception>
    /// <exception cref="NotSupportedException">The expected model has an input that cannot be generated.</exception>
    public static ComparisonReport Compare(ModelSource expected, ModelSource actual, ComparisonOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(expected);
        ArgumentNullException.ThrowIfNull(actual);
        options ??= new ComparisonOptions();
        options.Validate();
        options.Inputs.Validate();

        using var expectedSession = expected.OpenSession(options.ExpectedSession);
        using var actualSession = actual.OpenSession(options.ActualSession);
        var generator = ModelInputGenerator.ForSession(expectedSession.Session, expected.Model);
        var runs = new List<ComparisonRun>();
        foreach (int sequenceLength in options.SequenceLengths)
        {
            using var inputs = generator.Generate(options.Inputs with { SequenceLength = sequenceLength });
            runs.Add(CompareRun(expected, expectedSession.Session, actualSession.Session, inputs, sequenceLength, options));
        }

        return new ComparisonReport
        {
            ExpectedModel = expected.Name,
            ActualModel = actual.Name,
            ExpectedProvider = expectedSession.Provider,
            ActualProvider = actualSession.Provider,
            Runs = runs,
        };
    }

    private static ComparisonRun CompareRun(ModelSource expectedSource, InferenceSession expected, InferenceSession actual,
        GeneratedInputs inputs, int sequenceLength, ComparisonOptions options)
    {
        var described = inputs.Select(i => i.ToString()).ToArray();
        Dictionary<string, OutputTensor> expectedOutputs;
        try
        {
            expectedOutputs = Run(expected, inputs, expected.InputNames);
        }
        catch (OnnxRuntimeException error)
        {
            throw new InvalidModelException(expectedSource.Name,
                $"'{expectedSource.Name}' fails on the generated inputs at sequence length {sequenceLength} " +
                $"({string.Join("; ", described)}): {error.Message}", error);
        }

        var declared = actual.InputNames.ToHashSet(StringComparer.Ordinal);
        var generated = inputs.Names.ToHashSet(StringComparer.Ordinal);
        var inputMismatches = generated.Where(n => !declared.Contains(n)).Select(n => $"'{n}' is an input of the expected model only")
            .Concat(declared.Where(n => !generated.Contains(n)).Select(n => $"'{n}' is an input of the actual model only"))
            .ToArray();
        if (inputMismatches.Length > 0 && declared.Any(n => !generated.Contains(n)))
        {
            return new ComparisonRun
            {
                SequenceLength = sequenceLength,
                Inputs = described,
                InputMismatches = inputMismatches,
                ActualRunError = "not run: it needs inputs the expected model does not have",
            };
        }

        Dictionary<string, OutputTensor> actualOutputs;
        try
        {
            actualOutputs = Run(actual, inputs, actual.InputNames);
        }
        catch (OnnxRuntimeException error)
        {
            return new ComparisonRun
            {
                SequenceLength = sequenceLength,
                Inputs = described,
                InputMismatches = inputMismatches,
                ActualRunError = error.Message,
            };
        }

        var outputs = new List<OutputComparison>();
        foreach (var name in expected.OutputNames)
        {
            outputs.Add(actualOutputs.TryGetValue(name, out var actualOutput)
                ? CompareOutput(name, expectedOutputs[name], actualOutput, options)
                : Missing(name, OutputVerdict.MissingInActual, expectedOutputs[name], isExpectedSide: true));
        }

        foreach (var name in actual.OutputNames.Where(n => !expectedOutputs.ContainsKey(n)))
        {
            outputs.Add(Missing(name, OutputVerdict.UnexpectedInActual, actualOutputs[name], isExpectedSide: false));
        }

        return new ComparisonRun { SequenceLength = sequenceLength, Inputs = described, InputMismatches = inputMismatches, Outputs = outputs };
    }

    private static Dictionary<string, OutputTensor> Run(InferenceSession session, GeneratedInputs inputs, IReadOnlyList<string> inputNames)
    {
        var fed = inputs.Where(i => inputNames.Contains(i.Name)).ToArray();
        // A failing run is reported through its exception, with the model and inputs named; ONNX Runtime's own
        // log line would only repeat it on stderr.
        using var runOptions = new RunOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
        using var results = session.Run(runOptions, fed.Select(i => i.Name).ToArray(), fed.Select(i => i.Value).ToArray(), session.OutputNames);
        var outputs = new Dictionary<string, OutputTensor>(StringComparer.Ordinal);
        for (int i = 0; i < session.OutputNames.Count; i++)
        {
            outputs[session.OutputNames[i]] = OutputTensor.Read(results[i]);
        }

        return outputs;
    }

    private static OutputComparison Missing(string name, OutputVerdict verdict, OutputTensor present, bool isExpectedSide) => new()
    {
        Name = name,
        Verdict = verdict,
        ExpectedType = isExpectedSide ? present.ElementType : null,
        ActualType = isExpectedSide ? null : present.ElementType,
        ExpectedShape = isExpectedSide ? present.Shape : null,
        ActualShape = isExpectedSide ? null : present.Shape,
    };

    private static OutputComparison CompareOutput(string name, OutputTensor expected, OutputTensor actual, ComparisonOptions options)
    {
        var tolerance = options.ToleranceFor(expected.ElementType);
        var header = new OutputComparison
        {
            Name = name,
            Verdict = OutputVerdict.Match,
            ExpectedType = expected.ElementType,
            ActualType = actual.ElementType,
            ExpectedShape = expected.Shape,
            ActualShape = actual.Shape,
            Tolerance = tolerance,
        };
        if (expected.ElementType != actual.ElementType)
        {
            return header with { Verdict = OutputVerdict.TypeMismatch };
        }

        if (!expected.Shape.SequenceEqual(actual.Shape))
        {
            return header with { Verdict = OutputVerdict.ShapeMismatch };
        }

        if (expected.Values is null || actual.Values is null)
        {
            return header with { Verdict = OutputVerdict.NotCompared };
        }

        return Measure(header, expected.Values, actual.Values, expected.Shape, tolerance, options.LargestDifferencesPerOutput);
    }

    private static OutputComparison Measure(OutputComparison header, double[] expected, double[] actual, long[] shape,
        ComparisonTolerance tolerance, int keep)
    {
        double magnitude = 0;
        foreach (double value in expected)
        {
            if (double.IsFinite(value))
            {
                magnitude = Math.Max(magnitude, Math.Abs(value));
            }
        }

        double scale = magnitude > 0 ? magnitude : 1;
        double maxAbsolute = 0, maxRelative = 0, toleranceUsed = 0;
        long outOfTolerance = 0, nonFinite = 0;
        var largest = new LargestDifferences(keep);
        for (int i = 0; i < expected.Length; i++)
        {
            double e = expected[i], a = actual[i];
            if (!double.IsFinite(e) || !double.IsFinite(a))
            {
                bool same = (double.IsNaN(e) && double.IsNaN(a)) || e.Equals(a);
                if (!same)
                {
                    nonFinite++;
                    largest.Offer(i, double.PositiveInfinity, e, a);
                }

                continue;
            }

            double difference = Math.Abs(a - e);
            maxAbsolute = Math.Max(maxAbsolute, difference);
            maxRelative = Math.Max(maxRelative, difference / Math.Max(Math.Abs(e), RelativeFloor * scale));
            double allowed = tolerance.Allowed(e, scale);
            double used = difference == 0 ? 0 : allowed > 0 ? difference / allowed : double.PositiveInfinity;
            toleranceUsed = Math.Max(toleranceUsed, used);
            if (difference > allowed)
            {
                outOfTolerance++;
            }

            if (difference > 0)
            {
                largest.Offer(i, difference, e, a);
            }
        }

        return header with
        {
            Verdict = outOfTolerance == 0 && nonFinite == 0 ? OutputVerdict.Match : OutputVerdict.OutOfTolerance,
            Magnitude = magnitude,
            MaxAbsoluteDifference = maxAbsolute,
            MaxRelativeDifference = maxRelative,
            ToleranceUsed = toleranceUsed,
            ElementCount = expected.Length,
            ElementsOutOfTolerance = outOfTolerance,
            NonFiniteMismatches = nonFinite,
            LargestDifferences = largest.ToList(shape),
        };
    }

    /// <summary>The <c>capacity</c> largest differences seen, kept sorted (capacity is a handful).</summary>
    private sealed class LargestDifferences(int capacity)
    {
        private readonly List<(double Key, int Index, double Expected, double Actual)> kept = [];

        public void Offer(int index, double key, double expected, double actual)
        {
            if (capacity == 0 || (kept.Count == capacity && key <= kept[^1].Key))
            {
                return;
            }

            int at = kept.FindIndex(k => key > k.Key);
            kept.Insert(at < 0 ? kept.Count : at, (key, index, expected, actual));
            if (kept.Count > capacity)
            {
                kept.RemoveAt(kept.Count - 1);
            }
        }

        public IReadOnlyList<ElementDifference> ToList(long[] shape) =>
            kept.Select(k => new ElementDifference(Coordinates(k.Index, shape), k.Expected, k.Actual)).ToArray();

        private static long[] Coordinates(long flat, long[] shape)
        {
            var index = new long[shape.Length];
            for (int axis = shape.Length - 1; axis >= 0; axis--)
            {
                index[axis] = shape[axis] == 0 ? 0 : flat % shape[axis];
                flat = shape[axis] == 0 ? 0 : flat / shape[axis];
            }

            return index;
        }
    }
}
