using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace XrayVL.Text;

/// <summary>
/// The project's tokenizer: one facade over a byte-level BPE folder (vocab.json + merges.txt, GPT-2/Qwen2 layout, as
/// <see cref="BpeTrainer"/> writes) or a SentencePiece folder (tokenizer.model, LLaMA). Encoding is done by
/// Microsoft.ML.Tokenizers (<see cref="BpeTokenizer"/> with ByteLevel, <see cref="LlamaTokenizer"/>); decoding goes
/// through one id → bytes table that <see cref="StreamingDecoder"/> shares, so streamed text always equals
/// <see cref="Decode"/> of the same ids. The special tokens of <see cref="SpecialTokens.All"/> always have ids: those a
/// folder lacks are appended after its vocabulary (so <see cref="VocabSize"/> can exceed the file's).
/// Byte-level BPE always pre-tokenizes with <see cref="ByteLevel.PreTokenizerPattern"/> (Qwen2's): a folder trained with
/// another pattern (GPT-2's) loads and round-trips, but cuts some text differently from its original tokenizer.
/// Encode and Decode may be called from several threads at once.
/// </summary>
public sealed class XrayTokenizer
{
    public const string SentencePieceFile = "tokenizer.model";

    private readonly Tokenizer withSpecials;    // recognises special tokens in text
    private readonly Tokenizer segments;        // spells them as ordinary text; no SentencePiece dummy prefix
    private readonly byte[][] tokenBytes;       // id → bytes the token stands for (special: its UTF-8 text)
    private readonly bool[] isSpecial;
    private readonly Dictionary<string, int> idsByToken;
    private readonly bool stripFirstSpace;      // SentencePiece's dummy prefix: "▁hello" at the start decodes to "hello"
    private readonly Action<string> save;
    private readonly SentencePieceBpe? legacyChunks;   // SentencePiece's own BPE, dummy prefix, no added tokens (EncodeLegacy)
    private readonly Dictionary<string, int> controlTokens = [];  // <s>, </s>, <unk> as SentencePiece defines them

    private XrayTokenizer(string kind, Tokenizer withSpecials, Tokenizer segments, byte[][] tokenBytes, bool[] isSpecial,
        Dictionary<string, int> idsByToken, bool stripFirstSpace, int? eosId, Action<string> save,
        int? fileVocabSize = null, SentencePieceBpe? legacyChunks = null, Dictionary<string, int>? controlTokens = null)
    {
        FileVocabSize = fileVocabSize ?? tokenBytes.Length;
        this.legacyChunks = legacyChunks;
        if (controlTokens != null) this.controlTokens = controlTokens;
        Kind = kind;
        this.withSpecials = withSpecials;
        this.segments = segments;
        this.tokenBytes = tokenBytes;
        this.isSpecial = isSpecial;
        this.idsByToken = idsByToken;
        this.stripFirstSpace = stripFirstSpace;
        this.save = save;
        EosId = eosId ?? idsByToken[SpecialTokens.EndOfText];
        PadId = EosId;
        ImageId = idsByToken[SpecialTokens.Image];
        ImStartId = idsByToken[SpecialTokens.ImStart];
        ImEndId = idsByToken[SpecialTokens.ImEnd];
    }

    /// <summary>"byte_level_bpe" or "sentencepiece".</summary>
    public string Kind { get; }

    /// <summary>Number of ids, special tokens included: the size the model's embedding needs.</summary>
    public int VocabSize => tokenBytes.Length;

    /// <summary>End of text: <c>&lt;|endoftext|&gt;</c>, or the SentencePiece model's own eos (&lt;/s&gt;) when it has one.</summary>
    public int EosId { get; }

    /// <summary>Padding id: the same as <see cref="EosId"/> (padding positions are masked, so sharing is safe).</summary>
    public int PadId { get; }

    /// <summary>
    /// The id whose positions image embeddings fill: <c>&lt;image&gt;</c>, or the prompt format's image placeholder id
    /// when the folder has one (<see cref="UsePromptFormat"/>).
    /// </summary>
    public int ImageId { get; private set; }

