using XrayVL.Imaging;
using static XrayVL.Tests.Imaging.ImagingFixtures;

namespace XrayVL.Tests.Imaging;

/// <summary>DICOM files written by <see cref="DicomWriter"/>, decoded by <see cref="Dicom"/>; expected pixels are computed
/// by hand from the window formula of PS3.3 C.11.2.1.2.1.</summary>
public class DicomTests
{
    /// <summary>Rescale x = 2·v − 1000, window centre 0 width 2001: x ≤ −1000.5 → 0, x > 999.5 → 1, else (x + 0.5)/2000 + 0.5.</summary>
    private static readonly int[] Stored = [0, 100, 1000, 2047, 4095, 250];
    private static readonly double[] Windowed = [(-999.5 / 2000) + 0.5, (-799.5 / 2000) + 0.5, 1, 1, 1, (-499.5 / 2000) + 0.5];

    private static DicomWriteOptions TwelveBit(bool explicitVr) => new()
    {
        ExplicitVr = explicitVr, BitsAllocated = 16, BitsStored = 12, RescaleSlope = 2, RescaleIntercept = -1000,
        WindowCenter = [0], WindowWidth = [2001], ViewPosition = "PA", Modality = "CR",
    };

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void RescaleAndWindowMatchHandComputation(bool explicitVr)
    {
        byte[] file = DicomWriter.WriteNative(2, 3, Stored, TwelveBit(explicitVr));
        var image = ImageFile.Decode(file, "twelve.dcm");
        Assert.Equal((3, 2), (image.Width, image.Height));
        for (int i = 0; i < Stored.Length; i++) Assert.Equal(Windowed[i], image.Pixels[i], 1e-6);
        Assert.Equal(new ImageSourceInfo(ImageFormat.Dicom, 12, 1, "PA", "CR"), image.Source);

        var ds = Dicom.ReadDataset(file, "twelve.dcm");
        Assert.Equal(explicitVr ? Dicom.ExplicitVrLittleEndian : Dicom.ImplicitVrLittleEndian, ds.TransferSyntaxUid);
        Assert.Equal((16, 12, 11, 0), (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation));
        Assert.Equal((2.0, -1000.0), (ds.RescaleSlope, ds.RescaleIntercept));
        Assert.Equal(0.0, ds.WindowCenter);
        Assert.Equal(2001.0, ds.WindowWidth);
    }

    [Fact]
    public void Monochrome1IsInvertedAfterWindowing()
    {
        byte[] file = DicomWriter.WriteNative(2, 3, Stored, TwelveBit(true) with { PhotometricInterpretation = "MONOCHROME1" });
        var image = ImageFile.Decode(file, "mono1.dcm");
        for (int i = 0; i < Stored.Length; i++) Assert.Equal(1 - Windowed[i], image.Pixels[i], 1e-6);
    }

    /// <summary>Signed 12-bit in 16-bit words, window centre 0 width 4096: bounds −2048 and 2047; inside, (x + 0.5)/4095 + 0.5.</summary>
    [Fact]
    public void SignedSamplesAreSignExtendedFromBitsStored()
    {
        int[] stored = [-2048, -1, 0, 1000, 2047, -1000];
        var options = new DicomWriteOptions { BitsStored = 12, Signed = true, WindowCenter = [0], WindowWidth = [4096] };
        var image = ImageFile.Decode(DicomWriter.WriteNative(1, 6, stored, options), "signed.dcm");
        double[] expected = [0, (-0.5 / 4095) + 0.5, (0.5 / 4095) + 0.5, (1000.5 / 4095) + 0.5, 1, (-999.5 / 4095) + 0.5];
        for (int i = 0; i < stored.Length; i++) Assert.Equal(expected[i], image.Pixels[i], 1e-6);
    }

