using System.Runtime.CompilerServices;
using System.Text;
using TorchSharp;
using XrayVL.Imaging;
using XrayVL.IO;
using XrayVL.Modeling;
using XrayVL.Text;
using static TorchSharp.torch;

namespace XrayVL.Inference;

/// <summary>
/// One conversation with a loaded model: its images, its turns, and answers streamed as text.
/// Weights are shared by every session; the chat state lives here (DESIGN habit 8).
/// Images added with <see cref="AddImage"/> belong to the next user turn (a frontal and a lateral view may go together).
/// </summary>
public sealed class ChatSession
{
    private readonly LoadedModel loaded;
    private readonly Generator generator;
    private readonly List<ChatMessage> messages = [];
    private readonly List<GrayImage> images = [];          // every image of the conversation, in order of appearance
    private int pendingImages;                             // images waiting for the next user turn

    public ChatSession(LoadedModel loaded, string language = "en")
    {
        this.loaded = loaded;
        generator = new Generator(loaded.Model.LanguageModel);
        Language = Languages.Check(language);
    }

    /// <summary>"en" or "zh": the system prompt and default requests use it.</summary>
    public string Language { get; set; }

    public IReadOnlyList<ChatMessage> Messages => messages;
    public int ImageCount => images.Count;

    public void AddImage(GrayImage image)
    {
        images.Add(image);
        pendingImages++;
    }

    /// <summary>Forgets the turns and images: a new conversation on the same model.</summary>
    public void Clear()
    {
        messages.Clear();
        images.Clear();
        pendingImages = 0;
    }

    /// <summary>Default decoding for reports and chat: the stop tokens of the chat template, greedy unless told otherwise.</summary>
    public GenerationOptions DefaultOptions(GenerationOptions? options = null) =>
        (options ?? new GenerationOptions { RepetitionPenalty = 1.1, NoRepeatNgramSize = 4 }) with
        {
            StopTokenIds = new HashSet<int>((options?.StopTokenIds ?? new HashSet<int>()).Concat([loaded.Tokenizer.ImEndId, loaded.Tokenizer.EosId])),
        };

    /// <summary>
    /// Asks <paramref name="text"/> (with the pending images) and streams the answer's text as it is generated.
    /// The turn is kept in the conversation once the answer is complete; a cancelled answer leaves no trace.
    /// </summary>
    /// <remarks>Checks the question at once (an empty question or no image throws here, before any output).</remarks>
    public IAsyncEnumerable<string> AskAsync(string text, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        if (string.IsNullOrWhiteSpace(text)) throw new XrayVLException("the question is empty");
        if (images.Count == 0) throw new XrayVLException("no image yet: add an X-ray before asking");
        return AnswerAsync(text, options, cancellationToken);
    }

    private async IAsyncEnumerable<string> AnswerAsync(string text, GenerationOptions? options,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var user = new ChatMessage(ChatRole.User, text.Trim(), pendingImages);
        var conversation = new Conversation(ChatTemplate.DefaultSystemPrompt(Language), [.. messages, user]);
        var opts = DefaultOptions(options);

        var tokenizer = loaded.Tokenizer;
        var rendered = ChatTemplate.Render(conversation, tokenizer, addGenerationPrompt: true);
        var (ids, _) = VisionLanguageModel.ExpandImagePlaceholders(rendered.Ids, rendered.Labels, tokenizer.ImageId, loaded.Model.TokensPerImage);
        using var prefix = PrefixEmbeddings(ids);

        var decoder = tokenizer.CreateStreamingDecoder(skipSpecial: true);
        var answer = new StringBuilder();
        await foreach (int id in generator.GenerateAsync(prefix, opts, ids, cancellationToken))
        {
            string piece = decoder.Push(id);
            if (piece.Length == 0) continue;
            answer.Append(piece);
            yield return piece;
        }
        string rest = decoder.Flush();
        if (rest.Length > 0)
        {
            answer.Append(rest);
            yield return rest;
        }
        messages.Add(user);
        messages.Add(new ChatMessage(ChatRole.Assistant, answer.ToString().Trim()));
        pendingImages = 0;
    }

    /// <summary>Asks and waits for the whole answer.</summary>
    public async Task<string> AskAllAsync(string text, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        var sb = new StringBuilder();
        await foreach (var piece in AskAsync(text, options, cancellationToken)) sb.Append(piece);
        return sb.ToString().Trim();
    }

    /// <summary>(1, T, D) prompt embeddings with every image of the conversation spliced in.</summary>
    private Tensor PrefixEmbeddings(int[] ids)
    {
        using var scope = NewDisposeScope();
        using var _ = torch.no_grad();
        var model = loaded.Model;
        var device = model.LanguageModel.Device;
        var idTensor = torch.tensor(ids, ScalarType.Int64, device).unsqueeze(0);             // (1, T)
        Tensor? imageEmbeds = null;
        if (images.Count > 0)
        {
            var pixels = Preprocess.Batch(images, loaded.Preprocess).to(model.LanguageModel.DType, device);  // (N, C, S, S)
            imageEmbeds = model.EncodeImages(pixels);                                           // (N, Nv, D)
        }
        return model.Embed(idTensor, imageEmbeds).MoveToOuterDisposeScope();                    // (1, T, D)
    }
}

/// <summary>The languages the templates, prompts and labeler speak.</summary>
public static class Languages
{
    public static string Check(string language) => language switch
    {
        "en" or "zh" => language,
        _ => throw new XrayVLException($"language '{language}' is not supported (en, zh)"),
    };
}
