using System.Text.Json;

namespace XrayVL.Data.Labeler;

/// <summary>Turns a report (written or generated) into the 14 CheXpert observation labels.</summary>
public interface ILabeler
{
    /// <param name="report">Free report text: findings, impression, or both.</param>
    /// <param name="lang">"en", "zh", or "auto" (Chinese when CJK characters dominate).</param>
    ChexpertLabels Label(string report, string lang = "auto");
}

/// <summary>
/// The rule-based labeler in English (CheXpert phrase lists with this project's negation and uncertainty rules) and
/// Chinese (this project's phrase lists and cues: 未见, 无, 没有, 排除 ... / 不除外, 可能, 考虑 ...).
/// Stateless and thread-safe; use <see cref="Default"/>.
/// </summary>
public sealed class Labeler : ILabeler
{
    public static readonly Labeler Default = new();

    private static readonly Lazy<RuleLabeler> English = new(() => new RuleLabeler(LanguageRules.English.Value));
    private static readonly Lazy<RuleLabeler> Chinese = new(() => new RuleLabeler(LanguageRules.Chinese.Value));

    public ChexpertLabels Label(string report, string lang = "auto")
    {
        ArgumentNullException.ThrowIfNull(report);
        return ResolveLanguage(report, lang) switch
        {
            "zh" => Chinese.Value.Label(report),
            _ => English.Value.Label(report),
        };
    }

    /// <summary>"en" or "zh" for a language option; "auto" looks at the text.</summary>
    public static string ResolveLanguage(string text, string lang) => lang.ToLowerInvariant() switch
    {
        "en" => "en",
        "zh" => "zh",
        "auto" => DetectLanguage(text),
        _ => throw new XrayVLException($"unknown labeler language '{lang}'; expected en, zh or auto"),
    };

    /// <summary>"zh" when CJK characters dominate the text (each counts as a word, about four Latin letters), else "en".</summary>
    public static string DetectLanguage(string text)
    {
        int cjk = 0, latin = 0;
        foreach (char c in text)
        {
            if (IsCjk(c)) cjk++;
            else if (c is >= 'a' and <= 'z' or >= 'A' and <= 'Z') latin++;
        }
        return cjk > 0 && cjk * 4 >= latin ? "zh" : "en";
    }

    /// <summary>
    /// The language to use for <paramref name="text"/>: "auto" becomes the detected one; an explicit "en" for text where
    /// CJK characters dominate, or "zh" for text with Latin letters and no CJK character at all, is refused with a
    /// message naming <paramref name="source"/> and the option to use. Text with neither (numbers, blank) passes.
    /// </summary>
    public static string CheckLanguage(string text, string lang, string source)
    {
        string detected = DetectLanguage(text);
        if (lang == "auto") return detected;
        bool latin = text.Any(c => c is >= 'a' and <= 'z' or >= 'A' and <= 'Z');
        if (lang == "en" && detected == "zh")
            throw new XrayVLException($"{source}: the text is Chinese (CJK characters dominate) but --lang is en; use --lang zh or auto");
        if (lang == "zh" && !text.Any(IsCjk) && latin)
            throw new XrayVLException($"{source}: the text has no Chinese characters but --lang is zh; use --lang en or auto");
        return lang;
    }

    internal static bool IsCjk(char c) => c is >= '\u4e00' and <= '\u9fff' or >= '\u3400' and <= '\u4dbf' or >= '\uf900' and <= '\ufaff';

    /// <summary>
    /// The `xrayvl label` loop: one report per input line, one result per output line (blank lines give an all-null
    /// result, so lines stay aligned). Text output is <see cref="ChexpertLabels.ToLine"/>; JSON output is
    /// {"labels": {14 names: 1, 0, -1 or null}}. Throws <see cref="XrayVLException"/> naming <paramref name="sourceName"/>
    /// when the input holds no report at all. Returns the number of reports labeled.
    /// </summary>
    public static int LabelLines(TextReader input, TextWriter output, string sourceName, string lang = "auto", bool json = false, ILabeler? labeler = null)
    {
        labeler ??= Default;
        if (lang is not ("auto" or "en" or "zh")) throw new XrayVLException($"unknown labeler language '{lang}'; expected en, zh or auto");
        int reports = 0, lineNumber = 0;
        string? line;
        while ((line = input.ReadLine()) != null)
        {
            lineNumber++;
            if (!string.IsNullOrWhiteSpace(line)) CheckLanguage(line, lang, $"{sourceName} line {lineNumber}");
            var labels = string.IsNullOrWhiteSpace(line) ? new ChexpertLabels() : labeler.Label(line, lang);
            if (!string.IsNullOrWhiteSpace(line)) reports++;
            output.WriteLine(json ? ToJsonLine(labels) : labels.ToLine());
        }
        if (reports == 0) throw new XrayVLException($"{sourceName}: empty report (no text to label)");
        return reports;
    }

    /// <summary>{"labels": {"No Finding": 1, "Enlarged Cardiomediastinum": null, ...}} on one line.</summary>
    public static string ToJsonLine(ChexpertLabels labels) =>
        JsonSerializer.Serialize(new Dictionary<string, Dictionary<string, int?>> { ["labels"] = labels.ToDictionary() }, Json.Line);
}
