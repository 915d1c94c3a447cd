using TorchSharp;
using static TorchSharp.torch;

namespace XrayVL.Inference;

/// <summary>
/// Logits processors and warpers, each a pure function on (R, V) float32 logits (one row per sequence), in Hugging Face's
/// order: penalties first (they change the ranking greedy and beam search see), then temperature, top-k, top-p
/// (sampling only).
/// </summary>
public static class LogitsProcessing
{
    // −∞ as a Scalar held for the process. `masked_fill(mask, double)` converts the double to a temporary native Scalar
    // that only its finalizer frees; one collected while libtorch still reads it gives a garbage fill value. A static
    // field (or a `using` local) stays reachable until the call returns.
    private static readonly Scalar NegativeInfinity = double.NegativeInfinity;

    /// <summary>
    /// CTRL / HF repetition penalty: where <paramref name="seen"/> (R, V) is true, positive logits are divided by the
    /// penalty and negative ones multiplied, so a penalty &gt; 1 always makes a seen token less likely.
    /// </summary>
    public static Tensor ApplyRepetitionPenalty(Tensor logits, Tensor seen, double penalty)
    {
        using var scope = NewDisposeScope();
        // Scalars held in locals until the calls return (see NegativeInfinity above).
        using Scalar factor = penalty, zero = 0.0;
        var penalised = torch.where(logits.gt(zero), logits / factor, logits * factor);
        return torch.where(seen, penalised, logits).MoveToOuterDisposeScope();
    }

    /// <summary>Token ids that would repeat an n-gram already present in <paramref name="history"/> if appended next.</summary>
    public static IEnumerable<int> TokensRepeatingNgram(IReadOnlyList<int> history, int n)
    {
        if (n <= 0 || history.Count + 1 < n) yield break;
        int prefixStart = history.Count - (n - 1);                     // the last n − 1 tokens
        for (int start = 0; start + n <= history.Count; start++)
        {
            bool samePrefix = true;
            for (int j = 0; j < n - 1 && samePrefix; j++) samePrefix = history[start + j] == history[prefixStart + j];
            if (samePrefix) yield return history[start + n - 1];
        }
    }

    /// <summary>Divides by the temperature (sampling only).</summary>
    public static Tensor ApplyTemperature(Tensor logits, double temperature)
    {
        if (temperature == 1.0) return logits.clone();
        using Scalar divisor = temperature;
        return logits / divisor;
    }

