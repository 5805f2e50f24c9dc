using System.Reflection;

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

    /// <summary>
    /// Absolute path of the native library: <c>$ORTFLASH_LIBRARY</c> when set, else the copy shipped beside the
    /// application (<c>runtimes/linux-x64/native/</c>, or the application folder itself).
    /// </summary>
    /// <exception cref="FileNotFoundException">No library was found; the message lists every place searched.</exception>
    public static string LibraryPath => FindLibrary();

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

        var searched = new List<string>();
        foreach (var folder in CandidateFolders())
        {
            foreach (var relative in new[] { Path.Combine("runtimes", "linux-x64", "native"), "" })
            {
                var candidate = Path.GetFullPath(Path.Combine(folder, relative, LibraryFileName));
                if (searched.Contains(candidate))
                {
                    continue;
                }

                searched.Add(candidate);
                if (File.Exists(candidate))
                {
                    return candidate;
                }
            }
        }

        throw new FileNotFoundException(
            $"The OrtFlash native library {LibraryFileName} was not found. Searched: {string.Join(", ", searched)}. " +
            $"Build the solution (dotnet build) or set {LibraryPathVariable}.",
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
