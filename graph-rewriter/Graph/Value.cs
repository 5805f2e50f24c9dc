using OrtFlash.GraphRewriter.Onnx;

namespace OrtFlash.GraphRewriter.Graph;

/// <summary>A named tensor of one graph: a graph input, an initializer or a node output.</summary>
public sealed class Value
{
    private readonly List<Node> _consumers = [];

    internal Value(string name, OnnxGraph graph)
    {
        Name = name;
        Graph = graph;
    }

    /// <summary>The value's name, unique in the model.</summary>
    public string Name { get; }

    /// <summary>The graph that defines the value (subgraphs may read it as an outer-scope value).</summary>
    public OnnxGraph Graph { get; }

    /// <summary>The node producing the value; null for graph inputs and initializers.</summary>
    public Node? Producer { get; internal set; }

    /// <summary>Every node reading the value, once per use, including nodes of subgraphs.</summary>
    public IReadOnlyList<Node> Consumers => _consumers;

    /// <summary>Whether the value is an input of its graph.</summary>
    public bool IsGraphInput { get; internal set; }

    /// <summary>Whether the value is an output of its graph.</summary>
    public bool IsGraphOutput { get; internal set; }

    /// <summary>The initializer holding the value, if any.</summary>
    public TensorProto? Initializer { get; internal set; }

    /// <summary>
    /// Whether the value is a constant: an initializer the caller cannot override (not also a graph
    /// input) or a Constant node's output.
    /// </summary>
    public bool IsConstant => (Initializer is not null && !IsGraphInput) || Producer?.OpType == "Constant";

    /// <summary>The type and shape declared for the value (graph input/output or value_info), if any.</summary>
    internal TypeProto? DeclaredType { get; set; }

    internal void AddConsumer(Node node) => _consumers.Add(node);

    internal void RemoveConsumer(Node node) => _consumers.Remove(node);

    /// <inheritdoc/>
    public override string ToString() => Name;
}
