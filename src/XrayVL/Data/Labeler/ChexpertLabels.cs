namespace XrayVL.Data.Labeler;

/// <summary>
/// The 14 observation labels of one report, each with the sentence that decided it (the evidence), when there is one.
/// </summary>
public sealed class ChexpertLabels
{
    private readonly LabelValue[] values = Enumerable.Repeat(LabelValue.NotMentioned, Observations.Names.Count).ToArray();
    private readonly string?[] evidence = new string?[Observations.Names.Count];

    public LabelValue this[Observation o]
    {
        get => values[(int)o];
        set => values[(int)o] = value;
    }

    /// <summary>The report sentence that decided the label (null when not mentioned or when no single sentence did).</summary>
    public string? Evidence(Observation o) => evidence[(int)o];

    public void Set(Observation o, LabelValue value, string? evidenceSentence)
    {
        values[(int)o] = value;
        evidence[(int)o] = evidenceSentence;
    }

    /// <summary>All 14 names as keys, in CheXpert order; values 1, 0, -1 or null.</summary>
    public Dictionary<string, int?> ToDictionary()
    {
        var d = new Dictionary<string, int?>(Observations.Names.Count);
        foreach (var o in Observations.All) d[o.Name()] = values[(int)o].ToInt();
        return d;
    }

    /// <summary>Reads a dictionary of names → 1/0/-1/null; names may be missing (not mentioned) but not unknown.</summary>
    public static ChexpertLabels FromDictionary(IReadOnlyDictionary<string, int?> labels)
    {
        var result = new ChexpertLabels();
        foreach (var (name, value) in labels) result[Observations.Parse(name)] = Observations.FromInt(value);
        return result;
    }

    /// <summary>The observations with this value, in CheXpert order.</summary>
    public IEnumerable<Observation> With(LabelValue value) => Observations.All.Where(o => values[(int)o] == value);

    /// <summary>One line for people: the mentioned observations as "Name=1", or "(nothing mentioned)".</summary>
    public string ToLine()
    {
        var parts = Observations.All.Where(o => this[o] != LabelValue.NotMentioned).Select(o => $"{o.Name()}={(int)this[o]}").ToList();
        return parts.Count == 0 ? "(nothing mentioned)" : string.Join("; ", parts);
    }

    public override string ToString() => ToLine();
}
