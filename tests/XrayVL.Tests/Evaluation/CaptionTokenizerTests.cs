using XrayVL.Evaluation;

namespace XrayVL.Tests.Evaluation;

public class CaptionTokenizerTests
{
    [Fact]
    public void EnglishIsLowerCasedAndLosesCocoCaptionPunctuation()
    {
        Assert.Equal(["the", "heart", "is", "normal", "no", "effusion", "pneumothorax", "or", "consolidation"],
            CaptionTokenizer.Tokenize("The heart is normal. No effusion, pneumothorax (or consolidation)!"));
        Assert.Equal(["no", "acute", "disease"], CaptionTokenizer.Tokenize("  \"No acute disease\" -- ... ; : ?  "));
        Assert.Equal("heart size normal lungs clear", CaptionTokenizer.Normalize("Heart size normal.\nLungs clear."));
    }

    [Fact]
    public void NumbersHyphenatedWordsAndSymbolsStayWhole()
    {
        Assert.Equal(["2.5", "cm", "x-ray", "of", "t6-t7", "1,000", "and/or", "50", "%"],
            CaptionTokenizer.Tokenize("2.5 cm X-ray of T6-T7, 1,000 and/or 50%."));
        // A trailing period or hyphen is punctuation, not part of the word.
        Assert.Equal(["xxxx", "right", "sided"], CaptionTokenizer.Tokenize("XXXX. right- sided"));
        Assert.Equal(["right", "sided"], CaptionTokenizer.Tokenize("right - sided"));
    }

    [Fact]
    public void CliticsAreSplitLikePtb()
    {
        Assert.Equal(["the", "heart", "'s", "size", "do", "n't", "change", "it", "'s", "stable"],
            CaptionTokenizer.Tokenize("The heart's size don't change; it's stable."));
        Assert.Equal(["ca", "n't", "exclude"], CaptionTokenizer.Tokenize("Can't exclude"));
        Assert.Equal(["patients", "lungs"], CaptionTokenizer.Tokenize("patients' lungs"));
    }

    [Fact]
    public void ChineseIsScoredOnCharactersWithoutPunctuation()
    {
        Assert.Equal(["心", "脏", "大", "小", "正", "常", "肺", "野", "清", "晰"], CaptionTokenizer.Tokenize("心脏大小正常，肺野清晰。", "zh"));
        // Latin words and numbers inside Chinese text stay whole; full-width forms are normalised.
        Assert.Equal(["x", "线", "显", "示", "2.5cm", "结", "节", "右", "肺"], CaptionTokenizer.Tokenize("Ｘ线显示：2.5cm结节（右肺）", "zh"));
        Assert.Equal(["未", "见", "气", "胸"], CaptionTokenizer.Tokenize("“未见气胸”；、！？……", "zh"));
    }

    [Fact]
    public void UnknownLanguageIsAUserError()
    {
        var e = Assert.Throws<XrayVLException>(() => CaptionTokenizer.Tokenize("x", "fr"));
        Assert.Contains("'fr'", e.Message);
        Assert.Empty(CaptionTokenizer.Tokenize(""));
    }
}
