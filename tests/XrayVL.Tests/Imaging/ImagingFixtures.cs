using XrayVL.Imaging;
using XrayVL.Tests.Support;

namespace XrayVL.Tests.Imaging;

/// <summary>Inputs shared by the imaging tests: the real IU PNGs and COVID JPEGs, and small images made here.</summary>
internal static class ImagingFixtures
{
    public static readonly string[] IuPngNames = ["2_1.png", "2_2.png", "2577_1.png", "2882_1.png", "861_1.png"];

    public static string IuPng(string name) => SharedData.File("iu-xray", "images", name);

    public static string[] CovidJpegs() =>
        Directory.GetFiles(SharedData.File("covid-chestxray", "images"), "*.jpg").OrderBy(p => p, StringComparer.Ordinal).ToArray();

    /// <summary>8-bit samples of a JPEG made by StbImageWriteSharp (baseline, 4:2:0 for colour).</summary>
    public static byte[] EncodeJpeg(byte[] samples, int width, int height, int channels, int quality = 90)
    {
        var stream = new MemoryStream();
        var components = channels == 1 ? StbImageWriteSharp.ColorComponents.Grey : StbImageWriteSharp.ColorComponents.RedGreenBlue;
        new StbImageWriteSharp.ImageWriter().WriteJpg(samples, width, height, components, stream, quality);
        return stream.ToArray();
    }

    /// <summary>A smooth test pattern in [0, 255]: a diagonal gradient plus a bright disc.</summary>
    public static byte[] Pattern(int width, int height)
    {
        var samples = new byte[width * height];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                double v = 200.0 * (x + y) / (width + height);
                double dx = x - width * 0.6, dy = y - height * 0.4;
                if (dx * dx + dy * dy < width * height / 16.0) v += 50;
                samples[y * width + x] = (byte)Math.Clamp(v, 0, 255);
            }
        return samples;
    }

    /// <summary>A region of a real X-ray as 8-bit gray samples.</summary>
    public static byte[] CropOfRealXray(int width, int height, out GrayImage source)
    {
        source = ImageFile.Load(IuPng("2_1.png"));
        var samples = new byte[width * height];
        int x0 = (source.Width - width) / 2, y0 = (source.Height - height) / 2;
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                samples[y * width + x] = (byte)MathF.Round(source[x0 + x, y0 + y] * 255);
        return samples;
    }

    /// <summary>A file in a fresh temporary folder, deleted with it.</summary>
    public sealed class TempFolder : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("xrayvl-imaging-").FullName;
        public string File(string name) => System.IO.Path.Combine(Path, name);
        public string Write(string name, byte[] bytes)
        {
            string path = File(name);
            System.IO.File.WriteAllBytes(path, bytes);
            return path;
        }
        public void Dispose() => Directory.Delete(Path, recursive: true);
    }

    /// <summary>The whole message chain of an exception (what a front end could print).</summary>
    public static string AllMessages(Exception e)
    {
        var parts = new List<string>();
        for (Exception? x = e; x != null; x = x.InnerException) parts.Add(x.Message);
        return string.Join(" | ", parts);
    }
}
