using System.Security.Cryptography;
using XrayVL.Imaging;

namespace XrayVL.Tests.Imaging;

/// <summary>
/// Third-party JPEG test files (Conformance/jpeg, see ATTRIBUTION.md) that a decoder must either decode as libjpeg does
/// or refuse; and the failure modes a reader must refuse rather than turn into garbage: a frame with no scan, data cut
/// short with an end-of-image marker appended, tables the file does not define, and files built to burn CPU.
/// Expected pixels are libjpeg-turbo 2.1.5's (Debian's python3-pil 9.4), as SHA-256 of its 8-bit output.
/// </summary>
public class JpegConformanceTests
{
    private static string Suite(string file) => Path.Combine(AppContext.BaseDirectory, "Imaging", "Conformance", "jpeg", file);

    private static byte[] Bytes(JpegDecoder.Frame f) => f.Data.Select(v => (byte)v).ToArray();

    [Theory]
    [InlineData("jpeg-crashtest__imagetestsuite_28c74d9284d9836017fd519f6932efd8.jpg", 140, 140, 3, "aa9e9eec913e7cec8c4019f7570b2f132ddb1035f2f0f5e93a3ce35c8ae533ee")]
    // Motion-JPEG: no Huffman tables in the file; the standard ones of T.81 Annex K apply.
    [InlineData("jpeg-reftest__mjpeg.jpg", 960, 720, 3, "49a8894fcd4e353bc7b00bf8c08e102bea0923d62e90cc7db21adfd611e372b7")]
    // Progressive, with the DC scan missing: the DC coefficients are zero, not whatever memory held.
    [InlineData("jpeg-reftest__progressive-missing-dc.jpg", 8, 8, 1, "028ce0f404c7c0fd36b0d6ae9fae0fe53a67269c016ea3320ffff0a555fec078")]
    public void DecodesExactlyAsLibjpeg(string file, int width, int height, int channels, string sha256)
    {
        var frame = Jpeg.DecodeFrame(File.ReadAllBytes(Suite(file)), file);
        Assert.Equal((width, height, channels, 8), (frame.Width, frame.Height, frame.Channels, frame.Precision));
        Assert.Equal(sha256, Convert.ToHexStringLower(SHA256.HashData(Bytes(frame))));
    }

    /// <summary>Progressive with partial scans: the refinement bits that never come are zero. libjpeg additionally smooths
    /// such blocks with their neighbours' DC values (a heuristic this decoder does not copy), hence a small tolerance.</summary>
    [Fact]
    public void PartialProgressiveIsCloseToLibjpegAndDeterministic()
    {
        const string file = "jpeg-reftest__partial_progressive.jpg";
        byte[] reference = Convert.FromHexString("be47339e00ffff60ffb55f009e00e7be4441a1196bffaa00ff7fb9a21e57b93d45a4178ab52e7dff6affa5300fb64d00");
        byte[] data = File.ReadAllBytes(Suite(file));
        var first = Bytes(Jpeg.DecodeFrame(data, file));
        // Garbage left on the heap must not reach the output: decode again after filling freed memory.
        for (int i = 0; i < 64; i++) GC.KeepAlive(Enumerable.Repeat((byte)0xA5, 1 << 16).ToArray());
        var second = Bytes(Jpeg.DecodeFrame(data, file));
        Assert.Equal(first, second);
        Assert.Equal(reference.Length, first.Length);
        Assert.All(first.Zip(reference), p => Assert.InRange(Math.Abs(p.First - p.Second), 0, 12));
    }

