using System.Text.Json;
using TorchSharp;
using XrayVL.Imaging;
using XrayVL.IO;
using XrayVL.Modeling;
using XrayVL.Tests.Support;
using XrayVL.Tests.Text;
using XrayVL.Training;
using static TorchSharp.torch;

namespace XrayVL.Tests.Training;

/// <summary>Trainer runs on the tiny fixture; one collection, so that the runs do not compete for the two cores.</summary>
[Collection(nameof(TrainerRuns))]
public class TrainerTests
{
    private static readonly Lazy<TrainingFixture> Shared = new(() => new TrainingFixture());
    private static TrainingFixture F => Shared.Value;
    private static CancellationToken Token => TestContext.Current.CancellationToken;

    /// <summary>A model folder with the fixture's architecture and fresh seeded weights, for init_from.</summary>
    private static string InitModel()
    {
        var tokenizer = TrainedTokenizer.Instance.Tokenizer;
        var recipe = F.Recipe("""[ { "name": "t", "kind": "text", "steps": 1 } ]""");
        var config = recipe.Model.Config!.WithTokenizer(tokenizer.VocabSize, tokenizer.ImageId, tokenizer.EosId);
        using var model = new VisionLanguageModel(config);
        using var generator = new torch.Generator(123);
        model.InitializeWeights(generator);
        string dir = Path.Combine(F.Root, "init-" + Guid.NewGuid().ToString("N")[..8]);
        Checkpoint.Save(dir, model, tokenizer, new PreprocessConfig { ImageSize = 32, Channels = 1 });
        return dir;
    }

    private static string InitFrom(string dir) => $$"""
        "model": { "init_from": {{JsonSerializer.Serialize(dir)}} }
        """;

    private static Dictionary<string, Tensor> Weights(string dir, string file = "model.safetensors") => SafeTensors.Load(Path.Combine(dir, file));

    private static List<MetricsLine> Metrics(string outDir) =>
        File.ReadAllLines(Path.Combine(outDir, TrainingLog.MetricsFile)).Select(l => JsonSerializer.Deserialize<MetricsLine>(l, Json.Line)!).ToList();

    [Fact]
    public async Task TextStageMemorisesTheReportsAndWritesItsLogsAndAUsableModel()
    {
        var recipe = F.Recipe("""
            [ { "name": "text", "kind": "text", "steps": 40, "batch_size": 5, "lr": 3e-3, "warmup_steps": 3,
                "eval_every": 20, "sample_every": 40, "samples": 1, "sample_max_new_tokens": 12 } ]
            """);
        string outDir = F.NewOut();
        var events = new TrainingFixture.Events();
        var result = Trainer.Run(recipe, new TrainOptions { OutDir = outDir }, events, Token);

        var steps = events.Steps;
        Assert.Equal(Enumerable.Range(1, 40).Select(i => (long)i), steps.Select(s => s.GlobalStep));
        Assert.True(steps[^1].Loss < 0.5 * steps[0].Loss, $"loss {steps[0].Loss:F3} → {steps[^1].Loss:F3}");
        Assert.All(steps, s => Assert.True(s.TokensPerSecond > 0 && s.Eta >= TimeSpan.Zero));

        var metrics = Metrics(outDir);
        Assert.Equal(40, metrics.Count);
        Assert.Equal([20L, 40L], metrics.Where(m => m.ValLoss is not null).Select(m => m.Step));
        Assert.Equal(steps.Select(s => s.Loss), metrics.Select(m => m.Loss));
        Assert.Equal(0x89, File.ReadAllBytes(Path.Combine(outDir, TrainingLog.LossChartFile))[0]);     // PNG signature
        var sample = JsonDocument.Parse(File.ReadLines(Path.Combine(outDir, TrainingLog.SamplesFile)).First()).RootElement;
        Assert.Contains(sample.GetProperty("reference").GetString(), TrainingFixture.Reports.Skip(10));  // a validation report
        Assert.Contains(events.All, e => e is Evaluated { IsBest: true });

        // The final model is a plain folder the inference side loads; best/ holds the best validation step.
        var loaded = Checkpoint.Load(result.ModelDirectory);
        Assert.Equal(ScalarType.Float32, loaded.Model.LanguageModel.DType);
        var chat = new XrayVL.Inference.ChatSession(new XrayVL.Inference.InferencePipeline(loaded));
        chat.AddImage(ImageFile.Load(F.Images[0]));
        string answer = await chat.AskAllAsync(XrayVL.Data.InstructionPhrases.ReportRequest("en"),
            new XrayVL.Inference.GenerationOptions { MaxNewTokens = 8 }, Token);
        Assert.False(string.IsNullOrWhiteSpace(answer));
        Assert.NotNull(result.BestDirectory);
        Assert.True(File.Exists(Path.Combine(result.BestDirectory!, Checkpoint.WeightsFileName)));
        Assert.Equal(["step-40"], Directory.GetDirectories(Path.Combine(outDir, Trainer.CheckpointsFolder)).Select(Path.GetFileName));
    }

