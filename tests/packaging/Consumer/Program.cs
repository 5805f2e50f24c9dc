using Microsoft.ML.OnnxRuntime;
using OrtFlash;

// Loads a model through the package (rewrite on load, op library from the package) and runs it once.
using var session = OrtFlashSession.Create(args[0], new OrtFlashSessionOptions { Provider = ExecutionProvider.Cpu });
long[] shape = [1, 6];
using var ids = OrtValue.CreateTensorValueFromMemory(new long[] { 1, 5, 9, 2, 7, 3 }, shape);
using var mask = OrtValue.CreateTensorValueFromMemory(new long[] { 1, 1, 1, 1, 1, 0 }, shape);
using var runOptions = new RunOptions();
using var outputs = session.Session.Run(runOptions, ["input_ids", "attention_mask"], [ids, mask], session.Session.OutputNames);
var values = outputs[0].GetTensorDataAsSpan<float>().ToArray();
Console.WriteLine($"library={OrtFlashNative.LibraryPath}");
Console.WriteLine($"fused={session.Report!.Fused} outputs={values.Length} finite={values.All(float.IsFinite)}");
return session.Report.Fused > 0 && values.All(float.IsFinite) ? 0 : 1;
