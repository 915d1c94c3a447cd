using System.Text.Json.Nodes;
using TorchSharp;
using XrayVL.IO;
using XrayVL.Modeling;
using XrayVL.Tests.Support;
using XrayVL.Tests.Text;
using static TorchSharp.torch;

namespace XrayVL.Tests.IO;

public class CheckpointTests
{
    private static Tensor Logits(VisionLanguageModel model, long[] ids, Tensor pixels)
    {
        using var noGrad = no_grad();
        return model.Forward(tensor(ids).unsqueeze(0), model.EncodeImages(pixels));
    }

    private static long[] PromptWithImage(VisionLanguageModel model) =>
        [5, .. Enumerable.Repeat((long)model.Config.ImageTokenIndex, model.TokensPerImage), 17, 42, 99];

    [Fact]
    public void SavedModelLoadsWithIdenticalLogitsTokenizerAndPreprocessing()
    {
        string dir = TempDir.Create("xrayvl-ckpt");
        using var original = TinyVisionLanguageModels.Create(TinyCheckpoint.Config(), seed: 11);
        Checkpoint.Save(dir, original, TrainedTokenizer.Instance.Tokenizer, new XrayVL.Imaging.PreprocessConfig { ImageSize = 32 });
        foreach (string f in new[] { "config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json", "preprocessor_config.json" })
            Assert.True(File.Exists(Path.Combine(dir, f)), f);

        var loaded = Checkpoint.Load(dir);
        using var scope = NewDisposeScope();
        var pixels = randn(1, 1, 32, 32);
        var ids = PromptWithImage(original);
        Assert.Equal(0.0, TinyLanguageModels.MaxAbsDiff(Logits(original, ids, pixels), Logits(loaded.Model, ids, pixels)));
        Assert.Equal(TrainedTokenizer.Instance.Tokenizer.Encode("心影增大 cardiomegaly"), loaded.Tokenizer.Encode("心影增大 cardiomegaly"));
        Assert.Equal(32, loaded.Preprocess.ImageSize);
        Assert.Equal(System.Text.Json.JsonSerializer.Serialize(original.Config, XrayVL.Json.Options),
            System.Text.Json.JsonSerializer.Serialize(loaded.Config, XrayVL.Json.Options));
    }

    [Fact]
    public void SavingOverAnExistingCheckpointReplacesItWhole()
    {
        string dir = TempDir.Create("xrayvl-ckpt-replace");
        TinyCheckpoint.Write(dir, seed: 1);
        File.WriteAllText(Path.Combine(dir, "stale.txt"), "left from before");
        TinyCheckpoint.Write(dir, seed: 2);
        Assert.False(File.Exists(Path.Combine(dir, "stale.txt")));
        // No temporary (.saving-*) or displaced (.old-*) folder is left beside it.
        Assert.DoesNotContain(Directory.GetFileSystemEntries(Path.GetDirectoryName(dir)!), p => Path.GetFileName(p).StartsWith(Path.GetFileName(dir) + "."));
    }

    [Fact]
    public void TruncatedWeightsAreRefusedNamingTheFolder()
    {
        string dir = TinyCheckpoint.Write(TempDir.Create("xrayvl-ckpt-trunc"));
        string weights = Path.Combine(dir, Checkpoint.WeightsFileName);
        var bytes = File.ReadAllBytes(weights);
        File.WriteAllBytes(weights, bytes[..(bytes.Length / 2)]);
        var e = Assert.Throws<XrayVLException>(() => Checkpoint.Load(dir));
        Assert.Contains(Checkpoint.WeightsFileName, e.Message);
    }

    [Fact]
    public void ShapeMismatchAndWrongConfigAreClearErrors()
    {
        string dir = TinyCheckpoint.Write(TempDir.Create("xrayvl-ckpt-mismatch"));
        string configPath = Path.Combine(dir, Checkpoint.ConfigFileName);
        var config = JsonNode.Parse(File.ReadAllText(configPath))!;
        config["text_config"]!["intermediate_size"] = 96;
        File.WriteAllText(configPath, config.ToJsonString());
        var e = Assert.Throws<XrayVLException>(() => Checkpoint.Load(dir));
        Assert.Contains("mlp.gate_proj.weight: checkpoint (128, 64) vs model (96, 64)", e.Message);
        Assert.StartsWith(dir, e.Message);

        config["projector_type"] = "qformer";
        File.WriteAllText(configPath, config.ToJsonString());
        e = Assert.Throws<XrayVLException>(() => Checkpoint.Load(dir));
        Assert.Contains("projector_type 'qformer' is not supported", e.Message);

        Assert.Throws<XrayVLException>(() => Checkpoint.Load(Path.Combine(dir, "nowhere")));
    }

