using System.Diagnostics;
using System.Text;
using TorchSharp;
using XrayVL.Data;
using XrayVL.Imaging;
using XrayVL.Inference;
using XrayVL.IO;
using XrayVL.Kernels;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Benchmarks;

/// <summary>One measured figure: what, how fast (min / median / max of the repeats), in which unit, and the
/// conditions that matter for reading it.</summary>
public sealed record BenchFigure(string Name, Spread Range, string Unit, string Note = "")
{
    public double Value => Range.Median;
}

/// <summary>All figures of one run; ratios are computed from figures measured in this same run, each with the range
/// its two figures' spreads allow (min of one over max of the other, and so on).</summary>
public sealed record BenchReport(string Model, long Parameters, int Threads, IReadOnlyList<BenchFigure> Figures, IReadOnlyDictionary<string, Spread> Ratios)
{
    /// <summary>A figure whose repeats differ by more than this share of their median was measured on a busy machine:
    /// its ratios can be off by as much, so the report says so.</summary>
    public const double SpreadWarning = 0.25;

    /// <summary>Figures whose (max − min) / median exceeds <see cref="SpreadWarning"/>.</summary>
    public IReadOnlyList<BenchFigure> Unsteady => [.. Figures.Where(f => f.Range.Median > 0 && (f.Range.Max - f.Range.Min) / f.Range.Median > SpreadWarning)];

    /// <summary>One line for stderr when some figures are unsteady, else null.</summary>
    public string? Warning => Unsteady.Count == 0 ? null
        : $"warning: {Unsteady.Count} of {Figures.Count} figures varied by more than {SpreadWarning * 100:0}% between repeats " +
          $"(most: {Unsteady.MaxBy(f => (f.Range.Max - f.Range.Min) / f.Range.Median)!.Name}); the machine is busy or the repeats too few: " +
          "read the ratios with their ranges, or rerun with more --repeats on an idle machine";

