using TorchSharp;
using XrayVL.Data;
using XrayVL.Inference;
using XrayVL.Modeling;
using static TorchSharp.torch;
using static XrayVL.Tests.Support.TinyLanguageModels;

namespace XrayVL.Tests.Inference;

/// <summary>DecodeSession with rows joining and leaving between steps: each row must decode exactly as it would alone.</summary>
public class ContinuousBatchingTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static Tensor Prompt(LanguageModel model, long[] ids)
    {
        using var noGrad = torch.no_grad();
        return model.Embed(Ids(ids))[0];
    }

    [Fact]
    public void RowsJoiningAtDifferentStepsDecodeAsAlone()
    {
        var model = Create(Config("qwen2", vocab: 100), seed: 41);
        using var _ = model;
        var generator = new TokenGenerator(model);
        var options = new GenerationOptions { MaxNewTokens = 14, RepetitionPenalty = 1.3, NoRepeatNgramSize = 3 };
        var prompts = new[] { RandomIds(4, 100, 42), RandomIds(11, 100, 43), RandomIds(6, 100, 44), RandomIds(2, 100, 45) };
        var promptIds = prompts.Select(p => (IReadOnlyList<int>)p.Select(i => (int)i).ToList()).ToArray();
        var alone = prompts.Select((p, i) => generator.Generate(Prompt(model, p), options, promptIds[i], Ct).ToList()).ToList();

        // Row 0 starts; row 1 (a longer prompt) joins after 3 steps, rows 2 and 3 after 7; row 3 has its own limit.
        using var session = new DecodeSession(model, options);
        var outputs = new Dictionary<int, List<int>>();
        var ended = new HashSet<int>();
        int[] joinAt = [0, 3, 7, 7];
        int?[] limits = [null, null, null, 5];
        var ids = new int[prompts.Length];
        for (int step = 0; session.Count > 0 || step <= joinAt.Max(); step++)
        {
            for (int i = 0; i < prompts.Length; i++)
                if (joinAt[i] == step)
                {
                    ids[i] = session.Add(Prompt(model, prompts[i]), promptIds[i], limits[i]);
                    outputs[ids[i]] = [];
                }
            foreach (var (row, token, done) in session.Step())
            {
                Assert.DoesNotContain(row, ended);
                if (token >= 0) outputs[row].Add(token);
                if (done) ended.Add(row);
            }
        }
        for (int i = 0; i < prompts.Length; i++)
            Assert.Equal(limits[i] is int l ? alone[i].Take(l).ToList() : alone[i], outputs[ids[i]]);
        Assert.Equal(prompts.Length, ended.Count);
    }

    [Fact]
    public void RemovedRowsStopAndTheOthersAreUnaffected()
    {
        var model = Create(Config("llama", vocab: 100), seed: 46);
        using var _ = model;
        var generator = new TokenGenerator(model);
        var options = new GenerationOptions { MaxNewTokens = 12 };
        var prompts = new[] { RandomIds(5, 100, 47), RandomIds(9, 100, 48), RandomIds(3, 100, 49) };
        var alone = prompts.Select(p => generator.Generate(Prompt(model, p), options, null, Ct).ToList()).ToList();

        using var session = new DecodeSession(model, options);
        var rows = prompts.Select(p => session.Add(Prompt(model, p))).ToArray();
        var outputs = rows.ToDictionary(r => r, _ => new List<int>());
        for (int step = 0; session.Count > 0; step++)
        {
            if (step == 4) session.Remove(rows[1]);                      // the longest prompt's client leaves
            var results = session.Step();
            if (step >= 4) Assert.DoesNotContain(results, r => r.Row == rows[1]);
            foreach (var (row, token, _) in results)
                if (token >= 0) outputs[row].Add(token);
        }
        Assert.Equal(alone[0], outputs[rows[0]]);
        Assert.Equal(alone[1].Take(4), outputs[rows[1]]);
        Assert.Equal(alone[2], outputs[rows[2]]);
    }

    [Fact]
    public void FinishedRowsLeaveTheBatchAndNothingLeaks()
    {
        var model = Create(Config("qwen2", vocab: 100), seed: 50);
        using var _ = model;
        var (short_, long_) = (Prompt(model, RandomIds(4, 100, 51)), Prompt(model, RandomIds(7, 100, 52)));
        var stats = DisposeScopeManager.Statistics;
        long before = stats.ThreadTotalLiveCount;
        using (var session = new DecodeSession(model, new GenerationOptions { MaxNewTokens = 30, RepetitionPenalty = 1.2 }))
        {
            session.Add(short_, maxNewTokens: 3);
            session.Add(long_, maxNewTokens: 9);
            var sizes = new List<int>();
            while (session.Count > 0) sizes.Add(session.Step().Count);
            Assert.Equal([2, 2, 2, 1, 1, 1, 1, 1, 1], sizes);                  // the short row leaves after its 3rd token
            session.Remove(12345);                                           // unknown ids are ignored
        }
        Assert.Equal(before, stats.ThreadTotalLiveCount);
    }

    [Fact]
    public void GatherMovesCachedPositionsAndKeepsAttentionExact()
    {
        // Two rows prefilled apart, then gathered into one cache: the next step's logits equal each row's own.
        var model = Create(Config("llama", vocab: 100), seed: 53);
        using var _ = model;
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var a = RandomIds(3, 100, 54);
        var b = RandomIds(8, 100, 55);
        using var cacheA = model.NewCache(1, 8);
        using var cacheB = model.NewCache(1, 8);
        model.Forward(model.Embed(Ids(a)), null, cacheA);
        model.Forward(model.Embed(Ids(b)), null, cacheB);
        using var gathered = KvCache.Gather([(cacheA, 0, 3), (cacheB, 0, 8)], length: 8, capacity: 9);
        Assert.Equal(8, gathered.Length);
        var mask = torch.tensor(new long[] { 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 }, [2, 9]);
        var next = torch.tensor(new long[] { 7, 9 }, [2, 1]);
        var batched = model.Forward(model.Embed(next), mask, gathered);                            // (2, 1, V)
        var fullA = model.Forward(model.Embed(Ids([.. a, 7])))[0, -1];
        var fullB = model.Forward(model.Embed(Ids([.. b, 9])))[0, -1];
        Assert.True(MaxAbsDiff(batched[0, 0], fullA) < 1e-4);
        Assert.True(MaxAbsDiff(batched[1, 0], fullB) < 1e-4);
    }

    [Fact]
    public void GridBoxesReadWhatInstructionsWrite()
    {
        var written = AnswerFormats.Box(new StudyBox(0, "right lung", 12.4, 20.6, 48, 88.5));
        Assert.Equal([new GridBox(12, 21, 48, 89)], GridBoxes.Parse($"The right lung is at {written}."));
        Assert.Equal([new GridBox(10, 20, 30, 40), new GridBox(5, 5, 95, 60)], GridBoxes.Parse("{<30><40><10><20>} and {< 5 ><5><95><60>}"));
        Assert.Empty(GridBoxes.Parse("{<10><20><10><40>} {<1><2><3><400>} {<1><2><3>} <10><20><30><40>"));   // no area, off grid, 3 numbers, no braces
    }
}
