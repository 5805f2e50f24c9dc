using System.CommandLine;
using System.Globalization;
using OrtFlash.GraphRewriter;
using OrtFlash.Verification;

namespace OrtFlash.Cli;

/// <summary>
/// The options <c>verify</c> and <c>bench</c> share: how the two models' sessions are opened and which inputs are
/// generated for them. One definition, so that both commands read and check them the same way.
/// </summary>
/// <remarks>
/// Values are read as text and checked in <see cref="Parse"/>, so that a malformed one exits with 2 (bad input) like a
/// bad file: System.CommandLine's own parse errors exit with 1, which means "mismatch" to verify's callers.
/// </remarks>
internal sealed class ModelRunOptions
{
    /// <param name="defaultSequenceLengths">The command's default for <c>--seq</c>.</param>
    /// <param name="causalPaddedRowsNote">What the command adds to the help of <c>--causal-padded-rows</c>.</param>
    /// <param name="defaultCudaTf32">The command's default for <c>--cuda-tf32</c>: "off" where outputs are compared
    /// (ONNX Runtime's TF32 MatMuls would differ from the fused op's fp32 by more than float32's tolerance), "default"
    /// where they are timed (what users run).</param>
    public ModelRunOptions(string defaultSequenceLengths, string causalPaddedRowsNote, string defaultCudaTf32)
    {
        SequenceLengths = new Option<string>("--seq") { Description = "Comma-separated sequence lengths to run at.", DefaultValueFactory = _ => defaultSequenceLengths };
        Provider = new Option<string>("--provider") { Description = "Execution provider: cpu, cuda or auto.", DefaultValueFactory = _ => "cpu" };
        CudaTf32 = new Option<string>("--cuda-tf32")
        {
            Description = "Whether ONNX Runtime's CUDA provider may run the models' other float32 MatMuls in TF32: on, off, " +
                          "or default (ONNX Runtime's choice, on).",
            DefaultValueFactory = _ => defaultCudaTf32,
        };
        AttentionTf32 = new Option<bool>("--attention-tf32")
        {
            Description = "Run the fused op's float32 attention on CUDA in one TF32 pass (about 1e-3 relative, a third of " +
                          "3xTF32's tensor-core work) instead of at fp32 accuracy; with --cuda-tf32 on the whole model runs TF32.",
        };
        Threads = new Option<string>("--threads") { Description = "ONNX Runtime intra-op threads of each session; 0 lets ONNX Runtime choose.", DefaultValueFactory = _ => "0" };
        Batch = new Option<string>("--batch") { Description = "Batch size (entry 0 unpadded, the others padded).", DefaultValueFactory = _ => "2" };
        Past = new Option<string>("--past") { Description = "Past (KV cache) length for models with a cache.", DefaultValueFactory = _ => "3" };
        Seed = new Option<string>("--seed") { Description = "Seed of the generated inputs.", DefaultValueFactory = _ => "1234" };
        Padding = new Option<string>("--padding")
        {
            Description = "Where the padded entries' generated padding masks pad: end (right padding, as tokenizers pad encoder " +
                          "input) or start (left padding, as batched generation pads prompts: a padded entry's first rows then " +
                          "see only padding, a softmax over the mask's fill, which a float16 model may round otherwise than the " +
                          "fused op, which adds masks in float32).",
            DefaultValueFactory = _ => "end",
        };
        Dimensions = new Option<string[]>("--dim")
        {
            Description = "NAME=SIZE: the size of a symbolic input dimension, over every rule (repeatable). Needed for dimensions " +
                          "that count attention heads, such as BLOOM's cached batch × heads (--dim batch_x_heads=8 for batch 2, 4 heads).",
        };
        CausalPaddedRows = new Option<bool>("--causal-padded-rows") { Description = RewriteCommand.CausalPaddedRowsHelp + " " + causalPaddedRowsNote };
        ExactIntegerMasks = RewriteCommand.ExactIntegerMasksOption();
    }

    public Option<string> SequenceLengths { get; }

    public Option<string> Provider { get; }

    public Option<string> CudaTf32 { get; }

    public Option<bool> AttentionTf32 { get; }

    public Option<string> Threads { get; }

    public Option<string> Batch { get; }

    public Option<string> Past { get; }

    public Option<string> Seed { get; }

    public Option<string> Padding { get; }

    public Option<string[]> Dimensions { get; }

    public Option<bool> CausalPaddedRows { get; }

    public Option<bool> ExactIntegerMasks { get; }

    /// <summary>Adds every option to <paramref name="command"/>.</summary>
    public void AddTo(Command command)
    {
        foreach (Option option in new Option[] { SequenceLengths, Provider, CudaTf32, AttentionTf32, Threads, Batch, Past, Seed, Padding, Dimensions, CausalPaddedRows, ExactIntegerMasks })
        {
            command.Options.Add(option);
        }
    }

