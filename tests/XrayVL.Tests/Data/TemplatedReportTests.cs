using XrayVL.Data;
using XrayVL.Data.Labeler;

namespace XrayVL.Tests.Data;

/// <summary>Reports written from labels read back, through the project's labeler, as the same labels (en and zh).</summary>
public class TemplatedReportTests
{
    private static Dictionary<string, int?> Labels(params (Observation O, int V)[] values)
    {
        var d = Observations.Names.ToDictionary(n => n, _ => (int?)null);
        foreach (var (o, v) in values) d[o.Name()] = v;
        return d;
    }

    public static TheoryData<string> Languages => new() { "en", "zh" };

    public static TheoryData<string, string?> LanguagesAndViews()
    {
        var data = new TheoryData<string, string?>();
        foreach (var language in new[] { "en", "zh" })
            foreach (var views in new[] { null, "frontal", "lateral", "frontal+lateral" })
                data.Add(language, views);
        return data;
    }

    [Theory]
    [MemberData(nameof(LanguagesAndViews))]
    public void EveryObservationReadsBackAsItself(string language, string? views)
    {
        foreach (var o in Observations.All.Where(o => o != Observation.NoFinding))
        {
            var labels = Labels((o, 1), (Observation.NoFinding, 0), (Observation.PleuralEffusion, o == Observation.PleuralEffusion ? 1 : 0),
                (Observation.Pneumothorax, o == Observation.Pneumothorax ? 1 : 0));
            var (findings, impression) = TemplatedReports.Write(labels, language, views)!.Value;
            var read = Labeler.Default.Label(findings + " " + impression, language);
            Assert.True(read[o] == LabelValue.Positive, $"{language} '{findings}': {o} read as {read[o]}");
            foreach (var absent in new[] { Observation.PleuralEffusion, Observation.Pneumothorax }.Where(a => a != o))
                Assert.True(read[absent] == LabelValue.Negative, $"{language} '{findings}': {absent} read as {read[absent]}");
            var others = Observations.All.Where(x => x != o && x != Observation.NoFinding && read[x] == LabelValue.Positive).ToList();
            Assert.True(others.Count == 0, $"{language} '{findings}': also positive {string.Join(", ", others)}");
            // Each part says it on its own and without hedging: the findings sentence and the impression's name.
            Assert.True(Labeler.Default.Label(findings, language)[o] == LabelValue.Positive, $"{language} findings '{findings}': {o} not positive");
            Assert.True(Labeler.Default.Label(impression, language)[o] == LabelValue.Positive, $"{language} impression '{impression}': {o} not positive");
        }
    }

    [Theory]
    [MemberData(nameof(Languages))]
    public void AbnormalStudiesGetAnImpressionNamingEachPositiveAndReadBackAsTheirLabels(string language)
    {
        var labels = Labels((Observation.NoFinding, 0), (Observation.LungOpacity, 1), (Observation.Pneumonia, 1), (Observation.Cardiomegaly, 1),
            (Observation.PleuralEffusion, 0), (Observation.Edema, 0));
        var (findings, impression) = TemplatedReports.Write(labels, language)!.Value;
        Assert.Equal(language == "en" ? "Cardiomegaly, airspace opacity and pneumonia." : "心影增大、肺内斑片影、肺炎。", impression);
        // Each part on its own names the positives (the impression is not a bare restatement of one finding).
        var fromImpression = Labeler.Default.Label(impression, language);
        var fromReport = Labeler.Default.Label(findings + " " + impression, language);
        foreach (var o in new[] { Observation.LungOpacity, Observation.Pneumonia, Observation.Cardiomegaly })
        {
            Assert.Equal(LabelValue.Positive, fromImpression[o]);
            Assert.Equal(LabelValue.Positive, fromReport[o]);
        }
        Assert.Equal(LabelValue.Negative, fromReport[Observation.PleuralEffusion]);
        Assert.Equal(3, Observations.All.Count(o => fromReport[o] == LabelValue.Positive));
        // One positive: just its name ("Pneumonia." / "肺炎。").
        var single = TemplatedReports.Write(Labels((Observation.Pneumonia, 1)), language)!.Value;
        Assert.Equal(language == "en" ? "Pneumonia." : "肺炎。", single.Impression);
    }

