using Google.Protobuf;
using OrtFlash.GraphRewriter.Onnx;

namespace OrtFlash.GraphRewriter.Io;

/// <summary>Reads and writes ONNX model files without ever loading external weight files.</summary>
/// <remarks>
/// Protobuf caps one message at 2 GB, so larger models must keep their weights in side files
/// (<c>data_location = EXTERNAL</c>); those tensors hold only a file reference here and are
/// written back as references, re-pointed so that they resolve from the output's folder.
/// </remarks>
public static class OnnxModelFile
{
    private const long ProtobufMessageLimit = int.MaxValue;

    /// <summary>Reads a model file and checks that it looks like an ONNX model.</summary>
    /// <param name="path">The .onnx file.</param>
    /// <returns>The parsed model; tensors stored externally stay references.</returns>
    /// <exception cref="OnnxModelException">The file is missing, truncated, corrupt, larger than
    /// protobuf allows, or not an ONNX model.</exception>
    public static ModelProto Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var info = new FileInfo(path);
        if (!info.Exists)
        {
            throw new OnnxModelException($"Model file '{path}' does not exist.");
        }

        if (info.Length > ProtobufMessageLimit)
        {
            throw new OnnxModelException(
                $"Model file '{path}' is {info.Length} bytes; protobuf cannot parse a message over 2 GB. " +
                "Save the model with its weights as external data.");
        }

