using System.Text.Json;
using OrtFlash.GraphRewriter;
using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Io;
using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.GraphRewriter.Report;
using OrtFlash.GraphRewriter.Rules;
using OrtFlash.Tests.Managed.Verification;
using OrtFlash.Tests.Rewriter.Support;
using OrtFlash.Verification;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.Tests.Rewriter;

/// <summary>
/// <see cref="RewriteOptions.CausalForPaddedRows"/>: causal masks combined with a finite padding mask become the
/// op's causal attribute; exact on every row with an unpadded visible key, different on fully padded rows.
/// </summary>
[TestFixture]
public sealed class CausalForPaddedRowsTests
{
    private static readonly RewriteOptions Opted = new() { CausalForPaddedRows = true };

    private static ModelProto Load(string file) => OnnxModelFile.Read(TestModels.PathOf(file));

    private static IEnumerable<NodeProto> FlashNodes(ModelProto model) =>
        model.Graph.Node.Where(n => n.OpType == ScaledDotProductAttentionRule.OpType && n.Domain == ScaledDotProductAttentionRule.Domain);

    [TestCase("gpt2-opset17.onnx", 1L)]
    [TestCase("gpt2_past-opset17.onnx", 2L)]
    [TestCase("gpt2-opset14.onnx", 1L)]
    [TestCase("gpt2_past-opset14.onnx", 2L)]
    public void EveryGpt2BlockGetsTheCausalAttributeAndNoCausalMaskFeedsTheOp(string file, long causal)
    {
        var model = Load(file);
        var report = AttentionFuser.Rewrite(model, Opted);
        var flash = FlashNodes(model).ToList();

        var producers = model.Graph.Node.SelectMany(n => n.Output.Select(o => (o, n))).ToDictionary(p => p.o, p => p.n);
        var initializers = model.Graph.Initializer.ToDictionary(i => i.Name);
        Assert.Multiple(() =>
        {
            Assert.That(report.Fused, Is.EqualTo(2));
            Assert.That(report.Skipped, Is.Empty);
            Assert.That(flash, Has.Count.EqualTo(2));
            Assert.That(flash.Select(n => n.Attribute.Single(a => a.Name == "causal").I), Is.All.EqualTo(causal));
            Assert.That(report.Fusions.Select(f => f.Causal), Is.All.EqualTo((CausalAlignment)causal));
            Assert.That(report.Fusions.Select(f => f.Masks), Is.All.EquivalentTo(new[] { MaskKind.AdditiveBias, MaskKind.Causal }));
            Assert.That(report.Fusions.Select(f => string.Join(" ", f.Notes)), Is.All.Contains("fully masked by padding"));
            foreach (var node in flash)
            {
                // Only the (B, 1, 1, T) padding bias is read: nothing upstream of the op's mask inputs is the
                // causal buffer, a Trilu or a Where, and no (…, N, N) square constant.
                var upstream = Ancestors(node.Input.Skip(3).Where(i => i.Length > 0), producers).ToList();
                Assert.That(upstream.Select(n => n.OpType), Has.None.AnyOf("Trilu", "Where", "Slice"), node.Name);
                var read = upstream.SelectMany(n => n.Input).Concat(node.Input.Skip(3)).Where(initializers.ContainsKey).Select(i => initializers[i]);
                Assert.That(read.Where(t => t.Dims.Count >= 2 && t.Dims[^1] == t.Dims[^2] && t.Dims[^1] > 1).Select(t => t.Name), Is.Empty, node.Name);
            }

            Assert.That(model.Graph.Node.SelectMany(n => n.Input), Has.None.EqualTo("h.0.attn.bias").And.None.EqualTo("h.1.attn.bias"),
                "the causal buffers are read by nothing");
        });
    }

    /// <summary>
    /// HF Llama folds the padding into its causal mask (a ScatterND over the whole mask). Under the option the mask splits
    /// into the causal attribute (lower-right: the cache position starts at the past length) and a (B, 1, 1, T) padding
    /// bias; the (B, 1, S, T) mask and everything that built it are gone.
    /// </summary>
    [TestCase("llama-opset17.onnx")]
    [TestCase("llama-opset14.onnx")]
    public void EveryLlamaBlockGetsTheCausalAttributeAndOnlyThePaddingFeedsTheOp(string file)
    {
        var model = Load(file);
        var report = AttentionFuser.Rewrite(model, Opted);
        var flash = FlashNodes(model).ToList();
        var producers = model.Graph.Node.SelectMany(n => n.Output.Select(o => (o, n))).ToDictionary(p => p.o, p => p.n);

        Assert.Multiple(() =>
        {
            Assert.That(report.Fused, Is.EqualTo(2));
            Assert.That(flash.Select(n => n.Attribute.Single(a => a.Name == "causal").I), Is.All.EqualTo((long)CausalAlignment.LowerRight));
            Assert.That(report.Fusions.Select(f => f.Masks), Is.All.EquivalentTo(new[] { MaskKind.Causal, MaskKind.FiniteFill }));
            Assert.That(report.Fusions.Select(f => string.Join(" ", f.Notes)), Is.All.Contains("fully masked by padding"));
            Assert.That(model.Graph.Node.Select(n => n.OpType), Has.None.AnyOf("ScatterND", "Trilu", "Greater"), "the 4-D mask is no longer built");
            foreach (var node in flash)
            {
                var upstream = Ancestors(node.Input.Skip(3).Where(i => i.Length > 0), producers).Select(n => n.OpType).ToHashSet();
                Assert.That(upstream, Is.SubsetOf(new[] { "Where", "Equal", "Cast", "Unsqueeze", "Constant" }), node.Name);
            }
        });
    }

