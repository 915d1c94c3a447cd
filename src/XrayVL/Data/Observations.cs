namespace XrayVL.Data;

/// <summary>The 14 CheXpert observations, in CheXpert's order. The enum value indexes <see cref="Observations.Names"/>.</summary>
public enum Observation
{
    NoFinding,
    EnlargedCardiomediastinum,
    Cardiomegaly,
    LungLesion,
    LungOpacity,
    Edema,
    Consolidation,
    Pneumonia,
    Atelectasis,
    Pneumothorax,
    PleuralEffusion,
    PleuralOther,
    Fracture,
    SupportDevices,
}

/// <summary>How a report speaks of one observation. The integer values are CheXpert's (1, 0, -1); not mentioned is written as null.</summary>
public enum LabelValue
{
    NotMentioned = 2,
    Positive = 1,
    Negative = 0,
    Uncertain = -1,
}

public static class Observations
{
    /// <summary>The display names, which are also the JSON keys of a label set.</summary>
    public static readonly IReadOnlyList<string> Names =
    [
        "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity", "Edema",
        "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
        "Fracture", "Support Devices",
    ];

    public static readonly IReadOnlyList<Observation> All = Enum.GetValues<Observation>();

    public static string Name(this Observation o) => Names[(int)o];

    /// <summary>Parses a display name (case and separators ignored: "pleural_effusion", "Pleural Effusion").</summary>
    public static Observation Parse(string name) => TryParse(name, out var o) ? o
        : throw new XrayVLException($"unknown observation '{name}'; expected one of: {string.Join(", ", Names)}");

    public static bool TryParse(string name, out Observation observation)
    {
        string key = Normalize(name);
        for (int i = 0; i < Names.Count; i++)
        {
            if (Normalize(Names[i]) == key) { observation = (Observation)i; return true; }
        }
        observation = default;
        return false;
    }

    /// <summary>The CheXpert integer for a value: 1, 0, -1, or null when not mentioned.</summary>
    public static int? ToInt(this LabelValue v) => v == LabelValue.NotMentioned ? null : (int)v;

    public static LabelValue FromInt(int? v) => v switch
    {
        null => LabelValue.NotMentioned,
        1 => LabelValue.Positive,
        0 => LabelValue.Negative,
        -1 => LabelValue.Uncertain,
        _ => throw new XrayVLException($"label value {v} is not one of 1, 0, -1 or null"),
    };

    private static string Normalize(string s) => new(s.Where(char.IsLetter).Select(char.ToLowerInvariant).ToArray());
}
