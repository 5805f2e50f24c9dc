using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using OrtFlash.Benchmarking;
using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Io;
using OrtFlash.Verification;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace OrtFlash.Cli;

/// <summary>
/// <c>ortflash bench ORIGINAL [REWRITTEN]</c>: times ORIGINAL and its rewrite side by side in one process on the same
/// generated inputs, at several sequence lengths, and prints median and p10/p90 latency of each and their ratio.
/// Exit status: 0 measured, 1 the measurement failed (a model fails on the inputs, or --json cannot be written),
/// 2 bad input (arguments, model files, an unusable provider; nothing measured, nothing written).
/// </summary>
internal static class BenchCommand
{
    public const int Measured = 0;
    public const int Failed = 1;
    public const int BadInput = 2;

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    public static Command Create()
    {
        var original = new Argument<string>("ORIGINAL") { Description = "The exported model (.onnx)." };
        var rewritten = new Argument<string?>("REWRITTEN")
        {
            Description = "Its rewrite. Without it, a copy of ORIGINAL is rewritten in memory by the graph rewriter.",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var unexpected = new Argument<string[]>("unexpected") { Arity = ArgumentArity.ZeroOrMore, Hidden = true };
        var run = new ModelRunOptions("128,512", "Without REWRITTEN, ORIGINAL is rewritten with it.", defaultCudaTf32: "default");
        var iterations = new Option<string>("--iterations") { Description = "Timed runs of each model per sequence length.", DefaultValueFactory = _ => "20" };
        var warmup = new Option<string>("--warmup") { Description = "Untimed runs of each model per sequence length first (at least one runs).", DefaultValueFactory = _ => "3" };
        var budget = new Option<string>("--budget")
        {
            Description = "Seconds of timing per sequence length, after which it stops even if fewer than --iterations ran (one run of each always does).",
            DefaultValueFactory = _ => "60",
        };
        var json = new Option<string?>("--json") { Description = "Also write the results as JSON to this file." };
        var command = new Command("bench", "Time ORIGINAL and its rewrite side by side on the same generated inputs, interleaved.")
        {
            original, rewritten, unexpected, iterations, warmup, budget, json,
        };
        run.AddTo(command);
        command.SetAction(parsed =>
        {
            var error = parsed.InvocationConfiguration.Error;
            if (parsed.GetValue(unexpected) is { Length: > 0 } extra)
            {
                error.WriteLine($"error: unexpected argument(s): {string.Join(" ", extra)}");
                return BadInput;
            }

            BenchRequest request;
            try
            {
                var settings = run.Parse(parsed);
                request = new BenchRequest(parsed.GetValue(original)!, parsed.GetValue(rewritten), parsed.GetValue(json), settings.Rewriting,
                    new BenchmarkOptions
                    {
                        SequenceLengths = settings.SequenceLengths,
                        Inputs = settings.Inputs,
                        OriginalSession = settings.OriginalSession,
                        RewrittenSession = settings.RewrittenSession,
                        Iterations = ModelRunOptions.ParseInt(parsed.GetValue(iterations)!, "--iterations", minimum: 1),
                        WarmupIterations = ModelRunOptions.ParseInt(parsed.GetValue(warmup)!, "--warmup", minimum: 0),
                        TimeBudget = ParseSeconds(parsed.GetValue(budget)!, "--budget"),
                    });
            }
            catch (ArgumentException bad)
            {
                error.WriteLine($"error: {bad.Message}");
                return BadInput;
            }

            return Run(request, parsed.InvocationConfiguration.Output, error);
        });
        return command;
    }

    /// <summary>What to time and how.</summary>
    public sealed record BenchRequest(string OriginalPath, string? RewrittenPath, string? JsonPath,
        GraphRewriter.RewriteOptions Rewriting, BenchmarkOptions Options);

    /// <summary>Loads, times, prints, writes the JSON; returns the exit status.</summary>
    public static int Run(BenchRequest request, TextWriter output, TextWriter error)
    {
        ModelSource original, rewritten;
        GraphRewriter.Report.FusionReport? fusion;
        string rewrittenNote;
        int? fused;
        try
        {
            CheckJsonPath(request);
            original = ModelSource.FromFile(request.OriginalPath);
            if (request.RewrittenPath is { } path)
            {
                rewritten = ModelSource.FromFile(path);
                // Which blocks of ORIGINAL the rewriter fuses, for the probabilities column only: not knowing is no error here.
                fusion = TryRewrite(original, request.Rewriting)?.Report;
                fused = FlashAttentionNodes(rewritten);
                rewrittenNote = $"{path}: {(fused is { } count ? count.ToString(CultureInfo.InvariantCulture) : "?")} FlashAttention node(s)";
            }
            else
            {
                (rewritten, fusion) = VerifyCommand.Rewritten(original, request.Rewriting);
                fused = fusion.Fused;
                rewrittenNote = $"{original.Name} rewritten in memory: {fusion.Fused} attention subgraph(s) fused, {fusion.Skipped.Count} skipped";
            }
        }
        catch (InvalidModelException bad)
        {
            error.WriteLine($"error: {bad.Message}");
            return BadInput;
        }

        BenchmarkReport report;
        try
        {
            report = ModelBenchmark.Run(original, rewritten, request.Options, fusion);
        }
        catch (Exception bad) when (bad is InvalidModelException or NotSupportedException)
        {
            error.WriteLine($"error: {bad.Message}");
            return BadInput;
        }
        catch (BenchmarkFailedException bad)
        {
            error.WriteLine($"error: {bad.Message}");
            return Failed;
        }

        output.WriteLine($"original   {original.Name}");
        output.WriteLine($"rewritten  {rewrittenNote}");
        WriteTable(output, report, request.Options);
        if (request.JsonPath is { } jsonPath)
        {
            try
            {
                RewriteCommand.WriteAtomically(jsonPath, ToJson(report, request, rewrittenNote, fused));
            }
            catch (Exception bad) when (bad is IOException or UnauthorizedAccessException)
            {
                error.WriteLine($"error: cannot write '{jsonPath}': {bad.Message}");
                return Failed;
            }

            output.WriteLine($"wrote {jsonPath}");
        }

        return Measured;
    }

    /// <summary>The results as JSON; <c>ratio</c> is <c>rewritten.medianMs / original.medianMs</c> of the same run.</summary>
    public static string ToJson(BenchmarkReport report, BenchRequest request, string rewrittenNote, int? fused) =>
        JsonSerializer.Serialize(new
        {
            original = report.OriginalModel,
            rewritten = report.RewrittenModel,
            rewrittenNote,
            fusedAttentionBlocks = fused,
            originalProvider = report.OriginalProvider,
            rewrittenProvider = report.RewrittenProvider,
            intraOpThreads = request.Options.OriginalSession.IntraOpThreads,
            batchSize = request.Options.Inputs.BatchSize,
            pastSequenceLength = request.Options.Inputs.PastSequenceLength,
            warmupIterations = request.Options.WarmupIterations,
            iterations = request.Options.Iterations,
            budgetSeconds = request.Options.TimeBudget?.TotalSeconds,
            runs = report.Runs.Select(r => new
            {
                sequenceLength = r.SequenceLength,
                inputs = r.Inputs,
                original = r.Original,
                rewritten = r.Rewritten,
                ratio = r.Ratio,
                originalAttentionProbabilities = r.OriginalAttentionProbabilities is { } p
                    ? new { blocks = p.Blocks, largestBytesPerBlock = p.LargestBytes, shape = p.Shape, elementType = p.ElementType.ToString() }
                    : null,
            }),
        }, JsonOptions) + Environment.NewLine;

    private static void WriteTable(TextWriter output, BenchmarkReport report, BenchmarkOptions options)
    {
        int threads = options.OriginalSession.IntraOpThreads;
        output.WriteLine($"providers  {Lower(report.OriginalProvider)} (original), {Lower(report.RewrittenProvider)} (rewritten); " +
                         $"intra-op threads: {(threads == 0 ? "chosen by ONNX Runtime" : threads.ToString(CultureInfo.InvariantCulture))}");
        var inputs = options.Inputs;
        string padding = inputs.BatchSize == 1
            ? "unpadded"
            : $"entry 0 unpadded, the others padded at the {(inputs.Padding == PaddingSide.Start ? "start" : "end")}";
        output.WriteLine($"inputs     batch {inputs.BatchSize} ({padding}), past {inputs.PastSequenceLength} where the model caches, " +
                         $"seed {inputs.Seed}; --json lists each run's inputs");
        output.WriteLine($"timing     {options.WarmupIterations} warm-up run(s), then up to {options.Iterations} timed run(s) of each model per " +
                         "sequence length, interleaved original/rewritten" +
                         (options.TimeBudget is { } budget ? $", at most {budget.TotalSeconds.ToString(CultureInfo.InvariantCulture)} s" : ""));
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(output),
        });
        if (!console.Profile.Out.IsTerminal)
        {
            // Redirected output has no width; 80 columns would wrap the probabilities column.
            console.Profile.Width = 120;
        }

