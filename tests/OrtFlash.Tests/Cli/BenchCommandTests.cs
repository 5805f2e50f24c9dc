using System.CommandLine;
using System.Text.Json;
using OrtFlash.Cli;
using OrtFlash.GraphRewriter;
using OrtFlash.Tests.Managed.Verification;
using OrtFlash.Verification;

namespace OrtFlash.Tests.Cli;

/// <summary>The structure of what <c>ortflash bench</c> reports; never how fast anything is.</summary>
[TestFixture]
public sealed class BenchCommandTests
{
    private string folder = "";

    [SetUp]
    public void CreateFolder() => folder = Directory.CreateTempSubdirectory("ortflash-bench-").FullName;

    [TearDown]
    public void DeleteFolder() => Directory.Delete(folder, recursive: true);

    private static string Bert => TestModels.PathOf("bert-opset17.onnx");

    /// <summary>Tiny counts: the test asserts structure, and shares two cores.</summary>
    private static readonly string[] Quick = ["--iterations", "2", "--warmup", "0", "--threads", "1"];

    private static (int ExitCode, string Output, string Error) Bench(params string[] arguments)
    {
        var root = new RootCommand { BenchCommand.Create() };
        using var output = new StringWriter();
        using var error = new StringWriter();
        int exitCode = root.Parse(["bench", .. arguments]).Invoke(new InvocationConfiguration { Output = output, Error = error });
        return (exitCode, output.ToString(), error.ToString());
    }

