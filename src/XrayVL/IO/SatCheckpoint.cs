using System.Text.Json;
using System.Text.RegularExpressions;
using TorchSharp;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.IO;

/// <summary>
/// A SwissArmyTransformer (SAT) checkpoint folder, as VisualGLM-6B and XrayGLM publish them:
/// <c>latest</c> (the iteration's folder name), <c>model_config.json</c> (the model's arguments) and
/// <c>&lt;iteration&gt;/mp_rank_00_model_states.pt</c>, a torch.save'd dict whose <c>module</c> entry is the state dict.
/// DeepSpeed-written files carry further top-level entries (iteration, RNG states, ...): only <c>module</c> is read, and
/// the pickle reader's allow-list refuses anything that would execute code.
/// </summary>
public sealed partial class SatCheckpoint
{
    public const string LatestFileName = "latest";
    public const string ConfigFileName = "model_config.json";
    public const string ModelStatesFileName = "mp_rank_00_model_states.pt";

    public string Directory { get; }
    /// <summary>The iteration named by <c>latest</c> (a folder name, usually a number).</summary>
    public string Iteration { get; }
    /// <summary>model_config.json as written by SAT (model_class, the model's arguments, nested eva_args/qformer_args, ...).</summary>
    public JsonElement ModelConfig { get; }

    public string ModelStatesPath => Path.Combine(Directory, Iteration, ModelStatesFileName);

    private SatCheckpoint(string directory, string iteration, JsonElement config) =>
        (Directory, Iteration, ModelConfig) = (directory, iteration, config);

    public static SatCheckpoint Open(string directory)
    {
        if (!System.IO.Directory.Exists(directory)) throw new XrayVLException($"{directory}: SAT checkpoint folder not found");
        string latest = Path.Combine(directory, LatestFileName), configPath = Path.Combine(directory, ConfigFileName);
        if (!File.Exists(latest)) throw new XrayVLException($"{directory}: no '{LatestFileName}' file: not a SAT checkpoint folder");
        if (!File.Exists(configPath)) throw new XrayVLException($"{directory}: no '{ConfigFileName}': not a SAT checkpoint folder");
        string iteration = File.ReadAllText(latest).Trim();
        if (iteration.Length == 0 || iteration.Contains('/') || iteration.Contains('\\') || iteration is "." or "..")
            throw new XrayVLException($"{latest}: names '{iteration}', not an iteration folder");
        JsonElement config;
        using (var document = Json.ReadDocument(configPath, "SAT model config")) config = document.RootElement.Clone();
        if (config.ValueKind != JsonValueKind.Object) throw new XrayVLException($"{configPath}: not a JSON object");
        var checkpoint = new SatCheckpoint(directory, iteration, config);
        if (!File.Exists(checkpoint.ModelStatesPath))
            throw new XrayVLException($"{directory}: '{LatestFileName}' names iteration '{iteration}' but {checkpoint.ModelStatesPath} is missing");
        return checkpoint;
    }

    /// <summary>The <c>module</c> state dict in float32 (SAT checkpoints are fp16 or bf16). The caller owns the tensors.</summary>
    public Dictionary<string, Tensor> ReadModule() =>
        TorchCheckpoint.LoadStateDict(ModelStatesPath, key: "module", castTo: ScalarType.Float32);

    /// <summary>
    /// The ChatGLM config in model_config.json. SAT writes the model's arguments at the top level (num_layers,
    /// hidden_size, ...) next to model_class; ChatGLM, VisualGLM and XrayGLM's fine-tuned class are the GLM models known.
    /// </summary>
    public GlmConfig GlmConfig()
    {
        string modelClass = ModelConfig.TryGetProperty("model_class", out var c) ? c.GetString() ?? "" : "";
        if (!KnownGlmClasses.Contains(modelClass))
            throw new XrayVLException($"{Directory}: model_class '{modelClass}' is not a ChatGLM-based SAT model ({string.Join(", ", KnownGlmClasses)})");
        GlmConfig? config;
        try { config = ModelConfig.Deserialize<GlmConfig>(Json.Options); }
        catch (JsonException e) { throw new XrayVLException($"{Path.Combine(Directory, ConfigFileName)}: {e.Message}"); }
        try { return (config ?? throw new XrayVLException("empty config")).Validate(); }
        catch (XrayVLException e) { throw new XrayVLException($"{Path.Combine(Directory, ConfigFileName)}: {e.Message}"); }
    }

    private static readonly string[] KnownGlmClasses = ["ChatGLMModel", "VisualGLMModel", "FineTuneVisualGLMModel"];

    /// <summary>
    /// Reads the folder's config and ChatGLM weights into a <see cref="GlmDecoder"/> in eval mode, LoRA merged; the vision
    /// side under `mixins.eva.` is skipped. Names go through the VisualGLM key table (<see cref="ToVisualGlm"/>) tensor by
    /// tensor into a decoder created in <paramref name="dtype"/>, so the peak is the decoder plus the largest tensor.
    /// <paramref name="mergedLora"/> names the merged layers (`transformer.layers.N.attention.…`).
    /// </summary>
    public GlmDecoder LoadGlmDecoder(out IReadOnlyList<string> mergedLora, ScalarType dtype = ScalarType.Float32)
    {
        var config = GlmConfig();
        // Built in float32 with its linears uninitialised (never written, so they take no memory), then converted: the
        // process's default dtype is global and is left alone.
        GlmDecoder decoder;
        using (Layers.SkipInitialisation()) decoder = new GlmDecoder(config);
        if (dtype != ScalarType.Float32) decoder.to(dtype);
        try
        {
            const string Prefix = "language_model.";
            var merged = new List<string>();
            using var file = TorchCheckpoint.Open(ModelStatesPath);
            var decoderTensors = file.ReadStateDict("module").Where(e =>
            {
                bool vision = e.Name.StartsWith("mixins.eva.", StringComparison.Ordinal);
                if (vision) e.Tensor.Dispose();
                return !vision;
            });
            ModuleWeights.StreamInto(decoder, ToVisualGlm(decoderTensors, new VisualGlmConfig { TextConfig = config }, SatLoraHandling.Merge, merged)
                .Select(e => (e.Name[Prefix.Length..], e.Tensor)), ModelStatesPath);
            mergedLora = [.. merged.Select(n => n[Prefix.Length..])];
            decoder.eval();
            return decoder;
        }
        catch
        {
            decoder.Dispose();
            throw;
        }
    }

    [GeneratedRegex(@"^(?<layer>transformer\.layers\.\d+\.attention\.(query_key_value|dense))\.(?<part>original|matrix_A|matrix_B)\.(?<kind>weight|bias|\d+)$")]
    private static partial Regex LoraKey();
}
