namespace XrayVL.Data.Sources;

/// <summary>
/// IU X-ray in the common CSV layout: <c>iu_reports.csv</c> (uid, MeSH, Problems, image, indication, comparison,
/// findings, impression) + <c>iu_projections.csv</c> (uid, filename, projection) + an image folder.
/// Input: the reports CSV or the folder holding both files. One study per report uid ("CXR{uid}"), images in
/// projections order; the MeSH and Problems terms are kept in <see cref="Study.Meta"/>.
/// </summary>
public sealed class IuCsvSource : IReportSource
{
    public string Name => "iu-csv";

    public SourceResult Read(SourceOptions options)
    {
        string reports = Directory.Exists(options.Input) ? FindReports(options.Input) : options.Input;
        string projectionsPath = IuProjections.Locate(options.Projections, reports)
            ?? throw new XrayVLException($"{reports}: no iu_projections.csv beside it; give the projections file");
        var projections = IuProjections.Load(projectionsPath);
        var folder = options.Images != null ? new IuImageFolder(options.Images) : null;
        var result = new SourceResult(Name) { MaxListed = options.MaxListed, ImagesChecked = folder != null };
        var seen = new HashSet<string>();

        foreach (var row in Csv.Read(reports, "uid", "findings", "impression"))
        {
            result.Records++;
            string uid = row["uid"].Trim();
            if (uid.Length == 0) throw new XrayVLException($"{reports}:{row.Line}: empty uid");
            if (!seen.Add(uid)) throw new XrayVLException($"{reports}:{row.Line}: uid {uid} appears twice");
            var report = new Report
            {
                Indication = row["indication"],
                Comparison = row["comparison"],
                Findings = row["findings"],
                Impression = row["impression"],
            }.Cleaned();
            string id = IuCommon.StudyId(uid);
            if (report.IsEmpty)
            {
                result.NoteEmptyReport($"{id} ({Path.GetFileName(reports)} line {row.Line})");
                continue;
            }
            // The k-th image of the study may also be stored under XrayGLM's name "{uid}_{k}.png".
            var images = projections.ForUid(uid).Select((p, k) => IuCommon.Resolve(folder, p.File, p.View, $"{uid}_{k + 1}.png")).ToList();
            if (images.Count == 0) result.Warnings.Add($"{id}: no images in {Path.GetFileName(projectionsPath)}");
            var meta = new Dictionary<string, string>();
            if (row.Has("MeSH")) meta["mesh"] = row["MeSH"];
            if (row.Has("Problems")) meta["problems"] = row["Problems"];
            if (row.Has("image") && ReportCleaner.Clean(row["image"]) is { Length: > 0 } exam) meta["exam"] = exam;
            var study = Study.FromReport(id, id, report, options.Language ?? "en", Name) with { Meta = meta };
            result.Add(study, images, options.KeepMissingImages);
        }
        return result;
    }

    private static string FindReports(string dir)
    {
        foreach (string name in new[] { "iu_reports.csv", "indiana_reports.csv" })
        {
            string p = Path.Combine(dir, name);
            if (File.Exists(p)) return p;
        }
        throw new XrayVLException($"{dir}: no iu_reports.csv (or indiana_reports.csv) in this folder");
    }
}
