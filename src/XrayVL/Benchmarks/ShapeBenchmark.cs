using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Text;
using TorchSharp;
using XrayVL.IO;
using XrayVL.Kernels;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Benchmarks;

/// <summary>min / median / max of one figure's repeats, as measured in one run (a shared machine makes the spread matter).</summary>
public sealed record Spread(double Min, double Median, double Max)
{
    public static Spread Of(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        if (sorted.Length == 0) throw new ArgumentException("no values");
        return new Spread(sorted[0], sorted[sorted.Length / 2], sorted[^1]);
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{F(Min)} / **{F(Median)}** / {F(Max)}");

    private static string F(double v) => v >= 100 ? v.ToString("0", CultureInfo.InvariantCulture)
        : v >= 10 ? v.ToString("0.0", CultureInfo.InvariantCulture) : v.ToString("0.00", CultureInfo.InvariantCulture);
}

/// <summary>
/// One timed decoding run: tokens, wall seconds, and what the decode kernels spent of it (time, weight bytes read).
/// The rest of a token's time is everything around the matrix-vector products: norms, rotary, attention, conversions.
/// </summary>
public sealed record DecodeMeasurement(int Tokens, double Seconds, KernelTotals Kernels)
{
    public double TokensPerSecond => Tokens / Seconds;
    public double KernelShare => Kernels.Seconds / Seconds;
    public double KernelGBPerSecond => Kernels.Seconds > 0 ? Kernels.Bytes / Kernels.Seconds / 1e9 : 0;
}

/// <summary>The figures of one dtype at one shape.</summary>
public sealed record ShapeFigures(
    string DType, long WeightBytes, long BytesPerToken, double LoadSeconds, double FirstTokenSeconds,
    Spread PrefillTokensPerSecond, Spread DecodeTokensPerSecond, Spread ReadGBPerSecond, double PeakRssGB,
    Spread? KernelSharePercent = null, Spread? KernelReadGBPerSecond = null)
{
    /// <summary>Tokens/s if decoding did nothing but read its bytes at the median measured bandwidth.</summary>
    public double RooflineTokensPerSecond => ReadGBPerSecond.Median * 1e9 / BytesPerToken;
    public double RooflinePercent => 100 * DecodeTokensPerSecond.Median / RooflineTokensPerSecond;
}

public sealed record ShapeBenchmarkReport(string Shape, long Parameters, int Threads, int PromptTokens, int DecodeTokens,
    string Kernels, IReadOnlyList<ShapeFigures> Rows)
{
    public string ToMarkdown()
    {
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"Shape `{Shape}` ({Parameters:N0} parameters, random weights), {Threads} threads, prompt {PromptTokens} tokens, {DecodeTokens} decoded; kernels: {Kernels}.");
        sb.AppendLine("Spread is min / **median** / max of the repeats; read bandwidth is measured in the same run over the model's own weights.");
        sb.AppendLine("Decode time in kernels: the share of a decoded token's wall time spent in the matrix-vector kernels, and their own read speed (weights and scales ÷ their time); the rest is the ops around them.");
        sb.AppendLine();
        sb.AppendLine("| dtype | weights GB | read per token GB | load s | first token s | prefill tok/s | decode tok/s | read GB/s | roofline tok/s | % of roofline | decode time in kernels % | kernel read GB/s | peak RSS GB |");
        sb.AppendLine("|---|---:|---:|---:|---:|---|---|---|---:|---:|---|---|---:|");
        foreach (var r in Rows)
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {r.DType} | {r.WeightBytes / 1e9:0.00} | {r.BytesPerToken / 1e9:0.000} | {r.LoadSeconds:0.0} | {r.FirstTokenSeconds:0.00} | {r.PrefillTokensPerSecond} | {r.DecodeTokensPerSecond} | {r.ReadGBPerSecond} | {r.RooflineTokensPerSecond:0.0} | {r.RooflinePercent:0} | {(object?)r.KernelSharePercent ?? "—"} | {(object?)r.KernelReadGBPerSecond ?? "—"} | {r.PeakRssGB:0.00} |"));
        var fp32 = Rows.FirstOrDefault(r => r.DType == "fp32");
        var bf16 = Rows.FirstOrDefault(r => r.DType == "bf16");
        if (fp32 is not null && bf16 is not null)
        {
            sb.AppendLine();
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"bf16 vs fp32, same run (medians): prefill {bf16.PrefillTokensPerSecond.Median / fp32.PrefillTokensPerSecond.Median:0.00}x, decode {bf16.DecodeTokensPerSecond.Median / fp32.DecodeTokensPerSecond.Median:0.00}x"));
        }
        return sb.ToString();
    }
}

