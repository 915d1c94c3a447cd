using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;
using System.Text;

namespace XrayVL.Imaging;

/// <summary>
/// The non-identifying attributes of a DICOM image that rendering needs. Nothing that names or identifies a patient is
/// read into this type (the reader never decodes those element values), so printing it is always safe.
/// </summary>
public sealed record DicomDataset
{
    public required string TransferSyntaxUid { get; init; }
    public required bool ExplicitVr { get; init; }
    /// <summary>Pixel data is encapsulated (JPEG baseline fragments) rather than native.</summary>
    public required bool Encapsulated { get; init; }
    public required int Rows { get; init; }
    public required int Columns { get; init; }
    public required int BitsAllocated { get; init; }
    public required int BitsStored { get; init; }
    public required int HighBit { get; init; }
    /// <summary>0 unsigned, 1 two's-complement signed samples.</summary>
    public required int PixelRepresentation { get; init; }
    public required int SamplesPerPixel { get; init; }
    /// <summary>0 interleaved (RGBRGB…), 1 planar (RR…GG…BB…); only read for 3 samples per pixel.</summary>
    public required int PlanarConfiguration { get; init; }
    public required string PhotometricInterpretation { get; init; }
    public required int NumberOfFrames { get; init; }
    public required double RescaleSlope { get; init; }
    public required double RescaleIntercept { get; init; }
    /// <summary>First value of Window Center / Width when both are present and usable; otherwise null.</summary>
    public double? WindowCenter { get; init; }
    public double? WindowWidth { get; init; }
    /// <summary>LINEAR (default), LINEAR_EXACT or SIGMOID.</summary>
    public required string VoiLutFunction { get; init; }
    public string? ViewPosition { get; init; }
    public string? Modality { get; init; }
    /// <summary>Explicit VR big endian (the retired 1.2.840.10008.1.2.2): multi-byte values and words are big-endian.</summary>
    public bool BigEndian { get; init; }
    /// <summary>Pixel Padding Value (0028,0120) and Pixel Padding Range Limit (0028,0121) as stored values: pixels in this
    /// range lie outside the patient (the detector's border); they are shown black and left out of the automatic window.</summary>
    public (int Low, int High)? Padding { get; init; }
    /// <summary>Modality LUT Sequence (0028,3000), which replaces rescale slope and intercept when present.</summary>
    public DicomLut? ModalityLut { get; init; }
    /// <summary>VOI LUT Sequence (0028,3010), used when the file gives no window.</summary>
    public DicomLut? VoiLut { get; init; }
    /// <summary>Float (32-bit) or Double Float (64-bit) Pixel Data (7FE0,0008 / 0009) rather than integer samples.</summary>
    public bool FloatPixels { get; init; }
    /// <summary>The colour LUTs of a PALETTE COLOR image.</summary>
    public DicomPalette? Palette { get; init; }

    public bool Signed => PixelRepresentation == 1;
}

/// <summary>A LUT of a Modality or VOI LUT Sequence item: input values First … First + Data.Length − 1 map to Data
/// (values below map to the first entry, above to the last); outputs have <see cref="Bits"/> bits.</summary>
public sealed record DicomLut(int First, int Bits, int[] Data)
{
    public int Apply(int x) => Data[Math.Clamp(x - First, 0, Data.Length - 1)];
}

/// <summary>
/// The project's own DICOM reader (PS3.5 / PS3.10): a Part-10 file (128-byte preamble, "DICM", group-0002 meta in
/// explicit VR little endian) or a bare data set; transfer syntaxes implicit VR little endian (1.2.840.10008.1.2),
/// explicit VR little endian (1.2.840.10008.1.2.1), deflated explicit VR little endian, explicit VR big endian, RLE
/// lossless, the JPEG processes of <see cref="JpegDecoder"/> (baseline, 12-bit extended, lossless), JPEG-LS
/// (<see cref="CharLs"/>) and JPEG 2000 (<see cref="OpenJpeg"/>); others are refused with their names. Sequences of defined or undefined length are skipped; only a fixed set of image attributes is
/// read, so patient-identifying values are never decoded, kept, printed or put in an exception message.
/// Rendering: stored value → mask to BitsStored (→ sign) → rescale slope/intercept → VOI window (the file's, else a
/// robust 0.5–99.5 percentile window) → [0, 1] → inverted for MONOCHROME1. The first frame is used.
/// </summary>
public static partial class Dicom
{
    public const string ImplicitVrLittleEndian = "1.2.840.10008.1.2";
    public const string ExplicitVrLittleEndian = "1.2.840.10008.1.2.1";
    public const string JpegBaseline = "1.2.840.10008.1.2.4.50";
    public const string JpegExtended = "1.2.840.10008.1.2.4.51";
    public const string JpegLossless = "1.2.840.10008.1.2.4.57";
    public const string JpegLosslessSv1 = "1.2.840.10008.1.2.4.70";
    public const string ExplicitVrBigEndian = "1.2.840.10008.1.2.2";
    public const string DeflatedExplicitVrLittleEndian = "1.2.840.10008.1.2.1.99";
    public const string RleLossless = "1.2.840.10008.1.2.5";

    /// <summary>Transfer syntaxes whose pixel data are encapsulated fragments this reader decodes.</summary>
    private static readonly HashSet<string> EncapsulatedSyntaxes =
        [JpegBaseline, JpegExtended, JpegLossless, JpegLosslessSv1, RleLossless, JpegLsLossless, JpegLsNearLossless, Jpeg2000Lossless, Jpeg2000];

    private const uint Undefined = 0xFFFFFFFF;
    private const uint ItemTag = 0xFFFEE000, ItemDelimitationTag = 0xFFFEE00D, SequenceDelimitationTag = 0xFFFEE0DD;
    private const uint TransferSyntaxTag = 0x00020010, PixelDataTag = 0x7FE00010, FloatPixelDataTag = 0x7FE00008, DoubleFloatPixelDataTag = 0x7FE00009;
    private const uint ModalityLutSequenceTag = 0x00283000, VoiLutSequenceTag = 0x00283010;
    /// <summary>Deeper nesting than this is a corrupt or hostile file (real files nest a few levels).</summary>
    private const int MaxSequenceDepth = 32;
    /// <summary>The longest value of a wanted attribute we copy; real ones are a few bytes.</summary>
    private const int MaxWantedValueLength = 1024;

