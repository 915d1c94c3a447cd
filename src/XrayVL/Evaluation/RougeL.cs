namespace XrayVL.Evaluation;

/// <summary>
/// ROUGE-L as coco-caption's Rouge scorer computes it: for each item, the longest common subsequence (LCS) of the
/// candidate with each reference gives P = LCS / |candidate| and R = LCS / |reference|; the largest P and the largest R
/// over the references (each maximised on its own) give F = (1 + β²)·P·R / (R + β²·P) with β = 1.2 (0 when either is 0);
/// the corpus score is the mean of the item scores. An empty candidate or reference scores 0 (coco-caption would split
/// it into one empty token).
/// </summary>
public static class RougeL
{
    public const double Beta = 1.2;

    /// <summary>The corpus score (mean over items) and each item's score.</summary>
    public static (double Score, double[] PerItem) Corpus(IReadOnlyList<IReadOnlyList<string>> candidates, IReadOnlyList<IReadOnlyList<IReadOnlyList<string>>> references)
    {
        if (candidates.Count != references.Count)
            throw new ArgumentException($"{candidates.Count} candidates but {references.Count} reference sets");
        var perItem = candidates.Select((c, i) => Sentence(c, references[i])).ToArray();
        return (perItem.Length == 0 ? 0 : perItem.Average(), perItem);
    }

    public static double Sentence(IReadOnlyList<string> candidate, IReadOnlyList<IReadOnlyList<string>> references)
    {
        if (references.Count == 0) throw new ArgumentException("no reference");
        double precision = 0, recall = 0;
        foreach (var reference in references)
        {
            int lcs = LcsLength(candidate, reference);
            if (candidate.Count > 0) precision = Math.Max(precision, (double)lcs / candidate.Count);
            if (reference.Count > 0) recall = Math.Max(recall, (double)lcs / reference.Count);
        }
        if (precision == 0 || recall == 0) return 0;
        return (1 + Beta * Beta) * precision * recall / (recall + Beta * Beta * precision);
    }

    /// <summary>Length of the longest common subsequence (dynamic programming, two rows).</summary>
    public static int LcsLength(IReadOnlyList<string> a, IReadOnlyList<string> b)
    {
        var previous = new int[b.Count + 1];
        var current = new int[b.Count + 1];
        for (int i = 1; i <= a.Count; i++)
        {
            for (int j = 1; j <= b.Count; j++)
                current[j] = string.Equals(a[i - 1], b[j - 1], StringComparison.Ordinal) ? previous[j - 1] + 1 : Math.Max(previous[j], current[j - 1]);
            (previous, current) = (current, previous);
        }
        return previous[b.Count];
    }
}