    /// <summary>
    /// Float16 Llama fills with finfo(float16).min = −65504, which is not absorbing: under the option it counts as hiding
    /// on the documented assumption that scores stay within ±16384, and the fusion's note says so. The padding that
    /// remains is the graph's own value in the graph's type: float16 −65504 where m == 0, else 0.
    /// </summary>
    [TestCase("llama-opset17-fp16.onnx")]
    [TestCase("qwen2-opset17-fp16.onnx")]
    public void EveryFloat16LlamaBlockGetsTheCausalAttributeAndOnlyThePaddingFeedsTheOp(string file)
    {
        var model = Load(file);
        var report = AttentionFuser.Rewrite(model, Opted);
        var flash = FlashNodes(model).ToList();
        var producers = model.Graph.Node.SelectMany(n => n.Output.Select(o => (o, n))).ToDictionary(p => p.o, p => p.n);

        Assert.Multiple(() =>
        {
            Assert.That(report.Fused, Is.EqualTo(2));
            Assert.That(report.Skipped, Is.Empty);
            Assert.That(flash, Has.Count.EqualTo(2));
            Assert.That(flash.Select(n => n.Attribute.Single(a => a.Name == "causal").I), Is.All.EqualTo((long)CausalAlignment.LowerRight));
            Assert.That(report.Fusions.Select(f => f.Masks), Is.All.EquivalentTo(new[] { MaskKind.Causal, MaskKind.FiniteFill }));
            Assert.That(report.Fusions.Select(f => string.Join(" ", f.Notes)),
                Is.All.Contains("fully masked by padding").And.All.Contains("-65504").And.All.Contains("±16384"));
            Assert.That(model.Graph.Node.Select(n => n.OpType), Has.None.AnyOf("ScatterND", "Trilu", "Greater"), "the 4-D mask is no longer built");
            foreach (var node in flash)
            {
                Assert.That(node.Input, Has.Count.EqualTo(4), node.Name);
                var upstream = Ancestors([node.Input[3]], producers).ToList();
                Assert.That(upstream.Select(n => n.OpType).ToHashSet(), Is.SubsetOf(new[] { "Where", "Equal", "Cast", "Unsqueeze", "Constant" }), node.Name);

                // The bias is Where(Equal(m, 0), −65504, 0) with both branches float16 constants, the graph's fill exactly.
                var bias = producers[node.Input[3]];
                Assert.That(bias.OpType, Is.EqualTo("Where"), node.Name);
                var branches = bias.Input.Skip(1).Select(i => producers[i].Attribute.Single(a => a.Name == "value").T).ToList();
                Assert.That(branches.Select(t => (DataType)t.DataType), Is.All.EqualTo(DataType.Float16), node.Name);
                Assert.That(branches.Select(t => ConstantTensor.FromProto(t)!.Data.Single()), Is.EqualTo(new[] { -65504.0, 0.0 }), node.Name);
            }
        });
    }

    /// <summary>
    /// HF's older <c>_prepare_4d_causal_attention_mask</c> (Falcon adds it, BLOOM hides where it is nonzero): under the
    /// option it splits into the causal attribute (lower-right with the cache's zero columns) and the padding condition;
    /// the causal mask is no longer built. Rows with an unpadded visible key compute what the original does.
    /// </summary>
    [TestCase(true, false, CausalAlignment.LowerRight)]
    [TestCase(true, true, CausalAlignment.LowerRight)]
    [TestCase(false, false, CausalAlignment.UpperLeft)]
    [TestCase(false, true, CausalAlignment.UpperLeft)]
    public void TheOlderBuilderSplitsIntoCausalAndPadding(bool cache, bool boolHidden, CausalAlignment alignment)
    {
        var original = AttentionModels.OlderBuilderCausalPadding(cache, boolHidden);
        var exact = original.Clone();
        var opted = original.Clone();
        var exactReport = AttentionFuser.Rewrite(exact);
        var report = AttentionFuser.Rewrite(opted, Opted);
        var producers = opted.Graph.Node.SelectMany(n => n.Output.Select(o => (o, n))).ToDictionary(p => p.o, p => p.n);

        Assert.Multiple(() =>
        {
            Assert.That(exactReport.Fusions.Single().Causal, Is.EqualTo(CausalAlignment.None), "without the option");
            Assert.That(report.Fusions.Single().Causal, Is.EqualTo(alignment));
            Assert.That(FlashNodes(opted).Single().Attribute.Single(a => a.Name == "causal").I, Is.EqualTo((long)alignment));
            Assert.That(report.Fusions.Single().Masks, Is.EquivalentTo(new[] { MaskKind.Causal, MaskKind.FiniteFill }));
            Assert.That(report.Fusions.Single().Notes, Has.Some.Contains("fully masked by padding"));
            Assert.That(opted.Graph.Node.Select(n => n.OpType), Has.None.AnyOf("Less", "Range"), "the causal mask is no longer built");
            var flash = FlashNodes(opted).Single();
            Assert.That(Ancestors(flash.Input.Skip(3).Where(i => i.Length > 0), producers).Select(n => n.OpType), Has.None.EqualTo("Expand"),
                "only the (B, 1, 1, T) padding reaches the op");
        });

        // Right padding, and left padding that leaves every row an unpadded visible key: every row as in the original.
        var random = new Random(5);
        foreach (var (s, past, padded) in new (long, long, long)[] { (5, 3, 0), (4, 2, 2), (1, 3, 3), (6, 0, 0) })
        {
            if (cache != past > 0)
            {
                continue;
            }

            AssertRewriteMatchesOriginal(original, opted, AttentionModels.OlderBuilderInputs(random, s, past, padded), 1e-5,
                                         $"S={s}, P={past}, {padded} padded");
        }
    }

