using XrayVL.Tests.Support;
using System.Text;
using Microsoft.ML.Tokenizers;
using XrayVL.Text;

namespace XrayVL.Tests.Text;

public class SentencePieceTokenizerTests
{
    private static readonly string[] Words = ["hello", "world", "heart", "normal", "chest", "the", "user", "assistant"];
    private static readonly List<(string Piece, float Score, SentencePieceModelFile.PieceType Type)> Pieces = SentencePieceModelFile.LlamaLikePieces(Words);

    private static (XrayTokenizer Tokenizer, string Directory, byte[] ModelBytes) Create()
    {
        byte[] modelBytes = SentencePieceModelFile.Build(Pieces);
        string dir = TempDir.Create("xrayvl-spm");
        File.WriteAllBytes(Path.Combine(dir, XrayTokenizer.SentencePieceFile), modelBytes);
        return (XrayTokenizer.Load(dir), dir, modelBytes);
    }

    private static int PieceId(string piece) => Pieces.FindIndex(p => p.Piece == piece);

    [Fact]
    public void EncodesWordsIntoTheirPiecesAndDecodesBack()
    {
        var (tok, _, _) = Create();
        Assert.Equal("sentencepiece", tok.Kind);
        Assert.Equal([PieceId("▁hello"), PieceId("▁world")], tok.Encode("hello world"));
        Assert.Equal([PieceId("▁the"), PieceId("▁heart"), PieceId("▁normal")], tok.Encode("the heart normal"));
        Assert.Equal([PieceId("▁hell"), PieceId("x")], tok.Encode("hellx"));
        Assert.Equal(PieceId("▁heart"), tok.IdOf("▁heart"));
        foreach (string text in new[] { "hello world", "the  heart, normal.", "hellx", "胸部 chest é", " leading space" })
            Assert.Equal(text, tok.Decode(tok.Encode(text)));
    }

    [Fact]
    public void UnknownCharactersFallBackToBytePieces()
    {
        var (tok, _, _) = Create();
        int[] ids = tok.Encode("心");
        // "▁" (dummy prefix) then the three UTF-8 bytes of 心 (E5 BF 83).
        Assert.Equal([PieceId("▁"), PieceId("<0xE5>"), PieceId("<0xBF>"), PieceId("<0x83>")], ids);
        Assert.Equal("心", tok.Decode(ids));
    }

    [Fact]
    public void DecodeAgreesWithLlamaTokenizer()
    {
        var (tok, _, modelBytes) = Create();
        var llama = LlamaTokenizer.Create(new MemoryStream(modelBytes), addBeginOfSentence: false, addEndOfSentence: false);
        foreach (string text in new[] { "hello world", "the heart is normal.", "肺 world", "chest\nheart" })
        {
            int[] ids = tok.Encode(text);
            Assert.Equal(llama.EncodeToIds(text).ToArray(), ids);
            Assert.Equal(llama.Decode(ids), tok.Decode(ids));
        }
    }

    [Fact]
    public void SpecialTokensAreAddedAfterThePieces()
    {
        var (tok, _, _) = Create();
        Assert.Equal(Pieces.Count + SpecialTokens.All.Count, tok.VocabSize);
        Assert.Equal(2, tok.EosId); // the model's own </s>
        Assert.Equal(tok.EosId, tok.PadId);
        foreach (int id in new[] { tok.ImageId, tok.ImStartId, tok.ImEndId })
            Assert.InRange(id, Pieces.Count, tok.VocabSize - 1);

        int[] ids = tok.Encode("<|im_start|>user\n<image>\nhello<|im_end|>");
        Assert.Equal(tok.ImStartId, ids[0]);
        Assert.Equal(tok.ImEndId, ids[^1]);
        Assert.Single(ids, tok.ImageId);
        Assert.Equal("<|im_start|>user\n<image>\nhello<|im_end|>", tok.Decode(ids));
        Assert.Equal("user\n\nhello", tok.Decode(ids, skipSpecial: true));
    }

    [Fact]
    public void SaveKeepsTheModelAndTheAddedTokenIds()
    {
        var (tok, _, modelBytes) = Create();
        string copy = TempDir.Create("xrayvl-spm-copy");
        tok.Save(copy);
        Assert.Equal(modelBytes, File.ReadAllBytes(Path.Combine(copy, XrayTokenizer.SentencePieceFile)));
        var reloaded = XrayTokenizer.Load(copy);
        Assert.Equal(tok.VocabSize, reloaded.VocabSize);
        Assert.Equal((tok.ImageId, tok.ImStartId, tok.ImEndId, tok.EosId), (reloaded.ImageId, reloaded.ImStartId, reloaded.ImEndId, reloaded.EosId));
        string text = "<image>\nthe heart<|im_end|>";
        Assert.Equal(tok.Encode(text), reloaded.Encode(text));
        Assert.Contains("LlamaTokenizer", File.ReadAllText(Path.Combine(copy, "tokenizer_config.json")));
    }

    [Fact]
    public void StreamingDecoderReproducesDecodeWithBytePieces()
    {
        var (tok, _, _) = Create();
        int[] ids = tok.Encode("hello 心脏 world 肺");
        var stream = tok.CreateStreamingDecoder();
        var text = new StringBuilder();
        var chunks = ids.Select(stream.Push).ToList();
        foreach (string chunk in chunks) text.Append(chunk);
        text.Append(stream.Flush());
        Assert.Equal(tok.Decode(ids), text.ToString());
        Assert.Equal("hello 心脏 world 肺", text.ToString());
        Assert.Contains("", chunks); // bytes of 心 were held back until the character was whole
        Assert.DoesNotContain(chunks, c => c.Contains('\uFFFD'));
    }

    [Fact]
    public void ChatTemplateRendersWithSentencePiece()
    {
        var (tok, _, _) = Create();
        var conversation = new Conversation("the chest").User("hello", imageCount: 1).Assistant("the heart normal");
        var rendered = ChatTemplate.Render(conversation, tok, addGenerationPrompt: false);
        Assert.Equal(ChatTemplate.RenderText(conversation, false), tok.Decode(rendered.Ids));
        int[] learned = [.. rendered.Ids.Where((_, i) => rendered.Labels[i] != Constants.IgnoreIndex)];
        Assert.Equal("the heart normal<|im_end|>", tok.Decode(learned));
    }

    [Fact]
    public void CorruptModelFileIsAClearError()
    {
        string dir = TempDir.Create("xrayvl-spm-bad");
        File.WriteAllBytes(Path.Combine(dir, XrayTokenizer.SentencePieceFile), [0x0A, 0xFF, 0x01, 0x02]);
        var error = Assert.Throws<XrayVLException>(() => XrayTokenizer.Load(dir));
        Assert.Contains(XrayTokenizer.SentencePieceFile, error.Message);
    }
}
