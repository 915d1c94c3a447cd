namespace XrayVL.Imaging;

/// <summary>Training augmentation strengths (JSON: max_rotation_degrees, min_scale, ...).</summary>
public sealed record AugmentConfig
{
    /// <summary>±7°: patient positioning varies by a few degrees; more produces views no radiographer would take.</summary>
    public double MaxRotationDegrees { get; init; } = 7;
    /// <summary>Crop side as a fraction of the image side, drawn from [MinScale, MaxScale]: 0.9–1.0 keeps both lungs in view.
    /// Above 1 (up to 1.5) zooms out: the whole image, smaller, inside a border of <see cref="FillValue"/>. How tightly a
    /// radiograph is framed differs between sites and between collections' classes (by eye, Kermany's pneumonia images are framed
    /// tighter than its normal ones), so a classifier can learn the framing instead of the lungs unless both vary.</summary>
    public double MinScale { get; init; } = 0.9;
    public double MaxScale { get; init; } = 1.0;
    /// <summary>0 by default. r &gt; 0: the crop's width / height ratio is multiplied by a factor drawn log-uniformly from
    /// [1/(1+r), 1+r]. Collections resized to a square without keeping the aspect ratio (the Kermany copy here) squash
    /// each radiograph by its own original shape; this varies that. Drawn after the other draws and only when r &gt; 0, so
    /// recipes without it keep their exact draws (and, left out of the recipe's JSON when 0, their fingerprints).</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingDefault)]
    public double MaxAspectChange { get; init; }
    /// <summary>±10% brightness and contrast: exposure differences between machines.</summary>
    public double Brightness { get; init; } = 0.1;
    public double Contrast { get; init; } = 0.1;
    /// <summary>0 by default: a chest X-ray is not left-right symmetric (heart and aortic arch on the patient's left, the
    /// gastric bubble under the left diaphragm), so a mirrored image shows an anatomy (situs inversus, dextrocardia)
    /// that reports would then describe wrongly.</summary>
    public double HorizontalFlipProbability { get; init; }
    /// <summary>Value outside the source after rotation or crop: black, like the padding.</summary>
    public float FillValue { get; init; }

    /// <summary>No change at all (evaluation).</summary>
    public static readonly AugmentConfig None = new() { MaxRotationDegrees = 0, MinScale = 1, MaxScale = 1, Brightness = 0, Contrast = 0 };

    public AugmentConfig Validate()
    {
        if (MaxRotationDegrees is < 0 or > 45) throw new XrayVLException($"augment config: max_rotation_degrees {MaxRotationDegrees} outside 0..45");
        if (!(MinScale > 0 && MinScale <= MaxScale && MaxScale <= 1.5)) throw new XrayVLException($"augment config: need 0 < min_scale {MinScale} ≤ max_scale {MaxScale} ≤ 1.5");
        if (!(MaxAspectChange is >= 0 and <= 0.5)) throw new XrayVLException($"augment config: max_aspect_change {MaxAspectChange} outside 0..0.5");
        if (Brightness is < 0 or >= 1 || Contrast is < 0 or >= 1) throw new XrayVLException("augment config: brightness and contrast must be in [0, 1)");
        if (HorizontalFlipProbability is < 0 or > 1) throw new XrayVLException($"augment config: horizontal_flip_probability {HorizontalFlipProbability} outside [0, 1]");
        return this;
    }
}

/// <summary>The random draws of one augmentation, so a caller can log or replay them.</summary>
/// <param name="Aspect">The crop's width is Scale·Aspect and its height Scale / Aspect (of the image's), so its width / height
/// ratio is Aspect²; 1 keeps the shape.</param>
public readonly record struct AugmentParameters(double AngleDegrees, double Scale, double ShiftX, double ShiftY, bool Flip, double Brightness,
    double Contrast, double Aspect = 1);

/// <summary>
/// Training augmentation on [0, 1] gray images, applied before <see cref="Preprocess"/>: a random rotation and crop
/// (one affine warp, bilinear), then contrast and brightness jitter. Deterministic for a seeded Random: the same draws are
/// taken in the same order whatever the configuration, plus one last draw for the aspect when it is configured.
/// </summary>
public static class Augment
{
    public static GrayImage Apply(GrayImage image, AugmentConfig config, Random random) =>
        Apply(image, config, Draw(image, config, random));

    public static GrayImage Apply(GrayImage image, AugmentConfig config, AugmentParameters p)
    {
        var warped = Warp(image, p.AngleDegrees, p.Scale, p.ShiftX, p.ShiftY, p.Flip, config.FillValue, p.Aspect);
        return Jitter(warped, p.Brightness, p.Contrast);
    }

    /// <summary>Draws rotation, crop scale, crop position (within the image; for a zoom-out, the image's position within the
    /// frame), flip, brightness and contrast, then the aspect change when one is configured.</summary>
    public static AugmentParameters Draw(GrayImage image, AugmentConfig config, Random random)
    {
        config.Validate();
        double Uniform(double lo, double hi) => lo + (hi - lo) * random.NextDouble();
        double angle = Uniform(-config.MaxRotationDegrees, config.MaxRotationDegrees);
        double scale = Uniform(config.MinScale, config.MaxScale);
        double towardX = Uniform(-1, 1), towardY = Uniform(-1, 1);
        bool flip = random.NextDouble() < config.HorizontalFlipProbability;
        double brightness = 1 + Uniform(-config.Brightness, config.Brightness);
        double contrast = 1 + Uniform(-config.Contrast, config.Contrast);
        // a² is the change of the width / height ratio, log-uniform in [1/(1+r), 1+r].
        double aspect = config.MaxAspectChange > 0 ? Math.Exp(Uniform(-1, 1) * Math.Log(1 + config.MaxAspectChange) / 2) : 1;
        // The crop (width s·a, height s/a) stays inside the image; a zoomed-out image stays inside the frame.
        double shiftX = towardX * (1 - scale * aspect) * image.Width / 2;
        double shiftY = towardY * (1 - scale / aspect) * image.Height / 2;
        return new AugmentParameters(angle, scale, shiftX, shiftY, flip, brightness, contrast, aspect);
    }

