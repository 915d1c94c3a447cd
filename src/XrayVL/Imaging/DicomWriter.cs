using System.Buffers.Binary;
using System.Globalization;
using System.Numerics;
using System.Text;

namespace XrayVL.Imaging;

/// <summary>What <see cref="DicomWriter"/> puts in a file. Defaults: explicit VR, 16-bit unsigned MONOCHROME2, DX.</summary>
public sealed record DicomWriteOptions
{
    public bool ExplicitVr { get; init; } = true;
    /// <summary>false writes a bare data set: no preamble, no "DICM", no file meta group (readers must guess the encoding).</summary>
    public bool Preamble { get; init; } = true;
    public int BitsAllocated { get; init; } = 16;
    /// <summary>Defaults to BitsAllocated.</summary>
    public int? BitsStored { get; init; }
    /// <summary>Defaults to BitsStored − 1.</summary>
    public int? HighBit { get; init; }
    public bool Signed { get; init; }
    public int SamplesPerPixel { get; init; } = 1;
    public int PlanarConfiguration { get; init; }
    public string PhotometricInterpretation { get; init; } = "MONOCHROME2";
    public int Frames { get; init; } = 1;
    public double? RescaleSlope { get; init; }
    public double? RescaleIntercept { get; init; }
    /// <summary>Several values are written multi-valued ("a\b").</summary>
    public IReadOnlyList<double>? WindowCenter { get; init; }
    public IReadOnlyList<double>? WindowWidth { get; init; }
    public string? VoiLutFunction { get; init; }
    public string Modality { get; init; } = "DX";
    public string? ViewPosition { get; init; }
    /// <summary>Patient attributes, only to test that readers never leak them.</summary>
    public string? PatientName { get; init; }
    public string? PatientId { get; init; }
    public string? PatientBirthDate { get; init; }
    /// <summary>Adds sequences of defined and undefined length with nested items, one holding the patient attributes,
    /// as real files have.</summary>
    public bool IncludeSequences { get; init; }
    /// <summary>Overrides the transfer syntax written in the meta group (to test refusal of unsupported ones).</summary>
    public string? TransferSyntaxUid { get; init; }
    public string? SopInstanceUid { get; init; }
}

/// <summary>
/// A small DICOM Part-10 writer for tests and fixtures: one image (native 8/16-bit, or JPEG-baseline frames wrapped as
/// encapsulated pixel data), Digital X-Ray storage class, implicit or explicit VR little endian. No DICOM files exist
/// on the project's machines, so the reader is tested on files written here (and on hand-encoded bytes).
/// </summary>
public static class DicomWriter
{
    private const string DigitalXRayForPresentation = "1.2.840.10008.5.1.4.1.1.1.1";
    /// <summary>A UUID-derived UID (PS3.5 B.2, root 2.25) naming this implementation.</summary>
    private static readonly string ImplementationClassUid = UuidUid(new Guid("5b0e7a52-3c1f-4f0e-9d59-0c5b8f1e7a21"));

    /// <summary>Writes uncompressed pixel data. <paramref name="samples"/>: Frames × Rows × Columns × SamplesPerPixel stored
    /// values (interleaved unless PlanarConfiguration is 1), written as their low 8 or 16 bits (two's complement when negative).</summary>
    public static byte[] WriteNative(int rows, int columns, ReadOnlySpan<int> samples, DicomWriteOptions? options = null)
    {
        options ??= new DicomWriteOptions();
        if (options.BitsAllocated is not (8 or 16)) throw new ArgumentException("BitsAllocated must be 8 or 16", nameof(options));
        long count = (long)rows * columns * options.SamplesPerPixel * options.Frames;
        if (samples.Length != count) throw new ArgumentException($"{count} samples expected, got {samples.Length}", nameof(samples));
        int bytesPerSample = options.BitsAllocated / 8;
        var pixelBytes = new byte[(count * bytesPerSample + 1) & ~1L];   // even length; the pad byte is 0
        for (int i = 0; i < samples.Length; i++)
        {
            if (bytesPerSample == 2) BinaryPrimitives.WriteUInt16LittleEndian(pixelBytes.AsSpan(2 * i), (ushort)samples[i]);
            else pixelBytes[i] = (byte)samples[i];
        }
        string syntax = options.TransferSyntaxUid ?? (options.ExplicitVr ? Dicom.ExplicitVrLittleEndian : Dicom.ImplicitVrLittleEndian);
        return Write(rows, columns, options, syntax, w => w.Element(0x7FE0, 0x0010, bytesPerSample == 2 ? "OW" : "OB", pixelBytes));
    }

