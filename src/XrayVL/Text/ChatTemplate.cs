using System.Text;

namespace XrayVL.Text;

public enum ChatRole { System, User, Assistant }

/// <summary>One turn. A user turn's images are rendered as <paramref name="ImageCount"/> image tokens, each followed by "\n", before the text.</summary>
public sealed record ChatMessage(ChatRole Role, string Text, int ImageCount = 0);

/// <summary>A conversation: an optional system prompt, then the turns in order.</summary>
public sealed class Conversation
{
    public Conversation(string? systemPrompt = null, IEnumerable<ChatMessage>? messages = null)
    {
        SystemPrompt = systemPrompt;
        Messages = [.. messages ?? []];
    }

    /// <summary>Rendered as the first turn when not null.</summary>
    public string? SystemPrompt { get; set; }

    public List<ChatMessage> Messages { get; }

    /// <summary>A conversation that starts with <see cref="ChatTemplate.DefaultSystemPrompt"/> in <paramref name="lang"/>.</summary>
    public static Conversation WithDefaultSystemPrompt(string lang) => new(ChatTemplate.DefaultSystemPrompt(lang));

    public Conversation User(string text, int imageCount = 0)
    {
        Messages.Add(new ChatMessage(ChatRole.User, text, imageCount));
        return this;
    }

    public Conversation Assistant(string text)
    {
        Messages.Add(new ChatMessage(ChatRole.Assistant, text));
        return this;
    }
}

/// <summary>
/// A rendered conversation. <see cref="Labels"/> is aligned with <see cref="Ids"/> (not shifted: the loss shifts),
/// <see cref="Constants.IgnoreIndex"/> where the model is not trained to predict the token.
/// </summary>
public sealed record RenderedChat(int[] Ids, int[] Labels, int[] ImagePositions)
{
    public int ImageCount => ImagePositions.Length;
}

/// <summary>
/// The one chat template (ChatML, as Qwen2), used for training and for inference alike:
/// <code>
/// &lt;|im_start|&gt;system\n{system}&lt;|im_end|&gt;\n
/// &lt;|im_start|&gt;user\n&lt;image&gt;\n&lt;image&gt;\n{text}&lt;|im_end|&gt;\n
/// &lt;|im_start|&gt;assistant\n{answer}&lt;|im_end|&gt;\n
/// </code>
/// Only the answers and their closing &lt;|im_end|&gt; are learned (so the model learns to stop); everything else is
/// masked with <see cref="Constants.IgnoreIndex"/>.
/// </summary>
public static class ChatTemplate
{
    /// <summary>
    /// The same template in Jinja, written to tokenizer_config.json for Hugging Face's <c>apply_chat_template</c>.
    /// A message's content is a string, or a list of parts {"type": "image"} / {"type": "text", "text": ...}; images come first.
    /// </summary>
    public const string JinjaTemplate =
        "{%- for message in messages -%}" +
        "{{- '<|im_start|>' + message['role'] + '\\n' -}}" +
        "{%- if message['content'] is string -%}{{- message['content'] -}}" +
        "{%- else -%}" +
        "{%- for part in message['content'] if part['type'] == 'image' -%}{{- '<image>\\n' -}}{%- endfor -%}" +
        "{%- for part in message['content'] if part['type'] == 'text' -%}{{- part['text'] -}}{%- endfor -%}" +
        "{%- endif -%}" +
        "{{- '<|im_end|>\\n' -}}" +
        "{%- endfor -%}" +
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

    private const string EnglishSystemPrompt =
        "You are XrayVL, a research tool that reads chest X-ray images and writes radiology-style reports. " +
        "Your output is for research and education only: it is not a medical device and must not be used for clinical diagnosis or treatment.";

    private const string ChineseSystemPrompt =
        "你是 XrayVL，一个阅读胸部X光片并撰写放射学报告的科研工具。你的输出仅供科研和教学使用：它不是医疗器械，不能用于临床诊断或治疗。";

