namespace XrayVL.Imaging;

/// <summary>
/// The project's own JPEG decoder (ITU T.81): Huffman-coded baseline, extended (8- and 12-bit) and progressive DCT,
/// and lossless (process 14, predictors 1–7, 2–16 bits) as DICOM stores radiographs. Written here because the managed
/// decoders at hand either return uninitialised pixels for valid but unusual files (progressive files with missing or
/// partial scans), decode truncated or structurally broken files to garbage without an error, or lack 12-bit and
/// lossless coding. What it does:
/// - Refuses what it cannot decode correctly, with one line naming the file: broken marker structure (the same faults
///   libjpeg treats as fatal: two SOI or SOF markers, bad segment lengths, bad table indices or definitions, invalid
///   progressive parameters, unknown markers, no scan), entropy-coded data that ends before the last MCU of a scan or
///   restart interval (a file cut short, even with an end-of-image marker appended), missing restart markers,
///   arithmetic-coded and hierarchical files.
/// - Tolerates what libjpeg tolerates and decodes the same way: stray bytes between segments, a final MCU whose last
///   bits the encoder left out, progressive scans that leave coefficients out (they are zero: every buffer starts
///   cleared, so the output never depends on memory contents), and Motion-JPEG frames without Huffman tables (the
///   standard tables of T.81 Annex K.3, which such streams are defined to use).
/// - Bounds work and memory: at most <see cref="MaxScans"/> scans and <see cref="MaxPasses"/> passes over the
///   coefficients in all, and the working buffers are checked against <see cref="ImageLimits.MaxDecodeBytes"/> before
///   they are allocated.
/// Pixels match libjpeg's defaults: the integer "islow" inverse DCT, "fancy" (triangle) upsampling of 2:1 chroma,
/// and its fixed-point YCbCr → RGB conversion.
/// </summary>
internal sealed class JpegDecoder
{
    /// <summary>Ordinary encoders write at most a dozen scans; 500 leaves room for any sensible script.</summary>
    public const int MaxScans = 500;
    /// <summary>Scans may visit each coefficient several times (successive approximation); a standard progressive file makes
    /// about 3 passes. More than 32 is a file built to burn CPU.</summary>
    public const int MaxPasses = 32;

    private static readonly int[] ZigZag =
    [
        0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
        35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
    ];

    private readonly byte[] d;
    private readonly string name, what;
    private readonly ImageLimits limits;
    private int pos;

    private readonly ushort[]?[] quant = new ushort[4][];
    private readonly Huffman?[] dcTables = new Huffman[4], acTables = new Huffman[4];
    private int restartInterval;
    private bool jfif;
    private int adobeTransform = -1;

    private Component[]? comps;
    private int width, height, precision, hMax, vMax, mcusPerLine, mcusPerColumn;
    private bool progressive, lossless;
    private int scans;
    private long work, workBudget;

    private JpegDecoder(byte[] data, string name, string what, ImageLimits limits)
    {
        d = data;
        this.name = name;
        this.what = what;
        this.limits = limits;
    }

    /// <summary>Decoded samples, interleaved, <see cref="Channels"/> per pixel (1 gray, 3 RGB — or the file's own colour
    /// components for lossless and non-YCbCr files), each in [0, 2^Precision).</summary>
    public sealed record Frame(int Width, int Height, int Channels, int Precision, bool Lossless, ushort[] Data);

    public static Frame Decode(byte[] data, string name, ImageLimits limits, string what) => new JpegDecoder(data, name, what, limits).Run();

    private sealed class Component
    {
        public int Id, H, V, Tq;
        /// <summary>Samples of the component itself: ⌈width·H/Hmax⌉ × ⌈height·V/Vmax⌉.</summary>
        public int Width, Height;
        /// <summary>Blocks (or, lossless, samples) per line and column, padded to whole MCUs.</summary>
        public int BlocksPerLine, BlocksPerColumn;
        public short[] Coefficients = [];       // 64 per block, natural order, not yet dequantized
        public ushort[] Samples = [];           // lossless: the samples themselves
        public ushort[]? Quant;                 // latched at the component's first scan, as libjpeg does
        public int DcPredictor;
        public Huffman? Dc, Ac;
    }

    // ---------------------------------------------------------------- markers

    private Frame Run()
    {
        if (d.Length < 2 || d[0] != 0xFF || d[1] != 0xD8) throw Fail($"{what} data does not start with a JPEG start-of-image marker");
        pos = 2;
        while (true)
        {
            int marker = NextMarker();
            if (marker < 0) throw Fail($"{what} is truncated (no end-of-image marker)");
            switch (marker)
            {
                case 0xD8: throw Corrupt("two start-of-image markers");
                case 0xD9:
                    if (comps is null) throw Corrupt("no frame header (SOF marker)");
                    if (scans == 0) throw Corrupt("no image data (no start-of-scan marker)");
                    return Output();
                case 0xC0 or 0xC1 or 0xC2 or 0xC3: ReadFrame(marker); break;
                case 0xC9 or 0xCA or 0xCB:
                    throw Fail($"arithmetic-coded {what} is not supported (SOF marker 0x{marker:X2}; Huffman-coded files are)");
                case 0xC5 or 0xC6 or 0xC7 or 0xCD or 0xCE or 0xCF:
                    throw Fail($"hierarchical {what} is not supported (SOF marker 0x{marker:X2})");
                case 0xC4: ReadHuffmanTables(); break;
                case 0xDB: ReadQuantTables(); break;
                case 0xDD: ReadRestartInterval(); break;
                case 0xDA: ReadScan(); break;
                case >= 0xE0 and <= 0xEF: ReadApp(marker); break;
                case 0xFE or 0xDC or 0xCC: Segment(); break;                    // comment, DNL, arithmetic conditioning
                case >= 0xD0 and <= 0xD7 or 0x01: break;                        // stray restart marker, TEM: no body
                default: throw Corrupt($"unsupported marker 0x{marker:X2}");
            }
        }
    }

