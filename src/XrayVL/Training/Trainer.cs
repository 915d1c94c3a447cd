using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using TorchSharp;
using TorchSharp.Modules;
using XrayVL.Data;
using XrayVL.Imaging;
using XrayVL.Inference;
using XrayVL.IO;
using XrayVL.Modeling;
using XrayVL.Text;
using static TorchSharp.torch;

namespace XrayVL.Training;

/// <summary>How to run a recipe (the CLI's options of `xrayvl train`).</summary>
public sealed record TrainOptions
{
    /// <summary>The output folder: data manifests, tokenizer, checkpoints, best and final model, logs.</summary>
    public required string OutDir { get; init; }
    /// <summary>Continue from the newest usable checkpoint in OUT/checkpoints (a fresh start when there is none).</summary>
    public bool Resume { get; init; }
    /// <summary>"cpu" or "cuda".</summary>
    public string Device { get; init; } = "cpu";
    /// <summary>What <c>${shared}</c> stands for in the recipe's paths (else XRAYVL_SHARED_DATA, else the recipe's data.shared).</summary>
    public string? SharedDataDir { get; init; }
    /// <summary>Where frozen-encoder features are cached; null: OUT/feature-cache.</summary>
    public string? FeatureCacheDir { get; init; }
    /// <summary>False computes features every batch even when the encoder is frozen (to measure what the cache saves).</summary>
    public bool UseFeatureCache { get; init; } = true;
    /// <summary>Stop each stage after this many steps (smoke runs and speed measurements); the schedule keeps the recipe's length.</summary>
    public long? MaxStepsPerStage { get; init; }
    /// <summary>Names a recipe path may use as <c>${name}</c> besides <c>${shared}</c> (the CLI gives resnet18_onnx).</summary>
    public IReadOnlyDictionary<string, string> PathVariables { get; init; } = new Dictionary<string, string>();
}

/// <summary>
/// Runs a <see cref="TrainRecipe"/>: builds the data, the tokenizer and the model, then trains the stages in order with
/// AdamW (weight decay on weight matrices only), linear warmup + cosine decay (<see cref="Schedule"/>), gradient
/// accumulation, gradient clipping and bf16 compute over float32 master weights (<see cref="ComputeCopy"/>).
/// The loop in <see cref="RunStage"/> is the whole algorithm, step by step; everything it calls is plain code.
/// </summary>
/// <remarks>
/// Output folder: data/NAME/manifest.jsonl, tokenizer/, feature-cache/, checkpoints/step-N/ (resumable), best/ (the
/// stage's lowest validation loss so far, a plain model folder), model/ (the final model, LoRA merged: what
/// `xrayvl report --model OUT/model` loads), metrics.jsonl, samples.jsonl, train.log, loss.png, recipe.json.
/// Cancellation (Ctrl-C) saves a checkpoint after the current step and then throws <see cref="OperationCanceledException"/>.
/// </remarks>
public sealed partial class Trainer
{
    public const string CheckpointsFolder = "checkpoints";
    public const string BestFolder = "best";
    public const string ModelFolder = "model";
    public const string TokenizerFolder = "tokenizer";
    public const string DataFolder = "data";
    public const string FeatureCacheFolder = "feature-cache";

    private readonly TrainRecipe recipe;
    private readonly TrainOptions options;
    private readonly IProgress<TrainEvent>? progress;
    private readonly string outDir;
    private readonly Device device;
    private readonly ScalarType computeDtype;
    private readonly Stopwatch clock = Stopwatch.StartNew();
    private TrainingLog log = null!;
    private XrayTokenizer tokenizer = null!;
    private PreprocessConfig preprocess = null!;
    private VisionLanguageModel master = null!;
    private double elapsedBefore;        // seconds spent by earlier sessions of a resumed run
    private long globalStep;
    private long tokensSeen;

