using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OrtFlash.GraphRewriter.Onnx;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.Tests.Rewriter.Support;

/// <summary>A test tensor: element type, shape and values (bools as 0/1, float16 as floats).</summary>
public sealed record TestTensor(DataType Type, long[] Shape, float[] Data)
{
    public static TestTensor Random(Random random, long[] shape, DataType type = DataType.Float, float scale = 1)
    {
        var count = shape.Aggregate(1L, (p, d) => p * d);
        var data = new float[count];
        for (var i = 0; i < count; i++)
        {
            data[i] = (float)((random.NextDouble() * 2 - 1) * scale);
            if (type == DataType.Float16)
            {
                data[i] = (float)(Half)data[i];
            }
        }

        return new TestTensor(type, shape, data);
    }
}

/// <summary>Runs models in ONNX Runtime (CPU), optionally with the OrtFlash op library registered.</summary>
internal static class OrtRunner
{
    /// <summary>The op library next to the test assembly, or null when it has not been built.</summary>
    public static string? OpLibraryPath
    {
        get
        {
            var rid = OrtFlashNative.CurrentRuntimeIdentifier ?? "linux-x64";
            var path = Path.Combine(AppContext.BaseDirectory, "runtimes", rid, "native", OrtFlashNative.LibraryFileNameFor(rid));
            return File.Exists(path) ? path : null;
        }
    }

    public static Dictionary<string, TestTensor> Run(ModelProto model, IReadOnlyDictionary<string, TestTensor> inputs, bool withOpLibrary = false) =>
        RunEach(model, [inputs], withOpLibrary)[0];

    /// <summary>Runs one session of <paramref name="model"/> on each set of inputs in turn.</summary>
    public static List<Dictionary<string, TestTensor>> RunEach(ModelProto model, IEnumerable<IReadOnlyDictionary<string, TestTensor>> inputSets, bool withOpLibrary = false)
    {
        using var options = new SessionOptions();
        if (withOpLibrary)
        {
            options.RegisterCustomOpLibrary(OpLibraryPath ?? throw new InvalidOperationException("libortflash.so not built"));
        }

        using var session = new InferenceSession(model.ToByteArray(), options);
        var outputNames = session.OutputNames.ToList();
        var results = new List<Dictionary<string, TestTensor>>();
        foreach (var inputs in inputSets)
        {
            results.Add(RunOnce(session, outputNames, inputs));
        }

        return results;
    }

    private static Dictionary<string, TestTensor> RunOnce(InferenceSession session, List<string> outputNames, IReadOnlyDictionary<string, TestTensor> inputs)
    {
        var values = new List<OrtValue>();
        try
        {
            var names = new List<string>();
            foreach (var (name, tensor) in inputs)
            {
                names.Add(name);
                values.Add(ToOrtValue(tensor));
            }

            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, names, values, outputNames);
            var outputs = new Dictionary<string, TestTensor>();
            for (var i = 0; i < outputNames.Count; i++)
            {
                outputs[outputNames[i]] = FromOrtValue(results.ElementAt(i));
            }

            return outputs;
        }
        finally
        {
            foreach (var value in values)
            {
                value.Dispose();
            }
        }
    }

    private static OrtValue ToOrtValue(TestTensor tensor) => tensor.Type switch
    {
        DataType.Float => OrtValue.CreateTensorValueFromMemory(tensor.Data.ToArray(), tensor.Shape),
        DataType.Double => OrtValue.CreateTensorValueFromMemory(tensor.Data.Select(f => (double)f).ToArray(), tensor.Shape),
        DataType.Float16 => OrtValue.CreateTensorValueFromMemory(tensor.Data.Select(f => (Float16)f).ToArray(), tensor.Shape),
        DataType.Bool => OrtValue.CreateTensorValueFromMemory(tensor.Data.Select(f => f != 0).ToArray(), tensor.Shape),
        DataType.Int64 => OrtValue.CreateTensorValueFromMemory(tensor.Data.Select(f => (long)f).ToArray(), tensor.Shape),
        _ => throw new NotSupportedException(tensor.Type.ToString()),
    };

    private static TestTensor FromOrtValue(OrtValue value)
    {
        var info = value.GetTensorTypeAndShape();
        var shape = info.Shape;
        return info.ElementDataType switch
        {
            TensorElementType.Float => new TestTensor(DataType.Float, shape, value.GetTensorDataAsSpan<float>().ToArray()),
            TensorElementType.Float16 => new TestTensor(DataType.Float16, shape, value.GetTensorDataAsSpan<Float16>().ToArray().Select(h => h.ToFloat()).ToArray()),
            TensorElementType.Bool => new TestTensor(DataType.Bool, shape, value.GetTensorDataAsSpan<bool>().ToArray().Select(b => b ? 1f : 0f).ToArray()),
            TensorElementType.Int64 => new TestTensor(DataType.Int64, shape, value.GetTensorDataAsSpan<long>().ToArray().Select(l => (float)l).ToArray()),
            var other => throw new NotSupportedException(other.ToString()),
        };
    }
}
