using System.Text.Json;
using XrayVL.Data;
using XrayVL.Data.Labeler;
using LabelerClass = XrayVL.Data.Labeler.Labeler;

namespace XrayVL.Tests.Data;

public class EnglishLabelerTests
{
    private static ChexpertLabels L(string report) => LabelerClass.Default.Label(report, "en");

    [Fact]
    public void PlainMentionIsPositive()
    {
        var l = L("Small left pleural effusion. Stable cardiomegaly.");
        Assert.Equal(LabelValue.Positive, l[Observation.PleuralEffusion]);
        Assert.Equal(LabelValue.Positive, l[Observation.Cardiomegaly]);
        Assert.Equal("Small left pleural effusion.", l.Evidence(Observation.PleuralEffusion));
        Assert.Equal(LabelValue.NotMentioned, l[Observation.NoFinding]);
    }

    [Theory]
    [InlineData("No pleural effusion.")]
    [InlineData("There is no evidence of pleural effusion.")]
    [InlineData("Lungs are clear without pleural effusion.")]
    [InlineData("Pleural effusion has resolved.")]
    [InlineData("Pleural effusion is not seen.")]
    [InlineData("The lungs are free of focal consolidation, pneumothorax, or pleural effusion.")]
    [InlineData("Negative for pneumothorax or pleural effusion.")]
    [InlineData("The presence of pneumonia, effusions, edema or masses has been ruled out.")]
    public void NegationBeforeOrAfterTheMention(string report) =>
        Assert.Equal(LabelValue.Negative, L(report)[Observation.PleuralEffusion]);

    [Fact]
    public void NegationCoversAListButNotAClauseAfterABreaker()
    {
        var l = L("No focal consolidation, pleural effusion, or pneumothorax, but there is mild cardiomegaly.");
        Assert.Equal(LabelValue.Negative, l[Observation.Consolidation]);
        Assert.Equal(LabelValue.Negative, l[Observation.PleuralEffusion]);
        Assert.Equal(LabelValue.Negative, l[Observation.Pneumothorax]);
        Assert.Equal(LabelValue.Positive, l[Observation.Cardiomegaly]);

        var but = L("No pneumothorax but a small left pleural effusion.");
        Assert.Equal(LabelValue.Negative, but[Observation.Pneumothorax]);
        Assert.Equal(LabelValue.Positive, but[Observation.PleuralEffusion]);

        var comma = L("No pneumothorax, mild bibasilar atelectasis.");
        Assert.Equal(LabelValue.Positive, comma[Observation.Atelectasis]);
    }

    [Theory]
    [InlineData("Possible right lower lobe pneumonia.")]
    [InlineData("Right basilar opacity which may represent pneumonia.")]
    [InlineData("Cannot exclude pneumonia.")]
    [InlineData("Pneumonia cannot be excluded.")]
    [InlineData("Findings concerning for pneumonia.")]
    [InlineData("Atelectasis versus pneumonia.")]
    [InlineData("Opacity, likely pneumonia.")]
    public void UncertaintyCues(string report) =>
        Assert.Equal(LabelValue.Uncertain, L(report)[Observation.Pneumonia]);

    [Fact]
    public void NegationGovernsAWeakUncertaintyCueAfterIt() =>
        Assert.Equal(LabelValue.Negative, L("No focal opacity to suggest pneumonia.")[Observation.Pneumonia]);

    [Fact]
    public void NoChangeIsNotANegation() =>
        Assert.Equal(LabelValue.Positive, L("No change in the small left pleural effusion.")[Observation.PleuralEffusion]);

    [Theory]
    [InlineData("Heart size is normal.", LabelValue.Negative)]
    [InlineData("Normal heart size.", LabelValue.Negative)]
    [InlineData("The heart is not enlarged.", LabelValue.Negative)]
    [InlineData("The heart, lungs, and mediastinum are within normal limits.", LabelValue.Negative)]
    [InlineData("The heart is mildly enlarged.", LabelValue.Positive)]
    [InlineData("Heart size is at the upper limits of normal.", LabelValue.Uncertain)]
    [InlineData("The heart may be enlarged.", LabelValue.Uncertain)]
    [InlineData("Heart size is stable.", LabelValue.NotMentioned)]
    public void StructureMentionsNeedASizeQualifier(string report, LabelValue expected) =>
        Assert.Equal(expected, L(report)[Observation.Cardiomegaly]);

    [Fact]
    public void AggregationPrefersPositiveOverUncertainOverNegative()
    {
        var l = L("No effusion on the right. Possible small left effusion. Small left pleural effusion.");
        Assert.Equal(LabelValue.Positive, l[Observation.PleuralEffusion]);
        Assert.Equal("Small left pleural effusion.", l.Evidence(Observation.PleuralEffusion));
        Assert.Equal(LabelValue.Uncertain, L("No effusion on the right. Possible small left effusion.")[Observation.PleuralEffusion]);
    }