    /// <summary>
    /// Masks that look like the older builder but are not its causal mask plus padding stay the exact bias under the
    /// option: the report and the rewritten graph are what the default rewrite makes of them. Mistral's sliding window
    /// hides keys the op's causal attribute cannot; the whole windowed mask stays a bias.
    /// </summary>
    [TestCase(OlderBuilderMiss.DiagonalOffsetTwo, true, false)]
    [TestCase(OlderBuilderMiss.DiagonalOffsetTwo, false, true)]
    [TestCase(OlderBuilderMiss.KeysAboveQueries, true, false)]
    [TestCase(OlderBuilderMiss.KeysAboveQueries, false, true)]
    [TestCase(OlderBuilderMiss.SlidingWindow, true, false)]
    [TestCase(OlderBuilderMiss.SlidingWindow, true, true)]
    [TestCase(OlderBuilderMiss.SlidingWindow, false, false)]
    [TestCase(OlderBuilderMiss.UnrelatedCacheWidth, true, false)]
    [TestCase(OlderBuilderMiss.UnrelatedCacheWidth, true, true)]
    [TestCase(OlderBuilderMiss.UnrelatedCacheWidthOwnTarget, true, false)]
    [TestCase(OlderBuilderMiss.UnrelatedCacheWidthOwnTarget, true, true)]
    public void NearMissesOfTheOlderBuilderStayExact(OlderBuilderMiss miss, bool cache, bool boolHidden)
    {
        var byDefault = AttentionModels.OlderBuilderCausalPadding(cache, boolHidden, miss);
        var opted = byDefault.Clone();
        var defaultReport = AttentionFuser.Rewrite(byDefault);
        var optedReport = AttentionFuser.Rewrite(opted, Opted);

        Assert.Multiple(() =>
        {
            Assert.That(optedReport.Fused, Is.EqualTo(1));
            Assert.That(optedReport.Fusions.Single().Causal, Is.EqualTo(CausalAlignment.None));
            Assert.That(optedReport.ToJson(), Is.EqualTo(defaultReport.ToJson()));
            Assert.That(opted.ToByteArrayOf(), Is.EqualTo(byDefault.ToByteArrayOf()));
        });
    }

    /// <summary>
    /// The older builder in float16, added to the scores (Falcon): the padding's −65504 does not absorb the scores, but the
    /// graph adds it to them as the op adds its bias, so under the option the split is exact: lower-right (or upper-left)
    /// causal and the padding bias, computing what the original does on every row with an unpadded visible key.
    /// </summary>
    [TestCase(true, CausalAlignment.LowerRight)]
    [TestCase(false, CausalAlignment.UpperLeft)]
    public void TheFloat16OlderBuilderAddedToTheScoresSplitsUnderTheOption(bool cache, CausalAlignment alignment)
    {
        var original = AttentionModels.OlderBuilderCausalPadding(cache, boolHidden: false, type: DataType.Float16);
        var exact = original.Clone();
        var opted = original.Clone();
        var exactReport = AttentionFuser.Rewrite(exact);
        var report = AttentionFuser.Rewrite(opted, Opted);

        Assert.Multiple(() =>
        {
            Assert.That(exactReport.Fusions.Single().Causal, Is.EqualTo(CausalAlignment.None), "without the option");
            Assert.That(report.Fused, Is.EqualTo(1), report.ToJson());
            Assert.That(report.Fusions.Single().Causal, Is.EqualTo(alignment));
            Assert.That(FlashNodes(opted).Single().Attribute.Single(a => a.Name == "causal").I, Is.EqualTo((long)alignment));
            Assert.That(report.Fusions.Single().Masks, Is.EquivalentTo(new[] { MaskKind.Causal, MaskKind.FiniteFill }));
            Assert.That(report.Fusions.Single().Notes, Has.Some.Contains("fully masked by padding"));
            Assert.That(report.Fusions.Single().Notes, Has.Some.Contains("±16384"));
            Assert.That(opted.Graph.Node.Select(n => n.OpType), Has.None.AnyOf("Less", "Range"), "the causal mask is no longer built");
        });

        var random = new Random(9);
        foreach (var (s, past, padded) in new (long, long, long)[] { (5, 3, 0), (4, 2, 2), (1, 3, 3), (6, 0, 0) })
        {
            if (cache != past > 0)
            {
                continue;
            }

            AssertRewriteMatchesOriginal(original, opted,
                                         AttentionModels.OlderBuilderInputs(random, s, past, padded, DataType.Float16), 2e-3,
                                         $"S={s}, P={past}, {padded} padded");
        }
    }

