using XrayVL.Data;

namespace XrayVL.Tests.Data;

public class ReportParserTests
{
    [Fact]
    public void UpperCaseHeadingsWithColonsOnTheirOwnLines()
    {
        var r = ReportParser.Parse("""
                                                    FINAL REPORT
             EXAMINATION:  CHEST (PA AND LAT)

             INDICATION:  ___F with new onset ascites  // eval for infection

             COMPARISON:  None.

             FINDINGS:

             There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
             nodular opacities that most likely represent nipple shadows.

             IMPRESSION:

             No acute cardiopulmonary process.
            """);
        Assert.StartsWith("___F with new onset ascites", r.Indication);
        Assert.Equal("None.", r.Comparison);
        Assert.StartsWith("There is no focal consolidation", r.Findings);
        Assert.EndsWith("nipple shadows.", r.Findings);
        Assert.Equal("No acute cardiopulmonary process.", r.Impression);
        Assert.Equal("CHEST (PA AND LAT)", r.Other["EXAMINATION"]);
    }

    [Fact]
    public void HeadingsInAnyCaseWithOrWithoutColons()
    {
        var r = ReportParser.Parse("findings: The lungs are clear.\nImpression\nNormal chest.\nindication: cough");
        Assert.Equal("The lungs are clear.", r.Findings);
        Assert.Equal("Normal chest.", r.Impression);
        Assert.Equal("cough", r.Indication);

        // Upper case at a line start needs no colon; mixed case inline needs one at a sentence start.
        var inline = ReportParser.Parse("FINDINGS Heart size normal. Impression: no acute disease.");
        Assert.Equal("Heart size normal.", inline.Findings);
        Assert.Equal("no acute disease.", inline.Impression);
    }

    [Fact]
    public void WordsThatLookLikeHeadingsInsideSentencesAreText()
    {
        var r = ReportParser.Parse("The findings are stable. History of smoking. No comparison available.");
        Assert.Equal("The findings are stable. History of smoking. No comparison available.", r.Findings);
        Assert.Equal("", r.Impression);
        Assert.Equal("", r.Indication);
    }

    [Fact]
    public void TextWithoutHeadingsIsFindings()
    {
        var r = ReportParser.Parse("Heart size is normal.\nNo pneumothorax.");
        Assert.Equal("Heart size is normal.\nNo pneumothorax.", r.Findings);
        Assert.False(r.IsEmpty);
        Assert.True(ReportParser.Parse("  \n ").IsEmpty);
    }

    [Fact]
    public void PreambleBecomesFindingsOnlyWhenThereIsNoFindingsSection()
    {
        var r = ReportParser.Parse("Lungs are clear.\nIMPRESSION: Normal.");
        Assert.Equal("Lungs are clear.", r.Findings);
        Assert.Equal("Normal.", r.Impression);
    }

    [Fact]
    public void ChineseHeadings()
    {
        var r = ReportParser.Parse("检查所见：双肺纹理清晰，未见实变。\n诊断意见：心肺未见异常。");
        Assert.Equal("双肺纹理清晰，未见实变。", r.Findings);
        Assert.Equal("心肺未见异常。", r.Impression);
    }
}

public class ReportCleanerTests
{
    [Theory]
    [InlineData("Normal chest x-XXXX.", "Normal chest x-ray.")]
    [InlineData("There are no XXXX of a pleural effusion.", "There are no evidence of a pleural effusion.")]
    [InlineData("XXXX XXXX. The lungs are clear.", "The lungs are clear.")]
    [InlineData("The XXXX is normal. Heart size is normal.", "Heart size is normal.")]
    [InlineData("XXXX are intact. No effusion.", "No effusion.")]
    [InlineData("Midline sternotomy XXXX. Clear lungs.", "Midline sternotomy. Clear lungs.")]
    [InlineData("No XXXX acute cardiopulmonary abnormality.", "No acute cardiopulmonary abnormality.")]
    [InlineData("Enlarged lymph XXXX are seen.", "Enlarged lymph nodes are seen.")]
    [InlineData("Borderline cardiomegaly. Inferior XXXX XXXX XXXX.", "Borderline cardiomegaly.")]
    [InlineData("___F with cough", "F with cough")]
    public void RemovesDeidentificationTokensKeepingSentencesWhole(string input, string expected) =>
        Assert.Equal(expected, ReportCleaner.Clean(input));

    [Theory]
    [InlineData("1. No acute disease. 2. Stable cardiomegaly.", "No acute disease. Stable cardiomegaly.")]
    [InlineData("1) Clear lungs.\n2) Normal heart.", "Clear lungs. Normal heart.")]
    [InlineData("  Heart   size\n\n normal  .", "Heart size normal.")]
    [InlineData("Lungs are clear.In the interval..", "Lungs are clear. In the interval.")]
    [InlineData("No effusion , no pneumothorax ,.", "No effusion, no pneumothorax.")]
    [InlineData("Nodule measures 1.5 cm.", "Nodule measures 1.5 cm.")]
    public void StripsNumberingAndNormalizesSpacing(string input, string expected) =>
        Assert.Equal(expected, ReportCleaner.Clean(input));

    [Fact]
    public void ChineseTextIsKeptIntact()
    {
        const string zh = "心脏大小正常，肺部清晰。没有气胸或胸腔积液。";
        Assert.Equal(zh, ReportCleaner.Clean("  " + zh + "\n"));
    }

    [Fact]
    public void EmptyInputGivesEmptyText()
    {
        Assert.Equal("", ReportCleaner.Clean(null));
        Assert.Equal("", ReportCleaner.Clean(" \n "));
        Assert.Equal("", ReportCleaner.Clean("XXXX XXXX."));
    }
}
