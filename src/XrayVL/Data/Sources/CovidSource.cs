using System.Text.Json;

namespace XrayVL.Data.Sources;

/// <summary>
/// The COVID-19 chest X-ray collection (ieee8023/covid-chestxray-dataset layout): <c>metadata.csv</c> (patientid,
/// offset, finding, view, modality, folder, filename, clinical_notes, ...), the image folder it names, and optional
/// <c>annotations/</c>: COCO-style lung boxes (<c>imageannotation_ai_lung_bounding_boxes.json</c>) and severity scores
/// (<c>covid-severity-scores.csv</c>). Input: the dataset folder or its metadata.csv. One study per X-ray row.
/// There is no report: <c>finding</c> gives the labels (COVID-19 and the other pneumonias → Pneumonia positive,
/// ARDS → Lung Opacity positive, "No Finding" → No Finding positive, "todo" → none), the clinical notes go to
/// <see cref="Study.Notes"/> and through the labeler for the other observations.
/// Lung boxes are converted to the 0–100 grid with the size of the image they were drawn on (the annotation's
/// width/height); the image here must have the same aspect ratio (read from its JPEG header), else its boxes are left out.
/// </summary>
public sealed class CovidSource : IReportSource
{
    public string Name => "covid";

    private const string BoxesFile = "imageannotation_ai_lung_bounding_boxes.json";
    private const string SeverityFile = "covid-severity-scores.csv";

    private static readonly HashSet<string> Pneumonias = new(StringComparer.OrdinalIgnoreCase)
    {
        "COVID-19", "SARS", "MERS", "Pneumocystis", "Pneumonia", "Streptococcus", "Klebsiella", "Mycoplasma Bacterial Pneumonia",
        "Legionella", "Varicella", "E.Coli", "Bacterial", "Viral", "Fungal", "Influenza", "Lipoid", "Chlamydophila",
        "Aspergillosis", "Nocardia", "Herpes", "H1N1", "Staphylococcus", "MRSA", "Pneumococcal",
    };