    /// <summary>
    /// BLOOM's form in float16: Where(Cast(bool, mask), −65504, scores) replaces the scores it hides, which no bias added
    /// to them reproduces (s − 65504 ≠ −65504). The option does not make it fuse: the report and graph are the default's.
    /// </summary>
    [TestCase(true)]
    [TestCase(false)]
    public void TheFloat16OlderBuilderReplacingTheScoresStaysRefusedUnderTheOption(bool cache)
    {
        var byDefault = AttentionModels.OlderBuilderCausalPadding(cache, boolHidden: true, type: DataType.Float16);
        var opted = byDefault.Clone();
        var defaultReport = AttentionFuser.Rewrite(byDefault);
        var optedReport = AttentionFuser.Rewrite(opted, Opted);

        Assert.Multiple(() =>
        {
            Assert.That(optedReport.Fused, Is.EqualTo(0));
            Assert.That(FlashNodes(opted), Is.Empty);
            Assert.That(optedReport.ToJson(), Does.Contain("fills masked scores with -65504"));
            Assert.That(optedReport.ToJson(), Is.EqualTo(defaultReport.ToJson()));
            Assert.That(opted.ToByteArrayOf(), Is.EqualTo(byDefault.ToByteArrayOf()));
        });
    }

    /// <summary>Without the option the older builder's mask is the op's exact bias, as before.</summary>
    [TestCase("falcon-opset17.onnx")]
    [TestCase("bloom_past-opset17.onnx")]
    [TestCase("mistral-opset17.onnx")]
    [TestCase("falcon-opset17-fp16.onnx")]
    [TestCase("mistral-opset17-fp16.onnx")]
    public void OlderBuilderModelsWithoutTheOptionKeepTheirExactMask(string file)
    {
        var report = AttentionFuser.Rewrite(Load(file));

        Assert.Multiple(() =>
        {
            Assert.That(report.Fused, Is.EqualTo(2));
            Assert.That(report.Fusions.Select(f => f.Causal), Is.All.EqualTo(CausalAlignment.None));
            Assert.That(report.Fusions.SelectMany(f => f.Notes), Has.None.Contains("fully masked by padding"));
        });
    }

    /// <summary>
    /// Falcon and BLOOM with a cache build the older mask: under the option every block gets lower-right causal and keeps
    /// the padding condition. Mistral's mask also holds its sliding window, which the attribute cannot express: it stays
    /// the exact bias.
    /// </summary>
    [TestCase("falcon-opset17.onnx", CausalAlignment.LowerRight)]
    [TestCase("falcon-opset14.onnx", CausalAlignment.LowerRight)]
    [TestCase("bloom_past-opset17.onnx", CausalAlignment.LowerRight)]
    [TestCase("bloom_past-opset14.onnx", CausalAlignment.LowerRight)]
    [TestCase("bloom-opset17.onnx", CausalAlignment.UpperLeft)]
    [TestCase("mistral-opset17.onnx", CausalAlignment.None)]
    [TestCase("mistral-opset14.onnx", CausalAlignment.None)]
    [TestCase("falcon-opset17-fp16.onnx", CausalAlignment.LowerRight)]
    [TestCase("mistral-opset17-fp16.onnx", CausalAlignment.None)]
    public void OlderBuilderModelsUnderTheOption(string file, CausalAlignment alignment)
    {
        var model = Load(file);
        var report = AttentionFuser.Rewrite(model, Opted);

        Assert.Multiple(() =>
        {
            Assert.That(report.Fused, Is.EqualTo(2));
            Assert.That(report.Fusions.Select(f => f.Causal), Is.All.EqualTo(alignment));
            Assert.That(FlashNodes(model).Select(n => n.Attribute.SingleOrDefault(a => a.Name == "causal")?.I ?? 0), Is.All.EqualTo((long)alignment));
            if (alignment == CausalAlignment.None)
            {
                Assert.That(report.Fusions.Select(f => f.Masks), Is.All.EquivalentTo(new[] { MaskKind.AdditiveBias }));
                Assert.That(report.Fusions.SelectMany(f => f.Notes), Has.None.Contains("fully masked by padding"));
            }
            else
            {
                Assert.That(report.Fusions.Select(f => f.Masks), Is.All.Contains(MaskKind.Causal).And.All.Contains(MaskKind.FiniteFill));
                Assert.That(report.Fusions.Select(f => string.Join(" ", f.Notes)), Is.All.Contains("fully masked by padding"));
                if (file.EndsWith("-fp16.onnx", StringComparison.Ordinal))
                {
                    // float16's −65504 split off a mask the graph adds to the scores: the padding bias adds it as the graph
                    // did, and the causal part hides keys on the stated score bound.
                    Assert.That(report.Fusions.Select(f => string.Join(" ", f.Notes)), Is.All.Contains("±16384"));
                }
            }
        });
    }