    /// <summary>The default system prompt in "en" or "zh".</summary>
    public static string DefaultSystemPrompt(string lang) => lang switch
    {
        "en" => EnglishSystemPrompt,
        "zh" => ChineseSystemPrompt,
        _ => throw new XrayVLException($"Unknown language '{lang}': expected 'en' or 'zh'."),
    };

    private static string RoleName(ChatRole role) => role switch
    {
        ChatRole.System => "system",
        ChatRole.User => "user",
        ChatRole.Assistant => "assistant",
        _ => throw new XrayVLException($"Unknown chat role {(int)role}."),
    };

    /// <summary>All turns, the system prompt first when there is one; checks that only user turns carry images.</summary>
    private static IEnumerable<ChatMessage> Turns(Conversation conversation)
    {
        if (conversation.SystemPrompt != null) yield return new ChatMessage(ChatRole.System, conversation.SystemPrompt);
        foreach (var message in conversation.Messages)
        {
            if (message.ImageCount < 0 || (message.ImageCount > 0 && message.Role != ChatRole.User))
                throw new XrayVLException($"A {RoleName(message.Role)} message has {message.ImageCount} images; only user messages carry images (0 or more).");
            yield return message;
        }
    }

    /// <summary>
    /// Token ids, labels and image positions. Each piece is encoded on its own with <see cref="XrayTokenizer.EncodeSegment"/>
    /// (a typed "&lt;image&gt;" is not an image slot), so ids equal <c>tok.Encode(RenderText(...))</c> whenever no text holds a
    /// special-token string or starts with whitespace (which the whole-string pre-tokenizer could join to the "\n" before it).
    /// </summary>
    public static RenderedChat Render(Conversation conversation, XrayTokenizer tokenizer, bool addGenerationPrompt)
    {
        var ids = new List<int>();
        var labels = new List<int>();
        var images = new List<int>();
        int newline = SingleId(tokenizer, "\n");

        void Add(int id, bool learned)
        {
            ids.Add(id);
            labels.Add(learned ? id : Constants.IgnoreIndex);
        }
        void AddText(string text, bool learned)
        {
            if (text.Length == 0) return;
            foreach (int id in tokenizer.EncodeSegment(text)) Add(id, learned);
        }

        foreach (var message in Turns(conversation))
        {
            Add(tokenizer.ImStartId, false);
            AddText(RoleName(message.Role), false);
            Add(newline, false);
            for (int i = 0; i < message.ImageCount; i++)
            {
                images.Add(ids.Count);
                Add(tokenizer.ImageId, false);
                Add(newline, false);
            }
            bool learned = message.Role == ChatRole.Assistant;
            AddText(message.Text, learned);
            Add(tokenizer.ImEndId, learned);
            Add(newline, false);
        }
        if (addGenerationPrompt)
        {
            Add(tokenizer.ImStartId, false);
            AddText(RoleName(ChatRole.Assistant), false);
            Add(newline, false);
        }
        return new RenderedChat([.. ids], [.. labels], [.. images]);
    }

    /// <summary>The rendered conversation as text, for display and debugging; <see cref="JinjaTemplate"/> renders the same.</summary>
    public static string RenderText(Conversation conversation, bool addGenerationPrompt)
    {
        var text = new StringBuilder();
        foreach (var message in Turns(conversation))
        {
            text.Append(SpecialTokens.ImStart).Append(RoleName(message.Role)).Append('\n');
            for (int i = 0; i < message.ImageCount; i++) text.Append(SpecialTokens.Image).Append('\n');
            text.Append(message.Text).Append(SpecialTokens.ImEnd).Append('\n');
        }
        if (addGenerationPrompt) text.Append(SpecialTokens.ImStart).Append(RoleName(ChatRole.Assistant)).Append('\n');
        return text.ToString();
    }

    private static int SingleId(XrayTokenizer tokenizer, string text)
    {
        int[] ids = tokenizer.EncodeSegment(text);
        return ids.Length == 1 ? ids[0]
            : throw new XrayVLException($"The tokenizer spells '{text.Replace("\n", "\\n")}' with {ids.Length} tokens; the chat template needs one.");
    }
}