    private Trainer(TrainRecipe recipe, TrainOptions options, IProgress<TrainEvent>? progress)
    {
        this.recipe = recipe.Validate();
        this.options = options;
        this.progress = progress;
        outDir = Path.GetFullPath(options.OutDir);
        device = ResolveDevice(options.Device);
        computeDtype = recipe.Dtype == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32;
    }

    /// <summary>Trains every stage of <paramref name="recipe"/> (from the newest checkpoint when resuming) and writes OUT/model.</summary>
    public static TrainResult Run(TrainRecipe recipe, TrainOptions options, IProgress<TrainEvent>? progress = null,
        CancellationToken cancellationToken = default) =>
        new Trainer(recipe, options, progress).RunAll(cancellationToken);

    /// <summary>"cpu" or "cuda" (when libtorch sees a CUDA device); anything else is a clear error.</summary>
    public static Device ResolveDevice(string name) => name switch
    {
        "cpu" => torch.CPU,
        "cuda" => torch.cuda.is_available()
            ? torch.CUDA
            : throw new XrayVLException("--device cuda: libtorch sees no CUDA device (this build references the CPU-only libtorch " +
                                        "package; a CUDA build needs the libtorch-cuda package and an NVIDIA driver); use --device cpu"),
        _ => throw new XrayVLException($"device '{name}' is not supported (cpu, cuda)"),
    };

    private TrainResult RunAll(CancellationToken cancellationToken)
    {
        string checkpoints = Path.Combine(outDir, CheckpointsFolder);
        string fingerprint = recipe.Fingerprint;

        // 1. Where to start: a fresh folder, or the newest usable checkpoint of this recipe.
        (string Dir, TrainerState State)? resume = null;
        if (options.Resume) resume = FindResumePoint(checkpoints, fingerprint);
        else if (TrainingCheckpoint.List(checkpoints).Count > 0)
            throw new XrayVLException($"{outDir}: holds checkpoints of an earlier run; pass --resume to continue it or choose another --out folder");
        Directory.CreateDirectory(outDir);
        log = new TrainingLog(outDir, resume?.State.GlobalStep ?? 0);
        AtomicFile.WriteAllText(Path.Combine(outDir, "recipe.json"), JsonSerializer.Serialize(recipe, Json.Options) + "\n");
        if (resume is { } r)
        {
            globalStep = r.State.GlobalStep;
            tokensSeen = r.State.TokensSeen;
            elapsedBefore = r.State.ElapsedSeconds;
            Note($"resuming from {r.Dir}: stage {r.State.StageName} step {r.State.StageStep}/{r.State.StageSteps} (global step {globalStep})");
        }

        // 2. Data: sources → studies → each stage's conversations or texts.
        string? shared = recipe.SharedDirectory(options.SharedDataDir);
        var sources = TrainingData.BuildSources(recipe, shared, Path.Combine(outDir, DataFolder), Note);
        studiesBySource = sources;
        var items = recipe.Stages.Select(s => TrainingData.Items(s, recipe, sources)).ToList();

        // 3. Tokenizer and model: from the checkpoint when resuming, else from init_from, else trained and built here.
        var config = BuildTokenizerAndModel(resume?.Dir, items, sources, shared);
        if (resume is { } from)
        {
            TrainingCheckpoint.LoadModel(from.Dir, master, config);
            if (from.State.StageCompleted) Lora.MergeAndUnload(master.LanguageModel);
        }
        Note($"model: {master.parameters().Sum(p => p.numel()):N0} parameters, {master.TokensPerImage} positions per image; " +
             $"compute {recipe.Dtype} on {device.type.ToString().ToLowerInvariant()}, {torch.get_num_threads()} threads");

        // 4. The stages, in order.
        int firstStage = resume is { } s ? (s.State.StageCompleted ? s.State.StageIndex + 1 : s.State.StageIndex) : 0;
        if (firstStage >= recipe.Stages.Count) Note("every stage is done; writing the final model again");
        var summaries = new List<StageSummary>();
        for (int i = firstStage; i < recipe.Stages.Count; i++)
        {
            var resumeHere = resume is { } rs && rs.State.StageIndex == i && !rs.State.StageCompleted ? resume : null;
            summaries.Add(RunStage(i, items[i], resumeHere, cancellationToken));
        }

        // 5. The final model: a plain folder (adapters were merged at the end of their stage).
        string modelDir = Path.Combine(outDir, ModelFolder);
        Checkpoint.Save(modelDir, master.Config, TrainingCheckpoint.ExportWeights(master), tokenizer, preprocess,
            new Dictionary<string, string> { ["global_step"] = globalStep.ToString(CultureInfo.InvariantCulture) }, SaveClassifier);
        log.DrawLossChart();
        Note($"final model written to {modelDir}");
        string best = Path.Combine(outDir, BestFolder);
        return new TrainResult(modelDir, Directory.Exists(best) ? best : null, globalStep, summaries);
    }

