using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.Extensions.AI;
using XrayVL.Data.Labeler;
using XrayVL.Imaging;
using XrayVL.Inference;
using XrayVL.IO;
using XrayVL.Text;

namespace XrayVL.Serving;

/// <summary>How <see cref="XrayChatClient"/> reads requests.</summary>
public sealed record XrayChatClientOptions
{
    /// <summary>Bounds for every image a request carries (bytes, pixels, side).</summary>
    public ImageLimits ImageLimits { get; init; } = ImageLimits.Default;
    /// <summary>Largest MaxOutputTokens a request may ask for; without one, <see cref="DefaultMaxOutputTokens"/> applies.</summary>
    public int MaxOutputTokensLimit { get; init; } = 1024;
    /// <summary>A report of a few findings fits in 256 tokens of the project's tokenizer.</summary>
    public int DefaultMaxOutputTokens { get; init; } = 256;
    /// <summary>Images one request may carry: a study's frontal and lateral views, as the model was trained on.</summary>
    public int MaxImages { get; init; } = 2;
    /// <summary>Bounds the memory of decoding shared with other front ends (a server's); null: each decode runs at once.</summary>
    public DecodeBudget? DecodeBudget { get; init; }
}

/// <summary>
/// XrayVL as a Microsoft.Extensions.AI <see cref="IChatClient"/>: a .NET program talks to the model in-process with the
/// abstractions it uses for any chat model. Generation goes through an <see cref="IInferencePipeline"/>: with a
/// <see cref="BatchScheduler"/> behind it, many concurrent callers share the model one batch at a time.
/// <list type="bullet">
/// <item>Images are <see cref="DataContent"/> in user messages (image/png, image/jpeg, application/dicom, or any
/// image/* or application/octet-stream: the format is sniffed from the bytes, never taken from the media type).
/// Links (<see cref="UriContent"/>) are refused: nothing is fetched. A conversation without any image is refused: the
/// model answers about an X-ray, and without one it would describe an image it never saw. At most
/// <see cref="XrayChatClientOptions.MaxImages"/> images; each is kept only at the model's square size.</item>
/// <item>System messages and <see cref="ChatOptions.Instructions"/> are ignored: the model was trained with its own
/// system prompt, which is used in the conversation's language.</item>
/// <item>The language is <c>AdditionalProperties["language"]</c> ("en" or "zh") when given, else read from the last
/// user message (Chinese when CJK characters dominate).</item>
/// <item>Decoding: greedy unless a positive <see cref="ChatOptions.Temperature"/> (or a TopP below 1) asks for sampling;
/// temperature 0 is greedy; TopK, Seed, MaxOutputTokens and StopSequences are honoured; the frequency and presence
/// penalties are not supported and ignored (the model family's own repetition rules are always on: a penalty of 1.1 and a
/// 4-gram ban, XrayGLM's penalty of 1.2).</item>
/// </list>
/// </summary>
public sealed class XrayChatClient : IChatClient
{
    public const string LanguageProperty = "language";

    private readonly IInferencePipeline pipeline;
    private readonly IDisposable? owned;
    private readonly XrayChatClientOptions options;

    /// <summary>A client over <paramref name="pipeline"/> (shared with other front ends; the caller disposes it), named <paramref name="modelId"/>.</summary>
    public XrayChatClient(IInferencePipeline pipeline, string modelId, XrayChatClientOptions? options = null)
        : this(pipeline, modelId, owned: null, options) { }

    private XrayChatClient(IInferencePipeline pipeline, string modelId, IDisposable? owned, XrayChatClientOptions? options)
    {
        this.pipeline = pipeline;
        this.owned = owned;
        this.options = options ?? new XrayChatClientOptions();
        ModelId = modelId;
        Metadata = new ChatClientMetadata("xrayvl", defaultModelId: modelId);
    }

    /// <summary>A client over a loaded model with a batch scheduler of its own, disposed with the client (the model is the caller's).</summary>
    public static XrayChatClient Create(LoadedModel loaded, BatchSchedulerOptions? schedulerOptions = null, XrayChatClientOptions? options = null)
    {
        var scheduler = new BatchScheduler(loaded.Model, loaded.Preprocess, schedulerOptions);
        return new(new InferencePipeline(loaded, scheduler), loaded.Name, scheduler, options);
    }

    public ChatClientMetadata Metadata { get; }

