namespace XrayVL.Evaluation;

/// <summary>
/// The Porter (1980) suffix-stripping stemmer for English, written here from the rules of the paper ("An algorithm for
/// suffix stripping", Program 14(3)): steps 1a, 1b (with its clean-up), 1c, 2, 3, 4, 5a, 5b; in each of steps 1a, 2, 3
/// and 4 only the rule with the longest matching suffix is tried. The paper's own rule list is used (step 2 has
/// ABLI → ABLE and no LOGI rule; later revisions changed those). Words of one or two letters are left alone, as in
/// the author's reference implementation. Input is expected in lower case; anything that is not a-z is returned as is.
/// </summary>
public static class PorterStemmer
{
    private static readonly (string Suffix, string Replacement)[] Step2Rules =
    [
        ("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"), ("izer", "ize"), ("abli", "able"),
        ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous"), ("ization", "ize"), ("ation", "ate"),
        ("ator", "ate"), ("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous"), ("aliti", "al"),
        ("iviti", "ive"), ("biliti", "ble"),
    ];

    private static readonly (string Suffix, string Replacement)[] Step3Rules =
        [("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"), ("ical", "ic"), ("ful", ""), ("ness", "")];

    private static readonly string[] Step4Suffixes =
        ["al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion", "ou", "ism", "ate", "iti", "ous", "ive", "ize"];

    public static string Stem(string word)
    {
        ArgumentNullException.ThrowIfNull(word);
        if (word.Length <= 2 || word.Any(c => c is < 'a' or > 'z')) return word;
        string w = Step1a(word);
        w = Step1b(w);
        w = Step1c(w);
        w = ApplyLongest(w, Step2Rules, minMeasure: 1);
        w = ApplyLongest(w, Step3Rules, minMeasure: 1);
        w = Step4(w);
        w = Step5(w);
        return w;
    }

    /// <summary>True when w[i] is a consonant: not a, e, i, o, u, and not a y that follows a consonant.</summary>
    private static bool IsConsonant(string w, int i) => w[i] switch
    {
        'a' or 'e' or 'i' or 'o' or 'u' => false,
        'y' => i == 0 || !IsConsonant(w, i - 1),
        _ => true,
    };

    /// <summary>m in [C](VC)^m[V] of the stem w[..length].</summary>
    internal static int Measure(string w, int length)
    {
        int m = 0, i = 0;
        while (i < length && IsConsonant(w, i)) i++;
        while (i < length)
        {
            while (i < length && !IsConsonant(w, i)) i++;   // V
            if (i >= length) break;
            while (i < length && IsConsonant(w, i)) i++;    // C
            m++;
        }
        return m;
    }

    private static bool ContainsVowel(string w, int length)
    {
        for (int i = 0; i < length; i++) if (!IsConsonant(w, i)) return true;
        return false;
    }

    private static bool EndsWithDoubleConsonant(string w) =>
        w.Length >= 2 && w[^1] == w[^2] && IsConsonant(w, w.Length - 1);

    /// <summary>*o: the stem ends consonant-vowel-consonant, the last not w, x or y.</summary>
    private static bool EndsCvc(string w) =>
        w.Length >= 3 && IsConsonant(w, w.Length - 3) && !IsConsonant(w, w.Length - 2) && IsConsonant(w, w.Length - 1)
        && w[^1] is not ('w' or 'x' or 'y');

    private static string Step1a(string w)
    {
        if (w.EndsWith("sses", StringComparison.Ordinal)) return w[..^2];
        if (w.EndsWith("ies", StringComparison.Ordinal)) return w[..^2];
        if (w.EndsWith("ss", StringComparison.Ordinal)) return w;
        if (w.EndsWith('s')) return w[..^1];
        return w;
    }

    private static string Step1b(string w)
    {
        if (w.EndsWith("eed", StringComparison.Ordinal)) return Measure(w, w.Length - 3) > 0 ? w[..^1] : w;
        string stem;
        if (w.EndsWith("ed", StringComparison.Ordinal) && ContainsVowel(w, w.Length - 2)) stem = w[..^2];
        else if (w.EndsWith("ing", StringComparison.Ordinal) && ContainsVowel(w, w.Length - 3)) stem = w[..^3];
        else return w;
        // Clean-up after removing -ed/-ing: restore an e or undouble a final consonant.
        if (stem.EndsWith("at", StringComparison.Ordinal) || stem.EndsWith("bl", StringComparison.Ordinal) || stem.EndsWith("iz", StringComparison.Ordinal))
            return stem + "e";
        if (EndsWithDoubleConsonant(stem) && stem[^1] is not ('l' or 's' or 'z')) return stem[..^1];
        if (Measure(stem, stem.Length) == 1 && EndsCvc(stem)) return stem + "e";
        return stem;
    }

    private static string Step1c(string w) =>
        w.EndsWith('y') && ContainsVowel(w, w.Length - 1) ? w[..^1] + "i" : w;

    /// <summary>The rule with the longest matching suffix, applied when the remaining stem has measure ≥ minMeasure.</summary>
    private static string ApplyLongest(string w, (string Suffix, string Replacement)[] rules, int minMeasure)
    {
        var matching = rules.Where(r => w.EndsWith(r.Suffix, StringComparison.Ordinal)).ToList();
        if (matching.Count == 0) return w;
        var rule = matching.MaxBy(r => r.Suffix.Length);
        int stemLength = w.Length - rule.Suffix.Length;
        return Measure(w, stemLength) >= minMeasure ? w[..stemLength] + rule.Replacement : w;
    }

    private static string Step4(string w)
    {
        string? suffix = Step4Suffixes.Where(s => w.EndsWith(s, StringComparison.Ordinal)).MaxBy(s => s.Length);
        if (suffix is null) return w;
        int stemLength = w.Length - suffix.Length;
        if (Measure(w, stemLength) <= 1) return w;
        if (suffix == "ion" && (stemLength == 0 || w[stemLength - 1] is not ('s' or 't'))) return w;
        return w[..stemLength];
    }

    private static string Step5(string w)
    {
        if (w.EndsWith('e'))
        {
            int m = Measure(w, w.Length - 1);
            if (m > 1 || (m == 1 && !EndsCvc(w[..^1]))) w = w[..^1];
        }
        if (w.EndsWith("ll", StringComparison.Ordinal) && Measure(w, w.Length) > 1) w = w[..^1];
        return w;
    }
}
