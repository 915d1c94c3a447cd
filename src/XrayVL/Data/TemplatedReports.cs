namespace XrayVL.Data;

/// <summary>
/// Reports written from labels, for image collections that have labels but no report (Kermany, NIH ChestX-ray14, the
/// COVID collection): without them the report task would only ever see the few reported studies, and a model learns to
/// write the same report whatever the image. Findings open with the examination when the source records every image's
/// view ("The examination is a frontal radiograph of the chest."), as written reports state their technique; that is a
/// fact of the image a model can see, and it keeps short abnormal reports from being a bare finding list. A normal study
/// (No Finding positive) gets a normal report ending
/// "No acute cardiopulmonary abnormality."; an abnormal one gets findings of one sentence per positive observation, then a
/// sentence for each of pleural effusion and pneumothorax that is labelled absent, and an impression naming the positive
/// observations ("Pneumonia."), so that abnormal reports have the findings + impression form of normal ones and of written
/// reports rather than being a bare list. Each sentence names one observation in words the project's labeler reads back as
/// that observation, and no sentence hedges, so labels → report → labeler gives the labels again. Every study gets an
/// English and a Chinese version (the Chinese one as a second study, id + "-zh", same patient, images and split).
/// </summary>
public static class TemplatedReports
{
    public const string NormalImpression = "No acute cardiopulmonary abnormality.";
    public const string NormalImpressionZh = "心肺未见明显急性异常。";

    private const string NormalFindings = "The lungs are clear. The heart size is normal. There is no pleural effusion or pneumothorax.";
    private const string NormalFindingsZh = "双肺清晰。心脏大小正常。未见胸腔积液或气胸。";

    /// <summary>Per observation (in CheXpert's order; No Finding has none): the findings sentence and the impression's name
    /// for it, in English and Chinese.</summary>
    private static readonly IReadOnlyDictionary<Observation, (string En, string Zh, string NameEn, string NameZh)> Positive =
        new Dictionary<Observation, (string, string, string, string)>
    {
        [Observation.EnlargedCardiomediastinum] = ("The cardiomediastinal silhouette is widened.", "纵隔增宽。", "widened cardiomediastinal silhouette", "纵隔增宽"),
        [Observation.Cardiomegaly] = ("The heart is enlarged.", "心影增大。", "cardiomegaly", "心影增大"),
        [Observation.LungLesion] = ("There is a pulmonary nodule or mass.", "可见肺部结节或肿块。", "pulmonary nodule or mass", "肺部结节或肿块"),
        [Observation.LungOpacity] = ("There is an airspace opacity in the lungs.", "肺内可见斑片影。", "airspace opacity", "肺内斑片影"),
        [Observation.Edema] = ("There is pulmonary edema.", "可见肺水肿。", "pulmonary edema", "肺水肿"),
        [Observation.Consolidation] = ("There is focal consolidation.", "可见局灶性实变。", "focal consolidation", "局灶性实变"),
        [Observation.Pneumonia] = ("The findings are consistent with pneumonia.", "影像表现为肺炎。", "pneumonia", "肺炎"),
        [Observation.Atelectasis] = ("There is atelectasis.", "可见肺不张。", "atelectasis", "肺不张"),
        [Observation.Pneumothorax] = ("There is a pneumothorax.", "可见气胸。", "pneumothorax", "气胸"),
        [Observation.PleuralEffusion] = ("There is a pleural effusion.", "可见胸腔积液。", "pleural effusion", "胸腔积液"),
        [Observation.PleuralOther] = ("There is pleural thickening.", "可见胸膜增厚。", "pleural thickening", "胸膜增厚"),
        [Observation.Fracture] = ("There is a fracture.", "可见骨折。", "fracture", "骨折"),
        [Observation.SupportDevices] = ("Support devices are present.", "可见置管及支持装置。", "support devices", "置管及支持装置"),
    };

    /// <summary>The examination sentence per kind of view set: frontal only, lateral only, both.</summary>
    private static readonly IReadOnlyDictionary<string, (string En, string Zh)> Examination = new Dictionary<string, (string, string)>
    {
        [Views.Frontal] = ("The examination is a frontal radiograph of the chest.", "检查为胸部正位X线片。"),
        [Views.Lateral] = ("The examination is a lateral radiograph of the chest.", "检查为胸部侧位X线片。"),
        [Views.Frontal + "+" + Views.Lateral] = ("The examination consists of frontal and lateral radiographs of the chest.", "检查为胸部正侧位X线片。"),
    };

