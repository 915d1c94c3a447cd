using TorchSharp;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Inference;

/// <summary>One row's outcome of a <see cref="DecodeSession.Step"/>.</summary>
/// <param name="Row">The id <see cref="DecodeSession.Add"/> returned.</param>
/// <param name="Token">The chosen token, or −1 when the row chose a stop token (which is not returned).</param>
/// <param name="Ended">The row is finished (a stop token, or its token limit reached) and has left the session.</param>
internal readonly record struct RowToken(int Row, int Token, bool Ended)
{
    /// <summary>
    /// Why the row ended, the one rule every generation path reports: a stop token is <see cref="FinishReason.Stop"/>;
    /// a row ended by a token limit (max tokens, or the room left in the model's context) is <see cref="FinishReason.Length"/>.
    /// Null while the row runs.
    /// </summary>
    public FinishReason? Finish => !Ended ? null : Token < 0 ? FinishReason.Stop : FinishReason.Length;
}

/// <summary>
/// Greedy / sampling decoding of a changing set of rows (continuous batching): rows may be added and removed between
/// steps, and each ends on its own. Rows share the decoding settings (one <see cref="GenerationOptions"/>; only the token
/// limit is per row).
/// <para>
/// Rows that are running sit left-padded in one <see cref="KvCache"/> with an attention mask (positions count real
/// tokens only, so a padded row computes what it would alone). A step feeds every running row its last token at once;
/// rows added since the last step are prefilled together (left padding) in a cache of their own, and then both sets are
/// gathered into one cache. Finished and removed rows leave the cache at the end of the step, so no compute is spent
/// on them; the gather also trims the padding no row needs any more.
/// </para>
/// The cache, mask and histories live outside any dispose scope (released by Dispose); each <see cref="Step"/> is
/// self-contained, so the session may be stepped from any thread, one step at a time.
/// </summary>
internal sealed class DecodeSession : IDisposable
{
    // Held for the process: a Scalar made implicitly from a literal can be finalized while libtorch still reads it.
    private static readonly Scalar One = 1;

    private sealed class Row(int id, int promptLength, int maxNew)
    {
        public int Id { get; } = id;
        public int PromptLength { get; } = promptLength;
        public int MaxNew { get; } = maxNew;
        public int Generated { get; set; }
        /// <summary>Real (non-padding) positions this row has in the cache.</summary>
        public int Cached { get; set; }
        public int LastToken { get; set; }
        public Tensor? Prefix { get; set; }                   // (1, T, D) until prefilled
        public IReadOnlyList<int>? PromptIds { get; init; }
    }

    private readonly LanguageModel model;
    private readonly GenerationOptions options;
    private readonly Sampler sampler;
    private readonly TokenHistory history;                   // row r of the history = running[r]
    private readonly List<Row> running = [];                 // cache row r = running[r]
    private readonly List<Row> waiting = [];                 // added, not yet prefilled
    private readonly HashSet<int> removed = [];
    private KvCache? cache;
    private Tensor? mask;                                    // (B, capacity) int64: 1 = real position
    private Tensor? lastTokens;                              // (B, 1) int64: the tokens fed at the next step
    private int length;                                      // cache slots in use (padding included)
    private int nextId;

    public DecodeSession(LanguageModel model, GenerationOptions options)
    {
        this.model = model;
        this.options = options.Validate();
        history = new TokenHistory([], model.Config.VocabSize, options, model.Device);
        sampler = new Sampler(options, model.Device);
    }

