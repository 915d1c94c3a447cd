using XrayVL.Imaging;
using static XrayVL.Tests.Imaging.ImagingFixtures;

namespace XrayVL.Tests.Imaging;

public class ImageFileTests
{
    [Fact]
    public void FormatComesFromContentNotExtension()
    {
        using var folder = new TempFolder();
        byte[] png = File.ReadAllBytes(IuPng("2_1.png"));
        byte[] jpeg = File.ReadAllBytes(CovidJpegs()[0]);
        byte[] dicom = DicomWriter.WriteNative(2, 2, [0, 1, 2, 3], new DicomWriteOptions());
        Assert.Equal(ImageFormat.Png, ImageFile.Load(folder.Write("looks-like.dcm", png)).Source.Format);
        Assert.Equal(ImageFormat.Jpeg, ImageFile.Load(folder.Write("looks-like.png", jpeg)).Source.Format);
        Assert.Equal(ImageFormat.Dicom, ImageFile.Load(folder.Write("no-extension", dicom)).Source.Format);
    }

    [Fact]
    public void NonImageFilesAreRefusedNamingTheFile()
    {
        using var folder = new TempFolder();
        string text = folder.Write("report.png", "FINDINGS: The lungs are clear.\n"u8.ToArray());
        var e = Assert.Throws<XrayVLException>(() => ImageFile.Load(text));
        Assert.Equal($"{text}: not a supported image (PNG, JPEG or DICOM)", e.Message);

        string empty = folder.Write("empty.jpg", []);
        Assert.StartsWith($"{empty}: ", Assert.Throws<XrayVLException>(() => ImageFile.Load(empty)).Message);

        string missing = folder.File("missing.png");
        Assert.Equal($"{missing}: image file not found", Assert.Throws<XrayVLException>(() => ImageFile.Load(missing)).Message);
        Assert.Contains("directory", Assert.Throws<XrayVLException>(() => ImageFile.Load(folder.Path)).Message);
    }

    [Fact]
    public void FilesAboveTheByteLimitAreRefusedBeforeReading()
    {
        using var folder = new TempFolder();
        string path = folder.Write("big.png", File.ReadAllBytes(IuPng("2_1.png")));
        var e = Assert.Throws<ImageLimitException>(() => ImageFile.Load(path, new ImageLimits { MaxBytes = 1000 }));
        Assert.StartsWith($"{path}: file is ", e.Message);
        Assert.Contains("limit", e.Message);
    }

    /// <summary>A pipe would block the reader until something writes to it, a device may never end: both are refused
    /// at once, as is an empty path (which .NET's file APIs reject with an ArgumentException).</summary>
    [Fact]
    public async Task EmptyPathsPipesAndDevicesAreRefusedWithoutBlocking()
    {
        Assert.StartsWith("image path is empty", Assert.Throws<XrayVLException>(() => ImageFile.Load("")).Message);
        Assert.StartsWith("image path is empty", Assert.Throws<XrayVLException>(() => ImageFile.Load("  ")).Message);
        if (File.Exists("/dev/zero"))
            Assert.Equal("/dev/zero: is empty or not a regular file (a pipe or device); give an image file",
                Assert.Throws<XrayVLException>(() => ImageFile.Load("/dev/zero")).Message);
        using var folder = new TempFolder();
        string fifo = folder.File("pipe.png");
        using (var mkfifo = System.Diagnostics.Process.Start("mkfifo", [fifo])) mkfifo.WaitForExit();
        Assert.True(File.Exists(fifo));
        var load = Task.Run(() => ImageFile.Load(fifo));
        Assert.Same(load, await Task.WhenAny(load, Task.Delay(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken)));
        Assert.StartsWith($"{fifo}: is empty or not a regular file", (await Assert.ThrowsAsync<XrayVLException>(() => load)).Message);
        string empty = folder.Write("empty.png", []);
        Assert.StartsWith($"{empty}: is empty", Assert.Throws<XrayVLException>(() => ImageFile.Load(empty)).Message);
    }

    [Fact]
    public void PixelLimitAppliesToEveryFormat()
    {
        var small = new ImageLimits { MaxPixels = 100 };
        byte[] png = PngWriter.Encode(11, 10, 1, 8, new ushort[110]);
        byte[] jpeg = EncodeJpeg(new byte[110], 11, 10, 1);
        byte[] dicom = DicomWriter.WriteNative(10, 11, new int[110], new DicomWriteOptions());
        foreach (var (bytes, name) in new[] { (png, "a.png"), (jpeg, "a.jpg"), (dicom, "a.dcm") })
        {
            Assert.Contains("11×10", Assert.Throws<ImageLimitException>(() => ImageFile.Decode(bytes, name, small)).Message);
            Assert.Equal(110, ImageFile.Decode(bytes, name).Pixels.Length);
        }
    }

    [Fact]
    public void SpanAndArrayDecodeAgree()
    {
        byte[] jpeg = File.ReadAllBytes(CovidJpegs()[1]);
        Assert.Equal(ImageFile.Decode(jpeg, "a.jpg").Pixels, ImageFile.Decode(jpeg.AsSpan(), "a.jpg").Pixels);
    }
}
