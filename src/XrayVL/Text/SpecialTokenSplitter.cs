namespace XrayVL.Text;

/// <summary>Cuts text at special tokens so that each one becomes a single id and ordinary text around it is encoded alone.</summary>
internal static class SpecialTokenSplitter
{
    /// <summary>
    /// Yields the pieces of <paramref name="text"/> in order: ordinary segments (never empty) and special tokens.
    /// Scans left to right; where two specials start at the same place the longer wins.
    /// </summary>
    public static IEnumerable<(string Segment, bool IsSpecial)> Split(string text, IReadOnlyList<string> specials)
    {
        int start = 0;
        while (start < text.Length)
        {
            int foundAt = -1;
            string? found = null;
            foreach (string special in specials)
            {
                int at = text.IndexOf(special, start, StringComparison.Ordinal);
                if (at < 0) continue;
                if (foundAt < 0 || at < foundAt || (at == foundAt && special.Length > found!.Length))
                {
                    foundAt = at;
                    found = special;
                }
            }
            if (found == null)
            {
                yield return (text[start..], false);
                yield break;
            }
            if (foundAt > start) yield return (text[start..foundAt], false);
            yield return (found, true);
            start = foundAt + found.Length;
        }
    }
}
