using SkiaSharp;

namespace XrayVL.Plotting;

/// <summary>A named series of (x, y) points for a line chart.</summary>
public sealed record Series(string Name, IReadOnlyList<double> X, IReadOnlyList<double> Y);

/// <summary>
/// Small PNG charts for training logs and evaluation reports (loss curves, per-label bars, confusion matrices,
/// histograms), drawn with SkiaSharp. Each method writes one PNG atomically (temp file + rename).
/// </summary>
public static class Charts
{
    private const int Width = 900, Height = 520;
    private const float Left = 80, Right = 30, Top = 50, Bottom = 70;
    private static readonly SKColor[] Palette =
        [new(0x1f, 0x77, 0xb4), new(0xff, 0x7f, 0x0e), new(0x2c, 0xa0, 0x2c), new(0xd6, 0x27, 0x28), new(0x94, 0x67, 0xbd), new(0x8c, 0x56, 0x4b)];

    /// <summary>Line chart of one or more series sharing the axes (e.g. train and validation loss against step). A point
    /// that is not a number (or, with <paramref name="logY"/>, not positive) breaks its series' line there.</summary>
    public static void Line(string path, string title, string xLabel, string yLabel, IReadOnlyList<Series> series, bool logY = false)
    {
        var points = series.SelectMany(s => s.X.Zip(s.Y)).Where(p => double.IsFinite(p.First) && double.IsFinite(p.Second) && (!logY || p.Second > 0)).ToList();
        Draw(path, title, xLabel, yLabel, (canvas, plot) =>
        {
            if (points.Count == 0) return;
            double Y(double y) => logY ? Math.Log10(y) : y;
            var (x0, x1) = Range(points.Select(p => p.First));
            var (y0, y1) = Range(points.Select(p => Y(p.Second)));
            Axes(canvas, plot, x0, x1, y0, y1, logY);
            for (int s = 0; s < series.Count; s++)
            {
                using var paint = new SKPaint { Color = Palette[s % Palette.Length], StrokeWidth = 2, IsAntialias = true, Style = SKPaintStyle.Stroke };
                using var pathLine = new SKPath();
                bool started = false;
                for (int i = 0; i < Math.Min(series[s].X.Count, series[s].Y.Count); i++)
                {
                    double x = series[s].X[i], y = series[s].Y[i];
                    if (!double.IsFinite(x) || !double.IsFinite(y) || (logY && y <= 0))
                    {
                        started = false;
                        continue;
                    }
                    var p = Map(plot, x, Y(y), x0, x1, y0, y1);
                    if (started) pathLine.LineTo(p); else pathLine.MoveTo(p);
                    started = true;
                }
                canvas.DrawPath(pathLine, paint);
                // A point with no drawable neighbour (a single measurement, or one alone between breaks) is a dot.
                using var dot = new SKPaint { Color = paint.Color, IsAntialias = true };
                int n = Math.Min(series[s].X.Count, series[s].Y.Count);
                bool Drawable(int i) => i >= 0 && i < n && double.IsFinite(series[s].X[i]) && double.IsFinite(series[s].Y[i]) && (!logY || series[s].Y[i] > 0);
                for (int i = 0; i < n; i++)
                    if (Drawable(i) && !Drawable(i - 1) && !Drawable(i + 1))
                        canvas.DrawCircle(Map(plot, series[s].X[i], Y(series[s].Y[i]), x0, x1, y0, y1), 4, dot);
            }
            Legend(canvas, plot, series.Select(s => s.Name).ToList());
        });
    }

    /// <summary>Vertical bars, one group per category, one bar per named value set (e.g. model vs baseline F1 per label).</summary>
    public static void Bars(string path, string title, string yLabel, IReadOnlyList<string> categories,
        IReadOnlyList<(string Name, IReadOnlyList<double> Values)> groups, double? yMax = null)
    {
        Draw(path, title, "", yLabel, (canvas, plot) =>
        {
            double top = yMax ?? Math.Max(1e-9, groups.SelectMany(g => g.Values).Where(double.IsFinite).DefaultIfEmpty(1).Max() * 1.1);
            Axes(canvas, plot, 0, categories.Count, 0, top, false, xTicks: false);
            float slot = plot.Width / Math.Max(1, categories.Count);
            float bar = slot * 0.8f / Math.Max(1, groups.Count);
            using var label = Font(11);
            using var text = new SKPaint { Color = SKColors.Black, IsAntialias = true };
            for (int c = 0; c < categories.Count; c++)
            {
                for (int g = 0; g < groups.Count; g++)
                {
                    double v = c < groups[g].Values.Count ? groups[g].Values[c] : double.NaN;
                    if (!double.IsFinite(v)) continue;
                    float x = plot.Left + c * slot + slot * 0.1f + g * bar;
                    float y = plot.Bottom - (float)(Math.Clamp(v / top, 0, 1) * plot.Height);
                    using var paint = new SKPaint { Color = Palette[g % Palette.Length], IsAntialias = true };
                    canvas.DrawRect(new SKRect(x, y, x + bar - 1, plot.Bottom), paint);
                }
                canvas.Save();
                canvas.Translate(plot.Left + c * slot + slot / 2, plot.Bottom + 8);
                canvas.RotateDegrees(30);
                canvas.DrawText(Short(categories[c], 22), 0, 10, SKTextAlign.Left, label, text);
                canvas.Restore();
            }
            if (groups.Count > 1) Legend(canvas, plot, groups.Select(g => g.Name).ToList());
        }, bottom: 110);
    }

