using System.Collections.Immutable;
using OrtFlash.GraphRewriter.Graph;

namespace OrtFlash.GraphRewriter.Rules;

/// <summary>Where the attention scale was found. Several may combine.</summary>
[Flags]
public enum ScalePlacement
{
    /// <summary>No scale anywhere: the op gets scale 1.0.</summary>
    None = 0,

    /// <summary>Div(scores, c) after the score MatMul.</summary>
    DivideScores = 1,

    /// <summary>Mul(scores, c) or Mul(c, scores) after the score MatMul.</summary>
    MultiplyScores = 2,

    /// <summary>Mul/Div on the query right before the score MatMul (folded into the op's scale).</summary>
    Query = 4,

    /// <summary>Mul/Div on the key, before or after its transpose (folded into the op's scale).</summary>
    Key = 8,

    /// <summary>Mul/Div on the query before its head split; left in the graph, not in the op's scale.</summary>
    QueryBeforeHeadSplit = 16,

    /// <summary>The scale attribute of an ONNX Attention node, or its 1/√D default.</summary>
    Attribute = 32,
}

/// <summary>How the key reaches the score MatMul transposed.</summary>
public enum KeyLayout
{
    /// <summary>Transpose(perm=[0,1,3,2]) of a (B, H, S, D) key.</summary>
    SwapLastAxes,

    /// <summary>Transpose(perm=[0,2,3,1]) of a (B, S, H, D) key: the head split merged into the transpose.</summary>
    HeadSplitMerged,

    /// <summary>Transpose(perm=[0,2,1]) of a (B·H, S, D) key.</summary>
    Rank3,

    /// <summary>Reshape to 3-D, Transpose(perm=[0,2,1]), Reshape back to 4-D.</summary>
    ReshapedRank3,

    /// <summary>Transpose(perm=[1,2,0]) of a (S, B·H, D) key: nn.MultiheadAttention's batch swap merged with Kᵀ.</summary>
    Rank3SequenceFirst,

    /// <summary>
    /// A (B·H, D, T) operand that already is Kᵀ as the graph stores it (BLOOM: the head split and Kᵀ merged into one
    /// Transpose(0,2,3,1) before flattening to 3-D; with a cache, Concat(past_key, ·, axis=2)); the rewrite transposes
    /// it to (B·H, T, D).
    /// </summary>
    Rank3Transposed,

    /// <summary>An untransposed (B, H, S, D) key, as ONNX Attention takes it.</summary>
    NotTransposed,

    /// <summary>The key operand of a score Einsum; its axes are permuted to (B, H, S, D) as the equation says.</summary>
    Einsum,
}

/// <summary>What a mask term in the score chain is.</summary>
public enum MaskKind
{
    /// <summary>Add(scores, mask): passed as the op's bias.</summary>
    AdditiveBias,

    /// <summary>Where(cond, scores, −inf): passed as the op's keep input.</summary>
    KeepNegativeInfinity,

    /// <summary>Where(cond, scores, F) with a finite F so large that s + F == F: an equivalent bias.</summary>
    FiniteFill,

    /// <summary>A lower-triangular mask recognised from its structure: the op's causal attribute.</summary>
    Causal,

    /// <summary>
    /// Add(scores, Z) with Z provably ±0 everywhere and no larger than the scores (torch.baddbmm into a zeros tensor, as
    /// GPT-NeoX writes it): s + 0 is s, so it is dropped.
    /// </summary>
    Zero,
}

/// <summary>The op's causal attribute values.</summary>
public enum CausalAlignment
{
    /// <summary>No causal mask.</summary>
    None = 0,

    /// <summary>Key j visible to query i iff j ≤ i.</summary>
    UpperLeft = 1,

    /// <summary>Key j visible to query i iff j ≤ i + Skv − Sq (KV cache).</summary>
    LowerRight = 2,
}

/// <summary>What a query row with no visible key yields (the op's masked_rows attribute).</summary>
public enum MaskedRowPolicy
{
    /// <summary>NaN, as plain Softmax over all −inf gives.</summary>
    NaN,

    /// <summary>Zeros, as a Where(IsNaN(p), 0, p) guard gives, or a Where zeroing the probabilities of hidden keys.</summary>
    Zero,
}

