using System.Text.Json;
using TorchSharp;
using XrayVL.Data;
using XrayVL.Imaging;
using XrayVL.IO;
using XrayVL.Modeling;
using XrayVL.Tests.Support;
using XrayVL.Tests.Text;
using XrayVL.Tests.Training;
using XrayVL.Training;
using static TorchSharp.torch;

namespace XrayVL.Tests.Modeling;

/// <summary>
/// The finding hint (config finding_hint): one more image position holding the classifier's thresholded decisions.
/// In the trainer runs' collection because one test trains, and models are built in the process-wide default dtype.
/// </summary>
[Collection(nameof(TrainerRuns))]
public class FindingHintTests
{
    static FindingHintTests() => TestRuntime.Initialize();

    private static readonly TrainingFixture F = new();

    /// <summary>A 64-px ResNet (layer4 map 2×2: 4 tokens) with the hint, before a 2-layer decoder.</summary>
    private const string ModelConfig = """
        { "vision_config": { "model_type": "resnet", "image_size": 64, "num_channels": 1, "layers": [1, 1, 1, 1], "width": 16 },
          "text_config": { "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256 },
          "projector_type": "mlp2x_gelu", "finding_hint": true }
        """;

    private static VisionLanguageConfig Config(string json = ModelConfig)
    {
        var tokenizer = TrainedTokenizer.Instance.Tokenizer;
        return F.Recipe("""[ { "name": "v", "kind": "vision", "steps": 1 } ]""", model: $$"""  "model": { "config": {{json}} }  """)
            .Model.Config!.WithTokenizer(tokenizer.VocabSize, tokenizer.ImageId, tokenizer.EosId);
    }

    private static VisionLanguageModel Model(ulong seed = 3)
    {
        var model = new VisionLanguageModel(Config());
        using var generator = new torch.Generator(seed);
        model.InitializeWeights(generator);
        model.eval();
        return model;
    }

    /// <summary>A classifier head with weights drawn from U(±scale).</summary>
    private static FindingClassifier Head(VisionLanguageModel model, ulong seed, double scale)
    {
        var head = new FindingClassifier(model.VisionTower.PooledDim);
        using var _ = no_grad();
        using var generator = new torch.Generator(seed);
        foreach (var p in head.parameters()) p.uniform_(-scale, scale, generator);
        head.eval();
        return head;
    }

    private static Tensor Pixels() => Preprocess.Batch(new[] { 0, 5, 9 }.Select(i => TrainingFixture.Pattern(i, 64)),
        new PreprocessConfig { ImageSize = 64, Channels = 1 });

    [Fact]
    public void TheHintIsOneMorePositionAfterTheProjectorsTokens()
    {
        using var model = Model();
        using var _ = no_grad();
        using var pixels = Pixels();
        Assert.Equal(4 + 1, model.TokensPerImage);
        using var features = model.EncodeVision(pixels);                     // (3, 4, Dv)
        using var projected = model.ProjectFeatures(features);               // (3, 5, D)
        Assert.Equal(new long[] { 3, 5, 64 }, projected.shape);
        using var tokens = model.Projector.call(features);
        Assert.True(projected.narrow(1, 0, 4).allclose(tokens, 0, 0));
        using var hint = model.FindingHint!.call(features);
        Assert.True(projected.narrow(1, 4, 1).allclose(hint, 0, 0));
        using var encoded = model.EncodeImages(pixels);
        Assert.True(encoded.allclose(projected, 1e-6, 1e-6));
        // The classifier reads the token mean: what the vision stage trained it on (the encoder's pooled vector).
        using var pooled = model.VisionTower.Pooled(pixels);
        Assert.True(features.mean([1]).allclose(pooled, 1e-5, 1e-6));
    }

