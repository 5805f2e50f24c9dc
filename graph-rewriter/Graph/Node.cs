using Google.Protobuf;
using OrtFlash.GraphRewriter.Onnx;

namespace OrtFlash.GraphRewriter.Graph;

/// <summary>One operator application. Wraps its <see cref="NodeProto"/>, whose fields it keeps in sync.</summary>
public sealed class Node
{
    private readonly Value?[] _inputs;
    private readonly Value?[] _outputs;

    internal Node(NodeProto proto, OnnxGraph graph, Value?[] outputs)
    {
        Proto = proto;
        Graph = graph;
        _inputs = new Value?[proto.Input.Count];
        _outputs = outputs;
    }

    /// <summary>The underlying protobuf message (attributes, doc string and unknown fields live here).</summary>
    public NodeProto Proto { get; }

    /// <summary>The graph the node belongs to.</summary>
    public OnnxGraph Graph { get; }

    /// <summary>The operator type, e.g. "MatMul".</summary>
    public string OpType => Proto.OpType;

    /// <summary>The operator domain; "" (and "ai.onnx") is the default ONNX domain.</summary>
    public string Domain => Proto.Domain;

    /// <summary>The node's name (may be empty in the source model).</summary>
    public string Name => Proto.Name;

    /// <summary>Inputs by position; null where an optional input is omitted.</summary>
    public IReadOnlyList<Value?> Inputs => _inputs;

    /// <summary>Outputs by position; null where an optional output is omitted.</summary>
    public IReadOnlyList<Value?> Outputs => _outputs;

    /// <summary>Subgraphs held in attributes (If branches, Loop/Scan bodies).</summary>
    public IReadOnlyList<OnnxGraph> Subgraphs { get; internal set; } = [];

    /// <summary>Whether the node is an operator of the default ONNX domain with this type.</summary>
    public bool Is(string opType) => OpType == opType && (Domain.Length == 0 || Domain == "ai.onnx");

    /// <summary>Input <paramref name="index"/>, or null when absent.</summary>
    public Value? Input(int index) => index < _inputs.Length ? _inputs[index] : null;

    /// <summary>Output <paramref name="index"/>, or null when absent.</summary>
    public Value? Output(int index) => index < _outputs.Length ? _outputs[index] : null;

    /// <summary>A display name: the node's name, or its type and first output.</summary>
    public string DisplayName => Name.Length > 0 ? Name : $"{OpType}->{Output(0)?.Name ?? "?"}";

    /// <summary>The attribute <paramref name="name"/>, or null.</summary>
    public AttributeProto? Attribute(string name) => Proto.Attribute.FirstOrDefault(a => a.Name == name);

    /// <summary>An INT attribute, or null when absent.</summary>
    public long? IntAttribute(string name) => Attribute(name) is { } a ? a.I : null;

    /// <summary>A FLOAT attribute, or null when absent.</summary>
    public float? FloatAttribute(string name) => Attribute(name) is { } a ? a.F : null;

    /// <summary>An INTS attribute, or null when absent.</summary>
    public IReadOnlyList<long>? IntsAttribute(string name) => Attribute(name) is { } a ? a.Ints : null;

    /// <summary>A STRING attribute, or null when absent.</summary>
    public string? StringAttribute(string name) => Attribute(name) is { } a ? a.S.ToStringUtf8() : null;

    internal void BindInput(int index, Value? value) => _inputs[index] = value;

    /// <summary>Puts <paramref name="value"/> (or nothing) in output slot <paramref name="index"/>, keeping the proto in sync.</summary>
    internal void BindOutput(int index, Value? value)
    {
        _outputs[index] = value;
        Proto.Output[index] = value?.Name ?? "";
    }

    /// <summary>Replaces input <paramref name="index"/>, keeping consumer lists and the proto in sync.</summary>
    public void SetInput(int index, Value? value)
    {
        _inputs[index]?.RemoveConsumer(this);
        _inputs[index] = value;
        value?.AddConsumer(this);
        Proto.Input[index] = value?.Name ?? "";
    }

    internal static AttributeProto IntAttributeProto(string name, long value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    internal static AttributeProto FloatAttributeProto(string name, float value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    internal static AttributeProto IntsAttributeProto(string name, IEnumerable<long> values)
    {
        var attribute = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        attribute.Ints.AddRange(values);
        return attribute;
    }

    internal static AttributeProto StringAttributeProto(string name, string value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(value) };

    /// <inheritdoc/>
    public override string ToString() => DisplayName;
}
