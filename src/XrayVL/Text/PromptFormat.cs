using System.Text;
using System.Text.Json;
using XrayVL.IO;

namespace XrayVL.Text;

/// <summary>
/// A seed system's own prompt convention, as data (MiniGPT-4's `Conversation` with `SeparatorStyle.SINGLE`, which
/// XrayGPT and MiniGPT-Med both use), written to a model folder as prompt_format.json and chosen by the folder.
/// <code>
/// prompt = system + sep
///        + for each turn:  role + role_message_join + message + sep
///        + open_role_suffix after the assistant role when a generation prompt is asked for
/// user message with images = image_text × images + image_text_join + question
/// </code>
/// The prompt is then cut at <see cref="ImageSlot"/>; each segment is SentencePiece-encoded on its own in legacy mode
/// (<see cref="XrayTokenizer.EncodeLegacy"/>), the first one alone with the begin-of-sentence id, and one image's
/// embeddings go between consecutive segments (the seeds' `get_context_emb`).
/// </summary>
public sealed record PromptFormat
{
    public const string FileName = "prompt_format.json";

    /// <summary>Where an image's embeddings go; the seeds' literal placeholder.</summary>
    public const string ImageSlot = "<ImageHere>";

    /// <summary>"xraygpt" or "minigpt_med" for the formats below; any name for a format read from a file.</summary>
    public string Name { get; init; } = "";
    /// <summary>Text before the first turn.</summary>
    public string System { get; init; } = "";
    /// <summary>Written after the system text and after every complete turn.</summary>
    public string Separator { get; init; } = "";
    public string UserRole { get; init; } = "";
    public string AssistantRole { get; init; } = "";
    /// <summary>Between a role and its message: ": " (Vicuna) or "" (LLaMA-2, whose roles carry their own brackets).</summary>
    public string RoleMessageJoin { get; init; } = "";
    /// <summary>After the assistant role of the generation prompt: ":" (Vicuna) or "".</summary>
    public string OpenRoleSuffix { get; init; } = "";
    /// <summary>What one image is written as in a user message; holds <see cref="ImageSlot"/> once.</summary>
    public string ImageText { get; init; } = "<Img>" + ImageSlot + "</Img>";
    /// <summary>Between the images and the question (the seeds' Chat.ask joins them with one space).</summary>
    public string ImageTextJoin { get; init; } = " ";
    /// <summary>
    /// The id image positions hold between tokenisation and embedding. It is never embedded (the image's embeddings
    /// replace it), so it only has to be an id legacy encoding of text never yields: LLaMA's &lt;unk&gt; (0), since its
    /// SentencePiece model falls back to bytes instead of producing &lt;unk&gt;.
    /// </summary>
    public int ImageTokenId { get; init; }
    /// <summary>Generation ends at any of these ids (the seeds' stopping criteria and end of sentence).</summary>
    public int[] StopTokenIds { get; init; } = [];
    /// <summary>An answer is cut at the first of these strings (the seeds split their output there).</summary>
    public string[] StopStrings { get; init; } = [];
    /// <summary>Task identifiers a question may start with (MiniGPT-v2's multi-task prompts), e.g. "[refer]".</summary>
    public string[] TaskIdentifiers { get; init; } = [];
    /// <summary>The question `xrayvl report` asks.</summary>
    public string ReportRequest { get; init; } = "";

    /// <summary>XrayGPT's CONV_VISION: Vicuna v0 with `###` separators and its doctor/patient system text.</summary>
    public static PromptFormat XrayGpt { get; } = new()
    {
        Name = "xraygpt",
        System = "You are an experienced Doctor, give the following medical scan: <Img>ImageContent</Img>. " +
                 "You will be able to see the medical scan once I provide it to you. Please answer my questions.",
        Separator = "###",
        UserRole = "Patient",
        AssistantRole = "Doctor",
        RoleMessageJoin = ": ",
        OpenRoleSuffix = ":",
        // 835 is "###" as one piece; "##" + "#" (2277, 29937) is caught by the stop string. 2 is </s>.
        StopTokenIds = [835, 2],
        StopStrings = ["###"],
        ReportRequest = "Describe the given chest x-ray image in detail.",
    };

    /// <summary>
    /// MiniGPT-Med's CONV_VISION_minigptv2: LLaMA-2 `[INST]` turns, empty system text, each turn opening with a literal
    /// "&lt;s&gt;"; questions start with a task identifier; boxes are text on a 0–100 grid, `{&lt;x1&gt;&lt;y1&gt;&lt;x2&gt;&lt;y2&gt;}`.
    /// </summary>
    public static PromptFormat MiniGptMed { get; } = new()
    {
        Name = "minigpt_med",
        UserRole = "<s>[INST] ",
        AssistantRole = " [/INST]",
        StopTokenIds = [2],
        StopStrings = ["###", "</s>"],
        TaskIdentifiers = ["[caption]", "[vqa]", "[refer]", "[grounding]", "[identify]", "[detection]"],
        ReportRequest = "[caption] Briefly describe this image.",
    };

