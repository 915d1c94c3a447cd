using System.Buffers.Binary;
using System.IO.Compression;

namespace XrayVL.Imaging;

/// <summary>What a PNG's IHDR chunk says.</summary>
public sealed record PngHeader(int Width, int Height, int BitDepth, int ColorType, bool Interlaced)
{
    /// <summary>Samples per pixel for the colour type: 0 gray, 2 RGB, 3 palette index, 4 gray+alpha, 6 RGBA.</summary>
    public int Channels => ColorType switch { 0 => 1, 2 => 3, 3 => 1, 4 => 2, 6 => 4, _ => 0 };
    public int BitsPerPixel => Channels * BitDepth;
}

/// <summary>
/// The project's own PNG decoder, for every standard PNG (bit depths 1–16, gray, RGB, palette, with or without alpha,
/// Adam7 interlaced or not). Written here rather than taken from StbImageSharp because (1) StbImageSharp's public API
/// only returns 8-bit samples, and 16-bit radiographs must keep full precision; (2) inflating row by row, never more than the
/// header promises, bounds memory even for a zlib stream that expands without end; (3) one code path for
/// all bit depths. Colour is reduced to gray with Rec. 601 luma weights (0.299 R + 0.587 G + 0.114 B) on the stored
/// (gamma-encoded) values; alpha is ignored. Chunk CRCs of critical chunks are checked.
/// </summary>
public static class Png
{
    private static ReadOnlySpan<byte> Signature => [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];

    public static bool HasSignature(ReadOnlySpan<byte> data) => data.Length >= 8 && data[..8].SequenceEqual(Signature);

    /// <summary>Reads and validates IHDR only (cheap: used to refuse decompression bombs before decoding).</summary>
    public static PngHeader ReadHeader(ReadOnlySpan<byte> data, string name)
    {
        if (!HasSignature(data)) throw new XrayVLException($"{name}: not a PNG file (bad signature)");
        if (data.Length < 8 + 8 + 13 + 4) throw new XrayVLException($"{name}: PNG file is truncated (no complete IHDR chunk)");
        uint length = BinaryPrimitives.ReadUInt32BigEndian(data[8..]);
        if (length != 13 || !data.Slice(12, 4).SequenceEqual("IHDR"u8))
            throw new XrayVLException($"{name}: corrupt PNG (first chunk is not a 13-byte IHDR)");
        CheckCrc(data.Slice(12, 4 + 13), BinaryPrimitives.ReadUInt32BigEndian(data[(12 + 4 + 13)..]), name, "IHDR");
        var ihdr = data.Slice(16, 13);
        uint width = BinaryPrimitives.ReadUInt32BigEndian(ihdr);
        uint height = BinaryPrimitives.ReadUInt32BigEndian(ihdr[4..]);
        int bitDepth = ihdr[8], colorType = ihdr[9], compression = ihdr[10], filter = ihdr[11], interlace = ihdr[12];
        if (width == 0 || height == 0 || width > int.MaxValue || height > int.MaxValue)
            throw new XrayVLException($"{name}: corrupt PNG header (size {width}×{height})");
        bool validDepth = colorType switch
        {
            0 => bitDepth is 1 or 2 or 4 or 8 or 16,
            3 => bitDepth is 1 or 2 or 4 or 8,
            2 or 4 or 6 => bitDepth is 8 or 16,
            _ => false,
        };
        if (!validDepth) throw new XrayVLException($"{name}: corrupt PNG header (colour type {colorType} with bit depth {bitDepth})");
        if (compression != 0 || filter != 0 || interlace > 1)
            throw new XrayVLException($"{name}: corrupt PNG header (compression {compression}, filter {filter}, interlace {interlace})");
        return new PngHeader((int)width, (int)height, bitDepth, colorType, interlace == 1);
    }

