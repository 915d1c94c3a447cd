// LoRA (Hu et al. 2021) as the PEFT library applies it, over TorchSharp modules.
//
// Design: adapters live INSIDE the layers they adapt, never as replacement modules.
//   In TorchSharp a module's forward calls its C# fields, so swapping a registered child with register_module
//   changes the state dict but not what forward runs. Instead every linear layer that LoRA may target is an
//   AdaptableLinear (AdaptableLinear.cs): it has nn.Linear's keys `weight` (out, in) / `bias` (out), so Hugging Face
//   checkpoints load unchanged, and Lora.Inject attaches an optional pair `lora_A` (r, in) / `lora_B` (out, r) to it.
//   Model code (LanguageModel, VisionEncoder, ...) therefore creates its projections as
//       private readonly AdaptableLinear q_proj = new(hidden, heads * headDim, hasBias: false);
//   and calls them like any module; nothing in the model changes when an adapter is attached, merged or removed.
//
// Keys: with an adapter attached, a layer at path `model.layers.0.self_attn.q_proj` has state-dict keys
//   `...q_proj.weight`, `...q_proj.lora_A.weight`, `...q_proj.lora_B.weight`. PEFT's adapter file stores
//   `base_model.model.<path>.lora_A.weight` / `.lora_B.weight` (adapter name "default" dropped, base weights omitted);
//   SaveAdapter/LoadAdapter translate between the two.
//
// Order of use: build the model, load base weights (ModuleWeights.LoadInto, strict), move it to its device/dtype,
// then Lora.Inject or Lora.LoadAdapter. Adapters are created on the base weight's device, in float32 under a
// bf16/fp16 base; a later module.to(dtype) would convert them too.
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using TorchSharp;
using XrayVL.IO;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

/// <summary>
/// LoRA settings, field for field the <c>adapter_config.json</c> that PEFT writes (snake_case through <see cref="Json.Options"/>).
/// Defaults are PEFT's, so a config file that omits a field reads as PEFT would read it.
/// Fields PEFT has but XrayVL does not implement are read so that a non-default value is rejected, not silently ignored.
/// </summary>
public sealed record LoraConfig
{
    public string PeftType { get; init; } = "LORA";
    /// <summary>PEFT's task label, e.g. "CAUSAL_LM"; informational here.</summary>
    public string? TaskType { get; init; } = "CAUSAL_LM";
    public string? BaseModelNameOrPath { get; init; }
    /// <summary>Rank r of each adapter (PEFT default 8).</summary>
    public int R { get; init; } = 8;
    /// <summary>Scale numerator: updates are multiplied by alpha / r (PEFT default 8).</summary>
    public double LoraAlpha { get; init; } = 8;
    /// <summary>Dropout on the adapter's input during training (PEFT default 0).</summary>
    public double LoraDropout { get; init; }
    /// <summary>Which layers get adapters; PEFT has no usable default, so it must be given.</summary>
    public LoraTargetModules? TargetModules { get; init; }
    /// <summary>Which biases train: only "none" is supported (PEFT default).</summary>
    public string Bias { get; init; } = "none";
    /// <summary>True only for GPT-2 style Conv1D weights stored (in, out); not supported.</summary>
    public bool FanInFanOut { get; init; }
    /// <summary>Rank-stabilised LoRA: scale alpha / √r instead of alpha / r.</summary>
    public bool UseRslora { get; init; }
    /// <summary>PEFT writes true when saving; informational here.</summary>
    public bool InferenceMode { get; init; }
    // PEFT features not implemented: accepted only at their defaults.
    public bool UseDora { get; init; }
    public IReadOnlyList<string>? ModulesToSave { get; init; }
    public IReadOnlyDictionary<string, int>? RankPattern { get; init; }
    public IReadOnlyDictionary<string, double>? AlphaPattern { get; init; }
    public JsonElement? LayersToTransform { get; init; }

    /// <summary>The factor applied to B A x.</summary>
    [JsonIgnore]
    public double Scale => UseRslora ? LoraAlpha / Math.Sqrt(R) : LoraAlpha / R;

