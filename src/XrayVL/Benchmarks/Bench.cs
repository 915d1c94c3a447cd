using System.Diagnostics;
using System.Text;
using TorchSharp;
using XrayVL.Data;
using XrayVL.Imaging;
using XrayVL.Inference;
using XrayVL.IO;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Benchmarks;

/// <summary>One measured figure: what, how fast, in which unit, and the conditions that matter for reading it.</summary>
public sealed record BenchFigure(string Name, double Value, string Unit, string Note = "");

/// <summary>All figures of one run; ratios are computed from figures measured in this same run.</summary>
public sealed record BenchReport(string Model, long Parameters, int Threads, IReadOnlyList<BenchFigure> Figures, IReadOnlyDictionary<string, double> Ratios)
{
    public string ToMarkdown()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"Model `{Model}` ({Parameters:N0} parameters), {Threads} threads, medians after a warm-up.");
        sb.AppendLine();
        sb.AppendLine("| figure | value | unit | note |");
        sb.AppendLine("|---|---:|---|---|");
        foreach (var f in Figures) sb.AppendLine($"| {f.Name} | {Format(f.Value)} | {f.Unit} | {f.Note} |");
        sb.AppendLine();
        sb.AppendLine("| ratio (same run) | value |");
        sb.AppendLine("|---|---:|");
        foreach (var (name, value) in Ratios) sb.AppendLine($"| {name} | {value:0.00}x |");
        return sb.ToString();
    }

    private static string Format(double v) => v >= 100 ? v.ToString("0") : v >= 10 ? v.ToString("0.0") : v.ToString("0.000");
}

/// <summary>
/// Speed of every stage of the pipeline on this machine, measured in one run so that ratios compare like with like:
/// image decode + preprocess, vision encoder, prefill, decoding with the KV cache vs recomputing the sequence each step
/// (at two contexts), fp32 vs bf16, seconds per report end to end, and the forward pass's achieved GFLOP/s beside a plain
/// matmul's. Figures are medians of a few repeats after a warm-up; nothing here is asserted by tests.
/// </summary>
public static class Bench
{
    public sealed record Options
    {
        public int Threads { get; init; } = Math.Min(2, Environment.ProcessorCount);
        public int Repeats { get; init; } = 3;
        public int[] Contexts { get; init; } = [64, 512];
        /// <summary>Tokens decoded per cached-decoding measurement; recompute measures fewer (it is much slower).</summary>
        public int DecodeTokens { get; init; } = 32;
        public int RecomputeTokens { get; init; } = 8;
        public int ReportTokens { get; init; } = 128;
        public bool IncludeBf16 { get; init; } = true;
    }