    /// <summary>The only attributes whose values the reader looks at: none identifies a patient.</summary>
    private static readonly Dictionary<uint, string> Wanted = new()
    {
        [0x00080060] = "Modality",
        [0x00185101] = "ViewPosition",
        [0x00280002] = "SamplesPerPixel",
        [0x00280004] = "PhotometricInterpretation",
        [0x00280006] = "PlanarConfiguration",
        [0x00280008] = "NumberOfFrames",
        [0x00280010] = "Rows",
        [0x00280011] = "Columns",
        [0x00280100] = "BitsAllocated",
        [0x00280101] = "BitsStored",
        [0x00280102] = "HighBit",
        [0x00280103] = "PixelRepresentation",
        [0x00280120] = "PixelPaddingValue",
        [0x00280121] = "PixelPaddingRangeLimit",
        [0x00281050] = "WindowCenter",
        [0x00281051] = "WindowWidth",
        [0x00281052] = "RescaleIntercept",
        [0x00281053] = "RescaleSlope",
        [0x00281056] = "VOILUTFunction",
        [RedDescriptorTag] = "RedPaletteColorLookupTableDescriptor",
        [GreenDescriptorTag] = "GreenPaletteColorLookupTableDescriptor",
        [BlueDescriptorTag] = "BluePaletteColorLookupTableDescriptor",
        [RedDataTag] = "RedPaletteColorLookupTableData",
        [GreenDataTag] = "GreenPaletteColorLookupTableData",
        [BlueDataTag] = "BluePaletteColorLookupTableData",
        [SegmentedRedDataTag] = "SegmentedRedPaletteColorLookupTableData",
    };

    private static readonly HashSet<string> ValueRepresentations =
    [
        "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV", "OW", "PN",
        "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV",
    ];

    /// <summary>VRs encoded in explicit VR with 2 reserved bytes and a 4-byte length (PS3.5 table 7.1-1).</summary>
    private static readonly HashSet<string> LongLengthVrs = ["OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"];

    /// <summary>Standard syntaxes without a decoder here (see docs/images.md for why), named in the refusal.</summary>
    private static readonly Dictionary<string, string> UnsupportedSyntaxes = new()
    {
        ["1.2.840.10008.1.2.4.92"] = "JPEG 2000 Part 2 Lossless",
        ["1.2.840.10008.1.2.4.93"] = "JPEG 2000 Part 2",
        ["1.2.840.10008.1.2.4.201"] = "HTJ2K Lossless",
        ["1.2.840.10008.1.2.4.202"] = "HTJ2K Lossless RPCL",
        ["1.2.840.10008.1.2.4.203"] = "HTJ2K",
    };

    private static readonly string[] KnownPhotometric = ["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR", "YBR_PARTIAL_422", "YBR_ICT", "YBR_RCT"];

    /// <summary>Where the pixel data lies in the file (kept apart from <see cref="DicomDataset"/> so it never prints).</summary>
    private sealed record PixelData(int Offset, int Length, List<(int Offset, int Length)>? Fragments, uint[]? BasicOffsetTable, int FirstItemStart, string Vr = "");

    /// <summary>"DICM" at byte 128, or (no preamble) a first element of group 0002 or 0008 that parses as one.</summary>
    public static bool LooksLikeDicom(ReadOnlySpan<byte> data)
    {
        if (data.Length >= 132 && data.Slice(128, 4).SequenceEqual("DICM"u8)) return true;
        return data.Length >= 8 && StartsWithPlausibleElement(data);
    }

    private static bool StartsWithPlausibleElement(ReadOnlySpan<byte> data)
    {
        ushort group = BinaryPrimitives.ReadUInt16LittleEndian(data);
        if (group is not (0x0002 or 0x0008)) return false;
        if (IsVr(data[4], data[5])) return true;                  // explicit VR
        uint length = BinaryPrimitives.ReadUInt32LittleEndian(data[4..]);
        return group == 0x0008 && length != Undefined && length <= (uint)(data.Length - 8) && length < 1024;  // implicit VR
    }

    /// <summary>Reads the header attributes (no pixel decoding).</summary>
    public static DicomDataset ReadDataset(ReadOnlySpan<byte> data, string name) => Parse(data, name, ImageLimits.Default).Dataset;