    private static readonly IReadOnlyList<(Observation O, string En, string Zh)> Absent =
    [
        (Observation.PleuralEffusion, "There is no pleural effusion.", "未见胸腔积液。"),
        (Observation.Pneumothorax, "There is no pneumothorax.", "未见气胸。"),
    ];

    /// <summary>
    /// The studies with a templated report added where a study has none and its labels say something (No Finding positive,
    /// or any observation positive): the English study in place, its Chinese twin after it. Other studies pass unchanged.
    /// </summary>
    public static List<Study> Complete(IEnumerable<Study> studies)
    {
        var result = new List<Study>();
        foreach (var s in studies)
        {
            string? views = ViewSet(s.Images);
            if (s.ReportText.Length > 0 || s.Labels is null || Write(s.Labels, "en", views) is not { } en)
            {
                result.Add(s);
                continue;
            }
            var zh = Write(s.Labels, "zh", views)!.Value;
            result.Add(s with { Findings = en.Findings, Impression = en.Impression, Language = "en" });
            result.Add(s with { StudyId = s.StudyId + "-zh", Findings = zh.Findings, Impression = zh.Impression, Language = "zh" });
        }
        return result;
    }

    /// <summary>
    /// "frontal", "lateral" or "frontal+lateral" for a study whose every image has a known frontal (PA, AP, AP supine,
    /// frontal) or lateral view; null when any view is unknown or another kind (oblique), since the report then cannot
    /// say what was taken.
    /// </summary>
    public static string? ViewSet(IReadOnlyList<StudyImage> images)
    {
        if (images.Count == 0) return null;
        var kinds = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var image in images)
        {
            string? kind = image.View switch
            {
                Views.PA or Views.AP or Views.Frontal or "AP supine" => Views.Frontal,
                Views.Lateral => Views.Lateral,
                _ => null,
            };
            if (kind is null) return null;
            kinds.Add(kind);
        }
        return string.Join("+", kinds);
    }

    /// <summary>The report for a label set in "en" or "zh", opening with the examination for a <paramref name="views"/>
    /// of <see cref="ViewSet"/>; null when the labels name neither a normal study nor a finding.</summary>
    public static (string Findings, string Impression)? Write(IReadOnlyDictionary<string, int?> labels, string language, string? views = null)
    {
        bool zh = language switch
        {
            "en" => false,
            "zh" => true,
            _ => throw new XrayVLException($"language '{language}' is not supported (en, zh)"),
        };
        int? Value(Observation o) => labels.TryGetValue(o.Name(), out var v) ? v : null;
        var positives = Observations.All.Where(o => o != Observation.NoFinding && Value(o) == 1).ToList();
        IEnumerable<string> sentences;
        string impression;
        if (positives.Count > 0)
        {
            sentences = positives.Select(o => zh ? Positive[o].Zh : Positive[o].En)
                .Concat(Absent.Where(a => Value(a.O) == 0).Select(a => zh ? a.Zh : a.En));
            impression = Impression(positives, zh);
        }
        else if (Value(Observation.NoFinding) == 1)
        {
            sentences = [zh ? NormalFindingsZh : NormalFindings];
            impression = zh ? NormalImpressionZh : NormalImpression;
        }
        else return null;
        if (views is not null)
        {
            if (!Examination.TryGetValue(views, out var exam))
                throw new XrayVLException($"view set '{views}' is not one of {string.Join(", ", Examination.Keys)}");
            sentences = sentences.Prepend(zh ? exam.Zh : exam.En);
        }
        return (string.Join(zh ? "" : " ", sentences), impression);
    }

    /// <summary>"Pneumonia." / "Airspace opacity and pneumonia." / "Cardiomegaly, pleural effusion and pneumonia.";
    /// Chinese "肺炎。" / "肺内斑片影、肺炎。".</summary>
    private static string Impression(IReadOnlyList<Observation> positives, bool zh)
    {
        if (zh) return string.Join("、", positives.Select(o => Positive[o].NameZh)) + "。";
        var names = positives.Select(o => Positive[o].NameEn).ToList();
        string list = names.Count == 1 ? names[0] : string.Join(", ", names[..^1]) + " and " + names[^1];
        return char.ToUpperInvariant(list[0]) + list[1..] + ".";
    }
}
