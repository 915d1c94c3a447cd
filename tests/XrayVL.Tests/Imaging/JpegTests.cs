using System.Diagnostics;
using XrayVL.Imaging;
using static XrayVL.Tests.Imaging.ImagingFixtures;

namespace XrayVL.Tests.Imaging;

public class JpegTests
{
    [Fact]
    public void SizeFromTheHeaderEqualsTheDecodedSizeAndACutHeaderGivesNone()
    {
        string path = XrayVL.Tests.Support.SharedData.File("kermany-pneumonia", "images", "train_PNEUMONIA_person1571_bacteria_4110.jpg");
        byte[] bytes = File.ReadAllBytes(path);
        var image = Jpeg.Decode(bytes, path);
        Assert.Equal((image.Width, image.Height), Jpeg.ReadSize(bytes));
        Assert.Null(Jpeg.ReadSize(bytes.AsSpan(0, 4)));
    }

    /// <summary>All 648 COVID JPEGs decode; the frame size matches the SOF header read here by a naive marker walk,
    /// and the longest side is at most 512 px, as PROVENANCE.md says of the conversion.</summary>
    [Fact]
    public void AllRealCovidJpegsLoadWithSaneSizesAndValues()
    {
        string[] paths = CovidJpegs();
        Assert.True(paths.Length > 600, $"{paths.Length} JPEGs");
        foreach (string path in paths)
        {
            byte[] bytes = File.ReadAllBytes(path);
            var image = ImageFile.Decode(bytes, path);
            var (width, height) = NaiveSofSize(bytes);
            Assert.Equal((width, height), (image.Width, image.Height));
            Assert.True(Math.Max(image.Width, image.Height) <= 512, path);
            Assert.Equal(ImageFormat.Jpeg, image.Source.Format);
            float min = image.Pixels.Min(), max = image.Pixels.Max();
            Assert.InRange(min, 0f, 1f);
            Assert.InRange(max, 0f, 1f);
            Assert.True(max - min > 0.2f, $"{path}: range {min}..{max}");
        }
    }

    [Fact]
    public void GrayJpegDecodesCloseToItsSource()
    {
        int width = 96, height = 64;
        byte[] samples = Pattern(width, height);
        var image = Jpeg.Decode(EncodeJpeg(samples, width, height, 1, quality: 95), "pattern.jpg");
        Assert.Equal((width, height), (image.Width, image.Height));
        double meanError = 0;
        for (int i = 0; i < samples.Length; i++) meanError += Math.Abs(image.Pixels[i] * 255 - samples[i]);
        meanError /= samples.Length;
        Assert.True(meanError < 2.0, $"mean abs error {meanError} grey levels");
    }

    [Fact]
    public void ColourJpegBecomesRec601Luma()
    {
        int width = 32, height = 32;
        var rgb = new byte[width * height * 3];
        for (int i = 0; i < width * height; i++) (rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]) = (200, 100, 50);
        var image = Jpeg.Decode(EncodeJpeg(rgb, width, height, 3, quality: 100), "flat.jpg");
        Assert.Equal(3, image.Source.Channels);
        double expected = (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255;   // 0.4276…
        Assert.All(image.Pixels, v => Assert.InRange(v, expected - 0.01, expected + 0.01));
    }

