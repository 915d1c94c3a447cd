using System.Text.Json.Nodes;
using TorchSharp;
using XrayVL.Kernels;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.IO;

/// <summary>One stored tensor of a checkpoint folder, as the file headers describe it before any data is read.</summary>
/// <param name="Key">Its name in the file.</param>
/// <param name="File">The file (safetensors or PyTorch) that holds it.</param>
/// <param name="StorageBytes">Bytes read to get it: the tensor itself, or for a PyTorch file its whole storage.</param>
public sealed record StoredTensor(string Key, string File, ScalarType DType, long[] Shape, long StorageBytes);

/// <summary>What <see cref="ModelLoading.LoadInto"/> did.</summary>
/// <param name="Tensors">Tensors copied into the model.</param>
/// <param name="Quantized">Float tensors quantized on the way into an int8/int4 layer.</param>
/// <param name="ReadInPlace">Tensors read from the file straight into the model's own memory (same dtype, no workspace).</param>
/// <param name="FileBytes">Bytes read from the files.</param>
/// <param name="PeakWorkspaceBytes">Largest transient the loader held at once: one tensor (or PyTorch storage) in its stored dtype.</param>
public sealed record StreamedLoadReport(int Tensors, int Quantized, int ReadInPlace, long FileBytes, long PeakWorkspaceBytes);