    /// <summary>
    /// Ids of the tokenizer files themselves (pieces and tokenizer_config.json's added tokens), before the special tokens
    /// this project appends: with a <see cref="PromptFormat"/> only these ever reach the model.
    /// </summary>
    public int FileVocabSize { get; }

    /// <summary>A seed system's own prompt format (prompt_format.json in the folder), or null for the chat template.</summary>
    public PromptFormat? PromptFormat { get; private set; }

    /// <summary>
    /// The checkpoint's own chat template (tokenizer_config.json `chat_template`) when it differs from this project's,
    /// else null: <see cref="ChatTemplate.Render"/> then renders prompts with it.
    /// </summary>
    public string? ForeignChatTemplate { get; private set; }

    /// <summary><see cref="ForeignChatTemplate"/> parsed once.</summary>
    internal JinjaTemplate? ParsedChatTemplate { get; private set; }

    /// <summary>Special-token strings a chat template may use (bos_token, eos_token, pad_token, unk_token).</summary>
    public IReadOnlyDictionary<string, string> TemplateTokens { get; private set; } = new Dictionary<string, string>();

    public int ImStartId { get; }
    public int ImEndId { get; }

    /// <summary>The id of a token spelt as in the vocabulary ("Ġthe", "▁the", "&lt;image&gt;"), or null.</summary>
    public int? IdOf(string token) => idsByToken.TryGetValue(token, out int id) ? id : null;

    /// <summary>True for special tokens (and SentencePiece's control tokens &lt;s&gt;, &lt;/s&gt;, &lt;unk&gt;).</summary>
    public bool IsSpecial(int id) => (uint)id < (uint)isSpecial.Length && isSpecial[id];

    /// <summary>Encodes text; special tokens written in it (e.g. "&lt;image&gt;") become their single ids.</summary>
    public int[] Encode(string text) => [.. withSpecials.EncodeToIds(text)];

    /// <summary>
    /// Encodes one piece of a longer text, as <see cref="ChatTemplate"/> assembles prompts: special-token strings are
    /// spelt as ordinary characters ("&lt;image&gt;" typed by a user can never forge an image slot or a turn boundary),
    /// and SentencePiece adds no dummy-prefix space, since the piece continues the text before it.
    /// </summary>
    public int[] EncodeSegment(string text) => [.. segments.EncodeToIds(text)];

    /// <summary>
    /// SentencePiece encoding as transformers' slow LlamaTokenizer does it in legacy mode (the mode XrayGPT's and
    /// MiniGPT-Med's pinned transformers use): the text is cut at the control-token strings (&lt;s&gt;, &lt;/s&gt;,
    /// &lt;unk&gt;), which become their ids, and every piece between them is encoded on its own with the dummy-prefix
    /// "▁" — so text right after a literal "&lt;s&gt;" or at the start of a segment begins with "▁".
    /// <paramref name="addBos"/> prepends the begin-of-sentence id (add_special_tokens=True).
    /// </summary>
    public int[] EncodeLegacy(string text, bool addBos = false)
    {
        if (legacyChunks is null) throw new XrayVLException($"legacy SentencePiece encoding needs a tokenizer.model; this tokenizer is {Kind}");
        var ids = new List<int>();
        if (addBos)
        {
            if (!controlTokens.TryGetValue("<s>", out int bos)) throw new XrayVLException("the SentencePiece model has no <s> (begin of sentence) piece");
            ids.Add(bos);
        }
        int start = 0;
        while (start < text.Length)
        {
            // The earliest control-token string at or after start (the longest one when two begin at the same place).
            int at = -1;
            string? control = null;
            foreach (var name in controlTokens.Keys)
            {
                int i = text.IndexOf(name, start, StringComparison.Ordinal);
                if (i >= 0 && (at < 0 || i < at || (i == at && name.Length > control!.Length))) (at, control) = (i, name);
            }
            int end = at < 0 ? text.Length : at;
            if (end > start) ids.AddRange(legacyChunks.Encode(text[start..end]));
            if (control is null) break;
            ids.Add(controlTokens[control]);
            start = at + control.Length;
        }
        return [.. ids];
    }

