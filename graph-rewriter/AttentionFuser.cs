using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Io;
using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.GraphRewriter.Report;
using OrtFlash.GraphRewriter.Rules;

namespace OrtFlash.GraphRewriter;

/// <summary>
/// The rewrite pass: finds attention subgraphs in every graph of a model (subgraphs of
/// If/Loop/Scan included) and replaces each fusable one by a <c>com.ortflash::FlashAttention</c> node.
/// </summary>
public static class AttentionFuser
{
    /// <summary>Rewrites <paramref name="model"/> in place and reports what was fused and what was not.</summary>
    /// <remarks>
    /// Attention inside a model-local function whose body reads attributes from its caller
    /// (<c>ref_attr_name</c>) cannot be fused in the body, whose attribute values differ per call; a
    /// call whose copy of the body, inlined with the call's attributes, fuses is inlined (a trial on a
    /// copy of the model decides which), and a function no longer called is removed.
    /// </remarks>
    /// <param name="model">The model, changed in place.</param>
    /// <param name="options">What the rewrite may trade for speed; exact (<see cref="RewriteOptions.Default"/>) when null.</param>
    /// <exception cref="OnnxModelException">The graph is malformed (cycle, undefined input, duplicate definition).</exception>
    public static FusionReport Rewrite(ModelProto model, RewriteOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var graphModel = OnnxModel.Load(model);
        var calls = FunctionInliner.CallsReadingAttributes(graphModel);
        var inlined = new List<InlineRecord>();
        var callSkips = new List<SkipRecord>();
        if (calls.Count > 0)
        {
            var outcomes = TryInlining(model, options);
            var functions = new List<FunctionProto>();
            for (var i = 0; i < calls.Count; i++)
            {
                var (call, outcome) = (calls[i], outcomes[i]);
                var function = OnnxGraph.FunctionDisplayName(call.Function);
                if (outcome.Fuses)
                {
                    FunctionInliner.Inline(call);
                    functions.Add(call.Function);
                    inlined.Add(new InlineRecord(call.Graph.DisplayName, call.Node.DisplayName, function, FunctionRemoved: false));
                }
                else
                {
                    callSkips.AddRange(outcome.Reasons.Select(reason => new SkipRecord(call.Graph.DisplayName, call.Node.DisplayName,
                        $"The call of the {function} is not inlined: {reason}")));
                }
            }

            var removed = FunctionInliner.RemoveUncalled(model, functions).Select(OnnxGraph.FunctionDisplayName).ToHashSet();
            inlined = inlined.Select(r => r with { FunctionRemoved = removed.Contains(r.Function) }).ToList();
            graphModel = OnnxModel.Load(model);
        }

        var (fusions, skipped) = RewriteGraphs(graphModel, options);
        graphModel.ToProto();
        return new FusionReport(fusions, [.. callSkips, .. skipped], inlined);
    }

    /// <summary>What inlining one call did in the trial: whether its copy fused, else why not (nothing when the body holds no attention).</summary>
    private sealed record InlineOutcome(bool Fuses, IReadOnlyList<string> Reasons);

    /// <summary>
    /// Inlines every call of a function reading caller attributes in a copy of <paramref name="model"/>
    /// and rewrites it: which calls' copies fuse, and why the others do not. Outcomes are in the order of
    /// <see cref="FunctionInliner.CallsReadingAttributes"/>, which is the same for the model and its copy.
    /// </summary>
    private static InlineOutcome[] TryInlining(ModelProto model, RewriteOptions? options)
    {
        var trial = model.Clone();
        var calls = FunctionInliner.CallsReadingAttributes(OnnxModel.Load(trial));
        var copies = new Dictionary<string, int>(StringComparer.Ordinal);
        var refusals = new string?[calls.Count];
        for (var i = 0; i < calls.Count; i++)
        {
            refusals[i] = FunctionInliner.Refusal(calls[i]);
            if (refusals[i] is null)
            {
                foreach (var name in FunctionInliner.Inline(calls[i]))
                {
                    copies[name] = i;
                }
            }
        }

        var (fusions, skipped) = RewriteGraphs(OnnxModel.Load(trial), options);
        var fused = fusions.Select(f => copies.GetValueOrDefault(f.Anchor, -1)).ToHashSet();
        return calls.Select((call, i) =>
        {
            if (fused.Contains(i))
            {
                return new InlineOutcome(true, []);
            }

            var body = OnnxGraph.FunctionDisplayName(call.Function);
            var reasons = refusals[i] is { } refusal
                ? skipped.Any(s => s.Graph == body) ? [$"{refusal}."] : Array.Empty<string>()
                : skipped.Where(s => copies.GetValueOrDefault(s.Node, -1) == i)
                         .Select(s => $"in a copy of its body inlined with this call's attributes, attention at '{s.Node}' is refused: {s.Reason}").ToArray();
            return new InlineOutcome(false, reasons);
        }).ToArray();
    }

