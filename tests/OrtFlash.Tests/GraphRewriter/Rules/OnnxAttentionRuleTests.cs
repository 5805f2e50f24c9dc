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
}