    /// <summary>The next marker code, skipping bytes that are not one (libjpeg tolerates them too); -1 at the end of data.</summary>
    private int NextMarker()
    {
        while (true)
        {
            while (pos < d.Length && d[pos] != 0xFF) pos++;
            while (pos < d.Length && d[pos] == 0xFF) pos++;       // fill bytes
            if (pos >= d.Length) return -1;
            byte m = d[pos++];
            if (m != 0) return m;                                  // FF 00 outside a scan is a stray byte
        }
    }

    /// <summary>The body of the segment at pos (after its length field); pos moves past it.</summary>
    private (int Start, int Length) Segment()
    {
        if (d.Length - pos < 2) throw Fail($"{what} is truncated (inside a marker segment)");
        int length = d[pos] << 8 | d[pos + 1];
        if (length < 2) throw Corrupt("bogus marker length");
        if (length > d.Length - pos) throw Fail($"{what} is truncated (a marker segment runs past the end)");
        int start = pos + 2;
        pos += length;
        return (start, length - 2);
    }

    private void ReadApp(int marker)
    {
        var (s, n) = Segment();
        var body = d.AsSpan(s, n);
        if (marker == 0xE0 && body.StartsWith("JFIF\0"u8)) jfif = true;
        if (marker == 0xEE && n >= 12 && body.StartsWith("Adobe"u8)) adobeTransform = body[11];
    }

    private void ReadRestartInterval()
    {
        var (s, n) = Segment();
        if (n != 2) throw Corrupt("bogus DRI marker length");
        restartInterval = d[s] << 8 | d[s + 1];
    }

    private void ReadQuantTables()
    {
        var (s, n) = Segment();
        int end = s + n;
        while (s < end)
        {
            int pq = d[s] >> 4, tq = d[s] & 15;
            if (tq > 3 || pq > 1) throw Corrupt($"bogus DQT index {d[s]}");
            int bytes = pq == 0 ? 64 : 128;
            if (end - s - 1 < bytes) throw Corrupt("bogus DQT marker length");
            var table = new ushort[64];
            for (int k = 0; k < 64; k++)
                table[ZigZag[k]] = (ushort)(pq == 0 ? d[s + 1 + k] : d[s + 1 + 2 * k] << 8 | d[s + 2 + 2 * k]);
            quant[tq] = table;
            s += 1 + bytes;
        }
    }

    private void ReadHuffmanTables()
    {
        var (s, n) = Segment();
        int end = s + n;
        while (s < end)
        {
            if (end - s < 17) throw Corrupt("bogus Huffman table definition");
            int tc = d[s] >> 4, th = d[s] & 15;
            if (tc > 1 || th > 3) throw Corrupt($"bogus DHT index {d[s]}");
            var counts = d.AsSpan(s + 1, 16);
            int total = 0;
            foreach (byte c in counts) total += c;
            if (total > 256 || total > end - s - 17) throw Corrupt("bogus Huffman table definition");
            var table = Huffman.Build(counts, d.AsSpan(s + 17, total)) ?? throw Corrupt("bogus Huffman table definition");
            (tc == 0 ? dcTables : acTables)[th] = table;
            s += 17 + total;
        }
    }

