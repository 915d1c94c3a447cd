using System.Text.RegularExpressions;

namespace XrayVL.Data.Labeler;

/// <summary>
/// The cue words and scope rules of one language, as regexes the <see cref="RuleLabeler"/> applies to lower-cased
/// sentences. These are this project's rules (not CheXpert's dependency-graph patterns): a mention's scope is its
/// clause, bounded by <see cref="Breaker"/>; a negation or uncertainty cue counts when it stands before the mention
/// within <see cref="MaxPreDistance"/> units, or right after it (only list material in between).
/// </summary>
internal sealed class LanguageRules
{
    public required string Language { get; init; }
    public required PhraseBook Phrases { get; init; }
    /// <summary>Where sentences end (the match is dropped).</summary>
    public required Regex SentenceEnd { get; init; }
    /// <summary>Clause ends: conjunctions like "but", semicolons, a comma that opens a new clause.</summary>
    public required Regex Breaker { get; init; }
    public required Regex PreNegation { get; init; }
    public required Regex PreUncertainty { get; init; }
    /// <summary>Uncertainty cues that an earlier negation overrides ("no opacity to suggest pneumonia").</summary>
    public required Regex WeakUncertainty { get; init; }
    public required Regex PostNegation { get; init; }
    public required Regex PostUncertainty { get; init; }
    /// <summary>Words between a mention and a following cue that show the cue belongs to something else.</summary>
    public required Regex PostBlocker { get; init; }
    public required Regex AttributeNotAbnormal { get; init; }
    public required Regex AttributeBorderline { get; init; }
    public required Regex AttributeAbnormal { get; init; }
    public required Regex AttributeNormal { get; init; }
    /// <summary>Where a qualifier after a structure mention stops being about it.</summary>
    public required Regex AttributeStop { get; init; }
    /// <summary>Where a qualifier before a structure mention stops being about it.</summary>
    public required Regex AttributePreStop { get; init; }
    /// <summary>Linking verbs: a qualifier after a comma list ("the heart, lungs and mediastinum are normal") needs one.</summary>
    public required Regex AttributeCopula { get; init; }
    /// <summary>Length of a stretch of text in the units the distances use (words or characters).</summary>
    public required Func<string, int> Distance { get; init; }
    public required int MaxPreDistance { get; init; }
    public required int MaxPostDistance { get; init; }
    public required int AttributePreDistance { get; init; }
    public required int AttributePostDistance { get; init; }

    private const RegexOptions Opts = RegexOptions.Compiled | RegexOptions.CultureInvariant;

    private static Regex Rx(string pattern) => new(pattern, Opts);

    private static readonly Regex Word = Rx(@"[a-z0-9]+");

    /// <summary>Words that start a new clause after a comma or "and" (they end a negation's list).</summary>
    private const string EnglishClauseOpeners =
        @"the|there|a|an|this|these|it|its|with|which|mild|mildly|moderate|moderately|severe|severely|stable|unchanged|" +
        @"persistent|again|interval|likely|probable|probably|possible|possibly|may|might|could|no|not|without|" +
        @"suggest\w*|consistent with|compatible with|left|right|bilateral|bibasilar|status|otherwise|" +
        @"redemonstrat\w*|increased|decreased|improved|improving|worsening|worsened";

