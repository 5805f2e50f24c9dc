using System.Collections.Immutable;
using System.Globalization;
using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.GraphRewriter.Patterns;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.GraphRewriter.Rules;

/// <summary>The result of trying the pattern at one anchor.</summary>
/// <param name="Match">The match, when the whole pattern was found.</param>
/// <param name="Reason">Why an attention candidate (a Softmax feeding the anchor) did not match.</param>
public readonly record struct PatternResult(AttentionMatch? Match, string? Reason)
{
    /// <summary>The anchor is not an attention candidate at all (no Softmax feeds it).</summary>
    public bool IsCandidate => Match is not null || Reason is not null;
}

/// <summary>
/// softmax(scale · Q·Kᵀ (+ mask)) · V, anchored on MatMul(P, V), in the spellings of the common
/// exporters, rewritten into one <c>com.ortflash::FlashAttention</c> node.
/// </summary>
/// <remarks>
/// The pattern is a chain of slots walked upward from the anchor:
/// probabilities (Cast | Dropout | Identity | Where(IsNaN)) → Softmax → [Cast] → [Max clamp] →
/// masks (Add | Where, either operand order and polarity) → [softcap] → [scale: Div | Mul] →
/// MatMul(query slot, key slot). <see cref="Check"/> decides whether fusing keeps the model's
/// results and says why not; <see cref="Rewrite"/> emits exactly one fused node.
/// </remarks>
public sealed class ScaledDotProductAttentionRule
{
    /// <summary>The fused op's domain.</summary>
    public const string Domain = "com.ortflash";

    /// <summary>The fused op's type.</summary>
    public const string OpType = "FlashAttention";

    private const int MaxMasks = 2;

    private readonly GraphAnalysis _analysis;
    private readonly CausalMasks _causal;
    private readonly MaskValues _maskValues;
    private readonly MaskValues _binaryMaskValues;
    private readonly MaskValues _float64MaskValues;
    private readonly BroadcastMasks _broadcastMasks;

    /// <summary>The note carried by a fusion that is exact only for integer masks holding 0 and 1 (<see cref="RewriteOptions.IntegerMasksAreBinary"/>).</summary>
    public const string IntegerMasksAreBinaryNote =
        "Exact for integer and bool masks m holding 0 and 1 (RewriteOptions.IntegerMasksAreBinary; --exact-integer-masks refuses instead): with m = 2, (1 − m)·finfo.min is +finfo.max, " +
        "which cancels another finfo.min where the graph adds them to the scores one after the other.";
    private readonly RewriteOptions _options;
    private readonly Slot<QueryMatch> _query;
    private readonly Slot<KeyMatch> _key;

    /// <summary>The note carried by a fusion whose causal mask became the attribute under <see cref="RewriteOptions.CausalForPaddedRows"/>.</summary>
    public const string CausalForPaddedRowsNote =
        "Causal mask ({0}) used as the causal attribute although a mask with a finite fill (padding) is applied too " +
        "(RewriteOptions.CausalForPaddedRows, --causal-padded-rows): rows fully masked by padding may differ from the original " +
        "(where every causally visible key is masked, the original also weighs the causally hidden keys); every other row is exact.";

    /// <summary>
    /// The note added when the causal mask's fill hides keys only for bounded scores (float16's −65504), under
    /// <see cref="RewriteOptions.CausalForPaddedRows"/>; {0} is the fill.
    /// </summary>
    public const string BoundedScoresNote =
        "The causal mask fills hidden keys with {0}, which is not absorbing: the attribute assumes every score (scale·q·kᵀ as the graph " +
        "computes it) lies within ±16384 (RewriteOptions.CausalForPaddedRows). Then a hidden key's masked score is more than 32000 below " +
        "the row's largest wherever a key is left visible and unmasked, so it weighs exactly 0 in the original too; larger scores could " +
        "give it weight there.";

    /// <summary>Creates the rule over an analysis of the model it will rewrite.</summary>
    /// <param name="analysis">The analysis of the model.</param>
    /// <param name="options">What the rewrite may trade for speed; <see cref="RewriteOptions.Default"/> (exact) when null.</param>
    public ScaledDotProductAttentionRule(GraphAnalysis analysis, RewriteOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(analysis);
        _analysis = analysis;
        _options = options ?? RewriteOptions.Default;
        _causal = new CausalMasks(analysis, scoresBounded: _options.CausalForPaddedRows);
        _maskValues = new MaskValues(analysis, integerMasksAreBinary: false);
        _binaryMaskValues = new MaskValues(analysis, integerMasksAreBinary: true);
        _float64MaskValues = new MaskValues(analysis, integerMasksAreBinary: false, MaskValues.Float64Absorbing);
        _broadcastMasks = new BroadcastMasks(analysis);
        _query = new Slot<QueryMatch>("query",
        [
            new("Mul/Div by a constant right before the score MatMul", QueryScaledAtMatMul),
            new("Mul/Div by a constant before the head split", QueryScaledBeforeHeadSplit),
            new("unscaled", v => new QueryMatch(v, 1, 1, ScalePlacement.None)),
        ]);
        _key = new Slot<KeyMatch>("key",
        [
            new("Transpose(0,1,3,2)", v => KeyTransposed(v, [0, 1, 3, 2], KeyLayout.SwapLastAxes)),
            new("Transpose(0,2,3,1) merged with the head split", v => KeyTransposed(v, [0, 2, 3, 1], KeyLayout.HeadSplitMerged)),
            new("Transpose(0,2,1) of a 3-D key", v => KeyTransposed(v, [0, 2, 1], KeyLayout.Rank3)),
            new("Transpose(1,2,0) of a (S, B·H, D) key", v => KeyTransposed(v, [1, 2, 0], KeyLayout.Rank3SequenceFirst)),
            new("Reshape → Transpose(0,2,1) → Reshape", KeyTransposedThroughRank3),
            new("(B·H, D, T) operand stored as Kᵀ (BLOOM)", KeyStoredTransposedRank3),
        ]);
    }

    // ---- pattern --------------------------------------------------------------------------------

    /// <summary>Tries the pattern with <paramref name="anchor"/> as MatMul(P, V).</summary>
    public PatternResult Match(Node anchor)
    {
        ArgumentNullException.ThrowIfNull(anchor);
        var valueEinsum = anchor.Is("Einsum") ? ValueEinsum(anchor) : null;
        if (anchor.Is("Einsum") && valueEinsum is null && anchor.Inputs.Any(i => Ops.Producer(i, "Softmax") is not null))
        {
            return new PatternResult(null, UnknownEllipsisRank(anchor) ??
                $"Einsum '{anchor.DisplayName}' ('{anchor.StringAttribute("equation")}') reads Softmax probabilities but is not a 4-D or 3-D product contracting their last axis with one axis of the value.");
        }

        if (!(anchor.Is("MatMul") || valueEinsum is not null) || anchor.Inputs.Count != 2 ||
            anchor.Input(valueEinsum?.ProbabilityIndex ?? 0) is not { } probabilities || anchor.Input(1 - (valueEinsum?.ProbabilityIndex ?? 0)) is not { } value)
        {
            return default;
        }

        var wrappers = ProbabilityWrappers.None;
        var probabilityNodes = ImmutableList.CreateBuilder<Node>();
        var p = probabilities;
        Node? merge = null;
        ZeroedProbabilities? zeroed = null;
        var zeroedOnView = false;
        while (true)
        {
            if (merge is null && Ops.Producer(p, "Reshape") is { } reshape && ReachesSoftmax(reshape.Input(0)!))
            {
                // BLOOM: Softmax on a (B, H, S, T) view of 3-D scores, the probabilities merged back for a 3-D bmm; the
                // merge is proven against the split found above Softmax (ViewStep).
                if (_analysis.ShapeOf(reshape.Input(0)!)?.Count != 4 || _analysis.ShapeOf(p)?.Count != 3)
                {
                    return new PatternResult(null,
                        $"Reshape '{reshape.DisplayName}' after Softmax does not provably merge (B, H, S, T) probabilities into (B·H, S, T) " +
                        $"({Describe(reshape.Input(0)!)} → {Describe(p)}), so which rows the value product pairs is unknown.");
                }

                merge = reshape;
                probabilityNodes.Add(reshape);
                p = reshape.Input(0)!;
            }
            else if (Ops.Producer(p, "Cast", "Identity", "Dropout") is { } passThrough)
            {
                wrappers |= passThrough.OpType switch
                {
                    "Cast" => ProbabilityWrappers.Cast,
                    "Identity" => ProbabilityWrappers.Identity,
                    _ => ProbabilityWrappers.Dropout,
                };
                probabilityNodes.Add(passThrough);
                p = passThrough.Input(0)!;
            }
            else if (NaNGuard(p) is { } guard)
            {
                wrappers |= ProbabilityWrappers.NaNGuard;
                probabilityNodes.Add(guard.Where);
                probabilityNodes.Add(guard.IsNaN);
                p = guard.Guarded;
            }
            else if (zeroed is null && Zeroing(p) is { } zeroing)
            {
                wrappers |= ProbabilityWrappers.HiddenZeroed;
                zeroed = zeroing.Zeroed;
                zeroedOnView = merge is not null;
                probabilityNodes.Add(zeroing.Zeroed.Where);
                p = zeroing.Probabilities;
            }
            else
            {
                break;
            }
        }

        Node softmax;
        Value scores;
        DecomposedSoftmax? decomposed = null;
        if (Ops.Producer(p, "Softmax") is { } node)
        {
            (softmax, scores) = (node, node.Input(0)!);
            probabilityNodes.Add(softmax);
        }
        else if (Decomposed(p) is { } written)
        {
            (softmax, scores, decomposed) = (written.Div, written.Input, written.Form);
            probabilityNodes.AddRange(written.Nodes);
        }
        else
        {
            return default;
        }

        while (Widening(scores) is { } upcast)
        {
            wrappers |= ProbabilityWrappers.SoftmaxUpcast;
            probabilityNodes.Add(upcast);
            scores = upcast.Input(0)!;
        }

        if (MatchScores(scores, merge) is not { } chain)
        {
            return new PatternResult(null, UnresolvedScale(scores) ?? UnprovenView(scores, merge) ??
                $"No MatMul(Q, Kᵀ) above Softmax '{softmax.DisplayName}' through the recognised scale, softcap and mask nodes.");
        }

        if (zeroed is not null)
        {
            var hidden = ZeroedHidden(chain, zeroed, zeroedOnView);
            if (hidden.Chain is null)
            {
                return new PatternResult(null, hidden.Reason);
            }

            chain = hidden.Chain;
        }

        if (chain.Clamp is not null)
        {
            wrappers |= ProbabilityWrappers.Clamp;
        }

        if (chain.ScoresMatMul.Is("Einsum"))
        {
            var einsum = MatchEinsum(anchor, softmax, value, chain, valueEinsum, wrappers, probabilityNodes.ToImmutable());
            return einsum.Match is { } found ? einsum with { Match = found with { DecomposedSoftmax = decomposed } } : einsum;
        }

        var query = _query.Match(chain.ScoresMatMul.Input(0)!)!;
        if (_key.Match(chain.ScoresMatMul.Input(1)!) is not { } key)
        {
            return new PatternResult(null,
                $"The key operand of '{chain.ScoresMatMul.DisplayName}' is not transposed by a recognised op (Transpose(0,1,3,2), Transpose(0,2,3,1), Transpose(0,2,1), Transpose(1,2,0) or Reshape→Transpose→Reshape), or is scaled by a factor that is not a constant.");
        }

        var repeatRemoved = false;
        if (key.Layout == KeyLayout.SwapLastAxes && (valueEinsum is null || EinsumLayout.IsIdentity(valueEinsum.Value)) &&
            WithoutHeadRepeat(key, value) is { } kv)
        {
            (key, value, repeatRemoved) = (kv.Key, kv.Value, true);
        }

        // MatMul scores with an Einsum value product: Q and K as the key slot found them, V and the result permuted.
        var identity = Enumerable.Range(0, valueEinsum?.Value.Length ?? 0).Select(i => (long)i).ToArray();
        var match = new AttentionMatch(anchor, softmax, query, key, value, chain, wrappers, probabilityNodes.ToImmutable(), repeatRemoved)
        {
            Zeroed = zeroed,
            DecomposedSoftmax = decomposed,
            Einsum = valueEinsum is null ? null : new EinsumLayout(identity, identity, valueEinsum.Value, valueEinsum.Output),
        };
        return new PatternResult(RecognizeCausal(match), null);
    }

    /// <summary>Div(E, ReduceSum(E)) with E = Exp(Sub(x, ReduceMax(x))) or Exp(x): the nodes, x, and the reductions.</summary>
    private static (Node Div, Node[] Nodes, Value Input, DecomposedSoftmax Form)? Decomposed(Value probabilities)
    {
        if (Ops.Producer(probabilities, "Div") is not { Inputs.Count: 2 } div || Ops.Producer(div.Input(0), "Exp") is not { } exp ||
            Ops.Producer(div.Input(1), "ReduceSum") is not { } sum || sum.Input(0) != exp.Output(0))
        {
            return null;
        }

        if (Ops.Producer(exp.Input(0), "Sub") is { Inputs.Count: 2 } sub && Ops.Producer(sub.Input(1), "ReduceMax") is { } max && max.Input(0) == sub.Input(0))
        {
            return (div, [div, sum, exp, sub, max], sub.Input(0)!, new DecomposedSoftmax(max, sum));
        }

        return (div, [div, sum, exp], exp.Input(0)!, new DecomposedSoftmax(null, sum));
    }