/// <summary>Nodes between Softmax and the output MatMul, and around Softmax, that the match absorbed.</summary>
[Flags]
public enum ProbabilityWrappers
{
    /// <summary>Softmax feeds the MatMul directly.</summary>
    None = 0,

    /// <summary>A Cast after Softmax.</summary>
    Cast = 1,

    /// <summary>An inference-mode Dropout.</summary>
    Dropout = 2,

    /// <summary>An Identity.</summary>
    Identity = 4,

    /// <summary>Where(IsNaN(p), 0, p).</summary>
    NaNGuard = 8,

    /// <summary>A Cast to float before Softmax (fp16/bf16 models).</summary>
    SoftmaxUpcast = 16,

    /// <summary>Max(scores, c) after the mask.</summary>
    Clamp = 32,

    /// <summary>Where(c, 0, p) zeroing the probabilities of exactly the keys a Where before Softmax hides (HF DeBERTa's XSoftmax).</summary>
    HiddenZeroed = 64,
}

/// <summary>
/// A Where after Softmax that sets the probabilities of hidden keys to 0 (HF DeBERTa's XSoftmax: masked_fill of the scores
/// with finfo.min, Softmax, masked_fill of the probabilities with 0, both with one condition).
/// </summary>
/// <param name="Where">The Where node.</param>
/// <param name="Condition">Its condition.</param>
/// <param name="ZeroWhenTrue">Whether true in <paramref name="Condition"/> means the probability is set to 0.</param>
public sealed record ZeroedProbabilities(Node Where, Value Condition, bool ZeroWhenTrue);

/// <summary>One mask found in the score chain.</summary>
/// <param name="Kind">What it is.</param>
/// <param name="Source">The mask tensor (additive bias) or boolean condition (Where).</param>
/// <param name="Fill">The Where fill value (−inf or finite); 0 for additive masks.</param>
/// <param name="KeepWhenTrue">For Where: whether true in <paramref name="Source"/> means the score is kept.</param>
/// <param name="Node">The Add or Where node.</param>
/// <param name="Alignment">For <see cref="MaskKind.Causal"/>: the alignment the structure proves.</param>
public sealed record MaskTerm(MaskKind Kind, Value Source, double Fill, bool KeepWhenTrue, Node Node,
                              CausalAlignment Alignment = CausalAlignment.None)
{
    /// <summary>
    /// Whether the mask is applied to the (B, H, S, T) view of 3-D scores (after <see cref="ScoresView.Split"/>, and before
    /// <see cref="ScoresView.Merge"/> when there is one) rather than to the (B·H, S, T) scores themselves.
    /// </summary>
    public bool OnView { get; init; }

    /// <summary>Whether the mask is subtracted (Sub(scores, M), as tf2onnx writes it).</summary>
    public bool Subtracted { get; init; }

    /// <summary>
    /// For a <see cref="MaskKind.FiniteFill"/> split off a combined causal mask: the condition is not in the graph but is
    /// Equal(<see cref="Source"/>, 0) (true = hidden); the rewrite builds it.
    /// </summary>
    public bool HiddenWhereZero { get; init; }

    /// <summary>
    /// For a <see cref="MaskKind.FiniteFill"/> split off a combined causal mask that the graph adds to the scores (Llama's
    /// mask, the older builder's as Falcon adds it): the graph adds the fill to the scores it hides, as the op adds its
    /// bias, so a fill that does not absorb the scores (float16's −65504) is still reproduced exactly.
    /// </summary>
    public bool AddedToScores { get; init; }
}

/// <summary>
/// 3-D (B·H, S, T) scores viewed as (B, H, S, T) and back: BART adds its mask to the view (Reshape→Add→Reshape before
/// Softmax), BLOOM masks the view and runs Softmax on it, merging the probabilities back after Softmax, GPT-NeoX keeps
/// the view and multiplies it with a (B, H, T, D) value (no merge). The op then runs on the view: the 3-D Q and K (and
/// a 3-D V) are regrouped to (B, H, ·, ·) by the split's leading dims, the output merged back when the graph merged.
/// </summary>
/// <param name="Split">Reshape (B·H, S, T) → (B, H, S, T), proven to split only the leading axis.</param>
/// <param name="Merge">Reshape (B, H, S, T) → (B·H, S, T), proven to merge only the leading axes; before or after Softmax;
/// null when the value product reads the view itself.</param>
/// <param name="Windowed">
/// 4-D (B·nW, H, S, T) scores viewed as (B, nW, H, S, T) (Swin adds its window mask there), merged back before Softmax. The op
/// runs on the 4-D scores themselves: nothing is regrouped, and masks on the view are broadcast over it and flattened.
/// </param>
public sealed record ScoresView(Node Split, Node? Merge, bool Windowed = false)
{
    /// <summary>The split's shape input; its first two entries are (B, H).</summary>
    public Value SplitShape => Split.Input(1)!;

