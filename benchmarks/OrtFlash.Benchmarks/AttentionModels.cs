using Google.Protobuf;
using OrtFlash.GraphRewriter.Onnx;

namespace OrtFlash.Benchmarks;

/// <summary>What a benchmark case computes: the attention one kind of model runs.</summary>
public enum Scenario
{
    /// <summary>Encoder (BERT): B = 1, H = 12, D = 64, S = T, a padding bias of shape (B, 1, 1, T).</summary>
    PaddedEncoder,

    /// <summary>Decoder prefill without padding: B = 1, H = 12, D = 64, S = T, causal. The graph adds a (1, 1, S, T)
    /// finfo.min triangle (as exporters build it); the op takes causal = 1 and skips the hidden tiles.</summary>
    CausalPrefill,

    /// <summary>One decoding step of a GQA model: B = 1, 32 query heads, 8 key/value heads, D = 128, S = 1 against
    /// T cached keys. The graph repeats K and V to 32 heads (Unsqueeze → Expand → Reshape, as Llama's repeat_kv
    /// exports); the op reads the 8 heads as they are.</summary>
    GqaDecode,
}

/// <summary>The shapes of a scenario and its two graphs: one FlashAttention node, and the attention an exporter spells out.</summary>
internal sealed record AttentionCase(Scenario Scenario, int QueryLength, int KeyLength, int QueryHeads, int KeyValueHeads, int HeadDim)
{
    private const TensorProto.Types.DataType Float = TensorProto.Types.DataType.Float;

    public static AttentionCase For(Scenario scenario, int length) => scenario switch
    {
        Scenario.PaddedEncoder => new(scenario, length, length, 12, 12, 64),
        Scenario.CausalPrefill => new(scenario, length, length, 12, 12, 64),
        Scenario.GqaDecode => new(scenario, 1, length, 32, 8, 128),
        _ => throw new ArgumentOutOfRangeException(nameof(scenario)),
    };

    public float Scale => 1f / MathF.Sqrt(HeadDim);

    /// <summary>Whether the graphs take a bias input (padding, or the unfused graph's causal triangle).</summary>
    public bool HasBias => Scenario != Scenario.GqaDecode;

    public long[] QueryShape => [1, QueryHeads, QueryLength, HeadDim];

    public long[] KeyValueShape => [1, KeyValueHeads, KeyLength, HeadDim];

    /// <summary>The bias the fused graph reads (padding) — the causal case passes none to the op.</summary>
    public long[] BiasShape => Scenario == Scenario.CausalPrefill ? [1, 1, QueryLength, KeyLength] : [1, 1, 1, KeyLength];

    /// <summary>The bias values: the last eighth of the keys padded (−10000), or the causal triangle (finfo.min above the diagonal).</summary>
    public float[] Bias()
    {
        if (Scenario == Scenario.CausalPrefill)
        {
            var triangle = new float[(long)QueryLength * KeyLength];
            for (long i = 0; i < QueryLength; i++)
            {
                for (long j = i + 1; j < KeyLength; j++)
                {
                    triangle[i * KeyLength + j] = float.MinValue;
                }
            }

            return triangle;
        }

        var padding = new float[KeyLength];
        for (var j = KeyLength * 7 / 8; j < KeyLength; j++)
        {
            padding[j] = -10000f;
        }

        return padding;
    }

    /// <summary>The inputs each graph reads: Q, K, V, and bias where the scenario has one for it.</summary>
    public string[] Inputs(bool fused) => HasBias && !(fused && Scenario == Scenario.CausalPrefill) ? ["Q", "K", "V", "bias"] : ["Q", "K", "V"];

    public byte[] Fused()
    {
        var graph = Graph("fused", Inputs(fused: true));
        var node = new NodeProto { OpType = "FlashAttention", Domain = "com.ortflash", Name = "attention" };
        node.Input.AddRange(Inputs(fused: true));
        node.Output.Add("Y");
        node.Attribute.Add(new AttributeProto { Name = "scale", Type = AttributeProto.Types.AttributeType.Float, F = Scale });
        if (Scenario == Scenario.CausalPrefill)
        {
            node.Attribute.Add(new AttributeProto { Name = "causal", Type = AttributeProto.Types.AttributeType.Int, I = 1 });
        }

        graph.Node.Add(node);
        return Model(graph, ("com.ortflash", 1));
    }

