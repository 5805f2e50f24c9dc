using System.Text.Json;
using OrtFlash.GraphRewriter;
using OrtFlash.Tests.Rewriter.Support;

namespace OrtFlash.Tests.Rewriter.Report;

public class FusionReportTests
{
    [Test]
    public void Json_has_the_fused_count_each_fusion_and_each_skip_with_its_reason()
    {
        var fusable = AttentionModels.Fusable().First().Build();
        var refused = AttentionModels.Refused().First().Build();
        var report = AttentionFuser.Rewrite(fusable);
        var refusal = AttentionFuser.Rewrite(refused);

        using var json = JsonDocument.Parse(report.ToJson());
        using var skippedJson = JsonDocument.Parse(refusal.ToJson());

        Assert.That(json.RootElement.GetProperty("fused").GetInt32(), Is.EqualTo(1));
        var fusion = json.RootElement.GetProperty("fusions")[0];
        Assert.That(fusion.GetProperty("keyLayout").GetString(), Is.EqualTo("SwapLastAxes"));
        Assert.That(fusion.GetProperty("scalePlacement").GetString(), Is.EqualTo("DivideScores"));
        Assert.That(fusion.GetProperty("masks")[0].GetString(), Is.EqualTo("AdditiveBias"));
        Assert.That(fusion.GetProperty("replacedNodes").GetArrayLength(), Is.GreaterThanOrEqualTo(5));
        Assert.That(skippedJson.RootElement.GetProperty("fused").GetInt32(), Is.Zero);
        var skipped = skippedJson.RootElement.GetProperty("skipped")[0];
        Assert.That(skipped.GetProperty("reason").GetString(), Does.Contain("graph output"));
        Assert.That(skipped.GetProperty("node").GetString(), Is.Not.Empty);
    }

    [Test]
    public void Table_lists_fusions_and_refusals_readably()
    {
        var report = AttentionFuser.Rewrite(AttentionModels.Fusable().First().Build());
        var refusal = AttentionFuser.Rewrite(AttentionModels.Refused().First().Build());

        var table = report.ToTable();
        var refusalTable = refusal.ToTable();

        Assert.That(table, Does.StartWith("Fused 1 attention subgraph(s); skipped 0."));
        Assert.That(table, Does.Contain("SwapLastAxes").And.Contain("DivideScores"));
        Assert.That(refusalTable, Does.Contain("skipped").And.Contain("graph output"));
    }
}
