using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Compression;
using XrayVL.Imaging;
using static XrayVL.Tests.Imaging.ImagingFixtures;

namespace XrayVL.Tests.Imaging;

public class PngTests
{
    [Fact]
    public void RealIuPngsLoadWithSaneSizesAndValues()
    {
        var expectedHeights = new Dictionary<string, int> { ["2_1.png"] = 512, ["2_2.png"] = 512, ["2577_1.png"] = 420, ["2882_1.png"] = 420, ["861_1.png"] = 564 };
        foreach (string name in IuPngNames)
        {
            var image = ImageFile.Load(IuPng(name));
            Assert.Equal(512, image.Width);
            Assert.Equal(expectedHeights[name], image.Height);
            Assert.Equal(ImageFormat.Png, image.Source.Format);
            Assert.Equal(8, image.Source.BitDepth);
            Assert.Equal(3, image.Source.Channels);
            Assert.All(image.Pixels, v => Assert.InRange(v, 0f, 1f));
            double mean = image.Pixels.Average(v => (double)v);
            double std = Math.Sqrt(image.Pixels.Average(v => (v - mean) * (v - mean)));
            Assert.InRange(mean, 0.15, 0.85);   // an exposed radiograph, neither blank nor black
            Assert.True(std > 0.08, $"{name}: contrast {std}");
        }
    }

    /// <summary>StbImageSharp, an independent decoder, gives the same RGB; our gray is its Rec. 601 luma.</summary>
    [Fact]
    public void RealIuPngsMatchStbImageSharp()
    {
        foreach (string name in IuPngNames)
        {
            byte[] bytes = File.ReadAllBytes(IuPng(name));
            var reference = StbImageSharp.ImageResult.FromMemory(bytes, StbImageSharp.ColorComponents.RedGreenBlue);
            var image = ImageFile.Decode(bytes, name);
            var d = reference.Data;
            for (int i = 0; i < image.Pixels.Length; i++)
            {
                double luma = (0.299 * d[3 * i] + 0.587 * d[3 * i + 1] + 0.114 * d[3 * i + 2]) / 255;
                Assert.True(Math.Abs(image.Pixels[i] - luma) < 1e-5, $"{name} pixel {i}");
            }
        }
    }

    public static TheoryData<int, bool> FilterChoices()
    {
        var data = new TheoryData<int, bool>();
        foreach (int filter in new[] { -1, 0, 1, 2, 3, 4 })
            foreach (bool interlaced in new[] { false, true })
                data.Add(filter, interlaced);
        return data;
    }

    [Theory]
    [MemberData(nameof(FilterChoices))]
    public void Gray16BitRoundTripsExactly(int filter, bool interlaced)
    {
        var random = new Random(16 + filter);
        int width = 37, height = 23;   // odd sizes: partial Adam7 passes
        var samples = new ushort[width * height];
        for (int i = 0; i < samples.Length; i++) samples[i] = (ushort)random.Next(65536);
        samples[0] = 0;
        samples[1] = 65535;
        byte[] png = PngWriter.Encode(width, height, 1, 16, samples, new PngWriteOptions(filter, interlaced));

        var image = ImageFile.Decode(png, "gray16.png");
        Assert.Equal(16, image.Source.BitDepth);
        for (int i = 0; i < samples.Length; i++) Assert.Equal(samples[i], (int)MathF.Round(image.Pixels[i] * 65535));

        // Independent check of writer and reader: StbImageSharp reduces 16-bit samples to their high byte.
        var stb = StbImageSharp.ImageResult.FromMemory(png, StbImageSharp.ColorComponents.Grey);
        for (int i = 0; i < samples.Length; i++) Assert.Equal(samples[i] >> 8, stb.Data[i]);
    }

    [Theory]
    [InlineData(1, 8)]
    [InlineData(2, 8)]
    [InlineData(3, 8)]
    [InlineData(4, 8)]
    [InlineData(2, 16)]
    [InlineData(3, 16)]
    [InlineData(4, 16)]
    public void EveryColourTypeMatchesStbImageSharp(int channels, int bitDepth)
    {
        var random = new Random(channels * 100 + bitDepth);
        int width = 19, height = 11;
        var samples = new ushort[width * height * channels];
        for (int i = 0; i < samples.Length; i++) samples[i] = (ushort)random.Next(bitDepth == 16 ? 65536 : 256);
        foreach (bool interlaced in new[] { false, true })
        {
            byte[] png = PngWriter.Encode(width, height, channels, bitDepth, samples, new PngWriteOptions(Interlaced: interlaced));
            var image = Png.Decode(png, "colour.png");
            var stb = StbImageSharp.ImageResult.FromMemory(png, StbImageSharp.ColorComponents.RedGreenBlueAlpha);
            for (int i = 0; i < width * height; i++)
            {
                // Our values at full precision; StbImageSharp's 8-bit ones are the high bytes.
                double expected;
                if (channels >= 3)
                    expected = 0.299 * samples[i * channels] + 0.587 * samples[i * channels + 1] + 0.114 * samples[i * channels + 2];
                else
                    expected = samples[i * channels];
                double max = bitDepth == 16 ? 65535 : 255;
                Assert.True(Math.Abs(image.Pixels[i] - expected / max) < 1e-5, $"pixel {i}");
                Assert.Equal(bitDepth == 16 ? samples[i * channels] >> 8 : samples[i * channels], stb.Data[4 * i]);
            }
        }
    }