    private void ReadFrame(int marker)
    {
        if (comps is not null) throw Corrupt("two frame headers (SOF markers)");
        var (s, n) = Segment();
        if (n < 6) throw Corrupt("bogus SOF marker length");
        precision = d[s];
        height = d[s + 1] << 8 | d[s + 2];
        width = d[s + 3] << 8 | d[s + 4];
        int count = d[s + 5];
        if (n != 6 + 3 * count) throw Corrupt("bogus SOF marker length");
        progressive = marker == 0xC2;
        lossless = marker == 0xC3;
        bool precisionOk = lossless ? precision is >= 2 and <= 16 : marker == 0xC0 ? precision == 8 : precision is 8 or 12;
        if (!precisionOk) throw Fail($"{what} with {precision}-bit samples in SOF 0x{marker:X2} is not supported (corrupt?)");
        if (height == 0) throw Fail($"{what} whose height is given by a DNL marker is not supported");
        if (width == 0) throw Corrupt("frame width 0");
        if (count is < 1 or > 4) throw Corrupt($"{count} components in the frame header");
        if (!lossless && count is 2 or 4)
            throw Fail($"{what} with {count} colour components (e.g. CMYK) is not supported (gray or 3-component colour are)");
        limits.CheckDimensions(name, $"{what} frame header", width, height);

        comps = new Component[count];
        for (int i = 0; i < count; i++)
        {
            int o = s + 6 + 3 * i;
            var c = new Component { Id = d[o], H = d[o + 1] >> 4, V = d[o + 1] & 15, Tq = d[o + 2] };
            if (c.H is < 1 or > 4 || c.V is < 1 or > 4) throw Corrupt("bogus sampling factors");
            if (c.Tq > 3) throw Corrupt($"bogus quantization table index {c.Tq}");
            for (int j = 0; j < i; j++)
                if (comps[j].Id == c.Id) throw Corrupt($"two components with id {c.Id}");
            comps[i] = c;
        }
        hMax = comps.Max(c => c.H);
        vMax = comps.Max(c => c.V);
        foreach (var c in comps)
            if (hMax % c.H != 0 || vMax % c.V != 0)
                throw Fail($"{what} with fractional chroma sampling ({c.H}×{c.V} of {hMax}×{vMax}) is not supported");
        if (lossless && (hMax > 1 || vMax > 1)) throw Fail($"lossless {what} with subsampled components is not supported");

        int unit = lossless ? 1 : 8;
        mcusPerLine = (width + unit * hMax - 1) / (unit * hMax);
        mcusPerColumn = (height + unit * vMax - 1) / (unit * vMax);
        long sampleBytes = 0, blocks = 0;
        foreach (var c in comps)
        {
            c.Width = (int)(((long)width * c.H + hMax - 1) / hMax);
            c.Height = (int)(((long)height * c.V + vMax - 1) / vMax);
            c.BlocksPerLine = mcusPerLine * c.H;
            c.BlocksPerColumn = mcusPerColumn * c.V;
            long units = (long)c.BlocksPerLine * c.BlocksPerColumn;
            blocks += units;
            // Coefficients (2 bytes each) or lossless samples, plus the sample plane made from them.
            sampleBytes += lossless ? units * 2 : units * 64 * 2 * 2;
        }
        // The interleaved output: 2 bytes per sample.
        long needed = sampleBytes + (long)width * height * count * 2;
        limits.CheckDecodeBytes(name, what, needed);
        workBudget = MaxPasses * blocks * (lossless ? 1 : 64);
        foreach (var c in comps)
        {
            long units = (long)c.BlocksPerLine * c.BlocksPerColumn;
            if (lossless) c.Samples = new ushort[units];
            else c.Coefficients = new short[units * 64];
        }
    }

    // ---------------------------------------------------------------- scans

    private void ReadScan()
    {
        if (comps is null) throw Corrupt("start-of-scan before the frame header");
        if (++scans > MaxScans) throw Fail($"{what} has more than {MaxScans} scans (corrupt file or denial-of-service attempt)");
        var (s, n) = Segment();
        if (n < 1) throw Corrupt("bogus SOS marker length");
        int count = d[s];
        if (count is < 1 or > 4 || n != 4 + 2 * count) throw Corrupt("bogus SOS marker length");
        var scan = new Component[count];
        for (int i = 0; i < count; i++)
        {
            int id = d[s + 1 + 2 * i], tables = d[s + 2 + 2 * i];
            var c = Array.Find(comps, x => x.Id == id) ?? throw Corrupt($"scan refers to component {id}, which the frame does not have");
            if (Array.IndexOf(scan, c) >= 0) throw Corrupt($"scan lists component {id} twice");
            int td = tables >> 4, ta = tables & 15;
            if (td > 3 || ta > 3) throw Corrupt("bogus Huffman table index in a scan");
            scan[i] = c;
            c.Dc = dcTables[td] ?? StandardTable(dc: true, td);
            c.Ac = acTables[ta] ?? StandardTable(dc: false, ta);
        }
        int ss = d[s + 1 + 2 * count], se = d[s + 2 + 2 * count], ah = d[s + 3 + 2 * count] >> 4, al = d[s + 3 + 2 * count] & 15;
        if (count > 1 && !lossless && scan.Sum(c => c.H * c.V) > 10) throw Corrupt("sampling factors too large for an interleaved scan");

        bool dcScan = progressive ? ss == 0 : !lossless;
        bool acScan = progressive ? ss > 0 : !lossless;
        if (progressive)
        {
            bool bad = ss == 0 ? se != 0 : ss > se || se > 63 || count != 1;
            if (ah != 0 && al != ah - 1) bad = true;
            if (al > 13) bad = true;
            if (bad) throw Corrupt($"invalid progressive parameters Ss={ss} Se={se} Ah={ah} Al={al}");
        }
        else if (lossless)
        {
            if (ss is < 1 or > 7) throw Fail($"lossless {what} with predictor {ss} is not supported (1–7 are)");
            if (al >= precision) throw Corrupt($"point transform {al} for {precision}-bit samples");
        }
        foreach (var c in scan)
        {
            if ((dcScan && (ah == 0 || !progressive)) || lossless)
            {
                if (c.Dc is null) throw Corrupt("scan uses a DC Huffman table that the file does not define");
                // DC difference categories: up to 11 (8-bit) or 15 (12-bit) for DCT, 16 for lossless.
                if (c.Dc.MaxSymbol > (lossless ? 16 : 15)) throw Corrupt("bogus Huffman table definition");
            }
            if (acScan && c.Ac is null) throw Corrupt("scan uses an AC Huffman table that the file does not define");
            if (!lossless)
            {
                if (c.Quant is null)
                    c.Quant = quant[c.Tq] ?? throw Corrupt($"quantization table {c.Tq} is not defined before the first scan of its component");
            }
            c.DcPredictor = 0;
        }

        // Blocks (lossless: samples) this scan visits, times the coefficients it visits in each.
        long visited = count > 1 ? (long)mcusPerLine * mcusPerColumn * scan.Sum(c => c.H * c.V)
            : lossless ? (long)scan[0].Width * scan[0].Height : (long)((scan[0].Width + 7) / 8) * ((scan[0].Height + 7) / 8);
        work += visited * (lossless ? 1 : progressive ? se - ss + 1 : 64);
        if (work > workBudget)
            throw Fail($"{what} scans would visit each coefficient more than {MaxPasses} times (corrupt file or denial-of-service attempt)");

        if (lossless) DecodeLosslessScan(scan, ss, al);
        else DecodeDctScan(scan, ss, se, ah, al);
    }

