using System.Security.Cryptography;
using System.Text.Json;
using XrayVL.Imaging;
using XrayVL.Tests.Support;

namespace XrayVL.Tests.Imaging;

/// <summary>
/// JPEG 2000 (OpenJPEG), JPEG-LS (CharLS), PALETTE COLOR, 1-bit, 32-bit and float pixel data against pydicom 2.3 with
/// GDCM 3.0.21 (Debian's python3-pydicom and python3-gdcm): expected stored values are SHA-256 of pydicom's pixel_array
/// of frame 1 as little-endian int32 (integer samples of at most 16 bits) or float64 (32-bit and float samples); colour
/// files are compared by the Rec. 601 luma of pydicom's RGB (after apply_color_lut for palettes).
/// Files: Conformance/dicom (committed, see ATTRIBUTION.md) or, for larger ones, the shared copy of the image suites.
/// </summary>
public class DicomCodecConformanceTests
{
    private static string Suite(string file)
    {
        string committed = Path.Combine(AppContext.BaseDirectory, "Imaging", "Conformance", "dicom", file);
        return File.Exists(committed) ? committed : Path.Combine(SharedData.Root, "..", "reference", "image-suites", "dicom", file);
    }

    private static string Hash(int[] values)
    {
        var bytes = new byte[values.Length * 4];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        return Convert.ToHexStringLower(SHA256.HashData(bytes));
    }

    private static string Hash(double[] values)
    {
        var bytes = new byte[values.Length * 8];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        return Convert.ToHexStringLower(SHA256.HashData(bytes));
    }

    /// <summary>
    /// JPEG 2000 and JPEG-LS frames are decoded by system libraries (libopenjp2-7, libcharls2; `.ci/run` installs them
    /// where it can). On a machine without one, the tests of its files are skipped with that reason, and
    /// <see cref="MissingSystemLibraryIsRefusedByName"/> holds the refusal such a machine gives instead.
    /// </summary>
    private static void SkipUnlessCodecInstalled(byte[] data, string file)
    {
        string syntax = Dicom.ReadDataset(data, file).TransferSyntaxUid;
        if (syntax is Dicom.Jpeg2000Lossless or Dicom.Jpeg2000 && !OpenJpeg.IsAvailable)
            Assert.Skip("libopenjp2.so.7 is not installed on this machine (apt-get install libopenjp2-7)");
        if (syntax is Dicom.JpegLsLossless or Dicom.JpegLsNearLossless && !CharLs.IsAvailable)
            Assert.Skip("libcharls.so.2 is not installed on this machine (apt-get install libcharls2)");
    }

    [Theory]
    // JPEG 2000 lossless and lossy (OpenJPEG)
    [InlineData("pydicom__MR_small_jp2klossless.dcm", "b8d9a6cee6ff2ea9edbe8b476e54b80cfab8c6a15aff4d431b6c38840a20f7df")]   // = the uncompressed MR_small
    [InlineData("pydicom__693_J2KI.dcm", "ef7e87ffc722f7f9171381a2efb8597252625654444658c57981eaba1a5eb3e9")]
    [InlineData("fo-dicom__CT1_J2KI", "02648a366bcf6f13e9eda461e7c2ade3940298c83692660c6705ad49827c08a7")]
    [InlineData("pydicom__JPEG2000.dcm", "aaa27310e46c0603620ad0122bc8f89405147c0cbd29de36a1d294a23b25bcba")]
    [InlineData("fo-dicom__GH064.dcm", "7cd6677629fbad8db89cbcd373cab7d66f211b873baf53d27b6a38b318b7b711")]
    // Pixel Representation says unsigned, the codestream signed: readers follow the codestream.
    [InlineData("pydicom__J2K_pixelrep_mismatch.dcm", "22e412dd68b03a321ae228724c7d785d9142459e4166e2a42a6ef8025c886b90")]
    // JPEG-LS lossless and near-lossless (CharLS)
    [InlineData("pydicom__MR_small_jpeg_ls_lossless.dcm", "b8d9a6cee6ff2ea9edbe8b476e54b80cfab8c6a15aff4d431b6c38840a20f7df")]
    [InlineData("pydicom-data__JLSL_08_07_0_1F.dcm", "0363015f31f5ee7feb1a6cee4ff528e2a18ea3cddaddc54d2139c6e98a7919fc")]
    // Signed 15-bit: GDCM 3.0 returns the raw 16-bit words (7 … 32760); the expected values are those sign-extended
    // from bit 14 (−16384 … 16383), as Pixel Representation 1 with Bits Stored 15 means.
    [InlineData("pydicom-data__JLSL_16_15_1_1F.dcm", "83aca7c96e3945e84ae944a1b2a84515107f88e9a1d19701ffd2f6d2861247cc")]
    [InlineData("fo-dicom__GH364.dcm", "78a4acde68e420d22fd17c12387854c359f5dd3c3fb34ba47302f5a03db97647")]
    [InlineData("pydicom__JPEGLSNearLossless_08.dcm", "832dd54ff071afd508cc35006a69ebb2b6ea6f4147c06f31c1842cf199421917")]
    [InlineData("pydicom__JPEGLSNearLossless_16.dcm", "1d1ea445c998e392aa887448ec75ee5f9e66f7942127f128801f6ff6df2bada8")]
    // 1-bit segmentation masks, packed least significant bit first
    [InlineData("pydicom__liver_1frame.dcm", "36ed5e257c356eca6de297967f3081aac0f6565ac30bbf2413e7aed44ede2089")]
    public void StoredValuesMatchPydicomWithGdcm(string file, string sha256)
    {
        byte[] data = File.ReadAllBytes(Suite(file));
        SkipUnlessCodecInstalled(data, file);
        Assert.Equal(sha256, Hash(Dicom.DecodeStoredValues(data, file)));
        var image = ImageFile.Decode(data, file);
        Assert.All(image.Pixels, v => Assert.InRange(v, 0f, 1f));
        Assert.True(image.Pixels.Max() > image.Pixels.Min(), "a flat image");
    }

