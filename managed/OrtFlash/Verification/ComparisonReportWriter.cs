using System.Globalization;

namespace OrtFlash.Verification;

/// <summary>Writes a <see cref="ComparisonReport"/> as aligned plain text: what was fed, one row per output and
/// sequence length, the largest differences of every failing output, and a PASS/FAIL line.</summary>
public static class ComparisonReportWriter
{
    /// <summary>The report as text, e.g. for a test's failure message.</summary>
    public static string ToText(ComparisonReport report)
    {
        using var text = new StringWriter(CultureInfo.InvariantCulture);
        Write(text, report);
        return text.ToString();
    }

    /// <summary>Writes <paramref name="report"/> to <paramref name="output"/>.</summary>
    public static void Write(TextWriter output, ComparisonReport report)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(report);
        output.WriteLine($"providers  {Lower(report.ExpectedProvider)} (expected), {Lower(report.ActualProvider)} (actual)");
        var tolerances = report.Runs.SelectMany(r => r.Outputs)
            .Where(o => o.ExpectedType is not null && o.Verdict is not (OutputVerdict.MissingInActual or OutputVerdict.UnexpectedInActual))
            .Select(o => $"{o.ExpectedType}: {o.Tolerance}").Distinct().ToArray();
        output.WriteLine("tolerance  |actual − expected| ≤ atol·max|expected| + rtol·|expected|, per output" +
                         (tolerances.Length > 0 ? $"; {string.Join("; ", tolerances)}" : ""));
        foreach (var run in report.Runs)
        {
            output.WriteLine($"inputs (sequence length {run.SequenceLength}):");
            foreach (var input in run.Inputs)
            {
                output.WriteLine($"  {input}");
            }
        }

        output.WriteLine();
        WriteTable(output, report);
        WriteFailures(output, report);
        output.WriteLine();
        int comparisons = report.Runs.Sum(r => Math.Max(1, r.Outputs.Count));
        int failed = report.Runs.Sum(r => r.Outputs.Count(o => !o.Passed) + (r.Outputs.Count == 0 && !r.Passed ? 1 : 0));
        string lengths = string.Join(", ", report.Runs.Select(r => r.SequenceLength.ToString(CultureInfo.InvariantCulture)));
        output.WriteLine(report.Passed
            ? $"PASS: every output matches at sequence lengths {lengths} ({Count(comparisons, "comparison")})."
            : $"FAIL: {failed} of {Count(comparisons, "comparison")} {(failed == 1 ? "does" : "do")} not match (sequence lengths {lengths}).");
    }

    private static void WriteTable(TextWriter output, ComparisonReport report)
    {
        var rows = new List<string[]> { new[] { "seq", "output", "shape", "max|diff|", "max rel", "max|expected|", "tol used", "result" } };
        foreach (var run in report.Runs)
        {
            string seq = run.SequenceLength.ToString(CultureInfo.InvariantCulture);
            if (run.ActualRunError is not null)
            {
                rows.Add([seq, "(all)", "", "", "", "", "", "actual model failed"]);
            }

            foreach (var o in run.Outputs)
            {
                bool measured = o.Verdict is OutputVerdict.Match or OutputVerdict.OutOfTolerance;
                rows.Add(
                [
                    seq,
                    o.Name,
                    Shape(o),
                    measured ? Number(o.MaxAbsoluteDifference) : "",
                    measured ? Number(o.MaxRelativeDifference) : "",
                    measured ? Number(o.Magnitude) : "",
                    measured ? Number(o.ToleranceUsed) : "",
                    Verdict(o),
                ]);
            }
        }

        var widths = Enumerable.Range(0, rows[0].Length).Select(c => rows.Max(r => r[c].Length)).ToArray();
        foreach (var row in rows)
        {
            output.WriteLine(string.Join("  ", row.Select((cell, c) => c == 0 ? cell.PadLeft(widths[c]) : cell.PadRight(widths[c]))).TrimEnd());
        }
    }

    private static void WriteFailures(TextWriter output, ComparisonReport report)
    {
        foreach (var run in report.Runs.Where(r => !r.Passed))
        {
            output.WriteLine();
            output.WriteLine($"sequence length {run.SequenceLength}:");
            foreach (var mismatch in run.InputMismatches)
            {
                output.WriteLine($"  input mismatch: {mismatch}");
            }

            if (run.ActualRunError is not null)
            {
                output.WriteLine($"  the actual model failed: {run.ActualRunError}");
            }

            foreach (var o in run.Outputs.Where(o => !o.Passed))
            {
                output.WriteLine($"  {o.Name}: {Explain(o)}");
                foreach (var difference in o.LargestDifferences)
                {
                    output.WriteLine($"    {difference}  (|diff| {Number(difference.AbsoluteDifference)})");
                }
            }
        }
    }

    private static string Explain(OutputComparison o) => o.Verdict switch
    {
        OutputVerdict.OutOfTolerance => string.Create(CultureInfo.InvariantCulture,
            $"{o.ElementsOutOfTolerance} of {o.ElementCount} elements outside {o.Tolerance}, {o.NonFiniteMismatches} NaN/infinity mismatches; largest differences:"),
        OutputVerdict.ShapeMismatch => $"shape [{string.Join(",", o.ExpectedShape ?? [])}] expected, [{string.Join(",", o.ActualShape ?? [])}] actual",
        OutputVerdict.TypeMismatch => $"type {o.ExpectedType} expected, {o.ActualType} actual",
        OutputVerdict.MissingInActual => "the actual model has no output of this name",
        OutputVerdict.UnexpectedInActual => "only the actual model has an output of this name",
        _ => o.Verdict.ToString(),
    };

    private static string Verdict(OutputComparison o) => o.Verdict switch
    {
        OutputVerdict.Match => "ok",
        OutputVerdict.OutOfTolerance => o.NonFiniteMismatches > 0 ? "MISMATCH (NaN/inf)" : "MISMATCH",
        OutputVerdict.ShapeMismatch => "SHAPE MISMATCH",
        OutputVerdict.TypeMismatch => "TYPE MISMATCH",
        OutputVerdict.MissingInActual => "MISSING in actual",
        OutputVerdict.UnexpectedInActual => "EXTRA in actual",
        _ => "not compared",
    };

    private static string Shape(OutputComparison o)
    {
        var shape = o.ExpectedShape ?? o.ActualShape;
        return shape is null ? "" : $"[{string.Join(",", shape)}]";
    }

    private static string Number(double value) =>
        value == 0 ? "0" : value.ToString(Math.Abs(value) is >= 1e-3 and < 1e4 ? "0.####" : "0.##e+0", CultureInfo.InvariantCulture);

    private static string Count(int count, string noun) => count == 1 ? $"1 {noun}" : $"{count} {noun}s";

    private static string Lower(ExecutionProvider provider) => provider.ToString().ToLowerInvariant();
}