    /// <summary>
    /// Output pixel centre o (relative to the image centre) samples the source at R(θ)·(S·o′) + centre + shift, where o′
    /// is o mirrored horizontally when <paramref name="flip"/> and S = diag(s·a, s/a) for scale s and aspect a; so s &lt; 1
    /// zooms in on a crop of side s, s &gt; 1 zooms out, a &gt; 1 takes a wider crop (the content looks narrower), and a
    /// positive angle turns the content counter-clockwise as displayed (y down). Bilinear; outside the source reads
    /// <paramref name="fill"/>. Angle 0, scale 1, aspect 1, no shift and no flip returns the pixels unchanged.
    /// </summary>
    public static GrayImage Warp(GrayImage image, double angleDegrees, double scale, double shiftX = 0, double shiftY = 0, bool flip = false,
        float fill = 0f, double aspect = 1)
    {
        if (!(aspect > 0)) throw new ArgumentOutOfRangeException(nameof(aspect), aspect, "the aspect factor must be positive");
        int w = image.Width, h = image.Height;
        double theta = angleDegrees * Math.PI / 180;
        // Columns of R(θ)·S: (cosX, sinX) multiplies o′x, (−sinY, cosY) multiplies o′y. With aspect 1 these are the
        // products cos θ·s and sin θ·s exactly (multiplying or dividing by 1 is exact), so older draws warp bit for bit.
        double cosX = Math.Cos(theta) * scale * aspect, sinX = Math.Sin(theta) * scale * aspect;
        double cosY = Math.Cos(theta) * scale / aspect, sinY = Math.Sin(theta) * scale / aspect;
        double cx = w / 2.0, cy = h / 2.0;
        double flipSign = flip ? -1 : 1;
        var src = image.Pixels;
        var output = new float[src.Length];
        for (int y = 0; y < h; y++)
        {
            double oy = y + 0.5 - cy;
            double ox0 = flipSign * (0.5 - cx);
            // Source position in pixel-index space (pixel i has its centre at i + 0.5); linear in x along a row.
            double sx = cosX * ox0 - sinY * oy + cx + shiftX - 0.5, sy = sinX * ox0 + cosY * oy + cy + shiftY - 0.5;
            double stepX = flipSign * cosX, stepY = flipSign * sinX;
            for (int x = 0; x < w; x++, sx += stepX, sy += stepY)
                output[y * w + x] = Bilinear(src, w, h, sx, sy, fill);
        }
        return image.WithPixels(output);
    }

    private static float Bilinear(float[] src, int w, int h, double sx, double sy, float fill)
    {
        int x0 = (int)Math.Floor(sx), y0 = (int)Math.Floor(sy);
        float fx = (float)(sx - x0), fy = (float)(sy - y0);
        // Snap positions within float noise of a pixel centre, so identity warps (and quarter turns) are exact.
        if (fx < 1e-6f) fx = 0;
        else if (fx > 1 - 1e-6f) { fx = 0; x0++; }
        if (fy < 1e-6f) fy = 0;
        else if (fy > 1 - 1e-6f) { fy = 0; y0++; }
        if ((uint)x0 < (uint)(w - 1) && (uint)y0 < (uint)(h - 1))
        {
            int i = y0 * w + x0;   // all four neighbours inside
            float top = src[i] + (src[i + 1] - src[i]) * fx;
            float bottom = src[i + w] + (src[i + w + 1] - src[i + w]) * fx;
            return top + (bottom - top) * fy;
        }
        float At(int x, int y) => (uint)x < (uint)w && (uint)y < (uint)h ? src[y * w + x] : fill;
        float t = At(x0, y0) * (1 - fx) + (fx == 0 ? 0 : At(x0 + 1, y0) * fx);
        if (fy == 0) return t;
        float b = At(x0, y0 + 1) * (1 - fx) + (fx == 0 ? 0 : At(x0 + 1, y0 + 1) * fx);
        return t * (1 - fy) + b * fy;
    }

    /// <summary>Contrast scales deviations from the image mean, brightness scales the result; clamped to [0, 1].</summary>
    public static GrayImage Jitter(GrayImage image, double brightness, double contrast)
    {
        if (brightness == 1 && contrast == 1) return image;
        double mean = 0;
        foreach (float v in image.Pixels) mean += v;
        mean /= image.Pixels.Length;
        // ((v − mean)·contrast + mean)·brightness = v·gain + offset
        float gain = (float)(contrast * brightness), offset = (float)(mean * (1 - contrast) * brightness);
        var output = new float[image.Pixels.Length];
        var input = image.Pixels;
        for (int i = 0; i < output.Length; i++) output[i] = Math.Clamp(input[i] * gain + offset, 0f, 1f);
        return image.WithPixels(output);
    }
}
