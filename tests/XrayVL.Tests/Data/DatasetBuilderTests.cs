using System.Text.Json;
using XrayVL.Data;
using XrayVL.Data.Sources;
using XrayVL.Tests.Support;

namespace XrayVL.Tests.Data;

public class DatasetBuilderTests
{
    [Fact]
    public void IuCsvWithTheR2GenSplitLabelsAndWritesAManifest()
    {
        using var t = new TempDir();
        var result = DatasetBuilder.Build("iu-csv", new SourceOptions
        {
            Input = SharedData.File("iu-xray"),
            SplitFile = SharedData.File("iu-xray", "splits", "r2gen-annotation.json"),
        }, t.Path);

        var studies = Manifest.Read(result.ManifestPath);
        Assert.Equal(3826, studies.Count);
        Assert.StartsWith("official", result.SplitMethod);
        // R2Gen's 2,955 studies keep its split; the rest of IU has none.
        Assert.Equal(2069, result.Summary.Splits["train"]);
        Assert.Equal(296, result.Summary.Splits["val"]);
        Assert.Equal(590, result.Summary.Splits["test"]);
        Assert.Equal(3826 - 2955, result.Summary.Splits[ManifestSummary.None]);
        Assert.All(studies, s => Assert.NotNull(s.Labels));
        Assert.Equal(result.Summary.PositiveLabels["Cardiomegaly"], studies.Count(s => s.Labels!["Cardiomegaly"] == 1));
        Assert.Equal(7426, result.Summary.Images);

        string text = result.ToText();
        Assert.Contains("studies               3826", text);
        Assert.Contains("empty reports skipped: 25", text);
        Assert.Contains("images: not checked", text);
        using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(t.Path, "summary.json")));
        Assert.Equal(25, summary.RootElement.GetProperty("empty_reports").GetInt32());
        Assert.Equal(3826, summary.RootElement.GetProperty("summary").GetProperty("studies").GetInt32());
        Assert.Equal(["manifest.jsonl", "summary.json"], Directory.GetFiles(t.Path).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void CovidGetsASeededPatientSplitThatKeepsSharedImagesTogether()
    {
        using var t = new TempDir();
        var options = new SourceOptions { Input = SharedData.File("covid-chestxray") };
        var a = DatasetBuilder.Build("covid", options, t.File("a"), new BuildOptions { Seed = 3 });
        var b = DatasetBuilder.Build("covid", options, t.File("b"), new BuildOptions { Seed = 3 });
        Assert.StartsWith("by patient, seed 3", a.SplitMethod);
        Assert.Equal(File.ReadAllText(a.ManifestPath), File.ReadAllText(b.ManifestPath));
        var studies = Manifest.Read(a.ManifestPath);
        Assert.Empty(Splits.PatientsInSeveralSplits(studies));
        Assert.All(studies.GroupBy(s => s.Images[0].Path), g => Assert.Single(g.Select(s => s.Split).Distinct()));
        Assert.Equal(152, a.Summary.StudiesWithBoxes);
        Assert.Contains("studies with boxes", a.Summary.ToTable());
        Assert.True(a.Summary.Splits["train"] > a.Summary.Splits["test"]);
    }

    [Fact]
    public void UnknownSourceIsAClearError() =>
        Assert.Contains("unknown source 'nih'", Assert.Throws<XrayVLException>(() =>
            DatasetBuilder.Build("nih", new SourceOptions { Input = "." }, Path.GetTempPath())).Message);
}
