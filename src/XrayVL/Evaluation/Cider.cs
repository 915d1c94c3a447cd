namespace XrayVL.Evaluation;

/// <summary>
/// CIDEr-D (Vedantam et al. 2015) as coco-caption's CiderD scorer computes it (coco-caption's "CIDEr" is this
/// variant), n = 1..4, σ = 6:
/// <list type="bullet">
/// <item>document frequency df(g) = the number of items whose references (any of them) contain n-gram g — taken from
///   the references of the evaluated corpus itself, so a score depends on the corpus it is computed in;</item>
/// <item>a text's vector for order n: g ↦ tf(g) · (log N − log max(1, df(g))), N = number of items (tf is a raw count);</item>
/// <item>similarity of candidate c with reference r for order n: Σ_g min(c_g, r_g) · r_g / (‖c‖·‖r‖) (the "clipping" of
///   CIDEr-D; the division is skipped when a norm is 0), times the Gaussian length penalty exp(−δ²/(2σ²)), where δ is
///   the difference of the two texts' lengths — counted, as in coco-caption's code, as their numbers of bigrams
///   (words − 1; equal to the word difference unless a text is empty);</item>
/// <item>item score = 10 · mean over n of (sum over references of the similarity) / number of references; corpus = mean.</item>
/// </list>
/// </summary>
public static class Cider
{
    public const int MaxN = 4;
    public const double Sigma = 6.0;

    /// <summary>The corpus score (mean over items) and each item's score.</summary>
    public static (double Score, double[] PerItem) Corpus(IReadOnlyList<IReadOnlyList<string>> candidates, IReadOnlyList<IReadOnlyList<IReadOnlyList<string>>> references)
    {
        if (candidates.Count != references.Count)
            throw new ArgumentException($"{candidates.Count} candidates but {references.Count} reference sets");
        if (candidates.Count == 0) return (0, []);
        var refCounts = references.Select(refs => refs.Select(r => NGrams.Count(r, MaxN)).ToList()).ToList();

        var documentFrequency = new Dictionary<string, int>[MaxN];
        for (int n = 0; n < MaxN; n++)
        {
            documentFrequency[n] = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var refs in refCounts)
                foreach (string gram in refs.SelectMany(r => r[n].Keys).Distinct())
                    documentFrequency[n][gram] = documentFrequency[n].GetValueOrDefault(gram) + 1;
        }
        double logN = Math.Log(candidates.Count);

        var perItem = new double[candidates.Count];
        for (int item = 0; item < candidates.Count; item++)
        {
            if (refCounts[item].Count == 0) throw new ArgumentException($"item {item} has no reference");
            var candidate = Vector(NGrams.Count(candidates[item], MaxN), documentFrequency, logN);
            double sum = 0;
            foreach (var r in refCounts[item])
            {
                var reference = Vector(r, documentFrequency, logN);
                double delta = candidate.Length - reference.Length;
                double penalty = Math.Exp(-(delta * delta) / (2 * Sigma * Sigma));
                for (int n = 0; n < MaxN; n++)
                {
                    double dot = 0;
                    foreach (var (gram, weight) in candidate.Weights[n])
                    {
                        double refWeight = reference.Weights[n].GetValueOrDefault(gram);
                        dot += Math.Min(weight, refWeight) * refWeight;
                    }
                    if (candidate.Norms[n] != 0 && reference.Norms[n] != 0) dot /= candidate.Norms[n] * reference.Norms[n];
                    sum += dot * penalty;
                }
            }
            perItem[item] = 10.0 * (sum / MaxN) / refCounts[item].Count;
        }
        return (perItem.Average(), perItem);
    }

    /// <summary>CIDEr's inverse document frequency: log N − log max(1, df), N the number of documents (as log N).</summary>
    internal static double Idf(int documentFrequency, double logN) => logN - Math.Log(Math.Max(1, documentFrequency));

    private sealed record TfIdf(Dictionary<string, double>[] Weights, double[] Norms, int Length);

    private static TfIdf Vector(Dictionary<string, int>[] counts, Dictionary<string, int>[] documentFrequency, double logN)
    {
        var weights = new Dictionary<string, double>[MaxN];
        var norms = new double[MaxN];
        for (int n = 0; n < MaxN; n++)
        {
            weights[n] = new Dictionary<string, double>(StringComparer.Ordinal);
            foreach (var (gram, tf) in counts[n])
            {
                double w = tf * Idf(documentFrequency[n].GetValueOrDefault(gram), logN);
                weights[n][gram] = w;
                norms[n] += w * w;
            }
            norms[n] = Math.Sqrt(norms[n]);
        }
        // coco-caption's "length" is the count of bigrams (its loop adds term frequencies where n == 1, zero-based).
        int length = counts.Length > 1 ? counts[1].Values.Sum() : 0;
        return new TfIdf(weights, norms, length);
    }
}