    /// <summary>The (B, H, S, T) scores.</summary>
    public Value GroupedScores => Split.Output(0)!;
}

/// <summary>
/// Einsum-based attention (tf2onnx Keras MultiHeadAttention): how each operand's axes map onto the
/// op's (B, H, S, D), as Transpose permutations (identity when none is needed).
/// </summary>
/// <param name="Query">Permutation taking the query operand to (B, H, Sq, D).</param>
/// <param name="Key">Permutation taking the key operand to (B, H, Skv, D).</param>
/// <param name="Value">Permutation taking the value operand to (B, H, Skv, Dv).</param>
/// <param name="Output">Permutation taking the op's (B, H, Sq, Dv) to the value product's output.</param>
public sealed record EinsumLayout(long[] Query, long[] Key, long[] Value, long[] Output)
{
    /// <summary>Whether <paramref name="permutation"/> leaves every axis in place.</summary>
    public static bool IsIdentity(IReadOnlyList<long> permutation)
    {
        ArgumentNullException.ThrowIfNull(permutation);
        return permutation.Select((p, i) => p == i).All(same => same);
    }

    /// <summary><paramref name="shape"/> with its axes taken in the order of <paramref name="permutation"/>.</summary>
    public static IReadOnlyList<Dim>? Permute(IReadOnlyList<Dim>? shape, IReadOnlyList<long> permutation)
    {
        ArgumentNullException.ThrowIfNull(permutation);
        return shape is { } s && s.Count == permutation.Count ? permutation.Select(p => s[(int)p]).ToArray() : null;
    }
}

/// <summary>
/// Softmax written out as Div(E, ReduceSum(E)) with E = Exp(Sub(x, ReduceMax(x))) (the TorchScript
/// exporter's form when the rank is unknown) or, refused, E = Exp(x).
/// </summary>
/// <param name="ReduceMax">The row max subtracted before Exp; null when there is none.</param>
/// <param name="ReduceSum">The row sum divided by.</param>
public sealed record DecomposedSoftmax(Node? ReduceMax, Node ReduceSum);

/// <summary>The key as the op will read it, and how it was found.</summary>
/// <param name="Value">The untransposed key (or, for <see cref="KeyLayout.HeadSplitMerged"/>, the (B, S, H, D) tensor to transpose).</param>
/// <param name="Layout">How it reached the score MatMul.</param>
/// <param name="Factor">Scale factors peeled off the key side.</param>
public sealed record KeyMatch(Value Value, KeyLayout Layout, double Factor);

/// <summary>The query as the op will read it.</summary>
/// <param name="Value">The query fed to the op.</param>
/// <param name="Factor">A factor folded into the op's scale (Mul/Div right before the MatMul).</param>
/// <param name="PreScale">A factor applied before the head split and left in the graph (1 when none).</param>
/// <param name="Placement">Where the query's scale was.</param>
public sealed record QueryMatch(Value Value, double Factor, double PreScale, ScalePlacement Placement);

