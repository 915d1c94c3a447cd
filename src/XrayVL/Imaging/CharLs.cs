using System.Runtime.InteropServices;

namespace XrayVL.Imaging;

/// <summary>
/// JPEG-LS (ISO 14495-1, lossless and near-lossless) frames through CharLS, the implementation GDCM and DCMTK build on,
/// loaded from the system (libcharls.so.2, Debian's libcharls2) through its C API: no managed JPEG-LS decoder is served
/// here. CharLS checks the stream itself (a frame cut short or with bad parameters returns an error code, which is
/// reported with CharLS's own message); the frame size is checked against the limits before the output is allocated.
/// Output layout: 8-bit samples one byte each, 9–16-bit samples one little-endian word each; several components come
/// back planar when the stream has no interleaving, otherwise by pixel.
/// </summary>
public static unsafe class CharLs
{
    private static readonly NativeLibraryHandle Library = new("libcharls.so.2", "libcharls2", "JPEG-LS decoding");

    /// <summary>Whether libcharls could be loaded on this machine.</summary>
    public static bool IsAvailable => Library.IsAvailable;

    [StructLayout(LayoutKind.Sequential)]
    private struct FrameInfo
    {
        public uint Width, Height;
        public int BitsPerSample, ComponentCount;
    }

    private const int InterleaveNone = 0;

    public static NativeCodecFrame Decode(byte[] data, string name, ImageLimits limits, string what = "JPEG-LS frame")
    {
        if (!Jpeg.HasSignature(data)) throw new XrayVLException($"{name}: {what} does not start with a JPEG start-of-image marker");
        var f = Functions.Load(name);
        nint decoder = f.Create();
        if (decoder == 0) throw new XrayVLException($"{name}: CharLS could not create a decoder");
        try
        {
            FrameInfo info;
            int interleave;
            nuint size;
            fixed (byte* input = data)
            {
                Check(f, f.SetSourceBuffer(decoder, input, (nuint)data.Length), name, what);
                Check(f, f.ReadHeader(decoder), name, what);
                Check(f, f.GetFrameInfo(decoder, &info), name, what);
                Check(f, f.GetInterleaveMode(decoder, &interleave), name, what);
                limits.CheckDimensions(name, $"{what} header", info.Width, info.Height);
                if (info.ComponentCount is not (1 or 3))
                    throw new XrayVLException($"{name}: {what} has {info.ComponentCount} components (1 or 3 supported)");
                if (info.BitsPerSample is < 2 or > 16) throw new XrayVLException($"{name}: {what} has {info.BitsPerSample}-bit samples (2–16 supported)");
                Check(f, f.GetDestinationSize(decoder, 0, &size), name, what);
                long pixels = (long)info.Width * info.Height * info.ComponentCount;
                // The decoded bytes and our int copy of them.
                limits.CheckDecodeBytes(name, what, (long)size + pixels * 4);
                var output = new byte[size];
                fixed (byte* destination = output)
                    Check(f, f.DecodeToBuffer(decoder, destination, size, 0), name, what);
                return Collect(output, info, interleave);
            }
        }
        finally
        {
            f.Destroy(decoder);
        }
    }

    private static NativeCodecFrame Collect(byte[] output, FrameInfo info, int interleave)
    {
        int width = (int)info.Width, height = (int)info.Height, components = info.ComponentCount, n = width * height;
        bool wide = info.BitsPerSample > 8;
        var samples = new int[n * components];
        for (int c = 0; c < components; c++)
            for (int i = 0; i < n; i++)
            {
                // Planar (no interleaving): component c's plane after c earlier ones; otherwise RGBRGB….
                int at = interleave == InterleaveNone ? c * n + i : i * components + c;
                samples[i * components + c] = wide ? output[2 * at] | output[2 * at + 1] << 8 : output[at];
            }
        return new NativeCodecFrame(width, height, components, info.BitsPerSample, false, samples);
    }

    private static void Check(Functions f, int error, string name, string what)
    {
        if (error == 0) return;
        string message = Marshal.PtrToStringUTF8((nint)f.ErrorMessage(error)) ?? $"error {error}";
        throw new XrayVLException($"{name}: corrupt or unsupported {what} ({message.TrimEnd('.')})");
    }

    private sealed class Functions
    {
        public delegate* unmanaged[Cdecl]<nint> Create;
        public delegate* unmanaged[Cdecl]<nint, void> Destroy;
        public delegate* unmanaged[Cdecl]<nint, byte*, nuint, int> SetSourceBuffer;
        public delegate* unmanaged[Cdecl]<nint, int> ReadHeader;
        public delegate* unmanaged[Cdecl]<nint, FrameInfo*, int> GetFrameInfo;
        public delegate* unmanaged[Cdecl]<nint, int*, int> GetInterleaveMode;
        public delegate* unmanaged[Cdecl]<nint, uint, nuint*, int> GetDestinationSize;
        public delegate* unmanaged[Cdecl]<nint, byte*, nuint, uint, int> DecodeToBuffer;
        public delegate* unmanaged[Cdecl]<int, byte*> ErrorMessage;

        private static Functions? _loaded;

        public static Functions Load(string name)
        {
            if (_loaded is { } done) return done;
            nint E(string symbol) => Library.Export(name, symbol);
            return _loaded = new Functions
            {
                Create = (delegate* unmanaged[Cdecl]<nint>)E("charls_jpegls_decoder_create"),
                Destroy = (delegate* unmanaged[Cdecl]<nint, void>)E("charls_jpegls_decoder_destroy"),
                SetSourceBuffer = (delegate* unmanaged[Cdecl]<nint, byte*, nuint, int>)E("charls_jpegls_decoder_set_source_buffer"),
                ReadHeader = (delegate* unmanaged[Cdecl]<nint, int>)E("charls_jpegls_decoder_read_header"),
                GetFrameInfo = (delegate* unmanaged[Cdecl]<nint, FrameInfo*, int>)E("charls_jpegls_decoder_get_frame_info"),
                GetInterleaveMode = (delegate* unmanaged[Cdecl]<nint, int*, int>)E("charls_jpegls_decoder_get_interleave_mode"),
                GetDestinationSize = (delegate* unmanaged[Cdecl]<nint, uint, nuint*, int>)E("charls_jpegls_decoder_get_destination_size"),
                DecodeToBuffer = (delegate* unmanaged[Cdecl]<nint, byte*, nuint, uint, int>)E("charls_jpegls_decoder_decode_to_buffer"),
                ErrorMessage = (delegate* unmanaged[Cdecl]<int, byte*>)E("charls_get_error_message"),
            };
        }
    }
}
