using TorchSharp;
using XrayVL.Data;
using XrayVL.Imaging;
using XrayVL.IO;
using XrayVL.Modeling;
using XrayVL.Text;
using static TorchSharp.torch;

namespace XrayVL.Inference;

/// <summary>
/// The one way from a conversation about X-rays to text. Every front end goes through it: the CLI's report and chat,
/// evaluation, the training samples, the web page, the HTTP API and the <see cref="Microsoft.Extensions.AI.IChatClient"/>.
/// <code>
/// 1. render      conversation → prompt ids, one image token per image         (the model folder's chat template)
/// 2. expand      each image token → TokensPerImage positions, checked          ExpandedIds
/// 3. embed       images → encoder → projector (N, Nv, D), spliced into the     EncodeImages, PromptEmbeddings
///                prompt's token embeddings (1, T, D)
/// 4. generate    directly (one conversation; beam search too) or through a     Start
///                BatchScheduler (many clients share the model); both stream tokens and end with the same finish rule
/// 5. detokenize  token ids → text pieces as they complete                      XrayTokenizer.CreateStreamingDecoder
/// </code>
/// The decoding defaults every front end starts from live here too (<see cref="Decoding(GenerationOptions?)"/>).
/// </summary>
public sealed class InferencePipeline : IInferencePipeline
{
    /// <summary>Divides the logits of tokens already present: compact models repeat phrases without it.</summary>
    public const double DefaultRepetitionPenalty = 1.1;
    /// <summary>No 4-gram twice: reports list findings, and a repeated list is the commonest failure of small models.</summary>
    public const int DefaultNoRepeatNgramSize = 4;

    public InferencePipeline(VisionLanguageModel model, XrayTokenizer tokenizer, PreprocessConfig preprocess, BatchScheduler? scheduler = null)
    {
        Model = model;
        Tokenizer = tokenizer;
        Preprocess = preprocess;
        Scheduler = scheduler;
    }

    /// <summary>A pipeline over a loaded model folder; generation through <paramref name="scheduler"/> when given.</summary>
    public InferencePipeline(LoadedModel loaded, BatchScheduler? scheduler = null)
        : this(loaded.Model, loaded.Tokenizer, loaded.Preprocess, scheduler) { }

    public VisionLanguageModel Model { get; }
    public XrayTokenizer Tokenizer { get; }
    public PreprocessConfig Preprocess { get; }
    /// <summary>Null: each generation runs by itself, at once.</summary>
    public BatchScheduler? Scheduler { get; }

    public string DefaultLanguage => "en";

    public int MaxImagesPerConversation => int.MaxValue;

    /// <summary>A seed prompt format's stop strings (XrayGPT's "###"); none for the project's own chat template.</summary>
    public IReadOnlyList<string> StopStrings => Tokenizer.PromptFormat?.StopStrings ?? [];

    /// <summary>A seed model is asked in its own words (its prompt format's report request); others in the project's, in <paramref name="language"/>.</summary>
    public string ReportRequest(string language) =>
        Tokenizer.PromptFormat?.ReportRequest is { Length: > 0 } own ? own : InstructionPhrases.ReportRequest(language);

    /// <summary>Padded to a square and resized to the encoder's side: preprocessing it again changes nothing.</summary>
    public GrayImage ModelSquare(GrayImage image) => Imaging.Preprocess.ToModelSquare(image, Preprocess);

    public IStreamingDecoder CreateTextDecoder() => Tokenizer.CreateStreamingDecoder(skipSpecial: true);

    private int aloneRunning;
    private long aloneCompleted, aloneCancelled, aloneFailed, aloneSteps;

    /// <summary>The scheduler's counters; without one, those of the generations run alone.</summary>
    public SchedulerStats Stats => Scheduler?.Stats ?? new SchedulerStats(0, Volatile.Read(ref aloneRunning), Interlocked.Read(ref aloneCompleted),
        Interlocked.Read(ref aloneCancelled), Interlocked.Read(ref aloneFailed), Interlocked.Read(ref aloneSteps), 1);

    // ---------------------------------------------------------------- decoding defaults

    /// <summary>
    /// The decoding every front end uses unless told otherwise: <paramref name="options"/> (or greedy with the default
    /// repetition penalty and n-gram ban), with the chat template's stop tokens added (and a seed prompt format's own,
    /// e.g. XrayGPT's "###").
    /// </summary>
    public GenerationOptions Decoding(GenerationOptions? options = null) => Decoding(Tokenizer, options);

    /// <inheritdoc cref="Decoding(GenerationOptions?)"/>
    public static GenerationOptions Decoding(XrayTokenizer tokenizer, GenerationOptions? options = null) =>
        (options ?? new GenerationOptions { RepetitionPenalty = DefaultRepetitionPenalty, NoRepeatNgramSize = DefaultNoRepeatNgramSize }) with
        {
            StopTokenIds = new HashSet<int>((options?.StopTokenIds ?? new HashSet<int>()).Concat([tokenizer.ImEndId, tokenizer.EosId])
                .Concat(tokenizer.PromptFormat?.StopTokenIds ?? [])),
        };