    /// <summary>Wraps JPEG-baseline frames (8-bit) as encapsulated pixel data, transfer syntax 1.2.840.10008.1.2.4.50
    /// (explicit VR, as the standard requires). Each frame is cut into fragments of at most <paramref name="fragmentSize"/>
    /// bytes (0: one fragment per frame); <paramref name="offsetTable"/> fills the Basic Offset Table.</summary>
    public static byte[] WriteJpeg(int rows, int columns, IReadOnlyList<byte[]> frameJpegs, DicomWriteOptions? options = null,
        int fragmentSize = 0, bool offsetTable = true)
    {
        options = (options ?? new DicomWriteOptions()) with { BitsAllocated = 8, BitsStored = 8, HighBit = 7, Frames = frameJpegs.Count };
        if (!options.ExplicitVr) throw new ArgumentException("encapsulated pixel data needs explicit VR", nameof(options));
        if (frameJpegs.Count == 0) throw new ArgumentException("at least one frame", nameof(frameJpegs));
        if (fragmentSize < 0 || fragmentSize % 2 != 0) throw new ArgumentException("fragment size must be even", nameof(fragmentSize));

        // Fragments (items), and the offset of each frame's first item from the first fragment item.
        var items = new MemoryStream();
        var offsets = new List<uint>();
        foreach (byte[] jpeg in frameJpegs)
        {
            offsets.Add((uint)items.Length);
            int step = fragmentSize == 0 ? jpeg.Length : fragmentSize;
            for (int at = 0; at < jpeg.Length; at += step)
            {
                int length = Math.Min(step, jpeg.Length - at);
                int padded = (length + 1) & ~1;   // fragments have even length; the pad byte is 0 (after EOI)
                WriteItemHeader(items, 0xE000, (uint)padded);
                items.Write(jpeg, at, length);
                if (padded != length) items.WriteByte(0);
            }
        }
        var bot = new byte[offsetTable ? 4 * offsets.Count : 0];
        if (offsetTable) for (int i = 0; i < offsets.Count; i++) BinaryPrimitives.WriteUInt32LittleEndian(bot.AsSpan(4 * i), offsets[i]);

        string syntax = options.TransferSyntaxUid ?? Dicom.JpegBaseline;
        return Write(rows, columns, options, syntax, w =>
        {
            w.Header(0x7FE0, 0x0010, "OB", 0xFFFFFFFF);
            WriteItemHeader(w.Stream, 0xE000, (uint)bot.Length);
            w.Stream.Write(bot);
            items.WriteTo(w.Stream);
            WriteItemHeader(w.Stream, 0xE0DD, 0);
        });
    }

