using Microsoft.ML.OnnxRuntime;

namespace OrtFlash;

/// <summary>
/// An ONNX Runtime session with the OrtFlash op library registered and the execution provider chosen.
/// Owns the <see cref="InferenceSession"/> and its <see cref="SessionOptions"/>; dispose it to release both.
/// </summary>
public sealed class OrtFlashSession : IDisposable
{
    private readonly SessionOptions options;

    private OrtFlashSession(InferenceSession session, SessionOptions options, ExecutionProvider provider)
    {
        Session = session;
        this.options = options;
        Provider = provider;
    }

    /// <summary>The ONNX Runtime session, for Run / IO binding.</summary>
    public InferenceSession Session { get; }

    /// <summary>The provider the session actually runs on (never <see cref="ExecutionProvider.Auto"/>).</summary>
    public ExecutionProvider Provider { get; }

    /// <summary>Creates a session for an ONNX model file.</summary>
    /// <exception cref="FileNotFoundException">The model or the native library is missing.</exception>
    /// <exception cref="OnnxRuntimeException">ONNX Runtime rejected the model, or CUDA was asked for and is unusable.</exception>
    public static OrtFlashSession Create(string modelPath, OrtFlashSessionOptions? settings = null)
    {
        if (!File.Exists(modelPath))
        {
            throw new FileNotFoundException($"Model '{modelPath}' does not exist.", modelPath);
        }

        return Create(settings ?? new OrtFlashSessionOptions(), options => new InferenceSession(modelPath, options));
    }

    /// <summary>Creates a session for a model held in memory.</summary>
    public static OrtFlashSession Create(byte[] model, OrtFlashSessionOptions? settings = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        return Create(settings ?? new OrtFlashSessionOptions(), options => new InferenceSession(model, options));
    }

    private static OrtFlashSession Create(OrtFlashSessionOptions settings, Func<SessionOptions, InferenceSession> open)
    {
        var (options, provider) = CreateOptions(settings);
        try
        {
            return new OrtFlashSession(open(options), options, provider);
        }
        catch
        {
            options.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Session options with the op library registered and the provider appended. With <see cref="ExecutionProvider.Auto"/>
    /// a CUDA provider that cannot be loaded falls back to CPU (ONNX Runtime lists CUDA as available whenever it was
    /// compiled in, so the only reliable probe is trying to append it).
    /// </summary>
    public static (SessionOptions Options, ExecutionProvider Provider) CreateOptions(OrtFlashSessionOptions settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        if (settings.Provider != ExecutionProvider.Cpu)
        {
            var options = NewOptions(settings);
            try
            {
                options.AppendExecutionProvider_CUDA(settings.DeviceId);
                return (options, ExecutionProvider.Cuda);
            }
            catch (Exception error) when (settings.Provider == ExecutionProvider.Auto &&
                                          error is OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException)
            {
                options.Dispose();
            }
            catch
            {
                options.Dispose();
                throw;
            }
        }

        return (NewOptions(settings), ExecutionProvider.Cpu);
    }

    private static SessionOptions NewOptions(OrtFlashSessionOptions settings)
    {
        var options = new SessionOptions { IntraOpNumThreads = settings.IntraOpThreads };
        try
        {
            options.RegisterCustomOpLibrary(OrtFlashNative.LibraryPath);
            return options;
        }
        catch
        {
            options.Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Session.Dispose();
        options.Dispose();
    }
}