        using var stream = File.OpenRead(path);
        return Parse(stream, path);
    }

    /// <summary>Parses a model from a stream and checks that it looks like an ONNX model.</summary>
    /// <param name="stream">The serialized ModelProto.</param>
    /// <param name="sourceName">A name for messages (usually the file path).</param>
    /// <exception cref="OnnxModelException">The bytes are not a well-formed ONNX model.</exception>
    public static ModelProto Parse(Stream stream, string sourceName)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ModelProto model;
        try
        {
            model = ModelProto.Parser.ParseFrom(stream);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new OnnxModelException($"'{sourceName}' is not a readable ONNX model (truncated or corrupt): {e.Message}", e);
        }

        if (model.IrVersion <= 0 || model.Graph is null || model.OpsetImport.Count == 0)
        {
            throw new OnnxModelException(
                $"'{sourceName}' is not an ONNX model: it has no IR version, graph or opset import.");
        }

        return model;
    }

    /// <summary>
    /// Writes <paramref name="model"/> to <paramref name="outputPath"/> through a temporary file in
    /// the same folder, renamed into place once complete, so a failure leaves nothing half-written.
    /// </summary>
    /// <param name="model">The model; it is not modified (external references are re-pointed on a copy).</param>
    /// <param name="outputPath">The file to write.</param>
    /// <param name="sourceDirectory">The folder the model was read from; relative external-data
    /// locations are resolved from it. Null when the model has no external data.</param>
    /// <param name="inputPath">The file the model was read from, if any: writing over it is refused
    /// unless <paramref name="overwriteInput"/> is set.</param>
    /// <param name="overwriteInput">Allow <paramref name="outputPath"/> to be <paramref name="inputPath"/>.</param>
    /// <exception cref="OnnxModelException">The output would be the input, an external file would
    /// not be reachable from the output's folder, or the model is too large for one protobuf message.</exception>
    public static void Write(ModelProto model, string outputPath, string? sourceDirectory = null,
                             string? inputPath = null, bool overwriteInput = false)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(outputPath);
        var fullOutput = Path.GetFullPath(outputPath);
        if (!overwriteInput && inputPath is not null &&
            string.Equals(Path.GetFullPath(inputPath), fullOutput, StringComparison.Ordinal))
        {
            throw new OnnxModelException($"Refusing to overwrite the input model '{inputPath}'; choose another output path.");
        }

        var outputDirectory = Path.GetDirectoryName(fullOutput) ?? throw new OnnxModelException($"'{outputPath}' has no folder.");
        var toWrite = RelocateExternalData(model, sourceDirectory, outputDirectory);
        var size = toWrite.CalculateSize();
        if (size < 0 || size > ProtobufMessageLimit)
        {
            throw new OnnxModelException("The model exceeds protobuf's 2 GB message limit; store its weights as external data.");
        }

        Directory.CreateDirectory(outputDirectory);
        var temporary = Path.Combine(outputDirectory, $".{Path.GetFileName(fullOutput)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write))
            {
                toWrite.WriteTo(stream);
            }

            File.Move(temporary, fullOutput, overwrite: true);
        }
        catch
        {
            File.Delete(temporary);
            throw;
        }
    }

    /// <summary>
    /// Returns the model with every external-data location re-expressed relative to
    /// <paramref name="outputDirectory"/> (the model itself when nothing needs to change).
    /// </summary>
    internal static ModelProto RelocateExternalData(ModelProto model, string? sourceDirectory, string outputDirectory)
    {
        var external = ExternalTensors(model).ToList();
        if (external.Count == 0)
        {
            return model;
        }

        if (sourceDirectory is null)
        {
            throw new OnnxModelException(
                $"Tensor '{external[0].Name}' stores its data in an external file, but the folder the model came from is unknown.");
        }

        var from = Path.GetFullPath(sourceDirectory);
        var to = Path.GetFullPath(outputDirectory);
        if (string.Equals(from, to, StringComparison.Ordinal))
        {
            return model;
        }

        var copy = model.Clone();
        foreach (var tensor in ExternalTensors(copy))
        {
            var location = tensor.ExternalData.FirstOrDefault(e => e.Key == "location")
                ?? throw new OnnxModelException($"External tensor '{tensor.Name}' has no 'location' entry.");
            var file = Path.GetFullPath(Path.Combine(from, location.Value));
            var relative = Path.GetRelativePath(to, file);
            if (Path.IsPathRooted(relative) || relative == ".." ||
                relative.StartsWith(".." + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            {
                throw new OnnxModelException(
                    $"Tensor '{tensor.Name}' keeps its data in '{location.Value}', which would lie outside the output's folder " +
                    $"('{to}'); ONNX Runtime does not follow such paths. Write the output into '{from}' or a folder above the data file.");
            }

            location.Value = relative.Replace(Path.DirectorySeparatorChar, '/');
        }

        return copy;
    }

    /// <summary>Every tensor in the model (graphs, subgraphs, functions) whose data lies in a side file.</summary>
    internal static IEnumerable<TensorProto> ExternalTensors(ModelProto model) =>
        AllTensors(model).Where(t => t.DataLocation == TensorProto.Types.DataLocation.External);

    private static IEnumerable<TensorProto> AllTensors(ModelProto model)
    {
        var graphs = new List<GraphProto>();
        if (model.Graph is not null)
        {
            graphs.Add(model.Graph);
        }

        foreach (var training in model.TrainingInfo)
        {
            if (training.Initialization is not null)
            {
                graphs.Add(training.Initialization);
            }

            if (training.Algorithm is not null)
            {
                graphs.Add(training.Algorithm);
            }
        }

        foreach (var graph in graphs)
        {
            foreach (var tensor in TensorsIn(graph))
            {
                yield return tensor;
            }
        }

        foreach (var function in model.Functions)
        {
            foreach (var tensor in function.Node.SelectMany(TensorsIn))
            {
                yield return tensor;
            }
        }
    }

    private static IEnumerable<TensorProto> TensorsIn(GraphProto graph)
    {
        foreach (var tensor in graph.Initializer)
        {
            yield return tensor;
        }

        foreach (var sparse in graph.SparseInitializer)
        {
            foreach (var tensor in TensorsIn(sparse))
            {
                yield return tensor;
            }
        }

        foreach (var tensor in graph.Node.SelectMany(TensorsIn))
        {
            yield return tensor;
        }
    }

    private static IEnumerable<TensorProto> TensorsIn(NodeProto node)
    {
        foreach (var attribute in node.Attribute)
        {
            if (attribute.T is not null)
            {
                yield return attribute.T;
            }

            foreach (var tensor in attribute.Tensors)
            {
                yield return tensor;
            }

            if (attribute.SparseTensor is not null)
            {
                foreach (var tensor in TensorsIn(attribute.SparseTensor))
                {
                    yield return tensor;
                }
            }

            foreach (var tensor in attribute.SparseTensors.SelectMany(TensorsIn))
            {
                yield return tensor;
            }

            var subgraphs = attribute.G is null ? attribute.Graphs : attribute.Graphs.Append(attribute.G);
            foreach (var tensor in subgraphs.SelectMany(TensorsIn))
            {
                yield return tensor;
            }
        }
    }

    private static IEnumerable<TensorProto> TensorsIn(SparseTensorProto sparse)
    {
        if (sparse.Values is not null)
        {
            yield return sparse.Values;
        }

        if (sparse.Indices is not null)
        {
            yield return sparse.Indices;
        }
    }
}

/// <summary>A model file or model that cannot be read, rewritten or written safely; the message says why.</summary>
public sealed class OnnxModelException : Exception
{
    /// <summary>Creates the exception.</summary>
    public OnnxModelException()
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    public OnnxModelException(string message) : base(message)
    {
    }

    /// <summary>Creates the exception with a message and its cause.</summary>
    public OnnxModelException(string message, Exception innerException) : base(message, innerException)
    {
    }
}
