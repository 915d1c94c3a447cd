using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace XrayVL.Text;

/// <summary>
/// ChatGLM-6B's tokenizer: the SentencePiece model <c>ice_text.model</c> (published with THUDM/chatglm-6b on the Hugging
/// Face hub) read by Microsoft.ML.Tokenizers, plus the rules its <c>tokenization_chatglm.py</c> applies around it:
/// <list type="bullet">
/// <item>before encoding, "\n" becomes the piece <c>&lt;n&gt;</c>, a tab <c>&lt;|tab|&gt;</c>, and every run of 2..80
/// spaces one <c>&lt;|blank_n|&gt;</c> piece (longest runs first); these are user-defined pieces, kept whole;</item>
/// <item>every SentencePiece id is shifted by <c>num_image_tokens</c> (ids below it were image tokens in the first
/// release; the release of 2023-04 with the 130,528-entry vocabulary pruned them, and its tokenizer_config.json sets
/// the offset to 0);</item>
/// <item>a prompt ends in <c>[gMASK] &lt;sop&gt;</c>; generation ends at <c>&lt;eop&gt;</c>; decoding drops ids below
/// the offset and undoes the replacements.</item>
/// </list>
/// </summary>
public sealed partial class ChatGlmTokenizer
{
    public const string FileName = "ice_text.model";
    public const int MaxBlankLength = 80;
    public const string NewlinePiece = "<n>", TabPiece = "<|tab|>";

    private readonly SentencePieceTokenizer withPrefix;      // text at the start: SentencePiece's dummy "▁" prefix
    private readonly SentencePieceTokenizer continuation;    // text after a user-defined piece: no prefix (it continues)
    private readonly Dictionary<string, int> pieceIds;
    private readonly string[] pieces;

    private ChatGlmTokenizer(SentencePieceTokenizer withPrefix, SentencePieceTokenizer continuation, int numImageTokens)
    {
        this.withPrefix = withPrefix;
        this.continuation = continuation;
        NumImageTokens = numImageTokens;
        pieceIds = new Dictionary<string, int>(withPrefix.Vocabulary, StringComparer.Ordinal);
        pieces = new string[pieceIds.Count];
        foreach (var (piece, id) in pieceIds)
        {
            if ((uint)id >= (uint)pieces.Length) throw new XrayVLException($"{FileName}: piece ids are not 0..{pieces.Length - 1}");
            pieces[id] = piece;
        }
        long Special(string token) => pieceIds.TryGetValue(token, out int id) ? id + (long)numImageTokens
            : throw new XrayVLException($"{FileName}: no '{token}' piece: not a ChatGLM-6B tokenizer model");
        MaskId = Special("[MASK]");
        GmaskId = Special("[gMASK]");
        SopId = Special("<sop>");
        EopId = Special("<eop>");
        PadId = Special("<pad>");
        Special(NewlinePiece);
        DummyPrefixId = pieceIds.TryGetValue("\u2581", out int prefix) ? prefix + numImageTokens : null;
    }

    /// <summary>ids below this were image tokens; SentencePiece id i is token id i + NumImageTokens.</summary>
    public int NumImageTokens { get; }
    public long MaskId { get; }
    public long GmaskId { get; }
    /// <summary>`&lt;sop&gt;`, ChatGLM's bos: starts the answer.</summary>
    public long SopId { get; }
    /// <summary>`&lt;eop&gt;`, ChatGLM's eos: ends the answer.</summary>
    public long EopId { get; }
    /// <summary>`&lt;pad&gt;`: the placeholder XrayGLM writes where the image goes.</summary>
    public long PadId { get; }
    public int VocabSize => pieces.Length + NumImageTokens;
    private long? DummyPrefixId { get; }

