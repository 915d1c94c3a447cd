using System.Runtime.CompilerServices;
using System.Text;
using XrayVL.Imaging;
using XrayVL.Text;

namespace XrayVL.Inference;

/// <summary>
/// One conversation with a loaded model: its images, its turns, and answers streamed as text.
/// Weights are shared by every session (loaded once, behind the <see cref="InferencePipeline"/>); the chat state lives
/// here, one per conversation. Images added with <see cref="AddImage"/> belong to the next user turn (a frontal and a
/// lateral view may go together).
/// </summary>
public sealed class ChatSession
{
    private readonly IInferencePipeline pipeline;
    private readonly List<Turn> turns = [];
    private readonly List<GrayImage> images = [];          // every image of the conversation, in order of appearance
    private int pendingImages;                             // images waiting for the next user turn

    /// <param name="language">"en" or "zh"; null: the model's own (<see cref="IInferencePipeline.DefaultLanguage"/>).</param>
    public ChatSession(IInferencePipeline pipeline, string? language = null)
    {
        this.pipeline = pipeline;
        Language = Languages.Check(language ?? pipeline.DefaultLanguage);
    }

    /// <summary>Why the last complete answer ended (null before the first, or when it was cancelled).</summary>
    public FinishReason? LastFinishReason { get; private set; }

    /// <summary>"en" or "zh": the system prompt and default requests use it.</summary>
    public string Language
    {
        get => language;
        set => language = Languages.Check(value);
    }

    private string language = "en";

    public IReadOnlyList<Turn> Messages => turns;
    public int ImageCount => images.Count;

    /// <summary>
    /// Adds an X-ray for the next question. Returns true when this started a new conversation: a model that reads one
    /// image per conversation (XrayGLM) forgets the earlier turns and image when given another, as its own chat does.
    /// </summary>
    public bool AddImage(GrayImage image)
    {
        bool restarted = images.Count >= pipeline.MaxImagesPerConversation;
        if (restarted) Clear();
        images.Add(image);
        pendingImages++;
        return restarted;
    }

    /// <summary>Forgets the turns and images: a new conversation on the same model.</summary>
    public void Clear()
    {
        turns.Clear();
        images.Clear();
        pendingImages = 0;
    }

    /// <summary>
    /// Asks <paramref name="text"/> (with the pending images) and streams the answer's text as it is generated, decoded
    /// with <paramref name="options"/> on top of the pipeline's defaults. The turn is kept in the conversation once the
    /// answer is complete; a cancelled answer leaves no trace.
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
        var user = new Turn(TurnRole.User, text.Trim(), pendingImages);
        var conversation = new Conversation(ChatTemplate.DefaultSystemPrompt(Language), [.. turns, user]);
        LastFinishReason = null;
        var stream = pipeline.Start(conversation, [.. images], pipeline.Decoding(options), cancellationToken);

        var decoder = pipeline.CreateTextDecoder();
        var answer = new StringBuilder();
        // A seed prompt format ends answers at stop strings too (XrayGPT's "###" may come as "##" + "#"): text that could
        // begin one is held back until the next piece shows whether it does.
        string[] stops = [.. pipeline.StopStrings];
        int emitted = 0;
        bool stopped = false;
        await foreach (int id in stream.WithCancellation(cancellationToken))
        {
            string piece = decoder.Push(id);
            if (piece.Length == 0) continue;
            answer.Append(piece);
            if (stops.Length == 0)
            {
                emitted = answer.Length;
                yield return piece;
                continue;
            }
            if (StopStrings.First(answer, stops) is int at)
            {
                answer.Length = at;
                stopped = true;
                break;                                                  // leaving the stream ends the generation
            }
            int ready = answer.Length - StopStrings.PartialAtEnd(answer, stops);
            if (ready > emitted)
            {
                yield return answer.ToString(emitted, ready - emitted);
                emitted = ready;
            }
        }
        if (!stopped) answer.Append(decoder.Flush());
        if (stops.Length > 0 && StopStrings.First(answer, stops) is int cut)
        {
            answer.Length = cut;
            stopped = true;
        }
        if (answer.Length > emitted) yield return answer.ToString(emitted, answer.Length - emitted);
        turns.Add(user);
        turns.Add(new Turn(TurnRole.Assistant, answer.ToString().Trim()));
        pendingImages = 0;
        LastFinishReason = stopped ? FinishReason.Stop : stream.FinishReason;
    }

    /// <summary>Asks and waits for the whole answer.</summary>
    public async Task<string> AskAllAsync(string text, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        var sb = new StringBuilder();
        await foreach (var piece in AskAsync(text, options, cancellationToken)) sb.Append(piece);
        return sb.ToString().Trim();
    }
}
