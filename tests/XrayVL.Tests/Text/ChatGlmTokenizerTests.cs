using System.Text.Json;
using XrayVL.Tests.Modeling;
using XrayVL.Tests.Support;
using XrayVL.Text;
using static XrayVL.Tests.Text.SentencePieceModelFile;

namespace XrayVL.Tests.Text;

/// <summary>
/// The ChatGLM-6B tokenizer rules on a SentencePiece BPE model built here with ChatGLM's layout: &lt;unk&gt; &lt;s&gt;
/// &lt;/s&gt; &lt;pad&gt; &lt;n&gt; ▁ first (the real ids 0..5), the user-defined &lt;|tab|&gt; and &lt;|blank_2..80|&gt;
/// pieces, byte fallback, words, and the GLM specials [MASK] [gMASK] [sMASK] &lt;unused_0&gt; &lt;sop&gt; &lt;eop&gt;
/// at the end. Expected ids come from Google's sentencepiece 0.1.97 (Debian python3-sentencepiece) on the same model
/// bytes, with tokenization_chatglm.py's rules applied around it.
/// </summary>
public sealed class ChatGlmTokenizerTests
{
    public static byte[] BuildModel()
    {
        var pieces = new List<(string, float, PieceType)>
        {
            ("<unk>", 0, PieceType.Unknown), ("<s>", 0, PieceType.Control), ("</s>", 0, PieceType.Control),
            ("<pad>", 0, PieceType.Control), ("<n>", 0, PieceType.UserDefined), ("\u2581", -1, PieceType.Normal),
            ("<|tab|>", 0, PieceType.UserDefined),
        };
        for (int n = 2; n <= 80; n++) pieces.Add(($"<|blank_{n}|>", 0, PieceType.UserDefined));
        for (int b = 0; b < 256; b++) pieces.Add(($"<0x{b:X2}>", 0, PieceType.Byte));
        var seen = new HashSet<string>(pieces.Select(p => p.Item1));
        float score = -2;
        // Every prefix of each word, with and without the "▁" word start, so BPE can build them one symbol at a time.
        foreach (string word in new[] { "问：", "答：", "<img>", "</img>", "hello", "world", "胸部", "X光片", "诊断结果" })
            foreach (string spelled in new[] { "\u2581" + word, word })
                for (int length = 2; length <= spelled.Length; length++)
                    if (seen.Add(spelled[..length])) pieces.Add((spelled[..length], score--, PieceType.Normal));
        foreach (char c in "问答：<>/imghelowrdX光片胸部诊断结果详细描述这张的 abc")
            if (c != ' ' && seen.Add(c.ToString())) pieces.Add((c.ToString(), score--, PieceType.Normal));
        foreach (string special in new[] { "[MASK]", "[gMASK]", "[sMASK]", "<unused_0>", "<sop>", "<eop>", "<ENC>", "<dBLOCK>" })
            pieces.Add((special, 0, PieceType.Control));
        return Build(pieces, byteFallback: true);
    }

    private static ChatGlmTokenizer Load(TempDir dir, int numImageTokens = 0)
    {
        string path = Path.Combine(dir.Path, ChatGlmTokenizer.FileName);
        File.WriteAllBytes(path, BuildModel());
        // Set XRAYVL_DUMP_CHATGLM_MODEL=FILE to write the model out for the sentencepiece check of the expected ids.
        if (Environment.GetEnvironmentVariable("XRAYVL_DUMP_CHATGLM_MODEL") is { Length: > 0 } dump) File.WriteAllBytes(dump, BuildModel());
        return ChatGlmTokenizer.Load(dir.Path, numImageTokens);
    }

