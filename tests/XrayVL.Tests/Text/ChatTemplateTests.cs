using XrayVL.Text;

namespace XrayVL.Tests.Text;

public class ChatTemplateTests
{
    private static XrayTokenizer Tok => TrainedTokenizer.Instance.Tokenizer;

    private const string FirstAnswer = "The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax.";
    private const string SecondAnswer = "心脏大小正常，肺部清晰，没有胸腔积液或气胸。";

    private static Conversation TwoTurns(string lang = "en") => Conversation.WithDefaultSystemPrompt(lang)
        .User("Describe these two chest X-rays.", imageCount: 2)
        .Assistant(FirstAnswer)
        .User("请用中文回答。")
        .Assistant(SecondAnswer);

    /// <summary>Maximal runs of positions whose label is not IgnoreIndex.</summary>
    private static List<int[]> LearnedSpans(RenderedChat chat)
    {
        var spans = new List<int[]>();
        var current = new List<int>();
        for (int i = 0; i <= chat.Ids.Length; i++)
        {
            if (i < chat.Ids.Length && chat.Labels[i] != Constants.IgnoreIndex) { current.Add(chat.Ids[i]); continue; }
            if (current.Count > 0) { spans.Add([.. current]); current.Clear(); }
        }
        return spans;
    }

    [Fact]
    public void LabelsCoverExactlyTheAnswersAndTheirClosingTokens()
    {
        var chat = ChatTemplate.Render(TwoTurns(), Tok, addGenerationPrompt: false);
        Assert.Equal(chat.Ids.Length, chat.Labels.Length);
        for (int i = 0; i < chat.Ids.Length; i++)
            Assert.True(chat.Labels[i] == Constants.IgnoreIndex || chat.Labels[i] == chat.Ids[i], $"label {i} is neither masked nor the id");

        var spans = LearnedSpans(chat);
        Assert.Equal([FirstAnswer + SpecialTokens.ImEnd, SecondAnswer + SpecialTokens.ImEnd], spans.Select(s => Tok.Decode(s)));
        Assert.Equal(Tok.EncodeSegment(FirstAnswer).Length + Tok.EncodeSegment(SecondAnswer).Length + 2,
            chat.Labels.Count(l => l != Constants.IgnoreIndex));

        // Everything else is masked: the system prompt, both user turns, every role header and the "\n" after <|im_end|>.
        int[] masked = [.. chat.Ids.Where((_, i) => chat.Labels[i] == Constants.IgnoreIndex)];
        string maskedText = Tok.Decode(masked);
        Assert.Contains(ChatTemplate.DefaultSystemPrompt("en"), maskedText);
        Assert.Contains("Describe these two chest X-rays.", maskedText);
        Assert.Contains("请用中文回答。", maskedText);
        Assert.Equal(3, masked.Count(id => id == Tok.ImEndId)); // system + two user turns
        Assert.Equal(5, masked.Count(id => id == Tok.ImStartId));
    }

    [Fact]
    public void ImagePlaceholdersAreCountedAndPlacedInTheFirstUserTurn()
    {
        var chat = ChatTemplate.Render(TwoTurns(), Tok, addGenerationPrompt: false);
        Assert.Equal(2, chat.ImageCount);
        Assert.Equal(Enumerable.Range(0, chat.Ids.Length).Where(i => chat.Ids[i] == Tok.ImageId), chat.ImagePositions);
        int newline = Tok.EncodeSegment("\n").Single();
        foreach (int position in chat.ImagePositions) Assert.Equal(newline, chat.Ids[position + 1]);
        // The first image follows "<|im_start|>user\n" of the first user turn (the second <|im_start|>).
        string before = Tok.Decode(chat.Ids[..chat.ImagePositions[0]]);
        Assert.EndsWith("<|im_end|>\n<|im_start|>user\n", before);
        Assert.Equal(1, before.Split("<|im_start|>user").Length - 1);
        Assert.Equal(chat.ImagePositions[0] + 2, chat.ImagePositions[1]);
    }