    [Test]
    public void Float16LlamaWithoutTheOptionKeepsItsExactMask()
    {
        // finfo(float16).min = −65504 does not absorb scores (s + F ≠ F): by default the mask stays the op's exact bias.
        var report = AttentionFuser.Rewrite(Load("llama-opset17-fp16.onnx"));

        Assert.Multiple(() =>
        {
            Assert.That(report.Fused, Is.EqualTo(2));
            Assert.That(report.Fusions.Select(f => f.Causal), Is.All.EqualTo(CausalAlignment.None));
            Assert.That(report.Fusions.Select(f => f.Masks), Is.All.EquivalentTo(new[] { MaskKind.AdditiveBias }));
            Assert.That(report.Fusions.SelectMany(f => f.Notes), Has.None.Contains("16384"));
        });
    }

    /// <summary>
    /// The assumption matters, and only the option makes it. A float16 causal mask filled with −65504, scores reaching
    /// 60000 on a causally hidden key and −20000 on the visible ones: in the graph the hidden key's masked score
    /// (≈ −5500) beats every visible one, so each row is that key's value. By default the mask stays the op's bias and
    /// the rewrite computes exactly that; under the option the attribute excludes the key (and the note says what it
    /// assumed). With ordinary scores both rewrites match the graph.
    /// </summary>
    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    [TestCase(4)]
    [TestCase(5)]
    public void Float16ScoresBeyondTheBoundChangeTheResultOnlyUnderTheOption(int seed)
    {
        Assume.That(OrtRunner.OpLibraryPath, Is.Not.Null, "libortflash.so not built");
        const long batch = AttentionModels.Batch, heads = AttentionModels.Heads, dim = AttentionModels.HeadDim;
        var random = new Random(seed);
        var s = (long)random.Next(2, 7);
        var original = AttentionModels.Float16CausalTriuOfLowest();
        var exact = original.Clone();
        var opted = original.Clone();
        var exactReport = AttentionFuser.Rewrite(exact);
        var optedReport = AttentionFuser.Rewrite(opted, Opted);

        // Query 256 (·1/√8 ≈ 90.5) on the first head dim; the last key 600..700 (score ≈ 54000..63000), hidden from every
        // row but the last; the others −250..−150 (≈ −22600..−13600).
        float[] Fill(long count, Func<long, float> first) =>
            Enumerable.Range(0, (int)count).Select(i => i % dim == 0 ? (float)(Half)first(i / dim) : 0f).ToArray();
        var large = new Dictionary<string, TestTensor>
        {
            ["q"] = new(DataType.Float16, [batch, heads, s, dim], Fill(batch * heads * s * dim, _ => 256)),
            ["k"] = new(DataType.Float16, [batch, heads, s, dim],
                Fill(batch * heads * s * dim, j => j % s == s - 1 ? random.Next(600, 700) : -random.Next(150, 250))),
            ["v"] = TestTensor.Random(random, [batch, heads, s, dim], DataType.Float16),
        };
        var ordinary = new Dictionary<string, TestTensor>
        {
            ["q"] = TestTensor.Random(random, [batch, heads, s, dim], DataType.Float16, scale: 4),
            ["k"] = TestTensor.Random(random, [batch, heads, s, dim], DataType.Float16, scale: 4),
            ["v"] = large["v"],
        };

        Assert.Multiple(() =>
        {
            Assert.That(exactReport.Fusions.Single().Causal, Is.EqualTo(CausalAlignment.None));
            Assert.That(exactReport.Fusions.Single().Masks, Is.EqualTo(new[] { MaskKind.AdditiveBias }));
            Assert.That(exactReport.Fusions.Single().Notes, Has.None.Contains("16384"));
            Assert.That(optedReport.Fusions.Single().Causal, Is.EqualTo(CausalAlignment.UpperLeft));
            Assert.That(optedReport.Fusions.Single().Notes, Has.One.Contains("±16384").And.Contains("-65504"));

            foreach (var (name, inputs) in new[] { ("ordinary", ordinary), ("large", large) })
            {
                var expected = OrtRunner.Run(original, inputs).Values.Single().Data;
                var byDefault = OrtRunner.Run(exact, inputs, withOpLibrary: true).Values.Single().Data;
                var underOption = OrtRunner.Run(opted, inputs, withOpLibrary: true).Values.Single().Data;
                double MaxDifference(float[] actual) => expected.Zip(actual).Max(p => Math.Abs(p.First - p.Second));
                Assert.That(MaxDifference(byDefault), Is.LessThan(2e-3), $"{name} scores, default rewrite");
                if (name == "ordinary")
                {
                    Assert.That(MaxDifference(underOption), Is.LessThan(2e-3), "ordinary scores, under the option");
                    continue;
                }

                // The graph gives every row the last key's value: the hidden one wins wherever it is hidden.
                for (long x = 0; x < expected.Length; x++)
                {
                    var lastKey = (x / (s * dim) * s + s - 1) * dim + x % dim;
                    Assert.That(expected[x], Is.EqualTo(large["v"].Data[lastKey]).Within(1e-3), $"original, element {x}");
                }

                Assert.That(MaxDifference(underOption), Is.GreaterThan(0.05), "large scores, under the option: the hidden key is excluded");
            }
        });
    }

