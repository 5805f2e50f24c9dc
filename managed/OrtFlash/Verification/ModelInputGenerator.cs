using System.Globalization;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OrtFlash.GraphRewriter.Onnx;

namespace OrtFlash.Verification;

/// <summary>
/// Generates realistic, deterministic inputs for an exported transformer from its declared inputs.
/// </summary>
/// <remarks>
/// <para>Rules, in order (names are compared case-insensitively):</para>
/// <list type="bullet">
/// <item>Input roles: a name with "mask" is a padding mask (any type); an integer with "position" holds positions; an
/// integer of rank 0 or 1 with "length"/"lens" holds lengths; other integers are token ids; a float with "past"/
/// "cache"/"present" is a KV cache; other floats are features; other booleans are flags.</item>
/// <item>Symbolic dimensions by name: "head" → a size that must be given (<see cref="DimensionRole.GivenSize"/>: BLOOM's
/// cached "batch_x_heads"); "batch" (or N, B, bs) → batch; "total", or "past" with a "+" (as in
/// "past_sequence_length + 1") → past + sequence; "past"/"cache" → past; "decoder" → decoder sequence; "encoder" →
/// sequence. Other
/// names, and unnamed dimensions, by position: axis 0 → batch (except a rank-1 position input); axis −2 of a KV
/// cache → past; the last axis of a mask in a model with a cache → past + sequence; anything else → sequence. One
/// name always gets one size, in every input.</item>
/// <item>Values: token ids uniform below the row count of the embedding table the ids index (read from the model's
/// Gather when a <see cref="ModelProto"/> is given; else 16, or 2 for "type" ids); positions past + 0, 1, ...;
/// masks keep every key of batch entry 0 and pad entry b's last <c>min(T − 1, b · max(1, T / 3))</c> keys (or first,
/// with <see cref="PaddingSide.Start"/>) — 1 = keep, except names with "padding_mask" (key_padding_mask), where
/// 1/true = padded; floats uniform in [−1, 1]; flags true ("cache" flags: true when the past length is &gt; 0).</item>
/// </list>
/// <para>Fixed dimensions are kept. Every value comes from a stream seeded by <see cref="InputGenerationOptions.Seed"/>
/// and the input's name, so the same options give the same inputs on every run and machine.</para>
/// </remarks>
public sealed class ModelInputGenerator
{
    private const long FallbackTokenIdBound = 16;
    private const long FallbackTypeIdBound = 2;

    private readonly InputPlan[] plans;

