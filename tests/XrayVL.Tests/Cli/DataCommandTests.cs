using System.Text.Json;
using XrayVL.Tests.Support;

namespace XrayVL.Tests.Cli;

public class DataCommandTests
{
    [Fact]
    public void LabelPrintsOneJsonObjectPerReportLine()
    {
        string input = "Heart size is enlarged. No pleural effusion.\n心影增大，未见胸腔积液。\n";
        var r = CliRunner.RunWithInput(input, "label", "-", "--json");
        Assert.True(r.ExitCode == 0, r.Err);
        var lines = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        foreach (string line in lines)
        {
            var labels = JsonDocument.Parse(line).RootElement.GetProperty("labels");
            Assert.Equal(14, labels.EnumerateObject().Count());
            Assert.Equal(1, labels.GetProperty("Cardiomegaly").GetInt32());
            Assert.Equal(0, labels.GetProperty("Pleural Effusion").GetInt32());
            Assert.Equal(JsonValueKind.Null, labels.GetProperty("Pneumothorax").ValueKind);
        }
    }

    [Fact]
    public void DataBuildWritesAManifestAndInstructionsFollow()
    {
        string outDir = TempDir.Create("xrayvl-cli-data");
        var r = CliRunner.Run("data", "build", "--source", "xrayglm", "--input", SharedData.File("iu-xray", "openi-en.json"),
            "--images", SharedData.File("iu-xray", "images"), "--out", outDir);
        Assert.True(r.ExitCode == 0, r.Err);
        string manifest = Path.Combine(outDir, "manifest.jsonl");
        Assert.True(File.Exists(manifest));
        Assert.Contains("missing", r.Out, StringComparison.OrdinalIgnoreCase);   // 5 of 6,423 images are here: the rest are counted

        string conversations = Path.Combine(outDir, "conversations.jsonl");
        var i = CliRunner.Run("data", "instructions", manifest, "--out", conversations, "--tasks", "report", "vqa");
        Assert.True(i.ExitCode == 0, i.Err);
        Assert.True(File.ReadLines(conversations).Any());
        Assert.Contains("vqa", i.Out);

        var bad = CliRunner.Run("data", "build", "--source", "covid", "--input", "/nowhere", "--out", outDir);
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("/nowhere", bad.Err);
    }
}
