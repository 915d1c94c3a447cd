using System.Text.Json;

namespace XrayVL.Data.Sources;

/// <summary>
/// R2Gen-style <c>annotation.json</c>: <c>{"train": [...], "val": [...], "test": [...]}</c>, each entry
/// <c>{"id", "report", "image_path": [...], "split"?}</c>; the MIMIC variant adds <c>study_id</c>/<c>subject_id</c>.
/// The lists are the split. IU ids ("CXR2384_IM-0942", or MRG's plain "3321") become study "CXR{uid}"; MIMIC
/// entries "s{study_id}" with patient "p{subject_id}". Images are <c>{images}/{image_path}</c> (R2Gen's own layout)
/// or, for IU file names, any IU layout. The report (findings, or findings + impression) goes into findings.
/// </summary>
public sealed class R2GenSource : IReportSource
{
    public string Name => "r2gen";

    public sealed record Entry(string Id, string Report, IReadOnlyList<string> ImagePaths, string Split, string? StudyId, string? SubjectId);

    public SourceResult Read(SourceOptions options)
    {
        var entries = ReadEntries(options.Input);
        var folder = options.Images != null ? new IuImageFolder(options.Images) : null;
        string? projectionsPath = IuProjections.Locate(options.Projections, options.Input, options.Images);
        var projections = projectionsPath != null ? IuProjections.Load(projectionsPath) : null;
        var result = new SourceResult(Name) { MaxListed = options.MaxListed, ImagesChecked = folder != null };
        var seen = new HashSet<string>();
        foreach (var e in entries)
        {
            result.Records++;
            var (studyId, patientId) = Ids(e);
            if (!seen.Add(studyId)) throw new XrayVLException($"{options.Input}: study {studyId} (id '{e.Id}') is listed twice");
            string report = ReportCleaner.Clean(e.Report);
            if (report.Length == 0)
            {
                result.NoteEmptyReport($"{e.Id} ({Path.GetFileName(options.Input)})");
                continue;
            }
            var images = e.ImagePaths.Select(p => IuCommon.Resolve(folder, p, projections?.ViewOf(p), Alternatives(e, p, projections))).ToList();
            var study = new Study
            {
                StudyId = studyId,
                PatientId = patientId,
                Findings = report,
                Language = options.Language ?? "en",
                Split = e.Split,
                Source = Name,
                Meta = new Dictionary<string, string> { ["annotation_id"] = e.Id },
            };
            result.Add(study, images, options.KeepMissingImages);
        }
        return result;
    }

    /// <summary>Other names the same IU image has in folders other sources read: the k-th image of report uid U in
    /// iu_projections.csv is also stored as XrayGLM's "U_k.png" (as the iu-csv and xrayglm sources look it up).</summary>
    private static string[] Alternatives(Entry e, string imagePath, IuProjections? projections)
    {
        if (projections is null || e.StudyId != null || IuCommon.UidOf(e.Id) is not { } uid) return [];
        string key = IuImageFolder.Key(imagePath);
        var files = projections.ForUid(uid).Select(p => IuImageFolder.Key(p.File)).Distinct().ToList();
        int k = files.IndexOf(key);
        return k >= 0 ? [$"{uid}_{k + 1}.png"] : [];
    }

    /// <summary>The entries of an annotation.json, in file order (train, then val, then test).</summary>
    public static IReadOnlyList<Entry> ReadEntries(string path)
    {
        if (!File.Exists(path)) throw new XrayVLException($"{path}: file not found");
        using (var doc = Json.ReadDocument(path, "R2Gen annotation"))
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new XrayVLException($"{path}: expected an object with train/val/test lists (R2Gen annotation.json)");
            var entries = new List<Entry>();
            foreach (var list in doc.RootElement.EnumerateObject())
            {
                string split = Splits.NormalizeName(list.Name)
                    ?? throw new XrayVLException($"{path}: unknown split '{list.Name}' (expected train, val, test)");
                if (list.Value.ValueKind != JsonValueKind.Array) throw new XrayVLException($"{path}: '{list.Name}' is not a list");
                int i = 0;
                foreach (var item in list.Value.EnumerateArray())
                {
                    string where = $"{path}: {list.Name}[{i++}]";
                    if (item.ValueKind != JsonValueKind.Object) throw new XrayVLException($"{where} is not an object");
                    string id = Str(item, "id") ?? throw new XrayVLException($"{where} has no id");
                    string report = Str(item, "report") ?? throw new XrayVLException($"{where} ({id}) has no report");
                    var images = item.TryGetProperty("image_path", out var ip) && ip.ValueKind == JsonValueKind.Array
                        && ip.EnumerateArray().All(x => x.ValueKind == JsonValueKind.String)
                        ? ip.EnumerateArray().Select(x => x.GetString()!).Where(x => x.Length > 0).ToList()
                        : throw new XrayVLException($"{where} ({id}) has no image_path list of strings");
                    entries.Add(new Entry(id, report, images, split, Str(item, "study_id"), Str(item, "subject_id")));
                }
            }
            return entries;
        }
    }

    /// <summary>Study id → split for an annotation.json, with the study ids the other sources give ("CXR12", "s5041...").</summary>
    public static IReadOnlyDictionary<string, string> ReadSplitMap(string path)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var e in ReadEntries(path)) map[Ids(e).StudyId] = e.Split;
        return map;
    }

    private static (string StudyId, string PatientId) Ids(Entry e)
    {
        if (e.StudyId != null)
        {
            string subject = e.SubjectId != null ? "p" + e.SubjectId.TrimStart('p') : "s" + e.StudyId.TrimStart('s');
            return ("s" + e.StudyId.TrimStart('s'), subject);
        }
        string? uid = IuCommon.UidOf(e.Id);
        if (uid != null) return (IuCommon.StudyId(uid), IuCommon.StudyId(uid));
        return (e.Id, e.Id);
    }

    private static string? Str(JsonElement item, string name) =>
        item.TryGetProperty(name, out var v) ? v.ValueKind switch
        {
            JsonValueKind.String => v.GetString(),
            JsonValueKind.Number => v.GetRawText(),
            _ => null,
        } : null;
}
