using XrayVL.Data;
using XrayVL.Data.Labeler;

namespace XrayVL.Evaluation;

/// <summary>
/// Reference points for report generation that use no model of the image (constant and random reports) or only its
/// features (nearest neighbour): every model figure is read beside them.
/// </summary>
public static class Baselines
{
    public const string MostCommonName = "most_common";
    public const string ConsensusName = "consensus";
    public const string RandomName = "random";
    public const string NearestNeighbourName = "nearest_neighbour";
    /// <summary>Closed questions: the training split's majority answer to the same question text, ignoring the image.</summary>
    public const string QuestionPriorName = "question_prior";
    /// <summary>Finding list: the findings positive in more than half of the training studies, for every study.</summary>
    public const string MajorityFindingsName = "majority_findings";
    /// <summary>Grounding: the mean training box of the asked-for label, for every image.</summary>
    public const string MeanBoxName = "mean_training_box";

    /// <summary>
    /// The most frequent training report after normalisation (<see cref="CaptionTokenizer.Normalize"/>: lower case,
    /// punctuation dropped, one space between tokens). Ties go to the normalised text that sorts first (ordinal), so the
    /// choice does not depend on the order of the training set; the report returned is the first training report with
    /// that normal form, as written. Blank reports are ignored.
    /// </summary>
    public static string MostCommonReport(IEnumerable<string> trainingReports, string lang = "en")
    {
        var counts = new Dictionary<string, (int Count, string First)>(StringComparer.Ordinal);
        foreach (string report in trainingReports)
        {
            if (string.IsNullOrWhiteSpace(report)) continue;
            string key = CaptionTokenizer.Normalize(report, lang);
            counts[key] = counts.TryGetValue(key, out var c) ? (c.Count + 1, c.First) : (1, report.Trim());
        }
        if (counts.Count == 0) throw new XrayVLException("no training report to take the most common one from");
        return counts.OrderByDescending(kv => kv.Value.Count).ThenBy(kv => kv.Key, StringComparer.Ordinal).First().Value.First;
    }

    /// <summary>
    /// Retrieval with no image: the training report most like all the others — the one whose tf-idf n-gram vectors
    /// (n = 1..4, <see cref="CaptionTokenizer"/> tokens, idf over the training reports, as CIDEr weighs them) have the
    /// highest mean cosine similarity to every other training report's, averaged over the four orders. Where reports
    /// are each phrased differently (so that <see cref="MostCommonReport"/> picks an arbitrary one) this picks the
    /// corpus's most typical wording. The mean over all others is exact and linear in the corpus: the dot product of a
    /// unit vector with the sum of all unit vectors, less its own 1. Ties go to the normalised text that sorts first.
    /// </summary>
    public static string ConsensusReport(IEnumerable<string> trainingReports, string lang = "en")
    {
        var reports = trainingReports.Where(r => !string.IsNullOrWhiteSpace(r)).Select(r => r.Trim()).ToList();
        if (reports.Count == 0) throw new XrayVLException("no training report to take the consensus report from");
        const int maxN = Cider.MaxN;
        // Three passes over the texts, so that memory holds the corpus's n-gram tables, never one per report (MIMIC-CXR
        // has about 220,000 reports): document frequencies, the sum of the unit vectors, then each report's score.
        Dictionary<string, int>[] Counts(string report) => NGrams.Count(CaptionTokenizer.Tokenize(report, lang), maxN);
        var documentFrequency = Enumerable.Range(0, maxN).Select(_ => new Dictionary<string, int>(StringComparer.Ordinal)).ToArray();
        foreach (string report in reports)
        {
            var counts = Counts(report);
            for (int n = 0; n < maxN; n++)
                foreach (string gram in counts[n].Keys) documentFrequency[n][gram] = documentFrequency[n].GetValueOrDefault(gram) + 1;
        }
        double logN = Math.Log(reports.Count);
        // A report's tf-idf vector of order n, scaled to unit length (empty when it has no n-gram of that order or all
        // its n-grams occur in every report).
        List<(string Gram, double Weight)> Unit(Dictionary<string, int> counts, int n)
        {
            var weights = counts.Select(kv => (kv.Key, kv.Value * Cider.Idf(documentFrequency[n][kv.Key], logN))).ToList();
            double norm = Math.Sqrt(weights.Sum(w => w.Item2 * w.Item2));
            return norm == 0 ? [] : weights.Select(w => (w.Key, w.Item2 / norm)).ToList();
        }
        var sum = Enumerable.Range(0, maxN).Select(_ => new Dictionary<string, double>(StringComparer.Ordinal)).ToArray();
        foreach (string report in reports)
        {
            var counts = Counts(report);
            for (int n = 0; n < maxN; n++)
                foreach (var (gram, w) in Unit(counts[n], n)) sum[n][gram] = sum[n].GetValueOrDefault(gram) + w;
        }

        int best = -1;
        double bestScore = double.NegativeInfinity;
        string bestKey = "";
        for (int r = 0; r < reports.Count; r++)
        {
            var counts = Counts(reports[r]);
            double score = 0;
            for (int n = 0; n < maxN; n++)
            {
                var unit = Unit(counts[n], n);
                // Dot product with every other report's unit vector: with the sum, less the report's own (1, or 0 if empty).
                score += unit.Sum(u => u.Weight * sum[n][u.Gram]) - (unit.Count > 0 ? 1 : 0);
            }
            string key = CaptionTokenizer.Normalize(reports[r], lang);
            if (score > bestScore + 1e-12 || (Math.Abs(score - bestScore) <= 1e-12 && string.CompareOrdinal(key, bestKey) < 0))
            {
                best = r;
                bestScore = score;
                bestKey = key;
            }
        }
        return reports[best];
    }

