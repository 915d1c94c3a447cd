namespace XrayVL.Data.Sources;

/// <summary>
/// Kermany et al.'s pediatric chest X-rays (Cell 2018; Mendeley doi:10.17632/rscbjbr9sj.2) in the shared layout:
/// <c>labels.csv</c> (file, orig_path, split, label normal/pneumonia, subtype normal/bacteria/virus, patient) and
/// <c>images/</c>. Input: that folder or its labels.csv. One study per image; there is no report.
/// Labels: pneumonia → Pneumonia positive, No Finding negative; normal → No Finding positive and the other 13 negative
/// (the class says the image shows nothing abnormal). The subtype goes to meta.
/// Splits: the official test split is kept as test; the official train split has no validation part here (its 16-image
/// val split is not in the copy), so a tenth of the training patients, ranked by a fixed-seed hash, become val.
/// Patients: "personN" for pneumonia images; normal images carry no patient, so their study number ("IM-0001" of
/// IM-0001-0001, "NORMAL2-IM-0620" of NORMAL2-IM-0620-0001) stands for one, which can only join images, never split a
/// patient. The copy numbers patients within each official split (person1 has virus images in test and bacteria images
/// in train; 171 such numbers recur), and Kermany et al. describe the test images as coming from other patients, so the
/// patient id carries the official split ("kermany-test-person1"). Views: the collection is anterior-posterior.
/// </summary>
public sealed class KermanySource : IReportSource
{
    public string Name => "kermany";

    /// <summary>The val share of the official training patients, and the seed of its fixed choice.</summary>
    public const double ValFraction = 0.1;
    public const int ValSeed = 2018;

    public SourceResult Read(SourceOptions options)
    {
        string labelsCsv = Directory.Exists(options.Input) ? Path.Combine(options.Input, "labels.csv") : options.Input;
        if (!File.Exists(labelsCsv)) throw new XrayVLException($"{labelsCsv}: file not found (Kermany labels.csv)");
        string root = Path.GetDirectoryName(Path.GetFullPath(labelsCsv))!;
        string imageDir = options.Images ?? Path.Combine(root, "images");
        var result = new SourceResult(Name) { MaxListed = options.MaxListed, ImagesChecked = true };
        var studies = new List<(Study Study, ResolvedImage Image)>();
        foreach (var row in Csv.Read(labelsCsv, "file", "split", "label"))
        {
            result.Records++;
            string file = row["file"].Trim();
            string label = row["label"].Trim().ToLowerInvariant();
            string split = Splits.NormalizeName(row["split"]) ?? throw new XrayVLException($"{labelsCsv}:{row.Line}: split '{row["split"]}' is not train or test");
            if (file.Length == 0) throw new XrayVLException($"{labelsCsv}:{row.Line}: empty file name");
            if (label is not ("normal" or "pneumonia")) throw new XrayVLException($"{labelsCsv}:{row.Line}: label '{row["label"]}' is not normal or pneumonia");
            string stem = Path.GetFileNameWithoutExtension(row["orig_path"].Trim() is { Length: > 0 } orig ? orig : file);
            string patient = row["patient"].Trim() is { Length: > 0 } p ? p : StudyNumber(stem);
            string path = Path.GetFullPath(Path.Combine(imageDir, file));
            var meta = new Dictionary<string, string> { ["label"] = label, ["official_split"] = split };
            if (row["subtype"].Trim() is { Length: > 0 } subtype) meta["subtype"] = subtype;
            var study = new Study
            {
                StudyId = "kermany-" + Path.GetFileNameWithoutExtension(file),
                PatientId = $"kermany-{split}-{patient}",
                Language = "en",
                Labels = Labels(label == "pneumonia"),
                Split = split,
                Source = Name,
                Meta = meta,
            };
            studies.Add((study, new ResolvedImage(new StudyImage(path, Views.AP), File.Exists(path))));
        }
        var train = studies.Where(s => s.Study.Split == Splits.Train).Select(s => s.Study).ToList();
        var valPatients = Splits.ByPatient(train, ValSeed, (1 - ValFraction, ValFraction, 0))
            .Where(s => s.Split == Splits.Val).Select(s => s.PatientId).ToHashSet(StringComparer.Ordinal);
        foreach (var (study, image) in studies)
        {
            var placed = study.Split == Splits.Train && valPatients.Contains(study.PatientId) ? study with { Split = Splits.Val } : study;
            result.Add(placed, [image], options.KeepMissingImages);
        }
        return result;
    }

    /// <summary>Pneumonia vs normal as the 14 observations (see the class notes).</summary>
    internal static Dictionary<string, int?> Labels(bool pneumonia)
    {
        var labels = new Labeler.ChexpertLabels();
        if (pneumonia)
        {
            labels.Set(Observation.Pneumonia, LabelValue.Positive, null);
            labels.Set(Observation.NoFinding, LabelValue.Negative, null);
        }
        else
        {
            foreach (var o in Observations.All) labels.Set(o, o == Observation.NoFinding ? LabelValue.Positive : LabelValue.Negative, null);
        }
        return labels.ToDictionary();
    }

    /// <summary>"IM-0001-0001" → "IM-0001"; "NORMAL2-IM-0620-0001" → "NORMAL2-IM-0620" (the last dash-part is the image number).</summary>
    internal static string StudyNumber(string stem)
    {
        int dash = stem.LastIndexOf('-');
        return dash > 0 ? stem[..dash] : stem;
    }
}
