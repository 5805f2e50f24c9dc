using System.Buffers.Binary;
using OrtFlash.GraphRewriter.Onnx;

namespace OrtFlash.GraphRewriter.Graph;

/// <summary>
/// A small numeric tensor known at rewrite time. Elements are held as doubles, each already rounded
/// to its element type, so evaluating float32 arithmetic gives float32 results.
/// </summary>
public sealed record ConstantTensor(TensorProto.Types.DataType ElementType, IReadOnlyList<long> Dims, IReadOnlyList<double> Data)
{
    /// <summary>The largest tensor decoded or built while folding.</summary>
    public const int MaxElements = 1 << 16;

    /// <summary>Whether the tensor holds exactly one element (rank 0 or all dims 1).</summary>
    public bool IsScalar => Data.Count == 1;

    /// <summary>A rank-0 tensor.</summary>
    public static ConstantTensor Scalar(TensorProto.Types.DataType type, double value) =>
        new(type, [], [ElementTypes.Round(value, type)]);

    /// <summary>A 1-D int64 tensor.</summary>
    public static ConstantTensor Int64s(IReadOnlyList<long> values) =>
        new(TensorProto.Types.DataType.Int64, [values.Count], values.Select(v => (double)v).ToArray());

    /// <summary>Elements as 64-bit integers (saturating, for Slice bounds such as INT64_MAX).</summary>
    public long[] AsInt64() => Data.Select(d => d >= 9.2e18 ? long.MaxValue : d <= -9.2e18 ? long.MinValue : (long)d).ToArray();

    /// <summary>
    /// Decodes an embedded tensor; null when it is external (its weights are never loaded),
    /// non-numeric or larger than <see cref="MaxElements"/>.
    /// </summary>
    public static ConstantTensor? FromProto(TensorProto tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (tensor.DataLocation == TensorProto.Types.DataLocation.External || tensor.Segment is not null)
        {
            return null;
        }

        long count = 1;
        foreach (var d in tensor.Dims)
        {
            count *= d;
            if (d < 0 || count > MaxElements)
            {
                return null;
            }
        }

        var type = (TensorProto.Types.DataType)tensor.DataType;
        var data = tensor.HasRawData ? DecodeRaw(type, tensor.RawData.Span, (int)count) : DecodeTyped(type, tensor, (int)count);
        return data is null ? null : new ConstantTensor(type, tensor.Dims.ToArray(), data);
    }

    private static double[]? DecodeRaw(TensorProto.Types.DataType type, ReadOnlySpan<byte> raw, int count)
    {
        var size = ElementSize(type);
        if (size == 0 || raw.Length != size * count)
        {
            return null;
        }

        var data = new double[count];
        for (var i = 0; i < count; i++)
        {
            var bytes = raw.Slice(i * size, size);
            data[i] = type switch
            {
                TensorProto.Types.DataType.Float => BinaryPrimitives.ReadSingleLittleEndian(bytes),
                TensorProto.Types.DataType.Double => BinaryPrimitives.ReadDoubleLittleEndian(bytes),
                TensorProto.Types.DataType.Float16 => (double)BinaryPrimitives.ReadHalfLittleEndian(bytes),
                TensorProto.Types.DataType.Bfloat16 => ElementTypes.BFloat16ToDouble(BinaryPrimitives.ReadUInt16LittleEndian(bytes)),
                TensorProto.Types.DataType.Int64 => BinaryPrimitives.ReadInt64LittleEndian(bytes),
                TensorProto.Types.DataType.Uint64 => BinaryPrimitives.ReadUInt64LittleEndian(bytes),
                TensorProto.Types.DataType.Int32 => BinaryPrimitives.ReadInt32LittleEndian(bytes),
                TensorProto.Types.DataType.Uint32 => BinaryPrimitives.ReadUInt32LittleEndian(bytes),
                TensorProto.Types.DataType.Int16 => BinaryPrimitives.ReadInt16LittleEndian(bytes),
                TensorProto.Types.DataType.Uint16 => BinaryPrimitives.ReadUInt16LittleEndian(bytes),
                TensorProto.Types.DataType.Int8 => (sbyte)bytes[0],
                TensorProto.Types.DataType.Uint8 => bytes[0],
                TensorProto.Types.DataType.Bool => bytes[0] != 0 ? 1 : 0,
                _ => double.NaN,
            };
        }

        return data;
    }