    /// <summary>Bits outside BitsStored (overlays, garbage) are ignored; HighBit says where the stored bits end.</summary>
    [Fact]
    public void StoredBitsAreMaskedAndShiftedByHighBit()
    {
        var window = new DicomWriteOptions { BitsStored = 12, WindowCenter = [2048], WindowWidth = [4096], VoiLutFunction = "LINEAR_EXACT" };
        // Low 12 bits hold the value; the top 4 bits are garbage.
        var low = ImageFile.Decode(DicomWriter.WriteNative(1, 3, [0xF000 | 0x123, 0xA000, 0x5FFF], window), "low.dcm");
        // HighBit 15: the value sits in the top 12 bits; the low 4 bits are garbage.
        var high = ImageFile.Decode(DicomWriter.WriteNative(1, 3, [0x123 << 4 | 0xF, 0x000 << 4 | 0x9, 0xFFF << 4], window with { HighBit = 15 }), "high.dcm");
        double[] expected = [(0x123 - 2048) / 4096.0 + 0.5, 0, (0xFFF - 2048) / 4096.0 + 0.5];   // LINEAR_EXACT: (x − c)/w + 0.5
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(expected[i], low.Pixels[i], 1e-6);
            Assert.Equal(expected[i], high.Pixels[i], 1e-6);
        }
    }

    [Fact]
    public void EightBitWithMultiValuedWindowUsesTheFirstPair()
    {
        int[] stored = [0, 60, 128, 200, 255, 90];
        var options = new DicomWriteOptions { BitsAllocated = 8, WindowCenter = [100, 40], WindowWidth = [81, 400] };
        var image = ImageFile.Decode(DicomWriter.WriteNative(2, 3, stored, options), "eight.dcm");
        // c = 100, w = 81: x ≤ 59.5 → 0, x > 139.5 → 1, else (x − 99.5)/80 + 0.5.
        double[] expected = [0, (60 - 99.5) / 80 + 0.5, (128 - 99.5) / 80 + 0.5, 1, 1, (90 - 99.5) / 80 + 0.5];
        for (int i = 0; i < stored.Length; i++) Assert.Equal(expected[i], image.Pixels[i], 1e-6);
        Assert.Equal(8, image.Source.BitDepth);
    }

    [Fact]
    public void SigmoidVoiFunction()
    {
        var options = new DicomWriteOptions { WindowCenter = [500], WindowWidth = [200], VoiLutFunction = "SIGMOID" };
        var image = ImageFile.Decode(DicomWriter.WriteNative(1, 3, [500, 600, 300], options), "sigmoid.dcm");
        double[] expected = [0.5, 1 / (1 + Math.Exp(-2)), 1 / (1 + Math.Exp(4))];
        for (int i = 0; i < 3; i++) Assert.Equal(expected[i], image.Pixels[i], 1e-6);
    }

    /// <summary>No window in the file: the 0.5 and 99.5 percentiles (ranks ⌊0.005·(n−1)⌋, ⌈0.995·(n−1)⌉ of the sorted
    /// values, found here by sorting) map to 0 and 1.</summary>
    [Theory]
    [InlineData(1.0, 0.0)]
    [InlineData(-1.0, 1000.0)]
    [InlineData(0.5, -300.0)]
    public void PercentileWindowWhenTheFileHasNone(double slope, double intercept)
    {
        var random = new Random(7);
        int[] stored = Enumerable.Range(0, 1000).Select(i => i * 3 % 1000).ToArray();
        stored[10] = 4000;   // an outlier the robust window ignores
        random.Shuffle(stored);
        var options = new DicomWriteOptions { BitsStored = 12, RescaleSlope = slope, RescaleIntercept = intercept };
        var image = ImageFile.Decode(DicomWriter.WriteNative(25, 40, stored, options), "auto.dcm");

        double[] rescaled = stored.Select(v => v * slope + intercept).ToArray();
        double[] sorted = rescaled.Order().ToArray();
        double lo = sorted[(int)Math.Floor(0.005 * 999)], hi = sorted[(int)Math.Ceiling(0.995 * 999)];
        for (int i = 0; i < stored.Length; i++)
            Assert.Equal(Math.Clamp((rescaled[i] - lo) / (hi - lo), 0, 1), image.Pixels[i], 1e-5);
    }

    [Fact]
    public void FirstFrameOfAMultiFrameFile()
    {
        int[] samples = [10, 20, 30, 40, /* frame 2 */ 4000, 4000, 4000, 4000];
        var options = new DicomWriteOptions { BitsStored = 12, Frames = 2, WindowCenter = [25.5], WindowWidth = [31] };
        var image = ImageFile.Decode(DicomWriter.WriteNative(2, 2, samples, options), "frames.dcm");
        // c − 0.5 = 25; (x − 25)/30 + 0.5 between 10 and 40.
        Assert.Equal([0f, (float)((20 - 25) / 30.0 + 0.5), (float)((30 - 25) / 30.0 + 0.5), 1f], image.Pixels);
    }

    [Fact]
    public void RgbNativeBecomesLuma()
    {
        int[] interleaved = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30];
        int[] planar = [255, 0, 0, 10, 0, 255, 0, 20, 0, 0, 255, 30];
        double[] expected = [0.299, 0.587, 0.114, (0.299 * 10 + 0.587 * 20 + 0.114 * 30) / 255];
        var rgb = new DicomWriteOptions { BitsAllocated = 8, SamplesPerPixel = 3, PhotometricInterpretation = "RGB" };
        var a = ImageFile.Decode(DicomWriter.WriteNative(2, 2, interleaved, rgb), "rgb.dcm");
        var b = ImageFile.Decode(DicomWriter.WriteNative(2, 2, planar, rgb with { PlanarConfiguration = 1 }), "planar.dcm");
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(expected[i], a.Pixels[i], 1e-5);
            Assert.Equal(expected[i], b.Pixels[i], 1e-5);
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void SequencesAndMissingPreambleDoNotChangeThePixels(bool explicitVr)
    {
        var random = new Random(11);
        int[] stored = Enumerable.Range(0, 12 * 9).Select(_ => random.Next(4096)).ToArray();
        var plain = TwelveBit(explicitVr);
        var reference = ImageFile.Decode(DicomWriter.WriteNative(9, 12, stored, plain), "plain.dcm");
        foreach (var variant in new[] { plain with { IncludeSequences = true }, plain with { Preamble = false }, plain with { Preamble = false, IncludeSequences = true } })
        {
            byte[] file = DicomWriter.WriteNative(9, 12, stored, variant);
            Assert.Equal(ImageFormat.Dicom, ImageFile.Sniff(file));
            var image = ImageFile.Decode(file, "variant.dcm");
            Assert.Equal(reference.Pixels, image.Pixels);
            Assert.Equal(explicitVr, Dicom.ReadDataset(file, "variant.dcm").ExplicitVr);
        }
    }

    /// <summary>A real one-component JPEG (COVID set) and a three-component one from stb_image_write (which writes gray
    /// content as YCbCr): wrapped in DICOM they decode to the JPEG's own gray values (the latter rounded to 8 bits).</summary>
    [Fact]
    public void EncapsulatedJpegBaselineDecodesLikeTheJpegItself()
    {
        byte[] real = File.ReadAllBytes(CovidJpegs().OrderBy(p => new FileInfo(p).Length).First());
        byte[] written = EncodeJpeg(Pattern(40, 24), 40, 24, 1, quality: 90);
        // Window centre 128, width 256 is the identity on 8-bit values: (x − 127.5)/255 + 0.5 = x/255.
        var identity = new DicomWriteOptions { WindowCenter = [128], WindowWidth = [256], Modality = "CR" };
        foreach (var (jpeg, tolerance) in new[] { (real, 1e-6), (written, 0.5 / 255 + 1e-6) })
        {
            var direct = Jpeg.Decode(jpeg, "frame.jpg");
            foreach (int fragmentSize in new[] { 0, 1000, 2 })
            {
                var image = ImageFile.Decode(DicomWriter.WriteJpeg(direct.Height, direct.Width, [jpeg], identity, fragmentSize), "jpeg.dcm");
                Assert.Equal(ImageFormat.Dicom, image.Source.Format);
                AssertClose(direct.Pixels, image.Pixels, tolerance);
            }
            var inverted = ImageFile.Decode(DicomWriter.WriteJpeg(direct.Height, direct.Width, [jpeg], identity with { PhotometricInterpretation = "MONOCHROME1" }), "jpeg1.dcm");
            AssertClose(direct.Pixels.Select(v => 1 - v).ToArray(), inverted.Pixels, tolerance);
        }
    }

    [Theory]
    [InlineData(true, 0)]
    [InlineData(false, 0)]
    [InlineData(true, 64)]
    [InlineData(false, 64)]
    public void FirstFrameOfMultiFrameJpeg(bool offsetTable, int fragmentSize)
    {
        int width = 16, height = 16;
        byte[] first = EncodeJpeg(Pattern(width, height), width, height, 1);
        byte[] second = EncodeJpeg(Enumerable.Repeat((byte)255, width * height).ToArray(), width, height, 1);
        var options = new DicomWriteOptions { WindowCenter = [128], WindowWidth = [256] };
        var image = ImageFile.Decode(DicomWriter.WriteJpeg(height, width, [first, second, second], options, fragmentSize, offsetTable), "cine.dcm");
        AssertClose(Jpeg.Decode(first, "first.jpg").Pixels, image.Pixels, 0.5 / 255 + 1e-6);
    }

    private static void AssertClose(float[] expected, float[] actual, double tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i], tolerance);
    }

    [Theory]
    [InlineData("1.2.840.10008.1.2.4.92", "JPEG 2000 Part 2 Lossless")]
    [InlineData("1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2")]
    [InlineData("1.2.840.10008.1.2.4.201", "HTJ2K")]
    public void UnsupportedTransferSyntaxIsNamed(string uid, string label)
    {
        byte[] file = DicomWriter.WriteNative(2, 2, [1, 2, 3, 4], new DicomWriteOptions { TransferSyntaxUid = uid });
        var e = Assert.Throws<XrayVLException>(() => ImageFile.Decode(file, "/data/scan.dcm"));
        Assert.StartsWith("/data/scan.dcm: ", e.Message);
        Assert.Contains(label, e.Message);
        Assert.Contains(uid, e.Message);
    }

    [Fact]
    public void HugeRowsAndColumnsAreRefusedBeforeReadingPixels()
    {
        byte[] file = DicomWriter.WriteNative(1, 1, [0], new DicomWriteOptions());
        // Patch Rows and Columns (US values) to 60000: find the elements by their explicit-VR headers.
        Patch(file, [0x28, 0x00, 0x10, 0x00, (byte)'U', (byte)'S', 2, 0], 60000);
        Patch(file, [0x28, 0x00, 0x11, 0x00, (byte)'U', (byte)'S', 2, 0], 60000);
        var e = Assert.Throws<ImageLimitException>(() => ImageFile.Decode(file, "bomb.dcm"));
        Assert.Contains("60000×60000", e.Message);
        Assert.StartsWith("bomb.dcm: ", e.Message);

        static void Patch(byte[] file, byte[] header, ushort value)
        {
            int at = file.AsSpan().IndexOf(header);
            Assert.True(at > 0);
            BitConverter.TryWriteBytes(file.AsSpan(at + 8), value);
        }
    }

    [Fact]
    public void TruncatedDicomFailsNamingTheFile()
    {
        byte[] good = DicomWriter.WriteNative(8, 8, Enumerable.Range(0, 64).ToArray(), TwelveBit(true) with { IncludeSequences = true });
        for (int length = 133; length < good.Length; length += 7)
        {
            var e = Assert.Throws<XrayVLException>(() => ImageFile.Decode(good.AsSpan(0, length), "cut.dcm"));
            Assert.StartsWith("cut.dcm: ", e.Message);
        }
    }

    [Fact]
    public void DeeplyNestedSequencesAreRefusedNotOverflowed()
    {
        // 10,000 nested undefined-length sequences would overflow a naive recursive reader's stack.
        var bytes = new MemoryStream();
        bytes.Write([0x08, 0x00, 0x60, 0x00, (byte)'C', (byte)'S', 2, 0, (byte)'C', (byte)'R']);
        for (int i = 0; i < 10000; i++)
        {
            bytes.Write([0x08, 0x00, 0x32, 0x10, (byte)'S', (byte)'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
            bytes.Write([0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        var e = Assert.Throws<XrayVLException>(() => ImageFile.Decode(bytes.ToArray(), "nested.dcm"));
        Assert.Contains("more than 32 deep", e.Message);
    }
}
