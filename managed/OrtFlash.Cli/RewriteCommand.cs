using System.CommandLine;
using OrtFlash.GraphRewriter;
using OrtFlash.GraphRewriter.Io;
using OrtFlash.GraphRewriter.Report;

namespace OrtFlash.Cli;

/// <summary>
/// <c>ortflash rewrite IN OUT [--report FILE]</c>: fuses the attention subgraphs of IN into FlashAttention nodes and
/// writes OUT (through a temporary file; IN is never modified unless OUT names it and --overwrite is given).
/// <c>ortflash inspect IN</c>: the same analysis without writing anything.
/// </summary>
internal static class RewriteCommand
{
    private const int Ok = 0;
    private const int BadInput = 2;

    /// <summary>The help text of <c>--causal-padded-rows</c> (rewrite, inspect and verify).</summary>
    public const string CausalPaddedRowsHelp =
        "Use the op's causal attribute for causal masks combined with a finite (finfo.min) padding mask, as GPT-2 exports have. " +
        "Not exact: query rows whose causally visible keys are all padded may differ from the original; every other row is unchanged. " +
        "Causal masks filled with float16's -65504 get it too, assuming every score lies within +-16384 (a note says so).";

    /// <summary>The <c>--causal-padded-rows</c> option.</summary>
    public static Option<bool> CausalPaddedRowsOption() => new("--causal-padded-rows") { Description = CausalPaddedRowsHelp };

    /// <summary>The help text of <c>--exact-integer-masks</c> (rewrite, inspect, verify and bench).</summary>
    public const string ExactIntegerMasksHelp =
        "Do not take integer attention masks to hold only 0 and 1: refuse the fusions that are exact only then " +
        "(GPT-2/BLOOM-style (1 - m)*finfo.min masks combined with another finfo.min mask). By default they are fused, each with a note.";

    /// <summary>The <c>--exact-integer-masks</c> option.</summary>
    public static Option<bool> ExactIntegerMasksOption() => new("--exact-integer-masks") { Description = ExactIntegerMasksHelp };

    /// <summary>The rewrite options the flags select.</summary>
    public static RewriteOptions OptionsFor(bool causalPaddedRows, bool exactIntegerMasks) =>
        new() { CausalForPaddedRows = causalPaddedRows, IntegerMasksAreBinary = !exactIntegerMasks };

    public static Command Create()
    {
        var input = new Argument<string>("IN") { Description = "The ONNX model to rewrite." };
        var output = new Argument<string>("OUT") { Description = "Where to write the rewritten model." };
        var report = new Option<string?>("--report") { Description = "Also write the fusion report as JSON to this file." };
        var overwrite = new Option<bool>("--overwrite") { Description = "Allow OUT to be IN (the input is then replaced)." };
        var causalPaddedRows = CausalPaddedRowsOption();
        var exactIntegerMasks = ExactIntegerMasksOption();
        var command = new Command("rewrite", "Fuse every attention subgraph into com.ortflash::FlashAttention and write the model.");
        command.Arguments.Add(input);
        command.Arguments.Add(output);
        command.Options.Add(report);
        command.Options.Add(overwrite);
        command.Options.Add(causalPaddedRows);
        command.Options.Add(exactIntegerMasks);
        command.SetAction(parsed => Rewrite(parsed.GetValue(input)!, parsed.GetValue(output)!, parsed.GetValue(report),
            parsed.GetValue(overwrite), parsed.InvocationConfiguration.Output, parsed.InvocationConfiguration.Error,
            OptionsFor(parsed.GetValue(causalPaddedRows), parsed.GetValue(exactIntegerMasks))));
        return command;
    }

    public static Command CreateInspect()
    {
        var input = new Argument<string>("IN") { Description = "The ONNX model to analyse." };
        var json = new Option<bool>("--json") { Description = "Print the report as JSON instead of a table." };
        var causalPaddedRows = CausalPaddedRowsOption();
        var exactIntegerMasks = ExactIntegerMasksOption();
        var command = new Command("inspect", "List the attention candidates of a model and what rewriting would do with each.");
        command.Arguments.Add(input);
        command.Options.Add(json);
        command.Options.Add(causalPaddedRows);
        command.Options.Add(exactIntegerMasks);
        command.SetAction(parsed => Inspect(parsed.GetValue(input)!, parsed.GetValue(json),
            parsed.InvocationConfiguration.Output, parsed.InvocationConfiguration.Error,
            OptionsFor(parsed.GetValue(causalPaddedRows), parsed.GetValue(exactIntegerMasks))));
        return command;
    }

    public static int Rewrite(string inputPath, string outputPath, string? reportPath, bool overwrite, TextWriter output, TextWriter error,
        RewriteOptions? options = null)
    {
        FusionReport report;
        try
        {
            if (reportPath is not null && SamePath(reportPath, inputPath))
            {
                throw new OnnxModelException($"--report '{reportPath}' would overwrite the input model.");
            }

            report = AttentionFuser.RewriteFile(inputPath, outputPath, overwrite, options);
            if (reportPath is not null)
            {
                WriteAtomically(reportPath, report.ToJson());
            }
        }
        catch (Exception bad) when (bad is OnnxModelException or IOException or UnauthorizedAccessException)
        {
            error.WriteLine($"error: {bad.Message}");
            return BadInput;
        }

        output.Write(report.ToTable());
        output.WriteLine($"wrote {outputPath}" + (reportPath is null ? "" : $" and {reportPath}"));
        return Ok;
    }

    public static int Inspect(string inputPath, bool json, TextWriter output, TextWriter error, RewriteOptions? options = null)
    {
        FusionReport report;
        try
        {
            report = AttentionFuser.Rewrite(OnnxModelFile.Read(inputPath), options);
        }
        catch (Exception bad) when (bad is OnnxModelException or IOException or UnauthorizedAccessException)
        {
            error.WriteLine($"error: {bad.Message}");
            return BadInput;
        }

        output.Write(json ? report.ToJson() + Environment.NewLine : report.ToTable());
        return Ok;
    }

    internal static bool SamePath(string a, string b) =>
        string.Equals(Path.GetFullPath(a), Path.GetFullPath(b), StringComparison.Ordinal);

    /// <summary>Writes <paramref name="text"/> to <paramref name="path"/> through a temporary file beside it, renamed over it,
    /// so that the file is never left half-written.</summary>
    internal static void WriteAtomically(string path, string text)
    {
        var full = Path.GetFullPath(path);
        var temporary = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            File.WriteAllText(temporary, text);
            File.Move(temporary, full, overwrite: true);
        }
        finally
        {
            File.Delete(temporary);
        }
    }
}
