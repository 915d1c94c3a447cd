using System.Globalization;

namespace XrayVL.Data.Sources;

/// <summary>
/// NIH ChestX-ray14 images with their 14 NLP-mined findings (Wang et al., CVPR 2017) in the shared sample's layout:
/// <c>labels.csv</c> (file, findings, and one 0/1 column per NIH finding; other columns go to meta), <c>images/</c>, and
/// optionally NIH's <c>bbox_list_2017_full.csv</c> (Image Index, Finding Label, x, y, w, h at 1024 px). Input: that folder
/// or its labels.csv. One study per image; there is no report.
/// Labels: the NIH findings that name a CheXpert observation become it (Atelectasis, Cardiomegaly, Consolidation, Edema,
/// Pneumonia, Pneumothorax; Effusion → Pleural Effusion; Infiltration → Lung Opacity; Mass and Nodule → Lung Lesion;
/// Pleural_Thickening → Pleural Other; these are the words CheXpert's own phrase lists file there), 1 when present and 0
/// when absent (NIH's labels list every finding for every image); No Finding is 1 when NIH lists none. Emphysema,
/// Fibrosis and Hernia have no CheXpert counterpart and are kept in meta ("nih_findings" lists every NIH finding).
/// Enlarged Cardiomediastinum, Fracture and Support Devices are not labelled by NIH: left unmentioned.
/// Boxes: NIH's radiologist boxes for images of the list, from 1024-px coordinates (the size of every ChestX-ray14
/// original) onto the 0–100 grid, which holds for any plain resize of the image.
/// Patients: the first 8 digits of the file name. The sample's own split is by image, so it is kept in meta only and
/// the manifest builder splits by patient.
/// Views: ChestX-ray14 holds frontal views only (Wang et al. describe its images as frontal-view X-rays); the sample does
/// not say PA or AP per image, so every image is "frontal".
/// </summary>
public sealed class Nih14Source : IReportSource
{
    public string Name => "nih14";

    /// <summary>The side of the ChestX-ray14 originals, which NIH's boxes are measured on.</summary>
    public const double OriginalSide = 1024;
    public const string BoxFile = "bbox_list_2017_full.csv";

    /// <summary>The 14 NIH findings, as the label columns spell them, and the CheXpert observation each names (or none).</summary>
    public static readonly IReadOnlyList<(string Nih, Observation? Chexpert)> Findings =
    [
        ("Atelectasis", Observation.Atelectasis), ("Cardiomegaly", Observation.Cardiomegaly),
        ("Effusion", Observation.PleuralEffusion), ("Infiltration", Observation.LungOpacity), ("Mass", Observation.LungLesion),
        ("Nodule", Observation.LungLesion), ("Pneumonia", Observation.Pneumonia), ("Pneumothorax", Observation.Pneumothorax),
        ("Consolidation", Observation.Consolidation), ("Edema", Observation.Edema), ("Emphysema", null), ("Fibrosis", null),
        ("Pleural_Thickening", Observation.PleuralOther), ("Hernia", null),
    ];

