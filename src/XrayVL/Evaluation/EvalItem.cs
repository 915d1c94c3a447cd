namespace XrayVL.Evaluation;

/// <summary>The tasks `xrayvl eval --tasks` names.</summary>
public static class EvalTasks
{
    /// <summary>Report generation, scored with the caption metrics and clinical efficacy, beside the baselines.</summary>
    public const string Report = "report";
    /// <summary>Closed questions built from the labels (yes / no / uncertain), scored by accuracy.</summary>
    public const string Vqa = "vqa";
    /// <summary>The finding-list question; the answer's labels (by the labeler) against the study's labels: CE figures.</summary>
    public const string Classify = "classify";
    /// <summary>Boxes asked for studies that have them, scored by IoU.</summary>
    public const string Ground = "ground";

    public static readonly IReadOnlyList<string> All = [Report, Vqa, Classify, Ground];

    /// <summary>Per-label AUROC and accuracy from the model's classifier head (<see cref="LabelEvaluation"/>); asked for by name.</summary>
    public const string Labels = "labels";

    /// <summary>Every task name `--tasks` accepts: the generation tasks and <see cref="Labels"/>.</summary>
    public static readonly IReadOnlyList<string> Known = [.. All, Labels];

    /// <summary>Parses "report,vqa" (comma or space separated); throws naming an unknown task.</summary>
    public static List<string> Parse(string tasks)
    {
        var list = tasks.Split([',', ' '], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(t => t.ToLowerInvariant()).Distinct().ToList();
        foreach (string t in list)
            if (!Known.Contains(t)) throw new XrayVLException($"unknown eval task '{t}'; expected some of: {string.Join(", ", Known)}");
        if (list.Count == 0) throw new XrayVLException("no eval task given; expected some of: " + string.Join(", ", Known));
        return list;
    }
}

/// <summary>
/// One evaluated question: what was asked about which study, the model's answer and the references — one line of
/// predictions.jsonl. Report items also carry the baselines' predictions for the same study.
/// </summary>
public sealed record EvalItem
{
    /// <summary>Unique in a run: "{study}-{task}-{lang}-{k}".</summary>
    public required string Id { get; init; }
    /// <summary>One of <see cref="EvalTasks.All"/>.</summary>
    public required string Task { get; init; }
    public required string StudyId { get; init; }
    /// <summary>"en" or "zh": the prompt's language, and how the answer is tokenized and labeled.</summary>
    public required string Language { get; init; }
    public IReadOnlyList<string> Images { get; init; } = [];
    public required string Prompt { get; init; }
    public required string Prediction { get; init; }
    /// <summary>One or more reference answers (the first is what the labeler reads for CE).</summary>
    public required IReadOnlyList<string> References { get; init; }
    /// <summary>Classify items: the study's labels (1 / 0 / −1 / null per observation) the answer is scored against.</summary>
    public IReadOnlyDictionary<string, int?>? ReferenceLabels { get; init; }
    /// <summary>
    /// Baseline name (<see cref="Evaluation.Baselines"/>) → that baseline's answer to this item: reports for report
    /// items, the majority findings as a finding list for classify items, the mean training box for ground items.
    /// </summary>
    public IReadOnlyDictionary<string, string>? Baselines { get; init; }
}

/// <summary>Report generation figures of one language: the model and each baseline, with per-label F1.</summary>
public sealed record ReportTaskMetrics
{
    public int Items { get; init; }
    public required TextScores Model { get; init; }
    /// <summary>Baseline name → its scores on the same items.</summary>
    public IReadOnlyDictionary<string, TextScores> Baselines { get; init; } = new Dictionary<string, TextScores>();
    /// <summary>System ("model" or a baseline name) → observation name → F1.</summary>
    public IReadOnlyDictionary<string, IReadOnlyDictionary<string, double>> PerLabelF1 { get; init; } = new Dictionary<string, IReadOnlyDictionary<string, double>>();
    /// <summary>
    /// Study-level normal/abnormal confusion of the model's reports against the references (rows: reference normal,
    /// abnormal; columns: predicted normal, abnormal); abnormal = any of the 12 findings other than No Finding and
    /// Support Devices labeled positive.
    /// </summary>
    public int[][] NormalAbnormalConfusion { get; init; } = [];
    /// <summary>Mean report length in caption tokens: generated and reference.</summary>
    public double MeanPredictionTokens { get; init; }
    public double MeanReferenceTokens { get; init; }
}

/// <param name="MajorityAnswer">The most common reference answer of these questions.</param>
/// <param name="MajorityAccuracy">Accuracy of always giving <paramref name="MajorityAnswer"/>: the majority-class baseline
/// (chosen on the evaluated questions themselves, so it is the best any constant answer can do here).</param>
public sealed record VqaTaskMetrics(double Accuracy, int Correct, int Items, int Unparsed, int[][] Confusion, string MajorityAnswer, double MajorityAccuracy)
{
    /// <summary>Accuracy of the training split's majority answer to the same question (<see cref="Baselines.QuestionPriorName"/>), when every item has one.</summary>
    public double? QuestionPriorAccuracy { get; init; }
}

public sealed record ClassifyTaskMetrics(
    double MicroF1, double MacroF1, double MicroPrecision, double MicroRecall, double MacroPrecision, double MacroRecall,
    double Accuracy, double ExactMatch, int Items, IReadOnlyDictionary<string, double> PerLabelF1)
{
    /// <summary>The same figures for the majority-findings answer (<see cref="Baselines.MajorityFindingsName"/>), when every item has one.</summary>
    public ClassifyTaskMetrics? MajorityBaseline { get; init; }
}

public sealed record GroundTaskMetrics(double MeanIou, double AccuracyAtIou50, int Items, int Unparsed)
{
    /// <summary>The same figures for the mean training box (<see cref="Baselines.MeanBoxName"/>), when every item has one.</summary>
    public GroundTaskMetrics? MeanBoxBaseline { get; init; }
}

/// <summary>Everything metrics.json holds. Tasks that were not run are absent (null).</summary>
public sealed record EvalMetrics
{
    public required string Model { get; init; }
    public required string Split { get; init; }
    public int Studies { get; init; }
    /// <summary>Language → report figures (one entry per language among the report items).</summary>
    public IReadOnlyDictionary<string, ReportTaskMetrics>? Report { get; init; }
    public VqaTaskMetrics? Vqa { get; init; }
    public ClassifyTaskMetrics? Classify { get; init; }
    public GroundTaskMetrics? Ground { get; init; }
    /// <summary>Things a reader should know (baselines that could not be built, tasks without items, ...).</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];
}
