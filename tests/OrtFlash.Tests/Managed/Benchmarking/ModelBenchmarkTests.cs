using OrtFlash.Benchmarking;
using OrtFlash.GraphRewriter;
using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.Verification;
using static OrtFlash.Tests.Managed.Verification.TestModels;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.Tests.Managed.Benchmarking;

/// <summary>What the benchmark measures and refuses; never how fast anything is.</summary>
[TestFixture]
public sealed class ModelBenchmarkTests
{
    private static readonly BenchmarkOptions Options = new()
    {
        SequenceLengths = [5, 9],
        OriginalSession = Cpu,
        RewrittenSession = Cpu,
        WarmupIterations = 1,
        Iterations = 3,
    };

    private static ModelProto Identity() => Tiny(g => g.Node.Add(Node("Identity", ["x"], ["y"])), ("y", DataType.Float, 3));

    private static ModelProto ReshapeToThree() => Tiny(g =>
    {
        g.Initializer.Add(Int64Tensor("shape", 3));
        g.Node.Add(Node("Reshape", ["x", "shape"], ["y"]));
    }, ("y", DataType.Float, 1));

    [Test]
    public void EachSequenceLengthTimesBothModelsTheSameNumberOfTimes()
    {
        var identity = ModelSource.FromModel(Identity(), "identity");
        var report = ModelBenchmark.Run(identity, identity, Options);
        Assert.Multiple(() =>
        {
            Assert.That(report.Runs.Select(r => r.SequenceLength), Is.EqualTo(new[] { 5, 9 }));
            Assert.That(report.Runs.Select(r => (r.Original.Runs, r.Rewritten.Runs)), Is.All.EqualTo((3, 3)));
            Assert.That(report.Runs.Select(r => r.Original.MedianMs), Is.All.Positive);
            Assert.That(report.Runs[0].Inputs, Has.One.StartsWith("x Float[2,5,4]"));
            Assert.That(report.Runs.Select(r => r.OriginalAttentionProbabilities), Is.All.Null, "no fusion report given");
        });
    }

    [Test]
    public void TheTimeBudgetStopsTimingEarlyButOnePairAlwaysRuns()
    {
        var identity = ModelSource.FromModel(Identity(), "identity");
        var run = ModelBenchmark.Run(identity, identity, Options with { Iterations = 1_000_000, TimeBudget = TimeSpan.FromTicks(1) }).Runs[0];
        Assert.Multiple(() =>
        {
            Assert.That(run.Original.Runs, Is.InRange(1, 999_999));
            Assert.That(run.Rewritten.Runs, Is.EqualTo(run.Original.Runs));
        });
    }

    [Test]
    public void TheRatioIsTheRewrittenMedianOverTheOriginalMedian()
    {
        var identity = ModelSource.FromModel(Identity(), "identity");
        var run = ModelBenchmark.Run(identity, identity, Options).Runs[0];
        Assert.That(run.Ratio, Is.EqualTo(run.Rewritten.MedianMs / run.Original.MedianMs));
    }

    [Test]
    public void TheAttentionProbabilitiesOfEachFusedBlockAreMeasuredOnARun()
    {
        var original = ModelSource.FromFile(PathOf("bert-opset17.onnx"));
        var copy = original.Model.Clone();
        var fusion = AttentionFuser.Rewrite(copy);
        var report = ModelBenchmark.Run(original, ModelSource.FromModel(copy, "rewritten"), Options with { SequenceLengths = [6] }, fusion);
        var probabilities = report.Runs[0].OriginalAttentionProbabilities;
        Assert.That(probabilities, Is.Not.Null);
        Assert.Multiple(() =>
        {
            Assert.That(probabilities!.Blocks, Is.EqualTo(fusion.Fused));
            Assert.That(probabilities.Shape, Has.Count.EqualTo(4));
            Assert.That(probabilities.Shape[0], Is.EqualTo(2), "batch");
            Assert.That(probabilities.Shape.Skip(2), Is.EqualTo(new long[] { 6, 6 }), "queries × keys");
            Assert.That(probabilities.LargestBytes, Is.EqualTo(probabilities.Shape.Aggregate(1L, (a, b) => a * b) * sizeof(float)));
        });
    }

    [Test]
    public void AModelFailingOnTheInputsIsAFailedBenchmarkNamingIt()
    {
        var error = Assert.Throws<BenchmarkFailedException>(() => ModelBenchmark.Run(
            ModelSource.FromModel(Identity(), "identity"), ModelSource.FromModel(ReshapeToThree(), "reshape to [3]"), Options));
        Assert.That(error!.Message, Does.StartWith("'reshape to [3]' fails on the generated inputs at sequence length 5"));
    }

    [Test]
    public void ARewrittenModelNeedingAnotherInputIsRefused()
    {
        var extra = Tiny(g =>
        {
            g.Input.Add(Value("z", DataType.Float, ["batch", "sequence", "4"]));
            g.Node.Add(Node("Add", ["x", "z"], ["y"]));
        }, ("y", DataType.Float, 3));
        var error = Assert.Throws<InvalidModelException>(() => ModelBenchmark.Run(
            ModelSource.FromModel(Identity(), "identity"), ModelSource.FromModel(extra, "x + z"), Options));
        Assert.That(error!.Message, Does.Contain("needs input 'z'"));
    }
}
