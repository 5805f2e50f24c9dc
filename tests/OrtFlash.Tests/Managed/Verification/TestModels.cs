using Google.Protobuf;
using OrtFlash.GraphRewriter.Onnx;

namespace OrtFlash.Tests.Managed.Verification;

/// <summary>The exported models in models/, and small graphs built here for the cases they do not cover.</summary>
public static class TestModels
{
    private static readonly Lazy<string> Folder = new(FindFolder);

    /// <summary>models/ of this repository.</summary>
    public static string Directory => Folder.Value;

    /// <summary>Every .onnx file in models/, by file name.</summary>
    public static IEnumerable<string> FileNames() =>
        System.IO.Directory.GetFiles(Directory, "*.onnx").Select(Path.GetFileName).Order(StringComparer.Ordinal)!;

    public static string PathOf(string fileName) => Path.Combine(Directory, fileName);

    /// <summary>The key/value heads manifest.json records for <paramref name="fileName"/>.</summary>
    public static long KvHeadsOf(string fileName)
    {
        using var manifest = System.Text.Json.JsonDocument.Parse(File.ReadAllText(PathOf("manifest.json")));
        return manifest.RootElement.GetProperty("models").EnumerateArray()
            .Single(m => m.GetProperty("file").GetString() == fileName).GetProperty("heads").GetProperty("kv").GetInt64();
    }

    /// <summary>CPU, one thread: the models are tiny, and the test run shares two cores.</summary>
    public static OrtFlashSessionOptions Cpu { get; } = new() { Provider = ExecutionProvider.Cpu, IntraOpThreads = 1 };

    /// <summary>A copy of <paramref name="model"/> with every element of its largest float initializer scaled by
    /// (1 + <paramref name="relativeChange"/>).</summary>
    public static ModelProto WithPerturbedWeights(ModelProto model, double relativeChange)
    {
        var copy = model.Clone();
        var weight = copy.Graph.Initializer
            .Where(t => t.DataType == (int)TensorProto.Types.DataType.Float && t.Dims.Count == 2)
            .MaxBy(t => t.Dims.Aggregate(1L, (a, b) => a * b))!;
        if (weight.RawData.Length > 0)
        {
            var values = new float[weight.RawData.Length / sizeof(float)];
            Buffer.BlockCopy(weight.RawData.ToByteArray(), 0, values, 0, weight.RawData.Length);
            for (int i = 0; i < values.Length; i++)
            {
                values[i] *= (float)(1 + relativeChange);
            }

            var bytes = new byte[weight.RawData.Length];
            Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
            weight.RawData = ByteString.CopyFrom(bytes);
        }
        else
        {
            for (int i = 0; i < weight.FloatData.Count; i++)
            {
                weight.FloatData[i] *= (float)(1 + relativeChange);
            }
        }

        return copy;
    }

    /// <summary>
    /// A one-node model over x: float[batch, sequence, 4]. <paramref name="body"/> adds the nodes that compute the
    /// outputs; <paramref name="outputs"/> declares them (name, element type, rank).
    /// </summary>
    public static ModelProto Tiny(Action<GraphProto> body, params (string Name, TensorProto.Types.DataType Type, int Rank)[] outputs)
    {
        var graph = new GraphProto { Name = "tiny" };
        graph.Input.Add(Value("x", TensorProto.Types.DataType.Float, ["batch", "sequence", "4"]));
        body(graph);
        foreach (var (name, type, rank) in outputs)
        {
            graph.Output.Add(Value(name, type, Enumerable.Range(0, rank).Select(d => $"d{d}").ToArray()));
        }

        var model = new ModelProto { IrVersion = 8, ProducerName = "OrtFlash.Tests", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        return model;
    }

    public static NodeProto Node(string opType, string[] inputs, string[] outputs, params AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = opType, Name = $"{opType}_{outputs[0]}" };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        node.Attribute.AddRange(attributes);
        return node;
    }

    public static AttributeProto IntAttribute(string name, long value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    public static TensorProto Int64Tensor(string name, params long[] values)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
        tensor.Dims.Add(values.Length);
        tensor.Int64Data.AddRange(values);
        return tensor;
    }

    /// <summary>A tensor value; dims that parse as numbers are fixed, the others symbolic.</summary>
    public static ValueInfoProto Value(string name, TensorProto.Types.DataType type, string[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var dim in dims)
        {
            shape.Dim.Add(long.TryParse(dim, out long size) ? new TensorShapeProto.Types.Dimension { DimValue = size }
                : new TensorShapeProto.Types.Dimension { DimParam = dim });
        }

        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } },
        };
    }

    private static string FindFolder()
    {
        for (var folder = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); folder is not null; folder = folder.Parent)
        {
            if (File.Exists(Path.Combine(folder.FullName, "models", "manifest.json")))
            {
                return Path.Combine(folder.FullName, "models");
            }
        }

        throw new DirectoryNotFoundException($"No models/manifest.json above {TestContext.CurrentContext.TestDirectory}.");
    }
}