        var table = new Table().AddColumns(
            Column("seq", right: true), Column("model"), Column("median ms", right: true), Column("p10 ms", right: true), Column("p90 ms", right: true),
            Column("runs", right: true), Column("ratio", right: true), Column("attention probabilities / block"));
        foreach (var run in report.Runs)
        {
            string seq = run.SequenceLength.ToString(CultureInfo.InvariantCulture);
            string probabilities = run.OriginalAttentionProbabilities is { } p ? Describe(p) : "not measured";
            table.AddRow(Cells(seq, "original", Ms(run.Original.MedianMs), Ms(run.Original.P10Ms), Ms(run.Original.P90Ms),
                Runs(run.Original), "1.00", probabilities));
            table.AddRow(Cells("", "rewritten", Ms(run.Rewritten.MedianMs), Ms(run.Rewritten.P10Ms), Ms(run.Rewritten.P90Ms),
                Runs(run.Rewritten), run.Ratio.ToString("0.00", CultureInfo.InvariantCulture), run.OriginalAttentionProbabilities is null ? "" : "none (fused, tiled)"));
        }

        console.Write(table);
        output.WriteLine("ratio = rewritten median / original median: below 1 the rewrite is faster. Timings hold for this machine and run only.");
        if (report.Runs.Any(r => r.OriginalAttentionProbabilities is not null))
        {
            output.WriteLine("attention probabilities: the Softmax output the original computes in a fused block (the largest block, read off one run); " +
                             "the fused op keeps its scores in tiles.");
        }
    }

    private static TableColumn Column(string header, bool right = false)
    {
        var column = new TableColumn(new Text(header));
        return right ? column.RightAligned() : column;
    }

    // Text, not markup: a model name or shape in brackets must be printed as it is.
    private static IRenderable[] Cells(params string[] cells) => cells.Select(c => (IRenderable)new Text(c)).ToArray();

    private static string Ms(double milliseconds) => milliseconds.ToString(milliseconds < 10 ? "0.000" : "0.00", CultureInfo.InvariantCulture);

    private static string Runs(LatencySummary summary) => summary.Runs.ToString(CultureInfo.InvariantCulture);

    private static string Describe(AttentionProbabilities p)
    {
        double mib = p.LargestBytes / (1024.0 * 1024.0);
        string size = mib >= 1 ? $"{mib.ToString("0.0", CultureInfo.InvariantCulture)} MiB" : $"{(p.LargestBytes / 1024.0).ToString("0.0", CultureInfo.InvariantCulture)} KiB";
        return $"{size} {p.ElementType.ToString().ToLowerInvariant()}[{string.Join(",", p.Shape)}] ({p.Blocks} block(s))";
    }

    private static string Lower(ExecutionProvider provider) => provider.ToString().ToLowerInvariant();

    /// <summary>Checked before anything is measured, so that a run cannot end in a results file that cannot be written.</summary>
    private static void CheckJsonPath(BenchRequest request)
    {
        if (request.JsonPath is not { } path)
        {
            return;
        }

        if (RewriteCommand.SamePath(path, request.OriginalPath) || (request.RewrittenPath is { } r && RewriteCommand.SamePath(path, r)))
        {
            throw new InvalidModelException(path, $"--json '{path}' would overwrite a model.");
        }

        if (Directory.Exists(path) || !Directory.Exists(Path.GetDirectoryName(Path.GetFullPath(path))))
        {
            throw new InvalidModelException(path, $"--json '{path}' is not a file in an existing folder.");
        }
    }

    private static (ModelSource Rewritten, GraphRewriter.Report.FusionReport Report)? TryRewrite(ModelSource original, GraphRewriter.RewriteOptions options)
    {
        try
        {
            return VerifyCommand.Rewritten(original, options);
        }
        catch (InvalidModelException)
        {
            return null;
        }
    }

    /// <summary>FlashAttention nodes in every graph of the model; null when the graph rewriter cannot read it.</summary>
    private static int? FlashAttentionNodes(ModelSource model)
    {
        try
        {
            return OnnxModel.Load(model.Model.Clone()).Graphs.SelectMany(g => g.Nodes)
                .Count(n => n.OpType == "FlashAttention" && n.Domain == "com.ortflash");
        }
        catch (OnnxModelException)
        {
            return null;
        }
    }

    private static TimeSpan ParseSeconds(string text, string option) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds) && seconds > 0 && double.IsFinite(seconds)
            ? TimeSpan.FromSeconds(seconds)
            : throw new ArgumentException($"{option} must be a positive number of seconds, not '{text}'.");
}
