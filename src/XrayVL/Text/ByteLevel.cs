using System.Text.RegularExpressions;

namespace XrayVL.Text;

/// <summary>
/// The byte-level conventions GPT-2 introduced and Qwen2 kept: every byte is shown as one printable character, so
/// any UTF-8 text is spelt with 256 base tokens and never needs an unknown token; and a regex cuts text into
/// pre-tokens that merges never cross.
/// </summary>
public static class ByteLevel
{
    /// <summary>
    /// Pre-tokenizer pattern, the one Qwen2 uses. Letter runs (<c>\p{L}+</c>) stay together with one optional non-letter
    /// before them (the space of " lungs", the comma of "，肺部"), and Han characters are letters, so a run of Chinese
    /// between punctuation marks is one pre-token. Chinese writes no spaces between words: splitting each character apart would forbid multi-character
    /// tokens (心脏, 胸腔积液) and cap compression at one token per character; keeping runs lets BPE find the words.
    /// Digits are single pre-tokens (<c>\p{N}</c>), so numbers such as box coordinates are spelt digit by digit with
    /// a small, dense set of tokens. Apostrophe contractions, punctuation runs and newlines are split as in GPT-4.
    /// </summary>
    public const string PreTokenizerPattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>
    /// The compiled pre-tokenizer. .NET matches UTF-16 code units, so a character outside the Basic Multilingual Plane
    /// (rare CJK extension B, emoji) is two surrogates that count as neither letter nor digit; such text still
    /// round-trips exactly, it is only cut differently from Hugging Face's Rust tokenizer.
    /// </summary>
    public static readonly Regex PreTokenizer = new(PreTokenizerPattern, RegexOptions.Compiled | RegexOptions.CultureInvariant);

    private static readonly char[] ByteToCharTable = BuildByteToChar();
    private static readonly Dictionary<char, byte> CharToByteTable = BuildCharToByte();

    /// <summary>
    /// Bytes in GPT-2's order: the printable ranges first ('!'..'~', '¡'..'¬', '®'..'ÿ'), then the other 68 bytes.
    /// The base tokens take ids 0..255 in this order, as in GPT-2's and Qwen2's vocab.json.
    /// </summary>
    public static readonly IReadOnlyList<byte> BaseByteOrder = BuildBaseOrder();

    /// <summary>The printable character that stands for <paramref name="b"/>: itself when printable, else U+0100 + n.</summary>
    public static char ByteToChar(byte b) => ByteToCharTable[b];

    /// <summary>Spells UTF-8 bytes in the byte-level alphabet, e.g. " the" → "Ġthe".</summary>
    public static string Encode(ReadOnlySpan<byte> bytes)
    {
        return string.Create(bytes.Length, bytes.ToArray(), static (span, src) =>
        {
            for (int i = 0; i < src.Length; i++) span[i] = ByteToCharTable[src[i]];
        });
    }

    /// <summary>Spells text's UTF-8 bytes in the byte-level alphabet.</summary>
    public static string EncodeText(string text) => Encode(System.Text.Encoding.UTF8.GetBytes(text));

    /// <summary>Turns a byte-level token string back into its bytes; false when a character is outside the alphabet.</summary>
    public static bool TryDecode(string token, List<byte> into)
    {
        foreach (char c in token)
        {
            if (!CharToByteTable.TryGetValue(c, out byte b)) return false;
            into.Add(b);
        }
        return true;
    }

    private static bool IsPrintable(int b) => (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);

    private static byte[] BuildBaseOrder()
    {
        var order = new List<byte>(256);
        for (int b = 0; b < 256; b++) if (IsPrintable(b)) order.Add((byte)b);
        for (int b = 0; b < 256; b++) if (!IsPrintable(b)) order.Add((byte)b);
        return [.. order];
    }

    private static char[] BuildByteToChar()
    {
        var table = new char[256];
        int shifted = 0;
        for (int b = 0; b < 256; b++) table[b] = IsPrintable(b) ? (char)b : (char)(256 + shifted++);
        return table;
    }

    private static Dictionary<char, byte> BuildCharToByte()
    {
        var map = new Dictionary<char, byte>(256);
        for (int b = 0; b < 256; b++) map[ByteToCharTable[b]] = (byte)b;
        return map;
    }
}