    public SourceResult Read(SourceOptions options)
    {
        string metadata = Directory.Exists(options.Input) ? Path.Combine(options.Input, "metadata.csv") : options.Input;
        if (!File.Exists(metadata)) throw new XrayVLException($"{metadata}: file not found (COVID metadata.csv)");
        string root = Path.GetDirectoryName(Path.GetFullPath(metadata))!;
        var result = new SourceResult(Name) { MaxListed = options.MaxListed, ImagesChecked = true };
        var boxes = ReadBoxes(Path.Combine(root, "annotations", BoxesFile), result);
        var severity = ReadSeverity(Path.Combine(root, "annotations", SeverityFile));
        var labeler = Labeler.Labeler.Default;
        int notXray = 0, boxesRejected = 0, boxesUsed = 0;
        var unknownFindings = new SortedSet<string>(StringComparer.Ordinal);
        var ownerOfImage = new Dictionary<string, string>(StringComparer.Ordinal);
        var sharedImages = new List<string>();

        foreach (var row in Csv.Read(metadata, "patientid", "finding", "view", "filename"))
        {
            result.Records++;
            string modality = row["modality"];
            if (modality.Length > 0 && !modality.Equals("X-ray", StringComparison.OrdinalIgnoreCase)) { notXray++; continue; }
            string patient = row["patientid"].Trim();
            string file = row["filename"].Trim();
            if (patient.Length == 0 || file.Length == 0) throw new XrayVLException($"{metadata}:{row.Line}: empty patientid or filename");
            string stem = Path.GetFileNameWithoutExtension(file);
            string imageDir = options.Images ?? Path.Combine(root, row["folder"].Length > 0 ? row["folder"] : "images");
            string path = Path.GetFullPath(Path.Combine(imageDir, file));
            bool exists = File.Exists(path);
            if (ownerOfImage.TryGetValue(file, out var owner) && owner != patient) sharedImages.Add($"{file} ({owner}, {patient})");
            else ownerOfImage.TryAdd(file, patient);

            string notes = row["clinical_notes"].Trim();
            var labels = Labels(row["finding"], notes, labeler, unknownFindings);

            List<StudyBox>? studyBoxes = null;
            if (exists && boxes.TryGetValue(stem.ToLowerInvariant(), out var annotated))
            {
                var size = JpegSize.Read(path);
                double annotatedRatio = (double)annotated.Width / annotated.Height;
                if (size is { } s && Math.Abs((double)s.Width / s.Height - annotatedRatio) <= 0.02 * annotatedRatio)
                {
                    studyBoxes = annotated.Boxes.Select(b => ToGrid(b, annotated.Width, annotated.Height)).ToList();
                    boxesUsed++;
                }
                else boxesRejected++;
            }

            var meta = new Dictionary<string, string> { ["finding"] = row["finding"] };
            foreach (string col in new[] { "offset", "sex", "age", "survival", "date", "doi", "license" })
            {
                if (row[col].Trim().Length > 0) meta[col] = row[col].Trim();
            }
            if (severity.TryGetValue(stem.ToLowerInvariant(), out var sev))
            {
                meta["severity_geographic_extent"] = sev.Geographic;
                meta["severity_opacity"] = sev.Opacity;
            }
            var study = new Study
            {
                StudyId = $"covid-{patient}-{stem}",
                PatientId = "covid-" + patient,
                Language = "en",
                Labels = labels.ToDictionary(),
                Source = Name,
                Boxes = studyBoxes,
                Notes = notes.Length > 0 ? notes : null,
                Meta = meta,
            };
            var image = new ResolvedImage(new StudyImage(path, Views.Normalize(row["view"])), exists);
            result.Add(study, [image], options.KeepMissingImages);
        }
        if (notXray > 0) result.Warnings.Add($"{notXray} rows are not X-rays (CT and others) and were left out");
        if (boxesUsed + boxesRejected > 0)
            result.Warnings.Add($"lung boxes on {boxesUsed} images; {boxesRejected} images left without boxes because the image here " +
                                "does not have the aspect ratio of the annotated one");
        if (unknownFindings.Count > 0) result.Warnings.Add($"findings not mapped to labels: {string.Join(", ", unknownFindings)}");
        if (sharedImages.Count > 0)
            result.Warnings.Add($"{sharedImages.Count} images are listed under two patient ids (splits keep them together): " +
                                string.Join("; ", sharedImages.Take(options.MaxListed)));
        return result;
    }