    /// <summary>MatMul(Q, Transpose(K)) → Mul(scale) → [Add(bias)] → Softmax → MatMul(V), K and V repeated to the query heads for GQA.</summary>
    public byte[] Unfused()
    {
        var graph = Graph("unfused", Inputs(fused: false));
        var (key, value) = ("K", "V");
        if (QueryHeads != KeyValueHeads)
        {
            key = RepeatHeads(graph, "K");
            value = RepeatHeads(graph, "V");
        }

        graph.Node.Add(WithInts(Node("Transpose", [key], "Kt"), "perm", 0, 1, 3, 2));
        graph.Node.Add(Node("MatMul", ["Q", "Kt"], "QK"));
        graph.Initializer.Add(Tensor("scale", [], [Scale]));
        graph.Node.Add(Node("Mul", ["QK", "scale"], "scores"));
        var scores = "scores";
        if (HasBias)
        {
            graph.Node.Add(Node("Add", ["scores", "bias"], "masked"));
            scores = "masked";
        }

        var softmax = Node("Softmax", [scores], "probs");
        softmax.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = -1 });
        graph.Node.Add(softmax);
        graph.Node.Add(Node("MatMul", ["probs", value], "Y"));
        return Model(graph);
    }

    /// <summary>
    /// ONNX Attention (opset 23) as ONNX Runtime implements it on CPU: the built-in alternative. K and V with their own
    /// head count (GQA by shape), is_causal for the causal scenario, and the padding bias expanded to (B, 1, S, T) in the
    /// graph, because ONNX Runtime 1.31 rejects a mask whose query dim is 1 (part of the measured time).
    /// </summary>
    public byte[] OnnxAttention()
    {
        var inputs = Inputs(fused: true);
        var graph = Graph("onnx_attention", inputs);
        var node = new NodeProto { OpType = "Attention", Name = "attention" };
        node.Input.AddRange(["Q", "K", "V"]);
        if (Scenario == Scenario.PaddedEncoder)
        {
            graph.Initializer.Add(Int64s("mask_shape", [1, 1, QueryLength, KeyLength]));
            graph.Node.Add(Node("Expand", ["bias", "mask_shape"], "mask"));
            node.Input.Add("mask");
        }

        node.Output.Add("Y");
        node.Attribute.Add(new AttributeProto { Name = "scale", Type = AttributeProto.Types.AttributeType.Float, F = Scale });
        if (Scenario == Scenario.CausalPrefill)
        {
            node.Attribute.Add(new AttributeProto { Name = "is_causal", Type = AttributeProto.Types.AttributeType.Int, I = 1 });
        }

        graph.Node.Add(node);
        return Model(graph, opset: 23);
    }

    /// <summary>(B, Hkv, T, D) → Unsqueeze(2) → Expand(B, Hkv, G, T, D) → Reshape(B, Hq, T, D).</summary>
    private string RepeatHeads(GraphProto graph, string input)
    {
        var group = QueryHeads / KeyValueHeads;
        graph.Initializer.Add(Int64s($"{input}_axis", [2]));
        graph.Initializer.Add(Int64s($"{input}_expanded_shape", [1, KeyValueHeads, group, KeyLength, HeadDim]));
        graph.Initializer.Add(Int64s($"{input}_repeated_shape", [1, QueryHeads, KeyLength, HeadDim]));
        graph.Node.Add(Node("Unsqueeze", [input, $"{input}_axis"], $"{input}_unsqueezed"));
        graph.Node.Add(Node("Expand", [$"{input}_unsqueezed", $"{input}_expanded_shape"], $"{input}_expanded"));
        graph.Node.Add(Node("Reshape", [$"{input}_expanded", $"{input}_repeated_shape"], $"{input}_repeated"));
        return $"{input}_repeated";
    }

    private static GraphProto Graph(string name, string[] inputs)
    {
        var graph = new GraphProto { Name = name };
        foreach (var input in inputs)
        {
            graph.Input.Add(new ValueInfoProto { Name = input, Type = TensorType() });
        }

        graph.Output.Add(new ValueInfoProto { Name = "Y", Type = TensorType() });
        return graph;
    }

    private static TypeProto TensorType() => new() { TensorType = new TypeProto.Types.Tensor { ElemType = (int)Float } };

    private static TensorProto Tensor(string name, long[] dims, float[] values)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)Float };
        tensor.Dims.AddRange(dims);
        tensor.FloatData.AddRange(values);
        return tensor;
    }

    private static TensorProto Int64s(string name, long[] values)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
        tensor.Dims.Add(values.Length);
        tensor.Int64Data.AddRange(values);
        return tensor;
    }

    private static NodeProto WithInts(NodeProto node, string name, params long[] values)
    {
        var attribute = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        attribute.Ints.AddRange(values);
        node.Attribute.Add(attribute);
        return node;
    }

    private static NodeProto Node(string opType, string[] inputs, string output)
    {
        var node = new NodeProto { OpType = opType, Name = output };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        return node;
    }

    private static byte[] Model(GraphProto graph, params (string Domain, long Version)[] extraOpsets) => Model(graph, 17, extraOpsets);

    private static byte[] Model(GraphProto graph, long opset, params (string Domain, long Version)[] extraOpsets)
    {
        var model = new ModelProto { IrVersion = opset >= 23 ? 11 : 8, ProducerName = "OrtFlash.Benchmarks", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        foreach (var (domain, version) in extraOpsets)
        {
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = domain, Version = version });
        }

        return model.ToByteArray();
    }
}
