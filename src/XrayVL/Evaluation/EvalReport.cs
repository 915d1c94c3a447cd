using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using XrayVL.Data;
using XrayVL.Data.Labeler;
using XrayVL.IO;
using XrayVL.Plotting;

namespace XrayVL.Evaluation;

/// <summary>
/// Turns evaluated items into metrics and writes an evaluation folder: predictions.jsonl (one <see cref="EvalItem"/>
/// per line), metrics.json (<see cref="EvalMetrics"/>), report.md (tables: model beside the baselines per metric) and
/// PNG plots — per-label F1 bars (model and baselines), the normal/abnormal confusion matrix of the generated reports,
/// and the length distribution of generated and reference reports, one of each per report language.
/// </summary>
public static partial class EvalReport
{
    public const string PredictionsFile = "predictions.jsonl";
    public const string MetricsFile = "metrics.json";
    public const string ReportFile = "report.md";

    /// <summary>Row names of the baselines in tables, in display order.</summary>
    private static readonly (string Key, string Title)[] BaselineTitles =
    [
        (Baselines.MostCommonName, "most common training report"),
        (Baselines.ConsensusName, "consensus training report (retrieval)"),
        (Baselines.RandomName, "random training report"),
        (Baselines.NearestNeighbourName, "nearest neighbour (image features)"),
    ];

    /// <summary>Computes every task's figures from the items (items of tasks not present give null sections).</summary>
    public static EvalMetrics Compute(IReadOnlyList<EvalItem> items, string model, string split, IEnumerable<string>? notes = null, ILabeler? labeler = null)
    {
        labeler = new CachingLabeler(labeler ?? Labeler.Default);
        var noteList = notes?.ToList() ?? [];
        var reports = items.Where(i => i.Task == EvalTasks.Report).ToList();
        var vqa = items.Where(i => i.Task == EvalTasks.Vqa).ToList();
        var classify = items.Where(i => i.Task == EvalTasks.Classify).ToList();
        var ground = items.Where(i => i.Task == EvalTasks.Ground).ToList();

        Dictionary<string, ReportTaskMetrics>? reportMetrics = null;
        if (reports.Count > 0)
        {
            reportMetrics = [];
            foreach (var group in reports.GroupBy(i => i.Language).OrderBy(g => g.Key, StringComparer.Ordinal))
                reportMetrics[group.Key] = ReportFigures(group.ToList(), group.Key, labeler, noteList);
        }

        VqaTaskMetrics? vqaMetrics = null;
        if (vqa.Count > 0)
        {
            var r = VqaAccuracy.Score(vqa.Select(i => i.Prediction).ToList(), vqa.Select(i => i.References[0]).ToList());
            var confusion = ToJagged(r.Confusion);
            int majority = Enumerable.Range(0, VqaResult.Classes.Count).MaxBy(c => confusion[c].Sum());   // reference rows
            vqaMetrics = new VqaTaskMetrics(r.Accuracy, r.Correct, r.Total, r.Unparsed, confusion,
                VqaResult.Classes[majority], r.Total == 0 ? 0 : confusion[majority].Sum() / (double)r.Total);
            if (vqa.All(i => i.Baselines?.ContainsKey(Baselines.QuestionPriorName) == true))
                vqaMetrics = vqaMetrics with
                {
                    QuestionPriorAccuracy = VqaAccuracy.Score(vqa.Select(i => i.Baselines![Baselines.QuestionPriorName]).ToList(), vqa.Select(i => i.References[0]).ToList()).Accuracy,
                };
        }

        ClassifyTaskMetrics? classifyMetrics = null;
        if (classify.Count > 0)
        {
            var truth = classify.Select(i => ClinicalEfficacy.Binary(i.ReferenceLabels != null
                ? ChexpertLabels.FromDictionary(i.ReferenceLabels)
                : labeler.Label(i.References[0], i.Language))).ToList();
            ClassifyTaskMetrics Classify(Func<EvalItem, string> answer)
            {
                var predicted = classify.Select(i => ClinicalEfficacy.Binary(labeler.Label(answer(i), i.Language))).ToList();
                var ce = ClinicalEfficacy.FromVectors(predicted, truth);
                return new ClassifyTaskMetrics(ce.MicroF1, ce.MacroF1, ce.MicroPrecision, ce.MicroRecall, ce.MacroPrecision, ce.MacroRecall,
                    ce.Accuracy, ce.ExactMatch, ce.Items, ce.PerLabel.ToDictionary(l => l.Label, l => l.F1));
            }
            classifyMetrics = Classify(i => i.Prediction);
            if (classify.All(i => i.Baselines?.ContainsKey(Baselines.MajorityFindingsName) == true))
                classifyMetrics = classifyMetrics with { MajorityBaseline = Classify(i => i.Baselines![Baselines.MajorityFindingsName]) };
        }

        GroundTaskMetrics? groundMetrics = null;
        if (ground.Count > 0)
        {
            var references = ground.Select(i => i.References[0]).ToList();
            GroundTaskMetrics Ground(Func<EvalItem, string> answer)
            {
                var g = Grounding.Score(ground.Select(answer).ToList(), references);
                return new GroundTaskMetrics(g.MeanIoU, g.AccuracyAt50, g.Items, g.Unparsed);
            }
            groundMetrics = Ground(i => i.Prediction);
            if (ground.All(i => i.Baselines?.ContainsKey(Baselines.MeanBoxName) == true))
                groundMetrics = groundMetrics with { MeanBoxBaseline = Ground(i => i.Baselines![Baselines.MeanBoxName]) };
        }

        return new EvalMetrics
        {
            Model = model,
            Split = split,
            Studies = items.Select(i => i.StudyId).Distinct().Count(),
            Report = reportMetrics,
            Vqa = vqaMetrics,
            Classify = classifyMetrics,
            Ground = groundMetrics,
            Notes = noteList,
        };
    }

