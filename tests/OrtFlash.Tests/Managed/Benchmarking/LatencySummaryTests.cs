using OrtFlash.Benchmarking;

namespace OrtFlash.Tests.Managed.Benchmarking;

[TestFixture]
public sealed class LatencySummaryTests
{
    [Test]
    public void PercentilesInterpolateBetweenTheNearestRunsWhateverTheirOrder()
    {
        var summary = LatencySummary.Of([10.0, 3, 7, 1, 9, 2, 8, 4, 6, 5]);
        Assert.Multiple(() =>
        {
            Assert.That(summary.Runs, Is.EqualTo(10));
            Assert.That(summary.MedianMs, Is.EqualTo(5.5).Within(1e-12));
            Assert.That(summary.P10Ms, Is.EqualTo(1.9).Within(1e-12));
            Assert.That(summary.P90Ms, Is.EqualTo(9.1).Within(1e-12));
        });
    }

    [Test]
    public void OneRunIsItsOwnMedianAndPercentiles() =>
        Assert.That(LatencySummary.Of([4.25]), Is.EqualTo(new LatencySummary(1, 4.25, 4.25, 4.25)));

    [Test]
    public void NoRunIsRefused() =>
        Assert.Throws<ArgumentException>(() => LatencySummary.Of(Array.Empty<double>()));
}
