using XrayVL.Imaging;

namespace XrayVL.Tests.Imaging;

/// <summary>
/// Pillow's 8-bit bicubic resize, shrinking and enlarging odd sizes. Expected bytes from Pillow 9.4 (Debian python3-pil):
/// Image.frombytes("L", (7, 5), pattern).resize((w, h), Image.BICUBIC).tobytes(), pattern[y·7 + x] = (37x + 91y + 13xy) mod 256.
/// </summary>
public sealed class PilBicubicTests
{
    private static byte[] Pattern() =>
        [.. Enumerable.Range(0, 5).SelectMany(y => Enumerable.Range(0, 7).Select(x => (byte)((x * 37 + y * 91 + x * y * 13) % 256)))];

    [Fact]
    public void ShrinksAsPillow() =>
        Assert.Equal([45, 124, 172, 163, 151, 114, 121, 153, 161, 113, 131, 119], PilBicubic.Resize(Pattern(), 7, 5, 3, 4));

    [Fact]
    public void EnlargesAsPillow() =>
        Assert.Equal(
            [0, 5, 31, 55, 76, 100, 138, 168, 190, 216, 232, 21, 36, 66, 98, 129, 151, 124, 117, 148, 183, 205, 76, 97, 134, 172, 217,
             236, 102, 32, 80, 124, 150, 141, 172, 199, 146, 150, 189, 124, 103, 150, 114, 78, 178, 218, 236, 93, 56, 115, 155, 202,
             245, 131, 34, 82, 118, 157, 125, 144, 191, 134, 127, 196, 172, 141, 12, 46, 101, 144, 201, 241, 126, 69, 122, 183, 224,
             71, 118, 160, 89, 94, 158, 173, 140, 68, 115, 166, 109, 163, 197, 57, 31, 109, 200, 183, 41, 75, 129],
            PilBicubic.Resize(Pattern(), 7, 5, 11, 9));
}
