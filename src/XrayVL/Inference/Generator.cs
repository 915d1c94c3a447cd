using System.Runtime.CompilerServices;
using TorchSharp;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Inference;

/// <summary>
/// Token generation from a prompt given as embeddings (T, D) or (1, T, D) — the vision-language model splices image
/// features into the prompt's token embeddings before handing it over — so nothing here depends on a tokenizer.
/// The prompt is prefilled once into a <see cref="KvCache"/>, then each step feeds one token. Every step runs under
/// no_grad in its own dispose scope, so memory stays flat however long the generation.
/// <paramref name="model"/> is shared read-only; one Generator may serve several generations at a time.
/// </summary>
public sealed class Generator(LanguageModel model)
{
    public LanguageModel Model { get; } = model;

    /// <summary>
    /// Streams the new token ids of one prompt as they are decided (greedy or sampling), ending before a stop token or
    /// after MaxNewTokens. With NumBeams &gt; 1 the best beam's tokens are yielded once the search ends.
    /// <paramref name="promptTokenIds"/> are the prompt's real token ids, which the repetition penalty and the n-gram
    /// ban count as already present (optional).
    /// </summary>
    public IEnumerable<int> Generate(Tensor prefixEmbeds, GenerationOptions options, IReadOnlyList<int>? promptTokenIds = null,
        CancellationToken cancellationToken = default)
    {
        options.Validate();
        if (options.NumBeams > 1)
        {
            foreach (var token in BeamSearch(prefixEmbeds, options, promptTokenIds, cancellationToken)) yield return token;
            yield break;
        }
        using var session = new DecodeSession(Model, [prefixEmbeds], [promptTokenIds], options);
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var step = session.Step();
            if (step.Count == 0) yield break;
            if (step[0].Token >= 0) yield return step[0].Token;
            if (step[0].Ended) yield break;
        }
    }

    /// <summary>
    /// <see cref="Generate"/> as an async stream: each step runs on the thread pool, so a server thread is never held
    /// by the model; cancellation is checked before every step (OperationCanceledException).
    /// </summary>
    public async IAsyncEnumerable<int> GenerateAsync(Tensor prefixEmbeds, GenerationOptions options, IReadOnlyList<int>? promptTokenIds = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        options.Validate();
        if (options.NumBeams > 1)
        {
            var best = await Task.Run(() => BeamSearch(prefixEmbeds, options, promptTokenIds, cancellationToken), cancellationToken);
            foreach (var token in best) yield return token;
            yield break;
        }
        using var session = new DecodeSession(Model, [prefixEmbeds], [promptTokenIds], options);
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            // Step opens and closes its own dispose scope and no_grad (both per thread), so hopping threads is safe.
            var step = await Task.Run(session.Step, cancellationToken);
            if (step.Count == 0) yield break;
            if (step[0].Token >= 0) yield return step[0].Token;
            if (step[0].Ended) yield break;
        }
    }

    /// <summary>
    /// Generates for several prompts of different lengths at once (left padding + attention mask), greedy or sampling;
    /// each row ends on its own and leaves the batch. With NumBeams &gt; 1 the prompts are searched one after another.
    /// Returns each prompt's new tokens, without the stop token.
    /// </summary>
    public List<int[]> GenerateBatch(IReadOnlyList<Tensor> prefixEmbeds, GenerationOptions options,
        IReadOnlyList<IReadOnlyList<int>?>? promptTokenIds = null, CancellationToken cancellationToken = default)
    {
        options.Validate();
        if (prefixEmbeds.Count == 0) return [];
        if (promptTokenIds is not null && promptTokenIds.Count != prefixEmbeds.Count)
            throw new XrayVLException($"{prefixEmbeds.Count} prompts but {promptTokenIds.Count} prompt id lists");
        var ids = promptTokenIds ?? new IReadOnlyList<int>?[prefixEmbeds.Count];
        if (options.NumBeams > 1)
            return prefixEmbeds.Select((p, i) => BeamSearch(p, options, ids[i], cancellationToken)).ToList();

        var outputs = prefixEmbeds.Select(_ => new List<int>()).ToList();
        using var session = new DecodeSession(Model, prefixEmbeds, ids, options);
        while (session.Count > 0)
        {
            cancellationToken.ThrowIfCancellationRequested();
            foreach (var (row, token, _) in session.Step())
                if (token >= 0) outputs[row].Add(token);
        }
        return outputs.Select(o => o.ToArray()).ToList();
    }

    /// <summary>
    /// Beam search over NumBeams rows that share the prompt's prefill. A hypothesis scores
    /// sum(log p of its tokens, the stop token included) / length^LengthPenalty, length counting the stop token.
    /// Candidates come from the 2·NumBeams best (beam, token) pairs per step, as Hugging Face's; a stop token ends a
    /// hypothesis when it ranks among the first NumBeams. Deterministic. Returns the best hypothesis without its stop token.
    /// </summary>
    public int[] BeamSearch(Tensor prefixEmbeds, GenerationOptions options, IReadOnlyList<int>? promptTokenIds = null,
        CancellationToken cancellationToken = default)
    {
        options.Validate();
        int beams = options.NumBeams, vocab = Model.Config.VocabSize;
        int promptLength = DecodeSession.CheckPrefix(Model, prefixEmbeds, 0);
        int maxNew = DecodeSession.NewTokenLimit(Model, promptLength, options);

        var finished = new List<(int[] Tokens, double Score)>();       // normalised scores, best NumBeams kept
        void AddFinished(int[] tokens, double sumLogProb, int length)
        {
            finished.Add((tokens, sumLogProb / Math.Pow(length, options.LengthPenalty)));
            finished.Sort((a, b) => b.Score.CompareTo(a.Score));
            if (finished.Count > beams) finished.RemoveAt(finished.Count - 1);
        }

        using var cache = Model.NewCache(1, promptLength + maxNew);
        using var history = new TokenHistory(Enumerable.Repeat(promptTokenIds, beams).ToList(), vocab, options, Model.Device);
        using var mask = torch.ones(beams, promptLength + maxNew, ScalarType.Int64, Model.Device).DetachFromDisposeScope();
        var beamTokens = Enumerable.Range(0, beams).Select(_ => new List<int>()).ToArray();
        // Only beam 0 is alive at first: the others would duplicate it.
        var beamScores = Enumerable.Range(0, beams).Select(b => b == 0 ? 0.0 : double.NegativeInfinity).ToArray();

        Tensor logits;                                                  // (K, V) float32 next-token logits of each beam
        using (var scope = NewDisposeScope())
        using (torch.no_grad())
        {
            var prefix = DecodeSession.AsBatchOfOne(Model, prefixEmbeds);                              // (1, T, D)
            var first = Model.Forward(prefix, null, cache, logitsForLastOnly: true).squeeze(1);       // (1, V)
            cache.Reorder(torch.zeros(beams, ScalarType.Int64, Model.Device));                        // 1 row → K rows
            logits = first.expand(beams, vocab).contiguous().DetachFromDisposeScope();
        }
        try
        {
            for (int step = 0; step < maxNew; step++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                using var noGrad = torch.no_grad();

                var logProbs = history.Process(logits).log_softmax(-1).to(ScalarType.Float64);        // (K, V)
                var scores = logProbs + torch.tensor(beamScores, device: Model.Device).unsqueeze(1);   // (K, V)
                var (topScores, topIndices) = scores.view(-1).topk(Math.Min(2 * beams, beams * vocab));
                var candidateScores = topScores.cpu().data<double>().ToArray();
                var candidateIndices = topIndices.cpu().data<long>().ToArray();

                var next = new List<(int Beam, int Token, double Score)>();
                for (int rank = 0; rank < candidateScores.Length && next.Count < beams; rank++)
                {
                    double score = candidateScores[rank];
                    if (double.IsNegativeInfinity(score)) break;                   // only dead beams' candidates remain
                    int beam = (int)(candidateIndices[rank] / vocab), token = (int)(candidateIndices[rank] % vocab);
                    if (options.StopTokenIds.Contains(token))
                    {
                        if (rank < beams) AddFinished(beamTokens[beam].ToArray(), score, beamTokens[beam].Count + 1);
                        continue;
                    }
                    next.Add((beam, token, score));
                }
                if (next.Count == 0) break;

                int generated = step + 1;
                bool done = finished.Count >= beams && (options.EarlyStopping
                    || finished[^1].Score >= next[0].Score / Math.Pow(generated, options.LengthPenalty));
                if (done) break;

                while (next.Count < beams) next.Add((next[0].Beam, next[0].Token, double.NegativeInfinity)); // dead filler rows
                var sourceRows = next.Select(n => n.Beam).ToArray();
                var tokens = next.Select(n => n.Token).ToArray();
                beamTokens = next.Select(n => new List<int>(beamTokens[n.Beam]) { n.Token }).ToArray();
                beamScores = next.Select(n => n.Score).ToArray();
                history.Reorder(sourceRows);
                history.Append(tokens);

                if (generated == maxNew)
                {
                    for (int b = 0; b < beams; b++)
                        if (!double.IsNegativeInfinity(beamScores[b])) AddFinished(beamTokens[b].ToArray(), beamScores[b], generated);
                    break;
                }

                cache.Reorder(torch.tensor(sourceRows.Select(r => (long)r).ToArray(), device: Model.Device));
                var tokenIds = torch.tensor(tokens.Select(t => (long)t).ToArray(), device: Model.Device).view(beams, 1);
                var nextLogits = Model.Forward(Model.Embed(tokenIds), mask.narrow(1, 0, promptLength + generated), cache, logitsForLastOnly: true)
                    .squeeze(1).DetachFromDisposeScope();                                                // (K, V)
                logits.Dispose();
                logits = nextLogits;
            }
        }
        finally
        {
            logits.Dispose();
        }
        return finished.Count == 0 ? [] : finished[0].Tokens;
    }
}

/// <summary>One row's outcome of a <see cref="DecodeSession.Step"/>.</summary>
/// <param name="Row">The id <see cref="DecodeSession.Add"/> returned.</param>
/// <param name="Token">The chosen token, or −1 when the row chose a stop token (which is not returned).</param>
/// <param name="Ended">The row is finished (a stop token, or its token limit reached) and has left the session.</param>
internal readonly record struct RowToken(int Row, int Token, bool Ended);

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
            mask!.narrow(1, length, 1).fill_(1);
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
            prefixMask[r].narrow(0, padded - t, t).fill_(1);
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
            throw new XrayVLException($"prompt {index}: embeddings must be (length, {hidden}) or (1, length, {hidden}) with length > 0, got ({string.Join(", ", prefix.shape)})");
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