    [Theory]
    [MemberData(nameof(LanguagesAndViews))]
    public void NormalStudiesGetTheNormalReport(string language, string? views)
    {
        var (findings, impression) = TemplatedReports.Write(Labels((Observation.NoFinding, 1), (Observation.Pneumonia, 0)), language, views)!.Value;
        Assert.Equal(language == "en" ? TemplatedReports.NormalImpression : TemplatedReports.NormalImpressionZh, impression);
        var read = Labeler.Default.Label(findings + " " + impression, language);
        Assert.DoesNotContain(Observations.All, o => o != Observation.NoFinding && read[o] == LabelValue.Positive);
        Assert.True(language == "zh" || findings.Split(' ').Length + impression.Split(' ').Length >= 15);
    }

    [Theory]
    [InlineData("en", "frontal", "The examination is a frontal radiograph of the chest. The findings are consistent with pneumonia.")]
    [InlineData("en", "lateral", "The examination is a lateral radiograph of the chest. The findings are consistent with pneumonia.")]
    [InlineData("en", null, "The findings are consistent with pneumonia.")]
    [InlineData("zh", "frontal+lateral", "检查为胸部正侧位X线片。影像表现为肺炎。")]
    public void FindingsOpenWithTheExaminationWhenTheViewsAreKnown(string language, string? views, string expected)
    {
        var (findings, _) = TemplatedReports.Write(Labels((Observation.Pneumonia, 1)), language, views)!.Value;
        Assert.Equal(expected, findings);
    }

    [Fact]
    public void TheViewSetIsKnownOnlyWhenEveryImageIsFrontalOrLateral()
    {
        StudyImage I(string? view) => new("/x.png", view);
        Assert.Equal("frontal", TemplatedReports.ViewSet([I(Views.PA)]));
        Assert.Equal("frontal", TemplatedReports.ViewSet([I(Views.AP), I("AP supine"), I(Views.Frontal)]));
        Assert.Equal("lateral", TemplatedReports.ViewSet([I(Views.Lateral)]));
        Assert.Equal("frontal+lateral", TemplatedReports.ViewSet([I(Views.Lateral), I(Views.PA)]));
        Assert.Null(TemplatedReports.ViewSet([I(Views.PA), I(null)]));
        Assert.Null(TemplatedReports.ViewSet([I("oblique")]));
        Assert.Null(TemplatedReports.ViewSet([]));
        Assert.Throws<XrayVLException>(() => TemplatedReports.Write(Labels((Observation.Pneumonia, 1)), "en", "oblique"));
    }

    [Fact]
    public void CompleteAddsAChineseTwinAndLeavesReportsAndUnlabelledStudiesAlone()
    {
        Study S(string id, Dictionary<string, int?>? labels, string impression = "") => new()
        {
            StudyId = id, PatientId = "p" + id, Labels = labels, Impression = impression, Split = Splits.Train,
            Images = [new StudyImage("/x/" + id + ".png", id == "b" ? Views.AP : null)],
        };
        var studies = TemplatedReports.Complete([
            S("a", Labels((Observation.Pneumonia, 1))),
            S("b", Labels((Observation.NoFinding, 1))),
            S("c", Labels((Observation.Cardiomegaly, 1)), "Written report."),
            S("d", null),
            S("e", Labels((Observation.Pneumonia, 0))),               // says nothing positive and is not normal: no report
        ]);
        Assert.Equal(["a", "a-zh", "b", "b-zh", "c", "d", "e"], studies.Select(s => s.StudyId));
        var twin = studies[1];
        Assert.Equal("zh", twin.Language);
        Assert.Equal("pa", twin.PatientId);
        Assert.Equal(Splits.Train, twin.Split);
        Assert.Contains("肺炎", twin.ReportText);
        Assert.DoesNotContain("检查", twin.ReportText);                       // a's view is unknown
        Assert.StartsWith("The examination is a frontal radiograph of the chest. The lungs are clear.", studies[2].Findings);
        Assert.Equal("Written report.", studies[4].Impression);
        Assert.Equal("", studies[6].ReportText);
    }
}