    /// <summary>Fuses attention in every graph of <paramref name="model"/>; call <see cref="OnnxModel.ToProto"/> afterwards.</summary>
    private static (List<FusionRecord> Fusions, List<SkipRecord> Skipped) RewriteGraphs(OnnxModel model, RewriteOptions? options)
    {
        var analysis = new GraphAnalysis(model);
        var rule = new ScaledDotProductAttentionRule(analysis, options);
        var onnxAttention = new OnnxAttentionRule(analysis);
        var fusions = new List<FusionRecord>();
        var skipped = model.UnreadableFunctions.Select(f => new SkipRecord(f.Function, "", $"The function body is not rewritten: {f.Reason}")).ToList();
        foreach (var graph in model.Graphs.ToList())
        {
            var unprovable = graph.EnclosingFunction is { } function && FunctionInliner.ReadsCallerAttributes(function)
                ? $"Attention inside the {OnnxGraph.FunctionDisplayName(function)} is not rewritten in place: its body reads attribute values from its callers (ref_attr_name), which can differ at each call, so the pattern's attributes are not known. A call whose copy of the body, inlined with its attributes, fuses is inlined instead."
                : null;
            foreach (var node in graph.Nodes.Where(OnnxAttentionRule.IsCandidate).ToList())
            {
                var (found, reason) = onnxAttention.Match(node);
                if (found is null || unprovable is not null)
                {
                    skipped.Add(new SkipRecord(graph.DisplayName, node.DisplayName, (found is null ? reason : unprovable)!));
                    continue;
                }

                var before = graph.Nodes.ToHashSet();
                var fused = onnxAttention.Rewrite(found);
                fusions.Add(new FusionRecord(
                    graph.DisplayName, node.DisplayName, fused.Name, before.Where(n => !graph.Nodes.Contains(n)).Select(n => n.DisplayName).ToList(),
                    KeyLayout.NotTransposed, ScalePlacement.Attribute,
                    (float)(found.Scale ?? double.NaN), 1, found.Mask is not null ? [found.MaskKind] : found.NonPadKvSeqLen is not null ? [MaskKind.KeepNegativeInfinity] : [], found.Causal, found.Softcap, MaskedRowPolicy.Zero,
                    ProbabilityWrappers.None, KvHeadRepeatRemoved: false,
                    Notes: [.. found.Notes, .. found.Scale is null ? ["No scale attribute and a symbolic head dim: the op's own default 1/√D (D read at run time) is used, which is ONNX Attention's default too."] : Array.Empty<string>()]));
            }

            foreach (var anchor in graph.Nodes.Where(n => n.Is("MatMul") || n.Is("Einsum")).ToList())
            {
                if (!graph.Nodes.Contains(anchor))
                {
                    continue;
                }

                var found = rule.Match(anchor);
                if (!found.IsCandidate)
                {
                    continue;
                }

                if (found.Match is not { } match)
                {
                    skipped.Add(new SkipRecord(graph.DisplayName, anchor.DisplayName, found.Reason!));
                    continue;
                }

                var check = unprovable is null ? rule.Check(match) : CheckResult.Refuse(unprovable);
                if (!check.IsOk)
                {
                    skipped.Add(new SkipRecord(graph.DisplayName, anchor.DisplayName, check.Reason!));
                    continue;
                }

                var before = graph.Nodes.ToHashSet();
                var fused = rule.Rewrite(match);
                var replaced = before.Where(n => !graph.Nodes.Contains(n)).Select(n => n.DisplayName).ToList();
                fusions.Add(new FusionRecord(
                    graph.DisplayName, anchor.DisplayName, fused.Name, replaced, match.Key.Layout, match.ScalePlacement,
                    (float)match.Scale, match.Query.PreScale, match.Scores.Masks.Select(m => m.Kind).ToList(),
                    match.Scores.Masks.FirstOrDefault(m => m.Kind == MaskKind.Causal)?.Alignment ?? CausalAlignment.None,
                    match.Scores.Softcap, match.MaskedRows, match.Wrappers, match.KvHeadRepeatRemoved,
                    [.. check.Notes, .. rule.RewriteNotes, .. match.CausalNote is null ? Array.Empty<string>() : [match.CausalNote],
                     .. match.DecomposedSoftmax is null ? Array.Empty<string>() : ["Softmax written out as Exp(x − ReduceMax(x)) / ReduceSum over the last axis."]]));
            }
        }

        return (fusions, skipped);
    }

    /// <summary>
    /// Reads <paramref name="inputPath"/>, rewrites it and writes <paramref name="outputPath"/>
    /// (through a temporary file). External weights are never loaded; their references are
    /// re-pointed to resolve from the output's folder. Nothing is written when anything fails.
    /// </summary>
    /// <exception cref="OnnxModelException">The input is not a well-formed ONNX model, or the output
    /// cannot be written safely (it is the input, or external data would become unreachable).</exception>
    public static FusionReport RewriteFile(string inputPath, string outputPath, bool overwriteInput = false, RewriteOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(inputPath);
        ArgumentNullException.ThrowIfNull(outputPath);
        var model = OnnxModelFile.Read(inputPath);
        var report = Rewrite(model, options);
        OnnxModelFile.Write(model, outputPath, Path.GetDirectoryName(Path.GetFullPath(inputPath)), inputPath, overwriteInput);
        return report;
    }
}
