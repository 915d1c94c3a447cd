using System.Buffers.Binary;
using System.IO.Compression;

namespace XrayVL.Imaging;

/// <summary>How <see cref="PngWriter"/> filters rows: a fixed filter 0–4 for every row, or per row the filter with the
/// smallest sum of absolute byte values (the usual heuristic; Adaptive).</summary>
public sealed record PngWriteOptions(int Filter = PngWriteOptions.Adaptive, bool Interlaced = false,
    CompressionLevel Compression = CompressionLevel.Optimal)
{
    public const int Adaptive = -1;
}

/// <summary>
/// A small PNG encoder (gray, gray+alpha, RGB, RGBA at 8 or 16 bits; optional Adam7): for saving processed images and
/// for tests and fixtures, e.g. 16-bit gray files, which no served package writes.
/// </summary>
public static class PngWriter
{
    /// <summary>
    /// Encodes interleaved samples (row-major, <paramref name="channels"/> per pixel; values below 2^bitDepth).
    /// Channels 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA.
    /// </summary>
    public static byte[] Encode(int width, int height, int channels, int bitDepth, ReadOnlySpan<ushort> samples, PngWriteOptions? options = null)
    {
        options ??= new PngWriteOptions();
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
        if (channels is < 1 or > 4) throw new ArgumentOutOfRangeException(nameof(channels), "1 to 4 channels");
        if (bitDepth is not (8 or 16)) throw new ArgumentOutOfRangeException(nameof(bitDepth), "8 or 16 bits");
        if (options.Filter is < PngWriteOptions.Adaptive or > 4) throw new ArgumentOutOfRangeException(nameof(options), "filter -1 to 4");
        if (samples.Length != (long)width * height * channels) throw new ArgumentException("samples must hold width × height × channels values", nameof(samples));
        int colorType = channels switch { 1 => 0, 2 => 4, 3 => 2, _ => 6 };
        var header = new PngHeader(width, height, bitDepth, colorType, options.Interlaced);

        var scanlines = new MemoryStream();
        if (!options.Interlaced)
            WriteFiltered(scanlines, samples, width, header, 0, 0, 1, 1, width, height, options.Filter);
        else
            foreach (var (x0, y0, dx, dy) in Png.Adam7)
            {
                int w = Png.PassSize(width, x0, dx), h = Png.PassSize(height, y0, dy);
                if (w > 0 && h > 0) WriteFiltered(scanlines, samples, width, header, x0, y0, dx, dy, w, h, options.Filter);
            }

        var compressed = new MemoryStream();
        using (var z = new ZLibStream(compressed, options.Compression, leaveOpen: true))
            scanlines.WriteTo(z);

        var png = new MemoryStream();
        png.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        Span<byte> ihdr = stackalloc byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, width);
        BinaryPrimitives.WriteInt32BigEndian(ihdr[4..], height);
        ihdr[8] = (byte)bitDepth;
        ihdr[9] = (byte)colorType;
        ihdr[10] = 0;
        ihdr[11] = 0;
        ihdr[12] = (byte)(options.Interlaced ? 1 : 0);
        WriteChunk(png, "IHDR"u8, ihdr);
        WriteChunk(png, "IDAT"u8, compressed.GetBuffer().AsSpan(0, (int)compressed.Length));
        WriteChunk(png, "IEND"u8, []);
        return png.ToArray();
    }

    /// <summary>Encodes a gray image, quantising [0, 1] to 8 or 16 bits (rounding, clamping).</summary>
    public static byte[] EncodeGray(GrayImage image, int bitDepth = 8, PngWriteOptions? options = null)
    {
        int max = bitDepth == 16 ? 65535 : 255;
        var samples = new ushort[image.Pixels.Length];
        for (int i = 0; i < samples.Length; i++)
            samples[i] = (ushort)Math.Clamp(MathF.Round(image.Pixels[i] * max), 0, max);
        return Encode(image.Width, image.Height, 1, bitDepth, samples, options);
    }

    /// <summary>Writes a gray image as PNG; the file appears whole or not at all.</summary>
    public static void Save(GrayImage image, string path, int bitDepth = 8)
    {
        IO.AtomicFile.WriteAllBytes(path, EncodeGray(image, bitDepth));
    }

    public static void WriteChunk(Stream png, ReadOnlySpan<byte> type, ReadOnlySpan<byte> data)
    {
        Span<byte> word = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(word, data.Length);
        png.Write(word);
        png.Write(type);
        png.Write(data);
        BinaryPrimitives.WriteUInt32BigEndian(word, Crc32.Append(Crc32.Compute(type), data));
        png.Write(word);
    }

    /// <summary>Writes the (sub)image of pixels (x0 + i·dx, y0 + j·dy) as filtered scanlines.</summary>
    private static void WriteFiltered(Stream output, ReadOnlySpan<ushort> samples, int imageWidth, PngHeader h,
        int x0, int y0, int dx, int dy, int width, int height, int filterChoice)
    {
        int channels = h.Channels, bytesPerSample = h.BitDepth / 8;
        int rowBytes = Png.RowBytes(width, h), bpp = channels * bytesPerSample;
        var prev = new byte[rowBytes];
        var cur = new byte[rowBytes];
        var candidate = new byte[rowBytes];
        var best = new byte[rowBytes];
        for (int j = 0; j < height; j++)
        {
            int srcRow = (y0 + j * dy) * imageWidth;
            for (int i = 0; i < width; i++)
                for (int c = 0; c < channels; c++)
                {
                    ushort s = samples[(srcRow + x0 + i * dx) * channels + c];
                    int p = (i * channels + c) * bytesPerSample;
                    if (bytesPerSample == 2) { cur[p] = (byte)(s >> 8); cur[p + 1] = (byte)s; }
                    else cur[p] = (byte)s;
                }
            int chosen = filterChoice;
            if (filterChoice == PngWriteOptions.Adaptive)
            {
                long bestScore = long.MaxValue;
                for (int f = 0; f <= 4; f++)
                {
                    ApplyFilter(f, cur, prev, j == 0, bpp, candidate);
                    long score = 0;
                    foreach (byte b in candidate) score += b < 128 ? b : 256 - b;
                    if (score < bestScore) { bestScore = score; chosen = f; (best, candidate) = (candidate, best); }
                }
            }
            else ApplyFilter(chosen, cur, prev, j == 0, bpp, best);
            output.WriteByte((byte)chosen);
            output.Write(best);
            (prev, cur) = (cur, prev);
        }
    }

    private static void ApplyFilter(int filter, byte[] cur, byte[] prev, bool firstRow, int bpp, byte[] result)
    {
        for (int i = 0; i < cur.Length; i++)
        {
            int left = i >= bpp ? cur[i - bpp] : 0, up = firstRow ? 0 : prev[i], upLeft = i >= bpp && !firstRow ? prev[i - bpp] : 0;
            int predictor = filter switch
            {
                0 => 0,
                1 => left,
                2 => up,
                3 => (left + up) >> 1,
                _ => Png.Paeth(left, up, upLeft),
            };
            result[i] = (byte)(cur[i] - predictor);
        }
    }
}
