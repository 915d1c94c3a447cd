namespace XrayVL.Evaluation;

/// <summary>N-gram counting shared by BLEU and CIDEr: an n-gram is its tokens joined by U+0001 (never inside a token).</summary>
internal static class NGrams
{
    private const char Separator = '\u0001';

    /// <summary>Counts of every n-gram of order 1..<paramref name="maxN"/>; element n-1 holds the n-grams of order n.</summary>
    public static Dictionary<string, int>[] Count(IReadOnlyList<string> tokens, int maxN)
    {
        var counts = new Dictionary<string, int>[maxN];
        for (int n = 1; n <= maxN; n++)
        {
            var d = counts[n - 1] = new Dictionary<string, int>(StringComparer.Ordinal);
            for (int i = 0; i + n <= tokens.Count; i++)
            {
                string key = n == 1 ? tokens[i] : Key(tokens, i, n);
                d[key] = d.GetValueOrDefault(key) + 1;
            }
        }
        return counts;
    }

    private static string Key(IReadOnlyList<string> tokens, int start, int n)
    {
        int length = n - 1;
        for (int k = 0; k < n; k++) length += tokens[start + k].Length;
        return string.Create(length, (tokens, start, n), static (span, state) =>
        {
            int at = 0;
            for (int k = 0; k < state.n; k++)
            {
                if (k > 0) span[at++] = Separator;
                string token = state.tokens[state.start + k];
                token.CopyTo(span[at..]);
                at += token.Length;
            }
        });
    }
}
