using System.Globalization;
using System.Text;
using XrayVL.Data;
using XrayVL.Imaging;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Evaluation;

/// <summary>One observation's figures on the evaluated split.</summary>
/// <param name="Threshold">Chosen on the validation split for the highest balanced accuracy (0.5 when val has no labelled study).</param>
/// <param name="MajorityAccuracy">Always answering the training split's commoner class.</param>
public sealed record LabelFigures(string Label, int Count, int Positives, double Auroc, double Threshold, double Accuracy,
    double Sensitivity, double Specificity, double MajorityAccuracy, int ValCount);

/// <summary>One evaluated study's classifier probabilities (the mean over its images), by observation name: the float32
/// scores the figures are computed from, unrounded (saturated probabilities near 1 stay distinct, so curves drawn from
/// them match the AUROC reported).</summary>
public sealed record StudyLabelScores(string StudyId, string Language, IReadOnlyDictionary<string, float> Probabilities);

/// <summary>The per-label figures and the scores they were computed from (so that a user can draw their own curves).</summary>
public sealed record LabelEvaluationResult(IReadOnlyList<LabelFigures> Figures, IReadOnlyList<StudyLabelScores> Studies);

/// <summary>
/// `xrayvl eval --tasks labels`: the model's classifier head (<see cref="FindingClassifier"/>) scores every study of the
/// validation and evaluated splits (mean probability over the study's images); per observation, AUROC on the evaluated
/// split, accuracy / sensitivity / specificity at the threshold that maximises balanced accuracy on validation, beside the majority
/// baseline from the training split's labels (whose AUROC is 0.5 by construction: one score for every study).
/// Only studies that state the observation (1 or 0) count for it; uncertain and unmentioned ones are left out.
/// </summary>
public static class LabelEvaluation
{
    public static LabelEvaluationResult Run(VisionEncoder encoder, FindingClassifier head, PreprocessConfig preprocess,
        IReadOnlyList<Study> studies, string split, int batchSize = 16, int? maxStudies = null, IProgress<(int Done, int Total)>? progress = null,
        CancellationToken cancel = default)
    {
        bool HasImage(Study s) => s.Labels is not null && s.Images.Any(i => File.Exists(i.Path));
        var evaluated = studies.Where(s => s.Split == split && HasImage(s)).Take(maxStudies ?? int.MaxValue).ToList();
        var val = split == Splits.Val ? [] : studies.Where(s => s.Split == Splits.Val && HasImage(s)).Take(maxStudies ?? int.MaxValue).ToList();
        var train = studies.Where(s => s.Split == Splits.Train && s.Labels is not null).ToList();
        if (evaluated.Count == 0) throw new XrayVLException($"no labelled study with an image on disk in split '{split}'");

        int total = evaluated.Count + val.Count, done = 0;
        void Step(int n) => progress?.Report((done += n, total));
        var scoresEval = Score(encoder, head, preprocess, evaluated, batchSize, Step, cancel);
        var scoresVal = Score(encoder, head, preprocess, val, batchSize, Step, cancel);

        var figures = new List<LabelFigures>();
        for (int o = 0; o < Observations.Names.Count; o++)
        {
            string name = Observations.Names[o];
            var (s, t) = Stated(evaluated, scoresEval, name, o);
            if (s.Count == 0) continue;
            var (vs, vt) = Stated(val, scoresVal, name, o);
            double threshold = vs.Count > 0 ? LabelMetrics.BestThreshold(vs, vt) : 0.5;
            var reference = train.Where(x => x.Labels![name] is 0 or 1).Select(x => x.Labels![name] == 1).ToList();
            var (sensitivity, specificity) = LabelMetrics.Rates(s, t, threshold);
            figures.Add(new LabelFigures(name, s.Count, t.Count(x => x), LabelMetrics.Auroc(s, t), threshold,
                LabelMetrics.Accuracy(s, t, threshold), sensitivity, specificity, LabelMetrics.MajorityAccuracy(reference, t), vs.Count));
        }
        var perStudy = evaluated.Select((study, i) => new StudyLabelScores(study.StudyId, study.Language,
            Observations.Names.Select((name, o) => (name, o)).ToDictionary(x => x.name, x => scoresEval[i, x.o]))).ToList();
        return new LabelEvaluationResult(figures, perStudy);
    }

