using System.Text.Json.Nodes;
using TorchSharp;
using XrayVL.Imaging;
using XrayVL.IO;
using XrayVL.Modeling;
using XrayVL.Tests.Cli;
using XrayVL.Tests.Support;
using XrayVL.Tests.Text;
using static TorchSharp.torch;

namespace XrayVL.Tests.IO;

/// <summary>
/// `xrayvl export --format hf-llava` writes what transformers' save_pretrained writes for LlavaForConditionalGeneration;
/// the exported folder reloads through the same HF-layout reader used for transformers' own folders with equal logits.
/// </summary>
public class HfExportTests
{
    private static string Fixture(string name) => Path.Combine(ReferenceOutputs.Root, "hf-transformers-4.40", "models", name);

    [Fact]
    public void ExportOfTransformersLlavaFolderWritesTheConfigSavePretrainedWroteAndReproducesItsOutputs()
    {
        string dir = TempDir.Create("xrayvl-export-llava");
        using (var model = Checkpoint.LoadModel(Fixture("llava")))
            HfExport.WriteLlava(model, dir, Fixture("llava"), null);

        // The same keys and values as transformers 4.40 wrote, except what the model does not keep (projection_dim
        // belongs to CLIP's unused projection head) and the version stamp.
        var expected = HfConfigs.ParseFile(Path.Combine(Fixture("llava"), "config.json"));
        var written = HfConfigs.ParseFile(Path.Combine(dir, "config.json"));
        ((JsonObject)expected["vision_config"]!).Remove("projection_dim");
        expected.Remove("transformers_version");
        written.Remove("transformers_version");
        Assert.True(JsonNode.DeepEquals(Normalized(expected), Normalized(written)), written.ToJsonString());
        // Keys sorted at every level, as save_pretrained writes them.
        Assert.Equal(written.Select(kv => kv.Key).Order(StringComparer.Ordinal), written.Select(kv => kv.Key));

        Assert.True(File.Exists(Path.Combine(dir, "vocab.json")) && File.Exists(Path.Combine(dir, "merges.txt")));
        Assert.Equal("CLIPImageProcessor", HfConfigs.ParseFile(Path.Combine(dir, "preprocessor_config.json"))["image_processor_type"]!.GetValue<string>());
        using var reloaded = Checkpoint.LoadModel(dir);
        HfTransformersFixtureTests.AssertMatchesLlavaRefs(reloaded);
    }

    /// <summary>Numbers as doubles, so 1e-05 written by Python and 1E-05 written here compare equal.</summary>
    private static JsonNode? Normalized(JsonNode? node) => node switch
    {
        JsonObject o => new JsonObject(o.Select(kv => KeyValuePair.Create(kv.Key, Normalized(kv.Value)))),
        JsonArray a => new JsonArray([.. a.Select(Normalized)]),
        JsonValue v when v.GetValueKind() == System.Text.Json.JsonValueKind.Number => JsonValue.Create(double.Parse(v.ToJsonString(), System.Globalization.CultureInfo.InvariantCulture)),
        _ => node?.DeepClone(),
    };

    [Theory]
    [InlineData("mlp2x_gelu")]
    [InlineData("linear")]
    public void ExportedProjectModelReloadsWithEqualLogits(string projector)
    {
        var tokenizer = TrainedTokenizer.Instance.Tokenizer;
        var baseConfig = TinyCheckpoint.Config();
        var config = baseConfig with { VisionConfig = baseConfig.VisionConfig with { NumChannels = 3 }, ProjectorType = projector };
        string source = TempDir.Create("xrayvl-export-src"), target = TempDir.Create("xrayvl-export-out");
        using var original = TinyVisionLanguageModels.Create(config, seed: 5);
        Checkpoint.Save(source, original, tokenizer, PreprocessConfig.Clip(32));

        var result = CliRunner.Run("export", "--format", "hf-llava", source, target);
        Assert.True(result.ExitCode == 0, result.Err);
        var written = HfConfigs.ParseFile(Path.Combine(target, "config.json"));
        Assert.Equal("llava", written["model_type"]!.GetValue<string>());
        Assert.Equal(projector == "linear" ? "linear" : "gelu", written["projector_hidden_act"]!.GetValue<string>());

        var reloaded = Checkpoint.Load(target);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var pixels = rand(1, 3, 32, 32);
        long[] ids = [5, .. Enumerable.Repeat((long)config.ImageTokenIndex, original.TokensPerImage), 17, 42, 99];
        var before = original.Forward(tensor(ids).unsqueeze(0), original.EncodeImages(pixels));
        var after = reloaded.Model.Forward(tensor(ids).unsqueeze(0), reloaded.Model.EncodeImages(pixels));
        Assert.True(ReferenceOutputs.RelativeError(after, before) <= 1e-6);
        Assert.Equal(tokenizer.Encode("心影增大 cardiomegaly"), reloaded.Tokenizer.Encode("心影增大 cardiomegaly"));
        Assert.Equal(PreprocessConfig.Clip(32).Mean, reloaded.Preprocess.Mean);
        reloaded.Model.Dispose();
    }

    [Theory]
    [InlineData(1, "mlp2x_gelu", "clip_vision_model", "1-channel images")]
    [InlineData(3, "merge4", "clip_vision_model", "merges adjacent image tokens")]
    [InlineData(3, "mlp2x_gelu", "resnet", "is a ResNet")]
    public void WhatTransformersLlavaCannotExpressIsRefusedInOneLine(int channels, string projector, string vision, string expected)
    {
        var baseConfig = TinyCheckpoint.Config();
        var config = baseConfig with
        {
            VisionConfig = baseConfig.VisionConfig with { NumChannels = channels, ModelType = vision },
            ProjectorType = projector,
        };
        string source = TempDir.Create("xrayvl-export-src"), target = TempDir.Create("xrayvl-export-out");
        using (var model = TinyVisionLanguageModels.Create(config))
            Checkpoint.Save(source, model, TrainedTokenizer.Instance.Tokenizer,
                new PreprocessConfig { ImageSize = 32, Channels = channels, Mean = [0.5f], Std = [0.25f] });
        var result = CliRunner.Run("export", "--format", "hf-llava", source, Path.Combine(target, "out"));
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains(expected, result.Err);
        Assert.Single(result.Err.Trim().Split('\n'));
        Assert.False(Directory.Exists(Path.Combine(target, "out")));
    }
}