    /// <summary>Keeps the k largest logits of each row, the rest become −∞ (k ≤ 0 or ≥ V: unchanged).</summary>
    public static Tensor KeepTopK(Tensor logits, int k)
    {
        if (k <= 0 || k >= logits.shape[^1]) return logits.clone();
        using var scope = NewDisposeScope();
        var kth = logits.topk(k, dim: -1).values.narrow(-1, k - 1, 1);                    // (R, 1)
        return logits.masked_fill(logits.lt(kth), NegativeInfinity).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Nucleus filter: keeps, per row, the most likely tokens until their probability reaches <paramref name="p"/>
    /// (a token is dropped when the tokens ranked above it already hold p); the top token always stays.
    /// </summary>
    public static Tensor KeepTopP(Tensor logits, double p)
    {
        if (p >= 1.0) return logits.clone();
        using var scope = NewDisposeScope();
        var (sorted, order) = logits.sort(dim: -1, descending: true);                      // (R, V)
        var probabilities = sorted.softmax(-1);
        var massAbove = probabilities.cumsum(-1) - probabilities;
        using Scalar mass = p;
        var filtered = sorted.masked_fill(massAbove.ge(mass), NegativeInfinity);
        return torch.empty_like(logits).scatter_(-1, order, filtered).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Per-row token histories (prompt ids + generated ids) that the repetition penalty and the n-gram ban look at.
/// Beam search reorders rows as beams are kept or dropped.
/// </summary>
internal sealed class TokenHistory : IDisposable
{
    private List<int>[] rows;
    private Tensor? seen;                     // (R, V) bool: the repetition penalty's view of the rows, when it is on
    private readonly GenerationOptions options;
    private readonly int vocab;
    private readonly Device device;

    public TokenHistory(IReadOnlyList<IReadOnlyList<int>?> prompts, int vocab, GenerationOptions options, Device device)
    {
        this.options = options;
        this.vocab = vocab;
        this.device = device;
        rows = [];
        AddRows(prompts);
    }

    public int Count => rows.Length;

    public IReadOnlyList<int> Row(int r) => rows[r];

    /// <summary>Checks prompt ids against the vocabulary (before a row is admitted anywhere).</summary>
    public static void CheckIds(IReadOnlyList<int>? prompt, int vocab)
    {
        foreach (var id in prompt ?? [])
            if (id < 0 || id >= vocab) throw new XrayVLException($"prompt token id {id} is outside the vocabulary (0..{vocab - 1})");
    }

    /// <summary>Appends rows after the existing ones (continuous batching admits prompts between steps).</summary>
    public void AddRows(IReadOnlyList<IReadOnlyList<int>?> prompts)
    {
        foreach (var prompt in prompts) CheckIds(prompt, vocab);
        var added = prompts.Select(p => p?.ToList() ?? []).ToArray();
        if (options.RepetitionPenalty != 1.0)
        {
            var mask = new bool[added.Length * vocab];
            for (int r = 0; r < added.Length; r++)
                foreach (var id in added[r]) mask[r * vocab + id] = true;
            using var scope = NewDisposeScope();
            var addedSeen = torch.tensor(mask, device: device).view(added.Length, vocab);
            var all = (seen is null ? addedSeen : torch.cat([seen, addedSeen], 0)).DetachFromDisposeScope();
            seen?.Dispose();
            seen = all;
        }
        rows = [.. rows, .. added];
    }

    /// <summary>Appends one token per row; a negative id (a finished row) appends nothing.</summary>
    public void Append(IReadOnlyList<int> tokens)
    {
        using var scope = NewDisposeScope();
        for (int r = 0; r < rows.Length; r++)
        {
            if (tokens[r] < 0) continue;
            rows[r].Add(tokens[r]);
            if (seen is not null)
                using (torch.no_grad()) seen[r, tokens[r]] = torch.tensor(true);
        }
    }

    /// <summary>Row r becomes old row <paramref name="sourceRows"/>[r].</summary>
    public void Reorder(IReadOnlyList<int> sourceRows)
    {
        rows = sourceRows.Select(r => rows[r].ToList()).ToArray();
        if (seen is null) return;
        using var scope = NewDisposeScope();
        var index = torch.tensor(sourceRows.Select(r => (long)r).ToArray(), device: seen.device);
        var reordered = seen.index_select(0, index).DetachFromDisposeScope();
        seen.Dispose();
        seen = reordered;
    }

    /// <summary>The processors that change the ranking (repetition penalty, n-gram ban) on (R, V) logits.</summary>
    public Tensor Process(Tensor logits)
    {
        using var scope = NewDisposeScope();
        var processed = seen is null ? logits.clone() : LogitsProcessing.ApplyRepetitionPenalty(logits, seen, options.RepetitionPenalty);
        if (options.NoRepeatNgramSize > 0)
            for (int r = 0; r < rows.Length; r++)
                foreach (var id in LogitsProcessing.TokensRepeatingNgram(rows[r], options.NoRepeatNgramSize).Distinct())
                    if (id < vocab) processed[r, id] = torch.tensor(double.NegativeInfinity);
        return processed.MoveToOuterDisposeScope();
    }

    public void Dispose() => seen?.Dispose();
}

/// <summary>Picks the next token of each row: the argmax (greedy) or a draw from the warped distribution (sampling).</summary>
public sealed class Sampler : IDisposable
{
    private readonly GenerationOptions options;
    private readonly torch.Generator? generator;

    public Sampler(GenerationOptions options, Device device)
    {
        this.options = options;
        if (options.DoSample && options.Seed is int seed) generator = new torch.Generator(unchecked((ulong)seed), device);
    }

    /// <summary>(R, V) processed float32 logits → (R) int64 token ids.</summary>
    public Tensor Choose(Tensor logits)
    {
        if (!options.DoSample) return logits.argmax(-1);
        using var scope = NewDisposeScope();
        var warped = LogitsProcessing.ApplyTemperature(logits, options.Temperature);
        warped = LogitsProcessing.KeepTopK(warped, options.TopK);
        warped = LogitsProcessing.KeepTopP(warped, options.TopP);
        var probabilities = warped.softmax(-1);
        return torch.multinomial(probabilities, 1, generator: generator).squeeze(-1).MoveToOuterDisposeScope();
    }

    public void Dispose() => generator?.Dispose();
}