    [Fact]
    public void AlignStageTrainsOnlyTheProjectorAndEncodesEachImageOnce()
    {
        string init = InitModel();
        var recipe = F.Recipe("""
            [ { "name": "align", "kind": "align", "epochs": 3, "batch_size": 4, "lr": 1e-3, "warmup_steps": 1, "eval_every": 2, "sample_every": 0 } ]
            """, model: InitFrom(init), tokenizer: "{}");
        string outDir = F.NewOut();
        var events = new TrainingFixture.Events();
        var result = Trainer.Run(recipe, new TrainOptions { OutDir = outDir }, events, Token);

        var before = Weights(init);
        var after = Weights(result.ModelDirectory);
        Assert.Equal(before.Keys.Order(), after.Keys.Order());
        foreach (var (key, tensor) in before)
        {
            bool same = Same(tensor, after[key]);
            Assert.True(key.StartsWith("multi_modal_projector.") ? !same : same, $"{key} {(same ? "unchanged" : "changed")}");
        }
        // Feature cache: 3 epochs and validation, but each of the 12 images (10 train, 2 val) went through the encoder once.
        var summary = Assert.Single(result.Stages);
        Assert.Equal(12, summary.EncodedImages);
        Assert.True(summary.CachedFeatureImages > 12, $"{summary.CachedFeatureImages} cache hits");
        Assert.True(Assert.IsType<StageStarted>(events.All.First(e => e is StageStarted)).FeatureCache);
    }

    [Fact]
    public void LoraStageChangesOnlyTheAdaptersAndTheFinalModelHasThemMerged()
    {
        string init = InitModel();
        var recipe = F.Recipe("""
            [ { "name": "lora", "kind": "instruct", "trainable": "lora", "steps": 4, "batch_size": 4, "lr": 5e-3, "warmup_steps": 0,
                "lora": { "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"] }, "eval_every": 0, "sample_every": 0 } ]
            """, model: InitFrom(init), tokenizer: "{}");
        string outDir = F.NewOut();
        var result = Trainer.Run(recipe, new TrainOptions { OutDir = outDir }, null, Token);

        var before = Weights(init);
        string checkpoint = Path.Combine(outDir, Trainer.CheckpointsFolder, "step-4");
        var baseWeights = Weights(checkpoint);
        Assert.All(before, kv => Assert.True(Same(kv.Value, baseWeights[kv.Key]), $"{kv.Key} changed"));   // base untouched, bitwise
        var adapter = Weights(Path.Combine(checkpoint, TrainingCheckpoint.AdapterFolderName), Lora.WeightsFileName);
        Assert.Equal(8, adapter.Count);                                     // 2 layers × (q, v) × (A, B)
        Assert.All(adapter.Where(kv => kv.Key.Contains("lora_B")), kv => Assert.True(kv.Value.abs().max().item<float>() > 0));

        // Final model: W + B·A·(alpha / r) in the adapted layers, everything else as before.
        var merged = Weights(result.ModelDirectory);
        foreach (var (key, tensor) in before)
        {
            string? layer = key.StartsWith("language_model.") && (key.Contains(".q_proj.weight") || key.Contains(".v_proj.weight"))
                ? key["language_model.".Length..^".weight".Length] : null;
            if (layer is null)
            {
                Assert.True(Same(tensor, merged[key]), $"{key} changed");
                continue;
            }
            var a = adapter[$"{Lora.PeftKeyPrefix}{layer}.lora_A.weight"];
            var b = adapter[$"{Lora.PeftKeyPrefix}{layer}.lora_B.weight"];
            var expected = tensor + b.matmul(a) * 2.0;
            Assert.True((expected - merged[key]).abs().max().item<float>() < 1e-6, key);
            Assert.False(Same(tensor, merged[key]), $"{key} unchanged");
        }
    }

