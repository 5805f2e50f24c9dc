using OrtFlash.GraphRewriter.Onnx;

namespace OrtFlash.Tests.CustomOp;

/// <summary>Element type of an op test: the op's T.</summary>
public enum ElementType
{
    Float32,
    Float16,
    BFloat16,
}

/// <summary>
/// One call of the FlashAttention op: shapes, data (as float, rounded to the element type) and attributes.
/// Bias and keep have their own (broadcastable) shapes.
/// </summary>
public sealed record AttentionCase
{
    public required long[] QueryShape { get; init; }
    public required long[] KeyShape { get; init; }
    public required long[] ValueShape { get; init; }
    public long[]? BiasShape { get; init; }
    public long[]? KeepShape { get; init; }
    public required float[] Query { get; init; }
    public required float[] Key { get; init; }
    public required float[] Value { get; init; }
    public float[]? Bias { get; init; }
    public bool[]? Keep { get; init; }
    public float? Scale { get; init; }
    public int Causal { get; init; }
    public float Softcap { get; init; }
    public string? MaskedRows { get; init; }
    public ElementType Type { get; init; } = ElementType.Float32;

    public int Rank => QueryShape.Length;

    public override string ToString() =>
        $"{Type} Q{Fmt(QueryShape)} K{Fmt(KeyShape)} V{Fmt(ValueShape)}" +
        (BiasShape is null ? "" : $" bias{Fmt(BiasShape)}") +
        (KeepShape is null ? "" : $" keep{Fmt(KeepShape)}") +
        (Scale is null ? "" : $" scale={Scale}") +
        (Causal == 0 ? "" : $" causal={Causal}") +
        (Softcap == 0 ? "" : $" softcap={Softcap}") +
        (MaskedRows is null ? "" : $" masked_rows={MaskedRows}");

    public static string Fmt(long[] shape) => "(" + string.Join(",", shape) + ")";

    public TensorProto.Types.DataType OnnxType => Type switch
    {
        ElementType.Float16 => TensorProto.Types.DataType.Float16,
        ElementType.BFloat16 => TensorProto.Types.DataType.Bfloat16,
        _ => TensorProto.Types.DataType.Float,
    };
}
