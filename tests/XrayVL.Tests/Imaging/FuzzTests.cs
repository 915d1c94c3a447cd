using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Compression;
using XrayVL.Imaging;
using static XrayVL.Tests.Imaging.ImagingFixtures;

namespace XrayVL.Tests.Imaging;

/// <summary>
/// Randomly mutated images of each format (seeded, so a failure replays): every decode ends in success or an
/// XrayVLException naming the input, within a time bound; a hang fails the test instead of stalling it.
/// </summary>
public class FuzzTests
{
    /// <summary>Cases per format; XRAYVL_FUZZ_CASES raises it for a longer local hunt.</summary>
    private static readonly int Cases = int.TryParse(Environment.GetEnvironmentVariable("XRAYVL_FUZZ_CASES"), out int n) ? n : 1200;
    private static readonly TimeSpan PerCase = TimeSpan.FromSeconds(2);
    /// <summary>Tighter than the default so a mutated size field cannot make one case decode 50 megapixels; the limit
    /// logic itself is tested with the defaults elsewhere.</summary>
    private static readonly ImageLimits Limits = new() { MaxPixels = 2_000_000, MaxSide = 4096 };

    [Fact]
    public void MutatedPngs()
    {
        byte[] crop = CropOfRealXray(48, 40, out _);
        var gray8 = crop.Select(b => (ushort)b).ToArray();
        var gray16 = crop.Select(b => (ushort)(b * 257 + 3)).ToArray();
        var rgb = Enumerable.Range(0, 24 * 20 * 3).Select(i => (ushort)(crop[i % crop.Length] ^ (i % 3 * 40))).ToArray();
        var random = new Random(1);
        var palette = new byte[48];
        random.NextBytes(palette);
        byte[][] seeds =
        [
            PngWriter.Encode(48, 40, 1, 8, gray8),
            PngWriter.Encode(48, 40, 1, 16, gray16, new PngWriteOptions(Interlaced: true)),
            PngWriter.Encode(24, 20, 3, 8, rgb, new PngWriteOptions(Filter: 4)),
            PngTests.HandBuiltPng(21, 9, 4, 3, Enumerable.Range(0, 21 * 9).Select(i => i % 16).ToArray(), palette),
            PngTests.HandBuiltPng(21, 9, 2, 0, Enumerable.Range(0, 21 * 9).Select(i => i % 4).ToArray(), null),
            // Stored (uncompressed) deflate blocks: mutations of the pixel bytes survive inflation and reach the
            // filters and sample unpacking instead of failing in zlib.
            PngWriter.Encode(48, 40, 1, 16, gray16, new PngWriteOptions(Compression: CompressionLevel.NoCompression)),
            PngWriter.Encode(24, 20, 3, 8, rgb, new PngWriteOptions(Interlaced: true, Compression: CompressionLevel.NoCompression)),
            PngWriter.Encode(24, 20, 2, 8, rgb.Take(24 * 20 * 2).ToArray(), new PngWriteOptions(Filter: 3, Compression: CompressionLevel.NoCompression)),
        ];
        // A third of the mutants are raw; a third get their chunk CRCs repaired, so corruption reaches the header and chunk
        // semantics; a third are rebuilt from mutated scanlines (and IHDR fields) with valid zlib and CRCs, so corruption
        // reaches filters, sample unpacking and Adam7 (zlib's Adler-32 check stops anything else).
        Run(seeds, "png", seed: 101, (png, random) => (random.Next(3)) switch
        {
            0 => Mutations.Mutate(png, random, png.Length),
            1 => RepairPngCrcs(Mutations.Mutate(png, random, png.Length)),
            _ => MutateScanlines(png, random),
        }, ownDecoder: true);
    }

    [Fact]
    public void MutatedJpegs()
    {
        byte[] crop = CropOfRealXray(48, 40, out _);
        var colour = new byte[32 * 24 * 3];
        for (int i = 0; i < colour.Length; i++) colour[i] = (byte)(crop[i % crop.Length] + i % 3 * 30);
        string smallestReal = CovidJpegs().OrderBy(p => new FileInfo(p).Length).First();
        byte[][] seeds =
        [
            EncodeJpeg(crop, 48, 40, 1, quality: 90),
            EncodeJpeg(colour, 32, 24, 3, quality: 75),
            File.ReadAllBytes(smallestReal),
        ];
        // Quantisation and Huffman tables take the first ~600 bytes.
        Run(seeds, "jpg", seed: 202, (jpeg, random) => Mutations.Mutate(jpeg, random, hotRegion: 700), ownDecoder: false);
    }

