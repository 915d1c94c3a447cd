using System.Globalization;
using System.Text.Json;
using TorchSharp;
using TorchSharp.Modules;
using XrayVL.Imaging;
using XrayVL.IO;
using XrayVL.Modeling;
using XrayVL.Text;
using static TorchSharp.torch;

namespace XrayVL.Training;

/// <summary>
/// Where a run stands, saved as <c>trainer_state.json</c> beside the model in every step checkpoint.
/// Everything else a resumed run needs is a pure function of these numbers and the recipe: the data order and the LoRA
/// dropout seed follow from (seed, stage, step), the learning rate from the schedule.
/// </summary>
public sealed record TrainerState
{
    public const int CurrentFormat = 1;

    public int FormatVersion { get; init; } = CurrentFormat;
    /// <summary><see cref="TrainRecipe.Fingerprint"/> of the recipe that wrote it: a different recipe cannot resume it.</summary>
    public required string RecipeFingerprint { get; init; }
    public required int StageIndex { get; init; }
    public required string StageName { get; init; }
    /// <summary>Optimizer steps done in the stage.</summary>
    public required long StageStep { get; init; }
    /// <summary>The stage's length in steps.</summary>
    public required long StageSteps { get; init; }
    public required long GlobalStep { get; init; }
    /// <summary>The stage's lowest validation loss so far and the global step it was measured at.</summary>
    public double? BestValLoss { get; init; }
    public long? BestGlobalStep { get; init; }
    public long TokensSeen { get; init; }
    public double ElapsedSeconds { get; init; }
    public int Seed { get; init; }
    public string Dtype { get; init; } = "";
    /// <summary>Parameter names the optimizer state covers, in the optimizer's order.</summary>
    public IReadOnlyList<string> TrainableParameters { get; init; } = [];

    public bool StageCompleted => StageStep >= StageSteps;
}

/// <summary>A checkpoint that belongs to another recipe or model: resuming from it (or an older one) cannot be right.</summary>
public sealed class CheckpointMismatchException(string message) : XrayVLException(message);

/// <summary>
/// Step checkpoints: OUT/checkpoints/step-N, each a complete model folder (<see cref="Checkpoint"/> layout: config.json,
/// model.safetensors with the base weights, tokenizer, preprocessor config) plus, when LoRA is training, the adapter in
/// <c>adapter/</c> (PEFT layout), <c>optimizer.safetensors</c> (AdamW's moments and step per parameter) and
/// <c>trainer_state.json</c>. A folder is written under a temporary name and renamed when complete.
/// </summary>
public static class TrainingCheckpoint
{
    public const string StateFileName = "trainer_state.json";
    public const string OptimizerFileName = "optimizer.safetensors";
    public const string AdapterFolderName = "adapter";
    private const string Prefix = "step-";

