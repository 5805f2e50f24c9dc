using Google.Protobuf.Collections;
using OrtFlash.GraphRewriter.Onnx;

namespace OrtFlash.GraphRewriter.Graph;

/// <summary>A node calling a model-local function, in the graph that holds it.</summary>
/// <param name="Graph">The graph holding the call.</param>
/// <param name="Node">The calling node.</param>
/// <param name="Function">The function it calls.</param>
internal sealed record FunctionCall(OnnxGraph Graph, Node Node, FunctionProto Function);

/// <summary>
/// Replaces calls of model-local functions by copies of their bodies, specialised to the call: the
/// attributes the body reads from its caller (<c>ref_attr_name</c>) take the call's values (or the
/// function's defaults), every name the body defines gets a fresh model-wide name, and the
/// function's inputs and outputs become the call's. A copy computes exactly what the call did.
/// </summary>
/// <remarks>
/// Works on the protos under a loaded <see cref="OnnxModel"/>, which is stale afterwards: load the
/// model again before analysing it. The body's value_info is not copied: its symbolic dims are the
/// function's own names, which could wrongly equal the caller's dims of the same name.
/// </remarks>
internal static class FunctionInliner
{
    /// <summary>Whether any node of <paramref name="function"/>'s body, or of its subgraphs, takes an attribute from the caller.</summary>
    public static bool ReadsCallerAttributes(FunctionProto function) => ReadsCallerAttributes(function.Node);

    private static bool ReadsCallerAttributes(IEnumerable<NodeProto> nodes) =>
        nodes.Any(n => n.Attribute.Any(a => a.RefAttrName.Length > 0) || Subgraphs(n).Any(g => ReadsCallerAttributes(g.Node)));

    /// <summary>Every call, in any graph of <paramref name="model"/>, of a well-formed function whose body reads caller attributes, in the model's graph order.</summary>
    public static IReadOnlyList<FunctionCall> CallsReadingAttributes(OnnxModel model)
    {
        var functions = model.Functions.Select(f => f.Function!).Where(ReadsCallerAttributes).ToList();
        if (functions.Count == 0)
        {
            return [];
        }

        return model.Graphs.SelectMany(graph => graph.Nodes.Select(node =>
                functions.FirstOrDefault(f => f.Name == node.OpType && f.Domain == node.Domain && f.Overload == node.Proto.Overload) is { } function
                    ? new FunctionCall(graph, node, function) : null))
            .OfType<FunctionCall>().ToList();
    }

    /// <summary>Why <paramref name="call"/> cannot be inlined where it is; null when it can.</summary>
    public static string? Refusal(FunctionCall call)
    {
        ArgumentNullException.ThrowIfNull(call);
        if (call.Node.Proto.Attribute.FirstOrDefault(a => a.RefAttrName.Length > 0) is { } passedOn)
        {
            return $"the call passes on its own caller's attribute '{passedOn.RefAttrName}' as '{passedOn.Name}'";
        }

        var computed = Defined(call.Function.Node).ToHashSet(StringComparer.Ordinal);
        if (call.Function.Output.FirstOrDefault(o => !computed.Contains(o)) is { } passed)
        {
            return $"the function's output '{passed}' is not computed by a node of its body";
        }

        var imports = ImportsAt(call.Graph);
        foreach (var import in call.Function.OpsetImport)
        {
            if (imports.FirstOrDefault(o => SameDomain(o.Domain, import.Domain)) is { } there && there.Version != import.Version)
            {
                return $"the function's body uses {DomainName(import.Domain)} version {import.Version} and the {call.Graph.DisplayName} version {there.Version}, " +
                       "so its nodes would mean something else there";
            }
        }

        return null;
    }

    /// <summary>
    /// Replaces <paramref name="call"/> by a specialised copy of the function's body (see the class
    /// remarks) and imports the body's operator sets where the call was; returns the names of every
    /// node inserted, those of subgraphs included. <see cref="Refusal"/> must be null for the call.
    /// </summary>
    public static IReadOnlyList<string> Inline(FunctionCall call)
    {
        ArgumentNullException.ThrowIfNull(call);
        var (node, function) = (call.Node.Proto, call.Function);
        var names = call.Graph.Model.Names;
        var prefix = node.Name.Length > 0 ? node.Name : function.Name;

        var renamed = new Dictionary<string, string>(StringComparer.Ordinal);
        for (var i = 0; i < function.Input.Count; i++)
        {
            renamed[function.Input[i]] = i < node.Input.Count ? node.Input[i] : "";
        }

        for (var i = 0; i < function.Output.Count; i++)
        {
            renamed[function.Output[i]] = i < node.Output.Count && node.Output[i].Length > 0 ? node.Output[i] : names.Fresh($"{prefix}/{function.Output[i]}");
        }

        foreach (var name in Defined(function.Node))
        {
            renamed.TryAdd(name, names.Fresh($"{prefix}/{name}"));
        }

        var inserted = new List<string>();
        var body = function.Node.Select(new Specialiser(node, function, renamed, names, prefix, inserted).Node).ToList();

        var container = call.Graph.Function?.Node ?? call.Graph.Proto.Node;
        var index = Enumerable.Range(0, container.Count).First(i => ReferenceEquals(container[i], node));
        container.RemoveAt(index);
        for (var i = 0; i < body.Count; i++)
        {
            container.Insert(index + i, body[i]);
        }

        foreach (var import in function.OpsetImport)
        {
            Import(ImportsAt(call.Graph), import);
            Import(call.Graph.Model.Proto.OpsetImport, import);
        }

        return inserted;
    }