    public static readonly Lazy<LanguageRules> English = new(() => new LanguageRules
    {
        Language = "en",
        Phrases = PhraseBook.English,
        SentenceEnd = Rx(@"(?<=[.!?])\s+|\n+"),
        Breaker = Rx(
            @"[;:!?()]" +
            @"|\b(?:but|however|although|though|whereas|except|yet|otherwise|aside from|apart from|other than|" +
            @"with the exception of|which|who|whose|there (?:is|are|was|were|has|have|may|might))\b" +
            $@"|,(?=\s*(?:and\s+)?(?:{EnglishClauseOpeners})\b)" +
            $@"|\band\b(?=\s+(?:{EnglishClauseOpeners})\b)"),
        PreNegation = Rx(
            @"\bno\b(?!\s+(?:\w+\s+)?change)|\b(?:not|without|free of|free from|negative for|clear of|absence of|resolution of|resolved|ruled out|" +
            @"excluded|nor|neither|no longer|removal of|removed|negative|never)\b"),
        PreUncertainty = Rx(
            @"\b(?:can ?not|can't|could not|not)\s+(?:be\s+)?(?:entirely\s+|completely\s+|totally\s+|definitely\s+)?" +
            @"(?:excluded|exclude|ruled out|rule out)\b" +
            @"|\b(?:may|might|could|possible|possibly|probable|probably|likely|presumed|presumably|presumptive|" +
            @"questionable|questionably|question of|suspicion|equivocal|borderline|versus|vs|" +
            @"differential|consider|considered|consideration|uncertain|unclear|perhaps|potential|potentially|" +
            @"rule out|r/o|evaluate for|eval for|evaluation for|assess for|to exclude|cannot exclude|indeterminate)\b"),
        WeakUncertainty = Rx(
            @"\b(?:suspect|suspected|suggests?|suggested|suggesting|suggestive of|suspicious for|concerning for|concern for|" +
            @"worrisome for|worrisome|to indicate|indicating|compatible with|represents?|representing)\b"),
        PostNegation = Rx(
            @"\b(?:(?:is|are|was|were|has been|have been|be)\s+)?(?:not|no longer)\s+(?:\w+ly\s+)?" +
            @"(?:seen|identified|present|visualized|visible|evident|demonstrated|appreciated|noted|detected|" +
            @"observed|found|apparent|shown|depicted|identifiable|there)\b" +
            @"|\b(?:(?:has|have)\s+(?:also\s+|since\s+|now\s+)?(?:been\s+)?|(?:is|are|was|were)\s+(?:also\s+|now\s+)?)?" +
            @"(?:resolved|removed|ruled out|excluded|cleared|absent|negative|gone)\b"),
        PostUncertainty = Rx(
            @"\b(?:(?:is|are|was|were)\s+)?(?:can ?not|can't|could not|not)\s+(?:be\s+)?(?:entirely\s+|completely\s+|totally\s+|definitely\s+)?" +
            @"(?:excluded|exclude|ruled out|rule out)\b" +
            @"|\b(?:is|are|was|were)\s+(?:also\s+)?(?:possible|suspected|questioned|questionable|likely|probable|" +
            @"favored|considered|uncertain|equivocal|a consideration|a possibility|a concern)\b" +
            @"|\b(?:may|might|could)\s+(?:also\s+)?(?:be|represent|reflect|indicate)\b|\b(?:versus|vs)\b|\bin question\b"),
        PostBlocker = Rx(
            @"\b(?:is|are|was|were|seen|noted|present|identified|demonstrated|there|with|which|that|has|have|" +
            @"shows?|showing|and\s+(?:the|a|an))\b"),
        AttributeNotAbnormal = Rx(
            @"\b(?:not|nor|no)\s+(?:\w+ly\s+)?(?:enlarged|enlargement|large|prominent|widened|widening|increased|big)\b"),
        AttributeBorderline = Rx(
            @"\b(?:borderline|upper limits? of normal|upper (?:range of |end of |limit of )?normal|" +
            @"top(?:[\s-]+of)?[\s-]+normal|high[\s-]+normal|at the upper limit)\b"),
        AttributeAbnormal = Rx(
            @"\b(?:enlarged|enlargement|enlarging|large|larger|prominent|prominence|widened|widening|wide|" +
            @"increased|cardiomegaly|big|massive|globular)\b"),
        AttributeNormal = Rx(@"\b(?:normal|normally|unremarkable|wnl|negative)\b"),
        AttributeStop = Rx(@"[;]|\b(?:but|however|although|while|whereas|with|without|which|of)\b"),
        AttributeCopula = Rx(@"\b(?:is|are|was|were|appears?|remains?|seems?)\b"),
        AttributePreStop = Rx(@"[,;]|\b(?:but|however|although|while|whereas|with|without|which)\b"),
        Distance = s => Word.Count(s),
        MaxPreDistance = 14,
        MaxPostDistance = 14,
        AttributePreDistance = 3,
        AttributePostDistance = 8,
    });