/// <summary>Everything between the score MatMul and Softmax.</summary>
/// <param name="ScoresMatMul">MatMul(Q, Kᵀ).</param>
/// <param name="Nodes">The chain's nodes (scale, softcap, masks, clamp), all private to the pattern.</param>
/// <param name="Masks">The masks, outermost (closest to Softmax) first.</param>
/// <param name="Factor">The post-MatMul scale factor (1 when none).</param>
/// <param name="Placement">Where that factor was.</param>
/// <param name="Softcap">Softcap c of c·tanh(s/c), or 0.</param>
/// <param name="Clamp">The Max clamp constant, or null.</param>
public sealed record ScoreChain(
    Node ScoresMatMul,
    ImmutableList<Node> Nodes,
    ImmutableList<MaskTerm> Masks,
    double Factor,
    ScalePlacement Placement,
    float Softcap,
    double? Clamp)
{
    /// <summary>The merge Reshape of a (B, H, S, T) view of 3-D scores, once found walking up from the anchor.</summary>
    public Node? Merge { get; init; }

    /// <summary>The split Reshape of that view, found above the merge.</summary>
    public Node? Split { get; init; }

    /// <summary>
    /// The splits of later views of the same scores, each right after the merge of the one before (CLIP adds each of its
    /// two masks on a view of its own); each must give the shape of <see cref="Split"/>'s view.
    /// </summary>
    public ImmutableList<Node> Resplits { get; init; } = [];

    /// <summary>Whether the view is a <see cref="ScoresView.Windowed"/> one.</summary>
    public bool Windowed { get; init; }

    /// <summary>The view, once its split was found (the merge, when there is one, is found before it).</summary>
    public ScoresView? View => Split is { } split ? new ScoresView(split, Merge, Windowed) : null;
}

/// <summary>An attention subgraph found by <see cref="ScaledDotProductAttentionRule"/>.</summary>
/// <param name="Anchor">MatMul(P, V), the node whose output the fused op takes over.</param>
/// <param name="Softmax">The Softmax node (the final Div of a decomposed softmax).</param>
/// <param name="Query">The query.</param>
/// <param name="Key">The key.</param>
/// <param name="Value">The value (after any removed head repeat).</param>
/// <param name="Scores">The score chain.</param>
/// <param name="Wrappers">Nodes absorbed around Softmax.</param>
/// <param name="ProbabilityNodes">Nodes from Softmax (inclusive) to the anchor (exclusive).</param>
/// <param name="KvHeadRepeatRemoved">Whether a GQA head repeat on K and V was bypassed.</param>
public sealed record AttentionMatch(
    Node Anchor,
    Node Softmax,
    QueryMatch Query,
    KeyMatch Key,
    Value Value,
    ScoreChain Scores,
    ProbabilityWrappers Wrappers,
    ImmutableList<Node> ProbabilityNodes,
    bool KvHeadRepeatRemoved)
{
    /// <summary>Why a recognised causal mask was kept as a mask input, if it was.</summary>
    public string? CausalNote { get; init; }

    /// <summary>For Einsum-based attention: how the operands are permuted around the op.</summary>
    public EinsumLayout? Einsum { get; init; }

    /// <summary>When Softmax is written out: its reductions (<see cref="Softmax"/> is then the Div).</summary>
    public DecomposedSoftmax? DecomposedSoftmax { get; init; }

    /// <summary>The scale attribute: every factor folded into the op.</summary>
    public double Scale => Query.Factor * Key.Factor * Scores.Factor;

    /// <summary>Where the scale was found.</summary>
    public ScalePlacement ScalePlacement => Query.Placement | Scores.Placement | (Key.Factor != 1 ? ScalePlacement.Key : ScalePlacement.None);

    /// <summary>Whether the graph guarded fully masked rows to zero.</summary>
    public MaskedRowPolicy MaskedRows => (Wrappers & (ProbabilityWrappers.NaNGuard | ProbabilityWrappers.HiddenZeroed)) != 0 ? MaskedRowPolicy.Zero : MaskedRowPolicy.NaN;

    /// <summary>
    /// The Where after Softmax that zeroes hidden keys' probabilities, when there is one; the Where mask it matches is then
    /// the op's keep input (its fill replaced by −inf, which is exact with this zeroing: see the rule's ZeroedHidden).
    /// </summary>
    public ZeroedProbabilities? Zeroed { get; init; }
}

/// <summary>The outcome of a rule's check: fuse, or a reason not to.</summary>
/// <param name="Reason">Null when the match may be fused.</param>
public readonly record struct CheckResult(string? Reason)
{
    /// <summary>Remarks on a fusable match (conversions made for the op's contract).</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];

    /// <summary>The match may be fused.</summary>
    public static CheckResult Ok => new(null);

    /// <summary>Whether the match may be fused.</summary>
    public bool IsOk => Reason is null;

    /// <summary>A refusal with its reason.</summary>
    public static CheckResult Refuse(string reason) => new(reason);
}
