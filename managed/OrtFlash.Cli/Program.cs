using System.CommandLine;

var root = new RootCommand("OrtFlash: FlashAttention for ONNX Runtime models.");
root.Subcommands.Add(OrtFlash.Cli.InfoCommand.Create());
root.Subcommands.Add(OrtFlash.Cli.VerifyCommand.Create());
return root.Parse(args).Invoke();
