namespace XrayVL.Imaging;

/// <summary>
/// Loads an X-ray from PNG, JPEG or DICOM. The format is sniffed from the content (magic bytes), never taken from the
/// file name's extension. Size limits are checked from headers before decoding; every failure is an XrayVLException
/// whose one-line message names the file.
/// </summary>
public static class ImageFile
{
    public static GrayImage Load(string path, ImageLimits? limits = null)
    {
        limits ??= ImageLimits.Default;
        if (string.IsNullOrWhiteSpace(path)) throw new XrayVLException($"image path is empty (\"{path}\"): give the path of a PNG, JPEG or DICOM file");
        byte[] bytes;
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists)
                throw new XrayVLException(Directory.Exists(path) ? $"{path}: is a directory, not an image file" : $"{path}: image file not found");
            // Pipes, sockets and devices report a size of 0, as empty files do. Opening a pipe would wait for a writer
            // forever and a device may never end, so anything of size 0 is refused without being opened.
            if (info.Length == 0) throw new XrayVLException($"{path}: is empty or not a regular file (a pipe or device); give an image file");
            limits.CheckFileSize(path, info.Length);
            bytes = ReadAtMost(path, limits.MaxBytes);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new XrayVLException($"{path}: cannot read image file ({e.Message})", e);
        }
        return Decode(bytes, path, limits);
    }

    /// <summary>Reads a file, refusing more than <paramref name="maxBytes"/> even if it grows while being read.</summary>
    private static byte[] ReadAtMost(string path, long maxBytes)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        var buffer = new MemoryStream();
        var chunk = new byte[1 << 16];
        int n;
        while ((n = stream.Read(chunk)) > 0)
        {
            if (buffer.Length + n > maxBytes) throw new ImageLimitException($"{path}: more than {maxBytes / 1048576.0:0.#} MiB, above the image size limit");
            buffer.Write(chunk, 0, n);
        }
        return buffer.ToArray();
    }

    /// <summary>Decodes image bytes; <paramref name="nameForErrors"/> is what messages call the input (a path or URL).</summary>
    public static GrayImage Decode(byte[] bytes, string nameForErrors, ImageLimits? limits = null)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        return Decode(bytes, bytes, nameForErrors, limits);
    }

    public static GrayImage Decode(ReadOnlySpan<byte> bytes, string nameForErrors, ImageLimits? limits = null) =>
        Decode(bytes, null, nameForErrors, limits);

    /// <summary>The format the content has, or null when it is none of PNG, JPEG, DICOM.</summary>
    public static ImageFormat? Sniff(ReadOnlySpan<byte> bytes) =>
        Png.HasSignature(bytes) ? ImageFormat.Png
        : Jpeg.HasSignature(bytes) ? ImageFormat.Jpeg
        : Dicom.LooksLikeDicom(bytes) ? ImageFormat.Dicom
        : null;

    private static GrayImage Decode(ReadOnlySpan<byte> bytes, byte[]? array, string name, ImageLimits? limits)
    {
        limits ??= ImageLimits.Default;
        limits.CheckFileSize(name, bytes.Length);
        if (bytes.IsEmpty) throw new XrayVLException($"{name}: file is empty, not an image");
        try
        {
            return Sniff(bytes) switch
            {
                ImageFormat.Png => Png.Decode(bytes, name, limits),
                ImageFormat.Jpeg => Jpeg.Decode(array ?? bytes.ToArray(), name, limits),   // the JPEG decoder works on arrays
                ImageFormat.Dicom => Dicom.Decode(bytes, name, limits),
                _ => throw new XrayVLException($"{name}: not a supported image (PNG, JPEG or DICOM)"),
            };
        }
        catch (Exception e) when (e is not XrayVLException and not OutOfMemoryException)
        {
            // A decoder bug on hostile input must still surface as a user-facing error that names the file.
            throw new XrayVLException($"{name}: corrupt image (internal decoder error: {e.GetType().Name}: {e.Message})", e);
        }
    }
}
