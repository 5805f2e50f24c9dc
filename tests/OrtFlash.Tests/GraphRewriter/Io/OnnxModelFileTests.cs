using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using OrtFlash.GraphRewriter;
using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Io;
using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.GraphRewriter.Report;
using OrtFlash.Tests.Rewriter.Support;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.Tests.Rewriter.Io;

public class OnnxModelFileTests
{
    private string _folder = null!;

    [SetUp]
    public void CreateFolder() => _folder = Directory.CreateTempSubdirectory("ortflash-io-").FullName;

    [TearDown]
    public void DeleteFolder() => Directory.Delete(_folder, recursive: true);

    private static ModelProto Attention() => AttentionModels.Fusable().First().Build();

    /// <summary>Appends field <paramref name="number"/> (a varint) to a serialized message.</summary>
    private static byte[] WithUnknownVarint(byte[] message, int number, ulong value)
    {
        using var stream = new MemoryStream();
        stream.Write(message);
        var output = new CodedOutputStream(stream);
        output.WriteTag(number, WireFormat.WireType.Varint);
        output.WriteUInt64(value);
        output.Flush();
        return stream.ToArray();
    }

    [Test]
    public void Unknown_fields_in_model_graph_and_nodes_survive_a_rewrite()
    {
        var model = Attention();
        var graph = GraphProto.Parser.ParseFrom(WithUnknownVarint(model.Graph.ToByteArray(), 900, 7));
        var keptNode = graph.Node.First(n => n.OpType == "Unsqueeze");
        var index = graph.Node.IndexOf(keptNode);
        graph.Node[index] = NodeProto.Parser.ParseFrom(WithUnknownVarint(keptNode.ToByteArray(), 901, 8));
        model.Graph = graph;
        var bytes = WithUnknownVarint(model.ToByteArray(), 902, 9);
        var input = Path.Combine(_folder, "in.onnx");
        File.WriteAllBytes(input, bytes);

        var report = AttentionFuser.RewriteFile(input, Path.Combine(_folder, "out.onnx"));

        Assert.That(report.Fused, Is.EqualTo(1));
        var written = File.ReadAllBytes(Path.Combine(_folder, "out.onnx"));
        var reread = ModelProto.Parser.ParseFrom(written);
        var node = reread.Graph.Node.Single(n => n.OpType == "Unsqueeze");
        Assert.That(reread.ToByteArray().AsSpan().EndsWith(WithUnknownVarint([], 902, 9)), "model-level unknown field");
        Assert.That(reread.Graph.ToByteArray().AsSpan().EndsWith(WithUnknownVarint([], 900, 7)), "graph-level unknown field");
        Assert.That(node.ToByteArray().AsSpan().EndsWith(WithUnknownVarint([], 901, 8)), "node-level unknown field");
    }

    [Test]
    public void Metadata_doc_strings_opsets_functions_and_surviving_value_info_are_kept()
    {
        var model = Attention();
        model.DocString = "model doc";
        model.ProducerVersion = "1.2.3";
        model.MetadataProps.Add(new StringStringEntryProto { Key = "author", Value = "tests" });
        model.Graph.DocString = "graph doc";
        model.Graph.Input[0].DocString = "query doc";
        model.Graph.ValueInfo.Add(ModelBuilder.ValueInfo(model.Graph.Node.First(n => n.OpType == "Unsqueeze").Output[0], DataType.Float, ["B", 1, 1, "T"]));
        var softmaxOutput = model.Graph.Node.First(n => n.OpType == "Softmax").Output[0];
        model.Graph.ValueInfo.Add(ModelBuilder.ValueInfo(softmaxOutput, DataType.Float, null));
        model.Functions.Add(new FunctionProto { Name = "Helper", Domain = "custom", Input = { "x" }, Output = { "x" } });

        AttentionFuser.Rewrite(model);

        Assert.That(model.DocString, Is.EqualTo("model doc"));
        Assert.That(model.ProducerVersion, Is.EqualTo("1.2.3"));
        Assert.That(model.MetadataProps.Single().Value, Is.EqualTo("tests"));
        Assert.That(model.Graph.DocString, Is.EqualTo("graph doc"));
        Assert.That(model.Graph.Input[0].DocString, Is.EqualTo("query doc"));
        Assert.That(model.Functions.Single().Name, Is.EqualTo("Helper"));
        Assert.That(model.OpsetImport.Select(o => o.Domain), Is.EquivalentTo(new[] { "", "com.ortflash" }));
        Assert.That(model.Graph.ValueInfo, Has.Count.EqualTo(1), "value_info of the removed Softmax output goes, the other stays");
        Assert.That(model.Graph.ValueInfo.Select(v => v.Name), Does.Not.Contain(softmaxOutput));
    }

