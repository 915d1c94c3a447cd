using XrayVL.Data;
using XrayVL.Data.Sources;
using XrayVL.Tests.Cli;
using XrayVL.Tests.Support;

namespace XrayVL.Tests.Data;

/// <summary>The image-label sources (Kermany pediatric pneumonia, NIH ChestX-ray14 sample) on the real shared files;
/// expected counts are read from the CSV lines directly, not through the project's CSV reader.</summary>
public class LabelledImageSourceTests
{
    private static string[][] Rows(string path) =>
        [.. File.ReadLines(path).Skip(1).Where(l => l.Length > 0).Select(l => l.TrimEnd('\r').Split(','))];

    [Fact]
    public void KermanyKeepsTheOfficialTestSplitAndSplitsTrainByPatient()
    {
        string dir = SharedData.File("kermany-pneumonia");
        var rows = Rows(Path.Combine(dir, "labels.csv"));   // file, orig_path, split, label, subtype, patient
        var r = new KermanySource().Read(new SourceOptions { Input = dir });
        Assert.Equal(rows.Length, r.Records);
        Assert.Equal(5840, r.Studies.Count);
        Assert.Equal(0, r.MissingImages);

        var test = r.Studies.Where(s => s.Split == Splits.Test).ToList();
        Assert.Equal(rows.Count(x => x[2] == "test"), test.Count);
        Assert.Equal(624, test.Count);
        Assert.Equal(rows.Count(x => x[2] == "test" && x[3] == "normal"), test.Count(s => s.Labels!["No Finding"] == 1));
        Assert.All(test, s => Assert.Equal("test", s.Meta!["official_split"]));
        // Val comes out of the official train split only, by patient, about a tenth of it.
        var val = r.Studies.Where(s => s.Split == Splits.Val).ToList();
        Assert.All(val, s => Assert.Equal("train", s.Meta!["official_split"]));
        Assert.InRange(val.Count, 5216 * 0.05, 5216 * 0.15);
        Assert.Empty(Splits.PatientsInSeveralSplits(r.Studies));

        var pneumonia = r.Studies.Single(s => s.StudyId == "kermany-test_PNEUMONIA_person100_bacteria_475");
        Assert.Equal(1, pneumonia.Labels!["Pneumonia"]);
        Assert.Equal(0, pneumonia.Labels["No Finding"]);
        Assert.Null(pneumonia.Labels["Cardiomegaly"]);
        Assert.Equal("bacteria", pneumonia.Meta!["subtype"]);
        Assert.Equal("kermany-test-person100", pneumonia.PatientId);
        var normal = r.Studies.First(s => s.Meta!["label"] == "normal");
        Assert.All(Observations.Names, n => Assert.Equal(n == "No Finding" ? 1 : 0, normal.Labels![n]));
        Assert.Equal("IM-0001", KermanySource.StudyNumber("IM-0001-0001"));
        Assert.Equal("NORMAL2-IM-0620", KermanySource.StudyNumber("NORMAL2-IM-0620-0001"));
    }

