using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Patterns;

namespace OrtFlash.GraphRewriter.Rules;

/// <summary>
/// Hands the op its bias or keep mask at the smallest shape it broadcasts from. Exporters often blow the (B, 1, 1, T)
/// padding mask up to the (B, 1, S, T) or (B, H, S, T) score shape before making it a bias: BART's _expand_mask
/// Expands the mask and then casts, inverts and fills it; T5 adds it to a ConstantOfShape of zeros. Elementwise
/// operations commute with broadcasting, so the same operations applied to the Expand's input give every element the
/// value the graph computes, and adding zeros changes no score (s + 0 and s + −0 are the same number to the softmax,
/// NaN and infinities stay). The op then reads one mask row for every query row (the CPU kernel's key-major path, the
/// CUDA kernels' one-row mask tiles and live key ranges), and the S×T tensor is no longer built.
/// </summary>
internal sealed class BroadcastMasks(GraphAnalysis analysis)
{
    private const int MaxNodes = 32;

    private static readonly HashSet<string> Elementwise =
    [
        "Cast", "Identity", "Neg", "Not", "Add", "Sub", "Mul", "Div", "Max", "Min", "Where",
        "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor",
    ];

    /// <summary>
    /// The mask computed from its unbroadcast source, with clones of the elementwise nodes inserted before
    /// <paramref name="anchor"/>, and a note for the report; null when the mask is not built by elementwise operations
    /// (with scalar constants) from one Expand or zero-Add, or nothing would shrink.
    /// </summary>
    public (Value Mask, string Note)? Narrow(OnnxGraph graph, Node anchor, Value mask)
    {
        var walk = new Walk(analysis);
        if (!walk.Visit(mask) || walk.Bypassed.Count == 0 || walk.Source is null)
        {
            return null;
        }

        var names = graph.Model.Names;
        var mapped = new Dictionary<Value, Value>(walk.Mapped);
        Value Lookup(Value value)
        {
            while (walk.Aliases.TryGetValue(value, out var onward))
            {
                value = onward;
            }

            return mapped[value];
        }

        foreach (var node in walk.Order)
        {
            var inputs = node.Inputs.Select(i => i is null ? null : Lookup(i)).ToList();
            var output = node.Output(0)!;
            var clone = graph.InsertNode(anchor, node.OpType, node.Domain, inputs, [names.Fresh(output.Name + "_unexpanded")],
                (node.Name.Length > 0 ? node.Name : node.OpType) + "_Unexpanded", node.Proto.Attribute.Select(a => a.Clone()));
            mapped[output] = clone.Output(0)!;
        }

        var note = $"Mask '{mask.Name}' is passed at the shape it broadcasts from ('{walk.Source.Name}'): " +
                   $"{string.Join(" and ", walk.Bypassed)} bypassed, the elementwise operations after {(walk.Bypassed.Count > 1 ? "them" : "it")} applied before. " +
                   "Elementwise operations commute with broadcasting and adding zeros changes no score, so every score gets the same mask value.";
        return (Lookup(mask), note);
    }

    /// <summary>The elementwise DAG above a mask, down to scalar constants and one broadcast source.</summary>
    private sealed class Walk(GraphAnalysis analysis)
    {
        private readonly Dictionary<Value, bool> _visited = [];

        /// <summary>Values mapped without a clone: scalar constants and the source to themselves, Expand outputs to the source.</summary>
        public Dictionary<Value, Value> Mapped { get; } = [];

        /// <summary>Zero-Add outputs, each to its other operand (mapped, or cloned, in turn).</summary>
        public Dictionary<Value, Value> Aliases { get; } = [];

        /// <summary>The elementwise nodes to clone, inputs first.</summary>
        public List<Node> Order { get; } = [];

        /// <summary>What the narrowed mask leaves out: Expand and zero-Add nodes, by name.</summary>
        public List<string> Bypassed { get; } = [];

        /// <summary>The one non-constant tensor every path ends at.</summary>
        public Value? Source { get; private set; }

        public bool Visit(Value value)
        {
            if (_visited.TryGetValue(value, out var known))
            {
                return known;
            }

            _visited[value] = false;  // a cycle (not in a valid graph) fails
            var ok = VisitOnce(value);
            _visited[value] = ok;
            return ok;
        }

        private bool VisitOnce(Value value)
        {
            if (analysis.ConstantOf(value) is { IsScalar: true })
            {
                Mapped[value] = value;
                return true;
            }

            if (Ops.Producer(value, "Expand") is { } expand && expand.Input(0) is { } expanded)
            {
                Bypassed.Add($"Expand '{expand.DisplayName}'");
                Mapped[value] = expanded;
                return SetSource(expanded);
            }

            if (Ops.Producer(value, "Add") is { Inputs.Count: 2 } add && add.Input(0) is { } left && add.Input(1) is { } right &&
                (IsZeros(left) || IsZeros(right)))
            {
                var other = IsZeros(left) ? right : left;
                if (!Visit(other))
                {
                    return false;
                }

                Bypassed.Add($"Add of zeros '{add.DisplayName}'");
                Aliases[value] = other;
                return true;
            }

            if (value.Producer is { } node && node.Domain is "" or "ai.onnx" && Elementwise.Contains(node.OpType) &&
                node.Outputs.Count == 1 && node.Inputs.All(i => i is not null))
            {
                if (Order.Count >= MaxNodes || !node.Inputs.All(i => Visit(i!)))
                {
                    return false;
                }

                if (!Order.Contains(node))
                {
                    Order.Add(node);
                }

                return true;
            }

            return SetSource(value);
        }

        private bool SetSource(Value source)
        {
            if (Source is not null && Source != source)
            {
                return false;
            }

            Source = source;
            Mapped.TryAdd(source, source);
            return true;
        }

        private bool IsZeros(Value value) =>
            Ops.Producer(value, "ConstantOfShape") is { } fill
                ? fill.Attribute("value")?.T is not { } t || ConstantTensor.FromProto(t) is { IsScalar: true } c && c.Data[0] == 0
                : analysis.ConstantOf(value) is { } constant && constant.Data.All(d => d == 0);
    }
}
