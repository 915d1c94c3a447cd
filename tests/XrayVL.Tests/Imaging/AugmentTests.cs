using XrayVL.Imaging;
using static XrayVL.Tests.Imaging.ImagingFixtures;

namespace XrayVL.Tests.Imaging;

public class AugmentTests
{
    private static GrayImage Random5x5(int seed)
    {
        var random = new Random(seed);
        return new GrayImage(5, 5, Enumerable.Range(0, 25).Select(_ => (float)random.NextDouble()).ToArray());
    }

    [Fact]
    public void SameSeedSameImageOtherSeedOtherImage()
    {
        var image = ImageFile.Load(IuPng("2_2.png"));
        var config = new AugmentConfig();
        var a = Augment.Apply(image, config, new Random(42));
        var b = Augment.Apply(image, config, new Random(42));
        var c = Augment.Apply(image, config, new Random(43));
        Assert.Equal(a.Pixels, b.Pixels);
        Assert.NotEqual(a.Pixels, c.Pixels);
        Assert.All(a.Pixels, v => Assert.InRange(v, 0f, 1f));
        Assert.Equal((image.Width, image.Height), (a.Width, a.Height));
    }

    [Fact]
    public void DrawsStayInTheirRangesAndNeverFlipByDefault()
    {
        var image = new GrayImage(100, 80, new float[8000]);
        var config = new AugmentConfig();
        Assert.Equal(0, config.HorizontalFlipProbability);
        var random = new Random(1);
        for (int i = 0; i < 500; i++)
        {
            var p = Augment.Draw(image, config, random);
            Assert.InRange(p.AngleDegrees, -7, 7);
            Assert.InRange(p.Scale, 0.9, 1.0);
            Assert.InRange(Math.Abs(p.ShiftX), 0, (1 - p.Scale) * 50 + 1e-9);   // the crop stays inside the image
            Assert.InRange(Math.Abs(p.ShiftY), 0, (1 - p.Scale) * 40 + 1e-9);
            Assert.InRange(p.Brightness, 0.9, 1.1);
            Assert.InRange(p.Contrast, 0.9, 1.1);
            Assert.False(p.Flip);
        }
    }

    [Fact]
    public void NoAugmentationIsTheIdentity()
    {
        var image = Random5x5(1);
        Assert.Equal(image.Pixels, Augment.Apply(image, AugmentConfig.None, new Random(3)).Pixels);
    }

    /// <summary>θ = 90° on a 5×5 image: output (x, y) samples source (4 − y, x), so the right edge moves to the top
    /// (counter-clockwise as displayed).</summary>
    [Fact]
    public void QuarterTurnMapsPixelsAsComputedByHand()
    {
        var image = Random5x5(2);
        var turned = Augment.Warp(image, 90, 1);
        for (int y = 0; y < 5; y++)
            for (int x = 0; x < 5; x++) Assert.Equal(image[4 - y, x], turned[x, y], 1e-5);
    }

    [Fact]
    public void FlipMirrorsColumns()
    {
        var image = Random5x5(3);
        var flipped = Augment.Warp(image, 0, 1, flip: true);
        for (int y = 0; y < 5; y++)
            for (int x = 0; x < 5; x++) Assert.Equal(image[4 - x, y], flipped[x, y]);
    }

    /// <summary>Scale 0.5 on an 8-px ramp v = x/7: output x samples source 0.5·(x + 0.5 − 4) + 4 − 0.5 = 0.5x + 1.75.</summary>
    [Fact]
    public void CropZoomsAroundTheShiftedCentre()
    {
        var ramp = new GrayImage(8, 8, Enumerable.Range(0, 64).Select(i => i % 8 / 7f).ToArray());
        var zoomed = Augment.Warp(ramp, 0, 0.5);
        for (int x = 0; x < 8; x++) Assert.Equal((0.5 * x + 1.75) / 7, zoomed[x, 3], 1e-5);
        var shifted = Augment.Warp(ramp, 0, 0.5, shiftX: 2);
        for (int x = 0; x < 7; x++) Assert.Equal((0.5 * x + 3.75) / 7, shifted[x, 3], 1e-5);   // x = 7 reaches past the last pixel
    }

    /// <summary>Scale 1.5 on a 16-px image of ones: output x samples source 1.5·(x + 0.5 − 8) + 8 − 0.5, inside the
    /// source only for x in 3..12 (source 0.25..13.75 and beyond are read against the black fill at the edges).</summary>
    [Fact]
    public void ScaleAboveOneZoomsOutInsideABlackBorder()
    {
        var ones = new GrayImage(16, 16, Enumerable.Repeat(1f, 256).ToArray());
        var zoomed = Augment.Warp(ones, 0, 1.5);
        Assert.Equal(0f, zoomed[0, 0]);
        Assert.Equal(0f, zoomed[15, 8]);
        for (int x = 3; x <= 12; x++) Assert.Equal(1f, zoomed[x, 8], 1e-6);
        Assert.Equal(1f, zoomed[8, 3], 1e-6);
        Assert.Equal(0f, zoomed[8, 0]);
    }

