using Microsoft.ML.OnnxRuntime;

namespace OrtFlash.Tests.CustomOp;

/// <summary>The FlashAttention op on ONNX Runtime's CPU provider against the double-precision reference.</summary>
[TestFixture]
public sealed class FlashAttentionOpTests
{
    private static readonly ElementType[] AllTypes = [ElementType.Float32, ElementType.Float16, ElementType.BFloat16];

    private static void AssertMatchesReference(AttentionCase c)
    {
        var (actual, shape) = OpRunner.RunFused(c);
        var (b, h, s, _) = ReferenceAttention.Dims4(c.QueryShape);
        long[] expectedShape = c.Rank == 4 ? [b, h, s, c.ValueShape[^1]] : [b, s, c.ValueShape[^1]];
        Assert.That(shape, Is.EqualTo(expectedShape), $"output shape of {c}");
        Tolerance.AssertClose(c, actual, ReferenceAttention.Compute(c));
    }

    public static IEnumerable<TestCaseData> HeadDimCases()
    {
        int seed = 100;
        foreach (var type in AllTypes)
        {
            foreach (long d in new long[] { 32, 64, 80, 96, 128, 256, 1, 7, 33, 200 })
            {
                yield return new TestCaseData(seed++, type, d).SetName($"HeadDim_{d}_{type}");
            }
        }
    }

    [TestCaseSource(nameof(HeadDimCases))]
    public void EveryHeadDimMatchesReference(int seed, ElementType type, long headDim) =>
        AssertMatchesReference(CaseFactory.Make(seed, [2, 3, 37, headDim], [2, 3, 45, headDim], [2, 3, 45, headDim], type));

    [TestCaseSource(nameof(AllTypes))]
    public void ValueHeadDimMayDifferFromQueryHeadDim(ElementType type) =>
        AssertMatchesReference(CaseFactory.Make(11, [1, 2, 19, 64], [1, 2, 23, 64], [1, 2, 23, 40], type));

    [TestCase(8, 2, TestName = "GroupedQueryAttention_8q_2kv")]
    [TestCase(4, 1, TestName = "MultiQueryAttention_4q_1kv")]
    [TestCase(6, 3, TestName = "GroupedQueryAttention_6q_3kv")]
    public void GroupedQueryHeadsReadTheirKvHead(long qHeads, long kvHeads)
    {
        foreach (var type in AllTypes)
        {
            AssertMatchesReference(CaseFactory.Make(12, [2, qHeads, 17, 64], [2, kvHeads, 29, 64], [2, kvHeads, 29, 64], type,
                bias: [2, 1, 17, 29], keep: [2, 1, 1, 29]));
        }
    }

    [Test]
    public void RankThreeInputsMeanOneHeadPerBatchEntry()
    {
        foreach (var type in AllTypes)
        {
            AssertMatchesReference(CaseFactory.Make(13, [6, 21, 32], [6, 27, 32], [6, 27, 48], type, bias: [6, 21, 27], keep: [27], causal: 2));
            AssertMatchesReference(CaseFactory.Make(14, [4, 9, 16], [4, 9, 16], [4, 9, 16], type, bias: [1, 9, 9]));
        }
    }

    public static IEnumerable<TestCaseData> BroadcastCases()
    {
        const long B = 2, H = 3, Sq = 13, Skv = 19;
        long[][] shapes =
        [
            [B, H, Sq, Skv], [B, 1, 1, Skv], [B, 1, Sq, Skv], [1, H, Sq, Skv], [Sq, Skv], [Skv], [1, 1, 1, 1],
            [B, H, 1, Skv], [1, 1, Sq, 1], [B, 1, 1, 1], [H, Sq, Skv], [1, Skv],
        ];
        int seed = 200;
        foreach (var shape in shapes)
        {
            string name = string.Join("x", shape);
            yield return new TestCaseData(seed++, shape, true).SetName($"Bias_{name}");
            yield return new TestCaseData(seed++, shape, false).SetName($"Keep_{name}");
        }
    }

    [TestCaseSource(nameof(BroadcastCases))]
    public void BiasAndKeepBroadcastByShape(int seed, long[] maskShape, bool isBias)
    {
        foreach (var type in AllTypes)
        {
            AssertMatchesReference(CaseFactory.Make(seed, [2, 3, 13, 32], [2, 3, 19, 32], [2, 3, 19, 32], type,
                bias: isBias ? maskShape : null, keep: isBias ? null : maskShape, keepProbability: 0.7, biasMagnitude: 3f));
        }
    }

    [Test]
    public void KeepWithoutBiasUsesAnEmptyMiddleInput()
    {
        var c = CaseFactory.Make(15, [1, 2, 11, 32], [1, 2, 14, 32], [1, 2, 14, 32], keep: [1, 1, 11, 14]);
        var (actual, _) = OpRunner.RunFused(c, ["Q", "K", "V", "", "keep"]);
        Tolerance.AssertClose(c, actual, ReferenceAttention.Compute(c));
    }