    [Theory]
    [InlineData("llama", false)]
    [InlineData("qwen2", true)]
    public void HfLanguageModelFolderLoads(string modelType, bool tiedWithStoredHead)
    {
        // A folder as Hugging Face writes a LlamaForCausalLM / Qwen2ForCausalLM: config.json with HF's keys + model.safetensors.
        string dir = TempDir.Create("xrayvl-hf-lm");
        var config = TinyLanguageModels.Config(modelType, tied: tiedWithStoredHead);
        using var reference = TinyLanguageModels.Create(config, seed: 5);
        var state = reference.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value);
        if (tiedWithStoredHead) state["lm_head.weight"] = state["model.embed_tokens.weight"];   // some tied files keep a copy
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), state);
        var json = JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(config, XrayVL.Json.Options))!;
        json["architectures"] = new JsonArray(modelType == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM");
        json["torch_dtype"] = "float32";
        json["transformers_version"] = "4.45.0";
        File.WriteAllText(Path.Combine(dir, "config.json"), json.ToJsonString());

        using var loaded = Checkpoint.LoadLanguageModel(dir);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = TinyLanguageModels.Ids(TinyLanguageModels.RandomIds(12, config.VocabSize, seed: 2));
        Assert.Equal(0.0, TinyLanguageModels.MaxAbsDiff(reference.Forward(reference.Embed(ids)), loaded.Forward(loaded.Embed(ids))));
    }

    [Fact]
    public void HfClipFolderLoadsItsVisionTowerAndIgnoresTheTextTower()
    {
        // A CLIPModel folder: model_type "clip" with a nested vision_config; weights include text-tower keys and the
        // position_ids buffer older checkpoints stored.
        string dir = TempDir.Create("xrayvl-hf-clip");
        var visionConfig = TinyVisionLanguageModels.Config().VisionConfig with { NumChannels = 3 };
        using var reference = VisionEncoder.Create(visionConfig);
        reference.eval();
        var state = reference.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value);
        state["text_model.embeddings.token_embedding.weight"] = randn(10, 4);
        state["vision_model.embeddings.position_ids"] = arange(17).unsqueeze(0);
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), state);
        var vision = JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(visionConfig, XrayVL.Json.Options))!;
        var root = new JsonObject { ["model_type"] = "clip", ["vision_config"] = vision, ["text_config"] = new JsonObject() };
        File.WriteAllText(Path.Combine(dir, "config.json"), root.ToJsonString());

        using var loaded = Checkpoint.LoadVisionTower(dir);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var pixels = randn(2, 3, 32, 32);
        Assert.Equal(0.0, TinyLanguageModels.MaxAbsDiff(reference.call(pixels), loaded.call(pixels)));

        state.Remove("vision_model.post_layernorm.weight");
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), state);
        var e = Assert.Throws<XrayVLException>(() => Checkpoint.LoadVisionTower(dir));
        Assert.Contains("vision_model.post_layernorm.weight", e.Message);
    }

    [Fact]
    public void ShardedWeightsLoadThroughTheIndex()
    {
        string dir = TinyCheckpoint.Write(TempDir.Create("xrayvl-ckpt-shards"));
        var all = SafeTensors.Load(Path.Combine(dir, Checkpoint.WeightsFileName));
        var names = all.Keys.Order().ToList();
        var first = names.Take(names.Count / 2).ToHashSet();
        SafeTensors.Save(Path.Combine(dir, "model-00001-of-00002.safetensors"), all.Where(kv => first.Contains(kv.Key)).ToDictionary());
        SafeTensors.Save(Path.Combine(dir, "model-00002-of-00002.safetensors"), all.Where(kv => !first.Contains(kv.Key)).ToDictionary());
        var map = new JsonObject();
        foreach (string n in names) map[n] = first.Contains(n) ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
        File.WriteAllText(Path.Combine(dir, Checkpoint.WeightsIndexFileName), new JsonObject { ["weight_map"] = map }.ToJsonString());
        File.Delete(Path.Combine(dir, Checkpoint.WeightsFileName));

        var loaded = Checkpoint.Load(dir);
        var reloaded = loaded.Model.state_dict();
        Assert.All(names, n => Assert.True(reloaded[n].eq(all[n]).all().item<bool>(), n));

        File.Delete(Path.Combine(dir, "model-00002-of-00002.safetensors"));
        Assert.Contains("missing", Assert.Throws<XrayVLException>(() => Checkpoint.Load(dir)).Message);
    }
}