    public static readonly Lazy<LanguageRules> Chinese = new(() => new LanguageRules
    {
        Language = "zh",
        Phrases = PhraseBook.Chinese,
        SentenceEnd = Rx(@"[。！？!?\n]+|(?<=[.])\s+"),
        // A Chinese comma ends a clause unless a list goes on after it ("没有任何异常，如气胸或积液").
        // A comma before the last item of a list ("没有病灶巩固，气胸或胸腔积液": the rest has 或 and no verb) does not either.
        Breaker = Rx(@"[；;：:()（）]|[，,](?!\s*(?:如|例如|比如|包括|或|及|以及|和|等))" +
                     @"(?!(?:(?![是有示见为])[^，,。；;])*[或和](?:(?![是有示见为])[^，,。；;])*$)" +
                     @"|但是|但|然而|不过|虽然|尽管|(?<!排)除了|除此之外|此外|另外|同时|而且"),
        PreNegation = Rx(@"没有|没|无|未见|未发现|未显示|未|不存在|排除了|排除|阴性|否认|并无|均无|不伴|不见|并不|并非|不是"),
        PreUncertainty = Rx(@"不能完全排除|不能排除|不排除|无法排除|未能排除|难以排除|不除外|需排除|需要排除|以排除|" +
                            @"可能|考虑|疑似|疑为|怀疑|待排|似乎|或许|也许|倾向|不确定|不能确定|不明确|不清楚是否"),
        // "可疑的" is mostly the attributive "suspicious" of a list ("没有可疑的肿块或结节"): an earlier negation governs it.
        WeakUncertainty = Rx(@"提示|暗示|符合|代表|担心|令人担忧|令人担心|可疑"),
        PostNegation = Rx(@"(?:也|均|都)?(?:已经被排除|已被排除|已经排除|已排除|被排除)|未见|未发现|不明显|已消失|消失|已消退|消退|" +
                          @"已吸收|吸收|(?:是|均为|为)?阴性|不存在|已移除|已拔除|已去除|得到解决|已经解决|已解决|解决了"),
        // "可能" after a mention counts only at the clause end ("右下肺炎可能。"), not before the next noun ("或可能的积液").
        PostUncertainty = Rx(@"不能完全排除|不能排除|不除外|未能排除|无法排除|待排|待除外|可能性|待查|不确定|可能(?=\s*(?:[，,。；;]|$))"),
        PostBlocker = Rx(@"是|有|见|示|伴|但"),
        AttributeNotAbnormal = Rx(@"(?:没有|未见|并无|无|未|不)(?:明显|显著|明确|再)?(?:增大|扩大|肿大|增宽|变宽|大|宽)"),
        AttributeBorderline = Rx(@"临界|正常[\u4e00-\u9fff]{0,4}上限|正常高限|上限|偏大|边缘性"),
        AttributeAbnormal = Rx(@"增大|扩大|肿大|增宽|变宽|突出|饱满|肥大|大于正常|比正常[\u4e00-\u9fff]{0,2}大|稍大|略大|扩张"),
        AttributeNormal = Rx(@"正常|无异常|未见异常|没有异常|没有什么异常|无明显异常|无特殊"),
        AttributeStop = Rx(@"[，,；;]|但|然而"),
        AttributeCopula = Rx(@"是|为"),
        AttributePreStop = Rx(@"[，,；;、]|但|然而"),
        Distance = s => s.Count(c => !char.IsWhiteSpace(c)),
        MaxPreDistance = 32,
        MaxPostDistance = 22,
        AttributePreDistance = 4,
        AttributePostDistance = 12,
    });
}