    /// <summary>
    /// Renders prompts with <paramref name="format"/> (a seed system's own prompt convention) from now on; null goes back
    /// to the chat template. The image placeholder becomes the format's image id.
    /// </summary>
    public void UsePromptFormat(PromptFormat? format)
    {
        if (format is not null)
        {
            format.Validate();
            if (Kind != "sentencepiece") throw new XrayVLException($"prompt format '{format.Name}' needs a SentencePiece tokenizer (tokenizer.model)");
            if ((uint)format.ImageTokenId >= (uint)FileVocabSize)
                throw new XrayVLException($"prompt format '{format.Name}': image_token_id {format.ImageTokenId} is outside the vocabulary (0..{FileVocabSize - 1})");
        }
        PromptFormat = format;
        ImageId = format?.ImageTokenId ?? idsByToken[SpecialTokens.Image];
    }

    /// <summary>Decodes ids to text; invalid UTF-8 (a cut-off character) becomes U+FFFD.</summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecial = false)
    {
        var bytes = new List<byte>();
        bool atStart = true;
        foreach (int id in ids) AppendTokenBytes(id, skipSpecial, ref atStart, bytes);
        return Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes));
    }

    /// <summary>A decoder to feed generated ids one at a time; it returns only whole characters.</summary>
    public StreamingDecoder CreateStreamingDecoder(bool skipSpecial = false) => new(this, skipSpecial);

    /// <summary>
    /// Appends the bytes of <paramref name="id"/>. <paramref name="atStart"/> is true until the first ordinary token,
    /// whose leading space is SentencePiece's dummy prefix and is dropped.
    /// </summary>
    internal void AppendTokenBytes(int id, bool skipSpecial, ref bool atStart, List<byte> into)
    {
        if ((uint)id >= (uint)tokenBytes.Length)
            throw new XrayVLException($"Token id {id} is outside the vocabulary (size {tokenBytes.Length}).");
        if (isSpecial[id])
        {
            if (!skipSpecial) into.AddRange(tokenBytes[id]);
            return;
        }
        byte[] bytes = tokenBytes[id];
        int skip = atStart && stripFirstSpace && bytes.Length > 0 && bytes[0] == (byte)' ' ? 1 : 0;
        atStart = false;
        for (int i = skip; i < bytes.Length; i++) into.Add(bytes[i]);
    }

    /// <summary>
    /// Writes the tokenizer files to <paramref name="directory"/>: vocab.json, merges.txt, tokenizer.json and
    /// tokenizer_config.json for byte-level BPE; tokenizer.model and tokenizer_config.json for SentencePiece.
    /// </summary>
    public void Save(string directory)
    {
        save(directory);
        if (ForeignChatTemplate != null) HfFiles.WriteChatTemplate(directory, ForeignChatTemplate);
        if (PromptFormat != null) PromptFormat.Save(directory);
    }

    /// <summary>Loads a tokenizer folder: vocab.json + merges.txt (byte-level BPE), else tokenizer.model (SentencePiece).</summary>
    public static XrayTokenizer Load(string directory)
    {
        if (!Directory.Exists(directory)) throw new XrayVLException($"Tokenizer folder '{directory}' does not exist.");
        XrayTokenizer tokenizer;
        if (File.Exists(Path.Combine(directory, ByteLevelBpeModel.VocabFile)) && File.Exists(Path.Combine(directory, ByteLevelBpeModel.MergesFile)))
            tokenizer = FromModel(ByteLevelBpeModel.Load(directory));
        else if (File.Exists(Path.Combine(directory, SentencePieceFile)))
            tokenizer = LoadSentencePiece(directory);
        else
            throw new XrayVLException($"Tokenizer folder '{directory}' has neither vocab.json + merges.txt nor tokenizer.model.");
        var (template, tokens) = HfFiles.ReadChatTemplate(directory);
        tokenizer.UseChatTemplate(template, tokens);
        tokenizer.UsePromptFormat(PromptFormat.ReadIfPresent(directory));
        return tokenizer;
    }

    /// <summary>
    /// Renders prompts with <paramref name="template"/> (Jinja, as transformers' apply_chat_template) from now on; null
    /// or this project's own template keeps the built-in renderer. The template is parsed here, so a broken one is
    /// refused when the model loads, not at the first request.
    /// </summary>
    public void UseChatTemplate(string? template, IReadOnlyDictionary<string, string>? tokens = null)
    {
        if (template != null && template != ChatTemplate.JinjaTemplate)
        {
            try { ParsedChatTemplate = JinjaTemplate.Parse(template); }
            catch (XrayVLException e) { throw new XrayVLException($"chat_template: {e.Message}"); }
            ForeignChatTemplate = template;
        }
        else (ForeignChatTemplate, ParsedChatTemplate) = (null, null);
        TemplateTokens = tokens ?? new Dictionary<string, string>();
    }

    /// <summary>Wraps a byte-level BPE model (e.g. just trained) without a round trip through files.</summary>
    public static XrayTokenizer FromModel(ByteLevelBpeModel model)
    {
        var vocabulary = new Dictionary<string, int>(model.VocabSize, StringComparer.Ordinal);
        for (int id = 0; id < model.VocabSize; id++) vocabulary[model.Tokens[id]] = id;
        var specials = model.Specials.ToDictionary(s => s, s => vocabulary[s], StringComparer.Ordinal);
        var merges = model.Merges.Select(m => m.Left + " " + m.Right).ToList();

        BpeTokenizer Create(IReadOnlyDictionary<string, int>? special) => BpeTokenizer.Create(new BpeOptions(vocabulary)
        {
            Merges = merges,
            ByteLevel = true,
            PreTokenizer = new RegexPreTokenizer(ByteLevel.PreTokenizer, special),
            SpecialTokens = special,
        });

        var bytes = new byte[model.VocabSize][];
        var special = new bool[model.VocabSize];
        for (int id = 0; id < model.VocabSize; id++)
        {
            bytes[id] = model.TokenBytes(id).ToArray();
            special[id] = model.IsSpecial(id);
        }
        return new XrayTokenizer("byte_level_bpe", Create(specials), Create(null), bytes, special, vocabulary,
            stripFirstSpace: false, eosId: null, save: model.Save);
    }

    private static readonly Regex BytePiece = new("^<0x([0-9A-Fa-f]{2})>$", RegexOptions.CultureInvariant);

    private static XrayTokenizer LoadSentencePiece(string directory)
    {
        string modelPath = Path.Combine(directory, SentencePieceFile);
        byte[] modelBytes;
        try { modelBytes = File.ReadAllBytes(modelPath); }
        catch (IOException e) { throw new XrayVLException($"{modelPath}: cannot be read ({e.Message}).", e); }

        // Segments continue earlier text, so they get no dummy prefix. Protobuf merges a repeated message field, so an
        // appended normalizer_spec (field 3) holding only add_dummy_prefix (field 3) = false overrides that one flag.
        byte[] segmentModelBytes = [.. modelBytes, 0x1A, 0x02, 0x18, 0x00];

        SentencePieceTokenizer Create(IReadOnlyDictionary<string, int>? added, bool segment = false)
        {
            try
            {
                return LlamaTokenizer.Create(new MemoryStream(segment ? segmentModelBytes : modelBytes),
                    addBeginOfSentence: false, addEndOfSentence: false, specialTokens: added);
            }
            catch (Exception e) when (e is not XrayVLException)
            {
                throw new XrayVLException($"{modelPath}: not a SentencePiece BPE model that LlamaTokenizer can load ({e.Message}).", e);
            }
        }

        SentencePieceTokenizer plain = Create(null);
        if (plain.TreatWhitespaceAsSuffix)
            throw new XrayVLException($"{modelPath}: treat_whitespace_as_suffix models are not supported.");
        int pieceCount = plain.Vocabulary.Count;
        var pieces = new string[pieceCount];
        foreach (var (piece, id) in plain.Vocabulary)
        {
            if ((uint)id >= (uint)pieceCount || pieces[id] != null)
                throw new XrayVLException($"{modelPath}: piece ids are not 0..{pieceCount - 1}.");
            pieces[id] = piece;
        }

        // Added tokens: those listed in tokenizer_config.json beyond the pieces, then required specials still missing.
        var tokens = new List<string>(pieces);
        var special = new HashSet<int> { plain.BeginningOfSentenceId, plain.EndOfSentenceId, plain.UnknownId };
        special.RemoveWhere(id => id < 0 || id >= pieceCount);
        foreach (var (id, content) in HfFiles.ReadAddedTokens(directory).OrderBy(a => a.Id))
        {
            if (id < pieceCount)
            {
                if (pieces[id] != content)
                    throw new XrayVLException($"{Path.Combine(directory, HfFiles.TokenizerConfigJson)}: added token '{content}' has id {id}, which {SentencePieceFile} gives to '{pieces[id]}'.");
            }
            else if (id != tokens.Count)
                throw new XrayVLException($"{Path.Combine(directory, HfFiles.TokenizerConfigJson)}: added token '{content}' has id {id}; the next free id is {tokens.Count}.");
            else tokens.Add(content);
            special.Add(id);
        }
        foreach (string required in SpecialTokens.All)
        {
            int at = tokens.IndexOf(required);
            if (at < 0) { at = tokens.Count; tokens.Add(required); }
            special.Add(at);
        }

        // Ids a model must embed: the pieces and tokenizer_config.json's own added tokens, not this project's specials
        // (appended above, or saved to tokenizer_config.json by an earlier round trip).
        int fileVocabSize = Math.Max(pieceCount, tokens.Select((token, id) => (token, id))
            .Where(t => t.id >= pieceCount && !SpecialTokens.All.Contains(t.token)).Select(t => t.id + 1).DefaultIfEmpty(0).Max());
        var userSpecials = special.Where(id => id >= pieceCount).ToDictionary(id => tokens[id], id => id, StringComparer.Ordinal);
        SentencePieceTokenizer withSpecials = Create(userSpecials);

        var bytes = new byte[tokens.Count][];
        var isSpecial = new bool[tokens.Count];
        var idsByToken = new Dictionary<string, int>(tokens.Count, StringComparer.Ordinal);
        for (int id = 0; id < tokens.Count; id++)
        {
            string token = tokens[id];
            idsByToken.TryAdd(token, id);
            isSpecial[id] = special.Contains(id);
            if (isSpecial[id]) bytes[id] = Encoding.UTF8.GetBytes(token);
            else if (plain.ByteFallback && BytePiece.Match(token) is { Success: true } m)
                bytes[id] = [Convert.ToByte(m.Groups[1].Value, 16)];
            else bytes[id] = Encoding.UTF8.GetBytes(plain.EscapeWhiteSpaces ? token.Replace('\u2581', ' ') : token);
        }

        int? eos = plain.EndOfSentenceId >= 0 && plain.EndOfSentenceId < pieceCount ? plain.EndOfSentenceId : null;
        var added = special.OrderBy(id => id).Select(id => (id, tokens[id])).ToList();
        void Save(string target)
        {
            Directory.CreateDirectory(target);
            IO.AtomicFile.WriteAllBytes(Path.Combine(target, SentencePieceFile), modelBytes);
            HfFiles.WriteTokenizerConfig(target, added, tokenizerClass: "LlamaTokenizer",
                eosToken: tokens[eos ?? idsByToken[SpecialTokens.EndOfText]], padToken: tokens[eos ?? idsByToken[SpecialTokens.EndOfText]],
                bosToken: plain.BeginningOfSentenceId >= 0 ? plain.BeginningOfSentenceToken : null,
                unkToken: plain.UnknownId >= 0 ? plain.UnknownToken : null);
        }
        var controls = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (int id in new[] { plain.BeginningOfSentenceId, plain.EndOfSentenceId, plain.UnknownId })
            if (id >= 0 && id < pieceCount) controls[pieces[id]] = id;
        return new XrayTokenizer("sentencepiece", withSpecials, Create(null, segment: true), bytes, isSpecial, idsByToken,
            stripFirstSpace: plain.AddDummyPrefix, eosId: eos, save: Save, fileVocabSize,
            new SentencePieceBpe(modelBytes, plain.AddDummyPrefix), controls);
    }
}