    /// <summary>T.81 Annex K.3 tables, which Motion-JPEG frames omit (the AVI MJPEG format defines them as implied);
    /// only for 8-bit DCT frames and table slots 0 (luminance) and 1 (chrominance), as libjpeg does.</summary>
    private Huffman? StandardTable(bool dc, int slot)
    {
        if (lossless || precision != 8 || slot > 1) return null;
        return (dc, slot) switch
        {
            (true, 0) => StandardTables.DcLuminance,
            (true, _) => StandardTables.DcChrominance,
            (false, 0) => StandardTables.AcLuminance,
            _ => StandardTables.AcChrominance,
        };
    }

    private void DecodeDctScan(Component[] scan, int ss, int se, int ah, int al)
    {
        var bits = new BitReader(d, pos, this);
        int eobrun = 0, expectedRestart = 0;
        long total = scan.Length > 1 ? (long)mcusPerLine * mcusPerColumn : (long)((scan[0].Width + 7) / 8) * ((scan[0].Height + 7) / 8);
        int single = scan.Length == 1 ? (scan[0].Width + 7) / 8 : 0;   // blocks per line of a non-interleaved scan
        for (long mcu = 0; mcu < total; mcu++)
        {
            if (restartInterval > 0 && mcu > 0 && mcu % restartInterval == 0)
            {
                bits.Restart(ref expectedRestart);
                eobrun = 0;
                foreach (var c in scan) c.DcPredictor = 0;
            }
            bits.AllowShortfall = mcu == total - 1 || (restartInterval > 0 && (mcu + 1) % restartInterval == 0);
            bits.Mcu = mcu;
            bits.Units = total;
            if (scan.Length == 1)
            {
                var c = scan[0];
                int bx = (int)(mcu % single), by = (int)(mcu / single);
                DecodeBlock(ref bits, c, (by * c.BlocksPerLine + bx) * 64, ss, se, ah, al, ref eobrun);
            }
            else
            {
                int mx = (int)(mcu % mcusPerLine), my = (int)(mcu / mcusPerLine);
                foreach (var c in scan)
                    for (int v = 0; v < c.V; v++)
                        for (int h = 0; h < c.H; h++)
                        {
                            int bx = mx * c.H + h, by = my * c.V + v;
                            DecodeBlock(ref bits, c, (by * c.BlocksPerLine + bx) * 64, ss, se, ah, al, ref eobrun);
                        }
            }
        }
        pos = bits.BytePosition;
    }

    private void DecodeBlock(ref BitReader bits, Component c, int offset, int ss, int se, int ah, int al, ref int eobrun)
    {
        var coef = c.Coefficients.AsSpan(offset, 64);
        if (!progressive)
        {
            int t = bits.Decode(c.Dc!);
            c.DcPredictor += t == 0 ? 0 : Extend(bits.Receive(t), t);
            coef[0] = (short)c.DcPredictor;
            var ac = c.Ac!;
            for (int k = 1; k < 64; k++)
            {
                int rs = bits.Decode(ac), r = rs >> 4, s = rs & 15;
                if (s == 0)
                {
                    if (r != 15) break;
                    k += 15;
                    continue;
                }
                k += r;
                int value = Extend(bits.Receive(s), s);
                if (k < 64) coef[ZigZag[k]] = (short)value;   // a run past the block's end is corrupt data: dropped, as libjpeg does
            }
            return;
        }
        if (ss == 0)
        {
            if (ah == 0)
            {
                int t = bits.Decode(c.Dc!);
                c.DcPredictor += t == 0 ? 0 : Extend(bits.Receive(t), t);
                coef[0] = (short)(c.DcPredictor * (1 << al));
            }
            else if (bits.Receive(1) != 0) coef[0] |= (short)(1 << al);
            return;
        }
        if (ah == 0)
        {
            if (eobrun > 0) { eobrun--; return; }
            var ac = c.Ac!;
            for (int k = ss; k <= se; k++)
            {
                int rs = bits.Decode(ac), r = rs >> 4, s = rs & 15;
                if (s == 0)
                {
                    if (r < 15)
                    {
                        eobrun = (1 << r) - 1;
                        if (r > 0) eobrun += bits.Receive(r);
                        break;
                    }
                    k += 15;
                    continue;
                }
                k += r;
                int value = Extend(bits.Receive(s), s) * (1 << al);
                if (k < 64) coef[ZigZag[k]] = (short)value;
            }
            return;
        }
        // AC successive-approximation refinement.
        int p1 = 1 << al, m1 = -1 << al;
        int kk = ss;
        if (eobrun == 0)
        {
            var ac = c.Ac!;
            for (; kk <= se; kk++)
            {
                int rs = bits.Decode(ac), r = rs >> 4, s = rs & 15, value = 0;
                if (s != 0)
                    value = bits.Receive(1) != 0 ? p1 : m1;      // s is 1 in a valid file
                else if (r != 15)
                {
                    eobrun = 1 << r;
                    if (r > 0) eobrun += bits.Receive(r);
                    break;
                }
                while (kk <= se)
                {
                    int z = ZigZag[kk];
                    if (coef[z] != 0) Refine(ref bits, ref coef[z], p1, m1);
                    else if (--r < 0) break;
                    kk++;
                }
                if (value != 0 && kk <= se) coef[ZigZag[kk]] = (short)value;
            }
        }
        if (eobrun > 0)
        {
            for (; kk <= se; kk++)
            {
                int z = ZigZag[kk];
                if (coef[z] != 0) Refine(ref bits, ref coef[z], p1, m1);
            }
            eobrun--;
        }
    }

