using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using OrtFlash.GraphRewriter.Report;
using OrtFlash.Verification;

namespace OrtFlash.Benchmarking;

/// <summary>A model that loaded but failed while being timed. The message names the model, the sequence length and the inputs.</summary>
public sealed class BenchmarkFailedException : Exception
{
    /// <summary>Creates the exception for the model named <paramref name="modelName"/>.</summary>
    public BenchmarkFailedException(string modelName, string message, Exception? innerException = null)
        : base(message, innerException) => ModelName = modelName;

    /// <summary>The model's display name (usually its path).</summary>
    public string ModelName { get; }
}

/// <summary>
/// Times an original model and its rewrite side by side, in one process, on the same generated inputs: for each
/// sequence length, warm-up runs, then timed runs interleaved original, rewritten, original, … so that drift in the
/// machine's speed (clock, other load, thermals) falls on both alike.
/// </summary>
public static class ModelBenchmark
{
    /// <summary>Times <paramref name="rewritten"/> against <paramref name="original"/> at every sequence length of
    /// <paramref name="options"/>. Inputs are generated once per length from the original's declared inputs.</summary>
    /// <param name="original">The model as exported.</param>
    /// <param name="rewritten">Its rewrite (opened as given, never rewritten again).</param>
    /// <param name="options">What to time and how; the defaults when null.</param>
    /// <param name="fusion">The rewriter's report on <paramref name="original"/>: when given, the attention probabilities
    /// the original materialises in each fused block are measured (on a separate, untimed session).</param>
    /// <exception cref="InvalidModelException">Either model cannot be loaded, or the rewritten model needs an input the
    /// original does not have.</exception>
    /// <exception cref="NotSupportedException">The provider cannot be used, or an input cannot be generated.</exception>
    /// <exception cref="BenchmarkFailedException">A model fails on the generated inputs.</exception>
    public static BenchmarkReport Run(ModelSource original, ModelSource rewritten, BenchmarkOptions? options = null, FusionReport? fusion = null)
    {
        ArgumentNullException.ThrowIfNull(original);
        ArgumentNullException.ThrowIfNull(rewritten);
        options ??= new BenchmarkOptions();
        options.Validate();

        // Measured first, on a session of its own that is gone before timing starts.
        var probabilities = fusion is null
            ? new AttentionProbabilities?[options.SequenceLengths.Count]
            : AttentionProbabilityProbe.Measure(original, fusion, options);

        using var originalSession = original.OpenSession(options.OriginalSession);
        using var rewrittenSession = rewritten.OpenSession(options.RewrittenSession);
        var generator = ModelInputGenerator.ForSession(originalSession.Session, original.Model);
        var runs = new List<BenchmarkRun>();
        for (int i = 0; i < options.SequenceLengths.Count; i++)
        {
            int sequenceLength = options.SequenceLengths[i];
            using var inputs = generator.Generate(options.Inputs with { SequenceLength = sequenceLength });
            var described = inputs.Select(input => input.ToString()).ToArray();
            using var first = new TimedModel(original, originalSession.Session, inputs, sequenceLength);
            using var second = new TimedModel(rewritten, rewrittenSession.Session, inputs, sequenceLength);
            var (originalTimes, rewrittenTimes) = TimeInterleaved(first, second, options);
            runs.Add(new BenchmarkRun
            {
                SequenceLength = sequenceLength,
                Inputs = described,
                Original = LatencySummary.Of(originalTimes),
                Rewritten = LatencySummary.Of(rewrittenTimes),
                OriginalAttentionProbabilities = probabilities[i],
            });
        }

        return new BenchmarkReport
        {
            OriginalModel = original.Name,
            RewrittenModel = rewritten.Name,
            OriginalProvider = originalSession.Provider,
            RewrittenProvider = rewrittenSession.Provider,
            Runs = runs,
        };
    }

    private static (List<double> First, List<double> Second) TimeInterleaved(TimedModel first, TimedModel second, BenchmarkOptions options)
    {
        for (int i = 0; i < Math.Max(1, options.WarmupIterations); i++)
        {
            first.Run();
            second.Run();
        }

        // Garbage from warm-up is collected now rather than during a timed run of either model.
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var firstTimes = new List<double>(options.Iterations);
        var secondTimes = new List<double>(options.Iterations);
        var clock = Stopwatch.StartNew();
        while (firstTimes.Count < options.Iterations && (firstTimes.Count == 0 || options.TimeBudget is not { } budget || clock.Elapsed < budget))
        {
            firstTimes.Add(first.Run());
            secondTimes.Add(second.Run());
        }

        return (firstTimes, secondTimes);
    }

    /// <summary>One model's session with the inputs it declares, ready to run repeatedly.</summary>
    private sealed class TimedModel : IDisposable
    {
        private readonly ModelSource source;
        private readonly InferenceSession session;
        private readonly GeneratedInputs inputs;
        private readonly int sequenceLength;
        private readonly string[] inputNames;
        private readonly OrtValue[] inputValues;
        private readonly RunOptions runOptions;

        public TimedModel(ModelSource source, InferenceSession session, GeneratedInputs inputs, int sequenceLength)
        {
            if (session.InputNames.FirstOrDefault(name => !inputs.Names.Contains(name)) is { } missing)
            {
                throw new InvalidModelException(source.Name,
                    $"'{source.Name}' needs input '{missing}', which the original model does not have: the two cannot be timed on the same inputs.");
            }

            this.source = source;
            this.session = session;
            this.inputs = inputs;
            this.sequenceLength = sequenceLength;
            var fed = inputs.Where(input => session.InputNames.Contains(input.Name)).ToArray();
            inputNames = fed.Select(input => input.Name).ToArray();
            inputValues = fed.Select(input => input.Value).ToArray();
            // A failing run is reported through its exception, with the model and inputs named; ONNX Runtime's own
            // log line would only repeat it on stderr.
            runOptions = new RunOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
        }

        /// <summary>Runs the model once and returns how long the run took, in milliseconds (releasing the outputs is not timed).</summary>
        public double Run()
        {
            long start = Stopwatch.GetTimestamp();
            IDisposableReadOnlyCollection<OrtValue> outputs;
            try
            {
                outputs = session.Run(runOptions, inputNames, inputValues, session.OutputNames);
            }
            catch (OnnxRuntimeException error)
            {
                throw new BenchmarkFailedException(source.Name,
                    $"'{source.Name}' fails on the generated inputs at sequence length {sequenceLength} " +
                    $"({string.Join("; ", inputs.Select(i => i.ToString()))}): {error.Message}", error);
            }

            double milliseconds = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            outputs.Dispose();
            return milliseconds;
        }

        public void Dispose() => runOptions.Dispose();
    }
}
