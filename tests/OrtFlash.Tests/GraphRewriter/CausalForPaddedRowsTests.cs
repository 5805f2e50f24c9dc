using System.Text.Json;
using OrtFlash.GraphRewriter;
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

    [Test]
    public void Float16LlamaKeepsItsMaskBecauseItsFillIsNotAbsorbing()
    {
        // finfo(float16).min = −65504 does not absorb ordinary scores (s + F ≠ F), so the mask stays exact as a bias.
        var report = AttentionFuser.Rewrite(Load("llama-opset17-fp16.onnx"), Opted);

        Assert.Multiple(() =>
        {
            Assert.That(report.Fused, Is.EqualTo(2));
            Assert.That(report.Fusions.Select(f => f.Causal), Is.All.EqualTo(CausalAlignment.None));
            Assert.That(report.Fusions.Select(f => f.Masks), Is.All.EquivalentTo(new[] { MaskKind.AdditiveBias }));
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
            Inputs = new InputGenerationOptions { BatchSize = 3, PastSequenceLength = past, Padding = PaddingSide.End },
        };

        var report = ModelComparer.Compare(ModelSource.FromModel(original, file), ModelSource.FromModel(rewritten, file + " (causal-padded-rows)"), options);

        Assert.That(report.Passed, Is.True, () => ComparisonReportWriter.ToText(report));
    }

    [TestCase("gpt2-opset17.onnx")]
    [TestCase("gpt2_past-opset17.onnx")]
    [TestCase("llama-opset17.onnx")]
    [TestCase("bert-opset17.onnx")]
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
}

internal static class ModelProtoBytes
{
    public static byte[] ToByteArrayOf(this ModelProto model) => Google.Protobuf.MessageExtensions.ToByteArray(model);
}