    /// <summary>
    /// The bound is on scale·q·kᵀ alone: with another mask adding its values to the scores (here a 0/−inf padding), a
    /// −65504 causal fill is left as the exact rewrite leaves it, summed with the padding into the op's bias.
    /// </summary>
    [Test]
    public void AFloat16FillNextToAnAddedMaskStaysAsTheExactRewriteLeavesIt()
    {
        var byDefault = AttentionModels.Float16CausalTriuOfLowest(withPadding: true);
        var opted = byDefault.Clone();
        var defaultReport = AttentionFuser.Rewrite(byDefault);
        var optedReport = AttentionFuser.Rewrite(opted, Opted);

        Assert.Multiple(() =>
        {
            Assert.That(defaultReport.Fused, Is.EqualTo(1));
            Assert.That(defaultReport.Fusions.Single().Masks, Is.EqualTo(new[] { MaskKind.AdditiveBias, MaskKind.AdditiveBias }));
            Assert.That(optedReport.ToJson(), Is.EqualTo(defaultReport.ToJson()));
            Assert.That(opted.ToByteArrayOf(), Is.EqualTo(byDefault.ToByteArrayOf()));
        });
    }

    private static IEnumerable<NodeProto> Ancestors(IEnumerable<string> values, IReadOnlyDictionary<string, NodeProto> producers)
    {
        var seen = new HashSet<NodeProto>();
        var pending = new Stack<string>(values);
        while (pending.TryPop(out var value))
        {
            if (producers.TryGetValue(value, out var node) && seen.Add(node))
            {
                yield return node;
                foreach (var input in node.Input.Where(i => i.Length > 0))
                {
                    pending.Push(input);
                }
            }
        }
    }

    [TestCase("gpt2-opset17.onnx", 0)]
    [TestCase("gpt2_past-opset17.onnx", 3)]
    [TestCase("gpt2_past-opset17.onnx", 1)]
    [TestCase("llama-opset17.onnx", 0)]
    [TestCase("llama-opset17.onnx", 3)]
    [TestCase("llama-opset14.onnx", 1)]
    [TestCase("llama-opset17-fp16.onnx", 0)]
    [TestCase("llama-opset17-fp16.onnx", 3)]
    [TestCase("falcon-opset17.onnx", 0)]
    [TestCase("falcon-opset17.onnx", 3)]
    [TestCase("falcon-opset17-fp16.onnx", 0)]
    [TestCase("falcon-opset17-fp16.onnx", 3)]
    [TestCase("qwen2-opset17-fp16.onnx", 3)]
    [TestCase("mistral-opset17-fp16.onnx", 3)]
    [TestCase("bloom_past-opset17.onnx", 2)]
    [TestCase("bloom-opset17.onnx", 0)]
    public void OutputsMatchTheOriginalWithRightPadding(string file, int past)
    {
        var original = Load(file);
        var rewritten = original.Clone();
        AttentionFuser.Rewrite(rewritten, Opted);
        var options = new ComparisonOptions
        {
            SequenceLengths = [1, 4, 9, 16],
            ExpectedSession = TestModels.Cpu with { Rewrite = false },
            ActualSession = TestModels.Cpu with { Rewrite = false },
            Inputs = new InputGenerationOptions
            {
                BatchSize = 3, PastSequenceLength = past, Padding = PaddingSide.End,
                // BLOOM's cache is (batch × heads, ·, ·), a dimension nothing else sizes: 3 × 4 heads.
                DimensionOverrides = file.StartsWith("bloom_past", StringComparison.Ordinal) ? new Dictionary<string, long> { ["batch_x_heads"] = 12 } : [],
            },
        };

        var report = ModelComparer.Compare(ModelSource.FromModel(original, file), ModelSource.FromModel(rewritten, file + " (causal-padded-rows)"), options);

        Assert.That(report.Passed, Is.True, () => ComparisonReportWriter.ToText(report));
    }

