namespace XrayVL.Data;

/// <summary>
/// The phrasings of the training conversations, several per task and language, and the report request the front ends
/// send (one of them, so a model trained on these sets has seen it).
/// </summary>
public static class InstructionPhrases
{
    /// <summary>
    /// The report request the front ends send (CLI `report`, the web page's button): one of the training phrasings,
    /// so a model trained on these sets has seen it.
    /// </summary>
    public static string ReportRequest(string lang) => Report.TryGetValue(lang, out var pool)
        ? pool[1]
        : throw new XrayVLException($"language '{lang}' is not supported (en, zh)");

    internal static readonly Dictionary<string, string[]> Report = new()
    {
        ["en"] =
        [
            "Describe this chest X-ray.", "Write the radiology report for this chest X-ray.",
            "What are the findings and impression of this chest radiograph?", "Please write a report for this X-ray image.",
            "Generate a diagnostic report for this chest X-ray.", "What do you see in this chest X-ray?",
        ],
        ["zh"] =
        [
            "请描述这张胸部X光片。", "请为这张胸片写一份放射学报告。", "这张胸部X光片的所见和印象是什么？",
            "根据这张X光片生成诊断报告。", "这张胸片显示了什么？", "请帮我解读这张胸部X光片。",
        ],
    };

    internal static readonly Dictionary<string, string[]> Question = new()
    {
        ["en"] =
        [
            "Is there {0}?", "Does this chest X-ray show {0}?", "Is there any evidence of {0} in this image?",
            "Can you see {0} on this radiograph?", "Does the patient have {0} on this X-ray?",
        ],
        ["zh"] = ["是否存在{0}？", "这张胸片显示{0}吗？", "图像中有{0}吗？", "能看到{0}吗？", "有没有{0}的征象？"],
    };

    internal static readonly Dictionary<string, string[]> Normal = new()
    {
        ["en"] = ["Is this chest X-ray normal?", "Does this radiograph look normal?", "Is this a normal chest X-ray?"],
        ["zh"] = ["这张胸片正常吗？", "这张X光片是否正常？", "这是一张正常的胸片吗？"],
    };

    internal static readonly Dictionary<string, string[]> FindingList = new()
    {
        ["en"] =
        [
            "List the findings in this chest X-ray.", "Which abnormalities does this radiograph show?",
            "What findings are present in this image?", "Name the abnormal findings on this X-ray.",
        ],
        ["zh"] = ["列出这张胸片的异常发现。", "这张X光片有哪些异常？", "图像中存在哪些病变？", "请列出这张胸片的主要发现。"],
    };

    internal static readonly Dictionary<string, string[]> Grounding = new()
    {
        ["en"] =
        [
            "Where is the {0} in this image?", "[refer] {0}", "Give the bounding box of the {0}.",
            "Locate the {0}.", "Where is the {0}? Answer with a box.",
        ],
        ["zh"] = ["{0}在图像中的什么位置？", "请给出{0}的边界框。", "定位{0}。", "[refer] {0}", "{0}在哪里？请用方框回答。"],
    };

    // Question nouns (with article in English) and list terms, indexed by observation.
    private static readonly string[] NounEn =
    [
        "", "an enlarged cardiomediastinum", "cardiomegaly", "a lung lesion", "a lung opacity", "pulmonary edema",
        "consolidation", "pneumonia", "atelectasis", "a pneumothorax", "a pleural effusion", "another pleural abnormality",
        "a fracture", "a support device",
    ];
    private static readonly string[] TermEn =
    [
        "no finding", "enlarged cardiomediastinum", "cardiomegaly", "lung lesion", "lung opacity", "edema",
        "consolidation", "pneumonia", "atelectasis", "pneumothorax", "pleural effusion", "other pleural abnormality",
        "fracture", "support devices",
    ];
    private static readonly string[] TermZh =
    [
        "未见异常", "纵隔增宽", "心脏增大", "肺部病变", "肺部阴影", "肺水肿", "肺实变", "肺炎", "肺不张", "气胸", "胸腔积液",
        "其他胸膜病变", "骨折", "支持装置（如导管或起搏器）",
    ];

    internal static string Noun(Observation o, string lang) => lang == "zh" ? TermZh[(int)o] : NounEn[(int)o];

    internal static string Term(Observation o, string lang) => lang == "zh" ? TermZh[(int)o] : TermEn[(int)o];

    internal static string BoxLabel(string label, string lang)
    {
        string l = label.Trim().ToLowerInvariant();
        if (lang != "zh") return l;
        return l switch
        {
            "right lung" => "右肺",
            "left lung" => "左肺",
            "heart" => "心脏",
            _ => label,
        };
    }
}
