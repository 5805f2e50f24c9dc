using OrtFlash.GraphRewriter;
using OrtFlash.GraphRewriter.Rules;
using OrtFlash.Tests.Rewriter.Support;

namespace OrtFlash.Tests.Rewriter.Rules;

public class OnnxAttentionRuleTests
{
    private static IEnumerable<TestCaseData> Mappable() =>
        AttentionModels.OnnxAttention().Select(m => new TestCaseData(m).SetArgDisplayNames(m.Name));

    private static IEnumerable<TestCaseData> ProbeReady() =>
        AttentionModels.OnnxAttention().Where(m => !m.NoReferenceProbe).Select(m => new TestCaseData(m).SetArgDisplayNames(m.Name));

    private static IEnumerable<TestCaseData> Unmappable() =>
        AttentionModels.OnnxAttentionRefused().Select(m => new TestCaseData(m).SetArgDisplayNames(m.Name));

    [TestCaseSource(nameof(Mappable))]
    public void An_ONNX_Attention_node_becomes_one_FlashAttention_node(AttentionModel variant) => VariantChecks.FusesIntoOneNode(variant);

    [TestCaseSource(nameof(ProbeReady))]
    public void The_op_gets_inputs_that_reproduce_ONNX_Runtimes_Attention(AttentionModel variant) => VariantChecks.MatchesTheContractReference(variant);

    [TestCaseSource(nameof(Mappable))]
    public void Every_output_matches_with_the_op_lowered_to_standard_ops(AttentionModel variant) => VariantChecks.MatchesWithTheOpLowered(variant);

    [TestCaseSource(nameof(Mappable))]
    public void Every_output_matches_with_the_op_library(AttentionModel variant) => VariantChecks.MatchesWithTheOpLibrary(variant);

    [TestCaseSource(nameof(Unmappable))]
    public void Unmappable_ONNX_Attention_nodes_are_refused_with_a_reason(AttentionModel variant) => VariantChecks.IsRefusedWithItsReason(variant);

    [Test]
    public void The_report_describes_how_nonpad_kv_seqlen_with_is_causal_is_mapped()
    {
        var variant = AttentionModels.OnnxAttention().Single(m => m.Name.StartsWith("ONNX Attention-24 with nonpad_kv_seqlen and is_causal", StringComparison.Ordinal));
        var report = AttentionFuser.Rewrite(variant.Build());

        var fusion = report.Fusions.Single();
        using (Assert.EnterMultipleScope())
        {
            Assert.That(fusion.Causal, Is.EqualTo(CausalAlignment.LowerRight));
            Assert.That(fusion.Masks, Is.EqualTo(new[] { MaskKind.KeepNegativeInfinity }));
            Assert.That(fusion.Notes.Single(), Does.Contain(AttentionModels.NonPadCausalNote).And.Contain("rows without a visible key give zeros").And.Contain("causal=2"));
            Assert.That(report.ToJson(), Does.Contain("nonpad_kv_seqlen with is_causal"));
        }
    }

    [Test]
    public void The_report_says_that_lowest_mask_values_hide_their_key()
    {
        var variant = AttentionModels.OnnxAttention().Single(m => m.Name == "ONNX Attention-23 with a float mask");
        var report = AttentionFuser.Rewrite(variant.Build());

        Assert.That(report.Fusions.Single().Notes.Single(), Does.Contain("Float's " + AttentionModels.LowestHidesNote).And.Contain("replaced by −inf"));
    }
}
