using Microsoft.ML.OnnxRuntime.Tensors;
using OrtFlash.Verification;

namespace OrtFlash.Tests.Managed.Verification;

[TestFixture]
public sealed class ComparisonToleranceTests
{
    [Test]
    public void AllowedIsAbsoluteTimesMagnitudePlusRelativeTimesExpected()
    {
        var tolerance = new ComparisonTolerance(Relative: 1e-4, Absolute: 1e-3);
        Assert.That(tolerance.Allowed(expected: -2.0, magnitude: 10.0), Is.EqualTo(1e-3 * 10 + 1e-4 * 2).Within(1e-15));
    }

    [TestCase(TensorElementType.Float, 1e-4)]
    [TestCase(TensorElementType.Double, 1e-4)]
    [TestCase(TensorElementType.Float16, 1e-2)]
    [TestCase(TensorElementType.BFloat16, 5e-2)]
    [TestCase(TensorElementType.Int64, 0.0)]
    [TestCase(TensorElementType.Bool, 0.0)]
    public void DefaultsFollowTheOutputType(TensorElementType type, double expected)
    {
        var tolerance = ComparisonTolerance.For(type);
        Assert.That((tolerance.Relative, tolerance.Absolute), Is.EqualTo((expected, expected)));
    }

    [Test]
    public void OverridesReplaceFloatTolerancesButIntegersStayExact()
    {
        var options = new ComparisonOptions { RelativeTolerance = 0.1 };
        Assert.Multiple(() =>
        {
            Assert.That(options.ToleranceFor(TensorElementType.Float16), Is.EqualTo(new ComparisonTolerance(0.1, 1e-2)));
            Assert.That(options.ToleranceFor(TensorElementType.Int64), Is.EqualTo(ComparisonTolerance.Exact));
        });
    }
}
