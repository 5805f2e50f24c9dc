using System.CommandLine;
using System.Runtime.InteropServices;
using OrtFlash.Cli;

namespace OrtFlash.Tests.Cli;

/// <summary><c>ortflash info</c>: what it says about this installation.</summary>
[TestFixture]
public sealed class InfoCommandTests
{
    private static (int ExitCode, string Output) Info()
    {
        var root = new RootCommand { InfoCommand.Create() };
        using var output = new StringWriter();
        using var error = new StringWriter();
        int exitCode = root.Parse(["info"]).Invoke(new InvocationConfiguration { Output = output, Error = error });
        return (exitCode, output.ToString());
    }

    [Test]
    public void NamesThePlatformTheLibraryItLoadsAndThatTheOpRegisters()
    {
        var (exitCode, output) = Info();
        Assert.That(exitCode, Is.EqualTo(0), output);
        var rid = RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? "linux-arm64" : "linux-x64";
        Assert.That(output, Does.Contain($"platform          {rid} ({RuntimeInformation.ProcessArchitecture} process on "));
        Assert.That(output, Does.Contain($"native library    {OrtFlashNative.LibraryPath}"));
        Assert.That(output, Does.Contain("op registration   ok (com.ortflash::FlashAttention)"));
    }

    [Test]
    public void AMissingLibraryIsReportedWithExitCodeOne()
    {
        var previous = Environment.GetEnvironmentVariable(OrtFlashNative.LibraryPathVariable);
        try
        {
            Environment.SetEnvironmentVariable(OrtFlashNative.LibraryPathVariable, "/nonexistent/libortflash.so");
            var (exitCode, output) = Info();
            Assert.That(exitCode, Is.EqualTo(1));
            Assert.That(output, Does.Contain("native library    missing: ").And.Contain("/nonexistent/libortflash.so"));
            Assert.That(output, Does.Not.Contain("op registration"));
        }
        finally
        {
            Environment.SetEnvironmentVariable(OrtFlashNative.LibraryPathVariable, previous);
        }
    }
}