    private static void Refine(ref BitReader bits, ref short coef, int p1, int m1)
    {
        if (bits.Receive(1) != 0 && (coef & p1) == 0) coef = (short)(coef + (coef >= 0 ? p1 : m1));
    }

    private void DecodeLosslessScan(Component[] scan, int predictor, int pointTransform)
    {
        var bits = new BitReader(d, pos, this);
        int expectedRestart = 0;
        int w = scan[0].Width, h = scan[0].Height;   // all components are full size (checked in the frame header)
        long total = (long)w * h;
        int initial = 1 << (precision - pointTransform - 1);
        int firstRow = 0;                             // the row that restarts prediction (the first, or one after a restart)
        for (int y = 0; y < h; y++)
        {
            for (int x = 0; x < w; x++)
            {
                long mcu = (long)y * w + x;
                if (restartInterval > 0 && mcu > 0 && mcu % restartInterval == 0)
                {
                    if (x != 0) throw Fail($"lossless {what} with restart intervals that do not end at a row end is not supported");
                    bits.Restart(ref expectedRestart);
                    firstRow = y;
                }
                bits.AllowShortfall = mcu == total - 1 || (restartInterval > 0 && (mcu + 1) % restartInterval == 0);
                bits.Mcu = mcu;
                bits.Units = total;
                foreach (var c in scan)
                {
                    var p = c.Samples;
                    int row = y * c.BlocksPerLine, i = row + x;
                    int prediction;
                    if (y == firstRow) prediction = x == 0 ? initial : p[i - 1];
                    else if (x == 0) prediction = p[i - c.BlocksPerLine];
                    else
                    {
                        int ra = p[i - 1], rb = p[i - c.BlocksPerLine], rc = p[i - c.BlocksPerLine - 1];
                        prediction = predictor switch
                        {
                            1 => ra,
                            2 => rb,
                            3 => rc,
                            4 => ra + rb - rc,
                            5 => ra + ((rb - rc) >> 1),
                            6 => rb + ((ra - rc) >> 1),
                            _ => (ra + rb) >> 1,
                        };
                    }
                    int t = bits.Decode(c.Dc!);
                    int diff = t switch { 0 => 0, 16 => 32768, _ => Extend(bits.Receive(t), t) };
                    p[i] = (ushort)(prediction + diff);   // modulo 2^16 (T.81 H.1.2.1)
                }
            }
        }
        foreach (var c in scan)
            if (pointTransform > 0)
                for (int i = 0; i < c.Samples.Length; i++) c.Samples[i] = (ushort)(c.Samples[i] << pointTransform);
        pos = bits.BytePosition;
    }

    private static int Extend(int v, int t) => v < 1 << (t - 1) ? v - (1 << t) + 1 : v;

    // ---------------------------------------------------------------- output

    private Frame Output()
    {
        var frame = comps!;
        int count = frame.Length;
        var data = new ushort[(long)width * height * count];
        if (lossless)
        {
            for (int ci = 0; ci < count; ci++)
            {
                var c = frame[ci];
                for (int y = 0; y < height; y++)
                    for (int x = 0; x < width; x++) data[((long)y * width + x) * count + ci] = c.Samples[y * c.BlocksPerLine + x];
            }
            return new Frame(width, height, count, precision, true, data);
        }
        int max = (1 << precision) - 1;
        var planes = new ushort[count][];
        for (int ci = 0; ci < count; ci++) planes[ci] = InverseDct(frame[ci], max);
        var row = new int[width];
        for (int ci = 0; ci < count; ci++)
        {
            var c = frame[ci];
            int stride = c.BlocksPerLine * 8;
            for (int y = 0; y < height; y++)
            {
                Upsample(planes[ci], stride, c, y, row);
                for (int x = 0; x < width; x++) data[((long)y * width + x) * count + ci] = (ushort)row[x];
            }
        }
        if (count == 3 && IsYCbCr()) YCbCrToRgb(data, max);
        return new Frame(width, height, count, precision, false, data);
    }

