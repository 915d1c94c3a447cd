using System.Security.Cryptography;
using XrayVL.Imaging;
using XrayVL.Tests.Support;

namespace XrayVL.Tests.Imaging;

/// <summary>
/// Third-party DICOM files in each transfer syntax (Conformance/dicom, see ATTRIBUTION.md) against pydicom 2.3:
/// expected stored values are SHA-256 of pydicom's pixel_array as little-endian int32 (for JPEG-compressed files, of
/// the file after DCMTK's dcmdjpeg decompressed it, since pydicom here has no lossless or 12-bit JPEG decoder).
/// </summary>
public class DicomConformanceTests
{
    private static string Suite(string file) => Path.Combine(AppContext.BaseDirectory, "Imaging", "Conformance", "dicom", file);

    /// <summary>The shared copy of the image suites (larger files not committed here), as CI has it.</summary>
    private static string Shared(string file) => Path.Combine(SharedData.Root, "..", "reference", "image-suites", "dicom", file);

    private static string Hash(int[] values)
    {
        var bytes = new byte[values.Length * 4];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);   // little-endian on every platform .NET runs this on
        return Convert.ToHexStringLower(SHA256.HashData(bytes));
    }

    [Theory]
    [InlineData("pydicom__MR_small_RLE.dcm", "b8d9a6cee6ff2ea9edbe8b476e54b80cfab8c6a15aff4d431b6c38840a20f7df")]          // RLE lossless, signed 16-bit
    [InlineData("pydicom__MR_small_bigendian.dcm", "b8d9a6cee6ff2ea9edbe8b476e54b80cfab8c6a15aff4d431b6c38840a20f7df")]    // explicit VR big endian
    [InlineData("pydicom__MR_small_expb.dcm", "b8d9a6cee6ff2ea9edbe8b476e54b80cfab8c6a15aff4d431b6c38840a20f7df")]         // explicit VR big endian
    [InlineData("pydicom__image_dfl.dcm", "3ae25f749a71a0f30203397e76a96bee083557a1ff96a0efaa5332ce3a8563a6")]             // deflated
    [InlineData("fo-dicom__GH227.dcm", "3ae25f749a71a0f30203397e76a96bee083557a1ff96a0efaa5332ce3a8563a6")]                // deflated
    [InlineData("pydicom__JPEG-lossy.dcm", "5a14dfd887a29ac84e9b77a76b38509438bd5a6fe42cbfac137b348ccdfaabca")]            // 12-bit JPEG extended
    [InlineData("fo-dicom__GH184.dcm", "25618881673636325c475c4b7a609df1d4e225b6ae1d2f5251e3c42949de2f12")]                // JPEG lossless SV1
    public void StoredValuesMatchTheReference(string file, string sha256)
    {
        Assert.Equal(sha256, Hash(Dicom.DecodeStoredValues(File.ReadAllBytes(Suite(file)), file)));
        var image = ImageFile.Load(Suite(file));
        Assert.All(image.Pixels, v => Assert.InRange(v, 0f, 1f));
    }

    /// <summary>A real CR chest radiograph as PACS export it: JPEG lossless SV1, MONOCHROME1, and a Modality LUT Sequence
    /// (which replaces rescale slope and intercept); and a CT slice in RLE with several fragments per frame.</summary>
    [Fact]
    public void RealCrWithModalityLutAndFragmentedRle()
    {
        byte[] cr = File.ReadAllBytes(Shared("cxr-dicom__CR-ModalitySequenceLUT.dcm"));
        int[] stored = Dicom.DecodeStoredValues(cr, "cr.dcm");
        Assert.Equal("d224e9a2fa49fa2553f6e4c71d1da95659cced581d2f4fb21fc3e8b9582b476e", Hash(stored));
        var ds = Dicom.ReadDataset(cr, "cr.dcm");
        Assert.NotNull(ds.ModalityLut);
        Assert.Equal((0, 16, 1024), (ds.ModalityLut.First, ds.ModalityLut.Bits, ds.ModalityLut.Data.Length));
        // pydicom's apply_modality_lut on the same file.
        Assert.Equal("5e1ab5d79590b569a6a2e3ab98af8fb081105fd044524826e817881dcb8ebba0", Hash(stored.Select(ds.ModalityLut.Apply).ToArray()));
        var image = ImageFile.Decode(cr, "cr.dcm");
        Assert.Equal((1976, 1576), (image.Width, image.Height));
        // MONOCHROME1: the highest modality output is the darkest pixel.
        int brightest = Array.IndexOf(stored, stored.MaxBy(ds.ModalityLut.Apply));
        Assert.True(image.Pixels[brightest] < 0.05f, $"{image.Pixels[brightest]}");

        byte[] rle = File.ReadAllBytes(Shared("fo-dicom__D_CLUNIE_CT1_RLE_FRAGS.dcm"));
        Assert.Equal("824141bed775b72b8c85c7a7d20073ba60314b4df4067746316120574db42594", Hash(Dicom.DecodeStoredValues(rle, "rle.dcm")));
    }

    /// <summary>Colour files: gray is the Rec. 601 luma of the reference RGB (pydicom's unless said; mean and three pixels).</summary>
    [Theory]
    [InlineData("pydicom__ExplVR_BigEnd.dcm", 0.872296887254902, 0.6705882352941176, 0.886, 0.8330549019607842, 1e-4)]
    [InlineData("pydicom__SC_rgb_rle.dcm", 0.5007843137254903, 0.299, 0.5587372549019607, 1.0, 1e-4)]
    [InlineData("pydicom__SC_rgb_rle_16bit.dcm", 0.5007843137254903, 0.299, 0.5587372549019608, 1.0, 1e-4)]
    // 8-bit samples in OW words, which big endian byte-swaps (PS3.5 A.3): the reference is DCMTK's dcmconv to little
    // endian (pydicom 2.3 reads these bytes unswapped).
    [InlineData("pydicom__SC_rgb_small_odd_big_endian.dcm", 0.5049660130718955, 0.5424666666666667, 0.3528235294117647, 0.6196078431372549, 1e-4)]
    // 8-bit colour in the JPEG extended syntax with a JFIF marker, so YCbCr: the reference is libjpeg (PIL) on the
    // frame. (pydicom 2.3 trusts PhotometricInterpretation RGB here and skips the colour conversion.)
    [InlineData("fo-dicom__GH195.dcm", 0.6280783219532743, 0.6711490196078431, 0.6899098039215686, 0.38077254901960783, 1e-4)]
    public void ColourFilesBecomeTheirLuma(string file, double mean, double first, double middle, double last, double tolerance)
    {
        var image = ImageFile.Load(Suite(file));
        Assert.Equal(mean, image.Pixels.Average(v => (double)v), tolerance);
        Assert.Equal(first, image[0, 0], tolerance);
        Assert.Equal(middle, image[image.Width / 2, image.Height / 2], tolerance);
        Assert.Equal(last, image[image.Width - 1, image.Height - 1], tolerance);
    }

    /// <summary>What is deliberately not supported is refused in one line that says what and why (JPEG 2000, JPEG-LS,
    /// palettes, 32-bit and float pixel data, refused before, now decode: DicomCodecConformanceTests).</summary>
    [Theory]
    [InlineData("PALETTE COLOR", 1, "PALETTE COLOR image lacks its Red Palette Color Lookup Table Descriptor or Data")]
    [InlineData("YBR_PARTIAL_422", 3, "PhotometricInterpretation YBR_PARTIAL_422 with 3 sample(s) per pixel is not supported")]
    [InlineData("MONOCHROME2", 2, "SamplesPerPixel 2 (1 or 3 supported)")]
    public void UnsupportedKindsAreRefusedByName(string photometric, int samples, string reason)
    {
        byte[] file = DicomWriter.WriteNative(2, 2, new int[4 * samples],
            new DicomWriteOptions { BitsAllocated = 8, PhotometricInterpretation = photometric, SamplesPerPixel = samples });
        var e = Assert.Throws<XrayVLException>(() => ImageFile.Decode(file, "/data/x.dcm"));
        Assert.StartsWith("/data/x.dcm: ", e.Message);
        Assert.Contains(reason, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    /// <summary>A lossless JPEG frame cut short inside a DICOM file, with an end-of-image marker appended, is refused.</summary>
    [Fact]
    public void TruncatedEncapsulatedFrameIsRefused()
    {
        byte[] file = File.ReadAllBytes(Suite("fo-dicom__GH184.dcm"));
        // The frame is the last fragment: cut it in half, end it with FF D9, fix the item length, end the sequence.
        int soi = file.AsSpan().LastIndexOf([(byte)0xFF, (byte)0xD8, (byte)0xFF]);
        int itemLength = BitConverter.ToInt32(file, soi - 4);
        int keep = itemLength / 2 & ~1;
        var cut = file.AsSpan(0, soi + keep).ToArray().Concat(new byte[] { 0xFF, 0xD9 }).ToArray();
        BitConverter.GetBytes(keep + 2).CopyTo(cut, soi - 4);
        cut = [.. cut, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0];
        var e = Assert.Throws<XrayVLException>(() => ImageFile.Decode(cut, "cut.dcm"));
        Assert.StartsWith("cut.dcm: encapsulated JPEG frame is truncated or corrupt", e.Message);
    }

    /// <summary>Pixel Padding Value: the padding (here the most common stored value of a real CT slice) is black and is
    /// left out of the automatic window, so the window comes from the patient's pixels only.</summary>
    [Fact]
    public void PixelPaddingIsBlackAndOutsideTheWindow()
    {
        byte[] ct = File.ReadAllBytes(Shared("fo-dicom__D_CLUNIE_CT1_RLE_FRAGS.dcm"));
        var ds = Dicom.ReadDataset(ct, "ct.dcm");
        Assert.NotNull(ds.Padding);
        int[] stored = Dicom.DecodeStoredValues(ct, "ct.dcm");
        var image = ImageFile.Decode(ct, "ct.dcm");
        var (low, high) = ds.Padding.Value;
        int padded = 0;
        for (int i = 0; i < stored.Length; i++)
            if (stored[i] >= low && stored[i] <= high) { Assert.Equal(0f, image.Pixels[i]); padded++; }
        Assert.True(padded > 1000, $"{padded} padding pixels");
        // Without the padding rule the window's low end would be the padding value itself.
        var (windowLow, _) = DicomRendering.PercentileRange(stored, -32768, 32767, 0.005, 0.995, ds.Padding);
        Assert.True(windowLow > high, $"window starts at {windowLow}, padding up to {high}");
    }

    /// <summary>A VOI LUT Sequence (no window attributes) is the display transform: here one that inverts 8-bit values.
    /// The sequence is encoded by hand (PS3.5 7.5, undefined lengths) and put before the pixel data.</summary>
    [Fact]
    public void VoiLutSequenceIsAppliedWhenThereIsNoWindow()
    {
        int[] samples = Enumerable.Range(0, 256).ToArray();
        byte[] file = DicomWriter.WriteNative(16, 16, samples, new DicomWriteOptions { BitsAllocated = 8 });
        var lut = new List<byte>();
        for (int i = 0; i < 256; i++) lut.AddRange(BitConverter.GetBytes((ushort)(255 - i)));
        byte[] sequence =
        [
            0x28, 0x00, 0x10, 0x30, (byte)'S', (byte)'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
            0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF,
            0x28, 0x00, 0x02, 0x30, (byte)'U', (byte)'S', 6, 0, 0x00, 0x01, 0, 0, 8, 0,       // 256 entries, first 0, 8 bits
            0x28, 0x00, 0x06, 0x30, (byte)'O', (byte)'W', 0, 0, 0x00, 0x02, 0, 0, .. lut,     // 512 bytes
            0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0,
            0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0,
        ];
        int pixelData = file.AsSpan().LastIndexOf([(byte)0xE0, (byte)0x7F, (byte)0x10, (byte)0x00]);
        byte[] withLut = [.. file.AsSpan(0, pixelData), .. sequence, .. file.AsSpan(pixelData)];
        var ds = Dicom.ReadDataset(withLut, "voi.dcm");
        Assert.Null(ds.WindowCenter);
        Assert.NotNull(ds.VoiLut);
        var plain = ImageFile.Decode(file, "plain.dcm");
        var inverted = ImageFile.Decode(withLut, "voi.dcm");
        for (int i = 0; i < 256; i++) Assert.Equal(1 - i / 255f, inverted.Pixels[i], 1e-6);
        Assert.True(plain.Pixels[255] > plain.Pixels[0]);
    }
}
