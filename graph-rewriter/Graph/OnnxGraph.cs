using OrtFlash.GraphRewriter.Io;
using OrtFlash.GraphRewriter.Onnx;

namespace OrtFlash.GraphRewriter.Graph;

/// <summary>
/// A mutable view of one <see cref="GraphProto"/> (the main graph or a subgraph): nodes in
/// topological order and values with their producer and consumers.
/// Call <see cref="OnnxModel.ToProto"/> to write the changes back.
/// </summary>
public sealed class OnnxGraph
{
    private readonly List<Node> _nodes = [];
    private readonly Dictionary<string, Value> _values = new(StringComparer.Ordinal);
    private readonly HashSet<string> _removedValues = new(StringComparer.Ordinal);

    private OnnxGraph(GraphProto proto, OnnxModel model, OnnxGraph? parent, Node? owner, FunctionProto? function = null)
    {
        Proto = proto;
        Model = model;
        Parent = parent;
        Owner = owner;
        Function = function;
    }

    /// <summary>The underlying protobuf message.</summary>
    public GraphProto Proto { get; }

    /// <summary>The model the graph belongs to.</summary>
    public OnnxModel Model { get; }

    /// <summary>The enclosing graph of a subgraph; null for the main graph.</summary>
    public OnnxGraph? Parent { get; }

    /// <summary>The node whose attribute holds this subgraph; null for the main graph.</summary>
    public Node? Owner { get; }

    /// <summary>
    /// For the body of a model-local function: the function. Its nodes are viewed through a
    /// <see cref="GraphProto"/> built from it (inputs and outputs typed from the function's
    /// value_info where it declares them) and written back by <see cref="Sync"/>.
    /// </summary>
    public FunctionProto? Function { get; }

    /// <summary>The function whose body this graph is or lies in, if any.</summary>
    public FunctionProto? EnclosingFunction => Function ?? Parent?.EnclosingFunction;

    /// <summary>The version of the default ONNX operator set this graph's nodes use (a function's own import, else the model's).</summary>
    public long DefaultOpset =>
        EnclosingFunction?.OpsetImport.FirstOrDefault(o => o.Domain.Length == 0 || o.Domain == "ai.onnx")?.Version ?? Model.DefaultOpset;

    /// <summary>Imports <paramref name="domain"/> in the model and, inside a function, in the function too.</summary>
    public void EnsureOpsetImport(string domain, long version)
    {
        Model.EnsureOpsetImport(domain, version);
        if (EnclosingFunction is { } function && !function.OpsetImport.Any(o => o.Domain == domain))
        {
            function.OpsetImport.Add(new OperatorSetIdProto { Domain = domain, Version = version });
        }
    }

    /// <summary>The nodes in topological order.</summary>
    public IReadOnlyList<Node> Nodes => _nodes;

    /// <summary>A display name for messages.</summary>
    public string DisplayName => Function is { } f ? FunctionDisplayName(f)
        : Owner is null ? "main graph" : $"subgraph '{Proto.Name}' of {Owner.DisplayName}";

    /// <summary>How messages name a model-local function: <c>function 'domain::name'</c>.</summary>
    public static string FunctionDisplayName(FunctionProto function)
    {
        ArgumentNullException.ThrowIfNull(function);
        return $"function '{(function.Domain.Length > 0 ? function.Domain + "::" : "")}{function.Name}'";
    }

    /// <summary>The value named <paramref name="name"/> visible in this graph (its own or an outer scope's), or null.</summary>
    public Value? Resolve(string name) =>
        _values.TryGetValue(name, out var value) ? value : Parent?.Resolve(name);

    internal static OnnxGraph Build(GraphProto proto, OnnxModel model, OnnxGraph? parent, Node? owner)
    {
        var graph = new OnnxGraph(proto, model, parent, owner);
        graph.Populate();
        return graph;
    }

    /// <summary>A view of a model-local function's body; values it declares in value_info get their types.</summary>
    internal static OnnxGraph BuildFunction(FunctionProto function, OnnxModel model)
    {
        var declared = function.ValueInfo.GroupBy(v => v.Name).ToDictionary(g => g.Key, g => g.First());
        ValueInfoProto Info(string name) => declared.TryGetValue(name, out var info) ? info.Clone() : new ValueInfoProto { Name = name };
        var proto = new GraphProto { Name = function.Name };
        proto.Input.AddRange(function.Input.Select(Info));
        proto.Output.AddRange(function.Output.Select(Info));
        proto.ValueInfo.AddRange(function.ValueInfo.Where(v => !function.Input.Contains(v.Name) && !function.Output.Contains(v.Name)));
        proto.Node.AddRange(function.Node);
        var graph = new OnnxGraph(proto, model, parent: null, owner: null, function);
        graph.Populate();
        return graph;
    }

