using System.Diagnostics;
using TorchSharp;
using TorchSharp.Modules;
using XrayVL.Data;
using XrayVL.Evaluation;
using XrayVL.Imaging;
using XrayVL.IO;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Training;

/// <summary>One image of a vision stage: its file, the 14 targets and which of them are stated (1 or 0; the rest are masked).</summary>
public sealed record LabelledImage(string Path, float[] Targets, float[] Mask);

/// <summary>
/// The vision stage (kind "vision") and the pretrained-encoder start: the encoder learns the 14 observations of labelled
/// images (Kermany, NIH, COVID, IU...) through a linear head on its pooled features, with a masked binary cross-entropy
/// (observations a study does not state, or states as uncertain, do not count), AdamW, warmup + cosine, clipping, the
/// stage's augmentation. The head is kept (OUT/classifier.safetensors, and beside the final model) for `xrayvl eval
/// --tasks labels`. The stage runs in float32 and checkpoints at its end; a run resumed inside it restarts the stage.
/// </summary>
public sealed partial class Trainer
{
    private Dictionary<string, List<Study>> studiesBySource = [];
    private FindingClassifier? classifier;

    /// <summary>The labelled images of a vision stage's mixture (each image once per repeat) and of its sources' val split.</summary>
    public static (List<LabelledImage> Train, List<LabelledImage> Val, List<string> Notes) VisionSamples(
        StageRecipe stage, int seed, IReadOnlyDictionary<string, List<Study>> sources)
    {
        var train = new List<LabelledImage>();
        var val = new List<LabelledImage>();
        var notes = new List<string>();
        var valSeen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var mix in stage.Data)
        {
            var studies = sources[mix.Source];
            var items = Images(studies.Where(s => mix.Splits.Contains(s.Split ?? "") && mix.Admits(s)));
            if (mix.Limit is { } limit && items.Count > limit)
            {
                var random = new Random(Seeds.Mix(seed, Seeds.Of(stage.Name), Seeds.Of(mix.Source)));
                notes.Add($"{mix.Source}: {limit} of {items.Count} images used (limit)");
                items = items.OrderBy(_ => random.Next()).Take(limit).ToList();
            }
            if (items.Count == 0) notes.Add($"{mix.Source}: no labelled image on disk in {string.Join("/", mix.Splits)}");
            for (int r = 0; r < mix.Repeat; r++) train.AddRange(items);
            if (valSeen.Add(mix.Source)) val.AddRange(Images(studies.Where(s => s.Split == Splits.Val)));
        }
        return (train, val, notes);
    }

    /// <summary>Each image file on disk once (a study's Chinese twin shares its images), with its study's labels.</summary>
    private static List<LabelledImage> Images(IEnumerable<Study> studies)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var result = new List<LabelledImage>();
        foreach (var s in studies)
        {
            if (s.Labels is null) continue;
            var targets = new float[Observations.Names.Count];
            var mask = new float[targets.Length];
            for (int o = 0; o < targets.Length; o++)
            {
                if (s.Labels.TryGetValue(Observations.Names[o], out var v) && v is 0 or 1)
                {
                    targets[o] = v.Value;
                    mask[o] = 1;
                }
            }
            if (mask.All(m => m == 0)) continue;
            foreach (var image in s.Images)
                if (seen.Add(image.Path) && File.Exists(image.Path)) result.Add(new LabelledImage(image.Path, targets, mask));
        }
        return result;
    }

    /// <summary>Masked mean binary cross-entropy of the head's logits (B, 14) against targets (B, 14).</summary>
    internal static Tensor MaskedBce(Tensor logits, Tensor targets, Tensor mask)
    {
        using var scope = NewDisposeScope();
        var perLabel = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction: nn.Reduction.None);
        using Scalar one = 1;   // held until the call returns: a temporary Scalar is freed by its finalizer, maybe mid-call
        return (perLabel * mask).sum().div(mask.sum().clamp_min(one)).MoveToOuterDisposeScope();
    }

    private StageSummary RunVisionStage(int stageIndex, (string Dir, TrainerState State)? resume, CancellationToken cancellationToken)
    {
        var stage = recipe.Stages[stageIndex];
        int seed = recipe.Seed;
        var encoder = master.VisionTower;
        if (resume is not null) Note($"stage {stage.Name}: a vision stage restarts from its first step when resumed inside it");

        // 1. Data: labelled images of the mixture; a fixed validation subset.
        var (train, allVal, notes) = VisionSamples(stage, seed, studiesBySource);
        foreach (string n in notes) Note($"stage {stage.Name}: {n}");
        if (train.Count == 0) throw new XrayVLException($"stage {stage.Name}: no labelled image on disk (check its data sources and splits)");
        int perStep = stage.BatchSize * stage.GradAccum;
        long totalSteps = stage.Steps ?? Math.Max(1, (long)Math.Ceiling(stage.Epochs!.Value * train.Count / perStep));
        long endStep = options.MaxStepsPerStage is { } cap ? Math.Min(cap, totalSteps) : totalSteps;
        long stageStartGlobal = globalStep;
        var order = new SampleOrder(train.Count, seed, stageIndex);
        var valRandom = new Random(Seeds.Mix(seed, stageIndex, 0x7A1));
        var val = allVal.OrderBy(_ => valRandom.Next()).Take(stage.EvalBatches * stage.BatchSize).ToList();

        // 2. What trains: the encoder and the head (fresh, seeded); AdamW with decay on matrices and kernels only.
        foreach (var p in master.parameters()) p.requires_grad = false;
        foreach (var p in encoder.parameters()) p.requires_grad = true;
        if (classifier is null)
        {
            classifier = new FindingClassifier(encoder.PooledDim);
            using var _ = no_grad();
            using var generator = new torch.Generator((ulong)Seeds.Mix(seed, stageIndex, 0xC1A));
            foreach (var p in classifier.parameters()) p.uniform_(-1 / Math.Sqrt(encoder.PooledDim), 1 / Math.Sqrt(encoder.PooledDim), generator);
            classifier.to(device);
        }
        var optimized = encoder.named_parameters().Select(p => ("vision_tower." + p.name, p.parameter))
            .Concat(classifier.named_parameters().Select(p => ("classifier." + p.name, p.parameter))).ToList();
        var decay = optimized.Where(p => p.Item2.dim() >= 2).ToList();
        var noDecay = optimized.Where(p => p.Item2.dim() < 2).ToList();
        optimized = [.. decay, .. noDecay];
        using var optimizer = torch.optim.AdamW([
            new AdamW.ParamGroup(decay.Select(p => p.Item2), stage.Lr, stage.Beta1, stage.Beta2, 1e-8, stage.WeightDecay),
            new AdamW.ParamGroup(noDecay.Select(p => p.Item2), stage.Lr, stage.Beta1, stage.Beta2, 1e-8, 0),
        ], stage.Lr, stage.Beta1, stage.Beta2, 1e-8, stage.WeightDecay);
        var parameters = optimized.Select(p => p.Item2).ToList();
        long trainableCount = parameters.Sum(p => p.numel());
        Report(new StageStarted(stageIndex, recipe.Stages.Count, stage.Name, stage.Kind, "vision+classifier", endStep, 0,
            train.Count, val.Count, trainableCount, false));
        log.Text($"stage {stage.Name} (vision, trains the encoder and a 14-label head: {trainableCount:N0} parameters): " +
                 $"{train.Count} training images, {val.Count} validation images, steps 1..{endStep} of {totalSteps}");

        double? lastLoss = null, lastVal = null, bestVal = null;
        double emaSeconds = 0, stepSeconds = 0;
        long stepsDone = 0;
        var stageClock = Stopwatch.StartNew();
        for (long step = 1; step <= endStep; step++)
        {
            // 3a. Ctrl-C: stop after the finished steps (the stage restarts when resumed).
            cancellationToken.ThrowIfCancellationRequested();
            var watch = Stopwatch.StartNew();
            globalStep = stageStartGlobal + step;
            double lr = Schedule.LearningRate(step, totalSteps, stage.WarmupSteps, stage.Lr, stage.EffectiveMinLr);
            foreach (var group in optimizer.ParamGroups) group.LearningRate = lr;

            // 3b. Forward and backward over grad_accum micro-batches of images, each loss weighted 1 / grad_accum.
            encoder.train();
            classifier.train();
            double stepLoss = 0;
            for (int m = 0; m < stage.GradAccum; m++)
            {
                using var scope = NewDisposeScope();
                long first = (step - 1) * perStep + (long)m * stage.BatchSize;
                var batch = Enumerable.Range(0, stage.BatchSize).Select(j => train[order[first + j]]).ToList();
                var random = stage.Augment is null ? null : new Random(Seeds.Mix(seed, stageIndex, step, m, 0xA06));
                var (pixels, targets, mask) = Collate(batch, random ?? new Random(0), stage.Augment);
                var loss = MaskedBce(classifier.call(encoder.Pooled(pixels)), targets, mask);
                using (Scalar accum = stage.GradAccum)   // held: an implicit temporary is freed by its finalizer, possibly mid-call
                    loss.div(accum).backward();
                stepLoss += loss.item<float>() / stage.GradAccum;
            }
            if (!double.IsFinite(stepLoss))
                throw new XrayVLException($"stage {stage.Name}: the loss became {stepLoss} at step {step}; lower lr or raise warmup_steps");

            // 3c. Update: clip, AdamW step.
            double gradNorm = ClipAndStep(parameters, optimizer, stage.MaxGradNorm);

            // 3d. Speed, metrics, progress; validation loss every eval_every steps and at the end.
            double seconds = watch.Elapsed.TotalSeconds;
            stepSeconds += seconds;
            stepsDone++;
            emaSeconds = stepsDone == 1 ? seconds : 0.9 * emaSeconds + 0.1 * seconds;
            lastLoss = stepLoss;
            int epoch = (int)order.EpochOf((step - 1) * perStep);
            double imagesPerSecond = perStep / emaSeconds;
            log.Step(new MetricsLine
            {
                Stage = stage.Name, Step = globalStep, StageStep = step, Epoch = epoch, Loss = stepLoss, Lr = lr, GradNorm = gradNorm,
                TokensPerS = imagesPerSecond, ElapsedS = Elapsed.TotalSeconds,
            });
            Report(new StepCompleted(new TrainProgress(stage.Name, stageIndex, recipe.Stages.Count, step, endStep, globalStep, epoch,
                stepLoss, lr, gradNorm, imagesPerSecond, 1 / emaSeconds, Elapsed, TimeSpan.FromSeconds((endStep - step) * emaSeconds))));
            bool last = step == endStep;
            if (stage.EvalEvery > 0 && val.Count > 0 && (step % stage.EvalEvery == 0 || last))
            {
                lastVal = VisionValidationLoss(encoder, classifier, val, stage.BatchSize);
                bool isBest = bestVal is null || lastVal < bestVal;
                if (isBest) bestVal = lastVal;
                log.Validation(lastVal.Value);
                log.Text($"step {globalStep} [{stage.Name} {step}/{endStep}] loss {stepLoss:F4} val_loss {lastVal:F4}");
                Report(new Evaluated(stage.Name, step, globalStep, lastVal.Value, isBest));
            }
        }

        // 4. End of the stage: the head beside the run, a checkpoint (the stage counts as done), everything frozen again.
        encoder.eval();
        classifier.eval();
        classifier.Save(outDir);
        if (master.FindingHint is { } hint)
        {
            var thresholds = HintThresholds(allVal, ValidationProbabilities(encoder, classifier, allVal, stage.BatchSize));
            hint.SetClassifier(classifier, thresholds);
            Note($"stage {stage.Name}: the finding hint decides with thresholds chosen on {allVal.Count} validation images: " +
                 string.Join(", ", Observations.Names.Select((n, i) => $"{n} {thresholds[i]:0.###}")));
        }
        SaveCheckpoint(stageIndex, totalSteps, totalSteps, bestVal, optimizer, optimized, null, stage.KeepLast, "end of stage");
        foreach (var p in master.parameters()) p.requires_grad = false;
        var summary = new StageSummary(stage.Name, stepsDone, lastLoss, lastVal, bestVal, stageClock.Elapsed,
            stepsDone / Math.Max(1e-9, stepSeconds), stepsDone == 0 ? 0 : perStep / Math.Max(1e-9, emaSeconds), null, null);
        log.Text($"stage {stage.Name} done: {stepsDone} steps in {stageClock.Elapsed:hh\\:mm\\:ss}, {summary.StepsPerSecond:F3} steps/s, " +
                 $"{summary.TokensPerSecond:F1} images/s");
        Report(new StageCompleted(summary));
        return summary;
    }

    /// <summary>Pixels (B, C, S, S) on the device, targets and mask (B, 14).</summary>
    private (Tensor Pixels, Tensor Targets, Tensor Mask) Collate(IReadOnlyList<LabelledImage> batch, Random random, AugmentConfig? augment)
    {
        var images = batch.Select(b =>
        {
            var image = ImageFile.Load(b.Path);
            return augment is null ? image : Augment.Apply(image, augment, random);
        });
        var pixels = Preprocess.Batch(images, preprocess).to(device);
        var targets = torch.tensor(batch.SelectMany(b => b.Targets).ToArray(), [batch.Count, Observations.Names.Count]).to(device);
        var mask = torch.tensor(batch.SelectMany(b => b.Mask).ToArray(), [batch.Count, Observations.Names.Count]).to(device);
        return (pixels, targets, mask);
    }

    /// <summary>Mean masked BCE over the fixed validation images, in eval mode without gradients (stated labels weighted equally).</summary>
    private double VisionValidationLoss(VisionEncoder encoder, FindingClassifier head, IReadOnlyList<LabelledImage> val, int batchSize)
    {
        encoder.eval();
        head.eval();
        using var _ = no_grad();
        double sum = 0, count = 0;
        for (int i = 0; i < val.Count; i += batchSize)
        {
            using var scope = NewDisposeScope();
            var batch = val.Skip(i).Take(batchSize).ToList();
            var (pixels, targets, mask) = Collate(batch, new Random(0), null);
            double stated = mask.sum().item<float>();
            sum += MaskedBce(head.call(encoder.Pooled(pixels)), targets, mask).item<float>() * stated;
            count += stated;
        }
        return sum / Math.Max(1, count);
    }

    /// <summary>Sigmoid outputs (one float[14] per image) of the head on <paramref name="images"/>, in eval mode without gradients.</summary>
    private List<float[]> ValidationProbabilities(VisionEncoder encoder, FindingClassifier head, IReadOnlyList<LabelledImage> images, int batchSize)
    {
        encoder.eval();
        head.eval();
        using var _ = no_grad();
        var result = new List<float[]>(images.Count);
        for (int i = 0; i < images.Count; i += batchSize)
        {
            using var scope = NewDisposeScope();
            var (pixels, _, _) = Collate(images.Skip(i).Take(batchSize).ToList(), new Random(0), null);
            var probabilities = head.Probabilities(encoder, pixels).to(ScalarType.Float32).cpu();
            var flat = probabilities.data<float>().ToArray();
            for (int b = 0; b < flat.Length / Observations.Names.Count; b++)
                result.Add(flat[(b * Observations.Names.Count)..((b + 1) * Observations.Names.Count)]);
        }
        return result;
    }

    /// <summary>
    /// Per label, the threshold <see cref="LabelMetrics.BestThreshold"/> picks on the images that state the label (the
    /// rule `xrayvl eval --tasks labels` uses); 0.5 for a label no validation image states.
    /// </summary>
    public static double[] HintThresholds(IReadOnlyList<LabelledImage> images, IReadOnlyList<float[]> probabilities)
    {
        if (images.Count != probabilities.Count) throw new ArgumentException("one probability row per image is needed");
        var thresholds = new double[Observations.Names.Count];
        for (int o = 0; o < thresholds.Length; o++)
        {
            var stated = Enumerable.Range(0, images.Count).Where(i => images[i].Mask[o] > 0).ToList();
            thresholds[o] = stated.Count == 0 ? 0.5
                : LabelMetrics.BestThreshold(stated.Select(i => (double)probabilities[i][o]).ToList(), stated.Select(i => images[i].Targets[o] > 0).ToList());
        }
        return thresholds;
    }

    /// <summary>Writes the trained head into a model folder being saved (nothing when no vision stage ran).</summary>
    private void SaveClassifier(string dir)
    {
        if (classifier is null && recipe.Stages.Any(s => s.Kind == StageRecipe.Vision))
            classifier = FindingClassifier.Load(outDir, master.VisionTower.PooledDim);  // trained by an earlier session of a resumed run
        classifier?.Save(dir);
    }

    /// <summary>Loads pretrained vision weights into the fresh model: a vision-tower folder, or an ONNX ResNet converted here.</summary>
    private void InitVisionTower(string path, string? shared)
    {
        foreach (var (name, value) in options.PathVariables)
            path = path.Replace("${" + name + "}", value, StringComparison.Ordinal);
        string full = recipe.ResolvePath(path, shared);
        var vision = master.Config.VisionConfig;
        VisionConfig found;
        if (full.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
        {
            if (!File.Exists(full)) throw new XrayVLException($"model.vision_init: {full}: file not found");
            string prep = Path.Combine(Path.GetDirectoryName(full)!, "..", "ResNetPrepOnnx", "ResNetPreprocess.onnx");
            if (!File.Exists(prep)) throw new XrayVLException($"model.vision_init: {prep}: the preprocessing ONNX beside the model is missing");
            using var converted = ResNetOnnx.Convert(OnnxGraph.Read(full), vision.NumChannels, ResNetOnnx.MeansFromPreprocessGraph(OnnxGraph.Read(prep)), vision.ImageSize, vision.Layers);
            found = converted.Config;
            RequireSameArchitecture(vision, found, full);
            var state = new Dictionary<string, Tensor>(converted.Weights);
            foreach (var key in master.VisionTower.state_dict().Keys.Where(k => k.EndsWith(".num_batches_tracked")))
                state[key] = zeros(1, dtype: ScalarType.Int64).squeeze();
            ModuleWeights.LoadInto(master.VisionTower, state);
            preprocess = converted.Preprocess;
        }
        else
        {
            found = ConfigFile.Read<VisionConfig>(Path.Combine(full, Checkpoint.ConfigFileName));
            RequireSameArchitecture(vision, found, full);
            Checkpoint.LoadWeights(full, master.VisionTower, prefix: "", strict: false, requireAllOfModel: true);
            string prep = Path.Combine(full, Checkpoint.PreprocessorFileName);
            if (File.Exists(prep)) preprocess = ConfigFile.Read<PreprocessConfig>(prep).Validate();
        }
        Note($"vision encoder initialised from {full} (ResNet [{string.Join(",", found.Layers)}], {found.NumChannels} channel(s); " +
             $"input mean {string.Join("/", preprocess.Mean.Select(m => m.ToString("0.###")))}, std {preprocess.Std[0]:0.#####})");
    }

    private static void RequireSameArchitecture(VisionConfig wanted, VisionConfig found, string from)
    {
        bool same = wanted.ModelType == found.ModelType && wanted.NumChannels == found.NumChannels && wanted.ImageSize == found.ImageSize &&
                    (wanted.IsVit
                        ? wanted.PatchSize == found.PatchSize && wanted.HiddenSize == found.HiddenSize && wanted.NumHiddenLayers == found.NumHiddenLayers
                        : wanted.Layers.SequenceEqual(found.Layers) && wanted.Block == found.Block && wanted.Width == found.Width);
        if (!same)
            throw new XrayVLException($"model.vision_init: {from} holds a {found.ModelType} encoder ({(found.IsVit ? $"{found.NumHiddenLayers} layers" : $"[{string.Join(",", found.Layers)}] {found.Block}, width {found.Width}")}, " +
                                      $"{found.NumChannels} channel(s), {found.ImageSize} px) that the recipe's vision_config does not describe");
    }
}
