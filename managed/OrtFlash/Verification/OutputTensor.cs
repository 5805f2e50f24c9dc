using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OrtFlash.Verification;

/// <summary>An output copied out of ONNX Runtime as doubles (exact for every type compared here but 64-bit integers
/// beyond 2^53, which no attention model outputs).</summary>
internal sealed record OutputTensor(TensorElementType ElementType, long[] Shape, double[]? Values)
{
    public static OutputTensor Read(OrtValue value)
    {
        if (!value.IsTensor)
        {
            return new OutputTensor(TensorElementType.DataTypeMax, [], null);
        }

        var info = value.GetTensorTypeAndShape();
        var type = info.ElementDataType;
        double[]? values = type switch
        {
            TensorElementType.Float => Widen(value.GetTensorDataAsSpan<float>(), v => v),
            TensorElementType.Double => value.GetTensorDataAsSpan<double>().ToArray(),
            TensorElementType.Float16 => Widen(value.GetTensorDataAsSpan<Float16>(), v => (float)v),
            TensorElementType.BFloat16 => Widen(value.GetTensorDataAsSpan<BFloat16>(), v => (float)v),
            TensorElementType.Int64 => Widen(value.GetTensorDataAsSpan<long>(), v => v),
            TensorElementType.Int32 => Widen(value.GetTensorDataAsSpan<int>(), v => v),
            TensorElementType.Int16 => Widen(value.GetTensorDataAsSpan<short>(), v => v),
            TensorElementType.Int8 => Widen(value.GetTensorDataAsSpan<sbyte>(), v => v),
            TensorElementType.UInt64 => Widen(value.GetTensorDataAsSpan<ulong>(), v => v),
            TensorElementType.UInt32 => Widen(value.GetTensorDataAsSpan<uint>(), v => v),
            TensorElementType.UInt16 => Widen(value.GetTensorDataAsSpan<ushort>(), v => v),
            TensorElementType.UInt8 => Widen(value.GetTensorDataAsSpan<byte>(), v => v),
            TensorElementType.Bool => Widen(value.GetTensorDataAsSpan<bool>(), v => v ? 1 : 0),
            _ => null,
        };
        return new OutputTensor(type, info.Shape, values);
    }

    private static double[] Widen<T>(ReadOnlySpan<T> span, Func<T, double> widen)
    {
        var values = new double[span.Length];
        for (int i = 0; i < span.Length; i++)
        {
            values[i] = widen(span[i]);
        }

        return values;
    }
}
