using System.Text.RegularExpressions;
using TorchSharp;
using XrayVL.Imaging;
using XrayVL.Modeling;
using XrayVL.Text;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;
using static TorchSharp.torch;

namespace XrayVL.IO;

/// <summary>
/// The released files of a seed system, as `xrayvl import` takes them: the EVA ViT-g weights (`eva_vit_g.pth`), the
/// BLIP-2 Q-Former file (XrayGPT only), the Hugging Face folder of the language model (Vicuna / LLaMA-2-chat) and the
/// stage checkpoint (`ckpt:`) holding the trained projection (and MiniGPT-Med's LoRA).
/// </summary>
public sealed record SeedImportRequest
{
    /// <summary>"xraygpt" or "minigpt_med" (see <see cref="SeedImport.Families"/>).</summary>
    public required string Family { get; init; }
    public required string Eva { get; init; }
    /// <summary>BLIP-2's `blip2_pretrained_flant5xxl.pth` (`q_former_model:`); XrayGPT only.</summary>
    public string? QFormer { get; init; }
    /// <summary>The language model's Hugging Face folder (`llama_model:`): config.json, weights, tokenizer.model.</summary>
    public required string Llama { get; init; }
    /// <summary>The stage checkpoint (`ckpt:`): `{"model": ...}` with llama_proj (and LoRA) weights.</summary>
    public required string Checkpoint { get; init; }
    /// <summary>Input size; null: the family's (XrayGPT 224, MiniGPT-Med 448). EVA's positions are resized to it.</summary>
    public int? ImageSize { get; init; }
    /// <summary>Q-Former queries (`num_query_token:`); null: as many as the file holds.</summary>
    public int? NumQueryTokens { get; init; }
    /// <summary>EVA attention heads: not readable from the weights' shapes; null means ViT-g's head width 88.</summary>
    public int? EvaHeads { get; init; }
    /// <summary>Q-Former attention heads: null means BERT-base's head width 64.</summary>
    public int? QFormerHeads { get; init; }
    /// <summary>LoRA rank and alpha (`lora_r:` / `lora_alpha:`); MiniGPT-Med's are 64 and 16.</summary>
    public int LoraR { get; init; } = 64;
    public double LoraAlpha { get; init; } = 16;
    /// <summary>dtype of every stored tensor; null keeps each file's own (LoRA-merged layers are stored in float32).</summary>
    public ScalarType? DType { get; init; }
}

/// <summary>
/// Converts a seed system's released files into an XrayVL model folder (config.json naming the parts,
/// model.safetensors, tokenizer.model + tokenizer_config.json, prompt_format.json, preprocessor_config.json) that
/// <see cref="Checkpoint.Load"/> and every front end read like any other. Tensors are streamed: each is read from its
/// file, renamed (and LoRA-merged, or its positions resized), written and released before the next, so an import holds
/// one tensor at a time, never the whole model.
/// </summary>
public static partial class SeedImport
{
    /// <summary>What each family is made of (the model registry's entries for the seeds' own systems).</summary>
    public sealed record FamilySpec(string Name, string Arch, int ImageSize, bool HasQFormer, string ProjectorType,
        string SelectStrategy, PromptFormat Format, bool HasLora);

    public static IReadOnlyList<string> Families { get; } = ["xraygpt", "minigpt_med"];

    /// <summary>The family's parts; throws on an unknown name.</summary>
    public static FamilySpec Spec(string family) => family switch
    {
        // MiniGPT-4: EVA (all 257 tokens, CLS included) → ln_vision → Q-Former (32 queries) → llama_proj → Vicuna.
        "xraygpt" => new("xraygpt", "mini_gpt4", 224, HasQFormer: true, "linear", "full", PromptFormat.XrayGpt, HasLora: false),
        // MiniGPT-v2: EVA at 448 px → ln_vision → CLS dropped, 4 consecutive tokens concatenated → llama_proj → LLaMA-2-chat + LoRA.
        "minigpt_med" => new("minigpt_med", "minigpt_v2", 448, HasQFormer: false, "merge4", "default", PromptFormat.MiniGptMed, HasLora: true),
        _ => throw new XrayVLException($"seed family '{family}' is not known ({string.Join(", ", Families)})"),
    };