    /// <summary>
    /// Einsum(Q, K) ... Einsum(P, V) or MatMul(P, V): the operands are regrouped to
    /// (B, H, S, D) by the permutations the equations prove.
    /// </summary>
    private PatternResult MatchEinsum(Node anchor, Node softmax, Value value, ScoreChain chain, ValueProduct? valueEinsum,
                                      ProbabilityWrappers wrappers, ImmutableList<Node> probabilityNodes)
    {
        var scores = chain.ScoresMatMul;
        if (ScoreEinsum(scores) is not { } layout)
        {
            return new PatternResult(null, UnknownEllipsisRank(scores) ??
                $"Einsum '{scores.DisplayName}' ('{scores.StringAttribute("equation")}') is not a 4-D or 3-D query·keyᵀ product whose leading axes both operands hold, contracting one head-dim axis, with the key axis last.");
        }

        var query = _query.Match(scores.Input(layout.QueryIndex)!)!;
        var keyOperand = scores.Input(1 - layout.QueryIndex)!;
        var (keyValue, keyFactor) = PeelFactor(keyOperand);
        var key = new KeyMatch(keyValue, KeyLayout.Einsum, keyFactor);
        var identity = Enumerable.Range(0, layout.Query.Length).Select(i => (long)i).ToArray();
        var einsum = new EinsumLayout(layout.Query, layout.Key, valueEinsum?.Value ?? identity, valueEinsum?.Output ?? identity);
        var repeatRemoved = false;
        if (EinsumLayout.IsIdentity(einsum.Key) && EinsumLayout.IsIdentity(einsum.Value) && WithoutHeadRepeat(key, value) is { } kv)
        {
            (key, value, repeatRemoved) = (kv.Key, kv.Value, true);
        }

        var match = new AttentionMatch(anchor, softmax, query, key, value, chain, wrappers, probabilityNodes, repeatRemoved) { Einsum = einsum };
        return new PatternResult(RecognizeCausal(match), null);
    }

    /// <summary>
    /// Why an Einsum's equation cannot be read: it has an ellipsis in an operand whose rank is unknown,
    /// so the axes the ellipsis stands for cannot be named; null when that is not the problem.
    /// </summary>
    private string? UnknownEllipsisRank(Node einsum)
    {
        var equation = einsum.StringAttribute("equation");
        return EinsumEquation.OperandsWithEllipsis(equation).Select(einsum.Input).FirstOrDefault(o => o is not null && _analysis.ShapeOf(o) is null) is { } operand
            ? $"Einsum '{einsum.DisplayName}' ('{equation}') has an ellipsis in operand '{operand.Name}', whose rank is unknown, so the axes the ellipsis stands for cannot be named."
            : null;
    }

    /// <summary>Which operand of a value-product Einsum holds the probabilities, and the permutations of V and of the result.</summary>
    private sealed record ValueProduct(int ProbabilityIndex, long[] Value, long[] Output);

    /// <summary>
    /// Einsum(P, V) whose equation contracts P's last axis with V, keeps P's other axes and adds one
    /// axis of V: "acbe,aecd->abcd" (Keras), "bhqk,bhkd->bhqd", "nqk,nkd->nqd", either operand order.
    /// </summary>
    private ValueProduct? ValueEinsum(Node einsum)
    {
        if (AttentionEquation(einsum) is not { } equation)
        {
            return null;
        }

        for (var index = 0; index < 2; index++)
        {
            var (p, v) = (equation.Operands[index], equation.Operands[1 - index]);
            var added = v.Where(c => !p.Contains(c, StringComparison.Ordinal)).ToList();
            if (added.Count != 1)
            {
                continue;
            }

            var leading = p[..^2];
            string valueAxes = $"{leading}{p[^1]}{added[0]}", resultAxes = $"{leading}{p[^2]}{added[0]}";
            if (SameLetters(v, valueAxes) && SameLetters(equation.Output, resultAxes))
            {
                return new ValueProduct(index, EinsumEquation.Permutation(v, valueAxes), EinsumEquation.Permutation(resultAxes, equation.Output));
            }
        }

        return null;
    }

    /// <summary>
    /// Einsum(Q, K) (either order) giving (x, y, Sq, Skv) or (x, Sq, Skv): both operands hold the
    /// leading letters, one head-dim letter is contracted, and each has its own sequence letter
    /// ("aecd,abcd->acbe" is Keras').
    /// </summary>
    private (int QueryIndex, long[] Query, long[] Key)? ScoreEinsum(Node einsum)
    {
        if (AttentionEquation(einsum) is not { } equation)
        {
            return null;
        }

        var output = equation.Output;
        var leading = output[..^2];
        for (var index = 0; index < 2; index++)
        {
            var (q, k) = (equation.Operands[index], equation.Operands[1 - index]);
            var contracted = q.Where(c => k.Contains(c, StringComparison.Ordinal) && !output.Contains(c, StringComparison.Ordinal)).ToList();
            if (contracted.Count != 1)
            {
                continue;
            }

            string queryAxes = $"{leading}{output[^2]}{contracted[0]}", keyAxes = $"{leading}{output[^1]}{contracted[0]}";
            if (SameLetters(q, queryAxes) && SameLetters(k, keyAxes))
            {
                return (index, EinsumEquation.Permutation(q, queryAxes), EinsumEquation.Permutation(k, keyAxes));
            }
        }

        return null;
    }

    /// <summary>
    /// The equation of a two-operand Einsum whose operands and result all have rank 4 (B, H, ·, ·) or 3 (N, ·, ·);
    /// an ellipsis is read as the axes the operand's known rank leaves it.
    /// </summary>
    private EinsumEquation? AttentionEquation(Node einsum) =>
        EinsumEquation.Parse(einsum.StringAttribute("equation"), einsum.Inputs.Select(i => i is null ? null : _analysis.ShapeOf(i)?.Count).ToArray()) is
            { Operands.Count: 2 } equation &&
        equation.Output.Length is 3 or 4 && equation.Operands.All(o => o.Length == equation.Output.Length)
            ? equation : null;

    private static bool SameLetters(string a, string b) => a.Length == b.Length && a.All(c => b.Contains(c, StringComparison.Ordinal));

    private static (Node Where, Node IsNaN, Value Guarded)? NaNGuardOf(Node where, GraphAnalysis analysis)
    {
        if (Ops.Producer(where.Input(0), "IsNaN") is { } isNaN && analysis.ScalarOf(where.Input(1)!) == 0 &&
            where.Input(2) is { } guarded && isNaN.Input(0) == guarded)
        {
            return (where, isNaN, guarded);
        }

        return null;
    }

    /// <summary>Explains a failed score match caused by a Mul/Div on the scores whose factor is not constant.</summary>
    private string? UnresolvedScale(Value scores)
    {
        var pending = new Queue<(Value Value, int Depth)>([(scores, 0)]);
        while (pending.TryDequeue(out var item))
        {
            if (Ops.Producer(item.Value, "Add", "Sub", "Where", "Max", "Mul", "Div", "Tanh", "Cast") is not { } node || item.Depth > 6)
            {
                continue;
            }

            if (node.OpType is "Mul" or "Div" && node.Inputs.Count == 2)
            {
                for (var i = 0; i < 2; i++)
                {
                    if (Ops.Producer(node.Input(i), "MatMul", "Einsum") is not null && node.Input(1 - i) is { } factor && _analysis.ScalarOf(factor) is null)
                    {
                        return $"The scale '{factor.Name}' applied by {node.OpType} '{node.DisplayName}' is not a constant, so the op's scale cannot be determined.";
                    }
                }
            }

            foreach (var input in node.Inputs.OfType<Value>())
            {
                pending.Enqueue((input, item.Depth + 1));
            }
        }

        return null;
    }

    private (Node Where, Node IsNaN, Value Guarded)? NaNGuard(Value p) =>
        Ops.Producer(p, "Where") is { } where ? NaNGuardOf(where, _analysis) : null;

    /// <summary>
    /// Where(c, 0, p) or Where(c, p, 0) with a scalar 0 no higher in rank than p (a masked_fill of the probabilities, as
    /// HF DeBERTa's XSoftmax writes it): the zeroing and p. Whether it zeroes only hidden keys is proven by <see cref="ZeroedHidden"/>.
    /// </summary>
    private (ZeroedProbabilities Zeroed, Value Probabilities)? Zeroing(Value p)
    {
        if (Ops.Producer(p, "Where") is not { Inputs.Count: 3 } where || NaNGuardOf(where, _analysis) is not null)
        {
            return null;
        }

        for (var zeroIndex = 1; zeroIndex <= 2; zeroIndex++)
        {
            var kept = where.Input(3 - zeroIndex)!;
            if (_analysis.ConstantOf(where.Input(zeroIndex)!) is { IsScalar: true } zero && zero.Data[0] == 0 &&
                zero.Dims.Count <= (_analysis.ShapeOf(kept)?.Count ?? 1))
            {
                return (new ZeroedProbabilities(where, where.Input(0)!, ZeroWhenTrue: zeroIndex == 1), kept);
            }
        }

        return null;
    }

    /// <summary>
    /// A zeroing Where after Softmax is exact as the op's keep input with masked_rows = zero when it zeroes exactly the keys
    /// that the mask applied last before Softmax hides with −inf or an absorbing fill, under one condition: the same
    /// value (or bool Casts of it) in the same polarity. A row with no visible key is then all zeros in both (the graph
    /// zeroes the softmax of its fills), both Wheres seeing the scores in one layout (both on a (B, H, S, T) view, or
    /// neither); in any other row a hidden key weighs exactly 0 before the zeroing, provided a
    /// visible key's score is not itself near the fill, so every mask under it must be bounded like the scores
    /// (<see cref="MaskValues.IsBoundedLikeScores"/>). The matched Where becomes a −inf keep mask; otherwise the reason.
    /// </summary>
    private (ScoreChain? Chain, string? Reason) ZeroedHidden(ScoreChain chain, ZeroedProbabilities zeroed, bool zeroedOnView)
    {
        var index = chain.Masks.FindIndex(m => m.Kind != MaskKind.Zero);
        var zeroedWhere = $"Where '{zeroed.Where.DisplayName}' after Softmax sets probabilities to 0 where '{zeroed.Condition.Name}' is {(zeroed.ZeroWhenTrue ? "true" : "false")}";
        if (index < 0 || chain.Masks[index] is not { Kind: MaskKind.FiniteFill or MaskKind.KeepNegativeInfinity } hiding)
        {
            return (null, $"{zeroedWhere}, but the mask applied last before Softmax is not a Where that hides keys: the op normalises over the keys it keeps and cannot zero probabilities afterwards.");
        }

        if (!double.IsNegativeInfinity(hiding.Fill) && hiding.Fill > CausalMasks.AbsorbingFill)
        {
            return (null, $"{zeroedWhere}; Where '{hiding.Node.DisplayName}' before Softmax fills with {hiding.Fill.ToString(CultureInfo.InvariantCulture)}, which does not absorb the scores: " +
                          "the keys it hides keep some weight in rows with a visible key, so after the zeroing those rows do not sum to 1, and the op's would.");
        }

        if (BoolSource(hiding.Source) != BoolSource(zeroed.Condition) || hiding.KeepWhenTrue == zeroed.ZeroWhenTrue)
        {
            return (null, $"{zeroedWhere}, which is not provably where Where '{hiding.Node.DisplayName}' before Softmax hides keys ('{hiding.Source.Name}' is " +
                          $"{(hiding.KeepWhenTrue ? "false" : "true")}): zeroing other keys changes rows the op would normalise.");
        }

        if (hiding.OnView != zeroedOnView)
        {
            // One condition broadcast onto (B·H, S, T) scores and onto their (B, H, S, T) view selects different elements.
            return (null, $"{zeroedWhere}, on the {(zeroedOnView ? "(B, H, S, T) view of the" : "3-D")} probabilities, while Where '{hiding.Node.DisplayName}' hides keys " +
                          $"on the {(hiding.OnView ? "(B, H, S, T) view of the" : "3-D")} scores: the same condition need not select the same elements in both layouts.");
        }

        if (chain.Clamp is not null)
        {
            return (null, $"{zeroedWhere}, and the scores are clamped after their masks: only a zeroing right after the hiding Where is fused.");
        }

        if (chain.Masks.FirstOrDefault(m => m.Kind != MaskKind.Zero && m != hiding && (m.Kind != MaskKind.AdditiveBias || !_maskValues.IsBoundedLikeScores(m.Source))) is { } unbounded)
        {
            return (null, $"{zeroedWhere}; mask '{unbounded.Source.Name}' applied before Where '{hiding.Node.DisplayName}' is not provably bounded like the scores (sums of MatMul " +
                          "products, moved or divided by constants): where it holds values near the fill, the keys hidden by the Where keep weight in the graph before the zeroing, so those rows do not sum to 1, and the op's would.");
        }

        return (chain with { Masks = chain.Masks.SetItem(index, hiding with { Kind = MaskKind.KeepNegativeInfinity, Fill = double.NegativeInfinity }) }, null);
    }

    /// <summary>A bool value with every Cast to bool of a bool value above it removed (they copy it).</summary>
    private Value BoolSource(Value value)
    {
        while (Ops.Producer(value, "Cast") is { } cast && cast.IntAttribute("to") == (long)DataType.Bool && cast.Input(0) is { } source &&
               _analysis.ElementTypeOf(source) == DataType.Bool)
        {
            value = source;
        }

        return value;
    }

    private ScoreChain? MatchScores(Value scores, Node? merge) =>
        MatchMasks(scores, new ScoreChain(null!, [], [], 1, ScalePlacement.None, 0, null) { Merge = merge }, MaxMasks);

