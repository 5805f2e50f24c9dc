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

    /// <summary>What the report says about how this node was mapped.</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];
}

/// <summary>
/// Maps ONNX <c>Attention</c> (opset 23+) onto FlashAttention (3-D inputs are split into heads around
/// it). The KV-cache concat stays outside the op as Concat nodes producing present_key/present_value.
/// The mapping follows what ONNX Runtime 1.31 computes, measured: is_causal is upper-left without a
/// cache, lower-right with one, and with nonpad_kv_seqlen aligned per batch to the last non-padded key;
/// softcap comes before the mask; a mask value equal to the type's lowest finite value hides its key
/// like −inf; a row with no visible key gives zeros.
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
        var isCausal = node.IntAttribute("is_causal") == 1;
        var nonPad = node.Input(NonPadKvSeqLen);
        if (nonPad is not null)
        {
            if (node.Input(PastKey) is not null || node.Input(PastValue) is not null)
            {
                return (null, "ONNX Attention with nonpad_kv_seqlen and past_key/past_value (the spec says not to combine them; ONNX Runtime 1.31 rejects it) is not mapped.");
            }

            if (node.Input(3) is not null)
            {
                return (null, "ONNX Attention with nonpad_kv_seqlen and attn_mask (the spec says not to combine them, though ONNX Runtime 1.31 runs it) is not mapped.");
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

        if (node.Input(PastKey) is not null && node.Output(1) is null)
        {
            return (null, "ONNX Attention with past_key but no present_key output: ONNX Runtime 1.31 rejects it (\"does not support past_key provided and present_key being null\").");
        }

        if (node.IntAttribute("softmax_precision") is { } precision && precision != 0 && precision != (long)DataType.Float)
        {
            return (null, $"ONNX Attention softmax_precision {precision} ({(DataType)precision}) asks for the softmax in another type than float32, the only one the op computes it in (ONNX Runtime 1.31 runs the node).");
        }

        var query = node.Input(0)!;
        var shapes = new[] { query, node.Input(1)!, node.Input(2)! }.Select(analysis.ShapeOf).ToArray();
        (long Query, long KeyValue)? heads = null;
        if (shapes.All(s => s is { Count: 3 }) && node.IntAttribute("q_num_heads") is { } qHeads && node.IntAttribute("kv_num_heads") is { } kvHeads &&
            qHeads > 0 && kvHeads > 0 && qHeads % kvHeads == 0)
        {
            // (B, S, H·D) inputs are split into heads around the op; the checks below read the (B, H, S, D) view.
            heads = (qHeads, kvHeads);
            shapes[0] = HeadsFirst(shapes[0]!, qHeads);
            shapes[1] = HeadsFirst(shapes[1]!, kvHeads);
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

        var hasPast = node.Input(PastKey) is not null;
        var totalKeys = hasPast
            ? analysis.ShapeOf(node.Input(PastKey)!) is { Count: 4 } pastShape ? Dim.Add(pastShape[2], shapes[1]![2]) : Dim.Unknown
            : shapes[1]![2];
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
                return (null, $"ONNX Attention mask '{mask.Name}' is {maskType}, attention runs in {type} (ONNX Runtime 1.31 runs it; the op's bias has the attention's type).");
            }

            if (MaskShapeProblem(mask, analysis.ShapeOf(mask), shapes[0]!, totalKeys) is { } problem)
            {
                return (null, problem);
            }
        }

        var causal = !isCausal ? CausalAlignment.None
            : hasPast || nonPad is not null ? CausalAlignment.LowerRight
            : CausalAlignment.UpperLeft;
        var softcap = node.FloatAttribute("softcap") ?? 0;
        if (!(softcap >= 0) || !float.IsFinite(softcap))
        {
            return (null, $"ONNX Attention softcap {softcap.ToString(CultureInfo.InvariantCulture)} is not usable.");
        }

        var notes = new List<string>();
        if (mask is not null && maskKind == MaskKind.AdditiveBias)
        {
            notes.Add($"attn_mask values equal to {type}'s lowest finite value hide their key, as in ONNX Runtime 1.31 (a row hidden entirely gives zeros): they are replaced by −inf in the graph before the op's bias.");
        }

        if (nonPad is not null && isCausal)
        {
            notes.Add("nonpad_kv_seqlen with is_causal: ONNX Runtime 1.31 aligns the causal diagonal with each batch's last non-padded key, so key j is visible to query i of batch b iff j ≤ i + nonpad_kv_seqlen[b] − q_len; "
                      + "that keep mask is built in the graph, rows without a visible key give zeros, and causal=2 (implied, as nonpad_kv_seqlen ≤ the key length) lets the op skip hidden tiles.");
        }

        return (new OnnxAttentionMatch(node, scale, causal, softcap, mask, maskKind, hasPast, heads) { NonPadKvSeqLen = nonPad, Notes = notes }, null);
    }

    private static IReadOnlyList<Dim> HeadsFirst(IReadOnlyList<Dim> shape, long heads) =>
        [shape[0], Dim.Of(heads), shape[1], shape[2].Size is { } hidden && hidden % heads == 0 ? Dim.Of(hidden / heads) : Dim.Unknown];

    /// <summary>
    /// Why ONNX Runtime 1.31 would reject <paramref name="mask"/>'s shape, or null. It takes a 2-D
    /// (S, T), 3-D (H, S, T) or 4-D (B, H, S, T) mask whose last two dims are exactly the query length
    /// and the total key length: shorter masks are not padded and broadcast dims there are refused.
    /// </summary>
    private static string? MaskShapeProblem(Value mask, IReadOnlyList<Dim>? maskShape, IReadOnlyList<Dim> query, Dim totalKeys)
    {
        if (maskShape is null)
        {
            return null;
        }

        if (maskShape.Count is < 2 or > 4)
        {
            return $"ONNX Attention mask '{mask.Name}' is {maskShape.Count}-D; ONNX Runtime 1.31 rejects masks that are not 2-D, 3-D or 4-D.";
        }

        if (maskShape[^1].SameAs(totalKeys) == false)
        {
            return $"ONNX Attention mask '{mask.Name}' covers {Describe(maskShape[^1])} keys of {Describe(totalKeys)}; ONNX Runtime 1.31 rejects a mask whose last dim is not the total key length (it neither pads nor broadcasts it).";
        }

        if (maskShape[^2].SameAs(query[2]) == false)
        {
            return $"ONNX Attention mask '{mask.Name}' has {Describe(maskShape[^2])} query rows for a query length of {Describe(query[2])}; ONNX Runtime 1.31 rejects a mask whose second-to-last dim is not the query length.";
        }

        // Leading dims broadcast as (B, H): 1 or the matching dim.
        for (var axis = 0; axis < maskShape.Count - 2; axis++)
        {
            var against = query[axis + 4 - maskShape.Count];
            if (maskShape[axis].Size is { } size && size != 1 && against.SameAs(maskShape[axis]) == false)
            {
                return $"ONNX Attention mask '{mask.Name}' dim {axis} ({size}) does not broadcast against {Describe(against)} (neither 1 nor equal; ONNX Runtime 1.31 rejects it).";
            }
        }

        return null;

        static string Describe(Dim dim) => dim.Size?.ToString(CultureInfo.InvariantCulture) ?? dim.Symbol ?? "?";
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
            inputs.AddRange(match.MaskKind == MaskKind.KeepNegativeInfinity ? [null, mask] : [LowestHides(mask)]);
        }
        else if (match.NonPadKvSeqLen is { } lengths)
        {
            inputs.AddRange([null, match.Causal == CausalAlignment.None ? NonPaddingKeys(key, lengths) : CausalNonPaddingKeys(query, key, lengths)]);
        }

        // ONNX Runtime 1.31 hides a key whose mask value is the type's lowest finite value (rows hidden
        // entirely give zeros) but treats every other value as a number: −inf makes the op do the same.
        Value LowestHides(Value mask)
        {
            var type = analysis.ElementTypeOf(mask);
            var hidden = graph.InsertNode(node, "Equal", "", [mask, TypedScalar(type, ElementTypes.Lowest(type), "MaskLowest")],
                [names.Fresh(mask.Name + "_is_lowest")], "MaskLowestHides").Output(0)!;
            return graph.InsertNode(node, "Where", "", [hidden, TypedScalar(type, double.NegativeInfinity, "MaskHidden"), mask],
                [names.Fresh(mask.Name + "_bias")], "MaskBias").Output(0)!;
        }

        Value TypedScalar(DataType type, double v, string hint)
        {
            var name = names.Fresh(hint);
            var attribute = new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = ConstantTensor.Scalar(type, v).ToProto(name) };
            return graph.InsertNode(node, "Constant", "", [], [name], hint, [attribute]).Output(0)!;
        }

        // Range(0, length of `axis` of `input`): the positions along that axis.
        Value Positions(Value input, long axis, string hint)
        {
            var dim = graph.InsertNode(node, "Shape", "", [input], [names.Fresh(input.Name + "_length")], hint + "Length",
                [Node.IntAttributeProto("start", axis), Node.IntAttributeProto("end", axis + 1)]).Output(0)!;
            var length = graph.InsertNode(node, "Squeeze", "", [dim], [names.Fresh(input.Name + "_length_scalar")], hint + "LengthScalar").Output(0)!;
            return graph.InsertNode(node, "Range", "", [TypedScalar(DataType.Int64, 0, hint + "Start"), length, TypedScalar(DataType.Int64, 1, hint + "Step")],
                [names.Fresh(hint.ToLowerInvariant() + "_positions")], hint + "Positions").Output(0)!;
        }

        Value PerBatch(Value lengths) => graph.InsertNode(node, "Unsqueeze", "", [lengths, Constant([1, 2, 3], "NonPadAxes")],
            [names.Fresh(lengths.Name + "_b111")], "NonPadPerBatch").Output(0)!;

        // keep[b, 0, 0, j] = j < nonpad_kv_seqlen[b]: Range(0, T) < Unsqueeze(lengths, [1, 2, 3]).
        Value NonPaddingKeys(Value key, Value lengths) =>
            graph.InsertNode(node, "Less", "", [Positions(key, 2, "Key"), PerBatch(lengths)], [names.Fresh(lengths.Name + "_keep")], "NonPadKeep").Output(0)!;

        // keep[b, 0, i, j] = j ≤ i + nonpad_kv_seqlen[b] − S, ONNX Runtime's per-batch causal diagonal (it implies j < nonpad_kv_seqlen[b]):
        // Range(0, T) ≤ Unsqueeze(Range(0, S), [1]) + Unsqueeze(lengths, [1, 2, 3]) − S, shaped (B, 1, S, T).
        Value CausalNonPaddingKeys(Value query, Value key, Value lengths)
        {
            var queryPositions = Positions(query, 2, "Query");
            var rows = graph.InsertNode(node, "Unsqueeze", "", [queryPositions, Constant([1], "QueryRowAxis")],
                [names.Fresh("query_rows")], "QueryRows").Output(0)!;
            var queryLength = graph.InsertNode(node, "Shape", "", [query], [names.Fresh(query.Name + "_query_length")], "QueryLengthForOffset",
                [Node.IntAttributeProto("start", 2), Node.IntAttributeProto("end", 3)]).Output(0)!;
            var offset = graph.InsertNode(node, "Sub", "", [PerBatch(lengths), queryLength], [names.Fresh(lengths.Name + "_diagonal_offset")], "NonPadDiagonalOffset").Output(0)!;
            var lastVisible = graph.InsertNode(node, "Add", "", [rows, offset], [names.Fresh(lengths.Name + "_last_visible")], "NonPadLastVisibleKey").Output(0)!;
            return graph.InsertNode(node, "LessOrEqual", "", [Positions(key, 2, "Key"), lastVisible], [names.Fresh(lengths.Name + "_causal_keep")], "NonPadCausalKeep").Output(0)!;
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
