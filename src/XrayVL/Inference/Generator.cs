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
            var tokens = session.Step();
            if (tokens is null || tokens[0] < 0) yield break;
            yield return tokens[0];
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
            var tokens = await Task.Run(session.Step, cancellationToken);
            if (tokens is null || tokens[0] < 0) yield break;
            yield return tokens[0];
        }
    }

    /// <summary>
    /// Generates for several prompts of different lengths at once (left padding + attention mask), greedy or sampling;
    /// each row ends on its own. With NumBeams &gt; 1 the prompts are searched one after another.
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
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var tokens = session.Step();
            if (tokens is null) break;
            for (int r = 0; r < tokens.Length; r++)
                if (tokens[r] >= 0) outputs[r].Add(tokens[r]);
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

/// <summary>
/// Greedy / sampling decoding of one or more left-padded prompts: holds the cache, the attention mask and the histories
/// between steps (all outside any dispose scope, released by Dispose); each <see cref="Step"/> is self-contained.
/// </summary>
internal sealed class DecodeSession : IDisposable
{
    private readonly LanguageModel model;
    private readonly GenerationOptions options;
    private readonly KvCache cache;
    private readonly Tensor mask;             // (B, capacity) int64: 1 = real position
    private readonly Tensor lastTokens;       // (B, 1) int64: the tokens fed at the next step
    private Tensor? prefix;                   // (B, Tmax, D) left-padded prompts, released after the prefill
    private readonly TokenHistory history;
    private readonly Sampler sampler;
    private readonly bool[] finished;
    private readonly int maxNew;
    private int steps, length;

    public DecodeSession(LanguageModel model, IReadOnlyList<Tensor> prefixes, IReadOnlyList<IReadOnlyList<int>?> promptTokenIds, GenerationOptions options)
    {
        this.model = model;
        this.options = options.Validate();
        int rows = prefixes.Count;
        using var scope = NewDisposeScope();
        var promptLengths = prefixes.Select((p, i) => CheckPrefix(model, p, i)).ToArray();
        length = promptLengths.Max();
        maxNew = NewTokenLimit(model, length, options);

        var padded = torch.zeros([rows, length, model.Config.HiddenSize], model.DType, model.Device);  // (B, Tmax, D)
        mask = torch.zeros([rows, length + maxNew], ScalarType.Int64, model.Device);
        for (int r = 0; r < rows; r++)
        {
            int t = promptLengths[r];
            padded[r].narrow(0, length - t, t).copy_(AsBatchOfOne(model, prefixes[r])[0]);
            mask[r].narrow(0, length - t, t).fill_(1);
        }
        prefix = padded.DetachFromDisposeScope();
        mask.DetachFromDisposeScope();
        lastTokens = torch.zeros([rows, 1], ScalarType.Int64, model.Device).DetachFromDisposeScope();
        cache = model.NewCache(rows, length + maxNew);
        history = new TokenHistory(promptTokenIds, model.Config.VocabSize, options, model.Device);
        sampler = new Sampler(options, model.Device);
        finished = new bool[rows];
    }

    /// <summary>
    /// Decides one token per row: the id, or −1 for a row that has ended (now at a stop token, or earlier).
    /// Null once every row has ended or MaxNewTokens steps were taken.
    /// </summary>
    public int[]? Step()
    {
        if (steps == maxNew || finished.All(f => f)) return null;
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        Tensor logits;                                                              // (B, 1, V)
        if (prefix is not null)
        {
            logits = model.Forward(prefix, mask.narrow(1, 0, length), cache, logitsForLastOnly: true);
            prefix.Dispose();
            prefix = null;
        }
        else
        {
            mask.narrow(1, length, 1).fill_(1);
            length++;
            logits = model.Forward(model.Embed(lastTokens), mask.narrow(1, 0, length), cache, logitsForLastOnly: true);
        }
        var chosen = sampler.Choose(history.Process(logits.squeeze(1)));           // (B)
        lastTokens.copy_(chosen.view(-1, 1));
        var ids = chosen.cpu().data<long>().ToArray();

        var result = new int[ids.Length];
        for (int r = 0; r < ids.Length; r++)
        {
            if (finished[r] || options.StopTokenIds.Contains((int)ids[r])) { finished[r] = true; result[r] = -1; }
            else result[r] = (int)ids[r];
        }
        history.Append(result);
        steps++;
        return result;
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
        prefix?.Dispose();
        mask.Dispose();
        lastTokens.Dispose();
        cache.Dispose();
        history.Dispose();
        sampler.Dispose();
    }
}
