using System.Globalization;
using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Onnx;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.GraphRewriter.Rules;

/// <summary>An ONNX <c>Attention</c> node (opset 23+) the op can take over.</summary>
/// <param name="Node">The Attention node.</param>
/// <param name="Scale">The scale: the attribute, or 1/√D; null (the op's own 1/√D default) when D is symbolic.</param>
/// <param name="Causal">is_causal mapped to an alignment: lower-right with a KV cache, upper-left without.</param>
/// <param name="Softcap">The softcap attribute (0 when absent).</param>
/// <param name="Mask">The attn_mask input, if any.</param>
/// <param name="MaskKind">How the mask is passed: bias (float) or keep (bool).</param>
/// <param name="HasPast">Whether past_key/past_value are given (concatenated outside the op).</param>
/// <param name="Heads">For 3-D inputs: (q_num_heads, kv_num_heads); null for 4-D.</param>
public sealed record OnnxAttentionMatch(Node Node, double? Scale, CausalAlignment Causal, float Softcap, Value? Mask, MaskKind MaskKind, bool HasPast,
                                        (long Query, long KeyValue)? Heads)
{
    /// <summary>The nonpad_kv_seqlen input (opset 24), turned into a keep mask: key j of batch b is visible iff j &lt; nonpad_kv_seqlen[b].</summary>
    public Value? NonPadKvSeqLen { get; init; }
}

/// <summary>
/// Maps ONNX <c>Attention</c> (opset 23+) with 4-D inputs onto FlashAttention. The KV-cache concat
/// stays outside the op as Concat nodes producing present_key/present_value. ONNX Runtime 1.31 runs
/// this op with is_causal upper-left without a cache and lower-right with one, and gives zeros
/// for rows with no visible key; the mapping follows that.
/// </summary>
public sealed class OnnxAttentionRule(GraphAnalysis analysis)
{
    private const int PastKey = 4;
    private const int PastValue = 5;
    private const int NonPadKvSeqLen = 6;
    private const int QkMatMulOutput = 3;

    /// <summary>Whether <paramref name="node"/> is an ONNX Attention node at all.</summary>
    public static bool IsCandidate(Node node)
    {
        ArgumentNullException.ThrowIfNull(node);
        return node.Is("Attention") && node.Graph.DefaultOpset >= 23;
    }

