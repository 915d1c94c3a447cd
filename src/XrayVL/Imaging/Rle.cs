using System.Buffers.Binary;

namespace XrayVL.Imaging;

/// <summary>
/// DICOM RLE Lossless (PS3.5 Annex G): a 64-byte header (segment count, then up to 15 segment offsets), one segment per
/// byte plane — for each sample, its most significant byte first — each a PackBits byte stream (n in 0…127: copy n+1
/// literal bytes; n in −127…−1: repeat the next byte 1−n times; −128: nothing). The frame comes back in the native
/// layout: little-endian words, samples interleaved.
/// </summary>
internal static class Rle
{
    public static byte[] DecodeFrame(byte[] frame, DicomDataset ds, string name, ImageLimits limits)
    {
        int bytesPerSample = ds.BitsAllocated / 8, samples = ds.SamplesPerPixel;
        int segmentsNeeded = bytesPerSample * samples;
        long pixels = (long)ds.Rows * ds.Columns;
        limits.CheckDecodeBytes(name, "RLE frame", pixels * segmentsNeeded * 2);
        if (frame.Length < 64) throw Corrupt(name, "frame shorter than its 64-byte header");
        int segments = (int)BinaryPrimitives.ReadUInt32LittleEndian(frame);
        if (segments != segmentsNeeded)
            throw Corrupt(name, $"{segments} segments, {samples} sample(s) of {ds.BitsAllocated} bits need {segmentsNeeded}");
        var output = new byte[pixels * segmentsNeeded];
        var plane = new byte[pixels];
        for (int k = 0; k < segments; k++)
        {
            long start = BinaryPrimitives.ReadUInt32LittleEndian(frame.AsSpan(4 + 4 * k));
            long end = k + 1 < segments ? BinaryPrimitives.ReadUInt32LittleEndian(frame.AsSpan(8 + 4 * k)) : frame.Length;
            if (start < 64 || end > frame.Length || end < start) throw Corrupt(name, $"segment {k + 1} lies outside the frame");
            UnpackBits(frame.AsSpan((int)start, (int)(end - start)), plane, name, k + 1);
            // Segment k is byte (bytesPerSample − 1 − k % bytesPerSample) of sample k / bytesPerSample: most significant first.
            int sample = k / bytesPerSample, byteInWord = bytesPerSample - 1 - k % bytesPerSample;
            int offset = sample * bytesPerSample + byteInWord, stride = segmentsNeeded;
            for (long i = 0; i < pixels; i++) output[i * stride + offset] = plane[i];
        }
        return output;
    }

    private static void UnpackBits(ReadOnlySpan<byte> segment, byte[] plane, string name, int index)
    {
        int i = 0, o = 0;
        while (o < plane.Length)
        {
            if (i >= segment.Length) throw Corrupt(name, $"segment {index} ends after {o} of {plane.Length} bytes");
            int n = (sbyte)segment[i++];
            if (n >= 0)
            {
                if (i + n + 1 > segment.Length || o + n + 1 > plane.Length) throw Corrupt(name, $"literal run past the end in segment {index}");
                segment.Slice(i, n + 1).CopyTo(plane.AsSpan(o));
                i += n + 1;
                o += n + 1;
            }
            else if (n != -128)
            {
                if (i >= segment.Length || o + 1 - n > plane.Length) throw Corrupt(name, $"repeat run past the end in segment {index}");
                plane.AsSpan(o, 1 - n).Fill(segment[i++]);
                o += 1 - n;
            }
        }
    }

    private static XrayVLException Corrupt(string name, string what) => new($"{name}: corrupt RLE pixel data ({what})");
}