    public string ToMarkdown()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"Model `{Model}` ({Parameters:N0} parameters), {Threads} threads, after a warm-up; min / **median** / max of the repeats.");
        sb.AppendLine();
        sb.AppendLine("| figure | min / **median** / max | unit | note |");
        sb.AppendLine("|---|---|---|---|");
        foreach (var f in Figures) sb.AppendLine($"| {f.Name} | {f.Range} | {f.Unit} | {f.Note} |");
        sb.AppendLine();
        sb.AppendLine("| ratio (same run) | min / **median** / max |");
        sb.AppendLine("|---|---|");
        foreach (var (name, value) in Ratios) sb.AppendLine($"| {name} | {value} |");
        if (Warning is { } warning)
        {
            sb.AppendLine();
            sb.AppendLine($"**{warning}**");
        }
        return sb.ToString();
    }
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
            var ratios = new Dictionary<string, Spread>();
            var model = loaded.Model;
            var lm = model.LanguageModel;
            int maxContext = lm.Config.MaxPositionEmbeddings;

            // 1. Image decode + preprocess (file bytes already in memory: this measures decoding, not the disk).
            log?.Invoke("image decode + preprocess");
            byte[] bytes = File.ReadAllBytes(sampleImage);
            var decodeMs = Measure(options.Repeats * 3, () => Time(() => Preprocess.ToArray(ImageFile.Decode(bytes, sampleImage), loaded.Preprocess)));
            figures.Add(new("image decode + preprocess", Per(1000, decodeMs), "images/s", $"{Path.GetFileName(sampleImage)} → {loaded.Preprocess.ImageSize}px"));

            // 2. Vision encoder + projector, batch 8.
            log?.Invoke("vision encoder");
            var pixels = Preprocess.Batch(Enumerable.Repeat(ImageFile.Decode(bytes, sampleImage), 8), loaded.Preprocess);
            var vision32 = Per(8000, Measure(options.Repeats, () => Time(() => { using var _ = no_grad(); model.EncodeImages(pixels).Dispose(); })));
            figures.Add(new("vision encoder + projector (fp32)", vision32, "images/s", "batch 8"));

            // 3–4. Prefill and decoding at each context, fp32.
            var contexts = options.Contexts.Select(c => Math.Min(c, maxContext - 1)).Where(c => c > options.DecodeTokens).Distinct().ToArray();
            using var random = new torch.Generator(0);
            var decode32 = new Dictionary<int, Spread>();
            foreach (int context in contexts)
            {
                log?.Invoke($"prefill and decoding at context {context} (fp32)");
                using var ids = torch.randint(0, lm.Config.VocabSize, [1, context], ScalarType.Int64, generator: random);
                var prefillMs = Measure(options.Repeats, () => Prefill(lm, ids));
                var cached = Measure(options.Repeats, () => CachedDecode(lm, ids, options.DecodeTokens));
                var recompute = Measure(options.Repeats, () => RecomputeDecode(lm, ids, options.RecomputeTokens));
                decode32[context] = cached;
                figures.Add(new($"prefill, context {context} (fp32)", Per(context * 1000.0, prefillMs), "tokens/s"));
                figures.Add(new($"decode with KV cache, context {context} (fp32)", cached, "tokens/s"));
                figures.Add(new($"decode by full recompute, context {context} (fp32)", recompute, "tokens/s"));
                ratios[$"KV cache vs full recompute, context {context}"] = Ratio(cached, recompute);
            }

            // 5. Seconds per report, end to end: image file → decoded, encoded, prompted, generated, detokenised text.
            log?.Invoke("report end to end");
            var reportOptions = InferencePipeline.Decoding(loaded.Tokenizer) with { MaxNewTokens = options.ReportTokens };
            int reportTokens = 0;
            var reportMs = Measure(options.Repeats, () => Time(() =>
            {
                var session = new ChatSession(new InferencePipeline(loaded), "en");
                session.AddImage(ImageFile.Load(sampleImage));
                string report = session.AskAllAsync(InstructionPhrases.ReportRequest("en"), reportOptions).GetAwaiter().GetResult();
                reportTokens = loaded.Tokenizer.Encode(report).Length;
            }));
            var reportSeconds = new Spread(reportMs.Min / 1000, reportMs.Median / 1000, reportMs.Max / 1000);
            figures.Add(new("report end to end (fp32)", reportSeconds, "s/report", $"greedy, {reportTokens} tokens written, at most {options.ReportTokens}"));

            // 6. Achieved GFLOP/s of the forward pass (prefill at the longest context) vs a plain matmul.
            int longest = contexts.DefaultIfEmpty(Math.Min(256, maxContext - 1)).Max();
            double flops = ForwardFlops(lm.Config, longest);
            using (var ids = torch.randint(0, lm.Config.VocabSize, [1, longest], ScalarType.Int64, generator: random))
            {
                log?.Invoke("forward GFLOP/s vs matmul (fp32)");
                var forwardGflops = Per(flops / 1e6, Measure(options.Repeats, () => Prefill(lm, ids)));
                var matmulGflops = MatmulGflopsSpread(ScalarType.Float32, options.Repeats);
                figures.Add(new($"LM forward, context {longest} (fp32)", forwardGflops, "GFLOP/s", $"{flops / 1e9:0.00} GFLOP per pass"));
                figures.Add(new("plain 2048² matmul (fp32)", matmulGflops, "GFLOP/s"));
                ratios["LM forward vs plain matmul (fp32)"] = Ratio(forwardGflops, matmulGflops);

                if (options.IncludeBf16)
                {
                    log?.Invoke("bf16: vision, prefill, decoding, matmul");
                    model.to(ScalarType.BFloat16);
                    try
                    {
                        var pixels16 = pixels.to(ScalarType.BFloat16);
                        var vision16 = Per(8000, Measure(options.Repeats, () => Time(() => { using var _ = no_grad(); model.EncodeImages(pixels16).Dispose(); })));
                        figures.Add(new("vision encoder + projector (bf16)", vision16, "images/s", "batch 8"));
                        ratios["vision encoder bf16 vs fp32"] = Ratio(vision16, vision32);
                        var forward16 = Per(flops / 1e6, Measure(options.Repeats, () => Prefill(lm, ids)));
                        figures.Add(new($"LM forward, context {longest} (bf16)", forward16, "GFLOP/s"));
                        ratios[$"LM forward bf16 vs fp32, context {longest}"] = Ratio(forward16, forwardGflops);
                        foreach (int context in contexts)
                        {
                            using var ctxIds = torch.randint(0, lm.Config.VocabSize, [1, context], ScalarType.Int64, generator: random);
                            var cached16 = Measure(options.Repeats, () => CachedDecode(lm, ctxIds, options.DecodeTokens));
                            figures.Add(new($"decode with KV cache, context {context} (bf16)", cached16, "tokens/s"));
                            ratios[$"decode bf16 vs fp32, context {context}"] = Ratio(cached16, decode32[context]);
                        }
                        var matmul16 = MatmulGflopsSpread(ScalarType.BFloat16, options.Repeats);
                        figures.Add(new("plain 2048² matmul (bf16)", matmul16, "GFLOP/s"));
                        ratios["plain matmul bf16 vs fp32"] = Ratio(matmul16, matmulGflops);
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

    public static double MatmulGflops(ScalarType dtype, int repeats, int n = 2048) => MatmulGflopsSpread(dtype, repeats, n).Median;

    public static Spread MatmulGflopsSpread(ScalarType dtype, int repeats, int n = 2048)
    {
        using var scope = NewDisposeScope();
        var a = randn(n, n).to(dtype);
        var b = randn(n, n).to(dtype);
        return Per(2.0 * n * n * n / 1e6, Measure(repeats, () => Time(() => torch.matmul(a, b).Dispose())));
    }

    /// <summary>Runs once to warm up, then <paramref name="repeats"/> times: min, median and max of the measured values.</summary>
    public static Spread Measure(int repeats, Func<double> measure)
    {
        measure();
        return Spread.Of(Enumerable.Range(0, Math.Max(1, repeats)).Select(_ => measure()));
    }

    /// <summary>A rate from durations: <paramref name="work"/> ÷ each, so the longest duration gives the lowest rate.</summary>
    public static Spread Per(double work, Spread durations) => new(work / durations.Max, work / durations.Median, work / durations.Min);

    /// <summary>a ÷ b, with the range the two spreads allow.</summary>
    public static Spread Ratio(Spread a, Spread b) => new(a.Min / b.Max, a.Median / b.Median, a.Max / b.Min);

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
    public static double CachedDecode(LanguageModel model, Tensor ids, int tokens) => CachedDecodeMeasured(model, ids, tokens).TokensPerSecond;

    /// <summary><see cref="CachedDecode"/> with the decode kernels' share of the time (the prefill and first token excluded).</summary>
    public static DecodeMeasurement CachedDecodeMeasured(LanguageModel model, Tensor ids, int tokens)
    {
        using var scope = NewDisposeScope();
        Tensor prompt;
        using (no_grad()) prompt = model.Embed(ids.narrow(1, 0, ids.shape[1] - tokens));
        var options = new GenerationOptions { MaxNewTokens = tokens };
        using var stream = new XrayVL.Inference.TokenGenerator(model).Generate(prompt, options).GetEnumerator();
        if (!stream.MoveNext()) throw new InvalidOperationException("no token generated");   // prefill + first token
        var kernels = MatVec.Totals;
        var watch = Stopwatch.StartNew();
        int decoded = 0;
        while (stream.MoveNext()) decoded++;
        return new DecodeMeasurement(decoded, watch.Elapsed.TotalSeconds, MatVec.Totals - kernels);
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
