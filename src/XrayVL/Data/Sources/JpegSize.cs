namespace XrayVL.Data.Sources;

/// <summary>Reads a JPEG's width and height from its start-of-frame marker without decoding the image.</summary>
internal static class JpegSize
{
    /// <summary>(width, height), or null when the file is not a JPEG or has no SOF marker.</summary>
    public static (int Width, int Height)? Read(string path)
    {
        using var s = File.OpenRead(path);
        if (s.ReadByte() != 0xFF || s.ReadByte() != 0xD8) return null;  // SOI
        while (true)
        {
            int b = s.ReadByte();
            if (b < 0) return null;
            if (b != 0xFF) continue;                     // resync on the next marker
            int marker;
            do marker = s.ReadByte(); while (marker == 0xFF);  // fill bytes
            if (marker < 0) return null;
            if (marker is 0xD8 or 0x01 || marker is >= 0xD0 and <= 0xD7) continue;  // markers without a length
            if (marker == 0xD9) return null;             // EOI before any frame
            int hi = s.ReadByte(), lo = s.ReadByte();
            if (hi < 0 || lo < 0) return null;
            int length = (hi << 8) | lo;
            if (length < 2) return null;
            // SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
            if (marker is >= 0xC0 and <= 0xCF and not (0xC4 or 0xC8 or 0xCC))
            {
                Span<byte> frame = stackalloc byte[5];
                if (s.ReadAtLeast(frame, 5, throwOnEndOfStream: false) != 5) return null;
                int height = (frame[1] << 8) | frame[2];   // frame[0] is the sample precision
                int width = (frame[3] << 8) | frame[4];
                return width > 0 && height > 0 ? (width, height) : null;
            }
            s.Seek(length - 2, SeekOrigin.Current);
        }
    }
}