    public static IEnumerable<TestCaseData> CausalCases()
    {
        int seed = 300;
        foreach (int alignment in new[] { 1, 2 })
        {
            foreach (var (sq, skv) in new (long, long)[] { (17, 17), (9, 33), (33, 9), (1, 40), (40, 1), (64, 130), (130, 64) })
            {
                yield return new TestCaseData(seed++, alignment, sq, skv).SetName($"Causal{alignment}_Sq{sq}_Skv{skv}");
            }
        }
    }

    [TestCaseSource(nameof(CausalCases))]
    public void CausalAlignmentsHideTheRightKeys(int seed, int alignment, long qLen, long kvLen)
    {
        foreach (var policy in new[] { "zero", "nan" })
        {
            foreach (var type in AllTypes)
            {
                AssertMatchesReference(CaseFactory.Make(seed, [2, 2, qLen, 64], [2, 2, kvLen, 64], [2, 2, kvLen, 64], type,
                    causal: alignment, maskedRows: policy));
            }
        }
    }

    [Test]
    public void CausalCombinesWithBiasAndKeep()
    {
        foreach (var type in AllTypes)
        {
            AssertMatchesReference(CaseFactory.Make(16, [1, 4, 70, 64], [1, 4, 90, 64], [1, 4, 90, 64], type,
                bias: [1, 4, 70, 90], keep: [1, 1, 1, 90], causal: 2, maskedRows: "nan"));
        }
    }

    [Test]
    public void SoftcapIsAppliedBeforeBias()
    {
        foreach (var type in AllTypes)
        {
            AssertMatchesReference(CaseFactory.Make(17, [1, 2, 23, 64], [1, 2, 31, 64], [1, 2, 31, 64], type,
                queryMagnitude: 20f, softcap: 5f, bias: [1, 1, 23, 31], biasMagnitude: 4f));
        }
    }

    [Test]
    public void ExplicitScaleReplacesTheDefault()
    {
        foreach (var type in AllTypes)
        {
            AssertMatchesReference(CaseFactory.Make(18, [1, 2, 12, 64], [1, 2, 12, 64], [1, 2, 12, 64], type, scale: 1.0f));
            AssertMatchesReference(CaseFactory.Make(19, [1, 2, 12, 64], [1, 2, 12, 64], [1, 2, 12, 64], type, scale: 0.03f));
        }
    }

    [TestCase("zero")]
    [TestCase("nan")]
    public void FullyMaskedRowsFollowThePolicy(string policy)
    {
        foreach (var type in AllTypes)
        {
            var c = CaseFactory.Make(20, [1, 2, 6, 32], [1, 2, 8, 32], [1, 2, 8, 32], type, keep: [1, 1, 6, 8], maskedRows: policy);
            // Rows 1 and 4 see no key at all.
            for (int j = 0; j < 8; j++)
            {
                c.Keep![(1 * 8) + j] = false;
                c.Keep![(4 * 8) + j] = false;
            }

            c.Keep![(2 * 8) + 3] = true;
            var (actual, _) = OpRunner.RunFused(c);
            Tolerance.AssertClose(c, actual, ReferenceAttention.Compute(c));
            for (int h = 0; h < 2; h++)
            {
                foreach (int row in new[] { 1, 4 })
                {
                    for (int e = 0; e < 32; e++)
                    {
                        float y = actual[(((h * 6) + row) * 32) + e];
                        Assert.That(policy == "nan" ? float.IsNaN(y) : y == 0f, Is.True, $"head {h} row {row} element {e} = {y} under {policy}");
                    }
                }
            }
        }
    }

    [Test]
    public void NegativeInfinityBiasRowsAreMaskedRows()
    {
        var c = CaseFactory.Make(21, [1, 1, 4, 16], [1, 1, 5, 16], [1, 1, 5, 16], bias: [1, 1, 4, 5], maskedRows: "nan");
        for (int j = 0; j < 5; j++)
        {
            c.Bias![(2 * 5) + j] = float.NegativeInfinity;
        }

        c.Bias![3] = float.NegativeInfinity;
        var (actual, _) = OpRunner.RunFused(c);
        Tolerance.AssertClose(c, actual, ReferenceAttention.Compute(c));
        Assert.That(actual.Skip(2 * 16).Take(16).All(float.IsNaN), Is.True, "row 2 has only -inf scores");
    }