    /// <summary>Plans generation for the given inputs.</summary>
    /// <param name="inputs">The model's inputs, as declared.</param>
    /// <param name="model">The model itself, to bound token ids by the embedding table they index; optional.</param>
    /// <exception cref="NotSupportedException">An input is not a tensor, or has an element type that cannot be generated.</exception>
    public ModelInputGenerator(IEnumerable<ModelInputSpec> inputs, ModelProto? model = null)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        var specs = inputs.ToArray();
        Inputs = specs;
        var probe = model is null ? null : new EmbeddingTableProbe(model);
        var roles = specs.Select(ClassifyInput).ToArray();
        HasCache = specs.Where((input, i) => HasPastDimension(input, roles[i])).Any();
        var dimensionRoles = ResolveDimensionRoles(specs, roles, HasCache);
        plans = specs.Select((input, i) => new InputPlan(
            input,
            roles[i],
            dimensionRoles[i],
            roles[i] == InputRole.TokenIds ? probe?.RowCount(input.Name) : null)).ToArray();
    }

    /// <summary>Plans generation for a session's inputs.</summary>
    /// <inheritdoc cref="ModelInputGenerator(IEnumerable{ModelInputSpec}, ModelProto?)"/>
    public static ModelInputGenerator ForSession(InferenceSession session, ModelProto? model = null) =>
        new(ModelInputSpec.FromSession(session), model);

    /// <summary>The declared inputs, in order.</summary>
    public IReadOnlyList<ModelInputSpec> Inputs { get; }

    /// <summary>True when the model has a KV cache (a past dimension), so masks span past + new tokens.</summary>
    public bool HasCache { get; }

    /// <summary>The role given to each input, by name.</summary>
    public InputRole RoleOf(string inputName) => Plan(inputName).Role;

    /// <summary>The role given to each dimension of an input.</summary>
    public IReadOnlyList<DimensionRole> DimensionRolesOf(string inputName) => Plan(inputName).DimensionRoles;

    /// <summary>Generates one value per input. The caller owns the result and disposes it.</summary>
    /// <exception cref="NotSupportedException">A dimension counts attention heads (<see cref="DimensionRole.GivenSize"/>)
    /// and <see cref="InputGenerationOptions.DimensionOverrides"/> does not give its size.</exception>
    public GeneratedInputs Generate(InputGenerationOptions? options = null)
    {
        options ??= new InputGenerationOptions();
        options.Validate();
        var generated = new List<GeneratedInput>(plans.Length);
        var sizes = new Dictionary<string, long>(StringComparer.Ordinal);
        try
        {
            foreach (var plan in plans)
            {
                var shape = Shape(plan, options, sizes);
                generated.Add(Fill(plan, shape, options));
            }

            return new GeneratedInputs(generated, sizes);
        }
        catch
        {
            foreach (var input in generated)
            {
                input.Value.Dispose();
            }

            throw;
        }
    }

    private InputPlan Plan(string inputName) =>
        plans.FirstOrDefault(p => p.Spec.Name == inputName) ?? throw new ArgumentException($"The model has no input '{inputName}'.", nameof(inputName));

    private static bool IsFloat(TensorElementType type) =>
        type is TensorElementType.Float or TensorElementType.Float16 or TensorElementType.BFloat16 or TensorElementType.Double;

    private static bool IsInteger(TensorElementType type) => type is TensorElementType.Int64 or TensorElementType.Int32;

    private static bool Has(string name, string part) => name.Contains(part, StringComparison.OrdinalIgnoreCase);

    private static InputRole ClassifyInput(ModelInputSpec input)
    {
        if (!input.IsTensor)
        {
            throw new NotSupportedException(
                $"Input '{input.Name}' is not a tensor (a sequence, map or optional); generated inputs are tensors only.");
        }

        var type = input.ElementType;
        if (!IsFloat(type) && !IsInteger(type) && type != TensorElementType.Bool)
        {
            throw new NotSupportedException(
                $"Input '{input.Name}' has element type {type}; inputs can be generated for float, float16, bfloat16, double, " +
                "int64, int32 and bool tensors only.");
        }

        if (Has(input.Name, "mask"))
        {
            return InputRole.PaddingMask;
        }

        if (IsFloat(type))
        {
            return Has(input.Name, "past") || Has(input.Name, "cache") || Has(input.Name, "present") ? InputRole.PastState : InputRole.Features;
        }

        if (type == TensorElementType.Bool)
        {
            return InputRole.Flag;
        }

        if (Has(input.Name, "position"))
        {
            return InputRole.PositionIds;
        }

        return input.Dimensions.Count <= 1 && (Has(input.Name, "length") || Has(input.Name, "lens") || Has(input.Name, "seqlen"))
            ? InputRole.Length
            : InputRole.TokenIds;
    }

    private static bool HasPastDimension(ModelInputSpec input, InputRole role)
    {
        if (input.Dimensions.Any(d => d.IsSymbolic && RoleFromName(d.SymbolicName) == DimensionRole.PastSequence))
        {
            return true;
        }

        return role == InputRole.PastState && input.Dimensions.Count >= 3 && input.Dimensions[^2].IsSymbolic;
    }

    /// <summary>The role a dimension name says outright, or null when the name says nothing recognisable.</summary>
    private static DimensionRole? RoleFromName(string symbol)
    {
        if (symbol.Length == 0)
        {
            return null;
        }

        if (Has(symbol, "head"))
        {
            return DimensionRole.GivenSize;
        }

        if (Has(symbol, "batch") || symbol is "N" or "n" or "B" or "b" or "bs")
        {
            return DimensionRole.Batch;
        }

        if (Has(symbol, "total") || (Has(symbol, "past") && symbol.Contains('+', StringComparison.Ordinal)))
        {
            return DimensionRole.TotalSequence;
        }

        if (Has(symbol, "past") || Has(symbol, "cache"))
        {
            return DimensionRole.PastSequence;
        }

        if (Has(symbol, "decoder"))
        {
            return DimensionRole.DecoderSequence;
        }

        // Encoder lengths, also those of cross-attention caches ("encoder_sequence_length_out"), are not past lengths.
        return Has(symbol, "encoder") ? DimensionRole.Sequence : null;
    }

    /// <summary>The role a dimension's position gives it, for unnamed dimensions and names that say nothing.</summary>
    private static DimensionRole RoleFromPosition(ModelInputSpec input, InputRole role, int axis, bool hasCache)
    {
        int rank = input.Dimensions.Count;
        if (role == InputRole.PastState && rank >= 3 && axis == rank - 2)
        {
            return DimensionRole.PastSequence;
        }

        if (axis == 0 && !(role == InputRole.PositionIds && rank == 1))
        {
            return DimensionRole.Batch;
        }

        return role == InputRole.PaddingMask && hasCache && axis == rank - 1 ? DimensionRole.TotalSequence : DimensionRole.Sequence;
    }

    private static DimensionRole[][] ResolveDimensionRoles(ModelInputSpec[] inputs, InputRole[] roles, bool hasCache)
    {
        // A name that says nothing gets its role from where it appears; it must agree everywhere, else it is a sequence.
        var positionalByName = new Dictionary<string, DimensionRole>(StringComparer.Ordinal);
        var conflicting = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < inputs.Length; i++)
        {
            for (int axis = 0; axis < inputs[i].Dimensions.Count; axis++)
            {
                var dimension = inputs[i].Dimensions[axis];
                if (!dimension.IsSymbolic || dimension.SymbolicName.Length == 0 || RoleFromName(dimension.SymbolicName) is not null)
                {
                    continue;
                }

                var positional = RoleFromPosition(inputs[i], roles[i], axis, hasCache);
                if (positionalByName.TryGetValue(dimension.SymbolicName, out var earlier) && earlier != positional)
                {
                    conflicting.Add(dimension.SymbolicName);
                }

                positionalByName[dimension.SymbolicName] = positional;
            }
        }

        return inputs.Select((input, i) => input.Dimensions.Select((dimension, axis) =>
        {
            if (!dimension.IsSymbolic)
            {
                return DimensionRole.Fixed;
            }

            if (dimension.SymbolicName.Length == 0)
            {
                return RoleFromPosition(input, roles[i], axis, hasCache);
            }

            return RoleFromName(dimension.SymbolicName)
                   ?? (conflicting.Contains(dimension.SymbolicName) ? DimensionRole.Sequence : positionalByName[dimension.SymbolicName]);
        }).ToArray()).ToArray();
    }

    private static long SizeOf(DimensionRole role, InputGenerationOptions options) => role switch
    {
        DimensionRole.Batch => options.BatchSize,
        DimensionRole.Sequence => options.SequenceLength,
        DimensionRole.DecoderSequence => options.EffectiveDecoderSequenceLength,
        DimensionRole.PastSequence => options.PastSequenceLength,
        DimensionRole.TotalSequence => (long)options.PastSequenceLength + options.SequenceLength,
        _ => throw new ArgumentOutOfRangeException(nameof(role), role, "A fixed dimension has no generated size."),
    };

    private static long[] Shape(InputPlan plan, InputGenerationOptions options, Dictionary<string, long> sizes)
    {
        var shape = new long[plan.Spec.Dimensions.Count];
        for (int axis = 0; axis < shape.Length; axis++)
        {
            var dimension = plan.Spec.Dimensions[axis];
            if (!dimension.IsSymbolic)
            {
                shape[axis] = dimension.FixedSize;
                continue;
            }

            string name = dimension.SymbolicName;
            if (name.Length > 0 && options.DimensionOverrides.TryGetValue(name, out long overridden))
            {
                shape[axis] = overridden;
            }
            else if (name.Length > 0 && sizes.TryGetValue(name, out long earlier))
            {
                shape[axis] = earlier;
            }
            else if (plan.DimensionRoles[axis] == DimensionRole.GivenSize)
            {
                throw new NotSupportedException(
                    $"Dimension '{name}' of input '{plan.Spec.Name}' counts attention heads, which the inputs do not tell: " +
                    $"give its size (InputGenerationOptions.DimensionOverrides; CLI: --dim {name}=SIZE, e.g. batch size × heads).");
            }
            else
            {
                shape[axis] = SizeOf(plan.DimensionRoles[axis], options);
            }

            if (name.Length > 0)
            {
                sizes[name] = shape[axis];
            }
        }

        return shape;
    }

    private static GeneratedInput Fill(InputPlan plan, long[] shape, InputGenerationOptions options)
    {
        long count = 1;
        foreach (long size in shape)
        {
            count = checked(count * size);
        }

        var values = new double[count];
        var random = DeterministicRandom.ForInput(options.Seed, plan.Spec.Name);
        string description;
        switch (plan.Role)
        {
            case InputRole.TokenIds:
                long bound = plan.EmbeddingRows ?? (Has(plan.Spec.Name, "type") ? FallbackTypeIdBound : FallbackTokenIdBound);
                for (long i = 0; i < count; i++)
                {
                    values[i] = random.NextBelow(bound);
                }

                description = string.Create(CultureInfo.InvariantCulture,
                    $"token ids in [0, {bound}) ({(plan.EmbeddingRows is null ? "no embedding table found" : "embedding table rows")})");
                break;

            case InputRole.PositionIds:
                long positions = shape.Length == 0 ? 1 : shape[^1];
                for (long i = 0; i < count; i++)
                {
                    values[i] = options.PastSequenceLength + (i % positions);
                }

                description = string.Create(CultureInfo.InvariantCulture, $"positions {options.PastSequenceLength}, {options.PastSequenceLength + 1}, ...");
                break;

            case InputRole.PaddingMask:
                description = FillMask(plan, shape, values, options);
                break;

            case InputRole.Length:
                long length = Has(plan.Spec.Name, "past") ? options.PastSequenceLength
                    : Has(plan.Spec.Name, "total") ? (long)options.PastSequenceLength + options.SequenceLength
                    : options.SequenceLength;
                Array.Fill(values, length);
                description = string.Create(CultureInfo.InvariantCulture, $"length {length}");
                break;

            case InputRole.Flag:
                bool flag = !Has(plan.Spec.Name, "cache") || options.PastSequenceLength > 0;
                Array.Fill(values, flag ? 1.0 : 0.0);
                description = flag ? "flag, true" : "flag, false (no past)";
                break;

            default:
                for (long i = 0; i < count; i++)
                {
                    values[i] = random.NextSigned();
                }

                description = plan.Role == InputRole.PastState ? "cache, uniform in [-1, 1]" : "uniform in [-1, 1]";
                break;
        }

        return new GeneratedInput(plan.Spec.Name, plan.Role, plan.Spec.ElementType, shape, description,
            CreateTensor(plan.Spec.ElementType, values, shape));
    }

    private static string FillMask(InputPlan plan, long[] shape, double[] values, InputGenerationOptions options)
    {
        bool oneMeansPadded = Has(plan.Spec.Name, "padding_mask");
        double keep = oneMeansPadded ? 0 : 1;
        string one = plan.Spec.ElementType == TensorElementType.Bool ? "true" : "1";
        string polarity = oneMeansPadded ? $"{one} = padded" : $"{one} = keep";
        bool batched = shape.Length >= 2 && plan.DimensionRoles[0] == DimensionRole.Batch;
        long keys = shape.Length == 0 ? 1 : shape[^1];
        if (!batched || values.Length == 0)
        {
            Array.Fill(values, keep);
            return $"mask, {polarity}, nothing padded";
        }

        long perEntry = values.Length / shape[0];
        var padded = new List<string>();
        for (long b = 0; b < shape[0]; b++)
        {
            long pad = PaddedKeys(b, keys);
            if (pad > 0)
            {
                padded.Add(string.Create(CultureInfo.InvariantCulture, $"entry {b}: {pad} of {keys}"));
            }

            for (long i = b * perEntry; i < (b + 1) * perEntry; i++)
            {
                long key = i % keys;
                bool isPadded = options.Padding == PaddingSide.End ? key >= keys - pad : key < pad;
                values[i] = isPadded ? 1 - keep : keep;
            }
        }

        string side = options.Padding == PaddingSide.End ? "end" : "start";
        return padded.Count == 0 ? $"mask, {polarity}, nothing padded" : $"mask, {polarity}, padded at the {side} ({string.Join(", ", padded)})";
    }

    /// <summary>Keys padded in batch entry <paramref name="entry"/>: none in entry 0, and always at least one key kept,
    /// so no query row is fully masked (a fully masked row is undefined territory, not a parity check).</summary>
    private static long PaddedKeys(long entry, long keys) => Math.Max(0, Math.Min(keys - 1, entry * Math.Max(1, keys / 3)));

    private static OrtValue CreateTensor(TensorElementType type, double[] values, long[] shape) => type switch
    {
        TensorElementType.Float => OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(values, v => (float)v), shape),
        TensorElementType.Double => OrtValue.CreateTensorValueFromMemory(values, shape),
        TensorElementType.Float16 => OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(values, v => (Float16)(float)v), shape),
        TensorElementType.BFloat16 => OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(values, v => (BFloat16)(float)v), shape),
        TensorElementType.Int64 => OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(values, v => (long)v), shape),
        TensorElementType.Int32 => OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(values, v => (int)v), shape),
        TensorElementType.Bool => OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(values, v => v != 0), shape),
        _ => throw new NotSupportedException($"Element type {type} cannot be generated."),
    };

    private sealed record InputPlan(ModelInputSpec Spec, InputRole Role, IReadOnlyList<DimensionRole> DimensionRoles, long? EmbeddingRows);
}
