using OrtFlash.GraphRewriter;
using OrtFlash.GraphRewriter.Rules;
using OrtFlash.Tests.Rewriter.Support;

namespace OrtFlash.Tests.Rewriter;

/// <summary>
/// <see cref="RewriteOptions.IntegerMasksAreBinary"/>: (1 − m)·finfo.min of an integer m is +finfo.max where m is 2, which
/// cancels another mask's finfo.min. Without the option such pairs are refused; with it (the default) they are fused with
/// a note, exact for m in {0, 1}.
/// </summary>
public class IntegerMasksAreBinaryTests
{
    private static readonly RewriteOptions Strict = new() { IntegerMasksAreBinary = false };

    private static IEnumerable<TestCaseData> Models() =>
        AttentionModels.IntegerMasksHoldingTwo().Select(m => new TestCaseData(m).SetArgDisplayNames(m.Name));

    [TestCaseSource(nameof(Models))]
    public void Without_the_option_masks_whose_absorbing_values_may_cancel_are_refused(AttentionModel variant)
    {
        var report = AttentionFuser.Rewrite(variant.Build(), Strict);

        Assert.That(report.Fused, Is.Zero);
        Assert.That(report.Skipped.Single().Reason, Does.Contain(variant.RefusalContains));
    }

    [TestCaseSource(nameof(Models))]
    public void By_default_they_are_fused_with_a_note(AttentionModel variant)
    {
        var report = AttentionFuser.Rewrite(variant.Build());

        Assert.That(report.Fused, Is.EqualTo(1), () => report.ToTable());
        Assert.That(report.Fusions[0].Notes, Has.Some.EqualTo(ScaledDotProductAttentionRule.IntegerMasksAreBinaryNote));
    }

    [Test]
    public void Bool_masks_need_no_assumption()
    {
        var model = AttentionModels.Fusable().Single(m => m.Name.StartsWith("Where(keep, s, finfo.min), then + (1 − m)·finfo.min of a bool m", StringComparison.Ordinal)).Build();

        var report = AttentionFuser.Rewrite(model, Strict);

        Assert.That(report.Fused, Is.EqualTo(1), () => report.ToTable());
        Assert.That(report.Fusions[0].Notes, Is.Empty);
    }

    [Test]
    public void With_m_equal_to_2_the_default_rewrite_differs_from_the_original_which_is_what_the_note_says()
    {
        var variant = AttentionModels.IntegerMasksHoldingTwo().Single(m => m.Name.StartsWith("Where(keep", StringComparison.Ordinal));
        var original = variant.Build();
        var lowered = original.Clone();
        AttentionFuser.Rewrite(lowered);
        lowered = FlashAttentionLowering.Lower(lowered);
        var inputs = variant.Inputs(new Random(3), 4, 4);

        var expected = OrtRunner.Run(original, inputs)["out"];
        var actual = OrtRunner.Run(lowered, inputs)["out"];

        Assert.That(actual.Data.Zip(expected.Data).Max(p => Math.Abs(p.First - p.Second)), Is.GreaterThan(1e-3));
    }
}