    [Fact]
    public void DecisionsAreTheClassifiersProbabilitiesAtThePerLabelThresholds()
    {
        using var model = Model();
        using var _ = no_grad();
        using var pixels = Pixels();
        using var head = Head(model, seed: 11, scale: 2);
        using var probabilities = head.Probabilities(model.VisionTower, pixels);   // (3, 14)
        var p0 = probabilities[0].data<float>().ToArray();

        // Every threshold just under image 0's probability: image 0 has every finding.
        model.FindingHint!.SetClassifier(head, p0.Select(p => p - 1e-4).Select(t => (double)t).ToList());
        using var features = model.EncodeVision(pixels);
        using var all = model.FindingHint.Decisions(features);
        Assert.Equal(Enumerable.Repeat(1f, 14), all[0].data<float>().ToArray());
        using var expected = probabilities.ge(tensor(p0.Select(p => p - 1e-4f).ToArray())).to(ScalarType.Float32);
        Assert.True(all.allclose(expected, 0, 0));

        // Raising one label's threshold above its probability turns that decision, and only the hint position, off.
        var raised = p0.Select(p => (double)p - 1e-4).ToArray();
        raised[Observations.Names.ToList().IndexOf("Pneumonia")] = p0[Observations.Names.ToList().IndexOf("Pneumonia")] + 1e-4;
        using var before = model.ProjectFeatures(features);
        model.FindingHint.SetClassifier(head, raised);
        using var fewer = model.FindingHint.Decisions(features);
        var row = fewer[0].data<float>().ToArray();
        Assert.Equal(0f, row[Observations.Names.ToList().IndexOf("Pneumonia")]);
        Assert.Equal(13f, row.Sum());
        using var after = model.ProjectFeatures(features);
        Assert.True(after.narrow(1, 0, 4).allclose(before.narrow(1, 0, 4), 0, 0));
        Assert.False(after.narrow(1, 4, 1)[0].allclose(before.narrow(1, 4, 1)[0], 0, 0));
    }

    [Fact]
    public void AModelWithTheHintSavesAndLoadsWithItsDecisions()
    {
        using var model = Model();
        using var head = Head(model, seed: 12, scale: 1);
        model.FindingHint!.SetClassifier(head, Enumerable.Range(0, 14).Select(i => 0.3 + i * 0.03).ToList());
        string dir = Path.Combine(F.Root, "hint-" + Guid.NewGuid().ToString("N")[..8]);
        Checkpoint.Save(dir, model, TrainedTokenizer.Instance.Tokenizer, new PreprocessConfig { ImageSize = 64, Channels = 1 });
        var loaded = Checkpoint.Load(dir);
        Assert.True(loaded.Model.Config.FindingHint);
        using var _ = no_grad();
        using var pixels = Pixels();
        using var a = model.EncodeImages(pixels);
        using var b = loaded.Model.EncodeImages(pixels);
        Assert.True(a.allclose(b, 0, 0));
        Assert.Contains("finding_hint.thresholds", SafeTensors.Load(Path.Combine(dir, "model.safetensors")).Keys);
    }

    [Fact]
    public void TheHintNeedsAResNetReadAtItsLastStage()
    {
        var vit = ModelConfig.Replace("""{ "model_type": "resnet", "image_size": 64, "num_channels": 1, "layers": [1, 1, 1, 1], "width": 16 }""",
            """{ "image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2 }""");
        Assert.Contains("finding_hint needs a resnet", Assert.Throws<XrayVLException>(() => Config(vit).Validate()).Message);
        var earlier = ModelConfig.Replace("\"finding_hint\": true", "\"finding_hint\": true, \"vision_feature_layer\": -2");
        Assert.Throws<XrayVLException>(() => Config(earlier).Validate());
    }

    [Fact]
    public void ARecipeWithTheHintMustStartWithTheVisionStage()
    {
        string model = $$"""  "model": { "config": {{ModelConfig}} }  """;
        var e = Assert.Throws<XrayVLException>(() => F.Recipe("""[ { "name": "t", "kind": "text", "steps": 1 } ]""", model: model));
        Assert.Contains("finding_hint needs a vision stage first", e.Message);
        var ok = F.Recipe("""[ { "name": "v", "kind": "vision", "steps": 1 }, { "name": "t", "kind": "text", "steps": 1 } ]""", model: model);
        Assert.True(ok.Model.Config!.FindingHint);
    }

