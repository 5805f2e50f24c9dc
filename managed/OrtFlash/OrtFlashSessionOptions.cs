using Microsoft.ML.OnnxRuntime;
using OrtFlash.GraphRewriter;

namespace OrtFlash;

/// <summary>How <see cref="OrtFlashSession"/> creates its ONNX Runtime session.</summary>
public sealed record OrtFlashSessionOptions
{
    /// <summary>The execution provider to run on; <see cref="ExecutionProvider.Auto"/> by default.</summary>
    public ExecutionProvider Provider { get; init; } = ExecutionProvider.Auto;

    /// <summary>CUDA device ordinal when running on CUDA.</summary>
    public int DeviceId { get; init; }

    /// <summary>
    /// Whether ONNX Runtime's CUDA provider may run the model's other float32 MatMuls and convolutions in TF32 (its
    /// <c>use_tf32</c> option: 10 mantissa bits per product, about 1e-3 relative). Null (the default) leaves ONNX
    /// Runtime's own default, which is on; false keeps the whole graph in fp32, for parity with the CPU provider.
    /// OrtFlash's own float32 kernel is not affected: it keeps fp32 accuracy either way (3xTF32), unless
    /// <see cref="CudaAttentionTf32"/> says otherwise.
    /// </summary>
    public bool? CudaTf32 { get; init; }

    /// <summary>
    /// Whether OrtFlash's float32 attention on CUDA may run in one TF32 pass instead of 3xTF32: its products rounded to
    /// 10 mantissa bits (about 1e-3 relative, what TF32 MatMuls give), for a third of the tensor-core work. False (the
    /// default) keeps fp32 scores, as the op's contract states; the CPU kernel is fp32 either way. Sets the session
    /// config entry <c>ortflash.cuda.float32_tensor_cores</c> to 3.
    /// </summary>
    public bool CudaAttentionTf32 { get; init; }

    /// <summary>ONNX Runtime intra-op threads (the CPU kernel's parallelism); 0 lets ONNX Runtime choose.</summary>
    public int IntraOpThreads { get; init; }

    /// <summary>
    /// Fuse the model's attention subgraphs into FlashAttention nodes (in memory) before loading it; true by default.
    /// The model file is never modified. <see cref="OrtFlashSession.Report"/> says what was fused and why the rest was not.
    /// </summary>
    public bool Rewrite { get; init; } = true;

    /// <summary>
    /// What the in-memory rewrite (<see cref="Rewrite"/>) may trade for speed; <see cref="GraphRewriter.RewriteOptions.Default"/>
    /// (exact) by default. <see cref="GraphRewriter.RewriteOptions.CausalForPaddedRows"/> documents the one opt-in and the rows it may change.
    /// </summary>
    public RewriteOptions Rewriting { get; init; } = RewriteOptions.Default;

    /// <summary>
    /// Called with the session options once OrtFlash has set them up (op library registered, execution provider
    /// appended, threads set), before the session is created: for what this record does not cover, such as the graph
    /// optimization level, profiling, logging, session config entries or another execution provider ahead of CPU.
    /// The options belong to the session (disposed with it); the op library must stay registered. An exception
    /// thrown here propagates from <c>Create</c>, with the options disposed.
    /// </summary>
    public Action<SessionOptions>? ConfigureSession { get; init; }
}