    /// <summary>Labels from the diagnosis column, completed from the clinical notes for what the diagnosis does not say.</summary>
    internal static Labeler.ChexpertLabels Labels(string finding, string notes, Labeler.ILabeler labeler, ISet<string> unknown)
    {
        var labels = notes.Length > 0 ? labeler.Label(notes, "en") : new Labeler.ChexpertLabels();
        // The notes are clinical narratives, not reports: their "nothing abnormal mentioned" says nothing about the image.
        labels[Observation.NoFinding] = LabelValue.NotMentioned;
        bool noFinding = false;
        foreach (string part in finding.Split([',', '/'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (part.Equals("No Finding", StringComparison.OrdinalIgnoreCase)) noFinding = true;
            else if (part.Equals("ARDS", StringComparison.OrdinalIgnoreCase)) labels.Set(Observation.LungOpacity, LabelValue.Positive, null);
            else if (Pneumonias.Contains(part)) labels.Set(Observation.Pneumonia, LabelValue.Positive, null);
            else if (!part.Equals("todo", StringComparison.OrdinalIgnoreCase)) unknown.Add(part);
        }
        if (noFinding) labels.Set(Observation.NoFinding, LabelValue.Positive, null);
        return labels;
    }

    private sealed record AnnotatedImage(int Width, int Height, List<(string Label, double X, double Y, double W, double H)> Boxes);

    private static StudyBox ToGrid((string Label, double X, double Y, double W, double H) b, int width, int height)
    {
        static double G(double v, int size) => Math.Round(Math.Clamp(v / size * 100.0, 0, 100), 1);
        return new StudyBox(0, b.Label, G(b.X, width), G(b.Y, height), G(b.X + b.W, width), G(b.Y + b.H, height));
    }

    /// <summary>COCO boxes by lower-case file stem (the annotation names the original .jpeg/.png files).</summary>
    private static Dictionary<string, AnnotatedImage> ReadBoxes(string path, SourceResult result)
    {
        var byStem = new Dictionary<string, AnnotatedImage>(StringComparer.Ordinal);
        if (!File.Exists(path)) return byStem;
        using (var doc = Json.ReadDocument(path, "COCO annotation"))
        {
            try { ReadCoco(doc.RootElement, path, byStem, result); }
            catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException or ArgumentException)
            {
                throw new XrayVLException($"{path}: not a COCO box file this reader understands ({e.Message})", e);
            }
        }
        return byStem;
    }

    private static void ReadCoco(JsonElement root, string path, Dictionary<string, AnnotatedImage> byStem, SourceResult result)
    {
        if (!root.TryGetProperty("images", out var images) || !root.TryGetProperty("annotations", out var annotations)
            || !root.TryGetProperty("categories", out var categories))
            throw new XrayVLException($"{path}: expected COCO images/annotations/categories");
        var categoryName = categories.EnumerateArray().ToDictionary(c => c.GetProperty("id").GetInt32(), c => c.GetProperty("name").GetString() ?? "");
        var byId = new Dictionary<int, (string Stem, AnnotatedImage Image)>();
        foreach (var im in images.EnumerateArray())
        {
            if (!im.TryGetProperty("width", out var w) || !im.TryGetProperty("height", out var h)
                || w.ValueKind != JsonValueKind.Number || h.ValueKind != JsonValueKind.Number || w.GetInt32() <= 0 || h.GetInt32() <= 0) continue;
            string stem = Path.GetFileNameWithoutExtension(im.GetProperty("file_name").GetString() ?? "").ToLowerInvariant();
            byId[im.GetProperty("id").GetInt32()] = (stem, new AnnotatedImage(w.GetInt32(), h.GetInt32(), []));
        }
        int unusable = 0;
        foreach (var a in annotations.EnumerateArray())
        {
            if (!byId.TryGetValue(a.GetProperty("image_id").GetInt32(), out var target)) { unusable++; continue; }
            var bbox = a.GetProperty("bbox");
            if (bbox.ValueKind != JsonValueKind.Array || bbox.GetArrayLength() != 4
                || bbox.EnumerateArray().Any(v => v.ValueKind != JsonValueKind.Number)) { unusable++; continue; }
            double[] v = bbox.EnumerateArray().Select(x => x.GetDouble()).ToArray();
            if (v[2] <= 0 || v[3] <= 0) { unusable++; continue; }
            target.Image.Boxes.Add((categoryName.GetValueOrDefault(a.GetProperty("category_id").GetInt32(), "box"), v[0], v[1], v[2], v[3]));
        }
        foreach (var (stem, image) in byId.Values)
        {
            if (image.Boxes.Count > 0) byStem.TryAdd(stem, image);
        }
        if (unusable > 0) result.Warnings.Add($"{unusable} lung box annotations have no usable box (null or empty) and were skipped");
    }

    private static Dictionary<string, (string Geographic, string Opacity)> ReadSeverity(string path)
    {
        var d = new Dictionary<string, (string, string)>(StringComparer.Ordinal);
        if (!File.Exists(path)) return d;
        foreach (var row in Csv.Read(path, "filename"))
        {
            string geographic = row.Has("geographic_mean") ? row["geographic_mean"] : row["geographic_extent_mean"];
            d.TryAdd(Path.GetFileNameWithoutExtension(row["filename"]).ToLowerInvariant(), (geographic, row["opacity_mean"]));
        }
        return d;
    }
}