    [Fact]
    public void AccumulatedMicroBatchesGiveTheGradientOfOneBatch()
    {
        var tokenizer = TrainedTokenizer.Instance.Tokenizer;
        var config = TinyVisionLanguageModels.Config().WithTokenizer(tokenizer.VocabSize, tokenizer.ImageId, tokenizer.EosId);
        using var model = new VisionLanguageModel(config);
        using (var generator = new torch.Generator(5)) model.InitializeWeights(generator);
        model.train();
        var random = new Random(9);
        // Four samples of different lengths (different padding per grouping), one image each.
        var samples = Enumerable.Range(0, 4).Select(i =>
        {
            int length = 6 + 5 * i;
            int[] text = Enumerable.Range(0, length).Select(_ => random.Next(200, 3000)).ToArray();
            int[] ids = [text[0], .. Enumerable.Repeat(tokenizer.ImageId, model.TokensPerImage), .. text[1..]];
            int[] labels = ids.Select((id, k) => id == tokenizer.ImageId || k < 3 ? Constants.IgnoreIndex : id).ToArray();
            return new TrainSample(ids, labels, [F.Images[i]]);
        }).ToList();

        Dictionary<string, Tensor> Gradients(int batchSize)
        {
            foreach (var p in model.parameters()) p.grad = null;
            using var compute = new ComputeCopy(model, ScalarType.Float32, lora: null);
            using var images = new ImageInputs(new PreprocessConfig { ImageSize = 32, Channels = 1 }, null, null, visionTrains: true);
            var batches = samples.Chunk(batchSize).Select(c => Batch.Collate(c, tokenizer.PadId, torch.CPU)).ToList();
            Trainer.ForwardBackward(compute, batches, images, _ => null);
            foreach (var b in batches) b.Dispose();
            // Parameters the forward pass never uses (the encoder's post_layernorm serves Pooled only) have no gradient.
            return model.named_parameters().Where(p => p.parameter.grad is not null).ToDictionary(p => p.name, p => p.parameter.grad!.clone());
        }

        var whole = Gradients(4);
        Assert.True(whole.Count > 40, $"{whole.Count} gradients");
        foreach (int size in new[] { 2, 1 })
        {
            var accumulated = Gradients(size);
            Assert.Equal(whole.Keys.Order(), accumulated.Keys.Order());
            foreach (var (name, g) in whole)
            {
                double diff = (g - accumulated[name]).abs().max().item<float>();
                Assert.True(diff < 1e-5, $"{name}: batches of {size} differ by {diff}");
            }
        }
        Assert.True(whole["vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"].abs().max().item<float>() > 0);
    }