    /// <summary>
    /// Trains one stage. Steps are numbered from 1; <paramref name="resume"/> (a checkpoint inside this stage) restores
    /// the weights' optimizer moments and continues after its step. Everything random is a function of (seed, stage, step).
    /// </summary>
    private StageSummary RunStage(int stageIndex, StageItems items, (string Dir, TrainerState State)? resume, CancellationToken cancellationToken)
    {
        var stage = recipe.Stages[stageIndex];
        int seed = recipe.Seed;
        if (stage.Kind == StageRecipe.Vision) return RunVisionStage(stageIndex, resume, cancellationToken);

        // 1. Data: tokenised samples, the length of the stage in steps, the fixed validation subset.
        int maxSeqLen = stage.MaxSeqLen ?? master.Config.TextConfig.MaxPositionEmbeddings;
        if (maxSeqLen > master.Config.TextConfig.MaxPositionEmbeddings)
            throw new XrayVLException($"stage {stage.Name}: max_seq_len {maxSeqLen} exceeds the model's max_position_embeddings {master.Config.TextConfig.MaxPositionEmbeddings}");
        var data = TrainingData.Tokenize(items, stage, tokenizer, master.TokensPerImage, maxSeqLen, Seeds.Mix(seed, stageIndex, 0x5A));
        foreach (string n in data.Notes) Note($"stage {stage.Name}: {n}");
        if (data.Train.Count == 0) throw new XrayVLException($"stage {stage.Name}: no training samples (check its data sources and splits)");
        int perStep = stage.BatchSize * stage.GradAccum;
        long totalSteps = stage.Steps ?? Math.Max(1, (long)Math.Ceiling(stage.Epochs!.Value * data.Train.Count / perStep));
        long endStep = options.MaxStepsPerStage is { } cap ? Math.Min(cap, totalSteps) : totalSteps;
        long startStep = resume?.State.StageStep ?? 0;
        long stageStartGlobal = globalStep - startStep;
        var order = new SampleOrder(data.Train.Count, seed, stageIndex);
        var valRandom = new Random(Seeds.Mix(seed, stageIndex, 0x7A1));
        var val = data.Val.OrderBy(_ => valRandom.Next()).Take(stage.EvalBatches * stage.BatchSize).ToList();

        // 2. What trains: everything frozen, then LoRA adapters (fresh, or the checkpoint's) and the named parts.
        var parts = stage.Parts;
        var lora = stage.EffectiveLora;
        var optimized = SelectTrainable(parts, lora, stageIndex);
        bool visionTrains = parts.HasFlag(TrainableParts.Vision);

        // 3. Compute copy and optimizer: AdamW over the trainable master weights, decay on matrices only (not on biases,
        //    norms, or the CLS vector), moments restored when resuming inside this stage.
        using var compute = new ComputeCopy(master, computeDtype, lora);
        var decay = optimized.Where(p => p.parameter.dim() >= 2).ToList();
        var noDecay = optimized.Where(p => p.parameter.dim() < 2).ToList();
        optimized = [.. decay, .. noDecay];                           // the optimizer's own order, which its state follows
        var groups = new List<AdamW.ParamGroup>();
        if (decay.Count > 0) groups.Add(new AdamW.ParamGroup(decay.Select(p => p.parameter), stage.Lr, stage.Beta1, stage.Beta2, 1e-8, stage.WeightDecay));
        if (noDecay.Count > 0) groups.Add(new AdamW.ParamGroup(noDecay.Select(p => p.parameter), stage.Lr, stage.Beta1, stage.Beta2, 1e-8, 0));
        using var optimizer = torch.optim.AdamW(groups, stage.Lr, stage.Beta1, stage.Beta2, 1e-8, stage.WeightDecay);
        if (resume is { } from) TrainingCheckpoint.LoadOptimizer(from.Dir, optimizer, optimized);
        var parameters = optimized.Select(p => p.parameter).ToList();

        // 4. Images: a frozen, un-augmented encoder computes each image's features once (feature cache).
        SetTrainMode(compute.Model, visionTrains);
        if (compute.IsCopy) master.VisionTower.eval();
        bool cached = options.UseFeatureCache && !visionTrains && stage.Augment is null && stage.Kind != StageRecipe.Text;
        using var featureCache = cached
            ? new FeatureCache(options.FeatureCacheDir ?? Path.Combine(outDir, FeatureCacheFolder), master.VisionTower, preprocess)
            : null;
        using var images = new ImageInputs(preprocess, stage.Augment, featureCache, visionTrains);

        long trainableCount = parameters.Sum(p => p.numel());
        Report(new StageStarted(stageIndex, recipe.Stages.Count, stage.Name, stage.Kind, stage.Trainable ?? PartsText(parts), endStep, startStep,
            data.Train.Count, data.Val.Count, trainableCount, cached));
        log.Text($"stage {stage.Name} ({stage.Kind}, trains {PartsText(parts)}: {trainableCount:N0} parameters): {data.Train.Count} training samples, " +
                 $"{data.Val.Count} validation samples, steps {startStep + 1}..{endStep} of {totalSteps}");

        double? bestVal = resume?.State.BestValLoss;
        double? lastLoss = null, lastVal = null;
        double emaSeconds = 0, emaTokens = 0, stepSeconds = 0;
        long stepsDone = 0;
        var stageClock = Stopwatch.StartNew();

        for (long step = startStep + 1; step <= endStep; step++)
        {
            // 5a. Ctrl-C: keep what the finished steps learned, then stop.
            if (cancellationToken.IsCancellationRequested)
            {
                SaveCheckpoint(stageIndex, step - 1, totalSteps, bestVal, optimizer, optimized, lora, stage.KeepLast, "cancelled");
                throw new OperationCanceledException("training cancelled; a checkpoint was saved", cancellationToken);
            }
            var watch = Stopwatch.StartNew();
            globalStep = stageStartGlobal + step;

            // 5b. Learning rate for this step: linear warmup, then cosine down to min_lr.
            double lr = Schedule.LearningRate(step, totalSteps, stage.WarmupSteps, stage.Lr, stage.EffectiveMinLr);
            foreach (var group in optimizer.ParamGroups) group.LearningRate = lr;
            if (lora is { LoraDropout: > 0 }) torch.manual_seed(Seeds.Mix(seed, stageIndex, step, 0xD50));

            // 5c. Forward and backward over grad_accum micro-batches; each loss is weighted by its share of the step's
            //     learned tokens, so k micro-batches of b give the gradient of one batch of k·b.
            var batches = new List<Batch>();
            for (int m = 0; m < stage.GradAccum; m++)
            {
                long first = (step - 1) * perStep + (long)m * stage.BatchSize;
                var samples = Enumerable.Range(0, stage.BatchSize).Select(j => data.Train[order[first + j]]).ToList();
                batches.Add(Batch.Collate(samples, tokenizer.PadId, device));
            }
            long stepTokens = batches.Sum(b => b.Tokens);
            double stepLoss = ForwardBackward(compute, batches, images,
                m => stage.Augment is null ? null : new Random(Seeds.Mix(seed, stageIndex, step, m, 0xA06)));
            foreach (var b in batches) b.Dispose();
            if (!double.IsFinite(stepLoss))
                throw new XrayVLException($"stage {stage.Name}: the loss became {stepLoss} at step {step}; lower lr or raise warmup_steps " +
                                          $"(the last checkpoint is in {Path.Combine(outDir, CheckpointsFolder)})");

            // 5d. Update: clip the global gradient norm, AdamW step on the float32 master weights, copy back to the compute copy.
            double gradNorm = ClipAndStep(parameters, optimizer, stage.MaxGradNorm, compute.AfterStep);

            // 5e. Speed, metrics, progress.
            double seconds = watch.Elapsed.TotalSeconds;
            stepSeconds += seconds;
            stepsDone++;
            emaSeconds = stepsDone == 1 ? seconds : 0.9 * emaSeconds + 0.1 * seconds;
            emaTokens = stepsDone == 1 ? stepTokens : 0.9 * emaTokens + 0.1 * stepTokens;
            tokensSeen += stepTokens;
            lastLoss = stepLoss;
            int epoch = (int)order.EpochOf((step - 1) * perStep);
            log.Step(new MetricsLine
            {
                Stage = stage.Name, Step = globalStep, StageStep = step, Epoch = epoch, Loss = stepLoss, Lr = lr, GradNorm = gradNorm,
                TokensPerS = emaTokens / emaSeconds, ElapsedS = Elapsed.TotalSeconds,
            });
            Report(new StepCompleted(new TrainProgress(stage.Name, stageIndex, recipe.Stages.Count, step, endStep, globalStep, epoch,
                stepLoss, lr, gradNorm, emaTokens / emaSeconds, 1 / emaSeconds, Elapsed, TimeSpan.FromSeconds((endStep - step) * emaSeconds))));

            // 5f. Every eval_every steps: validation loss (OUT/best when it is the stage's lowest); every sample_every
            //     steps: generations beside their references; every save_every steps: a checkpoint.
            bool last = step == endStep;
            if (stage.EvalEvery > 0 && val.Count > 0 && (step % stage.EvalEvery == 0 || last))
            {
                lastVal = StageProbes.ValidationLoss(compute.Model, val, stage.BatchSize, images, tokenizer.PadId);
                SetTrainMode(compute.Model, visionTrains);
                bool isBest = bestVal is null || lastVal < bestVal;
                if (isBest)
                {
                    bestVal = lastVal;
                    SaveBest(stage.Name, lastVal.Value);
                }
                log.Validation(lastVal.Value);
                log.Text($"step {globalStep} [{stage.Name} {step}/{endStep}] loss {stepLoss:F4} val_loss {lastVal:F4}{(isBest ? " (best)" : "")}");
                log.DrawLossChart();
                Report(new Evaluated(stage.Name, step, globalStep, lastVal.Value, isBest));
            }
            if (stage.SampleEvery > 0 && data.Prompts.Count > 0 && (step % stage.SampleEvery == 0 || last))
            {
                var samples = new SamplesGenerated(stage.Name, step, globalStep, StageProbes.Samples(compute.Model, tokenizer, preprocess, data.Prompts, stage.SampleMaxNewTokens, images));
                SetTrainMode(compute.Model, visionTrains);
                log.Samples(samples);
                Report(samples);
            }
            if ((stage.SaveEvery > 0 && step % stage.SaveEvery == 0) || last)
            {
                SaveCheckpoint(stageIndex, step, totalSteps, bestVal, optimizer, optimized, lora, stage.KeepLast, last ? "end of stage" : $"every {stage.SaveEvery} steps");
            }
        }

        // 6. End of the stage: merge LoRA adapters into the weights (the next stage starts from a plain model).
        if (lora is not null) Lora.MergeAndUnload(master.LanguageModel);
        foreach (var p in master.parameters()) p.requires_grad = false;
        var summary = new StageSummary(stage.Name, stepsDone, lastLoss, lastVal, bestVal, stageClock.Elapsed,
            stepsDone / Math.Max(1e-9, stepSeconds), stepsDone == 0 ? 0 : emaTokens / Math.Max(1e-9, emaSeconds),
            featureCache?.Hits, featureCache?.EncoderImages);
        log.Text($"stage {stage.Name} done: {stepsDone} steps in {stageClock.Elapsed:hh\\:mm\\:ss}, {summary.StepsPerSecond:F2} steps/s" +
                 (featureCache is null ? "" : $"; feature cache: {featureCache.EncoderImages} images encoded, {featureCache.Hits} served from cache"));
        Report(new StageCompleted(summary));
        return summary;
    }