/// <summary>
/// Prefill and decode speed of a published model shape with random weights created directly in the chosen dtype (no
/// file, no fp32 copy), beside the memory read bandwidth measured in the same run: decoding one token reads every
/// weight once, so bandwidth ÷ bytes read per token is the ceiling ("roofline") decode speed. Peak RSS is the process's
/// high-water mark while that dtype was built and run (reset between dtypes where Linux allows it).
/// </summary>
public static class ShapeBenchmark
{
    /// <summary>Published LLaMA-style shapes, run in this project's <see cref="LanguageModel"/>.</summary>
    public static IReadOnlyDictionary<string, LanguageModelConfig> LlamaShapes { get; } = new Dictionary<string, LanguageModelConfig>
    {
        ["qwen2-0.5b"] = new()
        {
            ModelType = "qwen2", VocabSize = 151936, HiddenSize = 896, IntermediateSize = 4864, NumHiddenLayers = 24,
            NumAttentionHeads = 14, NumKeyValueHeads = 2, MaxPositionEmbeddings = 32768, RopeTheta = 1e6, TieWordEmbeddings = true,
        },
        ["llama-7b"] = new()
        {
            VocabSize = 32000, HiddenSize = 4096, IntermediateSize = 11008, NumHiddenLayers = 32, NumAttentionHeads = 32,
            NumKeyValueHeads = 32, MaxPositionEmbeddings = 4096, RmsNormEps = 1e-5, TieWordEmbeddings = false,
        },
    };

    /// <summary>
    /// GLM shapes, run in the real GLM block (<see cref="GlmDecoder"/>: post-LN with α-scaled residuals, fused QKV with
    /// biases, 2D rotary, GELU MLP 4096 → 16384 → 4096). chatglm-6b is GlmConfig's defaults: ChatGLM-6B's sizes.
    /// </summary>
    public static IReadOnlyDictionary<string, GlmConfig> GlmShapes { get; } = new Dictionary<string, GlmConfig>
    {
        ["chatglm-6b"] = new(),
    };

    /// <summary>Every shape name, LLaMA-style first.</summary>
    public static IReadOnlyList<string> ShapeNames { get; } = [.. LlamaShapes.Keys, .. GlmShapes.Keys];

    /// <summary>The parameter count of a named shape.</summary>
    public static long CountParameters(string shape) =>
        LlamaShapes.TryGetValue(shape, out var c) ? LanguageModel.CountParameters(c)
        : GlmShapes.TryGetValue(shape, out var g) ? GlmDecoder.CountParameters(g)
        : throw new XrayVLException($"unknown --shape '{shape}': use {string.Join(", ", ShapeNames)}");

    /// <summary>
    /// A model under test, whatever its block: its prefill (ms for the whole prompt, last-position logits) and cached
    /// greedy decoding (tokens/s over n tokens after the rest of the ids as prompt), bytes one decoded token reads from
    /// its weights, and KV-cache bytes per cached position.
    /// </summary>
    private sealed record Subject(nn.Module Module, long VocabSize, Func<Tensor, double> PrefillMs, Func<Tensor, int, DecodeMeasurement> Decode,
        long WeightBytesPerToken, long KvBytesPerPosition);

    public sealed record Options
    {
        public int Threads { get; init; } = Math.Min(2, Environment.ProcessorCount);
        public int Repeats { get; init; } = 3;
        public int PromptTokens { get; init; } = 128;
        public int DecodeTokens { get; init; } = 16;
    }