    public static GrayImage Decode(ReadOnlySpan<byte> data, string name, ImageLimits? limits = null)
    {
        limits ??= ImageLimits.Default;
        var header = ReadHeader(data, name);
        limits.CheckDimensions(name, "PNG header", header.Width, header.Height);

        // Walk the chunks after IHDR: keep PLTE, gather IDAT, stop at IEND.
        byte[]? palette = null;
        var compressed = new MemoryStream();
        int pos = 8 + 8 + 13 + 4;
        bool sawIdat = false, sawEnd = false;
        while (pos < data.Length)
        {
            if (data.Length - pos < 12) throw new XrayVLException($"{name}: PNG file is truncated (incomplete chunk at byte {pos})");
            uint length = BinaryPrimitives.ReadUInt32BigEndian(data[pos..]);
            var type = data.Slice(pos + 4, 4);
            foreach (byte c in type)
                if (!char.IsAsciiLetter((char)c)) throw new XrayVLException($"{name}: corrupt PNG (invalid chunk type at byte {pos})");
            if (length > (uint)(data.Length - pos - 12))
                throw new XrayVLException($"{name}: PNG file is truncated (chunk {ChunkName(type)} at byte {pos} runs past the end)");
            var body = data.Slice(pos + 8, (int)length);
            bool critical = (type[0] & 0x20) == 0;
            if (critical) CheckCrc(data.Slice(pos + 4, 4 + (int)length), BinaryPrimitives.ReadUInt32BigEndian(data[(pos + 8 + (int)length)..]), name, ChunkName(type));
            if (type.SequenceEqual("IDAT"u8))
            {
                compressed.Write(body);
                sawIdat = true;
            }
            else if (type.SequenceEqual("PLTE"u8))
            {
                if (length == 0 || length % 3 != 0 || length > 768) throw new XrayVLException($"{name}: corrupt PNG (PLTE chunk of {length} bytes)");
                palette = body.ToArray();
            }
            else if (type.SequenceEqual("IEND"u8))
            {
                sawEnd = true;
                break;
            }
            else if (type.SequenceEqual("IHDR"u8))
                throw new XrayVLException($"{name}: corrupt PNG (second IHDR chunk)");
            else if (critical)
                throw new XrayVLException($"{name}: PNG uses an unknown critical chunk '{ChunkName(type)}'");
            pos += 12 + (int)length;
        }
        if (!sawIdat) throw new XrayVLException($"{name}: PNG file has no image data (no IDAT chunk{(sawEnd ? "" : "; file truncated?")})");
        if (!sawEnd) throw new XrayVLException($"{name}: PNG file is truncated (no IEND chunk)");
        if (header.ColorType == 3 && palette is null) throw new XrayVLException($"{name}: corrupt PNG (palette image without PLTE chunk)");

        // Decoded row by row: the inflated data never exists whole (a 7000×7000 16-bit RGBA image would need 392 MB of
        // it); only two rows and the gray output are held.
        long pixelCount = (long)header.Width * header.Height;
        limits.CheckDecodeBytes(name, "PNG", 4 * pixelCount + 2L * (RowBytes(header.Width, header) + 1));
        float[] pixels = new float[pixelCount];
        float[]? paletteGray = header.ColorType == 3 ? PaletteGray(palette!, header.BitDepth) : null;
        compressed.Position = 0;
        using (var z = new ZLibStream(compressed, CompressionMode.Decompress))
        {
            int maxRow = RowBytes(header.Width, header);
            var current = new byte[maxRow + 1];
            var previous = new byte[maxRow + 1];
            long done = 0, expected = RawLength(header);
            foreach (var (x0, y0, dx, dy) in header.Interlaced ? Adam7 : [(0, 0, 1, 1)])
            {
                int w = PassSize(header.Width, x0, dx), h = PassSize(header.Height, y0, dy);
                if (w == 0 || h == 0) continue;
                int rowBytes = RowBytes(w, header);
                Array.Clear(previous);                              // the row "above" a pass's first row is zeros
                for (int j = 0; j < h; j++)
                {
                    var row = current.AsSpan(0, rowBytes + 1);
                    int got;
                    try
                    {
                        // Reads exactly what the header promises and no more: a stream that would expand further is never expanded.
                        got = z.ReadAtLeast(row, row.Length, throwOnEndOfStream: false);
                    }
                    catch (InvalidDataException e)
                    {
                        throw new XrayVLException($"{name}: PNG image data is corrupt (zlib: {e.Message})", e);
                    }
                    if (got < row.Length)
                        throw new XrayVLException($"{name}: PNG image data is truncated ({done + got} of {expected} bytes after decompression)");
                    done += row.Length;
                    UnfilterRow(row[1..], previous.AsSpan(1, rowBytes), row[0], Math.Max(1, header.BitsPerPixel / 8), name, j);
                    ExtractRow(row[1..], header, paletteGray, w, pixels, (long)(y0 + j * dy) * header.Width + x0, dx);
                    (current, previous) = (previous, current);
                }
            }
        }
        var source = new ImageSourceInfo(ImageFormat.Png, header.BitDepth, header.ColorType == 3 ? 3 : header.Channels);
        return new GrayImage(header.Width, header.Height, pixels, source);
    }

