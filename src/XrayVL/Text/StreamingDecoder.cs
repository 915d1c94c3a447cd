using System.Text;

namespace XrayVL.Text;

/// <summary>Generated ids in, text out as soon as it is complete; what every decoder of a streamed answer does.</summary>
public interface IStreamingDecoder
{
    /// <summary>Adds one id; returns the text it completes (often empty, never half a character).</summary>
    string Push(int id);

    /// <summary>Returns whatever is held back.</summary>
    string Flush();
}

/// <summary>
/// <see cref="XrayTokenizer"/>'s streaming decoder: generated ids, fed one at a time, become text as soon as it is complete. A Chinese character is three UTF-8
/// bytes and byte-level BPE may split it across tokens, so bytes of an unfinished character are held back until the
/// rest arrives. The concatenation of everything returned by <see cref="Push"/> and <see cref="Flush"/> equals
/// <see cref="XrayTokenizer.Decode"/> of the same ids.
/// </summary>
public sealed class StreamingDecoder : IStreamingDecoder
{
    private readonly XrayTokenizer tokenizer;
    private readonly bool skipSpecial;
    private readonly List<byte> pending = [];
    private bool atStart = true;

    internal StreamingDecoder(XrayTokenizer tokenizer, bool skipSpecial)
    {
        this.tokenizer = tokenizer;
        this.skipSpecial = skipSpecial;
    }

    /// <summary>Adds one id; returns the text it completes (often empty, never half a character).</summary>
    public string Push(int id)
    {
        tokenizer.AppendTokenBytes(id, skipSpecial, ref atStart, pending);
        int complete = CompletePrefixLength(pending);
        if (complete == 0) return "";
        string text = Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(pending)[..complete]);
        pending.RemoveRange(0, complete);
        return text;
    }

    /// <summary>Returns whatever is held back (an unfinished character becomes U+FFFD, as in a full decode) and resets nothing else.</summary>
    public string Flush()
    {
        string text = Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(pending));
        pending.Clear();
        return text;
    }

    /// <summary>
    /// Length of the prefix that can be decoded now. Only a tail that could still become a valid character is held:
    /// a lead byte followed by fewer continuation bytes (10xxxxxx) than it announces. Cutting just before a lead
    /// byte never changes how the bytes before it decode, so chunked and whole decodes agree.
    /// </summary>
    internal static int CompletePrefixLength(List<byte> bytes)
    {
        int n = bytes.Count;
        for (int back = 1; back <= Math.Min(3, n); back++)
        {
            byte b = bytes[n - back];
            if ((b & 0xC0) == 0x80) continue; // continuation byte: keep looking for its lead
            int needed = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
            return needed > back && b < 0xF8 ? n - back : n;
        }
        return n;
    }
}
