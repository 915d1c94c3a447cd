using System.Reflection;
using System.Text.Json;
using TorchSharp;
using XrayVL.Data;
using XrayVL.Evaluation;
using XrayVL.Imaging;
using XrayVL.IO;
using XrayVL.Modeling;
using XrayVL.Tests.Support;
using XrayVL.Tests.Text;
using XrayVL.Training;
using static TorchSharp.torch;

namespace XrayVL.Tests.Training;

/// <summary>The vision stage (encoder + 14-label head on the fixture's labelled images) and the pretrained-encoder start.
/// In the trainer runs' collection, so that these runs do not compete with the other trainer runs for the two cores.</summary>
[Collection(nameof(TrainerRuns))]
public class VisionStageTests
{
    static VisionStageTests() => TestRuntime.Initialize();

    private static readonly TrainingFixture F = new();
    private static CancellationToken Token => TestContext.Current.CancellationToken;

    /// <summary>
    /// A tiny ResNet (32 px, one block per stage, width 16) before the fixture's decoder. Not width 8: libtorch 2.10's CPU
    /// Conv2d backward returns NaN in the input gradient now and then at 8 channels (a 3×3 conv on (4, 8, 8, 8) inputs:
    /// 3 of 100 and 1 of 300 backward passes in two measurements on 2026-12-03; none of 300 at 16 or 64 channels, none
    /// of 40 at the real encoder's (4, 64, 56, 56)), which made this stage's loss NaN in about one run of three.
    /// </summary>
    private const string ResNetModel = """
        "model": { "config": {
          "vision_config": { "model_type": "resnet", "image_size": 32, "num_channels": 1, "layers": [1, 1, 1, 1], "width": 16 },
          "text_config": { "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256 },
          "projector_type": "mlp2x_gelu" } }
        """;

    [Fact]
    public void MaskedBceCountsOnlyStatedLabels()
    {
        using var logits = tensor(new float[] { 0, 2, -1, 3 }, [2, 2]);
        using var targets = tensor(new float[] { 1, 0, 0, 1 }, [2, 2]);
        using var mask = tensor(new float[] { 1, 0, 1, 0 }, [2, 2]);
        // Stated: (0 → 1): ln 2; (−1 → 0): ln(1 + e^−1).
        double expected = (Math.Log(2) + Math.Log(1 + Math.Exp(-1))) / 2;
        Assert.Equal(expected, Trainer.MaskedBce(logits, targets, mask).item<float>(), 5);
    }

    [Fact]
    public void VisionStageTrainsOnlyTheEncoderAndKeepsItsHeadForLabelEval()
    {
        var tokenizer = TrainedTokenizer.Instance.Tokenizer;
        var config = F.Recipe("""[ { "name": "t", "kind": "text", "steps": 1 } ]""", model: ResNetModel)
            .Model.Config!.WithTokenizer(tokenizer.VocabSize, tokenizer.ImageId, tokenizer.EosId);
        string init = Path.Combine(F.Root, "init-resnet-" + Guid.NewGuid().ToString("N")[..8]);
        using (var model = new VisionLanguageModel(config))
        {
            using var generator = new torch.Generator(5);
            model.InitializeWeights(generator);
            Checkpoint.Save(init, model, tokenizer, new PreprocessConfig { ImageSize = 32, Channels = 1 });
        }
        var recipe = F.Recipe("""
            [ { "name": "vision", "kind": "vision", "steps": 6, "batch_size": 4, "lr": 1e-2, "warmup_steps": 1, "eval_every": 3, "eval_batches": 1,
                "augment": { "max_rotation_degrees": 3 } } ]
            """, model: $$"""  "model": { "init_from": {{JsonSerializer.Serialize(init)}} }  """, tokenizer: "{}");
        string outDir = F.NewOut("vision");
        var events = new TrainingFixture.Events();
        var result = Trainer.Run(recipe, new TrainOptions { OutDir = outDir }, events, Token);

        var before = SafeTensors.Load(Path.Combine(init, "model.safetensors"));
        var after = SafeTensors.Load(Path.Combine(result.ModelDirectory, "model.safetensors"));
        Assert.Equal(before.Keys.Order(), after.Keys.Order());
        foreach (var (key, t) in before)
        {
            bool same = t.shape.SequenceEqual(after[key].shape) && t.to(ScalarType.Float64).allclose(after[key].to(ScalarType.Float64), 0, 0);
            if (key.StartsWith("vision_tower.") && key.EndsWith(".weight")) Assert.False(same, $"{key} unchanged");
            if (!key.StartsWith("vision_tower.")) Assert.True(same, $"{key} changed");
        }
        Assert.Equal(6, events.Steps.Count);
        Assert.All(events.Steps, s => Assert.True(double.IsFinite(s.Loss)));
        Assert.Contains(events.All, e => e is Evaluated);
        Assert.True(File.Exists(Path.Combine(result.ModelDirectory, FindingClassifier.FileName)));

        // The kept head gives per-label figures on the fixture's val split through the eval path.
        var loaded = Checkpoint.Load(result.ModelDirectory);
        using var head = FindingClassifier.Load(result.ModelDirectory, loaded.Model.VisionTower.PooledDim)!;
        var studies = Manifest.Read(Path.Combine(outDir, "data", "toy", "manifest.jsonl"));
        var labels = LabelEvaluation.Run(loaded.Model.VisionTower, head, loaded.Preprocess, studies, Splits.Val, cancel: Token);
        Assert.NotEmpty(labels.Figures);
        Assert.All(labels.Figures, f => Assert.InRange(f.Accuracy, 0, 1));
        // Every evaluated study's 14 probabilities come back, and the figures are computed from them.
        Assert.Equal(studies.Count(s => s.Split == Splits.Val && s.Labels is not null), labels.Studies.Count);
        Assert.All(labels.Studies, s => Assert.Equal(Observations.Names, s.Probabilities.Keys));
        var first = labels.Figures[0];
        var stated = studies.Where(s => s.Split == Splits.Val && s.Labels?[first.Label] is 0 or 1).Select(s => s.StudyId).ToHashSet();
        var scores = labels.Studies.Where(s => stated.Contains(s.StudyId)).Select(s => (double)s.Probabilities[first.Label]).ToList();
        var truth = studies.Where(s => stated.Contains(s.StudyId) && s.Split == Splits.Val).Select(s => s.Labels![first.Label] == 1).ToList();
        Assert.Equal(first.Auroc, LabelMetrics.Auroc(scores, truth));
    }

