using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.Verification;
using static OrtFlash.Tests.Managed.Verification.TestModels;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.Tests.Managed.Verification;

[TestFixture]
public sealed class ModelComparerTests
{
    private static readonly ComparisonOptions Options = new()
    {
        SequenceLengths = [5, 9],
        ExpectedSession = Cpu,
        ActualSession = Cpu,
    };

    private static ModelSource Bert => ModelSource.FromFile(PathOf("bert-opset14.onnx"));

    private static ModelSource InMemory(ModelProto model, string name) => ModelSource.FromModel(model, name);

    [TestCase("bert-opset14.onnx")]
    [TestCase("llama-opset17-fp16.onnx")]
    [TestCase("gpt2_past-opset17.onnx")]
    public void AModelMatchesItselfExactly(string fileName)
    {
        var source = ModelSource.FromFile(PathOf(fileName));
        var report = ModelComparer.Compare(source, source, Options);
        Assert.Multiple(() =>
        {
            Assert.That(report.Passed, Is.True, () => ComparisonReportWriter.ToText(report));
            Assert.That(report.Runs.Select(r => r.SequenceLength), Is.EqualTo(new[] { 5, 9 }));
            var outputs = report.Runs.SelectMany(r => r.Outputs).ToArray();
            Assert.That(outputs, Is.Not.Empty);
            Assert.That(outputs.Select(o => o.Verdict), Is.All.EqualTo(OutputVerdict.Match));
            Assert.That(outputs.Select(o => o.MaxAbsoluteDifference), Is.All.Zero);
            Assert.That(outputs.Select(o => o.Magnitude), Is.All.GreaterThan(0));
            Assert.That(report.ExpectedProvider, Is.EqualTo(ExecutionProvider.Cpu));
        });
    }

    [Test]
    public void PerturbedWeightsAreFoundAndLocated()
    {
        var original = Bert;
        var perturbed = InMemory(WithPerturbedWeights(original.Model, 0.01), "bert perturbed by 1%");
        var report = ModelComparer.Compare(original, perturbed, Options);
        var output = report.Runs[0].Outputs.Single();
        Assert.Multiple(() =>
        {
            Assert.That(report.Passed, Is.False);
            Assert.That(output.Verdict, Is.EqualTo(OutputVerdict.OutOfTolerance));
            Assert.That(output.MaxAbsoluteDifference, Is.GreaterThan(1e-3));
            Assert.That(output.ToleranceUsed, Is.GreaterThan(1));
            Assert.That(output.ElementsOutOfTolerance, Is.Positive.And.LessThanOrEqualTo(output.ElementCount));
            Assert.That(output.ElementCount, Is.EqualTo(2 * 5 * 64));
            Assert.That(output.NonFiniteMismatches, Is.Zero);
            Assert.That(output.LargestDifferences, Has.Count.EqualTo(3));
            Assert.That(output.LargestDifferences[0].AbsoluteDifference, Is.EqualTo(output.MaxAbsoluteDifference));
            Assert.That(output.LargestDifferences[0].Index, Has.Count.EqualTo(3));
            Assert.That(output.LargestDifferences.Select(d => d.AbsoluteDifference), Is.Ordered.Descending);
        });
    }

    [Test]
    public void DifferencesWithinToleranceStillPass()
    {
        var original = Bert;
        var nudged = InMemory(WithPerturbedWeights(original.Model, 1e-7), "bert nudged by 1e-7");
        var report = ModelComparer.Compare(original, nudged, Options);
        var output = report.Runs[0].Outputs.Single();
        Assert.Multiple(() =>
        {
            Assert.That(report.Passed, Is.True);
            Assert.That(output.MaxAbsoluteDifference, Is.GreaterThan(0), "the change is visible");
            Assert.That(output.ToleranceUsed, Is.GreaterThan(0).And.LessThanOrEqualTo(1));
        });
    }