    private Value Define(string name)
    {
        if (_values.ContainsKey(name))
        {
            throw new OnnxModelException($"Value '{name}' is defined twice in the {DisplayName}.");
        }

        var value = new Value(name, this);
        _values.Add(name, value);
        Model.Names.Reserve(name);
        return value;
    }

    private void Populate()
    {
        foreach (var input in Proto.Input)
        {
            var value = _values.GetValueOrDefault(input.Name) ?? Define(input.Name);
            value.IsGraphInput = true;
            value.DeclaredType = input.Type;
        }

        foreach (var initializer in Proto.Initializer)
        {
            var value = _values.GetValueOrDefault(initializer.Name) ?? Define(initializer.Name);
            value.Initializer = initializer;
        }

        var created = new List<Node>(Proto.Node.Count);
        foreach (var proto in Proto.Node)
        {
            var outputs = new Value?[proto.Output.Count];
            var node = new Node(proto, this, outputs);
            for (var i = 0; i < outputs.Length; i++)
            {
                if (proto.Output[i].Length > 0)
                {
                    outputs[i] = Define(proto.Output[i]);
                    outputs[i]!.Producer = node;
                }
            }

            if (proto.Name.Length > 0)
            {
                Model.Names.Reserve(proto.Name);
            }

            created.Add(node);
        }

        foreach (var info in Proto.ValueInfo)
        {
            if (_values.TryGetValue(info.Name, out var value))
            {
                value.DeclaredType ??= info.Type;
            }
        }

        foreach (var output in Proto.Output)
        {
            var value = Resolve(output.Name)
                ?? throw new OnnxModelException($"Output '{output.Name}' of the {DisplayName} is not produced by any node, input or initializer.");
            value.IsGraphOutput = true;
            value.DeclaredType ??= output.Type;
        }

        foreach (var node in created)
        {
            var subgraphs = new List<OnnxGraph>();
            foreach (var attribute in node.Proto.Attribute)
            {
                if (attribute.G is not null)
                {
                    subgraphs.Add(Build(attribute.G, Model, this, node));
                }

                subgraphs.AddRange(attribute.Graphs.Select(g => Build(g, Model, this, node)));
            }

            node.Subgraphs = subgraphs;
        }

        foreach (var node in created)
        {
            for (var i = 0; i < node.Proto.Input.Count; i++)
            {
                var name = node.Proto.Input[i];
                if (name.Length == 0)
                {
                    continue;
                }

                var value = Resolve(name)
                    ?? throw new OnnxModelException(
                        $"Node '{node.DisplayName}' ({node.OpType}) in the {DisplayName} reads '{name}', which no node, input or initializer defines.");
                node.BindInput(i, value);
                value.AddConsumer(node);
            }
        }

        _nodes.AddRange(TopologicalOrder(created));
    }

    /// <summary>Kahn's algorithm, stable with respect to the file's order; fails on a cycle.</summary>
    private List<Node> TopologicalOrder(List<Node> nodes)
    {
        var position = new Dictionary<Node, int>(nodes.Count);
        for (var i = 0; i < nodes.Count; i++)
        {
            position[nodes[i]] = i;
        }

        var pending = new int[nodes.Count];
        var dependents = new List<int>[nodes.Count];
        for (var i = 0; i < nodes.Count; i++)
        {
            dependents[i] = [];
        }

        for (var i = 0; i < nodes.Count; i++)
        {
            foreach (var producer in Dependencies(nodes[i]).Distinct())
            {
                pending[i]++;
                dependents[position[producer]].Add(i);
            }
        }

        var ready = new PriorityQueue<int, int>();
        for (var i = 0; i < nodes.Count; i++)
        {
            if (pending[i] == 0)
            {
                ready.Enqueue(i, i);
            }
        }

        var order = new List<Node>(nodes.Count);
        while (ready.TryDequeue(out var next, out _))
        {
            order.Add(nodes[next]);
            foreach (var dependent in dependents[next])
            {
                if (--pending[dependent] == 0)
                {
                    ready.Enqueue(dependent, dependent);
                }
            }
        }

        if (order.Count != nodes.Count)
        {
            var stuck = nodes.Where((_, i) => pending[i] > 0).Take(5).Select(n => $"'{n.DisplayName}'");
            throw new OnnxModelException($"The {DisplayName} has a cycle through {string.Join(", ", stuck)}.");
        }

        return order;
    }

    /// <summary>Nodes of this graph that <paramref name="node"/> (or its subgraphs) reads from.</summary>
    private IEnumerable<Node> Dependencies(Node node)
    {
        foreach (var input in node.Inputs)
        {
            if (input?.Graph == this && input.Producer is { } producer)
            {
                yield return producer;
            }
        }

        foreach (var read in node.Subgraphs.SelectMany(OuterReads))
        {
            if (read.Graph == this && read.Producer is { } producer)
            {
                yield return producer;
            }
        }
    }

