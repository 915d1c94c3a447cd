using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace XrayVL.Imaging;

/// <summary>
/// JPEG 2000 (ISO 15444-1) frames through OpenJPEG, the reference implementation that GDCM and Pillow also use, loaded
/// from the system (libopenjp2.so.7, Debian's libopenjp2-7) by a small P/Invoke layer: no managed JPEG 2000 decoder is
/// served here. Strict mode is on, so a codestream cut short is refused rather than decoded to the layers it still
/// holds; the size from the header is checked against the limits before OpenJPEG allocates the image.
/// Reads raw codestreams (SOC marker FF 4F FF 51, as DICOM stores them) and JP2 files (some encoders wrap the
/// codestream in JP2 boxes inside DICOM too). OpenJPEG undoes the reversible / irreversible component transform, so
/// a 3-component frame comes back as RGB.
/// </summary>
public static unsafe class OpenJpeg
{
    private static readonly NativeLibraryHandle Library = new("libopenjp2.so.7", "libopenjp2-7", "JPEG 2000 decoding");

    /// <summary>Whether libopenjp2 could be loaded on this machine.</summary>
    public static bool IsAvailable => Library.IsAvailable;

    private const int CodecJ2K = 0, CodecJp2 = 2;

    public static bool IsCodestream(ReadOnlySpan<byte> data) => data.Length >= 4 && data[0] == 0xFF && data[1] == 0x4F && data[2] == 0xFF && data[3] == 0x51;

    /// <summary>The JP2 signature box: length 12, type "jP  ", content 0D 0A 87 0A.</summary>
    public static bool IsJp2(ReadOnlySpan<byte> data) =>
        data.Length >= 12 && data[..12].SequenceEqual((ReadOnlySpan<byte>)[0, 0, 0, 12, 0x6A, 0x50, 0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A]);

    // opj_image_t and opj_image_comp_t as openjpeg.h 2.5 lays them out (LP64).
    [StructLayout(LayoutKind.Sequential)]
    private struct Image
    {
        public uint X0, Y0, X1, Y1, NumComps;
        public int ColorSpace;
        public ImageComponent* Comps;
        public byte* IccProfile;
        public uint IccProfileLength;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct ImageComponent
    {
        public uint Dx, Dy, W, H, X0, Y0, Prec, Bpp, Sgnd, ResnoDecoded, Factor;
        public int* Data;
        public ushort Alpha;
    }

    /// <summary>What the read / skip / seek callbacks see: the pinned input and a position in it.</summary>
    private struct Source
    {
        public byte* Data;
        public long Length, Position;
    }

    /// <summary>opj_dparameters_t is about 8.5 KB in 2.5 (two 4096-byte paths among its fields); this is more than
    /// enough room for opj_set_default_decoder_parameters to fill.</summary>
    private const int DecoderParametersBytes = 64 * 1024;

    public static NativeCodecFrame Decode(byte[] data, string name, ImageLimits limits, string what = "JPEG 2000 frame")
    {
        bool jp2 = IsJp2(data);
        if (!jp2 && !IsCodestream(data)) throw new XrayVLException($"{name}: {what} does not start with a JPEG 2000 codestream or JP2 signature");
        var f = Functions.Load(name);
        var messages = new List<string>();
        var messagesHandle = GCHandle.Alloc(messages);
        void* parameters = NativeMemory.AllocZeroed(DecoderParametersBytes);
        var source = (Source*)NativeMemory.AllocZeroed((nuint)sizeof(Source));
        nint codec = 0, stream = 0;
        Image* image = null;
        try
        {
            fixed (byte* input = data)
            {
                *source = new Source { Data = input, Length = data.Length };
                codec = f.CreateDecompress(jp2 ? CodecJp2 : CodecJ2K);
                if (codec == 0) throw new XrayVLException($"{name}: OpenJPEG could not create a decoder");
                f.SetErrorHandler(codec, &OnMessage, (void*)GCHandle.ToIntPtr(messagesHandle));
                f.SetDefaultDecoderParameters(parameters);
                if (f.SetupDecoder(codec, parameters) == 0) throw Fail(name, what, "decoder setup", messages);
                // A truncated codestream is an error, not an image made of the layers that arrived.
                f.SetStrictMode(codec, 1);
                stream = f.StreamCreate(1 << 16, 1);
                f.StreamSetUserData(stream, source, null);
                f.StreamSetUserDataLength(stream, (ulong)data.Length);
                f.StreamSetReadFunction(stream, &Read);
                f.StreamSetSkipFunction(stream, &Skip);
                f.StreamSetSeekFunction(stream, &Seek);
                if (f.ReadHeader(stream, codec, &image) == 0 || image == null) throw Fail(name, what, "header", messages);
                long width = (long)image->X1 - image->X0, height = (long)image->Y1 - image->Y0;
                int components = (int)image->NumComps;
                limits.CheckDimensions(name, $"{what} header", width, height);
                if (components is not (1 or 3 or 4))
                    throw new XrayVLException($"{name}: {what} has {components} components (1 or 3 supported)");
                // OpenJPEG holds each component as 32-bit samples, plus about as much again in tile and code-block
                // buffers while decoding; our copy of the samples is a third.
                limits.CheckDecodeBytes(name, what, width * height * components * 4 * 3);
                if (f.Decode(codec, stream, image) == 0 || f.EndDecompress(codec, stream) == 0) throw Fail(name, what, "data", messages);
                return Collect(image, (int)width, (int)height, Math.Min(components, 3), name, what);
            }
        }
        finally
        {
            if (image != null) f.ImageDestroy(image);
            if (stream != 0) f.StreamDestroy(stream);
            if (codec != 0) f.DestroyCodec(codec);
            NativeMemory.Free(source);
            NativeMemory.Free(parameters);
            messagesHandle.Free();
        }
    }