    /// <summary>Reads <c>ice_text.model</c> (a file, or a folder holding it).</summary>
    public static ChatGlmTokenizer Load(string path, int numImageTokens = 0)
    {
        string file = Directory.Exists(path) ? Path.Combine(path, FileName) : path;
        if (!File.Exists(file)) throw new XrayVLException($"{file}: ChatGLM tokenizer model not found (ice_text.model from the THUDM/chatglm-6b repository)");
        if (numImageTokens < 0) throw new XrayVLException($"num_image_tokens must be 0 or more, got {numImageTokens}");
        byte[] bytes = File.ReadAllBytes(file);
        // Protobuf merges a repeated message field, so an appended normalizer_spec (field 3) holding only
        // add_dummy_prefix (its field 3) = false turns that one flag off for the continuation segments.
        byte[] noPrefix = [.. bytes, 0x1A, 0x02, 0x18, 0x00];
        try
        {
            return new ChatGlmTokenizer(
                SentencePieceTokenizer.Create(new MemoryStream(bytes), false, false),
                SentencePieceTokenizer.Create(new MemoryStream(noPrefix), false, false),
                numImageTokens);
        }
        catch (Exception e) when (e is not XrayVLException)
        {
            throw new XrayVLException($"{file}: not a SentencePiece model ({e.Message})", e);
        }
    }

    /// <summary>tokenization_chatglm.py's preprocessing: "\n" → &lt;n&gt;, tab → &lt;|tab|&gt;, runs of 2..80 spaces → &lt;|blank_n|&gt;.</summary>
    public static string Preprocess(string text)
    {
        text = text.Replace("\n", NewlinePiece).Replace("\t", TabPiece);
        // A run longer than 80 takes <|blank_80|> pieces first, then the rest, as the longest-first replacement does.
        return SpaceRun().Replace(text, m =>
        {
            var result = new StringBuilder();
            int left = m.Length;
            while (left > 1)
            {
                int take = Math.Min(left, MaxBlankLength);
                result.Append($"<|blank_{take}|>");
                left -= take;
            }
            if (left == 1) result.Append(' ');
            return result.ToString();
        });
    }

    /// <summary>The inverse of <see cref="Preprocess"/> on decoded text.</summary>
    public static string Postprocess(string text) =>
        BlankPiece().Replace(text.Replace(NewlinePiece, "\n").Replace(TabPiece, "\t"), m => new string(' ', int.Parse(m.Groups[1].Value)));

    /// <summary>Token ids of <paramref name="text"/>, SentencePiece's dummy prefix included (ChatGLM's encode), no special tokens.</summary>
    public long[] Encode(string text)
    {
        string prepared = Preprocess(text);
        var ids = new List<long>();
        int at = 0;
        bool first = true;
        foreach (Match m in UserDefinedPiece().Matches(prepared))
        {
            if (!pieceIds.TryGetValue(m.Value, out int pieceId)) continue;       // not a piece of this model: plain text
            AddText(prepared[at..m.Index], first);
            ids.Add(pieceId + (long)NumImageTokens);
            at = m.Index + m.Length;
            first = false;
        }
        AddText(prepared[at..], first);
        return [.. ids];

        void AddText(string segment, bool atStart)
        {
            if (segment.Length == 0)
            {
                // SentencePiece prefixes the whole text with "▁", so text that starts with a user-defined piece begins with it alone.
                if (atStart && withPrefix.AddDummyPrefix && DummyPrefixId is { } prefix) ids.Add(prefix);
                return;
            }
            foreach (int id in (atStart ? withPrefix : continuation).EncodeToIds(segment)) ids.Add(id + (long)NumImageTokens);
        }
    }

    /// <summary>Text of generated ids: image ids and special tokens dropped, the replacements undone.</summary>
    public string Decode(IEnumerable<long> ids)
    {
        var kept = ids.Where(id => id >= NumImageTokens && id != SopId && id != EopId && id != GmaskId && id != MaskId && id != PadId)
            .Select(id => (int)(id - NumImageTokens)).Where(id => id < pieces.Length).ToList();
        // SentencePiece's decoding, written out because Microsoft.ML.Tokenizers drops user-defined pieces (<n>, blanks)
        // when it decodes: pieces joined, "▁" read as a space, runs of byte pieces (<0xE8>…) read as UTF-8, and the space
        // of the dummy prefix removed at the start.
        var text = new StringBuilder();
        var bytes = new List<byte>();
        foreach (int id in kept)
        {
            string piece = pieces[id];
            if (id == withPrefix.BeginningOfSentenceId || id == withPrefix.EndOfSentenceId) continue;
            if (piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
                && byte.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b))
            {
                bytes.Add(b);
                continue;
            }
            FlushBytes();
            text.Append(piece.Replace('\u2581', ' '));
        }
        FlushBytes();
        if (withPrefix.AddDummyPrefix && text.Length > 0 && text[0] == ' ') text.Remove(0, 1);
        return Postprocess(text.ToString());

