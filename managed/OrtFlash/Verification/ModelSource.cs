using Google.Protobuf;
using OrtFlash.GraphRewriter.Onnx;

namespace OrtFlash.Verification;

/// <summary>
/// A model to verify: a file (ONNX Runtime opens the file itself, so external weights beside it are found) or a
/// <see cref="ModelProto"/> held in memory (a rewritten model before it is written anywhere).
/// </summary>
public sealed class ModelSource
{
    private ModelSource(string name, ModelProto model, string? filePath)
    {
        Name = name;
        Model = model;
        FilePath = filePath;
    }

    /// <summary>The name reports use: the path for files, the given name otherwise.</summary>
    public string Name { get; }

    /// <summary>The parsed model; input generation reads it (embedding table sizes). Do not modify it.</summary>
    public ModelProto Model { get; }

    /// <summary>The file the model came from; null for models in memory.</summary>
    public string? FilePath { get; }

    /// <summary>Reads and checks an ONNX file without modifying it.</summary>
    /// <exception cref="InvalidModelException">The file is missing, empty, truncated, or not an ONNX model.</exception>
    public static ModelSource FromFile(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (Directory.Exists(path))
        {
            throw new InvalidModelException(path, $"'{path}' is a directory, not an ONNX model file.");
        }

        if (!File.Exists(path))
        {
            throw new InvalidModelException(path, $"Model file '{path}' does not exist.");
        }

        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            throw new InvalidModelException(path, $"Model file '{path}' cannot be read: {error.Message}", error);
        }

        return new ModelSource(path, Parse(path, bytes), Path.GetFullPath(path));
    }

    /// <summary>A model held in memory, e.g. the output of the graph rewriter.</summary>
    public static ModelSource FromModel(ModelProto model, string name)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(name);
        return new ModelSource(name, model, null);
    }

    /// <summary>
    /// Opens an ONNX Runtime session on this model exactly as it is (never rewritten on load, whatever
    /// <paramref name="options"/> says), with the OrtFlash op library registered.
    /// </summary>
    /// <exception cref="InvalidModelException">ONNX Runtime rejected the model.</exception>
    /// <exception cref="NotSupportedException">The execution provider asked for cannot be used here (checked before
    /// the model is loaded, so that this is not blamed on the model).</exception>
    public OrtFlashSession OpenSession(OrtFlashSessionOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        try
        {
            OrtFlashSession.CreateOptions(options).Options.Dispose();
        }
        catch (Exception error) when (error is Microsoft.ML.OnnxRuntime.OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException)
        {
            throw new NotSupportedException(
                $"The {options.Provider} execution provider cannot be used here (this ONNX Runtime package or machine has no " +
                $"usable CUDA): {error.Message}", error);
        }

        try
        {
            var asGiven = options with { Rewrite = false };
            return FilePath is not null ? OrtFlashSession.Create(FilePath, asGiven) : OrtFlashSession.Create(Model.ToByteArray(), asGiven);
        }
        catch (Microsoft.ML.OnnxRuntime.OnnxRuntimeException error)
        {
            throw new InvalidModelException(Name, $"ONNX Runtime cannot load '{Name}': {error.Message}", error);
        }
    }

    /// <inheritdoc />
    public override string ToString() => Name;

    private static ModelProto Parse(string name, byte[] bytes)
    {
        if (bytes.Length == 0)
        {
            throw new InvalidModelException(name, $"'{name}' is empty, not an ONNX model.");
        }

        ModelProto model;
        try
        {
            model = ModelProto.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException error)
        {
            throw new InvalidModelException(name, $"'{name}' is not an ONNX model, or is truncated or corrupt: {error.Message}", error);
        }

        // Protobuf accepts many byte strings as some message; a real model has these three.
        if (model.IrVersion <= 0 || model.Graph is null || model.OpsetImport.Count == 0)
        {
            throw new InvalidModelException(name,
                $"'{name}' is not an ONNX model: it has no {(model.IrVersion <= 0 ? "IR version" : model.Graph is null ? "graph" : "opset import")}.");
        }

        return model;
    }
}