    /// <summary>Components at full resolution, interleaved; an alpha component (the fourth) is left out. Subsampled
    /// components (4:2:2 in J2K) are refused: DICOM forbids them in these transfer syntaxes.</summary>
    private static NativeCodecFrame Collect(Image* image, int width, int height, int components, string name, string what)
    {
        var first = image->Comps[0];
        var samples = new int[width * height * components];
        for (int c = 0; c < components; c++)
        {
            var comp = image->Comps[c];
            if (comp.W != width || comp.H != height || comp.Dx != 1 || comp.Dy != 1)
                throw new XrayVLException($"{name}: {what} component {c} is subsampled ({comp.W}×{comp.H}), which is not supported");
            if (comp.Prec != first.Prec || comp.Sgnd != first.Sgnd)
                throw new XrayVLException($"{name}: {what} components differ in precision or sign, which is not supported");
            if (comp.Data == null) throw new XrayVLException($"{name}: {what} component {c} was not decoded");
            for (int i = 0; i < width * height; i++) samples[i * components + c] = comp.Data[i];
        }
        if (first.Prec is < 1 or > 16) throw new XrayVLException($"{name}: {what} has {first.Prec}-bit samples (1–16 supported)");
        return new NativeCodecFrame(width, height, components, (int)first.Prec, first.Sgnd != 0, samples);
    }

