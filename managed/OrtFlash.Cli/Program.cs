using System.CommandLine;

var root = new RootCommand("OrtFlash: FlashAttention for ONNX Runtime models.");
root.Subcommands.Add(OrtFlash.Cli.InfoCommand.Create());
root.Subcommands.Add(OrtFlash.Cli.RewriteCommand.Create());
root.Subcommands.Add(OrtFlash.Cli.RewriteCommand.CreateInspect());
root.Subcommands.Add(OrtFlash.Cli.VerifyCommand.Create());
root.Subcommands.Add(OrtFlash.Cli.BenchCommand.Create());
var parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    // Usage errors exit 2, like every other kind of bad input; 1 is reserved for "the models differ".
    foreach (var error in parsed.Errors)
    {
        Console.Error.WriteLine($"error: {error.Message}");
    }

    return 2;
}

return parsed.Invoke();