    /// <remarks>Changes the process's torch thread count while it runs, and rounds the model's weights through bf16 when
    /// bf16 figures are measured: load a separate copy of a model to benchmark it.</remarks>
    public static BenchReport Run(LoadedModel loaded, string sampleImage, Options? options = null, Action<string>? log = null)
    {
        options ??= new Options();
        CheckCounts(options.Threads, options.Repeats);
        int previousThreads = torch.get_num_threads();
        torch.set_num_threads(options.Threads);
        var originalDtype = loaded.Model.LanguageModel.DType;
        using var scope = NewDisposeScope();
        try
        {
            var figures = new List<BenchFigure>();
            var ratios = new Dictionary<string, double>();
            var model = loaded.Model;
            var lm = model.LanguageModel;
            int maxContext = lm.Config.MaxPositionEmbeddings;

            // 1. Image decode + preprocess (file bytes already in memory: this measures decoding, not the disk).
            log?.Invoke("image decode + preprocess");
            byte[] bytes = File.ReadAllBytes(sampleImage);
            double decodeMs = Median(options.Repeats * 3, () => Time(() => Preprocess.ToArray(ImageFile.Decode(bytes, sampleImage), loaded.Preprocess)));
            figures.Add(new("image decode + preprocess", 1000 / decodeMs, "images/s", $"{Path.GetFileName(sampleImage)} → {loaded.Preprocess.ImageSize}px"));

            // 2. Vision encoder + projector, batch 8.
            log?.Invoke("vision encoder");
            var pixels = Preprocess.Batch(Enumerable.Repeat(ImageFile.Decode(bytes, sampleImage), 8), loaded.Preprocess);
            double visionMs32 = Median(options.Repeats, () => Time(() => { using var _ = no_grad(); model.EncodeImages(pixels).Dispose(); }));
            figures.Add(new("vision encoder + projector (fp32)", 8000 / visionMs32, "images/s", "batch 8"));

            // 3–4. Prefill and decoding at each context, fp32.
            var contexts = options.Contexts.Select(c => Math.Min(c, maxContext - 1)).Where(c => c > options.DecodeTokens).Distinct().ToArray();
            using var random = new torch.Generator(0);
            var decode32 = new Dictionary<int, double>();
            foreach (int context in contexts)
            {
                log?.Invoke($"prefill and decoding at context {context} (fp32)");
                using var ids = torch.randint(0, lm.Config.VocabSize, [1, context], ScalarType.Int64, generator: random);
                double prefillMs = Median(options.Repeats, () => Prefill(lm, ids));
                double cached = Median(options.Repeats, () => CachedDecode(lm, ids, options.DecodeTokens));
                double recompute = Median(options.Repeats, () => RecomputeDecode(lm, ids, options.RecomputeTokens));
                decode32[context] = cached;
                figures.Add(new($"prefill, context {context} (fp32)", context * 1000 / prefillMs, "tokens/s"));
                figures.Add(new($"decode with KV cache, context {context} (fp32)", cached, "tokens/s"));
                figures.Add(new($"decode by full recompute, context {context} (fp32)", recompute, "tokens/s"));
                ratios[$"KV cache vs full recompute, context {context}"] = cached / recompute;
            }

            // 5. Seconds per report, end to end: image file → decoded, encoded, prompted, generated, detokenised text.
            log?.Invoke("report end to end");
            var reportOptions = InferencePipeline.Decoding(loaded.Tokenizer) with { MaxNewTokens = options.ReportTokens };
            int reportTokens = 0;
            double reportSeconds = Median(options.Repeats, () => Time(() =>
            {
                var session = new ChatSession(new InferencePipeline(loaded), "en");
                session.AddImage(ImageFile.Load(sampleImage));
                string report = session.AskAllAsync(InstructionPhrases.ReportRequest("en"), reportOptions).GetAwaiter().GetResult();
                reportTokens = loaded.Tokenizer.Encode(report).Length;
            })) / 1000;
            figures.Add(new("report end to end (fp32)", reportSeconds, "s/report", $"greedy, {reportTokens} tokens written, at most {options.ReportTokens}"));

            // 6. Achieved GFLOP/s of the forward pass (prefill at the longest context) vs a plain matmul.
            int longest = contexts.DefaultIfEmpty(Math.Min(256, maxContext - 1)).Max();
            double flops = ForwardFlops(lm.Config, longest);
            using (var ids = torch.randint(0, lm.Config.VocabSize, [1, longest], ScalarType.Int64, generator: random))
            {
                log?.Invoke("forward GFLOP/s vs matmul (fp32)");
                double forwardGflops = flops / (Median(options.Repeats, () => Prefill(lm, ids)) / 1000) / 1e9;
                double matmulGflops = MatmulGflops(ScalarType.Float32, options.Repeats);
                figures.Add(new($"LM forward, context {longest} (fp32)", forwardGflops, "GFLOP/s", $"{flops / 1e9:0.00} GFLOP per pass"));
                figures.Add(new("plain 2048² matmul (fp32)", matmulGflops, "GFLOP/s"));
                ratios["LM forward vs plain matmul (fp32)"] = forwardGflops / matmulGflops;

                if (options.IncludeBf16)
                {
                    log?.Invoke("bf16: vision, prefill, decoding, matmul");
                    model.to(ScalarType.BFloat16);
                    try
                    {
                        var pixels16 = pixels.to(ScalarType.BFloat16);
                        double visionMs16 = Median(options.Repeats, () => Time(() => { using var _ = no_grad(); model.EncodeImages(pixels16).Dispose(); }));
                        figures.Add(new("vision encoder + projector (bf16)", 8000 / visionMs16, "images/s", "batch 8"));
                        ratios["vision encoder bf16 vs fp32"] = visionMs32 / visionMs16;
                        double prefill16 = Median(options.Repeats, () => Prefill(lm, ids));
                        double forward16 = flops / (prefill16 / 1000) / 1e9;
                        figures.Add(new($"LM forward, context {longest} (bf16)", forward16, "GFLOP/s"));
                        ratios[$"LM forward bf16 vs fp32, context {longest}"] = forward16 / forwardGflops;
                        foreach (int context in contexts)
                        {
                            using var ctxIds = torch.randint(0, lm.Config.VocabSize, [1, context], ScalarType.Int64, generator: random);
                            double cached16 = Median(options.Repeats, () => CachedDecode(lm, ctxIds, options.DecodeTokens));
                            figures.Add(new($"decode with KV cache, context {context} (bf16)", cached16, "tokens/s"));
                            ratios[$"decode bf16 vs fp32, context {context}"] = cached16 / decode32[context];
                        }
                        double matmul16 = MatmulGflops(ScalarType.BFloat16, options.Repeats);
                        figures.Add(new("plain 2048² matmul (bf16)", matmul16, "GFLOP/s"));
                        ratios["plain matmul bf16 vs fp32"] = matmul16 / matmulGflops;
                    }
                    finally
                    {
                        model.to(originalDtype);   // the bf16 round trip leaves fp32 weights rounded: Run is for benchmarking a loaded copy
                    }
                }
            }
            long parameters = model.parameters().Sum(p => p.numel());
            return new BenchReport(loaded.Name, parameters, options.Threads, figures, ratios);
        }
        finally
        {
            torch.set_num_threads(previousThreads);
        }
    }

