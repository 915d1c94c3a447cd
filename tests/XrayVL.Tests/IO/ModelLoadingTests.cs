using System.Runtime.InteropServices;
using System.Text.Json;
using TorchSharp;
using XrayVL.Benchmarks;
using XrayVL.IO;
using XrayVL.Kernels;
using XrayVL.Modeling;
using XrayVL.Tests.Support;
using XrayVL.Tests.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Tests.IO;

/// <summary>
/// Loading checkpoint folders straight into the inference format (<see cref="ModelLoading"/>): the result equals the
/// whole-file fp32 load converted afterwards, for safetensors and PyTorch files, single and sharded, and for every format.
/// </summary>
[Collection(nameof(ProcessWideTorchState))]   // loading in bf16/int8/int4 sets torch's process-wide default dtype while the model is built
public class ModelLoadingTests
{
    private static string Reference(params string[] parts) => Path.Combine([ReferenceOutputs.Root, .. parts]);

    private static bool Same(Tensor a, Tensor b) => a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    public static TheoryData<string> Folders => new()
    {
        "hf-transformers-4.40/models/llama_tied",                   // safetensors, fp32, tied head
        "hf-transformers-4.40/models/qwen2_untied",                 // safetensors, fp32, biases, untied head
        "seeds/minigpt_med/llama-2-7b-chat-hf",                     // PyTorch shards (pytorch_model.bin.index.json)
        "seeds/xraygpt/Vicuna_Radiology_fp16",                      // one PyTorch file in fp16, with stored RoPE tables
    };

