using System.CommandLine;

var root = new RootCommand("OrtFlash: FlashAttention for ONNX Runtime models.");
root.Subcommands.Add(OrtFlash.Cli.InfoCommand.Create());
return root.Parse(args).Invoke();