    /// <summary>
    /// The majority-class answer for multi-label findings: each observation other than No Finding is positive when
    /// more than half of the training label sets have it positive (uncertain and unmentioned count as not positive,
    /// as clinical efficacy reads them); No Finding is positive when no other observation is.
    /// </summary>
    public static ChexpertLabels MajorityFindings(IReadOnlyCollection<ChexpertLabels> training)
    {
        if (training.Count == 0) throw new XrayVLException("no training labels to take the majority findings from");
        var result = new ChexpertLabels();
        foreach (var o in Observations.All.Where(o => o != Observation.NoFinding))
            if (2 * training.Count(l => l[o] == LabelValue.Positive) > training.Count) result[o] = LabelValue.Positive;
        if (!Observations.All.Any(o => result[o] == LabelValue.Positive)) result[Observation.NoFinding] = LabelValue.Positive;
        return result;
    }

    /// <summary>
    /// The question prior for closed questions, which never looks at an image: for each asked (language, question text),
    /// the answer that text got most often among the training questions; a text not among them gets the language's most
    /// common answer, and a language without training questions the most common answer of all. Ties go to yes, then no,
    /// then uncertain. Answers are written bare (<see cref="VqaAccuracy.Write"/>). Null when no training reference
    /// answer is a closed one.
    /// </summary>
    public static List<string>? QuestionPrior(IReadOnlyList<(string Language, string Question, string Reference)> training,
        IReadOnlyList<(string Language, string Question)> asked)
    {
        var byQuestion = new Dictionary<(string, string), int[]>();
        var byLanguage = new Dictionary<string, int[]>();
        var all = new int[3];
        static void Count<TKey>(Dictionary<TKey, int[]> counts, TKey key, ClosedAnswer answer) where TKey : notnull =>
            (counts.TryGetValue(key, out var c) ? c : counts[key] = new int[3])[(int)answer]++;
        foreach (var (language, question, reference) in training)
            if (VqaAccuracy.Parse(reference) is { } answer)
            {
                Count(byQuestion, (language, question), answer);
                Count(byLanguage, language, answer);
                all[(int)answer]++;
            }
        if (all.Sum() == 0) return null;
        return asked.Select(q =>
        {
            var counts = byQuestion.GetValueOrDefault((q.Language, q.Question)) ?? byLanguage.GetValueOrDefault(q.Language) ?? all;
            return VqaAccuracy.Write((ClosedAnswer)Array.IndexOf(counts, counts.Max()), q.Language);   // IndexOf: the first maximum
        }).ToList();
    }

    /// <summary>Per box label (ordinal, case-insensitive): the mean of the training boxes' corners on the 0–100 grid.</summary>
    public static Dictionary<string, StudyBox> MeanBoxes(IEnumerable<StudyBox> training) =>
        training.GroupBy(b => b.Label, StringComparer.OrdinalIgnoreCase).ToDictionary(g => g.Key,
            g => new StudyBox(0, g.Key, g.Average(b => b.X1), g.Average(b => b.Y1), g.Average(b => b.X2), g.Average(b => b.Y2)),
            StringComparer.OrdinalIgnoreCase);

    /// <summary>For each of <paramref name="count"/> test items a training report drawn uniformly with replacement (seeded; blanks skipped).</summary>
    public static List<string> RandomReports(IReadOnlyList<string> trainingReports, int count, int seed = 0)
    {
        var pool = trainingReports.Where(r => !string.IsNullOrWhiteSpace(r)).ToList();
        if (pool.Count == 0) throw new XrayVLException("no training report to draw random reports from");
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => pool[random.Next(pool.Count)]).ToList();
    }

    /// <summary>
    /// Nearest-neighbour retrieval: for each test feature vector, the report of the training item whose vector has the
    /// highest cosine similarity (ties: the earlier training item). Features come from the caller (the evaluator uses
    /// the model's mean-pooled vision features); all vectors must have one length. A zero vector has similarity 0 to all.
    /// </summary>
    public static List<string> NearestNeighbourReports(IReadOnlyList<float[]> trainingFeatures, IReadOnlyList<string> trainingReports, IReadOnlyList<float[]> testFeatures) =>
        NearestNeighbours(trainingFeatures, testFeatures).Select(i => trainingReports[i]).ToList();

    /// <summary>Index of the most cosine-similar training vector for each test vector.</summary>
    public static int[] NearestNeighbours(IReadOnlyList<float[]> trainingFeatures, IReadOnlyList<float[]> testFeatures)
    {
        if (trainingFeatures.Count == 0) throw new XrayVLException("no training features for nearest-neighbour retrieval");
        int dim = trainingFeatures[0].Length;
        if (trainingFeatures.Concat(testFeatures).Any(f => f.Length != dim))
            throw new XrayVLException($"feature vectors differ in length (expected {dim} everywhere)");
        var train = trainingFeatures.Select(Unit).ToList();
        var result = new int[testFeatures.Count];
        for (int t = 0; t < testFeatures.Count; t++)
        {
            var q = Unit(testFeatures[t]);
            int best = 0;
            double bestSimilarity = double.NegativeInfinity;
            for (int i = 0; i < train.Count; i++)
            {
                double s = 0;
                for (int k = 0; k < dim; k++) s += q[k] * train[i][k];
                if (s > bestSimilarity) { bestSimilarity = s; best = i; }
            }
            result[t] = best;
        }
        return result;
    }

    private static double[] Unit(float[] v)
    {
        double norm = Math.Sqrt(v.Sum(x => (double)x * x));
        return v.Select(x => norm == 0 ? 0 : x / norm).ToArray();
    }
}