    /// <summary>Aspect 2 on a ramp along x: the crop is twice as wide, so the content's slope along x doubles and along y
    /// halves; source x = 2·(x + 0.5 − 8) + 8 − 0.5 = 2x − 7.5 on a 16-px image.</summary>
    [Fact]
    public void AspectWidensTheCropAndNarrowsTheContent()
    {
        var alongX = new GrayImage(16, 16, Enumerable.Range(0, 256).Select(i => (float)(i % 16)).ToArray());
        var alongY = new GrayImage(16, 16, Enumerable.Range(0, 256).Select(i => (float)(i / 16)).ToArray());
        var wide = Augment.Warp(alongX, 0, 1, aspect: 2);
        for (int x = 4; x <= 11; x++) Assert.Equal(2 * x - 7.5, wide[x, 8], 1e-4);
        var tall = Augment.Warp(alongY, 0, 1, aspect: 2);
        for (int y = 0; y < 16; y++) Assert.Equal(0.5 * y + 3.75, tall[8, y], 1e-4);
    }

    /// <summary>The squash applies before the rotation (R(θ)·diag(s·a, s/a)): at θ = 90°, a = 2 the source of output o is
    /// (−0.5·o_y, 2·o_x) around the centre, so a ramp along y reads 2x − 7.5 along a row and a ramp along x reads
    /// −0.5y + 11.25 down a column (the other order would swap the factors).</summary>
    [Fact]
    public void AspectSquashesBeforeTheRotation()
    {
        var alongX = new GrayImage(16, 16, Enumerable.Range(0, 256).Select(i => (float)(i % 16)).ToArray());
        var alongY = new GrayImage(16, 16, Enumerable.Range(0, 256).Select(i => (float)(i / 16)).ToArray());
        var a = Augment.Warp(alongY, 90, 1, aspect: 2);
        for (int x = 4; x <= 11; x++) Assert.Equal(2 * x - 7.5, a[x, 8], 1e-4);
        var b = Augment.Warp(alongX, 90, 1, aspect: 2);
        for (int y = 0; y < 16; y++) Assert.Equal(-0.5 * y + 11.25, b[8, y], 1e-4);
    }

    [Fact]
    public void AspectIsDrawnLastAndOnlyWhenConfigured()
    {
        var image = new GrayImage(100, 80, new float[8000]);
        var plain = new AugmentConfig { MinScale = 0.7, MaxScale = 1.2 };
        var withAspect = plain with { MaxAspectChange = 0.2 };
        Random a = new(5), b = new(5);
        for (int i = 0; i < 300; i++)
        {
            var p = Augment.Draw(image, plain, a);
            var q = Augment.Draw(image, withAspect, b);
            Assert.Equal(1, p.Aspect);
            Assert.InRange(q.Aspect * q.Aspect, 1 / 1.2 - 1e-12, 1.2 + 1e-12);   // the width / height ratio changes by a²
            // The crop (or, zoomed out, the image) stays inside: |shift| ≤ |1 − s·a|·W/2 and |1 − s/a|·H/2.
            Assert.InRange(Math.Abs(q.ShiftX), 0, Math.Abs(1 - q.Scale * q.Aspect) * 50 + 1e-9);
            Assert.InRange(Math.Abs(q.ShiftY), 0, Math.Abs(1 - q.Scale / q.Aspect) * 40 + 1e-9);
            Assert.InRange(Math.Abs(p.ShiftX), 0, Math.Abs(1 - p.Scale) * 50 + 1e-9);
            // The other draws are those of the recipe without it (the shifts differ only by the aspect's share).
            Assert.Equal((p.AngleDegrees, p.Scale, p.Flip, p.Brightness, p.Contrast), (q.AngleDegrees, q.Scale, q.Flip, q.Brightness, q.Contrast));
            if (p.Scale != 1) Assert.Equal(p.ShiftX / (1 - p.Scale), q.ShiftX / (1 - q.Scale * q.Aspect), 1e-9);
            b = new Random(5 + i + 1);
            a = new Random(5 + i + 1);
        }
        Assert.Throws<XrayVLException>(() => (plain with { MaxScale = 1.6 }).Validate());
        Assert.Throws<XrayVLException>(() => (plain with { MaxAspectChange = 0.6 }).Validate());
        Assert.Throws<XrayVLException>(() => (plain with { MaxAspectChange = -0.1 }).Validate());
        Assert.Throws<XrayVLException>(() => (plain with { MaxAspectChange = double.NaN }).Validate());
        // Left out of the recipe's JSON when unset, so recipes written before the option keep their fingerprint.
        Assert.DoesNotContain("aspect", System.Text.Json.JsonSerializer.Serialize(plain, Json.Options));
        Assert.Contains("\"max_aspect_change\": 0.2", System.Text.Json.JsonSerializer.Serialize(withAspect, Json.Options));
    }

    [Fact]
    public void JitterScalesContrastAroundTheMeanThenBrightness()
    {
        var image = new GrayImage(4, 1, [0.2f, 0.4f, 0.6f, 0.8f]);   // mean 0.5
        var jittered = Augment.Jitter(image, brightness: 0.9, contrast: 1.1);
        double[] expected = [((0.2 - 0.5) * 1.1 + 0.5) * 0.9, ((0.4 - 0.5) * 1.1 + 0.5) * 0.9, ((0.6 - 0.5) * 1.1 + 0.5) * 0.9, ((0.8 - 0.5) * 1.1 + 0.5) * 0.9];
        for (int i = 0; i < 4; i++) Assert.Equal(expected[i], jittered.Pixels[i], 1e-5);
        Assert.Equal(1f, Augment.Jitter(new GrayImage(2, 1, [0f, 1f]), 1.1, 1)[1, 0]);   // clamped
    }
}
