using System.Text.RegularExpressions;

namespace XrayVL.Data.Labeler;

/// <summary>
/// Labels one report in one language with <see cref="LanguageRules"/>:
/// 1. split into sentences; 2. find mentions of each observation (phrase lists, minus "unmention" phrases);
/// 3. classify each mention from the cues in its clause (uncertainty before negation, the nearest cue before the
///    mention wins, a cue right after the mention counts when only list material lies between);
/// 4. aggregate per observation: positive over uncertain over negative;
/// 5. No Finding is positive when no observation but Support Devices is positive or uncertain and no other
///    abnormality (the [other] phrases) is present; otherwise it is left not mentioned (CheXpert's convention).
/// </summary>
internal sealed class RuleLabeler(LanguageRules rules)
{
    private const int OtherAbnormality = -1;

    private readonly record struct Mention(int Observation, int Start, int End, bool IsAttribute);

    private enum Qualifier { None, NotAbnormal, Borderline, Abnormal, Normal }

    public string Language => rules.Language;

    public ChexpertLabels Label(string report)
    {
        var labels = new ChexpertLabels();
        bool otherAbnormality = false;
        string? normalEvidence = null;
        bool hasText = false;

        foreach (string sentence in Sentences(report))
        {
            hasText = true;
            string lower = LowerSameLength(sentence);
            if (normalEvidence == null && rules.Phrases.Normal.IsMatch(lower)) normalEvidence = sentence;
            var breakers = rules.Breaker.Matches(lower);
            foreach (var mention in FindMentions(lower))
            {
                LabelValue? value = Classify(lower, mention, breakers);
                if (value is not LabelValue v) continue;
                if (mention.Observation == OtherAbnormality)
                {
                    otherAbnormality |= v is LabelValue.Positive or LabelValue.Uncertain;
                    continue;
                }
                var o = (Observation)mention.Observation;
                if (Rank(v) > Rank(labels[o])) labels.Set(o, v, sentence);
            }
        }

        bool findingPresent = Observations.All.Any(o => o is not (Observation.NoFinding or Observation.SupportDevices)
            && labels[o] is LabelValue.Positive or LabelValue.Uncertain);
        if (hasText && !findingPresent && !otherAbnormality)
            labels.Set(Observation.NoFinding, LabelValue.Positive, normalEvidence);
        return labels;
    }

    /// <summary>Aggregation order: positive > uncertain > negative > not mentioned.</summary>
    private static int Rank(LabelValue v) => v switch
    {
        LabelValue.Positive => 3,
        LabelValue.Uncertain => 2,
        LabelValue.Negative => 1,
        _ => 0,
    };