    [Fact]
    public void Nih14MapsFindingsOntoCheXpertAndBoxesOntoTheGrid()
    {
        string dir = SharedData.File("nih14-sample");
        string[] header = File.ReadLines(Path.Combine(dir, "labels.csv")).First().Split(',');
        var rows = Rows(Path.Combine(dir, "labels.csv"));
        int Col(string name) => Array.IndexOf(header, name);
        int Count(params string[] nih) => rows.Count(x => nih.Any(n => x[Col(n)] == "1"));

        var r = new Nih14Source().Read(new SourceOptions { Input = dir });
        Assert.Equal(1000, r.Studies.Count);
        Assert.Equal(0, r.MissingImages);
        int Positive(string observation) => r.Studies.Count(s => s.Labels![observation] == 1);
        Assert.Equal(Count("Effusion"), Positive("Pleural Effusion"));
        Assert.Equal(Count("Infiltration"), Positive("Lung Opacity"));
        Assert.Equal(Count("Mass", "Nodule"), Positive("Lung Lesion"));
        Assert.Equal(Count("Pleural_Thickening"), Positive("Pleural Other"));
        Assert.Equal(Count("Cardiomegaly"), Positive("Cardiomegaly"));
        Assert.Equal(rows.Count(x => x[Col("findings")] == "No Finding"), Positive("No Finding"));
        Assert.Equal(500, Positive("No Finding"));
        Assert.All(r.Studies, s => Assert.Null(s.Labels!["Support Devices"]));   // NIH does not label it
        Assert.Equal(Count("Emphysema"), r.Studies.Count(s => s.Meta!["nih_findings"].Split('|').Contains("Emphysema")));

        // Boxes: the 9 of bbox_2017_subset.csv (file, finding, x, y, w, h at 1024 px, ...), each on the 0–100 grid.
        var subset = Rows(Path.Combine(dir, "bbox_2017_subset.csv"));
        var withBoxes = r.Studies.Where(s => s.Boxes is { Count: > 0 }).ToList();
        Assert.Equal(subset.Select(x => x[0]).Distinct().Count(), withBoxes.Count);
        Assert.Equal(subset.Length, withBoxes.Sum(s => s.Boxes!.Count));
        foreach (var x in subset)
        {
            var study = r.Studies.Single(s => s.StudyId == "nih-" + Path.GetFileNameWithoutExtension(x[0]));
            double x1 = double.Parse(x[2], System.Globalization.CultureInfo.InvariantCulture) / 1024 * 100;
            Assert.Contains(study.Boxes!, b => Math.Abs(b.X1 - x1) <= 0.051);
        }

        // Patient-level split by the builder (the sample's own split is by image and kept in meta only).
        var t = TempDir.Create("xrayvl-nih14");
        var built = DatasetBuilder.Build("nih14", new SourceOptions { Input = dir }, t);
        var studies = Manifest.Read(built.ManifestPath).ToList();
        Assert.StartsWith("by patient", built.SplitMethod);
        Assert.Empty(Splits.PatientsInSeveralSplits(studies));
        Assert.Equal(3, studies.Select(s => s.Split).Distinct().Count());
    }

    [Fact]
    public void DataBuildCliTakesBothSources()
    {
        string outDir = TempDir.Create("xrayvl-cli-kermany");
        var r = CliRunner.Run("data", "build", "--source", "kermany", "--input", SharedData.File("kermany-pneumonia"), "--out", outDir);
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Contains("official, from the source", r.Out);
        var bad = CliRunner.Run("data", "build", "--source", "nih14", "--input", Path.Combine(outDir, "nothing"), "--out", outDir);
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("file not found", bad.Err);
    }

    [Fact]
    public void TemplatedReportsMakeALabelOnlyCollectionScorableForReports()
    {
        string outDir = TempDir.Create("xrayvl-cli-kermany-templated");
        var r = CliRunner.Run("data", "build", "--source", "kermany", "--input", SharedData.File("kermany-pneumonia"), "--templated-reports", "--out", outDir);
        Assert.True(r.ExitCode == 0, r.Err);
        var studies = Manifest.Read(Path.Combine(outDir, "manifest.jsonl"));
        Assert.Equal(2 * 5840, studies.Count);                               // each image in English and in Chinese
        Assert.All(studies, s => Assert.NotEqual("", s.ReportText));
        // The written report says what the labels say: read back by the labeler, pneumonia images name pneumonia.
        var labeler = XrayVL.Data.Labeler.Labeler.Default;
        foreach (var s in studies.Where(s => s.StudyId.StartsWith("kermany-test_", StringComparison.Ordinal)).Take(40))
            Assert.Equal(s.Labels!["Pneumonia"] == 1,
                         labeler.Label(s.ReportText, s.Language)[Observation.Pneumonia] == LabelValue.Positive);
        Assert.Contains("reports written from labels for 5,840 studies", r.Out);
    }
}
