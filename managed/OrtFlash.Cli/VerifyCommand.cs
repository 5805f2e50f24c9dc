using System.CommandLine;
using System.Globalization;
using System.Runtime.CompilerServices;
using OrtFlash.GraphRewriter;
using OrtFlash.GraphRewriter.Io;
using OrtFlash.GraphRewriter.Report;
using OrtFlash.Verification;

[assembly: InternalsVisibleTo("OrtFlash.Tests")]

namespace OrtFlash.Cli;

/// <summary>
/// <c>ortflash verify ORIGINAL [REWRITTEN]</c>: runs both models in ONNX Runtime on generated inputs (masks with
/// padding) at several sequence lengths and prints the largest differences per output.
/// Exit status: 0 every output within tolerance, 1 a mismatch, 2 bad input (nothing compared, nothing written).
/// </summary>
internal static class VerifyCommand
{
    public const int Match = 0;
    public const int Mismatch = 1;
    public const int BadInput = 2;

    public static Command Create()
    {
        var original = new Argument<string>("ORIGINAL") { Description = "The exported model (.onnx), the reference." };
        var rewritten = new Argument<string?>("REWRITTEN")
        {
            Description = "The model to check against ORIGINAL. Without it, a copy of ORIGINAL is rewritten in memory by the graph rewriter.",
            Arity = ArgumentArity.ZeroOrOne,
        };

        var rtol = new Option<string?>("--rtol") { Description = "Relative tolerance for every float output (default: 1e-4 float32, 1e-2 float16, 5e-2 bfloat16)." };
        var atol = new Option<string?>("--atol") { Description = "Absolute tolerance, as a fraction of each output's largest |value| (defaults as --rtol)." };
        var run = new ModelRunOptions("7,16",
            "Without REWRITTEN, ORIGINAL is rewritten with it; padding is then generated " +
            "at the end only, so that no row is fully padded and only what the option promises is compared.",
            defaultCudaTf32: "off");

        // Collects whatever follows REWRITTEN, so that it is reported here with exit status 2.
        var unexpected = new Argument<string[]>("unexpected") { Arity = ArgumentArity.ZeroOrMore, Hidden = true };

        var command = new Command("verify", "Run ORIGINAL and REWRITTEN on the same generated inputs and compare every output.")
        {
            original, rewritten, unexpected, rtol, atol,
        };
        run.AddTo(command);
        command.SetAction(parseResult =>
        {
            var output = parseResult.InvocationConfiguration.Output;
            var error = parseResult.InvocationConfiguration.Error;
            if (parseResult.GetValue(unexpected) is { Length: > 0 } extra)
            {
                error.WriteLine($"error: unexpected argument(s): {string.Join(" ", extra)}");
                return BadInput;
            }

            VerifyRequest request;
            try
            {
                request = new VerifyRequest(
                    parseResult.GetValue(original)!,
                    parseResult.GetValue(rewritten),
                    ParseOptions(run.Parse(parseResult), parseResult.GetValue(rtol), parseResult.GetValue(atol)));
            }
            catch (ArgumentException bad)
            {
                error.WriteLine($"error: {bad.Message}");
                return BadInput;
            }

            return Run(request, output, error);
        });
        return command;
    }

    /// <summary>What to compare and how.</summary>
    public sealed record VerifyRequest(string OriginalPath, string? RewrittenPath, ComparisonOptions Options);

    /// <summary>Loads, compares, prints; returns the exit status.</summary>
    public static int Run(VerifyRequest request, TextWriter output, TextWriter error)
    {
        ModelSource original, actual;
        string actualNote;
        try
        {
            original = ModelSource.FromFile(request.OriginalPath);
            (actual, actualNote) = request.RewrittenPath is { } path
                ? (ModelSource.FromFile(path), path)
                : RewriteInMemory(original, request.Options.ActualSession.Rewriting);
        }
        catch (InvalidModelException bad)
        {
            error.WriteLine($"error: {bad.Message}");
            return BadInput;
        }

        ComparisonReport report;
        try
        {
            report = ModelComparer.Compare(original, actual, request.Options);
        }
        catch (Exception bad) when (bad is InvalidModelException or NotSupportedException or FileNotFoundException)
        {
            error.WriteLine($"error: {bad.Message}");
            return BadInput;
        }

        output.WriteLine($"original   {original.Name}");
        output.WriteLine($"rewritten  {actualNote}");
        ComparisonReportWriter.Write(output, report);
        return report.Passed ? Match : Mismatch;
    }

    /// <summary>Rewrites a copy of ORIGINAL in memory with the graph rewriter; the original stays untouched.</summary>
    private static (ModelSource Actual, string Note) RewriteInMemory(ModelSource original, RewriteOptions options)
    {
        var (copy, report) = Rewritten(original, options);
        return (copy,
            $"{original.Name} rewritten in memory: {report.Fused} attention subgraph(s) fused, {report.Skipped.Count} skipped" +
            (options.CausalForPaddedRows
                ? " (--causal-padded-rows: padding generated at the end only, so no row is fully padded; fully padded rows may differ and are not compared)"
                : ""));
    }

    /// <summary>A copy of <paramref name="original"/> rewritten in memory, named "(rewritten in memory)", and what the rewriter did.</summary>
    /// <exception cref="InvalidModelException">The rewriter found the graph malformed.</exception>
    internal static (ModelSource Rewritten, FusionReport Report) Rewritten(ModelSource original, RewriteOptions options)
    {
        var copy = original.Model.Clone();
        FusionReport report;
        try
        {
            report = AttentionFuser.Rewrite(copy, options);
        }
        catch (OnnxModelException bad)
        {
            throw new InvalidModelException(original.Name, bad.Message, bad);
        }

        return (ModelSource.FromModel(copy, $"{original.Name} (rewritten in memory)"), report);
    }

    private static ComparisonOptions ParseOptions(ModelRunSettings settings, string? rtol, string? atol) => new()
    {
        SequenceLengths = settings.SequenceLengths,
        RelativeTolerance = rtol is null ? null : ParseTolerance(rtol, "--rtol"),
        AbsoluteTolerance = atol is null ? null : ParseTolerance(atol, "--atol"),
        ExpectedSession = settings.OriginalSession,
        ActualSession = settings.RewrittenSession,
        Inputs = settings.Inputs,
    };

    private static double ParseTolerance(string text, string option) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) && value >= 0 && double.IsFinite(value)
            ? value
            : throw new ArgumentException($"{option} must be a non-negative number, not '{text}'.");
}