    public static GrayImage Decode(ReadOnlySpan<byte> data, string name, ImageLimits? limits = null)
    {
        limits ??= ImageLimits.Default;
        var (ds, pixelData, inflated) = Parse(data, name, limits);
        if (inflated != null) data = inflated;                 // deflated syntax: offsets refer to the inflated data set
        limits.CheckDimensions(name, "DICOM header (Columns × Rows)", ds.Columns, ds.Rows);
        float[] pixels;
        int width = ds.Columns, height = ds.Rows, bitDepth = ds.BitsStored;
        if (ds.TransferSyntaxUid == RleLossless)
        {
            // RLE decodes to the native layout (little-endian words, planes interleaved), read as uncompressed data.
            byte[] native = Rle.DecodeFrame(FirstFrameBytes(data, pixelData, ds.NumberOfFrames, isFrameStart: null), ds, name, limits);
            var nativeData = new PixelData(0, native.Length, null, null, 0);
            var nativeDs = ds with { PlanarConfiguration = 0, BigEndian = false };
            pixels = ds.SamplesPerPixel != 1 ? RenderColour(native, nativeData, nativeDs)
                : ds.Palette is { } palette ? RenderPalette(ReadStoredValues(native, nativeData, nativeDs), palette)
                : DicomRendering.Monochrome(ReadStoredValues(native, nativeData, nativeDs), nativeDs, DicomRendering.MinStored(ds), DicomRendering.MaxStored(ds));
        }
        else if (IsNativeCodec(ds.TransferSyntaxUid))
        {
            var frame = DecodeNativeCodecFrame(data, pixelData, ds, name, limits);
            (width, height, bitDepth) = (frame.Width, frame.Height, frame.Precision);
            pixels = RenderNativeCodecFrame(frame, ds);
        }
        else if (ds.Encapsulated)
        {
            byte[] jpeg = FirstFrameBytes(data, pixelData, ds.NumberOfFrames, isFrameStart: f => Jpeg.HasSignature(f));
            var frame = Jpeg.DecodeFrame(jpeg, name, limits, "encapsulated JPEG frame");
            (width, height, bitDepth) = (frame.Width, frame.Height, frame.Precision);
            if (ds.SamplesPerPixel == 1)
            {
                var stored = StoredValuesOfJpeg(frame, ds);
                var jpegDs = frame.Lossless ? ds with { BitsStored = Math.Min(ds.BitsStored, frame.Precision) }
                    : ds with { BitsStored = frame.Precision, PixelRepresentation = 0 };
                pixels = DicomRendering.Monochrome(stored, jpegDs, DicomRendering.MinStored(jpegDs), DicomRendering.MaxStored(jpegDs));
            }
            else pixels = Jpeg.ToGray(frame);
        }
        else
        {
            CheckFrameLength(pixelData, ds, name);
            if (ds.BigEndian && ds.BitsAllocated == 8 && pixelData.Vr == "OW")
            {
                // 8-bit samples in OW words: big endian swaps the bytes of each word (PS3.5 A.3).
                var swapped = data.Slice(pixelData.Offset, pixelData.Length).ToArray();
                for (int i = 0; i + 1 < swapped.Length; i += 2) (swapped[i], swapped[i + 1]) = (swapped[i + 1], swapped[i]);
                data = swapped;
                pixelData = pixelData with { Offset = 0 };
            }
            pixels = (ds.SamplesPerPixel, ds.BitsAllocated) switch
            {
                (1, _) when IsWide(ds) => RenderWide(ReadWideValues(data, pixelData, ds), ds),
                (1, 1) => DicomRendering.Monochrome(ReadBitValues(data, pixelData, ds), ds, 0, 1),
                (1, _) when ds.Palette is { } palette => RenderPalette(ReadStoredValues(data, pixelData, ds), palette),
                (1, _) => DicomRendering.Monochrome(ReadStoredValues(data, pixelData, ds), ds, DicomRendering.MinStored(ds), DicomRendering.MaxStored(ds)),
                (_, 32) => RenderWideColour(data, pixelData, ds),
                _ when ds.PhotometricInterpretation is "YBR_FULL" or "YBR_FULL_422" => RenderYbrLuma(data, pixelData, ds),
                _ => RenderColour(data, pixelData, ds),
            };
        }
        var source = new ImageSourceInfo(ImageFormat.Dicom, bitDepth, ds.SamplesPerPixel, ds.ViewPosition, ds.Modality);
        return new GrayImage(width, height, pixels, source);
    }

    /// <summary>Stored values of frame 1 as a monochrome reader sees them (no modality or VOI transform): for tests
    /// against reference decoders.</summary>
    internal static int[] DecodeStoredValues(ReadOnlySpan<byte> data, string name)
    {
        var limits = ImageLimits.Default;
        var (ds, pixelData, inflated) = Parse(data, name, limits);
        if (inflated != null) data = inflated;
        if (ds.SamplesPerPixel != 1) throw new XrayVLException($"{name}: not monochrome");
        if (ds.TransferSyntaxUid == RleLossless)
        {
            byte[] native = Rle.DecodeFrame(FirstFrameBytes(data, pixelData, ds.NumberOfFrames, null), ds, name, limits);
            return ReadStoredValues(native, new PixelData(0, native.Length, null, null, 0), ds with { BigEndian = false });
        }
        if (IsNativeCodec(ds.TransferSyntaxUid)) return StoredValuesOf(DecodeNativeCodecFrame(data, pixelData, ds, name, limits), ds).Stored;
        if (ds.Encapsulated)
            return StoredValuesOfJpeg(Jpeg.DecodeFrame(FirstFrameBytes(data, pixelData, ds.NumberOfFrames, f => Jpeg.HasSignature(f)), name, limits), ds);
        CheckFrameLength(pixelData, ds, name);
        return ds.BitsAllocated == 1 ? ReadBitValues(data, pixelData, ds) : ReadStoredValues(data, pixelData, ds);
    }

    /// <summary>Monochrome stored values from a JPEG frame: lossless samples are the stored bit patterns (sign-extended
    /// when PixelRepresentation says signed); a 3-component JPEG in a monochrome file (some encoders always write YCbCr)
    /// contributes its luma.</summary>
    private static int[] StoredValuesOfJpeg(JpegDecoder.Frame frame, DicomDataset ds)
    {
        var stored = new int[frame.Width * frame.Height];
        var d = frame.Data;
        if (frame.Channels == 1)
            for (int i = 0; i < stored.Length; i++) stored[i] = d[i];
        else
            for (int i = 0; i < stored.Length; i++) stored[i] = (int)MathF.Round(Png.Luma(d[3 * i], d[3 * i + 1], d[3 * i + 2]));
        if (frame.Lossless)
        {
            int bits = Math.Min(ds.BitsStored, frame.Precision), mask = (1 << bits) - 1, sign = 1 << (bits - 1);
            for (int i = 0; i < stored.Length; i++)
            {
                int v = stored[i] & mask;
                stored[i] = ds.Signed && (v & sign) != 0 ? v - (1 << bits) : v;
            }
        }
        return stored;
    }

    // ---------------------------------------------------------------- parsing

