using Google.Protobuf;

namespace XrayVL.Tests.Text;

/// <summary>
/// Writes a minimal SentencePiece ModelProto (sentencepiece_model.proto) by hand with the protobuf wire format:
/// pieces (piece, score, type), trainer_spec (model_type = BPE, byte_fallback, unk/bos/eos/pad ids) and
/// normalizer_spec (identity rule, dummy prefix, whitespace escaping). Enough for LlamaTokenizer to load.
/// </summary>
public static class SentencePieceModelFile
{
    public enum PieceType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 }

    private const int ModelTypeBpe = 2;

    /// <summary>
    /// A LLaMA-like vocabulary: &lt;unk&gt; &lt;s&gt; &lt;/s&gt;, 256 byte pieces, then for every word "▁" + its prefixes
    /// (so BPE can build the word one letter at a time), then single letters. Scores fall with position, as SentencePiece's BPE trainer writes them.
    /// </summary>
    public static List<(string Piece, float Score, PieceType Type)> LlamaLikePieces(IEnumerable<string> words)
    {
        var pieces = new List<(string, float, PieceType)>
        {
            ("<unk>", 0, PieceType.Unknown), ("<s>", 0, PieceType.Control), ("</s>", 0, PieceType.Control),
        };
        for (int b = 0; b < 256; b++) pieces.Add(($"<0x{b:X2}>", 0, PieceType.Byte));
        var seen = new HashSet<string>();
        float score = -1;
        foreach (string word in words)
            for (int length = 2; length <= word.Length + 1; length++)
            {
                string prefix = ("\u2581" + word)[..length];
                if (seen.Add(prefix)) pieces.Add((prefix, score--, PieceType.Normal));
            }
        foreach (char c in "\u2581abcdefghijklmnopqrstuvwxyz.,")
            if (seen.Add(c.ToString())) pieces.Add((c.ToString(), score--, PieceType.Normal));
        return pieces;
    }

    public static byte[] Build(IEnumerable<(string Piece, float Score, PieceType Type)> pieces, bool byteFallback = true, bool addDummyPrefix = true)
    {
        var model = new MemoryStream();
        var output = new CodedOutputStream(model);
        foreach (var (piece, score, type) in pieces)
        {
            WriteMessage(output, 1, o =>
            {
                o.WriteTag(1, WireFormat.WireType.LengthDelimited); o.WriteString(piece);
                o.WriteTag(2, WireFormat.WireType.Fixed32); o.WriteFloat(score);
                o.WriteTag(3, WireFormat.WireType.Varint); o.WriteEnum((int)type);
            });
        }
        WriteMessage(output, 2, o => // trainer_spec
        {
            o.WriteTag(3, WireFormat.WireType.Varint); o.WriteEnum(ModelTypeBpe);
            o.WriteTag(35, WireFormat.WireType.Varint); o.WriteBool(byteFallback);
            o.WriteTag(40, WireFormat.WireType.Varint); o.WriteInt32(0);  // unk_id
            o.WriteTag(41, WireFormat.WireType.Varint); o.WriteInt32(1);  // bos_id
            o.WriteTag(42, WireFormat.WireType.Varint); o.WriteInt32(2);  // eos_id
            o.WriteTag(43, WireFormat.WireType.Varint); o.WriteInt32(-1); // pad_id
        });
        WriteMessage(output, 3, o => // normalizer_spec
        {
            o.WriteTag(1, WireFormat.WireType.LengthDelimited); o.WriteString("identity");
            o.WriteTag(3, WireFormat.WireType.Varint); o.WriteBool(addDummyPrefix);
            o.WriteTag(4, WireFormat.WireType.Varint); o.WriteBool(false); // remove_extra_whitespaces
            o.WriteTag(5, WireFormat.WireType.Varint); o.WriteBool(true);  // escape_whitespaces
        });
        output.Flush();
        return model.ToArray();
    }

    private static void WriteMessage(CodedOutputStream output, int field, Action<CodedOutputStream> write)
    {
        var inner = new MemoryStream();
        var innerOutput = new CodedOutputStream(inner);
        write(innerOutput);
        innerOutput.Flush();
        output.WriteTag(field, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(ByteString.CopyFrom(inner.ToArray()));
    }
}
