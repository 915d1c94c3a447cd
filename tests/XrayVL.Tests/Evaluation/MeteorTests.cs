using XrayVL.Evaluation;
using static XrayVL.Tests.Evaluation.BleuTests;

namespace XrayVL.Tests.Evaluation;

public class MeteorTests
{
    [Fact]
    public void IdenticalSentenceIsOneChunk()
    {
        // 6 matches in 1 chunk: P = R = 1, Fmean = 1, penalty = 0.5·(1/6)³ = 1/432.
        var a = Meteor.Align(T("the cat sat on the mat"), T("the cat sat on the mat"));
        Assert.Equal((6, 1), (a.Matches, a.Chunks));
        Assert.Equal(1 - 0.5 / 216, a.Score, 12);
    }

    [Fact]
    public void ExtraWordSplitsTheChunk()
    {
        // Candidate 7 words, 6 matched: P = 6/7, R = 1; Fmean = 10PR/(R + 9P) = (60/7)/(61/7) = 60/61.
        // Chunks "the cat" | "sat on the mat" = 2 → penalty 0.5·(2/6)³ = 1/54. Score = 60/61 · 53/54.
        var a = Meteor.Align(T("the cat was sat on the mat"), T("the cat sat on the mat"));
        Assert.Equal((6, 2), (a.Matches, a.Chunks));
        Assert.Equal(60.0 / 61, a.FMean, 12);
        Assert.Equal(1.0 / 54, a.Penalty, 12);
        Assert.Equal(60.0 / 61 * 53 / 54, a.Score, 12);
    }

    [Fact]
    public void ReorderedWordsAreAlignedInFewChunks()
    {
        // "on the mat" | "sat" | "the cat": the second "the" must pair with the reference's second "the" to keep
        // "on the mat" whole: 3 chunks of 6 matches → penalty 0.5·(1/2)³ = 1/16.
        var a = Meteor.Align(T("on the mat sat the cat"), T("the cat sat on the mat"));
        Assert.Equal((6, 3), (a.Matches, a.Chunks));
        Assert.Equal(1 - 1.0 / 16, a.Score, 12);
    }

    [Fact]
    public void StemMatcherAddsMatchesAfterExact()
    {
        // Exact: "the". Stems: lungs → lung = lung, clearing → clear = clear ("are"/"is" differ).
        // 3 matches of 4 and 4: P = R = 3/4 → Fmean = 3/4; chunks "the lungs" | "clearing" = 2 →
        // penalty 0.5·(2/3)³ = 4/27 → score 3/4 · 23/27.
        var withStems = Meteor.Align(T("the lungs are clearing"), T("the lung is clear"));
        Assert.Equal((3, 2), (withStems.Matches, withStems.Chunks));
        Assert.Equal(0.75 * 23 / 27, withStems.Score, 12);
        // Exact only: 1 match, 1 chunk: P = R = 1/4, penalty 0.5 → 0.125.
        var exact = Meteor.Align(T("the lungs are clearing"), T("the lung is clear"), useStems: false);
        Assert.Equal(0.125, exact.Score, 12);
        // Chinese uses the exact matcher only.
        Assert.Equal(0.125, Meteor.Sentence(T("the lungs are clearing"), Refs("the lung is clear"), "zh"), 12);
    }

    [Fact]
    public void NoMatchScoresZeroAndBestReferenceCounts()
    {
        Assert.Equal(0, Meteor.Align(T("a b"), T("c d")).Score);
        Assert.Equal(0, Meteor.Align(T(""), T("c d")).Score);
        double best = Meteor.Sentence(T("the cat sat on the mat"), Refs("dogs run", "the cat sat on the mat"));
        Assert.Equal(1 - 0.5 / 216, best, 12);
        var (corpus, perItem) = Meteor.Corpus([T("a b"), T("the cat sat on the mat")], [Refs("c"), Refs("the cat sat on the mat")]);
        Assert.Equal(0, perItem[0]);
        Assert.Equal(1 - 0.5 / 216, perItem[1], 12);
        Assert.Equal((1 - 0.5 / 216) / 2, corpus, 12);
    }

    [Fact]
    public void EveryPossibleMatchIsMade()
    {
        // "a a b" vs "b a a": exact matches a, a, b (3); chunks: a a → ref 1, 2 ... then b → ref 0: 2 chunks.
        var a = Meteor.Align(T("a a b"), T("b a a"));
        Assert.Equal((3, 2), (a.Matches, a.Chunks));
    }
}