    /// <summary>The match for an Attention node, or the reason it cannot be mapped.</summary>
    public (OnnxAttentionMatch? Match, string? Reason) Match(Node node)
    {
        ArgumentNullException.ThrowIfNull(node);
        if (node.Input(NonPadKvSeqLen) is { } nonPad)
        {
            if (node.Input(PastKey) is not null || node.Input(PastValue) is not null)
            {
                return (null, "ONNX Attention with nonpad_kv_seqlen and past_key/past_value (the spec says not to combine them) is not mapped.");
            }

            if (node.IntAttribute("is_causal") == 1)
            {
                return (null, "ONNX Attention with nonpad_kv_seqlen and is_causal: the causal diagonal is offset per batch by nonpad_kv_seqlen − q_len, which the op's causal attribute cannot express.");
            }

            if (node.Input(3) is not null)
            {
                return (null, "ONNX Attention with nonpad_kv_seqlen and attn_mask (the spec says not to combine them) is not mapped.");
            }

            if (analysis.ElementTypeOf(nonPad) != DataType.Int64 || analysis.ShapeOf(nonPad) is { Count: not 1 })
            {
                return (null, $"ONNX Attention nonpad_kv_seqlen '{nonPad.Name}' is not a 1-D int64 tensor.");
            }
        }

        if (node.Output(QkMatMulOutput) is { } qk && (qk.IsGraphOutput || qk.Consumers.Count > 0))
        {
            return (null, $"ONNX Attention output '{qk.Name}' (the QK matmul output) is used; the op does not produce it.");
        }

        if ((node.Input(PastKey) is null) != (node.Input(PastValue) is null))
        {
            return (null, "ONNX Attention with only one of past_key and past_value.");
        }

        var query = node.Input(0)!;
        var shapes = new[] { query, node.Input(1)!, node.Input(2)! }.Select(analysis.ShapeOf).ToArray();
        (long Query, long KeyValue)? heads = null;
        if (shapes.All(s => s is { Count: 3 }) && node.IntAttribute("q_num_heads") is { } qHeads && node.IntAttribute("kv_num_heads") is { } kvHeads &&
            qHeads > 0 && kvHeads > 0 && qHeads % kvHeads == 0)
        {
            // (B, S, H·D) inputs are split into heads around the op; only the head size is needed here.
            heads = (qHeads, kvHeads);
            var headDim = shapes[0]![2].Size is { } hidden && hidden % qHeads == 0 ? hidden / qHeads : (long?)null;
            shapes[0] = [shapes[0]![0], Dim.Of(qHeads), shapes[0]![1], headDim is { } d ? Dim.Of(d) : Dim.Unknown];
        }
        else if (shapes.Any(s => s is not { Count: 4 }))
        {
            return (null, "ONNX Attention inputs are neither all 4-D nor all 3-D with q_num_heads/kv_num_heads.");
        }

        var type = analysis.ElementTypeOf(query);
        if (!ElementTypes.IsAttentionType(type) || analysis.ElementTypeOf(node.Input(1)!) != type || analysis.ElementTypeOf(node.Input(2)!) != type)
        {
            return (null, $"ONNX Attention types ({type}, {analysis.ElementTypeOf(node.Input(1)!)}, {analysis.ElementTypeOf(node.Input(2)!)}) are not one float type the op takes.");
        }

        // Without the attribute both ONNX Attention and the op use 1/√D of the query's head size
        // (after the head split for 3-D inputs), so a symbolic D leaves the op's attribute out too.
        double? scale = node.FloatAttribute("scale") is { } given ? given
            : shapes[0]![3].Size is { } headSize ? 1 / Math.Sqrt(headSize)
            : null;

        Value? mask = node.Input(3);
        var maskKind = MaskKind.AdditiveBias;
        if (mask is not null)
        {
            var maskType = analysis.ElementTypeOf(mask);
            if (maskType == DataType.Bool)
            {
                maskKind = MaskKind.KeepNegativeInfinity;
            }
            else if (maskType != type)
            {
                return (null, $"ONNX Attention mask '{mask.Name}' is {maskType}, attention runs in {type}.");
            }

            if (analysis.ShapeOf(mask) is { } maskShape && shapes[1]![2].Size is { } keyLength && node.Input(PastKey) is null &&
                maskShape.Count > 0 && maskShape[^1].Size is { } maskLength && maskLength != keyLength && maskLength != 1)
            {
                return (null, $"ONNX Attention mask '{mask.Name}' covers {maskLength} keys of {keyLength} (a shorter mask is padded with −inf; not mapped).");
            }
        }

        var hasPast = node.Input(PastKey) is not null;
        var causal = node.IntAttribute("is_causal") == 1
            ? hasPast ? CausalAlignment.LowerRight : CausalAlignment.UpperLeft
            : CausalAlignment.None;
        var softcap = node.FloatAttribute("softcap") ?? 0;
        if (!(softcap >= 0) || !float.IsFinite(softcap))
        {
            return (null, $"ONNX Attention softcap {softcap.ToString(CultureInfo.InvariantCulture)} is not usable.");
        }

        return (new OnnxAttentionMatch(node, scale, causal, softcap, mask, maskKind, hasPast, heads) { NonPadKvSeqLen = node.Input(NonPadKvSeqLen) }, null);
    }

    /// <summary>Replaces the Attention node; returns the FlashAttention node.</summary>
    public Node Rewrite(OnnxAttentionMatch match)
    {
        ArgumentNullException.ThrowIfNull(match);
        var node = match.Node;
        var graph = node.Graph;
        var names = graph.Model.Names;
        Value Constant(long[] values, string hint)
        {
            var name = names.Fresh(hint);
            var attribute = new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = ConstantTensor.Int64s(values).ToProto(name) };
            return graph.InsertNode(node, "Constant", "", [], [name], hint, [attribute]).Output(0)!;
        }

        // (B, S, H·D) → (B, H, S, D)
        Value HeadsFirst(Value input, long heads)
        {
            var split = graph.InsertNode(node, "Reshape", "", [input, Constant([0, 0, heads, -1], "HeadSplitShape")],
                [names.Fresh(input.Name + "_heads")], "SplitHeads").Output(0)!;
            return graph.InsertNode(node, "Transpose", "", [split], [names.Fresh(input.Name + "_bhsd")], "HeadsFirst",
                [Node.IntsAttributeProto("perm", [0, 2, 1, 3])]).Output(0)!;
        }

        var query = match.Heads is { } h ? HeadsFirst(node.Input(0)!, h.Query) : node.Input(0)!;

