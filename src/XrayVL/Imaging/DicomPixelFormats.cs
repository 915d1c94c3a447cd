using System.Buffers.Binary;

namespace XrayVL.Imaging;

/// <summary>The three LUTs of PALETTE COLOR (Red, Green, Blue Palette Color Lookup Table Descriptor and Data).</summary>
public sealed record DicomPalette(DicomLut Red, DicomLut Green, DicomLut Blue);

/// <summary>
/// Pixel formats beyond 8- and 16-bit integer samples, and the transfer syntaxes decoded by system libraries:
/// JPEG 2000 (<see cref="OpenJpeg"/>) and JPEG-LS (<see cref="CharLs"/>); PALETTE COLOR; 1-bit (packed, least significant
/// bit first, frames not byte-aligned); 32-bit integer; 32- and 64-bit float pixel data (parametric maps).
/// </summary>
public static partial class Dicom
{
    public const string JpegLsLossless = "1.2.840.10008.1.2.4.80";
    public const string JpegLsNearLossless = "1.2.840.10008.1.2.4.81";
    public const string Jpeg2000Lossless = "1.2.840.10008.1.2.4.90";
    public const string Jpeg2000 = "1.2.840.10008.1.2.4.91";

    private static bool IsJpeg2000(string syntax) => syntax is Jpeg2000Lossless or Jpeg2000;
    private static bool IsJpegLs(string syntax) => syntax is JpegLsLossless or JpegLsNearLossless;
    /// <summary>Syntaxes whose frames a system library decodes to stored values.</summary>
    private static bool IsNativeCodec(string syntax) => IsJpeg2000(syntax) || IsJpegLs(syntax);

    /// <summary>Frame 1 of a JPEG 2000 or JPEG-LS file, decoded by the system library.</summary>
    private static NativeCodecFrame DecodeNativeCodecFrame(ReadOnlySpan<byte> data, PixelData p, DicomDataset ds, string name, ImageLimits limits)
    {
        if (IsJpeg2000(ds.TransferSyntaxUid))
        {
            byte[] j2k = FirstFrameBytes(data, p, ds.NumberOfFrames, f => OpenJpeg.IsCodestream(f) || OpenJpeg.IsJp2(f));
            return OpenJpeg.Decode(j2k, name, limits, "encapsulated JPEG 2000 frame");
        }
        byte[] jls = FirstFrameBytes(data, p, ds.NumberOfFrames, f => Jpeg.HasSignature(f));
        return CharLs.Decode(jls, name, limits, "encapsulated JPEG-LS frame");
    }

    /// <summary>
    /// Monochrome stored values of a native-codec frame, and the data set to render them with: the smaller of BitsStored
    /// and the codestream's precision, signed when either says so (a JPEG 2000 codestream records its sign, and readers
    /// follow it when Pixel Representation disagrees; JPEG-LS does not, so Pixel Representation decides there).
    /// A 3-component frame in a monochrome file contributes its luma.
    /// </summary>
    private static (int[] Stored, DicomDataset Dataset) StoredValuesOf(NativeCodecFrame frame, DicomDataset ds)
    {
        int n = frame.Width * frame.Height, k = frame.Components;
        var stored = new int[n];
        var s = frame.Samples;
        if (k == 1) Array.Copy(s, stored, n);
        else for (int i = 0; i < n; i++) stored[i] = (int)MathF.Round(Png.Luma(s[k * i], s[k * i + 1], s[k * i + 2]));
        int bits = Math.Min(ds.BitsStored, frame.Precision), mask = (int)((1L << bits) - 1), signBit = 1 << (bits - 1);
        bool signed = frame.Signed || ds.Signed;
        for (int i = 0; i < n; i++)
        {
            int v = stored[i] & mask;
            stored[i] = signed && (v & signBit) != 0 ? v - (1 << bits) : v;
        }
        return (stored, ds with { Rows = frame.Height, Columns = frame.Width, BitsStored = bits, PixelRepresentation = signed ? 1 : 0 });
    }

