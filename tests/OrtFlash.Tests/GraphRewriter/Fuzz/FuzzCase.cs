using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.Tests.Rewriter.Support;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.Tests.Rewriter.Fuzz;

/// <summary>What an axis of a generated mask input stands for, so that masks of any broadcast shape hide the same keys.</summary>
internal enum AxisRole
{
    Other,
    Entry,
    Row,
    Key,
}

/// <summary>How a generated input is filled.</summary>
internal enum InputContent
{
    /// <summary>Uniform in [−scale, scale] (query, key, value).</summary>
    Random,

    /// <summary>1 where the key is visible, 0 where it is hidden.</summary>
    Keep,

    /// <summary>0 where the key is hidden; where visible 1, sometimes 2 (0.5 in a float mask).</summary>
    Counts,

    /// <summary>1 where the key is hidden.</summary>
    Hidden,

    /// <summary>0 where visible, the fill where hidden.</summary>
    Additive,

    /// <summary>A position bias in [−3, 3] where visible, the fill where hidden.</summary>
    Bias,

    /// <summary>0 where visible, −fill where hidden (subtracted from the scores).</summary>
    Penalty,

    /// <summary>The fill, as a scalar.</summary>
    Scalar,
}

/// <summary>One graph input: its declared dims (numbers or the symbols B, N, S, T and K = S + T) and what fills it.</summary>
internal sealed record FuzzInput(string Name, DataType Type, object[] Dims, AxisRole[] Roles, InputContent Content, float Fill = 0, float Scale = 1);

/// <summary>
/// A generated attention graph with what running it needs. <paramref name="MustRefuse"/> names the ingredient that makes
/// fusing it wrong (null when the rewriter may fuse or refuse). <paramref name="QuantizingFill"/>: an additive mask fills
/// with a finite value large enough to round the scores of the rows it hides entirely (−10000).
/// </summary>
internal sealed record FuzzCase(
    int Seed,
    string Description,
    ModelProto Model,
    IReadOnlyList<FuzzInput> Inputs,
    IReadOnlyList<(long S, long T)> Lengths,
    long Entries,
    DataType Type,
    string? MustRefuse,
    bool QuantizingFill = false)
{
    public const long Batch = 2;

    public override string ToString() => $"seed {Seed}: {Description}";

    /// <summary>Whether an int64 mask input holds 2 (outside what <see cref="OrtFlash.GraphRewriter.RewriteOptions.IntegerMasksAreBinary"/> assumes).</summary>
    public bool IntegerMaskHoldsTwo => Inputs.Any(i => i.Type == DataType.Int64 && i.Content == InputContent.Counts);

    /// <summary>Inputs for one (S, T) pair; masks hide keys by one pattern drawn per call, whatever their broadcast shape.</summary>
    public Dictionary<string, TestTensor> CreateInputs(Random random, long s, long t)
    {
        var pattern = MaskPattern.Draw(random, s);
        var tensors = new Dictionary<string, TestTensor>();
        foreach (var input in Inputs)
        {
            var shape = input.Dims.Select(d => d switch
            {
                "B" => Batch,
                "N" => Entries,
                "S" => s,
                "T" => t,
                "K" => s + t,
                _ => Convert.ToInt64(d, System.Globalization.CultureInfo.InvariantCulture),
            }).ToArray();
            tensors[input.Name] = input.Content switch
            {
                InputContent.Random => TestTensor.Random(random, shape, input.Type, input.Scale),
                InputContent.Scalar => new TestTensor(input.Type, shape, [input.Fill]),
                _ => MaskTensor(random, input, shape, pattern),
            };
        }

        return tensors;
    }

    private static TestTensor MaskTensor(Random random, FuzzInput input, long[] shape, MaskPattern pattern)
    {
        var keyAxis = Array.IndexOf(input.Roles, AxisRole.Key);
        var keys = keyAxis >= 0 ? shape[keyAxis] : 1;
        var count = shape.Aggregate(1L, (p, d) => p * d);
        var data = new float[count];
        var index = new long[shape.Length];
        for (var i = 0L; i < count; i++)
        {
            var rest = i;
            for (var axis = shape.Length - 1; axis >= 0; axis--)
            {
                index[axis] = rest % shape[axis];
                rest /= shape[axis];
            }

            long entry = 0, row = -1, key = 0;
            for (var axis = 0; axis < shape.Length; axis++)
            {
                switch (input.Roles[axis])
                {
                    case AxisRole.Entry: entry = index[axis]; break;
                    case AxisRole.Row: row = index[axis]; break;
                    case AxisRole.Key: key = index[axis]; break;
                }
            }

            var visible = pattern.Visible(random, entry, row, key, keys);
            var value = input.Content switch
            {
                InputContent.Keep => visible ? 1f : 0f,
                InputContent.Counts => !visible ? 0f : random.NextDouble() < 0.7 ? 1f : input.Type == DataType.Int64 ? 2f : 0.5f,
                InputContent.Hidden => visible ? 0f : 1f,
                InputContent.Additive => visible ? 0f : input.Fill,
                InputContent.Bias => visible ? (float)(random.NextDouble() * 6 - 3) : input.Fill,
                InputContent.Penalty => visible ? 0f : -input.Fill,
                _ => throw new InvalidOperationException(input.Content.ToString()),
            };
            data[i] = input.Type == DataType.Float16 ? (float)(Half)value : value;
        }

        return new TestTensor(input.Type, shape, data);
    }

    /// <summary>
    /// Which keys a mask hides, for one run: entry 0 sometimes hides every key (a fully masked batch entry), odd entries pad
    /// a third of the keys at the end or the start, some query rows hide every key, and a few keys are hidden at random.
    /// </summary>
    private sealed record MaskPattern(bool FullyMaskedEntry, bool LeftPadding, HashSet<long> HiddenRows, double HoleRate)
    {
        public static MaskPattern Draw(Random random, long rows)
        {
            var hidden = new HashSet<long>();
            if (random.NextDouble() < 0.4)
            {
                hidden.Add(random.NextInt64(rows));
            }

            return new MaskPattern(random.NextDouble() < 0.3, random.NextDouble() < 0.4, hidden, random.NextDouble() < 0.5 ? 0 : 0.2);
        }

        public bool Visible(Random random, long entry, long row, long key, long keys)
        {
            if (FullyMaskedEntry && entry == 0)
            {
                return false;
            }

            if (row >= 0 && HiddenRows.Contains(row))
            {
                return false;
            }

            var padded = keys / 3;
            if (entry % 2 == 1 && (LeftPadding ? key < padded : key >= keys - padded))
            {
                return false;
            }

            return HoleRate == 0 || random.NextDouble() >= HoleRate;
        }
    }
}
