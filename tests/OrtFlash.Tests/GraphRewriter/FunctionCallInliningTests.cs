using System.Text.Json;
using Google.Protobuf;
using OrtFlash.GraphRewriter;
using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.GraphRewriter.Report;
using OrtFlash.Tests.Rewriter.Support;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;
using static OrtFlash.Tests.Rewriter.Support.ModelBuilder;

namespace OrtFlash.Tests.Rewriter;

/// <summary>
/// Attention inside a model-local function whose body reads its caller's attributes (scale, Softmax
/// axis, the Trilu of a causal mask): each call whose inlined copy fuses is inlined and fused there.
/// </summary>
public sealed class FunctionCallInliningTests
{
    private const long Heads = AttentionModels.Heads;
    private const long HeadDim = AttentionModels.HeadDim;
    private static readonly float InvSqrtD = 1 / MathF.Sqrt(HeadDim);

    /// <summary>One call of the attention function: its scale, and its Softmax axis when it passes one (the default is −1).</summary>
    private sealed record Call(float Scale, long? Axis = null);

    /// <summary>
    /// softmax(scale·QKᵀ with keys above the diagonal hidden by Where(Trilu(ones, upper), s, −inf), axis)·V
    /// in function local::CausalAttention; scale, upper and axis are caller attributes. Each call
    /// attends its predecessor's output over the same K and V.
    /// </summary>
    private static ModelProto CausalAttentionCalls(long functionOpset, params Call[] calls)
    {
        var b = new ModelBuilder();
        b.Model.IrVersion = 10;
        var x = b.Input("q", DataType.Float, "B", Heads, "S", HeadDim);
        var k = b.Input("k", DataType.Float, "B", Heads, "T", HeadDim);
        var v = b.Input("v", DataType.Float, "B", Heads, "T", HeadDim);
        b.Model.OpsetImport.Add(new OperatorSetIdProto { Domain = "local", Version = 1 });
        var function = new FunctionProto
        {
            Name = "CausalAttention", Domain = "local", Input = { "fq", "fk", "fv" }, Output = { "attended" },
            Attribute = { "scale", "upper" },
            AttributeProto = { Int("axis", -1) },
            OpsetImport = { new OperatorSetIdProto { Domain = "", Version = functionOpset } },
        };
        void Op(string type, string[] inputs, string output, params AttributeProto[] attributes) =>
            function.Node.Add(new NodeProto { OpType = type, Name = "fn_" + output, Input = { inputs }, Output = { output }, Attribute = { attributes } });
        AttributeProto Reference(string name, string caller, AttributeProto.Types.AttributeType type) => new() { Name = name, RefAttrName = caller, Type = type };
        Op("Constant", [], "two", Tensor("value", ConstantTensor.Int64s([2])));
        Op("Constant", [], "three", Tensor("value", ConstantTensor.Int64s([3])));
        Op("Shape", ["fq"], "q_shape");
        Op("Shape", ["fk"], "k_shape");
        Op("Slice", ["q_shape", "two", "three"], "s");
        Op("Slice", ["k_shape", "two", "three"], "t");
        Op("Concat", ["s", "t"], "st", Int("axis", 0));
        Op("ConstantOfShape", ["st"], "ones", Tensor("value", new ConstantTensor(DataType.Int64, [1], [1])));
        Op("Trilu", ["ones"], "triangle", Reference("upper", "upper", AttributeProto.Types.AttributeType.Int));
        Op("Cast", ["triangle"], "keep", Int("to", (long)DataType.Bool));
        Op("Transpose", ["fk"], "kt", Ints("perm", 0, 1, 3, 2));
        Op("MatMul", ["fq", "kt"], "scores");
        Op("Constant", [], "scale", Reference("value_float", "scale", AttributeProto.Types.AttributeType.Float));
        Op("Mul", ["scores", "scale"], "scaled");
        Op("Constant", [], "hidden", Float("value_float", float.NegativeInfinity));
        Op("Where", ["keep", "scaled", "hidden"], "masked");
        Op("Softmax", ["masked"], "probabilities", Reference("axis", "axis", AttributeProto.Types.AttributeType.Int));
        Op("MatMul", ["probabilities", "fv"], "attended");
        b.Model.Functions.Add(function);

        for (var i = 0; i < calls.Length; i++)
        {
            var call = new NodeProto { OpType = "CausalAttention", Domain = "local", Name = $"layer{i}", Input = { x, k, v }, Output = { $"layer{i}_out" } };
            call.Attribute.Add(Float("scale", calls[i].Scale));
            call.Attribute.Add(Int("upper", 0));
            if (calls[i].Axis is { } axis)
            {
                call.Attribute.Add(Int("axis", axis));
            }

            b.Graph.Node.Add(call);
            x = call.Output[0];
        }

        b.Rename(x, "out");
        b.Output("out");
        return b.Model;
    }

    private static Dictionary<string, TestTensor> Inputs(Random r, long s, long t) => new()
    {
        ["q"] = TestTensor.Random(r, [AttentionModels.Batch, Heads, s, HeadDim]),
        ["k"] = TestTensor.Random(r, [AttentionModels.Batch, Heads, t, HeadDim]),
        ["v"] = TestTensor.Random(r, [AttentionModels.Batch, Heads, t, HeadDim]),
    };

