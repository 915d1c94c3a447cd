namespace XrayVL.Imaging;

/// <summary>
/// Bounds checked from a file's header before any pixel buffer is allocated, so that a tiny file claiming
/// 60000×60000 pixels (a decompression bomb) is refused at once.
/// </summary>
public sealed record ImageLimits
{
    /// <summary>64 MiB: a 4k×4k 16-bit radiograph is 32 MiB uncompressed; anything larger is not a chest X-ray we can use.</summary>
    public long MaxBytes { get; init; } = 64L << 20;
    /// <summary>50 megapixels: above the largest detector formats (about 43×43 cm at 0.1 mm ≈ 18.5 MP).</summary>
    public long MaxPixels { get; init; } = 50_000_000;
    /// <summary>16384 px per side: no detector is wider; keeps very thin images from passing the pixel limit.</summary>
    public int MaxSide { get; init; } = 16384;
    /// <summary>1 GiB: the most a decoder may hold in working buffers for one image (coefficients, sample planes, the
    /// output), computed from the header before allocating. Pixels alone do not bound this: samples per pixel, bit depth
    /// and a format's own buffers multiply it.</summary>
    public long MaxDecodeBytes { get; init; } = 1L << 30;

    public static readonly ImageLimits Default = new();

    /// <summary>Throws when a header's dimensions are outside the limits; <paramref name="what"/> says which header ("PNG header").</summary>
    public void CheckDimensions(string name, string what, long width, long height)
    {
        if (width <= 0 || height <= 0)
            throw new XrayVLException($"{name}: {what} says {width}×{height} pixels, which is not a valid image size");
        long pixels = width * height;
        if (width > MaxSide || height > MaxSide || pixels > MaxPixels)
            throw new ImageLimitException(
                $"{name}: {what} says {width}×{height} pixels ({pixels / 1e6:0.#} megapixels), above the limit of " +
                $"{MaxPixels / 1e6:0.#} megapixels and {MaxSide} px per side (corrupt file or decompression bomb)");
    }

    /// <summary>Throws when decoding would need more than <see cref="MaxDecodeBytes"/> of working memory.</summary>
    public void CheckDecodeBytes(string name, string what, long bytes)
    {
        if (bytes > MaxDecodeBytes)
            throw new ImageLimitException($"{name}: decoding this {what} needs {bytes / 1048576.0:0} MiB, above the limit of {MaxDecodeBytes / 1048576.0:0} MiB");
    }

    public void CheckFileSize(string name, long bytes)
    {
        if (bytes > MaxBytes)
            throw new ImageLimitException($"{name}: file is {bytes / 1048576.0:0.#} MiB, above the limit of {MaxBytes / 1048576.0:0.#} MiB");
    }
}

/// <summary>An image refused for its size (bytes, pixels or side) rather than for being corrupt: servers answer it with 413.</summary>
public sealed class ImageLimitException(string message) : XrayVLException(message);