    /// <summary>Builds tokenizer and master model (fresh, from init_from, or from the resume checkpoint's tokenizer) and returns the model's config.</summary>
    private VisionLanguageConfig BuildTokenizerAndModel(string? resumeDir, List<StageItems> items, Dictionary<string, List<Study>> sources, string? shared)
    {
        string tokenizerDir = Path.Combine(outDir, TokenizerFolder);
        if (recipe.Model.InitFrom is { } initFrom)
        {
            var loaded = Checkpoint.Load(recipe.ResolvePath(initFrom, shared));
            master = loaded.Model;
            tokenizer = resumeDir is null ? loaded.Tokenizer : XrayTokenizer.Load(resumeDir);
            preprocess = loaded.Preprocess;
            Note($"model initialised from {loaded.Directory}");
        }
        else
        {
            if (resumeDir is not null) tokenizer = XrayTokenizer.Load(resumeDir);
            else if (recipe.Tokenizer.From is { } from) tokenizer = XrayTokenizer.Load(recipe.ResolvePath(from, shared));
            else
            {
                var watch = Stopwatch.StartNew();
                var corpus = TrainingData.TokenizerCorpus(items, sources).ToList();
                var bpe = BpeTrainer.Train(corpus, new BpeTrainerOptions(recipe.Tokenizer.VocabSize, recipe.Tokenizer.MinFrequency));
                bpe.Save(tokenizerDir);
                tokenizer = XrayTokenizer.Load(tokenizerDir);    // the files, as every later run will read them
                Note($"tokenizer: byte-level BPE of {tokenizer.VocabSize} entries trained on {corpus.Count:N0} texts in {watch.Elapsed.TotalSeconds:F1} s");
            }
            var config = recipe.Model.Config!.WithTokenizer(tokenizer.VocabSize, tokenizer.ImageId, tokenizer.EosId);
            master = new VisionLanguageModel(config);
            using var generator = new torch.Generator((ulong)recipe.Seed);
            master.InitializeWeights(generator);
            var vision = config.VisionConfig;
            preprocess = new PreprocessConfig { ImageSize = vision.ImageSize, Channels = vision.NumChannels };
            if (recipe.Model.VisionInit is { } visionInit) InitVisionTower(visionInit, shared);
        }
        tokenizer.Save(tokenizerDir);
        master.to(device);
        return master.Config;
    }