    /// <summary>The rewritten model computes what the original does, with the op lowered to standard ops and, when built, with the op library.</summary>
    private static void AssertSameResults(ModelProto original, ModelProto rewritten)
    {
        var lowered = FlashAttentionLowering.Lower(rewritten);
        var random = new Random(11);
        foreach (var (s, t) in AttentionModels.Lengths)
        {
            var inputs = Inputs(random, s, t);
            var expected = OrtRunner.Run(original, inputs)["out"];
            Parity.AssertClose(expected, OrtRunner.Run(lowered, inputs)["out"], 1e-4, $"lowered, S={s}, T={t}");
            if (OrtRunner.OpLibraryPath is not null)
            {
                Parity.AssertClose(expected, OrtRunner.Run(rewritten, inputs, withOpLibrary: true)["out"], 1e-4, $"with the op, S={s}, T={t}");
            }
        }
    }

    [Test]
    public void Each_call_passing_its_own_scale_and_causal_flag_is_inlined_and_fused_and_the_function_removed()
    {
        var original = CausalAttentionCalls(17, new Call(InvSqrtD), new Call(0.5f));
        var model = original.Clone();

        var report = AttentionFuser.Rewrite(model);

        Assert.That(report.Fused, Is.EqualTo(2), () => report.ToTable());
        Assert.That(report.Skipped, Is.Empty, () => report.ToTable());
        Assert.That(report.Inlined.Select(i => (i.Call, i.Graph, i.Function, i.FunctionRemoved)),
            Is.EqualTo(new[] { ("layer0", "main graph", "function 'local::CausalAttention'", true), ("layer1", "main graph", "function 'local::CausalAttention'", true) }));
        Assert.That(model.Functions, Is.Empty, "no call is left");
        Parity.AssertWellFormed(model);
        var fused = model.Graph.Node.Where(n => n.OpType == "FlashAttention").ToList();
        Assert.That(fused.Select(n => n.Attribute.Single(a => a.Name == "scale").F), Is.EqualTo(new[] { InvSqrtD, 0.5f }), "each call's own scale");
        Assert.That(fused.Select(n => n.Attribute.Single(a => a.Name == "causal").I), Is.All.EqualTo(1), "Trilu upper=0 from the callers");
        Assert.That(model.Graph.Node.Select(n => n.OpType), Has.None.EqualTo("Softmax").And.None.EqualTo("CausalAttention"));
        AssertSameResults(original, model);
    }

    [Test]
    public void A_call_whose_inlined_copy_is_refused_stays_a_call_with_the_reason_while_the_other_is_inlined()
    {
        var original = CausalAttentionCalls(17, new Call(InvSqrtD), new Call(InvSqrtD, Axis: 2));
        var model = original.Clone();

        var report = AttentionFuser.Rewrite(model);

        Assert.That(report.Fused, Is.EqualTo(1), () => report.ToTable());
        Assert.That(report.Inlined.Single(), Is.EqualTo(new InlineRecord("main graph", "layer0", "function 'local::CausalAttention'", FunctionRemoved: false)));
        var callReason = report.Skipped.Single(s => s.Node == "layer1");
        Assert.That(callReason.Graph, Is.EqualTo("main graph"));
        Assert.That(callReason.Reason, Does.Contain("is not inlined").And.Contain("normalises over axis 2"));
        Assert.That(report.Skipped.Single(s => s.Node != "layer1").Reason, Does.Contain("reads attribute values from its callers"));
        Assert.That(model.Graph.Node.Single(n => n.OpType == "CausalAttention").Name, Is.EqualTo("layer1"));
        Assert.That(model.Functions.Single().ToByteArray(), Is.EqualTo(original.Functions.Single().ToByteArray()), "the function is left as it was");
        Parity.AssertWellFormed(model);
        AssertSameResults(original, model);
    }

    [Test]
    public void A_call_of_a_function_on_another_opset_version_is_not_inlined_and_the_model_is_left_as_it_was()
    {
        var model = CausalAttentionCalls(14, new Call(InvSqrtD));
        var before = model.ToByteArray();

        var report = AttentionFuser.Rewrite(model);

        Assert.That(report.Fused, Is.Zero);
        Assert.That(report.Inlined, Is.Empty);
        Assert.That(report.Skipped.Single(s => s.Node == "layer0").Reason,
            Does.Contain("is not inlined").And.Contain("the ONNX operator set version 14 and the main graph version 17"));
        Assert.That(report.Skipped.Single(s => s.Node != "layer0").Reason, Does.Contain("reads attribute values from its callers"));
        Assert.That(model.ToByteArray(), Is.EqualTo(before));
    }

    [Test]
    public void A_function_that_takes_no_caller_attributes_is_still_fused_in_place_and_nothing_is_inlined()
    {
        var variant = AttentionModels.Fusable().Single(m => m.Name == "Attention inside a model-local function with declared input types");
        var model = variant.Build();

        var report = AttentionFuser.Rewrite(model);

        Assert.That(report.Fused, Is.EqualTo(1));
        Assert.That(report.Inlined, Is.Empty);
        Assert.That(model.Functions.Single().Node.Select(n => n.OpType), Has.Member("FlashAttention"));
        Assert.That(model.Graph.Node.Single().OpType, Is.EqualTo("SelfAttention"), "the call stays");
    }

    [Test]
    public void The_report_lists_each_inlined_call_in_json_and_in_the_table()
    {
        var report = AttentionFuser.Rewrite(CausalAttentionCalls(17, new Call(InvSqrtD)));

        using var json = JsonDocument.Parse(report.ToJson());
        var inlined = json.RootElement.GetProperty("inlined")[0];

        Assert.That(inlined.GetProperty("call").GetString(), Is.EqualTo("layer0"));
        Assert.That(inlined.GetProperty("function").GetString(), Is.EqualTo("function 'local::CausalAttention'"));
        Assert.That(inlined.GetProperty("functionRemoved").GetBoolean(), Is.True);
        Assert.That(report.ToTable(), Does.Contain("inlined call").And.Contain("layer0").And.Contain("(removed: no calls left)"));
    }
}
