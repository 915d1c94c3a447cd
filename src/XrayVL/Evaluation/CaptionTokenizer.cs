using System.Globalization;
using System.Text;

namespace XrayVL.Evaluation;

/// <summary>
/// The tokenization every text metric here scores on, modelled on what coco-caption (pycocoevalcap) does before BLEU,
/// ROUGE-L, CIDEr and METEOR: Stanford's PTBTokenizer with lower-casing, then removal of the punctuation tokens
/// '' ' `` ` -LRB- -RRB- -LCB- -RCB- . ? ! , : - -- ... ;
/// <para>English ("en"), as implemented here:</para>
/// <list type="number">
/// <item>Unicode NFKC (full-width letters and digits become ASCII), then lower-case (invariant culture).</item>
/// <item>A word is a run of letters and digits; '.', ',', '-', '/' and '&amp;' stay inside a word when a letter or digit
///   stands on both sides ("x-ray", "2.5", "1,000", "and/or", "t6-t7"), as PTB keeps numbers and hyphenated words.</item>
/// <item>Apostrophes: the clitics PTB splits off become their own tokens ("heart's" → "heart" "'s"; "n't", "'re",
///   "'ll", "'ve", "'m", "'d"); any other apostrophe or quote is punctuation.</item>
/// <item>Every other non-space character is a token of its own; tokens made only of . ? ! , : ; - ' ` " and brackets
///   ( ) [ ] { } are dropped (coco-caption's list; PTB writes brackets as -LRB- etc.; square brackets, which PTB writes
///   -LSB-/-RSB- and the list omits, are dropped too since they carry no words). Other symbols (% / + * # = &lt; &gt;)
///   stay as tokens, as PTB keeps them.</item>
/// </list>
/// <para>Chinese ("zh"): the same steps, but every CJK character is one token (scores on characters, the usual choice
/// for Chinese captions); Latin words and numbers inside Chinese text stay whole; all Unicode punctuation
/// (，。、；：！？“”（）《》… and ASCII) is dropped.</para>
/// Differences from the Java tokenizer that remain: abbreviations with a final period ("e.g.") lose that period, and
/// PTB's rarer rules (e.g. splitting "cannot") are not reproduced.
/// </summary>
public static class CaptionTokenizer
{
    private static readonly string[] Clitics = ["n't", "'s", "'re", "'ll", "'ve", "'m", "'d"];

    /// <summary>Tokens of <paramref name="text"/> for language "en" or "zh" (see the type's remarks).</summary>
    public static string[] Tokenize(string text, string lang = "en")
    {
        ArgumentNullException.ThrowIfNull(text);
        bool zh = lang switch
        {
            "en" => false,
            "zh" => true,
            _ => throw new XrayVLException($"unknown scoring language '{lang}'; expected en or zh"),
        };
        string s = text.Normalize(NormalizationForm.FormKC).ToLowerInvariant().Replace('\u2019', '\'');
        var tokens = new List<string>();
        int i = 0;
        while (i < s.Length)
        {
            char c = s[i];
            if (char.IsWhiteSpace(c) || char.IsControl(c)) { i++; continue; }
            if (IsCjk(c))
            {
                tokens.Add(c.ToString());  // one token per character (in English text too)
                i++;
                continue;
            }
            if (char.IsLetterOrDigit(c))
            {
                int start = i;
                i++;
                while (i < s.Length)
                {
                    if (IsWordChar(s[i])) { i++; continue; }
                    if (s[i] is '.' or ',' or '-' or '/' or '&' && i + 1 < s.Length && IsWordChar(s[i + 1]) && IsWordChar(s[i - 1])) { i += 2; continue; }
                    break;
                }
                string word = s[start..i];
                // "don't": PTB splits "do" + "n't"; "n't" begins one letter before the apostrophe.
                if (word.Length > 1 && word.EndsWith('n') && StartsClitic(s, i - 1) == "n't")
                {
                    tokens.Add(word[..^1]);
                    tokens.Add("n't");
                    i += 2;
                    continue;
                }
                tokens.Add(word);
                continue;
            }
            if (c == '\'' && StartsClitic(s, i) is { } clitic && clitic != "n't")
            {
                tokens.Add(clitic);
                i += clitic.Length;
                continue;
            }
            // Punctuation and symbols: one character per token; punctuation is dropped.
            if (!IsDropped(c, zh)) tokens.Add(c.ToString());
            i++;
        }
        return [.. tokens];
    }

    /// <summary>The tokens joined by single spaces (what coco-caption hands to its scorers).</summary>
    public static string Normalize(string text, string lang = "en") => string.Join(' ', Tokenize(text, lang));

    /// <summary>A clitic that starts at <paramref name="at"/> and ends a word (followed by a non-letter or the end).</summary>
    private static string? StartsClitic(string s, int at)
    {
        foreach (string clitic in Clitics)
        {
            if (at < 0 || string.CompareOrdinal(s, at, clitic, 0, clitic.Length) != 0) continue;
            int end = at + clitic.Length;
            if (end == s.Length || !char.IsLetterOrDigit(s[end])) return clitic;
        }
        return null;
    }

    private static bool IsWordChar(char c) => char.IsLetterOrDigit(c) && !IsCjk(c);

    /// <summary>coco-caption's removed tokens are all punctuation; in Chinese every punctuation mark goes.</summary>
    private static bool IsDropped(char c, bool zh)
    {
        if (c is '.' or '?' or '!' or ',' or ':' or ';' or '-' or '\'' or '`' or '"' or '(' or ')' or '[' or ']' or '{' or '}') return true;
        if (zh) return char.IsPunctuation(c);
        // Typographic quotes and dashes are PTB's `` '' -- after normalisation.
        return CharUnicodeInfo.GetUnicodeCategory(c) is UnicodeCategory.InitialQuotePunctuation or UnicodeCategory.FinalQuotePunctuation
            or UnicodeCategory.DashPunctuation or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation
            || c == '\u2026';
    }

    /// <summary>CJK unified ideographs (with extension A and compatibility ideographs).</summary>
    public static bool IsCjk(char c) => c is >= '\u4e00' and <= '\u9fff' or >= '\u3400' and <= '\u4dbf' or >= '\uf900' and <= '\ufaff';
}
