using OrtFlash.Tests.CustomOp;

namespace OrtFlash.Tests.Rewriter.Support;

/// <summary>
/// The com.ortflash::FlashAttention contract on <see cref="TestTensor"/>s, to check a rewritten graph without the
/// native op: the test suite's one double-precision reference (<see cref="CustomOp.ReferenceAttention"/>).
/// </summary>
internal static class ReferenceAttention
{
    /// <summary>A null <paramref name="scale"/> means the op's default, 1/√D.</summary>
    public static TestTensor Compute(TestTensor q, TestTensor k, TestTensor v, TestTensor? bias, TestTensor? keep,
                                     float? scale, long causal, float softcap, string maskedRows)
    {
        var c = new AttentionCase
        {
            QueryShape = q.Shape,
            KeyShape = k.Shape,
            ValueShape = v.Shape,
            Query = q.Data,
            Key = k.Data,
            Value = v.Data,
            BiasShape = bias?.Shape,
            Bias = bias?.Data,
            KeepShape = keep?.Shape,
            Keep = keep?.Data.Select(x => x != 0).ToArray(),
            Scale = scale,
            Causal = (int)causal,
            Softcap = softcap,
            MaskedRows = maskedRows,
        };
        var output = CustomOp.ReferenceAttention.Compute(c).Select(x => (float)x).ToArray();
        var (batch, heads, queries, _) = CustomOp.ReferenceAttention.Dims4(q.Shape);
        long[] shape = q.Shape.Length == 4 ? [batch, heads, queries, v.Shape[^1]] : [batch, queries, v.Shape[^1]];
        return new TestTensor(q.Type, shape, output);
    }
}
