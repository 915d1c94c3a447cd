using System.Text;
using XrayVL.Data.Sources;
using XrayVL.IO;

namespace XrayVL.Data;

/// <summary>Options of `xrayvl data build` beyond the source's own.</summary>
public sealed record BuildOptions
{
    /// <summary>Seed of the patient-level split (used when the source gives no official split).</summary>
    public int Seed { get; init; } = 42;
    /// <summary>Train/val/test fractions of patients for the seeded split.</summary>
    public (double Train, double Val, double Test) Fractions { get; init; } = (0.8, 0.1, 0.1);
    /// <summary>Label studies that have report text and no labels yet.</summary>
    public bool Label { get; init; } = true;
    public string ManifestName { get; init; } = "manifest.jsonl";
}

/// <summary>What a build wrote and how.</summary>
public sealed record BuildResult(SourceResult Source, string ManifestPath, ManifestSummary Summary, string SplitMethod)
{
    /// <summary>The summary table plus the source's account of what it left out.</summary>
    public string ToText()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"source {Source.Source}: {Source.Records} records read → {Summary.Studies} studies written to {ManifestPath}");
        sb.AppendLine($"split: {SplitMethod}");
        sb.Append(Summary.ToTable());
        if (!Source.ImagesChecked) sb.AppendLine("images: not checked (no image folder given)");
        if (Source.MissingImages > 0)
            sb.AppendLine($"missing images: {Source.MissingImages} (e.g. {string.Join(", ", Source.MissingImageExamples.Take(5))})");
        if (Source.StudiesWithoutImages > 0) sb.AppendLine($"studies without any image on disk: {Source.StudiesWithoutImages}");
        if (Source.EmptyReports > 0)
            sb.AppendLine($"empty reports skipped: {Source.EmptyReports} (e.g. {string.Join(", ", Source.EmptyReportExamples.Take(5))})");
        foreach (string w in Source.Warnings) sb.AppendLine("note: " + w);
        return sb.ToString();
    }
}

/// <summary>
/// `xrayvl data build --source NAME ... --out DIR`: reads a source, sets splits (the official one when the source or
/// <see cref="SourceOptions.SplitFile"/> gives it, else a seeded patient-level split), labels the reports, and writes
/// DIR/manifest.jsonl and DIR/summary.json, each atomically (temporary file, then rename).
/// </summary>
public static class DatasetBuilder
{
    public static BuildResult Build(string sourceName, SourceOptions options, string outDir, BuildOptions? build = null)
    {
        build ??= new BuildOptions();
        var source = ReportSources.Create(sourceName);
        // MIMIC reads its own split CSV; for the other sources a split file is an R2Gen-style annotation.json.
        var result = source.Read(sourceName == "mimic" ? options : options with { SplitFile = null });
        List<Study> studies = result.Studies;
        // Nothing to write is a failed build, not an empty manifest with a split method to claim.
        if (studies.Count == 0)
        {
            string why = result.Records == 0 ? "it holds no records"
                : result.ImagesChecked && result.MissingImages > 0
                    ? $"none of its {result.Records} records has an image in {options.Images} (looked for e.g. " +
                      $"{string.Join(", ", result.MissingImageExamples.Take(3))}); check --images, or keep such studies with --keep-missing-images"
                    : $"none of its {result.Records} records has a report";
            // R2Gen's IU images are its own PNG export ({images}/CXR2384_IM-0942/0.png), which no other layout names.
            string hint = sourceName == "r2gen" && result.MissingImages > 0
                ? ". R2Gen's annotation expects R2Gen's image export ({images}/ID/0.png); for IU images in another layout, build with " +
                  "--source iu-csv --split-file ANNOTATION.json, which keeps the annotation's official split"
                : "";
            throw new XrayVLException($"{options.Input}: no studies to write: {why}{hint}");
        }

        string method;
        if (options.SplitFile != null && sourceName != "mimic")
        {
            studies = Splits.Apply(studies, R2GenSource.ReadSplitMap(options.SplitFile));
            method = $"official, from {Path.GetFileName(options.SplitFile)} (unlisted studies have no split)";
        }
        else if (studies.Count > 0 && studies.All(s => s.Split != null)) method = "official, from the source";
        else if (studies.All(s => s.Split == null))
        {
            studies = Splits.ByPatient(studies, build.Seed, build.Fractions);
            method = $"by patient, seed {build.Seed}, fractions {build.Fractions.Train}/{build.Fractions.Val}/{build.Fractions.Test}";
        }
        else
        {
            studies = CompleteSplits(studies, build);
            method = $"as given where given; the rest by patient, seed {build.Seed}";
        }

        if (build.Label)
        {
            var labeler = Labeler.Labeler.Default;
            studies = studies.Select(s => s.Labels == null && s.ReportText.Length > 0
                ? s with { Labels = labeler.Label(s.ReportText, s.Language).ToDictionary() }
                : s).ToList();
        }

        string manifestPath = Path.Combine(outDir, build.ManifestName);
        Manifest.Write(manifestPath, studies);
        var summary = ManifestSummary.From(studies);
        AtomicFile.WriteAllText(Path.Combine(outDir, "summary.json"), System.Text.Json.JsonSerializer.Serialize(new
        {
            source = sourceName,
            records = result.Records,
            split = method,
            summary,
            images_checked = result.ImagesChecked,
            missing_images = result.MissingImages,
            missing_image_examples = result.MissingImageExamples,
            studies_without_images = result.StudiesWithoutImages,
            empty_reports = result.EmptyReports,
            empty_report_examples = result.EmptyReportExamples,
            notes = result.Warnings,
        }, Json.Options));
        return new BuildResult(result, manifestPath, summary, method);
    }

