namespace XrayVL.Data;

/// <summary>A radiology report split into the sections the project uses; other headed sections are kept in <see cref="Other"/>.</summary>
public sealed record Report
{
    public string Indication { get; init; } = "";
    public string Comparison { get; init; } = "";
    public string Findings { get; init; } = "";
    public string Impression { get; init; } = "";
    /// <summary>Sections under other headings (EXAMINATION, TECHNIQUE, ...), by upper-case heading.</summary>
    public IReadOnlyDictionary<string, string> Other { get; init; } = new Dictionary<string, string>();

    /// <summary>True when neither findings nor impression holds any text.</summary>
    public bool IsEmpty => string.IsNullOrWhiteSpace(Findings) && string.IsNullOrWhiteSpace(Impression);

    /// <summary>Every section cleaned with <see cref="ReportCleaner.Clean"/>.</summary>
    public Report Cleaned() => new()
    {
        Indication = ReportCleaner.Clean(Indication),
        Comparison = ReportCleaner.Clean(Comparison),
        Findings = ReportCleaner.Clean(Findings),
        Impression = ReportCleaner.Clean(Impression),
        Other = Other.ToDictionary(kv => kv.Key, kv => ReportCleaner.Clean(kv.Value)),
    };
}
