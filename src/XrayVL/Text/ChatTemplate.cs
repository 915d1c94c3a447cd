using System.Text;

namespace XrayVL.Text;

public enum TurnRole { System, User, Assistant }

/// <summary>One turn. A user turn's images are rendered as <paramref name="ImageCount"/> image tokens, each followed by "\n", before the text.</summary>
public sealed record Turn(TurnRole Role, string Text, int ImageCount = 0);

/// <summary>A conversation: an optional system prompt, then the turns in order.</summary>
public sealed class Conversation
{
    public Conversation(string? systemPrompt = null, IEnumerable<Turn>? messages = null)
    {
        SystemPrompt = systemPrompt;
        Messages = [.. messages ?? []];
    }

    /// <summary>Rendered as the first turn when not null.</summary>
    public string? SystemPrompt { get; set; }

    public List<Turn> Messages { get; }

    /// <summary>A conversation that starts with <see cref="ChatTemplate.DefaultSystemPrompt"/> in <paramref name="lang"/>.</summary>
    public static Conversation WithDefaultSystemPrompt(string lang) => new(ChatTemplate.DefaultSystemPrompt(lang));

    public Conversation User(string text, int imageCount = 0)
    {
        Messages.Add(new Turn(TurnRole.User, text, imageCount));
        return this;
    }