    private string Write(string name, byte[] bytes)
    {
        string path = Path.Combine(folder, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static int FusedByTheRewriter(string model) => AttentionFuser.Rewrite(ModelSource.FromFile(model).Model.Clone()).Fused;

    private static void AssertTimed(JsonElement run, int runs)
    {
        foreach (var variant in new[] { "original", "rewritten" })
        {
            var latency = run.GetProperty(variant);
            double median = latency.GetProperty("medianMs").GetDouble();
            Assert.That(latency.GetProperty("runs").GetInt32(), Is.EqualTo(runs), variant);
            Assert.That(median, Is.Positive, variant);
            Assert.That(latency.GetProperty("p10Ms").GetDouble(), Is.Positive.And.LessThanOrEqualTo(median), variant);
            Assert.That(latency.GetProperty("p90Ms").GetDouble(), Is.GreaterThanOrEqualTo(median), variant);
        }

        double ratio = run.GetProperty("rewritten").GetProperty("medianMs").GetDouble() / run.GetProperty("original").GetProperty("medianMs").GetDouble();
        Assert.That(run.GetProperty("ratio").GetDouble(), Is.EqualTo(ratio).Within(1e-12).Percent, "ratio = rewritten / original");
    }

    [Test]
    public void WithoutRewrittenBothModelsAreTimedAtEachLengthAndTheJsonAgreesWithItself()
    {
        string json = Path.Combine(folder, "bench.json");
        var (exitCode, output, error) = Bench([Bert, "--seq", "4,8", "--json", json, .. Quick]);
        Assert.That(exitCode, Is.EqualTo(BenchCommand.Measured), output + error);
        using var document = JsonDocument.Parse(File.ReadAllText(json));
        var root = document.RootElement;
        int fused = FusedByTheRewriter(Bert);
        Assert.Multiple(() =>
        {
            Assert.That(error, Is.Empty);
            Assert.That(output, Does.Contain($"rewritten in memory: {fused} attention subgraph(s) fused"));
            Assert.That(output, Does.Contain("│ original ").And.Contain("│ rewritten "), "a table row per model");
            Assert.That(output, Does.Contain("median ms").And.Contain("p10 ms").And.Contain("p90 ms").And.Contain("ratio"));
            Assert.That(output, Does.EndWith($"wrote {json}{Environment.NewLine}"));
            Assert.That(Directory.GetFiles(folder), Is.EqualTo(new[] { json }), "no temporary file left");
            Assert.That(root.GetProperty("fusedAttentionBlocks").GetInt32(), Is.EqualTo(fused).And.Positive);
            Assert.That(root.GetProperty("runs").EnumerateArray().Select(r => r.GetProperty("sequenceLength").GetInt32()), Is.EqualTo(new[] { 4, 8 }));
            foreach (var run in root.GetProperty("runs").EnumerateArray())
            {
                AssertTimed(run, runs: 2);
            }
        });
    }

    [Test]
    public void TheOriginalsAttentionProbabilitiesAreSizedFromTheirShapeOnARun()
    {
        string json = Path.Combine(folder, "bench.json");
        var (exitCode, output, error) = Bench([TestModels.PathOf("gpt2-opset17.onnx"), "--seq", "16", "--batch", "3", "--json", json, .. Quick]);
        Assert.That(exitCode, Is.EqualTo(BenchCommand.Measured), output + error);
        using var document = JsonDocument.Parse(File.ReadAllText(json));
        var probabilities = document.RootElement.GetProperty("runs")[0].GetProperty("originalAttentionProbabilities");
        var shape = probabilities.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray();
        Assert.Multiple(() =>
        {
            Assert.That(probabilities.GetProperty("blocks").GetInt32(), Is.EqualTo(FusedByTheRewriter(TestModels.PathOf("gpt2-opset17.onnx"))));
            Assert.That(shape, Has.Length.EqualTo(4));
            Assert.That(shape[0], Is.EqualTo(3), "batch");
            Assert.That(shape[2..], Is.EqualTo(new long[] { 16, 16 }), "queries × keys");
            Assert.That(probabilities.GetProperty("elementType").GetString(), Is.EqualTo("Float"));
            Assert.That(probabilities.GetProperty("largestBytesPerBlock").GetInt64(), Is.EqualTo(shape.Aggregate(1L, (a, b) => a * b) * sizeof(float)));
            Assert.That(output, Does.Contain("none (fused, tiled)"));
        });
    }

    [Test]
    public void LeftPaddedInputsAreTimedWhenAskedAndSaidSo()
    {
        string json = Path.Combine(folder, "bench.json");
        var (exitCode, output, error) = Bench([TestModels.PathOf("gpt2-opset17.onnx"), "--padding", "start", "--seq", "8", "--batch", "3", "--json", json, .. Quick]);
        Assert.That(exitCode, Is.EqualTo(BenchCommand.Measured), output + error);
        using var document = JsonDocument.Parse(File.ReadAllText(json));
        var inputs = document.RootElement.GetProperty("runs")[0].GetProperty("inputs").EnumerateArray().Select(i => i.GetString()).ToArray();
        Assert.Multiple(() =>
        {
            Assert.That(output, Does.Contain("inputs     batch 3 (entry 0 unpadded, the others padded at the start)"));
            Assert.That(inputs, Has.Some.Contains("padded at the start"));
            Assert.That(inputs, Has.None.Contains("padded at the end"));
        });
    }

    [Test]
    public void ARewrittenFileIsTimedAsGivenAndItsFlashAttentionNodesCounted()
    {
        string rewritten = Path.Combine(folder, "bert-flash.onnx");
        var report = AttentionFuser.RewriteFile(Bert, rewritten);
        string json = Path.Combine(folder, "bench.json");
        var (exitCode, output, error) = Bench([Bert, rewritten, "--seq", "5", "--json", json, .. Quick]);
        Assert.That(exitCode, Is.EqualTo(BenchCommand.Measured), output + error);
        using var document = JsonDocument.Parse(File.ReadAllText(json));
        Assert.Multiple(() =>
        {
            Assert.That(output, Does.Contain($"rewritten  {rewritten}: {report.Fused} FlashAttention node(s)"));
            Assert.That(document.RootElement.GetProperty("rewritten").GetString(), Is.EqualTo(rewritten));
            Assert.That(document.RootElement.GetProperty("fusedAttentionBlocks").GetInt32(), Is.EqualTo(report.Fused));
            AssertTimed(document.RootElement.GetProperty("runs")[0], runs: 2);
        });
    }

    [Test]
    public void AModelThatFailsOnTheInputsExitsOneAndWritesNothing()
    {
        // Loads, but its Reshape to [3] cannot hold the generated inputs.
        var reshape = TestModels.Tiny(g =>
        {
            g.Initializer.Add(TestModels.Int64Tensor("shape", 3));
            g.Node.Add(TestModels.Node("Reshape", ["x", "shape"], ["y"]));
        }, ("y", GraphRewriter.Onnx.TensorProto.Types.DataType.Float, 1));
        var identity = TestModels.Tiny(g => g.Node.Add(TestModels.Node("Identity", ["x"], ["y"])), ("y", GraphRewriter.Onnx.TensorProto.Types.DataType.Float, 3));
        string original = Write("identity.onnx", Google.Protobuf.MessageExtensions.ToByteArray(identity));
        string rewritten = Write("reshape.onnx", Google.Protobuf.MessageExtensions.ToByteArray(reshape));
        var before = Directory.GetFiles(folder);
        var (exitCode, output, error) = Bench([original, rewritten, "--seq", "5", "--json", Path.Combine(folder, "bench.json"), .. Quick]);
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.EqualTo(BenchCommand.Failed));
            Assert.That(error, Does.StartWith($"error: '{rewritten}' fails on the generated inputs at sequence length 5"));
            Assert.That(output, Is.Empty);
            Assert.That(Directory.GetFiles(folder), Is.EquivalentTo(before), "nothing written");
        });
    }

    public static IEnumerable<TestCaseData> BadInputs()
    {
        yield return new TestCaseData("missing", "does not exist").SetName("BadInputExitsTwo(missing file)");
        yield return new TestCaseData("text", "not an ONNX model").SetName("BadInputExitsTwo(text file)");
        yield return new TestCaseData("rewritten-missing", "does not exist").SetName("BadInputExitsTwo(missing rewritten file)");
        yield return new TestCaseData("seq", "--seq must be an integer").SetName("BadInputExitsTwo(malformed --seq)");
        yield return new TestCaseData("iterations", "--iterations must be an integer ≥ 1").SetName("BadInputExitsTwo(zero --iterations)");
        yield return new TestCaseData("warmup", "--warmup must be an integer ≥ 0").SetName("BadInputExitsTwo(negative --warmup)");
        yield return new TestCaseData("budget", "--budget must be a positive number of seconds").SetName("BadInputExitsTwo(zero --budget)");
        yield return new TestCaseData("threads", "--threads must be an integer ≥ 0").SetName("BadInputExitsTwo(malformed --threads)");
        yield return new TestCaseData("provider", "--provider must be cpu, cuda or auto").SetName("BadInputExitsTwo(unknown provider)");
        yield return new TestCaseData("tf32", "--cuda-tf32 must be on, off or default").SetName("BadInputExitsTwo(unknown --cuda-tf32)");
        yield return new TestCaseData("json-folder", "is not a file in an existing folder").SetName("BadInputExitsTwo(--json in a missing folder)");
        yield return new TestCaseData("json-model", "would overwrite a model").SetName("BadInputExitsTwo(--json naming the model)");
        yield return new TestCaseData("padding", "--padding must be end or start").SetName("BadInputExitsTwo(unknown --padding)");
        yield return new TestCaseData("unknown", "unexpected argument").SetName("BadInputExitsTwo(extra argument)");
    }

    [TestCaseSource(nameof(BadInputs))]
    public void BadInputExitsTwo(string kind, string message)
    {
        string copy = Write("model.onnx", File.ReadAllBytes(Bert));
        string[] arguments = kind switch
        {
            "missing" => [Path.Combine(folder, "absent.onnx")],
            "text" => [Write("notes.onnx", "not a model"u8.ToArray())],
            "rewritten-missing" => [copy, Path.Combine(folder, "absent.onnx")],
            "seq" => [copy, "--seq", "7,x"],
            "iterations" => [copy, "--iterations", "0"],
            "warmup" => [copy, "--warmup", "-1"],
            "budget" => [copy, "--budget", "0"],
            "threads" => [copy, "--threads", "two"],
            "provider" => [copy, "--provider", "tpu"],
            "tf32" => [copy, "--cuda-tf32", "maybe"],
            "json-folder" => [copy, "--json", Path.Combine(folder, "absent", "bench.json")],
            "json-model" => [copy, "--json", copy],
            "padding" => [copy, "--padding", "left"],
            _ => [copy, copy, "extra"],
        };
        var before = Directory.GetFiles(folder).ToDictionary(f => f, File.GetLastWriteTimeUtc);
        var (exitCode, output, error) = Bench(arguments);
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.EqualTo(BenchCommand.BadInput));
            Assert.That(error, Does.StartWith("error: ").And.Contain(message));
            Assert.That(output, Is.Empty, "nothing measured, nothing printed");
            Assert.That(Directory.GetFiles(folder).ToDictionary(f => f, File.GetLastWriteTimeUtc), Is.EquivalentTo(before), "nothing written");
        });
    }
}
