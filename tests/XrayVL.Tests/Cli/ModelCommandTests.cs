using System.Text.Json;
using XrayVL.Tests.Modeling;
using XrayVL.Tests.Support;
using XrayVL.Tests.Text;

namespace XrayVL.Tests.Cli;

/// <summary>report / chat / info on a tiny checkpoint folder written through the real save path.</summary>
[Collection(nameof(ProcessWideTorchState))]   // loading in bf16/int8/int4 sets torch's process-wide default dtype while the model is built
public class ModelCommandTests
{
    private static string Sample(string name = "2_1.png") => SharedData.File("iu-xray", "images", name);

    [Fact]
    public void ReportPrintsOneJsonObjectPerImage()
    {
        var r = CliRunner.Run("report", Sample(), Sample("861_1.png"), "--model", TinyCheckpoint.Directory, "--json", "--max-tokens", "12");
        Assert.True(r.ExitCode == 0, r.Err);
        var lines = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        using var first = JsonDocument.Parse(lines[0]);
        var root = first.RootElement;
        Assert.Equal(Sample(), root.GetProperty("image").GetString());
        Assert.Equal(JsonValueKind.String, root.GetProperty("report").ValueKind);
        Assert.Equal(Path.GetFileName(TinyCheckpoint.Directory), root.GetProperty("model").GetString());
        Assert.True(root.GetProperty("seconds").GetDouble() > 0);
        Assert.Equal(14, root.GetProperty("labels").EnumerateObject().Count());
        Assert.Contains("not a medical device", root.GetProperty("disclaimer").GetString());
    }

    [Fact]
    public void ReportRunsWithBf16AndInt8WeightsAndRefusesAnUnknownDtype()
    {
        foreach (string dtype in new[] { "bf16", "int8" })
        {
            var r = CliRunner.Run("report", Sample(), "--model", TinyCheckpoint.Directory, "--json", "--max-tokens", "8", "--dtype", dtype);
            Assert.True(r.ExitCode == 0, $"{dtype}: {r.Err}");
            using var doc = JsonDocument.Parse(r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Single());
            Assert.Equal(JsonValueKind.String, doc.RootElement.GetProperty("report").ValueKind);
        }
        var bad = CliRunner.Run("report", Sample(), "--model", TinyCheckpoint.Directory, "--dtype", "fp16");
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("fp16", bad.Err);
    }

    [Fact]
    public void ReportTextSaysItIsNotForDiagnosisInBothLanguagesAndBeamSearchRuns()
    {
        var en = CliRunner.Run("report", Sample(), "--model", TinyCheckpoint.Directory, "--max-tokens", "8", "--beams", "3");
        Assert.True(en.ExitCode == 0, en.Err);
        Assert.Contains("not for clinical diagnosis", en.Out);
        var zh = CliRunner.Run("report", Sample(), "--model", TinyCheckpoint.Directory, "--max-tokens", "8", "--lang", "zh");
        Assert.True(zh.ExitCode == 0, zh.Err);
        Assert.Contains("不是医疗器械", zh.Out);                 // the disclaimer speaks the report's language
        Assert.DoesNotContain("not a medical device", zh.Out);
    }

    [Fact]
    public async Task GreedyReportMatchesAChatSessionAskingTheSameRequest()
    {
        // The CLI adds nothing of its own to the prompt: the same request through the library gives the same text.
        var r = CliRunner.Run("report", Sample(), "--model", TinyCheckpoint.Directory, "--json", "--max-tokens", "16");
        string cliReport = JsonDocument.Parse(r.Out).RootElement.GetProperty("report").GetString()!;
        var loaded = XrayVL.IO.Checkpoint.Load(TinyCheckpoint.Directory);
        var session = new XrayVL.Inference.ChatSession(new XrayVL.Inference.InferencePipeline(loaded), "en");
        session.AddImage(XrayVL.Imaging.ImageFile.Load(Sample()));
        string direct = await session.AskAllAsync(XrayVL.Data.InstructionPhrases.ReportRequest("en"),
            XrayVL.Inference.InferencePipeline.Decoding(loaded.Tokenizer) with { MaxNewTokens = 16 }, TestContext.Current.CancellationToken);
        Assert.Equal(direct, cliReport);
    }

    [Fact]
    public void ReportJsonCarriesWhatTheReportApiReturns()
    {
        // One report service behind both: the CLI's record is /api/report's object plus the image path.
        var r = CliRunner.Run("report", Sample(), "--model", TinyCheckpoint.Directory, "--json", "--max-tokens", "12");
        Assert.True(r.ExitCode == 0, r.Err);
        var record = JsonDocument.Parse(r.Out).RootElement;
        var keys = record.EnumerateObject().Select(p => p.Name).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(["boxes", "disclaimer", "evidence", "finish_reason", "image", "labels", "language", "model", "report", "seconds"], keys);
        Assert.Equal(14, record.GetProperty("labels").EnumerateObject().Count());
        Assert.Equal(JsonValueKind.Array, record.GetProperty("boxes").ValueKind);
        Assert.Contains(record.GetProperty("finish_reason").GetString(), new[] { "stop", "length" });
    }

    [Fact]
    public void ChatKeepsTurnsAndHandlesSlashCommands()
    {
        string input = string.Join('\n', "what do you see?", "/image " + Sample("861_1.png"), "and now?", "/clear", "hello", "/exit", "never read");
        var r = CliRunner.RunWithInput(input, "chat", Sample(), "--model", TinyCheckpoint.Directory, "--max-tokens", "6");
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Equal(2, r.Out.Split("xrayvl> ").Length - 1);                  // two answers; "hello" after /clear has no image
        Assert.Contains("image added", r.Err);
        Assert.Contains("no image yet", r.Err);
        Assert.Contains("not for clinical diagnosis", r.Err);
    }

    [Fact]
    public void InfoPrintsArchitectureAndParameterCounts()
    {
        var r = CliRunner.Run("info", "--model", TinyCheckpoint.Directory, "--json");
        Assert.True(r.ExitCode == 0, r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        var p = doc.RootElement.GetProperty("parameters");
        long total = p.GetProperty("total").GetInt64();
        Assert.Equal(p.GetProperty("vision").GetInt64() + p.GetProperty("projector").GetInt64() + p.GetProperty("language_model").GetInt64(), total);
        long expectedLm = XrayVL.Modeling.LanguageModel.CountParameters(TinyCheckpoint.Config().TextConfig);
        Assert.Equal(expectedLm, p.GetProperty("language_model").GetInt64());
        Assert.Equal(TrainedTokenizer.VocabSize, doc.RootElement.GetProperty("tokenizer").GetProperty("vocab_size").GetInt32());

        var text = CliRunner.Run("info", "--model", TinyCheckpoint.Directory);
        Assert.Contains("language model", text.Out);
        Assert.Contains($"{total:N0}", text.Out);
    }
}

/// <summary>The shipped model (models/default) is what commands use without --model.</summary>
public class DefaultModelTests
{
    [Fact]
    public void ReportWithoutModelUsesTheShippedDefaultModel()
    {
        string? shipped = XrayVL.Cli.RepositoryFiles.Find("models/default/config.json");
        Assert.True(shipped != null, "models/default is part of the repository");
        var r = CliRunner.Run("report", SharedData.File("iu-xray", "images", "2_1.png"), "--json", "--max-tokens", "24");
        Assert.True(r.ExitCode == 0, r.Err);
        var root = JsonDocument.Parse(r.Out).RootElement;
        Assert.Equal("default", root.GetProperty("model").GetString());
        Assert.False(string.IsNullOrWhiteSpace(root.GetProperty("report").GetString()));
    }
}
