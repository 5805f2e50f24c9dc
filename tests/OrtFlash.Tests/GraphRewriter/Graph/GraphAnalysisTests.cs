using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.Tests.Rewriter.Support;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;
using static OrtFlash.Tests.Rewriter.Support.ModelBuilder;

namespace OrtFlash.Tests.Rewriter.Graph;

public class GraphAnalysisTests
{
    private static (GraphAnalysis Analysis, OnnxGraph Graph) Analyse(ModelBuilder b)
    {
        var model = OnnxModel.Load(b.Model);
        return (new GraphAnalysis(model), model.Main);
    }

    private static Value ValueOf(OnnxGraph graph, string name) => graph.Resolve(name)!;

    [Test]
    public void Every_Constant_attribute_form_folds()
    {
        var b = new ModelBuilder();
        var value = b.Node("Constant", [], Tensor("value", ConstantTensor.Scalar(DataType.Float, 2.5)));
        var valueFloat = b.Node("Constant", [], Float("value_float", 0.125f));
        var valueFloats = b.Node("Constant", [], new AttributeProto { Name = "value_floats", Type = AttributeProto.Types.AttributeType.Floats, Floats = { 1f, 2f } });
        var valueInt = b.Node("Constant", [], Int("value_int", 7));
        var valueInts = b.Node("Constant", [], Ints("value_ints", 3, 4, 5));
        var (analysis, graph) = Analyse(b);

        Assert.That(analysis.ScalarOf(ValueOf(graph, value)), Is.EqualTo(2.5));
        Assert.That(analysis.ScalarOf(ValueOf(graph, valueFloat)), Is.EqualTo(0.125));
        Assert.That(analysis.ConstantOf(ValueOf(graph, valueFloats))!.Data, Is.EqualTo(new[] { 1.0, 2.0 }));
        Assert.That(analysis.ConstantOf(ValueOf(graph, valueInt))!.ElementType, Is.EqualTo(DataType.Int64));
        Assert.That(analysis.ConstantOf(ValueOf(graph, valueInts))!.AsInt64(), Is.EqualTo(new long[] { 3, 4, 5 }));
    }

    [Test]
    public void The_SDPA_scale_chain_folds_from_a_static_head_dim_in_float32()
    {
        var b = new ModelBuilder();
        var q = b.Input("q", DataType.Float, "B", 2, "S", 80);
        var headDim = b.Node("Gather", [b.Node("Shape", [q]), b.Initializer(ConstantTensor.Scalar(DataType.Int64, -1))]);
        var scale = b.Node("Reciprocal", [b.Node("Sqrt", [b.Node("CastLike", [headDim, b.Scalar(0)])])]);
        var root = b.Node("Sqrt", [scale]);
        var (analysis, graph) = Analyse(b);

        Assert.That(analysis.ScalarOf(ValueOf(graph, scale)), Is.EqualTo((double)(1 / MathF.Sqrt(80))));
        Assert.That(analysis.ScalarOf(ValueOf(graph, root)), Is.EqualTo((double)MathF.Sqrt(1 / MathF.Sqrt(80))));
    }

    [Test]
    public void Whisper_style_integer_division_and_Pow_fold()
    {
        var b = new ModelBuilder();
        var x = b.Input("x", DataType.Float, "B", "T", 64);
        var perHead = b.Node("Div", [b.Node("Gather", [b.Node("Shape", [x]), b.Initializer(ConstantTensor.Scalar(DataType.Int64, 2))]), b.Initializer(ConstantTensor.Scalar(DataType.Int64, 3))]);
        var scale = b.Node("Pow", [b.Node("Cast", [perHead], Int("to", (long)DataType.Float)), b.Scalar(-0.25f)]);
        var (analysis, graph) = Analyse(b);

        Assert.That(analysis.ScalarOf(ValueOf(graph, perHead)), Is.EqualTo(21), "64 / 3 truncates like integer Div");
        Assert.That(analysis.ScalarOf(ValueOf(graph, scale)), Is.EqualTo((double)(float)Math.Pow(21, -0.25)));
    }