    [TestCase(-10000f)]
    [TestCase(-3.4028235e38f)]
    public void LargeFiniteBiasIsAnOrdinaryNumber(float fill)
    {
        // A row biased only by a large finite negative value is a softmax over the biased scores (not a masked row).
        var c = CaseFactory.Make(22, [1, 2, 5, 32], [1, 2, 7, 32], [1, 2, 7, 32], bias: [1, 1, 5, 7], maskedRows: "nan");
        for (int j = 0; j < 7; j++)
        {
            c.Bias![(1 * 7) + j] = fill;
        }

        c.Bias![(3 * 7) + 2] = fill;
        var (actual, _) = OpRunner.RunFused(c);
        Tolerance.AssertClose(c, actual, ReferenceAttention.Compute(c));
        Assert.That(actual.All(float.IsFinite), Is.True);
    }

    [Test]
    public void Float16FinfoMinBiasIsAnOrdinaryNumber()
    {
        var c = CaseFactory.Make(23, [1, 1, 3, 32], [1, 1, 6, 32], [1, 1, 6, 32], ElementType.Float16, bias: [1, 1, 3, 6]);
        for (int j = 0; j < 6; j++)
        {
            c.Bias![j] = -65504f;
        }

        AssertMatchesReference(c);
    }

    [Test]
    public void LargeMagnitudesDoNotOverflow()
    {
        foreach (var type in AllTypes)
        {
            AssertMatchesReference(CaseFactory.Make(24, [2, 2, 33, 64], [2, 2, 47, 64], [2, 2, 47, 64], type,
                queryMagnitude: 1e3f, valueMagnitude: 1e3f, bias: [2, 1, 1, 47], biasMagnitude: 1e3f));
        }
    }

    public static IEnumerable<TestCaseData> LengthCases()
    {
        int seed = 400;
        foreach (var (sq, skv) in new (long, long)[] { (1, 1), (1, 257), (257, 1), (3, 61), (61, 3), (127, 131), (1, 1000), (17, 17) })
        {
            yield return new TestCaseData(seed++, sq, skv).SetName($"Lengths_Sq{sq}_Skv{skv}");
        }
    }

    [TestCaseSource(nameof(LengthCases))]
    public void OddAndPrimeLengthsMatchReference(int seed, long qLen, long kvLen)
    {
        foreach (var type in AllTypes)
        {
            AssertMatchesReference(CaseFactory.Make(seed, [1, 3, qLen, 64], [1, 3, kvLen, 64], [1, 3, kvLen, 64], type, keep: [1, 1, 1, kvLen]));
        }
    }

    [TestCase(0, 2, 5, 7, TestName = "EmptyBatch")]
    [TestCase(1, 0, 5, 7, TestName = "NoHeads")]
    [TestCase(1, 2, 0, 7, TestName = "NoQueries")]
    public void EmptyInputsGiveAnEmptyOutput(long batch, long heads, long qLen, long kvLen)
    {
        var c = CaseFactory.Make(25, [batch, heads, qLen, 16], [batch, heads, kvLen, 16], [batch, heads, kvLen, 16]);
        var (actual, shape) = OpRunner.RunFused(c);
        Assert.That(shape, Is.EqualTo(new[] { batch, heads, qLen, 16L }));
        Assert.That(actual, Is.Empty);
    }

    [TestCase("zero")]
    [TestCase("nan")]
    public void NoKeysMakesEveryRowMasked(string policy)
    {
        var c = CaseFactory.Make(26, [1, 2, 3, 16], [1, 2, 0, 16], [1, 2, 0, 8], maskedRows: policy);
        var (actual, shape) = OpRunner.RunFused(c);
        Assert.That(shape, Is.EqualTo(new[] { 1L, 2, 3, 8 }));
        Assert.That(actual, Has.Length.EqualTo(48));
        Assert.That(actual.All(y => policy == "nan" ? float.IsNaN(y) : y == 0f), Is.True);
    }

    [Test]
    public void ResultDoesNotDependOnThreadCount()
    {
        var c = CaseFactory.Make(27, [2, 4, 100, 64], [2, 4, 100, 64], [2, 4, 100, 64], causal: 1, bias: [2, 1, 1, 100]);
        var model = OpModels.FusedModel(c);
        float[] RunWith(int threads)
        {
            using var options = OpRunner.CreateOptions(threads);
            using var session = new InferenceSession(model, options);
            using var q = OrtValue.CreateTensorValueFromMemory(c.Query, c.QueryShape);
            using var k = OrtValue.CreateTensorValueFromMemory(c.Key, c.KeyShape);
            using var v = OrtValue.CreateTensorValueFromMemory(c.Value, c.ValueShape);
            using var bias = OrtValue.CreateTensorValueFromMemory(c.Bias!, c.BiasShape!);
            using var runOptions = new RunOptions();
            using var outputs = session.Run(runOptions, ["Q", "K", "V", "bias"], [q, k, v, bias], ["Y"]);
            return outputs[0].GetTensorDataAsSpan<float>().ToArray();
        }

        Assert.That(RunWith(1), Is.EqualTo(RunWith(4)), "work items are independent, so the result is bit-identical");
    }
}