    /// <summary>Palette and sub-byte gray PNGs are built by hand here (PngWriter does not write them).</summary>
    [Fact]
    public void PaletteAndLowBitDepthGrayDecode()
    {
        int width = 13, height = 5;
        var random = new Random(3);
        // 4-bit palette of 16 colours.
        var palette = new byte[16 * 3];
        random.NextBytes(palette);
        var indices = new int[width * height];
        for (int i = 0; i < indices.Length; i++) indices[i] = random.Next(16);
        byte[] png = HandBuiltPng(width, height, 4, 3, indices, palette);
        var image = Png.Decode(png, "palette.png");
        var stb = StbImageSharp.ImageResult.FromMemory(png, StbImageSharp.ColorComponents.RedGreenBlue);
        for (int i = 0; i < indices.Length; i++)
        {
            int p = indices[i] * 3;
            Assert.Equal(palette[p], stb.Data[3 * i]);
            double luma = (0.299 * palette[p] + 0.587 * palette[p + 1] + 0.114 * palette[p + 2]) / 255;
            Assert.True(Math.Abs(image.Pixels[i] - luma) < 1e-5);
        }

        foreach (int depth in new[] { 1, 2, 4 })
        {
            var values = new int[width * height];
            for (int i = 0; i < values.Length; i++) values[i] = random.Next(1 << depth);
            var gray = Png.Decode(HandBuiltPng(width, height, depth, 0, values, null), $"gray{depth}.png");
            for (int i = 0; i < values.Length; i++) Assert.Equal(values[i] / (double)((1 << depth) - 1), gray.Pixels[i], 1e-6);
        }
    }

    [Fact]
    public void DecompressionBombHeaderIsRefusedFromTheHeaderWithoutAllocating()
    {
        byte[] bomb = HeaderOnlyPng(60000, 60000, bitDepth: 8, colorType: 0);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<ImageLimitException>(() => ImageFile.Decode(bomb, "bomb.png"));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Contains("bomb.png", e.Message);
        Assert.Contains("60000×60000", e.Message);
        Assert.True(allocated < 1_000_000, $"{allocated} bytes allocated");
    }

    /// <summary>A zlib stream that would expand to 64 MB for a 100×100 image: only the 10,100 needed bytes are inflated.</summary>
    [Fact]
    public void OverlongZlibStreamIsNotExpandedBeyondTheImage()
    {
        var zeros = new byte[64 << 20];
        var compressed = new MemoryStream();
        using (var z = new ZLibStream(compressed, CompressionLevel.SmallestSize, leaveOpen: true)) z.Write(zeros);
        var png = new MemoryStream();
        png.Write(HeaderOnlyPng(100, 100, 8, 0).AsSpan(0, 33));   // signature + IHDR
        PngWriter.WriteChunk(png, "IDAT"u8, compressed.ToArray());
        PngWriter.WriteChunk(png, "IEND"u8, []);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var image = ImageFile.Decode(png.ToArray(), "zlib-bomb.png");
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(100, image.Width);
        Assert.All(image.Pixels, v => Assert.Equal(0f, v));
        Assert.True(allocated < 4_000_000, $"{allocated} bytes allocated");
    }

