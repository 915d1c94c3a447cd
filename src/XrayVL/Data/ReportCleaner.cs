using System.Text.RegularExpressions;

namespace XrayVL.Data;

/// <summary>
/// Cleans report text for training and display:
/// 1. de-identification tokens (IU "XXXX", MIMIC "___") are taken out: "x-XXXX" → "x-ray", "no XXXX of" → "no evidence of",
///    "lymph XXXX" → "lymph nodes"; elsewhere the token is deleted, and a sentence the deletion would leave broken
///    ("The XXXX is normal" → "The is normal", "XXXX are intact") or empty, or that is mostly tokens
///    ("XXXX XXXX.", "Inferior XXXX XXXX XXXX."), is dropped whole;
/// 2. list numbering ("1. ", "2) ") at line or sentence starts is stripped;
/// 3. whitespace is collapsed and punctuation spacing normalized (" ." → ".", "clear.The" → "clear. The", "..." → ".").
/// Chinese text passes through with only whitespace trimmed around it (no spaces are added after 。，).
/// </summary>
public static partial class ReportCleaner
{
    private const string Token = @"(?:X{4,}|_{3,})";

    // Words that cannot stand right before a verb or a full stop: if deleting a token leaves one there, the sentence goes.
    private static readonly HashSet<string> Dangling =
    [
        "the", "a", "an", "this", "these", "those", "its", "their", "his", "her", "no", "any", "of", "with", "in", "on",
        "at", "from", "to", "by", "for", "and", "or", "is", "are", "was", "were", "has", "have", "be", "been",
        "pulmonary", "costophrenic", "aortic", "cardiac", "thoracic", "mediastinal", "hilar", "bony", "osseous", "lymph",
    ];

    private static readonly HashSet<string> Verbs =
    [
        "is", "are", "was", "were", "has", "have", "had", "appear", "appears", "appeared", "remain", "remains", "demonstrate",
        "demonstrates", "show", "shows", "noted", "seen", "identified", "project", "projects", "overlies", "overlie",
    ];

    public static string Clean(string? text)
    {
        if (string.IsNullOrWhiteSpace(text)) return "";
        string s = text.Replace("\r\n", "\n").Replace('\r', '\n');
        s = StripNumbering().Replace(s, "$1");
        s = Whitespace().Replace(s, " ").Trim();
        if (Deid().IsMatch(s)) s = RemoveDeidentification(s);
        s = NormalizePunctuation(s);
        return s;
    }

    private static string RemoveDeidentification(string s)
    {
        s = XRay().Replace(s, m => m.Groups[1].Value + "-ray");
        s = NoTokenOf().Replace(s, m => m.Groups[1].Value + " evidence");
        s = LymphToken().Replace(s, m => m.Groups[1].Value + " nodes");
        s = YearOld().Replace(s, "");
        var kept = new List<string>();
        foreach (string sentence in SentenceSplit().Split(s))
        {
            if (!Deid().IsMatch(sentence)) { kept.Add(sentence); continue; }
            string? repaired = DeleteTokens(sentence);
            if (repaired != null) kept.Add(repaired);
        }
        return string.Join(" ", kept.Where(k => k.Length > 0));
    }

    /// <summary>The sentence with its tokens deleted, or null when that would leave it broken or empty.</summary>
    private static string? DeleteTokens(string sentence)
    {
        var words = sentence.Split(' ', StringSplitOptions.RemoveEmptyEntries).ToList();
        // Mostly tokens ("Inferior XXXX XXXX XXXX."): nothing readable is left.
        if (2 * words.Count(w => Deid().IsMatch(w)) > words.Count) return null;
        var result = new List<string>();
        for (int i = 0; i < words.Count; i++)
        {
            string w = words[i];
            string bare = Deid().Replace(w, "");
            bool hadToken = bare.Length != w.Length;
            if (!hadToken) { result.Add(w); continue; }
            // What remains of the word once the token is gone ("XXXX," → ",", "XXXX/XXXX." → "/.").
            string rest = Regex.Replace(bare, @"^[/<>\-]+|[/<>\-]+(?=[.,;:]?$)", "");
            string trailing = rest.Length > 0 && rest.All(c => ".,;:!?".Contains(c)) ? rest : "";
            if (rest.Length > 0 && trailing.Length == 0) { result.Add(rest); continue; }
            string previous = result.Count > 0 ? Strip(result[^1]) : "";
            string next = trailing.Length > 0 ? trailing : (i + 1 < words.Count ? Strip(words[i + 1]) : ".");
            bool nextIsStop = next.Length == 0 || next.All(c => ".,;:!?".Contains(c)) || Verbs.Contains(next);
            if (result.Count == 0 && (nextIsStop || Deid().IsMatch(next))) return null;  // "XXXX are normal."
            if (Dangling.Contains(previous) && nextIsStop) return null;                 // "the XXXX is normal"
            if (trailing.Length > 0)
            {
                if (result.Count == 0) return null;
                result[^1] += trailing;
            }
        }
        string joined = string.Join(" ", result);
        return joined.Any(char.IsLetter) ? joined : null;
    }

    private static string Strip(string w) => w.Trim('.', ',', ';', ':', '!', '?', '(', ')', '"').ToLowerInvariant();

    private static string NormalizePunctuation(string s)
    {
        s = SpaceBeforePunct().Replace(s, "$1");
        s = RepeatedPunct().Replace(s, m => m.Value[..1] == "," ? "," : ".");
        s = CommaPeriod().Replace(s, ".");
        s = MissingSpace().Replace(s, "$1 $2");
        s = LeadingPunct().Replace(s, "");
        return s.Trim();
    }

    [GeneratedRegex(@"(^|\n|[.;:]\s)\s*(?:\d{1,2}[.)]|\(\d{1,2}\))\s+(?=\S)")]
    private static partial Regex StripNumbering();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Whitespace();

    [GeneratedRegex(Token)]
    private static partial Regex Deid();

    [GeneratedRegex(@"\b([xX])-" + Token)]
    private static partial Regex XRay();

    [GeneratedRegex(@"\b([Nn]o) " + Token + @"(?= of\b)")]
    private static partial Regex NoTokenOf();

    [GeneratedRegex(@"\b([Ll]ymph) " + Token)]
    private static partial Regex LymphToken();

    [GeneratedRegex(Token + @"-year-old\s*")]
    private static partial Regex YearOld();

    [GeneratedRegex(@"(?<=[.!?])\s+")]
    private static partial Regex SentenceSplit();

    [GeneratedRegex(@"\s+([.,;:!?])")]
    private static partial Regex SpaceBeforePunct();

    [GeneratedRegex(@"([.,])(?:\s*\1)+")]
    private static partial Regex RepeatedPunct();

    [GeneratedRegex(@",\s*\.")]
    private static partial Regex CommaPeriod();

    [GeneratedRegex(@"([a-z][.;,])([A-Z][a-z])")]
    private static partial Regex MissingSpace();

    [GeneratedRegex(@"^[\s.,;:]+")]
    private static partial Regex LeadingPunct();
}