/// <summary>
/// Loads a checkpoint folder straight into the dtype inference runs in. The model is first built in the target format
/// (the default dtype set to bf16 while its constructors run, and with int8/int4 each language-model linear quantized as
/// soon as it exists), then the folder's files are read one tensor at a time: a tensor stored in the model's own dtype
/// is read from the file directly into the parameter's memory; any other is read into a workspace of its stored dtype,
/// cast (or quantized) into place and freed before the next. Peak memory is therefore the model in its target format plus
/// one stored tensor, never a float32 copy of the model and never the file twice.
/// Folders: model.safetensors, its shards (model.safetensors.index.json), pytorch_model.bin or its shards
/// (pytorch_model.bin.index.json), the latter read without executing the pickle (<see cref="TorchCheckpoint"/>).
/// </summary>
public static class ModelLoading
{
    /// <summary>A composed model folder (<see cref="Checkpoint.LoadModel"/>'s layouts) in <paramref name="format"/>, for inference.</summary>
    public static VisionLanguageModel LoadModel(string dir, WeightFormat format, Action<long, long>? progress = null)
    {
        RequireFolder(dir, "model");
        var config = ConfigFile.Read<VisionLanguageConfig>(Path.Combine(dir, Checkpoint.ConfigFileName));
        // Only the language model is quantized: the vision tower and projector stay in the compute dtype.
        var model = Build(format, languageModelOnly: true, () => new VisionLanguageModel(config), initialise: false);
        try
        {
            bool tied = config.TextConfig.TieWordEmbeddings;
            LoadInto(dir, model, keys =>
            {
                var rename = HfLayouts.ModuleKeyOf(keys);
                // A tied head reuses the embeddings; a stored copy of it has no place in the model.
                return key =>
                {
                    string renamed = rename(key);
                    return (tied && renamed == "language_model.lm_head.weight") || IsRopeTable(renamed) ? null : renamed;
                };
            }, progress);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>A Hugging Face LlamaForCausalLM / Qwen2ForCausalLM / MistralForCausalLM folder in <paramref name="format"/>.</summary>
    public static LanguageModel LoadLanguageModel(string dir, WeightFormat format, Action<long, long>? progress = null)
    {
        RequireFolder(dir, "language model");
        var config = ConfigFile.Read<LanguageModelConfig>(Path.Combine(dir, Checkpoint.ConfigFileName));
        var model = Build(format, languageModelOnly: false, () => new LanguageModel(config), initialise: false);
        try
        {
            bool tied = config.TieWordEmbeddings;
            LoadInto(dir, model, _ => key => (tied && key == "lm_head.weight") || IsRopeTable(key) ? null : key, progress);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// `…self_attn.rotary_emb.inv_freq`: transformers before 4.31 saved LLaMA's RoPE frequencies as a buffer (Vicuna and
    /// LLaMA-2 checkpoints of that time carry them); they follow from the config, and the decoder computes them itself.
    /// </summary>
    private static bool IsRopeTable(string key) => key.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal);

    /// <summary>
    /// Runs <paramref name="create"/> with the default dtype set to the format's compute dtype and (int8/int4) linear layers
    /// quantized on creation; the result is in eval mode with no gradients. torch's default dtype is process-wide: tensors
    /// other threads create meanwhile take it too, so models are built before serving starts, never beside other work.
    /// Without <paramref name="initialise"/> the weights are left unwritten (the loaders, which then fill every one from
    /// the files and refuse a folder that lacks any): drawing 6.7 B random values only to overwrite them took minutes.
    /// </summary>
    public static T Build<T>(WeightFormat format, bool languageModelOnly, Func<T> create, bool initialise = true) where T : nn.Module
    {
        var previous = torch.get_default_dtype();
        torch.set_default_dtype(format.ComputeDType());
        T model;
        try
        {
            using var _ = Layers.QuantizeLinearsOnCreation(format.LinearQuantization(), languageModelOnly);
            using var skip = initialise ? null : Layers.SkipInitialisation();
            model = create();
        }
        finally
        {
            torch.set_default_dtype(previous);
        }
        model.eval();
        foreach (var p in model.parameters()) p.requires_grad = false;
        return model;
    }

    /// <summary>
    /// The weight files of a folder in reading order, and whether they are PyTorch files: model.safetensors, the shards
    /// model.safetensors.index.json lists, pytorch_model.bin, or the shards of pytorch_model.bin.index.json (first found).
    /// With an index, <paramref name="indexed"/> is its weight map (tensor → shard file).
    /// </summary>
    public static (IReadOnlyList<string> Files, bool Torch) WeightFiles(string dir, out IReadOnlyDictionary<string, string>? indexed)
    {
        indexed = null;
        string single = Path.Combine(dir, Checkpoint.WeightsFileName);
        if (File.Exists(single)) return ([single], false);
        string index = Path.Combine(dir, Checkpoint.WeightsIndexFileName);
        if (File.Exists(index)) return (Shards(dir, index, out indexed), false);
        string torchSingle = Path.Combine(dir, Checkpoint.TorchWeightsFileName);
        if (File.Exists(torchSingle)) return ([torchSingle], true);
        string torchIndex = Path.Combine(dir, Checkpoint.TorchWeightsIndexFileName);
        if (File.Exists(torchIndex)) return (Shards(dir, torchIndex, out indexed), true);
        throw new XrayVLException($"{dir}: no {Checkpoint.WeightsFileName}, {Checkpoint.WeightsIndexFileName}, " +
                                  $"{Checkpoint.TorchWeightsFileName} or {Checkpoint.TorchWeightsIndexFileName}");
    }

    private static List<string> Shards(string dir, string index, out IReadOnlyDictionary<string, string>? weightMap)
    {
        if (Json.ReadObject(index, "shard index")["weight_map"] is not JsonObject entries) throw new XrayVLException($"{index}: no weight_map");
        var byName = new Dictionary<string, string>();
        foreach (var (name, value) in entries)
        {
            if (value is not JsonValue v || !v.TryGetValue<string>(out var shard))
                throw new XrayVLException($"{index}: weight_map entry '{name}' is not a file name");
            byName[name] = shard;
        }
        var files = new List<string>();
        foreach (string shard in byName.Values.Distinct())
        {
            string path = Path.Combine(dir, shard);
            if (!File.Exists(path)) throw new XrayVLException($"{index}: lists shard {shard}, which is missing");
            files.Add(path);
        }
        weightMap = byName;
        return files;
    }

    /// <summary>Every tensor of the folder's weight files, described from their headers (no tensor data is read).</summary>
    public static IReadOnlyList<StoredTensor> Describe(string dir) => Describe(dir, out _, out _);

    private static List<StoredTensor> Describe(string dir, out IReadOnlyList<string> files, out bool isTorch)
    {
        (files, isTorch) = WeightFiles(dir, out var indexed);
        var all = new List<StoredTensor>();
        foreach (string file in files)
        {
            if (isTorch)
            {
                using var checkpoint = TorchCheckpoint.Open(file);
                foreach (var (name, info) in checkpoint.StateDictEntries())
                    all.Add(new StoredTensor(name, file, info.DType, info.Shape, info.Storage.ByteLength));
            }
            else
            {
                foreach (var info in SafeTensors.ReadHeader(file).Tensors)
                    all.Add(new StoredTensor(info.Name, file, info.ScalarType, info.Shape, info.ByteLength));
            }
        }
        if (indexed is not null)
        {
            var present = all.Select(t => (t.Key, t.File)).ToHashSet();
            foreach (var (name, shard) in indexed)
                if (!present.Contains((name, Path.Combine(dir, shard))))
                    throw new XrayVLException($"{dir}: the index maps '{name}' to {shard}, which does not hold it");
        }
        return all;
    }

    /// <summary>
    /// Streams the folder's tensors into <paramref name="module"/>'s parameters and buffers, in whatever dtype and format
    /// the module holds them. <paramref name="keyMap"/> gets every stored name first and returns the renaming (a null
    /// name drops the tensor). All names, shapes and dtypes are checked against the module before any data is read:
    /// missing, unexpected or mismatched keys are refused in one message naming them. A float tensor bound for a Q8_0 or
    /// Q4_0 layer is quantized on the way in; a quantized tensor only loads into a layer of its own format.
    /// <paramref name="progress"/> gets (bytes read, bytes in all) after each tensor.
    /// </summary>
    public static StreamedLoadReport LoadInto(string dir, nn.Module module, Func<IReadOnlyCollection<string>, Func<string, string?>> keyMap,
        Action<long, long>? progress = null)
    {
        var stored = Describe(dir, out var files, out bool isTorch);
        Func<string, string?> map;
        try { map = keyMap(stored.Select(t => t.Key).ToList()); }
        catch (XrayVLException e) { throw new XrayVLException($"{dir}: {e.Message}"); }

        // The last file that holds a key wins (an index names one shard per key; a stray duplicate is overridden).
        var plan = new Dictionary<string, StoredTensor>();
        foreach (var t in stored)
            if (map(t.Key) is { } key) plan[key] = t;

        var targets = module.state_dict();
        var quantized = module.named_modules()
            .Where(m => m.module is AdaptableLinear { IsQuantized: true })
            .ToDictionary(m => m.name + ".weight", m => (AdaptableLinear)m.module);
        Check(dir, module, plan, targets, quantized);

        long total = plan.Values.Sum(t => t.StorageBytes), done = 0, peak = 0;
        int count = 0, quantizedCount = 0, inPlace = 0;
        using var noGrad = torch.no_grad();

        void Place(string key, StoredTensor info, Tensor source)
        {
            var target = targets[key];
            if (quantized.TryGetValue(key, out var linear) && source.is_floating_point())
            {
                linear.QuantizeInto(source);
                quantizedCount++;
            }
            else target.copy_(source);
            peak = Math.Max(peak, info.StorageBytes);
        }

        foreach (string file in files)
        {
            try { ReadFile(file); }
            catch (IOException e) { throw new XrayVLException($"{file}: cannot read the checkpoint ({e.Message})", e); }
        }
        return new StreamedLoadReport(count, quantizedCount, inPlace, total, peak);

        void ReadFile(string file)
        {
            // Stored name → module key, for the tensors this file is the source of.
            var keys = plan.Where(p => p.Value.File == file).ToDictionary(p => p.Value.Key, p => p.Key);
            if (isTorch)
            {
                using var checkpoint = TorchCheckpoint.Open(file);
                foreach (var (name, tensor) in checkpoint.ReadStateDict())
                {
                    using var _ = tensor;
                    if (!keys.TryGetValue(name, out var key)) continue;
                    Place(key, plan[key], tensor);
                    count++;
                    progress?.Invoke(done += plan[key].StorageBytes, total);
                }
                return;
            }
            var header = SafeTensors.ReadHeader(file);
            using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16);
            foreach (var entry in header.Tensors)
            {
                if (!keys.TryGetValue(entry.Name, out var key)) continue;
                var target = targets[key];
                stream.Position = header.DataStart + entry.Begin;
                if (target.dtype == entry.ScalarType && target.is_contiguous())
                {
                    // Same dtype: the file's bytes go straight into the parameter's memory.
                    using var flat = target.view(-1);
                    if (!SafeTensors.ReadInto(flat, stream, entry.ElementCount, SafeTensors.ElementSize(entry.ScalarType)))
                        throw new XrayVLException($"{file}: truncated safetensors file: tensor '{entry.Name}' ends early");
                    inPlace++;
                }
                else
                {
                    using var workspace = torch.empty(entry.Shape, entry.ScalarType);
                    using (var flat = workspace.view(-1))
                        if (!SafeTensors.ReadInto(flat, stream, entry.ElementCount, SafeTensors.ElementSize(entry.ScalarType)))
                            throw new XrayVLException($"{file}: truncated safetensors file: tensor '{entry.Name}' ends early");
                    Place(key, plan[key], workspace);
                }
                count++;
                progress?.Invoke(done += entry.ByteLength, total);
            }
        }
    }

    /// <summary>Refuses a folder that does not fit the module, before any tensor data is read.</summary>
    private static void Check(string dir, nn.Module module, Dictionary<string, StoredTensor> plan,
        IReadOnlyDictionary<string, Tensor> targets, Dictionary<string, AdaptableLinear> quantized)
    {
        var missing = new List<string>();
        var mismatched = new List<string>();
        foreach (var (key, target) in targets)
        {
            if (plan.ContainsKey(key)) continue;
            // A quantized layer's scales come from quantizing its float weight when the file stores that.
            if (key.EndsWith(".weight_scale", StringComparison.Ordinal)
                && plan.TryGetValue(key[..^"_scale".Length], out var weight) && IsFloat(weight.DType)) continue;
            missing.Add(key);
        }
        foreach (var (key, info) in plan)
        {
            if (!targets.TryGetValue(key, out var target)) continue;
            string shape = ModuleWeights.FormatShape(info.Shape), targetShape = ModuleWeights.FormatShape(target.shape);
            const string OwnFormat = " (a quantized checkpoint loads only with its own --dtype)";
            if (quantized.TryGetValue(key, out var linear) && IsFloat(info.DType))
            {
                if (info.Shape.Length != 2 || info.Shape[0] != linear.OutFeatures || info.Shape[1] != linear.InFeatures)
                    mismatched.Add($"{key}: checkpoint {shape} vs model ({linear.OutFeatures}, {linear.InFeatures})");
            }
            else if (!IsFloat(info.DType) && (info.DType != target.dtype || !info.Shape.SequenceEqual(target.shape)))
                mismatched.Add($"{key}: checkpoint holds {info.DType} {shape}, the model {target.dtype} {targetShape}" +
                               (quantized.ContainsKey(key) || target.is_floating_point() ? OwnFormat : ""));
            else if (!info.Shape.SequenceEqual(target.shape))
                mismatched.Add($"{key}: checkpoint {shape} vs model {targetShape}");
            else if (IsFloat(info.DType) && !target.is_floating_point())
                mismatched.Add($"{key}: checkpoint holds {info.DType}, the model {target.dtype}");
        }
        var unexpected = plan.Keys.Where(k => !targets.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var report = new LoadReport([], missing, unexpected, mismatched);
        if (!report.IsComplete)
            throw new XrayVLException($"{dir}: checkpoint does not fit {module.GetType().Name}: " + ModuleWeights.Describe(report));
    }

    private static bool IsFloat(ScalarType type) =>
        type is ScalarType.Float32 or ScalarType.Float64 or ScalarType.Float16 or ScalarType.BFloat16;

    private static void RequireFolder(string dir, string what)
    {
        if (!Directory.Exists(dir)) throw new XrayVLException($"{dir}: {what} folder not found");
        if (!File.Exists(Path.Combine(dir, Checkpoint.ConfigFileName))) throw new XrayVLException($"{dir}: no {Checkpoint.ConfigFileName}: not a {what} folder");
    }
}