    [Fact]
    public void VisionInitConvertsTheRestoredResNet18IntoTheConfiguredEncoder()
    {
        string onnx = typeof(VisionStageTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "ResNet18Onnx").Value!;
        const string model = """
            "model": { "config": {
              "vision_config": { "model_type": "resnet", "image_size": 224, "num_channels": 1, "layers": [2, 2, 2, 1], "width": 64 },
              "text_config": { "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256 },
              "projector_type": "mlp2x_gelu" },
              "vision_init": "${resnet18_onnx}" }
            """;
        var recipe = F.Recipe("""[ { "name": "t", "kind": "text", "steps": 1, "batch_size": 2, "eval_every": 0, "sample_every": 0 } ]""", model: model);
        string outDir = F.NewOut("vision-init");
        var options = new TrainOptions { OutDir = outDir, PathVariables = new Dictionary<string, string> { ["resnet18_onnx"] = onnx } };
        var result = Trainer.Run(recipe, options, null, Token);

        var weights = SafeTensors.Load(Path.Combine(result.ModelDirectory, "model.safetensors"));
        using var converted = ResNetOnnx.Convert(OnnxGraph.Read(onnx), 1, [123, 117, 104], keepLayers: [2, 2, 2, 1]);
        foreach (string key in new[] { "conv1.weight", "layer4.0.downsample.1.running_var", "layer3.1.conv2.weight" })
            Assert.True(converted.Weights[key].allclose(weights["vision_tower." + key], 0, 0), key);
        var preprocess = ConfigFile.Read<PreprocessConfig>(Path.Combine(result.ModelDirectory, Checkpoint.PreprocessorFileName));
        Assert.InRange(preprocess.Mean[0] * 255, 100, 125);
        Assert.Equal(1 / 255f, preprocess.Std[0], 1e-7f);

        // An architecture the ONNX cannot give is refused by name.
        var wrong = F.Recipe("""[ { "name": "t", "kind": "text", "steps": 1 } ]""", model: model.Replace("\"width\": 64", "\"width\": 32"));
        var e = Assert.Throws<XrayVLException>(() => Trainer.Run(wrong, options with { OutDir = F.NewOut("wrong") }, null, Token));
        Assert.Contains("vision_init", e.Message);
    }

    [Fact]
    public void DefaultRecipeHasAVisionStageFirstFromTheImageNetResNet()
    {
        string? path = null;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null && path is null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "configs", "default.json"))) path = Path.Combine(dir.FullName, "configs", "default.json");
        var recipe = TrainRecipe.Load(path ?? throw new FileNotFoundException("configs/default.json not found above the test binaries"));
        Assert.Equal(StageRecipe.Vision, recipe.Stages[0].Kind);
        Assert.Equal("${resnet18_onnx}", recipe.Model.VisionInit);
        Assert.True(recipe.Data.Sources["kermany"].TemplatedReports);
        var bad = () => TrainRecipe.Load(WriteRecipe(File.ReadAllText(path).Replace("\"kind\": \"vision\", \"trainable\": \"vision\"", "\"kind\": \"vision\", \"trainable\": \"vision+projector\"")));
        Assert.Contains("trainable must be vision", Assert.Throws<XrayVLException>(bad).Message);
    }

    private static string WriteRecipe(string json)
    {
        string path = Path.Combine(F.Root, $"recipe-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, json);
        return path;
    }
}