    /// <summary>The values given, checked.</summary>
    /// <exception cref="ArgumentException">A value is malformed; the message names the option.</exception>
    public ModelRunSettings Parse(ParseResult parsed)
    {
        var provider = ParseProvider(parsed.GetValue(Provider)!);
        int threads = ParseInt(parsed.GetValue(Threads)!, "--threads", minimum: 0);
        var session = new OrtFlashSessionOptions
        {
            Provider = provider, IntraOpThreads = threads, CudaTf32 = ParseCudaTf32(parsed.GetValue(CudaTf32)!),
            CudaAttentionTf32 = parsed.GetValue(AttentionTf32),
        };
        string seed = parsed.GetValue(Seed)!;
        var padding = ParsePadding(parsed.GetValue(Padding)!);
        bool causalPaddedRows = parsed.GetValue(CausalPaddedRows);
        if (causalPaddedRows && padding == PaddingSide.Start)
        {
            // The option promises rows that see an unpadded key; left padding leaves a padded entry's first rows none.
            throw new ArgumentException("--causal-padded-rows and --padding start do not go together: the rewrite is exact only for rows " +
                                        "that see a key the padding keeps, and left padding leaves a padded entry's first rows none.");
        }

        return new ModelRunSettings(
            parsed.GetValue(SequenceLengths)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Select(s => ParseInt(s, "--seq", minimum: 1)).ToArray() is { Length: > 0 } lengths
                ? lengths
                : throw new ArgumentException("--seq needs at least one sequence length, e.g. --seq 7,16."),
            session,
            session with { Rewriting = RewriteCommand.OptionsFor(causalPaddedRows, parsed.GetValue(ExactIntegerMasks)) },
            new InputGenerationOptions
            {
                BatchSize = ParseInt(parsed.GetValue(Batch)!, "--batch", minimum: 1),
                PastSequenceLength = ParseInt(parsed.GetValue(Past)!, "--past", minimum: 0),
                // At the end by default: it leaves key 0 unpadded (the generator always keeps one key), which every
                // causal row sees, as --causal-padded-rows needs.
                Padding = padding,
                Seed = ulong.TryParse(seed, NumberStyles.None, CultureInfo.InvariantCulture, out ulong s)
                    ? s
                    : throw new ArgumentException($"--seed must be a non-negative integer, not '{seed}'."),
                DimensionOverrides = ParseDimensions(parsed.GetValue(Dimensions) ?? []),
            });
    }

    /// <summary>NAME=SIZE pairs as a dictionary; a name given twice keeps its last size.</summary>
    /// <exception cref="ArgumentException">A pair is malformed.</exception>
    private static Dictionary<string, long> ParseDimensions(IEnumerable<string> pairs)
    {
        var sizes = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (string pair in pairs)
        {
            int equals = pair.LastIndexOf('=');
            if (equals <= 0 || !long.TryParse(pair[(equals + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out long size))
            {
                throw new ArgumentException($"--dim must be NAME=SIZE with SIZE an integer ≥ 0, not '{pair}'.");
            }

            sizes[pair[..equals]] = size;
        }

        return sizes;
    }

    /// <summary>An integer option's value, at least <paramref name="minimum"/>.</summary>
    /// <exception cref="ArgumentException">It is not.</exception>
    public static int ParseInt(string text, string option, int minimum) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int value) && value >= minimum
            ? value
            : throw new ArgumentException($"{option} must be an integer ≥ {minimum}, not '{text}'.");

    private static bool? ParseCudaTf32(string text) => text.ToLowerInvariant() switch
    {
        "on" => true,
        "off" => false,
        "default" => null,
        _ => throw new ArgumentException($"--cuda-tf32 must be on, off or default, not '{text}'."),
    };

    private static PaddingSide ParsePadding(string text) => text.ToLowerInvariant() switch
    {
        "end" => PaddingSide.End,
        "start" => PaddingSide.Start,
        _ => throw new ArgumentException($"--padding must be end or start, not '{text}'."),
    };

    private static ExecutionProvider ParseProvider(string text) => text.ToLowerInvariant() switch
    {
        "cpu" => ExecutionProvider.Cpu,
        "cuda" => ExecutionProvider.Cuda,
        "auto" => ExecutionProvider.Auto,
        _ => throw new ArgumentException($"--provider must be cpu, cuda or auto, not '{text}'."),
    };
}

/// <summary>What <see cref="ModelRunOptions"/> say, checked.</summary>
/// <param name="SequenceLengths">The sequence lengths to run at.</param>
/// <param name="OriginalSession">Session settings of the original (reference) model.</param>
/// <param name="RewrittenSession">Session settings of the rewritten model; its <see cref="OrtFlashSessionOptions.Rewriting"/>
/// is what an in-memory rewrite of the original uses.</param>
/// <param name="Inputs">Batch, past length, seed and padding of the generated inputs.</param>
internal sealed record ModelRunSettings(
    IReadOnlyList<int> SequenceLengths,
    OrtFlashSessionOptions OriginalSession,
    OrtFlashSessionOptions RewrittenSession,
    InputGenerationOptions Inputs)
{
    /// <summary>The rewrite options an in-memory rewrite of the original uses.</summary>
    public RewriteOptions Rewriting => RewrittenSession.Rewriting;
}