    /// <summary>A 2048×2048 16-bit RGBA PNG (34 MB of scanlines, a few hundred KB compressed) decodes holding only its
    /// 17 MB gray output and two rows; the whole-image inflate buffer of before needed 34 MB more.</summary>
    [Fact]
    public void MemoryIsBoundedByTheOutputNotTheScanlines()
    {
        int width = 2048, height = 2048, rowBytes = width * 8;
        var compressed = new MemoryStream();
        using (var z = new ZLibStream(compressed, CompressionLevel.Fastest, leaveOpen: true))
        {
            var row = new byte[rowBytes + 1];
            for (int y = 0; y < height; y++)
            {
                // Row 0: pixel 0 white (R, G, B at 0xFFFF), the rest black; later rows: the "up" filter with zero
                // differences, so every row repeats the first.
                row[0] = (byte)(y == 0 ? 0 : 2);
                row.AsSpan(1, 6).Fill((byte)(y == 0 ? 0xFF : 0));
                z.Write(row);
            }
        }
        var png = new MemoryStream();
        png.Write(HeaderOnlyPng(width, height, 16, 6).AsSpan(0, 33));
        PngWriter.WriteChunk(png, "IDAT"u8, compressed.ToArray());
        PngWriter.WriteChunk(png, "IEND"u8, []);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var image = ImageFile.Decode(png.ToArray(), "big-rgba.png");
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal((width, height), (image.Width, image.Height));
        Assert.Equal(1f, image[0, 0], 1e-6);
        Assert.Equal(1f, image[0, height - 1], 1e-6);
        Assert.Equal(0f, image[1, height / 2]);
        long output = 4L * width * height;
        Assert.True(allocated < output + (8 << 20), $"{allocated / 1e6:0} MB allocated for a {output / 1e6:0} MB output");
        // And the working set is checked before allocating.
        var e = Assert.Throws<ImageLimitException>(() => ImageFile.Decode(png.ToArray(), "big-rgba.png", new ImageLimits { MaxDecodeBytes = output / 2 }));
        Assert.StartsWith("big-rgba.png: decoding this PNG needs ", e.Message);
    }

    [Fact]
    public void TruncatedAndCorruptPngsFailNamingTheFile()
    {
        byte[] good = File.ReadAllBytes(IuPng("2_2.png"));
        foreach (int length in new[] { 4, 8, 20, 33, 40, 100, good.Length / 2, good.Length - 13, good.Length - 12 })
        {
            var e = Assert.Throws<XrayVLException>(() => ImageFile.Decode(good.AsSpan(0, length), "cut.png"));
            Assert.StartsWith("cut.png: ", e.Message);
        }

        byte[] badCrc = (byte[])good.Clone();
        badCrc[200] ^= 0x40;   // inside the first IDAT
        var crc = Assert.Throws<XrayVLException>(() => ImageFile.Decode(badCrc, "crc.png"));
        Assert.Contains("CRC", crc.Message);
        Assert.StartsWith("crc.png: ", crc.Message);
    }

    [Fact]
    public void SavedGrayImageLoadsBack()
    {
        var random = new Random(5);
        var pixels = new float[31 * 17];
        for (int i = 0; i < pixels.Length; i++) pixels[i] = random.Next(65536) / 65535f;
        var image = new GrayImage(31, 17, pixels);
        using var folder = new TempFolder();
        string path = folder.File("saved.png");
        PngWriter.Save(image, path, bitDepth: 16);
        var loaded = ImageFile.Load(path);
        Assert.Equal(pixels, loaded.Pixels);
    }

    /// <summary>Signature + IHDR (valid CRC) + an empty IDAT + IEND.</summary>
    internal static byte[] HeaderOnlyPng(int width, int height, int bitDepth, int colorType)
    {
        var png = new MemoryStream();
        png.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        var ihdr = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, width);
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), height);
        ihdr[8] = (byte)bitDepth;
        ihdr[9] = (byte)colorType;
        PngWriter.WriteChunk(png, "IHDR"u8, ihdr);
        PngWriter.WriteChunk(png, "IDAT"u8, [0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        PngWriter.WriteChunk(png, "IEND"u8, []);
        return png.ToArray();
    }

    /// <summary>A non-interlaced PNG with samples packed MSB-first at 1, 2 or 4 bits, filter 0 on every row.</summary>
    internal static byte[] HandBuiltPng(int width, int height, int bitDepth, int colorType, int[] values, byte[]? palette)
    {
        int rowBytes = (width * bitDepth + 7) / 8;
        var raw = new byte[height * (rowBytes + 1)];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                int bit = x * bitDepth;
                raw[y * (rowBytes + 1) + 1 + bit / 8] |= (byte)(values[y * width + x] << (8 - bitDepth - bit % 8));
            }
        var compressed = new MemoryStream();
        using (var z = new ZLibStream(compressed, CompressionLevel.Optimal, leaveOpen: true)) z.Write(raw);
        var png = new MemoryStream();
        png.Write(HeaderOnlyPng(width, height, bitDepth, colorType).AsSpan(0, 33));
        if (palette != null) PngWriter.WriteChunk(png, "PLTE"u8, palette);
        PngWriter.WriteChunk(png, "IDAT"u8, compressed.ToArray());
        PngWriter.WriteChunk(png, "IEND"u8, []);
        return png.ToArray();
    }
}
