using System.Reflection;
using System.Runtime.InteropServices;

namespace OrtFlash;

/// <summary>
/// Finds the native op library (<c>libortflash.so</c>) that registers <c>com.ortflash::FlashAttention</c>
/// with ONNX Runtime.
/// </summary>
public static class OrtFlashNative
{
    /// <summary>File name of the native library on Linux.</summary>
    public const string LibraryFileName = "libortflash.so";

    /// <summary>Environment variable that, when set, names the library file to use instead of the bundled one.</summary>
    public const string LibraryPathVariable = "ORTFLASH_LIBRARY";

    /// <summary>The platforms the package ships the native library for, as runtime identifiers.</summary>
    public static IReadOnlyList<string> SupportedRuntimeIdentifiers { get; } = ["linux-x64", "linux-arm64"];

    /// <summary>
    /// Absolute path of the native library: <c>$ORTFLASH_LIBRARY</c> when set, else the copy shipped beside the
    /// application for this process's platform (<c>runtimes/linux-x64/native/</c> or
    /// <c>runtimes/linux-arm64/native/</c>, or the application folder itself).
    /// </summary>
    /// <exception cref="FileNotFoundException">No library was found; the message lists every place searched.</exception>
    /// <exception cref="PlatformNotSupportedException">The process runs on a platform the package has no library
    /// for (and <c>$ORTFLASH_LIBRARY</c> is not set).</exception>
    public static string LibraryPath => FindLibrary();

    /// <summary>
    /// The runtime identifier whose library a process on this operating system and architecture loads, or null
    /// where the package ships none.
    /// </summary>
    /// <param name="isLinux">Whether the operating system is Linux.</param>
    /// <param name="architecture">The process's architecture.</param>
    public static string? RuntimeIdentifierFor(bool isLinux, Architecture architecture) =>
        !isLinux ? null : architecture switch
        {
            Architecture.X64 => "linux-x64",
            Architecture.Arm64 => "linux-arm64",
            _ => null,
        };

    /// <summary>
    /// The ELF machine (<c>e_machine</c>) a library file is built for: 62 for x86-64, 183 for 64-bit ARM; null when
    /// the file is not a 64-bit little-endian ELF file or cannot be read.
    /// </summary>
    /// <param name="path">The file.</param>
    public static int? ElfMachineOf(string path)
    {
        Span<byte> header = stackalloc byte[20];
        try
        {
            using var stream = File.OpenRead(path);
            if (stream.ReadAtLeast(header, header.Length, throwOnEndOfStream: false) < header.Length)
            {
                return null;
            }
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }

        // "\x7FELF", class 2 (64-bit), data 1 (little-endian); e_machine is the 16-bit field at offset 18.
        if (header[0] != 0x7F || header[1] != (byte)'E' || header[2] != (byte)'L' || header[3] != (byte)'F' ||
            header[4] != 2 || header[5] != 1)
        {
            return null;
        }

        return header[18] | (header[19] << 8);
    }

    private static int? ElfMachineFor(Architecture architecture) => architecture switch
    {
        Architecture.X64 => 62,
        Architecture.Arm64 => 183,
        _ => null,
    };

    private static string FindLibrary()
    {
        var overridePath = Environment.GetEnvironmentVariable(LibraryPathVariable);
        if (!string.IsNullOrEmpty(overridePath))
        {
            var full = Path.GetFullPath(overridePath);
            return File.Exists(full)
                ? full
                : throw new FileNotFoundException($"{LibraryPathVariable} names '{full}', which does not exist.", full);
        }

        var architecture = RuntimeInformation.ProcessArchitecture;
        var rid = RuntimeIdentifierFor(OperatingSystem.IsLinux(), architecture)
            ?? throw new PlatformNotSupportedException(
                $"OrtFlash ships its native library for {string.Join(" and ", SupportedRuntimeIdentifiers)}; this " +
                $"process runs on {RuntimeInformation.OSDescription} ({architecture}). Build libortflash from the " +
                $"project's sources for this platform and set {LibraryPathVariable} to it.");
        return FindLibraryIn(CandidateFolders(), rid, architecture);
    }

    /// <summary>
    /// The first <c>runtimes/{rid}/native/libortflash.so</c> or <c>libortflash.so</c> in <paramref name="folders"/>
    /// that is built for <paramref name="architecture"/> (or is no ELF file this can read).
    /// </summary>
    /// <exception cref="FileNotFoundException">None is; the message lists every place searched and every copy
    /// passed over for being built for another CPU.</exception>
    internal static string FindLibraryIn(IEnumerable<string> folders, string rid, Architecture architecture)
    {
        var machine = ElfMachineFor(architecture);
        var searched = new List<string>();
        var otherArchitecture = new List<string>();
        foreach (var folder in folders)
        {
            foreach (var relative in new[] { Path.Combine("runtimes", rid, "native"), "" })
            {
                var candidate = Path.GetFullPath(Path.Combine(folder, relative, LibraryFileName));
                if (searched.Contains(candidate))
                {
                    continue;
                }

                searched.Add(candidate);
                if (!File.Exists(candidate))
                {
                    continue;
                }

                // A copy built for another CPU (an x64 library in an app folder on ARM) would fail to load with
                // a loader message that does not say why; it is passed over and named in the error instead.
                if (ElfMachineOf(candidate) is { } found && found != machine)
                {
                    otherArchitecture.Add(candidate);
                    continue;
                }

                return candidate;
            }
        }

        var wrong = otherArchitecture.Count == 0
            ? ""
            : $" Passed over, built for another CPU than this {architecture} process: {string.Join(", ", otherArchitecture)}.";
        throw new FileNotFoundException(
            $"The OrtFlash native library {LibraryFileName} for {rid} was not found. Searched: {string.Join(", ", searched)}." +
            $"{wrong} Build the solution (dotnet build) or set {LibraryPathVariable}.",
            LibraryFileName);
    }

    private static IEnumerable<string> CandidateFolders()
    {
        yield return AppContext.BaseDirectory;
        var assemblyFolder = Path.GetDirectoryName(typeof(OrtFlashNative).Assembly.Location);
        if (!string.IsNullOrEmpty(assemblyFolder))
        {
            yield return assemblyFolder;
        }

        var entry = Assembly.GetEntryAssembly()?.Location;
        if (!string.IsNullOrEmpty(entry) && Path.GetDirectoryName(entry) is { Length: > 0 } entryFolder)
        {
            yield return entryFolder;
        }
    }
}
