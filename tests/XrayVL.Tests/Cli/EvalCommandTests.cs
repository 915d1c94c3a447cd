using System.Text.Json;
using XrayVL.Tests.Support;

namespace XrayVL.Tests.Cli;

public class EvalCommandTests
{
    [Fact]
    public void ScorePrintsTheDocumentedJsonKeys()
    {
        string dir = TempDir.Create("xrayvl-score");
        string pred = Path.Combine(dir, "pred.txt"), refs = Path.Combine(dir, "ref.txt");
        File.WriteAllLines(pred, ["The heart is normal in size. No pleural effusion.", "Cardiomegaly. Small left effusion."]);
        File.WriteAllLines(refs, ["Heart size is normal. No pleural effusion or pneumothorax. ||| Normal heart. Lungs are clear.", "The heart is enlarged. Small left pleural effusion."]);
        var r = CliRunner.Run("score", "--pred", pred, "--ref", refs, "--json");
        Assert.True(r.ExitCode == 0, r.Err);
        var root = JsonDocument.Parse(r.Out).RootElement;
        foreach (string key in new[] { "bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider", "meteor", "ce_micro_f1", "ce_macro_f1" })
            Assert.InRange(root.GetProperty(key).GetDouble(), 0, 10);
        Assert.True(root.GetProperty("bleu1").GetDouble() > root.GetProperty("bleu4").GetDouble());

        File.WriteAllLines(refs, ["only one reference line"]);
        var bad = CliRunner.Run("score", "--pred", pred, "--ref", refs);
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("ref.txt", bad.Err);
    }

    [Fact]
    public void EvalWritesPredictionsMetricsAndReport()
    {
        string dir = TempDir.Create("xrayvl-eval-cli");
        var build = CliRunner.Run("data", "build", "--source", "xrayglm", "--input", SharedData.File("iu-xray", "openi-en.json"),
            "--images", SharedData.File("iu-xray", "images"), "--out", dir);
        Assert.True(build.ExitCode == 0, build.Err);
        string manifest = Path.Combine(dir, "manifest.jsonl");
        string split = JsonDocument.Parse(File.ReadLines(manifest).First()).RootElement.GetProperty("split").GetString()!;
        string outDir = Path.Combine(dir, "eval");
        var r = CliRunner.Run("eval", "--model", TinyCheckpoint.Directory, "--manifest", manifest, "--split", split,
            "--tasks", "report,vqa", "--max-tokens", "8", "--out", outDir);
        Assert.True(r.ExitCode == 0, r.Err);
        foreach (string f in new[] { "predictions.jsonl", "metrics.json", "report.md" })
            Assert.True(File.Exists(Path.Combine(outDir, f)), f);
        Assert.NotEmpty(File.ReadAllLines(Path.Combine(outDir, "predictions.jsonl")));
        JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "metrics.json")));
        Assert.Contains("|", r.Out);                                             // the markdown tables
        // The closing line names exactly the files written, plots included only when there are some.
        string wrote = r.Err.Split('\n').Single(l => l.StartsWith("wrote "));
        Assert.DoesNotContain("plots", wrote);
        foreach (string f in Directory.GetFiles(outDir)) Assert.Contains(Path.GetFileName(f), wrote);

        var bad = CliRunner.Run("eval", "--model", TinyCheckpoint.Directory, "--manifest", manifest, "--tasks", "report,caption");
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("caption", bad.Err);
    }
}