        void FlushBytes()
        {
            if (bytes.Count == 0) return;
            text.Append(Encoding.UTF8.GetString([.. bytes]));
            bytes.Clear();
        }
    }

    /// <summary>A streaming decoder for generated ids: each piece is complete text, and the pieces join to <see cref="Decode"/> of all ids.</summary>
    public IStreamingDecoder CreateStreamingDecoder() => new StreamingChatGlmDecoder(this);

    /// <summary>
    /// Decodes everything so far at each id and hands out what was added. SentencePiece text is not a concatenation of
    /// per-piece texts (byte pieces join into characters, the dummy prefix's space goes, blanks expand), so the whole is
    /// decoded each time; an answer is a few hundred ids. Text ending inside a character (U+FFFD) is held back.
    /// </summary>
    private sealed class StreamingChatGlmDecoder(ChatGlmTokenizer tokenizer) : IStreamingDecoder
    {
        private readonly List<long> ids = [];
        private string written = "";

        public string Push(int id)
        {
            ids.Add(id);
            string text = tokenizer.Decode(ids);
            if (text.EndsWith('\uFFFD') || !text.StartsWith(written, StringComparison.Ordinal) || text.Length == written.Length) return "";
            string piece = text[written.Length..];
            written = text;
            return piece;
        }

        public string Flush()
        {
            string text = tokenizer.Decode(ids);
            string piece = text.StartsWith(written, StringComparison.Ordinal) ? text[written.Length..] : "";
            written = text;
            return piece;
        }
    }

    /// <summary>
    /// XrayGLM's prompt ids (its chat.py): the tokens of the text up to and including "&lt;img&gt;", then
    /// <paramref name="imageLength"/> pad placeholders, then the tokens of the rest, then [gMASK] &lt;sop&gt;.
    /// <paramref name="encode"/> is the tokenizer (<see cref="Encode"/>, or a stand-in for checks). Returns the ids
    /// and where the image goes (the number of tokens before it).
    /// </summary>
    public static (long[] Ids, int PreImage) XrayGlmPromptIds(string prompt, int imageLength, Func<string, long[]> encode, long padId, long gmaskId, long sopId)
    {
        int position = prompt.IndexOf(XrayGlmPrompt.ImageOpen, StringComparison.Ordinal);
        if (position < 0) throw new XrayVLException($"an XrayGLM prompt starts with '{XrayGlmPrompt.ImageOpen}'");
        position += XrayGlmPrompt.ImageOpen.Length;
        long[] before = encode(prompt[..position]);
        long[] after = encode(prompt[position..]);
        return ([.. before, .. Enumerable.Repeat(padId, imageLength), .. after, gmaskId, sopId], before.Length);
    }

    /// <summary><see cref="XrayGlmPromptIds(string, int, Func{string, long[]}, long, long, long)"/> with this tokenizer.</summary>
    public (long[] Ids, int PreImage) XrayGlmPromptIds(string prompt, int imageLength) =>
        XrayGlmPromptIds(prompt, imageLength, Encode, PadId, GmaskId, SopId);

    [GeneratedRegex(" {2,}")]
    private static partial Regex SpaceRun();

    [GeneratedRegex(@"<\|blank_(\d+)\|>")]
    private static partial Regex BlankPiece();

    [GeneratedRegex(@"<n>|<\|tab\|>|<\|blank_\d+\|>")]
    private static partial Regex UserDefinedPiece();
}

/// <summary>
/// XrayGLM's chat prompt (its chat.py): "&lt;img&gt;&lt;/img&gt;" (written even without an image; the image path it
/// carries is removed before tokenizing), then "问：{q}\n答：{a}\n" per earlier round, then "问：{q}\n答：".
/// </summary>
public static class XrayGlmPrompt
{
    public const string ImageOpen = "<img>", ImageClose = "</img>";

    public static string Render(IEnumerable<(string Question, string Answer)> history, string query)
    {
        var prompt = new StringBuilder(ImageOpen + ImageClose);
        foreach (var (q, a) in history) prompt.Append($"问：{q}\n答：{a}\n");
        prompt.Append($"问：{query}\n答：");
        return prompt.ToString();
    }
}
