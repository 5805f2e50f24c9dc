using System.Globalization;
using System.Text.RegularExpressions;
using Google.Protobuf;
using OrtFlash.GraphRewriter;
using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.GraphRewriter.Report;
using OrtFlash.Tests.Rewriter.Support;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.Tests.Rewriter.Fuzz;

/// <summary>
/// The rewriter's promise, tested on random attention graphs: a fused graph computes what the original computes (with the
/// op lowered to standard ONNX ops, and with the op library when it is built); a refused one is left as it was, with a reason.
/// A fixed list of seeds runs by default; ORTFLASH_FUZZ_SEEDS=n runs seeds 0 … n−1 (ORTFLASH_FUZZ_FIRST moves the start).
/// A failure names its seed and describes the graph; AttentionGraphGenerator.Generate(seed) rebuilds it.
/// </summary>
public class DifferentialFuzzTests
{
    private const int DefaultSeeds = 300;

    private static IEnumerable<int> SeedList()
    {
        static int Read(string name, int fallback) =>
            int.TryParse(Environment.GetEnvironmentVariable(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n : fallback;
        var first = Read("ORTFLASH_FUZZ_FIRST", 0);
        return Enumerable.Range(first, Read("ORTFLASH_FUZZ_SEEDS", DefaultSeeds));
    }

    private static IEnumerable<TestCaseData> Seeds() => SeedList().Select(s => new TestCaseData(s).SetArgDisplayNames($"seed {s}"));

    [TestCaseSource(nameof(Seeds))]
    public void Rewriting_a_random_attention_graph_never_changes_what_it_computes(int seed)
    {
        var fuzz = AttentionGraphGenerator.Generate(seed);
        var rewritten = fuzz.Model.Clone();
        // An int64 mask holding 2 is outside what the default options assume; such graphs must be exact without it.
        var report = AttentionFuser.Rewrite(rewritten, fuzz.IntegerMaskHoldsTwo ? new RewriteOptions { IntegerMasksAreBinary = false } : null);
        string Context() => $"{fuzz}\n{report.ToTable()}";

        // One candidate at most: a guard the rewriter does not read (Where(IsNaN(p), 0.5, p)) hides the Softmax from the
        // value product, so there is no candidate and nothing to report.
        Assert.That(report.Fused + report.Skipped.Count, Is.LessThanOrEqualTo(1), Context);
        if (report.Fused == 0)
        {
            Assert.That(report.Skipped.All(s => s.Reason.Length > 0), Context);
            Assert.That(rewritten.ToByteArray(), Is.EqualTo(fuzz.Model.ToByteArray()), () => "a refused model must be left as it was; " + Context());
            return;
        }

        Assert.That(fuzz.MustRefuse, Is.Null, () => $"fused although {fuzz.MustRefuse}; {Context()}");
        Parity.AssertWellFormed(rewritten);
        var random = new Random(seed ^ 0x5eed);
        var inputSets = fuzz.Lengths.Select(l => (IReadOnlyDictionary<string, TestTensor>)fuzz.CreateInputs(random, l.S, l.T)).ToList();
        var expected = OrtRunner.RunEach(fuzz.Model, inputSets);
        // A row hidden entirely by −10000 is a softmax of scores rounded to steps of 2⁻¹⁰; one step more or less (the
        // scale folded into the op rather than applied to Q and K) moves a weight by 0.1%.
        var tolerance = fuzz.Type == DataType.Float16 ? 5e-3 : fuzz.QuantizingFill ? 2e-3 : 1e-4;
        AssertAgree(expected, OrtRunner.RunEach(FlashAttentionLowering.Lower(rewritten), inputSets), tolerance, "op lowered to standard ops", fuzz, report);
        if (OrtRunner.OpLibraryPath is not null)
        {
            AssertAgree(expected, OrtRunner.RunEach(rewritten, inputSets, withOpLibrary: true), tolerance, "op library", fuzz, report);
        }
    }

    /// <summary>
    /// Guards the generator itself: over the default seeds it must produce fusions, ordinary refusals and every
    /// must-refuse ingredient, so a change that leaves it generating only refusals cannot pass unnoticed. It prints how
    /// many fused and the refusal reasons; ORTFLASH_FUZZ_LIST_REFUSALS=text also lists the graphs refused with that text.
    /// </summary>
    [Test]
    public void The_generated_graphs_cover_fusions_and_refusals()
    {
        var fused = 0;
        var mustRefuse = new HashSet<string>();
        var reasons = new Dictionary<string, int>();
        for (var seed = 0; seed < DefaultSeeds; seed++)
        {
            var fuzz = AttentionGraphGenerator.Generate(seed);
            var report = AttentionFuser.Rewrite(fuzz.Model.Clone());
            fused += report.Fused;
            if (fuzz.MustRefuse is { } ingredient)
            {
                mustRefuse.Add(ingredient);
            }

            foreach (var skip in report.Skipped)
            {
                if (Environment.GetEnvironmentVariable("ORTFLASH_FUZZ_LIST_REFUSALS") is { } wanted && skip.Reason.Contains(wanted, StringComparison.Ordinal))
                {
                    TestContext.Out.WriteLine($"{fuzz}\n    {skip.Reason}");
                }

                var key = Regex.Replace(Regex.Replace(skip.Reason, "'[^']*'", "'…'"), @"-?\d[\d.e+-]*", "#");
                reasons[key] = reasons.GetValueOrDefault(key) + 1;
            }
        }

        TestContext.Out.WriteLine($"{fused} of {DefaultSeeds} fused; refusals:");
        foreach (var (reason, count) in reasons.OrderByDescending(r => r.Value))
        {
            TestContext.Out.WriteLine($"  {count,4}  {reason}");
        }

        Assert.That(fused, Is.GreaterThan(DefaultSeeds * 2 / 5), "many generated graphs should fuse");
        Assert.That(DefaultSeeds - fused, Is.GreaterThan(DefaultSeeds / 20), "some generated graphs should be refused");
        Assert.That(mustRefuse, Is.SupersetOf(new[]
        {
            "probabilities are a graph output", "Softmax over another axis", "scale is a graph input", "scores have a second consumer", "Dropout in training mode",
        }));
    }

    [Test]
    public void The_same_seed_builds_the_same_graph()
    {
        var a = AttentionGraphGenerator.Generate(42);
        var b = AttentionGraphGenerator.Generate(42);
        Assert.That(a.Model.ToByteArray(), Is.EqualTo(b.Model.ToByteArray()));
        Assert.That(a.Description, Is.EqualTo(b.Description));
    }

    /// <summary>
    /// fp32: max|diff| ≤ tolerance·max(1, max|expected|) over the elements that are numbers. NaN must appear exactly where
    /// the original has NaN: a row the original leaves without a visible key is NaN there (Softmax over −inf only) unless
    /// guarded by Where(IsNaN), and the rewriter must pick the op's masked_rows ("nan" or "zero") that reproduces it.
    /// </summary>
    private static void AssertAgree(List<Dictionary<string, TestTensor>> expected, List<Dictionary<string, TestTensor>> actual, double tolerance,
                                    string how, FuzzCase fuzz, FusionReport report)
    {
        for (var run = 0; run < expected.Count; run++)
        {
            var (s, t) = fuzz.Lengths[run];
            foreach (var (name, reference) in expected[run])
            {
                var result = actual[run][name];
                var where = $"{how}, output {name}, S={s}, T={t}; {fuzz}\n{report.ToTable()}";
                Assert.That(result.Shape, Is.EqualTo(reference.Shape), () => "shape: " + where);
                var largest = 1.0;
                foreach (var e in reference.Data.Where(float.IsFinite))
                {
                    largest = Math.Max(largest, Math.Abs(e));
                }

                var worst = 0.0;
                var worstIndex = -1;
                for (var i = 0; i < reference.Data.Length; i++)
                {
                    double e = reference.Data[i], a = result.Data[i];
                    if (double.IsNaN(e) != double.IsNaN(a))
                    {
                        Assert.Fail($"element {i}: original {e}, rewritten {a} (NaN must match); {where}");
                    }

                    if (double.IsNaN(e))
                    {
                        continue;
                    }

                    var diff = e == a ? 0 : Math.Abs(e - a);
                    if (diff > worst)
                    {
                        worst = diff;
                        worstIndex = i;
                    }
                }

                Assert.That(worst, Is.LessThanOrEqualTo(tolerance * largest),
                    () => $"max |diff| {worst:G3} at element {worstIndex} (original {reference.Data[worstIndex]}, rewritten {result.Data[worstIndex]}); {where}");
            }
        }
    }
}
