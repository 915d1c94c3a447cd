using StbImageSharp;

namespace XrayVL.Imaging;

/// <summary>
/// JPEG decoding through StbImageSharp (baseline and progressive, 8-bit; no 12-bit, lossless or arithmetic-coded JPEG).
/// The frame size is read with StbImageSharp's own header parser, the same one its decoder uses, and checked against
/// the limits before anything is allocated. Every decoder failure becomes an XrayVLException naming the file.
/// Colour is reduced to gray with Rec. 601 luma weights (note that stb_image_write, like some other encoders, writes
/// even gray input as 3-component YCbCr); EXIF orientation is not applied.
/// </summary>
public static class Jpeg
{
    public static bool HasSignature(ReadOnlySpan<byte> data) => data.Length >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;

    /// <summary>Decoded 8-bit samples, interleaved, <see cref="Channels"/> per pixel (1 gray or 3 RGB).</summary>
    public sealed record Samples(int Width, int Height, int Channels, byte[] Data);

    public static GrayImage Decode(byte[] data, string name, ImageLimits? limits = null)
    {
        var s = DecodeSamples(data, name, limits);
        return new GrayImage(s.Width, s.Height, ToGray(s), new ImageSourceInfo(ImageFormat.Jpeg, 8, s.Channels));
    }

    /// <param name="what">What messages call the data: "JPEG", or e.g. "encapsulated JPEG frame" inside a DICOM file.</param>
    public static Samples DecodeSamples(byte[] data, string name, ImageLimits? limits = null, string what = "JPEG")
    {
        limits ??= ImageLimits.Default;
        if (!HasSignature(data)) throw new XrayVLException($"{name}: {what} data does not start with a JPEG start-of-image marker");
        ImageInfo? info;
        try
        {
            info = ImageInfo.FromStream(new ClampedStream(data));
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new XrayVLException($"{name}: corrupt {what} header", e);
        }
        if (info is null) throw new XrayVLException($"{name}: corrupt or unsupported {what} header");
        limits.CheckDimensions(name, $"{what} frame header", info.Value.Width, info.Value.Height);
        // StbImageSharp decodes data cut short without complaint (missing data reads as gray); refuse it instead.
        if (!HasEndOfImage(data)) throw new XrayVLException($"{name}: {what} is truncated (no end-of-image marker after the image data)");

        ImageResult result;
        try
        {
            result = ImageResult.FromStream(new ClampedStream(data), ColorComponents.Default);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // StbImageSharp's reason is kept only in the inner exception: it lives in a static field that concurrent
            // decodes overwrite, so it may describe another file.
            throw new XrayVLException($"{name}: corrupt or unsupported {what} (baseline and progressive 8-bit JPEG are supported)", e);
        }
        int channels = result.Comp switch
        {
            ColorComponents.Grey => 1,
            ColorComponents.GreyAlpha => 2,
            ColorComponents.RedGreenBlue => 3,
            _ => 4,
        };
        if (result.Width <= 0 || result.Height <= 0 || result.Data is null || result.Data.LongLength < (long)result.Width * result.Height * channels)
            throw new XrayVLException($"{name}: corrupt {what} (decoder returned no image)");
        if (channels is 2 or 4)
        {
            // Drop alpha so callers see 1 or 3 channels only.
            int keep = channels - 1, n = result.Width * result.Height;
            var stripped = new byte[n * keep];
            for (int i = 0; i < n; i++)
                for (int c = 0; c < keep; c++) stripped[i * keep + c] = result.Data[i * channels + c];
            return new Samples(result.Width, result.Height, keep, stripped);
        }
        return new Samples(result.Width, result.Height, channels, result.Data);
    }

    /// <summary>
    /// Walks the marker segments to the first start-of-scan, then looks for an end-of-image marker (FF D9) after it.
    /// Entropy-coded data cannot contain FF D9 (a data byte FF is always followed by 00), so a file cut inside the scans
    /// has none there. An EXIF thumbnail's EOI lies inside an APP segment, before the scan, and is skipped.
    /// </summary>
    internal static bool HasEndOfImage(ReadOnlySpan<byte> data)
    {
        int i = 2;
        while (true)
        {
            while (i < data.Length && data[i] != 0xFF) i++;           // tolerate stray bytes between segments, as decoders do
            while (i < data.Length && data[i] == 0xFF) i++;           // fill bytes
            if (i >= data.Length) return false;
            byte marker = data[i++];
            if (marker == 0xDA) break;                                // start of scan: the entropy-coded data follows
            if (marker == 0xD9) return true;                          // EOI before any scan: let the decoder judge
            if (marker is 0x01 or (>= 0xD0 and <= 0xD8)) continue;    // markers without a length field
            if (data.Length - i < 2) return false;
            i += (data[i] << 8) | data[i + 1];
        }
        for (int j = i; j + 1 < data.Length; j++)
            if (data[j] == 0xFF && data[j + 1] == 0xD9) return true;
        return false;
    }

    internal static float[] ToGray(Samples s)
    {
        int n = s.Width * s.Height;
        var pixels = new float[n];
        var d = s.Data;
        if (s.Channels == 1)
            for (int i = 0; i < n; i++) pixels[i] = d[i] / 255f;
        else
            for (int i = 0; i < n; i++) pixels[i] = Png.Luma8(d[3 * i], d[3 * i + 1], d[3 * i + 2]);
        return pixels;
    }

    /// <summary>
    /// StbImageSharp skips a segment with Stream.Seek(n, Current) and tests end of input with Position == Length; a
    /// MemoryStream lets a corrupt segment length seek past the end, after which that test never succeeds and the
    /// decoder loops forever (found by the fuzz test). This stream keeps the position within [0, Length]; a backward
    /// relative seek goes to the end, as stb_image's own skip does for a negative count.
    /// </summary>
    private sealed class ClampedStream(byte[] data) : MemoryStream(data, writable: false)
    {
        public override long Seek(long offset, SeekOrigin origin)
        {
            long target = origin switch
            {
                SeekOrigin.Begin => offset,
                SeekOrigin.Current => offset < 0 ? Length : Position + offset,
                _ => Length + offset,
            };
            return base.Seek(Math.Clamp(target, 0, Length), SeekOrigin.Begin);
        }

        public override long Position
        {
            get => base.Position;
            set => base.Position = Math.Clamp(value, 0, Length);
        }
    }
}