    /// <summary>A matrix as coloured cells with counts (e.g. a confusion matrix: rows = reference, columns = prediction).</summary>
    public static void Heatmap(string path, string title, IReadOnlyList<string> rowLabels, IReadOnlyList<string> columnLabels,
        double[,] values, string rowAxis = "reference", string columnAxis = "prediction")
    {
        Draw(path, title, columnAxis, rowAxis, (canvas, plot) =>
        {
            int rows = rowLabels.Count, cols = columnLabels.Count;
            double max = 0;
            foreach (double v in values) if (double.IsFinite(v)) max = Math.Max(max, v);
            float cw = plot.Width / Math.Max(1, cols), ch = plot.Height / Math.Max(1, rows);
            using var font = Font(12);
            using var text = new SKPaint { IsAntialias = true };
            for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
            {
                double v = values[r, c];
                float t = max > 0 && double.IsFinite(v) ? (float)(v / max) : 0;
                using var cell = new SKPaint { Color = new SKColor((byte)(255 - 200 * t), (byte)(255 - 150 * t), 255) };
                var rect = new SKRect(plot.Left + c * cw, plot.Top + r * ch, plot.Left + (c + 1) * cw, plot.Top + (r + 1) * ch);
                canvas.DrawRect(rect, cell);
                text.Color = t > 0.6 ? SKColors.White : SKColors.Black;
                canvas.DrawText(double.IsFinite(v) ? (Math.Abs(v - Math.Round(v)) < 1e-9 ? v.ToString("0") : v.ToString("0.00")) : "–",
                    rect.MidX, rect.MidY + 4, SKTextAlign.Center, font, text);
            }
            text.Color = SKColors.Black;
            for (int r = 0; r < rows; r++)
                canvas.DrawText(Short(rowLabels[r], 10), plot.Left - 4, plot.Top + (r + 0.5f) * ch + 4, SKTextAlign.Right, font, text);
            for (int c = 0; c < cols; c++)
                canvas.DrawText(Short(columnLabels[c], 12), plot.Left + (c + 0.5f) * cw, plot.Bottom + 16, SKTextAlign.Center, font, text);
        });
    }

    /// <summary>Overlaid histograms of several samples on shared bins (e.g. generated vs reference report lengths).</summary>
    public static void Histogram(string path, string title, string xLabel, IReadOnlyList<(string Name, IReadOnlyList<double> Values)> samples, int bins = 30)
    {
        var all = samples.SelectMany(s => s.Values).Where(double.IsFinite).ToList();
        Draw(path, title, xLabel, "count", (canvas, plot) =>
        {
            if (all.Count == 0) return;
            var (lo, hi) = Range(all);
            double width = (hi - lo) / bins;
            var counts = samples.Select(s =>
            {
                var h = new int[bins];
                foreach (double v in s.Values.Where(double.IsFinite)) h[Math.Clamp((int)((v - lo) / width), 0, bins - 1)]++;
                return h;
            }).ToList();
            double top = Math.Max(1, counts.SelectMany(h => h).Max() * 1.1);
            Axes(canvas, plot, lo, hi, 0, top, false);
            for (int s = 0; s < samples.Count; s++)
            {
                var color = Palette[s % Palette.Length].WithAlpha(120);
                using var paint = new SKPaint { Color = color, IsAntialias = true };
                for (int b = 0; b < bins; b++)
                {
                    var a = Map(plot, lo + b * width, counts[s][b], lo, hi, 0, top);
                    var z = Map(plot, lo + (b + 1) * width, 0, lo, hi, 0, top);
                    canvas.DrawRect(new SKRect(a.X, a.Y, z.X, z.Y), paint);
                }
            }
            Legend(canvas, plot, samples.Select(s => s.Name).ToList());
        });
    }

    // ------------------------------------------------------------------ drawing helpers

