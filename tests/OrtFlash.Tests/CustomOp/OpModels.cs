using Google.Protobuf;
using OrtFlash.GraphRewriter.Onnx;

namespace OrtFlash.Tests.CustomOp;

/// <summary>Builds the small ONNX models the op tests run: one FlashAttention node, or the unfused equivalent.</summary>
public static class OpModels
{
    public const string Domain = "com.ortflash";

    /// <summary>
    /// A model with one FlashAttention node. Graph inputs "Q", "K", "V" and, when the case has them, "bias" and
    /// "keep"; output "Y". <paramref name="inputNames"/> overrides the node's input list (e.g. "" to skip bias).
    /// </summary>
    public static byte[] FusedModel(AttentionCase c, IReadOnlyList<string>? inputNames = null, IEnumerable<AttributeProto>? extraAttributes = null)
    {
        var graph = new GraphProto { Name = "flash_attention" };
        graph.Input.Add(TensorInput("Q", c.OnnxType, c.QueryShape.Length));
        graph.Input.Add(TensorInput("K", c.OnnxType, c.KeyShape.Length));
        graph.Input.Add(TensorInput("V", c.OnnxType, c.ValueShape.Length));
        if (c.BiasShape is not null)
        {
            graph.Input.Add(TensorInput("bias", c.OnnxType, c.BiasShape.Length));
        }

        if (c.KeepShape is not null)
        {
            graph.Input.Add(TensorInput("keep", TensorProto.Types.DataType.Bool, c.KeepShape.Length));
        }

        var node = new NodeProto { OpType = "FlashAttention", Domain = Domain, Name = "attention" };
        node.Input.AddRange(inputNames ?? DefaultInputs(c));
        node.Output.Add("Y");
        if (c.Scale is { } scale)
        {
            node.Attribute.Add(FloatAttribute("scale", scale));
        }

        if (c.Causal != 0)
        {
            node.Attribute.Add(IntAttribute("causal", c.Causal));
        }

        if (c.Softcap != 0)
        {
            node.Attribute.Add(FloatAttribute("softcap", c.Softcap));
        }

        if (c.MaskedRows is not null)
        {
            node.Attribute.Add(new AttributeProto { Name = "masked_rows", Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(c.MaskedRows) });
        }

        if (extraAttributes is not null)
        {
            node.Attribute.AddRange(extraAttributes);
        }

        graph.Node.Add(node);
        graph.Output.Add(TensorOutput("Y", c.OnnxType));
        return Model(graph, withOrtFlash: true);
    }

    /// <summary>
    /// The attention an exporter spells out: MatMul(Q, Kᵀ) · scale (+ bias) → Where(keep, s, −inf) → Softmax →
    /// MatMul(V), in float32, with causal masking as a constant additive −inf mask. Needs Hq == Hkv.
    /// </summary>
    public static byte[] UnfusedModel(AttentionCase c)
    {
        var graph = new GraphProto { Name = "unfused_attention" };
        var type = TensorProto.Types.DataType.Float;
        graph.Input.Add(TensorInput("Q", type, c.QueryShape.Length));
        graph.Input.Add(TensorInput("K", type, c.KeyShape.Length));
        graph.Input.Add(TensorInput("V", type, c.ValueShape.Length));
        int rank = c.QueryShape.Length;
        var perm = rank == 4 ? new long[] { 0, 1, 3, 2 } : new long[] { 0, 2, 1 };
        var headDim = c.QueryShape[^1];
        float scale = c.Scale ?? (float)(1.0 / Math.Sqrt(headDim));

        graph.Node.Add(Node("Transpose", ["K"], ["Kt"], IntsAttribute("perm", perm)));
        graph.Node.Add(Node("MatMul", ["Q", "Kt"], ["QK"]));
        graph.Initializer.Add(Scalar("scale", scale));
        graph.Node.Add(Node("Mul", ["QK", "scale"], ["scores"]));
        var current = "scores";
        if (c.BiasShape is not null)
        {
            graph.Input.Add(TensorInput("bias", type, c.BiasShape.Length));
            graph.Node.Add(Node("Add", [current, "bias"], ["biased"]));
            current = "biased";
        }

        if (c.Causal != 0)
        {
            var qLen = c.QueryShape[^2];
            var kvLen = c.KeyShape[^2];
            var mask = new float[qLen * kvLen];
            for (long i = 0; i < qLen; i++)
            {
                for (long j = 0; j < kvLen; j++)
                {
                    bool visible = c.Causal == 1 ? j <= i : j <= i + kvLen - qLen;
                    mask[i * kvLen + j] = visible ? 0f : float.NegativeInfinity;
                }
            }

            graph.Initializer.Add(FloatTensor("causal_mask", [qLen, kvLen], mask));
            graph.Node.Add(Node("Add", [current, "causal_mask"], ["causal_scores"]));
            current = "causal_scores";
        }

        if (c.KeepShape is not null)
        {
            graph.Input.Add(TensorInput("keep", TensorProto.Types.DataType.Bool, c.KeepShape.Length));
            graph.Initializer.Add(Scalar("neg_inf", float.NegativeInfinity));
            graph.Node.Add(Node("Where", ["keep", current, "neg_inf"], ["kept"]));
            current = "kept";
        }

        graph.Node.Add(Node("Softmax", [current], ["probs"], IntAttribute("axis", -1)));
        graph.Node.Add(Node("MatMul", ["probs", "V"], ["Y"]));
        graph.Output.Add(TensorOutput("Y", type));
        return Model(graph, withOrtFlash: false);
    }

    public static IReadOnlyList<string> DefaultInputs(AttentionCase c)
    {
        var inputs = new List<string> { "Q", "K", "V" };
        if (c.BiasShape is not null || c.KeepShape is not null)
        {
            inputs.Add(c.BiasShape is not null ? "bias" : "");
        }

        if (c.KeepShape is not null)
        {
            inputs.Add("keep");
        }

        return inputs;
    }

    public static byte[] Model(GraphProto graph, bool withOrtFlash)
    {
        var model = new ModelProto { IrVersion = 8, ProducerName = "OrtFlash.Tests", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        if (withOrtFlash)
        {
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = Domain, Version = 1 });
        }

        return model.ToByteArray();
    }

    public static NodeProto Node(string opType, string[] inputs, string[] outputs, params AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = opType, Name = outputs[0] + "_node" };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        node.Attribute.AddRange(attributes);
        return node;
    }

    public static ValueInfoProto TensorInput(string name, TensorProto.Types.DataType type, int rank)
    {
        var shape = new TensorShapeProto();
        for (int i = 0; i < rank; i++)
        {
            shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = $"{name}_d{i}" });
        }

        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } },
        };
    }

    public static ValueInfoProto TensorOutput(string name, TensorProto.Types.DataType type) =>
        new() { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type } } };

    public static AttributeProto FloatAttribute(string name, float value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    public static AttributeProto IntAttribute(string name, long value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    public static AttributeProto IntsAttribute(string name, long[] values)
    {
        var attribute = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        attribute.Ints.AddRange(values);
        return attribute;
    }

    public static TensorProto Scalar(string name, float value) => FloatTensor(name, [], [value]);

    public static TensorProto FloatTensor(string name, long[] dims, float[] values)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float };
        tensor.Dims.AddRange(dims);
        tensor.FloatData.AddRange(values);
        return tensor;
    }
}
