using System.CommandLine;
using System.Text.Json;
using OrtFlash.Cli;
using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.Tests.Managed.Verification;

namespace OrtFlash.Tests.Cli;

[TestFixture]
public sealed class RewriteCommandTests
{
    private string folder = "";

    [SetUp]
    public void CreateFolder() => folder = Directory.CreateTempSubdirectory("ortflash-rewrite-").FullName;

    [TearDown]
    public void DeleteFolder() => Directory.Delete(folder, recursive: true);

    private static (int ExitCode, string Output, string Error) Run(params string[] arguments)
    {
        var root = new RootCommand { RewriteCommand.Create(), RewriteCommand.CreateInspect(), VerifyCommand.Create() };
        using var output = new StringWriter();
        using var error = new StringWriter();
        int exitCode = root.Parse(arguments).Invoke(new InvocationConfiguration { Output = output, Error = error });
        return (exitCode, output.ToString(), error.ToString());
    }

    [Test]
    public void RewriteWritesTheFusedModelAndAJsonReport()
    {
        string input = TestModels.PathOf("bert-opset17.onnx");
        byte[] before = File.ReadAllBytes(input);
        string output = Path.Combine(folder, "bert-flash.onnx");
        string report = Path.Combine(folder, "report.json");

        var (exitCode, text, error) = Run("rewrite", input, output, "--report", report);

        Assert.That(exitCode, Is.EqualTo(0), error);
        Assert.That(File.ReadAllBytes(input), Is.EqualTo(before), "the input is never modified");
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(output));
        int fused = model.Graph.Node.Count(n => n.OpType == "FlashAttention" && n.Domain == "com.ortflash");
        Assert.That(fused, Is.EqualTo(2), "bert has two attention blocks");
        Assert.That(model.OpsetImport.Any(o => o.Domain == "com.ortflash" && o.Version == 1), Is.True);
        using var json = JsonDocument.Parse(File.ReadAllText(report));
        Assert.That(json.RootElement.GetProperty("fused").GetInt32(), Is.EqualTo(2));
        Assert.That(json.RootElement.GetProperty("skipped").GetArrayLength(), Is.EqualTo(0));
        Assert.That(text, Does.Contain("Fused 2 attention subgraph(s)"));
        Assert.That(Directory.GetFiles(folder).Select(Path.GetFileName), Is.EquivalentTo(new[] { "bert-flash.onnx", "report.json" }),
            "no temporary files are left behind");
    }

    [Test]
    public void RewrittenModelPassesVerify()
    {
        string input = TestModels.PathOf("gpt2-opset17.onnx");
        string output = Path.Combine(folder, "gpt2-flash.onnx");
        Assert.That(Run("rewrite", input, output).ExitCode, Is.EqualTo(0));
        var (exitCode, text, error) = Run("verify", input, output, "--seq", "5,12");
        Assert.That(exitCode, Is.EqualTo(VerifyCommand.Match), text + error);
    }

    [Test]
    public void VerifyWithoutRewrittenRewritesInMemory()
    {
        var (exitCode, text, error) = Run("verify", TestModels.PathOf("bert-opset14.onnx"), "--seq", "6");
        Assert.That(exitCode, Is.EqualTo(VerifyCommand.Match), text + error);
        Assert.That(text, Does.Contain("rewritten in memory: 2 attention subgraph(s) fused"));
    }

    [Test]
    public void InspectListsRefusalsWithReasonsAndWritesNothing()
    {
        var (exitCode, text, error) = Run("inspect", TestModels.PathOf("mha_weights-opset17.onnx"));
        Assert.That(exitCode, Is.EqualTo(0), error);
        Assert.That(text, Does.Contain("Fused 0 attention subgraph(s)"));
        Assert.That(text, Does.Contain("skipped"));
    }

    [Test]
    public void CorruptInputFailsWithExitCodeTwoAndWritesNothing()
    {
        string input = Path.Combine(folder, "corrupt.onnx");
        File.WriteAllBytes(input, File.ReadAllBytes(TestModels.PathOf("bert-opset17.onnx")).Take(1000).ToArray());
        string output = Path.Combine(folder, "out.onnx");
        var (exitCode, _, error) = Run("rewrite", input, output);
        Assert.That(exitCode, Is.EqualTo(2));
        Assert.That(error, Does.StartWith("error: "));
        Assert.That(File.Exists(output), Is.False);
    }

    [Test]
    public void ReportMayNotOverwriteTheInput()
    {
        string input = Path.Combine(folder, "model.onnx");
        File.Copy(TestModels.PathOf("vit-opset17.onnx"), input);
        byte[] before = File.ReadAllBytes(input);
        var (exitCode, _, error) = Run("rewrite", input, Path.Combine(folder, "out.onnx"), "--report", input);
        Assert.That(exitCode, Is.EqualTo(2));
        Assert.That(error, Does.Contain("would overwrite the input model"));
        Assert.That(File.ReadAllBytes(input), Is.EqualTo(before));
    }

    [Test]
    public void CausalPaddedRowsSetsTheCausalAttributeAndReportsTheNote()
    {
        string input = TestModels.PathOf("gpt2_past-opset17.onnx");
        string output = Path.Combine(folder, "gpt2_past-flash.onnx");
        string report = Path.Combine(folder, "report.json");

        var (exitCode, text, error) = Run("rewrite", input, output, "--report", report, "--causal-padded-rows");

        Assert.That(exitCode, Is.EqualTo(0), error);
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(output));
        var flash = model.Graph.Node.Where(n => n.OpType == "FlashAttention").ToList();
        using var json = JsonDocument.Parse(File.ReadAllText(report));
        Assert.Multiple(() =>
        {
            Assert.That(text, Does.Contain("AdditiveBias+Causal").And.Contain("LowerRight"));
            Assert.That(flash, Has.Count.EqualTo(2));
            Assert.That(flash.Select(n => n.Attribute.Single(a => a.Name == "causal").I), Is.All.EqualTo(2));
            Assert.That(json.RootElement.GetProperty("fusions").EnumerateArray().Select(f => f.GetProperty("notes").ToString()),
                Is.All.Contains("rows fully masked by padding may differ"));
        });
    }

    [Test]
    public void InspectWithAndWithoutCausalPaddedRows()
    {
        string input = TestModels.PathOf("gpt2-opset17.onnx");
        var (exactCode, exact, _) = Run("inspect", input, "--json");
        var (optedCode, opted, error) = Run("inspect", input, "--json", "--causal-padded-rows");

        Assert.Multiple(() =>
        {
            Assert.That(exactCode, Is.EqualTo(0));
            Assert.That(optedCode, Is.EqualTo(0), error);
            Assert.That(exact, Does.Contain("kept as a mask input").And.Not.Contain("fully masked by padding"));
            Assert.That(opted, Does.Contain("rows fully masked by padding may differ").And.Contain("\"causal\": \"UpperLeft\""));
        });
    }

    [Test]
    public void ExactIntegerMasksRefusesWhatHoldsOnlyForMasksOfZeroAndOne()
    {
        // GPT-2: Where(causal, s, finfo.min) + (1 − m)·finfo.min of an int64 m; with m = 2 the two would cancel.
        string input = TestModels.PathOf("gpt2-opset17.onnx");
        var (defaultCode, byDefault, _) = Run("inspect", input, "--json");
        var (exactCode, exact, error) = Run("inspect", input, "--json", "--exact-integer-masks");
        using var defaultJson = JsonDocument.Parse(byDefault);
        using var exactJson = JsonDocument.Parse(exact);

        Assert.Multiple(() =>
        {
            Assert.That(defaultCode, Is.EqualTo(0));
            Assert.That(exactCode, Is.EqualTo(0), error);
            Assert.That(defaultJson.RootElement.GetProperty("fused").GetInt32(), Is.EqualTo(2));
            Assert.That(byDefault, Does.Contain("--exact-integer-masks refuses instead"));
            Assert.That(exactJson.RootElement.GetProperty("fused").GetInt32(), Is.EqualTo(0));
            Assert.That(exactJson.RootElement.GetProperty("skipped").EnumerateArray().Select(s => s.GetProperty("reason").GetString()).ToList(),
                Has.Count.EqualTo(2).And.All.Contains("may hold positive absorbing values"));
        });
    }
}