    // ---------------------------------------------------------------- 1. render

    /// <summary>A first turn: one question about <paramref name="imageCount"/> images, under the language's system prompt.</summary>
    public static Conversation FirstTurn(string question, int imageCount, string language) =>
        new(ChatTemplate.DefaultSystemPrompt(Languages.Check(language)), [new Turn(TurnRole.User, question, imageCount)]);

    /// <summary>The prompt ids of a conversation, ready for the assistant's answer; one image token per image.</summary>
    public int[] PromptIds(Conversation conversation) => PromptIds(conversation, Tokenizer);

    /// <inheritdoc cref="PromptIds(Conversation)"/>
    public static int[] PromptIds(Conversation conversation, XrayTokenizer tokenizer) =>
        ChatTemplate.Render(conversation, tokenizer, addGenerationPrompt: true).Ids;

    // ---------------------------------------------------------------- 2. expand

    /// <summary>
    /// The prompt's positions: each image token repeated to the positions its image's embeddings fill. Checks what would
    /// otherwise fail deep inside the model (so a bad request fails in its caller): one image per image token, ids inside
    /// the vocabulary, room left in the model's context.
    /// </summary>
    public static int[] ExpandedIds(VisionLanguageModel model, IReadOnlyList<int> promptIds, int imageCount)
    {
        int imageToken = model.Config.ImageTokenIndex;
        int placeholders = promptIds.Count(id => id == imageToken);
        if (placeholders != imageCount)
            throw new XrayVLException($"the prompt has {placeholders} image placeholders but {imageCount} images were given");
        var expanded = ExpandImages(promptIds, imageToken, model.TokensPerImage);
        int vocab = model.Config.TextConfig.VocabSize;
        foreach (int id in expanded)
            if (id < 0 || id >= vocab) throw new XrayVLException($"prompt token id {id} is outside the vocabulary (0..{vocab - 1})");
        if (expanded.Length == 0) throw new XrayVLException("the prompt is empty");
        int context = model.Config.TextConfig.MaxPositionEmbeddings;
        if (expanded.Length >= context)
            throw new XrayVLException($"the conversation is {expanded.Length} positions long, which leaves no room under the model's context of {context}; start a new conversation");
        return expanded;
    }

    /// <summary>The expansion alone, unchecked: for the training samples, which know the model's shape but not the model.</summary>
    public static int[] ExpandImages(IReadOnlyList<int> promptIds, int imageTokenId, int tokensPerImage) =>
        VisionLanguageModel.ExpandImagePlaceholders(promptIds, promptIds, imageTokenId, tokensPerImage).Ids;

    // ---------------------------------------------------------------- 3. embed

    /// <summary>(N, Nv, D) projected image embeddings of the images, in order, in the model's dtype.</summary>
    public Tensor EncodeImages(IReadOnlyList<GrayImage> images)
    {
        using var scope = NewDisposeScope();
        using var _ = torch.no_grad();
        var pixels = Imaging.Preprocess.Batch(images, Preprocess).to(Model.LanguageModel.DType, Model.LanguageModel.Device);  // (N, C, S, S)
        return Model.EncodeImages(pixels).MoveToOuterDisposeScope();                                                     // (N, Nv, D)
    }

    /// <summary>
    /// (1, T, D) embeddings of an expanded prompt with <paramref name="imageEmbeds"/> (N, Nv, D) spliced in at its image
    /// positions, in order; null when the prompt has no image.
    /// </summary>
    public static Tensor PromptEmbeddings(VisionLanguageModel model, IReadOnlyList<int> expandedIds, Tensor? imageEmbeds)
    {
        using var scope = NewDisposeScope();
        using var _ = torch.no_grad();
        var ids = torch.tensor(expandedIds.Select(i => (long)i).ToArray(), ScalarType.Int64, model.LanguageModel.Device).unsqueeze(0);  // (1, T)
        return model.Embed(ids, imageEmbeds).MoveToOuterDisposeScope();                                                                  // (1, T, D)
    }

    // ---------------------------------------------------------------- 4. generate

    /// <summary>
    /// Starts generating the answer to <paramref name="conversation"/> about <paramref name="images"/> and returns its
    /// token stream. The request is checked here (a bad one throws before any output). Through the scheduler when the
    /// pipeline has one, else on a worker thread of its own; either way the stream ends with a
    /// <see cref="GenerationStream.FinishReason"/>, and leaving it early (or cancelling) stops the generation.
    /// </summary>
    public GenerationStream Start(Conversation conversation, IReadOnlyList<GrayImage> images, GenerationOptions options,
        CancellationToken cancellationToken = default) =>
        Start(new GenerationRequest(PromptIds(conversation), images, options), cancellationToken);

