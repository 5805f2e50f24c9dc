using Google.Protobuf;
using OrtFlash.GraphRewriter;
using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.GraphRewriter.Rules;
using OrtFlash.Tests.Rewriter.Support;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.Tests.Rewriter.Rules;

public class ScaledDotProductAttentionRuleTests
{
    private static IEnumerable<TestCaseData> FusableModels() =>
        AttentionModels.Fusable().Concat(AttentionModels.Float16()).Concat(AttentionModels.InLoops()).Select(m => new TestCaseData(m).SetArgDisplayNames(m.Name));

    private static IEnumerable<TestCaseData> Float32Models() =>
        AttentionModels.Fusable().Where(m => !m.NoReferenceProbe).Select(m => new TestCaseData(m).SetArgDisplayNames(m.Name));

    private static IEnumerable<TestCaseData> RefusedModels() =>
        AttentionModels.Refused().Select(m => new TestCaseData(m).SetArgDisplayNames(m.Name));

    private static IEnumerable<NodeProto> AllNodes(GraphProto graph) =>
        graph.Node.SelectMany(n => n.Attribute.Where(a => a.G is not null).SelectMany(a => AllNodes(a.G)).Prepend(n));

    [TestCaseSource(nameof(FusableModels))]
    public void Each_exporter_variant_becomes_one_FlashAttention_node(AttentionModel variant)
    {
        var model = variant.Build();
        var report = AttentionFuser.Rewrite(model);
        var expected = variant.Fused!;

        Assert.That(report.Skipped, Is.Empty, () => report.ToTable());
        Assert.That(report.Fused, Is.EqualTo(1));
        Parity.AssertWellFormed(model);
        var nodes = AllNodes(model.Graph).ToList();
        var fused = nodes.Single(n => n.OpType == "FlashAttention");
        var fusion = report.Fusions[0];
        using (Assert.EnterMultipleScope())
        {
            Assert.That(fused.Domain, Is.EqualTo("com.ortflash"));
            Assert.That(nodes.Select(n => n.OpType), Has.None.EqualTo("Softmax"));
            Assert.That(model.OpsetImport.Any(o => o.Domain == "com.ortflash" && o.Version == 1));
            Assert.That(fused.Attribute.Single(a => a.Name == "scale").F, Is.EqualTo(expected.Scale).Within(1e-4).Percent);
            Assert.That(fused.Attribute.SingleOrDefault(a => a.Name == "causal")?.I ?? 0, Is.EqualTo((long)expected.Causal));
            Assert.That(fused.Attribute.SingleOrDefault(a => a.Name == "softcap")?.F ?? 0, Is.EqualTo(expected.Softcap));
            Assert.That(fused.Attribute.Single(a => a.Name == "masked_rows").S.ToStringUtf8(),
                Is.EqualTo(expected.MaskedRows == MaskedRowPolicy.Zero ? "zero" : "nan"));
            Assert.That(fusion.KeyLayout, Is.EqualTo(expected.KeyLayout));
            Assert.That(fusion.ScalePlacement, Is.EqualTo(expected.ScalePlacement));
            Assert.That(fusion.KvHeadRepeatRemoved, Is.EqualTo(expected.KvHeadRepeatRemoved));
            Assert.That(fusion.ReplacedNodes, Is.Not.Empty);
            Assert.That(fusion.Notes, expected.NoteContains is null ? Is.Empty : Has.Some.Contain(expected.NoteContains));
        }
    }

    [TestCaseSource(nameof(Float32Models))]
    public void Rewritten_graph_feeds_the_op_what_reproduces_the_original(AttentionModel variant)
    {
        var original = variant.Build();
        var rewritten = original.Clone();
        AttentionFuser.Rewrite(rewritten);
        var random = new Random(1234);
        foreach (var (s, t) in AttentionModels.Lengths)
        {
            var inputs = variant.Inputs(random, s, t);
            var (output, reference) = Parity.ReferenceOfFusedNode(rewritten, inputs);
            var actual = OrtRunner.Run(original, inputs)[output];
            Parity.AssertClose(actual, reference, 1e-4, $"{variant.Name}, S={s}, T={t}");
        }
    }

    [TestCaseSource(nameof(FusableModels))]
    public void Every_output_matches_the_original_with_the_op_lowered_to_standard_ops(AttentionModel variant)
    {
        var original = variant.Build();
        var rewritten = original.Clone();
        AttentionFuser.Rewrite(rewritten);
        var lowered = FlashAttentionLowering.Lower(rewritten);
        var tolerance = original.Graph.Input[0].Type.TensorType.ElemType == (int)DataType.Float16 ? 5e-3 : 1e-4;
        var random = new Random(5);
        foreach (var (s, t) in AttentionModels.Lengths)
        {
            var inputs = variant.Inputs(random, s, t);
            var expected = OrtRunner.Run(original, inputs);
            var actual = OrtRunner.Run(lowered, inputs);
            foreach (var (name, tensor) in expected)
            {
                Parity.AssertClose(tensor, actual[name], tolerance, $"{variant.Name}, output {name}, S={s}, T={t}");
            }
        }
    }