    private static float[] RenderNativeCodecFrame(NativeCodecFrame frame, DicomDataset ds)
    {
        if (ds.SamplesPerPixel == 1)
        {
            var (stored, rendered) = StoredValuesOf(frame, ds);
            return ds.Palette is null
                ? DicomRendering.Monochrome(stored, rendered, DicomRendering.MinStored(rendered), DicomRendering.MaxStored(rendered))
                : RenderPalette(stored, ds.Palette);
        }
        int n = frame.Width * frame.Height, k = frame.Components;
        var pixels = new float[n];
        float scale = 1f / ((1 << frame.Precision) - 1);
        var s = frame.Samples;
        if (k == 1)
            for (int i = 0; i < n; i++) pixels[i] = s[i] * scale;
        else
            for (int i = 0; i < n; i++) pixels[i] = Png.Luma(s[k * i], s[k * i + 1], s[k * i + 2]) * scale;
        return pixels;
    }

    // ---------------------------------------------------------------- YBR_FULL, YBR_FULL_422

    /// <summary>Samples stored per pixel: YBR_FULL_422 uncompressed keeps one Cb and Cr per two pixels (Y Y Cb Cr).</summary>
    private static int SamplesStored(DicomDataset ds) =>
        ds.PhotometricInterpretation == "YBR_FULL_422" && !ds.Encapsulated ? 2 : ds.SamplesPerPixel;

    /// <summary>Uncompressed YBR_FULL / YBR_FULL_422: the gray value is Y itself, which PS3.3 C.7.6.3.1.2 defines as the
    /// Rec. 601 luma (0.299 R + 0.587 G + 0.114 B), so no conversion to RGB and back is needed.</summary>
    private static float[] RenderYbrLuma(ReadOnlySpan<byte> data, PixelData p, DicomDataset ds)
    {
        int n = ds.Rows * ds.Columns;
        var raw = data.Slice(p.Offset, p.Length);
        bool wide = ds.BitsAllocated == 16, pairs = ds.PhotometricInterpretation == "YBR_FULL_422";
        int shift = ds.HighBit + 1 - ds.BitsStored, mask = (1 << ds.BitsStored) - 1;
        float scale = 1f / mask;
        var pixels = new float[n];
        for (int i = 0; i < n; i++)
        {
            int index = pairs ? (i / 2) * 4 + (i & 1) : ds.PlanarConfiguration == 1 ? i : 3 * i;
            int word = wide ? U16(raw[(2 * index)..], ds.BigEndian) : raw[index];
            pixels[i] = ((word >> shift) & mask) * scale;
        }
        return pixels;
    }

    // ---------------------------------------------------------------- PALETTE COLOR

    private const uint RedDescriptorTag = 0x00281101, GreenDescriptorTag = 0x00281102, BlueDescriptorTag = 0x00281103;
    private const uint RedDataTag = 0x00281201, GreenDataTag = 0x00281202, BlueDataTag = 0x00281203;
    private const uint SegmentedRedDataTag = 0x00281221;

    /// <summary>Palette LUT data can be 65536 two-byte entries: longer than other wanted values.</summary>
    private static int MaxValueLength(uint tag) => tag is RedDataTag or GreenDataTag or BlueDataTag ? 2 * 65536 : MaxWantedValueLength;