    /// <summary>libjpeg stops with a fatal error on these (two SOF markers, bogus lengths, tables or progressive
    /// parameters, unsupported markers or processes, no scan), or finds their data cut short.</summary>
    [Theory]
    [InlineData("jpeg-crashtest__imagetestsuite_2c9e7a1805f8b47630bbb83d21bf8222.jpg")]
    [InlineData("jpeg-crashtest__imagetestsuite_40bb78b1ac031125a6d8466b374962a8.jpg")]
    [InlineData("jpeg-crashtest__imagetestsuite_5315c35bbcc28d8eee419028ac9f38e0.jpg")]
    [InlineData("jpeg-crashtest__imagetestsuite_72d091e08c93c9e590360130fa35221b.jpg")]
    [InlineData("jpeg-crashtest__imagetestsuite_8546907dbe574744d7fea6ca9de1de6b.jpg")]
    [InlineData("jpeg-crashtest__imagetestsuite_96b3e939852157613fa2e48d58fe35fe.jpg")]
    [InlineData("jpeg-crashtest__imagetestsuite_a17806f32b45d63eea5230e7893e1f15.jpg")]
    [InlineData("jpeg-crashtest__imagetestsuite_b0b8914cc5f7a6eff409f16d8cc236c5.jpg")]
    [InlineData("jpeg-crashtest__imagetestsuite_b4103df93880fc5677c2a081e4bfc712.jpg")]
    [InlineData("jpeg-crashtest__imagetestsuite_c52ffdd6a0346c4d09271f8ccbdfd5a3.jpg")]
    [InlineData("jpeg-crashtest__imagetestsuite_f006e96f3b27fdfaa075322d759ea2e8.jpg")]
    [InlineData("jpeg-crashtest__missing-sos.jpg")]
    // A bogus marker inside the entropy-coded data ends a restart interval early: libjpeg fills the rest of that interval
    // with gray (warning "premature end of data segment"); part of the image is missing, so it is refused here.
    [InlineData("jpeg-crashtest__imagetestsuite_7997b6b229f25315d33f5c7085e37500.jpg")]
    public void CorruptFilesAreRefusedInOneLineNamingTheFile(string file)
    {
        var e = Assert.Throws<XrayVLException>(() => ImageFile.Load(Suite(file)));
        Assert.StartsWith(Suite(file) + ": ", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.DoesNotContain("internal", e.Message);
    }

    [Fact]
    public void FrameWithoutAScanIsRefused()
    {
        // SOI, the tables and SOF of a real file, then EOI: a decoder that allocates the frame and outputs it shows memory.
        byte[] good = Convert.FromBase64String(JpegTests.BaselineGray32x24);
        int sos = IndexOfMarker(good, 0xDA);
        byte[] noScan = [.. good.AsSpan(0, sos), 0xFF, 0xD9];
        var e = Assert.Throws<XrayVLException>(() => ImageFile.Decode(noScan, "noscan.jpg"));
        Assert.Equal("noscan.jpg: corrupt JPEG (no image data (no start-of-scan marker))", e.Message);
    }

    [Fact]
    public void DataCutShortWithEndOfImageAppendedIsRefused()
    {
        byte[] good = File.ReadAllBytes(ImagingFixtures.CovidJpegs()[0]);
        ImageFile.Decode(good, "whole.jpg");
        int sos = IndexOfMarker(good, 0xDA);
        foreach (double fraction in new[] { 0.25, 0.5, 0.9 })
        {
            int cut = sos + (int)((good.Length - sos) * fraction);
            byte[] cutWithEoi = [.. good.AsSpan(0, cut), 0xFF, 0xD9];
            var e = Assert.Throws<XrayVLException>(() => ImageFile.Decode(cutWithEoi, "half.jpg"));
            Assert.StartsWith("half.jpg: JPEG is truncated or corrupt (its image data ends at unit ", e.Message);
        }
    }

    [Fact]
    public void ProgressiveDataCutAtAScanIsRefused()
    {
        byte[] progressive = Convert.FromBase64String(JpegTests.ProgressiveGray32x24);
        // Cut inside the second scan's data, then end the file properly.
        int first = IndexOfMarker(progressive, 0xDA), second = IndexOfMarker(progressive, 0xDA, first + 2);
        int next = IndexOfMarker(progressive, 0xC4, second + 2) is int dht and > 0 ? dht : IndexOfMarker(progressive, 0xDA, second + 2);
        int cut = second + 12 + (next - second - 12) / 2;
        byte[] bad = [.. progressive.AsSpan(0, cut), 0xFF, 0xD9];
        Assert.Throws<XrayVLException>(() => ImageFile.Decode(bad, "cut-progressive.jpg"));
    }

    [Fact]
    public void MissingHuffmanTablesUseTheStandardOnesOrAreRefused()
    {
        // cjpeg without -optimize codes with the standard tables, so removing its DHT segments changes nothing.
        byte[] good = Convert.FromBase64String(JpegTests.BaselineGray32x24);
        byte[] withoutTables = RemoveSegments(good, 0xC4);
        Assert.True(withoutTables.Length < good.Length - 100);
        Assert.Equal(ImageFile.Decode(good, "a.jpg").Pixels, ImageFile.Decode(withoutTables, "b.jpg").Pixels);

        // A scan that asks for table slot 2, which neither the file nor the standard defines, is refused.
        byte[] slot2 = (byte[])withoutTables.Clone();
        int sos = IndexOfMarker(slot2, 0xDA);
        slot2[sos + 6] = 0x22;   // Td = Ta = 2 for the one component
        var e = Assert.Throws<XrayVLException>(() => ImageFile.Decode(slot2, "slot2.jpg"));
        Assert.Contains("Huffman table that the file does not define", e.Message);
    }

    [Fact]
    public void ScanCountIsBounded()
    {
        // A progressive file with 600 extra DC refinement scans (each valid: Ah=1, Al=0, 12 blocks = 12 bits).
        byte[] progressive = Convert.FromBase64String(JpegTests.ProgressiveGray32x24);
        int eoi = progressive.Length - 2;
        var extra = new List<byte>();
        for (int i = 0; i < 600; i++) extra.AddRange([0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00]);
        byte[] many = [.. progressive.AsSpan(0, eoi), .. extra, 0xFF, 0xD9];
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var e = Assert.Throws<XrayVLException>(() => ImageFile.Decode(many, "scans.jpg"));
        Assert.Contains($"more than {JpegDecoder.MaxScans} scans", e.Message);
        Assert.True(watch.ElapsedMilliseconds < 2000, $"{watch.ElapsedMilliseconds} ms");
    }

    [Fact]
    public void WorkPerFileIsBounded()
    {
        // AC scans over all 63 coefficients of all 12 blocks, each block an end-of-band (code 1010 in the standard table):
        // a few bytes per scan, 756 coefficient visits each; 40 of them exceed the bound of 32 passes.
        byte[] progressive = Convert.FromBase64String(JpegTests.ProgressiveGray32x24);
        int eoi = progressive.Length - 2;
        var extra = new List<byte>();
        extra.AddRange(StandardAcLuminanceDht());
        for (int i = 0; i < 40; i++)
            extra.AddRange([0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x01, 0x3F, 0x00, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA]);
        byte[] heavy = [.. progressive.AsSpan(0, eoi), .. extra, 0xFF, 0xD9];
        var e = Assert.Throws<XrayVLException>(() => ImageFile.Decode(heavy, "work.jpg"));
        Assert.Contains($"more than {JpegDecoder.MaxPasses} times", e.Message);
        // The same with 10 such scans is a valid file and decodes.
        byte[] fine = [.. progressive.AsSpan(0, eoi), .. extra.Take(StandardAcLuminanceDht().Length + 10 * 16), 0xFF, 0xD9];
        Assert.Equal(32, ImageFile.Decode(fine, "ten.jpg").Width);
    }

    [Fact]
    public void DecodeMemoryIsCheckedBeforeAllocating()
    {
        byte[] good = File.ReadAllBytes(ImagingFixtures.CovidJpegs()[0]);
        var tight = new ImageLimits { MaxDecodeBytes = 100_000 };
        var e = Assert.Throws<ImageLimitException>(() => ImageFile.Decode(good, "big.jpg", tight));
        Assert.StartsWith("big.jpg: decoding this JPEG needs ", e.Message);
    }

    private static byte[] StandardAcLuminanceDht()
    {
        byte[] counts = Convert.FromHexString("0002010303020403050504040000017d");
        byte[] symbols = Convert.FromHexString(
            "01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435363738393a" +
            "434445464748494a535455565758595a636465666768696a737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aa" +
            "b2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9fa");
        int length = 2 + 1 + 16 + symbols.Length;
        return [0xFF, 0xC4, (byte)(length >> 8), (byte)length, 0x10, .. counts, .. symbols];
    }

    /// <summary>Offset of the first FF xx marker with that code at or after <paramref name="from"/> (skipping segment
    /// bodies is not needed for the files used here: their headers hold no FF xx pairs); -1 when absent.</summary>
    private static int IndexOfMarker(byte[] data, byte code, int from = 2)
    {
        for (int i = from; i + 1 < data.Length; i++)
            if (data[i] == 0xFF && data[i + 1] == code) return i;
        return -1;
    }

    private static byte[] RemoveSegments(byte[] data, byte code)
    {
        var output = new List<byte>(data[..2]);
        int i = 2;
        while (i < data.Length)
        {
            byte marker = data[i + 1];
            if (marker == 0xDA) { output.AddRange(data[i..]); break; }
            int length = data[i + 2] << 8 | data[i + 3];
            if (marker != code) output.AddRange(data[i..(i + 2 + length)]);
            i += 2 + length;
        }
        return [.. output];
    }
}
