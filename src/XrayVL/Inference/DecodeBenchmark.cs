using System.Diagnostics;
using TorchSharp;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Inference;

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
/// greedy decoding through <see cref="Generator"/> with the KV cache against recomputing the whole sequence every step,
/// and fp32 against bf16 for prefill and decoding. Each figure is the median of a few repeats after a warm-up.
/// </summary>
public static class DecodeBenchmark
{
    /// <summary>A ~27M-parameter decoder (26,673,664 with tied embeddings), the size of the project's larger CPU models.</summary>
    public static LanguageModelConfig DefaultConfig { get; } = new()
    {
        VocabSize = 6000, HiddenSize = 512, IntermediateSize = 1408, NumHiddenLayers = 8,
        NumAttentionHeads = 8, NumKeyValueHeads = 4, MaxPositionEmbeddings = 1024,
    };

    public static DecodeBenchmarkResult Run(LanguageModelConfig? config = null, int context = 256, int threads = 2,
        int repeats = 3, int decodeTokens = 32, int recomputeTokens = 8, Action<string>? log = null)
    {
        config ??= DefaultConfig;
        if (context <= decodeTokens || context <= recomputeTokens || repeats < 1)
            throw new XrayVLException($"benchmark needs context ({context}) above the decoded token counts and at least one repeat");
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

    /// <summary>Runs once to warm up, then <paramref name="repeats"/> times; the median of the measured values.</summary>
    private static double Median(int repeats, Func<double> measure)
    {
        measure();
        var values = Enumerable.Range(0, repeats).Select(_ => measure()).Order().ToArray();
        return values[values.Length / 2];
    }

    /// <summary>Milliseconds to prefill the whole context (last-position logits only, as generation does).</summary>
    private static double Prefill(LanguageModel model, Tensor ids)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var embeds = model.Embed(ids);
        var watch = Stopwatch.StartNew();
        using var cache = model.NewCache(1, (int)ids.shape[1]);
        model.Forward(embeds, null, cache, logitsForLastOnly: true);
        return watch.Elapsed.TotalMilliseconds;
    }

    /// <summary>Tokens/s of greedy decoding with the cache from context − n to context (the prefill is not timed).</summary>
    private static double CachedDecode(LanguageModel model, Tensor ids, int tokens)
    {
        using var scope = NewDisposeScope();
        Tensor prompt;
        using (torch.no_grad()) prompt = model.Embed(ids.narrow(1, 0, ids.shape[1] - tokens));
        var options = new GenerationOptions { MaxNewTokens = tokens };
        using var stream = new Generator(model).Generate(prompt, options).GetEnumerator();
        if (!stream.MoveNext()) throw new InvalidOperationException("no token generated");   // prefill + first token
        var watch = Stopwatch.StartNew();
        int decoded = 0;
        while (stream.MoveNext()) decoded++;
        return decoded / watch.Elapsed.TotalSeconds;
    }

    /// <summary>Tokens/s when every step runs the whole sequence again (no cache), from context − n to context.</summary>
    private static double RecomputeDecode(LanguageModel model, Tensor ids, int tokens)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var sequence = ids.narrow(1, 0, ids.shape[1] - tokens).clone();
        var watch = Stopwatch.StartNew();
        for (int i = 0; i < tokens; i++)
        {
            using var step = NewDisposeScope();
            var next = model.Forward(model.Embed(sequence), logitsForLastOnly: true).argmax(-1);    // (1, 1)
            sequence = torch.cat([sequence, next], dim: 1).MoveToOuterDisposeScope();
        }
        return tokens / watch.Elapsed.TotalSeconds;
    }
}