    /// <summary>
    /// Left padding, as in batched generation, covering the whole causal window of entry 2's first queries. Every other
    /// row (its hidden state, and the keys and values the second layer caches for it) must match the original; the
    /// first layer's cache is computed before any attention and must match everywhere.
    /// </summary>
    [TestCase("llama-opset17.onnx")]
    [TestCase("llama-opset17-fp16.onnx")]
    public void OutputsMatchTheOriginalOnEveryRowWithAnUnpaddedVisibleKey(string file)
    {
        Assume.That(OrtRunner.OpLibraryPath, Is.Not.Null, "libortflash.so not built");
        const int batch = 3, past = 2, s = 6, total = past + s, kvHeads = 2, headDim = 32;
        int[] padded = [0, 2, 4]; // entry 1's padding ends inside the past; entry 2's covers queries 0 and 1 (positions 2, 3)
        var original = Load(file);
        var rewritten = original.Clone();
        var report = AttentionFuser.Rewrite(rewritten, Opted);
        Assert.That(report.Fusions.Select(f => f.Causal), Is.All.EqualTo(CausalAlignment.LowerRight));

        var type = (DataType)original.Graph.Input.Single(i => i.Name == "past_key_0").Type.TensorType.ElemType;
        var random = new Random(11);
        var inputs = new Dictionary<string, TestTensor>
        {
            ["input_ids"] = new(DataType.Int64, [batch, s], Enumerable.Range(0, batch * s).Select(_ => (float)random.Next(128)).ToArray()),
            ["attention_mask"] = new(DataType.Int64, [batch, total], Enumerable.Range(0, batch * total).Select(i => i % total < padded[i / total] ? 0f : 1f).ToArray()),
        };
        foreach (var name in new[] { "past_key_0", "past_value_0", "past_key_1", "past_value_1" })
        {
            inputs[name] = TestTensor.Random(random, [batch, kvHeads, past, headDim], type);
        }

        var expected = OrtRunner.Run(original, inputs);
        var actual = OrtRunner.Run(rewritten, inputs, withOpLibrary: true);
        // Query i of entry b (position past + i) sees keys 0..past + i; the row is fully padded when all of them are.
        bool FullyPadded(long b, long i) => past + i < padded[b];
        // max |diff| / max |original| over the compared rows (as PyTorchReferenceTests measures).
        var tolerance = type == DataType.Float16 ? 2e-3 : 1e-5;

        Assert.Multiple(() =>
        {
            foreach (var (name, reference) in expected)
            {
                var result = actual[name];
                Assert.That(result.Shape, Is.EqualTo(reference.Shape), name);
                var hidden = name == "last_hidden_state";
                var cachedBySecondLayer = name.EndsWith("_1", StringComparison.Ordinal);
                var scale = reference.Data.Max(MathF.Abs);
                var compared = 0;
                var worst = (Difference: 0.0, Where: "");
                for (var x = 0; x < reference.Data.Length; x++)
                {
                    // last_hidden_state (B, S, hidden); present_* (B, Hkv, P + S, D): the row each element belongs to.
                    var (b, i) = hidden
                        ? (x / (s * reference.Shape[2]), x / reference.Shape[2] % s)
                        : (x / (kvHeads * total * headDim), x / headDim % total - past);
                    if ((hidden || cachedBySecondLayer) && i >= 0 && FullyPadded(b, i))
                    {
                        continue;
                    }

                    compared++;
                    var difference = Math.Abs(result.Data[x] - reference.Data[x]);
                    if (!(difference <= worst.Difference))
                    {
                        worst = (difference, $"{name}[{x}] (entry {b}, row {i}): {result.Data[x]} vs {reference.Data[x]}");
                    }
                }

                Assert.That(worst.Difference / scale, Is.LessThanOrEqualTo(tolerance), $"{worst.Where}, max |original| {scale}");
                Assert.That(compared, Is.GreaterThan(reference.Data.Length / 2), name);
            }
        });
    }

    [TestCase("gpt2-opset17.onnx")]
    [TestCase("gpt2_past-opset17.onnx")]
    [TestCase("llama-opset17.onnx")]
    [TestCase("llama-opset17-fp16.onnx")]
    [TestCase("bert-opset17.onnx")]
    [TestCase("falcon-opset17.onnx")]
    [TestCase("bloom_past-opset17.onnx")]
    public void WithoutTheOptionNothingChanges(string file)
    {
        var byDefault = Load(file);
        var explicitDefault = Load(file);
        var implicitReport = AttentionFuser.Rewrite(byDefault);
        var defaultReport = AttentionFuser.Rewrite(explicitDefault, RewriteOptions.Default);

        Assert.Multiple(() =>
        {
            Assert.That(defaultReport.ToJson(), Is.EqualTo(implicitReport.ToJson()));
            Assert.That(explicitDefault.ToByteArrayOf(), Is.EqualTo(byDefault.ToByteArrayOf()));
            Assert.That(FlashNodes(byDefault).SelectMany(n => n.Attribute).Select(a => a.Name), Has.None.EqualTo("causal"));
            Assert.That(implicitReport.Fusions.SelectMany(f => f.Notes), Has.None.Contains("fully masked by padding"));
        });
    }

    [Test]
    public void TheGpt2ReportWithoutTheOptionStillKeepsTheCausalMask()
    {
        var report = AttentionFuser.Rewrite(Load("gpt2-opset17.onnx"));

        Assert.Multiple(() =>
        {
            Assert.That(report.Fusions.Select(f => f.Causal), Is.All.EqualTo(CausalAlignment.None));
            Assert.That(report.Fusions.Select(f => string.Join(" ", f.Notes)), Is.All.Contains("kept as a mask input"));
        });
    }

