using TorchSharp;
using XrayVL.Modeling;
using static XrayVL.Benchmarks.Bench;
using static TorchSharp.torch;

namespace XrayVL.Benchmarks;

/// <summary>The figures of one <see cref="DecodeBenchmark"/> run (medians over the repeats).</summary>
public sealed record DecodeBenchmarkResult(
    long Parameters, int Context, int Threads,
    double CachedTokensPerSecondFp32, double RecomputeTokensPerSecondFp32,
    double CachedTokensPerSecondBf16, double PrefillMillisecondsFp32, double PrefillMillisecondsBf16)
{
    public double CacheSpeedup => CachedTokensPerSecondFp32 / RecomputeTokensPerSecondFp32;

    public override string ToString() => string.Join(Environment.NewLine,
        $"model: {Parameters:N0} parameters, context {Context}, {Threads} threads",
        $"decode fp32 with KV cache:  {CachedTokensPerSecondFp32,8:F1} tokens/s",
        $"decode fp32 full recompute: {RecomputeTokensPerSecondFp32,8:F1} tokens/s  (cache speed-up {CacheSpeedup:F1}x)",
        $"decode bf16 with KV cache:  {CachedTokensPerSecondBf16,8:F1} tokens/s  ({CachedTokensPerSecondBf16 / CachedTokensPerSecondFp32:F2}x fp32)",
        $"prefill of {Context} tokens: fp32 {PrefillMillisecondsFp32:F1} ms, bf16 {PrefillMillisecondsBf16:F1} ms ({PrefillMillisecondsFp32 / PrefillMillisecondsBf16:F2}x)");
}

/// <summary>
/// Measures language-model speed on this machine with random weights (speed does not depend on their values):
/// greedy decoding through <see cref="Inference.TokenGenerator"/> with the KV cache against recomputing the whole sequence every step,
/// and fp32 against bf16 for prefill and decoding. Each figure is the median of a few repeats after a warm-up.
/// </summary>
public static class DecodeBenchmark
{
    /// <summary>A ~20M-parameter decoder (20,773,376 with tied embeddings): 6 layers × 2,950,144 + 6000 × 512 embeddings + final norm.</summary>
    public static LanguageModelConfig DefaultConfig { get; } = new()
    {
        VocabSize = 6000, HiddenSize = 512, IntermediateSize = 1408, NumHiddenLayers = 6,
        NumAttentionHeads = 8, NumKeyValueHeads = 4, MaxPositionEmbeddings = 1024,
    };

    public static DecodeBenchmarkResult Run(LanguageModelConfig? config = null, int context = 256, int threads = 2,
        int repeats = 3, int decodeTokens = 32, int recomputeTokens = 8, Action<string>? log = null)
    {
        config ??= DefaultConfig;
        Bench.CheckCounts(threads, repeats);
        if (context <= decodeTokens || context <= recomputeTokens)
            throw new XrayVLException($"benchmark needs context ({context}) above the decoded token counts ({decodeTokens}, {recomputeTokens})");
        int previousThreads = torch.get_num_threads();
        torch.set_num_threads(threads);
        try
        {
            // A private generator: the global one may be in use by whoever runs alongside.
            using var random = new torch.Generator(0);
            using var model = new LanguageModel(config);
            model.InitializeWeights(random);
            model.eval();
            using var ids = torch.randint(0, config.VocabSize, [1, context], ScalarType.Int64, generator: random).DetachFromDisposeScope();

            log?.Invoke("fp32: prefill, cached decoding, full recompute");
            double prefill32 = Median(repeats, () => Prefill(model, ids));
            double cached32 = Median(repeats, () => CachedDecode(model, ids, decodeTokens));
            double recompute32 = Median(repeats, () => RecomputeDecode(model, ids, recomputeTokens));

            log?.Invoke("bf16: prefill, cached decoding");
            model.to(ScalarType.BFloat16);
            double prefill16 = Median(repeats, () => Prefill(model, ids));
            double cached16 = Median(repeats, () => CachedDecode(model, ids, decodeTokens));

            return new DecodeBenchmarkResult(LanguageModel.CountParameters(config), context, threads,
                cached32, recompute32, cached16, prefill32, prefill16);
        }
        finally
        {
            torch.set_num_threads(previousThreads);
        }
    }
}
