using OrtFlash.GraphRewriter.Graph;
using DataType = OrtFlash.GraphRewriter.Onnx.TensorProto.Types.DataType;

namespace OrtFlash.Tests.Rewriter.Graph;

public class TensorTypesTests
{
    [Test]
    public void Dims_are_equal_when_provable_different_when_provable_and_undecided_otherwise()
    {
        Assert.That(Dim.Of(4).SameAs(Dim.Of(4)), Is.True);
        Assert.That(Dim.Of(4).SameAs(Dim.Of(5)), Is.False);
        Assert.That(Dim.Named("S").SameAs(Dim.Named("S")), Is.True);
        Assert.That(Dim.Named("S").SameAs(Dim.Named("T")), Is.Null);
        Assert.That(Dim.Named("S").SameAs(Dim.Of(4)), Is.Null);
        Assert.That(Dim.Unknown.SameAs(Dim.Unknown), Is.Null);
    }

    [Test]
    public void Symbolic_products_divide_back_exactly()
    {
        var merged = Dim.Multiply(Dim.Multiply(Dim.Named("batch"), Dim.Of(4)), Dim.Named("heads"));

        Assert.That(Dim.Divide(merged, Dim.Multiply(Dim.Named("heads"), Dim.Of(2))).ToString(), Is.EqualTo("2·batch"));
        Assert.That(Dim.Divide(merged, Dim.Named("sequence")), Is.EqualTo(Dim.Unknown));
        Assert.That(Dim.Divide(Dim.Of(12), Dim.Of(5)), Is.EqualTo(Dim.Unknown));
    }

    [Test]
    public void Differences_of_symbols_are_zero_for_the_same_symbol_and_opaque_otherwise()
    {
        Assert.That(Dim.Subtract(Dim.Named("T"), Dim.Named("T")), Is.EqualTo(Dim.Of(0)));
        var difference = Dim.Subtract(Dim.Named("T"), Dim.Named("S"));
        Assert.That(difference.SameAs(Dim.Subtract(Dim.Named("T"), Dim.Named("S"))), Is.True);
        Assert.That(difference.SameAs(Dim.Subtract(Dim.Named("S"), Dim.Named("T"))), Is.Null);
    }

    [Test]
    public void A_cache_length_minus_the_new_length_is_the_past_length_and_never_negative()
    {
        var total = Dim.Add(Dim.Named("past"), Dim.Named("sequence"));

        var past = Dim.Subtract(total, Dim.Named("sequence"));

        Assert.That(past, Is.EqualTo(Dim.Named("past")));
        Assert.That(past.IsNonNegative, Is.True);
        Assert.That(Dim.Subtract(Dim.Named("sequence"), Dim.Named("past")).IsNonNegative, Is.False);
    }

    [Test]
    public void Rounding_follows_the_element_type()
    {
        Assert.That(ElementTypes.Round(0.1, DataType.Float), Is.EqualTo((double)0.1f));
        Assert.That(ElementTypes.Round(float.MinValue, DataType.Float16), Is.EqualTo(double.NegativeInfinity));
        Assert.That(ElementTypes.Round(-65504, DataType.Float16), Is.EqualTo(-65504));
        Assert.That(ElementTypes.Round(float.MinValue, DataType.Bfloat16), Is.EqualTo(double.NegativeInfinity), "fp32 min rounds past bfloat16's largest finite value");
        Assert.That(ElementTypes.Round(1.00390625, DataType.Bfloat16), Is.EqualTo(1.0), "ties round to even");
        Assert.That(ElementTypes.Round(-7.9, DataType.Int64), Is.EqualTo(-7));
    }
}