    /// <summary>
    /// The documented difference, on GPT-2's spelling (Where(tril, s, finfo.min) + finfo.min padding) with left padding:
    /// rows with an unpadded visible key are unchanged; a row whose visible keys are all padded averages V over its
    /// visible keys only under the option, while the original also weighs causally hidden keys.
    /// </summary>
    [Test]
    public void OnlyRowsWhoseVisibleKeysAreAllPaddedDiffer()
    {
        Assume.That(OrtRunner.OpLibraryPath, Is.Not.Null, "libortflash.so not built");
        const long batch = AttentionModels.Batch, heads = AttentionModels.Heads, dim = AttentionModels.HeadDim, s = 4;
        var random = new Random(7);
        // Entry 0 is unpadded; entry 1 has its first two keys padded (left padding), so its rows 0 and 1 see only padding.
        float[] keep = [1, 1, 1, 1, 0, 0, 1, 1];
        var inputs = new Dictionary<string, TestTensor>
        {
            ["q"] = TestTensor.Random(random, [batch, heads, s, dim]),
            ["k"] = TestTensor.Random(random, [batch, heads, s, dim]),
            ["v"] = TestTensor.Random(random, [batch, heads, s, dim]),
            ["mask"] = new TestTensor(DataType.Float, [batch, 1, 1, s], keep.Select(m => m == 1 ? 0f : float.MinValue).ToArray()),
        };
        var original = AttentionModels.Gpt2WhereThenAdd();
        var fused = original.Clone();
        var exact = original.Clone();
        var report = AttentionFuser.Rewrite(fused, Opted);
        var exactReport = AttentionFuser.Rewrite(exact);
        Assert.That(report.Fusions.Single().Causal, Is.EqualTo(CausalAlignment.UpperLeft));
        Assert.That(report.Fusions.Single().Notes, Has.Some.Contains("fully masked by padding"));
        Assert.That(exactReport.Fusions.Single().Causal, Is.EqualTo(CausalAlignment.None));

        var expected = OrtRunner.Run(original, inputs).Values.Single().Data;
        var actual = OrtRunner.Run(fused, inputs, withOpLibrary: true).Values.Single().Data;
        var exactActual = OrtRunner.Run(exact, inputs, withOpLibrary: true).Values.Single().Data;
        var v = inputs["v"].Data;

        Assert.Multiple(() =>
        {
            for (long b = 0; b < batch; b++)
            {
                for (long h = 0; h < heads; h++)
                {
                    for (long i = 0; i < s; i++)
                    {
                        var row = Enumerable.Range(0, (int)dim).Select(d => (int)(((b * heads + h) * s + i) * dim + d)).ToArray();
                        var fullyPadded = b == 1 && i < 2;
                        var difference = row.Max(x => Math.Abs(expected[x] - actual[x]));
                        Assert.That(row.Max(x => Math.Abs(expected[x] - exactActual[x])), Is.LessThan(1e-5), $"exact rewrite, row b{b} h{h} i{i}");
                        if (!fullyPadded)
                        {
                            Assert.That(difference, Is.LessThan(1e-5), $"row b{b} h{h} i{i} has an unpadded visible key");
                            continue;
                        }

                        Assert.That(difference, Is.GreaterThan(1e-3), $"fully padded row b{b} h{h} i{i}");
                        // Under the option: the mean of V over the visible keys 0..i (all at the same fill).
                        for (var d = 0; d < dim; d++)
                        {
                            var mean = Enumerable.Range(0, (int)i + 1).Average(j => v[(int)(((b * heads + h) * s + j) * dim + d)]);
                            Assert.That(actual[row[d]], Is.EqualTo(mean).Within(1e-5), $"fully padded row b{b} h{h} i{i} d{d}");
                        }
                    }
                }
            }
        });
    }

    [Test]
    public void OrtFlashSessionPassesTheOptionOn()
    {
        Assume.That(OrtRunner.OpLibraryPath, Is.Not.Null, "libortflash.so not built");
        using var opted = OrtFlashSession.Create(TestModels.PathOf("gpt2-opset17.onnx"), TestModels.Cpu with { Rewriting = Opted });
        using var exact = OrtFlashSession.Create(TestModels.PathOf("gpt2-opset17.onnx"), TestModels.Cpu);

        Assert.Multiple(() =>
        {
            Assert.That(opted.Report!.Fusions.Select(f => f.Causal), Is.All.EqualTo(CausalAlignment.UpperLeft));
            Assert.That(exact.Report!.Fusions.Select(f => f.Causal), Is.All.EqualTo(CausalAlignment.None));
        });
    }

    [Test]
    public void TheNoteIsInTheJsonReport()
    {
        var report = AttentionFuser.Rewrite(Load("gpt2_past-opset17.onnx"), Opted);
        using var json = JsonDocument.Parse(report.ToJson());
        var notes = json.RootElement.GetProperty("fusions").EnumerateArray()
            .Select(f => string.Join(" ", f.GetProperty("notes").EnumerateArray().Select(n => n.GetString()))).ToList();

        Assert.That(notes, Has.Count.EqualTo(2).And.All.Contains("rows fully masked by padding"));
    }

    /// <summary>
    /// The rewritten model, lowered to standard ops and (when the op library is built) run with the op, matches the
    /// original on <paramref name="inputs"/> within <paramref name="tolerance"/>.
    /// </summary>
    private static void AssertRewriteMatchesOriginal(ModelProto original, ModelProto opted,
                                                     IReadOnlyDictionary<string, TestTensor> inputs, double tolerance, string where)
    {
        var expected = OrtRunner.Run(original, inputs);
        var lowered = OrtRunner.Run(FlashAttentionLowering.Lower(opted), inputs);
        var fused = OrtRunner.OpLibraryPath is null ? null : OrtRunner.Run(opted, inputs, withOpLibrary: true);
        foreach (var (name, tensor) in expected)
        {
            Parity.AssertClose(tensor, lowered[name], tolerance, $"lowered {name} at {where}");
            if (fused is not null)
            {
                Parity.AssertClose(tensor, fused[name], tolerance, $"with the op: {name} at {where}");
            }
        }
    }
}

internal static class ModelProtoBytes
{
    public static byte[] ToByteArrayOf(this ModelProto model) => Google.Protobuf.MessageExtensions.ToByteArray(model);

}