    [Theory]
    [InlineData("pydicom__rtdose_1frame.dcm", "806b9f770b009904ef95f862edad58086f617412d9a410249a80252a7b845ae6")]         // 32-bit unsigned
    [InlineData("pydicom__rtdose.dcm", "806b9f770b009904ef95f862edad58086f617412d9a410249a80252a7b845ae6")]                // 15 frames: frame 1
    [InlineData("pydicom-data__parametric_map_float.dcm", "e776c51ab3b2714a8ba5c44903cd5c5968bae0462dd2efec8dbbc01ef165b1a4")]
    [InlineData("pydicom-data__parametric_map_double_float.dcm", "10ba9bdb66165a13309c3d9840e6e36d1ec797a58f55e05845013af8ebd680d5")]
    [InlineData("pydicom-data__liver.dcm", "0c01d1aacfddf462d8c1d22a6d33c1dfc893bce3bd43f7d0cd22df9ee7591e27")]                // 1-bit, 3 frames
    [InlineData("pydicom-data__liver_nonbyte_aligned.dcm", "1da90be89ca45ed0583e7fb0bb88c58e9637d5ed75311434fc16eecddb8cfe98")]
    public void WideFloatAndBitSamplesMatchPydicom(string file, string sha256)
    {
        byte[] data = File.ReadAllBytes(Suite(file));
        Assert.Equal(sha256, Hash(Dicom.DecodeSampleValues(data, file)));
        var image = ImageFile.Decode(data, file);
        Assert.All(image.Pixels, v => Assert.InRange(v, 0f, 1f));
        Assert.True(image.Pixels.Max() > image.Pixels.Min(), "a flat image");
    }

    /// <summary>The window of wide samples is the 0.5–99.5 percentile range: the brightest dose is white, the lowest black.</summary>
    [Fact]
    public void ThirtyTwoBitDoseMapIsWindowedOverItsRange()
    {
        byte[] data = File.ReadAllBytes(Suite("pydicom__rtdose_1frame.dcm"));
        double[] dose = Dicom.DecodeSampleValues(data, "dose");
        Assert.Equal((795000.0, 1254000.0), (dose.Min(), dose.Max()));   // pydicom's pixel_array
        var image = ImageFile.Decode(data, "dose");
        Assert.Equal(1f, image.Pixels[Array.IndexOf(dose, dose.Max())]);
        Assert.Equal(0f, image.Pixels[Array.IndexOf(dose, dose.Min())]);
    }

