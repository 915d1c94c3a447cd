using TorchSharp;
using XrayVL.IO;
using XrayVL.Modeling;
using XrayVL.Tests.Modeling;
using XrayVL.Tests.Support;
using XrayVL.Tests.Text;
using static TorchSharp.torch;

namespace XrayVL.Tests.Cli;

/// <summary>
/// `xrayvl import xrayglm` on the fixture's SAT folder as it is. The fixture ships no ice_text.model (see its README), so
/// the tests pass the ChatGLM-layout SentencePiece model of <see cref="ChatGlmTokenizerTests"/> with an id offset that
/// puts its [MASK] [gMASK] … &lt;sop&gt; &lt;eop&gt; on the real ids 130000..130005.
/// </summary>
public sealed class ImportXrayGlmTests
{
    /// <summary>[MASK] is piece 435 of the test model; the real [MASK] is 130000.</summary>
    private const int Offset = 130000 - 435;

    private static string Tokenizer(TempDir dir)
    {
        string path = Path.Combine(dir.Path, "ice_text.model");
        File.WriteAllBytes(path, ChatGlmTokenizerTests.BuildModel());
        return path;
    }

    private static Tensor Reference(string caseName, string name) => GlmFixture.Reference(caseName, name);

    private static long[] Ids(string caseName, string name) => Reference(caseName, name).data<long>().ToArray();

    [Theory]
    [InlineData("merge")]
    [InlineData("adapter")]
    public void ImportedFolderLoadsAndAnswersAsXrayGlm(string lora)
    {
        using var dir = new TempDir();
        string output = Path.Combine(dir.Path, "xrayglm");
        var r = CliRunner.Run("import", "xrayglm", GlmFixture.Seed("checkpoint"), output, "--tokenizer", Tokenizer(dir),
            "--num-image-tokens", Offset.ToString(), "--lora", lora);
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Contains("LoRA in 4 layers", r.Out);
        Assert.Equal(lora == "adapter", Directory.Exists(Path.Combine(output, VisualGlmFolder.AdapterFolder)));
        Assert.True(VisualGlmFolder.IsVisualGlm(output));

        using var loaded = VisualGlmFolder.Load(output);
        using var scope = torch.NewDisposeScope();
        Assert.Equal(130001L, loaded.Tokenizer.GmaskId);
        foreach (string caseName in new[] { "chat_1turn", "chat_2turn" })
        {
            long[] ids = Ids(caseName, "input_ids");
            int preImage = (int)Ids(caseName, "pre_image")[0];
            Assert.Equal(Ids(caseName, "chat_gen_ids"), loaded.Model.Generate(ids, Reference("vision", "pixels"), preImage, 16, repetitionPenalty: 1.2));
        }
        using var noGrad = torch.no_grad();
        var image = loaded.Model.ImageEncoder.call(Reference("vision", "pixels"));
        Assert.True(ReferenceOutputs.RelativeError(image, Reference("vision", "image_embeds")) < 1e-4);
    }

    [Fact]
    public void AdapterModeKeepsXrayGlmOriginalWeights()
    {
        using var dir = new TempDir();
        string output = Path.Combine(dir.Path, "xrayglm");
        var result = VisualGlmFolder.Import(GlmFixture.Seed("checkpoint"), output,
            new XrayGlmImportOptions { Lora = SatLoraHandling.Adapter, TokenizerPath = Tokenizer(dir), NumImageTokens = Offset });
        Assert.Equal(4, result.LoraLayers.Count);
        string weights = Path.Combine(output, Checkpoint.WeightsFileName);
        var original = SafeTensors.Load(weights, ["language_model.transformer.layers.14.attention.query_key_value.weight"]).Values.Single();
        Assert.Equal(Reference("lora_merge", "L14_query_key_value_original_weight").data<float>().ToArray(), original.to(ScalarType.Float32).data<float>().ToArray());
        var adapter = SafeTensors.ReadHeader(Path.Combine(output, VisualGlmFolder.AdapterFolder, Lora.WeightsFileName));
        Assert.Equal(8, adapter.Tensors.Count);
        Assert.Equal(30, Lora.ReadConfig(Path.Combine(output, VisualGlmFolder.AdapterFolder)).R);
    }

    [Fact]
    public void MissingOrMismatchedTokenizerIsAOneLineError()
    {
        using var dir = new TempDir();
        string output = Path.Combine(dir.Path, "out");
        var missing = CliRunner.Run("import", "xrayglm", GlmFixture.Seed("checkpoint"), output);
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("ice_text.model", missing.Err);
        Assert.Single(missing.Err.Trim().Split('\n'));
        var wrongOffset = CliRunner.Run("import", "xrayglm", GlmFixture.Seed("checkpoint"), output, "--tokenizer", Tokenizer(dir));
        Assert.Equal(1, wrongOffset.ExitCode);
        Assert.Contains("num_image_tokens", wrongOffset.Err);
        Assert.False(Directory.Exists(output));
        var notSat = CliRunner.Run("import", "xrayglm", dir.Path, output);
        Assert.Equal(1, notSat.ExitCode);
        Assert.Contains("not a SAT checkpoint folder", notSat.Err);
    }
}
