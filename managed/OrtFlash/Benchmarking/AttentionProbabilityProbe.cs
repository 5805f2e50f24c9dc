using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Io;
using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.GraphRewriter.Report;
using OrtFlash.Verification;

namespace OrtFlash.Benchmarking;

/// <summary>
/// Measures the attention probabilities the original model materialises in each block the rewriter fused: the output
/// of the block's Softmax, made a graph output of a copy of the model and read off one run, so that its size is the
/// real shape at run time rather than an estimate. Blocks in subgraphs or functions, and blocks without exactly one
/// Softmax (decomposed softmax, ONNX Attention), are not measured.
/// </summary>
internal static class AttentionProbabilityProbe
{
    /// <summary>One entry per sequence length of <paramref name="options"/>; null where nothing could be measured.</summary>
    public static AttentionProbabilities?[] Measure(ModelSource original, FusionReport fusion, BenchmarkOptions options)
    {
        var measured = new AttentionProbabilities?[options.SequenceLengths.Count];
        var tensors = ProbabilityTensors(original.Model, fusion);
        if (tensors.Count == 0)
        {
            return measured;
        }

        var probe = original.Model.Clone();
        var outputs = probe.Graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        probe.Graph.Output.AddRange(tensors.Where(outputs.Add).Select(name => new ValueInfoProto { Name = name }));
        try
        {
            // A model in memory loses the folder of its external weights: such a model is simply not measured.
            using var session = ModelSource.FromModel(probe, original.Name).OpenSession(options.OriginalSession);
            var generator = ModelInputGenerator.ForSession(session.Session, original.Model);
            using var runOptions = new RunOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
            for (int i = 0; i < measured.Length; i++)
            {
                using var inputs = generator.Generate(options.Inputs with { SequenceLength = options.SequenceLengths[i] });
                using var results = session.Session.Run(runOptions, inputs.Names.ToArray(), inputs.Values.ToArray(), tensors.ToArray());
                measured[i] = results.Select(r => r.GetTensorTypeAndShape())
                    .Select(t => new AttentionProbabilities(tensors.Count, t.ElementCount * ElementSize(t.ElementDataType), t.Shape, t.ElementDataType))
                    .MaxBy(p => p.LargestBytes);
            }
        }
        catch (Exception error) when (error is InvalidModelException or NotSupportedException or OnnxRuntimeException)
        {
            // Memory is reported only where it was measured; the timing does not depend on it.
            return new AttentionProbabilities?[options.SequenceLengths.Count];
        }

        return measured;
    }

    /// <summary>The Softmax output of each fused block in the main graph of <paramref name="model"/>.</summary>
    private static List<string> ProbabilityTensors(ModelProto model, FusionReport fusion)
    {
        OnnxGraph main;
        try
        {
            main = OnnxModel.Load(model.Clone()).Main;
        }
        catch (OnnxModelException)
        {
            return [];
        }

        var nodes = main.Nodes.GroupBy(n => n.DisplayName, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        var tensors = new List<string>();
        foreach (var block in fusion.Fusions.Where(f => f.Graph == main.DisplayName))
        {
            var softmax = block.ReplacedNodes.Select(name => nodes.GetValueOrDefault(name)).Where(n => n is not null && n.Is("Softmax")).ToArray();
            if (softmax is [{ } only] && only.Output(0) is { } probabilities)
            {
                tensors.Add(probabilities.Name);
            }
        }

        return tensors;
    }

    private static long ElementSize(TensorElementType type) => type switch
    {
        TensorElementType.Double or TensorElementType.Int64 or TensorElementType.UInt64 => 8,
        TensorElementType.Float or TensorElementType.Int32 or TensorElementType.UInt32 => 4,
        TensorElementType.Float16 or TensorElementType.BFloat16 or TensorElementType.Int16 or TensorElementType.UInt16 => 2,
        _ => 1,
    };
}