    /// <summary>Builds the named shape with random weights made directly in <paramref name="format"/>.</summary>
    private static Subject Create(string shape, WeightFormat format)
    {
        if (LlamaShapes.TryGetValue(shape, out var c))
        {
            var model = WeightFormats.CreateRandom(c, format);
            long kv = 2L * c.NumHiddenLayers * c.NumKeyValueHeads * c.HeadSize * (format == WeightFormat.Fp32 ? 4 : 2);
            return new Subject(model, c.VocabSize, ids => Bench.Prefill(model, ids), (ids, n) => Bench.CachedDecodeMeasured(model, ids, n),
                WeightFormats.DecodeBytesPerToken(model), kv);
        }
        if (GlmShapes.TryGetValue(shape, out var g))
        {
            var model = ModelLoading.Build(format, languageModelOnly: false, () => new GlmDecoder(g));
            long kv = 2L * g.NumLayers * g.NumAttentionHeads * g.HeadSize * (format == WeightFormat.Fp32 ? 4 : 2);
            // One decoded token reads every weight but the embedding table (the head is its own matrix in ChatGLM).
            long bytes = model.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).Concat(model.named_buffers())
                .Where(p => !p.Item1.EndsWith("word_embeddings.weight", StringComparison.Ordinal) || g.TieWordEmbeddings)
                .Sum(p => p.Item2.numel() * p.Item2.element_size());
            return new Subject(model, g.VocabSize, ids => GlmPrefill(model, ids), (ids, n) => GlmDecodeMeasured(model, ids, n), bytes, kv);
        }
        throw new XrayVLException($"unknown --shape '{shape}': use {string.Join(", ", ShapeNames)}");
    }

    /// <summary>GLM prompt inputs for T random ids: [gMASK] at T − 2 and &lt;sop&gt; at T − 1, as a chat prompt ends.</summary>
    private static (Tensor PositionIds, Tensor Mask) GlmInputs(long length) => GlmDecoder.Inputs(length, length - 2, length - 1);

    internal static double GlmPrefill(GlmDecoder model, Tensor ids)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        long length = ids.shape[1];
        var (positions, mask) = GlmInputs(length);
        var embeds = model.Embed(ids);
        var watch = Stopwatch.StartNew();
        using var cache = model.NewCache(1, (int)length);
        model.Logits(model.ForwardHidden(embeds, positions, mask, cache).narrow(1, length - 1, 1));
        return watch.Elapsed.TotalMilliseconds;
    }

    /// <summary>Tokens/s of cached greedy GLM decoding (each new token at the [gMASK] position, block positions 2, 3, …).</summary>
    internal static double GlmDecode(GlmDecoder model, Tensor ids, int tokens) => GlmDecodeMeasured(model, ids, tokens).TokensPerSecond;

    private static DecodeMeasurement GlmDecodeMeasured(GlmDecoder model, Tensor ids, int tokens)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        long length = ids.shape[1] - tokens;
        var (positions, mask) = GlmInputs(length);
        using var cache = model.NewCache(1, (int)length + tokens);
        var logits = model.Logits(model.ForwardHidden(model.Embed(ids.narrow(1, 0, length)), positions, mask, cache).narrow(1, length - 1, 1));
        var kernels = MatVec.Totals;
        var watch = Stopwatch.StartNew();
        for (int step = 0; step < tokens; step++)
        {
            using var stepScope = NewDisposeScope();
            var next = logits.argmax(-1).view(1, 1);                                                           // (1, 1)
            var position = torch.tensor(new[] { length - 2, step + 2L }).view(1, 2, 1);
            logits = model.Logits(model.ForwardHidden(model.Embed(next), position, mask: null, cache)).MoveToOuterDisposeScope();
        }
        return new DecodeMeasurement(tokens, watch.Elapsed.TotalSeconds, MatVec.Totals - kernels);
    }

    public static ShapeBenchmarkReport Run(string shape, IReadOnlyList<WeightFormat> formats, Options? options = null, Action<string>? log = null)
    {
        options ??= new Options();
        Bench.CheckCounts(options.Threads, options.Repeats);
        if (options.PromptTokens < 2 || options.DecodeTokens < 1)
            throw new XrayVLException("benchmark needs a prompt of at least 2 tokens and at least 1 decoded token");
        long parameters = CountParameters(shape);
        long available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        foreach (var format in formats)
        {
            double bytes = parameters * format switch { WeightFormat.Fp32 => 4.0, WeightFormat.Bf16 => 2.0, WeightFormat.Int8 => 1.2, _ => 0.7 };
            if (bytes > 0.9 * available)
                throw new XrayVLException($"{shape} in {format.Name()} needs about {bytes / 1e9:0.0} GB of weights, more than this machine's {available / 1e9:0.0} GB: choose another --dtype");
        }
        int previousThreads = torch.get_num_threads();
        torch.set_num_threads(options.Threads);
        try
        {
            var rows = new List<ShapeFigures>();
            foreach (var format in formats)
            {
                GC.Collect();
                ResetPeakRss();
                log?.Invoke($"{shape} {format.Name()}: creating random weights");
                var watch = Stopwatch.StartNew();
                var subject = Create(shape, format);
                using var model = subject.Module;
                double loadSeconds = watch.Elapsed.TotalSeconds;
                rows.Add(Measure(subject, format, loadSeconds, options, log));
            }
            return new ShapeBenchmarkReport(shape, parameters, options.Threads, options.PromptTokens,
                options.DecodeTokens, MatVec.Best.ToString(), rows);
        }
        finally
        {
            torch.set_num_threads(previousThreads);
        }
    }

    private static ShapeFigures Measure(Subject subject, WeightFormat format, double loadSeconds, Options options, Action<string>? log)
    {
        using var scope = NewDisposeScope();
        var model = subject.Module;
        int context = options.PromptTokens + options.DecodeTokens;
        using var random = new torch.Generator(0);
        var ids = torch.randint(0, subject.VocabSize, [1, context], ScalarType.Int64, generator: random);
        var prompt = ids.narrow(1, 0, options.PromptTokens);

        long weightBytes = model.parameters().Sum(p => p.numel() * p.element_size()) + model.buffers().Sum(b => b.numel() * b.element_size());
        // KV cache read per token at the mean context of the decoded tokens.
        long kvBytes = subject.KvBytesPerPosition * (options.PromptTokens + options.DecodeTokens / 2);
        long bytesPerToken = subject.WeightBytesPerToken + kvBytes;

        log?.Invoke($"{format.Name()}: prefill {options.PromptTokens} tokens");
        double firstMs = subject.PrefillMs(prompt);    // the first forward after load: warm-up and time to first token
        var prefill = Spread.Of(Enumerable.Range(0, options.Repeats).Select(_ => options.PromptTokens * 1000 / subject.PrefillMs(prompt)));

        // Bandwidth and decoding alternate, so that both see the same load from whatever else runs on the machine.
        log?.Invoke($"{format.Name()}: memory read bandwidth and decode {options.DecodeTokens} tokens, alternating");
        var (bandwidths, decodes) = (new List<double>(), new List<DecodeMeasurement>());
        for (int i = 0; i < options.Repeats; i++)
        {
            bandwidths.Add(ReadBandwidth(model, options.Threads));
            decodes.Add(subject.Decode(ids, options.DecodeTokens));
        }
        bandwidths.Add(ReadBandwidth(model, options.Threads));
        var (bandwidth, decode) = (Spread.Of(bandwidths), Spread.Of(decodes.Select(d => d.TokensPerSecond)));
        // The kernels' share and speed (fp32 decodes through libtorch alone: no kernel time, no figures).
        var kernelShare = decodes.All(d => d.Kernels.Bytes > 0) ? Spread.Of(decodes.Select(d => 100 * d.KernelShare)) : null;
        var kernelRead = kernelShare is null ? null : Spread.Of(decodes.Select(d => d.KernelGBPerSecond));

        return new ShapeFigures(format.Name(), weightBytes, bytesPerToken, loadSeconds, firstMs / 1000, prefill, decode, bandwidth,
            PeakRssBytes() / 1e9, kernelShare, kernelRead);
    }

    /// <summary>
    /// GB/s of reading every weight of <paramref name="model"/> once (summing it as 64-bit integers, 64 bytes at a time),
    /// split over <paramref name="threads"/> threads in 1 MiB pieces: what decoding streams, at decoding's thread count.
    /// </summary>
    public static unsafe double ReadBandwidth(nn.Module model, int threads)
    {
        var tensors = model.parameters().Select(p => (Tensor)p).Concat(model.buffers()).Where(t => t.is_contiguous()).ToArray();
        const long Piece = 1 << 20;
        var pieces = new List<(nint Start, long Length)>();
        long total = 0;
        foreach (var t in tensors)
        {
            long bytes = t.numel() * t.element_size();
            var span = t.bytes;   // a view of the tensor's storage
            fixed (byte* p = span)
                for (long off = 0; off + 64 <= bytes; off += Piece) pieces.Add(((nint)(p + off), Math.Min(Piece, bytes - off) & ~63L));
            total += bytes & ~63L;
        }
        long sink = 0;
        var watch = Stopwatch.StartNew();
        Parallel.ForEach(pieces, new ParallelOptions { MaxDegreeOfParallelism = threads }, () => Vector512<ulong>.Zero,
            (piece, _, acc) =>
            {
                var p = (Vector512<ulong>*)piece.Start;
                long n = piece.Length / 64;
                Vector512<ulong> a0 = acc, a1 = Vector512<ulong>.Zero, a2 = Vector512<ulong>.Zero, a3 = Vector512<ulong>.Zero;
                long i = 0;
                for (; i + 4 <= n; i += 4) { a0 += p[i]; a1 += p[i + 1]; a2 += p[i + 2]; a3 += p[i + 3]; }
                for (; i < n; i++) a0 += p[i];
                return a0 + a1 + a2 + a3;
            },
            acc => Interlocked.Add(ref sink, (long)Vector512.Sum(acc)));
        double seconds = watch.Elapsed.TotalSeconds;
        GC.KeepAlive(sink);
        return total / seconds / 1e9;
    }

    /// <summary>The process's peak resident set (VmHWM), or 0 where /proc is absent.</summary>
    public static long PeakRssBytes() => ProcStatusKilobytes("VmHWM:") * 1024;

    /// <summary>Resets VmHWM to the current RSS (Linux: "5" into /proc/self/clear_refs); silently does nothing elsewhere.</summary>
    public static void ResetPeakRss()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    private static long ProcStatusKilobytes(string key)
    {
        const string path = "/proc/self/status";
        if (!File.Exists(path)) return 0;
        foreach (var line in File.ReadLines(path))
            if (line.StartsWith(key, StringComparison.Ordinal))
                return long.Parse(line[key.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
        return 0;
    }
}
