using OrtFlash.GraphRewriter.Graph;

namespace OrtFlash.Tests.Rewriter.Graph;

public class EinsumEquationTests
{
    [Test]
    public void Explicit_equations_give_each_operand_and_the_output_their_letters()
    {
        var equation = EinsumEquation.Parse(" aecd, abcd -> acbe ")!;

        Assert.That(equation.Operands, Is.EqualTo(new[] { "aecd", "abcd" }));
        Assert.That(equation.Output, Is.EqualTo("acbe"));
    }

    [Test]
    public void Without_an_arrow_the_output_is_the_letters_used_once_in_order()
    {
        Assert.That(EinsumEquation.Parse("ij,jk")!.Output, Is.EqualTo("ik"));
    }

    [TestCase("...ij,...jk->...ik")]
    [TestCase("ii,ij->ij")]
    [TestCase("ij,jk->iz")]
    [TestCase("i1,jk->ik")]
    public void Ellipses_diagonals_and_unknown_output_letters_are_not_parsed(string text)
    {
        Assert.That(EinsumEquation.Parse(text), Is.Null);
    }

    [Test]
    public void The_output_shape_takes_each_letters_size_from_the_operands()
    {
        var equation = EinsumEquation.Parse("aecd,abcd->acbe")!;

        var shape = equation.OutputShape([[Dim.Of(2), Dim.Named("T"), Dim.Of(4), Dim.Of(8)], [Dim.Of(2), Dim.Named("S"), Dim.Of(4), Dim.Of(8)]]);

        Assert.That(shape!.Select(d => d.ToString()), Is.EqualTo(new[] { "2", "4", "S", "T" }));
    }

    [Test]
    public void A_permutation_brings_labelled_axes_into_the_requested_order()
    {
        Assert.That(EinsumEquation.Permutation("abcd", "acbd"), Is.EqualTo(new long[] { 0, 2, 1, 3 }));
        Assert.That(EinsumEquation.Permutation("aecd", "aced"), Is.EqualTo(new long[] { 0, 2, 1, 3 }));
    }
}
