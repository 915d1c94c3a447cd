using TorchSharp;
using static TorchSharp.torch;

namespace XrayVL.Imaging;

/// <summary>
/// How an image becomes model input. Maps 1:1 to JSON (image_size, channels, mean, std, pad_value).
/// </summary>
public sealed record PreprocessConfig
{
    /// <summary>224: the ViT-B/16 and ResNet input size most published X-ray encoders use.</summary>
    public int ImageSize { get; init; } = 224;
    /// <summary>1 for encoders trained here on gray input; 3 to feed encoders that expect RGB (the gray value is repeated).</summary>
    public int Channels { get; init; } = 1;
    /// <summary>0.5 / 0.25 puts [0, 1] pixels at about zero mean, unit spread; one value per channel or one for all.</summary>
    public float[] Mean { get; init; } = [0.5f];
    public float[] Std { get; init; } = [0.25f];
    /// <summary>Value (in [0, 1] pixel units, before normalisation) of the bars that pad to square: 0 is black, like the
    /// background around the chest in most radiographs.</summary>
    public float PadValue { get; init; }

    /// <summary>CLIP's RGB statistics, for CLIP-style encoders with 3-channel input.</summary>
    public static PreprocessConfig Clip(int imageSize = 224) => new()
    {
        ImageSize = imageSize,
        Channels = 3,
        Mean = [0.48145466f, 0.4578275f, 0.40821073f],
        Std = [0.26862954f, 0.26130258f, 0.27577711f],
    };

    /// <summary>Throws an XrayVLException naming the bad value.</summary>
    public PreprocessConfig Validate()
    {
        if (ImageSize is < 8 or > 4096) throw new XrayVLException($"preprocess config: image_size {ImageSize} is outside 8..4096");
        if (Channels is not (1 or 3)) throw new XrayVLException($"preprocess config: channels {Channels} must be 1 or 3");
        if (Mean is null || (Mean.Length != 1 && Mean.Length != Channels))
            throw new XrayVLException($"preprocess config: mean needs 1 or {Channels} values");
        if (Std is null || (Std.Length != 1 && Std.Length != Channels))
            throw new XrayVLException($"preprocess config: std needs 1 or {Channels} values");
        foreach (float s in Std)
            if (!(s > 0) || !float.IsFinite(s)) throw new XrayVLException($"preprocess config: std {s} must be positive");
        foreach (float m in Mean)
            if (!float.IsFinite(m)) throw new XrayVLException($"preprocess config: mean {m} is not finite");
        if (!(PadValue >= 0 && PadValue <= 1)) throw new XrayVLException($"preprocess config: pad_value {PadValue} must be in [0, 1]");
        return this;
    }
}

/// <summary>
/// Gray image → model input: pad to a centred square → resize (separable triangle filter whose width grows with the
/// downscale factor, i.e. bilinear when enlarging and anti-aliased when shrinking, as PIL's BILINEAR) → normalise.
/// </summary>
public static class Preprocess
{
    /// <summary>(C, S, S) float32 tensor on the CPU.</summary>
    public static Tensor ToTensor(GrayImage image, PreprocessConfig config)
    {
        config.Validate();
        float[] values = ToArray(image, config);
        int s = config.ImageSize;
        return tensor(values, [config.Channels, s, s], ScalarType.Float32);
    }

    /// <summary>(B, C, S, S) float32 tensor on the CPU.</summary>
    public static Tensor Batch(IEnumerable<GrayImage> images, PreprocessConfig config)
    {
        config.Validate();
        var list = images as IReadOnlyList<GrayImage> ?? images.ToList();
        if (list.Count == 0) throw new ArgumentException("a batch needs at least one image", nameof(images));
        int s = config.ImageSize, per = config.Channels * s * s;
        var values = new float[(long)list.Count * per];
        for (int b = 0; b < list.Count; b++) ToArray(list[b], config).CopyTo(values, (long)b * per);
        return tensor(values, [list.Count, config.Channels, s, s], ScalarType.Float32);
    }

    /// <summary>The (C, S, S) values of <see cref="ToTensor"/> as a flat array (channel-major).</summary>
    public static float[] ToArray(GrayImage image, PreprocessConfig config)
    {
        int s = config.ImageSize;
        var square = ToModelSquare(image, config);
        var result = new float[config.Channels * s * s];
        for (int c = 0; c < config.Channels; c++)
        {
            float mean = config.Mean[config.Mean.Length == 1 ? 0 : c];
            float invStd = 1f / config.Std[config.Std.Length == 1 ? 0 : c];
            var plane = result.AsSpan(c * s * s, s * s);
            for (int i = 0; i < plane.Length; i++) plane[i] = (square.Pixels[i] - mean) * invStd;
        }
        return result;
    }

