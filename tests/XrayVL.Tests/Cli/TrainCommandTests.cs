using XrayVL.Tests.Training;

namespace XrayVL.Tests.Cli;

public class TrainCommandTests
{
    [Fact]
    public void TrainWritesAModelThatReportUsesAndLogsMetricsAndALossCurve()
    {
        var fixture = new TrainingFixture();
        var recipe = fixture.Recipe("""[ { "name": "t", "kind": "instruct", "trainable": "full", "steps": 4, "batch_size": 4, "eval_every": 2, "eval_batches": 1, "sample_every": 4 } ]""");
        string outDir = fixture.NewOut("cli");
        var r = CliRunner.Run("train", "--config", recipe.SourcePath!, "--out", outDir);
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Contains("step 4/4", r.Err);                                    // plain progress lines when not on a terminal
        Assert.Contains("validation loss", r.Err);
        foreach (string f in new[] { "model/config.json", "model/model.safetensors", "metrics.jsonl", "loss.png" })
            Assert.True(File.Exists(Path.Combine(outDir, f)), f);

        var report = CliRunner.Run("report", fixture.Images[0], "--model", Path.Combine(outDir, "model"), "--max-tokens", "8");
        Assert.True(report.ExitCode == 0, report.Err);

        var bad = CliRunner.Run("train", "--config", Path.Combine(fixture.Root, "missing.json"), "--out", outDir);
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("missing.json: recipe file not found", bad.Err);
        var cuda = CliRunner.Run("train", "--config", recipe.SourcePath!, "--out", fixture.NewOut("cuda"), "--device", "cuda");
        Assert.NotEqual(0, cuda.ExitCode);
        Assert.Contains("cuda", cuda.Err);
    }

    [Fact]
    public void TheFeatureCacheAndTheComputeDtypeCanBeTurnedOffForSpeedComparisons()
    {
        // An align stage with a frozen encoder uses the feature cache unless told not to; the recipe's bf16 can be overridden.
        var fixture = new TrainingFixture();
        var recipe = fixture.Recipe("""[ { "name": "a", "kind": "align", "trainable": "projector", "steps": 2, "batch_size": 2, "eval_every": 0, "sample_every": 0 } ]""");
        string cached = fixture.NewOut("cache-on"), uncached = fixture.NewOut("cache-off");
        var on = CliRunner.Run("train", "--config", recipe.SourcePath!, "--out", cached);
        Assert.True(on.ExitCode == 0, on.Err);
        var off = CliRunner.Run("train", "--config", recipe.SourcePath!, "--out", uncached, "--no-feature-cache", "--compute-dtype", "fp32");
        Assert.True(off.ExitCode == 0, off.Err);
        Assert.True(Directory.Exists(Path.Combine(cached, "feature-cache")));
        Assert.False(Directory.Exists(Path.Combine(uncached, "feature-cache")));
        Assert.Contains("compute fp32", File.ReadAllText(Path.Combine(uncached, "train.log")));
        var bad = CliRunner.Run("train", "--config", recipe.SourcePath!, "--out", fixture.NewOut("bad"), "--compute-dtype", "fp16");
        Assert.NotEqual(0, bad.ExitCode);
    }

    [Fact]
    public void SeedOverridesTheRecipesSeedAndResumingNeedsTheSameSeed()
    {
        var fixture = new TrainingFixture();
        var recipe = fixture.Recipe("""[ { "name": "t", "kind": "instruct", "trainable": "full", "steps": 2, "batch_size": 2, "eval_every": 0, "sample_every": 0, "save_every": 1 } ]""");
        string recipeSeed = fixture.NewOut("seed-recipe"), eight = fixture.NewOut("seed-8");
        Assert.Equal(0, CliRunner.Run("train", "--config", recipe.SourcePath!, "--out", recipeSeed).ExitCode);
        var r = CliRunner.Run("train", "--config", recipe.SourcePath!, "--out", eight, "--seed", "8");
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Contains("\"seed\": 8", File.ReadAllText(Path.Combine(eight, "recipe.json")));
        // Another seed draws other weights: the two models differ.
        var a = XrayVL.IO.SafeTensors.Load(Path.Combine(recipeSeed, "model", "model.safetensors"));
        var b = XrayVL.IO.SafeTensors.Load(Path.Combine(eight, "model", "model.safetensors"));
        Assert.Contains(a.Keys, k => !a[k].allclose(b[k], rtol: 0, atol: 0));
        var resumed = CliRunner.Run("train", "--config", recipe.SourcePath!, "--out", eight, "--resume");
        Assert.NotEqual(0, resumed.ExitCode);
        Assert.Contains("different recipe", resumed.Err);
        Assert.Contains("trained with seed 8", resumed.Err);
        Assert.Equal(0, CliRunner.Run("train", "--config", recipe.SourcePath!, "--out", eight, "--resume", "--seed", "8").ExitCode);
    }
}
