using OrtFlash.GraphRewriter.Graph;
using OrtFlash.GraphRewriter.Io;
using OrtFlash.GraphRewriter.Onnx;
using OrtFlash.Tests.Rewriter.Support;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;
using static OrtFlash.Tests.Rewriter.Support.ModelBuilder;

namespace OrtFlash.Tests.Rewriter.Graph;

public class OnnxGraphTests
{
    [Test]
    public void Values_know_their_producer_and_every_consumer_including_subgraph_readers()
    {
        var b = new ModelBuilder();
        var x = b.Input("x", DataType.Float, 2);
        var condition = b.Input("c", DataType.Bool);
        var doubled = b.Node("Add", [x, x]);
        var branch = new ModelBuilder();
        branch.Rename(branch.Node("Neg", [doubled]), "negated");
        branch.Output("negated");
        var other = new ModelBuilder();
        other.Rename(other.Node("Identity", [doubled]), "same");
        other.Output("same");
        b.Rename(b.Node("If", [condition], GraphAttribute("then_branch", branch.Graph), GraphAttribute("else_branch", other.Graph)), "y");
        b.Output("y");

        var model = OnnxModel.Load(b.Model);
        var value = model.Main.Resolve(doubled)!;

        Assert.That(value.Producer!.OpType, Is.EqualTo("Add"));
        Assert.That(model.Main.Resolve(x)!.Consumers, Has.Count.EqualTo(2), "Add reads x twice");
        Assert.That(value.Consumers.Select(n => n.OpType), Is.EquivalentTo(new[] { "Neg", "Identity" }));
        Assert.That(value.Consumers.Select(n => n.Graph), Has.None.EqualTo(model.Main));
        Assert.That(model.Graphs.Count(), Is.EqualTo(3));
    }

    [Test]
    public void Removing_a_node_removes_what_only_it_used_and_nothing_else()
    {
        var b = new ModelBuilder();
        var x = b.Input("x", DataType.Float, 2);
        var weight = b.Floats([2], [1, 2]);
        var shared = b.Node("Relu", [x]);
        var only = b.Node("Mul", [b.Node("Neg", [shared]), weight]);
        var one = b.Scalar(1);
        b.Rename(b.Node("Add", [shared, one]), "kept");
        b.Output("kept");
        var model = OnnxModel.Load(b.Model);
        var mul = model.Main.Resolve(only)!.Producer!;

        model.Main.RemoveDead(mul);
        model.ToProto();

        Assert.That(b.Model.Graph.Node.Select(n => n.OpType), Is.EqualTo(new[] { "Relu", "Add" }));
        Assert.That(b.Model.Graph.Initializer.Select(i => i.Name).ToList(), Is.EqualTo(new[] { one }), $"the Mul's weight '{weight}' went, the Add's constant stayed");
    }

    [Test]
    public void Inserted_nodes_get_names_unique_across_the_model()
    {
        var b = new ModelBuilder();
        var x = b.Input("x", DataType.Float, 2);
        b.Rename(b.Node("Relu", [x]), "y");
        b.Output("y");
        b.Graph.Node[0].Name = "Helper";
        var model = OnnxModel.Load(b.Model);
        var relu = model.Main.Nodes[0];

        var first = model.Main.InsertNode(relu, "Neg", "", [model.Main.Resolve(x)], ["Helper_out"], "Helper");
        var second = model.Main.InsertNode(relu, "Neg", "", [model.Main.Resolve(x)], ["Helper_out2"], "Helper");

        Assert.That(new[] { relu.Name, first.Name, second.Name }, Is.Unique);
        Assert.That(model.Main.Nodes.Take(2), Is.EqualTo(new[] { first, second }), "inserted before the anchor, in order");
    }

    [Test]
    public void A_value_defined_twice_is_rejected()
    {
        var b = new ModelBuilder();
        var x = b.Input("x", DataType.Float, 2);
        b.Graph.Node.Add(new NodeProto { OpType = "Relu", Input = { x }, Output = { "y" } });
        b.Graph.Node.Add(new NodeProto { OpType = "Neg", Input = { x }, Output = { "y" } });
        b.Output("y");

        var error = Assert.Throws<OnnxModelException>(() => OnnxModel.Load(b.Model));

        Assert.That(error.Message, Does.Contain("'y' is defined twice"));
    }
}
