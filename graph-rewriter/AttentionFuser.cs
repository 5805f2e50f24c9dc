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
    /// <param name="model">The model, changed in place.</param>
    /// <param name="options">What the rewrite may trade for speed; exact (<see cref="RewriteOptions.Default"/>) when null.</param>
    /// <exception cref="OnnxModelException">The graph is malformed (cycle, undefined input, duplicate definition).</exception>
    public static FusionReport Rewrite(ModelProto model, RewriteOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var graphModel = OnnxModel.Load(model);
        var report = Rewrite(graphModel, options);
        graphModel.ToProto();
        return report;
    }

    /// <summary>Rewrites <paramref name="model"/>; call <see cref="OnnxModel.ToProto"/> afterwards.</summary>
    /// <param name="model">The model, changed in place.</param>
    /// <param name="options">What the rewrite may trade for speed; exact (<see cref="RewriteOptions.Default"/>) when null.</param>
    public static FusionReport Rewrite(OnnxModel model, RewriteOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var analysis = new GraphAnalysis(model);
        var rule = new ScaledDotProductAttentionRule(analysis, options);
        var onnxAttention = new OnnxAttentionRule(analysis);
        var fusions = new List<FusionRecord>();
        var skipped = model.UnreadableFunctions.Select(f => new SkipRecord(f.Function, "", $"The function body is not rewritten: {f.Reason}")).ToList();
        foreach (var graph in model.Graphs.ToList())
        {
            var unprovable = graph.EnclosingFunction is { } function && TakesAttributes(function.Node)
                ? $"Attention inside the {FunctionOf(graph).DisplayName} is not rewritten: its body reads attribute values from its callers (ref_attr_name), which can differ at each call, so the pattern's attributes are not known."
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
                    [.. check.Notes, .. match.CausalNote is null ? Array.Empty<string>() : [match.CausalNote],
                     .. match.DecomposedSoftmax is null ? Array.Empty<string>() : ["Softmax written out as Exp(x − ReduceMax(x)) / ReduceSum over the last axis."]]));
            }
        }

        return new FusionReport(fusions, skipped);
    }

    /// <summary>Whether any of <paramref name="nodes"/> (or of their subgraphs) takes an attribute from the function's caller.</summary>
    private static bool TakesAttributes(IEnumerable<NodeProto> nodes) =>
        nodes.Any(n => n.Attribute.Any(a => a.RefAttrName.Length > 0 || (a.G is { } g && TakesAttributes(g.Node)) || a.Graphs.Any(g => TakesAttributes(g.Node))));

    private static OnnxGraph FunctionOf(OnnxGraph graph) => graph.Function is null ? FunctionOf(graph.Parent!) : graph;

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