    private ModelProto ModelWithExternalWeight(string dataFile)
    {
        var b = new ModelBuilder();
        var x = b.Input("x", DataType.Float, 2, 4);
        var weight = new TensorProto { Name = "w", DataType = (int)DataType.Float, DataLocation = TensorProto.Types.DataLocation.External, Dims = { 2, 4 } };
        weight.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = dataFile });
        weight.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = "0" });
        weight.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = "32" });
        b.Graph.Initializer.Add(weight);
        b.Rename(b.Node("Add", [x, "w"]), "y");
        b.Output("y", DataType.Float, 2, 4);
        return b.Model;
    }

    private static float[] Weights => [1, 2, 3, 4, 5, 6, 7, 8];

    private void WriteWeights(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, Weights.SelectMany(BitConverter.GetBytes).ToArray());
    }

    private static float[] RunFromFile(string modelPath)
    {
        using var session = new InferenceSession(modelPath);
        using var input = OrtValue.CreateTensorValueFromMemory(new float[8], [2, 4]);
        using var runOptions = new RunOptions();
        using var results = session.Run(runOptions, ["x"], [input], ["y"]);
        return results[0].GetTensorDataAsSpan<float>().ToArray();
    }

    [Test]
    public void External_data_written_next_to_the_input_keeps_its_location_and_is_never_read()
    {
        var input = Path.Combine(_folder, "model.onnx");
        File.WriteAllBytes(input, ModelWithExternalWeight("weights.bin").ToByteArray());

        AttentionFuser.RewriteFile(input, Path.Combine(_folder, "rewritten.onnx"));

        var written = OnnxModelFile.Read(Path.Combine(_folder, "rewritten.onnx"));
        Assert.That(written.Graph.Initializer.Single().ExternalData.Single(e => e.Key == "location").Value, Is.EqualTo("weights.bin"));
        Assert.That(File.Exists(Path.Combine(_folder, "weights.bin")), Is.False, "the side file does not even exist: it was never needed");
    }

    [Test]
    public void External_data_location_is_rewritten_relative_to_an_output_in_a_parent_folder()
    {
        var inner = Path.Combine(_folder, "inner");
        Directory.CreateDirectory(inner);
        WriteWeights(Path.Combine(inner, "data", "weights.bin"));
        var input = Path.Combine(inner, "model.onnx");
        File.WriteAllBytes(input, ModelWithExternalWeight("data/weights.bin").ToByteArray());
        var output = Path.Combine(_folder, "model.onnx");

        AttentionFuser.RewriteFile(input, output);

        var written = OnnxModelFile.Read(output);
        Assert.That(written.Graph.Initializer.Single().ExternalData.Single(e => e.Key == "location").Value, Is.EqualTo("inner/data/weights.bin"));
        Assert.That(RunFromFile(output), Is.EqualTo(Weights), "ONNX Runtime finds the weights from the output's folder");
    }

    [Test]
    public void Output_where_the_side_file_would_be_unreachable_is_refused_and_nothing_is_written()
    {
        var inner = Path.Combine(_folder, "inner");
        Directory.CreateDirectory(inner);
        var input = Path.Combine(inner, "model.onnx");
        File.WriteAllBytes(input, ModelWithExternalWeight("weights.bin").ToByteArray());
        var sibling = Path.Combine(_folder, "sibling");
        Directory.CreateDirectory(sibling);

        var error = Assert.Throws<OnnxModelException>(() => AttentionFuser.RewriteFile(input, Path.Combine(sibling, "model.onnx")));

        Assert.That(error.Message, Does.Contain("outside the output's folder"));
        Assert.That(Directory.GetFileSystemEntries(sibling), Is.Empty);
    }

    private const long TableRows = 1L << 24;
    private const long TableBytes = TableRows * AttentionModels.Heads * AttentionModels.HeadDim * sizeof(float); // 1 GiB
    private static readonly string[] Tables = ["wq", "wk", "wv"];

    /// <summary>
    /// Attention over three 1 GiB embedding tables (3 GiB in all, over protobuf's 2 GB limit) stored
    /// one after another in <paramref name="dataFile"/>: Q, K and V are Gather → head split.
    /// </summary>
    private static ModelProto AttentionOverExternalTables(string dataFile)
    {
        var b = new ModelBuilder();
        var ids = b.Input("ids", DataType.Int64, "B", "S");
        string Project(int index)
        {
            var table = new TensorProto
            {
                Name = Tables[index],
                DataType = (int)DataType.Float,
                DataLocation = TensorProto.Types.DataLocation.External,
                Dims = { TableRows, AttentionModels.Heads * AttentionModels.HeadDim },
            };
            table.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = dataFile });
            table.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = (index * TableBytes).ToString(System.Globalization.CultureInfo.InvariantCulture) });
            table.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = TableBytes.ToString(System.Globalization.CultureInfo.InvariantCulture) });
            b.Graph.Initializer.Add(table);
            var split = b.Node("Reshape", [b.Node("Gather", [table.Name, ids]), b.Ints(0, 0, AttentionModels.Heads, AttentionModels.HeadDim)]);
            return b.Node("Transpose", [split], ModelBuilder.Ints("perm", 0, 2, 1, 3));
        }

        var q = Project(0);
        var k = Project(1);
        var v = Project(2);
        var scores = b.Node("MatMul", [q, b.Node("Transpose", [k], ModelBuilder.Ints("perm", 0, 1, 3, 2))]);
        var scaled = b.Node("Div", [scores, b.Scalar(MathF.Sqrt(AttentionModels.HeadDim))]);
        b.Rename(b.Node("MatMul", [b.Node("Softmax", [scaled], ModelBuilder.Int("axis", -1)), v]), "out");
        b.Output("out");
        return b.Model;
    }

    private static string Entry(TensorProto tensor, string key) => tensor.ExternalData.Single(e => e.Key == key).Value;

    private static void AssertExternalTablesKept(ModelProto written, string location)
    {
        var tables = written.Graph.Initializer.Where(t => t.DataLocation == TensorProto.Types.DataLocation.External).OrderBy(t => t.Name).ToList();
        Assert.That(tables.Select(t => t.Name), Is.EquivalentTo(Tables));
        Assert.That(tables.Select(t => Entry(t, "location")), Is.All.EqualTo(location));
        Assert.That(tables.Select(t => t.RawData.Length), Is.All.Zero, "no weight bytes were pulled into the model");
        var byName = tables.ToDictionary(t => t.Name);
        for (var i = 0; i < Tables.Length; i++)
        {
            Assert.That(long.Parse(Entry(byName[Tables[i]], "offset"), System.Globalization.CultureInfo.InvariantCulture), Is.EqualTo(i * TableBytes));
            Assert.That(long.Parse(Entry(byName[Tables[i]], "length"), System.Globalization.CultureInfo.InvariantCulture), Is.EqualTo(TableBytes));
        }

        Assert.That(tables.Sum(t => long.Parse(Entry(t, "length"), System.Globalization.CultureInfo.InvariantCulture)), Is.GreaterThan((long)int.MaxValue));
    }

    [Test]
    public void Attention_over_more_than_2_GB_of_external_weights_that_do_not_exist_is_fused_and_written_small()
    {
        var input = Path.Combine(_folder, "model.onnx");
        File.WriteAllBytes(input, AttentionOverExternalTables("weights.bin").ToByteArray());
        var output = Path.Combine(_folder, "fused.onnx");

        var report = AttentionFuser.RewriteFile(input, output);

        Assert.That(report.Fused, Is.EqualTo(1), () => report.ToTable());
        var written = OnnxModelFile.Read(output);
        Assert.That(written.Graph.Node.Select(n => n.OpType), Does.Contain("FlashAttention").And.No.EqualTo("Softmax"));
        AssertExternalTablesKept(written, "weights.bin");
        Assert.That(new FileInfo(output).Length, Is.LessThan(64 * 1024), "the written model holds references, not weights");
        Assert.That(File.Exists(Path.Combine(_folder, "weights.bin")), Is.False);
    }

    [Test]
    public void Attention_over_a_3_GiB_sparse_side_file_is_fused_without_opening_it_and_re_pointed_from_the_output_folder()
    {
        var inner = Path.Combine(_folder, "inner");
        Directory.CreateDirectory(Path.Combine(inner, "data"));
        var dataPath = Path.Combine(inner, "data", "weights.bin");
        var input = Path.Combine(inner, "model.onnx");
        File.WriteAllBytes(input, AttentionOverExternalTables("data/weights.bin").ToByteArray());
        var output = Path.Combine(_folder, "fused.onnx");
        FusionReport report;
        // Sparse: SetLength allocates nothing. Held open with FileShare.None so that any attempt by the
        // rewriter to open it (for reading or writing) fails with an IOException.
        using (var data = new FileStream(dataPath, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None))
        {
            data.SetLength(Tables.Length * TableBytes);
            Assert.Throws<IOException>(() => File.OpenRead(dataPath).Dispose(), "the lock that catches a read is in force");
            report = AttentionFuser.RewriteFile(input, output);
        }

        Assert.That(report.Fused, Is.EqualTo(1), () => report.ToTable());
        var written = OnnxModelFile.Read(output);
        AssertExternalTablesKept(written, "inner/data/weights.bin");
        Assert.That(Path.GetFullPath(Path.Combine(_folder, "inner/data/weights.bin")), Is.EqualTo(Path.GetFullPath(dataPath)),
            "the location resolves from the output's folder to the same side file");
        Assert.That(new FileInfo(output).Length, Is.LessThan(64 * 1024));
        Assert.That(new FileInfo(dataPath).Length, Is.EqualTo(Tables.Length * TableBytes), "the side file is left as it was");
        Assert.That(OnnxModelFile.Read(input).Graph.Initializer.Where(t => t.ExternalData.Count > 0).Select(t => Entry(t, "location")), Is.All.EqualTo("data/weights.bin"),
            "the input model is not modified");
    }

    [Test]
    public void The_input_file_is_never_overwritten_unless_asked()
    {
        var input = Path.Combine(_folder, "model.onnx");
        var bytes = Attention().ToByteArray();
        File.WriteAllBytes(input, bytes);

        Assert.Throws<OnnxModelException>(() => AttentionFuser.RewriteFile(input, input));
        Assert.That(File.ReadAllBytes(input), Is.EqualTo(bytes));

        var report = AttentionFuser.RewriteFile(input, input, overwriteInput: true);
        Assert.That(report.Fused, Is.EqualTo(1));
        Assert.That(OnnxModelFile.Read(input).Graph.Node.Select(n => n.OpType), Does.Contain("FlashAttention"));
        Assert.That(Directory.GetFiles(_folder), Has.Length.EqualTo(1), "no temporary file is left behind");
    }

    [Test]
    public void A_truncated_file_is_rejected_with_a_clear_error_and_nothing_is_written()
    {
        var input = Path.Combine(_folder, "truncated.onnx");
        var bytes = Attention().ToByteArray();
        File.WriteAllBytes(input, bytes[..(bytes.Length / 2)]);
        var output = Path.Combine(_folder, "out.onnx");

        var error = Assert.Throws<OnnxModelException>(() => AttentionFuser.RewriteFile(input, output));

        Assert.That(error.Message, Does.Contain("truncated or corrupt").Or.Contain("not an ONNX model"));
        Assert.That(File.Exists(output), Is.False);
    }

    [Test]
    public void A_file_that_is_not_ONNX_is_rejected()
    {
        var input = Path.Combine(_folder, "notes.onnx");
        File.WriteAllText(input, "these are not the weights you are looking for");

        var error = Assert.Throws<OnnxModelException>(() => OnnxModelFile.Read(input));

        Assert.That(error.Message, Does.Contain("notes.onnx"));
    }

    [Test]
    public void A_missing_file_is_rejected()
    {
        var error = Assert.Throws<OnnxModelException>(() => OnnxModelFile.Read(Path.Combine(_folder, "absent.onnx")));
        Assert.That(error.Message, Does.Contain("does not exist"));
    }

    [Test]
    public void A_graph_with_a_cycle_is_rejected()
    {
        var b = new ModelBuilder();
        var x = b.Input("x", DataType.Float, 2);
        b.Graph.Node.Add(new NodeProto { OpType = "Add", Name = "first", Input = { x, "second_out" }, Output = { "first_out" } });
        b.Graph.Node.Add(new NodeProto { OpType = "Relu", Name = "second", Input = { "first_out" }, Output = { "second_out" } });
        b.Output("first_out");

        var error = Assert.Throws<OnnxModelException>(() => AttentionFuser.Rewrite(b.Model));

        Assert.That(error.Message, Does.Contain("cycle").And.Contain("'first'"));
    }

    [Test]
    public void A_node_reading_an_undefined_value_is_rejected()
    {
        var b = new ModelBuilder();
        b.Input("x", DataType.Float, 2);
        b.Graph.Node.Add(new NodeProto { OpType = "Relu", Name = "dangling", Input = { "nowhere" }, Output = { "y" } });
        b.Output("y");

        var error = Assert.Throws<OnnxModelException>(() => AttentionFuser.Rewrite(b.Model));

        Assert.That(error.Message, Does.Contain("'nowhere'").And.Contain("dangling"));
    }

    [Test]
    public void Nodes_out_of_topological_order_are_sorted_and_the_model_still_runs()
    {
        var model = Attention();
        var nodes = model.Graph.Node.Reverse().ToList();
        model.Graph.Node.Clear();
        model.Graph.Node.AddRange(nodes);

        var report = AttentionFuser.Rewrite(model);

        Assert.That(report.Fused, Is.EqualTo(1));
        var graph = OnnxModel.Load(model).Main;
        var seen = new HashSet<string>(model.Graph.Input.Select(i => i.Name).Concat(model.Graph.Initializer.Select(i => i.Name)));
        foreach (var node in model.Graph.Node)
        {
            Assert.That(node.Input.Where(i => i.Length > 0), Is.SubsetOf(seen), $"{node.Name} reads a value defined later");
            seen.UnionWith(node.Output);
        }

        Assert.That(graph.Nodes, Has.Count.EqualTo(model.Graph.Node.Count));
    }
}