    /// <summary>The palette of a PALETTE COLOR image (PS3.3 C.7.6.3.1.5): descriptor = entries (0 means 65536), first
    /// mapped value, bits per entry (8 or 16); data as 16-bit words (or 8-bit entries packed two per word).</summary>
    private static DicomPalette ReadPalette(Dictionary<uint, byte[]> v, bool signed, string name)
    {
        if (v.ContainsKey(SegmentedRedDataTag) && !v.ContainsKey(RedDataTag))
            throw Invalid(name, "segmented palette colour LUTs are not supported");
        bool big = v.ContainsKey(BigEndianMarker);
        DicomLut Lut(uint descriptorTag, uint dataTag, string colour)
        {
            if (!v.TryGetValue(descriptorTag, out var d) || d.Length != 6 || !v.TryGetValue(dataTag, out var table))
                throw Invalid(name, $"PALETTE COLOR image lacks its {colour} Palette Color Lookup Table Descriptor or Data");
            int entries = U16(d, big), bits = U16(d.AsSpan(4), big);
            int first = U16(d.AsSpan(2), big);
            if (signed && first >= 32768) first -= 65536;
            if (entries == 0) entries = 65536;
            if (bits is not (8 or 16)) throw Invalid(name, $"{colour} palette LUT with {bits} bits per entry (8 or 16)");
            var lut = new int[entries];
            if (table.Length >= 2 * entries)
                for (int i = 0; i < entries; i++) lut[i] = U16(table.AsSpan(2 * i), big) & ((1 << bits) - 1);
            else if (bits == 8 && table.Length >= entries)
                for (int i = 0; i < entries; i++) lut[i] = table[i];
            else throw Invalid(name, $"{colour} palette LUT Data holds {table.Length} bytes for {entries} entries");
            return new DicomLut(first, bits, lut);
        }
        return new DicomPalette(Lut(RedDescriptorTag, RedDataTag, "Red"), Lut(GreenDescriptorTag, GreenDataTag, "Green"), Lut(BlueDescriptorTag, BlueDataTag, "Blue"));
    }

    /// <summary>Indices → RGB through the palette → Rec. 601 luma, each channel scaled by its LUT's full range. Palette
    /// images are secondary captures or pseudo-colour overlays: no modality or VOI transform applies.</summary>
    private static float[] RenderPalette(int[] stored, DicomPalette palette)
    {
        var (r, g, b) = (palette.Red, palette.Green, palette.Blue);
        float sr = 1f / ((1 << r.Bits) - 1), sg = 1f / ((1 << g.Bits) - 1), sb = 1f / ((1 << b.Bits) - 1);
        var pixels = new float[stored.Length];
        for (int i = 0; i < stored.Length; i++)
        {
            int s = stored[i];
            pixels[i] = Png.Luma(r.Apply(s) * sr, g.Apply(s) * sg, b.Apply(s) * sb);
        }
        return pixels;
    }

    // ---------------------------------------------------------------- 32-bit integer and float samples

    /// <summary>Whether samples are too wide for the stored-value LUT (32-bit integers, float or double).</summary>
    private static bool IsWide(DicomDataset ds) => ds.BitsAllocated > 16 || ds.FloatPixels;

    /// <summary>Monochrome sample values of frame 1 as doubles: 32-bit integers (BitsStored bits ending at HighBit,
    /// signed where Pixel Representation says so) or IEEE floats of Float / Double Float Pixel Data.</summary>
    private static double[] ReadWideValues(ReadOnlySpan<byte> data, PixelData p, DicomDataset ds, int samplesPerPixel = 1, int component = 0)
    {
        int n = ds.Rows * ds.Columns, bytes = ds.BitsAllocated / 8;
        var raw = data.Slice(p.Offset, p.Length);
        var values = new double[n];
        int shift = ds.HighBit + 1 - ds.BitsStored;
        for (int i = 0; i < n; i++)
        {
            int index = ds.PlanarConfiguration == 1 && samplesPerPixel > 1 ? component * n + i : i * samplesPerPixel + component;
            var at = raw[(index * bytes)..];
            if (ds.FloatPixels)
            {
                values[i] = bytes == 8
                    ? (ds.BigEndian ? BinaryPrimitives.ReadDoubleBigEndian(at) : BinaryPrimitives.ReadDoubleLittleEndian(at))
                    : (ds.BigEndian ? BinaryPrimitives.ReadSingleBigEndian(at) : BinaryPrimitives.ReadSingleLittleEndian(at));
                continue;
            }
            ulong word = U32(at, ds.BigEndian);
            ulong value = (word >> shift) & ((1UL << ds.BitsStored) - 1);
            values[i] = ds.Signed && (value >> (ds.BitsStored - 1)) != 0 ? (double)((long)value - (1L << ds.BitsStored)) : value;
        }
        return values;
    }

