using System.Text.RegularExpressions;

namespace XrayVL.Data;

/// <summary>A box on the 0–100 grid of an image (x right, y down), corners ordered: X1 &lt; X2, Y1 &lt; Y2.</summary>
public sealed record GridBox(int X1, int Y1, int X2, int Y2);

/// <summary>
/// Reads the boxes an answer writes in MiniGPT-Med's form <c>{&lt;x1&gt;&lt;y1&gt;&lt;x2&gt;&lt;y2&gt;}</c>
/// (the inverse of <see cref="AnswerFormats.Box"/>), so front ends can draw what a grounding answer says.
/// </summary>
public static partial class GridBoxes
{
    [GeneratedRegex(@"\{\s*<\s*(\d{1,3})\s*>\s*<\s*(\d{1,3})\s*>\s*<\s*(\d{1,3})\s*>\s*<\s*(\d{1,3})\s*>\s*\}")]
    private static partial Regex BoxPattern();

    /// <summary>
    /// Every well-formed box in the text, in order. Corners given the wrong way round are ordered; boxes with a
    /// coordinate above 100 or no area are not boxes and are skipped.
    /// </summary>
    public static IReadOnlyList<GridBox> Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var boxes = new List<GridBox>();
        foreach (Match m in BoxPattern().Matches(text))
        {
            int[] v = [.. Enumerable.Range(1, 4).Select(i => int.Parse(m.Groups[i].ValueSpan))];
            if (v.Any(x => x > 100)) continue;
            var box = new GridBox(Math.Min(v[0], v[2]), Math.Min(v[1], v[3]), Math.Max(v[0], v[2]), Math.Max(v[1], v[3]));
            if (box.X1 == box.X2 || box.Y1 == box.Y2) continue;
            boxes.Add(box);
        }
        return boxes;
    }
}
