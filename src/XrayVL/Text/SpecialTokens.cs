namespace XrayVL.Text;

/// <summary>
/// The special tokens every XrayVL tokenizer carries, named once. Each is matched as a whole in text and maps to one id.
/// Boxes are not tokens: they are written as plain text, e.g. "&lt;12&gt;&lt;34&gt;&lt;56&gt;&lt;78&gt;".
/// </summary>
public static class SpecialTokens
{
    /// <summary>End of text; also the padding token.</summary>
    public const string EndOfText = "<|endoftext|>";

    /// <summary>Opens a chat turn (ChatML, as Qwen2).</summary>
    public const string ImStart = "<|im_start|>";

    /// <summary>Closes a chat turn; the model learns to emit it after each answer.</summary>
    public const string ImEnd = "<|im_end|>";

    /// <summary>Placeholder that the vision features replace in the prompt's embeddings.</summary>
    public const string Image = "<image>";

    /// <summary>All special tokens in id order: a trained tokenizer gives them the last ids, in this order.</summary>
    public static readonly IReadOnlyList<string> All = [EndOfText, ImStart, ImEnd, Image];
}