        // present_key/present_value = Concat(past, new) on the sequence axis (or the new K/V without a cache).
        Value Present(int input, int past, int output, string hint)
        {
            var current = match.Heads is { } split ? HeadsFirst(node.Input(input)!, split.KeyValue) : node.Input(input)!;
            var present = node.Output(output) is { } p && (p.IsGraphOutput || p.Consumers.Count > 0) ? p : null;
            if (!match.HasPast && present is null)
            {
                return current;
            }

            var producer = match.HasPast
                ? graph.InsertNode(node, "Concat", "", [node.Input(past), current], [names.Fresh(current.Name + "_with_past")], hint,
                    [Node.IntAttributeProto("axis", 2)])
                : graph.InsertNode(node, "Identity", "", [current], [names.Fresh(current.Name + "_present")], hint);
            if (present is not null)
            {
                graph.TransferOutput(present, producer, 0);
            }

            return producer.Output(0)!;
        }

        var key = Present(1, PastKey, 1, "PresentKey");
        var value = Present(2, PastValue, 2, "PresentValue");

        var attributes = new List<AttributeProto>();
        if (match.Scale is { } scale)
        {
            attributes.Add(Node.FloatAttributeProto("scale", (float)scale));
        }

        if (match.Causal != CausalAlignment.None)
        {
            attributes.Add(Node.IntAttributeProto("causal", (long)match.Causal));
        }

        if (match.Softcap > 0)
        {
            attributes.Add(Node.FloatAttributeProto("softcap", match.Softcap));
        }

        attributes.Add(Node.StringAttributeProto("masked_rows", "zero"));
        var inputs = new List<Value?> { query, key, value };
        if (match.Mask is { } mask)
        {
            inputs.AddRange(match.MaskKind == MaskKind.KeepNegativeInfinity ? [null, mask] : [mask]);
        }
        else if (match.NonPadKvSeqLen is { } lengths)
        {
            inputs.AddRange([null, NonPaddingKeys(key, lengths)]);
        }

        // keep[b, 0, 0, j] = j < nonpad_kv_seqlen[b]: Range(0, T) < Unsqueeze(lengths, [1, 2, 3]).
        Value NonPaddingKeys(Value key, Value lengths)
        {
            Value Scalar(long v, string hint)
            {
                var name = names.Fresh(hint);
                var attribute = new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = ConstantTensor.Scalar(DataType.Int64, v).ToProto(name) };
                return graph.InsertNode(node, "Constant", "", [], [name], hint, [attribute]).Output(0)!;
            }

            var keyShape = graph.InsertNode(node, "Shape", "", [key], [names.Fresh(key.Name + "_length")], "KeyLength",
                [Node.IntAttributeProto("start", 2), Node.IntAttributeProto("end", 3)]).Output(0)!;
            var keyLength = graph.InsertNode(node, "Squeeze", "", [keyShape], [names.Fresh(key.Name + "_length_scalar")], "KeyLengthScalar").Output(0)!;
            var positions = graph.InsertNode(node, "Range", "", [Scalar(0, "KeyPositionStart"), keyLength, Scalar(1, "KeyPositionStep")],
                [names.Fresh("key_positions")], "KeyPositions").Output(0)!;
            var perBatch = graph.InsertNode(node, "Unsqueeze", "", [lengths, Constant([1, 2, 3], "NonPadAxes")],
                [names.Fresh(lengths.Name + "_b111")], "NonPadPerBatch").Output(0)!;
            return graph.InsertNode(node, "Less", "", [positions, perBatch], [names.Fresh(lengths.Name + "_keep")], "NonPadKeep").Output(0)!;
        }

        var output = node.Output(0)!;
        var fused = graph.InsertNode(node, ScaledDotProductAttentionRule.OpType, ScaledDotProductAttentionRule.Domain, inputs,
            [names.Fresh(output.Name + "_fused")], node.Name.Length > 0 ? node.Name + "_FlashAttention" : "FlashAttention", attributes);
        if (match.Heads is null)
        {
            graph.TransferOutput(output, fused, 0);
        }
        else
        {
            // (B, H, S, Dv) → (B, S, H·Dv)
            var sequenceFirst = graph.InsertNode(node, "Transpose", "", [fused.Output(0)], [names.Fresh(output.Name + "_bshd")], "SequenceFirst",
                [Node.IntsAttributeProto("perm", [0, 2, 1, 3])]).Output(0)!;
            var merged = graph.InsertNode(node, "Reshape", "", [sequenceFirst, Constant([0, 0, -1], "HeadMergeShape")],
                [names.Fresh(output.Name + "_merged")], "MergeHeads");
            graph.TransferOutput(output, merged, 0);
        }

        graph.RemoveDead(node);
        graph.EnsureOpsetImport(ScaledDotProductAttentionRule.Domain, 1);
        return fused;
    }
}