    private static XrayVLException Fail(string name, string what, string part, List<string> messages)
    {
        // OpenJPEG's own words name the fault ("Stream too short", "Invalid number of tiles"); the last one is the cause.
        string detail = messages.Count > 0 ? $": {messages[^1].Trim()}" : "";
        return new XrayVLException($"{name}: corrupt or unsupported {what} ({part}{detail})");
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static void OnMessage(byte* message, void* clientData)
    {
        if (GCHandle.FromIntPtr((nint)clientData).Target is List<string> list && list.Count < 16)
            list.Add(Marshal.PtrToStringUTF8((nint)message) ?? "");
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static nuint Read(void* buffer, nuint count, void* user)
    {
        var s = (Source*)user;
        long left = s->Length - s->Position;
        if (left <= 0) return unchecked((nuint)(-1));              // OpenJPEG's end-of-stream
        long n = Math.Min(left, (long)count);
        Buffer.MemoryCopy(s->Data + s->Position, buffer, (long)count, n);
        s->Position += n;
        return (nuint)n;
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static long Skip(long count, void* user)
    {
        var s = (Source*)user;
        long target = Math.Clamp(s->Position + count, 0, s->Length);
        long skipped = target - s->Position;
        s->Position = target;
        return skipped;
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int Seek(long position, void* user)
    {
        var s = (Source*)user;
        if (position < 0 || position > s->Length) return 0;
        s->Position = position;
        return 1;
    }

    /// <summary>The entry points used, resolved once from the loaded library.</summary>
    private sealed class Functions
    {
        public delegate* unmanaged[Cdecl]<int, nint> CreateDecompress;
        public delegate* unmanaged[Cdecl]<nint, delegate* unmanaged[Cdecl]<byte*, void*, void>, void*, int> SetErrorHandler;
        public delegate* unmanaged[Cdecl]<void*, void> SetDefaultDecoderParameters;
        public delegate* unmanaged[Cdecl]<nint, void*, int> SetupDecoder;
        public delegate* unmanaged[Cdecl]<nint, int, int> SetStrictMode;
        public delegate* unmanaged[Cdecl]<nuint, int, nint> StreamCreate;
        public delegate* unmanaged[Cdecl]<nint, void*, void*, void> StreamSetUserData;
        public delegate* unmanaged[Cdecl]<nint, ulong, void> StreamSetUserDataLength;
        public delegate* unmanaged[Cdecl]<nint, delegate* unmanaged[Cdecl]<void*, nuint, void*, nuint>, void> StreamSetReadFunction;
        public delegate* unmanaged[Cdecl]<nint, delegate* unmanaged[Cdecl]<long, void*, long>, void> StreamSetSkipFunction;
        public delegate* unmanaged[Cdecl]<nint, delegate* unmanaged[Cdecl]<long, void*, int>, void> StreamSetSeekFunction;
        public delegate* unmanaged[Cdecl]<nint, nint, Image**, int> ReadHeader;
        public delegate* unmanaged[Cdecl]<nint, nint, Image*, int> Decode;
        public delegate* unmanaged[Cdecl]<nint, nint, int> EndDecompress;
        public delegate* unmanaged[Cdecl]<Image*, void> ImageDestroy;
        public delegate* unmanaged[Cdecl]<nint, void> StreamDestroy;
        public delegate* unmanaged[Cdecl]<nint, void> DestroyCodec;

        private static Functions? _loaded;

        public static Functions Load(string name)
        {
            if (_loaded is { } done) return done;
            nint E(string symbol) => Library.Export(name, symbol);
            var f = new Functions
            {
                CreateDecompress = (delegate* unmanaged[Cdecl]<int, nint>)E("opj_create_decompress"),
                SetErrorHandler = (delegate* unmanaged[Cdecl]<nint, delegate* unmanaged[Cdecl]<byte*, void*, void>, void*, int>)E("opj_set_error_handler"),
                SetDefaultDecoderParameters = (delegate* unmanaged[Cdecl]<void*, void>)E("opj_set_default_decoder_parameters"),
                SetupDecoder = (delegate* unmanaged[Cdecl]<nint, void*, int>)E("opj_setup_decoder"),
                SetStrictMode = (delegate* unmanaged[Cdecl]<nint, int, int>)E("opj_decoder_set_strict_mode"),
                StreamCreate = (delegate* unmanaged[Cdecl]<nuint, int, nint>)E("opj_stream_create"),
                StreamSetUserData = (delegate* unmanaged[Cdecl]<nint, void*, void*, void>)E("opj_stream_set_user_data"),
                StreamSetUserDataLength = (delegate* unmanaged[Cdecl]<nint, ulong, void>)E("opj_stream_set_user_data_length"),
                StreamSetReadFunction = (delegate* unmanaged[Cdecl]<nint, delegate* unmanaged[Cdecl]<void*, nuint, void*, nuint>, void>)E("opj_stream_set_read_function"),
                StreamSetSkipFunction = (delegate* unmanaged[Cdecl]<nint, delegate* unmanaged[Cdecl]<long, void*, long>, void>)E("opj_stream_set_skip_function"),
                StreamSetSeekFunction = (delegate* unmanaged[Cdecl]<nint, delegate* unmanaged[Cdecl]<long, void*, int>, void>)E("opj_stream_set_seek_function"),
                ReadHeader = (delegate* unmanaged[Cdecl]<nint, nint, Image**, int>)E("opj_read_header"),
                Decode = (delegate* unmanaged[Cdecl]<nint, nint, Image*, int>)E("opj_decode"),
                EndDecompress = (delegate* unmanaged[Cdecl]<nint, nint, int>)E("opj_end_decompress"),
                ImageDestroy = (delegate* unmanaged[Cdecl]<Image*, void>)E("opj_image_destroy"),
                StreamDestroy = (delegate* unmanaged[Cdecl]<nint, void>)E("opj_stream_destroy"),
                DestroyCodec = (delegate* unmanaged[Cdecl]<nint, void>)E("opj_destroy_codec"),
            };
            return _loaded = f;
        }
    }
}
