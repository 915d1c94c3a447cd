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
    public static LoadedPipeline LoadPipeline(string? modelDir, string dtype = "fp32") =>
        LoadedPipeline.Load(Resolve(modelDir), WeightFormats.Parse(dtype));

    /// <summary>Loads the model for inference (no gradients anywhere), its weights held as <paramref name="dtype"/> (`--dtype`).</summary>
    public static LoadedModel Load(string? modelDir, string dtype = "fp32")
    {
        string dir = Resolve(modelDir);
        return WeightFormats.LoadForInference(dir, WeightFormats.Parse(dtype));
    }
}
