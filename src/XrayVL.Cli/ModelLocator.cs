using Spectre.Console;
using TorchSharp;
using XrayVL.Inference;
using XrayVL.IO;
using XrayVL.Kernels;

namespace XrayVL.Cli;

/// <summary>Finds the model folder a command should use: --model, else $XRAYVL_MODEL, else the shipped models/default.</summary>
public static class ModelLocator
{
    public const string DefaultRelative = "models/default";

    /// <summary>Where model folders come from, appended to every "not found".</summary>
    private const string HowToGetOne =
        "a model folder holds config.json, model.safetensors and the tokenizer: the shipped one is models/default, " +
        "`xrayvl train --config configs/default.json --out OUT` writes OUT/model";

    public static string Resolve(string? modelDir)
    {
        if (!string.IsNullOrWhiteSpace(modelDir))
        {
            if (!Directory.Exists(modelDir)) throw new XrayVLException($"{modelDir}: model folder not found ({HowToGetOne})");
            // A training run's folder (`train --out DIR`) holds the model one level down, in DIR/model.
            string inner = Path.Combine(modelDir, "model");
            if (!File.Exists(Path.Combine(modelDir, Checkpoint.ConfigFileName)) && File.Exists(Path.Combine(inner, Checkpoint.ConfigFileName)))
                throw new XrayVLException($"{modelDir}: a training run folder, not a model folder; its model is {inner} (pass --model {inner})");
            return modelDir;
        }
        string? env = Environment.GetEnvironmentVariable("XRAYVL_MODEL");
        if (!string.IsNullOrWhiteSpace(env))
        {
            if (!Directory.Exists(env)) throw new XrayVLException($"{env} (from XRAYVL_MODEL): model folder not found ({HowToGetOne})");
            return env;
        }
        // The shipped model sits at the repository root, above src/XrayVL.Cli/bin/... or the working folder.
        if (RepositoryFiles.Find(Path.Combine(DefaultRelative, Checkpoint.ConfigFileName)) is { } config) return Path.GetDirectoryName(config)!;
        throw new XrayVLException(
            $"no model given and no default model found ({DefaultRelative}/ is missing): pass --model DIR with a checkpoint " +
            "folder, e.g. OUT/model written by `xrayvl train --config configs/default.json --out OUT`");
    }

    /// <summary>
    /// The inference pipeline over the model folder the command uses, whatever its family (an XrayGLM import or any
    /// other), its weights held as <paramref name="dtype"/> (`--dtype`); one generation at a time.
    /// </summary>
    public static LoadedPipeline LoadPipeline(CliIO io, string? modelDir, string dtype = "fp32")
    {
        string dir = Resolve(modelDir);
        var format = WeightFormats.Parse(dtype);
        return WithLoadingBar(io, dir, format, progress => LoadedPipeline.Load(dir, format, progress: progress));
    }

    /// <summary>Weights at least this large get a progress bar while they load (a 7B model takes minutes; small ones a second).</summary>
    public const long LoadingBarBytes = 512L << 20;

    /// <summary>
    /// Runs <paramref name="load"/> (which reports bytes read and bytes in all) under a progress bar on stderr when the
    /// folder's weight files are large (on a terminal; a redirected stderr gets a line before and after); otherwise just runs it.
    /// </summary>
    public static T WithLoadingBar<T>(CliIO io, string dir, WeightFormat format, Func<Action<long, long>, T> load)
    {
        long bytes = WeightBytes(dir);
        if (bytes < LoadingBarBytes) return load((_, _) => { });
        string description = $"loading {Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir)))} " +
                             $"({bytes / 1e9:0.0} GB of weights as {format.Name()})";
        if (!io.Ui.Profile.Capabilities.Interactive)
        {
            // A log (stderr redirected) gets two lines instead of a bar it cannot redraw.
            io.Err.WriteLine(description + " ...");
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var loaded = load((_, _) => { });
            io.Err.WriteLine($"loaded in {clock.Elapsed.TotalSeconds:0.0} s");
            return loaded;
        }
        T result = default!;
        io.Ui.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(description, maxValue: bytes);
                result = load((done, total) =>
                {
                    task.MaxValue = Math.Max(1, total);
                    task.Value = done;
                });
                task.Value = task.MaxValue;
            });
        return result;
    }

    /// <summary>Bytes of the folder's weight files (safetensors and PyTorch files, and an adapter's).</summary>
    private static long WeightBytes(string dir) =>
        new[] { dir, Path.Combine(dir, "adapter") }.Where(Directory.Exists)
            .SelectMany(d => Directory.EnumerateFiles(d).Where(f => f.EndsWith(".safetensors", StringComparison.Ordinal) || f.EndsWith(".bin", StringComparison.Ordinal)))
            .Sum(f => new FileInfo(f).Length);

    /// <summary>Loads the model for inference (no gradients anywhere), its weights held as <paramref name="dtype"/> (`--dtype`).</summary>
    public static LoadedModel Load(string? modelDir, string dtype = "fp32")
    {
        string dir = Resolve(modelDir);
        return WeightFormats.LoadForInference(dir, WeightFormats.Parse(dtype));
    }
}
