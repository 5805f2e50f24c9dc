using OrtFlash.GraphRewriter.Onnx;

namespace OrtFlash.GraphRewriter.Graph;

/// <summary>
/// A mutable graph view over a <see cref="ModelProto"/>. Everything the rewriter does not touch
/// stays in the proto as it was read, including unknown fields.
/// </summary>
public sealed class OnnxModel
{
    private OnnxModel(ModelProto proto)
    {
        Proto = proto;
        Names = new NameScope();
        DefaultOpset = proto.OpsetImport.FirstOrDefault(o => o.Domain.Length == 0 || o.Domain == "ai.onnx")?.Version ?? 1;
    }

    /// <summary>The model message; <see cref="ToProto"/> brings it up to date.</summary>
    public ModelProto Proto { get; }

    /// <summary>The main graph.</summary>
    public OnnxGraph Main { get; private set; } = null!;

    /// <summary>The version of the default ONNX operator set the model imports.</summary>
    public long DefaultOpset { get; }

    internal NameScope Names { get; }

    /// <summary>
    /// Builds the view, checking that the graph is well formed.
    /// The proto is shared, not copied: changes through the view end up in it.
    /// </summary>
    /// <exception cref="Io.OnnxModelException">A node reads an undefined value, a value is defined
    /// twice, or the graph has a cycle.</exception>
    public static OnnxModel Load(ModelProto proto)
    {
        ArgumentNullException.ThrowIfNull(proto);
        var model = new OnnxModel(proto);
        model.Main = OnnxGraph.Build(proto.Graph, model, parent: null, owner: null);
        var functions = new List<OnnxGraph>();
        var unreadable = new List<(string, string)>();
        foreach (var function in proto.Functions)
        {
            // ONNX Runtime only checks a function body where it is called, so a malformed one is
            // left as it is (and reported) rather than failing the whole model.
            try
            {
                functions.Add(OnnxGraph.BuildFunction(function, model));
            }
            catch (Io.OnnxModelException e)
            {
                unreadable.Add(($"function '{(function.Domain.Length > 0 ? function.Domain + "::" : "")}{function.Name}'", e.Message));
            }
        }

        model.Functions = functions;
        model.UnreadableFunctions = unreadable;
        return model;
    }

    /// <summary>The bodies of the model-local functions.</summary>
    public IReadOnlyList<OnnxGraph> Functions { get; private set; } = [];

    /// <summary>Model-local functions whose bodies are malformed (and stay untouched), with the reason.</summary>
    public IReadOnlyList<(string Function, string Reason)> UnreadableFunctions { get; private set; } = [];

    /// <summary>The main graph, every function body, and every subgraph of them.</summary>
    public IEnumerable<OnnxGraph> Graphs => Main.Descendants().Prepend(Main)
        .Concat(Functions.SelectMany(f => f.Descendants().Prepend(f)));

    /// <summary>Imports <paramref name="domain"/> at <paramref name="version"/> unless already imported.</summary>
    public void EnsureOpsetImport(string domain, long version)
    {
        if (!Proto.OpsetImport.Any(o => o.Domain == domain))
        {
            Proto.OpsetImport.Add(new OperatorSetIdProto { Domain = domain, Version = version });
        }
    }

    /// <summary>Writes all changes back into <see cref="Proto"/> and returns it.</summary>
    public ModelProto ToProto()
    {
        foreach (var graph in Graphs)
        {
            graph.Sync();
        }

        return Proto;
    }
}

/// <summary>Hands out node and value names that are unique across the whole model.</summary>
internal sealed class NameScope
{
    private readonly HashSet<string> _taken = new(StringComparer.Ordinal);

    public void Reserve(string name) => _taken.Add(name);

    public string Fresh(string hint)
    {
        if (_taken.Add(hint))
        {
            return hint;
        }

        for (var i = 1; ; i++)
        {
            var candidate = $"{hint}_{i}";
            if (_taken.Add(candidate))
            {
                return candidate;
            }
        }
    }
}