    [Test]
    public void ToleranceOverridesApply()
    {
        var original = Bert;
        var perturbed = InMemory(WithPerturbedWeights(original.Model, 0.01), "bert perturbed by 1%");
        var loose = ModelComparer.Compare(original, perturbed, Options with { RelativeTolerance = 0.5, AbsoluteTolerance = 0.5 });
        Assert.That(loose.Passed, Is.True);
        Assert.That(loose.Runs[0].Outputs[0].Tolerance, Is.EqualTo(new ComparisonTolerance(0.5, 0.5)));
    }

    private static ModelProto IdentityModel(string outputName = "y") =>
        Tiny(g => g.Node.Add(Node("Identity", ["x"], [outputName])), (outputName, DataType.Float, 3));

    [Test]
    public void ShapeMismatchesAreReportedWithoutComparingElements()
    {
        var doubled = Tiny(g => g.Node.Add(Node("Concat", ["x", "x"], ["y"], IntAttribute("axis", 1))), ("y", DataType.Float, 3));
        var report = ModelComparer.Compare(InMemory(IdentityModel(), "identity"), InMemory(doubled, "concat"), Options);
        var output = report.Runs[0].Outputs.Single();
        Assert.Multiple(() =>
        {
            Assert.That(report.Passed, Is.False);
            Assert.That(output.Verdict, Is.EqualTo(OutputVerdict.ShapeMismatch));
            Assert.That(output.ExpectedShape, Is.EqualTo(new long[] { 2, 5, 4 }));
            Assert.That(output.ActualShape, Is.EqualTo(new long[] { 2, 10, 4 }));
        });
    }

    [Test]
    public void OutputNameMismatchesAreReportedOnBothSides()
    {
        var report = ModelComparer.Compare(InMemory(IdentityModel("y"), "y"), InMemory(IdentityModel("renamed"), "renamed"), Options);
        var outputs = report.Runs[0].Outputs;
        Assert.Multiple(() =>
        {
            Assert.That(report.Passed, Is.False);
            Assert.That(outputs.Select(o => (o.Name, o.Verdict)), Is.EqualTo(new[]
            {
                ("y", OutputVerdict.MissingInActual),
                ("renamed", OutputVerdict.UnexpectedInActual),
            }));
        });
    }

    [Test]
    public void TypeMismatchesAreReported()
    {
        var cast = Tiny(g => g.Node.Add(Node("Cast", ["x"], ["y"], IntAttribute("to", (long)DataType.Double))), ("y", DataType.Double, 3));
        var output = ModelComparer.Compare(InMemory(IdentityModel(), "identity"), InMemory(cast, "cast"), Options).Runs[0].Outputs.Single();
        Assert.That(output.Verdict, Is.EqualTo(OutputVerdict.TypeMismatch));
    }

    [Test]
    public void NaNOnOneSideOnlyIsAMismatchAndNaNOnBothIsNot()
    {
        // sqrt(x) is NaN for the generated negative x; sqrt(|x|) is not. Both are equal where x ≥ 0.
        var abs = Tiny(g =>
        {
            g.Node.Add(Node("Abs", ["x"], ["a"]));
            g.Node.Add(Node("Sqrt", ["a"], ["y"]));
        }, ("y", DataType.Float, 3));
        var sqrt = Tiny(g => g.Node.Add(Node("Sqrt", ["x"], ["y"])), ("y", DataType.Float, 3));
        var mismatch = ModelComparer.Compare(InMemory(abs, "sqrt|x|"), InMemory(sqrt, "sqrt x"), Options).Runs[0].Outputs.Single();
        var same = ModelComparer.Compare(InMemory(sqrt, "sqrt x"), InMemory(sqrt, "sqrt x again"), Options).Runs[0].Outputs.Single();
        Assert.Multiple(() =>
        {
            Assert.That(mismatch.Verdict, Is.EqualTo(OutputVerdict.OutOfTolerance));
            Assert.That(mismatch.NonFiniteMismatches, Is.Positive);
            Assert.That(mismatch.ElementsOutOfTolerance, Is.Zero, "finite elements agree");
            Assert.That(double.IsNaN(mismatch.LargestDifferences[0].Actual), Is.True, "non-finite mismatches are listed first");
            Assert.That(same.Verdict, Is.EqualTo(OutputVerdict.Match));
        });
    }