public class PorterStemmerTests
{
    // Examples from Porter (1980), "An algorithm for suffix stripping", followed through all steps
    // (also the output of an independent implementation of the original algorithm).
    [Theory]
    [InlineData("caresses", "caress")] [InlineData("ponies", "poni")] [InlineData("ties", "ti")] [InlineData("caress", "caress")]
    [InlineData("cats", "cat")] [InlineData("feed", "feed")] [InlineData("agreed", "agre")] [InlineData("plastered", "plaster")]
    [InlineData("bled", "bled")] [InlineData("motoring", "motor")] [InlineData("sing", "sing")] [InlineData("conflated", "conflat")]
    [InlineData("troubled", "troubl")] [InlineData("sized", "size")] [InlineData("hopping", "hop")] [InlineData("tanned", "tan")]
    [InlineData("falling", "fall")] [InlineData("hissing", "hiss")] [InlineData("fizzed", "fizz")] [InlineData("failing", "fail")]
    [InlineData("filing", "file")] [InlineData("happy", "happi")] [InlineData("sky", "sky")] [InlineData("relational", "relat")]
    [InlineData("conditional", "condit")] [InlineData("rational", "ration")] [InlineData("valenci", "valenc")] [InlineData("hesitanci", "hesit")]
    [InlineData("digitizer", "digit")] [InlineData("conformabli", "conform")] [InlineData("radicalli", "radic")] [InlineData("differentli", "differ")]
    [InlineData("vileli", "vile")] [InlineData("analogousli", "analog")] [InlineData("vietnamization", "vietnam")] [InlineData("predication", "predic")]
    [InlineData("operator", "oper")] [InlineData("feudalism", "feudal")] [InlineData("decisiveness", "decis")] [InlineData("hopefulness", "hope")]
    [InlineData("callousness", "callous")] [InlineData("formaliti", "formal")] [InlineData("sensitiviti", "sensit")] [InlineData("sensibiliti", "sensibl")]
    [InlineData("triplicate", "triplic")] [InlineData("formative", "form")] [InlineData("formalize", "formal")] [InlineData("electriciti", "electr")]
    [InlineData("electrical", "electr")] [InlineData("hopeful", "hope")] [InlineData("goodness", "good")] [InlineData("revival", "reviv")]
    [InlineData("allowance", "allow")] [InlineData("inference", "infer")] [InlineData("airliner", "airlin")] [InlineData("gyroscopic", "gyroscop")]
    [InlineData("adjustable", "adjust")] [InlineData("defensible", "defens")] [InlineData("irritant", "irrit")] [InlineData("replacement", "replac")]
    [InlineData("adjustment", "adjust")] [InlineData("dependent", "depend")] [InlineData("adoption", "adopt")] [InlineData("homologou", "homolog")]
    [InlineData("communism", "commun")] [InlineData("activate", "activ")] [InlineData("angulariti", "angular")] [InlineData("homologous", "homolog")]
    [InlineData("effective", "effect")] [InlineData("bowdlerize", "bowdler")] [InlineData("probate", "probat")] [InlineData("rate", "rate")]
    [InlineData("cease", "ceas")] [InlineData("controll", "control")] [InlineData("roll", "roll")] [InlineData("generalizations", "gener")]
    [InlineData("oscillators", "oscil")]
    public void PaperExamples(string word, string stem) => Assert.Equal(stem, PorterStemmer.Stem(word));

    [Theory]
    [InlineData("opacities", "opac")] [InlineData("opacity", "opac")] [InlineData("effusions", "effus")] [InlineData("effusion", "effus")]
    [InlineData("consolidations", "consolid")] [InlineData("lungs", "lung")] [InlineData("enlarged", "enlarg")] [InlineData("enlargement", "enlarg")]
    [InlineData("changes", "chang")] [InlineData("normally", "normal")]
    public void RadiologyWords(string word, string stem) => Assert.Equal(stem, PorterStemmer.Stem(word));

    [Fact]
    public void ShortAndNonAlphabeticWordsAreLeftAlone()
    {
        Assert.Equal("is", PorterStemmer.Stem("is"));
        Assert.Equal("2.5", PorterStemmer.Stem("2.5"));
        Assert.Equal("x-ray", PorterStemmer.Stem("x-ray"));
        // m counts VC sequences: tr (0), trouble (1), oaten (2).
        Assert.Equal(0, PorterStemmer.Measure("tr", 2));
        Assert.Equal(1, PorterStemmer.Measure("trouble", 7));
        Assert.Equal(2, PorterStemmer.Measure("oaten", 5));
    }
}
