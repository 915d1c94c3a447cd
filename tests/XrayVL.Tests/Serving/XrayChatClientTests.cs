using Microsoft.Extensions.AI;
using XrayVL.Imaging;
using XrayVL.Inference;
using XrayVL.Serving;
using XrayVL.Text;

namespace XrayVL.Tests.Serving;

/// <summary>XrayVL through Microsoft.Extensions.AI's IChatClient, in-process, compared with ChatSession.</summary>
public class XrayChatClientTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static ChatMessage UserWithImage(string text, byte[] image, string mediaType = "image/png") =>
        new(ChatRole.User, [new TextContent(text), new DataContent(image, mediaType)]);

    [Fact]
    public async Task AnswersEqualAChatSessionsOverSeveralTurnsAndStreamingMatches()
    {
        var loaded = ServingModel.Loaded;
        using IChatClient client = XrayChatClient.Create(loaded);
        byte[] png = ServingModel.PatternPng(31);
        var options = new ChatOptions { MaxOutputTokens = 12 };

        var chat = new ChatSession(new InferencePipeline(loaded));
        chat.AddImage(ImageFile.Decode(png, "pattern"));
        var decoding = InferencePipeline.Decoding(loaded.Tokenizer) with { MaxNewTokens = 12 };
        string expected1 = await chat.AskAllAsync("What does this X-ray show?", decoding, Ct);
        string expected2 = await chat.AskAllAsync("Is the heart enlarged?", decoding, Ct);

        List<ChatMessage> messages = [new(ChatRole.System, "You are a helpful assistant."), UserWithImage("What does this X-ray show?", png)];
        var first = await client.GetResponseAsync(messages, options, Ct);
        Assert.Equal(expected1, first.Text.Trim());
        Assert.Equal(loaded.Name, first.ModelId);
        Assert.NotNull(first.Usage);
        Assert.Equal(first.FinishReason == ChatFinishReason.Length ? 12 : first.Usage.OutputTokenCount, first.Usage.OutputTokenCount);
        Assert.True(first.Usage.InputTokenCount > loaded.Model.TokensPerImage);

        messages.Add(new ChatMessage(ChatRole.Assistant, first.Text.Trim()));
        messages.Add(new ChatMessage(ChatRole.User, "Is the heart enlarged?"));
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync(messages, options, Ct)) updates.Add(update);
        Assert.Equal(expected2, string.Concat(updates.Select(u => u.Text)).Trim());
        Assert.True(updates.Count > 2, "the answer arrives in pieces");
        Assert.NotNull(updates[^1].FinishReason);
        Assert.Single(updates[^1].Contents.OfType<UsageContent>());
        Assert.All(updates, u => Assert.Equal(updates[0].ResponseId, u.ResponseId));
        Assert.Equal("xrayvl", client.GetService<ChatClientMetadata>()?.ProviderName);
    }

    [Fact]
    public async Task DicomImagesWorkAndTheMediaTypeIsNotTrusted()
    {
        var loaded = ServingModel.Loaded;
        using var client = XrayChatClient.Create(loaded);
        var pattern = ServingModel.Pattern(32);
        var samples = pattern.Pixels.Select(p => (int)Math.Round(p * 4095)).ToArray();
        byte[] dicom = DicomWriter.WriteNative(pattern.Height, pattern.Width, samples,
            new DicomWriteOptions { BitsStored = 12, PatientName = "DOE^JANE", PatientId = "ID-4711" });
        var options = new ChatOptions { MaxOutputTokens = 8 };
        var asDicom = await client.GetResponseAsync([UserWithImage("Describe.", dicom, "application/dicom")], options, Ct);
        var asPng = await client.GetResponseAsync([UserWithImage("Describe.", dicom, "image/png")], options, Ct);   // wrong label, same bytes
        Assert.Equal(asDicom.Text, asPng.Text);
        Assert.DoesNotContain("DOE", asDicom.Text);

        var text = await Assert.ThrowsAsync<XrayVLException>(() => client.ReadConversationAsync([UserWithImage("x", "not an image"u8.ToArray())], null, Ct));
        Assert.Contains("image 1: not a supported image", text.Message);
        var wrongType = await Assert.ThrowsAsync<XrayVLException>(() => client.ReadConversationAsync([UserWithImage("x", dicom, "text/plain")], null, Ct));
        Assert.Contains("not an image", wrongType.Message);
        var link = await Assert.ThrowsAsync<XrayVLException>(() => client.ReadConversationAsync(
            [new ChatMessage(ChatRole.User, [new UriContent("https://example.org/x.png", "image/png")])], null, Ct));
        Assert.Contains("not fetched", link.Message);
    }

    [Fact]
    public async Task StopSequencesCutTheAnswerAndSeedsReproduceSampling()
    {
        var loaded = ServingModel.Loaded;
        using var client = XrayChatClient.Create(loaded);
        List<ChatMessage> messages = [UserWithImage("Describe this image.", ServingModel.PatternPng(33))];
        string whole = (await client.GetResponseAsync(messages, new ChatOptions { MaxOutputTokens = 24 }, Ct)).Text;
        Assert.True(whole.Length > 12, $"answer too short to cut: '{whole}'");
        string stop = whole.Substring(whole.Length / 2, 3);
        int at = whole.IndexOf(stop, StringComparison.Ordinal);
        var cut = await client.GetResponseAsync(messages, new ChatOptions { MaxOutputTokens = 24, StopSequences = [stop] }, Ct);
        Assert.Equal(whole[..at], cut.Text);
        Assert.Equal(ChatFinishReason.Stop, cut.FinishReason);

        var streamed = new List<string>();
        await foreach (var update in client.GetStreamingResponseAsync(messages, new ChatOptions { MaxOutputTokens = 24, StopSequences = [stop] }, Ct))
            streamed.Add(update.Text);
        Assert.Equal(whole[..at], string.Concat(streamed));
        Assert.DoesNotContain(streamed, piece => piece.Contains(stop, StringComparison.Ordinal));

        async Task<string> Sample(long seed) => (await client.GetResponseAsync(messages,
            new ChatOptions { MaxOutputTokens = 16, Temperature = 1.5f, Seed = seed }, Ct)).Text;
        Assert.Equal(await Sample(7), await Sample(7));
        Assert.NotEqual(await Sample(7), await Sample(8));
    }

    [Fact]
    public async Task OptionsMapToDecodingAndLanguageFollowsTheQuestion()
    {
        var loaded = ServingModel.Loaded;
        using var client = XrayChatClient.Create(loaded);
        var greedy = client.Decoding(null);
        Assert.False(greedy.DoSample);
        Assert.Equal(256, greedy.MaxNewTokens);
        Assert.Contains(loaded.Tokenizer.ImEndId, greedy.StopTokenIds);
        Assert.False(client.Decoding(new ChatOptions { Temperature = 0 }).DoSample);
        var sampled = client.Decoding(new ChatOptions { Temperature = 0.7f, TopP = 0.9f, TopK = 20, MaxOutputTokens = 40 });
        Assert.True(sampled.DoSample);
        Assert.Equal(0.7, sampled.Temperature, 5);
        Assert.Equal(0.9, sampled.TopP, 5);
        Assert.Equal(20, sampled.TopK);
        Assert.Equal(40, sampled.MaxNewTokens);
        Assert.True(client.Decoding(new ChatOptions { TopP = 0.5f }).DoSample);                 // top_p alone samples at T = 1
        Assert.Throws<XrayVLException>(() => client.Decoding(new ChatOptions { MaxOutputTokens = 0 }));
        Assert.Throws<XrayVLException>(() => client.Decoding(new ChatOptions { MaxOutputTokens = 5000 }));
        Assert.Throws<XrayVLException>(() => client.Decoding(new ChatOptions { Temperature = -1 }));

        byte[] png = ServingModel.PatternPng(34);
        var zh = (await client.ReadConversationAsync([UserWithImage("这张胸片显示了什么？", png)], null, Ct)).Conversation;
        Assert.Equal(ChatTemplate.DefaultSystemPrompt("zh"), zh.SystemPrompt);
        var forced = (await client.ReadConversationAsync([UserWithImage("这张胸片显示了什么？", png)],
            new ChatOptions { AdditionalProperties = new() { [XrayChatClient.LanguageProperty] = "en" } }, Ct)).Conversation;
        Assert.Equal(ChatTemplate.DefaultSystemPrompt("en"), forced.SystemPrompt);
        var (conversation, images) = await client.ReadConversationAsync(
            [new ChatMessage(ChatRole.System, "ignored"), UserWithImage("a", png), new ChatMessage(ChatRole.Assistant, "b"), new ChatMessage(ChatRole.User, "c")], null,
            Ct);
        Assert.Equal([(TurnRole.User, 1), (TurnRole.Assistant, 0), (TurnRole.User, 0)], conversation.Messages.Select(m => (m.Role, m.ImageCount)));
        // Kept at the model's square size only: the upload's resolution is not held while the answer is written.
        int side = loaded.Preprocess.ImageSize;
        Assert.Equal((side, side), (Assert.Single(images).Width, images[0].Height));
        Assert.Contains("last message", (await Assert.ThrowsAsync<XrayVLException>(() =>
            client.ReadConversationAsync([UserWithImage("a", png), new ChatMessage(ChatRole.Assistant, "b")], null, Ct))).Message);
        Assert.Contains("no image arrived", (await Assert.ThrowsAsync<XrayVLException>(() =>
            client.ReadConversationAsync([new ChatMessage(ChatRole.User, "Describe this chest X-ray.")], null, Ct))).Message);
    }
}
