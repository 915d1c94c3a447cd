using System.CommandLine;
using TorchSharp;
using Spectre.Console;
using XrayVL.Data;
using XrayVL.Evaluation;
using XrayVL.Inference;
using XrayVL.Modeling;

namespace XrayVL.Cli;

/// <summary>`xrayvl eval`: generate on a manifest split, score beside baselines, write predictions, metrics and a report.</summary>
public static class EvalCommand
{
    public static Command Create(CliIO io)
    {
        var model = CommonOptions.Model();
        var dtype = CommonOptions.DType();
        var manifest = new Option<string>("--manifest") { Description = "manifest.jsonl from `xrayvl data build`", Required = true };
        var split = new Option<string>("--split") { Description = "Split to evaluate", DefaultValueFactory = _ => "test" };
        var tasks = CommonOptions.List("--tasks", "report, vqa, classify, ground, labels (labels: per-label AUROC from the classifier head) [default: the first four; report with --without-images]", []);
        var output = new Option<string>("--out", "-o") { Description = "Output folder: predictions.jsonl, metrics.json, report.md, plots", DefaultValueFactory = _ => "eval-out" };
        var batch = new Option<int>("--batch-size") { Description = "Prompts generated together", DefaultValueFactory = _ => 8 }.AtLeast(1);
        var maxStudies = new Option<int?>("--max-studies") { Description = "Evaluate at most this many studies of the split" };
        var beams = new Option<int>("--beams") { Description = "Beam width for reports (1 = greedy)", DefaultValueFactory = _ => 1 }.AtLeast(1);
        var withoutImages = new Option<bool>("--without-images")
        {
            Description = "Ask for reports with no image, on the studies of the split that have a report but none of whose image files is at hand (report task only): for report collections whose images are missing",
        };
        var maxTokens = CommonOptions.MaxTokens();
        var command = new Command("eval", "Evaluate a model on a manifest split: reports, closed VQA, finding classification, grounding")
            { model, dtype, manifest, split, tasks, output, batch, maxStudies, beams, withoutImages, maxTokens };
        command.SetAction(async (parse, cancel) =>
        {
            var options = new EvalOptions
            {
                Split = parse.GetValue(split)!,
                Tasks = CommonOptions.Values(parse, tasks) is { Length: > 0 } named ? EvalTasks.Parse(string.Join(',', named))
                    : parse.GetValue(withoutImages) ? [EvalTasks.Report] : EvalTasks.All,
                BatchSize = parse.GetValue(batch),
                MaxStudies = parse.GetValue(maxStudies),
                WithoutImages = parse.GetValue(withoutImages),
            }.Validate();
            var loaded = ModelLocator.Load(parse.GetValue(model), parse.GetValue(dtype)!);
            // The decoding every front end uses, with this command's width and length: eval scores what `report` writes.
            options = options with
            {
                Generation = InferencePipeline.Decoding(loaded.Tokenizer) with { NumBeams = parse.GetValue(beams), MaxNewTokens = parse.GetValue(maxTokens) },
            };
            string outDir = parse.GetValue(output)!;
            bool labels = options.Tasks.Contains(EvalTasks.Labels);
            options = options with { Tasks = [.. options.Tasks.Where(t => t != EvalTasks.Labels)] };
            if (options.Tasks.Count > 0) await Generate(io, parse, loaded, options, manifest, outDir, cancel);
            if (labels) await LabelFiguresAsync(io, loaded, parse.GetValue(manifest)!, options, outDir, cancel);
            return 0;
        });
        return command;
    }

    /// <summary>The generation tasks: answers to every prompt, scored beside the baselines (report.md, predictions, plots).</summary>
    private static async Task Generate(CliIO io, System.CommandLine.ParseResult parse, XrayVL.IO.LoadedModel loaded, EvalOptions options,
        Option<string> manifest, string outDir, CancellationToken cancel)
    {
        EvalResult result = null!;
        await io.Ui.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .StartAsync(async ctx =>
            {
                var task = ctx.AddTask("generating", maxValue: 1);
                var progress = new Progress<(int Done, int Total)>(p =>
                {
                    task.MaxValue = Math.Max(1, p.Total);
                    task.Value = p.Done;
                });
                result = await Task.Run(() => new Evaluator(loaded).RunToFolder(parse.GetValue(manifest)!, outDir, options, progress, cancel), cancel);
                task.Value = task.MaxValue;
            });
        io.Out.WriteLine(File.ReadAllText(Path.Combine(outDir, "report.md")));
        // Name what was written: plots exist only for tasks that had something to plot.
        var names = result.Written.Select(Path.GetFileName).ToList();
        io.Err.WriteLine($"wrote {string.Join(", ", names)} in {outDir} ({result.Items.Count} items)");
    }

    /// <summary>`--tasks labels`: the classifier head's per-label figures (labels.md, labels.json) and every evaluated study's
    /// probabilities (label-scores.jsonl).</summary>
    private static async Task LabelFiguresAsync(CliIO io, XrayVL.IO.LoadedModel loaded, string manifestPath, EvalOptions options, string outDir,
        CancellationToken cancel)
    {
        var encoder = loaded.Model.VisionTower;
        using var head = FindingClassifier.Load(loaded.Directory, encoder.PooledDim)
            ?? throw new XrayVLException($"{loaded.Directory}: no {FindingClassifier.FileName}; per-label figures need a model trained with a vision stage");
        head.to(encoder.parameters().First().device);
        var studies = Manifest.Read(manifestPath);
        LabelEvaluationResult? result = null;
        await io.Ui.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .StartAsync(async ctx =>
            {
                var task = ctx.AddTask("scoring images", maxValue: 1);
                var progress = new Progress<(int Done, int Total)>(p =>
                {
                    task.MaxValue = Math.Max(1, p.Total);
                    task.Value = p.Done;
                });
                result = await Task.Run(() => LabelEvaluation.Run(encoder, head, loaded.Preprocess, studies, Splits.NormalizeName(options.Split)!,
                    options.BatchSize, options.MaxStudies, progress, cancel), cancel);
                task.Value = task.MaxValue;
            });
        Directory.CreateDirectory(outDir);
        string markdown = LabelEvaluation.Markdown(result!.Figures, options.Split);
        XrayVL.IO.AtomicFile.WriteAllText(Path.Combine(outDir, "labels.md"), markdown);
        XrayVL.IO.AtomicFile.WriteAllText(Path.Combine(outDir, "labels.json"), System.Text.Json.JsonSerializer.Serialize(result.Figures, Json.Options) + "\n");
        XrayVL.IO.AtomicFile.WriteAllText(Path.Combine(outDir, "label-scores.jsonl"),
            string.Concat(result.Studies.Select(s => System.Text.Json.JsonSerializer.Serialize(s, Json.Line) + "\n")));
        io.Out.WriteLine(markdown);
        io.Err.WriteLine($"wrote labels.md, labels.json, label-scores.jsonl in {outDir}");
    }
}
