using XrayVL.Tests.Support;

namespace XrayVL.Tests.Cli;

/// <summary>Bad input gives one clear line and a non-zero exit, never a stack trace.</summary>
public class ErrorTests
{
    private static void AssertOneLineError(CliRunner.Result r, string expected)
    {
        Assert.NotEqual(0, r.ExitCode);
        Assert.True(r.Err.Contains(expected), $"stderr: {r.Err}\nstdout: {r.Out}");
        Assert.DoesNotContain("   at ", r.Err);                              // no stack frames
        Assert.Single(r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public void MissingModelFolderSaysHowToGetOne()
    {
        var r = CliRunner.Run("report", SharedData.File("iu-xray", "images", "2_1.png"), "--model", "/nonexistent/model");
        AssertOneLineError(r, "/nonexistent/model: model folder not found");
    }

    [Fact]
    public void MissingImageIsNamed() =>
        AssertOneLineError(CliRunner.Run("report", "/no/such/xray.png", "--model", TinyCheckpoint.Directory), "/no/such/xray.png");

    [Fact]
    public void TrainingRunFolderGivenAsModelPointsToItsModel()
    {
        string run = TempDir.Create("xrayvl-run");
        TinyCheckpoint.Write(Path.Combine(run, "model"));
        string model = Path.Combine(run, "model");
        AssertOneLineError(CliRunner.Run("report", SharedData.File("iu-xray", "images", "2_1.png"), "--model", run),
            $"{run}: a training run folder, not a model folder; its model is {model} (pass --model {model})");
    }

    [Fact]
    public void EmptyImagePathIsAOneLineUserError() =>
        AssertOneLineError(CliRunner.Run("report", "", "--model", TinyCheckpoint.Directory), "error: image path is empty");

    [Fact]
    public void UnsupportedFormatIsRefusedByContentNotExtension()
    {
        string fake = Path.Combine(Path.GetTempPath(), $"notes-{Guid.NewGuid():N}.png");
        File.WriteAllText(fake, "this is a text file, not an X-ray");
        AssertOneLineError(CliRunner.Run("report", fake, "--model", TinyCheckpoint.Directory), "not a supported image");
        File.Delete(fake);
    }

    [Fact]
    public void WrongConfigIsAOneLineError()
    {
        string dir = TinyCheckpoint.Write(TempDir.Create("xrayvl-badcfg"));
        File.WriteAllText(Path.Combine(dir, "config.json"), "{\"model_type\": \"xrayvl\", \"text_config\": {\"num_attention_heads\": 3, \"num_key_value_heads\": 2}}");
        AssertOneLineError(CliRunner.Run("info", "--model", dir), "must be a multiple of num_key_value_heads");
    }

    [Fact]
    public void ShapeMismatchOnLoadIsAOneLineError()
    {
        string dir = TinyCheckpoint.Write(TempDir.Create("xrayvl-badshape"));
        string path = Path.Combine(dir, "config.json");
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"intermediate_size\": 128", "\"intermediate_size\": 64"));
        AssertOneLineError(CliRunner.Run("info", "--model", dir), "checkpoint (128, 64) vs model (64, 64)");
    }

    [Fact]
    public void UnknownOptionIsAParseErrorNotACrash()
    {
        var r = CliRunner.Run("report", "--no-such-option");
        Assert.NotEqual(0, r.ExitCode);
        Assert.DoesNotContain("   at ", r.Err + r.Out);
    }

    [Fact]
    public void AMistypedOptionValueIsOneLineNotTheHelpPage()
    {
        // System.CommandLine words the error in the UI culture's language: only its value and the project's hint are checked.
        var r = CliRunner.Run("report", "x.png", "--lang", "fr", "--model", TinyCheckpoint.Directory);
        AssertOneLineError(r, "'fr'");
        Assert.EndsWith("(see `xrayvl report --help`)", r.Err.Trim());
    }

    [Fact]
    public void AMissingModelFolderSaysWhereModelsComeFrom() =>
        AssertOneLineError(CliRunner.Run("info", "--model", "/nonexistent/model"), "the shipped one is models/default");

    [Theory]
    [InlineData("--threads", "0")]
    [InlineData("--threads", "-1")]
    [InlineData("--repeats", "0")]
    public void BenchCountsBelowOneAreRefusedBeforeTorchSeesThem(string option, string value)
    {
        // libtorch aborts the whole process (a native trace, exit 134) when asked for 0 threads.
        AssertOneLineError(CliRunner.Run("bench", "--language-model-only", option, value), $"{option} must be at least 1 (got {value})");
        AssertOneLineError(CliRunner.Run("bench", "--model", TinyCheckpoint.Directory, option, value), $"{option} must be at least 1 (got {value})");
    }
}