    /// <summary>Colour: gray is the Rec. 601 luma of pydicom's RGB over the samples' full range (mean, first, middle and
    /// last pixel); palettes through pydicom's apply_color_lut.</summary>
    [Theory]
    [InlineData("pydicom__SC_rgb_jls_lossy_line.dcm", 0.501960784, 0.299, 0.565686275, 1.0)]         // JPEG-LS, line interleaved
    [InlineData("pydicom__SC_rgb_jls_lossy_sample.dcm", 0.501960784, 0.299, 0.565686275, 1.0)]       // JPEG-LS, sample interleaved
    [InlineData("pydicom__GDCMJ2K_TextGBR.dcm", 0.490284829, 0.501960784, 0.501960784, 0.501960784)] // JPEG 2000, YBR_RCT
    [InlineData("pydicom-data__SC_rgb_32bit.dcm", 0.500784314, 0.299, 0.558737255, 1.0)]            // 32-bit RGB
    [InlineData("pydicom-data__SC_rgb_32bit_2frame.dcm", 0.500784314, 0.299, 0.558737255, 1.0)]
    [InlineData("pydicom__examples_palette.dcm", 0.076055741, 0.227241749, 0.003906310, double.NaN)] // 16-bit palette
    [InlineData("pydicom-data__OBXXXX1A.dcm", 0.046274606, 0.227241749, 0.003906310, double.NaN)]
    [InlineData("fo-dicom__TestPattern_Palette.dcm", 0.468177295, 1.0, 0.631372549, double.NaN)]     // 8-bit palette
    [InlineData("fo-dicom__TestPattern_Palette_16.dcm", 0.468177295, 1.0, 0.631372549, double.NaN)]
    public void ColourAndPaletteFilesBecomeTheirLuma(string file, double mean, double first, double middle, double last)
    {
        byte[] data = File.ReadAllBytes(Suite(file));
        SkipUnlessCodecInstalled(data, file);
        var image = ImageFile.Decode(data, file);
        Assert.Equal(mean, image.Pixels.Average(v => (double)v), 1e-4);
        Assert.Equal(first, image[0, 0], 1e-4);
        Assert.Equal(middle, image[image.Width / 2, image.Height / 2], 1e-4);
        if (!double.IsNaN(last)) Assert.Equal(last, image[image.Width - 1, image.Height - 1], 1e-4);
    }

    /// <summary>Uncompressed YBR_FULL and YBR_FULL_422: gray is Y, which differs from the luma of pydicom's RGB
    /// conversion by its rounding to whole RGB values only.</summary>
    [Theory]
    [InlineData("pydicom__SC_ybr_full_422_uncompressed.dcm")]
    [InlineData("pydicom-data__SC_ybr_full_uncompressed.dcm")]
    public void UncompressedYbrBecomesItsLuma(string file)
    {
        var image = ImageFile.Decode(File.ReadAllBytes(Suite(file)), file);
        Assert.Equal(0.500750784, image.Pixels.Average(v => (double)v), 2e-3);
        Assert.Equal(0.297827451, image[0, 0], 5e-3);
        Assert.Equal(0.559823529, image[50, 50], 5e-3);
        Assert.Equal(1.0, image[99, 99], 5e-3);
    }

    /// <summary>The pydicom test file whose J2K header holds the bytes of a sequence delimiter (FE FF DD E0) in place of
    /// the image width: the codestream is corrupt (GDCM logs OpenJPEG's errors and returns made-up pixels), so it is
    /// refused, in one line.</summary>
    [Fact]
    public void CorruptJpeg2000HeaderIsRefused()
    {
        byte[] data = File.ReadAllBytes(Suite("pydicom__JPEG2000-embedded-sequence-delimiter.dcm"));
        SkipUnlessCodecInstalled(data, "x.dcm");
        var e = Assert.Throws<XrayVLException>(() => ImageFile.Decode(data, "x.dcm"));
        Assert.StartsWith("x.dcm: corrupt or unsupported encapsulated JPEG 2000 frame (header", e.Message);
    }

