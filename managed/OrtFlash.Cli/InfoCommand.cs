using System.CommandLine;
using System.Reflection;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;

namespace OrtFlash.Cli;

/// <summary><c>ortflash info</c>: versions and the native library this installation uses.</summary>
internal static class InfoCommand
{
    public static Command Create()
    {
        var command = new Command("info", "Print versions, the native op library in use and the available execution providers.");
        command.SetAction(parsed => Run(parsed.InvocationConfiguration.Output));
        return command;
    }

    public static int Run(TextWriter output)
    {
        var version = typeof(OrtFlashNative).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "?";
        output.WriteLine($"OrtFlash          {version}");
        output.WriteLine($"ONNX Runtime      {OrtEnv.Instance().GetVersionString()}");
        output.WriteLine($".NET              {Environment.Version}");
        var architecture = RuntimeInformation.ProcessArchitecture;
        var rid = OrtFlashNative.CurrentRuntimeIdentifier;
        output.WriteLine($"platform          {rid ?? "unsupported"} ({architecture} process on {RuntimeInformation.OSDescription})");
        string library;
        try
        {
            library = OrtFlashNative.LibraryPath;
        }
        catch (Exception error) when (error is FileNotFoundException or PlatformNotSupportedException)
        {
            output.WriteLine($"native library    missing: {error.Message}");
            return 1;
        }

        output.WriteLine($"native library    {library}");
        output.WriteLine($"compiled-in EPs   {string.Join(", ", OrtEnv.Instance().GetAvailableProviders())}");
        using var options = new SessionOptions();
        options.RegisterCustomOpLibrary(library);
        output.WriteLine("op registration   ok (com.ortflash::FlashAttention)");
        return 0;
    }
}