    /// <summary>
    /// Mask slot: Add(s, M) | Add(M, s) | Where(c, s, F) | Where(c, F, s), up to <paramref name="left"/> times; before them
    /// (walking up) at most one clamp Max(x, c), and anywhere an Add of zeros, which takes no mask's place.
    /// </summary>
    private ScoreChain? MatchMasks(Value scores, ScoreChain chain, int left)
    {
        (scores, chain) = SkipWidening(scores, chain);
        if (ViewStep(scores, chain) is { } step)
        {
            return MatchMasks(step.Reshape.Input(0)!, step.Chain, left);
        }

        // The clamp comes after every mask (OPT clamps inside its (B, H, S, T) view, before merging it back).
        if (chain.Clamp is null && chain.Masks.All(m => m.Kind == MaskKind.Zero) && Ops.Producer(scores, "Max") is { } max && Ops.WithScalar(max, _analysis, 1, 0) is { } clamp &&
            MatchMasks(clamp.Operand, chain with { Nodes = chain.Nodes.Add(max), Clamp = clamp.Constant }, left) is { } clamped)
        {
            return clamped;
        }

        // Between the view's split and merge the masks are laid out like (B, H, S, T), elsewhere like the 3-D scores.
        var onView = chain.Merge is not null && chain.Split is null;
        if (ZeroAdded(scores) is { } zero)
        {
            var term = new MaskTerm(MaskKind.Zero, zero.Zeros, 0, true, zero.Add) { OnView = onView };
            if (MatchMasks(zero.Scores, chain with { Nodes = chain.Nodes.Add(zero.Add), Masks = chain.Masks.Add(term) }, left) is { } found)
            {
                return found;
            }
        }

        if (left > 0)
        {
            if (Ops.Producer(scores, "Add") is { Inputs.Count: 2 } add)
            {
                for (var i = 0; i < 2; i++)
                {
                    var term = new MaskTerm(MaskKind.AdditiveBias, add.Input(1 - i)!, 0, true, add) { OnView = onView };
                    var next = chain with { Nodes = chain.Nodes.Add(add), Masks = chain.Masks.Add(term) };
                    if (MatchMasks(add.Input(i)!, next, left - 1) is { } found)
                    {
                        return found;
                    }
                }
            }

            if (Ops.Producer(scores, "Sub") is { Inputs.Count: 2 } sub)
            {
                // s − M == s + (−M) exactly: negation only flips the sign bit.
                var term = new MaskTerm(MaskKind.AdditiveBias, sub.Input(1)!, 0, true, sub) { Subtracted = true, OnView = onView };
                var next = chain with { Nodes = chain.Nodes.Add(sub), Masks = chain.Masks.Add(term) };
                if (MatchMasks(sub.Input(0)!, next, left - 1) is { } found)
                {
                    return found;
                }
            }

            if (Ops.Producer(scores, "Where") is { Inputs.Count: 3 } where)
            {
                for (var scoreIndex = 1; scoreIndex <= 2; scoreIndex++)
                {
                    // A one-element fill of higher rank than the scores would broadcast them up.
                    if (_analysis.ConstantOf(where.Input(3 - scoreIndex)!) is not { IsScalar: true } fillTensor ||
                        fillTensor.Dims.Count > (_analysis.ShapeOf(where.Input(scoreIndex)!)?.Count ?? 1))
                    {
                        continue;
                    }

                    var fill = fillTensor.Data[0];

                    var kind = double.IsNegativeInfinity(fill) ? MaskKind.KeepNegativeInfinity : MaskKind.FiniteFill;
                    var term = new MaskTerm(kind, where.Input(0)!, fill, KeepWhenTrue: scoreIndex == 1, where) { OnView = onView };
                    var next = chain with { Nodes = chain.Nodes.Add(where), Masks = chain.Masks.Add(term) };
                    if (MatchMasks(where.Input(scoreIndex)!, next, left - 1) is { } found)
                    {
                        return found;
                    }
                }
            }
        }

        return MatchSoftcap(scores, chain);
    }

    /// <summary>
    /// Add(s, Z) in either operand order with Z provably ±0 everywhere (<see cref="MaskValues"/>) and provably no larger
    /// than s, so that the sum is s in value and shape: the Add, s and Z. torch.baddbmm(zeros, q, kᵀ) exports this.
    /// </summary>
    private (Node Add, Value Scores, Value Zeros)? ZeroAdded(Value scores)
    {
        if (Ops.Producer(scores, "Add") is not { Inputs.Count: 2 } add)
        {
            return null;
        }

        for (var i = 0; i < 2; i++)
        {
            if (add.Input(i) is { } kept && add.Input(1 - i) is { } zeros && _maskValues.AbsorbingSigns(zeros) == MaskValues.Signs.None &&
                _analysis.ShapeOf(zeros) is { } z && _analysis.ShapeOf(kept) is { } k && z.Count <= k.Count &&
                z.Select((d, j) => d.Size == 1 || d.SameAs(k[k.Count - z.Count + j]) == true).All(within => within))
            {
                return (add, kept, zeros);
            }
        }

        return null;
    }

    /// <summary>
    /// One Reshape of a (B, H, S, T) view of 3-D scores, walking up: the merge back to (B·H, S, T) (BART, before
    /// Softmax) when none was found yet, then the split it undoes. Only the ranks are read here; <see cref="ViewProven"/>
    /// proves the dims once the score MatMul is found. The chain with that Reshape added, or null.
    /// </summary>
    private (Node Reshape, ScoreChain Chain)? ViewStep(Value scores, ScoreChain chain)
    {
        if (chain.Merge is null && chain.Split is null && (ViewShaped(scores, merging: true) ?? ViewShaped(scores, merging: true, WindowedRank)) is { } merge)
        {
            return (merge, chain with { Nodes = chain.Nodes.Add(merge), Merge = merge, Windowed = FlatRank(merge) == WindowedRank });
        }

        if (chain.Merge is { } merged && chain.Split is null && ViewShaped(scores, merging: false, FlatRank(merged)) is { } split)
        {
            return (split, chain with { Nodes = chain.Nodes.Add(split), Split = split });
        }

        if (chain.Merge is null && chain.Split is null && ViewShaped(scores, merging: false) is { } alone)
        {
            // GPT-NeoX: the view is never merged back (Softmax and the value product run on it), so every mask found so far
            // was applied to it.
            return (alone, chain with { Nodes = chain.Nodes.Add(alone), Split = alone, Masks = [.. chain.Masks.Select(m => m with { OnView = true })] });
        }

        if (chain.Merge is { } last && chain.Split is { } later && ViewShaped(scores, merging: true, FlatRank(last)) is { } between)
        {
            // CLIP: one view per mask, merged and split again in between. Reshape(Reshape(x)) back to x's own shape is x
            // (both keep the elements in order), so the view goes on and its split is the earlier one, further up;
            // ViewProven checks that the later split restores that view's shape.
            return (between, chain with { Nodes = chain.Nodes.Add(between), Split = null, Resplits = chain.Resplits.Add(later) });
        }

        return null;
    }

    /// <summary>
    /// A Reshape from rank <paramref name="flatRank"/> + 1 to <paramref name="flatRank"/> (merging) or back (splitting):
    /// 3-D (B·H, S, T) scores and their (B, H, S, T) view, or (<see cref="WindowedRank"/>) Swin's 4-D (B·nW, H, S, T) window
    /// scores and their (B, nW, H, S, T) view.
    /// </summary>
    private Node? ViewShaped(Value output, bool merging, int flatRank = 3) =>
        Ops.Producer(output, "Reshape") is { } reshape && _analysis.ShapeOf(reshape.Input(0)!)?.Count == (merging ? flatRank + 1 : flatRank) &&
        _analysis.ShapeOf(output)?.Count == (merging ? flatRank : flatRank + 1) ? reshape : null;

    /// <summary>The rank of 4-D scores whose leading axis a view splits (windows of a batch, as Swin adds its window mask).</summary>
    private const int WindowedRank = 4;

    /// <summary>
    /// Two finite masks within ±2⁷ (Swin's relative position bias and its −100 window mask) are summed into one bias: s + (a + m)
    /// and the graph's (s + a) + m then differ by float32 rounding of values of magnitude |s| + 2⁸ at most (2⁻¹⁶ absolute
    /// for scores of ordinary size), never by absorption or overflow. A −10000 padding mask would differ by 2⁻⁹, which a row
    /// it hides entirely shows, so it stays refused.
    /// </summary>
    private const double SummableMagnitude = 128;

    /// <summary>The rank of the scores a merge Reshape gives back.</summary>
    private int FlatRank(Node merge) => _analysis.ShapeOf(merge.Output(0)!)?.Count ?? 3;

    /// <summary>
    /// Whether the view only splits the leading axis of the 3-D scores into (B, H) and the merge only joins them back:
    /// the split's last two dims are those of the Reshape's input or of the score MatMul's (S, T), and the merge's last
    /// two are those of its input or of the view. With the element count kept, the leading dims are then B·H on both
    /// 3-D sides. Reading the MatMul's and the view's dims makes the proof survive masks in between whose dims shape
    /// inference cannot relate (they never enlarge the scores: CheckMaskShape).
    /// </summary>
    private bool ViewProven(Node split, Node merge, Node scoresMatMul) => SplitProven(split, scoresMatMul) && MergeProven(merge, split);

    /// <summary>
    /// Whether each later split of the scores provably gives the shape of the first view, so that merging a view and
    /// splitting it again is the identity: every dim the same, or all but one, which both splits infer (−1) from the same
    /// element count. What a later split reshapes is the earlier view with masks added (which never enlarge it: the op
    /// checks the masks against the view), merged once: as many elements as the view.
    /// </summary>
    private bool ResplitsProven(IEnumerable<Node> resplits, Node split) =>
        _analysis.ShapeOf(split.Output(0)!) is { Count: var rank and (4 or 5) } view &&
        resplits.All(later => _analysis.ShapeOf(later.Output(0)!) is { } again && again.Count == rank &&
                              Enumerable.Range(0, rank).Count(i => again[i].SameAs(view[i]) != true) is var differing &&
                              (differing == 0 || (differing == 1 && BothInferred(split, later, Enumerable.Range(0, rank).First(i => again[i].SameAs(view[i]) != true)))));

    /// <summary>Whether both Reshapes infer dim <paramref name="axis"/> (−1 in their shape).</summary>
    private bool BothInferred(Node first, Node second, int axis) =>
        _analysis.ShapeVector(first.Input(1)!) is { } a && _analysis.ShapeVector(second.Input(1)!) is { } b && a.Length == b.Length && axis < a.Length &&
        a[axis].Size == -1 && b[axis].Size == -1;

    private bool SplitProven(Node split, Node scoresMatMul) =>
        _analysis.ShapeOf(split.Output(0)!) is { Count: 4 or 5 } view &&
        (SameTrailing(split.Input(0)!, view) || SameTrailing(scoresMatMul.Output(0)!, view));

    private bool MergeProven(Node merge, Node split) =>
        (_analysis.ShapeOf(merge.Input(0)!) is { Count: 4 or 5 } grouped && SameTrailing(merge.Output(0)!, grouped)) ||
        (_analysis.ShapeOf(split.Output(0)!) is { Count: 4 or 5 } view && SameTrailing(merge.Output(0)!, view));

    /// <summary>Whether the flat scores have one axis less than the view and every axis after their leading one is the view's after its first two.</summary>
    private bool SameTrailing(Value flat, IReadOnlyList<Dim> view) =>
        _analysis.ShapeOf(flat) is { } f && f.Count == view.Count - 1 &&
        Enumerable.Range(1, f.Count - 1).All(i => f[i].SameAs(view[i + 1]) == true);

    /// <summary>Whether <paramref name="value"/> is Softmax probabilities, through Casts, Identities, Dropouts and a zeroing Where.</summary>
    private bool ReachesSoftmax(Value value)
    {
        while (true)
        {
            if (Ops.Producer(value, "Cast", "Identity", "Dropout") is { } passThrough)
            {
                value = passThrough.Input(0)!;
            }
            else if (Zeroing(value) is { } zeroing)
            {
                value = zeroing.Probabilities;
            }
            else
            {
                break;
            }
        }

        return Ops.Producer(value, "Softmax") is not null || Decomposed(value) is not null;
    }

    /// <summary>Explains a failed score match caused by a view of the scores that is incomplete or not proven.</summary>
    private string? UnprovenView(Value scores, Node? merge)
    {
        var splits = new List<Node>();
        Node? scoresMatMul = null;
        var pending = new Queue<(Value Value, int Depth)>([(scores, 0)]);
        while (pending.TryDequeue(out var item) && scoresMatMul is null)
        {
            if (Ops.Producer(item.Value, "Add", "Sub", "Where", "Max", "Mul", "Div", "Tanh", "Cast", "Reshape", "MatMul", "Einsum") is not { } node || item.Depth > 8)
            {
                continue;
            }

            if (node.OpType is "MatMul" or "Einsum")
            {
                scoresMatMul = node;
                continue;
            }

            if (merge is null && splits.Count == 0 && (ViewShaped(item.Value, merging: true) ?? ViewShaped(item.Value, merging: true, WindowedRank)) is not null)
            {
                merge = node;
            }
            else if ((ViewShaped(item.Value, merging: false) ?? ViewShaped(item.Value, merging: false, WindowedRank)) is not null)
            {
                splits.Add(node);
            }

            foreach (var input in node.OpType == "Reshape" ? [node.Input(0)!] : node.Inputs.OfType<Value>())
            {
                pending.Enqueue((input, item.Depth + 1));
            }
        }

        // The split furthest up makes the view; those below it split the scores again after a merge (CLIP).
        var split = splits.LastOrDefault();
        if (scoresMatMul is null || (merge is null && split is null))
        {
            return null;
        }

        if (split is not null && splits.Count > 1 && !ResplitsProven(splits.Take(splits.Count - 1), split))
        {
            var again = splits[0];
            return $"Reshape '{again.DisplayName}' splits the merged scores again ({Describe(again.Input(0)!)} → {Describe(again.Output(0)!)}), " +
                   $"not provably the shape of the first view made by '{split.DisplayName}' ({Describe(split.Output(0)!)}), so merging and splitting them is not provably the identity.";
        }

        if (merge is null)
        {
            return SplitProven(split!, scoresMatMul) ? null :
                $"Reshape '{split!.DisplayName}' on the scores ({Describe(split.Input(0)!)} → {Describe(split.Output(0)!)}) does not provably only split " +
                $"the leading axis of the (B·H, S, T) scores ({Describe(scoresMatMul.Output(0)!)}) into (B, H): the last two dims must be the same on both sides.";
        }

        if (split is null)
        {
            return $"Reshape '{merge.DisplayName}' merges (B, H, S, T) into (B·H, S, T) ({Describe(merge.Input(0)!)} → {Describe(merge.Output(0)!)}), " +
                   "but no Reshape splitting the 3-D scores into that view was found above it.";
        }

        if (!SplitProven(split, scoresMatMul))
        {
            return $"Reshape '{split.DisplayName}' on the scores ({Describe(split.Input(0)!)} → {Describe(split.Output(0)!)}) does not provably only split " +
                   $"the leading axis of the (B·H, S, T) scores ({Describe(scoresMatMul.Output(0)!)}) into (B, H): the last two dims must be the same on both sides.";
        }

        return MergeProven(merge, split) ? null :
            $"Reshape '{merge.DisplayName}' ({Describe(merge.Input(0)!)} → {Describe(merge.Output(0)!)}) does not provably merge the (B, H, S, T) view made by " +
            $"'{split.DisplayName}' ({Describe(split.Output(0)!)}) back into (B·H, S, T).";
    }