    /// <summary>Writes OUT/checkpoints/step-N atomically and returns its path.</summary>
    public static string Save(string checkpointsFolder, VisionLanguageModel master, XrayTokenizer tokenizer, PreprocessConfig preprocess,
        TrainerState state, AdamW optimizer, IReadOnlyList<(string Name, Parameter Parameter)> optimized, LoraConfig? lora)
    {
        string dir = Path.Combine(checkpointsFolder, Prefix + state.GlobalStep.ToString(CultureInfo.InvariantCulture));
        var weights = master.state_dict().Where(kv => !IsAdapterKey(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value);
        Checkpoint.Save(dir, master.Config, weights, tokenizer, preprocess,
            new Dictionary<string, string> { ["global_step"] = state.GlobalStep.ToString(CultureInfo.InvariantCulture) },
            writeExtra: tmp =>
            {
                if (lora is not null && Lora.Layers(master.LanguageModel).Any())
                    Lora.SaveAdapter(master.LanguageModel, lora, Path.Combine(tmp, AdapterFolderName));
                SafeTensors.Save(Path.Combine(tmp, OptimizerFileName), OptimizerTensors(optimizer, optimized),
                    new Dictionary<string, string> { ["optimizer"] = "AdamW", ["global_step"] = state.GlobalStep.ToString(CultureInfo.InvariantCulture) });
                AtomicFile.WriteAllText(Path.Combine(tmp, StateFileName),
                    JsonSerializer.Serialize(state with { TrainableParameters = optimized.Select(o => o.Name).ToList() }, Json.Options) + "\n");
            });
        return dir;
    }

    /// <summary>The weights a plain model folder should hold: LoRA adapters merged on the fly (the model is not changed).</summary>
    public static Dictionary<string, Tensor> ExportWeights(VisionLanguageModel model)
    {
        var weights = model.state_dict().Where(kv => !IsAdapterKey(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value);
        foreach (var (path, layer) in Lora.Layers(model.LanguageModel))
        {
            if (layer.IsMerged) continue;
            using var delta = layer.DeltaWeight();
            using var _ = no_grad();
            weights[$"language_model.{path}.weight"] = layer.Weight.add(delta.to(layer.Weight.dtype));
        }
        return weights;
    }

    /// <summary>Step checkpoint folders, newest first.</summary>
    public static List<(long Step, string Path)> List(string checkpointsFolder)
    {
        if (!Directory.Exists(checkpointsFolder)) return [];
        var found = new List<(long, string)>();
        foreach (string dir in Directory.GetDirectories(checkpointsFolder))
        {
            string name = Path.GetFileName(dir);
            if (name.StartsWith(Prefix, StringComparison.Ordinal) &&
                long.TryParse(name.AsSpan(Prefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out long step))
                found.Add((step, dir));
        }
        return found.OrderByDescending(f => f.Item1).ToList();
    }

    /// <summary>Removes step checkpoints beyond the newest <paramref name="keep"/>, and leftovers of interrupted saves.</summary>
    public static void Prune(string checkpointsFolder, int keep)
    {
        foreach (var (_, dir) in List(checkpointsFolder).Skip(keep)) Directory.Delete(dir, recursive: true);
        if (!Directory.Exists(checkpointsFolder)) return;
        foreach (string dir in Directory.GetDirectories(checkpointsFolder))
        {
            string name = Path.GetFileName(dir);
            if (name.Contains(".saving-", StringComparison.Ordinal) || name.Contains(".old-", StringComparison.Ordinal))
                try { Directory.Delete(dir, recursive: true); } catch (IOException) { /* another process may be writing it */ }
        }
    }

    /// <summary>
    /// Reads and checks a checkpoint's state: the files exist and their headers fit their sizes (a truncated or damaged file
    /// is an <see cref="XrayVLException"/> naming it), and the recipe fingerprint matches (else a mismatch error).
    /// </summary>
    public static TrainerState ReadState(string dir, string recipeFingerprint)
    {
        string statePath = Path.Combine(dir, StateFileName);
        if (!File.Exists(statePath)) throw new XrayVLException($"{dir}: damaged checkpoint: no {StateFileName}");
        var state = Json.Read<TrainerState>(statePath, "checkpoint state (damaged checkpoint)");
        if (state.FormatVersion != TrainerState.CurrentFormat)
            throw new XrayVLException($"{statePath}: checkpoint format {state.FormatVersion} is not supported (expected {TrainerState.CurrentFormat})");
        if (state.RecipeFingerprint != recipeFingerprint)
            throw new CheckpointMismatchException(
                $"{dir}: checkpoint was written by a different recipe (fingerprint {state.RecipeFingerprint}, this recipe {recipeFingerprint}): " +
                $"the model, data, seed or a stage's optimisation settings differ (the checkpoint was trained with seed {state.Seed}, dtype {state.Dtype}: " +
                "give --seed / --compute-dtype again if the run was started with them); restore the recipe or train into a new --out folder");
        foreach (string file in new[] { Checkpoint.WeightsFileName, OptimizerFileName })
        {
            string path = Path.Combine(dir, file);
            if (!File.Exists(path)) throw new XrayVLException($"{dir}: damaged checkpoint: no {file}");
            SafeTensors.ReadHeader(path);     // throws on a truncated or corrupt file, naming it
        }
        string adapter = Path.Combine(dir, AdapterFolderName, Lora.WeightsFileName);
        if (File.Exists(adapter)) SafeTensors.ReadHeader(adapter);
        return state;
    }

    /// <summary>Copies the checkpoint's base weights into <paramref name="master"/> (strict) and attaches its LoRA adapter if it has one.</summary>
    public static void LoadModel(string dir, VisionLanguageModel master, VisionLanguageConfig expected)
    {
        var config = ConfigFile.Read<VisionLanguageConfig>(Path.Combine(dir, Checkpoint.ConfigFileName));
        string want = JsonSerializer.Serialize(expected, Json.Line), have = JsonSerializer.Serialize(config, Json.Line);
        if (want != have)
            throw new CheckpointMismatchException($"{dir}: checkpoint model config differs from the one this run builds: {FirstDifference(have, want)}");
        Checkpoint.LoadWeights(dir, master, prefix: "");
        if (Directory.Exists(Path.Combine(dir, AdapterFolderName)))
            Lora.LoadAdapter(master.LanguageModel, Path.Combine(dir, AdapterFolderName));
    }

    /// <summary>Restores AdamW's moments and step counts; the parameters must be those the checkpoint was saved with.</summary>
    public static void LoadOptimizer(string dir, AdamW optimizer, IReadOnlyList<(string Name, Parameter Parameter)> optimized)
    {
        string path = Path.Combine(dir, OptimizerFileName);
        var tensors = SafeTensors.Load(path);
        try
        {
            var expected = optimized.SelectMany(o => new[] { $"exp_avg/{o.Name}", $"exp_avg_sq/{o.Name}", $"step/{o.Name}" }).ToHashSet();
            var missing = expected.Where(k => !tensors.ContainsKey(k)).ToList();
            var unexpected = tensors.Keys.Where(k => !expected.Contains(k)).ToList();
            if (missing.Count > 0 || unexpected.Count > 0)
                throw new XrayVLException($"{path}: optimizer state does not match the stage's trainable parameters " +
                                          $"({missing.Count} missing, e.g. {missing.FirstOrDefault()}; {unexpected.Count} unexpected, e.g. {unexpected.FirstOrDefault()})");
            var states = optimizer.state_dict().State;
            using var _ = no_grad();
            for (int i = 0; i < optimized.Count; i++)
            {
                var (name, parameter) = optimized[i];
                var state = (AdamW.State)states[i];
                var avg = tensors[$"exp_avg/{name}"];
                if (!avg.shape.SequenceEqual(parameter.shape))
                    throw new XrayVLException($"{path}: exp_avg/{name} has shape ({string.Join(", ", avg.shape)}) but the parameter has ({string.Join(", ", parameter.shape)})");
                state.exp_avg.copy_(avg);
                state.exp_avg_sq.copy_(tensors[$"exp_avg_sq/{name}"]);
                state.step = tensors[$"step/{name}"].item<long>();
            }
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    private static Dictionary<string, Tensor> OptimizerTensors(AdamW optimizer, IReadOnlyList<(string Name, Parameter Parameter)> optimized)
    {
        var states = optimizer.state_dict().State;
        if (states.Count != optimized.Count)
            throw new InvalidOperationException($"optimizer has {states.Count} states for {optimized.Count} parameters");
        var tensors = new Dictionary<string, Tensor>();
        for (int i = 0; i < optimized.Count; i++)
        {
            var state = (AdamW.State)states[i];
            tensors[$"exp_avg/{optimized[i].Name}"] = state.exp_avg;
            tensors[$"exp_avg_sq/{optimized[i].Name}"] = state.exp_avg_sq;
            tensors[$"step/{optimized[i].Name}"] = torch.tensor(new[] { state.step });
        }
        return tensors;
    }

    internal static bool IsAdapterKey(string key) =>
        key.Contains(".lora_A.", StringComparison.Ordinal) || key.Contains(".lora_B.", StringComparison.Ordinal);

    private static string FirstDifference(string have, string want)
    {
        int i = 0;
        while (i < have.Length && i < want.Length && have[i] == want[i]) i++;
        int start = Math.Max(0, have.LastIndexOf(',', Math.Max(0, Math.Min(i, have.Length - 1))) + 1);
        string Snip(string s) => s[Math.Min(start, s.Length)..Math.Min(s.Length, i + 30)];
        return $"checkpoint has …{Snip(have)}… where this run has …{Snip(want)}…";
    }
}
