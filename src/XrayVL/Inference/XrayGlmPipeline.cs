using TorchSharp;
using XrayVL.Imaging;
using XrayVL.IO;
using XrayVL.Text;
using static TorchSharp.torch;

namespace XrayVL.Inference;

/// <summary>
/// <see cref="IInferencePipeline"/> for an imported XrayGLM / VisualGLM model, as XrayGLM's own chat() runs it: one image
/// per conversation, earlier rounds as (question, answer) pairs rendered by <see cref="XrayGlmPrompt"/> (no system
/// prompt), ids built by <see cref="ChatGlmTokenizer.XrayGlmPromptIds(string, int)"/>, the image spliced into the pad
/// positions, then GLM decoding with a KV cache until &lt;eop&gt;. Decoding follows XrayGLM: its repetition penalty (1.2,
/// dividing the logits of generated tokens whatever their sign), greedy by default, or its CLI's sampling (top-k 100,
/// top-p 0.4) when sampling is asked for without a top-k or top-p of its own. Generations run one at a time, in order of
/// arrival (the GLM decoder has no batched decoding here).
/// </summary>
public sealed class XrayGlmPipeline(LoadedVisualGlm loaded) : IInferencePipeline
{
    /// <summary>XrayGLM chat()'s default repetition penalty.</summary>
    public const double RepetitionPenalty = 1.2;
    /// <summary>XrayGLM cli_demo's sampling settings.</summary>
    public const double SampleTemperature = 0.8, SampleTopP = 0.4;
    public const int SampleTopK = 100;

    private readonly SemaphoreSlim turn = new(1, 1);
    private int queued, running;
    private long completed, cancelled, failed, steps;

    public LoadedVisualGlm Loaded => loaded;

    public string DefaultLanguage => "zh";

    public int MaxImagesPerConversation => 1;

    public IReadOnlyList<string> StopStrings => [];

    /// <summary>The report request: in Chinese the question XrayGLM's own examples ask.</summary>
    public string ReportRequest(string language) => Languages.Check(language) == "zh"
        ? "详细描述这张胸部X光片的诊断结果"
        : "Describe the findings of this chest X-ray in detail.";

    /// <summary>Greedy with XrayGLM's repetition penalty; <paramref name="options"/> as given, with XrayGLM's top-k/top-p when it samples without its own.</summary>
    public GenerationOptions Decoding(GenerationOptions? options = null)
    {
        if (options is null) return new GenerationOptions { RepetitionPenalty = RepetitionPenalty };
        return options.DoSample && options.TopK == 0 && options.TopP >= 1.0 ? options with { TopK = SampleTopK, TopP = SampleTopP } : options;
    }

    /// <summary>XrayGLM's pixels are BLIP-2's eval processing of an 8-bit image resized to S×S (no padding): that S×S image.</summary>
    public GrayImage ModelSquare(GrayImage image) => PilBicubic.BlipEvalImage(image, loaded.Preprocess.ImageSize);

    public IStreamingDecoder CreateTextDecoder() => loaded.Tokenizer.CreateStreamingDecoder();

    public SchedulerStats Stats => new(Volatile.Read(ref queued), Volatile.Read(ref running), Interlocked.Read(ref completed),
        Interlocked.Read(ref cancelled), Interlocked.Read(ref failed), Interlocked.Read(ref steps), 1);

    /// <summary>The prompt ids of a conversation and where its image goes.</summary>
    public (long[] Ids, int PreImage) Prompt(IReadOnlyList<(string Question, string Answer)> history, string query) =>
        loaded.Tokenizer.XrayGlmPromptIds(XrayGlmPrompt.Render(history, query), loaded.Model.Config.ImageLength);

    /// <summary>A conversation as XrayGLM holds it: the earlier (question, answer) rounds and the question to answer.</summary>
    public static (List<(string Question, string Answer)> History, string Query) Rounds(Conversation conversation)
    {
        var history = new List<(string, string)>();
        var turns = conversation.Messages.Where(t => t.Role != TurnRole.System).ToList();
        if (turns.Count == 0 || turns[^1].Role != TurnRole.User) throw new XrayVLException("the last message must be the user's");
        for (int i = 0; i < turns.Count - 1; i += 2)
        {
            if (turns[i].Role != TurnRole.User || turns[i + 1].Role != TurnRole.Assistant)
                throw new XrayVLException("XrayGLM's conversations alternate user and assistant turns, starting with the user");
            history.Add((turns[i].Text, turns[i + 1].Text));
        }
        if (turns.Count % 2 == 0) throw new XrayVLException("XrayGLM's conversations alternate user and assistant turns, starting with the user");
        string query = turns[^1].Text;
        if (string.IsNullOrWhiteSpace(query)) throw new XrayVLException("the question is empty");
        return (history, query);
    }