    private string Describe(Value value) =>
        _analysis.ShapeOf(value) is { } shape ? "(" + string.Join(", ", shape.Select(d => d.ToString())) + ")" : "rank unknown";

    /// <summary>Softcap slot: Mul(Tanh(Div(s, c)), c) in either Mul operand order.</summary>
    private ScoreChain? MatchSoftcap(Value scores, ScoreChain chain)
    {
        if (Ops.Producer(scores, "Mul") is { } mul && Ops.WithScalar(mul, _analysis, 1, 0) is { } outer &&
            Ops.Producer(outer.Operand, "Tanh") is { } tanh && Ops.Producer(tanh.Input(0), "Div") is { } div &&
            Ops.WithScalar(div, _analysis, 1) is { } inner && inner.Constant == outer.Constant && inner.Constant > 0 &&
            MatchScale(inner.Operand, chain with { Nodes = chain.Nodes.AddRange([mul, tanh, div]), Softcap = (float)inner.Constant }) is { } found)
        {
            return found;
        }

        return MatchScale(scores, chain);
    }

    /// <summary>Scale slot: Div(s, c) | Mul(s, c) | Mul(c, s) | nothing.</summary>
    private ScoreChain? MatchScale(Value scores, ScoreChain chain)
    {
        if (Ops.Producer(scores, "Div") is { } div && Ops.WithScalar(div, _analysis, 1) is { } divisor &&
            MatchScoresMatMul(divisor.Operand, chain with { Nodes = chain.Nodes.Add(div), Factor = 1 / divisor.Constant, Placement = ScalePlacement.DivideScores }) is { } divided)
        {
            return divided;
        }

        if (Ops.Producer(scores, "Mul") is { } mul && Ops.WithScalar(mul, _analysis, 1, 0) is { } factor &&
            MatchScoresMatMul(factor.Operand, chain with { Nodes = chain.Nodes.Add(mul), Factor = factor.Constant, Placement = ScalePlacement.MultiplyScores }) is { } multiplied)
        {
            return multiplied;
        }

        return MatchScoresMatMul(scores, chain);
    }

    /// <summary>MatMul(Q, Kᵀ), possibly followed by Casts of its scores to float.</summary>
    private ScoreChain? MatchScoresMatMul(Value scores, ScoreChain chain)
    {
        (scores, chain) = SkipWidening(scores, chain);
        if (chain.Split is null && ViewStep(scores, chain) is { Chain.Split: not null } step)
        {
            (scores, chain) = SkipWidening(step.Reshape.Input(0)!, step.Chain);
        }

        if (Ops.Producer(scores, "MatMul", "Einsum") is not { Inputs.Count: 2 } matMul)
        {
            return null;
        }

        // A view must be complete and proven: otherwise which rows the op's (B, H) pair is unknown.
        return (chain.Merge, chain.Split) switch
        {
            (null, null) => chain with { ScoresMatMul = matMul },
            ({ } merge, { } split) when ViewProven(split, merge, matMul) && ResplitsProven(chain.Resplits, split) => chain with { ScoresMatMul = matMul },
            (null, { } split) when SplitProven(split, matMul) => chain with { ScoresMatMul = matMul },
            _ => null,
        };
    }

    /// <summary>
    /// A Cast that loses nothing: to float from float, float16 or bfloat16 (exporters emit
    /// float→float no-ops for <c>.float()</c>); the op computes scores in float anyway. Also to float64 (<c>.double()</c>,
    /// or a mask an exporter typed float64, as torch 1.13 types the Python-float fill of <c>torch.where(c, finfo.min, m)</c>):
    /// <see cref="CheckFloat64"/> limits what may follow. And a Cast of a float type to that same type: a float16 converter
    /// turns the <c>.float()</c> no-op into Cast(to=FLOAT16) of float16 scores (diffusers' upcast softmax).
    /// </summary>
    private Node? Widening(Value value)
    {
        if (Ops.Producer(value, "Cast") is not { } cast)
        {
            return null;
        }

        var from = _analysis.ElementTypeOf(cast.Input(0)!);
        var to = cast.IntAttribute("to");
        return (to is (long)DataType.Float or (long)DataType.Double && from is DataType.Float or DataType.Float16 or DataType.Bfloat16) ||
               (to == (long)from && ElementTypes.IsFloat(from))
            ? cast : null;
    }

    private (Value Scores, ScoreChain Chain) SkipWidening(Value scores, ScoreChain chain)
    {
        while (Widening(scores) is { } cast)
        {
            chain = chain with { Nodes = chain.Nodes.Add(cast) };
            scores = cast.Input(0)!;
        }

        return (scores, chain);
    }

    /// <summary>A scalar factor: Mul(x, c), Mul(c, x) → c; Div(x, c) → 1/c.</summary>
    private (Value Operand, double Factor)? ScalarFactor(Value value)
    {
        if (Ops.Producer(value, "Mul") is { } mul && Ops.WithScalar(mul, _analysis, 1, 0) is { } m)
        {
            return (m.Operand, m.Constant);
        }

        if (Ops.Producer(value, "Div") is { } div && Ops.WithScalar(div, _analysis, 1) is { } d)
        {
            return (d.Operand, 1 / d.Constant);
        }

        return null;
    }

    /// <summary><paramref name="value"/> without its scalar factor, and that factor (1 when there is none).</summary>
    private (Value Operand, double Factor) PeelFactor(Value value) => ScalarFactor(value) ?? (value, 1.0);

    private QueryMatch? QueryScaledAtMatMul(Value query) =>
        ScalarFactor(query) is { } f ? new QueryMatch(f.Operand, f.Factor, 1, ScalePlacement.Query) : null;

    /// <summary>A scale applied before shape-only ops; the scaled query is used as is (the scale stays in the graph).</summary>
    private QueryMatch? QueryScaledBeforeHeadSplit(Value query)
    {
        var current = query;
        for (var steps = 0; steps < 4 && Ops.Producer(current, "Reshape", "Transpose", "Squeeze", "Unsqueeze") is { } shapeOp; steps++)
        {
            current = shapeOp.Input(0)!;
            if (ScalarFactor(current) is { } f)
            {
                return new QueryMatch(query, 1, f.Factor, ScalePlacement.QueryBeforeHeadSplit);
            }
        }

        return null;
    }

    private KeyMatch? KeyTransposed(Value keyTransposed, long[] perm, KeyLayout layout)
    {
        var (current, after) = PeelFactor(keyTransposed);
        if (Ops.Producer(current, "Transpose") is not { } transpose || transpose.IntsAttribute("perm") is not { } actual ||
            !actual.SequenceEqual(perm))
        {
            return null;
        }

        var (key, before) = PeelFactor(transpose.Input(0)!);
        return new KeyMatch(key, layout, after * before);
    }

    /// <summary>
    /// Reshape(K4 → (N, T, D)) → Transpose(0,2,1) → Reshape(→ (B, H, D, T)), accepted only when the
    /// shapes prove it swaps the last two axes of K4.
    /// </summary>
    private KeyMatch? KeyTransposedThroughRank3(Value keyTransposed)
    {
        var (current, factor) = PeelFactor(keyTransposed);

        if (Ops.Producer(current, "Reshape") is not { } outer || Ops.Producer(outer.Input(0), "Transpose") is not { } transpose ||
            transpose.IntsAttribute("perm") is not [0, 2, 1] || Ops.Producer(transpose.Input(0), "Reshape") is not { } inner)
        {
            return null;
        }

        var key = inner.Input(0)!;
        if (_analysis.ShapeOf(key) is not { Count: 4 } k || _analysis.ShapeOf(inner.Output(0)!) is not { Count: 3 } merged ||
            _analysis.ShapeOf(outer.Output(0)!) is not { Count: 4 } restored)
        {
            return null;
        }

        var proven = merged[1].SameAs(k[2]) == true && merged[2].SameAs(k[3]) == true &&
                     restored[0].SameAs(k[0]) == true && restored[1].SameAs(k[1]) == true &&
                     restored[2].SameAs(k[3]) == true && restored[3].SameAs(k[2]) == true;
        return proven ? new KeyMatch(key, KeyLayout.ReshapedRank3, factor) : null;
    }

    /// <summary>
    /// A (B·H, D, T) operand that the graph built as Kᵀ: Reshape(Transpose(0,2,3,1)(k), (B·H, D, T)) with the shapes
    /// proving the Reshape only merges the two leading axes (BLOOM's key), or a Concat along T of such keys with a cache
    /// stored the same way. The op gets its transpose (B·H, T, D).
    /// </summary>
    private KeyMatch? KeyStoredTransposedRank3(Value keyTransposed)
    {
        var (current, factor) = PeelFactor(keyTransposed);

        if (_analysis.ShapeOf(current) is not { Count: 3 } flat)
        {
            return null;
        }

        if (Ops.Producer(current, "Concat") is { } concat && concat.IntAttribute("axis") is 2 or -1 &&
            concat.Inputs.Count > 1 && concat.Inputs[^1] is { } newest && StoredTransposed(newest))
        {
            return new KeyMatch(current, KeyLayout.Rank3Transposed, factor);
        }

        return StoredTransposed(current) ? new KeyMatch(current, KeyLayout.Rank3Transposed, factor) : null;

        bool StoredTransposed(Value value) =>
            Ops.Producer(value, "Reshape") is { } reshape && Ops.Producer(reshape.Input(0), "Transpose") is { } transpose &&
            transpose.IntsAttribute("perm") is [0, 2, 3, 1] && _analysis.ShapeOf(reshape.Input(0)!) is { Count: 4 } grouped &&
            _analysis.ShapeOf(value) is { Count: 3 } merged && merged[1].SameAs(grouped[2]) == true && merged[2].SameAs(grouped[3]) == true &&
            merged[1].SameAs(flat[1]) == true;
    }

    /// <summary>
    /// The key and value with their GQA head repeats removed, when both are repeated provably
    /// contiguously; the caller makes sure both reach the op in the (B, H, T, D) layout.
    /// </summary>
    private (KeyMatch Key, Value Value)? WithoutHeadRepeat(KeyMatch key, Value value) =>
        HeadRepeatSource(key.Value) is { } kvKey && HeadRepeatSource(value) is { } kvValue ? (key with { Value = kvKey }, kvValue) : null;

    /// <summary>
    /// The (B, Hkv, T, D) source of a GQA head repeat Reshape(Expand(Unsqueeze(x, axes=[2]))) whose
    /// shapes prove each kv head is repeated contiguously (query head h reads kv head h / n_rep).
    /// </summary>
    private Value? HeadRepeatSource(Value repeated)
    {
        if (Ops.Producer(repeated, "Reshape") is not { } reshape || Ops.Producer(reshape.Input(0), "Expand") is not { } expand ||
            Ops.Producer(expand.Input(0), "Unsqueeze") is not { } unsqueeze || _analysis.AxesOf(unsqueeze) is not [2])
        {
            return null;
        }

        var source = unsqueeze.Input(0)!;
        if (_analysis.ShapeOf(source) is not { Count: 4 } s || _analysis.ShapeOf(expand.Output(0)!) is not { Count: 5 } e ||
            _analysis.ShapeOf(repeated) is not { Count: 4 } r)
        {
            return null;
        }

        var proven = e[0].SameAs(s[0]) == true && e[1].SameAs(s[1]) == true && e[3].SameAs(s[2]) == true && e[4].SameAs(s[3]) == true &&
                     r[0].SameAs(s[0]) == true && r[2].SameAs(s[2]) == true && r[3].SameAs(s[3]) == true;
        return proven ? source : null;
    }