    [Fact]
    public void GenerationPromptEndsWithTheAssistantHeader()
    {
        var conversation = Conversation.WithDefaultSystemPrompt("zh").User("这张胸片有什么发现？", imageCount: 1);
        var prompt = ChatTemplate.Render(conversation, Tok, addGenerationPrompt: true);
        int[] header = [Tok.ImStartId, .. Tok.EncodeSegment("assistant"), .. Tok.EncodeSegment("\n")];
        Assert.Equal(header, prompt.Ids[^header.Length..]);
        Assert.EndsWith("<|im_end|>\n<|im_start|>assistant\n", Tok.Decode(prompt.Ids));
        Assert.All(prompt.Labels, l => Assert.Equal(Constants.IgnoreIndex, l));

        var closed = ChatTemplate.Render(conversation, Tok, addGenerationPrompt: false);
        Assert.Equal(prompt.Ids[..^header.Length], closed.Ids);
        Assert.Equal([Tok.ImEndId, .. Tok.EncodeSegment("\n")], closed.Ids[^2..]);
    }

    [Theory]
    [InlineData("en")]
    [InlineData("zh")]
    public void RenderedIdsEqualTokenizingTheRenderedText(string lang)
    {
        foreach (bool generation in new[] { false, true })
        {
            var conversation = TwoTurns(lang);
            var chat = ChatTemplate.Render(conversation, Tok, generation);
            string text = ChatTemplate.RenderText(conversation, generation);
            Assert.Equal(Tok.Encode(text), chat.Ids);
            Assert.Equal(text, Tok.Decode(chat.Ids));
        }
    }

    [Fact]
    public void RenderTextHasTheChatMLLayout()
    {
        var conversation = new Conversation("S").User("Q", imageCount: 2).Assistant("A");
        Assert.Equal(
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n<image>\n<image>\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n",
            ChatTemplate.RenderText(conversation, addGenerationPrompt: false));
        Assert.Equal("<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n",
            ChatTemplate.RenderText(new Conversation().User("Q"), addGenerationPrompt: true));
    }

    [Fact]
    public void TypedSpecialTokensInMessagesAreOrdinaryText()
    {
        var conversation = new Conversation().User("what is <image> or <|im_end|>?", imageCount: 1).Assistant("<|im_start|> nothing");
        var chat = ChatTemplate.Render(conversation, Tok, addGenerationPrompt: false);
        Assert.Equal(1, chat.ImageCount);
        Assert.Single(chat.Ids, Tok.ImageId);
        Assert.Equal(2, chat.Ids.Count(id => id == Tok.ImEndId));
        Assert.Equal(ChatTemplate.RenderText(conversation, false), Tok.Decode(chat.Ids));
        Assert.Equal(["<|im_start|> nothing<|im_end|>"], LearnedSpans(chat).Select(s => Tok.Decode(s)));
    }

    [Fact]
    public void DefaultSystemPromptsSayResearchOnly()
    {
        Assert.Contains("not be used for clinical diagnosis", ChatTemplate.DefaultSystemPrompt("en"));
        Assert.Contains("不能用于临床诊断", ChatTemplate.DefaultSystemPrompt("zh"));
        Assert.Contains("fr", Assert.Throws<XrayVLException>(() => ChatTemplate.DefaultSystemPrompt("fr")).Message);
    }

    [Fact]
    public void OnlyUserTurnsMayCarryImages()
    {
        var conversation = new Conversation().User("Q").Assistant("A");
        conversation.Messages.Add(new Turn(TurnRole.Assistant, "B", ImageCount: 1));
        Assert.Throws<XrayVLException>(() => ChatTemplate.Render(conversation, Tok, false));
        Assert.Throws<XrayVLException>(() => ChatTemplate.RenderText(new Conversation().User("Q", imageCount: -1), false));
    }
}
