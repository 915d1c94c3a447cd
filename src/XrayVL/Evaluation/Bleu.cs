namespace XrayVL.Evaluation;

/// <summary>Corpus BLEU-1..N with the totals it was computed from (coco-caption's "closest" reference length).</summary>
/// <param name="Scores">BLEU-1..N: cumulative geometric means of the modified precisions, times the brevity penalty.</param>
/// <param name="Correct">Per order: candidate n-grams clipped by the references' largest counts, summed over the corpus.</param>
/// <param name="Guess">Per order: candidate n-grams, summed over the corpus.</param>
/// <param name="TestLength">Candidate tokens, summed.</param>
/// <param name="ReferenceLength">Per item the reference length closest to the candidate's (ties: the shorter), summed.</param>
public sealed record BleuResult(IReadOnlyList<double> Scores, IReadOnlyList<long> Correct, IReadOnlyList<long> Guess, long TestLength, long ReferenceLength)
{
    public double BrevityPenalty => TestLength < ReferenceLength && ReferenceLength > 0 ? Math.Exp(1 - (double)ReferenceLength / TestLength) : 1;
}

/// <summary>
/// BLEU (Papineni et al. 2002) at corpus level as coco-caption's BleuScorer computes it with option "closest":
/// per item, each candidate n-gram count is clipped by its largest count in any one reference; clipped counts and
/// n-gram totals are summed over the corpus; p_n = (correct_n + 1e-15) / (guess_n + 1e-9) (the small constants keep
/// the logarithm finite, so a zero precision gives a score near 0 rather than an error); BLEU-N = (p_1 ⋯ p_N)^(1/N)
/// times the brevity penalty exp(1 − r/c) when c &lt; r, where c is the total candidate length and r the sum over items
/// of the reference length closest to that item's candidate length (ties go to the shorter reference), computed as
/// coco-caption does with ratio (c + 1e-15) / (r + 1e-9).
/// </summary>
public static class Bleu
{
    public const int DefaultMaxN = 4;
    private const double Tiny = 1e-15, Small = 1e-9;

    /// <param name="candidates">One token list per item.</param>
    /// <param name="references">One or more token lists per item, same order.</param>
    public static BleuResult Corpus(IReadOnlyList<IReadOnlyList<string>> candidates, IReadOnlyList<IReadOnlyList<IReadOnlyList<string>>> references, int maxN = DefaultMaxN)
    {
        if (candidates.Count != references.Count)
            throw new ArgumentException($"{candidates.Count} candidates but {references.Count} reference sets");
        var correct = new long[maxN];
        var guess = new long[maxN];
        long testLength = 0, referenceLength = 0;
        for (int item = 0; item < candidates.Count; item++)
        {
            var candidate = candidates[item];
            var refs = references[item];
            if (refs.Count == 0) throw new ArgumentException($"item {item} has no reference");
            testLength += candidate.Count;
            referenceLength += ClosestLength(candidate.Count, refs);
            var maxRefCounts = MaxReferenceCounts(refs, maxN);
            var counts = NGrams.Count(candidate, maxN);
            for (int n = 0; n < maxN; n++)
            {
                guess[n] += Math.Max(0, candidate.Count - n);
                foreach (var (gram, count) in counts[n]) correct[n] += Math.Min(count, maxRefCounts[n].GetValueOrDefault(gram));
            }
        }

        var scores = new double[maxN];
        double product = 1;
        for (int n = 0; n < maxN; n++)
        {
            product *= (correct[n] + Tiny) / (guess[n] + Small);
            scores[n] = Math.Pow(product, 1.0 / (n + 1));
        }
        double ratio = (testLength + Tiny) / (referenceLength + Small);
        if (ratio < 1)
            for (int n = 0; n < maxN; n++) scores[n] *= Math.Exp(1 - 1 / ratio);
        return new BleuResult(scores, correct, guess, testLength, referenceLength);
    }

    /// <summary>
    /// Papineni's modified n-gram precision of one candidate: (sum of clipped counts, number of candidate n-grams).
    /// "the the the the the the the" against "the cat is on the mat" / "there is a cat on the mat" gives (2, 7).
    /// </summary>
    public static (long Clipped, long Total) ModifiedPrecision(IReadOnlyList<string> candidate, IReadOnlyList<IReadOnlyList<string>> references, int n)
    {
        var max = MaxReferenceCounts(references, n)[n - 1];
        long clipped = NGrams.Count(candidate, n)[n - 1].Sum(kv => (long)Math.Min(kv.Value, max.GetValueOrDefault(kv.Key)));
        return (clipped, Math.Max(0, candidate.Count - n + 1));
    }

    /// <summary>The reference length closest to <paramref name="candidateLength"/>; ties go to the shorter reference.</summary>
    public static int ClosestLength(int candidateLength, IReadOnlyList<IReadOnlyList<string>> references) =>
        references.Select(r => r.Count).OrderBy(l => Math.Abs(l - candidateLength)).ThenBy(l => l).First();

    /// <summary>Per order, each n-gram's largest count in any single reference.</summary>
    private static Dictionary<string, int>[] MaxReferenceCounts(IReadOnlyList<IReadOnlyList<string>> references, int maxN)
    {
        var max = new Dictionary<string, int>[maxN];
        for (int n = 0; n < maxN; n++) max[n] = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var reference in references)
        {
            var counts = NGrams.Count(reference, maxN);
            for (int n = 0; n < maxN; n++)
                foreach (var (gram, count) in counts[n]) max[n][gram] = Math.Max(max[n].GetValueOrDefault(gram), count);
        }
        return max;
    }
}
