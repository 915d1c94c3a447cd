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

    // ------------------------------------------------------------------ SAT names → GlmDecoder names (the one key table)

    /// <summary>
    /// The GlmDecoder state dict from a SAT module: `transformer.*` keep their names; the LM head lives in SAT's
    /// `mixins.chatglm-final.lm_head.weight`; XrayGLM's LoRA layers store `….original.{weight,bias}` with
    /// `matrix_A.i` / `matrix_B.i`, which are merged into the weight (<see cref="XrayGlmLora"/>). Dropped: SAT's
    /// unused `transformer.position_embeddings.weight` (ChatGLM's position_embedding_forward returns None), the rotary
    /// `inv_freq` buffer (SAT ignores it on load and recomputes it), and the vision side under `mixins.eva.` (not
    /// a decoder part). Anything else is an error, so a new SAT layout is not silently half-loaded.
    /// The returned tensors are new or the module's own: dispose <paramref name="module"/> and the result both.
    /// </summary>
    public static Dictionary<string, Tensor> ToGlmDecoder(IReadOnlyDictionary<string, Tensor> module, GlmConfig config, out IReadOnlyList<string> mergedLora)
    {
        var result = new Dictionary<string, Tensor>();
        var merged = new List<string>();
        var loraParts = new Dictionary<string, (SortedDictionary<int, Tensor> A, SortedDictionary<int, Tensor> B)>();
        foreach (var (name, tensor) in module)
        {
            if (name is "transformer.position_embeddings.weight" or "mixins.chatglm-attn.rotary_emb.inv_freq" || name.StartsWith("mixins.eva.", StringComparison.Ordinal))
                continue;
            if (name == "mixins.chatglm-final.lm_head.weight") { result["lm_head.weight"] = tensor; continue; }
            var lora = LoraKey().Match(name);
            if (lora.Success)
            {
                string layer = lora.Groups["layer"].Value;
                if (lora.Groups["part"].Value == "original") result[$"{layer}.{lora.Groups["kind"].Value}"] = tensor;
                else
                {
                    if (!loraParts.TryGetValue(layer, out var parts)) loraParts[layer] = parts = (new(), new());
                    (lora.Groups["part"].Value == "matrix_A" ? parts.A : parts.B)[int.Parse(lora.Groups["kind"].Value)] = tensor;
                }
                continue;
            }
            if (name.StartsWith("transformer.", StringComparison.Ordinal)) { result[name] = tensor; continue; }
            throw new XrayVLException($"SAT checkpoint key '{name}' is not part of a ChatGLM decoder");
        }

        foreach (var (layer, (a, b)) in loraParts)
        {
            string weightKey = layer + ".weight";
            if (!result.TryGetValue(weightKey, out var weight)) throw new XrayVLException($"LoRA matrices for '{layer}' without its original weight");
            if (!a.Keys.SequenceEqual(b.Keys) || !a.Keys.SequenceEqual(Enumerable.Range(0, a.Count)))
                throw new XrayVLException($"'{layer}': LoRA partitions matrix_A [{string.Join(", ", a.Keys)}] and matrix_B [{string.Join(", ", b.Keys)}] do not pair up");
            // XrayGLM's LoraMixin builds its layers with lora_alpha = 1, so the scale is 1 / rank.
            double scaling = 1.0 / a[0].shape[0];
            bool fusedQkv = layer.EndsWith(".query_key_value", StringComparison.Ordinal);
            result[weightKey] = XrayGlmLora.Merge(weight, [.. a.Values], [.. b.Values], scaling, fusedQkv ? config.NumAttentionHeads : 0);
            merged.Add(layer);
        }
        if (config.TieWordEmbeddings) result.Remove("lm_head.weight");
        mergedLora = merged;
        return result;
    }

    /// <summary>Reads the folder's config and weights into a float32 <see cref="GlmDecoder"/> in eval mode, LoRA merged.</summary>
    public GlmDecoder LoadGlmDecoder(out IReadOnlyList<string> mergedLora)
    {
        var config = GlmConfig();
        var module = ReadModule();
        Dictionary<string, Tensor>? weights = null;
        try
        {
            weights = ToGlmDecoder(module, config, out mergedLora);
            var decoder = new GlmDecoder(config);
            ModuleWeights.LoadInto(decoder, weights);
            decoder.eval();
            return decoder;
        }
        finally
        {
            foreach (var t in module.Values) t.Dispose();
            if (weights is not null) foreach (var t in weights.Values) t.Dispose();
        }
    }

    [GeneratedRegex(@"^(?<layer>transformer\.layers\.\d+\.attention\.(query_key_value|dense))\.(?<part>original|matrix_A|matrix_B)\.(?<kind>weight|bias|\d+)$")]
    private static partial Regex LoraKey();
}
