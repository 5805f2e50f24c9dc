using Microsoft.ML.OnnxRuntime;
using OrtFlash.Tests.CustomOp;

namespace OrtFlash.Tests.Managed;

[TestFixture]
public sealed class OrtFlashSessionTests
{
    private static readonly AttentionCase Case = CaseFactory.Make(1, [1, 2, 9, 32], [1, 2, 9, 32], [1, 2, 9, 32]);

    [Test]
    public void CpuSessionRunsTheOp()
    {
        using var session = OrtFlashSession.Create(OpModels.FusedModel(Case), new OrtFlashSessionOptions { Provider = ExecutionProvider.Cpu });
        Assert.That(session.Provider, Is.EqualTo(ExecutionProvider.Cpu));
        using var q = OrtValue.CreateTensorValueFromMemory(Case.Query, Case.QueryShape);
        using var k = OrtValue.CreateTensorValueFromMemory(Case.Key, Case.KeyShape);
        using var v = OrtValue.CreateTensorValueFromMemory(Case.Value, Case.ValueShape);
        using var runOptions = new RunOptions();
        using var outputs = session.Session.Run(runOptions, ["Q", "K", "V"], [q, k, v], ["Y"]);
        Tolerance.AssertClose(Case, outputs[0].GetTensorDataAsSpan<float>().ToArray(), ReferenceAttention.Compute(Case));
    }

    [Test]
    public void AutoPicksAProviderThatWorks()
    {
        using var session = OrtFlashSession.Create(OpModels.FusedModel(Case));
        Assert.That(session.Provider, Is.AnyOf(ExecutionProvider.Cpu, ExecutionProvider.Cuda));
        Assert.That(session.Session.OutputNames, Is.EqualTo(new[] { "Y" }));
    }

    [Test]
    public void MissingModelFileIsNamed()
    {
        var path = Path.Combine(Path.GetTempPath(), "ortflash-no-such-model.onnx");
        var error = Assert.Throws<FileNotFoundException>(() => OrtFlashSession.Create(path));
        Assert.That(error!.Message, Does.Contain(path));
    }

    [Test]
    public void LibraryOverrideMustExist()
    {
        var previous = Environment.GetEnvironmentVariable(OrtFlashNative.LibraryPathVariable);
        try
        {
            Environment.SetEnvironmentVariable(OrtFlashNative.LibraryPathVariable, "/nonexistent/libortflash.so");
            var error = Assert.Throws<FileNotFoundException>(() => _ = OrtFlashNative.LibraryPath);
            Assert.That(error!.Message, Does.Contain("/nonexistent/libortflash.so"));
        }
        finally
        {
            Environment.SetEnvironmentVariable(OrtFlashNative.LibraryPathVariable, previous);
        }
    }

    [Test]
    public void BundledLibraryIsFoundBesideTheAssemblies()
    {
        if (Environment.GetEnvironmentVariable(OrtFlashNative.LibraryPathVariable) is { Length: > 0 })
        {
            Assert.Ignore($"{OrtFlashNative.LibraryPathVariable} overrides the bundled library in this run");
        }

        Assert.That(OrtFlashNative.LibraryPath, Does.EndWith(Path.Combine("runtimes", "linux-x64", "native", "libortflash.so")));
        Assert.That(File.Exists(OrtFlashNative.LibraryPath), Is.True);
    }
}