    /// <summary>The data set and where its pixel data lie; for the deflated syntax also the inflated file (meta
    /// information + inflated data set), which the offsets refer to.</summary>
    private static (DicomDataset Dataset, PixelData PixelData, byte[]? Inflated) Parse(ReadOnlySpan<byte> data, string name, ImageLimits limits)
    {
        int pos;
        if (data.Length >= 132 && data.Slice(128, 4).SequenceEqual("DICM"u8)) pos = 132;
        else if (data.Length >= 8 && StartsWithPlausibleElement(data)) pos = 0;
        else throw new XrayVLException($"{name}: not a DICOM file (no 'DICM' at byte 128 and no data set at the start)");

        // File meta information: group 0002, always explicit VR little endian.
        string? transferSyntax = null;
        while (data.Length - pos >= 8 && BinaryPrimitives.ReadUInt16LittleEndian(data[pos..]) == 0x0002)
        {
            int start = pos;
            var h = ReadHeader(data, ref pos, explicitVr: true, name);
            if (h.Length == Undefined) throw Corrupt(name, start, "undefined length in the file meta information");
            CheckFits(data, pos, h.Length, name, start);
            if (h.Tag == TransferSyntaxTag) transferSyntax = ReadString(data.Slice(pos, (int)h.Length));
            pos += (int)h.Length;
        }
        bool explicitVr;
        if (transferSyntax is null)
        {
            // No meta: the encoding is guessed from the first element (two letters of a VR after the tag → explicit).
            explicitVr = data.Length - pos >= 6 && IsVr(data[pos + 4], data[pos + 5]);
            transferSyntax = explicitVr ? ExplicitVrLittleEndian : ImplicitVrLittleEndian;
        }
        else explicitVr = transferSyntax != ImplicitVrLittleEndian;
        bool big = transferSyntax == ExplicitVrBigEndian;
        bool encapsulated = EncapsulatedSyntaxes.Contains(transferSyntax);
        bool native = transferSyntax is ImplicitVrLittleEndian or ExplicitVrLittleEndian or ExplicitVrBigEndian or DeflatedExplicitVrLittleEndian;
        if (!encapsulated && !native)
            throw new XrayVLException($"{name}: DICOM transfer syntax {DescribeSyntax(transferSyntax)} is not supported " +
                "(supported: uncompressed little or big endian, deflated, RLE lossless, JPEG baseline, 12-bit extended and lossless, JPEG-LS, JPEG 2000; see docs/images.md)");
        byte[]? inflated = null;
        if (transferSyntax == DeflatedExplicitVrLittleEndian)
        {
            inflated = InflateDataSet(data, pos, name, limits);
            data = inflated;
        }

        var values = new Dictionary<uint, byte[]>();
        if (big) values[BigEndianMarker] = [];
        DicomLut? modalityLut = null, voiLut = null;
        PixelData? pixelData = null;
        while (pos < data.Length)
        {
            int start = pos;
            var h = ReadHeader(data, ref pos, explicitVr, name, big);
            if (h.Tag == PixelDataTag)
            {
                pixelData = ReadPixelData(data, ref pos, h.Length, encapsulated, name, start, h.Vr);
                break;
            }
            if (h.Tag is FloatPixelDataTag or DoubleFloatPixelDataTag)
            {
                // Parametric maps: IEEE floats, always native (PS3.5 A.4 allows no compression of them).
                pixelData = ReadPixelData(data, ref pos, h.Length, encapsulated: false, name, start, h.Vr);
                values[FloatPixelsMarker] = [h.Tag == DoubleFloatPixelDataTag ? (byte)64 : (byte)32];
                break;
            }
            if (h.Tag >> 16 == 0xFFFE)
            {
                // An item of defined length whose sequence header an encoder left out (seen in ultrasound exports):
                // its content is a nested data set, none of it wanted, so it is skipped as pydicom and DCMTK do.
                // Anything else here (a delimiter, an item of undefined length) leaves the structure unknowable.
                if (h.Tag != ItemTag || h.Length == Undefined) throw Corrupt(name, start, $"item or delimiter ({Tag(h.Tag)}) outside a sequence");
                CheckFits(data, pos, h.Length, name, start);
                pos += (int)h.Length;
                continue;
            }
            if (h.Tag is ModalityLutSequenceTag or VoiLutSequenceTag)
            {
                var lut = ReadLutSequence(data, pos, h.Length, explicitVr && h.Vr != "UN", big, name);
                if (h.Tag == ModalityLutSequenceTag) modalityLut = lut;
                else voiLut = lut;
            }
            if (h.Length == Undefined)
            {
                // A sequence (or UN holding one; its content is implicit VR per PS3.5 6.2.2) of undefined length.
                SkipSequence(data, ref pos, explicitVr && h.Vr != "UN", 1, name, big);
                continue;
            }
            CheckFits(data, pos, h.Length, name, start);
            if (Wanted.TryGetValue(h.Tag, out string? attribute))
            {
                if (h.Length > MaxValueLength(h.Tag)) throw Corrupt(name, start, $"{attribute} {Tag(h.Tag)} is {h.Length} bytes long");
                values[h.Tag] = data.Slice(pos, (int)h.Length).ToArray();
            }
            pos += (int)h.Length;
        }
        if (pixelData is null) throw new XrayVLException($"{name}: DICOM file has no pixel data (7FE0,0010){(pos >= data.Length ? "; truncated?" : "")}");
        var ds = BuildDataset(values, transferSyntax, explicitVr, encapsulated, name);
        // The LUT descriptor's first mapped value is signed when the pixels are (PS3.3 C.11.1.1).
        if (ds.Signed && modalityLut is { First: >= 32768 }) modalityLut = modalityLut with { First = modalityLut.First - 65536 };
        return (ds with { ModalityLut = modalityLut, VoiLut = voiLut }, pixelData, inflated);
    }

    /// <summary>The meta information followed by the inflated data set (raw deflate, PS3.5 A.5), at most
    /// <see cref="ImageLimits.MaxBytes"/>: a small file cannot expand without bound.</summary>
    private static byte[] InflateDataSet(ReadOnlySpan<byte> data, int pos, string name, ImageLimits limits)
    {
        var output = new MemoryStream();
        output.Write(data[..pos]);
        try
        {
            using var z = new DeflateStream(new MemoryStream(data[pos..].ToArray()), CompressionMode.Decompress);
            var chunk = new byte[1 << 16];
            int n;
            while ((n = z.Read(chunk)) > 0)
            {
                if (output.Length + n > limits.MaxBytes)
                    throw new ImageLimitException($"{name}: deflated DICOM data set expands beyond {limits.MaxBytes / 1048576.0:0.#} MiB, above the image size limit");
                output.Write(chunk, 0, n);
            }
        }
        catch (InvalidDataException e)
        {
            throw new XrayVLException($"{name}: corrupt deflated DICOM data set ({e.Message})", e);
        }
        return output.ToArray();
    }

