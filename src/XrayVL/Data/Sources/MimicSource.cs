namespace XrayVL.Data.Sources;

/// <summary>
/// MIMIC-CXR in its published layout: free-text reports <c>files/p10/p10000032/s50414267.txt</c> (mimic-cxr-reports),
/// JPGs <c>files/p10/p10000032/s50414267/{dicom_id}.jpg</c> (mimic-cxr-jpg), the official split
/// <c>mimic-cxr-2.0.0-split.csv(.gz)</c> (dicom_id, study_id, subject_id, split) and
/// <c>mimic-cxr-2.0.0-metadata.csv(.gz)</c> (dicom_id, ..., ViewPosition). Input: the reports folder (holding files/, or
/// files/ itself). The split and metadata CSVs are looked for beside the images and the reports when not given.
/// With a split file the studies and their images are the split file's; without one, every report file is a study and
/// its images are the JPGs in its folder. Study "s{study_id}", patient "p{subject_id}"; the split is the official one.
/// </summary>
public sealed class MimicSource : IReportSource
{
    public string Name => "mimic";

    private sealed record StudyRef(string Subject, string Study, List<string> Dicoms, string? Split);

    public SourceResult Read(SourceOptions options)
    {
        string reportsFiles = FilesDir(options.Input)
            ?? throw new XrayVLException($"{options.Input}: no files/ folder of MIMIC-CXR reports (files/pXX/pNNNNNNNN/sNNNNNNNN.txt)");
        string? imagesFiles = options.Images != null
            ? FilesDir(options.Images) ?? throw new XrayVLException($"{options.Images}: no files/ folder of MIMIC-CXR-JPG images")
            : null;
        string? splitPath = options.SplitFile ?? FindBeside("mimic-cxr-2.0.0-split.csv", options.Images, options.Input);
        string? metadataPath = options.Metadata ?? FindBeside("mimic-cxr-2.0.0-metadata.csv", options.Images, options.Input);
        var views = metadataPath != null ? ReadViews(metadataPath) : [];
        var result = new SourceResult(Name) { MaxListed = options.MaxListed, ImagesChecked = imagesFiles != null };
        if (metadataPath == null) result.Warnings.Add("no mimic-cxr-2.0.0-metadata.csv: views unknown");

        var studies = splitPath != null ? ReadSplit(splitPath) : ScanReports(reportsFiles, imagesFiles);
        if (splitPath == null) result.Warnings.Add("no mimic-cxr-2.0.0-split.csv: the official split is not applied (the build splits by patient instead)");
        int noReport = 0;
        var noReportExamples = new List<string>();
        foreach (var s in studies)
        {
            result.Records++;
            string reportPath = Path.Combine(reportsFiles, SubjectDir(s.Subject), "s" + s.Study + ".txt");
            if (!File.Exists(reportPath))
            {
                noReport++;
                if (noReportExamples.Count < options.MaxListed) noReportExamples.Add(reportPath);
                continue;
            }
            string text = File.ReadAllText(reportPath);
            if (text.Trim().Length == 0) throw new XrayVLException($"{reportPath}: empty report file");
            var report = ReportParser.Parse(text).Cleaned();
            if (report.IsEmpty)
            {
                result.NoteEmptyReport($"s{s.Study} ({reportPath})");
                continue;
            }
            if (s.Dicoms.Count == 0 && imagesFiles != null)
            {
                // Scanned study whose JPG folder is absent or empty: counted like a study whose images are all missing.
                result.StudiesWithoutImages++;
                result.MissingImages++;
                if (result.MissingImageExamples.Count < options.MaxListed)
                    result.MissingImageExamples.Add(Path.Combine(imagesFiles, SubjectDir(s.Subject), "s" + s.Study) + "/");
                if (!options.KeepMissingImages) continue;
            }
            var images = s.Dicoms.Select(d =>
            {
                string relative = Path.Combine(SubjectDir(s.Subject), "s" + s.Study, d + ".jpg");
                string? view = Views.Normalize(views.GetValueOrDefault(d));
                if (imagesFiles == null) return new ResolvedImage(new StudyImage(Path.Combine("files", relative), view), null);
                string full = Path.Combine(imagesFiles, relative);
                return new ResolvedImage(new StudyImage(full, view), File.Exists(full));
            }).ToList();
            var study = Study.FromReport("s" + s.Study, "p" + s.Subject, report, options.Language ?? "en", Name) with { Split = s.Split };
            result.Add(study, images, options.KeepMissingImages);
        }
        if (noReport > 0)
            result.Warnings.Add($"{noReport} studies of the split file have no report file (e.g. {string.Join(", ", noReportExamples)})");
        return result;
    }