    /// <summary>A built-in format by name; throws on an unknown one.</summary>
    public static PromptFormat Named(string name) => name switch
    {
        "xraygpt" => XrayGpt,
        "minigpt_med" => MiniGptMed,
        _ => throw new XrayVLException($"prompt format '{name}' is not known (xraygpt, minigpt_med)"),
    };

    public PromptFormat Validate()
    {
        if (string.IsNullOrWhiteSpace(Name)) throw new XrayVLException("prompt format: name is empty");
        int slots = ImageText.Split(ImageSlot).Length - 1;
        if (slots != 1) throw new XrayVLException($"prompt format '{Name}': image_text must hold {ImageSlot} exactly once, it holds it {slots} times");
        if (ImageTokenId < 0) throw new XrayVLException($"prompt format '{Name}': image_token_id must not be negative");
        if (StopTokenIds.Any(id => id < 0)) throw new XrayVLException($"prompt format '{Name}': stop token ids must not be negative");
        return this;
    }

    /// <summary>The prompt text, images as <see cref="ImageText"/>. The conversation's own system prompt is not used: the format's system text is what the model was trained with.</summary>
    public string RenderText(Conversation conversation, bool addGenerationPrompt)
    {
        var text = new StringBuilder(System).Append(Separator);
        foreach (var message in conversation.Messages)
        {
            if (message.Text.Contains(ImageSlot, StringComparison.Ordinal))
                throw new XrayVLException($"the message contains '{ImageSlot}', which the {Name} prompt format keeps for images");
            string role = message.Role switch
            {
                TurnRole.User => UserRole,
                TurnRole.Assistant => message.ImageCount == 0 ? AssistantRole
                    : throw new XrayVLException("only user messages carry images"),
                _ => throw new XrayVLException($"the {Name} prompt format has no {message.Role} turns (its system text is fixed)"),
            };
            if (message.ImageCount < 0) throw new XrayVLException($"a message has {message.ImageCount} images");
            string body = message.ImageCount > 0
                ? string.Concat(Enumerable.Repeat(ImageText, message.ImageCount)) + ImageTextJoin + message.Text
                : message.Text;
            text.Append(role).Append(RoleMessageJoin).Append(body).Append(Separator);
        }
        if (addGenerationPrompt) text.Append(AssistantRole).Append(OpenRoleSuffix);
        return text.ToString();
    }

    /// <summary>
    /// Token ids of the prompt, one <see cref="ImageTokenId"/> per image (expanded to the image's length later), as
    /// the seeds tokenise it: cut at <see cref="ImageSlot"/>, each segment encoded on its own in legacy mode, the
    /// begin-of-sentence id on the first segment only. Inference prompts only: labels are all ignored, and asking for a
    /// training rendering (no generation prompt) is refused, since training in a seed's format is not implemented.
    /// </summary>
    public RenderedChat Render(Conversation conversation, XrayTokenizer tokenizer, bool addGenerationPrompt)
    {
        if (!addGenerationPrompt)
            throw new XrayVLException($"the {Name} prompt format renders prompts for inference only; training in it is not implemented");
        string[] segments = RenderText(conversation, addGenerationPrompt).Split(ImageSlot);
        var ids = new List<int>();
        var images = new List<int>();
        for (int i = 0; i < segments.Length; i++)
        {
            int[] segment = tokenizer.EncodeLegacy(segments[i], addBos: i == 0);
            if (segment.Contains(ImageTokenId))
                throw new XrayVLException($"the prompt spells token {ImageTokenId}, which the {Name} prompt format keeps for images");
            ids.AddRange(segment);
            if (i + 1 < segments.Length)
            {
                images.Add(ids.Count);
                ids.Add(ImageTokenId);
            }
        }
        return new RenderedChat([.. ids], [.. Enumerable.Repeat(Constants.IgnoreIndex, ids.Count)], [.. images]);
    }

    /// <summary>The answer up to the first stop string (the seeds split their output there), trimmed.</summary>
    public string CutAnswer(string answer)
    {
        int end = answer.Length;
        foreach (string stop in StopStrings)
        {
            int at = answer.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0) end = Math.Min(end, at);
        }
        return answer[..end].Trim();
    }

    public void Save(string directory) =>
        AtomicFile.WriteAllText(Path.Combine(directory, FileName), JsonSerializer.Serialize(this, Json.Options) + "\n");

    /// <summary>prompt_format.json of a folder, or null when it has none.</summary>
    public static PromptFormat? ReadIfPresent(string directory)
    {
        string path = Path.Combine(directory, FileName);
        if (!File.Exists(path)) return null;
        var format = Json.Read<PromptFormat>(path, "prompt format");
        try { return format.Validate(); }
        catch (XrayVLException e) { throw new XrayVLException($"{path}: {e.Message}"); }
    }
}
