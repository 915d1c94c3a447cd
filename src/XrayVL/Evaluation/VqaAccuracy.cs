namespace XrayVL.Evaluation;

/// <summary>A closed answer's class.</summary>
public enum ClosedAnswer { Yes, No, Uncertain }

/// <summary>Accuracy of closed questions, with the confusion counts (rows: reference, columns: prediction, then "none").</summary>
public sealed record VqaResult(double Accuracy, int Correct, int Total, int Unparsed, int[,] Confusion)
{
    /// <summary>Row and column names of <see cref="Confusion"/>: yes, no, uncertain (+ "none" for unparsed predictions as a column).</summary>
    public static readonly IReadOnlyList<string> Classes = ["yes", "no", "uncertain"];
}

/// <summary>
/// Closed-question (yes / no / uncertain) VQA accuracy. An answer is read from its start, after lower-casing and
/// trimming spaces and punctuation: English "yes" (also "yeah", "yep", "true", "correct", "positive"), "no" ("nope",
/// "false", "negative", "not"), "uncertain" ("unsure", "unclear", "possibly", "possible", "maybe", "indeterminate",
/// "cannot be determined", "not sure", "not certain") — the first word decides ("Yes, there is ..." → yes; "Uncertain.
/// There may be ..." → uncertain); Chinese 不确定 / 不能确定 / 无法确定 / 可能 / 不排除 → uncertain, 否 / 不是 / 没有 / 无 /
/// 未见 / 不 → no, 是 / 有 / 对 / 存在 → yes (checked in that order, so 不是 is no and 不确定 uncertain). An answer that fits
/// none counts as wrong (and as unparsed).
/// </summary>
public static class VqaAccuracy
{
    private static readonly (string Prefix, ClosedAnswer Answer)[] EnglishPhrases =
    [
        ("not sure", ClosedAnswer.Uncertain), ("not certain", ClosedAnswer.Uncertain), ("cannot be determined", ClosedAnswer.Uncertain),
        ("can not be determined", ClosedAnswer.Uncertain), ("cannot be excluded", ClosedAnswer.Uncertain),
    ];

    private static readonly Dictionary<string, ClosedAnswer> EnglishWords = new(StringComparer.Ordinal)
    {
        ["yes"] = ClosedAnswer.Yes, ["yeah"] = ClosedAnswer.Yes, ["yep"] = ClosedAnswer.Yes, ["true"] = ClosedAnswer.Yes,
        ["correct"] = ClosedAnswer.Yes, ["positive"] = ClosedAnswer.Yes,
        ["no"] = ClosedAnswer.No, ["nope"] = ClosedAnswer.No, ["false"] = ClosedAnswer.No, ["negative"] = ClosedAnswer.No, ["not"] = ClosedAnswer.No,
        ["uncertain"] = ClosedAnswer.Uncertain, ["unsure"] = ClosedAnswer.Uncertain, ["unclear"] = ClosedAnswer.Uncertain,
        ["possibly"] = ClosedAnswer.Uncertain, ["possible"] = ClosedAnswer.Uncertain, ["maybe"] = ClosedAnswer.Uncertain,
        ["indeterminate"] = ClosedAnswer.Uncertain, ["equivocal"] = ClosedAnswer.Uncertain,
    };

    private static readonly (string Prefix, ClosedAnswer Answer)[] ChinesePrefixes =
    [
        ("不确定", ClosedAnswer.Uncertain), ("不能确定", ClosedAnswer.Uncertain), ("无法确定", ClosedAnswer.Uncertain),
        ("难以确定", ClosedAnswer.Uncertain), ("可能", ClosedAnswer.Uncertain), ("不排除", ClosedAnswer.Uncertain), ("不除外", ClosedAnswer.Uncertain),
        ("否", ClosedAnswer.No), ("不是", ClosedAnswer.No), ("没有", ClosedAnswer.No), ("无", ClosedAnswer.No), ("未见", ClosedAnswer.No), ("不", ClosedAnswer.No),
        ("是", ClosedAnswer.Yes), ("有", ClosedAnswer.Yes), ("对", ClosedAnswer.Yes), ("存在", ClosedAnswer.Yes),
    ];

    /// <summary>The bare answer as the training answers begin: "Yes." / "No." / "Uncertain." or "是。" / "否。" / "不确定。".</summary>
    public static string Write(ClosedAnswer answer, string lang) => (answer, lang == "zh") switch
    {
        (ClosedAnswer.Yes, false) => "Yes.",
        (ClosedAnswer.No, false) => "No.",
        (ClosedAnswer.Uncertain, false) => "Uncertain.",
        (ClosedAnswer.Yes, true) => "是。",
        (ClosedAnswer.No, true) => "否。",
        _ => "不确定。",
    };

    /// <summary>The class of an answer, or null when its start is none of the known forms.</summary>
    public static ClosedAnswer? Parse(string answer)
    {
        ArgumentNullException.ThrowIfNull(answer);
        string s = answer.Normalize(System.Text.NormalizationForm.FormKC).Trim().TrimStart(StartTrim).ToLowerInvariant();
        if (s.Length == 0) return null;
        if (CaptionTokenizer.IsCjk(s[0]))
        {
            foreach (var (prefix, value) in ChinesePrefixes)
                if (s.StartsWith(prefix, StringComparison.Ordinal)) return value;
            return null;
        }
        foreach (var (prefix, value) in EnglishPhrases)
            if (s.StartsWith(prefix, StringComparison.Ordinal)) return value;
        int end = 0;
        while (end < s.Length && char.IsLetter(s[end])) end++;
        return EnglishWords.TryGetValue(s[..end], out var word) ? word : null;
    }

    private static readonly char[] StartTrim = [' ', '\t', '\n', '\r', '"', '\'', '*', '-', '“', '「', '：', ':'];

    /// <summary>Accuracy of predicted answers against reference answers (both parsed with <see cref="Parse"/>).</summary>
    public static VqaResult Score(IReadOnlyList<string> predictions, IReadOnlyList<string> references)
    {
        if (predictions.Count != references.Count)
            throw new ArgumentException($"{predictions.Count} predictions but {references.Count} references");
        var confusion = new int[3, 4];
        int correct = 0, unparsed = 0, total = 0;
        for (int i = 0; i < predictions.Count; i++)
        {
            var reference = Parse(references[i])
                ?? throw new XrayVLException($"reference answer {i + 1} is not a closed answer (yes/no/uncertain): '{Shorten(references[i])}'");
            var predicted = Parse(predictions[i]);
            total++;
            if (predicted is null) unparsed++;
            if (predicted == reference) correct++;
            confusion[(int)reference, predicted is { } p ? (int)p : 3]++;
        }
        return new VqaResult(total == 0 ? 0 : (double)correct / total, correct, total, unparsed, confusion);
    }

    private static string Shorten(string s) => s.Length <= 60 ? s : s[..60] + "…";
}
