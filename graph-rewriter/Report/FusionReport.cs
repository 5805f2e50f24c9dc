using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using OrtFlash.GraphRewriter.Rules;

namespace OrtFlash.GraphRewriter.Report;

/// <summary>One attention subgraph replaced by a FlashAttention node.</summary>
/// <param name="Graph">The graph it was in ("main graph" or a subgraph).</param>
/// <param name="Anchor">The output MatMul(P, V) it replaced.</param>
/// <param name="FusedNode">The new node's name.</param>
/// <param name="ReplacedNodes">Names of the nodes removed.</param>
/// <param name="KeyLayout">How the key was transposed.</param>
/// <param name="ScalePlacement">Where the scale was found.</param>
/// <param name="Scale">The op's scale attribute.</param>
/// <param name="QueryPreScale">A scale left on the query before its head split (1 when none).</param>
/// <param name="Masks">The masks found, by kind.</param>
/// <param name="Causal">The causal attribute.</param>
/// <param name="Softcap">The softcap attribute (0 when none).</param>
/// <param name="MaskedRows">The masked_rows attribute.</param>
/// <param name="Wrappers">Nodes absorbed around Softmax.</param>
/// <param name="KvHeadRepeatRemoved">Whether a GQA head repeat was bypassed.</param>
/// <param name="Notes">Remarks on choices made for exactness.</param>
public sealed record FusionRecord(
    string Graph,
    string Anchor,
    string FusedNode,
    IReadOnlyList<string> ReplacedNodes,
    KeyLayout KeyLayout,
    ScalePlacement ScalePlacement,
    float Scale,
    double QueryPreScale,
    IReadOnlyList<MaskKind> Masks,
    CausalAlignment Causal,
    float Softcap,
    MaskedRowPolicy MaskedRows,
    ProbabilityWrappers Wrappers,
    bool KvHeadRepeatRemoved,
    IReadOnlyList<string> Notes);

/// <summary>An attention candidate left unfused, with the reason.</summary>
/// <param name="Graph">The graph it is in.</param>
/// <param name="Node">The candidate's anchor MatMul(P, V).</param>
/// <param name="Reason">Why it was not fused.</param>
public sealed record SkipRecord(string Graph, string Node, string Reason);

/// <summary>A call of a model-local function replaced by a copy of its body, specialised to the call's attributes, so attention in it could be fused.</summary>
/// <param name="Graph">The graph the call was in.</param>
/// <param name="Call">The calling node.</param>
/// <param name="Function">The function called.</param>
/// <param name="FunctionRemoved">Whether the function was removed from the model, nothing calling it anymore.</param>
public sealed record InlineRecord(string Graph, string Call, string Function, bool FunctionRemoved);

/// <summary>What a rewrite did: every fusion, every refusal, and every function call inlined.</summary>
public sealed class FusionReport
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Converters = { new JsonStringEnumConverter() },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Creates a report.</summary>
    public FusionReport(IReadOnlyList<FusionRecord> fusions, IReadOnlyList<SkipRecord> skipped, IReadOnlyList<InlineRecord>? inlined = null)
    {
        Fusions = fusions;
        Skipped = skipped;
        Inlined = inlined ?? [];
    }

    /// <summary>Each fusion made.</summary>
    public IReadOnlyList<FusionRecord> Fusions { get; }

    /// <summary>Each candidate refused, with its reason.</summary>
    public IReadOnlyList<SkipRecord> Skipped { get; }

    /// <summary>Each function call inlined so that attention in it could be fused.</summary>
    public IReadOnlyList<InlineRecord> Inlined { get; }

    /// <summary>The number of fusions.</summary>
    public int Fused => Fusions.Count;

    /// <summary>The report as JSON: <c>fused</c> (count), <c>fusions</c>, <c>skipped</c> (with reasons) and <c>inlined</c> (function calls).</summary>
    public string ToJson() =>
        JsonSerializer.Serialize(new { fused = Fused, fusions = Fusions, skipped = Skipped, inlined = Inlined }, JsonOptions);

    /// <summary>The report as a plain-text table.</summary>
    public string ToTable()
    {
        var text = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        text.AppendLine(inv, $"Fused {Fused} attention subgraph(s); skipped {Skipped.Count}.");
        if (Fusions.Count > 0)
        {
            var rows = Fusions.Select(f => new[]
            {
                f.Anchor, f.KeyLayout.ToString(), f.ScalePlacement.ToString(), f.Scale.ToString("G9", inv),
                f.Masks.Count == 0 ? "-" : string.Join("+", f.Masks), f.Causal.ToString(), f.MaskedRows.ToString(),
                f.ReplacedNodes.Count.ToString(inv),
            });
            AppendTable(text, ["anchor", "key", "scale at", "scale", "masks", "causal", "masked rows", "nodes"], rows);
        }

        if (Skipped.Count > 0)
        {
            text.AppendLine();
            AppendTable(text, ["skipped", "graph", "reason"], Skipped.Select(s => new[] { s.Node, s.Graph, s.Reason }));
        }

        if (Inlined.Count > 0)
        {
            text.AppendLine();
            AppendTable(text, ["inlined call", "graph", "function"],
                Inlined.Select(i => new[] { i.Call, i.Graph, i.Function + (i.FunctionRemoved ? " (removed: no calls left)" : "") }));
        }

        return text.ToString();
    }

    private static void AppendTable(StringBuilder text, string[] header, IEnumerable<string[]> rows)
    {
        var all = rows.Prepend(header).ToList();
        var widths = header.Select((_, i) => all.Max(r => r[i].Length)).ToArray();
        for (var r = 0; r < all.Count; r++)
        {
            text.AppendLine(string.Join("  ", all[r].Select((cell, i) => i == header.Length - 1 ? cell : cell.PadRight(widths[i]))).TrimEnd());
            if (r == 0)
            {
                text.AppendLine(string.Join("  ", widths.Select(w => new string('-', w))));
            }
        }
    }
}