    // ---------------------------------------------------------------- the seeds' yaml

    // Keys of a seed's `model:` section that only training or the seed's GPU set-up read; they change nothing here.
    private static readonly HashSet<string> InertYamlKeys =
    [
        "model_type", "drop_path_rate", "use_grad_checkpoint", "vit_precision", "freeze_vit", "freeze_qformer", "prompt",
        "max_txt_len", "end_sym", "low_resource", "prompt_path", "prompt_template", "chat_template", "quantize_bins",
        "device_8bit", "lora_dropout",
    ];

    /// <summary>
    /// A request from a seed's eval yaml (`model:` section: arch, llama_model, q_former_model, ckpt, image_size,
    /// num_query_token, lora_r, lora_alpha; image_size may also come from a `vis_processor`). Relative paths are
    /// resolved against the working folder as the seeds do, then against the yaml's folder and its parent.
    /// Options given on the command line (<paramref name="overrides"/>) win over the yaml.
    /// </summary>
    public static SeedImportRequest FromYaml(string yamlPath, string expectedFamily, SeedPaths overrides)
    {
        if (!File.Exists(yamlPath)) throw new XrayVLException($"{yamlPath}: config file not found");
        YamlMappingNode model;
        YamlMappingNode root;
        try
        {
            var stream = new YamlStream();
            using (var reader = new StringReader(File.ReadAllText(yamlPath))) stream.Load(reader);
            root = stream.Documents.FirstOrDefault()?.RootNode as YamlMappingNode
                   ?? throw new XrayVLException($"{yamlPath}: not a YAML mapping");
            model = Child(root, "model") as YamlMappingNode ?? throw new XrayVLException($"{yamlPath}: no `model:` section");
        }
        catch (YamlException e) { throw new XrayVLException($"{yamlPath}: not valid YAML ({e.Message})"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new XrayVLException($"{yamlPath}: cannot be read ({e.Message})", e); }

        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (keyNode, valueNode) in model.Children)
        {
            string key = (keyNode as YamlScalarNode)?.Value ?? "";
            if (valueNode is YamlScalarNode { Value: { } v }) values[key] = v;
            else if (!InertYamlKeys.Contains(key)) throw new XrayVLException($"{yamlPath}: model.{key} is not a plain value");
        }
        string arch = values.GetValueOrDefault("arch") ?? throw new XrayVLException($"{yamlPath}: model.arch is missing");
        string family = arch switch
        {
            "mini_gpt4" => "xraygpt",
            "minigpt_v2" => "minigpt_med",
            _ => throw new XrayVLException($"{yamlPath}: model.arch '{arch}' is not supported (mini_gpt4 for XrayGPT, minigpt_v2 for MiniGPT-Med)"),
        };
        if (family != expectedFamily)
            throw new XrayVLException($"{yamlPath}: model.arch '{arch}' is a {family} model, not {expectedFamily} (use `xrayvl import {family.Replace('_', '-')}`)");
        string[] read = ["arch", "llama_model", "q_former_model", "ckpt", "image_size", "num_query_token", "lora_r", "lora_alpha", "has_qformer"];
        foreach (string key in values.Keys)
            if (!read.Contains(key) && !InertYamlKeys.Contains(key))
                throw new XrayVLException($"{yamlPath}: model.{key} is not understood by XrayVL and could change the model; refusing rather than ignoring it");
        if (values.TryGetValue("has_qformer", out var hasQ) && hasQ.Trim().ToLowerInvariant() is not ("true" or "yes"))
            throw new XrayVLException($"{yamlPath}: model.has_qformer false (MiniGPT-4 without Q-Former) is not supported");

        string yamlDir = Path.GetDirectoryName(Path.GetFullPath(yamlPath))!;
        string? PathOf(string key) => values.TryGetValue(key, out var p) && !string.IsNullOrWhiteSpace(p) ? ResolvePath(p, yamlDir) : null;
        int? IntOf(string key) => values.TryGetValue(key, out var s)
            ? int.TryParse(s, out int n) && n > 0 ? n : throw new XrayVLException($"{yamlPath}: model.{key} '{s}' is not a positive integer")
            : null;
        int? imageSize = IntOf("image_size") ?? ProcessorImageSize(root);
        string eva = overrides.Eva ?? FindBeside("eva_vit_g.pth", yamlDir)
            ?? throw new XrayVLException($"{yamlPath}: the seeds download eva_vit_g.pth at run time and their yaml does not name it: pass --eva FILE");
        return new SeedImportRequest
        {
            Family = family,
            Eva = eva,
            QFormer = overrides.QFormer ?? PathOf("q_former_model"),
            Llama = overrides.Llama ?? PathOf("llama_model") ?? throw new XrayVLException($"{yamlPath}: model.llama_model is missing: pass --llama DIR"),
            Checkpoint = overrides.Checkpoint ?? PathOf("ckpt") ?? throw new XrayVLException($"{yamlPath}: model.ckpt is missing: pass --ckpt FILE"),
            ImageSize = overrides.ImageSize ?? imageSize,
            NumQueryTokens = IntOf("num_query_token"),
            LoraR = IntOf("lora_r") ?? 64,
            LoraAlpha = IntOf("lora_alpha") ?? 16,
            EvaHeads = overrides.EvaHeads,
            QFormerHeads = overrides.QFormerHeads,
            DType = overrides.DType,
        };
    }