    [Fact]
    public void CancelledRunSavesACheckpointAndResumesOnTheUninterruptedTrajectory()
    {
        // bf16 compute with float32 masters, a text stage then a LoRA + projector stage, checkpoints every 2 steps.
        var recipe = F.Recipe("""
            [ { "name": "text", "kind": "text", "steps": 6, "batch_size": 3, "lr": 2e-3, "warmup_steps": 2, "save_every": 2, "eval_every": 3, "sample_every": 0 },
              { "name": "instruct", "kind": "instruct", "steps": 6, "batch_size": 3, "grad_accum": 2, "lr": 2e-3, "warmup_steps": 1,
                "lora": { "r": 4, "lora_alpha": 8, "target_modules": "all-linear" }, "save_every": 2, "eval_every": 3, "sample_every": 0 } ]
            """, dtype: "bf16");
        string straight = F.NewOut("straight"), interrupted = F.NewOut("interrupted");
        var a = Trainer.Run(recipe, new TrainOptions { OutDir = straight }, null, Token);

        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Token);
        var first = new TrainingFixture.Events(cancel, cancelAtStep: 9);
        Assert.ThrowsAny<OperationCanceledException>(() => Trainer.Run(recipe, new TrainOptions { OutDir = interrupted }, first, cancel.Token));
        var saved = first.All.OfType<CheckpointSaved>().Last();
        Assert.Equal((9L, "cancelled"), (saved.GlobalStep, saved.Reason));
        Assert.True(Directory.Exists(Path.Combine(saved.Path, TrainingCheckpoint.AdapterFolderName)));

        var second = new TrainingFixture.Events();
        var b = Trainer.Run(recipe, new TrainOptions { OutDir = interrupted, Resume = true }, second, Token);
        Assert.Equal(10L, second.Steps[0].GlobalStep);