    /// <summary>The LUT of the first item of a Modality or VOI LUT Sequence: LUT Descriptor (0028,3002) = entries (0 means
    /// 65536), first mapped value, bits per entry; LUT Data (0028,3006) as 16-bit words (or bytes for 8-bit entries
    /// stored one per byte).</summary>
    private static DicomLut? ReadLutSequence(ReadOnlySpan<byte> data, int pos, uint length, bool explicitVr, bool big, string name)
    {
        int end = length == Undefined ? data.Length : (int)Math.Min((long)pos + length, data.Length);
        if (end - pos < 8 || ReadTag(data, pos, big) != ItemTag) return null;
        uint itemLength = U32(data[(pos + 4)..], big);
        pos += 8;
        int itemEnd = itemLength == Undefined ? end : (int)Math.Min((long)pos + itemLength, end);
        byte[]? descriptor = null, table = null;
        while (pos < itemEnd)
        {
            int start = pos;
            var h = ReadHeader(data, ref pos, explicitVr, name, big);
            if (h.Tag == ItemDelimitationTag) break;
            if (h.Length == Undefined)
            {
                SkipSequence(data, ref pos, explicitVr && h.Vr != "UN", 2, name, big);
                continue;
            }
            CheckFits(data, pos, h.Length, name, start);
            if (h.Tag == 0x00283002) descriptor = data.Slice(pos, (int)h.Length).ToArray();
            else if (h.Tag == 0x00283006) table = data.Slice(pos, (int)h.Length).ToArray();
            pos += (int)h.Length;
        }
        if (descriptor is not { Length: 6 } || table is null) throw Invalid(name, "a LUT sequence item lacks a 3-value LUT Descriptor or LUT Data");
        int entries = U16(descriptor, big), first = U16(descriptor.AsSpan(2), big), bits = U16(descriptor.AsSpan(4), big);
        if (entries == 0) entries = 65536;
        if (bits is < 1 or > 16) throw Invalid(name, $"LUT Descriptor with {bits} bits per entry");
        var lut = new int[entries];
        if (table.Length >= 2 * entries)
            for (int i = 0; i < entries; i++) lut[i] = U16(table.AsSpan(2 * i), big) & ((1 << bits) - 1);
        else if (bits <= 8 && table.Length >= entries)
            for (int i = 0; i < entries; i++) lut[i] = table[i];
        else throw Invalid(name, $"LUT Data holds {table.Length} bytes for {entries} entries");
        return new DicomLut(first, bits, lut);
    }

    private readonly record struct ElementHeader(uint Tag, string Vr, uint Length);

    private static ushort U16(ReadOnlySpan<byte> d, bool big) => big ? BinaryPrimitives.ReadUInt16BigEndian(d) : BinaryPrimitives.ReadUInt16LittleEndian(d);
    private static uint U32(ReadOnlySpan<byte> d, bool big) => big ? BinaryPrimitives.ReadUInt32BigEndian(d) : BinaryPrimitives.ReadUInt32LittleEndian(d);
    private static uint ReadTag(ReadOnlySpan<byte> data, int pos, bool big) => (uint)U16(data[pos..], big) << 16 | U16(data[(pos + 2)..], big);

    private static ElementHeader ReadHeader(ReadOnlySpan<byte> data, ref int pos, bool explicitVr, string name, bool big = false)
    {
        if (data.Length - pos < 8) throw Truncated(name, pos, "element header");
        uint tag = ReadTag(data, pos, big);
        if (tag >> 16 == 0xFFFE || !explicitVr)
        {
            // Items and delimiters carry no VR in any transfer syntax; implicit VR: tag + 4-byte length.
            uint length = U32(data[(pos + 4)..], big);
            pos += 8;
            return new ElementHeader(tag, "", length);
        }
        if (!IsVr(data[pos + 4], data[pos + 5])) throw Corrupt(name, pos, $"invalid value representation in element {Tag(tag)}");
        string vr = string.Create(2, (data[pos + 4], data[pos + 5]), (s, p) => { s[0] = (char)p.Item1; s[1] = (char)p.Item2; });
        if (LongLengthVrs.Contains(vr))
        {
            if (data.Length - pos < 12) throw Truncated(name, pos, "element header");
            uint length = U32(data[(pos + 8)..], big);
            pos += 12;
            return new ElementHeader(tag, vr, length);
        }
        uint shortLength = U16(data[(pos + 6)..], big);
        pos += 8;
        return new ElementHeader(tag, vr, shortLength);
    }

    /// <summary>Skips the items of a sequence of undefined length, up to and including its sequence delimiter.</summary>
    private static void SkipSequence(ReadOnlySpan<byte> data, ref int pos, bool explicitVr, int depth, string name, bool big = false)
    {
        if (depth > MaxSequenceDepth) throw Corrupt(name, pos, $"sequences nested more than {MaxSequenceDepth} deep");
        while (true)
        {
            int start = pos;
            if (data.Length - pos < 8) throw Truncated(name, pos, "sequence");
            uint tag = ReadTag(data, pos, big);
            uint length = U32(data[(pos + 4)..], big);
            pos += 8;
            if (tag == SequenceDelimitationTag) return;
            if (tag != ItemTag) throw Corrupt(name, start, $"expected an item in a sequence, found {Tag(tag)}");
            if (length == Undefined) SkipItem(data, ref pos, explicitVr, depth, name, big);
            else
            {
                CheckFits(data, pos, length, name, start);
                pos += (int)length;
            }
        }
    }

