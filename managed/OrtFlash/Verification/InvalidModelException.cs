namespace OrtFlash.Verification;

/// <summary>
/// A model that cannot be verified: the file is missing, is not ONNX, ONNX Runtime rejects it, or it fails on the
/// generated inputs. The message names the model and says why.
/// </summary>
public sealed class InvalidModelException : Exception
{
    /// <summary>Creates the exception for the model named <paramref name="modelName"/>.</summary>
    public InvalidModelException(string modelName, string message, Exception? innerException = null)
        : base(message, innerException) => ModelName = modelName;

    /// <summary>The model's display name (usually its path).</summary>
    public string ModelName { get; }
}