    private static double[]? DecodeTyped(TensorProto.Types.DataType type, TensorProto tensor, int count)
    {
        IEnumerable<double>? values = type switch
        {
            TensorProto.Types.DataType.Float => tensor.FloatData.Select(f => (double)f),
            TensorProto.Types.DataType.Double => tensor.DoubleData,
            TensorProto.Types.DataType.Int64 => tensor.Int64Data.Select(i => (double)i),
            TensorProto.Types.DataType.Uint32 or TensorProto.Types.DataType.Uint64 => tensor.Uint64Data.Select(i => (double)i),
            TensorProto.Types.DataType.Float16 => tensor.Int32Data.Select(i => (double)BitConverter.UInt16BitsToHalf((ushort)i)),
            TensorProto.Types.DataType.Bfloat16 => tensor.Int32Data.Select(i => ElementTypes.BFloat16ToDouble((ushort)i)),
            TensorProto.Types.DataType.Int32 or TensorProto.Types.DataType.Int16 or TensorProto.Types.DataType.Int8
                or TensorProto.Types.DataType.Uint16 or TensorProto.Types.DataType.Uint8 or TensorProto.Types.DataType.Bool
                => tensor.Int32Data.Select(i => (double)i),
            _ => null,
        };
        var data = values?.ToArray();
        return data is not null && data.Length == count ? data : null;
    }

    /// <summary>Bytes per element in raw_data; 0 for types this code does not decode.</summary>
    public static int ElementSize(TensorProto.Types.DataType type) => type switch
    {
        TensorProto.Types.DataType.Double or TensorProto.Types.DataType.Int64 or TensorProto.Types.DataType.Uint64 => 8,
        TensorProto.Types.DataType.Float or TensorProto.Types.DataType.Int32 or TensorProto.Types.DataType.Uint32 => 4,
        TensorProto.Types.DataType.Float16 or TensorProto.Types.DataType.Bfloat16 or TensorProto.Types.DataType.Int16
            or TensorProto.Types.DataType.Uint16 => 2,
        TensorProto.Types.DataType.Int8 or TensorProto.Types.DataType.Uint8 or TensorProto.Types.DataType.Bool => 1,
        _ => 0,
    };

    /// <summary>Encodes the tensor as a TensorProto with raw_data.</summary>
    public TensorProto ToProto(string name)
    {
        var size = ElementSize(ElementType);
        var raw = new byte[size * Data.Count];
        for (var i = 0; i < Data.Count; i++)
        {
            var span = raw.AsSpan(i * size, size);
            var v = Data[i];
            switch (ElementType)
            {
                case TensorProto.Types.DataType.Float: BinaryPrimitives.WriteSingleLittleEndian(span, (float)v); break;
                case TensorProto.Types.DataType.Double: BinaryPrimitives.WriteDoubleLittleEndian(span, v); break;
                case TensorProto.Types.DataType.Float16: BinaryPrimitives.WriteHalfLittleEndian(span, (Half)v); break;
                case TensorProto.Types.DataType.Bfloat16: BinaryPrimitives.WriteUInt16LittleEndian(span, ElementTypes.DoubleToBFloat16(v)); break;
                case TensorProto.Types.DataType.Int64: BinaryPrimitives.WriteInt64LittleEndian(span, (long)v); break;
                case TensorProto.Types.DataType.Int32: BinaryPrimitives.WriteInt32LittleEndian(span, (int)v); break;
                case TensorProto.Types.DataType.Bool or TensorProto.Types.DataType.Uint8: span[0] = (byte)v; break;
                default: throw new NotSupportedException($"Encoding {ElementType} constants is not supported.");
            }
        }

        var proto = new TensorProto { Name = name, DataType = (int)ElementType, RawData = Google.Protobuf.ByteString.CopyFrom(raw) };
        proto.Dims.AddRange(Dims);
        return proto;
    }
}
