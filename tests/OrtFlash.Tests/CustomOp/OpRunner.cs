using Microsoft.ML.OnnxRuntime;

namespace OrtFlash.Tests.CustomOp;

/// <summary>Runs op-test models on ONNX Runtime's CPU provider with the OrtFlash library registered.</summary>
public static class OpRunner
{
    public static SessionOptions CreateOptions(int intraOpThreads = 2)
    {
        var (options, _) = OrtFlashSession.CreateOptions(
            new OrtFlashSessionOptions { Provider = ExecutionProvider.Cpu, IntraOpThreads = intraOpThreads });
        options.LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR;
        return options;
    }

    /// <summary>Runs the fused model of <paramref name="c"/> and returns Y as floats with its shape.</summary>
    public static (float[] Data, long[] Shape) RunFused(AttentionCase c, IReadOnlyList<string>? inputNames = null)
        => Run(OpModels.FusedModel(c, inputNames), c, c.Type);

    /// <summary>Runs the unfused float32 model of <paramref name="c"/>.</summary>
    public static (float[] Data, long[] Shape) RunUnfused(AttentionCase c)
        => Run(OpModels.UnfusedModel(c), c, ElementType.Float32);

    public static (float[] Data, long[] Shape) Run(byte[] model, AttentionCase c, ElementType type)
    {
        using var options = CreateOptions();
        using var session = new InferenceSession(model, options);
        return RunSession(session, c, type);
    }

    /// <summary>Feeds the case's inputs to an open session and returns Y as floats with its shape.</summary>
    public static (float[] Data, long[] Shape) RunSession(InferenceSession session, AttentionCase c, ElementType type)
    {
        var names = new List<string> { "Q", "K", "V" };
        var values = new List<OrtValue>();
        try
        {
            values.Add(Tensor(c.Query, c.QueryShape, type));
            values.Add(Tensor(c.Key, c.KeyShape, type));
            values.Add(Tensor(c.Value, c.ValueShape, type));
            if (c.BiasShape is not null)
            {
                names.Add("bias");
                values.Add(Tensor(c.Bias!, c.BiasShape, type));
            }

            if (c.KeepShape is not null)
            {
                names.Add("keep");
                values.Add(OrtValue.CreateTensorValueFromMemory(c.Keep!, c.KeepShape));
            }

            using var runOptions = new RunOptions();
            using var outputs = session.Run(runOptions, names, values, session.OutputNames);
            var y = outputs[0];
            var shape = y.GetTensorTypeAndShape().Shape;
            float[] data = type switch
            {
                ElementType.Float16 => y.GetTensorDataAsSpan<Float16>().ToArray().Select(v => (float)v).ToArray(),
                ElementType.BFloat16 => y.GetTensorDataAsSpan<BFloat16>().ToArray().Select(v => (float)v).ToArray(),
                _ => y.GetTensorDataAsSpan<float>().ToArray(),
            };
            return (data, shape);
        }
        finally
        {
            foreach (var value in values)
            {
                value.Dispose();
            }
        }
    }

    private static OrtValue Tensor(float[] data, long[] shape, ElementType type) => type switch
    {
        ElementType.Float16 => OrtValue.CreateTensorValueFromMemory(data.Select(v => (Float16)v).ToArray(), shape),
        ElementType.BFloat16 => OrtValue.CreateTensorValueFromMemory(data.Select(v => (BFloat16)v).ToArray(), shape),
        _ => OrtValue.CreateTensorValueFromMemory(data, shape),
    };

    /// <summary>Rounds <paramref name="data"/> to what the element type can hold, so the reference sees the op's inputs.</summary>
    public static float[] RoundTo(float[] data, ElementType type) => type switch
    {
        ElementType.Float16 => data.Select(v => (float)(Float16)v).ToArray(),
        ElementType.BFloat16 => data.Select(v => (float)(BFloat16)v).ToArray(),
        _ => data,
    };
}
