using System.Text;
using System.Text.RegularExpressions;

namespace XrayVL.Data;

/// <summary>
/// Splits report text into sections by its headings. A heading counts when it is followed by a colon at a line or
/// sentence start ("Findings: ...", "impression:"), stands alone on its line ("FINDINGS" / "Impression"), is upper
/// case at a line start ("FINDINGS The lungs..."), or is upper case with a colon anywhere ("... IMPRESSION: ...").
/// Text without any heading is the findings; text before the first heading becomes the findings when there is no
/// findings section. Chinese headings (所见, 印象, 诊断, 病史 ...) work the same way.
/// </summary>
public static class ReportParser
{
    private enum Section { Indication, Comparison, Findings, Impression, Other }

    private static readonly (string Heading, Section Section)[] Headings =
    [
        ("findings and impression", Section.Findings),
        ("findings", Section.Findings), ("finding", Section.Findings), ("report", Section.Findings),
        ("impressions", Section.Impression), ("impression", Section.Impression), ("conclusions", Section.Impression),
        ("conclusion", Section.Impression), ("opinion", Section.Impression), ("summary", Section.Impression),
        ("clinical indication", Section.Indication), ("indications", Section.Indication), ("indication", Section.Indication),
        ("clinical history", Section.Indication), ("history", Section.Indication),
        ("reason for examination", Section.Indication), ("reason for exam", Section.Indication),
        ("reason for study", Section.Indication), ("clinical information", Section.Indication), ("clinical data", Section.Indication),
        ("comparisons", Section.Comparison), ("comparison", Section.Comparison), ("prior studies", Section.Comparison),
        ("examination", Section.Other), ("exam", Section.Other), ("technique", Section.Other), ("procedure", Section.Other),
        ("final report", Section.Other), ("wet read", Section.Other), ("notification", Section.Other),
        ("recommendations", Section.Other), ("recommendation", Section.Other), ("addendum", Section.Other),
        ("影像所见", Section.Findings), ("检查所见", Section.Findings), ("影像表现", Section.Findings), ("所见", Section.Findings),
        ("表现", Section.Findings), ("影像诊断", Section.Impression), ("诊断意见", Section.Impression), ("诊断", Section.Impression),
        ("印象", Section.Impression), ("结论", Section.Impression), ("临床病史", Section.Indication), ("临床资料", Section.Indication),
        ("检查原因", Section.Indication), ("病史", Section.Indication), ("对比", Section.Comparison), ("比较", Section.Comparison),
    ];

    private static readonly Dictionary<string, Section> SectionOf =
        Headings.ToDictionary(h => h.Heading, h => h.Section, StringComparer.OrdinalIgnoreCase);

    private static readonly Regex Candidate = new(
        @"(?<![\p{L}\p{N}])(?<h>" + string.Join("|", Headings.Select(h => h.Heading).OrderByDescending(h => h.Length).Select(Regex.Escape)) +
        @")(?![\p{L}\p{N}])[ \t]*(?<colon>[:：])?",
        RegexOptions.IgnoreCase | RegexOptions.Compiled | RegexOptions.CultureInvariant);

    public static Report Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        text = text.Replace("\r\n", "\n").Replace('\r', '\n');
        var accepted = Candidate.Matches(text).Where(m => IsHeading(text, m)).ToList();

        var parts = new Dictionary<Section, StringBuilder>();
        var other = new Dictionary<string, string>();
        string preamble = accepted.Count == 0 ? text : text[..accepted[0].Index];
        for (int i = 0; i < accepted.Count; i++)
        {
            var m = accepted[i];
            int start = m.Index + m.Length;
            int end = i + 1 < accepted.Count ? accepted[i + 1].Index : text.Length;
            string body = text[start..end].Trim();
            string heading = m.Groups["h"].Value;
            var section = SectionOf[heading];
            if (section == Section.Other)
            {
                string key = heading.ToUpperInvariant();
                other[key] = other.TryGetValue(key, out var prev) && prev.Length > 0 ? prev + "\n" + body : body;
                continue;
            }
            if (!parts.TryGetValue(section, out var sb)) parts[section] = sb = new StringBuilder();
            if (body.Length > 0) sb.Append(sb.Length > 0 ? "\n" : "").Append(body);
        }
        string Get(Section s) => parts.TryGetValue(s, out var sb) ? sb.ToString() : "";
        string findings = Get(Section.Findings);
        if (findings.Length == 0 && preamble.Trim().Length > 0) findings = preamble.Trim();
        return new Report
        {
            Indication = Get(Section.Indication),
            Comparison = Get(Section.Comparison),
            Findings = findings,
            Impression = Get(Section.Impression),
            Other = other,
        };
    }

    private static bool IsHeading(string text, Match m)
    {
        string heading = m.Groups["h"].Value;
        bool colon = m.Groups["colon"].Success;
        bool upper = heading.Any(char.IsLetter) && heading.Where(char.IsLetter).All(c => !char.IsLower(c));
        bool chinese = heading.Any(c => c > 0x2E80);
        int lineStart = text.LastIndexOf('\n', Math.Max(0, m.Index - 1)) + 1;
        if (m.Index == 0) lineStart = 0;
        bool atLineStart = text.AsSpan(lineStart, m.Index - lineStart).IsWhiteSpace();
        string before = text[lineStart..m.Index].TrimEnd();
        bool atSentenceStart = atLineStart || before.EndsWith('.') || before.EndsWith('。');
        int lineEnd = text.IndexOf('\n', m.Index + m.Length);
        bool aloneOnLine = text.AsSpan(m.Index + m.Length, (lineEnd < 0 ? text.Length : lineEnd) - (m.Index + m.Length)).IsWhiteSpace();

        if (colon && (atSentenceStart || upper)) return true;
        if (atLineStart && aloneOnLine) return true;
        if (atLineStart && upper && !chinese) return true;
        return false;
    }
}
