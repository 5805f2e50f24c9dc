using System.Text.Json;
using OrtFlash.GraphRewriter;
using OrtFlash.GraphRewriter.Io;
using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.GraphRewriter.Rules;
using OrtFlash.Tests.Rewriter.Support;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.Tests.Rewriter;

/// <summary>The exported model corpus in models/: every file fuses completely and keeps its outputs.</summary>
public class AttentionFuserTests
{
    public sealed record ExportedModel(string File, string Family, int AttentionBlocks, int ExpectedFusions, bool Float16, long KvHeads)
    {
        public override string ToString() => File;
    }

    private static string? ModelsFolder()
    {
        for (var folder = new DirectoryInfo(AppContext.BaseDirectory); folder is not null; folder = folder.Parent)
        {
            var candidate = Path.Combine(folder.FullName, "models", "manifest.json");
            if (File.Exists(candidate))
            {
                return Path.GetDirectoryName(candidate);
            }
        }

        return null;
    }

    private static IEnumerable<TestCaseData> Corpus()
    {
        if (ModelsFolder() is not { } folder)
        {
            yield break;
        }

        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "manifest.json")));
        foreach (var entry in manifest.RootElement.GetProperty("models").EnumerateArray())
        {
            var model = new ExportedModel(
                entry.GetProperty("file").GetString()!, entry.GetProperty("family").GetString()!,
                entry.GetProperty("attention_blocks").GetInt32(), entry.GetProperty("expected_fusions").GetInt32(),
                entry.GetProperty("dtype").GetString() == "float16", entry.GetProperty("heads").GetProperty("kv").GetInt64());
            yield return new TestCaseData(model).SetArgDisplayNames(model.File);
        }
    }

    private static ModelProto Load(ExportedModel model) => OnnxModelFile.Read(Path.Combine(ModelsFolder()!, model.File));

    [TestCaseSource(nameof(Corpus))]
    public void Exported_model_fuses_every_attention_block_or_says_why_not(ExportedModel exported)
    {
        var model = Load(exported);
        var report = AttentionFuser.Rewrite(model);

        Assert.That(report.Fused, Is.EqualTo(exported.ExpectedFusions), () => report.ToTable());
        Assert.That(report.Fused + report.Skipped.Count, Is.EqualTo(exported.AttentionBlocks), () => report.ToTable());
        Assert.That(model.Graph.Node.Count(n => n.OpType == "FlashAttention"), Is.EqualTo(exported.ExpectedFusions));
        Parity.AssertWellFormed(model);
    }

    [Test]
    public void A_deep_stack_of_attention_layers_fuses_every_layer()
    {
        const int layers = 400;
        var b = new ModelBuilder();
        var x = b.Input("x", DataType.Float, "B", 2, "S", 8);
        for (var i = 0; i < layers; i++)
        {
            var scores = b.Node("Div", [b.Node("MatMul", [x, b.Node("Transpose", [x], ModelBuilder.Ints("perm", 0, 1, 3, 2))]), b.Scalar(8)]);
            x = b.Node("Add", [x, b.Node("MatMul", [b.Node("Softmax", [scores], ModelBuilder.Int("axis", -1)), x])]);
        }

        b.Rename(x, "y");
        b.Output("y");

        var report = AttentionFuser.Rewrite(b.Model);

        Assert.That(report.Fused, Is.EqualTo(layers));
        Assert.That(b.Model.Graph.Node.Count(n => n.OpType == "FlashAttention"), Is.EqualTo(layers));
    }

    /// <summary>(sequence, past sequence) sizes every exported model runs at.</summary>
    private static readonly (long Sequence, long Past)[] Sizes = [(4, 2), (7, 3), (1, 3)];

    [TestCaseSource(nameof(Corpus))]
    public void Exported_model_rewrite_computes_what_the_original_computes(ExportedModel exported) =>
        AssertRewriteComputesWhatTheOriginalComputes(exported, RewriteOptions.Default);

    /// <summary>
    /// Under <see cref="RewriteOptions.CausalForPaddedRows"/>, for the models where the option gives a block the causal
    /// attribute: the generated inputs pad at the end, or at the start by less than the cache, so every row keeps an
    /// unpadded visible key and the option must compute what the original does.
    /// </summary>
    [TestCaseSource(nameof(Corpus))]
    public void Exported_model_rewrite_under_causal_padded_rows_computes_what_the_original_computes(ExportedModel exported)
    {
        var options = new RewriteOptions { CausalForPaddedRows = true };
        var exactCausal = AttentionFuser.Rewrite(Load(exported)).Fusions.Count(f => f.Causal != CausalAlignment.None);
        if (AttentionFuser.Rewrite(Load(exported), options).Fusions.Count(f => f.Causal != CausalAlignment.None) == exactCausal)
        {
            Assert.Pass("the option gives no block the causal attribute that the exact rewrite does not");
        }

        AssertRewriteComputesWhatTheOriginalComputes(exported, options);
    }

    private static void AssertRewriteComputesWhatTheOriginalComputes(ExportedModel exported, RewriteOptions options)
    {
        var original = Load(exported);
        var rewritten = original.Clone();
        AttentionFuser.Rewrite(rewritten, options);
        var lowered = FlashAttentionLowering.Lower(rewritten);
        var tolerance = exported.Float16 ? 5e-3 : 1e-4;
        var random = new Random(7);
        foreach (var (sequence, past) in Sizes)
        {
            var inputs = Inputs(original, random, sequence, past, exported.KvHeads);
            var expected = OrtRunner.Run(original, inputs);
            var actual = OrtRunner.Run(lowered, inputs);
            foreach (var (name, tensor) in expected)
            {
                Parity.AssertClose(tensor, actual[name], tolerance, $"{exported.File}: {name} at S={sequence}, P={past}");
            }

            if (OrtRunner.OpLibraryPath is not null)
            {
                var fused = OrtRunner.Run(rewritten, inputs, withOpLibrary: true);
                foreach (var (name, tensor) in expected)
                {
                    Parity.AssertClose(tensor, fused[name], tolerance, $"{exported.File} with the op: {name} at S={sequence}, P={past}");
                }
            }
        }
    }

    /// <summary>
    /// Inputs for an exported model: batch 2, the second sequence padded (left when there is a KV cache); BLOOM's cache
    /// is (batch × heads, ·, ·); sd_unet's latent is (sequence × sequence + 1) and its context sequence + 2 long.
    /// </summary>
    private static Dictionary<string, TestTensor> Inputs(ModelProto model, Random random, long sequence, long past, long kvHeads)
    {
        var hasCache = model.Graph.Input.Any(i => i.Name.StartsWith("past_", StringComparison.Ordinal));
        var sizes = new Dictionary<string, long>
        {
            ["batch"] = 2, ["sequence"] = sequence, ["decoder_sequence"] = sequence + 1,
            ["past_sequence"] = past, ["total_sequence"] = past + sequence, ["batch_x_heads"] = 2 * kvHeads,
            // sd_unet: a non-square latent of h·w queries, and a context whose length is neither h·w nor h.
            ["height"] = sequence, ["width"] = sequence + 1, ["context_sequence"] = sequence + 2,
        };
        var inputs = new Dictionary<string, TestTensor>();
        foreach (var input in model.Graph.Input.Where(i => !model.Graph.Initializer.Any(t => t.Name == i.Name)))
        {
            var tensor = input.Type.TensorType;
            var shape = tensor.Shape.Dim.Select(d => d.HasDimValue ? d.DimValue : sizes[d.DimParam]).ToArray();
            var type = (DataType)tensor.ElemType;
            if (input.Name.Contains("mask", StringComparison.Ordinal))
            {
                var length = shape[^1];
                var padded = hasCache ? 2 : length / 3;
                var data = new float[shape.Aggregate(1L, (p, d) => p * d)];
                for (var j = 0; j < length; j++)
                {
                    data[j] = 1;
                    data[length + j] = hasCache ? (j < padded ? 0 : 1) : (j < length - padded ? 1 : 0);
                }

                inputs[input.Name] = new TestTensor(type, shape, data);
            }
            else if (type == DataType.Int64)
            {
                var count = shape.Aggregate(1L, (p, d) => p * d);
                inputs[input.Name] = new TestTensor(type, shape, Enumerable.Range(0, (int)count).Select(_ => (float)random.Next(16)).ToArray());
            }
            else
            {
                inputs[input.Name] = TestTensor.Random(random, shape, type);
            }
        }

        return inputs;
    }
}
