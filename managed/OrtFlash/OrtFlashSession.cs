using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using OrtFlash.GraphRewriter;
using OrtFlash.GraphRewriter.Io;
using OrtFlash.GraphRewriter.Report;

namespace OrtFlash;

/// <summary>
/// An ONNX Runtime session with the OrtFlash op library registered and the execution provider chosen.
/// Owns the <see cref="InferenceSession"/> and its <see cref="SessionOptions"/>; dispose it to release both.
/// </summary>
public sealed class OrtFlashSession : IDisposable
{
    private readonly SessionOptions options;

    // ONNX Runtime resolves external weights of a model given as bytes from this folder.
    private const string ExternalDataFolderKey = "session.model_external_initializers_file_folder_path";

    /// <summary>The op's session config entry for its float32 CUDA kernel (0 SIMT, 1-2 3xTF32, 3 one TF32 pass).</summary>
    private const string Float32TensorCoresEntry = "ortflash.cuda.float32_tensor_cores";

    private OrtFlashSession(InferenceSession session, SessionOptions options, ExecutionProvider provider, FusionReport? report)
    {
        Session = session;
        this.options = options;
        Provider = provider;
        Report = report;
    }

    /// <summary>The ONNX Runtime session, for Run / IO binding.</summary>
    public InferenceSession Session { get; }

    /// <summary>The provider the session actually runs on (never <see cref="ExecutionProvider.Auto"/>).</summary>
    public ExecutionProvider Provider { get; }

    /// <summary>What the graph rewriter fused and skipped; null when the model was loaded without rewriting.</summary>
    public FusionReport? Report { get; }

    /// <summary>
    /// Creates a session for an ONNX model file, fusing its attention subgraphs first unless
    /// <see cref="OrtFlashSessionOptions.Rewrite"/> is false. External weights stay where they are.
    /// </summary>
    /// <exception cref="FileNotFoundException">The model or the native library is missing.</exception>
    /// <exception cref="OnnxModelException">The file is not a well-formed ONNX model.</exception>
    /// <exception cref="OnnxRuntimeException">ONNX Runtime rejected the model, or CUDA was asked for and is unusable.</exception>
    public static OrtFlashSession Create(string modelPath, OrtFlashSessionOptions? settings = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelPath);
        if (!File.Exists(modelPath))
        {
            throw new FileNotFoundException($"Model '{modelPath}' does not exist.", modelPath);
        }

        settings ??= new OrtFlashSessionOptions();
        if (!settings.Rewrite)
        {
            return Create(settings, options => new InferenceSession(modelPath, options), report: null);
        }

        var model = OnnxModelFile.Read(modelPath);
        var report = AttentionFuser.Rewrite(model, settings.Rewriting);
        var bytes = model.ToByteArray();
        var folder = Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        return Create(settings, options =>
        {
            options.AddSessionConfigEntry(ExternalDataFolderKey, folder);
            return new InferenceSession(bytes, options);
        }, report);
    }

    /// <summary>Creates a session for a serialized model held in memory (rewritten first unless disabled).</summary>
    /// <exception cref="OnnxModelException">The bytes are not a well-formed ONNX model.</exception>
    public static OrtFlashSession Create(byte[] model, OrtFlashSessionOptions? settings = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        settings ??= new OrtFlashSessionOptions();
        if (!settings.Rewrite)
        {
            return Create(settings, options => new InferenceSession(model, options), report: null);
        }

        using var stream = new MemoryStream(model, writable: false);
        var proto = OnnxModelFile.Parse(stream, "model bytes");
        var report = AttentionFuser.Rewrite(proto, settings.Rewriting);
        var bytes = proto.ToByteArray();
        return Create(settings, options => new InferenceSession(bytes, options), report);
    }

    private static OrtFlashSession Create(OrtFlashSessionOptions settings, Func<SessionOptions, InferenceSession> open, FusionReport? report)
    {
        var (options, provider) = CreateOptions(settings);
        try
        {
            return new OrtFlashSession(open(options), options, provider, report);
        }
        catch
        {
            options.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Session options with the op library registered and the provider appended, then handed to
    /// <see cref="OrtFlashSessionOptions.ConfigureSession"/>. With <see cref="ExecutionProvider.Auto"/> a CUDA provider that
    /// cannot be loaded falls back to CPU (ONNX Runtime lists CUDA as available whenever it was compiled in, so the only
    /// reliable probe is trying to append it).
    /// </summary>
    public static (SessionOptions Options, ExecutionProvider Provider) CreateOptions(OrtFlashSessionOptions settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var (options, provider) = CreateProviderOptions(settings);
        try
        {
            settings.ConfigureSession?.Invoke(options);
            return (options, provider);
        }
        catch
        {
            options.Dispose();
            throw;
        }
    }

    private static (SessionOptions Options, ExecutionProvider Provider) CreateProviderOptions(OrtFlashSessionOptions settings)
    {
        if (settings.Provider != ExecutionProvider.Cpu)
        {
            var options = NewOptions(settings);
            try
            {
                AppendCuda(options, settings);
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

    private static void AppendCuda(SessionOptions options, OrtFlashSessionOptions settings)
    {
        if (settings.CudaTf32 is not { } tf32)
        {
            options.AppendExecutionProvider_CUDA(settings.DeviceId);
            return;
        }

        // The session options keep a copy of the provider options.
        using var cuda = new OrtCUDAProviderOptions();
        cuda.UpdateOptions(new Dictionary<string, string>
        {
            ["device_id"] = settings.DeviceId.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["use_tf32"] = tf32 ? "1" : "0",
        });
        options.AppendExecutionProvider_CUDA(cuda);
    }

    private static SessionOptions NewOptions(OrtFlashSessionOptions settings)
    {
        var options = new SessionOptions { IntraOpNumThreads = settings.IntraOpThreads };
        try
        {
            options.RegisterCustomOpLibrary(OrtFlashNative.LibraryPath);
            if (settings.CudaAttentionTf32)
            {
                options.AddSessionConfigEntry(Float32TensorCoresEntry, "3");  // one TF32 pass
            }

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