    public GenerationStream Start(Conversation conversation, IReadOnlyList<GrayImage> images, GenerationOptions options,
        CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        options.Validate();
        if (options.NumBeams > 1) throw new XrayVLException("beam search is not available for XrayGLM models; use 1 beam");
        if (images.Count > 1)
            throw new XrayVLException($"{images.Count} images: XrayGLM reads one X-ray per conversation; start a new conversation for another");
        var (history, query) = Rounds(conversation);
        var (ids, preImage) = Prompt(history, query);
        int context = loaded.Model.Config.TextConfig.MaxSequenceLength;
        if (ids.Length + options.MaxNewTokens > context)
            throw new XrayVLException($"the conversation is {ids.Length} tokens long; with {options.MaxNewTokens} more it passes the model's {context}: start a new conversation or ask for fewer tokens");
        int[] promptIds = [.. ids.Select(id => (int)id)];
        var stream = new GenerationStream(new GenerationRequest(promptIds, images, options), promptIds, []);
        stream.LinkCaller(cancellationToken);
        Interlocked.Increment(ref queued);
        _ = Task.Run(async () =>
        {
            bool entered = false;
            try
            {
                await turn.WaitAsync(stream.WithdrawnToken);
                entered = true;
                Interlocked.Decrement(ref queued);
                Interlocked.Increment(ref running);
                var reason = Generate(ids, images.Count == 0 ? null : images[0], preImage, options, token => stream.Deliver((int)token), stream.WithdrawnToken);
                stream.Finish(reason);
                Interlocked.Increment(ref completed);
            }
            catch (Exception e)
            {
                Interlocked.Increment(ref e is OperationCanceledException ? ref cancelled : ref failed);
                stream.Fail(e);
            }
            finally
            {
                if (entered)
                {
                    Interlocked.Decrement(ref running);
                    turn.Release();
                }
                else Interlocked.Decrement(ref queued);
            }
        }, CancellationToken.None);
        return stream;
    }

    /// <summary>The whole answer as token ids (without &lt;eop&gt;), for checks and batch use.</summary>
    public (List<long> Tokens, FinishReason Reason) GenerateIds(long[] ids, GrayImage? image, int preImage, GenerationOptions options, Tensor? pixels = null)
    {
        var tokens = new List<long>();
        var reason = Generate(ids, image, preImage, options, tokens.Add, CancellationToken.None, pixels);
        return (tokens, reason);
    }

    private FinishReason Generate(long[] ids, GrayImage? image, int preImage, GenerationOptions options, Action<long> emit, CancellationToken cancel, Tensor? pixels = null)
    {
        var model = loaded.Model;
        var glm = model.LanguageModel;
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        // 1. image → (1, Q, D) embeddings spliced at the pad positions; no image: the pads stay tokens (XrayGLM's text-only chat)
        // XrayGLM's pixels: BLIP-2's eval processing (8-bit RGB, Pillow bicubic to S×S, CLIP statistics)
        pixels ??= image is null ? null : PilBicubic.BlipEval(image, loaded.Preprocess.ImageSize, loaded.Preprocess.Mean, loaded.Preprocess.Std);   // (1, 3, S, S)
        var imageEmbeds = pixels is null ? null : model.ImageEncoder.call(pixels);
        var embeds = model.EmbedPrompt(ids, imageEmbeds, preImage);                                      // (1, T, D)
        // 2. GLM prefill over the prompt (bidirectional up to <sop>), keys and values cached
        var (positions, mask) = glm.Inputs(ids);
        int length = ids.Length;
        long maskPosition = positions[0, 0, length - 1].item<long>(), lastBlock = positions[0, 1, length - 1].item<long>();
        using var cache = glm.NewCache(1, length + options.MaxNewTokens);
        var logits = glm.Logits(glm.ForwardHidden(embeds, positions, mask, cache).narrow(1, length - 1, 1)).view(1, -1);   // (1, V)
        using var sampler = new Sampler(options, logits.device);
        // Held until the loop ends: an implicit Scalar temporary can be finalized while libtorch still reads it.
        using Scalar penalty = options.RepetitionPenalty;
        var generated = new List<long>();
        // 3. one token at a time: every new token takes the [gMASK] position and the next block position
        for (int step = 0; step < options.MaxNewTokens; step++)
        {
            cancel.ThrowIfCancellationRequested();
            using var stepScope = NewDisposeScope();
            var scores = logits;
            if (generated.Count > 0 && options.RepetitionPenalty != 1.0)
            {
                var divisor = torch.ones_like(scores);
                divisor.index_fill_(1, torch.tensor(generated.ToArray()), penalty);
                scores = scores / divisor;
            }
            long next = sampler.Choose(scores).item<long>();
            Interlocked.Increment(ref steps);
            if (next == glm.Config.EopTokenId) return FinishReason.Stop;
            generated.Add(next);
            emit(next);
            if (step == options.MaxNewTokens - 1) break;
            var tokenEmbeds = glm.Embed(torch.tensor(new[] { next }).view(1, 1));                       // (1, 1, D)
            var tokenPosition = torch.tensor(new[] { maskPosition, lastBlock + step + 1 }).view(1, 2, 1);
            var previous = logits;
            logits = glm.Logits(glm.ForwardHidden(tokenEmbeds, tokenPosition, mask: null, cache)).view(1, -1).MoveToOuterDisposeScope();
            previous.Dispose();
        }
        return FinishReason.Length;
    }
}