    /// <summary>
    /// Forward and backward passes over one step's micro-batches, the gradients summed into the master weights. Each
    /// batch's mean loss is weighted by its share of the step's learned tokens, so k micro-batches of b samples give the
    /// gradient of one batch of k·b. Returns the step's loss: the mean over all its learned tokens.
    /// </summary>
    internal static double ForwardBackward(ComputeCopy compute, IReadOnlyList<Batch> batches, ImageInputs images, Func<int, Random?> augmentRandom)
    {
        long learned = batches.Sum(b => b.LearnedTokens);
        double lossSum = 0;
        for (int m = 0; m < batches.Count; m++)
        {
            using var scope = NewDisposeScope();
            var batch = batches[m];
            if (batch.LearnedTokens == 0) continue;
            var imageEmbeds = images.Embed(compute.Model, batch.Images, augmentRandom(m));           // (N, Nv, D)
            var loss = compute.Model.Loss(batch.Ids, batch.Labels, imageEmbeds);                    // mean over this batch
            using (Scalar share = batch.LearnedTokens / (double)learned)   // held: a temporary is freed by its finalizer
                loss.mul(share).backward();
            compute.MoveGradientsToMaster();
            lossSum += loss.item<float>() * batch.LearnedTokens;
        }
        return lossSum / Math.Max(1, learned);
    }