    /// <summary>Paths and sizes given on the command line.</summary>
    public sealed record SeedPaths(string? Eva, string? QFormer, string? Llama, string? Checkpoint, int? ImageSize,
        int? EvaHeads, int? QFormerHeads, ScalarType? DType);

    private static YamlNode? Child(YamlMappingNode node, string key) =>
        node.Children.TryGetValue(new YamlScalarNode(key), out var child) ? child : null;

    /// <summary>The first `image_size` under datasets.*.vis_processor.* (the seeds' eval yamls put it there).</summary>
    private static int? ProcessorImageSize(YamlMappingNode root)
    {
        if (Child(root, "datasets") is not YamlMappingNode datasets) return null;
        foreach (var (_, dataset) in datasets.Children)
            if (dataset is YamlMappingNode d && Child(d, "vis_processor") is YamlMappingNode processors)
                foreach (var (_, processor) in processors.Children)
                    if (processor is YamlMappingNode p && Child(p, "image_size") is YamlScalarNode { Value: { } v } && int.TryParse(v, out int n))
                        return n;
        return null;
    }

    private static string ResolvePath(string path, string yamlDir)
    {
        if (Path.IsPathRooted(path)) return path;
        foreach (string root in new[] { Directory.GetCurrentDirectory(), yamlDir, Path.GetDirectoryName(yamlDir) ?? yamlDir })
        {
            string candidate = Path.GetFullPath(Path.Combine(root, path));
            if (File.Exists(candidate) || Directory.Exists(candidate)) return candidate;
        }
        return path;
    }

    private static string? FindBeside(string name, string yamlDir) =>
        new[] { Path.Combine(Directory.GetCurrentDirectory(), name), Path.Combine(yamlDir, name) }.FirstOrDefault(File.Exists);

    // ---------------------------------------------------------------- import

    /// <summary>One tensor of a source file, not yet read.</summary>
    private sealed record SourceTensor(string File, long[] Shape, ScalarType Type, Func<Tensor> Read);

    [GeneratedRegex(@"^blocks\.(\d+)\.")]
    private static partial Regex EvaBlock();

    [GeneratedRegex(@"^Qformer\.bert\.encoder\.layer\.(\d+)\.")]
    private static partial Regex QFormerLayer();

    [GeneratedRegex(@"^(?:base_model\.model\.)?(model\.layers\.\d+\.self_attn\.[qkvo]_proj)\.lora_([AB])(?:\.default)?\.weight$")]
    private static partial Regex LoraKey();

    /// <summary>What an import did: the folder, the tensors written, and keys of the files the seed model ignores too.</summary>
    public sealed record ImportResult(string Directory, VisionLanguageConfig Config, int Tensors, long Bytes, IReadOnlyList<string> Ignored);