    /// <summary>Throws <see cref="XrayVLException"/> naming <paramref name="source"/> (a file, or "LoRA config") for any invalid value.</summary>
    public LoraConfig Validate(string source = "LoRA config")
    {
        void Fail(string message) => throw new XrayVLException($"{source}: {message}");

        if (PeftType != "LORA") Fail($"peft_type is '{PeftType}', expected 'LORA'");
        if (R <= 0) Fail($"r must be positive, got {R}");
        if (!(LoraAlpha > 0) || double.IsInfinity(LoraAlpha)) Fail($"lora_alpha must be positive, got {LoraAlpha}");
        if (!(LoraDropout >= 0 && LoraDropout < 1)) Fail($"lora_dropout must be in [0, 1), got {LoraDropout}");
        if (TargetModules is null) Fail("target_modules is missing (e.g. [\"q_proj\", \"v_proj\"])");
        TargetModules!.Validate(source);
        if (Bias != "none") Fail($"bias '{Bias}' is not supported (only 'none')");
        if (FanInFanOut) Fail("fan_in_fan_out = true (Conv1D weights) is not supported");
        if (UseDora) Fail("use_dora = true (DoRA) is not supported");
        if (ModulesToSave is { Count: > 0 }) Fail($"modules_to_save ({string.Join(", ", ModulesToSave)}) is not supported");
        if (RankPattern is { Count: > 0 }) Fail("rank_pattern (per-layer ranks) is not supported");
        if (AlphaPattern is { Count: > 0 }) Fail("alpha_pattern (per-layer alphas) is not supported");
        if (LayersToTransform is { ValueKind: not JsonValueKind.Null and not JsonValueKind.Undefined })
            Fail("layers_to_transform is not supported");
        return this;
    }
}

/// <summary>
/// PEFT's <c>target_modules</c>: either a list of names (a module matches when its dotted path equals a name or ends
/// with "." + name) or one string, a regular expression that must match the whole dotted path.
/// The string "all-linear" (as in PEFT) selects every <see cref="AdaptableLinear"/> except an output head named lm_head.
/// </summary>
[JsonConverter(typeof(LoraTargetModulesJsonConverter))]
public sealed class LoraTargetModules
{
    public const string AllLinearKeyword = "all-linear";

    private Regex? regex;

    private LoraTargetModules(IReadOnlyList<string>? names, string? pattern) => (Names, Pattern) = (names, pattern);

    /// <summary>The list form; null in the regex form.</summary>
    public IReadOnlyList<string>? Names { get; }
    /// <summary>The single-string form; null in the list form.</summary>
    public string? Pattern { get; }
    public bool IsAllLinear => Pattern == AllLinearKeyword;

    public static LoraTargetModules Named(params string[] names) => new(names.ToArray(), null);
    public static LoraTargetModules Matching(string pattern) => new(null, pattern);
    public static LoraTargetModules AllLinear { get; } = new(null, AllLinearKeyword);

    internal void Validate(string source)
    {
        if (Names is not null)
        {
            if (Names.Count == 0 || Names.Any(string.IsNullOrWhiteSpace))
                throw new XrayVLException($"{source}: target_modules must name at least one module, and no empty names");
            return;
        }
        if (string.IsNullOrEmpty(Pattern))
            throw new XrayVLException($"{source}: target_modules pattern is empty");
        if (!IsAllLinear) _ = GetRegex(source);
    }

    /// <summary>Whether the module at dotted path <paramref name="moduleName"/> is targeted (by name; the caller checks its type).</summary>
    public bool Matches(string moduleName)
    {
        if (Names is not null)
            return Names.Any(n => moduleName == n || moduleName.EndsWith("." + n, StringComparison.Ordinal));
        if (IsAllLinear)
            return moduleName != "lm_head" && !moduleName.EndsWith(".lm_head", StringComparison.Ordinal);
        return GetRegex("target_modules").IsMatch(moduleName);
    }

    private Regex GetRegex(string source)
    {
        try
        {
            // Python's re.fullmatch: anchor both ends. Timeout: a pathological pattern must not hang injection.
            return regex ??= new Regex($@"\A(?:{Pattern})\z", RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
        }
        catch (ArgumentException e)
        {
            throw new XrayVLException($"{source}: target_modules pattern '{Pattern}' is not a valid regular expression ({e.Message})", e);
        }
    }

    public override string ToString() => Names is not null ? "[" + string.Join(", ", Names) + "]" : $"'{Pattern}'";
}

/// <summary>Reads/writes <see cref="LoraTargetModules"/> as PEFT does: a JSON array of names or a single string.</summary>
public sealed class LoraTargetModulesJsonConverter : JsonConverter<LoraTargetModules>
{
    public override LoraTargetModules Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.String)
            return LoraTargetModules.Matching(reader.GetString()!);
        if (reader.TokenType != JsonTokenType.StartArray)
            throw new JsonException("target_modules must be a list of module names or a regular-expression string");
        var names = new List<string>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.String)
                throw new JsonException("target_modules list must hold strings");
            names.Add(reader.GetString()!);
        }
        return LoraTargetModules.Named([.. names]);
    }

    public override void Write(Utf8JsonWriter writer, LoraTargetModules value, JsonSerializerOptions options)
    {
        if (value.Names is null)
        {
            writer.WriteStringValue(value.Pattern);
            return;
        }
        writer.WriteStartArray();
        foreach (string name in value.Names) writer.WriteStringValue(name);
        writer.WriteEndArray();
    }
}

