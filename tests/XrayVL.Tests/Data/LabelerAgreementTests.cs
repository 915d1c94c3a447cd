using XrayVL.Data;
using XrayVL.Data.Labeler;
using XrayVL.Tests.Support;

namespace XrayVL.Tests.Data;

/// <summary>
/// The labeler's agreement on real data, printed for the issue note. Floors are the figures measured when the labeler
/// was written, minus a margin, so a change that makes the labeler worse fails here.
/// </summary>
public class LabelerAgreementTests
{
    private static void Print(string text) => TestContext.Current.TestOutputHelper?.WriteLine(text);

    [Fact]
    public void MeshTermsMapToObservations()
    {
        var o = LabelerAgreement.FromMesh("Cardiomegaly/borderline;Pulmonary Atelectasis/base/left;Opacity/lung;Fractures, Bone/ribs;Calcinosis");
        Assert.Equal(new[] { Observation.Cardiomegaly, Observation.LungOpacity, Observation.Atelectasis, Observation.Fracture }, o.Order());
        Assert.Equal(new[] { Observation.NoFinding }, LabelerAgreement.FromMesh("normal"));
        Assert.Empty(LabelerAgreement.FromMesh("Calcified Granuloma/lung;No Indexing"));
    }

    [Fact]
    public void AgreementCountsAreComputedFromBothSides()
    {
        // A fake labeler that says "Cardiomegaly" for every report: recall 1, precision = prevalence.
        var csv = Path.Combine(Path.GetTempPath(), $"xrayvl-mesh-{Guid.NewGuid():N}.csv");
        File.WriteAllText(csv, "uid,MeSH,Problems,image,indication,comparison,findings,impression\n" +
                               "1,Cardiomegaly/mild,Cardiomegaly,x,,,Big heart.,\n2,normal,normal,x,,,Fine.,\n3,normal,normal,x,,,,\n");
        try
        {
            var report = LabelerAgreement.VersusIuMesh(csv, new AlwaysCardiomegaly());
            Assert.Equal(2, report.Documents);  // the report without text is not scored
            var c = report[Observation.Cardiomegaly.Name()];
            Assert.Equal((1, 1, 0), (c.TruePositives, c.FalsePositives, c.FalseNegatives));
            Assert.Equal(0.5, c.Precision);
            Assert.Equal(1.0, c.Recall);
            Assert.Equal(2.0 / 3, c.F1, 9);
            var nf = report[Observation.NoFinding.Name()];
            Assert.Equal((0, 0, 1), (nf.TruePositives, nf.FalsePositives, nf.FalseNegatives));
        }
        finally { File.Delete(csv); }
    }

    private sealed class AlwaysCardiomegaly : ILabeler
    {
        public ChexpertLabels Label(string report, string lang = "auto")
        {
            var l = new ChexpertLabels();
            l[Observation.Cardiomegaly] = LabelValue.Positive;
            return l;
        }
    }

    [Fact]
    public void LabelerAgreesWithIuRadiologistMeshTerms()
    {
        string csv = SharedData.File("iu-xray", "iu_reports.csv");
        var positive = LabelerAgreement.VersusIuMesh(csv, uncertainAsPresent: false);
        var withUncertain = LabelerAgreement.VersusIuMesh(csv, uncertainAsPresent: true);
        Print(positive.ToTable());
        Print(withUncertain.ToTable());

        Assert.Equal(3826, positive.Documents);  // 3,851 reports, 25 with neither findings nor impression
        Assert.True(positive.MicroF1 >= 0.83, $"micro F1 {positive.MicroF1:F3}");
        Assert.True(withUncertain.MicroF1 >= 0.81, $"micro F1 {withUncertain.MicroF1:F3}");
        Assert.True(withUncertain.MicroRecall > positive.MicroRecall);
        Assert.True(positive[Observation.NoFinding.Name()].F1 >= 0.86);
        Assert.True(positive[Observation.Cardiomegaly.Name()].F1 >= 0.87);
        Assert.True(positive[Observation.PleuralEffusion.Name()].F1 >= 0.85);
        Assert.True(positive[Observation.Atelectasis.Name()].F1 >= 0.85);
    }

    [Fact]
    public void EnglishAndChineseCaptionLabelsAgree()
    {
        var report = LabelerAgreement.BetweenCaptionLanguages(
            SharedData.File("iu-xray", "openi-en.json"), SharedData.File("iu-xray", "openi-zh.json"));
        Print(report.ToTable());
        Assert.Equal(6423, report.Documents);
        Assert.True(report.MicroF1 >= 0.89, $"micro F1 {report.MicroF1:F3}");
        Assert.True(report.ExactAgreement >= 0.94, $"exact agreement {report.ExactAgreement:F3}");
        Assert.True(report[Observation.PleuralEffusion.Name()].F1 >= 0.9);
        Assert.True(report[Observation.Cardiomegaly.Name()].F1 >= 0.9);
        Assert.True(report[Observation.NoFinding.Name()].F1 >= 0.92);
    }
}