    /// <summary>Removes each of <paramref name="functions"/> that no node of <paramref name="model"/> calls anymore; returns those removed.</summary>
    public static IReadOnlyList<FunctionProto> RemoveUncalled(ModelProto model, IEnumerable<FunctionProto> functions)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(functions);
        var nodes = AllNodes(model.Graph.Node).Concat(model.Functions.SelectMany(f => AllNodes(f.Node))).ToList();
        var removed = functions.Distinct()
            .Where(f => !nodes.Any(n => n.OpType == f.Name && n.Domain == f.Domain && n.Overload == f.Overload)).ToList();
        foreach (var function in removed)
        {
            model.Functions.RemoveAt(Enumerable.Range(0, model.Functions.Count).First(i => ReferenceEquals(model.Functions[i], function)));
        }

        return removed;
    }

    private static IEnumerable<NodeProto> AllNodes(IEnumerable<NodeProto> nodes) =>
        nodes.SelectMany(n => Subgraphs(n).SelectMany(g => AllNodes(g.Node)).Prepend(n));

    private static IEnumerable<GraphProto> Subgraphs(NodeProto node) =>
        node.Attribute.SelectMany(a => a.G is { } g ? a.Graphs.Prepend(g) : a.Graphs);

    /// <summary>Every name the nodes define: their outputs, and the inputs, initializers and node outputs of their subgraphs.</summary>
    private static IEnumerable<string> Defined(IEnumerable<NodeProto> nodes) =>
        nodes.SelectMany(n => n.Output.Where(o => o.Length > 0).Concat(Subgraphs(n).SelectMany(g =>
            g.Input.Select(i => i.Name).Concat(g.Initializer.Select(t => t.Name)).Concat(Defined(g.Node)))));

    /// <summary>The operator set imports the nodes of <paramref name="graph"/> are read with.</summary>
    private static RepeatedField<OperatorSetIdProto> ImportsAt(OnnxGraph graph) =>
        graph.EnclosingFunction?.OpsetImport ?? graph.Model.Proto.OpsetImport;

    private static void Import(RepeatedField<OperatorSetIdProto> imports, OperatorSetIdProto import)
    {
        if (!imports.Any(o => SameDomain(o.Domain, import.Domain)))
        {
            imports.Add(import.Clone());
        }
    }

    private static bool SameDomain(string a, string b) => a == b || (a is "" or "ai.onnx" && b is "" or "ai.onnx");

    private static string DomainName(string domain) => domain is "" or "ai.onnx" ? "the ONNX operator set" : $"domain '{domain}'";

    /// <summary>Copies body nodes for one call: names renamed, caller attributes substituted, subgraphs likewise.</summary>
    private sealed class Specialiser(NodeProto call, FunctionProto function, Dictionary<string, string> renamed, NameScope names, string prefix, List<string> inserted)
    {
        private string Rename(string name) => renamed.TryGetValue(name, out var to) ? to : name;

        public NodeProto Node(NodeProto original)
        {
            var copy = original.Clone();
            copy.Name = names.Fresh($"{prefix}/{(original.Name.Length > 0 ? original.Name : original.OpType)}");
            inserted.Add(copy.Name);
            RenameAll(copy.Input);
            RenameAll(copy.Output);
            Specialise(copy.Attribute);
            return copy;
        }

        private void RenameAll(RepeatedField<string> list)
        {
            for (var i = 0; i < list.Count; i++)
            {
                list[i] = Rename(list[i]);
            }
        }

        /// <summary>A caller attribute takes the call's value, else the function's default, else stays unset (as the call would have it).</summary>
        private void Specialise(RepeatedField<AttributeProto> attributes)
        {
            for (var i = attributes.Count - 1; i >= 0; i--)
            {
                var attribute = attributes[i];
                if (attribute.RefAttrName.Length > 0)
                {
                    var given = call.Attribute.FirstOrDefault(a => a.Name == attribute.RefAttrName) ??
                                function.AttributeProto.FirstOrDefault(a => a.Name == attribute.RefAttrName);
                    if (given is null)
                    {
                        attributes.RemoveAt(i);
                        continue;
                    }

                    var value = given.Clone();
                    value.Name = attribute.Name;
                    attributes[i] = value;
                    continue;
                }

                if (attribute.G is { } graph)
                {
                    Subgraph(graph);
                }

                foreach (var subgraph in attribute.Graphs)
                {
                    Subgraph(subgraph);
                }
            }
        }

        private void Subgraph(GraphProto graph)
        {
            foreach (var info in graph.Input.Concat(graph.Output).Concat(graph.ValueInfo))
            {
                info.Name = Rename(info.Name);
            }

            foreach (var initializer in graph.Initializer)
            {
                initializer.Name = Rename(initializer.Name);
            }

            var nodes = graph.Node.Select(Node).ToList();
            graph.Node.Clear();
            graph.Node.AddRange(nodes);
        }
    }
}