    /// <summary>
    /// Writes the model folder <paramref name="outDir"/> (atomically: a temporary sibling renamed over it).
    /// <paramref name="progress"/> is told (tensors written, tensors in all) after each tensor.
    /// </summary>
    public static ImportResult Import(SeedImportRequest request, string outDir, IProgress<(int Done, int Total)>? progress = null)
    {
        var spec = Spec(request.Family);
        var opened = new List<IDisposable>();
        try
        {
            // 1. Every source tensor under the seed model's own key (MiniGPT-4's module names), later files overriding
            //    earlier ones as the seeds' load_state_dict(strict=False) calls do: EVA, BLIP-2, the LLM folder, the stage checkpoint.
            var sources = new Dictionary<string, SourceTensor>(StringComparer.Ordinal);
            var eva = OpenTorch(request.Eva, null, opened);
            foreach (var (name, t) in eva) sources["visual_encoder." + name] = t;
            if (spec.HasQFormer)
            {
                string qPath = request.QFormer ?? throw new XrayVLException($"{spec.Name} needs the BLIP-2 Q-Former file (--qformer, or q_former_model in the yaml)");
                foreach (var (name, t) in OpenTorch(qPath, "model", opened)) sources[name] = t;
            }
            else if (request.QFormer is not null)
                throw new XrayVLException($"{spec.Name} has no Q-Former; --qformer does not apply");
            foreach (var (name, t) in OpenLanguageModel(request.Llama, opened)) sources["llama_model." + name] = t;
            var stage = OpenTorch(request.Checkpoint, "model", opened);
            var lora = new Dictionary<string, (SourceTensor? A, SourceTensor? B)>(StringComparer.Ordinal);
            var ignored = new List<string>();
            foreach (var (name, t) in stage)
            {
                string inner = name.StartsWith("llama_model.", StringComparison.Ordinal) ? name["llama_model.".Length..] : "";
                if (LoraKey().Match(inner) is { Success: true } m)
                {
                    if (!spec.HasLora) { ignored.Add(name); continue; }
                    var pair = lora.GetValueOrDefault(m.Groups[1].Value);
                    lora[m.Groups[1].Value] = m.Groups[2].Value == "A" ? (t, pair.B) : (pair.A, t);
                }
                else if (inner.Length > 0)
                    sources["llama_model." + (inner.StartsWith("base_model.model.", StringComparison.Ordinal) ? inner["base_model.model.".Length..] : inner)] = t;
                else sources[name] = t;
            }

            // 2. The composed config, its sizes read from the files' shapes.
            var config = BuildConfig(spec, request, sources);
            var expected = ExpectedVisionAndProjector(config);

            // 3. The output layout: XrayVL key → how to produce it.
            var layout = new List<(string Name, ScalarType Type, long[] Shape)>();
            var produce = new Dictionary<string, Func<Tensor>>(StringComparer.Ordinal);
            ScalarType Stored(ScalarType source) => request.DType ?? source;
            void Add(string name, long[] shape, ScalarType type, Func<Tensor> make)
            {
                layout.Add((name, type, shape));
                produce[name] = () => { var t = make(); return t.dtype == type ? t : Replace(t, t.to(type)); };
            }

            foreach (var (key, shape) in expected)
            {
                string seedKey = SeedKey(key);
                if (!sources.Remove(seedKey, out var source))
                {
                    // MiniGPT-v2 never saves ln_vision (frozen at its initial weight 1, bias 0).
                    if (!spec.HasQFormer && seedKey is "ln_vision.weight" or "ln_vision.bias")
                    {
                        bool weight = seedKey.EndsWith("weight", StringComparison.Ordinal);
                        Add(key, shape, request.DType ?? ScalarType.Float32, () => weight ? torch.ones(shape) : torch.zeros(shape));
                        continue;
                    }
                    throw new XrayVLException($"{spec.Name}: no file holds '{seedKey}' (needed as {key})");
                }
                if (key.EndsWith("visual_encoder.pos_embed", StringComparison.Ordinal) && !source.Shape.SequenceEqual(shape))
                {
                    int grid = config.VisionConfig.ImageSize / config.VisionConfig.PatchSize;
                    Add(key, shape, Stored(source.Type), () =>
                    {
                        using var saved = source.Read();
                        return EvaVisionTransformer.InterpolatePositionEmbedding(saved.to(ScalarType.Float32), grid);
                    });
                    continue;
                }
                if (!source.Shape.SequenceEqual(shape))
                    throw new XrayVLException($"{source.File}: '{seedKey}' has shape ({string.Join(", ", source.Shape)}), {spec.Name} at these sizes needs ({string.Join(", ", shape)})");
                Add(key, shape, Stored(source.Type), source.Read);
            }
            foreach (var (seedKey, source) in sources.Where(s => s.Key.StartsWith("llama_model.", StringComparison.Ordinal)).ToList())
            {
                sources.Remove(seedKey);
                string name = seedKey["llama_model.".Length..];
                if (name.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal)) continue;   // recomputed from rope_theta
                if (name == "lm_head.0.weight") name = "lm_head.weight";                        // peft 0.2.0's CastOutputToFloat wrapper
                if (source.Type is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float64)) { ignored.Add(seedKey); continue; }
                string key = "language_model." + name;
                string layer = name.EndsWith(".weight", StringComparison.Ordinal) ? name[..^".weight".Length] : "";
                if (lora.Remove(layer, out var pair))
                {
                    var (a, b) = (pair.A ?? throw new XrayVLException($"{request.Checkpoint}: LoRA of {layer} has lora_B but no lora_A"),
                                  pair.B ?? throw new XrayVLException($"{request.Checkpoint}: LoRA of {layer} has lora_A but no lora_B"));
                    if (a.Shape[0] != request.LoraR)
                        throw new XrayVLException($"{request.Checkpoint}: LoRA of {layer} has rank {a.Shape[0]}, the config says lora_r {request.LoraR}");
                    if (a.Shape[1] != source.Shape[1] || b.Shape[0] != source.Shape[0] || b.Shape[1] != a.Shape[0])
                        throw new XrayVLException($"{request.Checkpoint}: LoRA of {layer} does not fit its weight ({string.Join(", ", source.Shape)})");
                    double scale = request.LoraAlpha / request.LoraR;
                    // Merged once here: W + (alpha / r) · B A equals peft's unmerged W x + B (A x) · scale; float32 keeps the update's precision.
                    Add(key, source.Shape, request.DType ?? ScalarType.Float32, () =>
                    {
                        using var scope = torch.NewDisposeScope();
                        using var w = source.Read();
                        using var la = a.Read();
                        using var lb = b.Read();
                        var merged = w.to(ScalarType.Float32) + scale * torch.matmul(lb.to(ScalarType.Float32), la.to(ScalarType.Float32));
                        return merged.MoveToOuterDisposeScope();
                    });
                    continue;
                }
                Add(key, source.Shape, Stored(source.Type), source.Read);
            }
            if (lora.Count > 0)
                throw new XrayVLException($"{request.Checkpoint}: LoRA weights for {string.Join(", ", lora.Keys.Take(3))} match no layer of the language model");
            // What is left is what the seed model drops too (BERT's text embeddings and FFN, position_ids, cls head, ...).
            ignored.AddRange(sources.Keys);