    public SourceResult Read(SourceOptions options)
    {
        string labelsCsv = Directory.Exists(options.Input) ? Path.Combine(options.Input, "labels.csv") : options.Input;
        if (!File.Exists(labelsCsv)) throw new XrayVLException($"{labelsCsv}: file not found (NIH ChestX-ray14 labels.csv)");
        string root = Path.GetDirectoryName(Path.GetFullPath(labelsCsv))!;
        string imageDir = options.Images ?? Path.Combine(root, "images");
        var boxes = ReadBoxes(Path.Combine(root, BoxFile));
        var result = new SourceResult(Name) { MaxListed = options.MaxListed, ImagesChecked = true };
        int withBoxes = 0;
        foreach (var row in Csv.Read(labelsCsv, ["file", .. Findings.Select(f => f.Nih)]))
        {
            result.Records++;
            string file = row["file"].Trim();
            if (file.Length < 8 || !file[..8].All(char.IsAsciiDigit))
                throw new XrayVLException($"{labelsCsv}:{row.Line}: '{file}' is not an NIH file name (8-digit patient number first)");
            var present = new List<string>();
            foreach (var (nih, _) in Findings)
            {
                string v = row[nih].Trim();
                if (v is not ("0" or "1")) throw new XrayVLException($"{labelsCsv}:{row.Line}: {nih} is '{v}', not 0 or 1");
                if (v == "1") present.Add(nih);
            }
            var meta = new Dictionary<string, string> { ["nih_findings"] = present.Count > 0 ? string.Join("|", present) : "No Finding" };
            foreach (string col in new[] { "kcr_split", "kcr_class" })
                if (row[col].Trim() is { Length: > 0 } value) meta[col] = value;
            string path = Path.GetFullPath(Path.Combine(imageDir, file));
            var studyBoxes = boxes.TryGetValue(file, out var b) ? b : null;
            if (studyBoxes is not null) withBoxes++;
            var study = new Study
            {
                StudyId = "nih-" + Path.GetFileNameWithoutExtension(file),
                PatientId = "nih-" + file[..8],
                Language = "en",
                Labels = Labels(present),
                Source = Name,
                Boxes = studyBoxes,
                Meta = meta,
            };
            result.Add(study, [new ResolvedImage(new StudyImage(path, Views.Frontal), File.Exists(path))], options.KeepMissingImages);
        }
        if (boxes.Count > 0) result.Warnings.Add($"NIH boxes on {withBoxes} of these images ({boxes.Count} images in {BoxFile})");
        return result;
    }

    /// <summary>The 14 CheXpert observations from the NIH findings present (see the class notes).</summary>
    internal static Dictionary<string, int?> Labels(IReadOnlyCollection<string> present)
    {
        var labels = new Labeler.ChexpertLabels();
        foreach (var (nih, chexpert) in Findings)
        {
            if (chexpert is not { } o) continue;
            // Two NIH findings name Lung Lesion: positive when either is present.
            if (present.Contains(nih)) labels.Set(o, LabelValue.Positive, null);
            else if (labels[o] != LabelValue.Positive) labels.Set(o, LabelValue.Negative, null);
        }
        labels.Set(Observation.NoFinding, present.Count == 0 ? LabelValue.Positive : LabelValue.Negative, null);
        return labels.ToDictionary();
    }

    /// <summary>File → boxes on the 0–100 grid, labelled with the CheXpert name where the finding has one.</summary>
    private static Dictionary<string, List<StudyBox>> ReadBoxes(string path)
    {
        var byFile = new Dictionary<string, List<StudyBox>>(StringComparer.Ordinal);
        if (!File.Exists(path)) return byFile;
        foreach (var row in Csv.Read(path, "Image Index", "Finding Label"))
        {
            // NIH's header names the four numbers "Bbox [x,y,w,h]" and leaves the next three columns unnamed.
            string[] parts = [row["Bbox [x"], row["y"], row["w"], row["h]"]];
            if (!parts.All(p => double.TryParse(p, NumberStyles.Float, CultureInfo.InvariantCulture, out _)))
                throw new XrayVLException($"{path}:{row.Line}: box numbers expected in the four columns after Finding Label");
            double[] v = [.. parts.Select(p => double.Parse(p, CultureInfo.InvariantCulture))];
            static double G(double x) => Math.Round(Math.Clamp(x / OriginalSide * 100.0, 0, 100), 1);
            string finding = row["Finding Label"].Trim();
            // The box list spells Infiltration "Infiltrate".
            string nih = finding == "Infiltrate" ? "Infiltration" : finding;
            string label = Findings.FirstOrDefault(f => f.Nih == nih).Chexpert is { } o ? o.Name() : finding;
            string file = row["Image Index"].Trim();
            if (!byFile.TryGetValue(file, out var list)) byFile[file] = list = [];
            list.Add(new StudyBox(0, label, G(v[0]), G(v[1]), G(v[0] + v[2]), G(v[1] + v[3])));
        }
        return byFile;
    }
}