    /// <summary>Adam7 passes: (first column, first row, column step, row step).</summary>
    internal static readonly (int X0, int Y0, int Dx, int Dy)[] Adam7 =
        [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)];

    internal static int PassSize(int size, int start, int step) => size <= start ? 0 : (size - start + step - 1) / step;

    internal static int RowBytes(int width, PngHeader h) => (int)(((long)width * h.BitsPerPixel + 7) / 8);

    /// <summary>Bytes of filtered scanlines (one filter byte per row) the zlib stream must produce.</summary>
    internal static long RawLength(PngHeader h)
    {
        if (!h.Interlaced) return (long)h.Height * (1 + RowBytes(h.Width, h));
        long total = 0;
        foreach (var (x0, y0, dx, dy) in Adam7)
        {
            int w = PassSize(h.Width, x0, dx), rows = PassSize(h.Height, y0, dy);
            if (w > 0 && rows > 0) total += (long)rows * (1 + RowBytes(w, h));
        }
        return total;
    }

    /// <summary>Reverses a row's filter (0 none, 1 sub, 2 up, 3 average, 4 Paeth) in place; <paramref name="bpp"/> is the
    /// distance between a byte and the matching byte of the pixel to its left.</summary>
    private static void UnfilterRow(Span<byte> cur, ReadOnlySpan<byte> prev, int filter, int bpp, string name, int y)
    {
        int first = Math.Min(bpp, cur.Length);     // bytes with no left neighbour
        switch (filter)
        {
            case 0:
                break;
            case 1:
                for (int i = bpp; i < cur.Length; i++) cur[i] += cur[i - bpp];
                break;
            case 2:
                for (int i = 0; i < cur.Length; i++) cur[i] += prev[i];
                break;
            case 3:
                for (int i = 0; i < first; i++) cur[i] += (byte)(prev[i] >> 1);
                for (int i = bpp; i < cur.Length; i++) cur[i] += (byte)((cur[i - bpp] + prev[i]) >> 1);
                break;
            case 4:
                for (int i = 0; i < first; i++) cur[i] += prev[i];   // Paeth(0, up, 0) = up
                for (int i = bpp; i < cur.Length; i++) cur[i] += (byte)Paeth(cur[i - bpp], prev[i], prev[i - bpp]);
                break;
            default:
                throw new XrayVLException($"{name}: PNG image data is corrupt (filter type {filter} in row {y})");
        }
    }

    internal static int Paeth(int a, int b, int c)
    {
        int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
        return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
    }

    /// <summary>Gray of each palette entry; an index past the palette is a broken file and reads as black rather than
    /// failing the whole image.</summary>
    private static float[] PaletteGray(byte[] palette, int bitDepth)
    {
        var gray = new float[1 << bitDepth];
        for (int k = 0; k < gray.Length && 3 * k + 2 < palette.Length; k++)
            gray[k] = LumaR[palette[3 * k]] + LumaG[palette[3 * k + 1]] + LumaB[palette[3 * k + 2]];
        return gray;
    }

    /// <summary>Turns one unfiltered row of <paramref name="width"/> pixels into gray values at pixels[o], pixels[o + dx], …
    /// The format is dispatched once per row, not per pixel.</summary>
    private static void ExtractRow(ReadOnlySpan<byte> row, PngHeader h, float[]? paletteGray, int width, float[] pixels, long start, int dx)
    {
        int channels = h.Channels;
        var output = pixels.AsSpan();
        int o = (int)start;
        if (paletteGray != null)
            for (int i = 0; i < width; i++, o += dx) output[o] = paletteGray[SubByteSample(row, i, h.BitDepth)];
        else if (h.BitDepth == 8 && channels >= 3)
            for (int i = 0, p = 0; i < width; i++, o += dx, p += channels) output[o] = LumaR[row[p]] + LumaG[row[p + 1]] + LumaB[row[p + 2]];
        else if (h.BitDepth == 8)
            for (int i = 0, p = 0; i < width; i++, o += dx, p += channels) output[o] = Unit8[row[p]];
        else if (h.BitDepth == 16 && channels >= 3)
            for (int i = 0, p = 0; i < width; i++, o += dx, p += 2 * channels)
                output[o] = Luma(row[p] << 8 | row[p + 1], row[p + 2] << 8 | row[p + 3], row[p + 4] << 8 | row[p + 5]) / 65535f;
        else if (h.BitDepth == 16)
            for (int i = 0, p = 0; i < width; i++, o += dx, p += 2 * channels) output[o] = (row[p] << 8 | row[p + 1]) / 65535f;
        else
        {
            float scale = 1f / ((1 << h.BitDepth) - 1);
            for (int i = 0; i < width; i++, o += dx) output[o] = SubByteSample(row, i, h.BitDepth) * scale;
        }
    }

    /// <summary>8-bit value → [0, 1], and its Rec. 601 luma contributions, as tables.</summary>
    private static readonly float[] Unit8 = Table(1f), LumaR = Table(0.299f), LumaG = Table(0.587f), LumaB = Table(0.114f);
    private static float[] Table(float weight) => Enumerable.Range(0, 256).Select(v => weight * v / 255f).ToArray();

    /// <summary>Gray in [0, 1] of an 8-bit RGB triple (Rec. 601 luma).</summary>
    internal static float Luma8(byte r, byte g, byte b) => LumaR[r] + LumaG[g] + LumaB[b];

    /// <summary>Sample i of a row packed at 1, 2 or 4 (or 8) bits, most significant bits first.</summary>
    private static int SubByteSample(ReadOnlySpan<byte> row, int i, int bitDepth)
    {
        if (bitDepth == 8) return row[i];
        int bit = i * bitDepth;
        return (row[bit >> 3] >> (8 - bitDepth - (bit & 7))) & ((1 << bitDepth) - 1);
    }

    /// <summary>Rec. 601 luma on stored values.</summary>
    internal static float Luma(float r, float g, float b) => 0.299f * r + 0.587f * g + 0.114f * b;

    private static void CheckCrc(ReadOnlySpan<byte> typeAndData, uint stored, string name, string chunk)
    {
        if (Crc32.Compute(typeAndData) != stored) throw new XrayVLException($"{name}: corrupt PNG (CRC mismatch in {chunk} chunk)");
    }

    private static string ChunkName(ReadOnlySpan<byte> type)
    {
        Span<char> chars = stackalloc char[4];
        for (int i = 0; i < 4; i++) chars[i] = type[i] is >= 0x20 and < 0x7F ? (char)type[i] : '?';
        return new string(chars);
    }
}
