using System.Text.Json.Serialization;

namespace XrayVL.Data;

/// <summary>
/// One manifest line: a study (or, for caption datasets such as XrayGLM's, one image with its caption) with its
/// images, report sections, labels and split. Serialized with <see cref="Json.Line"/> (snake_case keys).
/// </summary>
public sealed record Study
{
    /// <summary>Unique within a manifest: "CXR12" (IU), "12_1" (XrayGLM), "s50414267" (MIMIC), "covid-2-auntminnie-a..." (COVID).</summary>
    public required string StudyId { get; init; }
    /// <summary>Splits never put one patient in two splits. IU has one study per patient, so "CXR12" again.</summary>
    public required string PatientId { get; init; }
    public IReadOnlyList<StudyImage> Images { get; init; } = [];
    public string Findings { get; init; } = "";
    public string Impression { get; init; } = "";
    public string Indication { get; init; } = "";
    public string Comparison { get; init; } = "";
    /// <summary>"en" or "zh".</summary>
    public string Language { get; init; } = "en";
    /// <summary>The 14 observation names → 1, 0, -1, or null (not mentioned). Null when not labeled yet.</summary>
    public IReadOnlyDictionary<string, int?>? Labels { get; init; }
    /// <summary>"train", "val", "test", or null before splitting.</summary>
    public string? Split { get; init; }
    /// <summary>The source reader that produced it ("iu-csv", "mimic", ...).</summary>
    public string Source { get; init; } = "";
    /// <summary>Boxes on the 0–100 grid of an image (COVID lung boxes).</summary>
    public IReadOnlyList<StudyBox>? Boxes { get; init; }
    /// <summary>Clinical notes that are not part of the report (COVID metadata).</summary>
    public string? Notes { get; init; }
    /// <summary>Source terms kept for evaluation and filtering: IU "mesh"/"problems", COVID "finding", ...</summary>
    public IReadOnlyDictionary<string, string>? Meta { get; init; }
    /// <summary>Ready-made conversations (the generic {images, conversations} JSONL); instruction building passes them through.</summary>
    public IReadOnlyList<ConversationTurn>? Conversations { get; init; }

    /// <summary>A study of one parsed report (its four sections); the caller adds split, meta and the rest with `with`.</summary>
    public static Study FromReport(string studyId, string patientId, Report report, string language, string source) => new()
    {
        StudyId = studyId,
        PatientId = patientId,
        Findings = report.Findings,
        Impression = report.Impression,
        Indication = report.Indication,
        Comparison = report.Comparison,
        Language = language,
        Source = source,
    };

    /// <summary>Findings and impression as one text (what the labeler reads and report generation targets).</summary>
    [JsonIgnore]
    public string ReportText => string.Join(" ", new[] { Findings, Impression }.Where(s => !string.IsNullOrWhiteSpace(s)).Select(s => s.Trim()));
}

/// <summary>An image of a study: its path (absolute, or as the source gave it when no image folder was given) and view.</summary>
public sealed record StudyImage(string Path, string? View = null);

/// <summary>A labeled box on image number <see cref="Image"/> of the study, corners on a 0–100 grid (x right, y down).</summary>
public sealed record StudyBox(int Image, string Label, double X1, double Y1, double X2, double Y2);

/// <summary>One turn of a conversation: role "user" or "assistant", its text, and how many images it carries.</summary>
public sealed record ConversationTurn(string Role, string Text, int Images = 0);

/// <summary>View names used in manifests.</summary>
public static class Views
{
    public const string Frontal = "frontal";
    public const string Lateral = "lateral";
    public const string PA = "PA";
    public const string AP = "AP";

    /// <summary>Maps the spellings of the sources (IU "Frontal", MIMIC "PA"/"AP"/"LL"/"LATERAL", COVID "AP Supine"/"L") to one vocabulary.</summary>
    public static string? Normalize(string? view)
    {
        if (string.IsNullOrWhiteSpace(view)) return null;
        string v = view.Trim();
        return v.ToUpperInvariant() switch
        {
            "PA" => PA,
            "AP" => AP,
            "AP SUPINE" or "APS" or "AP_SUPINE" => "AP supine",
            "L" or "LL" or "LATERAL" or "XTABLE LATERAL" => Lateral,
            "LAO" or "RAO" or "LPO" or "RPO" => "oblique",
            "FRONTAL" => Frontal,
            "?" or "" => null,
            _ => v.ToLowerInvariant(),
        };
    }
}
