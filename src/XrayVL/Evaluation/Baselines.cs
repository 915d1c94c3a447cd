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
        const int maxN = 4;
        var reports = trainingReports.Where(r => !string.IsNullOrWhiteSpace(r)).Select(r => r.Trim()).ToList();
        if (reports.Count == 0) throw new XrayVLException("no training report to take the consensus report from");
        var counts = reports.Select(r => NGrams.Count(CaptionTokenizer.Tokenize(r, lang), maxN)).ToList();

        // Unit tf-idf vectors per order, and their sum.
        var unit = new Dictionary<string, double>[counts.Count][];
        var sum = Enumerable.Range(0, maxN).Select(_ => new Dictionary<string, double>(StringComparer.Ordinal)).ToArray();
        for (int n = 0; n < maxN; n++)
        {
            var documentFrequency = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var c in counts)
                foreach (string gram in c[n].Keys) documentFrequency[gram] = documentFrequency.GetValueOrDefault(gram) + 1;
            double logN = Math.Log(reports.Count);
            for (int r = 0; r < counts.Count; r++)
            {
                unit[r] ??= new Dictionary<string, double>[maxN];
                var weights = counts[r][n].ToDictionary(kv => kv.Key, kv => kv.Value * (logN - Math.Log(documentFrequency[kv.Key])), StringComparer.Ordinal);
                double norm = Math.Sqrt(weights.Values.Sum(w => w * w));
                unit[r][n] = norm == 0 ? [] : weights.ToDictionary(kv => kv.Key, kv => kv.Value / norm, StringComparer.Ordinal);
                foreach (var (gram, w) in unit[r][n]) sum[n][gram] = sum[n].GetValueOrDefault(gram) + w;
            }
        }

        int best = -1;
        double bestScore = double.NegativeInfinity;
        string bestKey = "";
        for (int r = 0; r < reports.Count; r++)
        {
            double score = 0;
            for (int n = 0; n < maxN; n++)
            {
                double dot = 0, self = 0;
                foreach (var (gram, w) in unit[r][n])
                {
                    dot += w * sum[n][gram];
                    self += w * w;                      // 1, or 0 for an empty vector
                }
                score += dot - self;
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
