using System.Text;

namespace XrayVL.Inference;

/// <summary>
/// Where stop strings occur in a growing answer, for the front ends that end answers at text rather than at tokens
/// (a seed prompt format's "###", an OpenAI caller's stop sequences): text that could still grow into a stop string is
/// held back until the next piece shows whether it does.
/// </summary>
internal static class StopStrings
{
    /// <summary>The index of the earliest stop string in <paramref name="text"/> at or after <paramref name="from"/>, or null.</summary>
    public static int? First(StringBuilder text, IReadOnlyList<string> stops, int from = 0)
    {
        string s = text.ToString();
        int? first = null;
        foreach (string stop in stops)
        {
            int at = s.IndexOf(stop, Math.Min(from, s.Length), StringComparison.Ordinal);
            if (at >= 0 && (first is null || at < first)) first = at;
        }
        return first;
    }

    /// <summary>Length of the longest end of <paramref name="text"/> that is the start of a stop string.</summary>
    public static int PartialAtEnd(StringBuilder text, IReadOnlyList<string> stops)
    {
        int longest = 0;
        foreach (string stop in stops)
            for (int k = Math.Min(stop.Length - 1, text.Length); k > longest; k--)
                if (text.ToString(text.Length - k, k) == stop[..k]) { longest = k; break; }
        return longest;
    }

    /// <summary>
    /// How far <paramref name="text"/> may be shown, <paramref name="emitted"/> characters having been shown already: up
    /// to a stop string when one appeared (Hit), else all but the longest tail that could still grow into one (at the end
    /// of the answer nothing is held back).
    /// </summary>
    public static (int End, bool Hit) Emittable(StringBuilder text, int emitted, IReadOnlyList<string> stops, bool atEnd)
    {
        if (stops.Count == 0) return (text.Length, false);
        // A stop string found now must end in the new text: start the search where one could still begin.
        int searchFrom = Math.Max(0, emitted - stops.Max(s => s.Length) + 1);
        if (First(text, stops, searchFrom) is int at) return (Math.Max(at, emitted), true);
        return (atEnd ? text.Length : Math.Max(emitted, text.Length - PartialAtEnd(text, stops)), false);
    }
}