    [Fact]
    public void A_tokenizer_that_does_not_fit_is_refused_before_any_weight_is_read()
    {
        using var dir = new TempDir();
        string source = Reference("hf-transformers-4.40", "models", "llava");
        foreach (string file in Directory.GetFiles(source)) File.Copy(file, Path.Combine(dir.Path, Path.GetFileName(file)));
        string config = Path.Combine(dir.Path, "config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"image_token_index\": 259", "\"image_token_index\": 7"));
        File.WriteAllBytes(Path.Combine(dir.Path, "model.safetensors"), [1, 2, 3]);      // never reached
        var e = Assert.Throws<XrayVLException>(() => WeightFormats.LoadForInference(dir.Path, WeightFormat.Bf16));
        Assert.Contains("image token is 259 in the tokenizer but 7 in config.json", e.Message);
    }

    /// <summary>
    /// What the streamed model must hold: the fp32 load's tensors cast to the compute dtype, and for a quantized layer
    /// the quantization of its fp32 weight, byte for byte.
    /// </summary>
    [Theory]
    [MemberData(nameof(Folders))]
    public void Every_format_equals_the_fp32_load_converted_tensor_by_tensor(string folder)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        string dir = Reference(folder);
        var reference = Checkpoint.ReadWeights(dir);   // the files' tensors as stored
        foreach (var format in Enum.GetValues<WeightFormat>())
        {
            using var streamed = ModelLoading.LoadLanguageModel(dir, format);
            var linears = streamed.named_modules().Where(m => m.module is AdaptableLinear { IsQuantized: true })
                .ToDictionary(m => m.name, m => (AdaptableLinear)m.module);
            Assert.Equal(format is WeightFormat.Int8 or WeightFormat.Int4, linears.Count > 0);
            foreach (var (key, actual) in streamed.state_dict())
            {
                Assert.False(actual.requires_grad, key);
                string layer = key.EndsWith(".weight_scale", StringComparison.Ordinal) ? key[..^".weight_scale".Length]
                    : key.EndsWith(".weight", StringComparison.Ordinal) ? key[..^".weight".Length] : "";
                if (linears.TryGetValue(layer, out var linear))
                {
                    var (q, s) = linear.Quantization == LinearQuantization.Q4
                        ? DecodeLinear.QuantizeQ4(reference[layer + ".weight"])
                        : DecodeLinear.QuantizeQ8(reference[layer + ".weight"]);
                    var expected = key.EndsWith("_scale", StringComparison.Ordinal) ? s : q;
                    Assert.True(Same(actual, expected), $"{format.Name()} {key}");
                }
                else
                {
                    Assert.Equal(format.ComputeDType(), actual.dtype);
                    // A tied head has no tensor of its own; fp16 → float32 is exact, so one cast equals two.
                    var stored = key == "lm_head.weight" && !reference.ContainsKey(key) ? reference["model.embed_tokens.weight"] : reference[key];
                    Assert.True(Same(actual, stored.to(ScalarType.Float32).to(format.ComputeDType())), $"{format.Name()} {key}");
                }
            }
        }
    }

    [Fact]
    public void Bf16_files_are_read_straight_into_a_bf16_model_and_quantized_files_into_their_own_format_only()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var config = TinyLanguageModels.Config(tied: false);
        using var source = TinyLanguageModels.Create(config, seed: 21);
        source.to(ScalarType.BFloat16);
        using var dir = new TempDir("xrayvl-stream");
        ConfigFile.Write(Path.Combine(dir.Path, Checkpoint.ConfigFileName), config);
        ModuleWeights.SaveModule(Path.Combine(dir.Path, Checkpoint.WeightsFileName), source);

        using var bf16 = ModelLoading.Build(WeightFormat.Bf16, languageModelOnly: false, () => new LanguageModel(config));
        var report = ModelLoading.LoadInto(dir.Path, bf16, _ => key => key);
        int count = source.state_dict().Count;
        Assert.Equal(new StreamedLoadReport(count, 0, count, report.FileBytes, 0), report);   // no workspace at all
        foreach (var (key, t) in source.state_dict()) Assert.True(Same(t, bf16.state_dict()[key]), key);

        // An int8 model saved as such loads into an int8 model in place; into bf16 or int4 it is refused, naming the key.
        using var int8 = ModelLoading.LoadLanguageModel(dir.Path, WeightFormat.Int8);
        string quantizedDir = TempDir.Create("xrayvl-stream-q8");
        ConfigFile.Write(Path.Combine(quantizedDir, Checkpoint.ConfigFileName), config);
        ModuleWeights.SaveModule(Path.Combine(quantizedDir, Checkpoint.WeightsFileName), int8);
        using var again = ModelLoading.LoadLanguageModel(quantizedDir, WeightFormat.Int8);
        foreach (var (key, t) in int8.state_dict()) Assert.True(Same(t, again.state_dict()[key]), key);
        foreach (var format in new[] { WeightFormat.Bf16, WeightFormat.Int4 })
        {
            var e = Assert.Throws<XrayVLException>(() => ModelLoading.LoadLanguageModel(quantizedDir, format));
            Assert.Contains("holds Int8", e.Message);
            Assert.Contains("--dtype", e.Message);
        }
    }

    [Fact]
    public void Safetensors_shards_load_through_their_index_and_a_bad_index_or_missing_key_is_refused_before_reading()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var config = TinyLanguageModels.Config(tied: true);
        using var source = TinyLanguageModels.Create(config, seed: 22);
        using var dir = new TempDir("xrayvl-shards");
        ConfigFile.Write(Path.Combine(dir.Path, Checkpoint.ConfigFileName), config);
        var state = source.state_dict();
        var keys = state.Keys.Order(StringComparer.Ordinal).ToList();
        var map = new Dictionary<string, string>();
        for (int shard = 0; shard < 2; shard++)
        {
            string name = $"model-0000{shard + 1}-of-00002.safetensors";
            var part = keys.Where((_, i) => i % 2 == shard).ToDictionary(k => k, k => state[k]);
            SafeTensors.Save(Path.Combine(dir.Path, name), part);
            foreach (var k in part.Keys) map[k] = name;
        }
        string index = Path.Combine(dir.Path, Checkpoint.WeightsIndexFileName);
        File.WriteAllText(index, JsonSerializer.Serialize(new { metadata = new { }, weight_map = map }));

        using var loaded = ModelLoading.LoadLanguageModel(dir.Path, WeightFormat.Bf16);
        foreach (var (key, t) in state) Assert.True(Same(t.to(ScalarType.BFloat16), loaded.state_dict()[key]), key);

        map[keys[0]] = "model-00002-of-00002.safetensors";   // the index points at a shard that lacks the key
        File.WriteAllText(index, JsonSerializer.Serialize(new { weight_map = map }));
        Assert.Contains($"maps '{keys[0]}'", Assert.Throws<XrayVLException>(() => ModelLoading.LoadLanguageModel(dir.Path, WeightFormat.Bf16)).Message);

        var fewer = state.Where(kv => kv.Key != "model.norm.weight").ToDictionary();
        File.Delete(index);
        SafeTensors.Save(Path.Combine(dir.Path, Checkpoint.WeightsFileName), fewer);
        Assert.Contains("1 missing key(s): model.norm.weight",
            Assert.Throws<XrayVLException>(() => ModelLoading.LoadLanguageModel(dir.Path, WeightFormat.Int8)).Message);
    }
}

