using System.Text;
using XrayVL.Data.Sources;

namespace XrayVL.Data.Labeler;

/// <summary>Agreement on one observation: reference vs labeler on "present" (positive, or positive or uncertain).</summary>
public sealed record ObservationAgreement(string Observation, int Documents, int TruePositives, int FalsePositives, int FalseNegatives, int ExactMatches)
{
    public int ReferencePositives => TruePositives + FalseNegatives;
    public double Precision => TruePositives + FalsePositives == 0 ? double.NaN : (double)TruePositives / (TruePositives + FalsePositives);
    public double Recall => ReferencePositives == 0 ? double.NaN : (double)TruePositives / ReferencePositives;
    public double F1 => TruePositives == 0 ? (ReferencePositives == 0 && FalsePositives == 0 ? double.NaN : 0) : 2.0 * TruePositives / (2 * TruePositives + FalsePositives + FalseNegatives);
    /// <summary>Present/absent agreement over all documents.</summary>
    public double Accuracy => (double)(Documents - FalsePositives - FalseNegatives) / Documents;
    /// <summary>Agreement on the exact value (1, 0, -1, not mentioned) where both sides have one (labeler vs labeler only).</summary>
    public double ExactAgreement => (double)ExactMatches / Documents;
}

/// <summary>An agreement table with micro/macro figures.</summary>
public sealed record AgreementReport(string Title, int Documents, IReadOnlyList<ObservationAgreement> Rows, bool HasExactValues, string Present)
{
    public int TruePositives => Rows.Sum(r => r.TruePositives);
    public int FalsePositives => Rows.Sum(r => r.FalsePositives);
    public int FalseNegatives => Rows.Sum(r => r.FalseNegatives);
    public double MicroPrecision => (double)TruePositives / (TruePositives + FalsePositives);
    public double MicroRecall => (double)TruePositives / (TruePositives + FalseNegatives);
    public double MicroF1 => 2.0 * TruePositives / (2 * TruePositives + FalsePositives + FalseNegatives);
    public double MacroF1 => Rows.Select(r => r.F1).Where(f => !double.IsNaN(f)).DefaultIfEmpty(double.NaN).Average();
    /// <summary>Exact value agreement over all observations and documents (labeler vs labeler).</summary>
    public double ExactAgreement => (double)Rows.Sum(r => r.ExactMatches) / Rows.Sum(r => r.Documents);

    public ObservationAgreement this[string observation] => Rows.Single(r => r.Observation == observation);

    public string ToTable()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"{Title} ({Documents} documents; present = {Present})");
        sb.Append($"  {"observation",-28}{"ref+",6}{"TP",6}{"FP",6}{"FN",6}{"P",7}{"R",7}{"F1",7}{"acc",7}");
        sb.AppendLine(HasExactValues ? $"{"exact",7}" : "");
        static string F(double v) => double.IsNaN(v) ? "   -  " : v.ToString(" 0.000", System.Globalization.CultureInfo.InvariantCulture);
        foreach (var r in Rows)
        {
            sb.Append($"  {r.Observation,-28}{r.ReferencePositives,6}{r.TruePositives,6}{r.FalsePositives,6}{r.FalseNegatives,6}");
            sb.Append($"{F(r.Precision),7}{F(r.Recall),7}{F(r.F1),7}{F(r.Accuracy),7}");
            sb.AppendLine(HasExactValues ? $"{F(r.ExactAgreement),7}" : "");
        }
        sb.Append($"  micro P {F(MicroPrecision).Trim()}  R {F(MicroRecall).Trim()}  F1 {F(MicroF1).Trim()};  macro F1 {F(MacroF1).Trim()}");
        sb.AppendLine(HasExactValues ? $";  exact agreement {F(ExactAgreement).Trim()}" : "");
        return sb.ToString();
    }
}

/// <summary>
/// How well the labeler agrees with (a) the IU radiologists' MeSH terms and (b) itself across the English XrayGLM
/// captions and their Chinese translations.
/// </summary>
public static class LabelerAgreement
{
    /// <summary>
    /// IU MeSH main terms (before the first "/") that stand for an observation. Only these observations are scored
    /// against MeSH; "normal" (the whole MeSH field) stands for No Finding.
    /// </summary>
    public static readonly IReadOnlyDictionary<Observation, string[]> MeshTerms = new Dictionary<Observation, string[]>
    {
        [Observation.NoFinding] = ["normal"],
        [Observation.Cardiomegaly] = ["Cardiomegaly"],
        [Observation.LungLesion] = ["Nodule", "Mass"],
        [Observation.LungOpacity] = ["Opacity", "Infiltrate", "Airspace Disease"],
        [Observation.Edema] = ["Pulmonary Edema", "Edema", "Pulmonary Congestion"],
        [Observation.Consolidation] = ["Consolidation"],
        [Observation.Pneumonia] = ["Pneumonia"],
        [Observation.Atelectasis] = ["Pulmonary Atelectasis"],
        [Observation.Pneumothorax] = ["Pneumothorax", "Hydropneumothorax", "Hemopneumothorax"],
        [Observation.PleuralEffusion] = ["Pleural Effusion"],
        [Observation.Fracture] = ["Fractures, Bone"],
        [Observation.SupportDevices] = ["Catheters, Indwelling", "Tube, Inserted", "Implanted Medical Device", "Medical Device", "Stents"],
    };

