using System.Text.Json;
using OrtFlash.GraphRewriter;
using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Io;
using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.GraphRewriter.Rules;
using OrtFlash.Tests.Managed.Verification;
using OrtFlash.Tests.Rewriter.Support;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.Tests.Rewriter;

/// <summary>
/// Every model in models/, rewritten (exactly, and with <see cref="RewriteOptions.CausalForPaddedRows"/>), against
/// what the PyTorch module itself computed on the padded batch in models/reference (independent of ONNX Runtime and
/// of the original graph). The batch has no fully padded row, so the option must match too.
/// </summary>
[TestFixture]
public sealed class PyTorchReferenceTests
{
    /// <summary>max |diff| / max |reference| for float32 files; float16 files run the module's float32 reference batch in float16.</summary>
    private static double ToleranceFor(string dtype) => dtype == "float16" ? 2e-3 : 1e-4;

    public static IEnumerable<TestCaseData> Models()
    {
        using var manifest = JsonDocument.Parse(File.ReadAllText(TestModels.PathOf("manifest.json")));
        foreach (var entry in manifest.RootElement.GetProperty("models").EnumerateArray())
        {
            var file = entry.GetProperty("file").GetString()!;
            yield return new TestCaseData(file, entry.GetProperty("family").GetString()!, entry.GetProperty("dtype").GetString()!).SetArgDisplayNames(file);
        }
    }

    /// <summary>
    /// The causal attribute families get under the option from a mask that also holds their padding: Llama's ScatterND
    /// mask, and HF's older <c>_prepare_4d_causal_attention_mask</c> (BLOOM, Falcon). Mistral's holds its sliding window
    /// too and stays the exact bias.
    /// </summary>
    private static readonly Dictionary<string, CausalAlignment> OptedCausal = new()
    {
        ["llama"] = CausalAlignment.LowerRight,
        ["falcon"] = CausalAlignment.LowerRight,
        ["bloom_past"] = CausalAlignment.LowerRight,
        ["bloom"] = CausalAlignment.UpperLeft,
        ["mistral"] = CausalAlignment.None,
    };

    [TestCaseSource(nameof(Models))]
    public void RewrittenModelsMatchPyTorch(string file, string family, string dtype)
    {
        Assume.That(OrtRunner.OpLibraryPath, Is.Not.Null, "libortflash.so not built");
        var original = OnnxModelFile.Read(TestModels.PathOf(file));
        var folder = Path.Combine(TestModels.Directory, "reference", family, "test_data_set_0");
        var inputs = original.Graph.Input.Where(i => original.Graph.Initializer.All(t => t.Name != i.Name))
            .Select((input, i) => (input.Name, Tensor: As((DataType)input.Type.TensorType.ElemType, Read(Path.Combine(folder, $"input_{i}.pb")))))
            .ToDictionary(p => p.Name, p => p.Tensor);
        var expected = original.Graph.Output.Select((output, i) => (output.Name, Tensor: Read(Path.Combine(folder, $"output_{i}.pb")))).ToList();

        var exact = original.Clone();
        var opted = original.Clone();
        var exactReport = AttentionFuser.Rewrite(exact);
        var optedReport = AttentionFuser.Rewrite(opted, new RewriteOptions { CausalForPaddedRows = true });
        var runs = new Dictionary<string, Dictionary<string, TestTensor>>
        {
            ["original"] = OrtRunner.Run(original, inputs),
            ["rewritten"] = OrtRunner.Run(exact, inputs, withOpLibrary: true),
            ["rewritten (causal-padded-rows)"] = OrtRunner.Run(opted, inputs, withOpLibrary: true),
        };

        Assert.Multiple(() =>
        {
            Assert.That(exactReport.Fused + exactReport.Skipped.Count, Is.GreaterThan(0), "no attention found");
            if (OptedCausal.TryGetValue(family, out var alignment))
            {
                // The left-padded batch runs the option's split of the family's mask (Llama's float16 −65504 fill included).
                Assert.That(optedReport.Fusions.Select(f => f.Causal), Is.All.EqualTo(alignment), "causal-padded-rows");
            }

            foreach (var (run, outputs) in runs)
            {
                foreach (var (name, reference) in expected)
                {
                    var actual = outputs[name];
                    Assert.That(actual.Shape, Is.EqualTo(reference.Shape), $"{run} {name} shape");
                    var scale = reference.Data.Max(MathF.Abs);
                    var difference = reference.Data.Zip(actual.Data).Max(p => Math.Abs(p.First - p.Second));
                    Assert.That(difference / scale, Is.LessThanOrEqualTo(ToleranceFor(dtype)), $"{run} {name}: max |diff| {difference:g3}, max |ref| {scale:g3}");
                }
            }
        });
    }

    /// <summary>The reference tensor as the model's input type (float32 values rounded to float16 for the float16 files).</summary>
    private static TestTensor As(DataType type, TestTensor tensor) =>
        type == DataType.Float16 && tensor.Type == DataType.Float
            ? new TestTensor(DataType.Float16, tensor.Shape, tensor.Data.Select(f => (float)(Half)f).ToArray())
            : tensor;

    private static TestTensor Read(string path)
    {
        var proto = TensorProto.Parser.ParseFrom(File.ReadAllBytes(path));
        var tensor = ConstantTensor.FromProto(proto) ?? throw new InvalidDataException($"{path}: unreadable tensor");
        return new TestTensor((DataType)proto.DataType, [.. proto.Dims], tensor.Data.Select(d => (float)d).ToArray());
    }
}
