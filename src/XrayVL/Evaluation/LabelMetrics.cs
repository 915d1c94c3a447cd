namespace XrayVL.Evaluation;

/// <summary>
/// Figures of a binary score against binary truth: the area under the ROC curve, accuracy at a threshold, the threshold
/// that maximises accuracy on another set (validation), and the majority-class baseline.
/// </summary>
public static class LabelMetrics
{
    /// <summary>
    /// AUROC as the Mann–Whitney statistic: the chance that a random positive scores above a random negative, ties
    /// counting one half (average ranks), which equals the trapezoidal area under the ROC curve (sklearn's
    /// roc_auc_score). NaN when one of the classes is absent.
    /// </summary>
    public static double Auroc(IReadOnlyList<double> scores, IReadOnlyList<bool> truth)
    {
        Check(scores, truth);
        int n = scores.Count;
        long positives = truth.Count(t => t), negatives = n - positives;
        if (positives == 0 || negatives == 0) return double.NaN;
        var order = Enumerable.Range(0, n).OrderBy(i => scores[i]).ToArray();
        double positiveRankSum = 0;
        for (int i = 0; i < n;)
        {
            int j = i;
            while (j + 1 < n && scores[order[j + 1]] == scores[order[i]]) j++;
            double averageRank = (i + j) / 2.0 + 1;                 // 1-based ranks i+1..j+1, averaged over the tie
            for (int k = i; k <= j; k++) if (truth[order[k]]) positiveRankSum += averageRank;
            i = j + 1;
        }
        return (positiveRankSum - positives * (positives + 1) / 2.0) / (positives * (double)negatives);
    }

    /// <summary>Share of items where (score ≥ threshold) equals the truth.</summary>
    public static double Accuracy(IReadOnlyList<double> scores, IReadOnlyList<bool> truth, double threshold)
    {
        Check(scores, truth);
        return scores.Count == 0 ? double.NaN : scores.Zip(truth).Count(x => x.First >= threshold == x.Second) / (double)scores.Count;
    }

    /// <summary>(sensitivity, specificity) at a threshold; NaN for a class that is absent.</summary>
    public static (double Sensitivity, double Specificity) Rates(IReadOnlyList<double> scores, IReadOnlyList<bool> truth, double threshold)
    {
        Check(scores, truth);
        int tp = 0, p = 0, tn = 0, n = 0;
        for (int i = 0; i < scores.Count; i++)
        {
            if (truth[i]) { p++; if (scores[i] >= threshold) tp++; }
            else { n++; if (scores[i] < threshold) tn++; }
        }
        return (p == 0 ? double.NaN : tp / (double)p, n == 0 ? double.NaN : tn / (double)n);
    }

    /// <summary>
    /// The threshold with the highest balanced accuracy (the mean of sensitivity and specificity) on these items, or the
    /// highest plain accuracy when they hold only one class. Balanced accuracy does not depend on the class mix, so a
    /// threshold chosen on a validation split whose prevalence differs from the evaluated split's (Kermany's training
    /// patients are 74% pneumonia, its test split 62.5%) is not pulled towards the commoner class. The candidates are
    /// midpoints between consecutive distinct scores and one below / above all of them; among equal figures the one
    /// nearest 0.5 wins (a stable choice). With no items, 0.5.
    /// </summary>
    public static double BestThreshold(IReadOnlyList<double> scores, IReadOnlyList<bool> truth)
    {
        Check(scores, truth);
        if (scores.Count == 0) return 0.5;
        var distinct = scores.Distinct().Order().ToArray();
        var candidates = new List<double> { distinct[0] - 1e-6, distinct[^1] + 1e-6 };
        for (int i = 0; i + 1 < distinct.Length; i++) candidates.Add((distinct[i] + distinct[i + 1]) / 2);
        // Sweep: sorted scores, count correct at each candidate in one pass.
        var order = Enumerable.Range(0, scores.Count).OrderBy(i => scores[i]).ToArray();
        int totalPositives = truth.Count(t => t), totalNegatives = truth.Count - totalPositives;
        double best = 0.5, bestAccuracy = -1;
        int below = 0, negativesBelow = 0;                          // items with score < candidate, negatives among them
        foreach (double c in candidates.Order())
        {
            while (below < order.Length && scores[order[below]] < c)
            {
                if (!truth[order[below]]) negativesBelow++;
                below++;
            }
            int positivesAbove = totalPositives - (below - negativesBelow);
            double accuracy = totalPositives == 0 || totalNegatives == 0
                ? (negativesBelow + positivesAbove) / (double)scores.Count
                : (positivesAbove / (double)totalPositives + negativesBelow / (double)totalNegatives) / 2;
            if (accuracy > bestAccuracy + 1e-12 || (Math.Abs(accuracy - bestAccuracy) <= 1e-12 && Math.Abs(c - 0.5) < Math.Abs(best - 0.5)))
            {
                bestAccuracy = accuracy;
                best = c;
            }
        }
        return best;
    }

    /// <summary>Accuracy of always answering the class that is commoner in <paramref name="reference"/> (the training labels).</summary>
    public static double MajorityAccuracy(IReadOnlyList<bool> reference, IReadOnlyList<bool> truth)
    {
        if (truth.Count == 0) return double.NaN;
        bool majority = reference.Count(t => t) * 2 > reference.Count;
        return truth.Count(t => t == majority) / (double)truth.Count;
    }

    private static void Check(IReadOnlyList<double> scores, IReadOnlyList<bool> truth)
    {
        if (scores.Count != truth.Count) throw new ArgumentException($"{scores.Count} scores for {truth.Count} labels");
    }
}