    /// <summary>Skips the elements of an item of undefined length, up to and including its item delimiter.</summary>
    private static void SkipItem(ReadOnlySpan<byte> data, ref int pos, bool explicitVr, int depth, string name, bool big)
    {
        while (true)
        {
            int start = pos;
            var h = ReadHeader(data, ref pos, explicitVr, name, big);
            if (h.Tag == ItemDelimitationTag) return;
            if (h.Tag >> 16 == 0xFFFE) throw Corrupt(name, start, $"unexpected {Tag(h.Tag)} inside an item");
            if (h.Length == Undefined) SkipSequence(data, ref pos, explicitVr && h.Vr != "UN", depth + 1, name, big);
            else
            {
                CheckFits(data, pos, h.Length, name, start);
                pos += (int)h.Length;
            }
        }
    }

    private static PixelData ReadPixelData(ReadOnlySpan<byte> data, ref int pos, uint length, bool encapsulated, string name, int start, string vr)
    {
        if (!encapsulated)
        {
            if (length == Undefined) throw Corrupt(name, start, "encapsulated pixel data in an uncompressed transfer syntax");
            if (length > (uint)(data.Length - pos))
                throw new XrayVLException($"{name}: DICOM file is truncated (pixel data of {length} bytes, {data.Length - pos} present)");
            return new PixelData(pos, (int)length, null, null, 0, vr);
        }
        if (length != Undefined) throw Corrupt(name, start, "compressed transfer syntax but pixel data is not encapsulated");
        // PS3.5 A.4: a Basic Offset Table item (possibly empty), then one item per fragment, then a sequence delimiter.
        uint[]? offsets = null;
        var fragments = new List<(int, int)>();
        int firstItemStart = -1;
        while (true)
        {
            int itemStart = pos;
            if (data.Length - pos < 8) throw Truncated(name, pos, "encapsulated pixel data");
            uint tag = (uint)BinaryPrimitives.ReadUInt16LittleEndian(data[pos..]) << 16 | BinaryPrimitives.ReadUInt16LittleEndian(data[(pos + 2)..]);
            uint itemLength = BinaryPrimitives.ReadUInt32LittleEndian(data[(pos + 4)..]);
            pos += 8;
            if (tag == SequenceDelimitationTag) break;
            if (tag != ItemTag || itemLength == Undefined) throw Corrupt(name, itemStart, $"expected a pixel data fragment, found {Tag(tag)}");
            CheckFits(data, pos, itemLength, name, itemStart);
            if (offsets is null)
            {
                offsets = new uint[itemLength / 4];
                for (int i = 0; i < offsets.Length; i++) offsets[i] = BinaryPrimitives.ReadUInt32LittleEndian(data[(pos + 4 * i)..]);
            }
            else
            {
                if (firstItemStart < 0) firstItemStart = itemStart;
                fragments.Add((pos, (int)itemLength));
            }
            pos += (int)itemLength;
        }
        if (fragments.Count == 0) throw new XrayVLException($"{name}: DICOM encapsulated pixel data holds no fragments");
        return new PixelData(0, 0, fragments, offsets, firstItemStart);
    }

    /// <summary>Whether a fragment starts a frame (a JPEG start-of-image), for files without an offset table.</summary>
    private delegate bool FrameStart(ReadOnlySpan<byte> fragment);

    /// <summary>The compressed bytes of frame 1: all fragments for one frame, else those before the offset-table entry of
    /// frame 2 (or, with no table, one fragment per frame, or fragments up to the next start of a frame; for RLE, whose
    /// frames are one fragment each, the first).</summary>
    private static byte[] FirstFrameBytes(ReadOnlySpan<byte> data, PixelData p, int frames, FrameStart? isFrameStart)
    {
        var fragments = p.Fragments!;
        int count = fragments.Count;
        if (frames > 1 && count > 1)
        {
            var bot = p.BasicOffsetTable;
            if (bot is { Length: >= 2 } && bot[1] > bot[0])
            {
                count = 0;
                foreach (var (offset, _) in fragments)
                    if (offset - 8 - p.FirstItemStart < bot[1]) count++;
                count = Math.Max(count, 1);
            }
            else if (count == frames || isFrameStart is null) count = 1;
            else
            {
                int next = 1;
                while (next < count && !isFrameStart(data.Slice(fragments[next].Offset, fragments[next].Length))) next++;
                count = next;
            }
        }
        long total = 0;
        for (int i = 0; i < count; i++) total += fragments[i].Length;
        var jpeg = new byte[total];
        int at = 0;
        for (int i = 0; i < count; i++)
        {
            data.Slice(fragments[i].Offset, fragments[i].Length).CopyTo(jpeg.AsSpan(at));
            at += fragments[i].Length;
        }
        return jpeg;
    }