/// <summary>
/// The memory bound of loading into a smaller format, measured as the process's own peak resident set (Linux VmHWM, reset
/// before each load; freed heap memory is handed back first so that it cannot hide new allocations). These tests run
/// alone so that no other test's memory lands in the measurement.
/// </summary>
[Collection(nameof(PeakMemoryMeasurements))]
public class ModelLoadingMemoryTests(ITestOutputHelper output)
{
    [DllImport("libc", EntryPoint = "malloc_trim")]
    private static extern int MallocTrim(nuint pad);

    private static long RssBytes()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                return long.Parse(line["VmRSS:".Length..].Trim().Split(' ')[0]) * 1024;
        return 0;
    }

    /// <summary>Peak RSS growth while <paramref name="load"/> runs, over the RSS just before it.</summary>
    private static long PeakGrowth(Func<IDisposable> load)
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        MallocTrim(0);
        ShapeBenchmark.ResetPeakRss();
        long before = RssBytes();
        using (load()) { }
        return ShapeBenchmark.PeakRssBytes() - before;
    }

    [Fact]
    public void Loading_an_fp32_folder_as_bf16_or_int8_never_holds_an_fp32_copy_of_the_model()
    {
        Assert.SkipUnless(OperatingSystem.IsLinux(), "peak RSS is read from /proc (Linux)");
        // 59 M parameters: 235 MB in fp32, 117 MB in bf16; the largest tensors (embedding, head) are 8.4 MB in fp32.
        var config = new LanguageModelConfig
        {
            VocabSize = 4096, HiddenSize = 512, IntermediateSize = 1536, NumHiddenLayers = 16, NumAttentionHeads = 8,
            NumKeyValueHeads = 8, MaxPositionEmbeddings = 512, TieWordEmbeddings = false,
        };
        string dir = TempDir.Create("xrayvl-peak");
        long fp32Bytes, largest;
        using (var source = new LanguageModel(config))
        {
            ConfigFile.Write(Path.Combine(dir, Checkpoint.ConfigFileName), config);
            ModuleWeights.SaveModule(Path.Combine(dir, Checkpoint.WeightsFileName), source);
            fp32Bytes = source.parameters().Sum(p => p.numel() * 4);
            largest = source.parameters().Max(p => p.numel() * 4);
        }
        // Beside the weights and one stored tensor: a freed workspace the C allocator keeps resident (glibc keeps up to
        // twice its adaptive mmap threshold, i.e. twice the largest tensor), the quantizer's 1 MB blocks, runtime noise.
        const long Slack = 64L << 20;

        // Warm-up: code compiled, torch's worker threads and their allocator arenas made, before anything is measured.
        ModelLoading.LoadLanguageModel(dir, WeightFormat.Int4).Dispose();
        // The measurement sees an fp32 copy when there is one: the whole-file load reads every tensor, then copies.
        long whole = PeakGrowth(() => Checkpoint.LoadLanguageModel(dir));
        foreach (var format in new[] { WeightFormat.Bf16, WeightFormat.Int8, WeightFormat.Int4 })
        {
            long weights = 0;
            Func<IDisposable> load = () =>
            {
                var model = ModelLoading.LoadLanguageModel(dir, format);
                weights = model.parameters().Sum(p => p.numel() * p.element_size()) + model.buffers().Sum(b => b.numel() * b.element_size());
                return model;
            };
            // The smaller of two loads: the process's other threads (finalizers, the runtime, threads earlier tests left
            // winding down) can add tens of MB to one peak now and then (int4 once grew 131 MB in a full run against
            // 92 alone), while an fp32 copy held by the loader would show in both.
            long growth = Math.Min(PeakGrowth(load), PeakGrowth(load));
            output.WriteLine($"{format.Name()}: peak RSS growth {growth / 1e6:0.0} MB for {weights / 1e6:0.0} MB of weights " +
                             $"(fp32 model {fp32Bytes / 1e6:0.0} MB, largest fp32 tensor {largest / 1e6:0.0} MB; whole-file fp32 load {whole / 1e6:0.0} MB)");
            Assert.True(growth <= weights + 2 * largest + Slack,
                $"{format.Name()}: peak grew {growth / 1e6:0.0} MB, more than {weights / 1e6:0.0} MB of weights + twice the {largest / 1e6:0.0} MB tensor + slack");
            Assert.True(growth < fp32Bytes, $"{format.Name()}: peak grew {growth / 1e6:0.0} MB, the size of the fp32 model");
        }
        Assert.True(whole >= fp32Bytes, $"the whole-file fp32 load grew only {whole / 1e6:0.0} MB: the measurement cannot see an fp32 copy");
    }
}

/// <summary>Tests that measure the process's peak memory run alone, after the parallel tests.</summary>
[CollectionDefinition(nameof(PeakMemoryMeasurements), DisableParallelization = true)]
public sealed class PeakMemoryMeasurements;