    [Test]
    public void AnActualModelThatFailsToRunFailsTheComparison()
    {
        var reshape = Tiny(g =>
        {
            g.Initializer.Add(Int64Tensor("shape", 3));
            g.Node.Add(Node("Reshape", ["x", "shape"], ["y"]));
        }, ("y", DataType.Float, 1));
        var run = ModelComparer.Compare(InMemory(IdentityModel(), "identity"), InMemory(reshape, "reshape to [3]"), Options).Runs[0];
        Assert.Multiple(() =>
        {
            Assert.That(run.Passed, Is.False);
            Assert.That(run.ActualRunError, Does.Contain("Reshape").IgnoreCase);
            Assert.That(run.Outputs, Is.Empty);
        });
    }

    [Test]
    public void AnActualModelWithAnotherInputIsNotRun()
    {
        var extra = Tiny(g =>
        {
            g.Input.Add(Value("z", DataType.Float, ["batch", "sequence", "4"]));
            g.Node.Add(Node("Add", ["x", "z"], ["y"]));
        }, ("y", DataType.Float, 3));
        var run = ModelComparer.Compare(InMemory(IdentityModel(), "identity"), InMemory(extra, "x + z"), Options).Runs[0];
        Assert.Multiple(() =>
        {
            Assert.That(run.Passed, Is.False);
            Assert.That(run.InputMismatches, Has.One.Contains("'z'"));
            Assert.That(run.ActualRunError, Does.StartWith("not run"));
        });
    }

    [Test]
    public void AnExpectedModelThatFailsOnTheGeneratedInputsIsInvalid()
    {
        var reshape = Tiny(g =>
        {
            g.Initializer.Add(Int64Tensor("shape", 3));
            g.Node.Add(Node("Reshape", ["x", "shape"], ["y"]));
        }, ("y", DataType.Float, 1));
        var error = Assert.Throws<InvalidModelException>(() => ModelComparer.Compare(InMemory(reshape, "reshape to [3]"), InMemory(reshape, "again"), Options));
        Assert.That(error!.Message, Does.Contain("reshape to [3]").And.Contain("sequence length 5"));
    }

    [Test]
    public void ModelsWithTheFusedOpRunWithTheOpLibraryRegistered()
    {
        // The op-test graphs declare every dimension with its own name (Q_d0, ...), so all of them get generated sizes;
        // the scale is explicit because the generated head dim is not the case's.
        var attention = CustomOp.CaseFactory.Make(1, [2, 2, 7, 8], [2, 2, 7, 8], [2, 2, 7, 8], scale: 0.3f);
        var unfused = InMemory(ModelProto.Parser.ParseFrom(CustomOp.OpModels.UnfusedModel(attention)), "unfused attention");
        var fused = InMemory(ModelProto.Parser.ParseFrom(CustomOp.OpModels.FusedModel(attention)), "FlashAttention");
        var report = ModelComparer.Compare(unfused, fused, Options);
        Assert.Multiple(() =>
        {
            Assert.That(report.Passed, Is.True, () => ComparisonReportWriter.ToText(report));
            Assert.That(report.Runs[1].Outputs.Single().ExpectedShape, Has.Count.EqualTo(4));
        });
    }

    [Test]
    public void TheReportReadsAsATable()
    {
        var original = Bert;
        var report = ModelComparer.Compare(original, InMemory(WithPerturbedWeights(original.Model, 0.01), "perturbed"), Options);
        string written = ComparisonReportWriter.ToText(report);
        Assert.Multiple(() =>
        {
            Assert.That(written, Does.Contain("attention_mask Int64[2,5]: mask, 1 = keep, padded at the end (entry 1: 1 of 5)"));
            Assert.That(written, Does.Match(@"\n\s+5  last_hidden_state  \[2,5,64\]\s+\S+\s+\S+\s+\S+\s+\S+\s+MISMATCH"));
            Assert.That(written, Does.Contain("largest differences:"));
            Assert.That(written, Does.Contain("FAIL: 2 of 2 comparisons do not match"));
        });
    }
}
