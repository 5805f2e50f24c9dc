using Google.Protobuf;
using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Onnx;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.Tests.Rewriter.Support;

/// <summary>Builds small ONNX models in tests, one node per call.</summary>
internal sealed class ModelBuilder
{
    private readonly GraphProto _graph = new() { Name = "test" };
    private int _next;

    public ModelBuilder(long opset = 17)
    {
        Model = new ModelProto { IrVersion = opset >= 21 ? 10 : 8, ProducerName = "OrtFlash.Tests", Graph = _graph };
        Model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
    }

    public ModelProto Model { get; }

    public GraphProto Graph => _graph;

    /// <summary>A graph input; dims are numbers or symbol names.</summary>
    public string Input(string name, DataType type, params object[] dims)
    {
        _graph.Input.Add(ValueInfo(name, type, dims));
        return name;
    }

    public void Output(string name, DataType type = DataType.Float, params object[] dims)
    {
        _graph.Output.Add(ValueInfo(name, type, dims.Length == 0 ? null : dims));
    }

    public static ValueInfoProto ValueInfo(string name, DataType type, object[]? dims)
    {
        var tensor = new TypeProto.Types.Tensor { ElemType = (int)type };
        if (dims is not null)
        {
            tensor.Shape = new TensorShapeProto();
            foreach (var d in dims)
            {
                tensor.Shape.Dim.Add(d is string s
                    ? new TensorShapeProto.Types.Dimension { DimParam = s }
                    : new TensorShapeProto.Types.Dimension { DimValue = Convert.ToInt64(d, System.Globalization.CultureInfo.InvariantCulture) });
            }
        }

        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = tensor } };
    }

    /// <summary>A float scalar initializer (rank 0).</summary>
    public string Scalar(float value, DataType type = DataType.Float) =>
        Initializer(ConstantTensor.Scalar(type, value));

    public string Ints(params long[] values) => Initializer(ConstantTensor.Int64s(values));

    public string Initializer(ConstantTensor value, string? name = null)
    {
        name ??= $"c{_next++}";
        _graph.Initializer.Add(value.ToProto(name));
        return name;
    }

    public string Floats(long[] dims, float[] values, DataType type = DataType.Float, string? name = null) =>
        Initializer(new ConstantTensor(type, dims, values.Select(v => ElementTypes.Round(v, type)).ToArray()), name);

    /// <summary>Adds a node with one output and returns the output's name.</summary>
    public string Node(string opType, string[] inputs, params AttributeProto[] attributes) =>
        NodeOutputs(opType, inputs, 1, attributes)[0];

    public string[] NodeOutputs(string opType, string[] inputs, int outputs, params AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = opType, Name = $"{opType}_{_next}" };
        node.Input.AddRange(inputs);
        var names = Enumerable.Range(0, outputs).Select(i => $"{opType.ToLowerInvariant()}{_next}_{i}").ToArray();
        _next++;
        node.Output.AddRange(names);
        node.Attribute.AddRange(attributes);
        _graph.Node.Add(node);
        return names;
    }

    /// <summary>Renames the last node's first output (e.g. to a graph output name).</summary>
    public string Rename(string from, string to)
    {
        foreach (var node in _graph.Node)
        {
            for (var i = 0; i < node.Input.Count; i++)
            {
                if (node.Input[i] == from)
                {
                    node.Input[i] = to;
                }
            }

            for (var i = 0; i < node.Output.Count; i++)
            {
                if (node.Output[i] == from)
                {
                    node.Output[i] = to;
                }
            }
        }

        return to;
    }

    public static AttributeProto Int(string name, long value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    public static AttributeProto Float(string name, float value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    public static AttributeProto Ints(string name, params long[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        return a;
    }

    public static AttributeProto Str(string name, string value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(value) };

    public static AttributeProto Tensor(string name, ConstantTensor value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Tensor, T = value.ToProto("") };

    public static AttributeProto GraphAttribute(string name, GraphProto graph) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Graph, G = graph };
}