    /// <summary>The newest checkpoint that passes <see cref="TrainingCheckpoint.ReadState"/>; damaged ones are skipped with a note.</summary>
    private (string Dir, TrainerState State)? FindResumePoint(string checkpoints, string fingerprint)
    {
        var candidates = TrainingCheckpoint.List(checkpoints);
        // Starting over silently would cost a full run when the folder was simply mistyped.
        if (candidates.Count == 0)
            throw new XrayVLException($"--resume: {outDir} holds no checkpoint to resume (a new or mistyped --out folder?); " +
                "leave out --resume to start a new run there");
        XrayVLException? firstProblem = null;
        foreach (var (_, dir) in candidates)
        {
            try { return (dir, TrainingCheckpoint.ReadState(dir, fingerprint)); }
            catch (CheckpointMismatchException) { throw; }
            catch (XrayVLException e)
            {
                firstProblem ??= e;
                Note($"checkpoint {dir} is not usable, skipped: {e.Message}");
            }
        }
        throw new XrayVLException($"no usable checkpoint in {checkpoints}: {firstProblem!.Message}", firstProblem);
    }

    /// <summary>OUT/best: the model as it is now, the lowest validation loss of its stage so far.</summary>
    private void SaveBest(string stageName, double valLoss) =>
        Checkpoint.Save(Path.Combine(outDir, BestFolder), master.Config, TrainingCheckpoint.ExportWeights(master), tokenizer, preprocess,
            new Dictionary<string, string>
            {
                ["stage"] = stageName, ["global_step"] = globalStep.ToString(CultureInfo.InvariantCulture),
                ["val_loss"] = valLoss.ToString("R", CultureInfo.InvariantCulture),
            });

