using System.Runtime.CompilerServices;
using System.Threading.Channels;
using TorchSharp;
using XrayVL.Imaging;
using XrayVL.IO;
using XrayVL.Text;
using static TorchSharp.torch;

namespace XrayVL.Inference;

/// <summary>
/// Conversations with an imported XrayGLM / VisualGLM model, as XrayGLM's own chat() holds them: one image per
/// conversation, earlier rounds as (question, answer) pairs rendered by <see cref="XrayGlmPrompt"/>, ids built by
/// <see cref="ChatGlmTokenizer.XrayGlmPromptIds(string, int)"/>, the image spliced into the pad positions, then GLM
/// decoding with a KV cache until &lt;eop&gt;. Decoding follows XrayGLM: its repetition penalty (1.2, dividing the logits
/// of generated tokens whatever their sign), greedy by default, or its CLI's sampling (temperature 0.8, top-k 100,
/// top-p 0.4) when asked to sample.
/// </summary>
public sealed class XrayGlmChat(LoadedVisualGlm loaded)
{
    /// <summary>XrayGLM chat()'s default repetition penalty.</summary>
    public const double RepetitionPenalty = 1.2;
    /// <summary>XrayGLM cli_demo's sampling settings.</summary>
    public const double SampleTemperature = 0.8, SampleTopP = 0.4;
    public const int SampleTopK = 100;

    public LoadedVisualGlm Loaded => loaded;

    public string Name => Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(loaded.Directory)));

    /// <summary>The report request: in Chinese the question XrayGLM's own examples ask.</summary>
    public static string ReportRequest(string language) => Languages.Check(language) == "zh"
        ? "详细描述这张胸部X光片的诊断结果"
        : "Describe the findings of this chest X-ray in detail.";

    /// <summary>Greedy (or, with <paramref name="temperature"/> &gt; 0, XrayGLM's sampling) with XrayGLM's repetition penalty.</summary>
    public static GenerationOptions Decoding(int maxNewTokens, double temperature = 0, int? seed = null) => new GenerationOptions
    {
        MaxNewTokens = maxNewTokens,
        DoSample = temperature > 0,
        Temperature = temperature > 0 ? temperature : 1.0,
        TopK = temperature > 0 ? SampleTopK : 0,
        TopP = temperature > 0 ? SampleTopP : 1.0,
        RepetitionPenalty = RepetitionPenalty,
        Seed = seed,
    }.Validate();

    /// <summary>The prompt ids of a conversation and where its image goes.</summary>
    public (long[] Ids, int PreImage) Prompt(IReadOnlyList<(string Question, string Answer)> history, string query) =>
        loaded.Tokenizer.XrayGlmPromptIds(XrayGlmPrompt.Render(history, query), loaded.Model.Config.ImageLength);

    /// <summary>
    /// Streams the answer to <paramref name="query"/> as text pieces (each complete UTF-8 text); <paramref name="finished"/>
    /// receives the finish reason at the end. Generation runs on a worker thread; leaving the stream stops it.
    /// </summary>
    public async IAsyncEnumerable<string> AnswerAsync(IReadOnlyList<(string Question, string Answer)> history, string query, GrayImage? image,
        GenerationOptions options, Action<FinishReason>? finished = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        if (string.IsNullOrWhiteSpace(query)) throw new XrayVLException("the question is empty");
        var (ids, preImage) = Prompt(history, query);
        int context = loaded.Model.Config.TextConfig.MaxSequenceLength;
        if (ids.Length + options.MaxNewTokens > context)
            throw new XrayVLException($"the conversation is {ids.Length} tokens long; with {options.MaxNewTokens} more it passes the model's {context}: start a new conversation or ask for fewer tokens");
        var channel = Channel.CreateUnbounded<long>();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var worker = Task.Run(() =>
        {
            try
            {
                var reason = Generate(ids, image, preImage, options, token => channel.Writer.TryWrite(token), stop.Token);
                finished?.Invoke(reason);
                channel.Writer.Complete();
            }
            catch (Exception e)
            {
                channel.Writer.Complete(e);
            }
        }, CancellationToken.None);
        var generated = new List<long>();
        string written = "";
        try
        {
            await foreach (long token in channel.Reader.ReadAllAsync(cancellationToken))
            {
                generated.Add(token);
                string text = loaded.Tokenizer.Decode(generated);
                // Hold back a piece that ends inside a character (byte pieces not yet complete) or that rewrites earlier text.
                if (text.EndsWith('\uFFFD') || !text.StartsWith(written, StringComparison.Ordinal) || text.Length == written.Length) continue;
                yield return text[written.Length..];
                written = text;
            }
            string final = loaded.Tokenizer.Decode(generated);
            if (final.StartsWith(written, StringComparison.Ordinal) && final.Length > written.Length) yield return final[written.Length..];
        }
        finally
        {
            stop.Cancel();
            await worker;
        }
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
                divisor.index_fill_(1, torch.tensor(generated.ToArray()), options.RepetitionPenalty);
                scores = scores / divisor;
            }
            long next = sampler.Choose(scores).item<long>();
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
