using System.Collections;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OrtFlash.Verification;

/// <summary>One generated input. Its <see cref="Value"/> belongs to the <see cref="GeneratedInputs"/> that holds it.</summary>
/// <param name="Name">The model input it feeds.</param>
/// <param name="Role">What the generator took the input to be.</param>
/// <param name="ElementType">Its element type, as the model declares it.</param>
/// <param name="Shape">The generated shape.</param>
/// <param name="Description">How the values were chosen, in words ("token ids in [0, 128)", "mask, 1 = keep, padded ...").</param>
/// <param name="Value">The tensor, in CPU memory.</param>
public sealed record GeneratedInput(string Name, InputRole Role, TensorElementType ElementType, IReadOnlyList<long> Shape, string Description, OrtValue Value)
{
    /// <summary>"input_ids int64[2,7]: token ids in [0, 128)".</summary>
    public override string ToString() => $"{Name} {ElementType}[{string.Join(",", Shape)}]: {Description}";
}

/// <summary>
/// The inputs <see cref="ModelInputGenerator.Generate"/> made for one run, in the model's input order. Owns their
/// tensors: dispose it once every run that reads them is done. The same values may feed several sessions.
/// </summary>
public sealed class GeneratedInputs : IReadOnlyList<GeneratedInput>, IDisposable
{
    private readonly GeneratedInput[] inputs;

    internal GeneratedInputs(IEnumerable<GeneratedInput> inputs, IReadOnlyDictionary<string, long> dimensionSizes)
    {
        this.inputs = inputs.ToArray();
        DimensionSizes = dimensionSizes;
    }

    /// <summary>The size every named symbolic dimension got.</summary>
    public IReadOnlyDictionary<string, long> DimensionSizes { get; }

    /// <summary>Input names, in order (for <see cref="InferenceSession.Run(RunOptions, IReadOnlyCollection{string}, IReadOnlyCollection{OrtValue}, IReadOnlyCollection{string})"/>).</summary>
    public IReadOnlyList<string> Names => inputs.Select(i => i.Name).ToArray();

    /// <summary>Input tensors, in the order of <see cref="Names"/>.</summary>
    public IReadOnlyList<OrtValue> Values => inputs.Select(i => i.Value).ToArray();

    /// <inheritdoc />
    public int Count => inputs.Length;

    /// <inheritdoc />
    public GeneratedInput this[int index] => inputs[index];

    /// <summary>The input with this name.</summary>
    /// <exception cref="KeyNotFoundException">No input has this name.</exception>
    public GeneratedInput this[string name] =>
        Array.Find(inputs, i => i.Name == name) ?? throw new KeyNotFoundException($"No generated input is named '{name}'.");

    /// <inheritdoc />
    public IEnumerator<GeneratedInput> GetEnumerator() => ((IEnumerable<GeneratedInput>)inputs).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var input in inputs)
        {
            input.Value.Dispose();
        }
    }
}