    /// <summary>libjpeg's rule: JFIF means YCbCr; an Adobe marker says by its transform flag; otherwise component ids
    /// 'R','G','B' mean RGB and anything else YCbCr.</summary>
    private bool IsYCbCr()
    {
        if (jfif) return true;
        if (adobeTransform >= 0) return adobeTransform != 0;
        return !(comps![0].Id == 'R' && comps[1].Id == 'G' && comps[2].Id == 'B');
    }

    private static readonly int[] CrR8 = ColourTable(1.40200, 128, true), CbB8 = ColourTable(1.77200, 128, true),
        CrG8 = ColourTable(-0.71414, 128, false), CbG8 = ColourTable(-0.34414, 128, false, half: true);
    private static readonly int[] CrR12 = ColourTable(1.40200, 2048, true), CbB12 = ColourTable(1.77200, 2048, true),
        CrG12 = ColourTable(-0.71414, 2048, false), CbG12 = ColourTable(-0.34414, 2048, false, half: true);

    /// <summary>Fixed point with 16 fraction bits, as libjpeg's colour converter: R and B rounded per entry, G summed then shifted.</summary>
    private static int[] ColourTable(double factor, int center, bool shifted, bool half = false)
    {
        var t = new int[2 * center];
        int fix = (int)Math.Round(Math.Abs(factor) * 65536) * Math.Sign(factor);
        for (int i = 0; i < t.Length; i++)
        {
            int x = i - center;
            t[i] = shifted ? (fix * x + 32768) >> 16 : fix * x + (half ? 32768 : 0);
        }
        return t;
    }

    private static void YCbCrToRgb(ushort[] data, int max)
    {
        bool twelve = max > 255;
        int[] crR = twelve ? CrR12 : CrR8, cbB = twelve ? CbB12 : CbB8, crG = twelve ? CrG12 : CrG8, cbG = twelve ? CbG12 : CbG8;
        for (long i = 0; i < data.LongLength; i += 3)
        {
            int y = data[i], cb = data[i + 1], cr = data[i + 2];
            data[i] = (ushort)Math.Clamp(y + crR[cr], 0, max);
            data[i + 1] = (ushort)Math.Clamp(y + ((cbG[cb] + crG[cr]) >> 16), 0, max);
            data[i + 2] = (ushort)Math.Clamp(y + cbB[cb], 0, max);
        }
    }

    /// <summary>One full-resolution row of a component: copied, or upsampled as libjpeg does by default ("fancy"
    /// triangle filter for 2:1 horizontal and 2:1×2:1, with edge samples replicated; plain replication otherwise).</summary>
    private void Upsample(ushort[] plane, int stride, Component c, int y, int[] row)
    {
        int fx = hMax / c.H, fy = vMax / c.V, w = c.Width;
        int iy = y / fy;
        int at = iy * stride;
        if (fx == 1 && fy == 1)
        {
            for (int x = 0; x < width; x++) row[x] = plane[at + x];
            return;
        }
        if (fx == 2 && fy == 1 && w > 2)
        {
            var r = new int[2 * w];
            r[0] = plane[at];
            r[1] = (plane[at] * 3 + plane[at + 1] + 2) >> 2;
            for (int x = 1; x < w - 1; x++)
            {
                int v = plane[at + x] * 3;
                r[2 * x] = (v + plane[at + x - 1] + 1) >> 2;
                r[2 * x + 1] = (v + plane[at + x + 1] + 2) >> 2;
            }
            r[2 * w - 2] = (plane[at + w - 1] * 3 + plane[at + w - 2] + 1) >> 2;
            r[2 * w - 1] = plane[at + w - 1];
            Array.Copy(r, row, width);
            return;
        }
        if (fx == 2 && fy == 2 && w > 2)
        {
            int neighbour = Math.Clamp(y % 2 == 0 ? iy - 1 : iy + 1, 0, c.Height - 1) * stride;
            var sum = new int[w];
            for (int x = 0; x < w; x++) sum[x] = plane[at + x] * 3 + plane[neighbour + x];
            var r = new int[2 * w];
            r[0] = (sum[0] * 4 + 8) >> 4;
            r[1] = (sum[0] * 3 + sum[1] + 7) >> 4;
            for (int x = 1; x < w - 1; x++)
            {
                r[2 * x] = (sum[x] * 3 + sum[x - 1] + 8) >> 4;
                r[2 * x + 1] = (sum[x] * 3 + sum[x + 1] + 7) >> 4;
            }
            r[2 * w - 2] = (sum[w - 1] * 3 + sum[w - 2] + 8) >> 4;
            r[2 * w - 1] = (sum[w - 1] * 4 + 7) >> 4;
            Array.Copy(r, row, width);
            return;
        }
        for (int x = 0; x < width; x++) row[x] = plane[at + x / fx];
    }

    // libjpeg's integer inverse DCT ("islow"): 13 fraction bits for the constants; 2 extra bits kept between the passes
    // for 8-bit samples, 1 for 12-bit (so that products stay within 32 bits).
    private const int ConstBits = 13;
    private const int Fix0298631336 = 2446, Fix0390180644 = 3196, Fix0541196100 = 4433, Fix0765366865 = 6270,
        Fix0899976223 = 7373, Fix1175875602 = 9633, Fix1501321110 = 12299, Fix1847759065 = 15137, Fix1961570560 = 16069,
        Fix2053119869 = 16819, Fix2562915447 = 20995, Fix3072711026 = 25172;

