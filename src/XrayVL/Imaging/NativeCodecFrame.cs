using System.Runtime.InteropServices;

namespace XrayVL.Imaging;

/// <summary>
/// One frame from a native codec (JPEG 2000, JPEG-LS): the samples as stored, Components per pixel interleaved
/// (RGBRGB…), each a <see cref="Precision"/>-bit value, negative where <see cref="Signed"/>. Unlike lossy JPEG these
/// are the image's stored values (a lossy J2K or near-lossless JPEG-LS stream still decodes to stored values, only
/// approximate ones), so a DICOM reader applies its modality and VOI transforms to them as to uncompressed pixels.
/// </summary>
public sealed record NativeCodecFrame(int Width, int Height, int Components, int Precision, bool Signed, int[] Samples);

/// <summary>
/// A system library loaded once by its versioned file name (the runtime package, not the -dev symlink), or the reason it
/// could not be: codecs refuse with that reason, naming the Debian package that provides the library.
/// </summary>
internal sealed class NativeLibraryHandle
{
    private readonly Lazy<nint> _handle;
    private readonly string _file, _package, _what;

    public NativeLibraryHandle(string file, string package, string what)
    {
        (_file, _package, _what) = (file, package, what);
        _handle = new Lazy<nint>(() => NativeLibrary.TryLoad(file, typeof(NativeLibraryHandle).Assembly, null, out nint h) ? h : 0);
    }

    public bool IsAvailable => _handle.Value != 0;

    /// <summary>The library's handle; a one-line refusal naming the image and the missing package when it is absent.</summary>
    public nint Require(string name)
    {
        if (_handle.Value == 0)
            throw new XrayVLException($"{name}: {_what} needs the system library {_file}, which is not installed " +
                $"(on Debian or Ubuntu: apt-get install {_package})");
        return _handle.Value;
    }

    public nint Export(string name, string symbol)
    {
        nint handle = Require(name);
        if (!NativeLibrary.TryGetExport(handle, symbol, out nint address))
            throw new XrayVLException($"{name}: {_what} needs {symbol} in {_file}, which this version of the library lacks (install {_package})");
        return address;
    }
}