    private static byte[] Write(int rows, int columns, DicomWriteOptions o, string transferSyntax, Action<ElementWriter> writePixelData)
    {
        if (rows is < 1 or > 65535 || columns is < 1 or > 65535) throw new ArgumentException("rows and columns must be 1..65535");
        int bitsStored = o.BitsStored ?? o.BitsAllocated;
        int highBit = o.HighBit ?? bitsStored - 1;
        string instanceUid = o.SopInstanceUid ?? UuidUid(Guid.NewGuid());
        var output = new MemoryStream();

        if (o.Preamble)
        {
            output.Write(new byte[128]);
            output.Write("DICM"u8);
            var meta = new ElementWriter(new MemoryStream(), explicitVr: true);
            meta.Element(0x0002, 0x0001, "OB", [0x00, 0x01]);
            meta.Uid(0x0002, 0x0002, DigitalXRayForPresentation);
            meta.Uid(0x0002, 0x0003, instanceUid);
            meta.Uid(0x0002, 0x0010, transferSyntax);
            meta.Uid(0x0002, 0x0012, ImplementationClassUid);
            var groupLength = new ElementWriter(output, explicitVr: true);
            var length = new byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(length, (uint)meta.Stream.Length);
            groupLength.Element(0x0002, 0x0000, "UL", length);
            ((MemoryStream)meta.Stream).WriteTo(output);
        }

        bool explicitVr = transferSyntax != Dicom.ImplicitVrLittleEndian && o.ExplicitVr;
        var w = new ElementWriter(output, explicitVr);
        w.Uid(0x0008, 0x0016, DigitalXRayForPresentation);
        w.Uid(0x0008, 0x0018, instanceUid);
        w.Text(0x0008, 0x0060, "CS", o.Modality);
        if (o.IncludeSequences) WriteProcedureSequence(w);
        if (o.PatientName is not null) w.Text(0x0010, 0x0010, "PN", o.PatientName);
        if (o.PatientId is not null) w.Text(0x0010, 0x0020, "LO", o.PatientId);
        if (o.PatientBirthDate is not null) w.Text(0x0010, 0x0030, "DA", o.PatientBirthDate);
        if (o.IncludeSequences) WritePatientSequence(w, o);
        if (o.ViewPosition is not null) w.Text(0x0018, 0x5101, "CS", o.ViewPosition);
        w.UShort(0x0028, 0x0002, o.SamplesPerPixel);
        w.Text(0x0028, 0x0004, "CS", o.PhotometricInterpretation);
        if (o.SamplesPerPixel > 1) w.UShort(0x0028, 0x0006, o.PlanarConfiguration);
        if (o.Frames > 1) w.Text(0x0028, 0x0008, "IS", o.Frames.ToString(CultureInfo.InvariantCulture));
        w.UShort(0x0028, 0x0010, rows);
        w.UShort(0x0028, 0x0011, columns);
        w.UShort(0x0028, 0x0100, o.BitsAllocated);
        w.UShort(0x0028, 0x0101, bitsStored);
        w.UShort(0x0028, 0x0102, highBit);
        w.UShort(0x0028, 0x0103, o.Signed ? 1 : 0);
        if (o.WindowCenter is { Count: > 0 }) w.Text(0x0028, 0x1050, "DS", string.Join('\\', o.WindowCenter.Select(DecimalString)));
        if (o.WindowWidth is { Count: > 0 }) w.Text(0x0028, 0x1051, "DS", string.Join('\\', o.WindowWidth.Select(DecimalString)));
        if (o.RescaleIntercept is { } intercept) w.Text(0x0028, 0x1052, "DS", DecimalString(intercept));
        if (o.RescaleSlope is { } slope) w.Text(0x0028, 0x1053, "DS", DecimalString(slope));
        if (o.VoiLutFunction is not null) w.Text(0x0028, 0x1056, "CS", o.VoiLutFunction);
        writePixelData(w);
        return output.ToArray();
    }

    /// <summary>(0008,1032) Procedure Code Sequence: undefined length, one undefined-length item that holds a nested
    /// defined-length (0008,0121) Equivalent Code Sequence.</summary>
    private static void WriteProcedureSequence(ElementWriter w)
    {
        w.Header(0x0008, 0x1032, "SQ", 0xFFFFFFFF);
        WriteItemHeader(w.Stream, 0xE000, 0xFFFFFFFF);
        w.Text(0x0008, 0x0100, "SH", "RPID2");
        w.Text(0x0008, 0x0102, "SH", "RADLEX");
        w.Text(0x0008, 0x0104, "LO", "XR CHEST PA AND LAT");
        var code = new ElementWriter(new MemoryStream(), w.ExplicitVr);
        code.Text(0x0008, 0x0100, "SH", "71046");
        code.Text(0x0008, 0x0102, "SH", "CPT4");
        code.Text(0x0008, 0x0104, "LO", "X-ray chest 2 views");
        w.Element(0x0008, 0x0121, "SQ", Item(code));
        WriteItemHeader(w.Stream, 0xE00D, 0);
        WriteItemHeader(w.Stream, 0xE0DD, 0);
    }