    /// <summary>
    /// Multiply-adds ×2 of one forward over T tokens: every projection (q, k, v, o, gate, up, down, lm head on the last
    /// position only, as generation prefills) plus attention scores and weighted sums (QKᵀ and AV, causal: T(T+1)/2 pairs).
    /// </summary>
    public static double ForwardFlops(LanguageModelConfig c, int tokens)
    {
        double d = c.HiddenSize, hd = c.HeadSize, h = c.NumAttentionHeads, kv = c.NumKeyValueHeads, ff = c.IntermediateSize;
        double perTokenPerLayer = d * hd * h + 2 * d * hd * kv + hd * h * d + 3 * d * ff;
        double attentionPairs = tokens * (tokens + 1) / 2.0;
        double perLayer = 2 * perTokenPerLayer * tokens + 2 * 2 * attentionPairs * hd * h;
        return c.NumHiddenLayers * perLayer + 2 * d * c.VocabSize;
    }

    public static double MatmulGflops(ScalarType dtype, int repeats, int n = 2048)
    {
        using var scope = NewDisposeScope();
        var a = randn(n, n).to(dtype);
        var b = randn(n, n).to(dtype);
        double ms = Median(repeats, () => Time(() => torch.matmul(a, b).Dispose()));
        return 2.0 * n * n * n / (ms / 1000) / 1e9;
    }

    /// <summary>Milliseconds to prefill the whole context (last-position logits only, as generation does).</summary>
    public static double Prefill(LanguageModel model, Tensor ids)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var embeds = model.Embed(ids);
        var watch = Stopwatch.StartNew();
        using var cache = model.NewCache(1, (int)ids.shape[1]);
        model.Forward(embeds, null, cache, logitsForLastOnly: true);
        return watch.Elapsed.TotalMilliseconds;
    }

    /// <summary>Tokens/s of greedy decoding with the cache from context − n to context (the prefill is not timed).</summary>
    public static double CachedDecode(LanguageModel model, Tensor ids, int tokens)
    {
        using var scope = NewDisposeScope();
        Tensor prompt;
        using (no_grad()) prompt = model.Embed(ids.narrow(1, 0, ids.shape[1] - tokens));
        var options = new GenerationOptions { MaxNewTokens = tokens };
        using var stream = new XrayVL.Inference.TokenGenerator(model).Generate(prompt, options).GetEnumerator();
        if (!stream.MoveNext()) throw new InvalidOperationException("no token generated");   // prefill + first token
        var watch = Stopwatch.StartNew();
        int decoded = 0;
        while (stream.MoveNext()) decoded++;
        return decoded / watch.Elapsed.TotalSeconds;
    }

    /// <summary>Tokens/s when every step runs the whole sequence again (no cache), from context − n to context.</summary>
    public static double RecomputeDecode(LanguageModel model, Tensor ids, int tokens)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
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

    /// <summary>Refuses thread and repeat counts below 1 (libtorch aborts the process on a thread count of 0).</summary>
    public static void CheckCounts(int threads, int repeats)
    {
        if (threads < 1) throw new XrayVLException($"--threads must be at least 1 (got {threads})");
        if (repeats < 1) throw new XrayVLException($"--repeats must be at least 1 (got {repeats})");
    }

    /// <summary>Runs once to warm up, then <paramref name="repeats"/> times; the median of the measured values.</summary>
    public static double Median(int repeats, Func<double> measure)
    {
        measure();
        var values = Enumerable.Range(0, Math.Max(1, repeats)).Select(_ => measure()).Order().ToArray();
        return values[values.Length / 2];
    }

    private static double Time(Action action)
    {
        var watch = Stopwatch.StartNew();
        action();
        return watch.Elapsed.TotalMilliseconds;
    }
}
