using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Onnx;

namespace OrtFlash.Tests.Rewriter.Support;

/// <summary>Compares an original model with its rewrite.</summary>
internal static class Parity
{
    /// <summary>
    /// Runs the rewritten model without its FlashAttention node (its inputs exposed as outputs) and
    /// evaluates the op contract on them in C#: the result the op must give.
    /// </summary>
    public static (string Output, TestTensor Expected) ReferenceOfFusedNode(ModelProto rewritten, IReadOnlyDictionary<string, TestTensor> inputs)
    {
        var probe = rewritten.Clone();
        var graphModel = OnnxModel.Load(probe);
        var analysis = new GraphAnalysis(graphModel);
        var fused = probe.Graph.Node.Single(n => n.OpType == "FlashAttention");
        var exposed = fused.Input.Where(n => n.Length > 0).Distinct().ToList();
        var types = exposed.ToDictionary(n => n, n => analysis.ElementTypeOf(graphModel.Main.Resolve(n)!));
        probe.Graph.Node.Remove(fused);
        var output = fused.Output[0];
        var declared = probe.Graph.Output.Single(o => o.Name == output);
        probe.Graph.Output.Clear();
        foreach (var name in exposed.Where(n => !probe.Graph.Input.Any(i => i.Name == n)))
        {
            probe.Graph.Output.Add(ModelBuilder.ValueInfo(name, types[name], null));
        }

        foreach (var name in exposed.Where(n => probe.Graph.Input.Any(i => i.Name == n)))
        {
            probe.Graph.Output.Add(ModelBuilder.ValueInfo("probe_" + name, types[name], null));
            probe.Graph.Node.Add(new NodeProto { OpType = "Identity", Input = { name }, Output = { "probe_" + name } });
        }

        var values = OrtRunner.Run(probe, inputs);
        TestTensor Get(string name) => values.TryGetValue(name, out var t) ? t : values["probe_" + name];
        TestTensor? Optional(int index) => fused.Input.Count > index && fused.Input[index].Length > 0 ? Get(fused.Input[index]) : null;
        float FloatAttribute(string name, float fallback) => fused.Attribute.FirstOrDefault(a => a.Name == name)?.F ?? fallback;
        var expected = ReferenceAttention.Compute(
            Get(fused.Input[0]), Get(fused.Input[1]), Get(fused.Input[2]), Optional(3), Optional(4),
            fused.Attribute.FirstOrDefault(a => a.Name == "scale")?.F, fused.Attribute.FirstOrDefault(a => a.Name == "causal")?.I ?? 0,
            FloatAttribute("softcap", 0), fused.Attribute.FirstOrDefault(a => a.Name == "masked_rows")?.S.ToStringUtf8() ?? "zero");
        _ = declared;
        return (output, expected);
    }

    /// <summary>Asserts every node (in every graph) reads only values defined before it, and names are unique.</summary>
    public static void AssertWellFormed(ModelProto model)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        void Check(GraphProto graph, HashSet<string> outer)
        {
            var defined = new HashSet<string>(outer, StringComparer.Ordinal);
            defined.UnionWith(graph.Input.Select(i => i.Name));
            defined.UnionWith(graph.Initializer.Select(i => i.Name));
            foreach (var node in graph.Node)
            {
                foreach (var input in node.Input.Where(i => i.Length > 0))
                {
                    Assert.That(defined, Does.Contain(input), $"node '{node.Name}' ({node.OpType}) reads '{input}' before it is defined");
                }

                foreach (var subgraph in node.Attribute.Where(a => a.G is not null).Select(a => a.G))
                {
                    Check(subgraph, defined);
                }

                foreach (var output in node.Output.Where(o => o.Length > 0))
                {
                    Assert.That(names.Add(output), Is.True, $"value '{output}' is defined twice");
                    defined.Add(output);
                }

                if (node.Name.Length > 0)
                {
                    Assert.That(names.Add("node:" + node.Name), Is.True, $"node name '{node.Name}' is used twice");
                }
            }

            foreach (var output in graph.Output)
            {
                Assert.That(defined, Does.Contain(output.Name), $"graph output '{output.Name}' is not produced");
            }
        }

        Check(model.Graph, []);
    }

    /// <summary>Asserts two tensors agree within <paramref name="tolerance"/> relative (NaN where the other is NaN).</summary>
    public static void AssertClose(TestTensor expected, TestTensor actual, double tolerance, string what)
    {
        Assert.That(actual.Shape, Is.EqualTo(expected.Shape), $"{what}: shape");
        var worst = 0.0;
        var worstIndex = -1;
        for (var i = 0; i < expected.Data.Length; i++)
        {
            double e = expected.Data[i], a = actual.Data[i];
            if (double.IsNaN(e) || double.IsNaN(a))
            {
                Assert.That(double.IsNaN(a), Is.EqualTo(double.IsNaN(e)), $"{what}: element {i} expected {e}, got {a}");
                continue;
            }

            var error = Math.Abs(e - a) / Math.Max(1, Math.Abs(e));
            if (error > worst)
            {
                worst = error;
                worstIndex = i;
            }
        }

        Assert.That(worst, Is.LessThanOrEqualTo(tolerance),
            $"{what}: largest relative difference {worst:G3} at element {worstIndex} (expected {(worstIndex >= 0 ? expected.Data[worstIndex] : 0)}, got {(worstIndex >= 0 ? actual.Data[worstIndex] : 0)})");
    }
}