    /// <summary>
    /// Turns a causal mask term into the op's causal attribute when that is exact. Rows whose every
    /// visible key is also hidden by another finite mask (padding) get a softmax over all keys
    /// holding the fill in the graph, which the attribute cannot reproduce; so with other masks the
    /// attribute is used only when every fill is −inf (then such rows are NaN, or zero with a guard,
    /// either way). Otherwise the causal mask stays an ordinary mask input, and a note says so.
    /// </summary>
    private AttentionMatch RecognizeCausal(AttentionMatch match)
    {
        if (QueryShape(match) is not { Count: >= 3 } q || KeyShape(match) is not { Count: >= 3 } k)
        {
            return match;
        }

        var masks = match.Scores.Masks;
        var keyOffset = CachedKeyLength(match, q[^2]);
        // The KV-cache proof of Skv ≥ Sq is only used under the option, so that exact rewrites report what they did before.
        var keyCoversQuery = _options.CausalForPaddedRows && keyOffset is not null;
        var type = _analysis.ElementTypeOf(match.Query.Value);
        for (var i = 0; i < masks.Count; i++)
        {
            // The split-off padding is the op's bias "F where m == 0" in the attention's type, which must hold F; with a
            // fill that hides only bounded scores the combined mask must be the only one (nothing else adds to the scores).
            if (_options.CausalForPaddedRows && masks[i].Kind != MaskKind.Zero &&
                _causal.RecognizeWithPadding(masks[i], q[^2], k[^2], keyOffset) is { } combined &&
                ElementTypes.Round(combined.Causal.Fill, type) == combined.Causal.Fill &&
                (!combined.Causal.NeedsBoundedScores || masks.Count(m => m.Kind != MaskKind.Zero) == 1))
            {
                // One mask holding both: the causal part becomes the attribute, the padding part "F where m == 0" (Llama) or
                // "F where c" (the older builder; a Where that hid with the whole mask now hides with c alone).
                var alignment = CausalAttribute(combined.Causal.Alignment, q[^2], k[^2]);
                var padding = masks[i].Kind == MaskKind.AdditiveBias
                    ? new MaskTerm(MaskKind.FiniteFill, combined.Padding, combined.Causal.Fill, KeepWhenTrue: false, masks[i].Node)
                    {
                        HiddenWhereZero = combined.HiddenWhereZero,
                        AddedToScores = true,
                        OnView = masks[i].OnView,
                    }
                    : masks[i] with { Source = combined.Padding };
                return match with
                {
                    Scores = match.Scores with { Masks = masks.SetItem(i, masks[i] with { Kind = MaskKind.Causal, Alignment = alignment }).Insert(i + 1, padding) },
                    CausalNote = OptedCausalNote(alignment, combined.Causal),
                };
            }

            if (masks[i].Kind == MaskKind.Zero || _causal.Recognize(masks[i], q[^2], k[^2], keyCoversQuery, keyOffset) is not { } causal)
            {
                continue;
            }

            var others = masks.RemoveAt(i).RemoveAll(m => m.Kind == MaskKind.Zero);
            if (causal.NeedsBoundedScores && !others.All(m => m.Kind == MaskKind.KeepNegativeInfinity))
            {
                // A fill that hides only bounded scores is used only where nothing else adds to the scores, so that the
                // bound is on scale·q·kᵀ alone; otherwise the mask stays what the exact rewrite makes of it.
                continue;
            }

            // Alone, a recognised causal mask leaves every row a visible key (upper-left always shows
            // key 0; lower-right is only recognised with T ≥ S), so its fill never decides a result.
            var exact = others.IsEmpty ||
                        (double.IsNegativeInfinity(causal.Fill) && others.All(m => m.Kind == MaskKind.KeepNegativeInfinity));
            if (!exact && _options.CausalForPaddedRows)
            {
                // Opted in: a row with a visible key that the other masks leave unhidden is still exact (the hiding
                // fill absorbs every finite score, or every bounded one, so hidden keys weigh exactly 0); only rows
                // whose visible keys are all masked by the other mask change, from a softmax over the fills to one over
                // the visible keys. With Skv proven equal to Sq both alignments are the same mask; upper-left is the
                // plain one.
                var alignment = CausalAttribute(causal.Alignment, q[^2], k[^2]);
                return match with
                {
                    Scores = match.Scores with { Masks = masks.SetItem(i, masks[i] with { Kind = MaskKind.Causal, Alignment = alignment }) },
                    CausalNote = OptedCausalNote(alignment, causal),
                };
            }

            if (!exact)
            {
                return match with
                {
                    Scores = match.Scores with { Masks = masks.SetItem(i, masks[i] with { Alignment = causal.Alignment }) },
                    CausalNote = $"A causal mask ({causal.Alignment}) was recognised but kept as a mask input: with the other masks here, rows with no visible key would differ.",
                };
            }

            masks = masks.SetItem(i, masks[i] with { Kind = MaskKind.Causal, Alignment = causal.Alignment });
            if (causal.NeedsBoundedScores)
            {
                // Only recognised under the option: alone it hides what −inf would as long as the scores stay bounded.
                return match with { Scores = match.Scores with { Masks = masks }, CausalNote = BoundedNote(causal) };
            }

            break;
        }

        return match with { Scores = match.Scores with { Masks = masks } };
    }

    /// <summary>The note of a causal attribute used under <see cref="RewriteOptions.CausalForPaddedRows"/> next to a padding mask.</summary>
    private static string OptedCausalNote(CausalAlignment alignment, CausalStructure causal)
    {
        var note = string.Format(CultureInfo.InvariantCulture, CausalForPaddedRowsNote, alignment);
        return causal.NeedsBoundedScores ? note + " " + BoundedNote(causal) : note;
    }

    private static string BoundedNote(CausalStructure causal) =>
        string.Format(CultureInfo.InvariantCulture, BoundedScoresNote, causal.Fill);

    /// <summary>The alignment to write: with Skv proven equal to Sq both are the same mask, and upper-left is the plain one.</summary>
    private static CausalAlignment CausalAttribute(CausalAlignment alignment, Dim queryLength, Dim keyLength) =>
        alignment == CausalAlignment.LowerRight && keyLength.SameAs(queryLength) == true ? CausalAlignment.UpperLeft : alignment;

    /// <summary>
    /// For a key (in the plain (B, H, T, D) layout, or BLOOM's (B·H, D, T) Kᵀ) that is a Concat along its sequence axis ending with
    /// <paramref name="queryLength"/> new rows: the length of what comes before them (the cache), i.e. Skv − Sq as the
    /// graph computes it; otherwise null. Non-null proves T ≥ Sq whatever names the declared shapes give T (GPT-2 exports
    /// declare <c>present_key</c> as (batch, 2, total_sequence, 32)).
    /// </summary>
    private Dim? CachedKeyLength(AttentionMatch match, Dim queryLength)
    {
        // The keys' axis: 2 of (B, H, T, D), or 2 of BLOOM's (B·H, D, T) Kᵀ, whose cache is Concat(past_key, ·, axis=2).
        var rank = match.Key.Layout switch
        {
            KeyLayout.SwapLastAxes => 4,
            KeyLayout.Rank3Transposed => 3,
            _ => 0,
        };
        if (rank == 0 || Ops.Producer(match.Key.Value, "Concat") is not { } concat || _analysis.ShapeOf(match.Key.Value)?.Count != rank ||
            concat.IntAttribute("axis") is not { } axis || (axis < 0 ? axis + rank : axis) != 2 || concat.Inputs.Count == 0 ||
            concat.Inputs[^1] is not { } last)
        {
            return null;
        }

        if (_analysis.ShapeOf(last) is not { } shape || shape.Count != rank || shape[2].SameAs(queryLength) != true)
        {
            return null;
        }

        var cached = Dim.Of(0);
        foreach (var part in concat.Inputs.Take(concat.Inputs.Count - 1))
        {
            cached = part is not null && _analysis.ShapeOf(part) is { } partShape && partShape.Count == rank ? Dim.Add(cached, partShape[2]) : Dim.Unknown;
        }

        return cached;
    }

    /// <summary>The query's shape in the op's layout.</summary>
    private IReadOnlyList<Dim>? QueryShape(AttentionMatch match) =>
        Regrouped(match, match.Einsum is { } einsum ? EinsumLayout.Permute(_analysis.ShapeOf(match.Query.Value), einsum.Query) : _analysis.ShapeOf(match.Query.Value));

    /// <summary>The value's shape in the op's layout (regrouped by a view only when the graph merges the view back).</summary>
    private IReadOnlyList<Dim>? ValueShape(AttentionMatch match)
    {
        var shape = match.Einsum is { } einsum && !EinsumLayout.IsIdentity(einsum.Value) ? EinsumLayout.Permute(_analysis.ShapeOf(match.Value), einsum.Value) : _analysis.ShapeOf(match.Value);
        return match.Scores.View is { Merge: null } ? shape : Regrouped(match, shape);
    }

    /// <summary>The key's shape in the op's layout ((B, H, S, D) or (N, S, D)).</summary>
    private IReadOnlyList<Dim>? KeyShape(AttentionMatch match)
    {
        var shape = _analysis.ShapeOf(match.Key.Value);
        return (match.Key.Layout, shape) switch
        {
            (KeyLayout.Einsum, _) => Regrouped(match, EinsumLayout.Permute(shape, match.Einsum!.Key)),
            (KeyLayout.HeadSplitMerged, { Count: 4 } s) => [s[0], s[2], s[1], s[3]],
            (KeyLayout.Rank3SequenceFirst, { Count: 3 } s) => Regrouped(match, [s[1], s[0], s[2]]),
            (KeyLayout.Rank3Transposed, { Count: 3 } s) => Regrouped(match, [s[0], s[2], s[1]]),
            _ => Regrouped(match, shape),
        };
    }

    /// <summary>A 3-D (B·H, X, Y) operand's shape as the op sees it when it runs on a view of the scores: (B, H, X, Y).</summary>
    private IReadOnlyList<Dim>? Regrouped(AttentionMatch match, IReadOnlyList<Dim>? shape) =>
        match.Scores.View is { Windowed: false } view && shape is { Count: 3 } flat && _analysis.ShapeOf(view.GroupedScores) is { Count: 4 } grouped
            ? [grouped[0], grouped[1], flat[1], flat[2]]
            : shape;

    // ---- check ----------------------------------------------------------------------------------

    /// <summary>Whether fusing <paramref name="match"/> keeps every result of the model; otherwise the reason.</summary>
    public CheckResult Check(AttentionMatch match)
    {
        ArgumentNullException.ThrowIfNull(match);
        var result = CheckSoftmax(match);
        if (result.IsOk)
        {
            result = CheckPrivate(match);
        }

        if (result.IsOk)
        {
            result = CheckWrappers(match);
        }

        if (result.IsOk)
        {
            result = CheckTypesAndShapes(match);
        }

        if (result.IsOk)
        {
            result = CheckScale(match);
        }

        if (result.IsOk)
        {
            result = CheckMasks(match);
        }

        if (result.IsOk && CheckFloat64(match) is { IsOk: false } widened)
        {
            result = widened;
        }

        // Later checks only refuse: the notes of an accepted match are those CheckMasks gave.
        if (result.IsOk && match.Scores.View is { } view && CheckView(match, view) is { IsOk: false } unviewable)
        {
            result = unviewable;
        }

        return result;
    }

    /// <summary>
    /// The op runs on the (B, H, S, T) view, with Q, K and V regrouped by the first two entries of the split's shape:
    /// each must be a size (a number ≥ 1, or a dim read from a shape), or −1, never 0 (Reshape would copy the input's
    /// dim there, which differs between the scores and Q, K, V). Shape readers of the 3-D scores are rewired as usual,
    /// those of the 4-D view to the shape of the regrouped query and key (HF DeBERTa reads the view's probabilities'
    /// shape to merge them); readers of a value of another or unknown rank are refused.
    /// </summary>
    private CheckResult CheckView(AttentionMatch match, ScoresView view)
    {
        if (view.Windowed)
        {
            return CheckWindowedView(match, view);
        }

        if (view.Merge is not null && _analysis.ShapeOf(match.Value) is not { Count: 3 })
        {
            return CheckResult.Refuse(
                $"The probabilities are merged back to (B·H, S, T) by '{view.Merge.DisplayName}' but the value '{match.Value.Name}' is not 3-D ({Describe(match.Value)}), so it cannot be regrouped with them.");
        }

        if (_analysis.ShapeVector(view.SplitShape) is not { Length: 4 } entries ||
            entries.Take(2).Any(d => d.Size is 0 or < -1 || (d.Size is null && d.Symbol is null)))
        {
            return CheckResult.Refuse(
                $"The (B, H) of Reshape '{view.Split.DisplayName}' (the (B, H, S, T) view of the scores) are not provably sizes (or −1), so Q, K and V cannot be regrouped with them.");
        }

        var chain = new HashSet<Node>([match.Scores.ScoresMatMul, .. match.Scores.Nodes, .. match.ProbabilityNodes]);
        if (chain.SelectMany(n => n.Outputs.OfType<Value>()).Where(v => _analysis.ShapeOf(v)?.Count is not (3 or 4)).SelectMany(v => v.Consumers)
                 .FirstOrDefault(c => c.Is("Shape") && !chain.Contains(c)) is { } reader)
        {
            return CheckResult.Refuse($"Shape '{reader.DisplayName}' reads an intermediate of scores that are viewed as (B, H, S, T), of unknown rank; it cannot be rewired to the op's inputs.");
        }

        return CheckResult.Ok;
    }

    /// <summary>
    /// A <see cref="ScoresView.Windowed"/> view: the op runs on the 4-D scores, and each mask added to the view is laid onto
    /// it by the graph's own split and flattened back (<see cref="FlattenedWindowMask"/>). It must be merged back before
    /// Softmax. Shape readers of the view are refused (the rewiring computes 4-D shapes).
    /// </summary>
    private CheckResult CheckWindowedView(AttentionMatch match, ScoresView view)
    {
        if (view.Merge is null)
        {
            return CheckResult.Refuse($"Reshape '{view.Split.DisplayName}' views the 4-D scores as {Describe(view.GroupedScores)} and nothing merges them back before Softmax.");
        }

        var chain = new HashSet<Node>([match.Scores.ScoresMatMul, .. match.Scores.Nodes, .. match.ProbabilityNodes]);
        if (chain.SelectMany(n => n.Outputs.OfType<Value>()).Where(v => _analysis.ShapeOf(v)?.Count != WindowedRank).SelectMany(v => v.Consumers)
                 .FirstOrDefault(c => c.Is("Shape") && !chain.Contains(c)) is { } reader)
        {
            return CheckResult.Refuse($"Shape '{reader.DisplayName}' reads an intermediate of scores that are viewed as (B, nW, H, S, T); it cannot be rewired to the op's inputs.");
        }

        return CheckResult.Ok;
    }

    private CheckResult CheckSoftmax(AttentionMatch match)
    {
        var softmax = match.Softmax;
        var rank = _analysis.ShapeOf(softmax.Input(0)!)?.Count;
        if (match.DecomposedSoftmax is { } written)
        {
            return CheckDecomposedSoftmax(written, rank);
        }

        var opset = softmax.Graph.DefaultOpset;
        var axis = softmax.IntAttribute("axis") ?? (opset >= 13 ? -1 : 1);
        if (axis == -1)
        {
            return CheckResult.Ok;
        }

        if (rank is null)
        {
            return CheckResult.Refuse($"Softmax '{softmax.DisplayName}' has axis={axis} and the rank of its input is unknown, so it is not provably over the last axis.");
        }

        if (axis == rank - 1)
        {
            return CheckResult.Ok;
        }

        return CheckResult.Refuse(opset < 13
            ? $"Softmax '{softmax.DisplayName}' (opset {opset}) has axis={axis} on a rank-{rank} input: it normalises over the flattened axes {axis}..{rank - 1}, not over the keys."
            : $"Softmax '{softmax.DisplayName}' normalises over axis {axis}, not over the last axis of its rank-{rank} input.");
    }