    /// <summary>
    /// 32-bit and float monochrome samples → [0, 1]: rescale slope / intercept for integers (float pixel data carry real
    /// values already), the file's window, else the 0.5–99.5 percentile window of the finite values (as for narrower
    /// samples, but by sorting, since a histogram over 2^32 values is out of reach); not-a-number pixels are black;
    /// inverted for MONOCHROME1. A Modality or VOI LUT Sequence does not apply to such wide samples and is ignored.
    /// </summary>
    private static float[] RenderWide(double[] values, DicomDataset ds)
    {
        double slope = ds.FloatPixels ? 1 : ds.RescaleSlope, intercept = ds.FloatPixels ? 0 : ds.RescaleIntercept;
        var real = new double[values.Length];
        for (int i = 0; i < values.Length; i++) real[i] = values[i] * slope + intercept;
        Func<double, double> window;
        if (ds.WindowCenter is { } c && ds.WindowWidth is { } w) window = x => DicomRendering.ApplyWindow(x, c, w, ds.VoiLutFunction);
        else
        {
            var finite = real.Where(double.IsFinite).ToArray();
            Array.Sort(finite);
            double lo = 0, hi = 0;
            if (finite.Length > 0)
            {
                int n = finite.Length;
                (lo, hi) = (finite[(int)Math.Floor(0.005 * (n - 1))], finite[(int)Math.Ceiling(0.995 * (n - 1))]);
                if (hi <= lo) (lo, hi) = (finite[0], finite[^1]);
            }
            window = hi > lo ? x => Math.Clamp((x - lo) / (hi - lo), 0, 1) : _ => 0;
        }
        bool invert = ds.PhotometricInterpretation == "MONOCHROME1";
        var pixels = new float[real.Length];
        for (int i = 0; i < real.Length; i++)
        {
            if (!double.IsFinite(real[i])) continue;
            double y = window(real[i]);
            pixels[i] = (float)(invert ? 1 - y : y);
        }
        return pixels;
    }

    /// <summary>RGB with 32-bit samples: luma of the stored values over their full range, as for narrower RGB.</summary>
    private static float[] RenderWideColour(ReadOnlySpan<byte> data, PixelData p, DicomDataset ds)
    {
        var channels = new double[3][];
        for (int c = 0; c < 3; c++) channels[c] = ReadWideValues(data, p, ds with { PixelRepresentation = 0 }, 3, c);
        double scale = 1.0 / ((1UL << ds.BitsStored) - 1);
        var pixels = new float[channels[0].Length];
        for (int i = 0; i < pixels.Length; i++)
            pixels[i] = (float)((0.299 * channels[0][i] + 0.587 * channels[1][i] + 0.114 * channels[2][i]) * scale);
        return pixels;
    }

    /// <summary>1-bit stored values of frame 1 (segmentation masks): bit i of the pixel data, least significant first.</summary>
    private static int[] ReadBitValues(ReadOnlySpan<byte> data, PixelData p, DicomDataset ds)
    {
        int n = ds.Rows * ds.Columns;
        var raw = data.Slice(p.Offset, p.Length);
        var stored = new int[n];
        for (int i = 0; i < n; i++) stored[i] = (raw[i >> 3] >> (i & 7)) & 1;
        return stored;
    }

    /// <summary>Sample values of frame 1 of a monochrome file with native pixel data, as doubles (stored values for
    /// integers, the floats themselves for float pixel data): for tests against reference decoders.</summary>
    internal static double[] DecodeSampleValues(ReadOnlySpan<byte> data, string name)
    {
        var (ds, pixelData, inflated) = Parse(data, name, ImageLimits.Default);
        if (inflated != null) data = inflated;
        if (ds.SamplesPerPixel != 1 || ds.Encapsulated) throw new XrayVLException($"{name}: not monochrome native pixel data");
        CheckFrameLength(pixelData, ds, name);
        if (IsWide(ds)) return ReadWideValues(data, pixelData, ds);
        return Array.ConvertAll(ds.BitsAllocated == 1 ? ReadBitValues(data, pixelData, ds) : ReadStoredValues(data, pixelData, ds), v => (double)v);
    }
}
