using System.Diagnostics;
using XrayVL.Imaging;
using static XrayVL.Tests.Imaging.ImagingFixtures;

namespace XrayVL.Tests.Imaging;

public class PreprocessTests
{
    private static GrayImage Filled(int width, int height, Func<int, int, float> value)
    {
        var pixels = new float[width * height];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++) pixels[y * width + x] = value(x, y);
        return new GrayImage(width, height, pixels);
    }

    [Fact]
    public void TensorShapeTypeAndNormalisation()
    {
        var image = Filled(300, 200, (_, _) => 0.8f);
        var config = new PreprocessConfig { ImageSize = 64, PadValue = 0.8f };   // pad with the same value: constant input
        using var tensor = Preprocess.ToTensor(image, config);
        Assert.Equal([1L, 64, 64], tensor.shape);
        Assert.Equal(TorchSharp.torch.ScalarType.Float32, tensor.dtype);
        float expected = (0.8f - 0.5f) / 0.25f;
        Assert.True((tensor - expected).abs().max().item<float>() < 1e-5f);

        using var clip = Preprocess.ToTensor(image, PreprocessConfig.Clip(32) with { PadValue = 0.8f });
        Assert.Equal([3L, 32, 32], clip.shape);
        float[] mean = [0.48145466f, 0.4578275f, 0.40821073f], std = [0.26862954f, 0.26130258f, 0.27577711f];
        for (int c = 0; c < 3; c++)
            Assert.Equal((0.8f - mean[c]) / std[c], clip[c].mean().item<float>(), 1e-4);
    }

    [Fact]
    public void PadToSquareCentresTheImage()
    {
        var wide = Filled(5, 2, (x, y) => 0.1f * (1 + x + 5 * y));
        var square = Preprocess.PadToSquare(wide, padValue: 0.5f);
        Assert.Equal((5, 5), (square.Width, square.Height));
        // 3 rows of padding: 1 above, 2 below.
        for (int x = 0; x < 5; x++)
        {
            Assert.Equal(0.5f, square[x, 0]);
            Assert.Equal(wide[x, 0], square[x, 1]);
            Assert.Equal(wide[x, 1], square[x, 2]);
            Assert.Equal(0.5f, square[x, 3]);
            Assert.Equal(0.5f, square[x, 4]);
        }
        var tall = Filled(2, 5, (x, y) => 0.1f * (1 + x + 2 * y));
        var squareTall = Preprocess.PadToSquare(tall);
        for (int y = 0; y < 5; y++)
        {
            Assert.Equal(0f, squareTall[0, y]);
            Assert.Equal(tall[0, y], squareTall[1, y]);
            Assert.Equal(tall[1, y], squareTall[2, y]);
            Assert.Equal(0f, squareTall[3, y]);
            Assert.Equal(0f, squareTall[4, y]);
        }
    }

    /// <summary>A white 200×100 image padded black and shrunk to 100: rows 0–24 and 75–99 are padding.</summary>
    [Fact]
    public void PaddingLandsWhereExpectedInTheTensor()
    {
        var image = Filled(200, 100, (_, _) => 1f);
        var values = Preprocess.ToArray(image, new PreprocessConfig { ImageSize = 100, Mean = [0], Std = [1] });
        float Row(int y) => values.AsSpan(y * 100, 100).ToArray().Average();
        for (int y = 0; y < 100; y++)
        {
            float v = Row(y);
            if (y <= 23 || y >= 76) Assert.Equal(0f, v, 1e-6);
            else if (y >= 26 && y <= 73) Assert.Equal(1f, v, 1e-6);
            else Assert.InRange(v, 0f, 1f);   // the two rows at each edge blend
        }
        Assert.True(Row(24) < Row(25) && Row(75) < Row(74));
    }

    /// <summary>Shrinking a one-pixel checkerboard by 2 must average it to gray (no aliasing), away from the border.</summary>
    [Fact]
    public void DownscalingAntiAliases()
    {
        var checker = Filled(64, 64, (x, y) => (x + y) % 2);
        var half = Preprocess.Resize(checker, 32, 32);
        for (int y = 1; y < 31; y++)
            for (int x = 1; x < 31; x++) Assert.Equal(0.5f, half[x, y], 1e-5);

        var quarter = Preprocess.Resize(Filled(64, 64, (x, y) => x % 4 == 0 ? 1 : 0), 16, 16);
        for (int x = 1; x < 15; x++) Assert.Equal(0.25f, quarter[x, 8], 1e-5);   // the mean of each 4-pixel period
    }

    [Fact]
    public void UpscalingIsBilinear()
    {
        var ramp = Filled(8, 3, (x, _) => x / 7f);
        var wide = Preprocess.Resize(ramp, 16, 3);
        // Output centre i + 0.5 sits at source (i + 0.5)/2; pixel j has its centre at j + 0.5; so value = ((i + 0.5)/2 − 0.5)/7.
        for (int i = 1; i < 15; i++) Assert.Equal(((i + 0.5) / 2 - 0.5) / 7, wide[i, 1], 1e-5);
    }

    /// <summary>The separable resize against a direct 2-D evaluation of the same triangle filter.</summary>
    [Fact]
    public void ResizeMatchesNaiveTwoDimensionalFilter()
    {
        var random = new Random(9);
        var image = Filled(37, 23, (_, _) => (float)random.NextDouble());
        int outW = 16, outH = 29;   // shrink one way, enlarge the other
        var resized = Preprocess.Resize(image, outW, outH);
        for (int oy = 0; oy < outH; oy++)
            for (int ox = 0; ox < outW; ox++)
            {
                double sum = 0, weights = 0;
                double sx = (double)image.Width / outW, sy = (double)image.Height / outH;
                double fx = Math.Max(sx, 1), fy = Math.Max(sy, 1);
                double cx = (ox + 0.5) * sx, cy = (oy + 0.5) * sy;
                for (int y = 0; y < image.Height; y++)
                    for (int x = 0; x < image.Width; x++)
                    {
                        double w = Math.Max(0, 1 - Math.Abs((x + 0.5 - cx) / fx)) * Math.Max(0, 1 - Math.Abs((y + 0.5 - cy) / fy));
                        sum += w * image[x, y];
                        weights += w;
                    }
                Assert.Equal(sum / weights, resized[ox, oy], 1e-5);
            }
    }

    [Fact]
    public void BatchStacksSingleImages()
    {
        var a = ImageFile.Load(IuPng("2577_1.png"));
        var b = ImageFile.Load(IuPng("861_1.png"));
        var config = new PreprocessConfig { ImageSize = 48, Channels = 3 };
        using var batch = Preprocess.Batch([a, b], config);
        Assert.Equal([2L, 3, 48, 48], batch.shape);
        using var single = Preprocess.ToTensor(b, config);
        Assert.True(batch[1].allclose(single, rtol: 0, atol: 0));
        Assert.True(batch[0][0].allclose(batch[0][2], rtol: 0, atol: 0));   // the gray value repeated in each channel
    }

    [Fact]
    public void InvalidConfigsAreRefused()
    {
        Assert.Contains("channels", Assert.Throws<XrayVLException>(() => new PreprocessConfig { Channels = 2 }.Validate()).Message);
        Assert.Contains("std", Assert.Throws<XrayVLException>(() => new PreprocessConfig { Std = [0] }.Validate()).Message);
        Assert.Contains("mean", Assert.Throws<XrayVLException>(() => new PreprocessConfig { Channels = 3, Mean = [1, 2] }.Validate()).Message);
        Assert.Contains("image_size", Assert.Throws<XrayVLException>(() => new PreprocessConfig { ImageSize = 0 }.Validate()).Message);
    }

    [Fact]
    public void ConfigRoundTripsThroughProjectJson()
    {
        var config = PreprocessConfig.Clip(336) with { PadValue = 0.25f };
        string json = System.Text.Json.JsonSerializer.Serialize(config, Json.Options);
        Assert.Contains("\"image_size\": 336", json);
        Assert.Contains("\"pad_value\"", json);
        var back = System.Text.Json.JsonSerializer.Deserialize<PreprocessConfig>(json, Json.Options)!;
        Assert.Equal((config.ImageSize, config.Channels, config.PadValue), (back.ImageSize, back.Channels, back.PadValue));
        Assert.Equal(config.Mean, back.Mean);
        Assert.Equal(config.Std, back.Std);
    }
}
