using XrayVL.Data;
using XrayVL.Data.Labeler;

namespace XrayVL.Evaluation;

/// <summary>Counts and scores of one observation (or of all pooled): positives in prediction vs reference.</summary>
public sealed record LabelCounts(string Label, int TruePositives, int FalsePositives, int FalseNegatives, int TrueNegatives)
{
    /// <summary>Reference positives.</summary>
    public int Support => TruePositives + FalseNegatives;
    /// <summary>0 when nothing was predicted positive (sklearn's zero_division = 0).</summary>
    public double Precision => TruePositives + FalsePositives == 0 ? 0 : (double)TruePositives / (TruePositives + FalsePositives);
    /// <summary>0 when the reference has no positive.</summary>
    public double Recall => TruePositives + FalseNegatives == 0 ? 0 : (double)TruePositives / (TruePositives + FalseNegatives);
    public double F1 => Precision + Recall == 0 ? 0 : 2 * Precision * Recall / (Precision + Recall);
}

/// <summary>Clinical efficacy over the 14 observations.</summary>
public sealed record ClinicalEfficacyResult(
    IReadOnlyList<LabelCounts> PerLabel, LabelCounts Micro, double MacroPrecision, double MacroRecall, double MacroF1,
    double Accuracy, double ExactMatch, int Items)
{
    public double MicroPrecision => Micro.Precision;
    public double MicroRecall => Micro.Recall;
    public double MicroF1 => Micro.F1;
}

/// <summary>
/// Clinical efficacy (CE) as R2Gen-style papers report it: the project's <see cref="Labeler"/> labels the generated and
/// the reference report with the 14 CheXpert observations; an observation is positive only when its label is 1 —
/// uncertain (−1), negative (0) and not mentioned all count as negative (pass <c>uncertainAsPositive</c> to count −1
/// as positive). Per observation: precision, recall, F1 (0 where undefined, as sklearn's zero_division = 0);
/// micro = the same on TP/FP/FN pooled over observations and items; macro = the plain mean over all 14 observations
/// (observations without any positive count as 0, as in sklearn's average="macro"). Accuracy is the share of
/// (item, observation) pairs whose binary labels agree; exact match the share of items whose 14 labels all agree.
/// </summary>
public static class ClinicalEfficacy
{
    /// <summary>Labels every prediction and reference with <paramref name="labeler"/> (the project's by default), then scores.</summary>
    public static ClinicalEfficacyResult FromTexts(IReadOnlyList<string> predictions, IReadOnlyList<string> references, string lang = "en",
        ILabeler? labeler = null, bool uncertainAsPositive = false)
    {
        if (predictions.Count != references.Count)
            throw new ArgumentException($"{predictions.Count} predictions but {references.Count} references");
        labeler ??= Labeler.Default;
        return FromLabels(predictions.Select(p => labeler.Label(p, lang)).ToList(), references.Select(r => labeler.Label(r, lang)).ToList(), uncertainAsPositive);
    }

    public static ClinicalEfficacyResult FromLabels(IReadOnlyList<ChexpertLabels> predictions, IReadOnlyList<ChexpertLabels> references, bool uncertainAsPositive = false) =>
        FromVectors(predictions.Select(p => Binary(p, uncertainAsPositive)).ToList(), references.Select(r => Binary(r, uncertainAsPositive)).ToList());

    /// <summary>The binary vector of one label set, in CheXpert order: true where the observation counts as positive.</summary>
    public static bool[] Binary(ChexpertLabels labels, bool uncertainAsPositive = false) =>
        Observations.All.Select(o => labels[o] == LabelValue.Positive || (uncertainAsPositive && labels[o] == LabelValue.Uncertain)).ToArray();

    /// <summary>Scores binary label vectors directly (one bool per observation, CheXpert order, 14 per item).</summary>
    public static ClinicalEfficacyResult FromVectors(IReadOnlyList<bool[]> predictions, IReadOnlyList<bool[]> references)
    {
        if (predictions.Count != references.Count)
            throw new ArgumentException($"{predictions.Count} prediction vectors but {references.Count} reference vectors");
        int labels = Observations.Names.Count;
        var tp = new int[labels];
        var fp = new int[labels];
        var fn = new int[labels];
        var tn = new int[labels];
        int exact = 0;
        for (int item = 0; item < predictions.Count; item++)
        {
            var p = predictions[item];
            var r = references[item];
            if (p.Length != labels || r.Length != labels)
                throw new ArgumentException($"item {item}: label vectors must have {labels} entries (got {p.Length} and {r.Length})");
            bool same = true;
            for (int k = 0; k < labels; k++)
            {
                if (p[k] && r[k]) tp[k]++;
                else if (p[k]) fp[k]++;
                else if (r[k]) fn[k]++;
                else tn[k]++;
                same &= p[k] == r[k];
            }
            if (same) exact++;
        }
        var perLabel = Enumerable.Range(0, labels).Select(k => new LabelCounts(Observations.Names[k], tp[k], fp[k], fn[k], tn[k])).ToList();
        var micro = new LabelCounts("micro", tp.Sum(), fp.Sum(), fn.Sum(), tn.Sum());
        int items = predictions.Count;
        double accuracy = items == 0 ? 0 : (double)(micro.TruePositives + micro.TrueNegatives) / (items * labels);
        return new ClinicalEfficacyResult(perLabel, micro,
            perLabel.Average(l => l.Precision), perLabel.Average(l => l.Recall), perLabel.Average(l => l.F1),
            accuracy, items == 0 ? 0 : (double)exact / items, items);
    }
}
