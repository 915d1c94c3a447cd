using XrayVL.Evaluation;
using static XrayVL.Tests.Evaluation.BleuTests;

namespace XrayVL.Tests.Evaluation;

public class RougeLTests
{
    [Fact]
    public void LcsLengths()
    {
        Assert.Equal(3, RougeL.LcsLength(T("the heart is normal"), T("heart size is normal")));
        Assert.Equal(4, RougeL.LcsLength(T("a b c d e f"), T("b x c d f")));
        Assert.Equal(0, RougeL.LcsLength(T("a b"), T("")));
    }

    [Fact]
    public void SentenceFMeasureWithBetaOnePointTwo()
    {
        // LCS("heart normal", "the heart is normal") = 2: P = 2/2, R = 2/4.
        // F = (1 + 1.44)·1·0.5 / (0.5 + 1.44·1) = 1.22 / 1.94.
        Assert.Equal(1.22 / 1.94, RougeL.Sentence(T("heart normal"), Refs("the heart is normal")), 12);
        // P = R = 3/4 → F = 3/4 whatever β.
        Assert.Equal(0.75, RougeL.Sentence(T("the heart is normal"), Refs("heart size is normal")), 12);
    }

    [Fact]
    public void PrecisionAndRecallAreMaximisedSeparatelyOverReferences()
    {
        // "a b c d" vs "a b": LCS 2 → P = 2/4, R = 2/2; vs "a b c x y z w v": LCS 3 → P = 3/4, R = 3/8.
        // coco-caption takes max P = 3/4 and max R = 1 (from different references):
        // F = 2.44·0.75·1 / (1 + 1.44·0.75) = 1.83 / 2.08.
        Assert.Equal(1.83 / 2.08, RougeL.Sentence(T("a b c d"), Refs("a b", "a b c x y z w v")), 12);
    }

    [Fact]
    public void CorpusIsTheMeanOfItems()
    {
        var (score, perItem) = RougeL.Corpus([T("heart normal"), T("x y"), T("")], [Refs("the heart is normal"), Refs("x y"), Refs("a")]);
        Assert.Equal(1.22 / 1.94, perItem[0], 12);
        Assert.Equal(1.0, perItem[1], 12);
        Assert.Equal(0.0, perItem[2]);
        Assert.Equal((1.22 / 1.94 + 1) / 3, score, 12);
    }
}
