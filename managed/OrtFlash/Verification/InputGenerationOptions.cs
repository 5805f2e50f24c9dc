namespace OrtFlash.Verification;

/// <summary>Where padding goes in a generated padding mask.</summary>
public enum PaddingSide
{
    /// <summary>Padding at the end of the keys (right padding, as tokenizers produce for encoders).</summary>
    End,

    /// <summary>Padding at the start of the keys (left padding, as in batched generation). With a causal mask the first
    /// queries of a padded entry may then see no key at all: such rows are undefined territory (NaN, or rounding-dependent
    /// in fp16), so compare with this only where that is the point.</summary>
    Start,
}

/// <summary>
/// Sizes and seed for <see cref="ModelInputGenerator"/>. Every symbolic dimension gets its size from its role:
/// batch → <see cref="BatchSize"/>, sequence → <see cref="SequenceLength"/>, past (KV cache) →
/// <see cref="PastSequenceLength"/>, total (past + new) → the sum, decoder sequence → <see cref="DecoderSequenceLength"/>.
/// </summary>
public sealed record InputGenerationOptions
{
    /// <summary>Batch entries; entry 0 is never padded, entries 1.. are.</summary>
    public int BatchSize { get; init; } = 2;

    /// <summary>New tokens per batch entry (the query length).</summary>
    public int SequenceLength { get; init; } = 7;

    /// <summary>Cached tokens, for models with past key/value inputs.</summary>
    public int PastSequenceLength { get; init; } = 3;

    /// <summary>Decoder tokens of encoder-decoder models; null: <c>max(1, SequenceLength − 2)</c>, so that cross-attention
    /// sees a query length different from its key length.</summary>
    public int? DecoderSequenceLength { get; init; }

    /// <summary>Seed of every generated value.</summary>
    public ulong Seed { get; init; } = 1234;

    /// <summary>Where padded keys sit in padding masks.</summary>
    public PaddingSide Padding { get; init; } = PaddingSide.End;

    /// <summary>Sizes by symbolic dimension name; they win over every rule.</summary>
    public IReadOnlyDictionary<string, long> DimensionOverrides { get; init; } = new Dictionary<string, long>();

    /// <summary>The decoder length these options give.</summary>
    public int EffectiveDecoderSequenceLength => DecoderSequenceLength ?? Math.Max(1, SequenceLength - 2);

    internal void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(BatchSize, 1, nameof(BatchSize));
        ArgumentOutOfRangeException.ThrowIfLessThan(SequenceLength, 1, nameof(SequenceLength));
        ArgumentOutOfRangeException.ThrowIfNegative(PastSequenceLength, nameof(PastSequenceLength));
        if (DecoderSequenceLength is { } decoder)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(decoder, 1, nameof(DecoderSequenceLength));
        }

        ArgumentNullException.ThrowIfNull(DimensionOverrides, nameof(DimensionOverrides));
        foreach (var (name, size) in DimensionOverrides)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(size, $"{nameof(DimensionOverrides)}[{name}]");
        }
    }
}