/// <summary>Injects, merges, saves and loads LoRA adapters on a module tree built from <see cref="AdaptableLinear"/> layers.</summary>
public static class Lora
{
    public const string ConfigFileName = "adapter_config.json";
    public const string WeightsFileName = "adapter_model.safetensors";
    /// <summary>PEFT prefixes every adapter key with the path of the wrapped model inside its PeftModel.</summary>
    public const string PeftKeyPrefix = "base_model.model.";

    /// <summary>
    /// The dotted paths of the layers <paramref name="config"/> targets, in module order. Throws <see cref="XrayVLException"/>
    /// when nothing matches, or when a matching module is not an <see cref="AdaptableLinear"/> (it could not carry an adapter).
    /// </summary>
    public static IReadOnlyList<string> FindTargets(nn.Module root, LoraConfig config)
    {
        config.Validate();
        var targets = config.TargetModules!;
        var found = new List<string>();
        foreach (var (name, module) in root.named_modules())
        {
            if (!targets.Matches(name)) continue;
            if (module is AdaptableLinear)
                found.Add(name);
            else if (!targets.IsAllLinear)
                throw new XrayVLException(
                    $"module '{name}' matches target_modules {targets} but is a {module.GetType().Name}; " +
                    "LoRA can only adapt AdaptableLinear layers");
        }
        if (found.Count == 0)
            throw new XrayVLException($"no layer of {root.GetType().Name} matches target_modules {targets}");
        return found;
    }

    /// <summary>
    /// Attaches a fresh adapter (A kaiming-uniform, B zero) to every targeted layer, then freezes the whole model except
    /// the adapters: afterwards only <c>*.lora_A.weight</c> / <c>*.lora_B.weight</c> require gradients.
    /// Returns the dotted paths of the adapted layers.
    /// </summary>
    public static IReadOnlyList<string> Inject(nn.Module root, LoraConfig config)
    {
        EnsureNoAdapters(root);
        var names = FindTargets(root, config);
        var layers = root.named_modules().ToDictionary(m => m.name, m => m.module);
        foreach (string name in names)
            ((AdaptableLinear)layers[name]).AttachLora(config.R, config.Scale, config.LoraDropout);

        foreach (var parameter in root.parameters())
            parameter.requires_grad = false;
        foreach (var (_, layer) in Layers(root))
        {
            layer.LoraA!.requires_grad = true;
            layer.LoraB!.requires_grad = true;
        }
        return names;
    }

    /// <summary>The layers that carry an adapter, with their dotted paths.</summary>
    public static IEnumerable<(string Name, AdaptableLinear Layer)> Layers(nn.Module root) =>
        root.named_modules()
            .Where(m => m.module is AdaptableLinear { HasLora: true })
            .Select(m => (m.name, (AdaptableLinear)m.module));

    /// <summary>Folds every adapter into its base weight (W += B A · scale); forward then costs what the base model costs.</summary>
    public static void Merge(nn.Module root)
    {
        foreach (var (_, layer) in Layers(root)) layer.Merge();
    }

    /// <summary>Undoes <see cref="Merge"/> on every adapted layer.</summary>
    public static void Unmerge(nn.Module root)
    {
        foreach (var (_, layer) in Layers(root)) layer.Unmerge();
    }

    /// <summary>Merges every adapter for good and removes it: the model is a plain model again (e.g. to export full weights).</summary>
    public static void MergeAndUnload(nn.Module root)
    {
        foreach (var (_, layer) in Layers(root).ToList()) layer.MergeAndUnload();
    }

