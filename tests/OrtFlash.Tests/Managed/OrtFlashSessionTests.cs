using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using OrtFlash.Tests.CustomOp;

namespace OrtFlash.Tests.Managed;

[TestFixture]
public sealed class OrtFlashSessionTests
{
    private static readonly AttentionCase Case = CaseFactory.Make(1, [1, 2, 9, 32], [1, 2, 9, 32], [1, 2, 9, 32]);

    // Runs the fused model of Case in the session and checks Y against the reference.
    private static void AssertComputesTheCase(OrtFlashSession session)
    {
        using var q = OrtValue.CreateTensorValueFromMemory(Case.Query, Case.QueryShape);
        using var k = OrtValue.CreateTensorValueFromMemory(Case.Key, Case.KeyShape);
        using var v = OrtValue.CreateTensorValueFromMemory(Case.Value, Case.ValueShape);
        using var runOptions = new RunOptions();
        using var outputs = session.Session.Run(runOptions, ["Q", "K", "V"], [q, k, v], ["Y"]);
        Tolerance.AssertClose(Case, outputs[0].GetTensorDataAsSpan<float>().ToArray(), ReferenceAttention.Compute(Case));
    }

    [Test]
    public void CpuSessionRunsTheOp()
    {
        using var session = OrtFlashSession.Create(OpModels.FusedModel(Case), new OrtFlashSessionOptions { Provider = ExecutionProvider.Cpu });
        Assert.That(session.Provider, Is.EqualTo(ExecutionProvider.Cpu));
        AssertComputesTheCase(session);
    }