    public Conversation Assistant(string text)
    {
        Messages.Add(new Turn(TurnRole.Assistant, text));
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

    private static string RoleName(TurnRole role) => role switch
    {
        TurnRole.System => "system",
        TurnRole.User => "user",
        TurnRole.Assistant => "assistant",
        _ => throw new XrayVLException($"Unknown chat role {(int)role}."),
    };

    /// <summary>All turns, the system prompt first when there is one; checks that only user turns carry images.</summary>
    private static IEnumerable<Turn> Turns(Conversation conversation)
    {
        if (conversation.SystemPrompt != null) yield return new Turn(TurnRole.System, conversation.SystemPrompt);
        foreach (var message in conversation.Messages)
        {
            if (message.ImageCount < 0 || (message.ImageCount > 0 && message.Role != TurnRole.User))
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
        if (tokenizer.PromptFormat is { } format) return format.Render(conversation, tokenizer, addGenerationPrompt);
        if (tokenizer.ParsedChatTemplate is { } foreign) return RenderWithTemplate(foreign, conversation, tokenizer, addGenerationPrompt);
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
            bool learned = message.Role == TurnRole.Assistant;
            AddText(message.Text, learned);
            Add(tokenizer.ImEndId, learned);
            Add(newline, false);
        }
        if (addGenerationPrompt)
        {
            Add(tokenizer.ImStartId, false);
            AddText(RoleName(TurnRole.Assistant), false);
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
        if (addGenerationPrompt) text.Append(SpecialTokens.ImStart).Append(RoleName(TurnRole.Assistant)).Append('\n');
        return text.ToString();
    }

    // ---- a checkpoint's own Jinja template (tokenizer_config.json chat_template) ----

    // Message texts enter the template as markers from Unicode's private use area, so the rendered text shows where
    // each text sits: those pieces are encoded as plain text (a typed "<|im_start|>" or "<image>" stays text, as in the
    // built-in renderer), the template's own pieces with special tokens recognised.
    private const char MarkOpen = '\uE000', MarkClose = '\uE001';

    private static string Mark(int index) => $"{MarkOpen}{index}{MarkClose}";

    /// <summary>
    /// The conversation as transformers' apply_chat_template renders it with <paramref name="template"/>: messages are
    /// {role, content}; a user turn with images has content [{"type": "image"}…, {"type": "text", "text": …}], and
    /// for templates that only print string contents, "&lt;image&gt;\n" per image before the text (LLaVA-1.5's
    /// convention). Training labels: the text each assistant turn adds (its answer and the template's closing tokens).
    /// </summary>
    private static RenderedChat RenderWithTemplate(JinjaTemplate template, Conversation conversation, XrayTokenizer tokenizer, bool addGenerationPrompt)
    {
        var turns = Turns(conversation).ToList();
        int images = turns.Sum(t => t.ImageCount);
        foreach (bool asParts in new[] { true, false })
        {
            string Text(int count, bool generation) => RenderTemplate(template, turns.Take(count), tokenizer, generation, asParts, marked: true);
            string full;
            try { full = Text(turns.Count, addGenerationPrompt); }
            catch (XrayVLException) when (asParts && images > 0) { continue; }
            var learned = new List<(int Start, int End)>();
            for (int i = 0; i < turns.Count && !addGenerationPrompt; i++)
            {
                if (turns[i].Role != TurnRole.Assistant) continue;
                string before = Text(i, generation: true), upTo = Text(i + 1, generation: false);
                if (!upTo.StartsWith(before, StringComparison.Ordinal) || !full.StartsWith(upTo, StringComparison.Ordinal))
                    throw new XrayVLException("the checkpoint's chat template renders earlier turns differently once later turns follow, " +
                                              "so answers cannot be marked for training; train with this project's template");
                learned.Add((before.Length, upTo.Length));
            }
            var rendered = Encode(full, turns, learned, tokenizer);
            if (rendered.ImageCount == images) return rendered;
            if (!asParts) break;
        }
        throw new XrayVLException($"the checkpoint's chat template does not place the {images} image(s) of this conversation " +
                                  $"(it writes no '{SpecialTokens.Image}' for them)");
    }

    /// <summary>The rendered text, message texts as markers when <paramref name="marked"/>.</summary>
    private static string RenderTemplate(JinjaTemplate template, IEnumerable<Turn> turns, XrayTokenizer tokenizer,
        bool addGenerationPrompt, bool imagesAsParts, bool marked)
    {
        var messages = new List<object?>();
        int index = 0;
        foreach (var turn in turns)
        {
            string text = marked ? Mark(index) : turn.Text;
            index++;
            object content = turn.ImageCount == 0 ? text
                : imagesAsParts
                    ? (object)new List<object?>([.. Enumerable.Repeat<object?>(new Dictionary<string, object?> { ["type"] = "image" }, turn.ImageCount),
                        new Dictionary<string, object?> { ["type"] = "text", ["text"] = text }])
                    : string.Concat(Enumerable.Repeat(SpecialTokens.Image + "\n", turn.ImageCount)) + text;
            messages.Add(new Dictionary<string, object?> { ["role"] = RoleName(turn.Role), ["content"] = content });
        }
        var variables = new Dictionary<string, object?>
        {
            ["messages"] = messages,
            ["add_generation_prompt"] = addGenerationPrompt,
        };
        foreach (var (name, value) in tokenizer.TemplateTokens) variables[name] = value;
        try { return template.Render(variables); }
        catch (XrayVLException e) { throw new XrayVLException($"the checkpoint's chat template: {e.Message}"); }
    }

    /// <summary>Ids and labels of a marked rendering: template text with special tokens, message texts as plain text.</summary>
    private static RenderedChat Encode(string full, List<Turn> turns, List<(int Start, int End)> learned, XrayTokenizer tokenizer)
    {
        var ids = new List<int>();
        var labels = new List<int>();
        var images = new List<int>();
        bool IsLearned(int at) => learned.Any(r => at >= r.Start && at < r.End);
        // Cut points: markers and the edges of learned spans; each piece is encoded on its own.
        var cuts = new SortedSet<int> { 0, full.Length };
        foreach (var (start, end) in learned) { cuts.Add(start); cuts.Add(end); }
        for (int i = 0; i < full.Length; i++)
            if (full[i] == MarkOpen) { cuts.Add(i); cuts.Add(full.IndexOf(MarkClose, i) + 1); }
        int[] points = [.. cuts];
        for (int p = 0; p + 1 < points.Length; p++)
        {
            int start = points[p], end = points[p + 1];
            if (end <= start) continue;
            string piece = full[start..end];
            bool isMessage = piece[0] == MarkOpen && piece[^1] == MarkClose;
            int[] pieceIds = isMessage
                ? tokenizer.EncodeSegment(turns[int.Parse(piece[1..^1], System.Globalization.CultureInfo.InvariantCulture)].Text)
                : tokenizer.Encode(piece);
            if (!isMessage && (piece.Contains(MarkOpen) || piece.Contains(MarkClose)))
                throw new XrayVLException("the checkpoint's chat template changes message texts (e.g. trims them); it cannot be rendered here");
            bool learn = IsLearned(start);
            foreach (int id in pieceIds)
            {
                if (id == tokenizer.ImageId && !isMessage) images.Add(ids.Count);
                ids.Add(id);
                labels.Add(learn ? id : Constants.IgnoreIndex);
            }
        }
        return new RenderedChat([.. ids], [.. labels], [.. images]);
    }

    /// <summary>
    /// The text <paramref name="tokenizer"/>'s template renders (the checkpoint's own, else this project's): what
    /// transformers' apply_chat_template returns for the same conversation.
    /// </summary>
    public static string RenderText(Conversation conversation, XrayTokenizer tokenizer, bool addGenerationPrompt)
    {
        if (tokenizer.PromptFormat is { } format) return format.RenderText(conversation, addGenerationPrompt);
        if (tokenizer.ParsedChatTemplate is not { } template) return RenderText(conversation, addGenerationPrompt);
        var turns = Turns(conversation).ToList();
        try { return RenderTemplate(template, turns, tokenizer, addGenerationPrompt, imagesAsParts: true, marked: false); }
        catch (XrayVLException) when (turns.Any(t => t.ImageCount > 0))
        {
            return RenderTemplate(template, turns, tokenizer, addGenerationPrompt, imagesAsParts: false, marked: false);
        }
    }

    private static int SingleId(XrayTokenizer tokenizer, string text)
    {
        int[] ids = tokenizer.EncodeSegment(text);
        return ids.Length == 1 ? ids[0]
            : throw new XrayVLException($"The tokenizer spells '{text.Replace("\n", "\\n")}' with {ids.Length} tokens; the chat template needs one.");
    }
}