    /// <inheritdoc cref="Start(Conversation, IReadOnlyList{GrayImage}, GenerationOptions, CancellationToken)"/>
    public GenerationStream Start(GenerationRequest request, CancellationToken cancellationToken = default)
    {
        if (Scheduler is not null) return Scheduler.Submit(request, cancellationToken);
        cancellationToken.ThrowIfCancellationRequested();
        request.Options.Validate();
        var expanded = ExpandedIds(Model, request.PromptIds, request.Images.Count);
        var stream = new GenerationStream(request, expanded, []);
        stream.LinkCaller(cancellationToken);
        _ = Task.Run(() => RunAlone(stream), CancellationToken.None);
        return stream;
    }

    /// <summary>One generation by itself: greedy or sampling step by step (the stream's consumer may leave at any step), or beam search.</summary>
    private void RunAlone(GenerationStream stream)
    {
        Interlocked.Increment(ref aloneRunning);
        try
        {
            var options = stream.Request.Options;
            using var scope = NewDisposeScope();
            using var noGrad = torch.no_grad();
            using var imageEmbeds = stream.Request.Images.Count == 0 ? null : EncodeImages(stream.Request.Images);
            using var prefix = PromptEmbeddings(Model, stream.ExpandedIds, imageEmbeds);
            if (options.NumBeams > 1)
            {
                var (tokens, reason) = new TokenGenerator(Model.LanguageModel).BeamSearchWithReason(prefix, options, stream.ExpandedIds, stream.WithdrawnToken);
                foreach (int token in tokens) stream.Deliver(token);
                stream.Finish(reason);
                Interlocked.Increment(ref aloneCompleted);
                return;
            }
            using var session = new DecodeSession(Model.LanguageModel, [prefix], [stream.ExpandedIds], options);
            while (true)
            {
                if (stream.IsWithdrawn) throw new OperationCanceledException("the request was withdrawn");
                var step = session.Step();
                Interlocked.Increment(ref aloneSteps);
                if (step.Count == 0) throw new InvalidOperationException("a decode session ended without finishing its row");
                if (step[0].Token >= 0) stream.Deliver(step[0].Token);
                if (step[0].Finish is { } finish)
                {
                    stream.Finish(finish);
                    Interlocked.Increment(ref aloneCompleted);
                    return;
                }
            }
        }
        catch (Exception e)
        {
            Interlocked.Increment(ref e is OperationCanceledException ? ref aloneCancelled : ref aloneFailed);
            stream.Fail(e);
        }
        finally
        {
            Interlocked.Decrement(ref aloneRunning);
        }
    }

    /// <summary>
    /// Answers several one-turn prompts together (left-padded rows of one decode session; beam search one after another)
    /// and returns each answer's text: evaluation's way of generating.
    /// </summary>
    public List<string> GenerateBatch(IReadOnlyList<(Conversation Conversation, IReadOnlyList<GrayImage> Images)> prompts,
        GenerationOptions options, CancellationToken cancellationToken = default)
    {
        var prefixes = new List<Tensor>();
        var promptIds = new List<IReadOnlyList<int>?>();
        try
        {
            foreach (var (conversation, images) in prompts)
            {
                var expanded = ExpandedIds(Model, PromptIds(conversation), images.Count);
                using var imageEmbeds = images.Count == 0 ? null : EncodeImages(images);
                prefixes.Add(PromptEmbeddings(Model, expanded, imageEmbeds));
                promptIds.Add(expanded);
            }
            return new TokenGenerator(Model.LanguageModel).GenerateBatch(prefixes, options, promptIds, cancellationToken)
                .Select(Text).ToList();
        }
        finally
        {
            foreach (var p in prefixes) p.Dispose();
        }
    }

    /// <summary>
    /// The answer to an expanded prompt whose image embeddings the caller computed (training samples take them from the
    /// feature cache), generated by itself.
    /// </summary>
    public string Generate(IReadOnlyList<int> expandedIds, Tensor? imageEmbeds, GenerationOptions options, CancellationToken cancellationToken = default)
    {
        using var prefix = PromptEmbeddings(Model, expandedIds, imageEmbeds);
        return Text(new TokenGenerator(Model.LanguageModel).Generate(prefix, options, expandedIds, cancellationToken).ToList());
    }

    // ---------------------------------------------------------------- 5. detokenize

    /// <summary>
    /// A whole answer's text: special tokens dropped, surrounding whitespace trimmed; with a seed prompt format, cut at
    /// its first stop string as the seed cuts its output.
    /// </summary>
    public string Text(IEnumerable<int> tokens)
    {
        string text = Tokenizer.Decode(tokens, skipSpecial: true);
        return Tokenizer.PromptFormat?.CutAnswer(text) ?? text.Trim();
    }
}