    private IEnumerable<string> Sentences(string report)
    {
        foreach (string part in rules.SentenceEnd.Split(report))
        {
            string s = string.Join(' ', part.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries));
            if (s.Any(char.IsLetter)) yield return s;
        }
    }

    /// <summary>Lower-cases one char at a time, so that indexes into the result are indexes into the original.</summary>
    private static string LowerSameLength(string s) => string.Create(s.Length, s, static (span, src) =>
    {
        for (int i = 0; i < src.Length; i++) span[i] = char.ToLowerInvariant(src[i]);
    });

    private List<Mention> FindMentions(string lower)
    {
        var found = new List<Mention>();
        var book = rules.Phrases;
        for (int o = 0; o < Observations.Names.Count; o++)
        {
            var unmention = book.Unmentions[o];
            AddMatches(found, book.Mentions[o], lower, o, isAttribute: false, unmention);
            AddMatches(found, book.Attributes[o], lower, o, isAttribute: true, unmention);
        }
        AddMatches(found, book.Other, lower, OtherAbnormality, isAttribute: false, book.OtherUnmention);

        // A structure mention inside a finding mention of the same observation adds nothing ("心脏" in "心脏增大"),
        // nor does a mention inside a longer one of the same observation and kind ("heart" in "the heart").
        found.RemoveAll(a => a.IsAttribute && found.Any(m => !m.IsAttribute && m.Observation == a.Observation
            && m.Start < a.End && a.Start < m.End));
        found.RemoveAll(a => found.Any(m => m != a && m.Observation == a.Observation && m.IsAttribute == a.IsAttribute
            && m.Start <= a.Start && a.End <= m.End && m.End - m.Start > a.End - a.Start));
        return found;
    }

    private static void AddMatches(List<Mention> found, Regex? rx, string lower, int observation, bool isAttribute, Regex? unmention)
    {
        if (rx == null) return;
        var matches = rx.Matches(lower);
        if (matches.Count == 0) return;
        // Unmention phrases are looked for only when there is a mention to exclude (most sentences have none).
        var excluded = unmention == null ? [] : unmention.Matches(lower).Select(m => (Start: m.Index, End: m.Index + m.Length)).ToList();
        foreach (Match m in matches)
        {
            int end = m.Index + m.Length;
            if (excluded.Any(x => x.Start < end && m.Index < x.End)) continue;
            found.Add(new Mention(observation, m.Index, end, isAttribute));
        }
    }

    private LabelValue? Classify(string lower, Mention mention, MatchCollection breakers)
    {
        // The clause around the mention: from the last breaker before it to the first one after it.
        int left = 0, right = lower.Length;
        foreach (Match b in breakers)
        {
            int end = b.Index + b.Length;
            if (end <= mention.Start) left = Math.Max(left, end);
            else if (b.Index >= mention.End) { right = b.Index; break; }
        }
        string pre = lower[left..mention.Start];
        string post = lower[mention.End..right];

        if (mention.IsAttribute)
        {
            switch (Qualify(pre, post))
            {
                case Qualifier.None: return null;
                case Qualifier.Normal or Qualifier.NotAbnormal: return LabelValue.Negative;
                case Qualifier.Borderline: return LabelValue.Uncertain;
            }
            // Abnormal: the cues decide, as for a finding ("the heart may be enlarged").
        }

        LabelValue? before = CueBefore(pre);
        LabelValue? after = CueAfter(post);
        if (before == LabelValue.Uncertain || after == LabelValue.Uncertain) return LabelValue.Uncertain;
        if (before == LabelValue.Negative || after == LabelValue.Negative) return LabelValue.Negative;
        return LabelValue.Positive;
    }

    private enum CueKind { Negation, Uncertainty, WeakUncertainty }

    private readonly record struct Cue(CueKind Kind, int Start, int End);

    private LabelValue? CueBefore(string pre)
    {
        var strong = Cues(rules.PreUncertainty, pre, CueKind.Uncertainty, []);
        var weak = Cues(rules.WeakUncertainty, pre, CueKind.WeakUncertainty, strong);
        var negations = Cues(rules.PreNegation, pre, CueKind.Negation, [.. strong, .. weak]);
        var all = strong.Concat(weak).Concat(negations)
            .Where(c => rules.Distance(pre[c.End..]) <= rules.MaxPreDistance).ToList();
        if (all.Count == 0) return null;
        var nearest = all.MaxBy(c => c.End);
        return nearest.Kind switch
        {
            CueKind.Uncertainty => LabelValue.Uncertain,
            CueKind.Negation => LabelValue.Negative,
            // "no focal opacity to suggest pneumonia": the negation governs the weak cue after it.
            _ => negations.Any(n => n.End <= nearest.Start) ? LabelValue.Negative : LabelValue.Uncertain,
        };
    }

    private LabelValue? CueAfter(string post)
    {
        var uncertain = Cues(rules.PostUncertainty, post, CueKind.Uncertainty, []);
        var negations = Cues(rules.PostNegation, post, CueKind.Negation, uncertain);
        foreach (var cue in uncertain.Concat(negations).OrderBy(c => c.Start))
        {
            string between = post[..cue.Start];
            if (rules.PostBlocker.IsMatch(between) || rules.Distance(between) > rules.MaxPostDistance) break;
            return cue.Kind == CueKind.Negation ? LabelValue.Negative : LabelValue.Uncertain;
        }
        return null;
    }

    /// <summary>Cue matches, without those that overlap a stronger cue already found ("cannot exclude" holds "exclude").</summary>
    private static List<Cue> Cues(Regex rx, string text, CueKind kind, List<Cue> stronger)
    {
        var list = new List<Cue>();
        foreach (Match m in rx.Matches(text))
        {
            int end = m.Index + m.Length;
            if (m.Length == 0 || stronger.Any(s => s.Start < end && m.Index < s.End)) continue;
            list.Add(new Cue(kind, m.Index, end));
        }
        return list;
    }

    /// <summary>
    /// The size qualifier of a structure mention: the nearest one after it (before any stop word) or before it
    /// ("normal heart size", "the heart is enlarged"); after wins a tie.
    /// </summary>
    private Qualifier Qualify(string pre, string post)
    {
        var after = QualifierMatches(post)
            .Where(q => Reaches(post[..q.Start]))
            .OrderBy(q => q.Start).ThenBy(q => (int)q.Kind).FirstOrDefault();
        var before = QualifierMatches(pre)
            .Where(q => rules.Distance(pre[q.End..]) <= rules.AttributePreDistance && !rules.AttributePreStop.IsMatch(pre[q.End..]))
            .OrderByDescending(q => q.End).ThenBy(q => (int)q.Kind).FirstOrDefault();
        if (after.Kind == Qualifier.None) return before.Kind;
        if (before.Kind == Qualifier.None) return after.Kind;
        return rules.Distance(pre[before.End..]) <= rules.Distance(post[..after.Start]) ? before.Kind : after.Kind;
    }

    /// <summary>
    /// Whether a qualifier after this stretch still describes the structure: no stop word, close enough, and across a
    /// comma only as a list with its verb after it ("the heart, lungs, and mediastinum are normal", not
    /// "the heart size is stable, mediastinum widened").
    /// </summary>
    private bool Reaches(string between)
    {
        if (rules.AttributeStop.IsMatch(between) || rules.Distance(between) > rules.AttributePostDistance) return false;
        int firstComma = between.IndexOf(','), lastComma = between.LastIndexOf(',');
        if (firstComma < 0) return true;
        return !rules.AttributeCopula.IsMatch(between[..firstComma]) && rules.AttributeCopula.IsMatch(between[lastComma..]);
    }

    private IEnumerable<(Qualifier Kind, int Start, int End)> QualifierMatches(string text)
    {
        foreach (var (kind, rx) in new[]
                 {
                     (Qualifier.NotAbnormal, rules.AttributeNotAbnormal), (Qualifier.Borderline, rules.AttributeBorderline),
                     (Qualifier.Abnormal, rules.AttributeAbnormal), (Qualifier.Normal, rules.AttributeNormal),
                 })
        {
            foreach (Match m in rx.Matches(text)) yield return (kind, m.Index, m.Index + m.Length);
        }
    }
}
