namespace OrtFlash.Tests.CustomOp;

/// <summary>The op against the unfused attention subgraph, both run by ONNX Runtime (float32).</summary>
[TestFixture]
public sealed class FlashAttentionUnfusedParityTests
{
    public static IEnumerable<TestCaseData> Cases()
    {
        yield return new TestCaseData(CaseFactory.Make(31, [1, 12, 128, 64], [1, 12, 128, 64], [1, 12, 128, 64])).SetName("Bert_128");
        yield return new TestCaseData(CaseFactory.Make(32, [2, 4, 77, 64], [2, 4, 77, 64], [2, 4, 77, 64], bias: [2, 1, 1, 77], biasMagnitude: 5f)).SetName("PaddingBias");
        yield return new TestCaseData(CaseFactory.Make(33, [1, 8, 96, 32], [1, 8, 96, 32], [1, 8, 96, 32], causal: 1, maskedRows: "nan")).SetName("Causal");
        yield return new TestCaseData(CaseFactory.Make(34, [1, 4, 5, 64], [1, 4, 133, 64], [1, 4, 133, 64], causal: 2, maskedRows: "nan")).SetName("KvCacheLowerRight");
        yield return new TestCaseData(CaseFactory.Make(35, [3, 50, 80], [3, 61, 80], [3, 61, 80], keep: [3, 1, 61], maskedRows: "nan")).SetName("Rank3Keep");
        yield return new TestCaseData(CaseFactory.Make(36, [1, 2, 300, 128], [1, 2, 300, 128], [1, 2, 300, 128], scale: 0.05f, bias: [1, 2, 300, 300])).SetName("FullBias_128");
    }

    [TestCaseSource(nameof(Cases))]
    public void OpMatchesUnfusedGraph(AttentionCase c)
    {
        var (fused, fusedShape) = OpRunner.RunFused(c);
        var (unfused, unfusedShape) = OpRunner.RunUnfused(c);
        Assert.That(fusedShape, Is.EqualTo(unfusedShape));
        Assert.That(fused, Has.Length.EqualTo(unfused.Length));
        for (int i = 0; i < fused.Length; i++)
        {
            if (float.IsNaN(unfused[i]))
            {
                Assert.That(float.IsNaN(fused[i]), Is.True, $"element {i}: unfused NaN, fused {fused[i]}");
                continue;
            }

            Assert.That(fused[i], Is.EqualTo(unfused[i]).Within(1e-5 + 1e-4 * Math.Abs(unfused[i])), $"element {i} of {c}");
        }
    }
}