    /// <summary>Keeps given splits; a patient with a split elsewhere keeps it; remaining patients are split by seed.</summary>
    private static List<Study> CompleteSplits(List<Study> studies, BuildOptions build)
    {
        var known = studies.Where(s => s.Split != null).GroupBy(s => s.PatientId).ToDictionary(g => g.Key, g => g.First().Split!);
        var rest = studies.Where(s => s.Split == null && !known.ContainsKey(s.PatientId)).ToList();
        var assigned = Splits.ByPatient(rest, build.Seed, build.Fractions).ToDictionary(s => s.StudyId, s => s.Split!);
        return studies.Select(s => s.Split != null ? s
            : s with { Split = known.TryGetValue(s.PatientId, out var sp) ? sp : assigned[s.StudyId] }).ToList();
    }
}

/// <summary>Counts of a manifest: studies, patients, images, views, languages, splits, sources, labels.</summary>
public sealed record ManifestSummary(
    int Studies, int Patients, int Images, int StudiesWithBoxes, int Labeled,
    IReadOnlyDictionary<string, int> Views, IReadOnlyDictionary<string, int> Languages,
    IReadOnlyDictionary<string, int> Splits, IReadOnlyDictionary<string, int> Sources,
    IReadOnlyDictionary<string, int> PositiveLabels)
{
    public const string None = "(none)";

    public static ManifestSummary From(IReadOnlyList<Study> studies)
    {
        static SortedDictionary<string, int> Count(IEnumerable<string> keys)
        {
            var d = new SortedDictionary<string, int>(StringComparer.Ordinal);
            foreach (string k in keys) d[k] = d.GetValueOrDefault(k) + 1;
            return d;
        }
        var positives = new Dictionary<string, int>();
        foreach (var name in Observations.Names)
            positives[name] = studies.Count(s => s.Labels != null && s.Labels.TryGetValue(name, out var v) && v == 1);
        return new ManifestSummary(
            studies.Count,
            studies.Select(s => s.PatientId).Distinct().Count(),
            studies.Sum(s => s.Images.Count),
            studies.Count(s => s.Boxes is { Count: > 0 }),
            studies.Count(s => s.Labels != null),
            Count(studies.SelectMany(s => s.Images).Select(i => i.View ?? "unknown")),
            Count(studies.Select(s => s.Language)),
            Count(studies.Select(s => s.Split ?? None)),
            Count(studies.Select(s => s.Source)),
            positives);
    }

    /// <summary>A plain-text table for the terminal.</summary>
    public string ToTable()
    {
        var sb = new StringBuilder();
        void Row(string name, object value) => sb.AppendLine($"  {name,-22}{value}");
        static string Join(IReadOnlyDictionary<string, int> d) => string.Join(", ", d.Select(kv => $"{kv.Key} {kv.Value}"));
        Row("studies", Studies);
        Row("patients", Patients);
        Row("images", Images);
        Row("views", Join(Views));
        Row("languages", Join(Languages));
        Row("splits", string.Join(", ", Data.Splits.Names.Append(None).Where(Splits.ContainsKey).Select(k => $"{k} {Splits[k]}")));
        Row("labeled studies", Labeled);
        if (StudiesWithBoxes > 0) Row("studies with boxes", StudiesWithBoxes);
        Row("positive labels", string.Join(", ", PositiveLabels.Where(kv => kv.Value > 0).Select(kv => $"{kv.Key} {kv.Value}")));
        return sb.ToString();
    }
}
