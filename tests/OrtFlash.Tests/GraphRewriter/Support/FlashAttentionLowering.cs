using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Onnx;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;
using static OrtFlash.Tests.Rewriter.Support.ModelBuilder;

namespace OrtFlash.Tests.Rewriter.Support;

/// <summary>
/// Replaces every com.ortflash::FlashAttention node by standard ONNX ops computing the op
/// contract (scores, softcap and bias in fp32; keys hidden by keep, causal or a −inf bias;
/// masked_rows), so a rewritten model can be checked in ONNX Runtime without the native op.
/// </summary>
internal static class FlashAttentionLowering
{
    public static ModelProto Lower(ModelProto rewritten)
    {
        var model = rewritten.Clone();
        var analysis = new GraphAnalysis(OnnxModel.Load(model));
        var graphModel = analysis.Model;
        var counter = 0;
        foreach (var graph in graphModel.Graphs.ToList())
        {
            var nodes = graph.Function?.Node ?? graph.Proto.Node;
            for (var index = 0; index < nodes.Count; index++)
            {
                var fused = nodes[index];
                if (fused.OpType != "FlashAttention")
                {
                    continue;
                }

                var emitted = new List<NodeProto>();
                var prefix = $"lowered{counter++}_";
                var type = analysis.ElementTypeOf(graph.Resolve(fused.Input[0])!);
                var rank = analysis.ShapeOf(graph.Resolve(fused.Input[0])!)!.Count;
                var qHeads = rank == 4 ? analysis.ShapeOf(graph.Resolve(fused.Input[0])!)![1].Size : null;
                var kvHeads = rank == 4 ? analysis.ShapeOf(graph.Resolve(fused.Input[1])!)![1].Size : null;
                Lower(fused, graph.Function is null ? graph.Proto : null, emitted, prefix, type, rank, graph.DefaultOpset, qHeads, kvHeads);
                nodes.RemoveAt(index);
                for (var i = 0; i < emitted.Count; i++)
                {
                    nodes.Insert(index + i, emitted[i]);
                }

                index += emitted.Count - 1;
            }
        }

        foreach (var imports in model.Functions.Select(f => f.OpsetImport).Prepend(model.OpsetImport))
        {
            if (imports.FirstOrDefault(o => o.Domain == "com.ortflash") is { } ortflash)
            {
                imports.Remove(ortflash);
            }
        }

        return model;
    }