    private void SaveCheckpoint(int stageIndex, long stageStep, long stageSteps, double? bestVal, AdamW optimizer,
        IReadOnlyList<(string Name, Parameter Parameter)> optimized, LoraConfig? lora, int keepLast, string reason)
    {
        string folder = Path.Combine(outDir, CheckpointsFolder);
        var state = new TrainerState
        {
            RecipeFingerprint = recipe.Fingerprint, StageIndex = stageIndex, StageName = recipe.Stages[stageIndex].Name,
            StageStep = stageStep, StageSteps = stageSteps, GlobalStep = globalStep,
            BestValLoss = bestVal, TokensSeen = tokensSeen, ElapsedSeconds = Elapsed.TotalSeconds, Seed = recipe.Seed, Dtype = recipe.Dtype,
        };
        string dir = TrainingCheckpoint.Save(folder, master, tokenizer, preprocess, state, optimizer, optimized, lora);
        TrainingCheckpoint.Prune(folder, keepLast);
        log.Text($"checkpoint {dir} ({reason})");
        Report(new CheckpointSaved(dir, state.GlobalStep, reason));
    }

    /// <summary>Freezes the model, then unfreezes <paramref name="parts"/> (injecting seeded LoRA adapters when the stage has them and the model not yet); returns what the optimizer updates.</summary>
    private List<(string name, Parameter parameter)> SelectTrainable(TrainableParts parts, LoraConfig? lora, int stageIndex)
    {
        foreach (var p in master.parameters()) p.requires_grad = false;
        if (lora is not null && !Lora.Layers(master.LanguageModel).Any())
        {
            Lora.Inject(master.LanguageModel, lora);
            SeedAdapters(Seeds.Mix(recipe.Seed, stageIndex, 0x10A));
        }
        foreach (var p in Lora.Layers(master.LanguageModel).SelectMany(l => new[] { l.Layer.LoraA!, l.Layer.LoraB! }))
            p.requires_grad = parts.HasFlag(TrainableParts.Lora);
        SetTrainable(master.VisionTower, parts.HasFlag(TrainableParts.Vision));
        SetTrainable(master.Projector, parts.HasFlag(TrainableParts.Projector));
        foreach (var p in master.FindingHint?.TrainableParameters ?? []) p.requires_grad = parts.HasFlag(TrainableParts.Projector);
        if (parts.HasFlag(TrainableParts.LanguageModel)) SetTrainable(master.LanguageModel, true);
        return master.named_parameters().Where(p => p.parameter.requires_grad).ToList();
    }