    /// <summary>(text, ids with num_image_tokens 0) from sentencepiece 0.1.97 with the ChatGLM rules (see the class comment).</summary>
    public static TheoryData<string, long[]> Cases => new()
    {
        { "<img>", [352] },
        { "</img>问：详细描述这张胸部X光片的诊断结果\n答：", [361, 344, 425, 426, 427, 428, 429, 430, 387, 392, 431, 399, 4, 347] },
        { "hello  world\tX    光\n\n", [371, 7, 384, 6, 416, 9, 417, 4, 4] },      // <|blank_2|> = 7, <|tab|> = 6, <|blank_4|> = 9, <n> = 4
        { "\nhello", [5, 4, 375] },                                                  // the dummy "▁" alone before a leading <n>
        { " hello", [5, 371] },
        { "a" + new string(' ', 85) + "b", [5, 432, 85, 10, 433] },                   // 85 spaces = <|blank_80|> + <|blank_5|>
        { "肺", [5, 318, 216, 272] },                                                 // byte fallback: E8 82 BA
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void EncodesAsSentencePieceWithChatGlmRulesAndDecodesBack(string text, long[] expected)
    {
        using var dir = new TempDir();
        var tokenizer = Load(dir);
        Assert.Equal(expected, tokenizer.Encode(text));
        Assert.Equal(text, tokenizer.Decode(expected));
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void NumImageTokensShiftsEveryIdAndDecodingDropsImageIds(string text, long[] expected)
    {
        using var dir = new TempDir();
        var tokenizer = Load(dir, numImageTokens: 20000);
        long[] shifted = [.. expected.Select(id => id + 20000)];
        Assert.Equal(shifted, tokenizer.Encode(text));
        Assert.Equal(text, tokenizer.Decode([17, .. shifted, tokenizer.EopId]));     // an image id (< 20000) and <eop> are dropped
    }

    [Fact]
    public void SpecialIdsComeFromThePiecesPlusTheOffset()
    {
        using var dir = new TempDir();
        var plain = Load(dir);
        Assert.Equal((435L, 436L, 439L, 440L, 3L), (plain.MaskId, plain.GmaskId, plain.SopId, plain.EopId, plain.PadId));
        Assert.Equal(443, plain.VocabSize);
        using var dir2 = new TempDir();
        var shifted = Load(dir2, numImageTokens: 20000);
        Assert.Equal((20436L, 20439L, 20440L, 20443), (shifted.GmaskId, shifted.SopId, shifted.EopId, shifted.VocabSize));
    }

    [Theory]
    [InlineData("a\nb", "a<n>b")]
    [InlineData("x\ty", "x<|tab|>y")]
    [InlineData("a b", "a b")]
    [InlineData("a   b", "a<|blank_3|>b")]
    public void PreprocessFollowsTokenizationChatGlm(string text, string expected)
    {
        Assert.Equal(expected, ChatGlmTokenizer.Preprocess(text));
        Assert.Equal(text, ChatGlmTokenizer.Postprocess(expected));
    }

    [Fact]
    public void RunsLongerThan80SpacesSplitLongestFirst()
    {
        Assert.Equal("a<|blank_80|> b", ChatGlmTokenizer.Preprocess("a" + new string(' ', 81) + "b"));
        Assert.Equal("<|blank_80|><|blank_80|><|blank_2|>", ChatGlmTokenizer.Preprocess(new string(' ', 162)));
    }

    /// <summary>The fixture's stand-in tokenizer (its README): "▁" (5), then 1000 + code point per character, "\n" = 4.</summary>
    private static long[] StandIn(string text) => [5, .. text.Select(c => c == '\n' ? 4L : 1000 + c)];

    [Theory]
    [InlineData("chat_1turn")]
    [InlineData("chat_2turn")]
    [InlineData("textonly")]
    public void XrayGlmPromptAndIdsMatchTheFixture(string caseName)
    {
        var info = JsonDocument.Parse(File.ReadAllText(GlmFixture.Seed("refs", caseName, "info.json"))).RootElement;
        string prompt = info.GetProperty("prompt").GetString()!;
        if (info.TryGetProperty("query", out var query))
        {
            var history = info.GetProperty("history").EnumerateArray().Select(h => (h[0].GetString()!, h[1].GetString()!));
            Assert.Equal(prompt, XrayGlmPrompt.Render(history, query.GetString()!));
        }
        var (ids, preImage) = ChatGlmTokenizer.XrayGlmPromptIds(prompt, 32, StandIn, padId: 3, gmaskId: 130001, sopId: 130004);
        Assert.Equal(GlmFixture.Reference(caseName, "input_ids").data<long>().ToArray(), ids);
        if (info.TryGetProperty("pre_image", out var expectedPreImage)) Assert.Equal(expectedPreImage.GetInt32(), preImage);
    }

    [Fact]
    public void MissingOrForeignModelFilesAreOneLineErrors()
    {
        using var dir = new TempDir();
        Assert.Contains("ice_text.model", Assert.Throws<XrayVLException>(() => ChatGlmTokenizer.Load(dir.Path)).Message);
        File.WriteAllBytes(Path.Combine(dir.Path, ChatGlmTokenizer.FileName), Build([("<unk>", 0, PieceType.Unknown), ("a", -1, PieceType.Normal)]));
        Assert.Contains("[MASK]", Assert.Throws<XrayVLException>(() => ChatGlmTokenizer.Load(dir.Path)).Message);
    }
}
