using TorchSharp;
using static TorchSharp.torch;

namespace XrayVL.Imaging;

/// <summary>
/// The image preprocessing of BLIP-2's eval processor, which XrayGLM (and VisualGLM) use: the image as 8-bit RGB, resized
/// to S×S with Pillow's bicubic filter (no crop, no padding), scaled to [0, 1], normalised with CLIP's mean and std.
/// The resize is Pillow's own 8-bit algorithm written out (its Resample.c): a separable bicubic filter (a = −0.5,
/// support 2, widened by the scale when shrinking), weights normalised and rounded to 22-bit fixed point, horizontal
/// pass then vertical, each rounded and clipped to 0..255. Results are bit-identical to Pillow's, so the model sees the
/// pixels XrayGLM's own code gives it.
/// </summary>
public static class PilBicubic
{
    private const int PrecisionBits = 32 - 8 - 2;

    /// <summary>Pillow's bicubic kernel with a = −0.5.</summary>
    private static double Filter(double x)
    {
        const double a = -0.5;
        if (x < 0) x = -x;
        if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
        if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
        return 0;
    }

    /// <summary>For each output index: first source index, tap count, and the fixed-point weights (Pillow's precompute_coeffs + normalize_coeffs_8bpc).</summary>
    private static (int[] Start, int[] Count, int[] Weights, int Taps) Coefficients(int inSize, int outSize)
    {
        double scale = (double)inSize / outSize, filterScale = Math.Max(scale, 1.0);
        double support = 2.0 * filterScale;
        int taps = (int)Math.Ceiling(support) * 2 + 1;
        var start = new int[outSize];
        var count = new int[outSize];
        var weights = new int[outSize * taps];
        var k = new double[taps];
        for (int i = 0; i < outSize; i++)
        {
            double center = (i + 0.5) * scale, ss = 1.0 / filterScale;
            int min = Math.Max((int)(center - support + 0.5), 0);
            int max = Math.Min((int)(center + support + 0.5), inSize) - min;
            double total = 0;
            for (int x = 0; x < max; x++)
            {
                k[x] = Filter((x + min - center + 0.5) * ss);
                total += k[x];
            }
            for (int x = 0; x < max; x++)
            {
                double w = total != 0 ? k[x] / total : 0;
                w *= 1 << PrecisionBits;
                weights[i * taps + x] = (int)(w < 0 ? w - 0.5 : w + 0.5);
            }
            (start[i], count[i]) = (min, max);
        }
        return (start, count, weights, taps);
    }

    private static byte Clip(long value)
    {
        long shifted = value >> PrecisionBits;
        return shifted < 0 ? (byte)0 : shifted > 255 ? (byte)255 : (byte)shifted;
    }

    /// <summary>One 8-bit channel (h, w) resized to (outHeight, outWidth), as Pillow's Image.resize(…, BICUBIC).</summary>
    public static byte[] Resize(byte[] source, int width, int height, int outWidth, int outHeight)
    {
        if (source.Length != width * height) throw new ArgumentException($"{source.Length} bytes are not {width}×{height}");
        byte[] horizontal = source;
        int w = width;
        if (outWidth != width)
        {
            var (start, count, weights, taps) = Coefficients(width, outWidth);
            horizontal = new byte[outWidth * height];
            for (int y = 0; y < height; y++)
                for (int x = 0; x < outWidth; x++)
                {
                    long sum = 1L << (PrecisionBits - 1);
                    for (int t = 0; t < count[x]; t++) sum += (long)source[y * width + start[x] + t] * weights[x * taps + t];
                    horizontal[y * outWidth + x] = Clip(sum);
                }
            w = outWidth;
        }
        if (outHeight == height) return horizontal;
        var (ys, yc, yw, ytaps) = Coefficients(height, outHeight);
        var output = new byte[w * outHeight];
        for (int y = 0; y < outHeight; y++)
            for (int x = 0; x < w; x++)
            {
                long sum = 1L << (PrecisionBits - 1);
                for (int t = 0; t < yc[y]; t++) sum += (long)horizontal[(ys[y] + t) * w + x] * yw[y * ytaps + t];
                output[y * w + x] = Clip(sum);
            }
        return output;
    }

    /// <summary>
    /// The S×S 8-bit image BLIP-2's eval processing normalises (the image rounded to 8 bits, then Pillow-bicubic resized to
    /// S×S), as a <see cref="GrayImage"/>: <see cref="BlipEval"/> of it equals <see cref="BlipEval"/> of the original.
    /// </summary>
    public static GrayImage BlipEvalImage(GrayImage image, int size)
    {
        byte[] resized = Resize(ToBytes(image), image.Width, image.Height, size, size);
        var pixels = new float[resized.Length];
        for (int i = 0; i < pixels.Length; i++) pixels[i] = resized[i] / 255f;
        return new GrayImage(size, size, pixels, image.Source);
    }

    private static byte[] ToBytes(GrayImage image)
    {
        var bytes = new byte[image.Pixels.Length];
        for (int i = 0; i < bytes.Length; i++) bytes[i] = (byte)Math.Clamp(Math.Round(image.Pixels[i] * 255.0), 0, 255);
        return bytes;
    }

    /// <summary>
    /// BLIP-2's eval preprocessing of a gray image: 8-bit (as Pillow's convert("RGB") gives it), bicubic to S×S, /255,
    /// (v − mean_c) / std_c for the three channels. Returns (1, 3, S, S) float32.
    /// </summary>
    public static Tensor BlipEval(GrayImage image, int size, float[] mean, float[] std)
    {
        if (mean.Length != 3 || std.Length != 3) throw new XrayVLException("BLIP preprocessing needs 3-channel mean and std");
        byte[] resized = Resize(ToBytes(image), image.Width, image.Height, size, size);
        var values = new float[3 * size * size];
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < resized.Length; i++)
                values[c * size * size + i] = (resized[i] / 255f - mean[c]) / std[c];
        return torch.tensor(values, [1, 3, size, size], ScalarType.Float32);
    }
}