    [Fact]
    public void MutatedDicoms()
    {
        var random = new Random(3);
        int[] twelveBit = Enumerable.Range(0, 24 * 20).Select(_ => random.Next(4096)).ToArray();
        int[] signed = twelveBit.Select(v => v - 2048).ToArray();
        byte[] crop = CropOfRealXray(24, 16, out _);
        byte[][] seeds =
        [
            DicomWriter.WriteNative(20, 24, twelveBit, new DicomWriteOptions
            {
                BitsStored = 12, IncludeSequences = true, WindowCenter = [2000, 1000], WindowWidth = [3000, 500], ViewPosition = "PA",
                PatientName = "Test^Fuzz",
            }),
            DicomWriter.WriteNative(20, 24, twelveBit.Select(v => v >> 4).ToArray(), new DicomWriteOptions
            {
                ExplicitVr = false, Preamble = false, BitsAllocated = 8, IncludeSequences = true,
            }),
            DicomWriter.WriteNative(20, 24, signed, new DicomWriteOptions
            {
                ExplicitVr = false, BitsStored = 12, Signed = true, PhotometricInterpretation = "MONOCHROME1", RescaleSlope = 0.5, RescaleIntercept = -100,
            }),
            DicomWriter.WriteJpeg(16, 24, [EncodeJpeg(crop, 24, 16, 1)], new DicomWriteOptions { IncludeSequences = true }, fragmentSize: 200),
        ];
        // Everything before the pixel values: preamble, meta, attributes, sequences (about 700 bytes).
        Run(seeds, "dcm", seed: 303, (dicom, random) => Mutations.Mutate(dicom, random, hotRegion: 800), ownDecoder: true);
    }

    /// <summary>JPEG 2000 and JPEG-LS frames go to native code (OpenJPEG, CharLS): corrupt codestreams must come back
    /// as one-line refusals, never crash or hang the process. Mutations fall anywhere, the codestream included.</summary>
    [Fact]
    public void MutatedJpeg2000AndJpegLsDicoms()
    {
        if (!OpenJpeg.IsAvailable || !CharLs.IsAvailable)
            Assert.Skip("the native codecs are not installed on this machine (apt-get install libopenjp2-7 libcharls2)");
        string Suite(string file) => Path.Combine(AppContext.BaseDirectory, "Imaging", "Conformance", "dicom", file);
        byte[][] seeds = [.. new[] { "pydicom__MR_small_jp2klossless.dcm", "pydicom__693_J2KI.dcm", "pydicom__MR_small_jpeg_ls_lossless.dcm",
            "pydicom__SC_rgb_jls_lossy_line.dcm" }.Select(f => File.ReadAllBytes(Suite(f)))];
        Run(seeds, "dcm", seed: 404, (dicom, random) => Mutations.Mutate(dicom, random, hotRegion: dicom.Length), ownDecoder: false);
    }

