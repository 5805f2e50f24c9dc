namespace OrtFlash.GraphRewriter;

/// <summary>
/// Choices that let the rewriter trade exactness on a documented set of rows or inputs for a faster fused graph.
/// The default (<see cref="Default"/>) changes nothing for masks holding 0 and 1: every fusion computes what the
/// original graph computes (see <see cref="IntegerMasksAreBinary"/> for integer masks holding other values).
/// </summary>
public sealed record RewriteOptions
{
    /// <summary>Exact rewriting only; what <see cref="AttentionFuser.Rewrite(Onnx.ModelProto, RewriteOptions?)"/> uses when given none.</summary>
    public static RewriteOptions Default { get; } = new();

    /// <summary>
    /// Use the op's <c>causal</c> attribute (1 upper-left, 2 lower-right for a KV cache) for a recognised causal
    /// mask even when it is combined with a padding mask whose fill is finite (GPT-2 style <c>finfo.min</c>), and for
    /// causal masks filled with float16's −65504 on the score bound stated below.
    /// The padding part stays the op's <c>bias</c>/<c>keep</c> input; the (Sq, Skv) causal mask is no longer read.
    /// <para>
    /// What may differ from the original graph: only query rows in which every causally visible key is also
    /// masked by padding. The original graph gives such a row a softmax over the finite fill on every key, which
    /// averages V over all keys (the causally hidden ones included, hence over the "future"); with the attribute
    /// the hidden keys are excluded, so the row averages V over its causally visible (padded) keys only. Every row
    /// with at least one visible, unpadded key is computed exactly as before. Such rows only exist where padding
    /// covers a query's whole causal prefix, e.g. left padding; with right padding every row sees key 0 unpadded.
    /// </para>
    /// <para>
    /// Float16 exports fill with finfo(float16).min = −65504, which does not absorb a score (s + F ≠ F). The option also
    /// takes a fill at or below −65504 to hide a key, assuming that every score (scale·q·kᵀ, as the graph computes it) lies
    /// within ±16384 (2¹⁴). Then a hidden key's masked score is at most −48900 (s + F ≤ −49120; rounding to float16 or
    /// bfloat16 moves it by at most 2⁻⁸ of itself, a further fill only lowers it or makes it −inf), while a row with a
    /// visible, unmasked key has a largest score of at least −16384. The gap exceeds 32000, and exp(−104) already
    /// underflows to 0 in float32, so in the graph's softmax the hidden key weighs exactly 0, as with the attribute;
    /// the padding keys the op adds the fill to (in float32) likewise. Rows whose visible keys are all padded differ as
    /// above. Larger scores can give a hidden key weight in the original (a float16 graph that scales the query before
    /// Q·Kᵀ can reach ±65504); a float16 graph that scales the finite product Q·Kᵀ afterwards by at most 1/4 (head dim
    /// ≥ 16), as Llama does, cannot. Fusions relying on it carry a second note stating the bound.
    /// </para>
    /// Each fusion that uses it carries a note in the report saying so. False by default.
    /// </summary>
    public bool CausalForPaddedRows { get; init; }

    /// <summary>
    /// Take an integer mask m in <c>(1 − m)·finfo.min</c> (a Cast of an int64 <c>attention_mask</c>, as GPT-2, BLOOM and
    /// most Hugging Face exports build their padding) to hold only 0 and 1, the values an attention mask has. Then two
    /// masks can be summed into the op's bias, and a finite <c>Where</c> fill and a mask after it too, exactly.
    /// <para>
    /// What may differ from the original graph: only inputs where m holds another value. With m = 2 the mask is
    /// +finfo.max, which cancels another mask's finfo.min when the graph adds them to the scores one after the other
    /// ((s + finfo.min) + finfo.max is 0, s + (finfo.min + finfo.max) is s). Bool masks and (1 − m) of a bool m are 0/1 by
    /// their type and never need this.
    /// </para>
    /// Each fusion that relies on it carries a note. True by default, as the rewriter always assumed; false fuses only
    /// what holds for every integer value.
    /// </summary>
    public bool IntegerMasksAreBinary { get; init; } = true;
}