    /// <summary>(0010,1002) Other Patient IDs Sequence, defined length, whose item repeats the patient attributes.</summary>
    private static void WritePatientSequence(ElementWriter w, DicomWriteOptions o)
    {
        var patient = new ElementWriter(new MemoryStream(), w.ExplicitVr);
        patient.Text(0x0010, 0x0010, "PN", o.PatientName ?? "ANON");
        patient.Text(0x0010, 0x0020, "LO", o.PatientId ?? "0");
        w.Element(0x0010, 0x1002, "SQ", Item(patient));
    }

    /// <summary>One defined-length item holding what <paramref name="content"/> wrote.</summary>
    private static byte[] Item(ElementWriter content)
    {
        var body = ((MemoryStream)content.Stream).ToArray();
        var item = new MemoryStream();
        WriteItemHeader(item, 0xE000, (uint)body.Length);
        item.Write(body);
        return item.ToArray();
    }

    private static void WriteItemHeader(Stream s, ushort element, uint length)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt16LittleEndian(b, 0xFFFE);
        BinaryPrimitives.WriteUInt16LittleEndian(b[2..], element);
        BinaryPrimitives.WriteUInt32LittleEndian(b[4..], length);
        s.Write(b);
    }

    /// <summary>DS: at most 16 characters (PS3.5 6.2).</summary>
    private static string DecimalString(double value)
    {
        for (int digits = 10; digits > 1; digits--)
        {
            string s = value.ToString("G" + digits, CultureInfo.InvariantCulture);
            if (s.Length <= 16) return s;
        }
        throw new ArgumentException($"{value} does not fit a DICOM decimal string");
    }

    private static string UuidUid(Guid guid)
    {
        var bytes = guid.ToByteArray(bigEndian: true);
        return "2.25." + new BigInteger(bytes, isUnsigned: true, isBigEndian: true).ToString(CultureInfo.InvariantCulture);
    }

    private sealed class ElementWriter(Stream stream, bool explicitVr)
    {
        private static readonly HashSet<string> LongLengthVrs = ["OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"];
        public Stream Stream { get; } = stream;
        public bool ExplicitVr { get; } = explicitVr;

        public void Header(ushort group, ushort element, string vr, uint length)
        {
            Span<byte> b = stackalloc byte[12];
            BinaryPrimitives.WriteUInt16LittleEndian(b, group);
            BinaryPrimitives.WriteUInt16LittleEndian(b[2..], element);
            if (!ExplicitVr)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(b[4..], length);
                Stream.Write(b[..8]);
                return;
            }
            b[4] = (byte)vr[0];
            b[5] = (byte)vr[1];
            if (LongLengthVrs.Contains(vr))
            {
                b[6] = b[7] = 0;
                BinaryPrimitives.WriteUInt32LittleEndian(b[8..], length);
                Stream.Write(b);
            }
            else
            {
                BinaryPrimitives.WriteUInt16LittleEndian(b[6..], checked((ushort)length));
                Stream.Write(b[..8]);
            }
        }

        public void Element(ushort group, ushort element, string vr, ReadOnlySpan<byte> value)
        {
            Header(group, element, vr, (uint)value.Length);
            Stream.Write(value);
        }

        /// <summary>Text VRs are padded to even length with a space, UI with a NUL.</summary>
        public void Text(ushort group, ushort element, string vr, string value)
        {
            byte[] bytes = Encoding.ASCII.GetBytes(value);
            if (bytes.Length % 2 == 1) bytes = [.. bytes, (byte)(vr == "UI" ? 0 : ' ')];
            Element(group, element, vr, bytes);
        }

        public void Uid(ushort group, ushort element, string uid) => Text(group, element, "UI", uid);

        public void UShort(ushort group, ushort element, int value)
        {
            Span<byte> b = stackalloc byte[2];
            BinaryPrimitives.WriteUInt16LittleEndian(b, checked((ushort)value));
            Element(group, element, "US", b);
        }
    }
}