    [Fact]
    public void NoFindingFollowsCheXpertsConvention()
    {
        // Only negative findings: No Finding; the normal statement is its evidence.
        var normal = L("Heart size is normal. No pneumothorax. No acute cardiopulmonary abnormality.");
        Assert.Equal(LabelValue.Positive, normal[Observation.NoFinding]);
        Assert.Equal("No acute cardiopulmonary abnormality.", normal.Evidence(Observation.NoFinding));
        // Support devices do not count against it; other findings, uncertain ones included, do.
        Assert.Equal(LabelValue.Positive, L("Right IJ catheter tip in the SVC. Lungs are clear.")[Observation.NoFinding]);
        Assert.Equal(LabelValue.NotMentioned, L("Possible left lower lobe atelectasis.")[Observation.NoFinding]);
        // Abnormalities outside the 14 (degenerative changes, emphysema...) keep it from being positive.
        Assert.Equal(LabelValue.NotMentioned, L("Degenerative changes of the thoracic spine.")[Observation.NoFinding]);
        Assert.Equal(LabelValue.Positive, L("No emphysema.")[Observation.NoFinding]);
    }

    [Fact]
    public void UnmentionPhrasesAndWholeWords()
    {
        Assert.Equal(LabelValue.NotMentioned, L("Small pericardial effusion.")[Observation.PleuralEffusion]);
        Assert.Equal(LabelValue.NotMentioned, L("Calcified nodule in the right upper lobe.")[Observation.LungLesion]);
        Assert.Equal(LabelValue.NotMentioned, L("No evidence of active tuberculosis.")[Observation.SupportDevices]);
        Assert.Equal(LabelValue.Positive, L("Endotracheal tube in good position.")[Observation.SupportDevices]);
        Assert.Equal(LabelValue.Positive, L("Bilateral pulmonary opacities.")[Observation.LungOpacity]);
        Assert.Equal(LabelValue.Positive, L("Old healed right rib fractures.")[Observation.Fracture]);
    }

    [Fact]
    public void EmptyTextMentionsNothing()
    {
        var l = L("  ");
        Assert.All(Observations.All, o => Assert.Equal(LabelValue.NotMentioned, l[o]));
    }
}

public class ChineseLabelerTests
{
    private static ChexpertLabels L(string report) => LabelerClass.Default.Label(report, "zh");

    [Fact]
    public void PositiveMentions()
    {
        var l = L("心影增大，双侧胸腔积液。左侧第5肋骨骨折。起搏器置入术后。");
        Assert.Equal(LabelValue.Positive, l[Observation.Cardiomegaly]);
        Assert.Equal(LabelValue.Positive, l[Observation.PleuralEffusion]);
        Assert.Equal(LabelValue.Positive, l[Observation.Fracture]);
        Assert.Equal(LabelValue.Positive, l[Observation.SupportDevices]);
        Assert.Equal("心影增大，双侧胸腔积液", l.Evidence(Observation.Cardiomegaly));
    }

    [Theory]
    [InlineData("未见气胸。")]
    [InlineData("双肺未见明显实变，无气胸。")]
    [InlineData("没有局灶性实变、胸腔积液或气胸。")]
    [InlineData("已经排除了肺炎、积液、水肿、气胸的存在。")]
    [InlineData("气胸已被排除。")]
    public void Negation(string report) => Assert.Equal(LabelValue.Negative, L(report)[Observation.Pneumothorax]);

    [Theory]
    [InlineData("右下肺斑片影，考虑肺炎。")]
    [InlineData("不除外肺炎。")]
    [InlineData("右下肺炎可能。")]
    [InlineData("疑似肺炎。")]
    [InlineData("肺炎待排。")]
    public void Uncertainty(string report) => Assert.Equal(LabelValue.Uncertain, L(report)[Observation.Pneumonia]);

    [Fact]
    public void ScopeEndsAtTheClause()
    {
        var l = L("未见气胸，但右侧少量胸腔积液。");
        Assert.Equal(LabelValue.Negative, l[Observation.Pneumothorax]);
        Assert.Equal(LabelValue.Positive, l[Observation.PleuralEffusion]);
        var comma = L("心脏大小正常，左下肺不张。");
        Assert.Equal(LabelValue.Negative, comma[Observation.Cardiomegaly]);
        Assert.Equal(LabelValue.Positive, comma[Observation.Atelectasis]);
    }

    [Theory]
    [InlineData("心脏大小正常。", LabelValue.Negative)]
    [InlineData("心脏没有明显增大。", LabelValue.Negative)]
    [InlineData("心脏轻度增大。", LabelValue.Positive)]
    [InlineData("心脏大小处于正常的上限。", LabelValue.Uncertain)]
    [InlineData("心脏起搏器在位。", LabelValue.NotMentioned)]
    public void StructureMentionsNeedAQualifier(string report, LabelValue expected) =>
        Assert.Equal(expected, L(report)[Observation.Cardiomegaly]);

