using XrayVL.Evaluation;

namespace XrayVL.Tests.Evaluation;

public class BaselinesTests
{
    [Fact]
    public void MostCommonCountsNormalisedReports()
    {
        string[] train = ["Heart normal. Lungs clear.", "No effusion.", "heart normal lungs clear", "No effusion!", "HEART NORMAL, LUNGS CLEAR.", ""];
        Assert.Equal("Heart normal. Lungs clear.", Baselines.MostCommonReport(train));
    }

    [Fact]
    public void MostCommonTieIsIndependentOfOrder()
    {
        string[] train = ["b report", "a report", "b report.", "a report."];
        Assert.Equal("a report", Baselines.MostCommonReport(train));
        Assert.Equal("a report.", Baselines.MostCommonReport(train.Reverse()));
        Assert.Throws<XrayVLException>(() => Baselines.MostCommonReport(["  "]));
    }

    [Fact]
    public void RandomReportsAreSeededDrawsFromTraining()
    {
        string[] train = ["r1", "r2", "r3", "", "r4"];
        var a = Baselines.RandomReports(train, 50, seed: 3);
        Assert.Equal(a, Baselines.RandomReports(train, 50, seed: 3));
        Assert.NotEqual(a, Baselines.RandomReports(train, 50, seed: 4));
        Assert.All(a, r => Assert.Contains(r, new[] { "r1", "r2", "r3", "r4" }));
        Assert.True(a.Distinct().Count() > 1);
    }

    [Fact]
    public void NearestNeighbourUsesCosine()
    {
        float[][] train = [[1, 0], [0, 1], [10, 10]];
        string[] reports = ["east", "north", "diagonal"];
        // [5, 0.1] is closest in angle to [1, 0] although [10, 10] is closer in Euclidean distance... and larger.
        // [0, 0] has similarity 0 to all → the first. [2, 2] equals the diagonal's direction.
        var result = Baselines.NearestNeighbourReports(train, reports, [[5, 0.1f], [0.1f, 3], [2, 2], [0, 0]]);
        Assert.Equal(["east", "north", "diagonal", "east"], result);
        Assert.Throws<XrayVLException>(() => Baselines.NearestNeighbours(train, [[1, 2, 3]]));
        Assert.Throws<XrayVLException>(() => Baselines.NearestNeighbours([], [[1, 2]]));
    }
}