    /// <summary>
    /// A written-out softmax is the op's softmax when it subtracts the row max (as Softmax does,
    /// so nothing overflows) and both reductions keep dims over exactly the last axis.
    /// </summary>
    private CheckResult CheckDecomposedSoftmax(DecomposedSoftmax written, int? rank)
    {
        if (written.ReduceMax is null)
        {
            return CheckResult.Refuse(
                $"Softmax written as Exp(x) / ReduceSum '{written.ReduceSum.DisplayName}' without subtracting the row max: it overflows to inf/inf = NaN for scores above ~88, where the op (like Softmax) does not.");
        }

        foreach (var reduce in new[] { written.ReduceMax, written.ReduceSum })
        {
            if ((reduce.IntAttribute("keepdims") ?? 1) != 1)
            {
                return CheckResult.Refuse($"{reduce.OpType} '{reduce.DisplayName}' of a written-out softmax drops the reduced axis (keepdims=0), so it does not broadcast back over the row.");
            }

            var axes = _analysis.AxesOf(reduce);
            if (axes is not [var axis] || !(axis == -1 || (rank is { } r && axis == r - 1)))
            {
                var described = axes is null ? "axes that are not constant or absent (all axes)" : $"axes [{string.Join(", ", axes)}]";
                return CheckResult.Refuse($"{reduce.OpType} '{reduce.DisplayName}' of a written-out softmax reduces over {described}, not provably the last axis{(rank is null ? " (rank unknown)" : $" of a rank-{rank} input")}.");
            }
        }

        return CheckResult.Ok;
    }

    /// <summary>Every intermediate must be used only inside the pattern and must not be a graph output.</summary>
    private static CheckResult CheckPrivate(AttentionMatch match)
    {
        var inside = new HashSet<Node>([match.Anchor, match.Scores.ScoresMatMul, .. match.Scores.Nodes, .. match.ProbabilityNodes]);
        foreach (var node in inside)
        {
            if (node == match.Anchor)
            {
                continue;
            }

            foreach (var output in node.Outputs.OfType<Value>())
            {
                if (output.IsGraphOutput)
                {
                    return CheckResult.Refuse($"'{output.Name}' (output of {node.OpType} '{node.DisplayName}') is a graph output; fusing would remove it.");
                }

                if (output.Consumers.FirstOrDefault(c => !inside.Contains(c) && !c.Is("Shape")) is { } outside)
                {
                    return CheckResult.Refuse($"'{output.Name}' (output of {node.OpType} '{node.DisplayName}') is also used by {outside.OpType} '{outside.DisplayName}' outside the attention pattern.");
                }
            }
        }

        return CheckResult.Ok;
    }

    private CheckResult CheckWrappers(AttentionMatch match)
    {
        foreach (var node in match.ProbabilityNodes)
        {
            if (node.Is("Cast") && !ElementTypes.IsFloat((DataType)(node.IntAttribute("to") ?? 0)))
            {
                return CheckResult.Refuse($"Cast '{node.DisplayName}' after Softmax converts the probabilities to {(DataType)(node.IntAttribute("to") ?? 0)}.");
            }

            // A ratio of 0 keeps every element unscaled even in training mode (torchvision's Swin calls F.dropout(p=0.0)
            // with training left true, which exports training_mode = true).
            if (node.Is("Dropout") && node.Input(2) is { } training && _analysis.ScalarOf(training) is not 0.0 &&
                (node.Input(1) is not { } ratio || _analysis.ScalarOf(ratio) is not 0.0))
            {
                return CheckResult.Refuse($"Dropout '{node.DisplayName}' is not provably the identity (training_mode is not a constant false and the ratio not a constant 0).");
            }
        }

        return CheckResult.Ok;
    }

    private CheckResult CheckTypesAndShapes(AttentionMatch match)
    {
        var type = _analysis.ElementTypeOf(match.Query.Value);
        if (!ElementTypes.IsAttentionType(type))
        {
            return CheckResult.Refuse(type == DataType.Undefined
                ? $"The element type of query '{match.Query.Value.Name}' is unknown."
                : $"Query '{match.Query.Value.Name}' is {type}; the op takes float, float16 or bfloat16.");
        }

        foreach (var (name, value) in new[] { ("key", match.Key.Value), ("value", match.Value) })
        {
            var other = _analysis.ElementTypeOf(value);
            if (other != type)
            {
                return CheckResult.Refuse($"The {name} '{value.Name}' is {other} but the query is {type}.");
            }
        }

        var q = QueryShape(match);
        var k = KeyShape(match);
        var v = ValueShape(match);
        if (q is null || k is null || v is null)
        {
            return CheckResult.Refuse("The ranks of query, key and value are not all known.");
        }

        if (q.Count is not (3 or 4) || k.Count != q.Count || v.Count != q.Count)
        {
            return CheckResult.Refuse($"Query, key and value have ranks {q.Count}, {k.Count}, {v.Count}; the op takes all rank 4 (B,H,S,D) or all rank 3 (N,S,D).");
        }

        if (Mismatch(q[^1], k[^1]))
        {
            return CheckResult.Refuse($"Head dim of key ({k[^1]}) does not match query ({q[^1]}).");
        }

        if (Mismatch(k[^2], v[^2]))
        {
            return CheckResult.Refuse($"Key length of value ({v[^2]}) does not match key ({k[^2]}).");
        }

        if (Mismatch(q[0], k[0]) || Mismatch(q[0], v[0]))
        {
            return CheckResult.Refuse($"Batch dims differ: query {q[0]}, key {k[0]}, value {v[0]}.");
        }

        if (q.Count == 4)
        {
            if (k[1].SameAs(v[1]) == false)
            {
                return CheckResult.Refuse($"Key has {k[1]} heads but value has {v[1]}.");
            }

            if (q[1].Size is { } hq && k[1].Size is { } hkv && (hkv == 0 || hq % hkv != 0))
            {
                return CheckResult.Refuse($"Query heads ({hq}) are not a multiple of key heads ({hkv}).");
            }

            // A single key head broadcast by MatMul is multi-query attention, which the op reads the same way.
            if (!match.KvHeadRepeatRemoved && Mismatch(q[1], k[1]) && k[1].Size != 1)
            {
                return CheckResult.Refuse($"Query has {q[1]} heads and key {k[1]}, and no head repeat was found to explain it.");
            }
        }

        return CheckResult.Ok;
    }

    /// <summary>Provably different, or one side known to be 1 (a broadcast the op does not do) and the other not.</summary>
    private static bool Mismatch(Dim a, Dim b) =>
        a.SameAs(b) == false || (a.Size == 1) != (b.Size == 1);

    private static CheckResult CheckScale(AttentionMatch match)
    {
        var scale = match.Scale;
        if (!double.IsFinite(scale) || scale == 0 || !float.IsFinite((float)scale) || (float)scale == 0)
        {
            return CheckResult.Refuse($"The scale found ({scale.ToString(CultureInfo.InvariantCulture)}) is not a usable finite non-zero float.");
        }

        return CheckResult.Ok;
    }

    private CheckResult CheckMasks(AttentionMatch match)
    {
        var masks = match.Scores.Masks.Where(m => m.Kind is not (MaskKind.Causal or MaskKind.Zero)).ToList();
        var notes = new List<string>();
        if (match.Zeroed is { } zeroed)
        {
            notes.Add($"Where '{zeroed.Where.DisplayName}' after Softmax zeroes exactly the keys the Where before it hides: that mask is the keep input with masked_rows = zero " +
                      "(a row with no visible key is 0 in both; elsewhere the hidden keys weigh exactly 0 before the zeroing, every other mask being bounded like the scores).");
        }
        var additive = masks.Where(m => m.Kind == MaskKind.AdditiveBias).ToList();
        var wheres = masks.Where(m => m.Kind != MaskKind.AdditiveBias).ToList();
        // Summing two masks first is exact when one only holds 0 and absorbing values (a causal mask, a (1 − m)·finfo.min
        // padding mask of an integer m): s + 0 + M == s + M, and an absorbing value absorbs everything added to it.
        var smallFinite = additive.Count == 2 && additive.All(m => m.Alignment == CausalAlignment.None && _maskValues.MagnitudeBound(m.Source) is <= SummableMagnitude);
        if (additive.Count > 2 || (additive.Count == 2 && !smallFinite && additive.All(m => m.Alignment == CausalAlignment.None && !_maskValues.IsZeroOrAbsorbing(m.Source))))
        {
            return CheckResult.Refuse(
                "Two additive masks, neither provably only 0 or absorbing values (such as (1 − m)·finfo.min for an integer m): adding them before the scores would round differently from the graph.");
        }

        // Except when absorbing values of opposite signs can meet: (s + finfo.min) + finfo.max is 0, s + (finfo.min + finfo.max)
        // is s. A causal mask only hides (negative); (1 − m)·finfo.min is +finfo.max where an integer m is 2. A mask that is
        // not provably made of 0 and absorbing values (ALiBi, a float padding input) may itself hold finfo.min.
        bool MayCancel(MaskValues values) =>
            additive.Select(m => MaskSigns(m, values)).ToList() is var signs &&
            (signs.All(s => s is not null) ? Opposite(signs[0]!.Value, signs[1]!.Value) : signs.Any(s => s is { } known && known.HasFlag(MaskValues.Signs.Positive)));
        if (additive.Count == 2 && MayCancel(_maskValues))
        {
            if (!_options.IntegerMasksAreBinary || MayCancel(_binaryMaskValues))
            {
                return CheckResult.Refuse(
                    "Two additive masks that may hold absorbing values of opposite signs (such as (1 − m)·finfo.min for an integer m that may be 2, next to a mask holding finfo.min): their sum cancels where the graph's does not.");
            }

            notes.Add(IntegerMasksAreBinaryNote);
        }

        if (smallFinite && !additive.Any(m => _maskValues.IsZeroOrAbsorbing(m.Source)))
        {
            notes.Add($"Masks '{additive[1].Source.Name}' and '{additive[0].Source.Name}' (finite, |v| ≤ {SummableMagnitude}) are summed into one bias: " +
                      "each biased score may differ from the graph's by float32 rounding at its magnitude; no key or row is hidden differently.");
        }

        if (wheres.Count > 1)
        {
            return CheckResult.Refuse("Two Where masks on the scores.");
        }

        var type = _analysis.ElementTypeOf(match.Query.Value);
        var scoreShape = _analysis.ShapeOf(match.Scores.ScoresMatMul.Output(0)!);
        var view = match.Scores.View;
        foreach (var term in masks)
        {
            if (CheckMaskShape(term, term.OnView ? _analysis.ShapeOf(view!.GroupedScores) : scoreShape) is { IsOk: false } bad)
            {
                return bad;
            }

            if (view is { Windowed: false } && !term.OnView && CheckRegroupable(term) is { IsOk: false } flat)
            {
                return flat;
            }
        }

        foreach (var term in additive.Where(m => BiasSource(m.Source, type) is null))
        {
            var maskType = _analysis.ElementTypeOf(term.Source);
            if (!ElementTypes.IsFloat(maskType))
            {
                return CheckResult.Refuse($"Mask '{term.Source.Name}' is {maskType}; the op's bias must be {type}.");
            }

            if (OutOfRangeConstant(term.Source, type, depth: 0) is { } constant)
            {
                return CheckResult.Refuse(
                    $"Mask '{term.Source.Name}' is {maskType} and is built from {constant.ToString(CultureInfo.InvariantCulture)}, which {type} cannot hold: converting it to the op's type would turn it into infinity.");
            }

            // The op's bias has the attention's type: a mask of a wider type is only passed on when conversion provably keeps
            // every value (a graph input may hold −1e9 or finfo.min, which become −inf in float16 and turn rows the graph
            // spreads over the fill into NaN, or ordinary values that round).
            if (!_maskValues.IsExactIn(term.Source, type) && _options.IntegerMasksAreBinary && _binaryMaskValues.IsExactIn(term.Source, type))
            {
                notes.Add(IntegerMasksAreBinaryNote);
            }
            else if (!_maskValues.IsExactIn(term.Source, type))
            {
                return CheckResult.Refuse(
                    $"Mask '{term.Source.Name}' is {maskType} and the op's bias is {type}: its values are not provably held exactly by {type} (a graph input may hold −1e9 or finfo.min, which would become −inf), so converting it could change the result.");
            }

            notes.Add($"Mask '{term.Source.Name}' is converted from {maskType} to {type} (the op's bias type); every value it can hold converts exactly.");
        }

        if (additive.Count == 2 && (wheres.Count > 0 || match.Scores.Clamp is not null))
        {
            return CheckResult.Refuse("A causal mask and another additive mask together with further masks or a clamp.");
        }

        if (wheres.Count == 1)
        {
            var where = wheres[0];
            // Padding split off a combined causal mask is added to the scores in the graph, F included, as the op adds its bias.
            if (where.Kind == MaskKind.FiniteFill && where.Fill > CausalMasks.AbsorbingFill && !(where.AddedToScores && additive.Count == 0))
            {
                return CheckResult.Refuse(
                    $"Where '{where.Node.DisplayName}' fills masked scores with {where.Fill.ToString(CultureInfo.InvariantCulture)}: s + F differs from F for ordinary scores, so no additive bias reproduces it exactly.");
            }

            if (where.Kind == MaskKind.FiniteFill && ElementTypes.Round(where.Fill, type) != where.Fill)
            {
                return CheckResult.Refuse($"Where '{where.Node.DisplayName}' fills with {where.Fill.ToString(CultureInfo.InvariantCulture)}, which {type} cannot hold exactly.");
            }

            // A fill applied before an additive mask M becomes the bias F + M on hidden keys; F + M is absorbing like F unless
            // M holds positive absorbing values (+finfo.max, from (1 − m)·finfo.min with an integer m of 2), which cancel F.
            bool Cancels(MaskValues values) => MaskSigns(additive[0], values) is { } added && added.HasFlag(MaskValues.Signs.Positive);
            if (where.Kind == MaskKind.FiniteFill && additive.Count == 1 && masks.IndexOf(where) > masks.IndexOf(additive[0]) && Cancels(_maskValues) &&
                _options.IntegerMasksAreBinary && !Cancels(_binaryMaskValues))
            {
                notes.Add(IntegerMasksAreBinaryNote);
            }
            else if (where.Kind == MaskKind.FiniteFill && additive.Count == 1 && masks.IndexOf(where) > masks.IndexOf(additive[0]) && Cancels(_maskValues))
            {
                return CheckResult.Refuse(
                    $"Where '{where.Node.DisplayName}' fills with {where.Fill.ToString(CultureInfo.InvariantCulture)} before mask '{additive[0].Source.Name}' is added, which may hold positive absorbing values (such as (1 − m)·finfo.min for an integer m of 2): fill and mask would cancel in the op's bias where the graph's do not.");
            }
        }

        if (match.Scores.Clamp is { } clamp)
        {
            if (additive.Count != 1 || wheres.Count != 0 || clamp > CausalMasks.AbsorbingFill || !double.IsFinite(clamp) ||
                ElementTypes.Round(clamp, type) != clamp)
            {
                return CheckResult.Refuse($"Max clamp at {clamp.ToString(CultureInfo.InvariantCulture)} is only fused right after a single additive mask with an absorbing finite clamp value.");
            }
        }

        return CheckResult.Ok with { Notes = notes };
    }