    private static IEnumerable<Value> OuterReads(OnnxGraph graph) =>
        graph._nodes.SelectMany(n => n.Inputs.OfType<Value>().Where(v => v.Graph != graph)
                                      .Concat(n.Subgraphs.SelectMany(OuterReads)));

    /// <summary>Every subgraph below this graph, depth first.</summary>
    public IEnumerable<OnnxGraph> Descendants() =>
        _nodes.SelectMany(n => n.Subgraphs).SelectMany(g => g.Descendants().Prepend(g));

    /// <summary>
    /// Adds a node in front of <paramref name="before"/> (so topological order holds when its inputs
    /// are available there) with fresh, unique output and node names.
    /// </summary>
    public Node InsertNode(Node before, string opType, string domain, IReadOnlyList<Value?> inputs,
                           IReadOnlyList<string> outputNames, string nameHint, IEnumerable<AttributeProto>? attributes = null)
    {
        ArgumentNullException.ThrowIfNull(before);
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(outputNames);
        var proto = new NodeProto { OpType = opType, Domain = domain, Name = Model.Names.Fresh(nameHint) };
        proto.Input.AddRange(inputs.Select(v => v?.Name ?? ""));
        if (attributes is not null)
        {
            proto.Attribute.AddRange(attributes);
        }

        var outputs = new Value?[outputNames.Count];
        var node = new Node(proto, this, outputs);
        for (var i = 0; i < outputs.Length; i++)
        {
            var name = outputNames[i];
            proto.Output.Add(name);
            var value = new Value(name, this) { Producer = node };
            _values.Add(name, value);
            _removedValues.Remove(name);
            outputs[i] = value;
        }

        for (var i = 0; i < inputs.Count; i++)
        {
            node.BindInput(i, inputs[i]);
            inputs[i]?.AddConsumer(node);
        }

        _nodes.Insert(_nodes.IndexOf(before), node);
        return node;
    }

    /// <summary>
    /// Moves the output <paramref name="value"/> from its producer to <paramref name="to"/>'s
    /// output slot <paramref name="index"/> (the value keeps its name and consumers).
    /// </summary>
    internal void TransferOutput(Value value, Node to, int index)
    {
        var from = value.Producer!;
        for (var i = 0; i < from.Outputs.Count; i++)
        {
            if (from.Outputs[i] == value)
            {
                from.BindOutput(i, null);
            }
        }

        _values.Remove(to.Output(index)!.Name);
        to.BindOutput(index, value);
        value.Producer = to;
    }

    /// <summary>
    /// Removes <paramref name="node"/>, whose outputs must be unused, and then every producer (and
    /// initializer) left without any use by that removal.
    /// </summary>
    public void RemoveDead(Node node)
    {
        ArgumentNullException.ThrowIfNull(node);
        var work = new Stack<Node>();
        work.Push(node);
        while (work.TryPop(out var next))
        {
            if (!_nodes.Contains(next) || next.Outputs.Any(o => o is not null && (o.Consumers.Count > 0 || o.IsGraphOutput)))
            {
                continue;
            }

            _nodes.Remove(next);
            foreach (var output in next.Outputs.OfType<Value>())
            {
                _values.Remove(output.Name);
                _removedValues.Add(output.Name);
            }

            for (var i = 0; i < next.Inputs.Count; i++)
            {
                var input = next.Inputs[i];
                if (input is null)
                {
                    continue;
                }

                input.RemoveConsumer(next);
                if (input.Consumers.Count == 0 && !input.IsGraphOutput)
                {
                    if (input.Producer is { } producer && producer.Graph == input.Graph)
                    {
                        if (producer.Graph == this)
                        {
                            work.Push(producer);
                        }
                    }
                    else if (input.Initializer is not null && !input.IsGraphInput)
                    {
                        input.Graph.RemoveInitializer(input);
                    }
                }
            }
        }
    }

    private void RemoveInitializer(Value value)
    {
        Proto.Initializer.Remove(value.Initializer!);
        _values.Remove(value.Name);
        _removedValues.Add(value.Name);
        value.Initializer = null;
    }

    /// <summary>Writes the node list and value_info of this graph back into <see cref="Proto"/>.</summary>
    internal void Sync()
    {
        Proto.Node.Clear();
        Proto.Node.AddRange(_nodes.Select(n => n.Proto));
        var infos = Function?.ValueInfo ?? Proto.ValueInfo;
        var stale = infos.Where(v => _removedValues.Contains(v.Name) && !_values.ContainsKey(v.Name)).ToList();
        foreach (var info in stale)
        {
            infos.Remove(info);
        }

        if (Function is { } function)
        {
            function.Node.Clear();
            function.Node.AddRange(Proto.Node);
        }
    }
}