    /// <summary>The adapter weights under PEFT's key names: <c>base_model.model.&lt;path&gt;.lora_A.weight</c> / <c>.lora_B.weight</c>.</summary>
    public static Dictionary<string, Tensor> AdapterState(nn.Module root)
    {
        var state = new Dictionary<string, Tensor>();
        foreach (var (name, layer) in Layers(root))
        {
            state[PeftKey(name, "lora_A")] = layer.LoraA!;
            state[PeftKey(name, "lora_B")] = layer.LoraB!;
        }
        return state;
    }

    /// <summary>Writes a PEFT adapter folder: adapter_config.json and adapter_model.safetensors (only the adapter weights).</summary>
    public static void SaveAdapter(nn.Module root, LoraConfig config, string directory)
    {
        config.Validate();
        var state = AdapterState(root);
        if (state.Count == 0)
            throw new XrayVLException($"{root.GetType().Name} has no LoRA adapters to save to {directory}");
        Directory.CreateDirectory(directory);
        SafeTensors.Save(Path.Combine(directory, WeightsFileName), state, new Dictionary<string, string> { ["format"] = "pt" });
        string json = JsonSerializer.Serialize(config with { InferenceMode = true }, Json.Options);
        AtomicFile.WriteAllText(Path.Combine(directory, ConfigFileName), json + "\n");
    }

    /// <summary>Reads and validates <c>adapter_config.json</c> in <paramref name="directory"/>.</summary>
    public static LoraConfig ReadConfig(string directory)
    {
        string path = Path.Combine(directory, ConfigFileName);
        return Json.Read<LoraConfig>(path, "adapter config").Validate(path);
    }

    /// <summary>
    /// Loads a PEFT adapter folder into <paramref name="root"/>: injects adapters per its config and copies the weights.
    /// The file's keys and shapes are checked against the targeted layers before the model is touched; any missing,
    /// unexpected or mis-shaped key throws <see cref="XrayVLException"/> listing them.
    /// </summary>
    public static LoraConfig LoadAdapter(nn.Module root, string directory)
    {
        EnsureNoAdapters(root);
        var config = ReadConfig(directory);
        string weightsPath = Path.Combine(directory, WeightsFileName);
        if (!File.Exists(weightsPath))
            throw new XrayVLException($"{weightsPath}: adapter weights not found");

        // Expected keys and shapes, from the targeted layers, before anything is attached.
        var layers = root.named_modules().ToDictionary(m => m.name, m => m.module);
        var expected = new Dictionary<string, long[]>();
        foreach (string name in FindTargets(root, config))
        {
            var layer = (AdaptableLinear)layers[name];
            expected[PeftKey(name, "lora_A")] = [config.R, layer.InFeatures];
            expected[PeftKey(name, "lora_B")] = [layer.OutFeatures, config.R];
        }
        var header = SafeTensors.ReadHeader(weightsPath);
        var present = header.Tensors.ToDictionary(t => t.Name, t => t.Shape);
        var report = new LoadReport(
            Loaded: [],
            Missing: expected.Keys.Where(k => !present.ContainsKey(k)).ToList(),
            Unexpected: present.Keys.Where(k => !expected.ContainsKey(k)).Order(StringComparer.Ordinal).ToList(),
            ShapeMismatches: expected.Where(e => present.TryGetValue(e.Key, out var shape) && !shape.SequenceEqual(e.Value))
                .Select(e => $"{e.Key}: checkpoint {ModuleWeights.FormatShape(present[e.Key])} vs model {ModuleWeights.FormatShape(e.Value)}")
                .ToList());
        if (!report.IsComplete)
            throw new XrayVLException($"{weightsPath}: adapter does not fit {root.GetType().Name}: {ModuleWeights.Describe(report)}");

        Inject(root, config);
        var tensors = SafeTensors.Load(weightsPath);
        try
        {
            using var _ = torch.no_grad();
            foreach (var (name, layer) in Layers(root))
            {
                layer.LoraA!.copy_(tensors[PeftKey(name, "lora_A")]);
                layer.LoraB!.copy_(tensors[PeftKey(name, "lora_B")]);
            }
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
        return config;
    }

    private static string PeftKey(string layerPath, string part) => $"{PeftKeyPrefix}{layerPath}.{part}.weight";

    private static void EnsureNoAdapters(nn.Module root)
    {
        if (Layers(root).Any())
            throw new XrayVLException($"{root.GetType().Name} already has LoRA adapters; call Lora.MergeAndUnload first");
    }
}
