using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using XrayVL.IO;
using XrayVL.Plotting;

namespace XrayVL.Training;

/// <summary>One line of metrics.jsonl: an optimizer step, with the validation loss when one was measured after it.</summary>
public sealed record MetricsLine
{
    public required string Stage { get; init; }
    /// <summary>Global step (over all stages).</summary>
    public required long Step { get; init; }
    public required long StageStep { get; init; }
    public required int Epoch { get; init; }
    public required double Loss { get; init; }
    public required double Lr { get; init; }
    public required double GradNorm { get; init; }
    public required double TokensPerS { get; init; }
    public required double ElapsedS { get; init; }
    public double? ValLoss { get; init; }
}

/// <summary>
/// The run's logs in the output folder: metrics.jsonl (one <see cref="MetricsLine"/> per step), samples.jsonl (sample
/// generations with their references), train.log (notes, evaluations, checkpoints, samples as text) and loss.png (train
/// and validation loss against the global step). A resumed run first drops the lines past the step it resumes from.
/// </summary>
public sealed class TrainingLog
{
    public const string MetricsFile = "metrics.jsonl";
    public const string SamplesFile = "samples.jsonl";
    public const string TextFile = "train.log";
    public const string LossChartFile = "loss.png";

    private readonly string folder;
    private readonly List<MetricsLine> lines = [];

    public TrainingLog(string folder, long resumeFromGlobalStep)
    {
        this.folder = folder;
        Directory.CreateDirectory(folder);
        string metrics = Path.Combine(folder, MetricsFile);
        if (resumeFromGlobalStep > 0 && File.Exists(metrics))
        {
            foreach (string text in File.ReadLines(metrics))
            {
                if (string.IsNullOrWhiteSpace(text)) continue;
                MetricsLine? line;
                try { line = JsonSerializer.Deserialize<MetricsLine>(text, Json.Line); }
                catch (JsonException) { continue; }   // a line cut by a crash mid-write
                if (line is not null && line.Step <= resumeFromGlobalStep) lines.Add(line);
            }
        }
        // Rewrite: the kept lines only (a fresh run starts empty).
        AtomicFile.WriteLines(metrics, lines.Select(l => JsonSerializer.Serialize(l, Json.Line)));
        TrimJsonl(Path.Combine(folder, SamplesFile), resumeFromGlobalStep);
        if (resumeFromGlobalStep == 0) File.WriteAllText(Path.Combine(folder, TextFile), "");
    }

    public IReadOnlyList<MetricsLine> Lines => lines;

    public void Step(MetricsLine line)
    {
        lines.Add(line);
        File.AppendAllText(Path.Combine(folder, MetricsFile), JsonSerializer.Serialize(line, Json.Line) + "\n", Encoding.UTF8);
    }

    /// <summary>Records a validation loss on the last logged step (rewrites that line).</summary>
    public void Validation(double valLoss)
    {
        if (lines.Count == 0) return;
        lines[^1] = lines[^1] with { ValLoss = valLoss };
        AtomicFile.WriteLines(Path.Combine(folder, MetricsFile), lines.Select(l => JsonSerializer.Serialize(l, Json.Line)));
    }

    public void Samples(SamplesGenerated samples)
    {
        var sb = new StringBuilder();
        foreach (var s in samples.Samples)
        {
            sb.Append(JsonSerializer.Serialize(new
            {
                stage = samples.Stage, step = samples.GlobalStep, stage_step = samples.Step, language = s.Language, images = s.Images,
                prompt = s.Prompt, generated = s.Generated, reference = s.Reference,
            }, Json.Line)).Append('\n');
            Text($"sample @ {samples.GlobalStep} [{samples.Stage}] {s.Prompt}\n  generated: {s.Generated}\n  reference: {s.Reference}");
        }
        File.AppendAllText(Path.Combine(folder, SamplesFile), sb.ToString(), Encoding.UTF8);
    }

    /// <summary>A timestamped line in train.log.</summary>
    public void Text(string message) =>
        File.AppendAllText(Path.Combine(folder, TextFile),
            $"{DateTime.Now.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture)} {message}\n", Encoding.UTF8);

    /// <summary>Redraws loss.png: training loss (a moving average over 20 steps, to be readable) and validation loss.
    /// Stages train different parts on different data, so neither curve runs on from one stage into the next: the
    /// average restarts and both lines break at each stage boundary (a NaN point is a break for <see cref="Charts.Line"/>).</summary>
    public void DrawLossChart()
    {
        if (lines.Count == 0) return;
        List<double> x = [], smoothed = [], valX = [], valY = [];
        foreach (var stage in StageRuns(lines))
        {
            if (x.Count > 0) { x.Add(double.NaN); smoothed.Add(double.NaN); }
            if (valX.Count > 0 && stage.Any(l => l.ValLoss is not null)) { valX.Add(double.NaN); valY.Add(double.NaN); }
            double windowSum = 0;
            for (int i = 0; i < stage.Count; i++)
            {
                windowSum += stage[i].Loss;
                if (i >= 20) windowSum -= stage[i - 20].Loss;
                x.Add(stage[i].Step);
                smoothed.Add(windowSum / Math.Min(i + 1, 20));
                if (stage[i].ValLoss is { } v) { valX.Add(stage[i].Step); valY.Add(v); }
            }
        }
        var series = new List<Series> { new("train (mean of 20 steps)", x, smoothed) };
        if (valX.Count > 0) series.Add(new Series("validation", valX, valY));
        Charts.Line(Path.Combine(folder, LossChartFile), "Loss", "step", "cross-entropy", series, logY: true);
    }

    /// <summary>Consecutive lines of the same stage.</summary>
    private static List<List<MetricsLine>> StageRuns(IReadOnlyList<MetricsLine> lines)
    {
        var runs = new List<List<MetricsLine>>();
        foreach (var line in lines)
        {
            if (runs.Count == 0 || runs[^1][^1].Stage != line.Stage) runs.Add([]);
            runs[^1].Add(line);
        }
        return runs;
    }

    private static void TrimJsonl(string path, long keepUpToStep)
    {
        if (!File.Exists(path)) return;
        var kept = new List<string>();
        if (keepUpToStep > 0)
            foreach (string text in File.ReadLines(path))
            {
                try
                {
                    if (JsonNode.Parse(text)?["step"]?.GetValue<long>() is long step && step <= keepUpToStep) kept.Add(text);
                }
                catch (JsonException) { /* a line cut by a crash */ }
            }
        AtomicFile.WriteLines(path, kept);
    }
}