    /// <summary>A codestream cut short is refused (OpenJPEG in strict mode, CharLS by its own checks), in one line that
    /// names the file, never decoded to the part that arrived.</summary>
    [Theory]
    [InlineData("pydicom__693_J2KI.dcm", "JPEG 2000")]
    [InlineData("pydicom__MR_small_jp2klossless.dcm", "JPEG 2000")]
    [InlineData("pydicom__MR_small_jpeg_ls_lossless.dcm", "JPEG-LS")]
    [InlineData("pydicom-data__JLSL_08_07_0_1F.dcm", "JPEG-LS")]
    public void TruncatedCodestreamsAreRefused(string file, string codec)
    {
        byte[] data = File.ReadAllBytes(Suite(file));
        SkipUnlessCodecInstalled(data, file);
        byte[] cut = DicomTestFiles.TruncateFirstFragment(data, keep: 0.6);
        var e = Assert.ThrowsAny<XrayVLException>(() => ImageFile.Decode(cut, "cut.dcm"));
        Assert.StartsWith("cut.dcm: ", e.Message);
        Assert.Contains(codec, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    /// <summary>Where a codec's system library is missing, the refusal names the file, the library and the package.</summary>
    [Fact]
    public void MissingSystemLibraryIsRefusedByName()
    {
        var absent = new NativeLibraryHandle("libxrayvl-no-such-codec.so.1", "libno-such-codec1", "JPEG 2000 decoding");
        Assert.False(absent.IsAvailable);
        var e = Assert.Throws<XrayVLException>(() => absent.Require("scan.dcm"));
        Assert.Equal("scan.dcm: JPEG 2000 decoding needs the system library libxrayvl-no-such-codec.so.1, which is not installed " +
            "(on Debian or Ubuntu: apt-get install libno-such-codec1)", e.Message);
    }

    /// <summary>Of the 48 manifest files that pydicom + GDCM decode (../shared/reference/image-suites), how many this
    /// reader decodes; the rest must be refused in one line naming the file.</summary>
    [Fact]
    public void ManifestDecodeCount()
    {
        if (!OpenJpeg.IsAvailable || !CharLs.IsAvailable)
            Assert.Skip("the count needs both codec libraries (apt-get install libopenjp2-7 libcharls2)");
        string root = Path.Combine(SharedData.Root, "..", "reference", "image-suites");
        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "manifest.json")));
        var decoded = new List<string>();
        var refused = new List<string>();
        foreach (var entry in manifest.RootElement.EnumerateArray())
        {
            string file = entry.GetProperty("file").GetString()!;
            if (!file.StartsWith("dicom/", StringComparison.Ordinal) || entry.GetProperty("expect").GetString() != "decode") continue;
            try
            {
                ImageFile.Decode(File.ReadAllBytes(Path.Combine(root, file)), "f.dcm");
                decoded.Add(file);
            }
            catch (XrayVLException e)
            {
                Assert.StartsWith("f.dcm: ", e.Message);
                refused.Add($"{file}: {e.Message}");
            }
        }
        Assert.Equal(48, decoded.Count + refused.Count);
        // The one refusal is the corrupt codestream of CorruptJpeg2000HeaderIsRefused.
        Assert.True(decoded.Count == 47, $"{decoded.Count} of 48 decode; refused:\n{string.Join("\n", refused)}");
        Assert.StartsWith("dicom/pydicom__JPEG2000-embedded-sequence-delimiter.dcm: ", Assert.Single(refused));
    }
}

/// <summary>Edits of encapsulated DICOM files for tests.</summary>
internal static class DicomTestFiles
{
    /// <summary>The file with its first pixel-data fragment cut to <paramref name="keep"/> of its length (item length
    /// fixed, later fragments dropped, the sequence closed): a valid DICOM file whose codestream ends early.</summary>
    public static byte[] TruncateFirstFragment(byte[] data, double keep)
    {
        // The pixel data element (7FE0,0010) with undefined length, explicit ("OB", 2 reserved bytes) or implicit VR.
        ReadOnlySpan<byte> tag = [0xE0, 0x7F, 0x10, 0x00];
        int at = data.AsSpan().LastIndexOf(tag);
        Assert.True(at >= 0, "no pixel data element");
        int pos = at + 4 + (data[at + 4] == (byte)'O' ? 8 : 4);
        Assert.Equal(0xFFFFFFFFu, BitConverter.ToUInt32(data, pos - 4));
        uint botLength = BitConverter.ToUInt32(data, pos + 4);
        int fragment = pos + 8 + (int)botLength;            // first fragment's item header
        int length = (int)BitConverter.ToUInt32(data, fragment + 4);
        int kept = (int)(length * keep) & ~1;
        var output = new List<byte>(data[..fragment]);
        output.AddRange([0xFE, 0xFF, 0x00, 0xE0]);
        output.AddRange(BitConverter.GetBytes((uint)kept));
        output.AddRange(data.AsSpan(fragment + 8, kept).ToArray());
        output.AddRange([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        return [.. output];
    }
}
