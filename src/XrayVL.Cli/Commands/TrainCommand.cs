using System.CommandLine;
using Spectre.Console;
using XrayVL.Training;

namespace XrayVL.Cli;

/// <summary>`xrayvl train --config FILE --out DIR`: runs a recipe's stages with a live progress bar; Ctrl-C saves first.</summary>
public static class TrainCommand
{
    public static Command Create(CliIO io)
    {
        var config = new Option<string>("--config", "-c") { Description = "Training recipe (JSON), e.g. configs/default.json", Required = true };
        var output = new Option<string>("--out", "-o") { Description = "Output folder: checkpoints/, best/, model/, metrics.jsonl, loss.png", Required = true };
        var resume = new Option<bool>("--resume") { Description = "Continue from the newest checkpoint in --out" };
        var device = new Option<string>("--device") { Description = "cpu or cuda", DefaultValueFactory = _ => "cpu" }.AcceptOnlyFromAmong("cpu", "cuda");
        var shared = new Option<string?>("--shared") { Description = "The shared data folder ${shared} stands for (default: from the recipe, else ../shared/data)" };
        var maxSteps = new Option<long?>("--max-steps-per-stage") { Description = "Cap every stage's steps (a quick smoke run of a recipe)" };
        var noCache = new Option<bool>("--no-feature-cache") { Description = "Encode every batch's images even where the encoder is frozen (to measure what the feature cache saves)" };
        var computeDtype = new Option<string?>("--compute-dtype") { Description = "bf16 or fp32: override the recipe's dtype (to compare their speed)" }.AcceptOnlyFromAmong("bf16", "fp32");
        var seed = new Option<int?>("--seed") { Description = "Override the recipe's seed (initialisation, data order, limit subsets, question phrasing, augmentation; the split keeps data.split_seed): the same recipe again, to measure run-to-run spread" };
        var command = new Command("train", "Train or fine-tune a model from a recipe: text, projector alignment, instruction tuning (LoRA or full)")
            { config, output, resume, device, shared, maxSteps, noCache, computeDtype, seed };
        command.SetAction(async (parse, cancel) =>
        {
            var recipe = TrainRecipe.Load(parse.GetValue(config)!);
            if (parse.GetValue(computeDtype) is { } dtype) recipe = (recipe with { Dtype = dtype }).Validate();
            // The seed is part of the recipe's fingerprint, so a --resume needs the same --seed as the run it continues.
            if (parse.GetValue(seed) is { } runSeed) recipe = (recipe with { Seed = runSeed }).Validate();
            var options = new TrainOptions
            {
                OutDir = parse.GetValue(output)!,
                Resume = parse.GetValue(resume),
                Device = parse.GetValue(device)!,
                SharedDataDir = parse.GetValue(shared),
                MaxStepsPerStage = parse.GetValue(maxSteps),
                UseFeatureCache = !parse.GetValue(noCache),
                // ${resnet18_onnx} in a recipe: the ImageNet ResNet-18 that restore fetched for this build.
                PathVariables = new Dictionary<string, string> { ["resnet18_onnx"] = PretrainedFiles.ResNet18Onnx },
            };
            io.Err.WriteLine($"training {recipe.Stages.Count} stage(s) from {parse.GetValue(config)} into {options.OutDir}; Ctrl-C saves a checkpoint and stops");
            var view = new TrainView(io);
            TrainResult result;
            try
            {
                result = await view.RunAsync(progress => Trainer.Run(recipe, options, progress, cancel), cancel);
            }
            catch (OperationCanceledException) when (cancel.IsCancellationRequested)
            {
                // Ctrl-C: the trainer saved a checkpoint after the step it was on; say how to go on from there.
                // The seed and dtype are part of the recipe's fingerprint, so their overrides must be given again.
                string again = (parse.GetValue(seed) is { } s2 ? $" --seed {s2}" : "") +
                               (parse.GetValue(computeDtype) is { } d2 ? $" --compute-dtype {d2}" : "") +
                               (options.Device != "cpu" ? $" --device {options.Device}" : "") +
                               (options.SharedDataDir is { } sh ? $" --shared {Quote(sh)}" : "");
                io.Err.WriteLine($"stopped. Continue from the last checkpoint with: xrayvl train --config {Quote(parse.GetValue(config)!)} " +
                    $"--out {Quote(options.OutDir)} --resume{again}");
                return 130;
            }
            io.Out.WriteLine($"model: {result.ModelDirectory}" + (result.BestDirectory is null ? "" : $"   best by validation loss: {result.BestDirectory}"));
            foreach (var s in result.Stages)
            {
                // A vision stage counts images, not tokens.
                string rate = recipe.Stages.FirstOrDefault(x => x.Name == s.Name)?.Kind == StageRecipe.Vision
                    ? $"{s.TokensPerSecond:0.0} images/s"
                    : $"{s.TokensPerSecond:0} tokens/s";
                io.Out.WriteLine($"  {s.Name}: {s.Steps} steps in {s.Elapsed:hh\\:mm\\:ss} ({s.StepsPerSecond:0.00} steps/s, {rate}), " +
                                 $"last loss {s.LastLoss:0.000}, best val {s.BestValLoss:0.000}");
            }
            return 0;
        });
        return command;
    }