    private static ReportTaskMetrics ReportFigures(List<EvalItem> items, string lang, ILabeler labeler, List<string> notes)
    {
        var references = items.Select(i => (IReadOnlyList<string>)i.References.Select(ReportText).ToList()).ToList();
        var predictions = items.Select(i => ReportText(i.Prediction)).ToList();
        var model = Scorer.Score(predictions, references, lang, labeler);
        var baselines = new Dictionary<string, TextScores>();
        var perLabel = new Dictionary<string, IReadOnlyDictionary<string, double>> { ["model"] = F1ByLabel(model) };
        var names = items.SelectMany(i => i.Baselines?.Keys ?? []).Distinct().OrderBy(BaselineOrder).ToList();
        foreach (string name in names)
        {
            if (items.Any(i => i.Baselines is null || !i.Baselines.ContainsKey(name)))
            {
                notes.Add($"baseline '{name}' ({lang}) is missing for some report items and was left out");
                continue;
            }
            var scores = Scorer.Score(items.Select(i => ReportText(i.Baselines![name])).ToList(), references, lang, labeler);
            baselines[name] = scores;
            perLabel[name] = F1ByLabel(scores);
        }

        // Normal / abnormal at study level, from the same labels CE used.
        var confusion = new[] { new int[2], new int[2] };
        for (int i = 0; i < items.Count; i++)
        {
            int truth = IsAbnormal(labeler.Label(references[i][0], lang)) ? 1 : 0;
            int predicted = IsAbnormal(labeler.Label(predictions[i], lang)) ? 1 : 0;
            confusion[truth][predicted]++;
        }
        return new ReportTaskMetrics
        {
            Items = items.Count,
            Model = model,
            Baselines = baselines,
            PerLabelF1 = perLabel,
            NormalAbnormalConfusion = confusion,
            MeanPredictionTokens = predictions.Average(p => CaptionTokenizer.Tokenize(p, lang).Length),
            MeanReferenceTokens = references.Average(r => CaptionTokenizer.Tokenize(r[0], lang).Length),
        };
    }