    [Fact]
    public void NoFinding()
    {
        Assert.Equal(LabelValue.Positive, L("心脏大小正常，肺部清晰，没有气胸或胸腔积液。")[Observation.NoFinding]);
        Assert.Equal(LabelValue.NotMentioned, L("胸椎退行性改变。")[Observation.NoFinding]);
        Assert.Equal(LabelValue.NotMentioned, L("可能有少量胸腔积液。")[Observation.NoFinding]);
    }

    [Fact]
    public void AutoPicksChineseWhenCjkDominates()
    {
        Assert.Equal("zh", LabelerClass.DetectLanguage("X光片显示心脏增大"));
        Assert.Equal("en", LabelerClass.DetectLanguage("Small effusion."));
        Assert.Equal("en", LabelerClass.DetectLanguage("Small left pleural effusion (少量)."));
        Assert.Equal(LabelValue.Positive, LabelerClass.Default.Label("X光片显示心脏增大")[Observation.Cardiomegaly]);
        Assert.Throws<XrayVLException>(() => LabelerClass.Default.Label("x", "fr"));
    }
}

public class LabelLinesTests
{
    [Fact]
    public void OneResultPerLineInJsonWithAllFourteenKeys()
    {
        var input = new StringReader("Small left pleural effusion.\n\n心脏增大。\n");
        var output = new StringWriter();
        int n = LabelerClass.LabelLines(input, output, "reports.txt", "auto", json: true);
        Assert.Equal(2, n);
        string[] lines = output.ToString().Split('\n', StringSplitOptions.None)[..^1];
        Assert.Equal(3, lines.Length);
        foreach (string line in lines)
        {
            using var doc = JsonDocument.Parse(line);
            var labels = doc.RootElement.GetProperty("labels");
            Assert.Equal(Observations.Names, labels.EnumerateObject().Select(p => p.Name));
            Assert.All(labels.EnumerateObject(), p => Assert.True(
                p.Value.ValueKind == JsonValueKind.Null || p.Value.GetInt32() is 1 or 0 or -1));
        }
        using var first = JsonDocument.Parse(lines[0]);
        Assert.Equal(1, first.RootElement.GetProperty("labels").GetProperty("Pleural Effusion").GetInt32());
        Assert.Equal(JsonValueKind.Null, first.RootElement.GetProperty("labels").GetProperty("Cardiomegaly").ValueKind);
        using var blank = JsonDocument.Parse(lines[1]);
        Assert.All(blank.RootElement.GetProperty("labels").EnumerateObject(), p => Assert.Equal(JsonValueKind.Null, p.Value.ValueKind));
        using var zh = JsonDocument.Parse(lines[2]);
        Assert.Equal(1, zh.RootElement.GetProperty("labels").GetProperty("Cardiomegaly").GetInt32());
    }

    [Fact]
    public void TextOutputListsMentionedObservations()
    {
        var output = new StringWriter();
        LabelerClass.LabelLines(new StringReader("No pneumothorax. Possible pneumonia."), output, "-", "en");
        Assert.Equal("Pneumonia=-1; Pneumothorax=0", output.ToString().Trim());
    }

    /// <summary>`label --lang zh` on English text used to return No Finding=1 silently.</summary>
    [Fact]
    public void ALanguageTheTextContradictsIsRefusedNamingTheLine()
    {
        var e = Assert.Throws<XrayVLException>(() =>
            LabelerClass.LabelLines(new StringReader("心脏增大。\n\nThe heart is enlarged.\n"), new StringWriter(), "reports.txt", "zh"));
        Assert.Equal("reports.txt line 3: the text has no Chinese characters but --lang is zh; use --lang en or auto", e.Message);
        Assert.StartsWith("reports.txt line 1: the text is Chinese",
            Assert.Throws<XrayVLException>(() => LabelerClass.LabelLines(new StringReader("心脏增大。"), new StringWriter(), "reports.txt", "en")).Message);
    }

    [Fact]
    public void EmptyInputIsAnErrorNamingTheFile()
    {
        var e = Assert.Throws<XrayVLException>(() => LabelerClass.LabelLines(new StringReader("\n  \n"), new StringWriter(), "reports.txt"));
        Assert.Contains("reports.txt", e.Message);
        Assert.Contains("empty", e.Message);
    }

    [Fact]
    public void LabelsRoundTripThroughTheDictionaryForm()
    {
        var l = LabelerClass.Default.Label("Small left pleural effusion. No pneumothorax. Possible pneumonia.", "en");
        var back = ChexpertLabels.FromDictionary(l.ToDictionary());
        Assert.All(Observations.All, o => Assert.Equal(l[o], back[o]));
        Assert.Throws<XrayVLException>(() => ChexpertLabels.FromDictionary(new Dictionary<string, int?> { ["Pleural Effusion"] = 2 }));
        Assert.Throws<XrayVLException>(() => ChexpertLabels.FromDictionary(new Dictionary<string, int?> { ["Lung Cancer"] = 1 }));
    }
}
