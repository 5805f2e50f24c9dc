using BenchmarkDotNet.Attributes;
using Microsoft.ML.OnnxRuntime;

namespace OrtFlash.Benchmarks;

/// <summary>
/// FlashAttention op vs the unfused attention graph and vs ONNX Runtime's own ONNX Attention (opset 23), all in ONNX
/// Runtime's CPU provider, same process, same inputs, float32, for the <see cref="Scenario"/>s models run (encoder with
/// padding, causal prefill, GQA decode).
/// The Ratio column is the number to read: the machines are noisy, absolute times are not comparable across runs.
/// </summary>
[MemoryDiagnoser(displayGenColumns: false)]
public class AttentionBenchmarks
{
    private InferenceSession? fused;
    private InferenceSession? unfused;
    private InferenceSession? onnxAttention;
    private SessionOptions? options;
    private RunOptions? runOptions;
    private OrtValue[] inputs = [];
    private OrtValue[] fusedValues = [];
    private OrtValue[] unfusedValues = [];
    private string[] fusedInputs = [];
    private string[] unfusedInputs = [];
    private readonly string[] outputNames = ["Y"];

    [Params(Scenario.PaddedEncoder, Scenario.CausalPrefill, Scenario.GqaDecode)]
    public Scenario Scenario { get; set; }

    /// <summary>Key length T (= query length S except for decoding, where S = 1).</summary>
    [Params(512, 2048)]
    public int SequenceLength { get; set; }

    /// <summary>ONNX Runtime intra-op threads (0 = one per core).</summary>
    [Params(0)]
    public int Threads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var shapes = AttentionCase.For(Scenario, SequenceLength);
        options = new SessionOptions { IntraOpNumThreads = Threads, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        options.RegisterCustomOpLibrary(OrtFlashNative.LibraryPath);
        fused = new InferenceSession(shapes.Fused(), options);
        unfused = new InferenceSession(shapes.Unfused(), options);
        onnxAttention = new InferenceSession(shapes.OnnxAttention(), options);
        runOptions = new RunOptions();
        fusedInputs = shapes.Inputs(fused: true);
        unfusedInputs = shapes.Inputs(fused: false);
        var rng = new Random(1);
        float[] Random(long[] shape) =>
            Enumerable.Range(0, (int)shape.Aggregate(1L, (a, b) => a * b)).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        inputs =
        [
            OrtValue.CreateTensorValueFromMemory(Random(shapes.QueryShape), shapes.QueryShape),
            OrtValue.CreateTensorValueFromMemory(Random(shapes.KeyValueShape), shapes.KeyValueShape),
            OrtValue.CreateTensorValueFromMemory(Random(shapes.KeyValueShape), shapes.KeyValueShape),
            .. shapes.HasBias ? [OrtValue.CreateTensorValueFromMemory(shapes.Bias(), shapes.BiasShape)] : Array.Empty<OrtValue>(),
        ];
        fusedValues = inputs[..fusedInputs.Length];
        unfusedValues = inputs[..unfusedInputs.Length];
        CheckSameResults();
    }

    /// <summary>Every graph must compute the same attention, or the comparison means nothing.</summary>
    private void CheckSameResults()
    {
        using var expected = unfused!.Run(runOptions, unfusedInputs, unfusedValues, outputNames);
        foreach (var (name, session) in new[] { ("the op", fused!), ("ONNX Attention", onnxAttention!) })
        {
            using var actual = session.Run(runOptions, fusedInputs, fusedValues, outputNames);
            var a = expected[0].GetTensorDataAsSpan<float>();
            var b = actual[0].GetTensorDataAsSpan<float>();
            var worst = a.Length == b.Length ? 0f : float.PositiveInfinity;
            for (var i = 0; i < a.Length && i < b.Length; i++)
            {
                worst = MathF.Max(worst, MathF.Abs(a[i] - b[i]));
            }

            if (!(worst <= 1e-4f))
            {
                throw new InvalidOperationException($"{Scenario} at {SequenceLength}: {name} and the unfused graph differ by {worst}.");
            }
        }
    }

    [Benchmark(Baseline = true, Description = "unfused graph")]
    public void Unfused()
    {
        using var outputs = unfused!.Run(runOptions, unfusedInputs, unfusedValues, outputNames);
    }

    [Benchmark(Description = "FlashAttention op")]
    public void Fused()
    {
        using var outputs = fused!.Run(runOptions, fusedInputs, fusedValues, outputNames);
    }

    [Benchmark(Description = "ONNX Attention (ONNX Runtime)")]
    public void OnnxAttention()
    {
        using var outputs = onnxAttention!.Run(runOptions, fusedInputs, fusedValues, outputNames);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var value in inputs)
        {
            value.Dispose();
        }

        fused?.Dispose();
        unfused?.Dispose();
        onnxAttention?.Dispose();
        runOptions?.Dispose();
        options?.Dispose();
    }
}