    [Test]
    public void ConfigureSessionSeesTheFinishedOptionsAndItsSettingsTakeEffect()
    {
        var folder = Directory.CreateTempSubdirectory("ortflash-profile-");
        try
        {
            var calls = 0;
            var settings = new OrtFlashSessionOptions
            {
                Provider = ExecutionProvider.Cpu,
                IntraOpThreads = 1,
                ConfigureSession = options =>
                {
                    calls++;
                    Assert.That(options.IntraOpNumThreads, Is.EqualTo(1), "OrtFlash's own settings come first");
                    options.EnableProfiling = true;
                    options.ProfileOutputPathPrefix = Path.Combine(folder.FullName, "run");
                },
            };
            using var session = OrtFlashSession.Create(OpModels.FusedModel(Case), settings);
            Assert.That(calls, Is.EqualTo(1));
            AssertComputesTheCase(session);

            // The profile the hook asked for exists and names the op's node.
            var profile = session.Session.EndProfiling();
            Assert.That(File.ReadAllText(profile), Does.Contain("FlashAttention"));
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    [Test]
    public void AnExceptionFromConfigureSessionPropagates()
    {
        var settings = new OrtFlashSessionOptions
        {
            Provider = ExecutionProvider.Cpu,
            ConfigureSession = _ => throw new InvalidOperationException("refused by the hook"),
        };
        Assert.That(() => OrtFlashSession.Create(OpModels.FusedModel(Case), settings),
                    Throws.InvalidOperationException.With.Message.EqualTo("refused by the hook"));
    }

    [TestCase("0")]
    [TestCase("1")]
    [TestCase("2")]
    [TestCase("3")]
    public void Float32TensorCoreEntryIsAcceptedOnEveryProvider(string value)
    {
        // The CUDA kernels act on it; the CPU kernel only checks it, so that a misspelt entry fails everywhere.
        var settings = new OrtFlashSessionOptions
        {
            Provider = ExecutionProvider.Cpu,
            ConfigureSession = options => options.AddSessionConfigEntry("ortflash.cuda.float32_tensor_cores", value),
        };
        using var session = OrtFlashSession.Create(OpModels.FusedModel(Case), settings);
        AssertComputesTheCase(session);
    }

    [TestCase("ortflash.cuda.float32_tensor_cores", "4", "is '4': expected 0")]
    [TestCase("ortflash.cuda.float32_tensor_cores", "yes", "is 'yes': expected 0")]
    [TestCase("ortflash.cuda.float32_tensorcores", "1", "unknown session config entry 'ortflash.cuda.float32_tensorcores'")]
    public void BadOrtFlashConfigEntriesFailTheSessionWithTheirName(string key, string value, string message)
    {
        var settings = new OrtFlashSessionOptions
        {
            Provider = ExecutionProvider.Cpu,
            ConfigureSession = options => options.AddSessionConfigEntry(key, value),
        };
        Assert.That(() => OrtFlashSession.Create(OpModels.FusedModel(Case), settings),
                    Throws.InstanceOf<OnnxRuntimeException>().With.Message.Contains(message));
    }

    [Test]
    public void AutoPicksAProviderThatWorks()
    {
        using var session = OrtFlashSession.Create(OpModels.FusedModel(Case));
        Assert.That(session.Provider, Is.AnyOf(ExecutionProvider.Cpu, ExecutionProvider.Cuda));
        Assert.That(session.Session.OutputNames, Is.EqualTo(new[] { "Y" }));
    }

    // The op's one-TF32-pass choice is a session config entry the CPU kernel accepts and leaves alone (fp32 there).
    [Test]
    public void CudaAttentionTf32IsAcceptedOnTheCpu()
    {
        var settings = new OrtFlashSessionOptions { Provider = ExecutionProvider.Cpu, CudaAttentionTf32 = true };
        using var session = OrtFlashSession.Create(OpModels.FusedModel(Case), settings);
        AssertComputesTheCase(session);
    }

    // CudaTf32 goes to the CUDA provider's own options; where that provider cannot start, Auto still falls back to CPU.
    [TestCase(false)]
    [TestCase(true)]
    public void CudaTf32ChoiceLeavesAutoAProviderThatWorks(bool tf32)
    {
        using var session = OrtFlashSession.Create(OpModels.FusedModel(Case), new OrtFlashSessionOptions { CudaTf32 = tf32 });
        Assert.That(session.Provider, Is.AnyOf(ExecutionProvider.Cpu, ExecutionProvider.Cuda));
        AssertComputesTheCase(session);
    }

    [Test]
    public void ModelFilesAreRewrittenOnLoadAndComputeTheSame()
    {
        var path = Managed.Verification.TestModels.PathOf("bert-opset17.onnx");
        using var fused = OrtFlashSession.Create(path, new OrtFlashSessionOptions { Provider = ExecutionProvider.Cpu });
        using var plain = OrtFlashSession.Create(path, new OrtFlashSessionOptions { Provider = ExecutionProvider.Cpu, Rewrite = false });
        Assert.That(fused.Report, Is.Not.Null);
        Assert.That(fused.Report!.Fused, Is.EqualTo(2));
        Assert.That(plain.Report, Is.Null);

        long[] shape = [2, 9];
        var ids = Enumerable.Range(0, 18).Select(i => (long)((i * 7) % 100)).ToArray();
        var mask = Enumerable.Range(0, 18).Select(i => i >= 9 + 6 ? 0L : 1L).ToArray();  // entry 1: 3 padded keys
        float[] Run(OrtFlashSession session)
        {
            using var idsValue = OrtValue.CreateTensorValueFromMemory(ids, shape);
            using var maskValue = OrtValue.CreateTensorValueFromMemory(mask, shape);
            using var runOptions = new RunOptions();
            using var outputs = session.Session.Run(runOptions, ["input_ids", "attention_mask"], [idsValue, maskValue], session.Session.OutputNames);
            return outputs[0].GetTensorDataAsSpan<float>().ToArray();
        }

        var expected = Run(plain);
        var actual = Run(fused);
        Assert.That(actual, Has.Length.EqualTo(expected.Length));
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.That(actual[i], Is.EqualTo(expected[i]).Within(1e-4 + 1e-4 * Math.Abs(expected[i])), $"element {i}");
        }
    }

    [Test]
    public void ModelBytesAreRewrittenOnLoad()
    {
        var bytes = File.ReadAllBytes(Managed.Verification.TestModels.PathOf("vit-opset17.onnx"));
        using var session = OrtFlashSession.Create(bytes, new OrtFlashSessionOptions { Provider = ExecutionProvider.Cpu });
        Assert.That(session.Report!.Fused, Is.EqualTo(1), "the ViT model has one attention block");
        Assert.That(session.Report.Skipped, Is.Empty);
    }

    [Test]
    public void VerificationOpensTheOriginalAsGiven()
    {
        var source = OrtFlash.Verification.ModelSource.FromFile(Managed.Verification.TestModels.PathOf("bert-opset17.onnx"));
        using var session = source.OpenSession(new OrtFlashSessionOptions { Provider = ExecutionProvider.Cpu, Rewrite = true });
        Assert.That(session.Report, Is.Null, "the reference side of a comparison must be the unfused model");
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

        var rid = OrtFlashNative.CurrentRuntimeIdentifier!;
        Assert.That(OrtFlashNative.LibraryPath, Does.EndWith(Path.Combine("runtimes", rid, "native", OrtFlashNative.LibraryFileNameFor(rid))));
        Assert.That(File.Exists(OrtFlashNative.LibraryPath), Is.True);
    }

    [TestCase("LINUX", Architecture.X64, "linux-x64", "libortflash.so")]
    [TestCase("LINUX", Architecture.Arm64, "linux-arm64", "libortflash.so")]
    [TestCase("WINDOWS", Architecture.X64, "win-x64", "ortflash.dll")]
    [TestCase("LINUX", Architecture.X86, null, null)]
    [TestCase("LINUX", Architecture.Arm, null, null)]
    [TestCase("WINDOWS", Architecture.Arm64, null, null)]
    [TestCase("OSX", Architecture.Arm64, null, null)]
    [TestCase("OSX", Architecture.X64, null, null)]
    public void EachPlatformLoadsTheLibraryOfItsOwnRuntimeFolder(string platform, Architecture architecture, string? rid, string? fileName)
    {
        var found = OrtFlashNative.RuntimeIdentifierFor(OSPlatform.Create(platform), architecture);
        Assert.That(found, Is.EqualTo(rid));
        if (rid is not null)
        {
            Assert.That(OrtFlashNative.SupportedRuntimeIdentifiers, Does.Contain(rid));
            Assert.That(OrtFlashNative.LibraryFileNameFor(rid), Is.EqualTo(fileName));
        }
    }

    [Test]
    public void EverySupportedPlatformIsReachable()
    {
        var reachable = new[] { OSPlatform.Linux, OSPlatform.Windows, OSPlatform.OSX }
            .SelectMany(platform => Enum.GetValues<Architecture>().Select(architecture => OrtFlashNative.RuntimeIdentifierFor(platform, architecture)))
            .OfType<string>()
            .Distinct();
        Assert.That(reachable, Is.EquivalentTo(OrtFlashNative.SupportedRuntimeIdentifiers));
    }

    [Test]
    public void ElfMachineNamesTheCpuALibraryIsBuiltFor()
    {
        var expected = RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? 183 : 62;
        Assert.That(OrtFlashNative.ElfMachineOf(OrtFlashNative.LibraryPath), Is.EqualTo(expected));

        InTempFolder("ortflash-elf-", folder =>
        {
            var arm = Path.Combine(folder, "arm.so");
            File.WriteAllBytes(arm, ElfHeader(machine: 183));
            Assert.That(OrtFlashNative.ElfMachineOf(arm), Is.EqualTo(183));

            var text = Path.Combine(folder, "text.so");
            File.WriteAllText(text, "INPUT(libortflash.so.1)\n");  // a linker script is no ELF file
            Assert.That(OrtFlashNative.ElfMachineOf(text), Is.Null);

            var truncated = Path.Combine(folder, "truncated.so");
            File.WriteAllBytes(truncated, ElfHeader(machine: 183)[..19]);
            Assert.That(OrtFlashNative.ElfMachineOf(truncated), Is.Null);

            var elf32 = ElfHeader(machine: 40);
            elf32[4] = 1;  // ELFCLASS32
            var thirtyTwoBit = Path.Combine(folder, "elf32.so");
            File.WriteAllBytes(thirtyTwoBit, elf32);
            Assert.That(OrtFlashNative.ElfMachineOf(thirtyTwoBit), Is.Null);

            Assert.That(OrtFlashNative.ElfMachineOf(Path.Combine(folder, "missing.so")), Is.Null);
        });
    }

    [Test]
    public void ALibraryBuiltForAnotherCpuIsPassedOverAndNamed()
    {
        InTempFolder("ortflash-rid-", folder =>
        {
            // An x86-64 library where an ARM process looks first, and in the app folder itself.
            var armFolder = Directory.CreateDirectory(Path.Combine(folder, "runtimes", "linux-arm64", "native"));
            var x64InArmFolder = Path.Combine(armFolder.FullName, OrtFlashNative.LibraryFileName);
            File.WriteAllBytes(x64InArmFolder, ElfHeader(machine: 62));
            var x64InAppFolder = Path.Combine(folder, OrtFlashNative.LibraryFileName);
            File.WriteAllBytes(x64InAppFolder, ElfHeader(machine: 62));

            var error = Assert.Throws<FileNotFoundException>(
                () => OrtFlashNative.FindLibraryIn([folder], "linux-arm64", Architecture.Arm64));
            Assert.That(error!.Message, Does.Contain("for linux-arm64 was not found"));
            Assert.That(error.Message, Does.Contain($"Passed over, built for another CPU than this Arm64 process: {x64InArmFolder}, {x64InAppFolder}"));

            // The same folder serves an x64 process from the app folder (its runtimes/linux-x64 is absent) ...
            Assert.That(OrtFlashNative.FindLibraryIn([folder], "linux-x64", Architecture.X64), Is.EqualTo(x64InAppFolder));

            // ... and an ARM process once the ARM folder holds an ARM library.
            File.WriteAllBytes(x64InArmFolder, ElfHeader(machine: 183));
            Assert.That(OrtFlashNative.FindLibraryIn([folder], "linux-arm64", Architecture.Arm64), Is.EqualTo(x64InArmFolder));
        });
    }

    [Test]
    public void WindowsLooksForOrtflashDllInItsOwnRuntimeFolder()
    {
        InTempFolder("ortflash-win-", folder =>
        {
            // A Linux library where a Windows process would look is no Windows library: not found, and named so.
            var linuxCopy = Path.Combine(folder, OrtFlashNative.LibraryFileName);
            File.WriteAllBytes(linuxCopy, ElfHeader(machine: 62));
            var error = Assert.Throws<FileNotFoundException>(
                () => OrtFlashNative.FindLibraryIn([folder], "win-x64", Architecture.X64));
            Assert.That(error!.Message, Does.Contain("ortflash.dll for win-x64 was not found"));
            Assert.That(error.Message, Does.Contain(Path.Combine(folder, "runtimes", "win-x64", "native", "ortflash.dll")));

            var winFolder = Directory.CreateDirectory(Path.Combine(folder, "runtimes", "win-x64", "native"));
            var dll = Path.Combine(winFolder.FullName, OrtFlashNative.WindowsLibraryFileName);
            File.WriteAllBytes(dll, [(byte)'M', (byte)'Z']);
            Assert.That(OrtFlashNative.FindLibraryIn([folder], "win-x64", Architecture.X64), Is.EqualTo(dll));
        });
    }

    // Runs body on a new temporary folder's path, and deletes the folder after it.
    private static void InTempFolder(string prefix, Action<string> body)
    {
        var folder = Directory.CreateTempSubdirectory(prefix);
        try
        {
            body(folder.FullName);
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    // The first 64 bytes of a 64-bit little-endian ELF shared object for the given e_machine.
    private static byte[] ElfHeader(int machine)
    {
        var header = new byte[64];
        header[0] = 0x7F;
        header[1] = (byte)'E';
        header[2] = (byte)'L';
        header[3] = (byte)'F';
        header[4] = 2;  // ELFCLASS64
        header[5] = 1;  // little-endian
        header[6] = 1;  // EV_CURRENT
        header[16] = 3;  // ET_DYN
        header[18] = (byte)machine;
        header[19] = (byte)(machine >> 8);
        return header;
    }
}
