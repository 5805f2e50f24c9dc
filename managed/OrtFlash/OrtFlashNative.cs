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

    /// <summary>File name of the native library on Windows.</summary>
    public const string WindowsLibraryFileName = "ortflash.dll";

    /// <summary>Environment variable that, when set, names the library file to use instead of the bundled one.</summary>
    public const string LibraryPathVariable = "ORTFLASH_LIBRARY";

    /// <summary>The platforms the package ships the native library for, as runtime identifiers.</summary>
    public static IReadOnlyList<string> SupportedRuntimeIdentifiers { get; } = ["linux-x64", "linux-arm64", "win-x64"];

    /// <summary>
    /// Absolute path of the native library: <c>$ORTFLASH_LIBRARY</c> when set, else the copy shipped beside the
    /// application for this process's platform (<c>runtimes/linux-x64/native/libortflash.so</c>,
    /// <c>runtimes/linux-arm64/native/libortflash.so</c> or <c>runtimes/win-x64/native/ortflash.dll</c>, or the
    /// application folder itself).
    /// </summary>
    /// <exception cref="FileNotFoundException">No library was found; the message lists every place searched.</exception>
    /// <exception cref="PlatformNotSupportedException">The process runs on a platform the package has no library
    /// for (and <c>$ORTFLASH_LIBRARY</c> is not set).</exception>
    public static string LibraryPath => FindLibrary();

    /// <summary>
    /// The runtime identifier whose library a process on this operating system and architecture loads, or null
    /// where the package ships none.
    /// </summary>
    /// <param name="platform">The operating system.</param>
    /// <param name="architecture">The process's architecture.</param>
    public static string? RuntimeIdentifierFor(OSPlatform platform, Architecture architecture) =>
        platform == OSPlatform.Linux ? architecture switch
        {
            Architecture.X64 => "linux-x64",
            Architecture.Arm64 => "linux-arm64",
            _ => null,
        }
        : platform == OSPlatform.Windows && architecture == Architecture.X64 ? "win-x64"
        : null;

    /// <summary>The runtime identifier of this process's platform, or null where the package ships no library.</summary>
    public static string? CurrentRuntimeIdentifier => RuntimeIdentifierFor(CurrentPlatform(), RuntimeInformation.ProcessArchitecture);

    /// <summary>The native library's file name on a platform (<c>ortflash.dll</c> on Windows, else <c>libortflash.so</c>).</summary>
    /// <param name="rid">A runtime identifier such as <c>linux-x64</c> or <c>win-x64</c>.</param>
    public static string LibraryFileNameFor(string rid) =>
        rid.StartsWith("win-", StringComparison.Ordinal) ? WindowsLibraryFileName : LibraryFileName;

    private static OSPlatform CurrentPlatform() =>
        OperatingSystem.IsWindows() ? OSPlatform.Windows
        : OperatingSystem.IsLinux() ? OSPlatform.Linux
        : OperatingSystem.IsMacOS() ? OSPlatform.OSX
        : OSPlatform.FreeBSD;

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
        var rid = CurrentRuntimeIdentifier
            ?? throw new PlatformNotSupportedException(
                $"OrtFlash ships its native library for {string.Join(" and ", SupportedRuntimeIdentifiers)}; this " +
                $"process runs on {RuntimeInformation.OSDescription} ({architecture}). Build libortflash from the " +
                $"project's sources for this platform and set {LibraryPathVariable} to it.");
        return FindLibraryIn(CandidateFolders(), rid, architecture);
    }

    /// <summary>
    /// The first <c>runtimes/{rid}/native/</c> library or the library itself in <paramref name="folders"/> (its file
    /// name <see cref="LibraryFileNameFor"/>) that is built for <paramref name="architecture"/> (Linux: or is no
    /// ELF file this can read).
    /// </summary>
    /// <exception cref="FileNotFoundException">None is; the message lists every place searched and every copy
    /// passed over for being built for another CPU.</exception>
    internal static string FindLibraryIn(IEnumerable<string> folders, string rid, Architecture architecture)
    {
        var machine = ElfMachineFor(architecture);
        var fileName = LibraryFileNameFor(rid);
        var isElf = fileName == LibraryFileName;
        var searched = new List<string>();
        var otherArchitecture = new List<string>();
        foreach (var folder in folders)
        {
            foreach (var relative in new[] { Path.Combine("runtimes", rid, "native"), "" })
            {
                var candidate = Path.GetFullPath(Path.Combine(folder, relative, fileName));
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
                if (isElf && ElfMachineOf(candidate) is { } found && found != machine)
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
            $"The OrtFlash native library {fileName} for {rid} was not found. Searched: {string.Join(", ", searched)}." +
            $"{wrong} Build the solution (dotnet build) or set {LibraryPathVariable}.",
            fileName);
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
