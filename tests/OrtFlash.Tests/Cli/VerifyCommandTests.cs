using System.CommandLine;
using OrtFlash.Cli;
using OrtFlash.Tests.Managed.Verification;
using OrtFlash.Verification;
using Google.Protobuf;

namespace OrtFlash.Tests.Cli;

[TestFixture]
public sealed class VerifyCommandTests
{
    private string folder = "";

    [SetUp]
    public void CreateFolder() => folder = Directory.CreateTempSubdirectory("ortflash-verify-").FullName;

    [TearDown]
    public void DeleteFolder() => Directory.Delete(folder, recursive: true);

    private static string Bert => TestModels.PathOf("bert-opset14.onnx");

    private static (int ExitCode, string Output, string Error) Verify(params string[] arguments)
    {
        var root = new RootCommand { VerifyCommand.Create() };
        using var output = new StringWriter();
        using var error = new StringWriter();
        int exitCode = root.Parse(["verify", .. arguments]).Invoke(new InvocationConfiguration { Output = output, Error = error });
        return (exitCode, output.ToString(), error.ToString());
    }

    private string Write(string name, byte[] bytes)
    {
        string path = Path.Combine(folder, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    [Test]
    public void WithoutRewrittenTheOriginalIsRewrittenInMemoryAndSaysSo()
    {
        var (exitCode, output, error) = Verify(Bert, "--seq", "5");
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.EqualTo(VerifyCommand.Match));
            Assert.That(output, Does.Contain("rewritten in memory: 2 attention subgraph(s) fused"));
            Assert.That(output, Does.Contain("PASS: every output matches at sequence lengths 5"));
            Assert.That(error, Is.Empty);
        });
    }

    [Test]
    public void AMatchingRewrittenFileExitsZero()
    {
        string copy = Write("copy.onnx", File.ReadAllBytes(Bert));
        var (exitCode, output, _) = Verify(Bert, copy, "--seq", "4,6", "--provider", "cpu", "--rtol", "1e-5", "--atol", "1e-6");
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.EqualTo(VerifyCommand.Match));
            Assert.That(output, Does.Contain($"rewritten  {copy}"));
            Assert.That(output, Does.Contain("rtol 1e-5, atol 1e-6"));
            Assert.That(output, Does.Contain("sequence lengths 4, 6"));
        });
    }

    // --cuda-tf32 reaches the CUDA provider's options only; on the CPU provider every value is accepted and changes nothing.
    [TestCase("on")]
    [TestCase("off")]
    [TestCase("default")]
    public void CudaTf32ChoiceIsAcceptedOnTheCpu(string value)
    {
        var (exitCode, output, _) = Verify(Bert, "--seq", "5", "--provider", "cpu", "--cuda-tf32", value);
        Assert.That(exitCode, Is.EqualTo(VerifyCommand.Match), output);
    }

    // --attention-tf32 is the op's session config entry: the CPU kernel accepts it and stays fp32, so the rewrite still
    // matches at float32's tolerance there.
    [Test]
    public void AttentionTf32IsAcceptedOnTheCpu()
    {
        var (exitCode, output, _) = Verify(Bert, "--seq", "5", "--provider", "cpu", "--attention-tf32");
        Assert.That(exitCode, Is.EqualTo(VerifyCommand.Match), output);
    }

    [Test]
    public void AMismatchExitsOneAndPrintsTheLargestDifferences()
    {
        var perturbed = TestModels.WithPerturbedWeights(ModelSource.FromFile(Bert).Model, 0.01);
        string path = Write("perturbed.onnx", perturbed.ToByteArray());
        var (exitCode, output, error) = Verify(Bert, path, "--seq", "5");
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.EqualTo(VerifyCommand.Mismatch));
            Assert.That(output, Does.Contain("MISMATCH"));
            Assert.That(output, Does.Contain("largest differences:"));
            Assert.That(output, Does.Contain("FAIL: 1 of 1 comparison does not match"));
            Assert.That(error, Is.Empty);
        });
    }

    [Test]
    public void CudaIsUsedOrRefusedWithAReasonNeverACrash()
    {
        var (exitCode, output, error) = Verify(Bert, "--seq", "5", "--provider", "cuda");
        if (exitCode == VerifyCommand.Match)
        {
            Assert.That(output, Does.Contain("providers  cuda (expected), cuda (actual)"));
        }
        else
        {
            Assert.That(exitCode, Is.EqualTo(VerifyCommand.BadInput));
            Assert.That(error, Does.StartWith("error: The Cuda execution provider cannot be used here"));
        }
    }

    public static IEnumerable<TestCaseData> BadInputs()
    {
        yield return new TestCaseData("missing", "does not exist").SetName("BadInputExitsTwo(missing file)");
        yield return new TestCaseData("text", "not an ONNX model").SetName("BadInputExitsTwo(text file)");
        yield return new TestCaseData("truncated", "truncated").SetName("BadInputExitsTwo(truncated model)");
        yield return new TestCaseData("rewritten-missing", "does not exist").SetName("BadInputExitsTwo(missing rewritten file)");
        yield return new TestCaseData("seq", "--seq must be an integer").SetName("BadInputExitsTwo(malformed --seq)");
        yield return new TestCaseData("provider", "--provider must be cpu, cuda or auto").SetName("BadInputExitsTwo(unknown provider)");
        yield return new TestCaseData("rtol", "--rtol must be a non-negative number").SetName("BadInputExitsTwo(negative --rtol)");
        yield return new TestCaseData("threads", "--threads must be an integer ≥ 0").SetName("BadInputExitsTwo(malformed --threads)");
        yield return new TestCaseData("dim", "--dim must be NAME=SIZE").SetName("BadInputExitsTwo(malformed --dim)");
        yield return new TestCaseData("heads", "--dim batch_x_heads=").SetName("BadInputExitsTwo(a dimension counting heads without --dim)");
        yield return new TestCaseData("padding", "--padding must be end or start").SetName("BadInputExitsTwo(unknown --padding)");
        yield return new TestCaseData("padding-causal", "--causal-padded-rows and --padding start do not go together")
            .SetName("BadInputExitsTwo(--causal-padded-rows with left padding)");
        yield return new TestCaseData("unknown", "unexpected argument").SetName("BadInputExitsTwo(extra argument)");
    }

    [TestCaseSource(nameof(BadInputs))]
    public void BadInputExitsTwo(string kind, string message)
    {
        var bytes = File.ReadAllBytes(Bert);
        string[] arguments = kind switch
        {
            "missing" => [Path.Combine(folder, "absent.onnx")],
            "text" => [Write("notes.onnx", "not a model"u8.ToArray())],
            "truncated" => [Write("truncated.onnx", bytes[..(bytes.Length / 3)])],
            "rewritten-missing" => [Bert, Path.Combine(folder, "absent.onnx")],
            "seq" => [Bert, "--seq", "7,x"],
            "provider" => [Bert, "--provider", "tpu"],
            "rtol" => [Bert, "--rtol", "-1"],
            "threads" => [Bert, "--threads", "-1"],
            "dim" => [Bert, "--dim", "height"],
            "heads" => [TestModels.PathOf("bloom_past-opset17.onnx")],
            "padding" => [Bert, "--padding", "middle"],
            "padding-causal" => [TestModels.PathOf("gpt2-opset17.onnx"), "--padding", "start", "--causal-padded-rows"],
            _ => [Bert, Bert, "extra"],
        };
        var before = Directory.GetFiles(folder);
        var (exitCode, output, error) = Verify(arguments);
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.EqualTo(VerifyCommand.BadInput));
            Assert.That(error, Does.StartWith("error: ").And.Contain(message));
            Assert.That(output, Is.Empty, "nothing compared, nothing printed");
            Assert.That(Directory.GetFiles(folder), Is.EquivalentTo(before), "nothing written");
        });
    }

    [Test]
    public void DimGivesTheSizeOfBloomsCachedBatchTimesHeads()
    {
        var (exitCode, output, error) = Verify(TestModels.PathOf("bloom_past-opset17.onnx"), "--seq", "1,5", "--batch", "3", "--dim", "batch_x_heads=12");
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.EqualTo(VerifyCommand.Match), output + error);
            Assert.That(output, Does.Contain("rewritten in memory: 2 attention subgraph(s) fused"));
            Assert.That(output, Does.Contain("PASS"));
        });
    }

    [TestCase("gpt2-opset17.onnx")]
    [TestCase("gpt2_past-opset17.onnx")]
    public void CausalPaddedRowsComparesRightPaddedInputsAndSaysSo(string file)
    {
        var (exitCode, output, error) = Verify(TestModels.PathOf(file), "--causal-padded-rows", "--seq", "1,5,12", "--batch", "3");
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.EqualTo(VerifyCommand.Match), output + error);
            Assert.That(output, Does.Contain("rewritten in memory: 2 attention subgraph(s) fused"));
            Assert.That(output, Does.Contain("padding generated at the end only, so no row is fully padded"));
            Assert.That(output, Does.Contain("padded at the end").And.Not.Contain("padded at the start"));
            Assert.That(output, Does.Contain("PASS"));
        });
    }

    // Batched generation pads prompts on the left: a padded entry's first rows see only padding (a softmax over the
    // mask's fill), which the exact rewrite keeps as the original computes it, past the cache included.
    [TestCase("llama-opset17.onnx")]
    [TestCase("qwen2-opset17-fp16.onnx")]
    public void PaddingStartComparesLeftPaddedInputsAndSaysSo(string file)
    {
        var (exitCode, output, error) = Verify(TestModels.PathOf(file), "--padding", "start", "--seq", "5,40", "--batch", "3");
        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.EqualTo(VerifyCommand.Match), output + error);
            Assert.That(output, Does.Contain("padded at the start").And.Not.Contain("padded at the end"));
            Assert.That(output, Does.Contain("PASS"));
        });
    }
}