    /// <summary>
    /// The padded, resized S×S gray image the model sees, before normalisation. Preprocessing it again changes nothing,
    /// so a server can keep this small image instead of the upload and still give the model the same input.
    /// </summary>
    public static GrayImage ToModelSquare(GrayImage image, PreprocessConfig config) =>
        Resize(PadToSquare(image, config.PadValue), config.ImageSize, config.ImageSize);

    /// <summary>Centres the image on a square canvas of side max(W, H); when the difference is odd the extra row or
    /// column of padding goes to the bottom or right.</summary>
    public static GrayImage PadToSquare(GrayImage image, float padValue = 0f)
    {
        int side = Math.Max(image.Width, image.Height);
        if (image.Width == image.Height) return image;
        int left = (side - image.Width) / 2, top = (side - image.Height) / 2;
        var pixels = new float[(long)side * side];
        if (padValue != 0) Array.Fill(pixels, padValue);
        for (int y = 0; y < image.Height; y++)
            image.Pixels.AsSpan(y * image.Width, image.Width).CopyTo(pixels.AsSpan((top + y) * side + left));
        return new GrayImage(side, side, pixels, image.Source);
    }

    /// <summary>Resizes with a separable triangle filter: bilinear when enlarging; when shrinking by a factor f the filter
    /// spans f source pixels on each side (area-weighted anti-aliasing). Weights are renormalised at the borders.</summary>
    public static GrayImage Resize(GrayImage image, int width, int height)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
        if (width == image.Width && height == image.Height) return image;
        var xs = Weights(image.Width, width);
        var ys = Weights(image.Height, height);

        // Horizontal pass: (H_in, W_out).
        var horizontal = new float[(long)image.Height * width];
        var src = image.Pixels;
        for (int y = 0; y < image.Height; y++)
        {
            int rowIn = y * image.Width, rowOut = y * width;
            for (int x = 0; x < width; x++)
            {
                float sum = 0;
                int start = xs.Start[x], taps = xs.Count[x], w0 = x * xs.Stride;
                for (int k = 0; k < taps; k++) sum += src[rowIn + start + k] * xs.Weight[w0 + k];
                horizontal[rowOut + x] = sum;
            }
        }
        // Vertical pass: (H_out, W_out).
        var output = new float[(long)height * width];
        for (int y = 0; y < height; y++)
        {
            int start = ys.Start[y], taps = ys.Count[y], w0 = y * ys.Stride;
            var row = output.AsSpan(y * width, width);
            for (int k = 0; k < taps; k++)
            {
                float weight = ys.Weight[w0 + k];
                var input = horizontal.AsSpan((start + k) * width, width);
                for (int x = 0; x < width; x++) row[x] += input[x] * weight;
            }
        }
        return new GrayImage(width, height, output, image.Source);
    }

    private sealed record FilterWeights(int[] Start, int[] Count, float[] Weight, int Stride);

    /// <summary>For each output index i, the source taps j in [Start, Start + Count) and their weights
    /// triangle((j + 0.5 − c) / f), c = (i + 0.5)·scale the output pixel centre in source coordinates, f = max(scale, 1).</summary>
    private static FilterWeights Weights(int inSize, int outSize)
    {
        double scale = (double)inSize / outSize;
        double filterScale = Math.Max(scale, 1.0);
        double support = filterScale;   // the triangle reaches ±1 filter unit
        int stride = (int)Math.Ceiling(support) * 2 + 1;
        var start = new int[outSize];
        var count = new int[outSize];
        var weight = new float[outSize * stride];
        for (int i = 0; i < outSize; i++)
        {
            double center = (i + 0.5) * scale;
            int lo = Math.Max(0, (int)Math.Floor(center - support + 0.5));
            int hi = Math.Min(inSize, (int)Math.Floor(center + support + 0.5));
            double total = 0;
            var w = new double[Math.Max(0, hi - lo)];
            for (int j = lo; j < hi; j++)
            {
                double t = Math.Abs((j + 0.5 - center) / filterScale);
                w[j - lo] = t < 1 ? 1 - t : 0;
                total += w[j - lo];
            }
            // Trim zero-weight taps at both ends so Count is tight.
            int first = 0, last = w.Length - 1;
            while (first <= last && w[first] == 0) first++;
            while (last >= first && w[last] == 0) last--;
            if (total <= 0 || first > last)
            {
                // Cannot happen for inSize ≥ 1, but keep the nearest pixel rather than dividing by zero.
                start[i] = Math.Clamp((int)center, 0, inSize - 1);
                count[i] = 1;
                weight[i * stride] = 1;
                continue;
            }
            start[i] = lo + first;
            count[i] = last - first + 1;
            for (int k = 0; k < count[i]; k++) weight[i * stride + k] = (float)(w[first + k] / total);
        }
        return new FilterWeights(start, count, weight, stride);
    }
}