    /// <summary>"p10000032" → "p10/p10000032" (the tree groups subjects by their first two digits).</summary>
    private static string SubjectDir(string subject) => Path.Combine("p" + subject[..Math.Min(2, subject.Length)], "p" + subject);

    private static string? FilesDir(string root)
    {
        if (!Directory.Exists(root)) return null;
        foreach (string candidate in new[] { Path.Combine(root, "files"), Path.Combine(root, "2.0.0", "files"), root })
        {
            if (Directory.Exists(candidate) && Directory.EnumerateDirectories(candidate, "p??").Any()) return candidate;
        }
        return null;
    }

    private static string? FindBeside(string name, params string?[] roots)
    {
        foreach (string? root in roots)
        {
            if (root == null || !Directory.Exists(root)) continue;
            foreach (string dir in new[] { root, Path.Combine(root, "2.0.0"), Path.GetDirectoryName(Path.GetFullPath(root)) ?? root })
            {
                foreach (string file in new[] { name, name + ".gz" })
                {
                    string p = Path.Combine(dir, file);
                    if (File.Exists(p)) return p;
                }
            }
        }
        return null;
    }

    private static List<StudyRef> ReadSplit(string path)
    {
        var byStudy = new Dictionary<string, StudyRef>(StringComparer.Ordinal);
        var order = new List<StudyRef>();
        foreach (var row in Csv.Read(path, "dicom_id", "study_id", "subject_id", "split"))
        {
            string study = row["study_id"].Trim().TrimStart('s'), subject = row["subject_id"].Trim().TrimStart('p');
            string dicom = row["dicom_id"].Trim();
            if (study.Length == 0 || subject.Length == 0 || dicom.Length == 0)
                throw new XrayVLException($"{path}:{row.Line}: empty dicom_id, study_id or subject_id");
            string split = Splits.NormalizeName(row["split"])
                ?? throw new XrayVLException($"{path}:{row.Line}: unknown split '{row["split"]}' (expected train, validate, test)");
            if (!byStudy.TryGetValue(study, out var s))
            {
                byStudy[study] = s = new StudyRef(subject, study, [], split);
                order.Add(s);
            }
            else if (s.Subject != subject || s.Split != split)
                throw new XrayVLException($"{path}:{row.Line}: study {study} listed with another subject or split than before");
            s.Dicoms.Add(dicom);
        }
        return order;
    }

    private static List<StudyRef> ScanReports(string reportsFiles, string? imagesFiles)
    {
        var list = new List<StudyRef>();
        var options = new EnumerationOptions { RecurseSubdirectories = true, MaxRecursionDepth = 3 };
        foreach (string file in Directory.EnumerateFiles(reportsFiles, "s*.txt", options).Order(StringComparer.Ordinal))
        {
            string study = Path.GetFileNameWithoutExtension(file)[1..];
            string subjectDir = Path.GetFileName(Path.GetDirectoryName(file)!);
            if (!subjectDir.StartsWith('p')) continue;
            string subject = subjectDir[1..];
            var dicoms = new List<string>();
            if (imagesFiles != null)
            {
                string dir = Path.Combine(imagesFiles, SubjectDir(subject), "s" + study);
                if (Directory.Exists(dir))
                    dicoms.AddRange(Directory.GetFiles(dir, "*.jpg").Select(Path.GetFileNameWithoutExtension).OfType<string>().Order(StringComparer.Ordinal));
            }
            list.Add(new StudyRef(subject, study, dicoms, null));
        }
        return list;
    }

    private static Dictionary<string, string> ReadViews(string path)
    {
        var d = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var row in Csv.Read(path, "dicom_id", "ViewPosition")) d[row["dicom_id"].Trim()] = row["ViewPosition"].Trim();
        return d;
    }
}
