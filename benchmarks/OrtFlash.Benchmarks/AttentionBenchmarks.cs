using BenchmarkDotNet.Attributes;
using Microsoft.ML.OnnxRuntime;

namespace OrtFlash.Benchmarks;

/// <summary>
/// FlashAttention op vs the unfused attention graph, both in ONNX Runtime's CPU provider, same process, same
/// inputs (B = 1, H = 12, D = 64, float32, a padding bias of shape (B, 1, 1, S)). The Ratio column is the number
/// to read: the machines are noisy, absolute times are not comparable across runs.
/// </summary>
[MemoryDiagnoser(displayGenColumns: false)]
public class AttentionBenchmarks
{
    private const int Batch = 1;
    private const int Heads = 12;
    private const int HeadDim = 64;

    private InferenceSession? fused;
    private InferenceSession? unfused;
    private SessionOptions? options;
    private RunOptions? runOptions;
    private OrtValue[] inputs = [];
    private readonly string[] inputNames = ["Q", "K", "V", "bias"];
    private readonly string[] outputNames = ["Y"];

    [Params(512, 2048)]
    public int SequenceLength { get; set; }

    /// <summary>ONNX Runtime intra-op threads (0 = one per core).</summary>
    [Params(0)]
    public int Threads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        options = new SessionOptions { IntraOpNumThreads = Threads, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        options.RegisterCustomOpLibrary(OrtFlashNative.LibraryPath);
        float scale = 1f / MathF.Sqrt(HeadDim);
        fused = new InferenceSession(AttentionModels.Fused(scale), options);
        unfused = new InferenceSession(AttentionModels.Unfused(scale), options);
        runOptions = new RunOptions();
        var rng = new Random(1);
        long[] shape = [Batch, Heads, SequenceLength, HeadDim];
        float[] Random(long count) => Enumerable.Range(0, (int)count).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        long elements = Batch * Heads * (long)SequenceLength * HeadDim;
        var bias = new float[SequenceLength];
        for (int j = SequenceLength * 7 / 8; j < SequenceLength; j++)
        {
            bias[j] = -10000f;  // the last eighth is padding
        }

        inputs =
        [
            OrtValue.CreateTensorValueFromMemory(Random(elements), shape),
            OrtValue.CreateTensorValueFromMemory(Random(elements), shape),
            OrtValue.CreateTensorValueFromMemory(Random(elements), shape),
            OrtValue.CreateTensorValueFromMemory(bias, [Batch, 1, 1, SequenceLength]),
        ];
    }

    [Benchmark(Baseline = true, Description = "unfused graph")]
    public void Unfused()
    {
        using var outputs = unfused!.Run(runOptions, inputNames, inputs, outputNames);
    }

    [Benchmark(Description = "FlashAttention op")]
    public void Fused()
    {
        using var outputs = fused!.Run(runOptions, inputNames, inputs, outputNames);
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
        runOptions?.Dispose();
        options?.Dispose();
    }
}
