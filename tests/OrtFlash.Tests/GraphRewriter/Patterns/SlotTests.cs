using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Patterns;
using OrtFlash.Tests.Rewriter.Support;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.Tests.Rewriter.Patterns;

public class SlotTests
{
    private enum Shape
    {
        Negated,
        Plain,
    }

    private sealed record Found(Shape Tag, Value Source);

    [Test]
    public void The_first_matching_alternative_wins_and_says_which_it_was()
    {
        var b = new ModelBuilder();
        var x = b.Input("x", DataType.Float, 2);
        var negated = b.Node("Neg", [x]);
        var model = OnnxModel.Load(b.Model);
        var slot = new Slot<Found>("operand",
        [
            new("Neg(x)", v => Ops.Producer(v, "Neg") is { } neg ? new Found(Shape.Negated, neg.Input(0)!) : null),
            new("anything", v => new Found(Shape.Plain, v)),
        ]);

        var throughNeg = slot.Match(model.Main.Resolve(negated)!);
        var plain = slot.Match(model.Main.Resolve(x)!);

        Assert.That(throughNeg, Is.EqualTo(new Found(Shape.Negated, model.Main.Resolve(x)!)));
        Assert.That(plain!.Tag, Is.EqualTo(Shape.Plain));
    }

    [Test]
    public void WithScalar_finds_the_constant_operand_on_either_side_only_where_allowed()
    {
        var b = new ModelBuilder();
        var x = b.Input("x", DataType.Float, 2, 3);
        var mulLeft = b.Node("Mul", [b.Scalar(0.5f), x]);
        var divRight = b.Node("Div", [x, b.Scalar(4)]);
        var divLeft = b.Node("Div", [b.Scalar(4), x]);
        var model = OnnxModel.Load(b.Model);
        var analysis = new GraphAnalysis(model);
        Node Producer(string name) => model.Main.Resolve(name)!.Producer!;

        Assert.That(Ops.WithScalar(Producer(mulLeft), analysis, 1, 0)?.Constant, Is.EqualTo(0.5));
        Assert.That(Ops.WithScalar(Producer(divRight), analysis, 1)?.Constant, Is.EqualTo(4));
        Assert.That(Ops.WithScalar(Producer(divLeft), analysis, 1), Is.Null, "4 / x is not a scale of x");
    }

    [Test]
    public void WithScalar_rejects_a_one_element_constant_that_would_broadcast_the_operand_up()
    {
        var b = new ModelBuilder();
        var x = b.Input("x", DataType.Float, 2, 3);
        var scaled = b.Node("Mul", [x, b.Floats([1, 1, 1], [2])]);
        var model = OnnxModel.Load(b.Model);

        Assert.That(Ops.WithScalar(model.Main.Resolve(scaled)!.Producer!, new GraphAnalysis(model), 1, 0), Is.Null);
    }
}