    /// <summary>ImagingFixtures.Pattern(32, 24) as a one-component baseline JPEG (libjpeg-turbo 2.1.5: cjpeg -grayscale
    /// -quality 90 -baseline), and the same file made progressive without loss (jpegtran -progressive -copy none).</summary>
    internal const string BaselineGray32x24 = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/wAALCAAYACABAREA/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/9oACAEBAAA/APzr8PeHvu/LXrPgjwRc63fQ2lpDvkbkk/dQd2J7Cvovw98B7T7Gq/bJvtX/AD12DZ1/u9en+1/hVuz8GT6PqElncIomiIB2nIPGQR9QQa+XPD3h77vy17t8FtNisvEiLKNv2iIwoxwBuJBGc+u3H1Ir6o8PeHvu/LWLrNjBqniOaS3ETwoFjEsS/wCswOST35yM+gFfJHh7w9935a9M8PeHvu/LXq2hWl9LapbPdXD2wAXyWlYpgdBjOOMCvQvD3h77vy1//9k=";
    internal const string ProgressiveGray32x24 = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/wgALCAAYACABAREA/8QAGAABAQADAAAAAAAAAAAAAAAABgcDBAj/2gAIAQEAAAAB51WUbLLndU0pGmVof//EABoQAQADAQEBAAAAAAAAAAAAAAQAAgMBBRL/2gAIAQEAAQUCOeCFba5/Br8UH3HQ554ufKJOebU5qg54c8wrftTnn//EAB8QAAEEAgIDAAAAAAAAAAAAAAECEBESACExUTJBQv/aAAgBAQAGPwLAlI3nmbd4UK5Db+hDEpiOJHt62VXqW//EAB0QAAIDAAIDAAAAAAAAAAAAAAABESExYZGB4fD/2gAIAQEAAT8hwonft0uSCXhq69iYFxGFCQqUXz8jCiWwsQBhRhQms7E2gwo//9oACAEBAAAAEFD/AP/EAB8QAQABBAMAAwAAAAAAAAAAAAERECExQQBRcYGR8P/aAAgBAQABPxDmZ80Vw7To59UD3+WPzHBglBlI2kT0Rpha3KoCSJM92epTCoNDWF1d3knoK5hrmEiiYImLQUz/2Q==";

    /// <summary>jpegtran keeps the DCT coefficients, so the progressive file must decode to exactly the baseline's pixels.</summary>
    [Fact]
    public void ProgressiveJpegDecodesLikeItsBaselineTwin()
    {
        byte[] baseline = Convert.FromBase64String(BaselineGray32x24), progressive = Convert.FromBase64String(ProgressiveGray32x24);
        Assert.True(progressive.AsSpan().IndexOf([(byte)0xFF, (byte)0xC2]) > 0, "SOF2 (progressive) marker");
        Assert.True(progressive.AsSpan().IndexOf([(byte)0xFF, (byte)0xC0]) < 0, "no SOF0 (baseline) marker");
        var a = ImageFile.Decode(baseline, "baseline.jpg");
        var b = ImageFile.Decode(progressive, "progressive.jpg");
        Assert.Equal((32, 24, 1), (b.Width, b.Height, b.Source.Channels));
        Assert.Equal(a.Pixels, b.Pixels);
        byte[] source = Pattern(32, 24);
        Assert.True(source.Select((v, i) => Math.Abs(a.Pixels[i] * 255 - v)).Average() < 2.5);
    }

    [Fact]
    public void HugeSofHeaderIsRefusedWithoutAllocating()
    {
        // SOI, SOF0 (8-bit, 60000×60000, one component), EOI: nothing else is needed to read the size.
        byte[] bomb = [0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x0B, 0x08, 0xEA, 0x60, 0xEA, 0x60, 0x01, 0x01, 0x11, 0x00, 0xFF, 0xD9];
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<ImageLimitException>(() => ImageFile.Decode(bomb, "bomb.jpg"));
        Assert.StartsWith("bomb.jpg: ", e.Message);
        Assert.Contains("60000×60000", e.Message);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1_000_000);
    }

    [Fact]
    public void TruncatedJpegsFailNamingTheFile()
    {
        byte[] good = File.ReadAllBytes(CovidJpegs()[0]);
        foreach (int length in new[] { 3, 10, 100, 400, good.Length / 3, good.Length / 2, good.Length - 2 })
        {
            var e = Assert.Throws<XrayVLException>(() => ImageFile.Decode(good.AsSpan(0, length), "cut.jpg"));
            Assert.StartsWith("cut.jpg: ", e.Message);
        }
    }

    /// <summary>Width and height of the first SOF0/1/2 segment, found by skipping segments by their lengths.</summary>
    private static (int Width, int Height) NaiveSofSize(byte[] b)
    {
        int i = 2;
        while (i + 9 < b.Length)
        {
            if (b[i] != 0xFF) { i++; continue; }
            byte marker = b[i + 1];
            if (marker == 0xFF) { i++; continue; }
            int length = b[i + 2] << 8 | b[i + 3];
            if (marker is 0xC0 or 0xC1 or 0xC2) return (b[i + 7] << 8 | b[i + 8], b[i + 5] << 8 | b[i + 6]);
            i += 2 + length;
        }
        throw new InvalidDataException("no SOF");
    }
}