    /// <summary>
    /// Scores widened to float64 are masked and normalised there, the op does both in float32. That only rounds
    /// differently when at most one mask is applied and, if it is additive or a finite fill, every value it holds is ±0 or
    /// absorbing in float64 as in float32 (|v| ≥ 2¹¹⁷, such as float32's finfo.min): then a hidden key is the same fill
    /// in both and a row hidden entirely is a uniform softmax in both. Two masks are refused, since finfo.min + finfo.min
    /// overflows to −inf in float32 only, as is a clamp, and so is a mask of other values: a row hidden entirely by
    /// −1e30 or −10000 is a softmax of the scores in float64 and not in float32.
    /// </summary>
    private CheckResult CheckFloat64(AttentionMatch match)
    {
        if (match.Scores.Nodes.Concat(match.ProbabilityNodes).FirstOrDefault(n => n.Is("Cast") && n.IntAttribute("to") == (long)DataType.Double) is not { } cast)
        {
            return CheckResult.Ok;
        }

        var masks = match.Scores.Masks.Where(m => m.Kind != MaskKind.Zero).ToList();
        if (masks.Count > 1 || match.Scores.Clamp is not null)
        {
            return CheckResult.Refuse(
                $"The scores are widened to float64 by Cast '{cast.DisplayName}' and then {(masks.Count > 1 ? "masked twice" : "clamped")}: the op masks in float32, where finfo.min + finfo.min overflows to −inf and a clamp acts on other values.");
        }

        var absorbing = masks switch
        {
            [{ Kind: MaskKind.AdditiveBias, Alignment: CausalAlignment.None } additive] => _float64MaskValues.IsZeroOrAbsorbing(additive.Source),
            [{ Kind: MaskKind.FiniteFill } where] => Math.Abs(where.Fill) >= MaskValues.Float64Absorbing,
            _ => true,
        };
        return absorbing ? CheckResult.Ok : CheckResult.Refuse(
            $"The scores are widened to float64 by Cast '{cast.DisplayName}' and masked by '{masks[0].Source.Name}', which is not provably made of 0 and values that absorb the scores in float64 (|v| ≥ 2¹¹⁷, such as float32's finfo.min): a row it hides entirely would be a softmax of the scores in float64 and a uniform one in the op's float32.");
    }

    /// <summary>The signs of the absorbing values a mask term holds (a recognised causal mask only hides), or null when unknown.</summary>
    private static MaskValues.Signs? MaskSigns(MaskTerm term, MaskValues values) =>
        term.Alignment != CausalAlignment.None ? MaskValues.Signs.Negative : values.AbsorbingSigns(term.Source) is { } signs ? (term.Subtracted ? FlipSigns(signs) : signs) : null;

    private static MaskValues.Signs FlipSigns(MaskValues.Signs signs) =>
        (signs.HasFlag(MaskValues.Signs.Negative) ? MaskValues.Signs.Positive : MaskValues.Signs.None) |
        (signs.HasFlag(MaskValues.Signs.Positive) ? MaskValues.Signs.Negative : MaskValues.Signs.None);

    private static bool Opposite(MaskValues.Signs a, MaskValues.Signs b) =>
        (a.HasFlag(MaskValues.Signs.Negative) && b.HasFlag(MaskValues.Signs.Positive)) || (a.HasFlag(MaskValues.Signs.Positive) && b.HasFlag(MaskValues.Signs.Negative));

    /// <summary>
    /// A mask on the 3-D (B·H, S, T) scores of a view the op runs on: it must regroup to (B, H, ·, ·) the way the
    /// scores do. A leading dim of 1, or a lower rank, broadcasts over B and H alike and is used as is; any other rank-3
    /// mask is reshaped by the split's (B, H), first broadcast to the query's B·H rows when its leading dim is not provably
    /// B·H (the scores' leading dim, or the product of the view's first two). That is exact: the graph's Add only runs
    /// with a leading dim of 1 or B·H (the split then needs B·H rows), and one provably neither is refused by
    /// CheckMaskShape. Refused here: a mask whose rank is unknown.
    /// </summary>
    private CheckResult CheckRegroupable(MaskTerm term) =>
        _analysis.ShapeOf(term.Source) is null
            ? CheckResult.Refuse($"Mask '{term.Source.Name}' is applied to the (B·H, S, T) scores, but its rank is unknown, so it cannot be regrouped to the (B, H, S, T) view the op runs on.")
            : CheckResult.Ok;

    /// <summary>Whether a leading dim is provably the B·H rows of 3-D scores viewed as (B, H, S, T).</summary>
    private static bool LeadingIsBatchTimesHeads(Dim leading, IReadOnlyList<Dim>? scoreShape, IReadOnlyList<Dim>? viewShape) =>
        (scoreShape is { Count: 3 } && leading.SameAs(scoreShape[0]) == true) ||
        (viewShape is { Count: 4 } && leading.SameAs(Dim.Multiply(viewShape[0], viewShape[1])) == true);

    /// <summary>
    /// A scalar constant that the mask is built from (through a few elementwise, cast and shape ops)
    /// and that <paramref name="type"/> cannot hold, such as float32's finfo.min for a float16 bias.
    /// </summary>
    private double? OutOfRangeConstant(Value mask, DataType type, int depth)
    {
        if (_analysis.ScalarOf(mask) is { } constant)
        {
            return double.IsFinite(constant) && double.IsInfinity(ElementTypes.Round(constant, type)) ? constant : null;
        }

        if (depth > 6 || Ops.Producer(mask, "Cast", "Mul", "Sub", "Add", "Where", "Unsqueeze", "Reshape", "Expand", "Neg", "Identity") is not { } node)
        {
            return null;
        }

        return node.Inputs.OfType<Value>().Select(input => OutOfRangeConstant(input, type, depth + 1)).FirstOrDefault(c => c is not null);
    }

    private CheckResult CheckMaskShape(MaskTerm term, IReadOnlyList<Dim>? scoreShape)
    {
        if (_analysis.ShapeOf(term.Source) is not { } mask || scoreShape is null)
        {
            return CheckResult.Ok;
        }

        if (mask.Count > scoreShape.Count)
        {
            return CheckResult.Refuse($"Mask '{term.Source.Name}' has rank {mask.Count}, more than the scores' {scoreShape.Count}: it would broadcast the scores up.");
        }

        for (var i = 1; i <= mask.Count; i++)
        {
            var m = mask[^i];
            var s = scoreShape[^i];
            if (m.Size != 1 && m.SameAs(s) == false)
            {
                return CheckResult.Refuse($"Mask '{term.Source.Name}' dim {mask.Count - i} ({m}) neither is 1 nor matches the scores ({s}).");
            }
        }

        return CheckResult.Ok;
    }

    /// <summary>The mask tensor to pass as bias in type <paramref name="type"/>: itself, or the T-typed input of a widening Cast.</summary>
    private Value? BiasSource(Value mask, DataType type)
    {
        if (_analysis.ElementTypeOf(mask) == type)
        {
            return mask;
        }

        return Ops.Producer(mask, "Cast") is { } cast && _analysis.ElementTypeOf(cast.Input(0)!) == type ? cast.Input(0) : null;
    }

    // ---- rewrite --------------------------------------------------------------------------------

    /// <summary>What the last <see cref="Rewrite"/> did beyond the fusion itself, for the report.</summary>
    public IReadOnlyList<string> RewriteNotes { get; private set; } = [];