    private ushort[] InverseDct(Component c, int max)
    {
        int stride = c.BlocksPerLine * 8;
        var plane = new ushort[(long)stride * c.BlocksPerColumn * 8];
        var q = c.Quant;
        if (q is null) return Fill(plane, (max + 1) / 2);   // never in a scan: all coefficients zero → mid-gray
        int pass1 = max > 255 ? 1 : 2, center = (max + 1) / 2;
        Span<int> ws = stackalloc int[64];
        Span<int> outRow = stackalloc int[8];
        for (int by = 0; by < c.BlocksPerColumn; by++)
            for (int bx = 0; bx < c.BlocksPerLine; bx++)
            {
                var coef = c.Coefficients.AsSpan((by * c.BlocksPerLine + bx) * 64, 64);
                for (int col = 0; col < 8; col++)
                {
                    if (coef[8 + col] == 0 && coef[16 + col] == 0 && coef[24 + col] == 0 && coef[32 + col] == 0 &&
                        coef[40 + col] == 0 && coef[48 + col] == 0 && coef[56 + col] == 0)
                    {
                        int dc = coef[col] * q[col] << pass1;
                        for (int r = 0; r < 8; r++) ws[r * 8 + col] = dc;
                        continue;
                    }
                    Idct1D(coef[col] * q[col], coef[8 + col] * q[8 + col], coef[16 + col] * q[16 + col], coef[24 + col] * q[24 + col],
                        coef[32 + col] * q[32 + col], coef[40 + col] * q[40 + col], coef[48 + col] * q[48 + col], coef[56 + col] * q[56 + col],
                        ConstBits - pass1, ws, col, 8);
                }
                for (int r = 0; r < 8; r++)
                {
                    var w = ws.Slice(r * 8, 8);
                    int o = (by * 8 + r) * stride + bx * 8;
                    if (w[1] == 0 && w[2] == 0 && w[3] == 0 && w[4] == 0 && w[5] == 0 && w[6] == 0 && w[7] == 0)
                    {
                        int v = (ushort)Math.Clamp(((w[0] + (1 << (pass1 + 2))) >> (pass1 + 3)) + center, 0, max);
                        for (int x = 0; x < 8; x++) plane[o + x] = (ushort)v;
                        continue;
                    }
                    Idct1D(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], ConstBits + pass1 + 3, outRow, 0, 1);
                    for (int x = 0; x < 8; x++) plane[o + x] = (ushort)Math.Clamp(outRow[x] + center, 0, max);
                }
            }
        return plane;
    }

    private static ushort[] Fill(ushort[] plane, int value)
    {
        Array.Fill(plane, (ushort)value);
        return plane;
    }

    /// <summary>One 8-point inverse DCT (Loeffler–Ligtenberg–Moschytz, as in libjpeg); results descaled by
    /// <paramref name="shift"/> bits with rounding, written to output[start + i·step].</summary>
    private static void Idct1D(int i0, int i1, int i2, int i3, int i4, int i5, int i6, int i7, int shift, Span<int> output, int start, int step)
    {
        // Even part.
        int z1 = (i2 + i6) * Fix0541196100;
        int tmp2 = z1 - i6 * Fix1847759065;
        int tmp3 = z1 + i2 * Fix0765366865;
        int tmp0 = (i0 + i4) << ConstBits;
        int tmp1 = (i0 - i4) << ConstBits;
        int tmp10 = tmp0 + tmp3, tmp13 = tmp0 - tmp3, tmp11 = tmp1 + tmp2, tmp12 = tmp1 - tmp2;
        // Odd part.
        tmp0 = i7; tmp1 = i5; tmp2 = i3; tmp3 = i1;
        z1 = tmp0 + tmp3;
        int z2 = tmp1 + tmp2, z3 = tmp0 + tmp2, z4 = tmp1 + tmp3;
        int z5 = (z3 + z4) * Fix1175875602;
        tmp0 *= Fix0298631336;
        tmp1 *= Fix2053119869;
        tmp2 *= Fix3072711026;
        tmp3 *= Fix1501321110;
        z1 *= -Fix0899976223;
        z2 *= -Fix2562915447;
        z3 = z3 * -Fix1961570560 + z5;
        z4 = z4 * -Fix0390180644 + z5;
        tmp0 += z1 + z3;
        tmp1 += z2 + z4;
        tmp2 += z2 + z3;
        tmp3 += z1 + z4;
        int round = 1 << (shift - 1);
        output[start] = (tmp10 + tmp3 + round) >> shift;
        output[start + 7 * step] = (tmp10 - tmp3 + round) >> shift;
        output[start + step] = (tmp11 + tmp2 + round) >> shift;
        output[start + 6 * step] = (tmp11 - tmp2 + round) >> shift;
        output[start + 2 * step] = (tmp12 + tmp1 + round) >> shift;
        output[start + 5 * step] = (tmp12 - tmp1 + round) >> shift;
        output[start + 3 * step] = (tmp13 + tmp0 + round) >> shift;
        output[start + 4 * step] = (tmp13 - tmp0 + round) >> shift;
    }

    // ---------------------------------------------------------------- errors

    private XrayVLException Fail(string message) => new($"{name}: {message}");
    private XrayVLException Corrupt(string detail) => new($"{name}: corrupt {what} ({detail})");

    // ---------------------------------------------------------------- entropy-coded data

    /// <summary>Huffman table with a 9-bit look-up for short codes and canonical limits for longer ones.</summary>
    internal sealed class Huffman
    {
        private const int LookupBits = 9;
        public readonly ushort[] Lookup = new ushort[1 << LookupBits];   // (length << 8 | symbol), 0 when longer
        public readonly int[] MaxCode = new int[18];                      // largest code of each length, -1 when none
        public readonly int[] Offset = new int[17];                       // symbol index minus code, per length
        public byte[] Symbols = [];
        public int MaxSymbol;

        /// <summary>Null when the counts overflow the code space (a corrupt table).</summary>
        public static Huffman? Build(ReadOnlySpan<byte> counts, ReadOnlySpan<byte> symbols)
        {
            var t = new Huffman { Symbols = symbols.ToArray() };
            foreach (byte s in symbols) t.MaxSymbol = Math.Max(t.MaxSymbol, s);
            int code = 0, k = 0;
            for (int length = 1; length <= 16; length++)
            {
                t.Offset[length] = k - code;
                for (int i = 0; i < counts[length - 1]; i++, k++, code++)
                {
                    if (code >= 1 << length) return null;
                    if (length <= LookupBits)
                    {
                        int first = code << (LookupBits - length), n = 1 << (LookupBits - length);
                        for (int j = 0; j < n; j++) t.Lookup[first + j] = (ushort)(length << 8 | symbols[k]);
                    }
                }
                t.MaxCode[length] = counts[length - 1] > 0 ? code - 1 : -1;
                if (code >= 1 << length) return null;   // the all-ones code is reserved (T.81 C)
                code <<= 1;
            }
            t.MaxCode[17] = int.MaxValue;
            return t;
        }
    }

    /// <summary>
    /// Reads entropy-coded bits (FF 00 → FF) up to the next marker. Past a marker or the end of data it supplies zero
    /// bits, as libjpeg does, but only while decoding the last unit of a scan or restart interval (encoders may leave out
    /// its final bits); needing them earlier means the data was cut short, and the file is refused.
    /// </summary>
    private struct BitReader(byte[] data, int position, JpegDecoder owner)
    {
        private ulong buffer;
        private int count;           // valid bits in buffer (low bits), including padding
        private int padding;         // zero bits supplied past the end of the data
        private int at = position;
        public bool AllowShortfall;
        public long Mcu, Units;

        public readonly int BytePosition => at;

        private void Fill()
        {
            while (count <= 56)
            {
                int b = 0;
                if (at < data.Length && data[at] != 0xFF) b = data[at++];
                else if (at + 1 < data.Length && data[at] == 0xFF)
                {
                    int next = at + 1;
                    while (next < data.Length && data[next] == 0xFF) next++;   // fill bytes before a marker
                    if (next < data.Length && data[next] == 0x00) { b = 0xFF; at = next + 1; }
                    else { padding += 8; }                                     // a marker: stay on it
                }
                else padding += 8;                                             // end of data
                buffer = buffer << 8 | (uint)b;
                count += 8;
            }
        }

        private void Consume(int n)
        {
            count -= n;
            if (count < padding)
            {
                if (!AllowShortfall)
                    throw owner.Fail($"{owner.what} is truncated or corrupt (its image data ends at unit {Mcu + 1} of {Units} in scan {owner.scans})");
                padding = count;     // report once per unit; the zeros count as read
            }
        }

        public int Decode(Huffman h)
        {
            if (count < 16) Fill();
            int peek = (int)(buffer >> (count - 9)) & 511;
            int e = h.Lookup[peek];
            if (e != 0)
            {
                Consume(e >> 8);
                return e & 255;
            }
            int code = (int)(buffer >> (count - 16)) & 0xFFFF;
            for (int length = 10; length <= 16; length++)
            {
                int c = code >> (16 - length);
                if (c <= h.MaxCode[length])
                {
                    Consume(length);
                    int index = c + h.Offset[length];
                    if (index < 0 || index >= h.Symbols.Length) break;
                    return h.Symbols[index];
                }
            }
            throw owner.Corrupt($"invalid Huffman code in scan {owner.scans}");
        }

        public int Receive(int n)
        {
            if (n == 0) return 0;
            if (count < n) Fill();
            int v = (int)(buffer >> (count - n)) & ((1 << n) - 1);
            Consume(n);
            return v;
        }

        /// <summary>At a restart boundary: drop the partial byte, skip stray bytes, and require RSTn with n the next in turn.</summary>
        public void Restart(ref int expected)
        {
            buffer = 0;
            count = 0;
            padding = 0;
            while (at < data.Length && data[at] != 0xFF) at++;
            while (at + 1 < data.Length && data[at + 1] == 0xFF) at++;
            if (at + 1 >= data.Length || data[at + 1] != 0xD0 + expected)
                throw owner.Corrupt($"restart marker RST{expected} missing in scan {owner.scans}");
            at += 2;
            expected = (expected + 1) & 7;
        }
    }
}
