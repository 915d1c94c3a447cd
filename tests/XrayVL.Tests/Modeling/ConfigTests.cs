using XrayVL.Modeling;

namespace XrayVL.Tests.Modeling;

public class ConfigTests
{
    [Fact]
    public void HfQwen2ConfigReadsWithSnakeCaseKeys()
    {
        // The fields of Qwen/Qwen2-0.5B's published config.json (unused HF keys are ignored).
        const string json = """
        {"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151643,
         "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02, "intermediate_size": 4864,
         "max_position_embeddings": 131072, "max_window_layers": 24, "model_type": "qwen2", "num_attention_heads": 14,
         "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
         "sliding_window": 131072, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_cache": true,
         "use_sliding_window": false, "vocab_size": 151936}
        """;
        string path = Path.Combine(Path.GetTempPath(), $"cfg-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, json);
        var c = ConfigFile.Read<LanguageModelConfig>(path);
        Assert.Equal(("qwen2", 896, 4864, 24, 14, 2, 64), (c.ModelType, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadSize));
        Assert.Equal((true, false), c.ProjectionBiases);
        Assert.True(c.TieWordEmbeddings);
        Assert.Equal(1e6, c.RopeTheta);

        ConfigFile.Write(path, c);
        Assert.Equal(c with { Architectures = null }, ConfigFile.Read<LanguageModelConfig>(path) with { Architectures = null });
        Assert.Contains("\"num_key_value_heads\": 2", File.ReadAllText(path));
        File.Delete(path);
    }

    [Theory]
    [InlineData("{\"model_type\": \"llama\", \"num_attention_heads\": 5, \"num_key_value_heads\": 2}", "num_attention_heads (5) must be a multiple of num_key_value_heads (2)")]
    [InlineData("{\"model_type\": \"gpt2\"}", "model_type 'gpt2' is not supported")]
    [InlineData("{\"model_type\": \"llama\", \"hidden_act\": \"relu\"}", "hidden_act 'relu' is not supported")]
    [InlineData("{\"hidden_size\": ", "not a valid config")]
    public void InvalidConfigsAreRefusedWithTheFileNamed(string json, string expected)
    {
        string path = Path.Combine(Path.GetTempPath(), $"bad-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, json);
        var e = Assert.Throws<XrayVLException>(() => ConfigFile.Read<LanguageModelConfig>(path));
        Assert.Contains(expected, e.Message);
        Assert.StartsWith(path, e.Message);
        File.Delete(path);
    }

    [Fact]
    public void ComposedConfigValidatesItsParts()
    {
        var ok = new VisionLanguageConfig { ImageTokenIndex = 5 }.Validate();
        Assert.Equal("mlp2x_gelu", ok.ProjectorType);
        Assert.Throws<XrayVLException>(() => (ok with { ProjectorType = "qformer" }).Validate());
        Assert.Throws<XrayVLException>(() => (ok with { VisionConfig = ok.VisionConfig with { PatchSize = 15 } }).Validate());
        Assert.Throws<XrayVLException>(() => (ok with { VisionConfig = ok.VisionConfig with { ModelType = "resnet", Block = "wide" } }).Validate());
        Assert.Throws<XrayVLException>(() => (ok with { ImageTokenIndex = 1_000_000 }).Validate());
    }
}
