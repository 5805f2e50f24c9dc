using Google.Protobuf;
using OrtFlash.GraphRewriter;
using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.GraphRewriter.Rules;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.Tests.Rewriter.Support;

/// <summary>What every catalogued variant must satisfy; the rule test classes run these per variant.</summary>
internal static class VariantChecks
{
    private static IEnumerable<NodeProto> AllNodes(GraphProto graph) =>
        graph.Node.SelectMany(n => n.Attribute.Where(a => a.G is not null).SelectMany(a => AllNodes(a.G)).Prepend(n));

    public static void FusesIntoOneNode(AttentionModel variant)
    {
        var model = variant.Build();
        var report = AttentionFuser.Rewrite(model);
        var expected = variant.Fused!;

        Assert.That(report.Skipped, Is.Empty, () => report.ToTable());
        Assert.That(report.Fused, Is.EqualTo(1));
        Parity.AssertWellFormed(model);
        var nodes = AllNodes(model.Graph).Concat(model.Functions.SelectMany(f => AllNodes(new GraphProto { Node = { f.Node } }))).ToList();
        var fused = nodes.Single(n => n.OpType == "FlashAttention");
        var fusion = report.Fusions[0];
        using (Assert.EnterMultipleScope())
        {
            Assert.That(fused.Domain, Is.EqualTo("com.ortflash"));
            Assert.That(nodes.Select(n => n.OpType), Has.None.EqualTo("Softmax"));
            Assert.That(model.OpsetImport.Any(o => o.Domain == "com.ortflash" && o.Version == 1));
            Assert.That(model.Functions.Where(f => f.Node.Contains(fused)).All(f => f.OpsetImport.Any(o => o.Domain == "com.ortflash")), "a function holding the op imports its domain");
            if (float.IsNaN(expected.Scale))
            {
                Assert.That(fused.Attribute.Select(a => a.Name), Has.None.EqualTo("scale"), "the op's default scale is left to it");
            }
            else
            {
                Assert.That(fused.Attribute.Single(a => a.Name == "scale").F, Is.EqualTo(expected.Scale).Within(1e-4).Percent);
            }

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

    public static void MatchesTheContractReference(AttentionModel variant)
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

    public static void MatchesWithTheOpLowered(AttentionModel variant)
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

    public static void MatchesWithTheOpLibrary(AttentionModel variant)
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

    public static void IsRefusedWithItsReason(AttentionModel variant)
    {
        var model = variant.Build();
        var before = model.ToByteArray();
        var report = AttentionFuser.Rewrite(model);

        Assert.That(report.Fused, Is.Zero);
        Assert.That(report.Skipped, Has.Count.EqualTo(1));
        Assert.That(report.Skipped[0].Reason, Does.Contain(variant.RefusalContains));
        Assert.That(model.ToByteArray(), Is.EqualTo(before), "a refused model must be left exactly as it was");
    }
}
