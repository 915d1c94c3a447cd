namespace XrayVL.Evaluation;

/// <summary>One candidate–reference alignment: matched unigrams, the chunks they form, and the resulting score.</summary>
public sealed record MeteorAlignment(int Matches, int Chunks, int CandidateLength, int ReferenceLength)
{
    public double Precision => CandidateLength == 0 ? 0 : (double)Matches / CandidateLength;
    public double Recall => ReferenceLength == 0 ? 0 : (double)Matches / ReferenceLength;

    /// <summary>Harmonic mean weighted towards recall: 10·P·R / (R + 9·P), i.e. P·R / (α·P + (1 − α)·R) with α = 0.9.</summary>
    public double FMean => Matches == 0 ? 0 : 10 * Precision * Recall / (Recall + 9 * Precision);

    /// <summary>Fragmentation penalty γ·(chunks / matches)^β with γ = 0.5, β = 3.</summary>
    public double Penalty => Matches == 0 ? 0 : Meteor.Gamma * Math.Pow((double)Chunks / Matches, Meteor.BetaExponent);

    public double Score => FMean * (1 - Penalty);
}

/// <summary>
/// METEOR in the form of Banerjee &amp; Lavie (2005): unigram matches found in stages — exact (identical tokens), then
/// Porter stems (<see cref="PorterStemmer"/>, English only) among the words still unmatched — score
/// Fmean = 10·P·R / (R + 9·P) times (1 − 0.5·(chunks / matches)³); the best reference counts; the corpus score is the
/// mean of the item scores.
/// <para>This approximates the official scorer and does not reproduce its figures: the official METEOR (a Java
/// program; 1.5 is what coco-caption runs) adds WordNet synonym and paraphrase matchers, weighs the matcher stages,
/// uses tuned parameters (α = 0.85, β = 0.2, γ = 0.6, δ = 0.75 for English 1.5), a Snowball stemmer, and aggregates
/// the corpus from summed statistics. Chinese text is scored on characters with the exact matcher only.</para>
/// <para>Alignment: within a stage every possible match is made (the number of matches is the maximum); which
/// positions pair up is chosen greedily to keep chunks long: the longest run of consecutive candidate words matching
/// consecutive reference words is taken first (ties: a run that touches an earlier match, then the earliest candidate
/// position, then the earliest reference position), and so on until no match is left. METEOR's own aligner searches
/// for the fewest chunks; the greedy choice finds the same on typical sentences but may find more chunks on
/// contrived ones.</para>
/// </summary>
public static class Meteor
{
    public const double Gamma = 0.5;
    public const double BetaExponent = 3;

    /// <summary>The corpus score (mean over items) and each item's score (the best over its references).</summary>
    public static (double Score, double[] PerItem) Corpus(IReadOnlyList<IReadOnlyList<string>> candidates, IReadOnlyList<IReadOnlyList<IReadOnlyList<string>>> references, string lang = "en")
    {
        if (candidates.Count != references.Count)
            throw new ArgumentException($"{candidates.Count} candidates but {references.Count} reference sets");
        var stems = new Dictionary<string, string>(StringComparer.Ordinal);   // stemming is the costly part: once per word type
        var perItem = candidates.Select((c, i) => Sentence(c, references[i], lang, stems)).ToArray();
        return (perItem.Length == 0 ? 0 : perItem.Average(), perItem);
    }

    public static double Sentence(IReadOnlyList<string> candidate, IReadOnlyList<IReadOnlyList<string>> references, string lang = "en") =>
        Sentence(candidate, references, lang, new Dictionary<string, string>(StringComparer.Ordinal));

    private static double Sentence(IReadOnlyList<string> candidate, IReadOnlyList<IReadOnlyList<string>> references, string lang, Dictionary<string, string> stems)
    {
        if (references.Count == 0) throw new ArgumentException("no reference");
        return references.Max(r => Align(candidate, r, lang == "en", stems).Score);
    }

    /// <summary>Aligns a candidate with one reference: exact matches, then (with <paramref name="useStems"/>) stem matches.</summary>
    public static MeteorAlignment Align(IReadOnlyList<string> candidate, IReadOnlyList<string> reference, bool useStems = true) =>
        Align(candidate, reference, useStems, new Dictionary<string, string>(StringComparer.Ordinal));

    private static MeteorAlignment Align(IReadOnlyList<string> candidate, IReadOnlyList<string> reference, bool useStems, Dictionary<string, string> stems)
    {
        string Stem(string word)
        {
            if (!stems.TryGetValue(word, out var stem)) stems[word] = stem = PorterStemmer.Stem(word);
            return stem;
        }

        var candidateToReference = Enumerable.Repeat(-1, candidate.Count).ToArray();
        var referenceTaken = new bool[reference.Count];
        MatchStage(candidate, reference, candidateToReference, referenceTaken);
        if (useStems)
            MatchStage(candidate.Select(Stem).ToList(), reference.Select(Stem).ToList(), candidateToReference, referenceTaken);

        int matches = 0, chunks = 0, previous = -2;
        for (int i = 0; i < candidate.Count; i++)
        {
            int j = candidateToReference[i];
            if (j < 0) { previous = -2; continue; }
            matches++;
            if (j != previous + 1) chunks++;
            previous = j;
        }
        return new MeteorAlignment(matches, chunks, candidate.Count, reference.Count);
    }

    /// <summary>Matches equal tokens among the still unmatched ones, longest consecutive runs first.</summary>
    private static void MatchStage(IReadOnlyList<string> candidate, IReadOnlyList<string> reference, int[] candidateToReference, bool[] referenceTaken)
    {
        bool Free(int i, int j) => candidateToReference[i] < 0 && !referenceTaken[j] && string.Equals(candidate[i], reference[j], StringComparison.Ordinal);
        while (true)
        {
            int bestI = -1, bestJ = -1, bestLength = 0;
            bool bestTouches = false;
            for (int i = 0; i < candidate.Count; i++)
            {
                if (candidateToReference[i] >= 0) continue;
                for (int j = 0; j < reference.Count; j++)
                {
                    if (!Free(i, j)) continue;
                    int length = 1;
                    while (i + length < candidate.Count && j + length < reference.Count && Free(i + length, j + length)) length++;
                    bool touches = (i > 0 && j > 0 && candidateToReference[i - 1] == j - 1)
                        || (i + length < candidate.Count && candidateToReference[i + length] == j + length);
                    if (length > bestLength || (length == bestLength && touches && !bestTouches))
                    {
                        (bestI, bestJ, bestLength, bestTouches) = (i, j, length, touches);
                    }
                }
            }
            if (bestLength == 0) return;
            for (int k = 0; k < bestLength; k++)
            {
                candidateToReference[bestI + k] = bestJ + k;
                referenceTaken[bestJ + k] = true;
            }
        }
    }
}
