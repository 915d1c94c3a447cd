using System.Text;
using Google.Protobuf;

namespace XrayVL.Text;

/// <summary>
/// SentencePiece's BPE encoding (its `bpe_model.cc`), for <see cref="XrayTokenizer.EncodeLegacy"/>. Microsoft.ML.Tokenizers'
/// LlamaTokenizer, used everywhere else, breaks ties between equal-score merges differently from SentencePiece: LLaMA's
/// model splits "###" as "##" + "#" (ids 2277, 29937, as XrayGPT's prompts record), the library as "#" + "##". Here ties go
/// to the leftmost pair, as in SentencePiece. Reads the pieces, scores and types straight from tokenizer.model (protobuf
/// ModelProto: field 1 = repeated SentencePiece {1: piece, 2: score, 3: type}).
/// </summary>
internal sealed class SentencePieceBpe
{
    private const int Normal = 1, UserDefined = 4;   // SentencePiece.Type values whose pieces merges may form

    private readonly Dictionary<string, (int Id, float Score, int Type)> pieces = new(StringComparer.Ordinal);
    private readonly int[] byteIds = new int[256];
    private readonly int unknownId;

    public SentencePieceBpe(byte[] model, bool addDummyPrefix)
    {
        AddDummyPrefix = addDummyPrefix;
        Array.Fill(byteIds, -1);
        unknownId = 0;
        var input = new CodedInputStream(model);
        int id = 0;
        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            if (WireFormat.GetTagFieldNumber(tag) != 1) { input.SkipLastField(); continue; }
            var (piece, score, type) = ReadPiece(input.ReadBytes());
            pieces.TryAdd(piece, (id, score, type));
            if (type == 2) unknownId = id;                                                   // UNKNOWN
            if (type == 6 && piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal))
                byteIds[Convert.ToInt32(piece[3..5], 16)] = id;                              // BYTE: <0xAB>
            id++;
        }
    }

    public bool AddDummyPrefix { get; }

    private static (string Piece, float Score, int Type) ReadPiece(ByteString bytes)
    {
        var input = bytes.CreateCodedInput();
        string piece = "";
        float score = 0;
        int type = Normal;
        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            switch (WireFormat.GetTagFieldNumber(tag))
            {
                case 1: piece = input.ReadString(); break;
                case 2: score = input.ReadFloat(); break;
                case 3: type = input.ReadEnum(); break;
                default: input.SkipLastField(); break;
            }
        }
        return (piece, score, type);
    }

    /// <summary>Ids of <paramref name="text"/> (no control tokens in it): spaces as "▁", the dummy prefix, BPE, byte fallback.</summary>
    public List<int> Encode(string text)
    {
        var ids = new List<int>();
        if (text.Length == 0) return ids;
        string normalized = (AddDummyPrefix ? "\u2581" : "") + text.Replace(' ', '\u2581');
        // Symbols: one per Unicode character; linked list over a list of strings, null once merged away.
        var symbols = new List<string?>();
        for (int i = 0; i < normalized.Length; i += char.IsSurrogatePair(normalized, i) ? 2 : 1)
            symbols.Add(normalized.Substring(i, char.IsSurrogatePair(normalized, i) ? 2 : 1));
        int n = symbols.Count;
        int[] prev = [.. Enumerable.Range(-1, n)], next = [.. Enumerable.Range(1, n).Select(i => i < n ? i : -1)];
        // Highest score first; among equal scores the leftmost pair (SentencePiece's SymbolPairComparator).
        var agenda = new PriorityQueue<(int Left, int Right, string Merged), (float Score, int Left)>(
            Comparer<(float Score, int Left)>.Create((a, b) => a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Left.CompareTo(b.Left)));
        void Consider(int left, int right)
        {
            if (left < 0 || right < 0) return;
            string merged = symbols[left] + symbols[right];
            if (pieces.TryGetValue(merged, out var p) && p.Type is Normal or UserDefined) agenda.Enqueue((left, right, merged), (p.Score, left));
        }
        for (int i = 0; i + 1 < n; i++) Consider(i, i + 1);
        while (agenda.TryDequeue(out var pair, out _))
        {
            // Stale: one side has been merged since this pair was queued.
            if (symbols[pair.Left] is null || symbols[pair.Right] is null || next[pair.Left] != pair.Right
                || symbols[pair.Left]!.Length + symbols[pair.Right]!.Length != pair.Merged.Length) continue;
            symbols[pair.Left] = pair.Merged;
            symbols[pair.Right] = null;
            next[pair.Left] = next[pair.Right];
            if (next[pair.Right] >= 0) prev[next[pair.Right]] = pair.Left;
            Consider(prev[pair.Left], pair.Left);
            Consider(pair.Left, next[pair.Left]);
        }
        for (int i = 0; i >= 0 && i < n; i = next[i])
        {
            string symbol = symbols[i]!;
            if (pieces.TryGetValue(symbol, out var p) && p.Type != 6) { ids.Add(p.Id); continue; }
            foreach (byte b in Encoding.UTF8.GetBytes(symbol)) ids.Add(byteIds[b] >= 0 ? byteIds[b] : unknownId);
        }
        return ids;
    }
}
