using System.Text.Json;
using XrayVL.IO;
using XrayVL.Tests.Cli;
using XrayVL.Tests.Support;

namespace XrayVL.Tests.Seeds;

/// <summary>`xrayvl import` on the seed fixtures, and the front ends on what it writes.</summary>
public sealed class SeedImportCommandTests
{
    private static void AssertOneLineError(CliRunner.Result r, string expected)
    {
        Assert.NotEqual(0, r.ExitCode);
        Assert.True(r.Err.Contains(expected), $"stderr: {r.Err}\nstdout: {r.Out}");
        Assert.DoesNotContain("   at ", r.Err);
        Assert.Single(r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public void ImportFromTheYamlThenReportAndChatWithTheSeedsPromptFormats()
    {
        using var temp = new TempDir("xrayvl-import");
        string xraygpt = temp.File("xraygpt"), med = temp.File("med");
        var r = CliRunner.Run("import", "xraygpt", "--config", SeedFixture.Seed("xraygpt", "xraygpt_tiny.yaml"),
            "--eva-heads", "4", "--qformer-heads", "4", "--out", xraygpt);
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Contains("prompt format xraygpt", r.Out);
        Assert.Contains("ignored", r.Err);                                   // BERT's text embeddings and FFN, position_ids, ...
        foreach (string file in new[] { "config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json", "prompt_format.json", "preprocessor_config.json" })
            Assert.True(File.Exists(Path.Combine(xraygpt, file)), file);

        // The same import from explicit files (no yaml).
        r = CliRunner.Run("import", "minigpt-med", "--eva", SeedFixture.Seed("minigpt_med", "eva_vit_g.pth"),
            "--llama", SeedFixture.Seed("minigpt_med", "llama-2-7b-chat-hf"), "--ckpt", SeedFixture.Seed("minigpt_med", "checkpoint_stage3.pth"),
            "--image-size", "112", "--eva-heads", "4", "--out", med);
        Assert.True(r.ExitCode == 0, r.Err);

        string image = SeedFixture.Seed("xraygpt", "test_image.png");
        foreach (string model in new[] { xraygpt, med })
        {
            var report = CliRunner.Run("report", image, "--model", model, "--json", "--max-tokens", "6");
            Assert.True(report.ExitCode == 0, report.Err);
            using var json = JsonDocument.Parse(report.Out.Trim().Split('\n')[0]);
            Assert.Equal(Path.GetFileName(model), json.RootElement.GetProperty("model").GetString());
            Assert.DoesNotContain("###", json.RootElement.GetProperty("report").GetString());
            var chat = CliRunner.RunWithInput("[vqa] Is there any abnormality?\nAnd the heart?\n/exit\n",
                "chat", image, "--model", model, "--max-tokens", "4");
            Assert.True(chat.ExitCode == 0, chat.Err);
        }
    }

    [Fact]
    public void BadInputsAreOneLineErrors()
    {
        using var temp = new TempDir("xrayvl-import");
        string yaml = SeedFixture.Seed("xraygpt", "xraygpt_tiny.yaml");
        // EVA's head count is not in its weights; the tiny fixture is not ViT-g.
        AssertOneLineError(CliRunner.Run("import", "xraygpt", "--config", yaml, "--out", temp.File("m")), "--eva-heads");
        // The yaml names another family.
        AssertOneLineError(CliRunner.Run("import", "minigpt-med", "--config", yaml, "--out", temp.File("m")), "use `xrayvl import xraygpt`");
        // A key that could change the model is refused, not ignored.
        string odd = temp.Write("odd.yaml", File.ReadAllText(yaml).Replace("  image_size: 56", "  image_size: 56\n  vit_model: eva_clip_l"));
        AssertOneLineError(CliRunner.Run("import", "xraygpt", "--config", odd, "--out", temp.File("m")), "model.vit_model is not understood");
        AssertOneLineError(CliRunner.Run("import", "xraygpt", "--config", temp.Write("bad.yaml", "model: [1, 2"), "--out", temp.File("m")), "not valid YAML");
        // Without a yaml every file is needed.
        AssertOneLineError(CliRunner.Run("import", "xraygpt", "--eva", SeedFixture.Seed("xraygpt", "eva_vit_g.pth"), "--out", temp.File("m")), "--qformer FILE");
        AssertOneLineError(CliRunner.Run("import", "minigpt-med", "--eva", "/no/eva.pth", "--llama", SeedFixture.Seed("minigpt_med", "llama-2-7b-chat-hf"),
            "--ckpt", SeedFixture.Seed("minigpt_med", "checkpoint_stage3.pth"), "--out", temp.File("m")), "/no/eva.pth: file not found");
        Assert.False(Directory.Exists(temp.File("m")));
    }

    [Fact]
    public void LoraOfTheWrongRankAndUnknownFamiliesAreRefused()
    {
        using var temp = new TempDir("xrayvl-import");
        var request = new SeedImportRequest
        {
            Family = "minigpt_med",
            Eva = SeedFixture.Seed("minigpt_med", "eva_vit_g.pth"),
            Llama = SeedFixture.Seed("minigpt_med", "llama-2-7b-chat-hf"),
            Checkpoint = SeedFixture.Seed("minigpt_med", "checkpoint_stage3.pth"),
            ImageSize = 112,
            EvaHeads = 4,
            LoraR = 8,
        };
        var e = Assert.Throws<XrayVLException>(() => SeedImport.Import(request, temp.File("m")));
        Assert.Contains("has rank 64, the config says lora_r 8", e.Message);
        // 112 px with 14 px patches is an 8×8 grid; 70 px would be 5×5 = 25 tokens, which 4-token groups cannot divide.
        e = Assert.Throws<XrayVLException>(() => SeedImport.Import(request with { LoraR = 64, ImageSize = 70 }, temp.File("m")));
        Assert.Contains("70", e.Message);
        Assert.Throws<XrayVLException>(() => SeedImport.Spec("llava"));
        Assert.False(Directory.Exists(temp.File("m")));
    }

    [Fact]
    public void ATruncatedShardStopsTheImportAndLeavesNoFolder()
    {
        using var temp = new TempDir("xrayvl-import");
        string source = SeedFixture.Seed("minigpt_med", "llama-2-7b-chat-hf"), llama = temp.File("llama");
        Directory.CreateDirectory(llama);
        foreach (string file in Directory.GetFiles(source)) File.Copy(file, Path.Combine(llama, Path.GetFileName(file)));
        string shard = Path.Combine(llama, "pytorch_model-00002-of-00002.bin");
        byte[] whole = File.ReadAllBytes(shard);
        File.WriteAllBytes(shard, whole[..(whole.Length - 200)]);
        var r = CliRunner.Run("import", "minigpt-med", "--eva", SeedFixture.Seed("minigpt_med", "eva_vit_g.pth"), "--llama", llama,
            "--ckpt", SeedFixture.Seed("minigpt_med", "checkpoint_stage3.pth"), "--image-size", "112", "--eva-heads", "4", "--out", temp.File("m"));
        AssertOneLineError(r, "pytorch_model-00002-of-00002.bin");
        Assert.False(Directory.Exists(temp.File("m")));
        Assert.Empty(Directory.GetDirectories(temp.Path, "m.*"));            // no temporary folder left behind
    }
}