    /// <summary>Lowers one node; constants become initializers of <paramref name="graph"/>, or Constant nodes inside a function (null).</summary>
    private static void Lower(NodeProto fused, GraphProto? graph, List<NodeProto> emitted, string prefix, DataType type,
                              int rank, long opset, long? qHeads, long? kvHeads)
    {
        var next = 0;
        string Node(string op, string[] inputs, params AttributeProto[] attributes)
        {
            var output = $"{prefix}{next++}";
            var node = new NodeProto { OpType = op, Name = output, Input = { inputs }, Output = { output } };
            node.Attribute.AddRange(attributes);
            emitted.Add(node);
            return output;
        }

        string Constant(ConstantTensor value)
        {
            var name = $"{prefix}c{next++}";
            if (graph is null)
            {
                emitted.Add(new NodeProto { OpType = "Constant", Name = name, Output = { name }, Attribute = { Tensor("value", value) } });
            }
            else
            {
                graph.Initializer.Add(value.ToProto(name));
            }

            return name;
        }

        string Unsqueeze(string x, long axis) => opset >= 13
            ? Node("Unsqueeze", [x, Constant(ConstantTensor.Int64s([axis]))])
            : Node("Unsqueeze", [x], Ints("axes", axis));
        string Slice(string x, long start, long end) =>
            Node("Slice", [x, Constant(ConstantTensor.Int64s([start])), Constant(ConstantTensor.Int64s([end])), Constant(ConstantTensor.Int64s([0]))]);
        string ToFloat(string x) => type == DataType.Float ? x : Node("Cast", [x], Int("to", (long)DataType.Float));
        float FloatAttribute(string name, float fallback) => fused.Attribute.FirstOrDefault(a => a.Name == name)?.F ?? fallback;

        string q = fused.Input[0], k = fused.Input[1], v = fused.Input[2];
        if (qHeads is { } hq && kvHeads is { } hkv && hq != hkv)
        {
            string Repeat(string x)
            {
                var shape = Node("Shape", [x]);
                var expandTo = Node("Concat", [Slice(shape, 0, 2), Constant(ConstantTensor.Int64s([hq / hkv])), Slice(shape, 2, 4)], Int("axis", 0));
                var reshapeTo = Node("Concat", [Slice(shape, 0, 1), Constant(ConstantTensor.Int64s([hq])), Slice(shape, 2, 4)], Int("axis", 0));
                return Node("Reshape", [Node("Expand", [Unsqueeze(x, 2), expandTo]), reshapeTo]);
            }

            k = Repeat(k);
            v = Repeat(v);
        }

        long[] swap = rank == 4 ? [0, 1, 3, 2] : [0, 2, 1];
        var scores = Node("MatMul", [ToFloat(q), Node("Transpose", [ToFloat(k)], Ints("perm", swap))]);
        // Without the attribute the op uses 1/√D, D being the query's last dim at run time.
        var scale = fused.Attribute.Any(a => a.Name == "scale")
            ? Constant(ConstantTensor.Scalar(DataType.Float, FloatAttribute("scale", float.NaN)))
            : Node("Reciprocal", [Node("Sqrt", [Node("Cast", [Slice(Node("Shape", [q]), rank - 1, rank)], Int("to", (long)DataType.Float))])]);
        scores = Node("Mul", [scores, scale]);
        var softcap = FloatAttribute("softcap", 0);
        if (softcap > 0)
        {
            var cap = Constant(ConstantTensor.Scalar(DataType.Float, softcap));
            scores = Node("Mul", [Node("Tanh", [Node("Div", [scores, cap])]), cap]);
        }

        if (fused.Input.Count > 3 && fused.Input[3].Length > 0)
        {
            scores = Node("Add", [scores, ToFloat(fused.Input[3])]);
        }

        string? visible = fused.Input.Count > 4 && fused.Input[4].Length > 0 ? fused.Input[4] : null;
        var causal = fused.Attribute.FirstOrDefault(a => a.Name == "causal")?.I ?? 0;
        if (causal != 0)
        {
            var zero = Constant(ConstantTensor.Scalar(DataType.Int64, 0));
            var one = Constant(ConstantTensor.Scalar(DataType.Int64, 1));
            var queryLength = Node("Squeeze", [Slice(Node("Shape", [q]), rank - 2, rank - 1)], opset >= 13 ? [] : [Ints("axes", 0)]);
            var keyLength = Node("Squeeze", [Slice(Node("Shape", [fused.Input[1]]), rank - 2, rank - 1)], opset >= 13 ? [] : [Ints("axes", 0)]);
            var rows = Unsqueeze(Node("Range", [zero, queryLength, one]), 1);
            var limit = causal == 2 ? Node("Add", [rows, Node("Sub", [keyLength, queryLength])]) : rows;
            var columns = Node("Range", [zero, keyLength, one]);
            var lower = Node("Not", [Node("Greater", [columns, limit])]);
            visible = visible is null ? lower : Node("And", [visible, lower]);
        }

        if (visible is not null)
        {
            scores = Node("Where", [visible, scores, Constant(ConstantTensor.Scalar(DataType.Float, float.NegativeInfinity))]);
        }

        var probabilities = Node("Softmax", [scores], Int("axis", rank - 1));
        if ((fused.Attribute.FirstOrDefault(a => a.Name == "masked_rows")?.S.ToStringUtf8() ?? "zero") == "zero")
        {
            probabilities = Node("Where", [Node("IsNaN", [probabilities]), Constant(ConstantTensor.Scalar(DataType.Float, 0)), probabilities]);
        }

        var output = Node("MatMul", [probabilities, ToFloat(v)]);
        emitted.Add(new NodeProto
        {
            OpType = type == DataType.Float ? "Identity" : "Cast",
            Name = prefix + "out",
            Input = { output },
            Output = { fused.Output[0] },
            Attribute = { type == DataType.Float ? [] : new[] { Int("to", (long)type) } },
        });
    }
}