    private static int BaselineOrder(string name)
    {
        int i = Array.FindIndex(BaselineTitles, b => b.Key == name);
        return i < 0 ? BaselineTitles.Length : i;
    }

    private static IReadOnlyDictionary<string, double> F1ByLabel(TextScores scores) =>
        scores.ClinicalEfficacy!.PerLabel.ToDictionary(l => l.Label, l => l.F1);

    /// <summary>Any of the 12 findings (not No Finding, not Support Devices) positive.</summary>
    public static bool IsAbnormal(ChexpertLabels labels) =>
        Observations.All.Any(o => o is not (Observation.NoFinding or Observation.SupportDevices) && labels[o] == LabelValue.Positive);

    [GeneratedRegex(@"(?im)^\s*(findings|impression)\s*[:：]\s*|^\s*(所见|印象|检查所见|诊断意见)\s*[:：]\s*")]
    private static partial Regex SectionHeader();

    /// <summary>A report as scored: the section headers the training answers use ("Findings:", "印象：") removed, lines joined.</summary>
    public static string ReportText(string text) =>
        string.Join(" ", SectionHeader().Replace(text, "").Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries));

    private static int[][] ToJagged(int[,] m) =>
        Enumerable.Range(0, m.GetLength(0)).Select(r => Enumerable.Range(0, m.GetLength(1)).Select(c => m[r, c]).ToArray()).ToArray();

    /// <summary>Writes predictions.jsonl, metrics.json, the plots and report.md into <paramref name="outDir"/>; returns the written paths.</summary>
    public static List<string> Write(string outDir, IReadOnlyList<EvalItem> items, EvalMetrics metrics)
    {
        Directory.CreateDirectory(outDir);
        var written = new List<string>();
        string predictionsPath = Path.Combine(outDir, PredictionsFile);
        AtomicFile.WriteLines(predictionsPath, items.Select(i => JsonSerializer.Serialize(i, Json.Line)));
        written.Add(predictionsPath);
        string metricsPath = Path.Combine(outDir, MetricsFile);
        AtomicFile.WriteAllText(metricsPath, JsonSerializer.Serialize(metrics, Json.Options) + "\n");
        written.Add(metricsPath);

        var md = new StringBuilder();
        md.AppendLine($"# Evaluation of {metrics.Model} on the {metrics.Split} split").AppendLine();
        md.AppendLine($"{metrics.Studies} studies; {items.Count} questions ({string.Join(", ", items.GroupBy(i => i.Task).Select(g => $"{g.Key}: {g.Count()}"))}).");
        md.AppendLine("XrayVL is a research tool; these figures say nothing about clinical use.").AppendLine();

        foreach (var (lang, report) in metrics.Report ?? new Dictionary<string, ReportTaskMetrics>())
        {
            md.AppendLine($"## Report generation ({lang}, {report.Items} studies)").AppendLine();
            md.AppendLine("| predictions | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | METEOR* | ROUGE-L | CIDEr | CE micro P | CE micro R | CE micro F1 | CE macro F1 |");
            md.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|");
            md.AppendLine(ScoreRow($"**{metrics.Model}**", report.Model));
            foreach (var (key, title) in BaselineTitles)
                if (report.Baselines.TryGetValue(key, out var s)) md.AppendLine(ScoreRow(title, s));
            md.AppendLine();
            md.AppendLine("Text metrics on coco-caption-style tokens (lower case, punctuation removed" + (lang == "zh" ? "; Chinese on characters" : "") +
                "); CIDEr is CIDEr-D; *METEOR is this project's approximation (exact + Porter-stem matches, no synonyms), not the official scorer. " +
                "CE: the project's labeler on generated and reference reports, positive = label 1, over the 14 CheXpert observations.").AppendLine();
            md.AppendLine($"Mean length: {F(report.MeanPredictionTokens, "0.0")} tokens generated, {F(report.MeanReferenceTokens, "0.0")} in the references.").AppendLine();

            var systems = report.PerLabelF1.Keys.ToList();
            md.AppendLine("| observation | " + string.Join(" | ", systems.Select(SystemTitle)) + " |");
            md.AppendLine("|---|" + string.Concat(systems.Select(_ => "---|")));
            foreach (string label in Observations.Names)
                md.AppendLine($"| {label} | " + string.Join(" | ", systems.Select(s => F(report.PerLabelF1[s][label]))) + " |");
            md.AppendLine();

            string f1Png = $"per_label_f1_{lang}.png";
            Charts.Bars(Path.Combine(outDir, f1Png), $"Per-label F1, generated reports ({lang})", "F1", Observations.Names,
                systems.Select(s => (SystemTitle(s), (IReadOnlyList<double>)Observations.Names.Select(l => report.PerLabelF1[s][l]).ToList())).ToList(), yMax: 1);
            string confusionPng = $"confusion_normal_abnormal_{lang}.png";
            var c = report.NormalAbnormalConfusion;
            Charts.Heatmap(Path.Combine(outDir, confusionPng), $"Normal vs abnormal, model reports ({lang})", ["normal", "abnormal"], ["normal", "abnormal"],
                new double[,] { { c[0][0], c[0][1] }, { c[1][0], c[1][1] } });
            string lengthPng = $"report_lengths_{lang}.png";
            var reportItems = items.Where(i => i.Task == EvalTasks.Report && i.Language == lang).ToList();
            Charts.Histogram(Path.Combine(outDir, lengthPng), $"Report length in tokens ({lang})", "tokens",
            [
                ("generated", reportItems.Select(i => (double)CaptionTokenizer.Tokenize(ReportText(i.Prediction), lang).Length).ToList()),
                ("reference", reportItems.Select(i => (double)CaptionTokenizer.Tokenize(ReportText(i.References[0]), lang).Length).ToList()),
            ]);
            written.AddRange(new[] { f1Png, confusionPng, lengthPng }.Select(p => Path.Combine(outDir, p)));
            md.AppendLine($"![per-label F1]({f1Png})").AppendLine();
            md.AppendLine("Normal vs abnormal (a study is abnormal when any of the 12 findings other than No Finding and Support Devices is positive); rows: reference, columns: generated.").AppendLine();
            md.AppendLine("| reference \\ generated | normal | abnormal |").AppendLine("|---|---|---|");
            md.AppendLine($"| normal | {c[0][0]} | {c[0][1]} |").AppendLine($"| abnormal | {c[1][0]} | {c[1][1]} |").AppendLine();
            md.AppendLine($"![normal vs abnormal]({confusionPng})").AppendLine();
            md.AppendLine($"![report lengths]({lengthPng})").AppendLine();
            foreach (var example in reportItems.Take(3))
            {
                md.AppendLine($"- **{example.StudyId}** generated: {Quote(example.Prediction)}");
                md.AppendLine($"  reference: {Quote(example.References[0])}");
            }
            md.AppendLine();
        }

        if (metrics.Vqa is { } vqa)
        {
            md.AppendLine($"## Closed questions ({vqa.Items})").AppendLine();
            md.AppendLine($"Accuracy **{F(vqa.Accuracy)}** ({vqa.Correct} of {vqa.Items}; answers that were not yes/no/uncertain: {vqa.Unparsed}); " +
                          $"majority-class baseline (always \"{vqa.MajorityAnswer}\"): {F(vqa.MajorityAccuracy)}" +
                          (vqa.QuestionPriorAccuracy is { } prior ? $"; question prior (the training split's most common answer to the same question, no image): {F(prior)}." : ".")).AppendLine();
            md.AppendLine("| reference \\ answer | yes | no | uncertain | other |").AppendLine("|---|---|---|---|---|");
            for (int r = 0; r < VqaResult.Classes.Count; r++)
                md.AppendLine($"| {VqaResult.Classes[r]} | {string.Join(" | ", vqa.Confusion[r])} |");
            md.AppendLine();
        }
        if (metrics.Classify is { } cls)
        {
            md.AppendLine($"## Finding classification ({cls.Items})").AppendLine();
            md.AppendLine("The finding-list answer, read by the labeler, against the study's labels (positive = 1).").AppendLine();
            md.AppendLine("| answers | micro P | micro R | micro F1 | macro P | macro R | macro F1 | accuracy | exact match |").AppendLine("|---|---|---|---|---|---|---|---|---|");
            static string Row(string name, ClassifyTaskMetrics c) =>
                $"| {name} | {F(c.MicroPrecision)} | {F(c.MicroRecall)} | {F(c.MicroF1)} | {F(c.MacroPrecision)} | {F(c.MacroRecall)} | {F(c.MacroF1)} | {F(c.Accuracy)} | {F(c.ExactMatch)} |";
            md.AppendLine(Row("**model**", cls));
            if (cls.MajorityBaseline is { } majority) md.AppendLine(Row("majority findings of the training split (no image)", majority));
            md.AppendLine();
        }
        if (metrics.Ground is { } g)
        {
            md.AppendLine($"## Grounding ({g.Items})").AppendLine();
            md.AppendLine($"Mean IoU **{F(g.MeanIou)}**, accuracy at IoU ≥ 0.5 **{F(g.AccuracyAtIou50)}** (answers without a box: {g.Unparsed}).");
            if (g.MeanBoxBaseline is { } mean)
                md.AppendLine($"The mean training box of the asked-for label, the same for every image: mean IoU {F(mean.MeanIou)}, accuracy at IoU ≥ 0.5 {F(mean.AccuracyAtIou50)}.");
            md.AppendLine();
        }
        if (metrics.Notes.Count > 0)
        {
            md.AppendLine("## Notes").AppendLine();
            foreach (string note in metrics.Notes) md.AppendLine($"- {note}");
            md.AppendLine();
        }
        string reportPath = Path.Combine(outDir, ReportFile);
        AtomicFile.WriteAllText(reportPath, md.ToString());
        written.Add(reportPath);
        return written;
    }

    /// <summary>Reads a predictions.jsonl back (for re-scoring); errors name the file and line.</summary>
    public static List<EvalItem> ReadPredictions(string path)
    {
        var items = new List<EvalItem>();
        foreach (var (line, text) in Manifest.ReadLines(path))
        {
            try
            {
                items.Add(JsonSerializer.Deserialize<EvalItem>(text, Json.Line) ?? throw new XrayVLException($"{path}:{line}: null instead of an item"));
            }
            catch (JsonException e) { throw new XrayVLException($"{path}:{line}: not a prediction line ({e.Message.Split('\n')[0]})", e); }
        }
        return items;
    }

    private static string SystemTitle(string key) => key == "model" ? "model" : BaselineTitles.FirstOrDefault(b => b.Key == key).Title ?? key;

    private static string ScoreRow(string name, TextScores s) =>
        $"| {name} | {F(s.Bleu1)} | {F(s.Bleu2)} | {F(s.Bleu3)} | {F(s.Bleu4)} | {F(s.Meteor)} | {F(s.RougeL)} | {F(s.Cider)} | {F(s.CeMicroPrecision)} | {F(s.CeMicroRecall)} | {F(s.CeMicroF1)} | {F(s.CeMacroF1)} |";

    private static string F(double v, string format = "0.000") => v.ToString(format, CultureInfo.InvariantCulture);

    private static string Quote(string text)
    {
        string oneLine = text.Replace('\n', ' ').Replace("|", "\\|").Trim();
        return oneLine.Length == 0 ? "(empty)" : oneLine.Length > 300 ? oneLine[..300] + "…" : oneLine;
    }
}
