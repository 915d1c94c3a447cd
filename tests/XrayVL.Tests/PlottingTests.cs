using XrayVL.Imaging;
using XrayVL.Plotting;

namespace XrayVL.Tests;

public class PlottingTests
{
    [Fact]
    public void ChartsAreRealPngsWithInkWhereTheDataIs()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"xrayvl-charts-{Guid.NewGuid():N}");
        Charts.Line(Path.Combine(dir, "loss.png"), "loss", "step", "loss",
            [new Series("train", [0, 1, 2, 3], [4, 3, 2.5, 2]), new Series("val", [1, 3], [3.5, 2.4])]);
        Charts.Bars(Path.Combine(dir, "f1.png"), "F1", "F1", ["Cardiomegaly", "Edema"], [("model", [0.5, 0.2]), ("baseline", [0.1, 0.0])], 1);
        Charts.Heatmap(Path.Combine(dir, "cm.png"), "confusion", ["yes", "no"], ["yes", "no"], new double[,] { { 5, 1 }, { 2, 9 } });
        Charts.Histogram(Path.Combine(dir, "len.png"), "lengths", "words", [("generated", [10, 12, 30]), ("reference", [11, 40])]);
        foreach (string name in new[] { "loss.png", "f1.png", "cm.png", "len.png" })
        {
            var image = ImageFile.Load(Path.Combine(dir, name));
            Assert.Equal((900, 520), (image.Width, image.Height));
            // A blank canvas is all white (1.0); a chart has a good share of darker pixels.
            Assert.True(image.Pixels.Count(p => p < 0.9f) > 2000, name);
        }
        if (Environment.GetEnvironmentVariable("XRAYVL_KEEP_CHARTS") is { } keep) { Directory.CreateDirectory(keep); foreach (var f in Directory.GetFiles(dir)) File.Copy(f, Path.Combine(keep, Path.GetFileName(f)), true); }
        Directory.Delete(dir, true);
    }
}