    private static DicomDataset BuildDataset(Dictionary<uint, byte[]> v, string transferSyntax, bool explicitVr, bool encapsulated, string name)
    {
        int rows = UShort(v, 0x00280010, name) ?? throw Missing(name, "Rows (0028,0010)");
        int columns = UShort(v, 0x00280011, name) ?? throw Missing(name, "Columns (0028,0011)");
        int samplesPerPixel = UShort(v, 0x00280002, name) ?? 1;
        int floatBits = v.TryGetValue(FloatPixelsMarker, out var floatMarker) ? floatMarker[0] : 0;
        int bitsAllocated = floatBits > 0 ? floatBits : UShort(v, 0x00280100, name) ?? (encapsulated ? 8 : throw Missing(name, "BitsAllocated (0028,0100)"));
        int bitsStored = floatBits > 0 ? floatBits : UShort(v, 0x00280101, name) ?? bitsAllocated;
        int highBit = floatBits > 0 ? floatBits - 1 : UShort(v, 0x00280102, name) ?? bitsStored - 1;
        int pixelRepresentation = floatBits > 0 ? 0 : UShort(v, 0x00280103, name) ?? 0;
        int planar = UShort(v, 0x00280006, name) ?? 0;
        string? photometric = CodeString(v, 0x00280004);
        int frames = (int)Math.Round(Number(v, 0x00280008, "NumberOfFrames (0028,0008)", name) ?? 1);
        double slope = Number(v, 0x00281053, "RescaleSlope (0028,1053)", name) ?? 1;
        double intercept = Number(v, 0x00281052, "RescaleIntercept (0028,1052)", name) ?? 0;
        double? center = Number(v, 0x00281050, "WindowCenter (0028,1050)", name);
        double? width = Number(v, 0x00281051, "WindowWidth (0028,1051)", name);
        string voiFunction = CodeString(v, 0x00281056) ?? "LINEAR";

        if (rows == 0 || columns == 0) throw Invalid(name, $"image size {columns}×{rows}");
        if (samplesPerPixel is not (1 or 3)) throw Invalid(name, $"SamplesPerPixel {samplesPerPixel} (1 or 3 supported)");
        bool rle = transferSyntax == RleLossless;
        // Native samples: 1 bit (segmentation masks, monochrome only), 8, 16 or 32 bits; floats 32 or 64; RLE 8 or 16.
        bool bitsSupported = rle ? bitsAllocated is 8 or 16
            : floatBits > 0 ? samplesPerPixel == 1
            : bitsAllocated is 8 or 16 or 32 || (bitsAllocated == 1 && samplesPerPixel == 1);
        if ((!encapsulated || rle) && !bitsSupported)
            throw Invalid(name, $"BitsAllocated {bitsAllocated}{(floatBits > 0 ? " float" : "")} with {samplesPerPixel} sample(s) per pixel (1, 8, 16 or 32 supported; 1 for monochrome only)");
        if (bitsStored < 1 || bitsStored > bitsAllocated) throw Invalid(name, $"BitsStored {bitsStored} with BitsAllocated {bitsAllocated}");
        if (highBit < bitsStored - 1 || highBit >= bitsAllocated) throw Invalid(name, $"HighBit {highBit} with BitsStored {bitsStored}");
        if (pixelRepresentation is not (0 or 1)) throw Invalid(name, $"PixelRepresentation {pixelRepresentation}");
        if (frames < 1) throw Invalid(name, $"NumberOfFrames {frames}");
        if (slope == 0 || !double.IsFinite(slope) || !double.IsFinite(intercept)) throw Invalid(name, "RescaleSlope/RescaleIntercept");
        photometric ??= samplesPerPixel == 1 ? "MONOCHROME2" : "RGB";
        // Only standard terms are echoed in messages: whatever else a corrupt file put there stays unprinted.
        string shown = Array.IndexOf(KnownPhotometric, photometric) >= 0 ? photometric : "(unrecognised value)";
        // PALETTE COLOR needs exact indices: native, RLE, JPEG-LS or JPEG 2000 stored values (not JPEG's decoded samples).
        bool nativeCodec = IsNativeCodec(transferSyntax);
        bool paletteOk = (!encapsulated || rle || nativeCodec) && floatBits == 0 && bitsAllocated is 8 or 16;
        bool supported = samplesPerPixel == 1
            ? photometric is "MONOCHROME1" or "MONOCHROME2" || (photometric == "PALETTE COLOR" && paletteOk)
            : photometric == "RGB" || (encapsulated && !rle && !nativeCodec && photometric is "YBR_FULL" or "YBR_FULL_422")
              || (IsJpeg2000(transferSyntax) && photometric is "YBR_RCT" or "YBR_ICT")
              || (!encapsulated && bitsAllocated is 8 or 16 && photometric is "YBR_FULL" or "YBR_FULL_422");
        if (!supported) throw Invalid(name, $"PhotometricInterpretation {shown} with {samplesPerPixel} sample(s) per pixel is not supported");
        // A window needs a positive width (LINEAR: at least 1); otherwise the percentile window is used.
        bool windowUsable = center is { } c && width is { } w && double.IsFinite(c) && double.IsFinite(w) && (voiFunction == "LINEAR" ? w >= 1 : w > 0);

        return new DicomDataset
        {
            TransferSyntaxUid = transferSyntax,
            ExplicitVr = explicitVr,
            Encapsulated = encapsulated,
            Rows = rows,
            Columns = columns,
            BitsAllocated = bitsAllocated,
            BitsStored = bitsStored,
            HighBit = highBit,
            PixelRepresentation = pixelRepresentation,
            SamplesPerPixel = samplesPerPixel,
            PlanarConfiguration = planar,
            PhotometricInterpretation = photometric,
            NumberOfFrames = frames,
            RescaleSlope = slope,
            RescaleIntercept = intercept,
            WindowCenter = windowUsable ? center : null,
            WindowWidth = windowUsable ? width : null,
            VoiLutFunction = voiFunction is "LINEAR" or "LINEAR_EXACT" or "SIGMOID" ? voiFunction : "LINEAR",
            ViewPosition = CodeString(v, 0x00185101),
            Modality = CodeString(v, 0x00080060),
            BigEndian = v.ContainsKey(BigEndianMarker),
            Padding = PaddingRange(v, pixelRepresentation == 1, name),
            FloatPixels = floatBits > 0,
            Palette = photometric == "PALETTE COLOR" ? ReadPalette(v, pixelRepresentation == 1, name) : null,
        };
    }

    /// <summary>Pixel Padding Value alone, or the range it spans with Pixel Padding Range Limit, as stored values.</summary>
    private static (int, int)? PaddingRange(Dictionary<uint, byte[]> v, bool signed, string name)
    {
        if (UShort(v, 0x00280120, name) is not { } value) return null;
        int a = signed ? (short)value : value;
        int b = UShort(v, 0x00280121, name) is { } limit ? (signed ? (short)limit : limit) : a;
        return (Math.Min(a, b), Math.Max(a, b));
    }

    // ---------------------------------------------------------------- pixels

    /// <summary>A key no element has (group FFFF is invalid), set in the value map of a big-endian data set.</summary>
    private const uint BigEndianMarker = 0xFFFFFFFF;
    /// <summary>Likewise, set to 32 or 64 when the pixel data are Float or Double Float Pixel Data.</summary>
    private const uint FloatPixelsMarker = 0xFFFFFFFE;

    private static long FrameBytes(DicomDataset ds) => ((long)ds.Rows * ds.Columns * SamplesStored(ds) * ds.BitsAllocated + 7) / 8;

