using XrayVL.Evaluation;

namespace XrayVL.Tests.Evaluation;

public class BleuTests
{
    internal static string[] T(string text) => CaptionTokenizer.Tokenize(text);

    internal static IReadOnlyList<IReadOnlyList<string>> Refs(params string[] texts) => texts.Select(t => (IReadOnlyList<string>)T(t)).ToList();

    [Fact]
    public void PapineniModifiedPrecisionOfTheTheThe()
    {
        // Papineni et al. 2002, §2.1: "the the the the the the the" has standard unigram precision 7/7 but modified
        // precision 2/7, since "the" occurs at most twice in one reference.
        var refs = Refs("The cat is on the mat.", "There is a cat on the mat.");
        Assert.Equal((2L, 7L), Bleu.ModifiedPrecision(T("the the the the the the the"), refs, 1));

        // As a one-item corpus: BLEU-1 = 2/7; the closest reference length is 7 (second reference), so no brevity penalty.
        var result = Bleu.Corpus([T("the the the the the the the")], [refs]);
        Assert.Equal(2.0 / 7, result.Scores[0], 1e-8);
        Assert.Equal(7, result.ReferenceLength);
        Assert.Equal(1.0, result.BrevityPenalty);
    }

    [Fact]
    public void PapineniExampleOneModifiedPrecisions()
    {
        // Papineni et al. 2002, Example 1: Candidate 1 has modified unigram precision 17/18 and bigram 10/17;
        // Candidate 2 has 8/14 and 1/13.
        var refs = Refs(
            "It is a guide to action that ensures that the military will forever heed Party commands.",
            "It is the guiding principle which guarantees the military forces always being under the command of the Party.",
            "It is the practical guide for the army always to heed the directions of the party.");
        var candidate1 = T("It is a guide to action which ensures that the military always obeys the commands of the party.");
        var candidate2 = T("It is to insure the troops forever hearing the activity guidebook that party direct.");
        Assert.Equal((17L, 18L), Bleu.ModifiedPrecision(candidate1, refs, 1));
        Assert.Equal((10L, 17L), Bleu.ModifiedPrecision(candidate1, refs, 2));
        Assert.Equal((8L, 14L), Bleu.ModifiedPrecision(candidate2, refs, 1));
        Assert.Equal((1L, 13L), Bleu.ModifiedPrecision(candidate2, refs, 2));
    }

    [Fact]
    public void SmallCorpusByHand()
    {
        // Item 1: "the heart is normal" (4) vs "the heart is normal in size" (6) and "heart normal" (2): both are 2 away,
        //   the tie goes to the shorter, r1 = 2. All 4 unigrams, 3 bigrams, 2 trigrams, 1 4-gram match (reference 1).
        // Item 2: "no effusion" (2) vs "no pleural effusion" (3): r2 = 3; 2/2 unigrams, 0/1 bigram.
        // Corpus: c = 6, r = 5 → no brevity penalty; p1 = 6/6, p2 = 3/4, p3 = 2/2, p4 = 1/1.
        var result = Bleu.Corpus(
            [T("The heart is normal."), T("No effusion.")],
            [Refs("The heart is normal in size.", "Heart normal."), Refs("No pleural effusion.")]);
        Assert.Equal([6L, 4L, 2L, 1L], result.Guess);
        Assert.Equal([6L, 3L, 2L, 1L], result.Correct);
        Assert.Equal(6, result.TestLength);
        Assert.Equal(5, result.ReferenceLength);
        Assert.Equal(1.0, result.Scores[0], 1e-8);
        Assert.Equal(Math.Sqrt(0.75), result.Scores[1], 1e-8);
        Assert.Equal(Math.Pow(0.75, 1.0 / 3), result.Scores[2], 1e-8);
        Assert.Equal(Math.Pow(0.75, 1.0 / 4), result.Scores[3], 1e-8);
    }

    [Fact]
    public void BrevityPenaltyAndClosestLength()
    {
        // c = 2, r = 4: BP = exp(1 − 4/2) = e^−1; p1 = 1; no bigram matches → BLEU-2 ≈ sqrt(1e-15) · BP ≈ 0.
        var result = Bleu.Corpus([T("heart normal")], [Refs("the heart is normal")]);
        Assert.Equal(Math.Exp(-1), result.Scores[0], 1e-8);
        Assert.True(result.Scores[1] < 1e-7);
        Assert.Equal(Math.Exp(-1), result.BrevityPenalty, 1e-8);

        Assert.Equal(3, Bleu.ClosestLength(4, Refs("a b c", "a b c d e")));   // tie 3 vs 5 → shorter
        Assert.Equal(5, Bleu.ClosestLength(5, Refs("a b c", "a b c d e")));
        Assert.Equal(2, Bleu.ClosestLength(0, Refs("a b c", "a b")));
    }

    [Fact]
    public void CorpusSumsCountsBeforeDividing()
    {
        // Item A: 1 of 1 unigram right; item B: 0 of 3. Corpus p1 = 1/4 (not the mean of 1 and 0).
        // c = 4; closest refs: A "x" (1), B "q r s" (3) → r = 4, no penalty.
        var result = Bleu.Corpus([T("x"), T("a b c")], [Refs("x"), Refs("q r s")]);
        Assert.Equal(0.25, result.Scores[0], 1e-8);
    }

    [Fact]
    public void IdenticalCorpusScoresOne()
    {
        var texts = new[] { "the heart size is normal", "no focal consolidation pneumothorax or effusion is seen" };
        var result = Bleu.Corpus(texts.Select(t => (IReadOnlyList<string>)T(t)).ToList(), texts.Select(t => Refs(t)).ToList());
        foreach (double s in result.Scores) Assert.Equal(1.0, s, 1e-8);
    }
}
