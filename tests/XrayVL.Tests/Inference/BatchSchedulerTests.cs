using XrayVL.Imaging;
using XrayVL.Inference;
using XrayVL.Serving;
using XrayVL.Tests.Serving;
using XrayVL.Text;

namespace XrayVL.Tests.Inference;

public class BatchSchedulerTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>A one-turn prompt about one image, as the chat template renders it.</summary>
    private static GenerationRequest Request(string question, GrayImage image, GenerationOptions options)
    {
        var loaded = ServingModel.Loaded;
        var conversation = new Conversation(ChatTemplate.DefaultSystemPrompt("en")).User(question, imageCount: 1);
        var rendered = ChatTemplate.Render(conversation, loaded.Tokenizer, addGenerationPrompt: true);
        return new GenerationRequest(rendered.Ids, [image], options);
    }

    private static async Task<List<int>> Collect(IAsyncEnumerable<int> tokens, CancellationToken cancellationToken = default)
    {
        var list = new List<int>();
        await foreach (int token in tokens.WithCancellation(cancellationToken)) list.Add(token);
        return list;
    }

    [Fact]
    public async Task BatchedAnswersEqualEachConversationAlone()
    {
        var loaded = ServingModel.Loaded;
        using var scheduler = new BatchScheduler(loaded.Model, loaded.Preprocess, new BatchSchedulerOptions { MaxBatch = 3 });
        var options = InferencePipeline.Decoding(loaded.Tokenizer) with { MaxNewTokens = 10 };
        var questions = Enumerable.Range(0, 7).Select(i => (Question: $"Describe view {i}.", Image: ServingModel.Pattern(100 + i))).ToList();

        // Alone: the TokenGenerator path of ChatSession (no scheduler), one conversation at a time.
        var alone = new List<string>();
        foreach (var (question, image) in questions)
        {
            var chat = new ChatSession(new InferencePipeline(loaded));
            chat.AddImage(image);
            alone.Add(await chat.AskAllAsync(question, options, Ct));
        }

        // Together: seven conversations at once through a scheduler of three rows.
        var together = await Task.WhenAll(questions.Select(async q =>
        {
            var chat = new ChatSession(new InferencePipeline(loaded, scheduler));
            chat.AddImage(q.Image);
            return await chat.AskAllAsync(q.Question, options, Ct);
        }));

        Assert.Equal(alone, together);
        Assert.True(alone.Distinct().Count() > 1, "different images and questions should give different answers");
        var stats = scheduler.Stats;
        Assert.Equal(7, stats.Completed);
        Assert.InRange(stats.LargestBatch, 2, 3);
        Assert.Equal(0, stats.Running + stats.Queued);
    }

    [Fact]
    public async Task AWithdrawnRequestFreesItsRowForTheNextOneAtOnce()
    {
        var loaded = ServingModel.Loaded;
        using var scheduler = new BatchScheduler(loaded.Model, loaded.Preprocess, new BatchSchedulerOptions { MaxBatch = 1 });
        var endless = new GenerationOptions { MaxNewTokens = 900 };                   // no stop token: runs to its limit
        var waiting = new GenerationOptions { MaxNewTokens = 5 };

        using var leave = new CancellationTokenSource();
        var first = scheduler.Submit(Request("first", ServingModel.Pattern(1), endless), leave.Token);
        var received = new List<int>();
        var firstTask = Task.Run(async () =>
        {
            await foreach (int token in first.WithCancellation(leave.Token))
            {
                received.Add(token);
                if (received.Count == 3) await leave.CancelAsync();
            }
        }, Ct);
        var second = await Collect(scheduler.GenerateAsync(Request("second", ServingModel.Pattern(2), waiting), Ct), Ct);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => firstTask);

        Assert.Equal(5, second.Count);
        var stats = scheduler.Stats;
        // The worker runs ahead of its reader (tokens wait in the stream), so some steps beyond the 3 tokens read were
        // taken before the cancellation landed; but most of the 900 never were: the row was freed mid-generation.
        Assert.InRange(stats.Steps, 8, 450);
        Assert.Equal(1, stats.Cancelled);
        Assert.Equal(1, stats.Completed);
        Assert.Null(first.FinishReason);
    }

    [Fact]
    public async Task AFullQueueRefusesNewRequestsAndOthersStillFinish()
    {
        var loaded = ServingModel.Loaded;
        using var scheduler = new BatchScheduler(loaded.Model, loaded.Preprocess, new BatchSchedulerOptions { MaxBatch = 1, MaxQueue = 2 });
        using var cancel = new CancellationTokenSource();
        var running = scheduler.Submit(Request("running", ServingModel.Pattern(3), new GenerationOptions { MaxNewTokens = 600 }), cancel.Token);
        await using (var tokens = running.GetAsyncEnumerator(Ct))
        {
            Assert.True(await tokens.MoveNextAsync());                                 // admitted: the queue is empty again
            var queued = Enumerable.Range(0, 2)
                .Select(i => scheduler.Submit(Request($"queued {i}", ServingModel.Pattern(4 + i), new GenerationOptions { MaxNewTokens = 2 }), Ct))
                .ToList();
            var refused = Assert.Throws<SchedulerBusyException>(() => scheduler.Submit(Request("one too many", ServingModel.Pattern(9), new GenerationOptions()), Ct));
            Assert.Contains("busy", refused.Message);
            await cancel.CancelAsync();
            foreach (var stream in queued) Assert.Equal(2, (await Collect(stream, Ct)).Count);
            Assert.All(queued, q => Assert.Equal(FinishReason.Length, q.FinishReason));
        }
    }

    [Fact]
    public void BadRequestsFailInTheCallerNotInTheBatch()
    {
        var loaded = ServingModel.Loaded;
        using var scheduler = new BatchScheduler(loaded.Model, loaded.Preprocess);
        var request = Request("two images?", ServingModel.Pattern(5), new GenerationOptions());
        var e = Assert.Throws<XrayVLException>(() => scheduler.Submit(request with { Images = [] }, Ct));
        Assert.Contains("1 image placeholders but 0 images", e.Message);
        var tooLong = request with { PromptIds = [.. request.PromptIds, .. Enumerable.Repeat(request.PromptIds[^1], 1100)] };
        Assert.Contains("context", Assert.Throws<XrayVLException>(() => scheduler.Submit(tooLong, Ct)).Message);
        Assert.Throws<XrayVLException>(() => scheduler.Submit(request with { PromptIds = [.. request.PromptIds, 999_999] }, Ct));
        Assert.Throws<XrayVLException>(() => scheduler.Submit(request with { Options = new GenerationOptions { NumBeams = 2 } }, Ct));
        Assert.Equal(new SchedulerStats(0, 0, 0, 0, 0, 0, 0), scheduler.Stats);
    }

    [Fact]
    public void OnlyRowsThatDecodeAlikeShareABatch()
    {
        var greedy = new GenerationOptions { MaxNewTokens = 10, RepetitionPenalty = 1.1, StopTokenIds = new HashSet<int> { 1, 2 } };
        Assert.True(BatchScheduler.CanShareBatch(greedy, greedy with { MaxNewTokens = 99, StopTokenIds = new HashSet<int> { 2, 1 } }));
        Assert.False(BatchScheduler.CanShareBatch(greedy, greedy with { RepetitionPenalty = 1.0 }));
        Assert.False(BatchScheduler.CanShareBatch(greedy, greedy with { StopTokenIds = new HashSet<int> { 1 } }));
        var sampled = greedy with { DoSample = true, Temperature = 0.7 };
        Assert.False(BatchScheduler.CanShareBatch(greedy, sampled));
        Assert.True(BatchScheduler.CanShareBatch(sampled, sampled with { MaxNewTokens = 3 }));
        Assert.False(BatchScheduler.CanShareBatch(sampled, sampled with { Temperature = 0.8 }));
        Assert.False(BatchScheduler.CanShareBatch(sampled with { Seed = 1 }, sampled with { Seed = 1 }));     // a seed decodes alone
    }

    [Fact]
    public async Task GreedyAndSampledRequestsTakeTurnsInArrivalOrder()
    {
        var loaded = ServingModel.Loaded;
        using var scheduler = new BatchScheduler(loaded.Model, loaded.Preprocess, new BatchSchedulerOptions { MaxBatch = 4 });
        var greedy = new GenerationOptions { MaxNewTokens = 6 };
        var sampled = new GenerationOptions { MaxNewTokens = 6, DoSample = true, Temperature = 0.9, TopP = 0.9 };
        var streams = new[] { greedy, sampled, greedy, sampled }
            .Select((o, i) => scheduler.Submit(Request($"q{i}", ServingModel.Pattern(20 + i), o), Ct)).ToList();
        var results = await Task.WhenAll(streams.Select(s => Collect(s, Ct)));
        Assert.All(results, r => Assert.Equal(6, r.Count));
        Assert.Equal(1, scheduler.Stats.LargestBatch);            // alternating settings: no two neighbours could share a batch
    }
}
