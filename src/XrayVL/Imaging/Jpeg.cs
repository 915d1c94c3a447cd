namespace XrayVL.Imaging;

/// <summary>
/// JPEG files through the project's own decoder (<see cref="JpegDecoder"/>: Huffman-coded baseline, extended 12-bit,
/// progressive and lossless). Corrupt, truncated or unsupported files are refused with an XrayVLException naming the
/// file; nothing is decoded from memory the file did not fill. The frame size is checked against the limits before any
/// pixel buffer is allocated. Colour is reduced to gray with Rec. 601 luma weights (note that some encoders, such as
/// stb_image_write, write even gray input as 3-component YCbCr); EXIF orientation is not applied.
/// </summary>
public static class Jpeg
{
    public static bool HasSignature(ReadOnlySpan<byte> data) => data.Length >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;

    /// <summary>
    /// Width and height from the first frame header (SOF0–SOF15 but DHT, JPG and DAC), walking the marker segments
    /// before it; null when the header is missing or cut short. Reads no entropy-coded data.
    /// </summary>
    public static (int Width, int Height)? ReadSize(ReadOnlySpan<byte> data)
    {
        int at = 2;
        while (at + 4 <= data.Length)
        {
            if (data[at] != 0xFF) return null;
            byte marker = data[at + 1];
            if (marker == 0xFF) { at++; continue; }                              // fill bytes
            if (marker is 0xD8 or 0x01 or (>= 0xD0 and <= 0xD7)) { at += 2; continue; }   // markers without a length
            int length = (data[at + 2] << 8) | data[at + 3];
            if (marker is >= 0xC0 and <= 0xCF and not 0xC4 and not 0xC8 and not 0xCC)
            {
                if (at + 9 > data.Length) return null;
                int height = (data[at + 5] << 8) | data[at + 6], width = (data[at + 7] << 8) | data[at + 8];
                return (width, height);
            }
            if (length < 2) return null;
            at += 2 + length;
        }
        return null;
    }

    public static GrayImage Decode(byte[] data, string name, ImageLimits? limits = null)
    {
        var frame = DecodeFrame(data, name, limits);
        return new GrayImage(frame.Width, frame.Height, ToGray(frame), new ImageSourceInfo(ImageFormat.Jpeg, frame.Precision, frame.Channels));
    }

    /// <summary>The decoded samples at the file's own precision (8 or 12 bits, lossless 2–16), 1 or 3 per pixel.</summary>
    /// <param name="what">What messages call the data: "JPEG", or e.g. "encapsulated JPEG frame" inside a DICOM file.</param>
    internal static JpegDecoder.Frame DecodeFrame(byte[] data, string name, ImageLimits? limits = null, string what = "JPEG")
    {
        limits ??= ImageLimits.Default;
        if (!HasSignature(data)) throw new XrayVLException($"{name}: {what} data does not start with a JPEG start-of-image marker");
        return JpegDecoder.Decode(data, name, limits, what);
    }

    /// <summary>Samples → gray in [0, 1]: the one channel, or the Rec. 601 luma of three (as RGB).</summary>
    internal static float[] ToGray(JpegDecoder.Frame f)
    {
        int n = f.Width * f.Height;
        var pixels = new float[n];
        var d = f.Data;
        if (f.Precision == 8 && f.Channels == 3)
        {
            for (int i = 0; i < n; i++) pixels[i] = Png.Luma8((byte)d[3 * i], (byte)d[3 * i + 1], (byte)d[3 * i + 2]);
            return pixels;
        }
        float scale = 1f / ((1 << f.Precision) - 1);
        if (f.Channels == 1)
            for (int i = 0; i < n; i++) pixels[i] = d[i] * scale;
        else
            for (int i = 0; i < n; i++) pixels[i] = Png.Luma(d[f.Channels * i], d[f.Channels * i + 1], d[f.Channels * i + 2]) * scale;
        return pixels;
    }
}