    private static void Draw(string path, string title, string xLabel, string yLabel, Action<SKCanvas, SKRect> body, float bottom = Bottom)
    {
        var info = new SKImageInfo(Width, Height);
        using var surface = SKSurface.Create(info);
        var canvas = surface.Canvas;
        canvas.Clear(SKColors.White);
        var plot = new SKRect(Left, Top, Width - Right, Height - bottom);
        using var titleFont = Font(18);
        using var axisFont = Font(13);
        using var ink = new SKPaint { Color = SKColors.Black, IsAntialias = true };
        canvas.DrawText(title, Width / 2f, 30, SKTextAlign.Center, titleFont, ink);
        body(canvas, plot);
        if (xLabel.Length > 0) canvas.DrawText(xLabel, plot.MidX, Height - 15, SKTextAlign.Center, axisFont, ink);
        if (yLabel.Length > 0)
        {
            canvas.Save();
            canvas.Translate(18, plot.MidY);
            canvas.RotateDegrees(-90);
            canvas.DrawText(yLabel, 0, 0, SKTextAlign.Center, axisFont, ink);
            canvas.Restore();
        }
        using var image = surface.Snapshot();
        using var data = image.Encode(SKEncodedImageFormat.Png, 100);
        IO.AtomicFile.Write(path, stream => data.SaveTo(stream));
    }

    private static void Axes(SKCanvas canvas, SKRect plot, double x0, double x1, double y0, double y1, bool logY, bool xTicks = true)
    {
        using var axis = new SKPaint { Color = SKColors.Black, StrokeWidth = 1, IsAntialias = true };
        using var grid = new SKPaint { Color = new SKColor(0xdd, 0xdd, 0xdd), StrokeWidth = 1 };
        using var font = Font(11);
        using var ink = new SKPaint { Color = SKColors.Black, IsAntialias = true };
        canvas.DrawLine(plot.Left, plot.Bottom, plot.Right, plot.Bottom, axis);
        canvas.DrawLine(plot.Left, plot.Top, plot.Left, plot.Bottom, axis);
        for (int i = 0; i <= 5; i++)
        {
            double y = y0 + (y1 - y0) * i / 5;
            float py = plot.Bottom - plot.Height * i / 5;
            canvas.DrawLine(plot.Left, py, plot.Right, py, grid);
            canvas.DrawText(Tick(logY ? Math.Pow(10, y) : y), plot.Left - 6, py + 4, SKTextAlign.Right, font, ink);
            if (!xTicks) continue;
            double x = x0 + (x1 - x0) * i / 5;
            float px = plot.Left + plot.Width * i / 5;
            canvas.DrawText(Tick(x), px, plot.Bottom + 16, SKTextAlign.Center, font, ink);
        }
    }

    /// <summary>Swatches and names in the top right corner, on a white box as wide as the longest name (so a name is
    /// never cut; past 60 characters it is shortened with "…").</summary>
    private static void Legend(SKCanvas canvas, SKRect plot, IReadOnlyList<string> names)
    {
        using var font = Font(12);
        using var ink = new SKPaint { Color = SKColors.Black, IsAntialias = true };
        var shown = names.Select(n => Short(n, 60)).ToList();
        float textWidth = shown.Select(n => font.MeasureText(n)).DefaultIfEmpty(0).Max();
        float left = Math.Max(plot.Left + 4, plot.Right - textWidth - 30);
        using var box = new SKPaint { Color = SKColors.White.WithAlpha(220) };
        canvas.DrawRect(new SKRect(left - 4, plot.Top + 4, plot.Right - 2, plot.Top + 12 + names.Count * 18), box);
        for (int i = 0; i < names.Count; i++)
        {
            using var swatch = new SKPaint { Color = Palette[i % Palette.Length] };
            float y = plot.Top + 8 + i * 18;
            canvas.DrawRect(new SKRect(left, y, left + 12, y + 12), swatch);
            canvas.DrawText(shown[i], left + 18, y + 11, SKTextAlign.Left, font, ink);
        }
    }

    /// <summary>Where <see cref="Legend"/> starts its text for these names (for tests: it must fit inside the plot).</summary>
    internal static (float Left, float Right) LegendTextSpan(IReadOnlyList<string> names)
    {
        using var font = Font(12);
        var plot = new SKRect(Left, Top, Width - Right, Height - Bottom);
        float textWidth = names.Select(n => font.MeasureText(Short(n, 60))).DefaultIfEmpty(0).Max();
        float left = Math.Max(plot.Left + 4, plot.Right - textWidth - 30);
        return (left + 18, left + 18 + textWidth);
    }

    private static SKPoint Map(SKRect plot, double x, double y, double x0, double x1, double y0, double y1) =>
        new(plot.Left + (float)((x - x0) / (x1 - x0) * plot.Width), plot.Bottom - (float)((y - y0) / (y1 - y0) * plot.Height));

    private static (double Lo, double Hi) Range(IEnumerable<double> values)
    {
        var list = values.Where(double.IsFinite).ToList();
        if (list.Count == 0) return (0, 1);
        double lo = list.Min(), hi = list.Max();
        if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
        return (lo, hi);
    }

    private static string Tick(double v) => Math.Abs(v) >= 1000 ? v.ToString("0") : Math.Abs(v) >= 10 ? v.ToString("0.#") : v.ToString("0.###");

    private static string Short(string s, int max) => s.Length <= max ? s : s[..(max - 1)] + "…";

    private static SKFont Font(float size) => new(SKTypeface.Default, size);
}
