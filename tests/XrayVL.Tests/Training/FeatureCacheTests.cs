using TorchSharp;
using XrayVL.Imaging;
using XrayVL.Modeling;
using XrayVL.Tests.Support;
using XrayVL.Tests.Text;
using XrayVL.Training;
using static TorchSharp.torch;

namespace XrayVL.Tests.Training;

public class FeatureCacheTests
{
    private static readonly PreprocessConfig Preprocess32 = new() { ImageSize = 32, Channels = 1 };

    private static VisionEncoder Encoder(ulong seed)
    {
        var encoder = VisionEncoder.Create(TinyVisionLanguageModels.Config());
        using var generator = new torch.Generator(seed);
        encoder.InitializeWeights(generator);
        encoder.eval();
        return encoder;
    }

    private static string[] Images(string dir, int count) => Enumerable.Range(0, count).Select(i =>
    {
        string path = Path.Combine(dir, $"x{i}.png");
        PngWriter.Save(TrainingFixture.Pattern(i), path);
        return path;
    }).ToArray();

    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    [Fact]
    public void FeaturesAreComputedOnceThenServedFromMemoryAndDisk()
    {
        string dir = TempDir.Create("xrayvl-cache");
        var images = Images(dir, 3);
        using var encoder = Encoder(1);
        string cacheDir = Path.Combine(dir, "cache");

        using var cache = new FeatureCache(cacheDir, encoder, Preprocess32);
        using var first = cache.Get([images[0], images[1], images[0]]);            // a repeated image is encoded once
        Assert.Equal(new long[] { 3, 16, 32 }, first.shape);
        Assert.Equal(2, cache.EncoderImages);
        Assert.True(Same(first[0], first[2]));

        // The cached features are what the encoder gives for the preprocessed image.
        using (no_grad())
        {
            using var direct = encoder.call(Preprocess.Batch([ImageFile.Load(images[1])], Preprocess32));
            Assert.True((direct[0] - first[1]).abs().max().item<float>() < 1e-6);
        }

        using var again = cache.Get([images[1], images[0], images[2]]);
        Assert.Equal(3, cache.EncoderImages);                                          // only the new image
        Assert.True(Same(first[1], again[0]) && Same(first[0], again[1]));

        // Another run over the same folder reads the files back without encoding anything.
        using var reopened = new FeatureCache(cacheDir, encoder, Preprocess32);
        using var fromDisk = reopened.Get([images[0], images[1], images[2]]);
        Assert.Equal((0, 3, 3), (reopened.EncoderImages, reopened.DiskReads, reopened.Hits));
        Assert.True(Same(again[1], fromDisk[0]) && Same(again[0], fromDisk[1]) && Same(again[2], fromDisk[2]));
    }

    [Fact]
    public void AnotherEncoderOrAChangedImageFileIsEncodedAfresh()
    {
        string dir = TempDir.Create("xrayvl-cache");
        var images = Images(dir, 2);
        string cacheDir = Path.Combine(dir, "cache");
        using var encoderA = Encoder(1);
        using var encoderB = Encoder(2);
        using var cacheA = new FeatureCache(cacheDir, encoderA, Preprocess32);
        using var cacheB = new FeatureCache(cacheDir, encoderB, Preprocess32);
        Assert.NotEqual(cacheA.EncoderKey, cacheB.EncoderKey);
        using (var otherPreprocessing = new FeatureCache(cacheDir, encoderA, Preprocess32 with { Std = [0.3f] }))
            Assert.NotEqual(cacheA.EncoderKey, otherPreprocessing.EncoderKey);

        using var a = cacheA.Get(images);
        using var b = cacheB.Get(images);
        Assert.Equal((2, 2), (cacheA.EncoderImages, cacheB.EncoderImages));
        Assert.False(Same(a, b));

        // Rewriting an image (other pixels, so another size or time) gives it a new key: no stale features.
        string key = cacheA.ImageKey(images[0]);
        PngWriter.Save(TrainingFixture.Pattern(7), images[0]);
        File.SetLastWriteTimeUtc(images[0], DateTime.UtcNow.AddMinutes(1));
        Assert.NotEqual(key, cacheA.ImageKey(images[0]));
        using var fresh = new FeatureCache(cacheDir, encoderA, Preprocess32);
        using var changed = fresh.Get(images);
        Assert.Equal(1, fresh.EncoderImages);
        Assert.False(Same(a[0], changed[0]));
        Assert.True(Same(a[1], changed[1]));
        Assert.Contains("image not found", Assert.Throws<XrayVLException>(() => cacheA.Get([Path.Combine(dir, "missing.png")])).Message);
    }
}
