namespace OrtFlash.Verification;

/// <summary>What a model input means, as <see cref="ModelInputGenerator"/> reads it from its name and type.</summary>
public enum InputRole
{
    /// <summary>Integer ids that index an embedding table (input_ids, decoder_input_ids, tokens, token_type_ids).</summary>
    TokenIds,

    /// <summary>Integer positions (position_ids, cache_position): past length + 0, 1, 2, ... along the last axis.</summary>
    PositionIds,

    /// <summary>A padding mask (any name containing "mask"); its last axis runs over the keys.</summary>
    PaddingMask,

    /// <summary>A float past key/value cache (a name containing "past" or "cache").</summary>
    PastState,

    /// <summary>Float features: embeddings, pixels, audio frames, encoder states.</summary>
    Features,

    /// <summary>Integer lengths, a scalar or one per batch entry (past_sequence_length, input_lengths, ...).</summary>
    Length,

    /// <summary>A boolean that is not a mask (use_cache_branch, ...).</summary>
    Flag,
}

/// <summary>What a symbolic dimension stands for, and so which size it gets.</summary>
public enum DimensionRole
{
    /// <summary>A size fixed by the model; kept.</summary>
    Fixed,

    /// <summary>Batch entries.</summary>
    Batch,

    /// <summary>New (query) tokens; also encoder length.</summary>
    Sequence,

    /// <summary>Decoder tokens of encoder-decoder models.</summary>
    DecoderSequence,

    /// <summary>Cached (past) tokens.</summary>
    PastSequence,

    /// <summary>Past + new tokens: the key length of a model with a cache.</summary>
    TotalSequence,

    /// <summary>
    /// A dimension whose name says it counts attention heads (BLOOM's cache is (batch × heads, D, P), named
    /// "batch_x_heads" or "batch_size x num_heads"): the inputs do not tell how many heads there are, so its size must be
    /// given in <see cref="InputGenerationOptions.DimensionOverrides"/>.
    /// </summary>
    GivenSize,
}