    /// <summary>The observations a MeSH field names (main terms, case-insensitive).</summary>
    public static HashSet<Observation> FromMesh(string mesh)
    {
        var terms = mesh.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(t => t.Split('/')[0].Trim()).ToHashSet(StringComparer.OrdinalIgnoreCase);
        return MeshTerms.Where(kv => kv.Value.Any(terms.Contains)).Select(kv => kv.Key).ToHashSet();
    }

    /// <summary>(a) Labeler on findings + impression of iu_reports.csv vs the MeSH column, per MeSH-covered observation.</summary>
    /// <param name="uncertainAsPresent">Count uncertain labels as present (true) or as absent (false): MeSH terms name definite findings.</param>
    public static AgreementReport VersusIuMesh(string iuReportsCsv, ILabeler? labeler = null, bool uncertainAsPresent = true)
    {
        labeler ??= Labeler.Default;
        var observations = MeshTerms.Keys.OrderBy(o => o).ToList();
        var counts = observations.ToDictionary(o => o, _ => new int[4]);  // TP, FP, FN, docs
        int documents = 0;
        foreach (var row in Csv.Read(iuReportsCsv, "MeSH", "findings", "impression"))
        {
            string text = string.Join(" ", new[] { ReportCleaner.Clean(row["findings"]), ReportCleaner.Clean(row["impression"]) }.Where(t => t.Length > 0));
            if (text.Length == 0) continue;
            documents++;
            var reference = FromMesh(row["MeSH"]);
            var labels = labeler.Label(text, "en");
            foreach (var o in observations) Tally(counts[o], reference.Contains(o), IsPresent(labels[o], uncertainAsPresent));
        }
        var rows = observations.Select(o => new ObservationAgreement(o.Name(), documents, counts[o][0], counts[o][1], counts[o][2], 0)).ToList();
        string present = uncertainAsPresent ? "positive or uncertain" : "positive only";
        return new AgreementReport($"labeler vs IU MeSH terms", documents, rows, HasExactValues: false, present);
    }

    /// <summary>(b) Labels of each English XrayGLM caption (reference) vs its Chinese translation, over all 14 observations.</summary>
    public static AgreementReport BetweenCaptionLanguages(string englishJson, string chineseJson, ILabeler? labeler = null, bool uncertainAsPresent = true)
    {
        labeler ??= Labeler.Default;
        var en = XrayGlmSource.ReadCaptions(englishJson);
        var zh = XrayGlmSource.ReadCaptions(chineseJson).ToDictionary(c => c.ImageId, c => c.Text);
        var counts = Observations.All.ToDictionary(o => o, _ => new int[4]);  // TP, FP, FN, exact
        int documents = 0;
        foreach (var caption in en)
        {
            if (!zh.TryGetValue(caption.ImageId, out var chinese)) continue;
            documents++;
            var a = labeler.Label(caption.Text, "en");
            var b = labeler.Label(chinese, "zh");
            foreach (var o in Observations.All)
            {
                Tally(counts[o], IsPresent(a[o], uncertainAsPresent), IsPresent(b[o], uncertainAsPresent));
                if (a[o] == b[o]) counts[o][3]++;
            }
        }
        var rows = Observations.All.Select(o => new ObservationAgreement(o.Name(), documents, counts[o][0], counts[o][1], counts[o][2], counts[o][3])).ToList();
        return new AgreementReport("English caption labels (reference) vs Chinese translation labels", documents, rows, HasExactValues: true,
            uncertainAsPresent ? "positive or uncertain" : "positive only");
    }

    private static bool IsPresent(LabelValue v, bool uncertainAsPresent) =>
        v == LabelValue.Positive || (uncertainAsPresent && v == LabelValue.Uncertain);

    private static void Tally(int[] c, bool reference, bool predicted)
    {
        if (reference && predicted) c[0]++;
        else if (predicted) c[1]++;
        else if (reference) c[2]++;
    }
}