    /// <summary>LoRA A matrices redrawn from a seeded generator (PEFT's init: kaiming-uniform, U(±1/√in)); B stays zero.</summary>
    private void SeedAdapters(int seed)
    {
        using var generator = new torch.Generator((ulong)seed);
        using var _ = no_grad();
        foreach (var (_, layer) in Lora.Layers(master.LanguageModel))
        {
            double bound = 1.0 / Math.Sqrt(layer.InFeatures);
            layer.LoraA!.uniform_(-bound, bound, generator);
        }
    }

    /// <summary>
    /// One optimizer update: every trainable parameter gets a gradient (see <see cref="EnsureGradients"/>), the global
    /// gradient norm is clipped to <paramref name="maxGradNorm"/> (0: not clipped), AdamW steps, the gradients are
    /// cleared, then <paramref name="afterStep"/> runs (the compute copy takes the new weights). Returns the norm before clipping.
    /// </summary>
    private static double ClipAndStep(IList<Parameter> parameters, AdamW optimizer, double maxGradNorm, Action? afterStep = null)
    {
        using var scope = NewDisposeScope();
        EnsureGradients(parameters);
        double norm = torch.nn.utils.clip_grad_norm_(parameters, maxGradNorm > 0 ? maxGradNorm : double.PositiveInfinity);
        optimizer.step();
        optimizer.zero_grad();
        afterStep?.Invoke();
        return norm;
    }

    /// <summary>
    /// Gives every trainable parameter a gradient (zeros where this step did not reach it), so that a resumed run, whose
    /// gradients start out absent, updates exactly the parameters an uninterrupted one does.
    /// </summary>
    private static void EnsureGradients(IEnumerable<Parameter> parameters)
    {
        foreach (var p in parameters)
            if (p.grad is null) p.grad = torch.zeros_like(p).DetachFromDisposeScope();
    }

    private static void SetTrainable(nn.Module module, bool trainable)
    {
        foreach (var (name, p) in module.named_parameters())
            if (!TrainingCheckpoint.IsAdapterKey(name + ".")) p.requires_grad = trainable;
    }

    /// <summary>Training mode, except a frozen encoder, which stays in eval mode (BatchNorm keeps its running statistics).</summary>
    private static void SetTrainMode(VisionLanguageModel model, bool visionTrains)
    {
        model.train();
        if (!visionTrains) model.VisionTower.eval();
    }

    private static string PartsText(TrainableParts parts) =>
        string.Join("+", new[] { (TrainableParts.Vision, "vision"), (TrainableParts.Projector, "projector"), (TrainableParts.LanguageModel, "lm"), (TrainableParts.Lora, "lora") }
            .Where(p => parts.HasFlag(p.Item1)).Select(p => p.Item2));

    private TimeSpan Elapsed => TimeSpan.FromSeconds(elapsedBefore + clock.Elapsed.TotalSeconds);

    private void Note(string message)
    {
        log?.Text(message);
        Report(new TrainNote(message));
    }

    private void Report(TrainEvent e) => progress?.Report(e);
}
