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
    public void Ellipses_without_ranks_diagonals_and_unknown_output_letters_are_not_parsed(string text)
    {
        Assert.That(EinsumEquation.Parse(text), Is.Null);
    }

    [TestCase("...qd,...kd->...qk", 4, 4, "abqd", "abkd", "abqk")]
    [TestCase("b...qd,b...kd->b...qk", 4, 4, "baqd", "bakd", "baqk")]
    [TestCase("...qhd,...khd->...hqk", 4, 4, "aqhd", "akhd", "ahqk")]
    [TestCase("...qd,kd->...qk", 3, 2, "aqd", "kd", "aqk")]
    [TestCase("...qd,...kd", 4, 3, "abqd", "bkd", "abkq")]
    [TestCase("...ij,jk->...ik", 2, 2, "ij", "jk", "ik")]
    public void An_ellipsis_becomes_unused_letters_aligned_on_the_right_for_known_ranks(string text, int first, int second, string a, string b, string output)
    {
        var equation = EinsumEquation.Parse(text, [first, second])!;

        Assert.That(equation.Operands, Is.EqualTo(new[] { a, b }));
        Assert.That(equation.Output, Is.EqualTo(output));
    }

    [TestCase("...qd,...kd->...qk", null, 4)]
    [TestCase("...qd,...kd->...qk", 1, 4)]
    [TestCase("...q...d,kd->qk", 4, 2)]
    [TestCase("..qd,kd->qk", 4, 2)]
    [TestCase("qd,kd->...qk...", 2, 2)]
    public void An_ellipsis_of_unknown_or_impossible_rank_or_malformed_is_not_parsed(string text, int? first, int? second)
    {
        Assert.That(EinsumEquation.Parse(text, [first, second]), Is.Null);
    }

    [Test]
    public void The_operands_holding_an_ellipsis_are_listed()
    {
        Assert.That(EinsumEquation.OperandsWithEllipsis("bhqk,...kd->...qd"), Is.EqualTo(new[] { 1 }));
        Assert.That(EinsumEquation.OperandsWithEllipsis("bhqd,bhkd->bhqk"), Is.Empty);
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
