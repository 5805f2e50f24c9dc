using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.Tests.Rewriter.Support;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;
using static OrtFlash.Tests.Rewriter.Support.ModelBuilder;

namespace OrtFlash.Tests.Rewriter.Graph;

public class FunctionInlinerTests
{
    private static AttributeProto Reference(string name, string caller, AttributeProto.Types.AttributeType type) =>
        new() { Name = name, RefAttrName = caller, Type = type };

    /// <summary>
    /// local::Shaped(x) → (z, xo, extra): z = If(flag, m, −m) + LeakyRelu(m, alpha = ref slope, default 0.5),
    /// m = x · (ref alpha); xo = Identity(x); extra = Softmax(m, axis = ref axis, never given).
    /// Called twice: alpha 2 with the default slope and every output bound, alpha 3 and slope 0.1 with z only.
    /// </summary>
    private static ModelProto TwoCalls()
    {
        var b = new ModelBuilder();
        b.Model.IrVersion = 10;
        var x = b.Input("x", DataType.Float, 2, 3);
        b.Model.OpsetImport.Add(new OperatorSetIdProto { Domain = "local", Version = 1 });
        var function = new FunctionProto
        {
            Name = "Shaped", Domain = "local", Input = { "x" }, Output = { "z", "xo", "extra" },
            Attribute = { "alpha", "axis" },
            AttributeProto = { Float("slope", 0.5f) },
            OpsetImport = { new OperatorSetIdProto { Domain = "", Version = 17 } },
        };
        void Op(string type, string[] inputs, string output, params AttributeProto[] attributes) =>
            function.Node.Add(new NodeProto { OpType = type, Name = "fn_" + output, Input = { inputs }, Output = { output }, Attribute = { attributes } });
        Op("Constant", [], "alpha", Reference("value_float", "alpha", AttributeProto.Types.AttributeType.Float));
        Op("Mul", ["x", "alpha"], "m");
        Op("LeakyRelu", ["m"], "leaky", Reference("alpha", "slope", AttributeProto.Types.AttributeType.Float));
        Op("Constant", [], "flag", Tensor("value", new ConstantTensor(DataType.Bool, [], [1])));
        GraphProto Branch(string op) => new()
        {
            Name = op, Output = { ValueInfo("branch_" + op, DataType.Float, null) },
            Node = { new NodeProto { OpType = op, Name = "fn_branch_" + op, Input = { "m" }, Output = { "branch_" + op } } },
        };
        Op("If", ["flag"], "branch", GraphAttribute("then_branch", Branch("Identity")), GraphAttribute("else_branch", Branch("Neg")));
        Op("Add", ["branch", "leaky"], "z");
        Op("Identity", ["x"], "xo");
        Op("Softmax", ["m"], "extra", Reference("axis", "axis", AttributeProto.Types.AttributeType.Int));
        b.Model.Functions.Add(function);
        b.Graph.Node.Add(new NodeProto { OpType = "Shaped", Domain = "local", Name = "first", Input = { x }, Output = { "z1", "x1", "extra1" }, Attribute = { Float("alpha", 2) } });
        b.Graph.Node.Add(new NodeProto { OpType = "Shaped", Domain = "local", Name = "second", Input = { "z1" }, Output = { "z2", "", "" }, Attribute = { Float("alpha", 3), Float("slope", 0.1f) } });
        b.Output("z2");
        b.Output("x1");
        b.Output("extra1");
        return b.Model;
    }

    private static IEnumerable<NodeProto> AllNodes(IEnumerable<NodeProto> nodes) =>
        nodes.SelectMany(n => n.Attribute.Where(a => a.G is not null).SelectMany(a => AllNodes(a.G.Node)).Prepend(n));

    [Test]
    public void Inlined_calls_take_their_attributes_or_the_defaults_get_fresh_names_and_compute_what_the_calls_did()
    {
        var original = TwoCalls();
        var model = original.Clone();
        var loaded = OnnxModel.Load(model);
        var calls = FunctionInliner.CallsReadingAttributes(loaded);

        Assert.That(calls.Select(c => c.Node.Name), Is.EqualTo(new[] { "first", "second" }));
        Assert.That(calls.Select(FunctionInliner.Refusal), Is.All.Null);
        var inserted = calls.SelectMany(FunctionInliner.Inline).ToList();
        var removed = FunctionInliner.RemoveUncalled(model, calls.Select(c => c.Function));

        Assert.That(removed, Has.Count.EqualTo(1));
        Assert.That(model.Functions, Is.Empty);
        Parity.AssertWellFormed(model);
        var nodes = AllNodes(model.Graph.Node).ToList();
        Assert.That(nodes.Select(n => n.Name), Is.SupersetOf(inserted));
        Assert.That(nodes.SelectMany(n => n.Attribute), Has.None.Matches<AttributeProto>(a => a.RefAttrName.Length > 0));
        Assert.That(nodes.Where(n => n.OpType == "LeakyRelu").Select(n => n.Attribute.Single().F), Is.EqualTo(new[] { 0.5f, 0.1f }));
        Assert.That(nodes.Where(n => n.OpType == "Softmax").SelectMany(n => n.Attribute), Is.Empty, "an attribute no one gives stays unset");
        Assert.That(nodes.Where(n => n.OpType == "Identity").Select(n => n.Output.Single()), Has.Member("x1"), "outputs take the call's names");
        var input = new Dictionary<string, TestTensor> { ["x"] = TestTensor.Random(new Random(3), [2, 3]) };
        var expected = OrtRunner.Run(original, input);
        var actual = OrtRunner.Run(model, input);
        foreach (var (name, tensor) in expected)
        {
            Parity.AssertClose(tensor, actual[name], 1e-6, name);
        }
    }

    [Test]
    public void A_function_output_its_body_does_not_compute_is_not_inlined()
    {
        var model = TwoCalls();
        model.Functions[0].Output[1] = "x";
        var calls = FunctionInliner.CallsReadingAttributes(OnnxModel.Load(model));

        Assert.That(FunctionInliner.Refusal(calls[0]), Does.Contain("output 'x' is not computed by a node of its body"));
    }

    [Test]
    public void A_function_still_called_somewhere_is_kept()
    {
        var model = TwoCalls();
        var calls = FunctionInliner.CallsReadingAttributes(OnnxModel.Load(model));

        FunctionInliner.Inline(calls[1]);

        Assert.That(FunctionInliner.RemoveUncalled(model, [calls[1].Function]), Is.Empty);
        Assert.That(model.Functions, Has.Count.EqualTo(1));
    }

    [Test]
    public void A_call_passing_on_its_own_callers_attribute_is_not_inlined()
    {
        var model = TwoCalls();
        var outer = new FunctionProto
        {
            Name = "Outer", Domain = "local", Input = { "y" }, Output = { "w" }, Attribute = { "gain" },
            OpsetImport = { new OperatorSetIdProto { Domain = "", Version = 17 }, new OperatorSetIdProto { Domain = "local", Version = 1 } },
            Node = { new NodeProto { OpType = "Shaped", Domain = "local", Input = { "y" }, Output = { "w" }, Attribute = { Reference("alpha", "gain", AttributeProto.Types.AttributeType.Float) } } },
        };
        model.Functions.Add(outer);

        var call = FunctionInliner.CallsReadingAttributes(OnnxModel.Load(model)).Single(c => c.Graph.Function == outer);

        Assert.That(FunctionInliner.Refusal(call), Does.Contain("passes on its own caller's attribute 'gain' as 'alpha'"));
    }
}
