using XrayVL.Inference;
using XrayVL.Tests.Serving;

namespace XrayVL.Tests.Inference;

public class InferencePipelineTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static async Task<(List<int> Tokens, FinishReason? Reason)> Collect(GenerationStream stream)
    {
        var tokens = new List<int>();
        await foreach (int token in stream.WithCancellation(Ct)) tokens.Add(token);
        return (tokens, stream.FinishReason);
    }

    /// <summary>
    /// A reply that runs into the end of the model's context is cut there, and both generation paths say so with
    /// "length" (the direct path used to call it "stop" because fewer than max_tokens had been written).
    /// </summary>
    [Fact]
    public async Task AReplyCutByTheContextEndsWithLengthAloneAndInABatch()
    {
        var loaded = ServingModel.Loaded;
        int context = loaded.Model.Config.TextConfig.MaxPositionEmbeddings;
        const int Room = 3;
        var image = ServingModel.Pattern(7);
        // The longest question whose prompt still leaves Room positions (words of the captions' vocabulary, about one token each).
        XrayVL.Text.Conversation? conversation = null;
        for (int words = 1; words < context; words++)
        {
            var candidate = InferencePipeline.FirstTurn(string.Join(" ", Enumerable.Repeat("heart", words)), 1, "en");
            int length = InferencePipeline.ExpandedIds(loaded.Model, InferencePipeline.PromptIds(candidate, loaded.Tokenizer), 1).Length;
            if (length > context - Room) break;
            conversation = candidate;
        }
        Assert.NotNull(conversation);
        int promptLength = InferencePipeline.ExpandedIds(loaded.Model, InferencePipeline.PromptIds(conversation, loaded.Tokenizer), 1).Length;
        int room = context - promptLength;
        var options = InferencePipeline.Decoding(loaded.Tokenizer) with { MaxNewTokens = 100 };

        var alone = await Collect(new InferencePipeline(loaded).Start(conversation, [image], options, Ct));
        using var scheduler = new BatchScheduler(loaded.Model, loaded.Preprocess);
        var batched = await Collect(new InferencePipeline(loaded, scheduler).Start(conversation, [image], options, Ct));

        Assert.Equal(alone.Tokens, batched.Tokens);
        Assert.Equal(room, alone.Tokens.Count);                    // the model wrote until the context was full ...
        Assert.Equal(FinishReason.Length, alone.Reason);            // ... and both paths report the cut
        Assert.Equal(FinishReason.Length, batched.Reason);
    }

    [Fact]
    public async Task AStopTokenEndsWithStopAndMaxTokensWithLength()
    {
        var loaded = ServingModel.Loaded;
        var pipeline = new InferencePipeline(loaded);
        var conversation = InferencePipeline.FirstTurn("Describe this chest X-ray.", 1, "en");
        var image = ServingModel.Pattern(3);
        var free = await Collect(pipeline.Start(conversation, [image], pipeline.Decoding() with { MaxNewTokens = 40 }, Ct));
        Assert.NotEmpty(free.Tokens);
        var cut = await Collect(pipeline.Start(conversation, [image], pipeline.Decoding() with { MaxNewTokens = 2 }, Ct));
        Assert.Equal(free.Tokens.Take(2), cut.Tokens);
        Assert.Equal(FinishReason.Length, cut.Reason);
        // Without its stop tokens the same prompt runs to the limit; with them it ends as soon as the model chooses one.
        var noStops = pipeline.Decoding() with { MaxNewTokens = 40, StopTokenIds = new HashSet<int>() };
        var stopsGiven = await Collect(pipeline.Start(conversation, [image], noStops with { StopTokenIds = new HashSet<int>([free.Tokens[0]]) }, Ct));
        Assert.Empty(stopsGiven.Tokens);
        Assert.Equal(FinishReason.Stop, stopsGiven.Reason);
    }

    [Fact]
    public void ABadRequestFailsInItsCallerBeforeAnyOutput()
    {
        var loaded = ServingModel.Loaded;
        var pipeline = new InferencePipeline(loaded);
        var twoImages = InferencePipeline.FirstTurn("Compare.", 2, "en");
        var e = Assert.Throws<XrayVLException>(() => pipeline.Start(twoImages, [ServingModel.Pattern(1)], pipeline.Decoding(), Ct));
        Assert.Contains("2 image placeholders but 1 images", e.Message);
    }
}