    /// <summary>The scores and truths of the studies that state observation <paramref name="o"/> as 1 or 0.</summary>
    private static (List<double> Scores, List<bool> Truth) Stated(IReadOnlyList<Study> studies, float[,] scores, string name, int o)
    {
        var s = new List<double>();
        var t = new List<bool>();
        for (int i = 0; i < studies.Count; i++)
        {
            if (studies[i].Labels![name] is not (0 or 1)) continue;
            s.Add(scores[i, o]);
            t.Add(studies[i].Labels![name] == 1);
        }
        return (s, t);
    }

    /// <summary>Probabilities (studies × 14): the mean over each study's images on disk.</summary>
    private static float[,] Score(VisionEncoder encoder, FindingClassifier head, PreprocessConfig preprocess, IReadOnlyList<Study> studies,
        int batchSize, Action<int> step, CancellationToken cancel)
    {
        int labels = Observations.Names.Count;
        var result = new float[studies.Count, labels];
        var images = studies.SelectMany((s, i) => s.Images.Where(im => File.Exists(im.Path)).Select(im => (Study: i, im.Path))).ToList();
        var counts = new int[studies.Count];
        var device = encoder.parameters().First().device;
        encoder.eval();
        head.eval();
        using var _ = no_grad();
        for (int start = 0; start < images.Count; start += batchSize)
        {
            cancel.ThrowIfCancellationRequested();
            var chunk = images.Skip(start).Take(batchSize).ToList();
            using var scope = NewDisposeScope();
            var pixels = Preprocess.Batch(chunk.Select(c => ImageFile.Load(c.Path)), preprocess).to(device);
            var p = head.Probabilities(encoder, pixels).to(ScalarType.Float32).cpu().data<float>().ToArray();
            for (int k = 0; k < chunk.Count; k++)
            {
                int s = chunk[k].Study;
                counts[s]++;
                for (int o = 0; o < labels; o++) result[s, o] += p[k * labels + o];
            }
            int finished = chunk.Select(c => c.Study).Distinct().Count(s => counts[s] == studies[s].Images.Count(im => File.Exists(im.Path)));
            step(finished);
        }
        for (int s = 0; s < studies.Count; s++)
            for (int o = 0; o < labels; o++) result[s, o] /= Math.Max(1, counts[s]);
        return result;
    }

    /// <summary>A Markdown table of the figures (3 decimals; "–" for what is undefined).</summary>
    public static string Markdown(IReadOnlyList<LabelFigures> figures, string split)
    {
        static string F(double v) => double.IsNaN(v) ? "–" : v.ToString("0.000", CultureInfo.InvariantCulture);
        var sb = new StringBuilder();
        sb.AppendLine($"## Labels from the classifier head ({split} split)");
        sb.AppendLine();
        sb.AppendLine("Threshold: the one with the best balanced accuracy (mean of sensitivity and specificity) on the val split. Majority: always the training split's commoner class (AUROC 0.5).");
        sb.AppendLine();
        sb.AppendLine("| label | n | positives | AUROC | threshold | accuracy | sensitivity | specificity | majority accuracy |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var f in figures)
            sb.AppendLine($"| {f.Label} | {f.Count} | {f.Positives} | {F(f.Auroc)} | {F(f.Threshold)} | {F(f.Accuracy)} | {F(f.Sensitivity)} | {F(f.Specificity)} | {F(f.MajorityAccuracy)} |");
        return sb.ToString();
    }
}