    /// <param name="ownDecoder">For the project's own decoders even a wrapped internal exception (index out of range,
    /// overflow...) is a failure: every bad input must be caught by an explicit check.</param>
    private static void Run(byte[][] seeds, string extension, int seed, Func<byte[], Random, byte[]> mutate, bool ownDecoder)
    {
        var random = new Random(seed);
        var failures = new List<string>();
        int decoded = 0, refused = 0, wrapped = 0;
        var reasons = new Dictionary<string, int>();
        var watch = Stopwatch.StartNew();
        for (int i = 0; i < Cases; i++)
        {
            byte[] input = mutate(seeds[i % seeds.Length], random);
            string name = $"fuzz-{seed}-{i}.{extension}";
            var task = Task.Run(() => Decode(input, name));
            if (!task.Wait(PerCase))
            {
                string saved = Path.Combine(Path.GetTempPath(), name);
                File.WriteAllBytes(saved, input);
                failures.Add($"{name}: no result after {PerCase.TotalSeconds} s (hang?); input saved as {saved}");
                break;   // the hung decode keeps its thread; stop here
            }
            string outcome = task.Result;
            if (outcome == "ok") decoded++;
            else if (outcome.StartsWith("refused", StringComparison.Ordinal))
            {
                refused++;
                string reason = System.Text.RegularExpressions.Regex.Replace(outcome[(outcome.IndexOf(": ", StringComparison.Ordinal) + 2)..], "[0-9]+", "N");
                reasons[reason] = reasons.GetValueOrDefault(reason) + 1;
                if (outcome.Contains("internal decoder error", StringComparison.Ordinal))
                {
                    wrapped++;
                    if (ownDecoder) failures.Add(outcome);
                }
            }
            else failures.Add(outcome);
        }
        watch.Stop();
        TestContext.Current.SendDiagnosticMessage($"{extension}: {decoded} decoded, {refused} refused ({wrapped} wrapped decoder exceptions) in {watch.Elapsed.TotalSeconds:0.0} s; " +
            "most common refusals: " + string.Join("; ", reasons.OrderByDescending(r => r.Value).Take(4).Select(r => $"{r.Value}× {r.Key}")));
        Assert.True(failures.Count == 0, string.Join("\n", failures.Take(10)));
        Assert.True(decoded > 20 && refused > 100, $"{decoded} decoded, {refused} refused: mutations should exercise both paths");
    }

    private static string Decode(byte[] input, string name)
    {
        try
        {
            var image = ImageFile.Decode(input, name, Limits);
            foreach (float v in image.Pixels)
                if (!(v >= 0 && v <= 1)) return $"{name}: decoded pixel {v} outside [0, 1]";
            return "ok";
        }
        catch (XrayVLException e)
        {
            return e.Message.StartsWith(name + ": ", StringComparison.Ordinal)
                ? "refused " + e.Message
                : $"{name}: message does not start with the file name: {e.Message}";
        }
        catch (Exception e)
        {
            return $"{name}: {e.GetType().Name} escaped: {e.Message}";
        }
    }

    /// <summary>Inflates the IDAT data, mutates those scanline bytes (and, one time in three, a byte of IHDR), and
    /// writes a PNG with valid zlib stream and CRCs around them.</summary>
    private static byte[] MutateScanlines(byte[] png, Random random)
    {
        byte[] ihdr = png[16..29];
        var compressed = new MemoryStream();
        for (int pos = 33; pos + 12 <= png.Length;)
        {
            int length = (int)BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(pos));
            if (png.AsSpan(pos + 4, 4).SequenceEqual("IDAT"u8)) compressed.Write(png, pos + 8, length);
            pos += 12 + length;
        }
        compressed.Position = 0;
        var raw = new MemoryStream();
        using (var z = new ZLibStream(compressed, CompressionMode.Decompress)) z.CopyTo(raw);
        byte[] scanlines = Mutations.Mutate(raw.ToArray(), random, hotRegion: int.MaxValue);
        if (random.Next(3) == 0) ihdr[random.Next(13)] = (byte)random.Next(256);

        var rebuilt = new MemoryStream();
        rebuilt.Write(png, 0, 8);
        PngWriter.WriteChunk(rebuilt, "IHDR"u8, ihdr);
        var packed = new MemoryStream();
        using (var z = new ZLibStream(packed, CompressionLevel.Fastest, leaveOpen: true)) z.Write(scanlines);
        PngWriter.WriteChunk(rebuilt, "IDAT"u8, packed.ToArray());
        PngWriter.WriteChunk(rebuilt, "IEND"u8, []);
        return rebuilt.ToArray();
    }

    /// <summary>Recomputes the CRC of each complete chunk.</summary>
    private static byte[] RepairPngCrcs(byte[] png)
    {
        var data = (byte[])png.Clone();
        int pos = 8;
        while (pos + 12 <= data.Length)
        {
            uint length = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(pos));
            if (length > data.Length - pos - 12) break;
            var stream = new MemoryStream();
            PngWriter.WriteChunk(stream, data.AsSpan(pos + 4, 4), data.AsSpan(pos + 8, (int)length));
            stream.ToArray().AsSpan(8 + (int)length, 4).CopyTo(data.AsSpan(pos + 8 + (int)length));
            pos += 12 + (int)length;
        }
        return data;
    }
}