    private static void CheckFrameLength(PixelData p, DicomDataset ds, string name)
    {
        long needed = FrameBytes(ds);
        if (p.Length < needed)
            throw new XrayVLException($"{name}: DICOM pixel data holds {p.Length} bytes but one {ds.Columns}×{ds.Rows} frame of " +
                $"{ds.SamplesPerPixel}×{ds.BitsAllocated}-bit samples needs {needed} (truncated file?)");
    }

    /// <summary>Stored values of frame 1: the BitsStored bits ending at HighBit, sign-extended when signed.</summary>
    private static int[] ReadStoredValues(ReadOnlySpan<byte> data, PixelData p, DicomDataset ds)
    {
        int n = ds.Rows * ds.Columns;
        var pixels = data.Slice(p.Offset, p.Length);
        var stored = new int[n];
        int shift = ds.HighBit + 1 - ds.BitsStored;
        int mask = (1 << ds.BitsStored) - 1, signBit = 1 << (ds.BitsStored - 1);
        bool signed = ds.Signed, wide = ds.BitsAllocated == 16;
        for (int i = 0; i < n; i++)
        {
            int word = wide ? U16(pixels[(2 * i)..], ds.BigEndian) : pixels[i];
            int value = (word >> shift) & mask;
            if (signed && (value & signBit) != 0) value -= 1 << ds.BitsStored;
            stored[i] = value;
        }
        return stored;
    }

    /// <summary>RGB native pixel data (secondary captures): luma of the stored values over their full range; no windowing.</summary>
    private static float[] RenderColour(ReadOnlySpan<byte> data, PixelData p, DicomDataset ds)
    {
        int n = ds.Rows * ds.Columns;
        var pixels = new float[n];
        var raw = data.Slice(p.Offset, p.Length);   // length checked by the caller
        bool wide = ds.BitsAllocated == 16;
        int shift = ds.HighBit + 1 - ds.BitsStored, mask = (1 << ds.BitsStored) - 1;
        float scale = 1f / mask;
        Span<int> rgb = stackalloc int[3];
        for (int i = 0; i < n; i++)
        {
            for (int c = 0; c < 3; c++)
            {
                int index = ds.PlanarConfiguration == 1 ? c * n + i : i * 3 + c;
                int word = wide ? U16(raw[(2 * index)..], ds.BigEndian) : raw[index];
                rgb[c] = (word >> shift) & mask;
            }
            pixels[i] = Png.Luma(rgb[0], rgb[1], rgb[2]) * scale;
        }
        return pixels;
    }

    // ---------------------------------------------------------------- values

    private static int? UShort(Dictionary<uint, byte[]> v, uint tag, string name)
    {
        if (!v.TryGetValue(tag, out var bytes)) return null;
        if (bytes.Length < 2) throw Invalid(name, $"{Wanted[tag]} {Tag(tag)} has {bytes.Length} bytes, needs 2");
        return U16(bytes, v.ContainsKey(BigEndianMarker));
    }

    /// <summary>First value of a DS or IS attribute ("a\b" → a).</summary>
    private static double? Number(Dictionary<uint, byte[]> v, uint tag, string what, string name)
    {
        if (!v.TryGetValue(tag, out var bytes)) return null;
        string text = ReadString(bytes);
        int backslash = text.IndexOf('\\');
        if (backslash >= 0) text = text[..backslash].Trim();
        if (text.Length == 0) return null;
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || !double.IsFinite(value))
            throw Invalid(name, $"{what} is not a number");
        return value;
    }

    /// <summary>A CS value (first of several), or null when absent or not a valid code string
    /// (A–Z, 0–9, space, underscore; at most 16 characters).</summary>
    private static string? CodeString(Dictionary<uint, byte[]> v, uint tag)
    {
        if (!v.TryGetValue(tag, out var bytes)) return null;
        string text = ReadString(bytes);
        int backslash = text.IndexOf('\\');
        if (backslash >= 0) text = text[..backslash].Trim();
        if (text.Length is 0 or > 16) return null;
        foreach (char ch in text)
            if (!(char.IsAsciiLetterUpper(ch) || char.IsAsciiDigit(ch) || ch is ' ' or '_')) return null;
        return text;
    }

    private static string ReadString(ReadOnlySpan<byte> bytes) => Encoding.Latin1.GetString(bytes).Trim('\0', ' ');

    private static bool IsVr(byte a, byte b) =>
        a is >= (byte)'A' and <= (byte)'Z' && b is >= (byte)'A' and <= (byte)'Z' &&
        ValueRepresentations.Contains(string.Create(2, (a, b), (s, p) => { s[0] = (char)p.a; s[1] = (char)p.b; }));

    /// <summary>Names a transfer syntax for a message; a UID outside the DICOM root is not echoed.</summary>
    private static string DescribeSyntax(string uid)
    {
        bool standard = uid.StartsWith("1.2.840.10008.", StringComparison.Ordinal) && uid.Length <= 64 && uid.All(ch => char.IsAsciiDigit(ch) || ch == '.');
        if (!standard) return "(a UID outside the DICOM standard)";
        if (UnsupportedSyntaxes.TryGetValue(uid, out string? label)) return $"{label} ({uid})";
        if (uid.StartsWith("1.2.840.10008.1.2.4.1", StringComparison.Ordinal)) return $"video or JPEG XL ({uid})";
        return uid;
    }

    private static void CheckFits(ReadOnlySpan<byte> data, int pos, uint length, string name, int elementStart)
    {
        if (length > (uint)(data.Length - pos)) throw Truncated(name, elementStart, $"element of {length} bytes");
    }

    private static string Tag(uint tag) => $"({tag >> 16:X4},{tag & 0xFFFF:X4})";

    private static XrayVLException Corrupt(string name, int offset, string what) => new($"{name}: corrupt DICOM at byte {offset} ({what})");
    private static XrayVLException Truncated(string name, int offset, string what) => new($"{name}: DICOM file is truncated ({what} at byte {offset} runs past the end)");
    private static XrayVLException Missing(string name, string attribute) => new($"{name}: DICOM image lacks {attribute}");
    private static XrayVLException Invalid(string name, string what) => new($"{name}: unsupported or invalid DICOM image: {what}");
}