            // 4. The folder.
            var tokenizer = XrayTokenizer.Load(request.Llama);
            tokenizer.UsePromptFormat(spec.Format);
            if (tokenizer.FileVocabSize > config.TextConfig.VocabSize)
                throw new XrayVLException($"{request.Llama}: tokenizer has {tokenizer.FileVocabSize} tokens but vocab_size is {config.TextConfig.VocabSize}");
            string full = Path.GetFullPath(Path.TrimEndingDirectorySeparator(outDir));
            string tmp = full + ".importing-" + Environment.ProcessId;
            if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
            Directory.CreateDirectory(tmp);
            try
            {
                ConfigFile.Write(Path.Combine(tmp, Checkpoint.ConfigFileName), config);
                int done = 0;
                var metadata = new Dictionary<string, string> { ["format"] = "pt", ["imported_from"] = spec.Name };
                SafeTensors.SaveStreamed(Path.Combine(tmp, Checkpoint.WeightsFileName), layout, name => produce[name](), metadata,
                    _ => progress?.Report((++done, layout.Count)));
                tokenizer.Save(tmp);
                ConfigFile.Write(Path.Combine(tmp, Checkpoint.PreprocessorFileName), PreprocessConfig.Clip(config.VisionConfig.ImageSize));
            }
            catch
            {
                try { Directory.Delete(tmp, recursive: true); } catch (IOException) { /* best effort */ }
                throw;
            }
            AtomicFile.ReplaceDirectory(tmp, full);
            long bytes = layout.Sum(e => e.Shape.Aggregate(1L, (n, d) => n * d) * SafeTensors.ElementSize(e.Type));
            return new ImportResult(full, config, layout.Count, bytes, ignored);
        }
        finally
        {
            foreach (var d in opened) d.Dispose();
        }
    }

    private static Tensor Replace(Tensor old, Tensor replacement)
    {
        old.Dispose();
        return replacement;
    }

    /// <summary>The seed model's key for an XrayVL key of the vision tower or projector (the family key table).</summary>
    private static string SeedKey(string key) => key switch
    {
        _ when key.StartsWith("vision_tower.", StringComparison.Ordinal) => key["vision_tower.".Length..],
        _ when key.StartsWith("multi_modal_projector.linear_1.", StringComparison.Ordinal) => "llama_proj." + key["multi_modal_projector.linear_1.".Length..],
        _ => throw new XrayVLBugException($"no seed key for '{key}'"),
    };

    /// <summary>Keys and shapes of the vision tower and projector the config describes (built on the meta device: no memory).</summary>
    private static List<(string Key, long[] Shape)> ExpectedVisionAndProjector(VisionLanguageConfig config)
    {
        using var tower = VisionEncoder.Create(config, torch.META);
        using var projector = Projector.Create(config.ProjectorType, tower.OutputDim, config.TextConfig.HiddenSize, torch.META);
        try { projector.OutputTokens(tower.NumTokens); }   // MiniGPT-v2's groups of 4 must divide the patch tokens
        catch (XrayVLException e) { throw new XrayVLException($"image size {config.VisionConfig.ImageSize}: {e.Message}"); }
        return [.. tower.state_dict().Select(kv => ("vision_tower." + kv.Key, kv.Value.shape)),
                .. projector.state_dict().Select(kv => ("multi_modal_projector." + kv.Key, kv.Value.shape))];
    }

    private static VisionLanguageConfig BuildConfig(FamilySpec spec, SeedImportRequest request, Dictionary<string, SourceTensor> sources)
    {
        long[] Shape(string key, string what) => sources.TryGetValue(key, out var t) ? t.Shape
            : throw new XrayVLException($"no '{key}' in the {what} file: not the file {spec.Name} expects");
        int width = (int)Shape("visual_encoder.cls_token", "EVA")[2];
        int patch = (int)Shape("visual_encoder.patch_embed.proj.weight", "EVA")[2];
        int depth = sources.Keys.Select(k => k.StartsWith("visual_encoder.", StringComparison.Ordinal) ? EvaBlock().Match(k["visual_encoder.".Length..]) : Match.Empty)
            .Where(m => m.Success).Select(m => int.Parse(m.Groups[1].Value) + 1).DefaultIfEmpty(0).Max();
        int mlp = (int)Shape("visual_encoder.blocks.0.mlp.fc1.weight", "EVA")[0];
        int heads = request.EvaHeads ?? (width % 88 == 0 ? width / 88
            : throw new XrayVLException($"EVA width {width} is not ViT-g's (1408): give its attention heads with --eva-heads"));
        int imageSize = request.ImageSize ?? spec.ImageSize;
        QFormerConfig? qformer = null;
        if (spec.HasQFormer)
        {
            long[] queries = Shape("query_tokens", "Q-Former");
            int hidden = (int)queries[2];
            int layers = sources.Keys.Select(k => QFormerLayer().Match(k)).Where(m => m.Success)
                .Select(m => int.Parse(m.Groups[1].Value) + 1).DefaultIfEmpty(0).Max();
            int[] cross = [.. Enumerable.Range(0, layers).Where(i => sources.ContainsKey($"Qformer.bert.encoder.layer.{i}.crossattention.self.query.weight"))];
            int freq = cross.Length >= 2 ? cross[1] - cross[0] : layers;
            if (cross.Length == 0 || cross[0] != 0 || !cross.SequenceEqual(Enumerable.Range(0, layers).Where(i => i % freq == 0)))
                throw new XrayVLException($"Q-Former cross-attention layers ({string.Join(", ", cross)}) are not every k-th layer from 0");
            if (request.NumQueryTokens is { } n && n != queries[1])
                throw new XrayVLException($"num_query_token is {n} but the Q-Former file holds {queries[1]} query tokens");
            qformer = new QFormerConfig
            {
                HiddenSize = hidden,
                NumHiddenLayers = layers,
                NumAttentionHeads = request.QFormerHeads ?? (hidden % 64 == 0 ? hidden / 64
                    : throw new XrayVLException($"Q-Former width {hidden} is not BERT-base's (768): give its attention heads with --qformer-heads")),
                IntermediateSize = (int)Shape("Qformer.bert.encoder.layer.0.intermediate_query.dense.weight", "Q-Former")[0],
                EncoderWidth = (int)Shape("Qformer.bert.encoder.layer.0.crossattention.self.key.weight", "Q-Former")[1],
                CrossAttentionFreq = freq,
                NumQueryTokens = (int)queries[1],
            };
        }
        var text = ConfigFile.Read<LanguageModelConfig>(Path.Combine(request.Llama, Checkpoint.ConfigFileName));
        var vision = new VisionConfig
        {
            ModelType = spec.HasQFormer ? "eva_vit_g_qformer" : "eva_vit_g",
            ImageSize = imageSize,
            NumChannels = 3,
            PatchSize = patch,
            HiddenSize = width,
            IntermediateSize = mlp,
            NumHiddenLayers = depth,
            NumAttentionHeads = heads,
            LayerNormEps = 1e-6,
            HiddenAct = "gelu",
            QformerConfig = qformer,
        };
        var config = new VisionLanguageConfig
        {
            ModelType = "xrayvl",
            VisionConfig = vision,
            TextConfig = text,
            ProjectorType = spec.ProjectorType,
            VisionFeatureLayer = -1,
            VisionFeatureSelectStrategy = spec.SelectStrategy,
            ImageTokenIndex = spec.Format.ImageTokenId,
            FreezeVision = true,
        };
        try { return config.Validate(); }
        catch (XrayVLException e) { throw new XrayVLException($"{spec.Name} at image size {imageSize}: {e.Message}"); }
    }

    /// <summary>A PyTorch file's state dict (at <paramref name="key"/>), tensors not yet read.</summary>
    private static Dictionary<string, SourceTensor> OpenTorch(string path, string? key, List<IDisposable> opened)
    {
        if (!File.Exists(path)) throw new XrayVLException($"{path}: file not found");
        var checkpoint = TorchCheckpoint.Open(path);
        opened.Add(checkpoint);
        return checkpoint.StateDictEntries(key).ToDictionary(e => e.Name,
            e => new SourceTensor(path, e.Tensor.Shape, e.Tensor.Storage.DType, () => checkpoint.ReadTensor(e.Tensor)), StringComparer.Ordinal);
    }

    /// <summary>A Hugging Face folder's weights (safetensors or PyTorch, single or sharded), tensors not yet read.</summary>
    private static Dictionary<string, SourceTensor> OpenLanguageModel(string dir, List<IDisposable> opened)
    {
        if (!Directory.Exists(dir)) throw new XrayVLException($"{dir}: language model folder not found");
        var files = Checkpoint.WeightFiles(dir);
        var all = new Dictionary<string, SourceTensor>(StringComparer.Ordinal);
        foreach (string file in files)
        {
            if (file.EndsWith(".safetensors", StringComparison.Ordinal))
            {
                foreach (var info in SafeTensors.ReadHeader(file).Tensors)
                    all[info.Name] = new SourceTensor(file, info.Shape, SafeTensors.ScalarTypeOf(info.DType),
                        () => SafeTensors.Load(file, [info.Name])[info.Name]);
            }
            else
                foreach (var (name, t) in OpenTorch(file, null, opened)) all[name] = t;
        }
        return all;
    }
}