    /// <summary>A path as a shell reads it back: quoted when it holds anything but plain path characters.</summary>
    public static string Quote(string path) =>
        path.All(c => char.IsAsciiLetterOrDigit(c) || c is '/' or '.' or '_' or '-' or '~' or '$' or '{' or '}') ? path : "'" + path.Replace("'", "'\\''") + "'";

    /// <summary>
    /// Draws training events: a live Spectre progress bar (step, loss, tokens/s, ETA) on a terminal, plain lines otherwise
    /// (CI logs). Notes, evaluations and samples print between bars, since a live display cannot share the console.
    /// </summary>
    public sealed class TrainView(CliIO io)
    {
        private readonly object gate = new();
        private ProgressTask? bar;

        public async Task<TrainResult> RunAsync(Func<IProgress<TrainEvent>, TrainResult> run, CancellationToken cancel)
        {
            bool live = io.Ui.Profile.Capabilities.Interactive;
            var events = new SynchronousProgress(Show);
            if (!live) return await Task.Run(() => run(events), cancel);
            TrainResult result = null!;
            await io.Ui.Progress()
                .AutoClear(false)
                // One remaining time: the ETA in the description (from the trainer's step times, the same figure the
                // plain log prints), not also Spectre's estimate from the bar's own rate.
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn())
                .StartAsync(async ctx =>
                {
                    lock (gate) context = ctx;
                    result = await Task.Run(() => run(events), cancel);
                });
            return result;
        }

        private ProgressContext? context;
        private long lastPlainStep = -1;

        private void Show(TrainEvent e)
        {
            lock (gate)
            {
                switch (e)
                {
                    case StageStarted s:
                        Line($"stage {s.Index + 1}/{s.Count} '{s.Name}' ({s.Kind}, trains {s.Trainable}: {s.TrainableParameters:N0} parameters): " +
                             $"{s.TrainSamples} training / {s.ValSamples} validation samples, {s.TotalSteps} steps" +
                             (s.StartStep > 0 ? $", resuming at step {s.StartStep}" : "") + (s.FeatureCache ? ", cached vision features" : ""));
                        if (context != null)
                        {
                            bar = context.AddTask(Markup.Escape(s.Name), maxValue: Math.Max(1, s.TotalSteps));
                            bar.Value = s.StartStep;
                        }
                        break;
                    case StepCompleted { Progress: var p }:
                        string status = $"{p.Stage} step {p.Step}/{p.TotalSteps} loss {p.Loss:0.000} lr {p.LearningRate:0.0e+0} {p.TokensPerSecond:0} tok/s ETA {p.Eta:hh\\:mm\\:ss}";
                        if (bar != null)
                        {
                            bar.Description = Markup.Escape(status);
                            bar.Value = p.Step;
                        }
                        else if (p.Step == 1 || p.Step == p.TotalSteps || p.Step - lastPlainStep >= 25)
                        {
                            io.Err.WriteLine(status);
                            lastPlainStep = p.Step;
                        }
                        break;
                    case Evaluated v:
                        Line($"  {v.Stage} step {v.Step}: validation loss {v.ValLoss:0.000}{(v.IsBest ? " (best so far)" : "")}");
                        break;
                    case SamplesGenerated g:
                        foreach (var sample in g.Samples)
                        {
                            Line($"  sample [{sample.Language}] {sample.Prompt}");
                            Line($"    model:     {sample.Generated}");
                            Line($"    reference: {sample.Reference}");
                        }
                        break;
                    case CheckpointSaved c:
                        Line($"  checkpoint ({c.Reason}): {c.Path}");
                        break;
                    case StageCompleted { Summary: var s }:
                        Line($"stage '{s.Name}' done: {s.Steps} steps in {s.Elapsed:hh\\:mm\\:ss}, {s.StepsPerSecond:0.00} steps/s" +
                             (s.CachedFeatureImages is { } cached ? $", vision features cached for {cached} images" : ""));
                        break;
                    case TrainNote n:
                        Line(n.Message);
                        break;
                }
            }
        }

        private void Line(string text)
        {
            if (context != null) io.Ui.MarkupLine(Markup.Escape(Fit(text, io.Ui.Profile.Width)));
            else io.Err.WriteLine(text);
        }

        /// <summary>One terminal line: above a live bar, a line that wraps leaves its tail where the bar is redrawn, so
        /// long lines (sample reports) end with "…" at the width of the terminal. Newlines inside become spaces.</summary>
        public static string Fit(string text, int width)
        {
            text = text.ReplaceLineEndings(" ");
            if (width < 8) return text;
            var info = new System.Globalization.StringInfo(text);
            int cells = 0, i = 0;
            for (; i < info.LengthInTextElements; i++)
            {
                string element = info.SubstringByTextElements(i, 1);
                int w = element.GetCellWidth();   // CJK characters take two cells
                if (cells + w > width - 2) break;     // one cell for "…", one spare: a full line would wrap on some terminals
                cells += w;
            }
            return i == info.LengthInTextElements ? text : info.SubstringByTextElements(0, i).TrimEnd() + "…";
        }
    }

    /// <summary>IProgress that calls back on the reporting thread (Progress&lt;T&gt; would post to the thread pool out of order).</summary>
    private sealed class SynchronousProgress(Action<TrainEvent> handler) : IProgress<TrainEvent>
    {
        public void Report(TrainEvent value) => handler(value);
    }
}
