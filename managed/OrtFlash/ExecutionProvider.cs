namespace OrtFlash;

/// <summary>Which ONNX Runtime execution provider a session should run on.</summary>
public enum ExecutionProvider
{
    /// <summary>CUDA when it can be loaded (GPU runtime package, driver and CUDA libraries present), else CPU.</summary>
    Auto,

    /// <summary>ONNX Runtime's CPU provider with the OrtFlash CPU kernel.</summary>
    Cpu,

    /// <summary>ONNX Runtime's CUDA provider; fails when it cannot be loaded.</summary>
    Cuda,
}
