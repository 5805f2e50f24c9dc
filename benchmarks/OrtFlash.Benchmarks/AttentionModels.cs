using Google.Protobuf;
using OrtFlash.GraphRewriter.Onnx;

namespace OrtFlash.Benchmarks;

/// <summary>The two graphs compared: one FlashAttention node, and the attention an exporter spells out.</summary>
internal static class AttentionModels
{
    private const TensorProto.Types.DataType Float = TensorProto.Types.DataType.Float;

    public static byte[] Fused(float scale)
    {
        var graph = Graph("fused");
        var node = new NodeProto { OpType = "FlashAttention", Domain = "com.ortflash", Name = "attention" };
        node.Input.AddRange(["Q", "K", "V", "bias"]);
        node.Output.Add("Y");
        node.Attribute.Add(new AttributeProto { Name = "scale", Type = AttributeProto.Types.AttributeType.Float, F = scale });
        graph.Node.Add(node);
        return Model(graph, ("com.ortflash", 1));
    }

    /// <summary>MatMul(Q, Transpose(K)) → Mul(scale) → Add(bias) → Softmax → MatMul(V), as BERT exports it.</summary>
    public static byte[] Unfused(float scale)
    {
        var graph = Graph("unfused");
        var transpose = Node("Transpose", ["K"], "Kt");
        var perm = new AttributeProto { Name = "perm", Type = AttributeProto.Types.AttributeType.Ints };
        perm.Ints.AddRange([0, 1, 3, 2]);
        transpose.Attribute.Add(perm);
        graph.Node.Add(transpose);
        graph.Node.Add(Node("MatMul", ["Q", "Kt"], "QK"));
        var scaleTensor = new TensorProto { Name = "scale", DataType = (int)Float };
        scaleTensor.FloatData.Add(scale);
        graph.Initializer.Add(scaleTensor);
        graph.Node.Add(Node("Mul", ["QK", "scale"], "scores"));
        graph.Node.Add(Node("Add", ["scores", "bias"], "masked"));
        var softmax = Node("Softmax", ["masked"], "probs");
        softmax.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = -1 });
        graph.Node.Add(softmax);
        graph.Node.Add(Node("MatMul", ["probs", "V"], "Y"));
        return Model(graph);
    }

    private static GraphProto Graph(string name)
    {
        var graph = new GraphProto { Name = name };
        foreach (var input in new[] { "Q", "K", "V", "bias" })
        {
            graph.Input.Add(new ValueInfoProto { Name = input, Type = TensorType() });
        }

        graph.Output.Add(new ValueInfoProto { Name = "Y", Type = TensorType() });
        return graph;
    }

    private static TypeProto TensorType() => new() { TensorType = new TypeProto.Types.Tensor { ElemType = (int)Float } };

    private static NodeProto Node(string opType, string[] inputs, string output)
    {
        var node = new NodeProto { OpType = opType, Name = output };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        return node;
    }

    private static byte[] Model(GraphProto graph, params (string Domain, long Version)[] extraOpsets)
    {
        var model = new ModelProto { IrVersion = 8, ProducerName = "OrtFlash.Benchmarks", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        foreach (var (domain, version) in extraOpsets)
        {
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = domain, Version = version });
        }

        return model.ToByteArray();
    }
}
