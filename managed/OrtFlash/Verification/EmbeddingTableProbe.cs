using OrtFlash.GraphRewriter.Onnx;

namespace OrtFlash.Verification;

/// <summary>
/// Finds how many rows the embedding table behind an integer input has: the <c>Gather</c> that consumes the input
/// (directly or through ops that keep its values: Cast, Reshape, Unsqueeze, ...) with a constant table as data.
/// Ids at or above that bound would make ONNX Runtime fail, so generated ids stay below it.
/// </summary>
internal sealed class EmbeddingTableProbe
{
    private static readonly HashSet<string> ValuePreservingOps = new(StringComparer.Ordinal)
    {
        "Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand", "Transpose",
    };

    private readonly Dictionary<string, List<NodeProto>> consumers = new(StringComparer.Ordinal);
    private readonly Dictionary<string, NodeProto> producers = new(StringComparer.Ordinal);
    private readonly Dictionary<string, TensorProto> initializers = new(StringComparer.Ordinal);

    public EmbeddingTableProbe(ModelProto model)
    {
        var graph = model.Graph;
        if (graph is null)
        {
            return;
        }

        foreach (var tensor in graph.Initializer)
        {
            initializers[tensor.Name] = tensor;
        }

        foreach (var node in graph.Node)
        {
            foreach (var input in node.Input)
            {
                if (!consumers.TryGetValue(input, out var list))
                {
                    consumers[input] = list = [];
                }

                list.Add(node);
            }

            foreach (var output in node.Output)
            {
                producers[output] = node;
            }
        }
    }

    /// <summary>The smallest table row count among the Gathers that index with <paramref name="inputName"/>, or null.</summary>
    public long? RowCount(string inputName)
    {
        long? rows = null;
        var pending = new Queue<string>([inputName]);
        var seen = new HashSet<string>(StringComparer.Ordinal) { inputName };
        while (pending.Count > 0)
        {
            var value = pending.Dequeue();
            if (!consumers.TryGetValue(value, out var nodes))
            {
                continue;
            }

            foreach (var node in nodes)
            {
                if (node.OpType == "Gather" && node.Domain is ("" or "ai.onnx") && node.Input.Count > 1 && node.Input[1] == value)
                {
                    if (ConstantShape(node.Input[0]) is { } shape && shape.Count > 0)
                    {
                        int axis = (int)(node.Attribute.FirstOrDefault(a => a.Name == "axis")?.I ?? 0);
                        axis = axis < 0 ? axis + shape.Count : axis;
                        if (axis >= 0 && axis < shape.Count && shape[axis] > 0)
                        {
                            rows = Math.Min(rows ?? long.MaxValue, shape[axis]);
                        }
                    }
                }
                else if (ValuePreservingOps.Contains(node.OpType) && node.Input.Count > 0 && node.Input[0] == value)
                {
                    foreach (var output in node.Output.Where(seen.Add))
                    {
                        pending.Enqueue(output);
                    }
                }
            }
        }

        return rows;
    }

    /// <summary>Shape of a constant: an initializer, a Constant node's tensor, or either seen through Identity.</summary>
    private IReadOnlyList<long>? ConstantShape(string name)
    {
        for (int hops = 0; hops < 8; hops++)
        {
            if (initializers.TryGetValue(name, out var tensor))
            {
                return tensor.Dims;
            }

            if (!producers.TryGetValue(name, out var node))
            {
                return null;
            }

            if (node.OpType == "Constant")
            {
                return node.Attribute.FirstOrDefault(a => a.Name == "value")?.T?.Dims;
            }

            if (node.OpType != "Identity" || node.Input.Count == 0)
            {
                return null;
            }

            name = node.Input[0];
        }

        return null;
    }
}
