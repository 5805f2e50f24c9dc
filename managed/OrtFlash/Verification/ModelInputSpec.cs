using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OrtFlash.Verification;

/// <summary>One dimension of a declared input shape: a fixed size, or a symbolic one (named or unnamed).</summary>
/// <param name="FixedSize">The size when the model fixes it; -1 when it is symbolic.</param>
/// <param name="SymbolicName">The symbolic name (<c>batch</c>, <c>sequence</c>, ...); empty when fixed or unnamed.</param>
public readonly record struct InputDimension(long FixedSize, string SymbolicName)
{
    /// <summary>True when the model leaves this dimension to the caller.</summary>
    public bool IsSymbolic => FixedSize < 0;

    /// <summary>A fixed dimension.</summary>
    public static InputDimension Fixed(long size) => new(size, "");

    /// <summary>A symbolic dimension; an empty name means unnamed.</summary>
    public static InputDimension Symbolic(string name) => new(-1, name);

    /// <inheritdoc />
    public override string ToString() => IsSymbolic ? (SymbolicName.Length > 0 ? SymbolicName : "?") : FixedSize.ToString(System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>A model input as declared: name, element type and shape. <see cref="IsTensor"/> is false for sequences,
/// maps and optionals, which <see cref="ModelInputGenerator"/> cannot generate.</summary>
public sealed record ModelInputSpec(string Name, TensorElementType ElementType, IReadOnlyList<InputDimension> Dimensions, bool IsTensor = true)
{
    /// <summary>Reads a session's declared input.</summary>
    public static ModelInputSpec FromMetadata(string name, NodeMetadata metadata)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        if (!metadata.IsTensor)
        {
            return new ModelInputSpec(name, TensorElementType.DataTypeMax, [], IsTensor: false);
        }

        var dimensions = new InputDimension[metadata.Dimensions.Length];
        for (int axis = 0; axis < dimensions.Length; axis++)
        {
            long size = metadata.Dimensions[axis];
            string symbol = axis < metadata.SymbolicDimensions.Length ? metadata.SymbolicDimensions[axis] ?? "" : "";
            dimensions[axis] = size >= 0 ? InputDimension.Fixed(size) : InputDimension.Symbolic(symbol);
        }

        return new ModelInputSpec(name, metadata.ElementDataType, dimensions);
    }

    /// <summary>Every declared input of a session, in the session's order.</summary>
    public static IReadOnlyList<ModelInputSpec> FromSession(InferenceSession session)
    {
        ArgumentNullException.ThrowIfNull(session);
        return session.InputNames.Select(name => FromMetadata(name, session.InputMetadata[name])).ToArray();
    }

    /// <inheritdoc />
    public override string ToString() => $"{Name}: {ElementType}[{string.Join(",", Dimensions)}]";
}
