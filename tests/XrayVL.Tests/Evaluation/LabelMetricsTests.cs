using XrayVL.Evaluation;

namespace XrayVL.Tests.Evaluation;

public class LabelMetricsTests
{
    [Fact]
    public void AurocMatchesHandComputedValues()
    {
        // sklearn's roc_auc_score documentation example: y = [0, 0, 1, 1], scores [0.1, 0.4, 0.35, 0.8] → 0.75.
        Assert.Equal(0.75, LabelMetrics.Auroc([0.1, 0.4, 0.35, 0.8], [false, false, true, true]), 12);
        // Ties count one half: positives {0.5, 0.9} vs negatives {0.5, 0.5}: (1 + 1 + 0.5 + 0.5) / 4.
        Assert.Equal(0.75, LabelMetrics.Auroc([0.5, 0.5, 0.5, 0.9], [false, true, false, true]), 12);
        Assert.Equal(1.0, LabelMetrics.Auroc([0.2, 0.9], [false, true]), 12);
        Assert.Equal(0.0, LabelMetrics.Auroc([0.2, 0.9], [true, false]), 12);
        Assert.Equal(0.5, LabelMetrics.Auroc([0.3, 0.3, 0.3], [true, false, true]), 12);     // one score for all: the majority baseline
        Assert.True(double.IsNaN(LabelMetrics.Auroc([0.3, 0.4], [true, true])));
    }

    [Fact]
    public void AurocEqualsThePairwiseDefinitionOnRandomScores()
    {
        var random = new Random(5);
        for (int trial = 0; trial < 20; trial++)
        {
            int n = random.Next(2, 60);
            // Rounded scores, so that ties occur.
            var scores = Enumerable.Range(0, n).Select(_ => Math.Round(random.NextDouble(), 1)).ToArray();
            var truth = Enumerable.Range(0, n).Select(_ => random.NextDouble() < 0.4).ToArray();
            double wins = 0, pairs = 0;
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++)
                {
                    if (!truth[i] || truth[j]) continue;
                    pairs++;
                    wins += scores[i] > scores[j] ? 1 : scores[i] == scores[j] ? 0.5 : 0;
                }
            double expected = pairs == 0 ? double.NaN : wins / pairs;
            double actual = LabelMetrics.Auroc(scores, truth);
            if (double.IsNaN(expected)) Assert.True(double.IsNaN(actual));
            else Assert.Equal(expected, actual, 12);
        }
    }

    [Fact]
    public void ThresholdAccuracyRatesAndMajority()
    {
        double[] s = [0.1, 0.2, 0.6, 0.7, 0.3, 0.9];
        bool[] t = [false, false, true, true, true, true];
        double threshold = LabelMetrics.BestThreshold(s, t);
        Assert.InRange(threshold, 0.2 + 1e-9, 0.3);                            // between the last negative and the first positive
        Assert.Equal(1.0, LabelMetrics.Accuracy(s, t, threshold), 12);
        Assert.Equal(5 / 6.0, LabelMetrics.Accuracy(s, t, 0.5), 12);      // 0.3 is the one positive below 0.5
        var (sensitivity, specificity) = LabelMetrics.Rates(s, t, 0.5);
        Assert.Equal(0.75, sensitivity, 12);
        Assert.Equal(1.0, specificity, 12);
        // Training labels mostly negative → always "negative": right on the 2 negatives of 6.
        Assert.Equal(2 / 6.0, LabelMetrics.MajorityAccuracy([false, false, true], t), 12);
        Assert.Equal(0.5, LabelMetrics.BestThreshold([], []));
    }

    [Fact]
    public void ThresholdBalancesSensitivityAndSpecificityNotTheCommonerClass()
    {
        // 8 positives, 2 negatives scoring 0.6 and 0.7. Calling everything positive is as accurate (0.8) as cutting at
        // 0.75, but its balanced accuracy is 0.5 against 0.875: the cut between 0.7 and 0.8 wins.
        double[] s = [0.6, 0.7, 0.5, 0.65, 0.8, 0.85, 0.9, 0.95, 0.96, 0.97];
        bool[] t = [false, false, true, true, true, true, true, true, true, true];
        double threshold = LabelMetrics.BestThreshold(s, t);
        Assert.InRange(threshold, 0.7 + 1e-9, 0.8);
        var (sensitivity, specificity) = LabelMetrics.Rates(s, t, threshold);
        Assert.Equal((0.75, 1.0), (sensitivity, specificity));
        // One class only: balanced accuracy is undefined, so plain accuracy decides (everything below the threshold).
        double onlyNegatives = LabelMetrics.BestThreshold([0.2, 0.4], [false, false]);
        Assert.Equal(1.0, LabelMetrics.Accuracy([0.2, 0.4], [false, false], onlyNegatives));
    }
}