    [Test]
    public void A_scale_read_from_a_symbolic_dim_does_not_fold()
    {
        var b = new ModelBuilder();
        var q = b.Input("q", DataType.Float, "B", 2, "S", "D");
        var scale = b.Node("Sqrt", [b.Node("Cast", [b.Node("Slice", [b.Node("Shape", [q]), b.Ints(-1), b.Ints(long.MaxValue)])], Int("to", (long)DataType.Float))]);
        var (analysis, graph) = Analyse(b);

        Assert.That(analysis.ScalarOf(ValueOf(graph, scale)), Is.Null);
    }

    [Test]
    public void External_initializers_are_never_decoded()
    {
        var b = new ModelBuilder();
        var tensor = new TensorProto { Name = "w", DataType = (int)DataType.Float, DataLocation = TensorProto.Types.DataLocation.External };
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "absent.bin" });
        b.Graph.Initializer.Add(tensor);
        var (analysis, graph) = Analyse(b);

        Assert.That(analysis.ConstantOf(ValueOf(graph, "w")), Is.Null);
    }

    [Test]
    public void An_initializer_that_is_also_a_graph_input_is_not_a_constant()
    {
        var b = new ModelBuilder();
        var scale = b.Scalar(8);
        b.Graph.Input.Add(ValueInfo(scale, DataType.Float, []));
        var (analysis, graph) = Analyse(b);

        Assert.That(analysis.ScalarOf(ValueOf(graph, scale)), Is.Null, "the caller may override it");
    }

    [Test]
    public void Shapes_propagate_through_head_split_and_transposes_with_symbols()
    {
        var b = new ModelBuilder();
        var x = b.Input("x", DataType.Float, "batch", "sequence", 64);
        var shape = b.Node("Shape", [x]);
        var target = b.Node("Concat", [b.Node("Slice", [shape, b.Ints(0), b.Ints(2)]), b.Ints(2, 32)], Int("axis", 0));
        var heads = b.Node("Transpose", [b.Node("Reshape", [x, target])], Ints("perm", 0, 2, 1, 3));
        var scores = b.Node("MatMul", [heads, b.Node("Transpose", [heads], Ints("perm", 0, 1, 3, 2))]);
        var flat = b.Node("Reshape", [heads, b.Ints(-1, 0, 32)]);
        var (analysis, graph) = Analyse(b);

        Assert.That(analysis.ShapeOf(ValueOf(graph, heads))!.Select(d => d.ToString()), Is.EqualTo(new[] { "batch", "2", "sequence", "32" }));
        Assert.That(analysis.ShapeOf(ValueOf(graph, scores))!.Select(d => d.ToString()), Is.EqualTo(new[] { "batch", "2", "sequence", "sequence" }));
        Assert.That(analysis.ShapeOf(ValueOf(graph, flat))![0].SameAs(Dim.Named("batch")), Is.Null, "batch·sequence is not batch");
        Assert.That(analysis.ShapeOf(ValueOf(graph, flat))!.Select(d => d.ToString()), Is.EqualTo(new[] { "batch·sequence", "2", "32" }), "−1 is the element count over the other dims");
    }

    [Test]
    public void CumSum_keeps_its_input_shape_so_positions_built_from_a_padding_mask_keep_the_batch_and_sequence()
    {
        // OPT: positions = cumsum(attention_mask) * attention_mask − 1, then an embedding lookup added to the tokens'.
        var b = new ModelBuilder();
        var mask = b.Input("attention_mask", DataType.Int64, "batch", "sequence");
        var positions = b.Node("Sub", [b.Node("Mul", [b.Node("CumSum", [mask, b.Initializer(ConstantTensor.Scalar(DataType.Int64, 1))]), mask]),
            b.Initializer(ConstantTensor.Scalar(DataType.Int64, 1))]);
        var embedded = b.Node("Gather", [b.Floats([8, 4], new float[32]), positions]);
        var (analysis, graph) = Analyse(b);

        Assert.That(analysis.ShapeOf(ValueOf(graph, embedded))!.Select(d => d.ToString()), Is.EqualTo(new[] { "batch", "sequence", "4" }));
    }

    [Test]
    public void A_GroupNorm_exported_through_InstanceNormalization_keeps_the_latent_shape_for_the_attention_after_it()
    {
        // torch's GroupNorm (diffusers' Transformer2DModel.norm): Reshape(B, G, −1) → InstanceNormalization → Reshape(Shape(x)).
        var b = new ModelBuilder();
        var sample = b.Input("sample", DataType.Float, "batch", 8, "height", "width");
        var grouped = b.Node("Reshape", [sample, b.Ints(0, 4, -1)]);
        var normalised = b.Node("InstanceNormalization", [grouped, b.Floats([4], [1, 1, 1, 1]), b.Floats([4], [0, 0, 0, 0])]);
        var restored = b.Node("Reshape", [normalised, b.Node("Shape", [sample])]);
        var (analysis, graph) = Analyse(b);

        Assert.That(analysis.ShapeOf(ValueOf(graph, normalised))!.Select(d => d.ToString()), Is.EqualTo(new[] { "batch", "4", "2·height·width" }));
        Assert.That(analysis.ShapeOf(ValueOf(graph, restored))!.Select(d => d.ToString()), Is.EqualTo(new[] { "batch", "8", "height", "width" }));
        Assert.That(analysis.ElementTypeOf(ValueOf(graph, normalised)), Is.EqualTo(DataType.Float));
    }

    [Test]
    public void Unknown_dims_are_equal_to_themselves_through_Shape()
    {
        var b = new ModelBuilder();
        var x = b.Input("x", DataType.Float, "B", 4);
        var y = b.Node("Relu", [b.Node("Gemm", [x, b.Floats([4, 4], new float[16])])]);
        var copy = b.Node("Expand", [b.Scalar(1), b.Node("Shape", [y])]);
        var (analysis, graph) = Analyse(b);

        var original = analysis.ShapeOf(ValueOf(graph, y))!;
        var expanded = analysis.ShapeOf(ValueOf(graph, copy))!;
        Assert.That(original[0].IsKnown, Is.False);
        Assert.That(expanded[0].SameAs(original[0]), Is.True);
        Assert.That(expanded[1].SameAs(original[0]), Is.Null);
    }

    [Test]
    public void Expand_shapes_guarded_by_Where_Equal_minus_one_keep_their_entries()
    {
        var b = new ModelBuilder();
        var x = b.Input("x", DataType.Float, "B", 2, "T", 8);
        var shape = b.Node("Shape", [x]);
        var target = b.Node("Concat", [b.Node("Slice", [shape, b.Ints(0), b.Ints(2)]), b.Ints(3), b.Node("Slice", [shape, b.Ints(2), b.Ints(4)])], Int("axis", 0));
        var guarded = b.Node("Where", [b.Node("Equal", [target, b.Ints(-1)]), b.Ints(1, 1, 1, 1, 1), target]);
        var (analysis, graph) = Analyse(b);

        Assert.That(analysis.ShapeVector(ValueOf(graph, guarded))!.Select(d => d.ToString()), Is.EqualTo(new[] { "B", "2", "3", "T", "8" }));
    }

    [Test]
    public void Dims_named_by_onnx_shape_inference_give_way_to_what_the_producer_proves()
    {
        // Float16 converters keep value_info in which ONNX shape inference named what it could not work out "unk__N".
        var b = new ModelBuilder();
        var x = b.Input("x", DataType.Float16, "B", "S", 4);
        var transposed = b.Node("Transpose", [x], Ints("perm", 1, 0, 2));
        var declared = b.Node("Transpose", [x], Ints("perm", 1, 0, 2));
        b.Graph.ValueInfo.Add(ValueInfo(transposed, DataType.Float16, ["unk__3", "unk__4", 4]));
        b.Graph.ValueInfo.Add(ValueInfo(declared, DataType.Float16, ["S", "batch", "unk__5"]));
        var (analysis, graph) = Analyse(b);

        Assert.Multiple(() =>
        {
            Assert.That(analysis.ShapeOf(ValueOf(graph, transposed))!.Select(d => d.ToString()), Is.EqualTo(new[] { "S", "B", "4" }));
            Assert.That(analysis.ShapeOf(ValueOf(graph, declared))!.Select(d => d.ToString()), Is.EqualTo(new[] { "S", "batch", "4" }),
                "other declared names stay");
        });
    }
}