    [Fact]
    public void TheHintExperimentsRecipeIsTheFourthDefaultWithTheHint()
    {
        string? configs = null;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null && configs is null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "configs", "default-hint.json"))) configs = Path.Combine(dir.FullName, "configs");
        Assert.NotNull(configs);
        var hint = TrainRecipe.Load(Path.Combine(configs, "default-hint.json"));
        var shipped = TrainRecipe.Load(Path.Combine(configs, "default-v4.json"));   // the recipe it was an experiment on
        Assert.True(hint.Model.Config!.FindingHint);
        Assert.False(shipped.Model.Config!.FindingHint);
        Assert.Equal(JsonSerializer.Serialize(shipped.Model.Config with { FindingHint = true }, Json.Options), JsonSerializer.Serialize(hint.Model.Config, Json.Options));
        Assert.Equal(JsonSerializer.Serialize(shipped.Stages, Json.Options), JsonSerializer.Serialize(hint.Stages, Json.Options));
    }

    [Fact]
    public void ThresholdsAreChosenPerLabelOnTheImagesThatStateIt()
    {
        int n = Observations.Names.Count, pneumonia = Observations.Names.ToList().IndexOf("Pneumonia");
        LabelledImage Image(float? pneumoniaTarget)
        {
            var targets = new float[n];
            var mask = new float[n];
            if (pneumoniaTarget is { } t) { targets[pneumonia] = t; mask[pneumonia] = 1; }
            return new LabelledImage("x.png", targets, mask);
        }
        float[] Row(float p) { var r = new float[n]; r[pneumonia] = p; return r; }
        // Two negatives at 0.6 and 0.7, two positives at 0.8 and 0.9; an unlabelled image at 0.99 must not count.
        var images = new[] { Image(0), Image(0), Image(1), Image(1), Image(null) };
        var rows = new[] { Row(0.6f), Row(0.7f), Row(0.8f), Row(0.9f), Row(0.75f) };
        var thresholds = Trainer.HintThresholds(images, rows);
        Assert.InRange(thresholds[pneumonia], 0.7, 0.8);
        // The unlabelled image at 0.75 would have moved the midpoint between 0.7 and 0.8 had it counted.
        Assert.Equal(0.75, thresholds[pneumonia], 6);
        Assert.All(thresholds.Where((_, o) => o != pneumonia), t => Assert.Equal(0.5, t));
    }

    [Fact]
    public void AProjectorStageTrainsTheHintsEmbeddingButNeverItsClassifier()
    {
        using var model = Model();
        using var head = Head(model, seed: 13, scale: 1);
        model.FindingHint!.SetClassifier(head, Enumerable.Repeat(0.5, 14).ToList());
        string init = Path.Combine(F.Root, "hint-init-" + Guid.NewGuid().ToString("N")[..8]);
        Checkpoint.Save(init, model, TrainedTokenizer.Instance.Tokenizer, new PreprocessConfig { ImageSize = 64, Channels = 1 });

        var recipe = F.Recipe("""
            [ { "name": "align", "kind": "align", "steps": 3, "batch_size": 2, "lr": 1e-2, "warmup_steps": 1, "eval_every": 0, "sample_every": 0 } ]
            """, model: $$"""  "model": { "init_from": {{JsonSerializer.Serialize(init)}} }  """, tokenizer: "{}");
        var result = Trainer.Run(recipe, new TrainOptions { OutDir = F.NewOut("hint-align") }, null, TestContext.Current.CancellationToken);

        var before = SafeTensors.Load(Path.Combine(init, "model.safetensors"));
        var after = SafeTensors.Load(Path.Combine(result.ModelDirectory, "model.safetensors"));
        foreach (string key in new[] { "finding_hint.classifier.weight", "finding_hint.classifier.bias", "finding_hint.thresholds" })
            Assert.True(before[key].allclose(after[key], 0, 0), $"{key} changed");
        Assert.False(before["finding_hint.embed.weight"].allclose(after["finding_hint.embed.weight"], 0, 0), "the hint's embedding did not train");
        Assert.False(before["multi_modal_projector.linear_1.weight"].allclose(after["multi_modal_projector.linear_1.weight"], 0, 0));
    }
}