    /// <summary>A session with these prompts added as rows 0, 1, ... (each checked, so a bad one is refused at once).</summary>
    public DecodeSession(LanguageModel model, IReadOnlyList<Tensor> prefixes, IReadOnlyList<IReadOnlyList<int>?> promptTokenIds, GenerationOptions options)
        : this(model, options)
    {
        try
        {
            for (int i = 0; i < prefixes.Count; i++) Add(prefixes[i], promptTokenIds[i], index: i);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public GenerationOptions Options => options;

    /// <summary>Rows added and not finished or removed.</summary>
    public int Count => running.Count + waiting.Count;

    /// <summary>
    /// Adds a prompt (embeddings (T, D) or (1, T, D), copied so the caller may dispose them) to be prefilled at the next
    /// step; returns its row id. <paramref name="maxNewTokens"/> overrides the options' limit for this row; either is
    /// shortened to the room left under max_position_embeddings.
    /// </summary>
    public int Add(Tensor prefixEmbeds, IReadOnlyList<int>? promptTokenIds = null, int? maxNewTokens = null, int? index = null)
    {
        int promptLength = CheckPrefix(model, prefixEmbeds, index ?? nextId);
        int maxNew = NewTokenLimit(model, promptLength, maxNewTokens is int m ? options with { MaxNewTokens = m } : options);
        TokenHistory.CheckIds(promptTokenIds, model.Config.VocabSize);
        Tensor copy;
        using (var scope = NewDisposeScope())
        using (torch.no_grad())
            copy = AsBatchOfOne(model, prefixEmbeds).clone().DetachFromDisposeScope();          // (1, T, D)
        var row = new Row(nextId++, promptLength, maxNew) { Prefix = copy, PromptIds = promptTokenIds };
        waiting.Add(row);
        return row.Id;
    }

    /// <summary>Removes a row (its client left): it gets no further step. Unknown or finished ids are ignored.</summary>
    public void Remove(int id)
    {
        int w = waiting.FindIndex(r => r.Id == id);
        if (w >= 0)
        {
            waiting[w].Prefix?.Dispose();
            waiting.RemoveAt(w);
        }
        else if (running.Any(r => r.Id == id)) removed.Add(id);
    }

    /// <summary>
    /// Decides one token for every row (running and newly added); rows that end leave the session.
    /// Empty once no row is left.
    /// </summary>
    public IReadOnlyList<RowToken> Step()
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        if (removed.Count > 0)
        {
            var kept = Enumerable.Range(0, running.Count).Where(r => !removed.Contains(running[r].Id)).ToList();
            Repack(kept.Select(r => (cache!, r, running[r])).ToList(), kept);
            removed.Clear();
        }
        if (running.Count == 0 && waiting.Count == 0) return [];

        var logits = new List<Tensor>();                                               // (B, V) float32, running rows first
        if (running.Count > 0)
        {
            mask!.narrow(1, length, 1).fill_(One);
            length++;
            logits.Add(model.Forward(model.Embed(lastTokens!), mask.narrow(1, 0, length), cache, logitsForLastOnly: true).squeeze(1));
            foreach (var row in running) row.Cached++;
        }
        var joining = waiting.ToList();
        waiting.Clear();
        KvCache? joinCache = null;
        try
        {
            if (joining.Count > 0)
            {
                (joinCache, var joinLogits) = Prefill(joining);
                logits.Add(joinLogits);
                history.AddRows(joining.Select(r => r.PromptIds).ToList());
            }
            var rows = running.Concat(joining).ToList();                               // history row order
            var chosen = sampler.Choose(history.Process(torch.cat(logits, 0)));        // (B)
            var ids = chosen.cpu().data<long>().ToArray();

            var results = new RowToken[rows.Count];
            var tokens = new int[rows.Count];
            for (int r = 0; r < rows.Count; r++)
            {
                var row = rows[r];
                int id = (int)ids[r];
                bool stop = options.StopTokenIds.Contains(id);
                if (!stop) row.Generated++;
                row.LastToken = id;
                tokens[r] = stop ? -1 : id;
                results[r] = new RowToken(row.Id, tokens[r], stop || row.Generated >= row.MaxNew);
            }
            history.Append(tokens);

            bool membershipChanges = joining.Count > 0 || results.Any(t => t.Ended);
            if (membershipChanges)
            {
                var keep = new List<(KvCache, int, Row)>();
                var keepHistory = new List<int>();
                for (int r = 0; r < rows.Count; r++)
                {
                    if (results[r].Ended) continue;
                    keep.Add(r < running.Count ? (cache!, r, rows[r]) : (joinCache!, r - running.Count, rows[r]));
                    keepHistory.Add(r);
                }
                Repack(keep, keepHistory);
            }
            else lastTokens!.copy_(chosen.view(-1, 1));
            return results;
        }
        finally
        {
            joinCache?.Dispose();
            foreach (var row in joining)
            {
                row.Prefix?.Dispose();
                row.Prefix = null;
            }
        }
    }

    /// <summary>Prefills new rows together, left-padded: their own cache and their next-token logits (B, V).</summary>
    private (KvCache Cache, Tensor Logits) Prefill(IReadOnlyList<Row> rows)
    {
        int padded = rows.Max(r => r.PromptLength);
        var prefix = torch.zeros([rows.Count, padded, model.Config.HiddenSize], model.DType, model.Device);  // (B, Tmax, D)
        var prefixMask = torch.zeros([rows.Count, padded], ScalarType.Int64, model.Device);                 // (B, Tmax)
        for (int r = 0; r < rows.Count; r++)
        {
            int t = rows[r].PromptLength;
            prefix[r].narrow(0, padded - t, t).copy_(rows[r].Prefix![0]);
            prefixMask[r].narrow(0, padded - t, t).fill_(One);
            rows[r].Cached = t;
        }
        var rowCache = model.NewCache(rows.Count, padded);
        try
        {
            var logits = model.Forward(prefix, prefixMask, rowCache, logitsForLastOnly: true).squeeze(1);  // (B, V)
            return (rowCache, logits);
        }
        catch
        {
            rowCache.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Rebuilds the running set from <paramref name="keep"/> (source cache, row in it, row): one cache, right-aligned,
    /// as short as the longest row and with room for every row's remaining tokens; mask and last tokens follow, and the
    /// histories keep rows <paramref name="historyRows"/> (one per kept row, in order).
    /// </summary>
    private void Repack(IReadOnlyList<(KvCache Source, int SourceRow, Row Row)> keep, IReadOnlyList<int> historyRows)
    {
        var oldCache = cache;
        mask?.Dispose();
        lastTokens?.Dispose();
        (cache, mask, lastTokens) = (null, null, null);
        running.Clear();
        if (keep.Count > 0)
        {
            length = keep.Max(k => k.Row.Cached);
            int capacity = length + keep.Max(k => k.Row.MaxNew - k.Row.Generated);
            cache = KvCache.Gather(keep.Select(k => (k.Source, k.SourceRow, k.Row.Cached)).ToList(), length, capacity);
            var maskRows = new long[keep.Count * capacity];
            for (int r = 0; r < keep.Count; r++)
                for (int s = length - keep[r].Row.Cached; s < length; s++) maskRows[r * capacity + s] = 1;
            mask = torch.tensor(maskRows, [keep.Count, capacity], device: model.Device).DetachFromDisposeScope();
            lastTokens = torch.tensor(keep.Select(k => (long)k.Row.LastToken).ToArray(), [keep.Count, 1], device: model.Device).DetachFromDisposeScope();
            running.AddRange(keep.Select(k => k.Row));
        }
        else length = 0;
        oldCache?.Dispose();
        history.Reorder(historyRows);
    }

    /// <summary>The prompt's length, or a clear error naming the prompt when its embeddings are not (T, D) or (1, T, D).</summary>
    internal static int CheckPrefix(LanguageModel model, Tensor prefix, int index)
    {
        int hidden = model.Config.HiddenSize;
        bool ok = (prefix.dim() == 2 && prefix.shape[1] == hidden) || (prefix.dim() == 3 && prefix.shape[0] == 1 && prefix.shape[2] == hidden);
        if (!ok || prefix.shape[^2] == 0)
            throw new XrayVLBugException($"prompt {index}: embeddings must be (length, {hidden}) or (1, length, {hidden}) with length > 0, got ({string.Join(", ", prefix.shape)})");
        return (int)prefix.shape[^2];
    }

    /// <summary>A checked prompt as (1, T, D) in the model's dtype and device.</summary>
    internal static Tensor AsBatchOfOne(LanguageModel model, Tensor prefix) =>
        (prefix.dim() == 2 ? prefix.unsqueeze(0) : prefix).to(model.DType, model.Device);

    /// <summary>MaxNewTokens, shortened so prompt + continuation stay within max_position_embeddings.</summary>
    internal static int NewTokenLimit(LanguageModel model, int promptLength, GenerationOptions options)
    {
        int room = model.Config.MaxPositionEmbeddings - promptLength;
        if (room <= 0)
            throw new XrayVLException($"prompt of {promptLength} positions leaves no room under max_position_embeddings ({model.Config.MaxPositionEmbeddings})");
        return Math.Min(options.MaxNewTokens, room);
    }

    public void Dispose()
    {
        foreach (var row in waiting) row.Prefix?.Dispose();
        waiting.Clear();
        mask?.Dispose();
        lastTokens?.Dispose();
        cache?.Dispose();
        history.Dispose();
        sampler.Dispose();
    }
}
