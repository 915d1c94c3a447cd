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
/// only returns 8-bit samples, and 16-bit radiographs must keep full precision; (2) inflating into a buffer of exactly
/// the size the header promises bounds memory even for a zlib stream that expands without end; (3) one code path for
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

        byte[] raw = Inflate(compressed, RawLength(header), name);
        float[] pixels = new float[(long)header.Width * header.Height];
        if (!header.Interlaced)
        {
            Unfilter(raw, 0, header.Width, header.Height, header, name);
            Extract(raw, 0, header, palette, header.Width, header.Height, pixels, 0, 0, 1, 1);
        }
        else
        {
            int offset = 0;
            foreach (var (x0, y0, dx, dy) in Adam7)
            {
                int w = PassSize(header.Width, x0, dx), h = PassSize(header.Height, y0, dy);
                if (w == 0 || h == 0) continue;
                Unfilter(raw, offset, w, h, header, name);
                Extract(raw, offset, header, palette, w, h, pixels, x0, y0, dx, dy);
                offset += h * (1 + RowBytes(w, header));
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

    private static byte[] Inflate(MemoryStream compressed, long expected, string name)
    {
        if (expected > Array.MaxLength) throw new XrayVLException($"{name}: PNG image is too large to decode ({expected} bytes)");
        var raw = new byte[expected];
        compressed.Position = 0;
        try
        {
            using var z = new ZLibStream(compressed, CompressionMode.Decompress);
            // Read exactly what the header promises and no more: a stream that would expand further is never expanded.
            int got = z.ReadAtLeast(raw, raw.Length, throwOnEndOfStream: false);
            if (got < raw.Length)
                throw new XrayVLException($"{name}: PNG image data is truncated ({got} of {raw.Length} bytes after decompression)");
        }
        catch (InvalidDataException e)
        {
            throw new XrayVLException($"{name}: PNG image data is corrupt (zlib: {e.Message})", e);
        }
        return raw;
    }

    /// <summary>Reverses the per-row filters (0 none, 1 sub, 2 up, 3 average, 4 Paeth) in place.</summary>
    private static void Unfilter(byte[] raw, int offset, int width, int height, PngHeader h, string name)
    {
        int rowBytes = RowBytes(width, h);
        int bpp = Math.Max(1, h.BitsPerPixel / 8);   // bytes between a byte and the matching byte of the pixel to its left
        int stride = rowBytes + 1;
        var zeros = new byte[rowBytes];              // the row "above" the first one
        for (int y = 0; y < height; y++)
        {
            int row = offset + y * stride;
            int filter = raw[row];
            var cur = raw.AsSpan(row + 1, rowBytes);
            ReadOnlySpan<byte> prev = y == 0 ? zeros : raw.AsSpan(row + 1 - stride, rowBytes);
            int first = Math.Min(bpp, rowBytes);     // bytes with no left neighbour
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
    }

    internal static int Paeth(int a, int b, int c)
    {
        int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
        return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
    }

    /// <summary>Turns unfiltered rows into gray values, writing pixel (i, j) of the (sub)image to (x0 + i·dx, y0 + j·dy).
    /// The format is dispatched once per row, not per pixel.</summary>
    private static void Extract(byte[] raw, int offset, PngHeader h, byte[]? palette, int width, int height,
        float[] pixels, int x0, int y0, int dx, int dy)
    {
        int rowBytes = RowBytes(width, h);
        int channels = h.Channels;
        float[]? paletteGray = null;
        if (h.ColorType == 3)
        {
            // An index past the palette is a broken file; it reads as black rather than failing the whole image.
            paletteGray = new float[1 << h.BitDepth];
            for (int k = 0; k < paletteGray.Length && 3 * k + 2 < palette!.Length; k++)
                paletteGray[k] = LumaR[palette[3 * k]] + LumaG[palette[3 * k + 1]] + LumaB[palette[3 * k + 2]];
        }
        for (int j = 0; j < height; j++)
        {
            ReadOnlySpan<byte> row = raw.AsSpan(offset + j * (rowBytes + 1) + 1, rowBytes);
            int o = (y0 + j * dy) * h.Width + x0;
            if (paletteGray != null)
                for (int i = 0; i < width; i++, o += dx) pixels[o] = paletteGray[SubByteSample(row, i, h.BitDepth)];
            else if (h.BitDepth == 8 && channels >= 3)
                for (int i = 0, p = 0; i < width; i++, o += dx, p += channels) pixels[o] = LumaR[row[p]] + LumaG[row[p + 1]] + LumaB[row[p + 2]];
            else if (h.BitDepth == 8)
                for (int i = 0, p = 0; i < width; i++, o += dx, p += channels) pixels[o] = Unit8[row[p]];
            else if (h.BitDepth == 16 && channels >= 3)
                for (int i = 0, p = 0; i < width; i++, o += dx, p += 2 * channels)
                    pixels[o] = Luma(row[p] << 8 | row[p + 1], row[p + 2] << 8 | row[p + 3], row[p + 4] << 8 | row[p + 5]) / 65535f;
            else if (h.BitDepth == 16)
                for (int i = 0, p = 0; i < width; i++, o += dx, p += 2 * channels) pixels[o] = (row[p] << 8 | row[p + 1]) / 65535f;
            else
            {
                float scale = 1f / ((1 << h.BitDepth) - 1);
                for (int i = 0; i < width; i++, o += dx) pixels[o] = SubByteSample(row, i, h.BitDepth) * scale;
            }
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
