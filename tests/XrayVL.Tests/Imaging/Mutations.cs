namespace XrayVL.Tests.Imaging;

/// <summary>Seeded random corruption of files: bit flips, byte overwrites, "interesting" integers (lengths such as
/// 0xFFFFFFFF), truncation, insertion, deletion and duplication of byte ranges.</summary>
internal static class Mutations
{
    private static readonly uint[] Interesting =
        [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 60000, 0xEA60EA60];

    /// <summary>1–4 mutations; 70% of positions fall in the first <paramref name="hotRegion"/> bytes (headers), where
    /// corruption reaches the most code.</summary>
    public static byte[] Mutate(byte[] seed, Random random, int hotRegion)
    {
        var data = new List<byte>(seed);
        int operations = 1 + random.Next(4);
        for (int op = 0; op < operations; op++)
        {
            int Position()
            {
                if (data.Count == 0) return 0;
                int limit = random.NextDouble() < 0.7 ? Math.Min(hotRegion, data.Count) : data.Count;
                return random.Next(Math.Max(1, limit));
            }
            switch (random.Next(8))
            {
                case 0:
                case 1:
                    if (data.Count > 0) { int p = Position(); data[p] ^= (byte)(1 << random.Next(8)); }
                    break;
                case 2:
                    if (data.Count > 0) data[Position()] = (byte)random.Next(256);
                    break;
                case 3:
                {
                    uint value = Interesting[random.Next(Interesting.Length)];
                    int width = random.Next(2) == 0 ? 2 : 4, p = Position();
                    bool bigEndian = random.Next(2) == 0;   // PNG and JPEG are big endian, DICOM little
                    for (int k = 0; k < width && p + k < data.Count; k++)
                        data[p + k] = (byte)(value >> (8 * (bigEndian ? width - 1 - k : k)));
                    break;
                }
                case 4:
                    if (data.Count > 0) { int cut = random.Next(data.Count); data.RemoveRange(cut, data.Count - cut); }
                    break;
                case 5:
                {
                    var bytes = new byte[1 + random.Next(16)];
                    random.NextBytes(bytes);
                    data.InsertRange(Math.Min(Position(), data.Count), bytes);
                    break;
                }
                case 6:
                    if (data.Count > 0) { int p = Position(); data.RemoveRange(p, Math.Min(1 + random.Next(32), data.Count - p)); }
                    break;
                default:
                    if (data.Count > 8)
                    {
                        int from = random.Next(data.Count - 4), length = Math.Min(1 + random.Next(64), data.Count - from);
                        data.InsertRange(Position(), data.GetRange(from, length));
                    }
                    break;
            }
        }
        return data.ToArray();
    }
}