    [TestCaseSource(nameof(FusableModels))]
    public void Rewritten_model_matches_the_original_in_OnnxRuntime(AttentionModel variant)
    {
        if (OrtRunner.OpLibraryPath is null)
        {
            Assert.Ignore("libortflash.so not built");
        }

        var original = variant.Build();
        var rewritten = original.Clone();
        AttentionFuser.Rewrite(rewritten);
        var tolerance = variant.Build().Graph.Input[0].Type.TensorType.ElemType == (int)DataType.Float16 ? 2e-3 : 1e-4;
        var random = new Random(99);
        foreach (var (s, t) in AttentionModels.Lengths)
        {
            var inputs = variant.Inputs(random, s, t);
            var expected = OrtRunner.Run(original, inputs);
            var actual = OrtRunner.Run(rewritten, inputs, withOpLibrary: true);
            foreach (var (name, tensor) in expected)
            {
                Parity.AssertClose(tensor, actual[name], tolerance, $"{variant.Name}, output {name}, S={s}, T={t}");
            }
        }
    }

    [TestCaseSource(nameof(RefusedModels))]
    public void Unsafe_or_unprovable_candidates_are_refused_with_a_reason(AttentionModel variant)
    {
        var model = variant.Build();
        var before = model.ToByteArray();
        var report = AttentionFuser.Rewrite(model);

        Assert.That(report.Fused, Is.Zero);
        Assert.That(report.Skipped, Has.Count.EqualTo(1));
        Assert.That(report.Skipped[0].Reason, Does.Contain(variant.RefusalContains));
        Assert.That(model.ToByteArray(), Is.EqualTo(before), "a refused model must be left exactly as it was");
    }

    [Test]
    public void Graphs_without_Softmax_before_MatMul_are_not_candidates()
    {
        var b = new ModelBuilder();
        var x = b.Input("x", DataType.Float, 2, 3);
        var w = b.Floats([3, 4], new float[12]);
        b.Rename(b.Node("MatMul", [b.Node("Relu", [x]), w]), "y");
        b.Output("y");

        var report = AttentionFuser.Rewrite(b.Model);

        Assert.That(report.Fused, Is.Zero);
        Assert.That(report.Skipped, Is.Empty);
    }

    private static ModelProto Float16ScoresWithFloatMask(Func<ModelBuilder, string> mask)
    {
        var b = new ModelBuilder();
        var q = b.Input("q", DataType.Float16, "B", 2, "S", 8);
        var k = b.Input("k", DataType.Float16, "B", 2, "T", 8);
        var v = b.Input("v", DataType.Float16, "B", 2, "T", 8);
        var scores = b.Node("Cast", [b.Node("MatMul", [q, b.Node("Transpose", [k], ModelBuilder.Ints("perm", 0, 1, 3, 2))])], ModelBuilder.Int("to", (long)DataType.Float));
        var probabilities = b.Node("Softmax", [b.Node("Add", [scores, mask(b)])], ModelBuilder.Int("axis", -1));
        b.Rename(b.Node("MatMul", [b.Node("Cast", [probabilities], ModelBuilder.Int("to", (long)DataType.Float16)), v]), "out");
        b.Output("out", DataType.Float16);
        return b.Model;
    }

    [Test]
    public void A_float_mask_in_a_float16_attention_is_converted_with_a_note()
    {
        var model = Float16ScoresWithFloatMask(b => b.Input("mask", DataType.Float, "B", 1, 1, "T"));

        var report = AttentionFuser.Rewrite(model);

        Assert.That(report.Fused, Is.EqualTo(1), () => report.ToTable());
        Assert.That(report.Fusions[0].Notes, Has.Some.Contain("converted from Float to Float16"));
        var cast = model.Graph.Node.Single(n => n.OpType == "Cast" && n.Input[0] == "mask");
        Assert.That(model.Graph.Node.Single(n => n.OpType == "FlashAttention").Input[3], Is.EqualTo(cast.Output[0]));
    }

    [Test]
    public void A_float_mask_built_from_float32_min_is_refused_in_a_float16_attention()
    {
        var model = Float16ScoresWithFloatMask(b =>
        {
            var padding = b.Input("padding", DataType.Float, "B", 1, 1, "T");
            return b.Node("Mul", [b.Node("Sub", [b.Scalar(1), padding]), b.Scalar(float.MinValue)]);
        });

        var report = AttentionFuser.Rewrite(model);

        Assert.That(report.Fused, Is.Zero);
        Assert.That(report.Skipped.Single().Reason, Does.Contain("would turn it into infinity"));
    }
}
