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
/// <paramref name="model"/> is shared read-only; one TokenGenerator may serve several generations at a time.
/// </summary>
public sealed class TokenGenerator(LanguageModel model)
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
            throw new XrayVLBugException($"{prefixEmbeds.Count} prompts but {promptTokenIds.Count} prompt id lists");
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
        CancellationToken cancellationToken = default) => BeamSearchWithReason(prefixEmbeds, options, promptTokenIds, cancellationToken).Tokens;

    /// <summary><see cref="BeamSearch"/>, with why the best hypothesis ended: its stop token, or the token limit.</summary>
    internal (int[] Tokens, FinishReason Reason) BeamSearchWithReason(Tensor prefixEmbeds, GenerationOptions options,
        IReadOnlyList<int>? promptTokenIds, CancellationToken cancellationToken)
    {
        options.Validate();
        int beams = options.NumBeams, vocab = Model.Config.VocabSize;
        int promptLength = DecodeSession.CheckPrefix(Model, prefixEmbeds, 0);
        int maxNew = DecodeSession.NewTokenLimit(Model, promptLength, options);

        var finished = new List<(int[] Tokens, double Score, FinishReason Reason)>();   // normalised scores, best NumBeams kept
        void AddFinished(int[] tokens, double sumLogProb, int length, FinishReason reason)
        {
            finished.Add((tokens, sumLogProb / Math.Pow(length, options.LengthPenalty), reason));
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
                        if (rank < beams) AddFinished(beamTokens[beam].ToArray(), score, beamTokens[beam].Count + 1, FinishReason.Stop);
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
                        if (!double.IsNegativeInfinity(beamScores[b])) AddFinished(beamTokens[b].ToArray(), beamScores[b], generated, FinishReason.Length);
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
        return finished.Count == 0 ? ([], FinishReason.Length) : (finished[0].Tokens, finished[0].Reason);
    }
}