        var expected = Metrics(straight);
        var actual = Metrics(interrupted);
        Assert.Equal(expected.Select(m => m.Step), actual.Select(m => m.Step));
        for (int i = 0; i < expected.Count; i++)
        {
            Assert.True(Math.Abs(expected[i].Loss - actual[i].Loss) <= 1e-6, $"step {expected[i].Step}: {expected[i].Loss} vs {actual[i].Loss}");
            Assert.Equal(expected[i].ValLoss is null, actual[i].ValLoss is null);
            if (expected[i].ValLoss is { } v) Assert.True(Math.Abs(v - actual[i].ValLoss!.Value) <= 1e-6);
        }
        var wa = Weights(a.ModelDirectory);
        var wb = Weights(b.ModelDirectory);
        Assert.All(wa, kv => Assert.True(Same(kv.Value, wb[kv.Key]), $"{kv.Key} differs"));
    }

    [Fact]
    public void DamagedCheckpointsAreSkippedOrRefusedAndMismatchedOnesRefused()
    {
        const string stages = """[ { "name": "text", "kind": "text", "steps": 4, "batch_size": 2, "save_every": 2, "keep_last": 2, "eval_every": 0, "sample_every": 0 } ]""";
        var recipe = F.Recipe(stages);
        string outDir = F.NewOut();
        Trainer.Run(recipe, new TrainOptions { OutDir = outDir }, null, Token);
        string checkpoints = Path.Combine(outDir, Trainer.CheckpointsFolder);

        // Without --resume an occupied folder is refused.
        Assert.Contains("--resume", Assert.Throws<XrayVLException>(() => Trainer.Run(recipe, new TrainOptions { OutDir = outDir }, null, Token)).Message);

        // A truncated optimizer file in the newest checkpoint: skipped, the run resumes from step 2.
        Truncate(Path.Combine(checkpoints, "step-4", TrainingCheckpoint.OptimizerFileName));
        var events = new TrainingFixture.Events();
        Trainer.Run(recipe, new TrainOptions { OutDir = outDir, Resume = true }, events, Token);
        Assert.Contains(events.All.OfType<TrainNote>(), n => n.Message.Contains("step-4") && n.Message.Contains("truncated"));
        Assert.Equal([3L, 4L], events.Steps.Select(s => s.GlobalStep));

        // Every checkpoint damaged: refused with the reason.
        foreach (var (_, dir) in TrainingCheckpoint.List(checkpoints)) Truncate(Path.Combine(dir, Checkpoint.WeightsFileName));
        var e = Assert.Throws<XrayVLException>(() => Trainer.Run(recipe, new TrainOptions { OutDir = outDir, Resume = true }, null, Token));
        Assert.Contains("no usable checkpoint", e.Message);
        Assert.Contains("truncated", e.Message);

        // --resume into a folder without checkpoints (new or mistyped) is refused rather than starting over.
        string fresh = F.NewOut();
        Assert.StartsWith($"--resume: {fresh} holds no checkpoint to resume",
            Assert.Throws<XrayVLException>(() => Trainer.Run(recipe, new TrainOptions { OutDir = fresh, Resume = true }, null, Token)).Message);

        // Another recipe (a different learning rate) cannot resume this run.
        string other = F.NewOut();
        Trainer.Run(recipe, new TrainOptions { OutDir = other }, null, Token);
        var changed = F.Recipe(stages.Replace("\"batch_size\": 2", "\"batch_size\": 2, \"lr\": 1e-3"));
        var mismatch = Assert.Throws<CheckpointMismatchException>(() => Trainer.Run(changed, new TrainOptions { OutDir = other, Resume = true }, null, Token));
        Assert.Contains("different recipe", mismatch.Message);
    }

    [Fact]
    public void TrainsItsOwnTokenizerAndPlainTextWithBf16ComputeOverFloat32Weights()
    {
        var recipe = F.Recipe("""
            [ { "name": "text", "kind": "text", "text_format": "plain", "steps": 3, "batch_size": 4, "eval_every": 0, "sample_every": 3, "samples": 1, "sample_max_new_tokens": 4 } ]
            """, dtype: "bf16", tokenizer: """{ "vocab_size": 300, "min_frequency": 1 }""");
        string outDir = F.NewOut();
        var events = new TrainingFixture.Events();
        var result = Trainer.Run(recipe, new TrainOptions { OutDir = outDir }, events, Token);
        var tokenizer = XrayVL.Text.XrayTokenizer.Load(Path.Combine(outDir, Trainer.TokenizerFolder));
        Assert.Equal(300, tokenizer.VocabSize);
        var loaded = Checkpoint.Load(result.ModelDirectory);
        Assert.Equal(300, loaded.Config.TextConfig.VocabSize);
        Assert.Equal(tokenizer.ImageId, loaded.Config.ImageTokenIndex);
        Assert.All(SafeTensors.ReadHeader(Path.Combine(result.ModelDirectory, Checkpoint.WeightsFileName)).Tensors, t => Assert.Equal("F32", t.DType));
        var sample = Assert.Single(Assert.Single(events.All.OfType<SamplesGenerated>()).Samples);
        Assert.Contains(sample.Reference, TrainingFixture.Reports);
        Assert.StartsWith(sample.Prompt, sample.Reference);              // plain text: the report's first words are the prompt
    }

    [Fact]
    public void DevicesOtherThanAnAvailableOneAreClearErrors()
    {
        Assert.Equal(DeviceType.CPU, Trainer.ResolveDevice("cpu").type);
        if (!torch.cuda.is_available())
            Assert.Contains("--device cpu", Assert.Throws<XrayVLException>(() => Trainer.ResolveDevice("cuda")).Message);
        Assert.Contains("not supported", Assert.Throws<XrayVLException>(() => Trainer.ResolveDevice("tpu")).Message);
    }

    /// <summary>Same shape and every element equal (bitwise for the finite values checkpoints hold).</summary>
    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    private static void Truncate(string path)
    {
        long length = new FileInfo(path).Length;
        using var stream = new FileStream(path, FileMode.Open);
        stream.SetLength(length / 2);
    }
}

[CollectionDefinition(nameof(TrainerRuns))]
public sealed class TrainerRuns;
