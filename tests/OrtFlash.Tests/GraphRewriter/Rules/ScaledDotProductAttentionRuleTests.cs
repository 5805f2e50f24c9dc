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

    [TestCaseSource(nameof(FusableModels))]
    public void Each_exporter_variant_becomes_one_FlashAttention_node(AttentionModel variant) => VariantChecks.FusesIntoOneNode(variant);

    [TestCaseSource(nameof(Float32Models))]
    public void Rewritten_graph_feeds_the_op_what_reproduces_the_original(AttentionModel variant) => VariantChecks.MatchesTheContractReference(variant);

    [TestCaseSource(nameof(FusableModels))]
    public void Every_output_matches_the_original_with_the_op_lowered_to_standard_ops(AttentionModel variant) => VariantChecks.MatchesWithTheOpLowered(variant);

    [TestCaseSource(nameof(FusableModels))]
    public void Rewritten_model_matches_the_original_in_OnnxRuntime(AttentionModel variant) => VariantChecks.MatchesWithTheOpLibrary(variant);

    [TestCaseSource(nameof(RefusedModels))]
    public void Unsafe_or_unprovable_candidates_are_refused_with_a_reason(AttentionModel variant) => VariantChecks.IsRefusedWithItsReason(variant);

    // A mask blown up to the score shape before it becomes a bias reaches the op at the shape it broadcasts from, and the
    // S×T tensor is no longer built: BART's Expand, T5's zero-Add. (The catalogue tests check that outputs match.)
    [TestCase("Expand")]
    [TestCase("ConstantOfShape")]
    public void Masks_expanded_to_the_score_shape_reach_the_op_unexpanded(string blowUp)
    {
        var model = blowUp == "Expand" ? AttentionModels.ExpandedPaddingMask() : AttentionModels.ZerosPlusPaddingBias();
        Assert.That(model.Graph.Node.Select(n => n.OpType), Has.Member(blowUp), "the original builds the full-shape mask");

        var report = AttentionFuser.Rewrite(model);

        var flash = model.Graph.Node.Single(n => n.OpType == ScaledDotProductAttentionRule.OpType);
        var producers = model.Graph.Node.SelectMany(n => n.Output.Select(o => (o, n))).ToDictionary(p => p.o, p => p.n);
        var ancestors = new List<string>();
        var pending = new Stack<string>([flash.Input[3]]);
        while (pending.TryPop(out var value))
        {
            if (producers.TryGetValue(value, out var node))
            {
                ancestors.Add(node.OpType);
                foreach (var input in node.Input.Where(i => i.Length > 0))
                {
                    pending.Push(input);
                }
            }
        }

        Assert.Multiple(() =>
        {
            Assert.That(ancestors, Has.None.EqualTo(blowUp).And.None.EqualTo("Shape"), "the bias is computed from the (B, 1, 1, T) mask");
            Assert.That(model.Graph.Node.Select(n => n.OpType), Has.None.EqualTo(blowUp), "nothing builds the full-shape mask any more");
            Assert.That(report.Fusions.Single().Notes, Has.Some.Contains("passed at the shape it broadcasts from"));
        });
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

    [Test]
    public void A_malformed_function_body_is_reported_and_left_as_it_is_while_the_main_graph_is_rewritten()
    {
        var model = AttentionModels.Fusable().First().Build();
        var broken = new FunctionProto { Name = "Broken", Domain = "local", Input = { "x" }, Output = { "y" } };
        broken.Node.Add(new NodeProto { OpType = "Relu", Input = { "undefined" }, Output = { "y" } });
        model.Functions.Add(broken);
        var before = broken.ToByteArray();

        var report = AttentionFuser.Rewrite(model);

        Assert.That(report.Fused, Is.EqualTo(1));
        Assert.That(report.Skipped.Single().Reason, Does.Contain("function body is not rewritten").And.Contain("undefined"));
        Assert.That(model.Functions.Single().ToByteArray(), Is.EqualTo(before));
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
    public void A_float32_mask_input_in_a_float16_attention_is_refused_because_its_values_may_not_convert()
    {
        // Found by the differential fuzz test (seed 284): a −1e9 in the input became −inf in float16, and a row the
        // graph spreads over the fill (uniform) became NaN.
        var model = Float16ScoresWithFloatMask(b => b.Input("mask", DataType.Float, "B", 1, 1, "T"));

        var report = AttentionFuser.Rewrite(model);

        Assert.That(report.Fused, Is.Zero);
        Assert.That(report.Skipped.Single().Reason, Does.Contain("not provably held exactly by Float16"));
    }

    [Test]
    public void A_float32_mask_built_from_a_bool_mask_in_a_float16_attention_is_converted_with_a_note()
    {
        var model = Float16ScoresWithFloatMask(b =>
            b.Node("Where", [b.Input("mask", DataType.Bool, "B", 1, 1, "T"), b.Scalar(0), b.Scalar(float.NegativeInfinity)]));

        var report = AttentionFuser.Rewrite(model);

        Assert.That(report.Fused, Is.EqualTo(1), () => report.ToTable());
        Assert.That(report.Fusions[0].Notes, Has.Some.Contain("converted from Float to Float16").And.Contain("converts exactly"));
        var fused = model.Graph.Node.Single(n => n.OpType == "FlashAttention");
        Assert.That(model.Graph.Node.Single(n => n.Output[0] == fused.Input[3]).OpType, Is.EqualTo("Cast"));
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

    [Test]
    public void ALiBi_bias_built_in_the_graph_is_kept_and_fed_to_the_op_as_its_bias_input()
    {
        var model = AttentionModels.AlibiWithPadding();
        var bias = model.Graph.Node.Single(n => n.OpType == "Softmax").Input[0];
        var scoresPlusBias = model.Graph.Node.Single(n => n.Output[0] == bias);
        var alibiPlusPadding = scoresPlusBias.Input[1];

        var report = AttentionFuser.Rewrite(model);

        Assert.That(report.Fused, Is.EqualTo(1), () => report.ToTable());
        var fused = model.Graph.Node.Single(n => n.OpType == "FlashAttention");
        Assert.That(fused.Input[3], Is.EqualTo(alibiPlusPadding), "the (B, H, S, T) ALiBi + padding sum is the op's bias");
        Assert.That(fused.Input.Count < 5 || fused.Input[4].Length == 0, "no keep mask");
        Assert.That(fused.Attribute.SingleOrDefault(a => a.Name == "causal")?.I ?? 0, Is.Zero, "ALiBi is not a causal mask");
        Assert.That(model.Graph.Node.Select(n => n.OpType), Has.Exactly(2).EqualTo("Range"), "the position computation stays in the graph");
    }
}
