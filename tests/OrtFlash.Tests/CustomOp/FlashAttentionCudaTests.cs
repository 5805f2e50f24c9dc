using Microsoft.ML.OnnxRuntime;
using OrtFlash.GraphRewriter;
using OrtFlash.Tests.Managed.Verification;
using OrtFlash.Verification;

namespace OrtFlash.Tests.CustomOp;

/// <summary>
/// The op on ONNX Runtime's CUDA provider against the double-precision reference. Needs the GPU runtime package
/// (build with -p:OrtGpu=true), a GPU and CUDA 13 libraries; elsewhere every test is reported as ignored.
/// </summary>
[TestFixture]
[Category("Gpu")]
public sealed class FlashAttentionCudaTests
{
    private static readonly ElementType[] AllTypes = [ElementType.Float32, ElementType.Float16, ElementType.BFloat16];

    private static OrtFlashSession CudaSession(byte[] model, Action<SessionOptions>? configure = null, bool attentionTf32 = false)
    {
        try
        {
            // TF32 off: the CUDA provider's default TF32 MatMuls around the op would differ from the CPU by more than
            // the comparison allows (the first GPU run: the original float32 models did, by 1.2-3.6x), whatever the op.
            return OrtFlashSession.Create(model, new OrtFlashSessionOptions
            {
                Provider = ExecutionProvider.Cuda, CudaTf32 = false, ConfigureSession = configure, CudaAttentionTf32 = attentionTf32,
            });
        }
        catch (Exception error) when (error is OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException)
        {
            Assert.Ignore($"no usable CUDA execution provider here: {error.Message}");
            throw;
        }
    }

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var type in AllTypes)
        {
            yield return new TestCaseData(CaseFactory.Make(1, [2, 8, 300, 64], [2, 8, 300, 64], [2, 8, 300, 64], type, bias: [2, 1, 1, 300])).SetName($"Hdim64_Bias_{type}");
            yield return new TestCaseData(CaseFactory.Make(2, [1, 8, 257, 128], [1, 2, 257, 128], [1, 2, 257, 128], type, causal: 1)).SetName($"Hdim128_Gqa_Causal_{type}");
            yield return new TestCaseData(CaseFactory.Make(3, [1, 4, 1, 128], [1, 4, 4099, 128], [1, 4, 4099, 128], type, causal: 2, keep: [1, 1, 1, 4099])).SetName($"Decode_{type}");
            yield return new TestCaseData(CaseFactory.Make(4, [2, 2, 33, 80], [2, 2, 47, 80], [2, 2, 47, 80], type, softcap: 5f, maskedRows: "nan", keep: [2, 1, 33, 47])).SetName($"Hdim80_Softcap_{type}");
            yield return new TestCaseData(CaseFactory.Make(5, [3, 17, 256], [3, 29, 256], [3, 29, 256], type, bias: [3, 17, 29])).SetName($"Rank3_Hdim256_{type}");
            yield return new TestCaseData(CaseFactory.Make(6, [1, 2, 40, 7], [1, 2, 33, 7], [1, 2, 33, 12], type, causal: 2)).SetName($"OddHeadDims_{type}");
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void CudaKernelMatchesReference(AttentionCase c)
    {
        using var session = CudaSession(OpModels.FusedModel(c));
        Assert.That(session.Provider, Is.EqualTo(ExecutionProvider.Cuda));
        var (actual, _) = OpRunner.RunSession(session.Session, c, c.Type);
        Tolerance.AssertClose(c, actual, ReferenceAttention.Compute(c));
    }

    // float32 prefill's kernel, chosen by the session's config entry: 0 the tiled SIMT kernel, or the tensor cores in
    // 3xTF32 (1: fragments split by every warp, 2, the default: K and V split once per block), within float32's
    // tolerance; 3 (one TF32 pass) within float16's.
    [TestCase("0")]
    [TestCase("1")]
    [TestCase("2")]
    [TestCase("3")] // one TF32 pass: float16's bound
    public void Float32KernelChosenBySessionMatchesReference(string variant)
    {
        var cases = new[]
        {
            CaseFactory.Make(11, [2, 8, 300, 64], [2, 8, 300, 64], [2, 8, 300, 64], ElementType.Float32, bias: [2, 1, 1, 300]),
            CaseFactory.Make(12, [1, 8, 257, 128], [1, 2, 257, 128], [1, 2, 257, 128], ElementType.Float32, causal: 2),
            CaseFactory.Make(13, [2, 2, 130, 96], [2, 2, 70, 96], [2, 2, 70, 64], ElementType.Float32, softcap: 5f, keep: [2, 1, 130, 70]),
        };
        foreach (var c in cases)
        {
            using var session = CudaSession(OpModels.FusedModel(c),
                                            options => options.AddSessionConfigEntry("ortflash.cuda.float32_tensor_cores", variant));
            var (actual, _) = OpRunner.RunSession(session.Session, c, c.Type);
            Tolerance.AssertClose(c, actual, ReferenceAttention.Compute(c), variant == "3" ? Tolerance.Tf32 : null);
        }
    }

    // OrtFlashSessionOptions.CudaAttentionTf32: the same one-pass kernel through the managed option.
    [Test]
    public void CudaAttentionTf32OptionMeetsTheTf32Bound()
    {
        var c = CaseFactory.Make(14, [2, 4, 200, 128], [2, 4, 200, 128], [2, 4, 200, 128], ElementType.Float32, bias: [2, 1, 1, 200]);
        using var session = CudaSession(OpModels.FusedModel(c), attentionTf32: true);
        var (actual, _) = OpRunner.RunSession(session.Session, c, c.Type);
        Tolerance.AssertClose(c, actual, ReferenceAttention.Compute(c), Tolerance.Tf32);
    }

    [TestCase("bert-opset17.onnx")]
    [TestCase("gpt2_past-opset17.onnx")]
    [TestCase("llama-opset17-fp16.onnx")]
    [TestCase("t5-opset17.onnx")]
    [TestCase("llama-opset17-fp16.onnx", true)] // causal = 2 and the float16 padding bias; padding at the end, no fully padded row
    public void RewrittenModelOnCudaMatchesOriginalOnCpu(string file, bool causalForPaddedRows = false)
    {
        var original = ModelSource.FromFile(TestModels.PathOf(file));
        var copy = original.Model.Clone();
        Assert.That(AttentionFuser.Rewrite(copy, new RewriteOptions { CausalForPaddedRows = causalForPaddedRows }).Fused, Is.GreaterThan(0));
        var rewritten = ModelSource.FromModel(copy, $"{file} (rewritten)");
        ComparisonReport report;
        try
        {
            report = ModelComparer.Compare(original, rewritten, new ComparisonOptions
            {
                SequenceLengths = [7, 33],
                ExpectedSession = new OrtFlashSessionOptions { Provider = ExecutionProvider.Cpu },
                // TF32 off for the graph around the op too (see CudaSession): the second GPU run found these
                // comparisons 1.5e-4 apart with the provider's default TF32 MatMuls.
                ActualSession = new OrtFlashSessionOptions { Provider = ExecutionProvider.Cuda, CudaTf32 = false },
            });
        }
        catch (NotSupportedException error)
        {
            Assert.Ignore($"no usable CUDA execution provider here: {error.Message}");
            throw;
        }

        Assert.That(report.Passed, Is.True, () => ComparisonReportWriter.ToText(report));
    }
}
