namespace XrayVL.Imaging;

/// <summary>Where an image came from; never holds anything that identifies a patient.</summary>
public enum ImageFormat { Synthetic, Png, Jpeg, Dicom }

/// <summary>
/// What the decoder saw: container format, bits per stored sample, samples per pixel in the file (1 gray, 2 gray+alpha,
/// 3 colour, 4 colour+alpha) and, for DICOM, the view (PA, AP, LL, ...) and modality (CR, DX, ...) where the file gives them.
/// </summary>
public sealed record ImageSourceInfo(ImageFormat Format, int BitDepth, int Channels, string? ViewPosition = null, string? Modality = null)
{
    public static readonly ImageSourceInfo Synthetic = new(ImageFormat.Synthetic, 32, 1);
}

/// <summary>
/// The one in-memory image type: a gray image with pixels in [0, 1] (0 black, 1 white as displayed), row-major,
/// <c>Pixels[y * Width + x]</c>. Colour inputs are reduced to luminance by the decoders.
/// A class, not a record: value equality over a float array would be misleading.
/// </summary>
public sealed class GrayImage
{
    public int Width { get; }
    public int Height { get; }
    /// <summary>Row-major, length Width × Height, values in [0, 1].</summary>
    public float[] Pixels { get; }
    public ImageSourceInfo Source { get; }

    public GrayImage(int width, int height, float[] pixels, ImageSourceInfo? source = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
        ArgumentNullException.ThrowIfNull(pixels);
        if (pixels.LongLength != (long)width * height)
            throw new ArgumentException($"pixels has {pixels.LongLength} values, {width}×{height} needs {(long)width * height}", nameof(pixels));
        Width = width;
        Height = height;
        Pixels = pixels;
        Source = source ?? ImageSourceInfo.Synthetic;
    }

    public float this[int x, int y] => Pixels[y * Width + x];

    /// <summary>A new image of the same size and source with other pixels.</summary>
    public GrayImage WithPixels(float[] pixels) => new(Width, Height, pixels, Source);

    public override string ToString()
    {
        string view = Source.ViewPosition is null ? "" : $" {Source.ViewPosition}";
        string modality = Source.Modality is null ? "" : $" {Source.Modality}";
        return $"{Width}×{Height} {Source.Format} {Source.BitDepth}-bit{modality}{view}";
    }
}