    /// <summary>Replaces the matched subgraph by one FlashAttention node; returns it.</summary>
    public Node Rewrite(AttentionMatch match)
    {
        ArgumentNullException.ThrowIfNull(match);
        var rewriteNotes = new List<string>();
        RewriteNotes = rewriteNotes;
        var graph = match.Anchor.Graph;
        var anchor = match.Anchor;
        var names = graph.Model.Names;
        var type = _analysis.ElementTypeOf(match.Query.Value);

        var query = match.Query.Value;
        var key = match.Key.Value;
        var value = match.Value;
        if (match.Einsum is { } einsum)
        {
            // Query and key are regrouped before the score Einsum, so Shape readers of the scores can use them.
            query = Permuted(match.Scores.ScoresMatMul, query, einsum.Query, "Query");
            key = Permuted(match.Scores.ScoresMatMul, key, einsum.Key, "Key");
            value = Permuted(anchor, value, einsum.Value, "Value");
        }

        var view = match.Scores.View;
        // Readers of a (B, H, S, T) view are rewired once Q and K are regrouped to it (below).
        bool OnGroupedView(Value v) => view is { Windowed: false } && _analysis.ShapeOf(v)?.Count == 4;
        RewireShapeReaders(match, query, key, v => !OnGroupedView(v));
        if (match.Key.Layout is KeyLayout.HeadSplitMerged or KeyLayout.Rank3SequenceFirst or KeyLayout.Rank3Transposed)
        {
            long[] perm = match.Key.Layout switch
            {
                KeyLayout.HeadSplitMerged => [0, 2, 1, 3],
                KeyLayout.Rank3SequenceFirst => [1, 0, 2],
                _ => [0, 2, 1],
            };
            key = graph.InsertNode(anchor, "Transpose", "", [key], [names.Fresh(key.Name + "_heads_first")], "KeyHeadsFirst",
                [Node.IntsAttributeProto("perm", perm)]).Output(0)!;
        }

        var masks = match.Scores.Masks;
        var additives = masks.Where(m => m.Kind == MaskKind.AdditiveBias).ToList();
        var additive = additives.FirstOrDefault();
        var where = masks.FirstOrDefault(m => m.Kind is MaskKind.KeepNegativeInfinity or MaskKind.FiniteFill);
        var causal = masks.FirstOrDefault(m => m.Kind == MaskKind.Causal)?.Alignment ?? CausalAlignment.None;

        Value? batchAndHeads = null;
        Value Regroup(Value input, string hint)
        {
            // (B·H, X, Y) → (B, H, X, Y) with the view's (B, H).
            var rest = SliceOf(graph, anchor, graph.InsertNode(anchor, "Shape", "", [input], [names.Fresh(input.Name + "_shape")], hint + "Shape").Output(0)!, 1, 3, hint + "Dims");
            var shape = graph.InsertNode(anchor, "Concat", "", [batchAndHeads!, rest], [names.Fresh(input.Name + "_4d_shape")], hint + "Shape4D",
                [Node.IntAttributeProto("axis", 0)]).Output(0)!;
            return graph.InsertNode(anchor, "Reshape", "", [input, shape], [names.Fresh(input.Name + "_4d")], hint + "Regroup").Output(0)!;
        }

        // A mask on the 3-D scores of a view follows the scores onto it (CheckRegroupable): only a rank-3 mask with a
        // leading dim other than 1 needs the reshape (after a broadcast to the query's B·H rows unless it provably has
        // them); the others broadcast over B and H alike.
        var flatQuery = query;
        Value MaskOnView(MaskTerm term, Value mask)
        {
            if (view is { Windowed: true })
            {
                return term.OnView ? FlattenedWindowMask(graph, anchor, view, mask, query, key, type) : mask;
            }

            if (view is null || term.OnView || _analysis.ShapeOf(term.Source) is not { Count: 3 } shape || shape[0].Size == 1)
            {
                return mask;
            }

            if (!LeadingIsBatchTimesHeads(shape[0], _analysis.ShapeOf(match.Scores.ScoresMatMul.Output(0)!), _analysis.ShapeOf(view.GroupedScores)))
            {
                var rows = SliceOf(graph, anchor, graph.InsertNode(anchor, "Shape", "", [flatQuery], [names.Fresh(flatQuery.Name + "_shape")], "QueryRowsShape").Output(0)!, 0, 1, "QueryRows");
                var target = graph.InsertNode(anchor, "Concat", "", [rows, Constant(graph, anchor, ConstantTensor.Int64s([1, 1]), "MaskRowOnes")],
                    [names.Fresh(mask.Name + "_rows")], "MaskRowsShape", [Node.IntAttributeProto("axis", 0)]).Output(0)!;
                mask = graph.InsertNode(anchor, "Expand", "", [mask, target], [names.Fresh(mask.Name + "_per_row")], "MaskPerRow").Output(0)!;
            }

            return Regroup(mask, "Mask");
        }

        if (view is { Windowed: false })
        {
            // The scores are viewed as (B, H, S, T) around the mask (BART), Softmax (BLOOM) or the value product
            // (GPT-NeoX), so the 3-D query and key regroup the same way, (B·H, S, D) → (B, H, S, D), as does a 3-D value
            // that the graph multiplies with merged probabilities; masks on the view are used unexpanded.
            batchAndHeads = SliceOf(graph, anchor, view.SplitShape, 0, 2, "BatchAndHeads");
            query = Regroup(query, "Query");
            key = Regroup(key, "Key");
            if (view.Merge is not null)
            {
                value = Regroup(value, "Value");
            }

            RewireShapeReaders(match, query, key, OnGroupedView, groupedView: true);
        }

        Value? bias = additive is null ? null : MaskOnView(additive, SignedBias(graph, anchor, additive, type));

        if (additives.Count == 2)
        {
            var second = MaskOnView(additives[1], SignedBias(graph, anchor, additives[1], type));
            bias = graph.InsertNode(anchor, "Add", "", [second, bias], [names.Fresh(bias!.Name + "_combined")], "CombineMasks").Output(0)!;
        }

        if (bias is not null && match.Scores.Clamp is { } clamp)
        {
            var floor = Constant(graph, anchor, ConstantTensor.Scalar(type, clamp), "ClampValue");
            bias = graph.InsertNode(anchor, "Max", "", [bias, floor], [names.Fresh(bias.Name + "_clamped")], "ClampBias").Output(0)!;
        }

        Value? keep = null;
        if (where is { Kind: MaskKind.KeepNegativeInfinity })
        {
            var source = MaskOnView(where, where.Source);
            keep = where.KeepWhenTrue ? source
                : graph.InsertNode(anchor, "Not", "", [source], [names.Fresh(where.Source.Name + "_keep")], "KeepMask").Output(0)!;
        }
        else if (where is { Kind: MaskKind.FiniteFill })
        {
            // cond ? s + M : F  ==  s + (cond ? M : F), because s + F == F for an absorbing fill F;
            // (cond ? s : F) + M  ==  s + (cond ? M : F + M) likewise, F + M being absorbing too.
            Value fill = Constant(graph, anchor, ConstantTensor.Scalar(type, where.Fill), "MaskFill");
            var whereIsInner = additive is not null && masks.IndexOf(where) > masks.IndexOf(additive);
            if (whereIsInner)
            {
                fill = graph.InsertNode(anchor, "Add", "", [fill, bias], [names.Fresh(bias!.Name + "_filled")], "MaskFillPlusBias").Output(0)!;
            }

            var kept = bias ?? Constant(graph, anchor, ConstantTensor.Scalar(type, 0), "MaskZero");
            var condition = MaskOnView(where, where.Source);
            if (where.HiddenWhereZero)
            {
                var zero = Constant(graph, anchor, ConstantTensor.Scalar(_analysis.ElementTypeOf(where.Source), 0), "PaddingZero");
                condition = graph.InsertNode(anchor, "Equal", "", [condition, zero], [names.Fresh(where.Source.Name + "_padded")], "PaddedKeys").Output(0)!;
            }

            Value?[] branches = where.KeepWhenTrue ? [condition, kept, fill] : [condition, fill, kept];
            bias = graph.InsertNode(anchor, "Where", "", branches, [names.Fresh(where.Source.Name + "_bias")], "MaskBias").Output(0)!;
        }

        var attributes = new List<AttributeProto> { Node.FloatAttributeProto("scale", (float)match.Scale) };
        if (causal != CausalAlignment.None)
        {
            attributes.Add(Node.IntAttributeProto("causal", (long)causal));
        }

        if (match.Scores.Softcap > 0)
        {
            attributes.Add(Node.FloatAttributeProto("softcap", match.Scores.Softcap));
        }

        attributes.Add(Node.StringAttributeProto("masked_rows", match.MaskedRows == MaskedRowPolicy.Zero ? "zero" : "nan"));

        // Masks blown up to the score shape before they are made a bias or keep mask are passed at the shape they
        // broadcast from (BroadcastMasks); what they were built from stays for other readers, or goes below.
        var bypassed = new List<Value>();
        Value? Narrowed(Value? mask)
        {
            if (mask is null || _broadcastMasks.Narrow(graph, anchor, mask) is not { } narrowed)
            {
                return mask;
            }

            rewriteNotes.Add(narrowed.Note);
            bypassed.Add(mask);
            return narrowed.Mask;
        }

        bias = Narrowed(bias);
        keep = Narrowed(keep);

        var inputs = new List<Value?> { query, key, value, bias, keep };
        while (inputs[^1] is null)
        {
            inputs.RemoveAt(inputs.Count - 1);
        }

        var output = anchor.Output(0)!;
        var fused = graph.InsertNode(anchor, OpType, Domain, inputs, [names.Fresh(output.Name + "_fused")],
            anchor.Name.Length > 0 ? anchor.Name + "_FlashAttention" : "FlashAttention", attributes);
        var result = fused;
        if (view is { Windowed: false, Merge: not null })
        {
            // (B, H, S, Dv) → (B·H, S, Dv), the anchor's layout.
            var fusedShape = graph.InsertNode(anchor, "Shape", "", [fused.Output(0)], [names.Fresh(output.Name + "_4d_shape")], "OutputShape").Output(0)!;
            var merged = graph.InsertNode(anchor, "Concat", "", [Constant(graph, anchor, ConstantTensor.Int64s([-1]), "MergedBatch"),
                SliceOf(graph, anchor, fusedShape, 2, 4, "OutputDims")], [names.Fresh(output.Name + "_3d_shape")], "OutputShape3D",
                [Node.IntAttributeProto("axis", 0)]).Output(0)!;
            result = graph.InsertNode(anchor, "Reshape", "", [fused.Output(0), merged], [names.Fresh(output.Name + "_3d")], "OutputRegroup");
        }

        if (match.Einsum is { } layout && !EinsumLayout.IsIdentity(layout.Output))
        {
            result = graph.InsertNode(anchor, "Transpose", "", [result.Output(0)], [names.Fresh(output.Name + "_einsum_layout")], "OutputLayout",
                [Node.IntsAttributeProto("perm", layout.Output)]);
        }

        graph.TransferOutput(output, result, 0);
        graph.RemoveDead(anchor);
        foreach (var mask in bypassed.Where(m => m.Producer is not null))
        {
            graph.RemoveDead(mask.Producer!);  // only when nothing else reads it
        }

        graph.EnsureOpsetImport(Domain, 1);
        return fused;
    }

    /// <summary>
    /// A mask added to the (B, nW, H, S, T) view of 4-D window scores, as a bias of the 4-D scores: zeros shaped like the
    /// scores (Q's (B·nW, H, S) and K's T), viewed by the graph's own split Reshape (same shape input and attributes, so
    /// the same view whatever its entries are), plus the mask, flattened back to the scores' shape. Row b·nW + w of the
    /// scores is view entry (b, w), so each score gets the value the graph adds to it (0 + m is m). Swin's (1, nW, 1, S, T)
    /// mask repeats every nW rows, which no broadcast of a smaller tensor expresses.
    /// </summary>
    private static Value FlattenedWindowMask(OnnxGraph graph, Node anchor, ScoresView view, Value mask, Value query, Value key, DataType type)
    {
        var names = graph.Model.Names;
        var queryDims = SliceOf(graph, anchor, graph.InsertNode(anchor, "Shape", "", [query], [names.Fresh(query.Name + "_shape")], "WindowQueryShape").Output(0)!, 0, 3, "WindowScoreRows");
        var keyLength = SliceOf(graph, anchor, graph.InsertNode(anchor, "Shape", "", [key], [names.Fresh(key.Name + "_shape")], "WindowKeyShape").Output(0)!, 2, 3, "WindowKeyLength");
        var scoreShape = graph.InsertNode(anchor, "Concat", "", [queryDims, keyLength], [names.Fresh(mask.Name + "_score_shape")], "WindowScoreShape",
            [Node.IntAttributeProto("axis", 0)]).Output(0)!;
        var zero = new ConstantTensor(type, [1], [0]).ToProto(names.Fresh(mask.Name + "_zero"));
        var zeros = graph.InsertNode(anchor, "ConstantOfShape", "", [scoreShape], [names.Fresh(mask.Name + "_zeros")], "WindowZeros",
            [new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = zero }]).Output(0)!;
        var viewed = graph.InsertNode(anchor, "Reshape", "", [zeros, view.SplitShape], [names.Fresh(mask.Name + "_view")], "WindowView",
            [.. view.Split.Proto.Attribute.Select(a => a.Clone())]).Output(0)!;
        var masked = graph.InsertNode(anchor, "Add", "", [viewed, mask], [names.Fresh(mask.Name + "_on_view")], "WindowMaskOnView").Output(0)!;
        return graph.InsertNode(anchor, "Reshape", "", [masked, scoreShape], [names.Fresh(mask.Name + "_4d")], "WindowMaskFlatten").Output(0)!;
    }

    /// <summary><paramref name="input"/> transposed by <paramref name="permutation"/> (inserted before <paramref name="before"/>), or itself for the identity.</summary>
    private static Value Permuted(Node before, Value input, long[] permutation, string hint)
    {
        if (EinsumLayout.IsIdentity(permutation))
        {
            return input;
        }

        var graph = before.Graph;
        return graph.InsertNode(before, "Transpose", "", [input], [graph.Model.Names.Fresh(input.Name + "_bhsd")], hint + "HeadsFirst",
            [Node.IntsAttributeProto("perm", permutation)]).Output(0)!;
    }

    private static Value SliceOf(OnnxGraph graph, Node before, Value vector, long start, long end, string hint)
    {
        var starts = Constant(graph, before, ConstantTensor.Int64s([start]), hint + "Start");
        var ends = Constant(graph, before, ConstantTensor.Int64s([end]), hint + "End");
        return graph.InsertNode(before, "Slice", "", [vector, starts, ends], [graph.Model.Names.Fresh(hint)], hint).Output(0)!;
    }

    /// <summary>The term's mask in type T, negated for Sub(scores, M).</summary>
    private Value SignedBias(OnnxGraph graph, Node anchor, MaskTerm term, DataType type)
    {
        var source = BiasSource(term.Source, type) ??
            graph.InsertNode(anchor, "Cast", "", [term.Source], [graph.Model.Names.Fresh(term.Source.Name + "_as_" + type.ToString().ToLowerInvariant())],
                "MaskToAttentionType", [Node.IntAttributeProto("to", (long)type)]).Output(0)!;
        return term.Subtracted
            ? graph.InsertNode(anchor, "Neg", "", [source], [graph.Model.Names.Fresh(source.Name + "_negated")], "NegateMask").Output(0)!
            : source;
    }

    /// <summary>
    /// Shape nodes reading a score-shaped intermediate (DistilBERT expands its mask to Shape(scores))
    /// get the same shape computed from the query and key instead, inserted where they were.
    /// </summary>
    /// <param name="match">The match.</param>
    /// <param name="query">The query as the op will read it.</param>
    /// <param name="key">The key as the op will read it.</param>
    /// <param name="reads">Which intermediates' readers to rewire.</param>
    /// <param name="groupedView">Whether query and key are already regrouped to (B, H, ·, D) for a view of 3-D scores.</param>
    private static void RewireShapeReaders(AttentionMatch match, Value query, Value key, Func<Value, bool> reads, bool groupedView = false)
    {
        var graph = match.Anchor.Graph;
        var names = graph.Model.Names;
        var chain = new HashSet<Node>([match.Scores.ScoresMatMul, .. match.Scores.Nodes, .. match.ProbabilityNodes]);
        var readers = chain.SelectMany(n => n.Outputs.OfType<Value>()).Where(reads).SelectMany(v => v.Consumers)
                           .Where(c => c.Is("Shape") && !chain.Contains(c)).Distinct().ToList();
        foreach (var reader in readers)
        {
            Value Slice(Value shape, long start, long end, string hint)
            {
                var starts = Constant(graph, reader, ConstantTensor.Int64s([start]), hint + "Start");
                var ends = Constant(graph, reader, ConstantTensor.Int64s([end]), hint + "End");
                return graph.InsertNode(reader, "Slice", "", [shape, starts, ends], [names.Fresh(hint)], hint).Output(0)!;
            }

            var rank = groupedView ? 4 : QueryRank(match);
            var queryShape = graph.InsertNode(reader, "Shape", "", [query], [names.Fresh("QueryShape")], "QueryShape").Output(0)!;
            var keyShape = graph.InsertNode(reader, "Shape", "", [key], [names.Fresh("KeyShape")], "KeyShape").Output(0)!;
            var keyAxis = groupedView ? 2 : match.Key.Layout switch
            {
                KeyLayout.HeadSplitMerged => 1,
                KeyLayout.Rank3SequenceFirst => 0,
                KeyLayout.Rank3Transposed => 2,
                _ => rank - 2,
            };
            var leading = Slice(queryShape, 0, rank - 1, "ScoresLeadingDims");
            var keyLength = Slice(keyShape, keyAxis, keyAxis + 1, "ScoresKeyLength");
            var concat = graph.InsertNode(reader, "Concat", "", [leading, keyLength], [names.Fresh("ScoresShape")], "ScoresShape",
                [Node.IntAttributeProto("axis", 0)]);
            Node replacement = concat;
            if (reader.IntAttribute("start") is not null || reader.IntAttribute("end") is not null)
            {
                replacement = Slice(concat.Output(0)!, reader.IntAttribute("start") ?? 0, reader.IntAttribute("end") ?? long.MaxValue, "ScoresShapeRange").Producer!;
            }

            graph.TransferOutput(reader.Output(0)!, replacement, 0);
            graph.RemoveDead(reader);
        }
    }

    private static int QueryRank(AttentionMatch match) =>
        match.Einsum is { } einsum ? einsum.Query.Length : match.Key.Layout is KeyLayout.Rank3 or KeyLayout.Rank3SequenceFirst or KeyLayout.Rank3Transposed ? 3 : 4;

    private static Value Constant(OnnxGraph graph, Node before, ConstantTensor value, string hint)
    {
        var name = graph.Model.Names.Fresh(hint);
        var attribute = new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = value.ToProto(name) };
        return graph.InsertNode(before, "Constant", "", [], [name], hint, [attribute]).Output(0)!;
    }
}
