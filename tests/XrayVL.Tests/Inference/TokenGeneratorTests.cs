using TorchSharp;
using XrayVL.Inference;
using XrayVL.Modeling;
using static TorchSharp.torch;
using static XrayVL.Tests.Support.TinyLanguageModels;

namespace XrayVL.Tests.Inference;

public class TokenGeneratorTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static (LanguageModel Model, TokenGenerator Generator) Setup(int seed, int vocab = 100, string type = "qwen2")
    {
        var model = Create(Config(type, vocab: vocab), seed);
        return (model, new TokenGenerator(model));
    }

    /// <summary>(T, D) prompt embeddings of random ids, as the vision-language model would hand them over.</summary>
    private static Tensor Prompt(LanguageModel model, long[] ids)
    {
        using var noGrad = torch.no_grad();
        return model.Embed(Ids(ids))[0];
    }

    /// <summary>Greedy by hand: the whole sequence is run again every step (no cache) and the argmax appended.</summary>
    private static List<int> GreedyByFullRecompute(LanguageModel model, long[] prompt, int steps)
    {
        using var noGrad = torch.no_grad();
        var sequence = prompt.ToList();
        var result = new List<int>();
        for (int i = 0; i < steps; i++)
        {
            using var scope = NewDisposeScope();
            long next = model.Forward(model.Embed(Ids(sequence)))[0, -1].argmax().item<long>();
            sequence.Add(next);
            result.Add((int)next);
        }
        return result;
    }

    /// <summary>Sum of log p(token | prefix) of a continuation, by full recompute.</summary>
    private static double LogProbability(LanguageModel model, long[] prompt, IReadOnlyList<int> continuation)
    {
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        var sequence = prompt.Concat(continuation.Select(t => (long)t)).ToArray();
        var logProbs = model.Forward(model.Embed(Ids(sequence)))[0].log_softmax(-1).to(ScalarType.Float64);  // (T, V)
        return continuation.Select((t, i) => logProbs[prompt.Length - 1 + i, t].item<double>()).Sum();
    }

    [Fact]
    public void GreedyEqualsTheArgmaxChainByFullRecompute()
    {
        var (model, generator) = Setup(seed: 1);
        using var _ = model;
        var ids = RandomIds(6, 100, seed: 2);
        var generated = generator.Generate(Prompt(model, ids), new GenerationOptions { MaxNewTokens = 20 }, cancellationToken: Ct).ToList();
        Assert.Equal(GreedyByFullRecompute(model, ids, 20), generated);
        Assert.True(generated.Distinct().Count() > 2);
    }

    [Fact]
    public void StopTokensEndGenerationAndAreNotReturned()
    {
        var (model, generator) = Setup(seed: 3);
        using var _ = model;
        var ids = RandomIds(5, 100, seed: 4);
        var free = generator.Generate(Prompt(model, ids), new GenerationOptions { MaxNewTokens = 20 }, cancellationToken: Ct).ToList();
        int stop = free[6];
        int firstStop = free.IndexOf(stop);
        var stopped = generator.Generate(Prompt(model, ids), new GenerationOptions { MaxNewTokens = 20, StopTokenIds = new HashSet<int> { stop, 99_999 } }, cancellationToken: Ct).ToList();
        Assert.Equal(free.Take(firstStop), stopped);
    }

    [Fact]
    public void MaxNewTokensIsHonouredAndCappedByTheContext()
    {
        var (model, generator) = Setup(seed: 5);
        using var _ = model;
        var prompt = Prompt(model, RandomIds(4, 100, seed: 6));
        Assert.Equal(7, generator.Generate(prompt, new GenerationOptions { MaxNewTokens = 7 }, cancellationToken: Ct).Count());
        // max_position_embeddings is 256: a 250-position prompt leaves room for 6 tokens.
        var longPrompt = Prompt(model, RandomIds(250, 100, seed: 7));
        Assert.Equal(6, generator.Generate(longPrompt, new GenerationOptions { MaxNewTokens = 50 }, cancellationToken: Ct).Count());
        var tooLong = Prompt(model, RandomIds(256, 100, seed: 8));
        Assert.Throws<XrayVLException>(() => generator.Generate(tooLong, new GenerationOptions(), cancellationToken: Ct).ToList());
    }

    [Fact]
    public void SeededSamplingIsReproducibleAndSeedsDiffer()
    {
        var (model, generator) = Setup(seed: 9);
        using var _ = model;
        var prompt = Prompt(model, RandomIds(5, 100, seed: 10));
        List<int> Sample(int seed) => generator.Generate(prompt,
            new GenerationOptions { MaxNewTokens = 20, DoSample = true, Temperature = 1.5, Seed = seed }, cancellationToken: Ct).ToList();
        Assert.Equal(Sample(42), Sample(42));
        Assert.NotEqual(Sample(42), Sample(43));
        Assert.NotEqual(GreedyByFullRecompute(model, RandomIds(5, 100, seed: 10), 20), Sample(42));
    }

    [Fact]
    public void TopKOneAndTinyTopPSampleTheGreedyChain()
    {
        var (model, generator) = Setup(seed: 11);
        using var _ = model;
        var ids = RandomIds(5, 100, seed: 12);
        var greedy = GreedyByFullRecompute(model, ids, 15);
        var topK = generator.Generate(Prompt(model, ids), new GenerationOptions { MaxNewTokens = 15, DoSample = true, TopK = 1, Temperature = 3, Seed = 1 }, cancellationToken: Ct);
        var topP = generator.Generate(Prompt(model, ids), new GenerationOptions { MaxNewTokens = 15, DoSample = true, TopP = 1e-6, Temperature = 3, Seed = 2 }, cancellationToken: Ct);
        Assert.Equal(greedy, topK.ToList());
        Assert.Equal(greedy, topP.ToList());
    }

    [Fact]
    public void RepetitionPenaltyFollowsTheFormula()
    {
        using var scope = NewDisposeScope();
        var logits = torch.tensor(new float[] { 2, -1, 0.5f, -3, 1, 0 }).view(1, 6);
        var seen = torch.tensor(new[] { true, true, false, false, true, true }).view(1, 6);
        var penalised = LogitsProcessing.ApplyRepetitionPenalty(logits, seen, 2.0).data<float>().ToArray();
        // Seen and positive: halved; seen and negative: doubled; unseen: unchanged.
        Assert.Equal(new float[] { 1, -2, 0.5f, -3, 0.5f, 0 }, penalised);
    }

    [Fact]
    public void RepetitionPenaltyCountsPromptIdsAndGeneratedTokens()
    {
        var (model, generator) = Setup(seed: 13);
        using var _ = model;
        var ids = RandomIds(5, 100, seed: 14);
        var greedy = GreedyByFullRecompute(model, ids, 12);
        // A huge penalty pushes every seen token below every unseen one (logits are O(1)): nothing repeats,
        // neither the prompt ids given for the penalty nor earlier output.
        var options = new GenerationOptions { MaxNewTokens = 12, RepetitionPenalty = 1e6 };
        var promptIds = new[] { greedy[0], greedy[1] };
        var generated = generator.Generate(Prompt(model, ids), options, promptIds, cancellationToken: Ct).ToList();
        Assert.Equal(generated.Count, generated.Distinct().Count());
        Assert.DoesNotContain(greedy[0], generated);
        Assert.DoesNotContain(greedy[1], generated);
        Assert.Equal(greedy, generator.Generate(Prompt(model, ids), new GenerationOptions { MaxNewTokens = 12 }, promptIds, cancellationToken: Ct).ToList());
    }

    [Fact]
    public void NgramBanFindsTheTokensThatWouldRepeat()
    {
        int[] history = [1, 2, 3, 1, 2];
        Assert.Equal([3], LogitsProcessing.TokensRepeatingNgram(history, 3));            // 1 2 → 3 was seen
        Assert.Equal([3], LogitsProcessing.TokensRepeatingNgram(history, 2));            // 2 → 3
        Assert.Equal([1, 2, 3, 1, 2], LogitsProcessing.TokensRepeatingNgram(history, 1)); // every seen token
        Assert.Empty(LogitsProcessing.TokensRepeatingNgram(history, 4));                 // 2 3 1 2 → nothing: "3 1 2" is new
        Assert.Empty(LogitsProcessing.TokensRepeatingNgram([5], 3));
    }

    [Fact]
    public void NoRepeatNgramSizeKeepsEveryBigramUnique()
    {
        var (model, generator) = Setup(seed: 15, vocab: 8);
        using var _ = model;
        var ids = RandomIds(3, 8, seed: 16);
        var generated = generator.Generate(Prompt(model, ids), new GenerationOptions { MaxNewTokens = 30, NoRepeatNgramSize = 2 }, ids.Select(i => (int)i).ToList(), cancellationToken: Ct).ToList();
        var all = ids.Select(i => (int)i).Concat(generated).ToList();
        var bigrams = all.Zip(all.Skip(1)).ToList();
        Assert.Equal(bigrams.Count, bigrams.Distinct().Count());
        Assert.True(generated.Count >= 20);
    }

    [Fact]
    public void TopKAndTopPFiltersByHand()
    {
        using var scope = NewDisposeScope();
        var logits = torch.tensor(new float[] { 1, 3, 2, 0 }).view(1, 4);
        var topK = LogitsProcessing.KeepTopK(logits, 2).data<float>().ToArray();
        Assert.Equal(new[] { float.NegativeInfinity, 3, 2, float.NegativeInfinity }, topK);

        var probabilities = torch.tensor(new float[] { 0.5f, 0.3f, 0.15f, 0.05f }).log().view(1, 4);
        bool[] Kept(double p) => LogitsProcessing.KeepTopP(probabilities, p).data<float>().Select(float.IsFinite).ToArray();
        Assert.Equal([true, true, false, false], Kept(0.7));       // 0.5 + 0.3 reach 0.7
        Assert.Equal([true, true, true, false], Kept(0.85));
        Assert.Equal([true, false, false, false], Kept(0.2));      // the top token always stays
        Assert.Equal([true, true, true, true], Kept(1.0));
    }

    [Fact]
    public void BeamSearchWithOneBeamIsGreedy()
    {
        var (model, generator) = Setup(seed: 17);
        using var _ = model;
        var ids = RandomIds(5, 100, seed: 18);
        var beam = generator.BeamSearch(Prompt(model, ids), new GenerationOptions { MaxNewTokens = 15, NumBeams = 1 }, cancellationToken: Ct);
        Assert.Equal(GreedyByFullRecompute(model, ids, 15), beam);
    }

    [Theory]
    [InlineData(19)]
    [InlineData(21)]
    [InlineData(23)]
    public void BeamSearchScoresAtLeastGreedy(int seed)
    {
        var (model, generator) = Setup(seed, vocab: 20);
        using var _ = model;
        var ids = RandomIds(4, 20, seed + 1);
        var greedy = GreedyByFullRecompute(model, ids, 8);
        var beams = generator.Generate(Prompt(model, ids), new GenerationOptions { MaxNewTokens = 8, NumBeams = 3 }, cancellationToken: Ct).ToList();
        Assert.Equal(8, beams.Count);
        Assert.True(LogProbability(model, ids, beams) >= LogProbability(model, ids, greedy) - 1e-9);
    }

    [Theory]
    [InlineData(1.0)]
    [InlineData(0.0)]
    [InlineData(2.0)]
    public void BeamSearchAsWideAsTheSearchSpaceFindsTheExactBest(double lengthPenalty)
    {
        // Vocabulary {0, 1, 2, stop = 3}, at most 3 new tokens: 1 + 3 + 9 hypotheses end in the stop token, 27 reach the
        // limit. 64 beams keep every one of them, so beam search must return the best-scoring hypothesis of all 40.
        var (model, generator) = Setup(seed: 25, vocab: 4);
        using var _ = model;
        var ids = RandomIds(3, 4, seed: 26);
        const int stop = 3;
        var hypotheses = new List<(int[] Tokens, double Score)>();
        int[][] sequences = [[], .. Enumerable.Range(0, 3).Select(a => new[] { a }),
            .. from a in Enumerable.Range(0, 3) from b in Enumerable.Range(0, 3) select new[] { a, b },
            .. from a in Enumerable.Range(0, 3) from b in Enumerable.Range(0, 3) from c in Enumerable.Range(0, 3) select new[] { a, b, c }];
        foreach (var s in sequences)
        {
            var scored = s.Length < 3 ? [.. s, stop] : s;                            // a finished hypothesis counts its stop token
            hypotheses.Add((s, LogProbability(model, ids, scored) / Math.Pow(scored.Length, lengthPenalty)));
        }
        var best = hypotheses.MaxBy(h => h.Score).Tokens;
        var options = new GenerationOptions { MaxNewTokens = 3, NumBeams = 64, LengthPenalty = lengthPenalty, StopTokenIds = new HashSet<int> { stop } };
        Assert.Equal(best, generator.BeamSearch(Prompt(model, ids), options, cancellationToken: Ct));
        Assert.Equal(best, generator.BeamSearch(Prompt(model, ids), options, cancellationToken: Ct));                 // deterministic
    }

    [Fact]
    public void BatchedGenerationMatchesEachPromptAlone()
    {
        var (model, generator) = Setup(seed: 27);
        using var _ = model;
        var prompts = new[] { RandomIds(3, 100, 28), RandomIds(7, 100, 29), RandomIds(5, 100, 30) };
        var alone = prompts.Select(p => generator.Generate(Prompt(model, p), new GenerationOptions { MaxNewTokens = 12 }, cancellationToken: Ct).ToList()).ToList();
        int stop = alone[2][4];                                                        // the third row stops early
        var options = new GenerationOptions { MaxNewTokens = 12, StopTokenIds = new HashSet<int> { stop } };
        var expected = alone.Select(a => a.Contains(stop) ? a.Take(a.IndexOf(stop)).ToList() : a).ToList();
        var batch = generator.GenerateBatch(prompts.Select(p => Prompt(model, p)).ToList(), options, cancellationToken: Ct);
        Assert.Equal(expected, batch.Select(b => b.ToList()).ToList());
        Assert.True(batch[2].Length <= 4);

        // Beam search in a batch: prompt by prompt.
        var beamOptions = new GenerationOptions { MaxNewTokens = 6, NumBeams = 2 };
        var beamBatch = generator.GenerateBatch(prompts.Select(p => Prompt(model, p)).ToList(), beamOptions, cancellationToken: Ct);
        Assert.Equal(generator.BeamSearch(Prompt(model, prompts[1]), beamOptions, cancellationToken: Ct), beamBatch[1]);
    }

    [Fact]
    public async Task AsyncStreamYieldsTheSameTokensAndStopsOnCancellation()
    {
        var (model, generator) = Setup(seed: 31);
        using var _ = model;
        var prompt = Prompt(model, RandomIds(5, 100, seed: 32));
        var options = new GenerationOptions { MaxNewTokens = 40 };
        var streamed = new List<int>();
        await foreach (var token in generator.GenerateAsync(prompt, options, cancellationToken: Ct))
            streamed.Add(token);
        Assert.Equal(generator.Generate(prompt, options, cancellationToken: Ct).ToList(), streamed);

        using var cancellation = new CancellationTokenSource();
        var received = new List<int>();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var token in generator.GenerateAsync(prompt, options, cancellationToken: cancellation.Token))
            {
                received.Add(token);
                if (received.Count == 3) cancellation.Cancel();
            }
        });
        Assert.Equal(streamed.Take(3), received);
        Assert.Throws<OperationCanceledException>(() => generator.Generate(prompt, options, null, cancellation.Token).ToList());
    }

    [Fact]
    public void LiveTensorCountStaysFlatWhileDecoding()
    {
        var (model, generator) = Setup(seed: 33);
        using var _ = model;
        var prompt = Prompt(model, RandomIds(5, 100, seed: 34));
        var stats = DisposeScopeManager.Statistics;                                    // this thread's tensors
        long before = stats.ThreadTotalLiveCount;
        var liveAt = new Dictionary<int, long>();
        int count = 0;
        var options = new GenerationOptions { MaxNewTokens = 60, RepetitionPenalty = 1.2, NoRepeatNgramSize = 3 };
        foreach (var _token in generator.Generate(prompt, options, cancellationToken: Ct))
            liveAt[++count] = stats.ThreadTotalLiveCount;
        Assert.Equal(60, count);
        Assert.Equal(liveAt[10], liveAt[59]);                                          // nothing accumulates per step
        Assert.True(liveAt[60] < liveAt[59]);                                          // the finished row leaves at once
        Assert.Equal(before, stats.ThreadTotalLiveCount);                              // and everything is released at the end

        long beforeBeams = stats.ThreadTotalLiveCount;
        generator.BeamSearch(prompt, options with { NumBeams = 3, MaxNewTokens = 20 }, cancellationToken: Ct);
        Assert.Equal(beforeBeams, stats.ThreadTotalLiveCount);
    }

    [Theory]
    [InlineData(0, 1, false, 1.0, 1.0, "max_new_tokens")]
    [InlineData(10, 0, false, 1.0, 1.0, "num_beams")]
    [InlineData(10, 2, true, 1.0, 1.0, "beam search")]
    [InlineData(10, 1, true, 0.0, 1.0, "temperature")]
    [InlineData(10, 1, true, 1.0, 0.0, "top_p")]
    public void InvalidOptionsAreRefused(int maxNew, int beams, bool sample, double temperature, double topP, string expected)
    {
        var options = new GenerationOptions { MaxNewTokens = maxNew, NumBeams = beams, DoSample = sample, Temperature = temperature, TopP = topP };
        var e = Assert.Throws<XrayVLException>(() => options.Validate());
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void BadPromptsAreRefusedClearly()
    {
        var (model, generator) = Setup(seed: 35);
        using var _ = model;
        using var scope = NewDisposeScope();
        var e = Assert.Throws<XrayVLBugException>(() => generator.Generate(torch.zeros(5, 32), new GenerationOptions(), cancellationToken: Ct).ToList());
        Assert.Contains("prompt 0", e.Message);
        Assert.Throws<XrayVLBugException>(() => generator.Generate(torch.zeros(2, 5, 64), new GenerationOptions(), cancellationToken: Ct).ToList());
        Assert.Throws<XrayVLException>(() => generator.Generate(torch.zeros(5, 64), new GenerationOptions(), [100], cancellationToken: Ct).ToList());
        Assert.Empty(generator.GenerateBatch([], new GenerationOptions(), cancellationToken: Ct));
    }
}

[Collection(nameof(XrayVL.Tests.Modeling.ProcessWideTorchState))]                  // it sets the thread count
public class DecodeBenchmarkTests
{
    [Fact]
    public void BenchmarkRunsOnATinyConfigAndReportsEveryFigure()
    {
        var config = XrayVL.Tests.Support.TinyLanguageModels.Config();
        var result = XrayVL.Benchmarks.DecodeBenchmark.Run(config, context: 16, threads: 1, repeats: 1, decodeTokens: 4, recomputeTokens: 2);
        Assert.Equal(LanguageModel.CountParameters(config), result.Parameters);
        Assert.All(new[] { result.CachedTokensPerSecondFp32, result.RecomputeTokensPerSecondFp32, result.CachedTokensPerSecondBf16,
                           result.PrefillMillisecondsFp32, result.PrefillMillisecondsBf16 }, v => Assert.True(v > 0 && double.IsFinite(v)));
        Assert.Contains("tokens/s", result.ToString());
        Assert.Throws<XrayVLException>(() => XrayVL.Benchmarks.DecodeBenchmark.Run(config, context: 4, decodeTokens: 4));
    }
}