    public string ModelId { get; }

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? chatOptions = null,
        CancellationToken cancellationToken = default)
    {
        var text = new StringBuilder();
        ChatResponseUpdate? last = null;
        UsageDetails? usage = null;
        await foreach (var update in GetStreamingResponseAsync(messages, chatOptions, cancellationToken))
        {
            text.Append(update.Text);
            usage = update.Contents.OfType<UsageContent>().FirstOrDefault()?.Details ?? usage;
            last = update;
        }
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, text.ToString()) { MessageId = last?.MessageId })
        {
            ResponseId = last?.ResponseId,
            ModelId = ModelId,
            CreatedAt = last?.CreatedAt,
            FinishReason = last?.FinishReason,
            Usage = usage,
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages,
        ChatOptions? chatOptions = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var (conversation, images) = await ReadConversationAsync(messages, chatOptions, cancellationToken);
        var decoding = Decoding(chatOptions);
        // The caller's stop sequences, and a seed prompt format's own (XrayGPT's "###" may come as "##" + "#").
        var stops = (chatOptions?.StopSequences?.Where(s => !string.IsNullOrEmpty(s)) ?? [])
            .Concat(pipeline.StopStrings).Distinct().ToArray();

        string responseId = "chatcmpl-" + Guid.NewGuid().ToString("N");
        var created = DateTimeOffset.UtcNow;
        ChatResponseUpdate Update(string text) => new(ChatRole.Assistant, text)
        {
            ResponseId = responseId, MessageId = responseId, ModelId = ModelId, CreatedAt = created,
        };

        // Leaving the loop early (a stop sequence) withdraws the generation, which frees its row at once.
        using var stopped = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var stream = pipeline.Start(conversation, images, decoding, stopped.Token);
        var decoder = pipeline.CreateTextDecoder();
        var text = new StringBuilder();
        int emitted = 0;
        bool stoppedBySequence = false;
        await using (var tokens = stream.GetAsyncEnumerator(stopped.Token))
        {
            bool more = true;
            while (more && !stoppedBySequence)
            {
                more = await tokens.MoveNextAsync();
                string piece = more ? decoder.Push(tokens.Current) : decoder.Flush();
                if (piece.Length > 0) text.Append(piece);
                var (end, hit) = StopStrings.Emittable(text, emitted, stops, atEnd: !more);
                if (end > emitted)
                {
                    yield return Update(text.ToString(emitted, end - emitted));
                    emitted = end;
                }
                stoppedBySequence = hit;
            }
        }
        if (stoppedBySequence) await stopped.CancelAsync();

        var finish = stoppedBySequence || stream.FinishReason == FinishReason.Stop ? ChatFinishReason.Stop : ChatFinishReason.Length;
        var usage = new UsageDetails
        {
            InputTokenCount = stream.PromptTokens,
            OutputTokenCount = stream.GeneratedTokens,
            TotalTokenCount = stream.PromptTokens + stream.GeneratedTokens,
        };
        yield return new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(usage)])
        {
            ResponseId = responseId, MessageId = responseId, ModelId = ModelId, CreatedAt = created, FinishReason = finish,
        };
    }

    /// <summary>The decoding a request asks for, on top of the front ends' defaults (see the class remarks).</summary>
    public GenerationOptions Decoding(ChatOptions? chatOptions)
    {
        var decoding = pipeline.Decoding() with { MaxNewTokens = options.DefaultMaxOutputTokens };
        if (chatOptions is null) return decoding;
        if (chatOptions.MaxOutputTokens is int max)
        {
            if (max < 1 || max > options.MaxOutputTokensLimit)
                throw new XrayVLException($"max_tokens must be between 1 and {options.MaxOutputTokensLimit}, got {max}");
            decoding = decoding with { MaxNewTokens = max };
        }
        if (chatOptions.Temperature is float t && (t < 0 || !float.IsFinite(t)))
            throw new XrayVLException($"temperature must be 0 (greedy) or positive, got {t}");
        if (chatOptions.TopP is float p && (p <= 0 || p > 1))
            throw new XrayVLException($"top_p must be in (0, 1], got {p}");
        if (chatOptions.TopK is int k && k < 0)
            throw new XrayVLException($"top_k must be 0 (off) or positive, got {k}");
        bool sample = chatOptions.Temperature is > 0 || (chatOptions.Temperature is null && chatOptions.TopP is < 1);
        if (!sample) return decoding;
        return decoding with
        {
            DoSample = true,
            Temperature = chatOptions.Temperature ?? 1.0,
            TopP = chatOptions.TopP ?? 1.0,
            TopK = chatOptions.TopK ?? 0,
            Seed = chatOptions.Seed is long seed ? unchecked((int)seed) : null,
        };
    }

    /// <summary>
    /// The conversation (our template's turns, with the system prompt of its language) and its images in order, each
    /// decoded within the decode budget and kept at the model's square size only (the full-resolution decode is
    /// garbage once the square is made; preprocessing the square again changes nothing).
    /// </summary>
    public async Task<(Conversation Conversation, List<GrayImage> Images)> ReadConversationAsync(IEnumerable<ChatMessage> messages,
        ChatOptions? chatOptions, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var turns = new List<Turn>();
        var parts = new List<DataContent>();
        string lastUserText = "";
        foreach (var message in messages)
        {
            if (message.Role == ChatRole.System) continue;
            var text = string.Concat(message.Contents.OfType<TextContent>().Select(c => c.Text));
            if (message.Role == ChatRole.User)
            {
                int count = 0;
                foreach (var content in message.Contents)
                {
                    switch (content)
                    {
                        case DataContent data:
                            CheckMediaType(data, parts.Count + 1);
                            parts.Add(data);
                            count++;
                            break;
                        case UriContent uri:
                            throw new XrayVLException($"image {parts.Count + 1}: {uri.Uri.Scheme} links are not fetched; send the image bytes (a data: URI or DataContent)");
                    }
                }
                if (string.IsNullOrWhiteSpace(text) && count == 0) throw new XrayVLException("a user message has neither text nor an image");
                turns.Add(new Turn(TurnRole.User, text.Trim(), count));
                lastUserText = text;
            }
            else if (message.Role == ChatRole.Assistant) turns.Add(new Turn(TurnRole.Assistant, text.Trim()));
            else throw new XrayVLException($"messages with role '{message.Role.Value}' are not supported (system, user, assistant)");
        }
        if (turns.Count == 0 || turns[^1].Role != TurnRole.User) throw new XrayVLException("the last message must be the user's");
        if (parts.Count == 0) throw new XrayVLException(NoImageMessage);
        int maxImages = Math.Min(options.MaxImages, pipeline.MaxImagesPerConversation);
        if (parts.Count > maxImages)
            throw new XrayVLException($"{parts.Count} images: at most {maxImages} per request " +
                                      (maxImages == 1 ? "(this model reads one X-ray per conversation)" : "(a study's frontal and lateral views)"));
        string language = chatOptions?.AdditionalProperties?.TryGetValue(LanguageProperty, out var value) == true && value is not null
            ? Languages.Check(value.ToString() ?? "")
            : Labeler.DetectLanguage(lastUserText);
        var images = new List<GrayImage>(parts.Count);
        for (int i = 0; i < parts.Count; i++)
            images.Add(await DecodeToModelSquareAsync(parts[i], i + 1, cancellationToken));
        return (new Conversation(ChatTemplate.DefaultSystemPrompt(language), turns), images);
    }

    /// <summary>Why a conversation without an image is refused, and what to send instead.</summary>
    public const string NoImageMessage =
        "no image arrived: this model answers about a chest X-ray and will not describe one it was not sent. Add the image " +
        "to a user message (an image_url part with a data:image/png;base64,... URI; for DICOM use data:image/dicom;base64,... " +
        "- some OpenAI clients drop parts whose media type is not image/*, such as application/dicom)";

    private static void CheckMediaType(DataContent data, int number)
    {
        string media = data.MediaType.ToLowerInvariant();
        if (!(data.HasTopLevelMediaType("image") || media is "application/dicom" or "application/octet-stream"))
            throw new XrayVLException($"image {number}: media type {Quote(data.MediaType)} is not an image (PNG, JPEG or DICOM)");
    }

    private static string Quote(string value) => value.Length <= 64 ? $"\"{value}\"" : $"\"{value[..64]}…\" ({value.Length} characters)";

    private Task<GrayImage> DecodeToModelSquareAsync(DataContent data, int number, CancellationToken cancellationToken)
    {
        var bytes = data.Data;
        GrayImage Work() => pipeline.ModelSquare(ImageFile.Decode(bytes.Span, $"image {number}", options.ImageLimits));
        return options.DecodeBudget is { } budget
            ? budget.RunAsync(DecodeBudget.EstimateBytes(bytes.Span), Work, cancellationToken)
            : Task.FromResult(Work());
    }

    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return Metadata;
        if (serviceType == typeof(IInferencePipeline)) return pipeline;
        return serviceType.IsInstanceOfType(this) ? this : null;
    }

    public void Dispose() => owned?.Dispose();
}
